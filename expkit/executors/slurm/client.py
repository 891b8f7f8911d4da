"""Slurm's commands, run as argv lists (never through a shell): ``sbatch``, ``squeue``, ``sacct``,
``scontrol``, ``scancel``.

They run with this process's environment, so ``SLURM_CONF`` (and the rest of what Slurm's own commands
honour) works as it does for the user — minus the variables whose names say they hold a credential
(:func:`expkit.core.contract.is_credential_name`), which would otherwise reach every job through
sbatch's default ``--export=ALL``. A missing command or an unreachable controller is one
:class:`~expkit.core.errors.ExecutionError` line (exit 1) naming the command and the fix.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from expkit.core.contract import is_credential_name
from expkit.core.errors import ExecutionError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0
#: Slurm job states that end a task without success (``squeue``/``sacct``/``scontrol`` spellings).
FAILED_STATES = frozenset(
    {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
)
CANCELLED_STATES = frozenset({"CANCELLED", "REVOKED"})
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "STOPPED", "SUSPENDED", "RESIZING"}
)
_TASK_ID_RE = re.compile(r"^(\d+)_(\d+)$")
_PENDING_RANGE_RE = re.compile(r"^(\d+)_\[([0-9,\-%]+)\]$")


@dataclass(frozen=True)
class TaskState:
    """What Slurm says about one array task: its state, exit code (``2:0``), node and reason."""

    state: str
    exit_code: str | None = None
    node: str | None = None
    reason: str | None = None


def slurm_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Slurm's commands (and so the jobs) get: ``environ`` without credentials."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not is_credential_name(k)}


class SlurmClient:
    """Runs Slurm's commands; ``env``: their environment (default :func:`slurm_environment`)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env) if env is not None else slurm_environment()
        self._version: str | None = None

    def run(
        self, argv: Sequence[str], *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command; raise ExecutionError when it cannot run or (with ``check``) fails."""
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=COMMAND_TIMEOUT_S,
            )
        except FileNotFoundError as err:
            raise ExecutionError(
                f"{argv[0]}: command not found: run this on a Slurm login node (or install Slurm's client "
                "commands and set SLURM_CONF)"
            ) from err
        except subprocess.TimeoutExpired as err:
            raise ExecutionError(
                f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:g}s: is slurmctld reachable? (scontrol ping)"
            ) from err
        if check and done.returncode != 0:
            msg = " ".join((done.stderr or done.stdout).split())[:300]
            raise ExecutionError(f"{argv[0]} failed (exit {done.returncode}): {msg}")
        return done

    # -- facts --------------------------------------------------------------------------------------
    def version(self) -> str:
        """Slurm's version (``sbatch --version``: ``slurm 22.05.8`` → ``22.05.8``)."""
        if self._version is None:
            text = self.run(["sbatch", "--version"]).stdout.strip()
            self._version = text.split()[-1] if text else "unknown"
        return self._version

    def cluster_name(self) -> str | None:
        """The ``ClusterName`` of ``scontrol show config`` (None when it cannot be read)."""
        done = self.run(["scontrol", "show", "config"], check=False)
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip() or None
        return None

    def cpus(self, partition: str | None = None) -> int | None:
        """The CPUs of the cluster's nodes (of ``partition``, a name or comma-separated names, when given),
        each node counted once; None when ``sinfo`` cannot tell."""
        argv = ["sinfo", "-h", "-N", "-o", "%n %c", *(["-p", partition] if partition else [])]
        done = self.run(argv, check=False)
        nodes: dict[str, int] = {}
        for line in done.stdout.splitlines():
            name, _, count = line.strip().partition(" ")
            if name and count.strip().isdigit():
                nodes[name] = int(count.strip())
        return sum(nodes.values()) or None

    # -- submit and cancel --------------------------------------------------------------------------
    def sbatch(self, script_path: str, options: Sequence[str] = ()) -> str:
        """Submit the batch script at ``script_path``; return the job id (``sbatch --parsable``)."""
        done = self.run(["sbatch", "--parsable", *options, script_path])
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise ExecutionError(f"sbatch answered {done.stdout.strip()[:100]!r} instead of a job id")
        return job_id

    def scancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the given jobs (whole arrays), pending and running tasks alike."""
        if job_ids:
            self.run(["scancel", *job_ids])

    # -- state --------------------------------------------------------------------------------------
    def task_states(self, job_ids: Sequence[str]) -> dict[str, dict[int, TaskState]]:
        """``{job id: {array index: state}}`` for the tasks Slurm knows: ``squeue`` for the queued and
        running ones, then ``sacct`` for the finished ones — or, where accounting is off,
        ``scontrol show job`` (which knows finished jobs for ``MinJobAge`` seconds)."""
        states: dict[str, dict[int, TaskState]] = {j: {} for j in job_ids}
        if not job_ids:
            return states
        self._from_squeue(job_ids, states)
        if not self._from_sacct(job_ids, states):
            for job in job_ids:
                self._from_scontrol(job, states)
        return states

    def _from_squeue(self, job_ids: Sequence[str], states: dict[str, dict[int, TaskState]]) -> None:
        done = self.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%N|%r"], check=False)
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4:
                continue
            m = _TASK_ID_RE.match(parts[0])
            if m and m.group(1) in states:
                states[m.group(1)][int(m.group(2))] = TaskState(parts[1], None, parts[2] or None, parts[3] or None)

    def _from_sacct(self, job_ids: Sequence[str], states: dict[str, dict[int, TaskState]]) -> bool:
        done = self.run(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode,NodeList"], check=False
        )
        if done.returncode != 0:
            log.debug("sacct unavailable: %s", done.stderr.strip())
            return False
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4:
                continue
            m = _TASK_ID_RE.match(parts[0])
            if m and m.group(1) in states and int(m.group(2)) not in states[m.group(1)]:
                state = parts[1].split()[0] if parts[1] else "UNKNOWN"
                states[m.group(1)][int(m.group(2))] = TaskState(state, parts[2] or None, parts[3] or None)
        return True

    def _from_scontrol(self, job: str, states: dict[str, dict[int, TaskState]]) -> None:
        done = self.run(["scontrol", "-o", "show", "job", job], check=False)
        for line in done.stdout.splitlines():
            fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if fields.get("ArrayJobId") != job:
                continue
            index = fields.get("ArrayTaskId", "")
            if not index.isdigit() or int(index) in states[job]:
                continue
            node = fields.get("NodeList")
            states[job][int(index)] = TaskState(
                fields.get("JobState", "UNKNOWN"),
                fields.get("ExitCode"),
                None if node in (None, "(null)") else node,
                fields.get("Reason"),
            )


__all__ = ["CANCELLED_STATES", "FAILED_STATES", "RUNNING_STATES", "SlurmClient", "TaskState", "slurm_environment"]

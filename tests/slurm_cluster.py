"""A real one-node Slurm cluster for tests and benchmarks, on loopback, as root, without systemd.

Debian's ``slurmctld slurmd slurm-client munge`` packages (Slurm 22.05) provide the daemons.
:class:`SlurmCluster` makes everything under one temporary directory: a munge key, ``munged`` (run
as the ``munge`` user, its socket, pid, seed and log files in that directory), a ``slurm.conf`` (a
``NodeName`` for this host with ``NodeAddr=127.0.0.1``, the CPUs and memory of this machine, free
ports, no accounting, no cgroups, the fast scheduler parameters), then ``slurmctld -D -i`` and
``slurmd -D`` in the foreground as child processes, so each is stopped by its own pid. It waits
(bounded) until ``sinfo`` shows the node idle. :attr:`SlurmCluster.env` is the environment the client
commands (``sbatch``, ``squeue``, ``sinfo``, and expkit's subprocesses) need: ``SLURM_CONF``.

Used by ``tests/test_slurm.py`` (fixture ``slurm_cluster``) and ``bench/slurm_overhead.py``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel")


def missing_reason() -> str | None:
    """Why a local Slurm cannot be started here (None when it can)."""
    missing = [b for b in DAEMONS if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return (
            f"no local Slurm: {', '.join(missing)} not found (apt-get install -y slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "the local Slurm test cluster needs root (slurmd runs jobs as their users)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (apt-get install -y munge)"
    return None


def _which(name: str) -> str:
    found = shutil.which(name) or str(Path("/usr/sbin", name))
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_facts() -> tuple[str, int, int]:
    """(node name, CPUs, usable memory in MB) of this machine, as ``slurmd -C`` reports them."""
    text = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
    name = fields.get("NodeName") or socket.gethostname().split(".")[0]
    cpus = int(fields.get("CPUs") or os.cpu_count() or 1)
    memory = int(fields.get("RealMemory") or 1024)
    return name, cpus, max(256, memory - 256)


class SlurmCluster:
    """A one-node Slurm on 127.0.0.1 under ``base_dir`` (see the module docstring)."""

    def __init__(self, base_dir: str | Path) -> None:
        self.base = Path(base_dir)
        self.node, self.cpus, self.memory_mb = _node_facts()
        self.ctld_port, self.slurmd_port = _free_ports(2)
        self.conf = self.base / "etc" / "slurm.conf"
        self.munge_dir = self.base / "munge"
        self.socket = self.munge_dir / "munge.socket.2"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """The variables Slurm's client commands need to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        """This process's environment plus :attr:`env`."""
        return {**os.environ, **self.env}

    # -- start --------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start munged, slurmctld and slurmd; wait until the node is idle (at most ``timeout`` s)."""
        try:
            self._start_munge(timeout)
            self._write_conf()
            log_dir = self.base / "log"
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)], log_dir)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)], log_dir)
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_munge(self, timeout: float) -> None:
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir(parents=True, mode=0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        argv = [
            _which("munged"),
            "-F",
            "--force",
            f"--socket={self.socket}",
            f"--key-file={key}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
            f"--log-file={self.munge_dir / 'munged.log'}",
        ]
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        self._spawn("munged", [runuser, "-u", "munge", "--", *argv], self.base / "log")
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            self._check_alive("munged")
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not create {self.socket} within {timeout:g}s")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        for sub in ("etc", "state", "spool", "log", "run"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        b = self.base
        lines = [
            "ClusterName=expkit-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={b / 'state'}",
            f"SlurmdSpoolDir={b / 'spool'}",
            f"SlurmctldPidFile={b / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={b / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={b / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={b / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/affinity",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1",
            "DefMemPerCPU=512",
            "MinJobAge=300",
            "MaxArraySize=10001",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=2",
            "OverTimeLimit=0",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "LaunchParameters=use_interactive_step",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            # a partition whose jobs get a 1-minute limit by default (the Slurm TIMEOUT tests)
            f"PartitionName=short Nodes={self.node} DefaultTime=1 MaxTime=1 State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.out", "ab") as fh:
            self.procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            out = self.base / "log" / f"{name}.out"
            tail = out.read_text(errors="replace")[-2000:] if out.exists() else ""
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                self._check_alive(name)
            done = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.client_env(), timeout=30
            )
            state = done.stdout.strip()
            states = set(state.split())  # the node once per partition
            if done.returncode == 0 and states and states <= {"idle", "mixed"}:
                return
            if any(st.startswith(("down", "drain")) for st in states):
                subprocess.run(
                    ["scontrol", "update", f"NodeName={self.node}", "State=RESUME"],
                    capture_output=True,
                    env=self.client_env(),
                    timeout=30,
                )
            time.sleep(0.2)
        raise RuntimeError(f"the Slurm node did not become idle within {timeout:g}s (sinfo: {state!r})")

    # -- helpers ------------------------------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.client_env(), timeout=timeout)

    def cancel_all(self) -> None:
        """Cancel every job (between tests)."""
        self.run("scancel", "--full", "--user=root")

    # -- stop ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every daemon by its pid (SIGTERM, then SIGKILL after 10 s), slurmd first."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def start_cluster(base_dir: str | Path | None = None, timeout: float = 60.0) -> SlurmCluster:
    """Start a cluster in ``base_dir`` (a fresh temporary directory by default)."""
    base = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="expkit-slurm-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # slurmd writes job output as root; munged must reach its directory
    cluster = SlurmCluster(base)
    cluster.start(timeout)
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node Slurm for the whole session; skipped where it cannot run here."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's temporary directory: that is private to root, and munged (as 'munge') must reach
    # its own directory.
    base = Path(tempfile.mkdtemp(prefix="expkit-slurm-"))
    cluster = start_cluster(base)
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)

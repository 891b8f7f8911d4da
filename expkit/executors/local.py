"""The local executor: every cell a subprocess on this machine (the embedded default).

Each run's working directory is the spec file's directory — the same convention as in the
container, where the spec's directory is the image's working directory — so one command line works
in both places. A command whose first word is ``python`` or ``python3`` runs with the interpreter
expkit itself runs under, so runs see the packages of expkit's environment. No shell is involved:
the argv is passed as a list.

A run's environment is clean (:func:`expkit.core.contract.clean_environment`): ``PATH``, ``HOME``,
``LANG``, ``LC_*``, ``TZ``, ``TMPDIR``, the variables the spec's ``env:`` names and the ``EXPKIT_*``
contract variables — never expkit's credentials. When a run's main process ends, every process it
started is killed (:mod:`.processes`) before its outputs are read; the outputs are then checked as
untrusted input (:mod:`.outputs`). Whatever goes wrong with one cell's outputs fails that cell, with
the reason, and the run goes on; only a failing store stops the run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit.core.contract import (
    LOG_FILE,
    MAX_RESULT_BYTES,
    RESULT_FILE,
    RUN_FILE,
    clean_environment,
    parse_result,
    run_environment,
)
from expkit.core.errors import ArtifactError, ExecutionError, Interrupted, StoreError
from expkit.executors import processes
from expkit.executors.base import CellEvent, CellOutcome, CellStatus, RunContext
from expkit.executors.outputs import remove_quietly, vet_outputs
from expkit.runs.cell import Cell
from expkit.runs.provenance import cpu_model, utc_now
from expkit.stores.base import PREPARE_LOG_KEY

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 2.0
LOG_TAIL_LINES = 20
#: Every live local executor of this process, for :func:`kill_all_now`.
_LIVE: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


def local_argv(argv: list[str]) -> list[str]:
    """Run ``python``/``python3`` commands with expkit's own interpreter."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log at ``path`` ("" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 16384))
            text = fh.read(16384).decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_result(path: Path) -> bytes | None:
    """The bytes of the regular file ``result.json`` at ``path`` (at most the cap plus one byte, so an
    oversized one is recognised without reading it all); None when there is none. Never follows a link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ArtifactError(f"{RESULT_FILE} is not a regular file")
        return fh.read(MAX_RESULT_BYTES + 1)


def kill_all_now() -> None:
    """SIGKILL every process of every run the local executors of this process are running, at once
    (for an exit that cannot wait: a second Ctrl-C, or a graceful stop that hangs)."""
    for executor in list(_LIVE):
        for running in list(executor._procs.values()):
            processes.kill_run(running.proc.pid, running.marker, running.since, grace=0)


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds (where there is no ``/proc``)."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait_s)
            try:  # the leader is gone; make sure nothing else of the group lingers
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class CellRules:
    """What running one cell takes from the spec: the timeout of an attempt, the retries, the primary metric."""

    timeout: float | None
    retries: int
    metric: str


#: How a cell's process ends when the stop signal reached it too (killed by SIGTERM/SIGINT, or a shell's
#: 128 + signal), and how long such a cell waits for expkit's own handler to mark the session as stopping
#: before it is judged as a failure of its own.
STOP_EXIT_CODES = frozenset({-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT})
STOP_SIGNAL_WAIT = 1.0


@dataclass(frozen=True)
class _Running:
    """A started run: its main process, the marker in its environment and when it started."""

    proc: subprocess.Popen[bytes]
    marker: str | None
    since: int | None


@dataclass(frozen=True)
class _Attempt:
    """One finished attempt of a cell: its staging directory, verdict and ``attempt_history`` entry."""

    stage: Path
    status: CellStatus
    reason: str | None
    exit_code: int | None
    metrics: dict[str, Any] | None
    entry: dict[str, Any]
    notes: list[str] = field(default_factory=list)


class LocalExecutor:
    """Runs cells as local subprocesses, ``ctx.workers`` at a time (see :mod:`expkit.executors.base`)."""

    name = "local"

    def __init__(self, kill_grace: float = KILL_GRACE_SECONDS) -> None:
        self.kill_grace = kill_grace
        self._procs: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._host = socket.gethostname()
        self._cpu_model = cpu_model()
        _LIVE.add(self)

    def cell_argv(self, ctx: RunContext, cell: Cell, output_dir: str) -> list[str]:
        """The argv a cell runs (an executor that wraps the command, e.g. in a container, overrides it)."""
        from expkit.runs.matrix import render_argv  # the spec model: not on a Slurm task's path

        return local_argv(render_argv(ctx.experiment, cell, output_dir))

    def rules(self, ctx: RunContext) -> CellRules:
        """What running one cell takes from the spec (an executor that has them from elsewhere overrides it)."""
        spec = ctx.experiment.spec
        return CellRules(spec.timeout, spec.retries, spec.metric.name)

    @staticmethod
    def environment(ctx: RunContext) -> dict[str, str]:
        """The part of expkit's environment a run gets: the basics and what ``spec.env`` names."""
        return clean_environment(os.environ, ctx.experiment.spec.env or ())

    # -- prepare -------------------------------------------------------------------------------
    def run_prepare(self, ctx: RunContext) -> None:
        """Run the spec's ``prepare`` command once, here; store its log; raise ExecutionError when it fails."""
        from expkit.spec import substitute  # the spec model: not on a Slurm task's path

        prep = ctx.experiment.spec.prepare
        if prep is None:
            return
        values = {f"params.{k}": v for k, v in ctx.experiment.spec.params.items()}
        argv = local_argv([substitute(p, values) for p in (*prep.command, *prep.args)])
        stage = ctx.store.staging_dir(ctx.run_id) / f"prepare-{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        log_path = stage / LOG_FILE
        env = {
            **self.environment(ctx),
            "EXPKIT_RUN_ID": ctx.run_id,
            "EXPKIT_PARAMS": json.dumps(dict(ctx.experiment.spec.params), sort_keys=True),
        }
        log.info("prepare: %s", argv)
        stopped = (
            f"interrupted during the prepare step; no cell was run: resume with 'expkit run --resume {ctx.run_id}'"
        )
        try:
            with processes.adopting_orphans():
                rc, timed_out, error, _ = self._run_process(argv, ctx.spec_dir, env, log_path, prep.timeout, None)
            ctx.store.put(f"{ctx.run_id}/{PREPARE_LOG_KEY}", _read_log(log_path))
            if self._stop.is_set():
                raise Interrupted(stopped)
            if error or timed_out or rc != 0:
                why = error or (f"timed out after {prep.timeout:g}s" if timed_out else f"exit code {rc}")
                tail = log_tail(log_path)
                raise ExecutionError(
                    f"the prepare step failed ({why}); no cell was run. Its log is in the store at "
                    f"{ctx.run_id}/{PREPARE_LOG_KEY}" + (f"; last lines:\n{tail}" if tail else " (empty)")
                )
        except KeyboardInterrupt:
            raise Interrupted(stopped) from None
        finally:
            remove_quietly(stage)

    # -- cells ---------------------------------------------------------------------------------
    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        """Run ``cells`` as subprocesses, ``ctx.workers`` at a time, and return when all are published (with
        those ``ctx.more_cells`` added as cells ended)."""
        self._stop.clear()
        with processes.adopting_orphans():
            outcomes = self._execute(ctx, cells)
        if self._stop.is_set():  # stop() was called from elsewhere (a signal handler, another thread)
            raise Interrupted(
                f"interrupted: {len(outcomes)} cells finished in this session and are kept; "
                f"resume with 'expkit run --resume {ctx.run_id}'"
            )
        return outcomes

    def _execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        outcomes: list[CellOutcome] = []
        pool = ThreadPoolExecutor(max_workers=max(1, ctx.workers), thread_name_prefix="expkit-cell")
        # Finished futures arrive on a queue: O(1) per cell. (concurrent.futures.wait over all pending
        # futures costs O(pending) per completion, and that GIL-holding loop slowed the workers down.)
        finished: queue.SimpleQueue[Future[CellOutcome | None]] = queue.SimpleQueue()
        of: dict[Future[CellOutcome | None], Cell] = {}

        def start(batch: Sequence[Cell]) -> None:
            for cell in batch:
                fut = pool.submit(self._run_cell, ctx, cell)
                of[fut] = cell
                fut.add_done_callback(finished.put)

        try:
            start(cells)
            while of:
                try:
                    fut = finished.get(timeout=0.5)  # wakes up regularly so Ctrl-C is seen promptly
                except queue.Empty:
                    continue
                cell = of.pop(fut)
                outcome = fut.result()  # a failing store (or a bug) surfaces here
                if outcome is not None:
                    outcomes.append(outcome)
                if ctx.more_cells is not None and not self._stop.is_set():
                    start(ctx.more_cells(cell, outcome))  # the next wave of an adaptive run
        except BaseException as err:
            self.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(err, KeyboardInterrupt):
                raise Interrupted(
                    f"interrupted: {len(outcomes)} cells finished in this session and are kept; "
                    f"resume with 'expkit run --resume {ctx.run_id}'"
                ) from None
            raise
        pool.shutdown(wait=True)
        return outcomes

    def stop(self) -> None:
        """Stop every running process; cells in flight are not published."""
        self._stop.set()
        with self._lock:
            running = list(self._procs.values())
        threads = [threading.Thread(target=self._kill, args=(r, self.kill_grace)) for r in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @staticmethod
    def _kill(running: _Running, grace: float) -> None:
        """Stop a run and everything it started: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if processes.has_proc():
            processes.kill_run(running.proc.pid, running.marker, running.since, grace)
        else:
            _kill_group(running.proc, grace)

    def _run_process(
        self, argv: list[str], cwd: Path, env: dict[str, str], log_path: Path, timeout: float | None, marker: str | None
    ) -> tuple[int | None, bool, str | None, processes.Usage | None]:
        """Run one process and, once it has ended, everything it started; return (exit code, timed out,
        error starting it, what it used). ``marker`` (``NAME=value`` of ``env``) identifies its descendants.
        The command runs under :data:`~expkit.executors.processes.LAUNCHER`, which measures it."""
        if self._stop.is_set():
            return None, False, "not started: the run was interrupted", None
        report_r, report_w = os.pipe()
        with open(log_path, "wb") as log_fh:
            try:
                proc = subprocess.Popen(
                    processes.launched(argv, report_w),
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(report_w,),
                )
            except OSError as err:
                os.close(report_r)
                return None, False, _start_error(argv, cwd, err.errno, err.strerror), None
            finally:
                os.close(report_w)
        running = _Running(proc, marker, processes.start_time(proc.pid))
        with self._lock:
            self._procs[proc.pid] = running
            stopping = self._stop.is_set()
        if stopping:  # stop() ran between the check above and the registration: it missed this one
            self._kill(running, self.kill_grace)
        timed_out = False
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill(running, self.kill_grace)
                rc = proc.wait()
            except BaseException:  # Ctrl-C in the main thread (prepare): nothing of the run may live on
                self._kill(running, self.kill_grace)
                raise
            # The main process is gone; what it started goes too, before its outputs are read.
            self._kill(running, self.kill_grace)
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)
            report = processes.read_report(report_r)
        if report.exec_errno is not None:
            return None, False, _start_error(argv, cwd, report.exec_errno, None), None
        return rc, timed_out, None, report.usage

    def _run_cell(self, ctx: RunContext, cell: Cell) -> CellOutcome | None:
        if self._stop.is_set() or (ctx.should_run is not None and not ctx.should_run(cell)):
            return None
        staging = ctx.store.staging_dir(ctx.run_id)
        started_at = utc_now()
        t_start = time.monotonic()
        ctx.on_event(CellEvent("started", cell.key))
        tried = self._attempts(ctx, cell, staging)
        if tried is None:
            return None
        result, history = tried
        record: dict[str, Any] = {
            "cell": cell.key,
            "algorithm": cell.algorithm,
            "dataset": cell.dataset,
            "replicate": cell.replicate,
            "seed": cell.seed,
            "params": dict(cell.params),
            "status": result.status,
            "reason": result.reason,
            "exit_code": result.exit_code,
            "attempts": len(history),
            "attempt_history": history,
            "started_at": started_at,
            "ended_at": utc_now(),
            "duration_s": round(time.monotonic() - t_start, 4),
            "host": self._host,
            "node": self._host,
            "cpu_model": self._cpu_model,
            "executor": self.name,
            "metrics": result.metrics,
        }
        if result.notes:
            record["output_notes"] = result.notes
        record["resources"] = _resources(history[-1])
        record.update(_versions(ctx))
        record = self._publish(ctx, cell, result.stage, record)
        status, reason = record["status"], record["reason"]
        ctx.on_event(CellEvent("finished", cell.key, status, reason, len(history)))
        return CellOutcome(cell.key, status, reason)

    def _publish(self, ctx: RunContext, cell: Cell, stage: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Publish the cell with its record; return the record published. When its outputs cannot be
        published, the cell is published failed with only its log; a failing store stops the run."""
        try:
            (stage / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            ctx.store.publish_cell(ctx.run_id, cell.key, stage)
            return record
        except ArtifactError as err:  # the outputs, not the store
            problem: Exception = err
        except StoreError:
            raise  # the store failed: the run stops, and a resume reruns this cell
        except Exception as err:  # noqa: BLE001 - a run's outputs must never stop the run
            problem = err
        log.warning("could not publish the outputs of %s: %s", cell.key, problem)
        record = {
            **record,
            "status": "failed",
            "metrics": None,
            "reason": f"its outputs could not be published ({type(problem).__name__}: {str(problem)[:200]}); "
            f"only its {LOG_FILE} and this record are kept",
        }
        fresh = stage.parent / f"{stage.name}.record"
        try:
            fresh.mkdir()
            log_file = stage / LOG_FILE
            if log_file.is_file() and not log_file.is_symlink():
                os.replace(log_file, fresh / LOG_FILE)
            (fresh / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        except OSError as err:
            raise ExecutionError(
                f"cannot record cell {cell.key}: writing {err.filename or fresh} failed: {err.strerror or err}"
            ) from err
        remove_quietly(stage)
        ctx.store.publish_cell(ctx.run_id, cell.key, fresh)
        return record

    def _attempts(self, ctx: RunContext, cell: Cell, staging: Path) -> tuple[_Attempt, list[dict[str, Any]]] | None:
        """Run ``cell`` until an attempt succeeds or ``spec.retries`` retries failed: the last attempt and
        the ``attempt_history``; None when the run was interrupted."""
        attempts_allowed = self.rules(ctx).retries + 1
        history: list[dict[str, Any]] = []
        attempt = 1
        while True:
            result = self._attempt(ctx, cell, staging, attempt)
            if result is None:
                return None
            history.append(result.entry)
            if result.status == "succeeded" or attempt >= attempts_allowed:
                return result, history
            ctx.on_event(CellEvent("retrying", cell.key, "failed", result.reason, attempt))
            remove_quietly(result.stage)
            attempt += 1

    def _attempt(self, ctx: RunContext, cell: Cell, staging: Path, attempt: int) -> _Attempt | None:
        """One attempt of ``cell`` in a fresh directory under ``staging``; None when the run was
        interrupted meanwhile (the directory is removed: nothing of it is published)."""
        rules = self.rules(ctx)
        stage = staging / f"{cell.algorithm}.{cell.dataset}.{cell.replicate}.{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        out = str(stage)
        env = {
            **self.environment(ctx),
            **run_environment(
                run_id=ctx.run_id,
                algorithm=cell.algorithm,
                dataset=cell.dataset,
                replicate=cell.replicate,
                seed=cell.seed,
                params=cell.params,
                output_dir=out,
            ),
        }
        argv = self.cell_argv(ctx, cell, out)
        t0 = time.monotonic()
        marker = f"EXPKIT_OUTPUT_DIR={out}"
        log_path = stage / LOG_FILE
        rc, timed_out, error, usage = self._run_process(argv, ctx.spec_dir, env, log_path, rules.timeout, marker)
        elapsed = time.monotonic() - t0
        if self._stop.is_set() or (not timed_out and rc in STOP_EXIT_CODES and self._stop.wait(STOP_SIGNAL_WAIT)):
            # A cell that died of the stop signal itself: scancel or a terminal's Ctrl-C signal the cell as well
            # as expkit, and the cell may die before expkit's handler has run; it is not a failure of the cell.
            remove_quietly(stage)
            return None
        status, reason, metrics, notes = _collect(stage, rc, timed_out, error, rules.timeout, rules.metric)
        entry = {
            "attempt": attempt,
            "exit_code": rc,
            "status": status,
            "reason": reason,
            "duration_s": round(elapsed, 4),
            **(usage.to_dict() if usage is not None else {}),
        }
        return _Attempt(stage, status, reason, rc, metrics, entry, notes)


def _resources(attempt: dict[str, Any]) -> dict[str, Any]:
    """The ``resources`` of a cell's ``run.json``: wall time, CPU time (user + system, from the main
    process's rusage, with the descendants it waited for) and peak resident memory of the attempt whose
    outputs are kept (``attempt_history`` has every attempt's)."""
    keys = ("cpu_s", "cpu_user_s", "cpu_system_s", "max_rss_bytes")
    return {"wall_s": attempt.get("duration_s"), **{k: attempt.get(k) for k in keys}}


def _versions(ctx: RunContext) -> dict[str, Any]:
    """The code and environment digests the cell ran under (from the run's manifest), for its ``run.json``."""
    manifest = ctx.manifest or {}
    code, environment = manifest.get("code"), manifest.get("environment")
    return {
        "code_digest": code.get("digest") if isinstance(code, dict) else None,
        "environment_digest": environment.get("digest") if isinstance(environment, dict) else None,
    }


def _start_error(argv: list[str], cwd: Path, errno_: int | None, strerror: str | None) -> str:
    """Why a command could not be started, in words (``errno_`` from ``exec``)."""
    if errno_ == errno.ENOENT:
        return f"command not found: {argv[0]!r} (searched PATH; working directory {cwd})"
    if errno_ == errno.EACCES:
        return f"command not executable: {argv[0]!r}"
    return f"cannot start {argv[0]!r}: {strerror or (os.strerror(errno_) if errno_ else 'unknown error')}"


def _read_log(path: Path) -> bytes:
    """The log at ``path`` when it is still a regular file (a run may have replaced it), else nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as fh:
        return fh.read() if stat.S_ISREG(os.fstat(fh.fileno()).st_mode) else b""


def _collect(
    stage: Path, rc: int | None, timed_out: bool, error: str | None, timeout: float | None, metric: str
) -> tuple[CellStatus, str | None, dict[str, Any] | None, list[str]]:
    """Check the attempt's outputs and judge it: (status, reason, metrics, notes on what was removed).
    A run's outputs are untrusted: whatever goes wrong reading them fails the cell, never the run."""
    try:
        vetted = vet_outputs(stage)
        status, reason, metrics = _judge(stage, rc, timed_out, error, timeout, metric, vetted.problem)
        return status, reason, metrics, vetted.summary()
    except Exception as err:  # one cell's outputs must never stop the run (logged with the traceback)
        log.warning("could not check the outputs in %s", stage, exc_info=True)
        reason = f"expkit could not check the run's outputs ({type(err).__name__}: {str(err)[:200]})"
        return "failed", reason, None, []


def _judge(
    stage: Path,
    rc: int | None,
    timed_out: bool,
    error: str | None,
    timeout: float | None,
    metric: str,
    problem: str | None,
) -> tuple[CellStatus, str | None, dict[str, Any] | None]:
    if error:
        return "failed", error, None
    if timed_out:
        return "failed", f"timed out after {timeout:g}s (killed)", None
    if rc != 0:
        what = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        tail = log_tail(stage / LOG_FILE, 1)
        return "failed", what + (f"; last log line: {tail[:200]}" if tail else ""), None
    if problem:
        return "failed", problem, None
    try:
        data = read_result(stage / RESULT_FILE)
        if data is None:
            return "failed", f"exited 0 but wrote no {RESULT_FILE} in its output directory", None
        doc = parse_result(data, metric)
    except ArtifactError as err:
        return "failed", str(err), None
    metrics: dict[str, Any] = doc["metrics"]
    return "succeeded", None, metrics

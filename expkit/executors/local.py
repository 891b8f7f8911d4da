"""The local executor: every cell a subprocess on this machine (the embedded default).

Each run's working directory is the spec file's directory — the same convention as in the
container, where the spec's directory is the image's working directory — so one command line works
in both places. A command whose first word is ``python`` or ``python3`` runs with the interpreter
expkit itself runs under, so runs see the packages of expkit's environment. No shell is involved:
the argv is passed as a list.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.core.contract import LOG_FILE, RESULT_FILE, RUN_FILE, parse_result, run_environment
from expkit.core.errors import ArtifactError, ExecutionError, Interrupted
from expkit.executors.base import CellEvent, CellOutcome, CellStatus, RunContext
from expkit.runs.matrix import Cell, render_argv
from expkit.runs.provenance import cpu_model, utc_now
from expkit.spec import substitute
from expkit.stores.base import PREPARE_LOG_KEY

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 2.0
LOG_TAIL_LINES = 20


def local_argv(argv: list[str]) -> list[str]:
    """Run ``python``/``python3`` commands with expkit's own interpreter."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log at ``path`` ("" when it cannot be read)."""
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; make sure nothing else of the group lingers.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class _Attempt:
    """One finished attempt of a cell: its staging directory, verdict and ``attempt_history`` entry."""

    stage: Path
    status: CellStatus
    reason: str | None
    exit_code: int | None
    metrics: dict[str, Any] | None
    entry: dict[str, Any]


class LocalExecutor:
    """Runs cells as local subprocesses, ``ctx.workers`` at a time (see :mod:`expkit.executors.base`)."""

    name = "local"

    def __init__(self, kill_grace: float = KILL_GRACE_SECONDS) -> None:
        self.kill_grace = kill_grace
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._host = socket.gethostname()
        self._cpu_model = cpu_model()

    # -- prepare -------------------------------------------------------------------------------
    def run_prepare(self, ctx: RunContext) -> None:
        """Run the spec's ``prepare`` command once, here; store its log; raise ExecutionError when it fails."""
        prep = ctx.experiment.spec.prepare
        if prep is None:
            return
        values = {f"params.{k}": v for k, v in ctx.experiment.spec.params.items()}
        argv = local_argv([substitute(p, values) for p in (*prep.command, *prep.args)])
        stage = ctx.store.staging_dir(ctx.run_id) / f"prepare-{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        log_path = stage / LOG_FILE
        env = {
            **os.environ,
            "EXPKIT_RUN_ID": ctx.run_id,
            "EXPKIT_PARAMS": json.dumps(dict(ctx.experiment.spec.params), sort_keys=True),
        }
        log.info("prepare: %s", argv)
        try:
            rc, timed_out, error = self._run_process(argv, ctx.spec_dir, env, log_path, prep.timeout)
            ctx.store.put(f"{ctx.run_id}/{PREPARE_LOG_KEY}", log_path.read_bytes())
            if self._stop.is_set():
                raise Interrupted(f"interrupted during the prepare step of {ctx.run_id}")
            if error or timed_out or rc != 0:
                why = error or (f"timed out after {prep.timeout:g}s" if timed_out else f"exit code {rc}")
                tail = log_tail(log_path)
                raise ExecutionError(
                    f"the prepare step failed ({why}); no cell was run. Its log is in the store at "
                    f"{ctx.run_id}/{PREPARE_LOG_KEY}" + (f"; last lines:\n{tail}" if tail else " (empty)")
                )
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # -- cells ---------------------------------------------------------------------------------
    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        """Run ``cells`` as subprocesses, ``ctx.workers`` at a time, and return when all are published."""
        self._stop.clear()
        outcomes: list[CellOutcome] = []
        pool = ThreadPoolExecutor(max_workers=max(1, ctx.workers), thread_name_prefix="expkit-cell")
        # Finished futures arrive on a queue: O(1) per cell. (concurrent.futures.wait over all pending
        # futures costs O(pending) per completion, and that GIL-holding loop slowed the workers down.)
        finished: queue.SimpleQueue[Future[CellOutcome | None]] = queue.SimpleQueue()
        try:
            for cell in cells:
                pool.submit(self._run_cell, ctx, cell).add_done_callback(finished.put)
            remaining = len(cells)
            while remaining:
                try:
                    fut = finished.get(timeout=0.5)  # wakes up regularly so Ctrl-C is seen promptly
                except queue.Empty:
                    continue
                remaining -= 1
                outcome = fut.result()  # a bug in _run_cell surfaces here
                if outcome is not None:
                    outcomes.append(outcome)
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
        if self._stop.is_set():  # stop() was called from elsewhere (a signal handler, another thread)
            raise Interrupted(
                f"interrupted: {len(outcomes)} cells finished in this session and are kept; "
                f"resume with 'expkit run --resume {ctx.run_id}'"
            )
        return outcomes

    def stop(self) -> None:
        """Stop every running process; cells in flight are not published."""
        self._stop.set()
        with self._lock:
            procs = list(self._procs.values())
        threads = [threading.Thread(target=_kill_group, args=(p, self.kill_grace)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _run_process(
        self, argv: list[str], cwd: Path, env: dict[str, str], log_path: Path, timeout: float | None
    ) -> tuple[int | None, bool, str | None]:
        """Run one process; return (exit code, timed out, error starting it)."""
        if self._stop.is_set():
            return None, False, "not started: the run was interrupted"
        with open(log_path, "wb") as log_fh:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError:
                return None, False, f"command not found: {argv[0]!r} (searched PATH; working directory {cwd})"
            except PermissionError:
                return None, False, f"command not executable: {argv[0]!r}"
        with self._lock:
            self._procs[proc.pid] = proc
            stopping = self._stop.is_set()
        if stopping:  # stop() ran between the check above and the registration: it missed this one
            _kill_group(proc, self.kill_grace)
        timed_out = False
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, self.kill_grace)
                rc = proc.wait()
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)
        return rc, timed_out, None

    def _run_cell(self, ctx: RunContext, cell: Cell) -> CellOutcome | None:
        if self._stop.is_set():
            return None
        staging = ctx.store.staging_dir(ctx.run_id)
        started_at = utc_now()
        t_start = time.monotonic()
        ctx.on_event(CellEvent("started", cell.key))
        tried = self._attempts(ctx, cell, staging)
        if tried is None:
            return None
        result, history = tried
        record = {
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
        (result.stage / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        ctx.store.publish_cell(ctx.run_id, cell.key, result.stage)
        ctx.on_event(CellEvent("finished", cell.key, result.status, result.reason, len(history)))
        return CellOutcome(cell.key, result.status, result.reason)

    def _attempts(self, ctx: RunContext, cell: Cell, staging: Path) -> tuple[_Attempt, list[dict[str, Any]]] | None:
        """Run ``cell`` until an attempt succeeds or ``spec.retries`` retries failed: the last attempt and
        the ``attempt_history``; None when the run was interrupted."""
        attempts_allowed = ctx.experiment.spec.retries + 1
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
            shutil.rmtree(result.stage, ignore_errors=True)
            attempt += 1

    def _attempt(self, ctx: RunContext, cell: Cell, staging: Path, attempt: int) -> _Attempt | None:
        """One attempt of ``cell`` in a fresh directory under ``staging``; None when the run was
        interrupted meanwhile (the directory is removed: nothing of it is published)."""
        spec = ctx.experiment.spec
        stage = staging / f"{cell.algorithm}.{cell.dataset}.{cell.replicate}.{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        out = str(stage)
        env = {
            **os.environ,
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
        argv = local_argv(render_argv(ctx.experiment, cell, out))
        t0 = time.monotonic()
        rc, timed_out, error = self._run_process(argv, ctx.spec_dir, env, stage / LOG_FILE, spec.timeout)
        elapsed = time.monotonic() - t0
        if self._stop.is_set():
            shutil.rmtree(stage, ignore_errors=True)
            return None
        status, reason, metrics = self._judge(stage, rc, timed_out, error, spec.timeout, spec.metric.name)
        entry = {
            "attempt": attempt,
            "exit_code": rc,
            "status": status,
            "reason": reason,
            "duration_s": round(elapsed, 4),
        }
        return _Attempt(stage, status, reason, rc, metrics, entry)

    @staticmethod
    def _judge(
        stage: Path, rc: int | None, timed_out: bool, error: str | None, timeout: float | None, metric: str
    ) -> tuple[CellStatus, str | None, dict[str, Any] | None]:
        if error:
            return "failed", error, None
        if timed_out:
            return "failed", f"timed out after {timeout:g}s (killed)", None
        if rc != 0:
            what = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
            tail = log_tail(stage / LOG_FILE, 1)
            return "failed", what + (f"; last log line: {tail[:200]}" if tail else ""), None
        path = stage / RESULT_FILE
        if not path.is_file():
            return "failed", f"exited 0 but wrote no {RESULT_FILE} in its output directory", None
        try:
            doc = parse_result(path.read_bytes(), metric)
        except ArtifactError as err:
            return "failed", str(err), None
        metrics: dict[str, Any] = doc["metrics"]
        return "succeeded", None, metrics

"""Crash safety and resume: a run killed with SIGKILL leaves only whole cells, resume runs only the
missing ones, and Ctrl-C stops every process without publishing the cells in flight."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from expkit.core.errors import InputError, Interrupted, RunNotFound
from expkit.executors.local import LocalExecutor
from expkit.runner import resume_run, start_run
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec
from expkit.stores import FileStore
from expkit.stores.filesystem import STAGING

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: resumable
spec:
  image: python:3.12-slim
  command: [python, cell.py]
  params: {{sleep: {sleep}}}
  algorithms: {algorithms}
  datasets: [d1, d2]
  replicates: {replicates}
  metric: {{name: score, goal: minimize}}
"""

CELL = """\
import json, os, sys, time
from pathlib import Path
cell = os.environ["EXPKIT_CELL"]
with open("start.log", "a") as fh:
    fh.write(f"start {cell} {os.getpid()}\\n")
if os.environ["EXPKIT_ALGORITHM"] == "flaky" and not Path("fixed").exists():
    sys.exit(5)
time.sleep(json.loads(os.environ["EXPKIT_PARAMS"])["sleep"])
out = Path(os.environ["EXPKIT_OUTPUT_DIR"])
(out / "result.json").write_text(json.dumps({"metrics": {"score": int(os.environ["EXPKIT_SEED"]) % 100}}))
"""


def make_spec(
    tmp_path: Path, *, algorithms: str = "[{name: a}, {name: b}]", replicates: int = 3, sleep: float = 0.3
) -> Path:
    spec_dir = tmp_path / "exp"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "cell.py").write_text(CELL)
    (spec_dir / ".expkitignore").write_text("start.log\n")  # the cells write it into their directory: not code
    path = spec_dir / "experiment.yml"
    path.write_text(SPEC.format(algorithms=algorithms, replicates=replicates, sleep=sleep))
    return path


def started_cells(spec: Path) -> list[str]:
    log = spec.parent / "start.log"
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start ")]


def processes_in(directory: Path) -> list[int]:
    """Pids of the live processes whose working directory is ``directory`` (our runs' processes)."""
    pids = []
    target = str(directory.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_leftovers(directory: Path) -> None:
    for pid in processes_in(directory):
        try:
            os.killpg(pid, signal.SIGKILL)  # each cell leads its own session / process group
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(predicate, within: float = 30.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def published_cell_dirs(store_root: Path, run_id: str) -> list[Path]:
    runs = store_root / run_id / "runs"
    return [p for p in runs.glob("*/*/*") if p.is_dir()] if runs.is_dir() else []


def assert_only_whole_cells(store: FileStore, run_id: str) -> set[str]:
    """Every cell directory under runs/ is complete; return the completed cell keys."""
    dirs = published_cell_dirs(store.root, run_id)
    for d in dirs:
        assert (d / "run.json").is_file(), f"half-written cell visible: {d}"
        record = json.loads((d / "run.json").read_text())
        assert record["status"] == "succeeded", record
        assert "score" in json.loads((d / "result.json").read_text())["metrics"]
    done = store.completed_cells(run_id)
    assert done == {"/".join(d.relative_to(store.root / run_id / "runs").parts) for d in dirs}
    assert not any(STAGING in k for k in store.list(f"{run_id}/"))
    return done


# ---------------------------------------------------------------------------------------------


def test_sigkilled_run_resumes_without_rerunning_finished_cells(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, replicates=3, sleep=0.3)  # 12 cells, 2 workers
    store_root = tmp_path / "store"
    code = (
        "import sys\nfrom expkit.runner import start_run\nfrom expkit.stores import FileStore\n"
        "start_run(sys.argv[1], FileStore(sys.argv[2]), workers=2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(spec), str(store_root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    total = 12
    try:

        def some_done() -> bool:
            n = len(list(store_root.glob("*/runs/*/*/*/run.json")))
            return n >= 3 or proc.poll() is not None

        assert wait_until(some_done), "the run never published a cell"
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(spec.parent)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    assert wait_until(lambda: not processes_in(spec.parent), within=10)

    store = FileStore(store_root)
    [run_id] = store.list_runs()
    done_before = assert_only_whole_cells(store, run_id)
    assert 3 <= len(done_before) < total
    assert store.manifest(run_id)["status"] == "running"
    log_before = started_cells(spec)

    outcome = resume_run(run_id, store, workers=2)
    assert outcome.ok and outcome.total == total and outcome.succeeded == total
    assert outcome.skipped == len(done_before) and outcome.ran == total - len(done_before)
    rerun = started_cells(spec)[len(log_before) :]
    assert not set(rerun) & done_before, "a completed cell was executed again"
    assert sorted(rerun) == sorted({c.key for c in build_matrix(load_spec(spec).experiment)} - done_before)
    assert assert_only_whole_cells(store, run_id) == {c.key for c in build_matrix(load_spec(spec).experiment)}
    assert store.manifest(run_id)["status"] == "complete"
    assert not (store_root / run_id / STAGING).exists()


def test_resume_rerun_failed_reruns_only_failed_cells(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, algorithms="[{name: flaky}, {name: solid}]", replicates=2, sleep=0)
    store = FileStore(tmp_path / "store")
    first = start_run(spec, store, workers=2)
    failed = {f"flaky/{d}/{r}" for d in ("d1", "d2") for r in range(2)}
    assert set(first.failed) == failed and first.succeeded == 4
    n_log = len(started_cells(spec))

    (spec.parent / "fixed").write_text("")  # the fix: a change of the run's code, recorded
    again = resume_run(first.run_id, store, workers=2, allow_changes=True)  # failed cells are complete: nothing to do
    assert again.ran == 0 and set(again.failed) == failed
    assert len(started_cells(spec)) == n_log

    fixed = resume_run(first.run_id, store, rerun_failed=True, workers=2)
    assert fixed.ok and fixed.ran == 4 and fixed.skipped == 4
    assert sorted(started_cells(spec)[n_log:]) == sorted(failed)
    for key in failed:
        record = store.get_json(f"{first.run_id}/runs/{key}/run.json")
        assert record["status"] == "succeeded"
    assert not any(".tmp-" in k for k in store.list(f"{first.run_id}/"))
    all_cells = {c.key for c in build_matrix(load_spec(spec).experiment)}
    assert store.completed_cells(first.run_id) == all_cells
    # While a cell is republished, the old attempt is moved aside next to it; readers must not see it.
    cell_dir = store.root / first.run_id / "runs" / "flaky" / "d1" / "0"
    aside = cell_dir.with_name("0.tmp-old-0123abcd")
    aside.mkdir()
    (aside / "run.json").write_text((cell_dir / "run.json").read_text())
    assert store.completed_cells(first.run_id) == all_cells


def test_resume_refuses_a_different_spec_file(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, replicates=1, sleep=0)
    store = FileStore(tmp_path / "store")
    outcome = start_run(spec, store, workers=2)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "experiment.yml").write_text(spec.read_text().replace("replicates: 1", "replicates: 2"))
    with pytest.raises(InputError) as info:
        resume_run(outcome.run_id, store, spec_path=other_dir / "experiment.yml")
    assert "differs" in str(info.value) and info.value.exit_code == 2
    again = resume_run(outcome.run_id, store, spec_path=spec)  # the same spec is fine
    assert again.ok and again.ran == 0
    with pytest.raises(RunNotFound):
        resume_run("resumable-zzzzz", store)


def test_resume_latest_with_overrides_keeps_them(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, replicates=1, sleep=0)
    store = FileStore(tmp_path / "store")
    outcome = start_run(spec, store, workers=2, overrides=["sleep=0.01"])
    store.delete(f"{outcome.run_id}/runs/a/d1/0")  # as if that cell never finished
    again = resume_run("latest", store, spec_path=spec, workers=1)
    assert again.run_id == outcome.run_id and again.ok and again.ran == 1
    assert store.get_json(f"{outcome.run_id}/runs/a/d1/0/run.json")["params"] == {"sleep": 0.01}


def test_interrupt_stops_processes_and_publishes_no_cell_in_flight(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, replicates=4, sleep=0.3)  # 16 cells, 2 workers: ~2.5 s uninterrupted
    store = FileStore(tmp_path / "store")
    run_ids: list[str] = []
    fired = threading.Event()
    stop_watching = threading.Event()

    def watch() -> None:
        # Interrupt the main thread (as Ctrl-C would) once two cells are published and most are not.
        def ready() -> bool:
            return stop_watching.is_set() or (bool(run_ids) and len(store.completed_cells(run_ids[0])) >= 2)

        if wait_until(ready) and not stop_watching.is_set() and len(store.completed_cells(run_ids[0])) < 8:
            fired.set()
            _thread.interrupt_main()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(Interrupted) as info:
            start_run(
                spec,
                store,
                workers=2,
                executor=LocalExecutor(kill_grace=1.0),
                on_start=lambda run_id, n: run_ids.append(run_id),
            )
    finally:
        stop_watching.set()
        watcher.join()
    assert fired.is_set()
    assert info.value.exit_code == 130 and "resume" in str(info.value)
    run_id = run_ids[0]
    # Every process the run started is gone (not merely orphaned).
    assert wait_until(lambda: not processes_in(spec.parent), within=10), processes_in(spec.parent)
    done = assert_only_whole_cells(store, run_id)  # in-flight cells were not published as failed
    assert 2 <= len(done) < 16 and done <= set(started_cells(spec))
    assert store.manifest(run_id)["status"] == "interrupted"

    outcome = resume_run(run_id, store, workers=2)
    assert outcome.ok and outcome.skipped == len(done) and outcome.ran == 16 - len(done)


def test_sigint_to_a_running_process_interrupts_cleanly(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, replicates=4, sleep=0.3)  # 16 cells
    store_root = tmp_path / "store"
    code = textwrap.dedent("""\
        import sys
        from expkit.core.errors import Interrupted
        from expkit.runner import start_run
        from expkit.stores import FileStore
        try:
            start_run(sys.argv[1], FileStore(sys.argv[2]), workers=2)
        except Interrupted as err:
            print("INTERRUPTED", err)
            sys.exit(err.exit_code)
        """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(spec), str(store_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: len(list(store_root.glob("*/runs/*/*/*/run.json"))) >= 2 or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        kill_leftovers(spec.parent)
    assert proc.returncode == 130, out[-2000:]
    assert "INTERRUPTED" in out and "--resume" in out
    assert wait_until(lambda: not processes_in(spec.parent), within=10), processes_in(spec.parent)
    store = FileStore(store_root)
    [run_id] = store.list_runs()
    done = assert_only_whole_cells(store, run_id)
    assert 2 <= len(done) < 16
    assert store.manifest(run_id)["status"] == "interrupted"


def test_stop_from_another_thread_kills_processes_and_raises_interrupted(tmp_path: Path) -> None:
    # What a SIGTERM handler does: call executor.stop() while the run is going on.
    spec = make_spec(tmp_path, replicates=1, sleep=30)  # 4 cells, 2 workers: 2 in flight, 2 waiting
    store = FileStore(tmp_path / "store")
    executor = LocalExecutor(kill_grace=0.5)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start_run(spec, store, workers=2, executor=executor)
        except BaseException as err:  # noqa: BLE001 - collected for the assertions below
            errors.append(err)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert wait_until(lambda: len(started_cells(spec)) == 2, within=30)
        executor.stop()
        t.join(timeout=30)
    finally:
        if t.is_alive():
            kill_leftovers(spec.parent)
            t.join(timeout=30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
    assert wait_until(lambda: not processes_in(spec.parent), within=10), processes_in(spec.parent)
    assert len(started_cells(spec)) == 2  # the waiting cells never started
    [run_id] = store.list_runs()
    assert store.completed_cells(run_id) == set()  # both cells were in flight: nothing published
    assert store.manifest(run_id)["status"] == "interrupted"

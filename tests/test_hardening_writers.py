"""Issue 13, items 1 and 9: one writer per run, and a full disk.

Item 1: a session that writes a run holds the run's lease (``<run-id>/lease.json``); a second writer is
refused with one line naming the holder; a dead holder's lease is taken over (of several sessions taking
over at once exactly one wins); each session stages in its own directory, so no session deletes another's
files; a cell marked succeeded whose result.json is gone counts as failed and is rerun by
``--rerun-failed``. Readers never take the lease.

Item 9: a full disk is one line naming the path and the free space, exit 1; no temporary file is left;
the manifest says what happened; resuming after freeing space completes the run.

Real things only: ``expkit`` subprocesses, the real SeaweedFS server, a real tmpfs for the full disk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from s3server import S3Endpoint, new_bucket_name

from expkit.core.errors import ExpkitError, StoreError
from expkit.runner import resume_run, start_run
from expkit.stores import FileStore
from expkit.stores.base import RunStore

SPEC = textwrap.dedent("""\
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: writers
      license: MIT
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [python, cell.py]
      algorithms: [{{name: a}}, {{name: b}}]
      datasets: [d1]
      replicates: 3
      metric: {{name: score, goal: minimize}}
""").format(digest="c" * 64)

# A cell: records that it started, waits while the file ``hold`` exists in the spec's directory, writes
# five extra files and result.json. With the file ``fill`` present, cell a/d1/1 then fills the disk its
# output directory is on (the full-disk tests).
CELL = textwrap.dedent("""\
    import json, os, time
    from pathlib import Path
    cell = os.environ["EXPKIT_CELL"]
    with open("start.log", "a") as fh:
        fh.write(f"start {cell} {os.getpid()}\\n")
    deadline = time.monotonic() + 120
    while Path("hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = Path(os.environ["EXPKIT_OUTPUT_DIR"])
    (out / "extra").mkdir()
    for i in range(5):
        (out / "extra" / f"part{i}.txt").write_text(f"{cell} part {i}\\n")
    (out / "result.json").write_text(json.dumps({"metrics": {"score": int(os.environ["EXPKIT_SEED"]) % 100}}))
    if Path("fill").exists() and cell == "a/d1/1":
        try:
            with open(out / "ballast", "wb", buffering=0) as fh:
                while True:
                    fh.write(b"x" * 65536)
        except OSError:
            pass
""")

CELLS = {f"{a}/d1/{r}" for a in ("a", "b") for r in range(3)}
HOST = socket.gethostname()


def make_spec(tmp_path: Path, *, hold: bool = False) -> Path:
    spec_dir = tmp_path / "exp"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "cell.py").write_text(CELL)
    # The tests steer the cells through these files: they are not the experiment's code (issue 15's check).
    (spec_dir / ".expkitignore").write_text("hold\nfill\nstart.log\n")
    if hold:
        (spec_dir / "hold").write_text("")
    path = spec_dir / "experiment.yml"
    path.write_text(SPEC)
    return path


def started(spec: Path) -> list[tuple[str, int]]:
    log = spec.parent / "start.log"
    if not log.exists():
        return []
    return [(p[1], int(p[2])) for p in (line.split() for line in log.read_text().splitlines()) if len(p) == 3]


def wait_until(predicate: Callable[[], bool], within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def expkit(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_cells(spec: Path) -> None:
    """SIGKILL the cells' processes (each leads its own process group)."""
    for _, pid in started(spec):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_nothing_lost(store: RunStore, run_id: str) -> None:
    """Every published cell is whole: a succeeded one has its result.json, log.txt and all five extra files."""
    keys = set(store.list(f"{run_id}/runs/"))
    for cell in store.completed_cells(run_id):
        record = store.get_json(f"{run_id}/runs/{cell}/run.json")
        if record["status"] != "succeeded":
            continue
        prefix = f"{run_id}/runs/{cell}/"
        wanted = {prefix + "result.json", prefix + "log.txt", *(f"{prefix}extra/part{i}.txt" for i in range(5))}
        assert wanted <= keys, f"{cell} is marked succeeded but lost {sorted(wanted - keys)}"


def foreign_lease(*, host: str = "elsewhere.example", pid: int = 4242, age_s: float = 5, ttl_s: float = 120) -> bytes:
    """A lease as another machine's session writes it (heartbeat ``age_s`` ago, expiring ``ttl_s`` after it)."""

    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"

    now = time.time()
    doc = {
        "owner": "f" * 16,
        "host": host,
        "pid": pid,
        "command": "expkit run",
        "started_at": iso(now - age_s - 60),
        "heartbeat_at": iso(now - age_s),
        "expires_at": iso(now - age_s + ttl_s),
    }
    return json.dumps(doc).encode()


@pytest.fixture(autouse=True)
def no_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EXPKIT_STORE", raising=False)
    monkeypatch.delenv("EXPKIT_LEASE_TTL", raising=False)
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def s3_pair(s3_server: S3Endpoint, tmp_path: Path) -> tuple[RunStore, RunStore]:
    """Two S3 stores (two sessions) on one fresh bucket, sharing the local cache and staging root as two
    processes on one machine do."""
    bucket = new_bucket_name("lease")
    first = s3_server.store(bucket, "runs", cache_dir=tmp_path / "s3cache", create=True)
    second = s3_server.store(bucket, "runs", cache_dir=tmp_path / "s3cache")
    return first, second


# ---------------------------------------------------------------------------------------------
# Item 1: two writers
# ---------------------------------------------------------------------------------------------


def test_two_concurrent_resumes_on_the_filesystem_one_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    store_dir = tmp_path / "store"
    first = expkit("run", str(spec), "--store", str(store_dir), "-j", "2", "--no-results", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    for cell in ("a/d1/1", "b/d1/1", "a/d1/2", "b/d1/2"):  # as if a crash had lost them
        (store_dir / run_id / "runs" / cell / "run.json").unlink()
    (spec.parent / "start.log").unlink()
    (spec.parent / "hold").write_text("")
    holder = spawn("run", "--resume", run_id, "--store", str(store_dir), "-j", "2", "--no-results", cwd=tmp_path)
    second: subprocess.Popen[str] | None = None
    try:
        assert wait_until(lambda: len(started(spec)) >= 2 or holder.poll() is not None), "the resume never started"
        # A reader meanwhile: never refused, never waits for the writer.
        shown = expkit("show", run_id, "--store", str(store_dir), "--json", cwd=tmp_path, timeout=60)
        assert shown.returncode == 0, shown.stderr
        second = spawn("run", "--resume", run_id, "--store", str(store_dir), "-j", "2", "--no-results", cwd=tmp_path)
        # Refused at once; before the fix it ran the same cells alongside the first session.
        wait_until(lambda: second is not None and second.poll() is not None, within=20)
        (spec.parent / "hold").unlink()
        out2, err2 = second.communicate(timeout=120)
        out1, err1 = holder.communicate(timeout=120)
    finally:
        for proc in (holder, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        kill_cells(spec)
    assert second.returncode == 1, (out2, err2)
    [line] = error_lines(err2)
    assert run_id in line and f"pid {holder.pid}" in line and HOST in line and "since" in line, line
    assert "Traceback" not in err2 and "internal error" not in err2
    assert holder.returncode == 0, err1
    store = FileStore(store_dir)
    assert store.completed_cells(run_id) == CELLS
    assert_nothing_lost(store, run_id)
    assert sorted(c for c, _ in started(spec)) == ["a/d1/1", "a/d1/2", "b/d1/1", "b/d1/2"]  # each ran once
    manifest = store.manifest(run_id)
    assert manifest["status"] == "complete" and len(manifest["sessions"]) == 2
    assert not (store_dir / run_id / "lease.json").exists(), "the lease outlived its session"
    assert not list((store_dir / run_id).glob(".staging/*")), "staging left behind"


def test_a_new_run_and_a_resume_of_it_on_s3_one_is_refused_and_nothing_is_lost(
    s3_pair: tuple[RunStore, RunStore], tmp_path: Path
) -> None:
    """The issue's S3 reproduction (a run still going plus a resume of it), made deterministic: the first
    session's cells wait on a file while the second session tries to write the same run."""
    first_store, second_store = s3_pair
    spec = make_spec(tmp_path, hold=True)
    ids: list[str] = []
    results: dict[str, Any] = {}

    def session(name: str, fn: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = fn()
            except BaseException as err:  # noqa: BLE001 - the test inspects it
                results[name] = err

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    first = session("first", lambda: start_run(spec, first_store, workers=2, on_start=lambda r, n: ids.append(r)))
    try:
        assert wait_until(lambda: len(started(spec)) >= 2 or not first.is_alive()), "the run never started"
        [run_id] = ids
        second = session("second", lambda: resume_run(run_id, second_store, spec_path=spec, workers=2))
        second.join(timeout=20)
    finally:
        (spec.parent / "hold").unlink()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not first.is_alive() and not second.is_alive()
    refused = results["second"]
    assert isinstance(refused, StoreError), f"a second writer was not refused: {refused!r}"
    message = str(refused)
    assert run_id in message and f"pid {os.getpid()}" in message and HOST in message and "\n" not in message
    outcome = results["first"]
    assert not isinstance(outcome, BaseException), repr(outcome)
    assert outcome.ok and outcome.succeeded == len(CELLS)
    assert first_store.completed_cells(run_id) == CELLS
    assert_nothing_lost(first_store, run_id)
    assert not first_store.exists(f"{run_id}/lease.json")


def test_a_sigkilled_holder_leaves_a_lease_that_the_next_resume_takes_over(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, hold=True)
    store_dir = tmp_path / "store"
    proc = spawn("run", str(spec), "--store", str(store_dir), "-j", "2", "--no-results", cwd=tmp_path)
    try:
        assert wait_until(lambda: len(started(spec)) >= 2 or proc.poll() is not None), "the run never started"
        assert proc.poll() is None, f"the run ended by itself: {proc.communicate()[1][-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_cells(spec)
        (spec.parent / "hold").unlink()
    proc.communicate()
    [run_dir] = [p for p in store_dir.iterdir() if (p / "manifest.json").is_file()]
    lease = json.loads((run_dir / "lease.json").read_text())
    assert lease["pid"] == proc.pid and lease["host"] == HOST
    resumed = expkit("run", "--resume", run_dir.name, "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "took over" in resumed.stderr and f"pid {proc.pid}" in resumed.stderr, resumed.stderr
    assert json.loads(resumed.stdout)["succeeded"] == len(CELLS)
    assert_nothing_lost(FileStore(store_dir), run_dir.name)
    assert not (run_dir / "lease.json").exists()


@pytest.fixture(params=["filesystem", "s3"])
def lease_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], RunStore]]:
    """A factory of store objects on one location: every call is another session's store."""
    if request.param == "filesystem":
        yield lambda: FileStore(tmp_path / "store")
        return
    server: S3Endpoint = request.getfixturevalue("s3_server")
    bucket = new_bucket_name("lease")
    server.store(bucket, "runs", cache_dir=tmp_path / "s3cache", create=True)
    yield lambda: server.store(bucket, "runs", cache_dir=tmp_path / "s3cache")


def test_a_live_lease_on_another_host_is_refused_and_an_expired_one_taken_over(
    lease_stores: Callable[[], RunStore],
) -> None:
    from expkit.stores.lease import LeaseHeld, acquire_lease

    store = lease_stores()
    store.put("study-aaaaa/lease.json", foreign_lease(age_s=5, ttl_s=120))
    with pytest.raises(LeaseHeld) as refused:
        acquire_lease(store, "study-aaaaa")
    message = str(refused.value)
    assert "elsewhere.example" in message and "pid 4242" in message and "since" in message, message
    assert refused.value.exit_code == 1 and "\n" not in message
    # Its heartbeat stopped longer ago than its expiry: taken over, and the lease is ours now.
    store.put("study-aaaaa/lease.json", foreign_lease(age_s=300, ttl_s=120))
    lease = acquire_lease(store, "study-aaaaa")
    mine = json.loads(store.get("study-aaaaa/lease.json"))
    assert mine["pid"] == os.getpid() and mine["host"] == HOST and mine["owner"] != "f" * 16
    assert "study-aaaaa/lease.json" not in set(store.list("study-aaaaa/")), "the lease is store-internal"
    lease.renew()
    assert json.loads(store.get("study-aaaaa/lease.json"))["heartbeat_at"] >= mine["heartbeat_at"]
    lease.release()
    assert not store.exists("study-aaaaa/lease.json")
    assert not [k for k in _all_keys(store, "study-aaaaa") if "takeover" in k], "a takeover claim was left behind"


def _all_keys(store: RunStore, run_id: str) -> list[str]:
    if isinstance(store, FileStore):
        base = store.root / run_id
        return [p.relative_to(store.root).as_posix() for p in base.rglob("*")] if base.exists() else []
    return list(store._scan(f"{run_id}/"))  # type: ignore[attr-defined]


def test_concurrent_takeover_of_a_dead_lease_has_exactly_one_winner(lease_stores: Callable[[], RunStore]) -> None:
    from expkit.stores.lease import LeaseHeld, acquire_lease

    for round_ in range(4):
        run_id = f"race-{round_}aaaa"
        if round_:  # round 0: no lease at all; later rounds: a dead holder's lease
            lease_stores().put(f"{run_id}/lease.json", foreign_lease(age_s=600, ttl_s=60))
        stores = [lease_stores() for _ in range(8)]
        barrier = threading.Barrier(len(stores))

        def contend(store: RunStore, run_id: str = run_id, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            try:
                return acquire_lease(store, run_id)
            except LeaseHeld as err:
                return err

        with ThreadPoolExecutor(len(stores)) as pool:
            got = list(pool.map(contend, stores))
        winners = [g for g in got if not isinstance(g, LeaseHeld)]
        assert len(winners) == 1, f"round {round_}: {len(winners)} sessions hold the lease"
        owner = json.loads(lease_stores().get(f"{run_id}/lease.json"))["owner"]
        assert winners[0].holder.owner == owner
        winners[0].release()


def test_a_session_that_loses_its_lease_stops_and_leaves_the_manifest_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from expkit.stores.lease import LeaseLost

    monkeypatch.setenv("EXPKIT_LEASE_TTL", "3")  # heartbeat every 0.5 s
    spec = make_spec(tmp_path, hold=True)
    store = FileStore(tmp_path / "store")
    ids: list[str] = []
    results: dict[str, Any] = {}

    def target() -> None:
        try:
            results["outcome"] = start_run(spec, store, workers=2, on_start=lambda r, n: ids.append(r))
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            results["outcome"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: len(started(spec)) >= 2), "the run never started"
        [run_id] = ids
        manifest_before = store.get(f"{run_id}/manifest.json")
        store.put(f"{run_id}/lease.json", foreign_lease(age_s=0, ttl_s=600))  # someone took the run over
        thread.join(timeout=60)
    finally:
        if (spec.parent / "hold").exists():
            (spec.parent / "hold").unlink()
        kill_cells(spec)
    assert not thread.is_alive()
    lost = results["outcome"]
    assert isinstance(lost, LeaseLost), repr(lost)
    assert "elsewhere.example" in str(lost) and lost.exit_code == 1
    assert store.get(f"{run_id}/manifest.json") == manifest_before, "a session without the lease wrote the manifest"
    assert json.loads(store.get(f"{run_id}/lease.json"))["host"] == "elsewhere.example", "it deleted the new lease"


def test_each_session_stages_in_its_own_directory(tmp_path: Path) -> None:
    one, two = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    a, b = one.staging_dir("study-aaaaa"), two.staging_dir("study-aaaaa")
    assert a != b
    (a / "cell").mkdir()
    (b / "cell").mkdir()
    two.clear_staging("study-aaaaa")
    assert (a / "cell").is_dir(), "one session's cleanup deleted another session's staged files"
    assert not b.exists()


def test_a_succeeded_cell_without_result_json_counts_as_failed_and_is_rerun(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    store_dir = tmp_path / "store"
    first = expkit("run", str(spec), "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    (store_dir / run_id / "runs" / "b" / "d1" / "1" / "result.json").unlink()

    shown = expkit("show", run_id, "--store", str(store_dir), "--json", cwd=tmp_path)
    doc = json.loads(shown.stdout)
    assert doc["counts"]["failed"] == 1 and doc["counts"]["succeeded"] == len(CELLS) - 1, doc["counts"]
    [failure] = doc["failures"]
    assert failure["cell"] == "b/d1/1" and "result.json" in failure["reason"], failure
    listed = json.loads(expkit("list", "--store", str(store_dir), "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["failed"]) for r in listed] == [(run_id, 1)]
    results = expkit("results", run_id, "--store", str(store_dir), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert "b/d1/1" in results.stdout + results.stderr

    plain = expkit("run", "--resume", run_id, "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    assert json.loads(plain.stdout)["ran"] == 0 and plain.returncode == 1  # counted as failed, not as done
    rerun = expkit(
        "run", "--resume", run_id, "--rerun-failed", "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path
    )
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads(rerun.stdout)
    assert (doc["ran"], doc["succeeded"]) == (1, len(CELLS))
    assert (store_dir / run_id / "runs" / "b" / "d1" / "1" / "result.json").is_file()


def test_export_of_a_run_being_written_leaves_the_lease_out(tmp_path: Path) -> None:
    from expkit.stores.lease import acquire_lease

    spec = make_spec(tmp_path)
    store_dir = tmp_path / "store"
    first = expkit("run", str(spec), "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    run_id = json.loads(first.stdout)["run_id"]
    lease = acquire_lease(FileStore(store_dir), run_id)  # as if a resume were going on
    try:
        exported = expkit("export", run_id, "--store", str(store_dir), "-o", str(tmp_path / "b.zip"), cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
    finally:
        lease.release()
    import zipfile

    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert not [n for n in zf.namelist() if "lease" in n]


# ---------------------------------------------------------------------------------------------
# Item 9: a full disk
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs), unmounted afterwards; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err}): the full-disk tests need root or CAP_SYS_ADMIN")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk tests need CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(path: Path) -> None:
    """Write ``path`` until the file system it is on is full."""
    try:
        with open(path, "wb", buffering=0) as fh:
            while True:
                fh.write(b"x" * 65536)
    except OSError:
        pass


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def test_run_on_a_full_disk_is_one_line_cleans_up_and_resumes(tmp_path: Path, small_disk: Path) -> None:
    spec = make_spec(tmp_path)
    (spec.parent / "fill").write_text("")  # cell a/d1/1 fills the disk after writing its result
    store_dir = small_disk / "store"
    full = expkit("run", str(spec), "--store", str(store_dir), "-j", "1", "--no-results", cwd=tmp_path)
    assert full.returncode == 1, (full.stdout, full.stderr)
    assert "Traceback" not in full.stderr and "internal error" not in full.stderr, full.stderr
    [line] = error_lines(full.stderr)
    assert "no space left on device" in line.lower() and str(store_dir) in line and "free" in line, line
    assert not temporary_files(small_disk), temporary_files(small_disk)
    [run_dir] = [p for p in store_dir.iterdir() if (p / "manifest.json").is_file()]
    assert not list(run_dir.glob(".staging/*")), "staged files left behind"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no space left" in manifest["reason"].lower(), manifest
    assert manifest["sessions"][-1]["status"] == "failed"
    assert not (run_dir / "lease.json").exists()

    (spec.parent / "fill").unlink()  # space freed: the resume completes the run
    resumed = expkit("run", "--resume", run_dir.name, "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["succeeded"] == len(CELLS)
    assert_nothing_lost(FileStore(store_dir), run_dir.name)
    assert not temporary_files(small_disk)


def test_results_on_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path: Path, small_disk: Path) -> None:
    spec = make_spec(tmp_path)
    store_dir = tmp_path / "store"
    first = expkit("run", str(spec), "--store", str(store_dir), "--no-results", "--json", cwd=tmp_path)
    run_id = json.loads(first.stdout)["run_id"]
    out = small_disk / "results"
    fill(small_disk / "ballast")
    full = expkit("results", run_id, "--store", str(store_dir), "-o", str(out), cwd=tmp_path)
    assert full.returncode == 1, (full.stdout, full.stderr)
    assert "Traceback" not in full.stderr and "internal error" not in full.stderr, full.stderr
    [line] = error_lines(full.stderr)
    assert "no space left on device" in line.lower() and str(out) in line and "free" in line, line
    assert not temporary_files(small_disk), temporary_files(small_disk)

    (small_disk / "ballast").unlink()
    again = expkit("results", run_id, "--store", str(store_dir), "-o", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (out / "report.html").is_file() and not temporary_files(small_disk)


def test_a_store_write_on_a_full_disk_names_the_key_and_the_space(tmp_path: Path, small_disk: Path) -> None:
    store = FileStore(small_disk / "store")
    fill(small_disk / "ballast")
    with pytest.raises(ExpkitError) as full:
        store.put("study-aaaaa/manifest.json", b"{}" * 100_000)
    message = str(full.value)
    assert "no space left on device" in message.lower() and "study-aaaaa/manifest.json" in message, message
    assert "free" in message and "needed" in message and full.value.exit_code == 1
    assert not temporary_files(small_disk)

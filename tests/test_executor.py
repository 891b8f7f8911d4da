"""The local executor: each cell a subprocess in the spec's directory, judged by the run contract,
published through a FileStore with run.json last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from expkit.core.contract import ENV_VARS
from expkit.core.errors import ExecutionError
from expkit.executors.base import CellEvent
from expkit.executors.local import LocalExecutor
from expkit.runner import RunOutcome, start_run
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec
from expkit.stores import FileStore
from expkit.stores.base import PREPARE_LOG_KEY

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: exe
spec:
  image: python:3.12-slim
  command: {command}
  args: {args}
  params: {{budget: 3}}
  algorithms: {algorithms}
  datasets: {datasets}
  replicates: {replicates}
  metric: {{name: score, goal: minimize}}
{extra}"""

# A run script preamble: the contract's inputs, and a helper that writes result.json.
PRELUDE = """\
import json, os, sys, time
from pathlib import Path
OUT = Path(os.environ["EXPKIT_OUTPUT_DIR"])
ALG = os.environ["EXPKIT_ALGORITHM"]
def result(metrics, **extra):
    (OUT / "result.json").write_text(json.dumps({"metrics": metrics, **extra}))
"""


def make_spec(
    tmp_path: Path,
    script: str,
    *,
    algorithms: list[str] | None = None,
    datasets: str = "[d1]",
    replicates: int = 1,
    command: str = "[python, run.py]",
    args: str = "[]",
    extra: str = "",
) -> Path:
    """Write ``run.py`` (PRELUDE + script) and ``experiment.yml`` into ``tmp_path/exp``; return the spec path."""
    spec_dir = tmp_path / "exp"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "run.py").write_text(PRELUDE + textwrap.dedent(script))
    algs = "[" + ", ".join(f"{{name: {a}}}" for a in (algorithms or ["alpha"])) + "]"
    text = SPEC.format(
        command=command,
        args=args,
        algorithms=algs,
        datasets=datasets,
        replicates=replicates,
        extra=textwrap.indent(textwrap.dedent(extra), "  "),
    )
    path = spec_dir / "experiment.yml"
    path.write_text(text)
    return path


def run(spec: Path, tmp_path: Path, **kwargs) -> tuple[RunOutcome, FileStore]:
    store = FileStore(tmp_path / "store")
    kwargs.setdefault("workers", 1)
    return start_run(spec, store, **kwargs), store


def record(store: FileStore, outcome: RunOutcome, cell: str) -> dict:
    return store.get_json(f"{outcome.run_id}/runs/{cell}/run.json")


def cell_file(store: FileStore, outcome: RunOutcome, cell: str, name: str) -> bytes:
    return store.get(f"{outcome.run_id}/runs/{cell}/{name}")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids: list[int], within: float = 10.0) -> list[int]:
    """Poll until every pid is gone; return the ones still alive after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


# ---------------------------------------------------------------------------------------------


def test_success_is_published_with_record_result_and_log(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        print("hello from", ALG)
        print("to stderr", file=sys.stderr)
        (OUT / "model.txt").write_text("weights")
        seed = int(os.environ["EXPKIT_SEED"])
        result({"score": seed % 97 + 0.5, "n": 3}, trajectory=[{"step": 1, "score": 2.0}, {"step": 2, "score": 1.0}])
    """,
        algorithms=["alpha", "beta"],
        replicates=2,
    )
    events: list[CellEvent] = []
    outcome, store = run(spec, tmp_path, on_event=events.append)
    assert outcome.ok and outcome.total == 4 and outcome.succeeded == 4 and outcome.ran == 4
    cells = build_matrix(load_spec(spec).experiment)
    for cell in cells:
        rec = record(store, outcome, cell.key)
        assert rec["status"] == "succeeded" and rec["reason"] is None and rec["exit_code"] == 0
        assert rec["attempts"] == 1 and rec["cell"] == cell.key and rec["seed"] == cell.seed
        assert rec["metrics"] == {"score": cell.seed % 97 + 0.5, "n": 3}
        assert rec["params"] == {"budget": 3} and rec["executor"] == "local"
        assert rec["node"] and rec["started_at"] <= rec["ended_at"]  # provenance per cell
        assert "cpu_model" in rec and (rec["cpu_model"] is None or isinstance(rec["cpu_model"], str))
        doc = json.loads(cell_file(store, outcome, cell.key, "result.json"))
        assert doc["trajectory"][-1] == {"step": 2, "score": 1.0}
        log = cell_file(store, outcome, cell.key, "log.txt").decode()
        assert f"hello from {cell.algorithm}" in log and "to stderr" in log
        assert cell_file(store, outcome, cell.key, "model.txt") == b"weights"
    assert store.completed_cells(outcome.run_id) == {c.key for c in cells}
    assert not (tmp_path / "store" / outcome.run_id / ".staging").exists()
    started = [e.cell for e in events if e.kind == "started"]
    finished = [e for e in events if e.kind == "finished"]
    assert sorted(started) == sorted(c.key for c in cells)
    assert {e.status for e in finished} == {"succeeded"} and len(finished) == 4


def test_nonzero_exit_is_failed_and_kept(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        print("something went wrong")
        (OUT / "run.json").write_text('{"status": "succeeded"}')  # a run cannot forge its record
        sys.exit(3)
    """,
    )
    outcome, store = run(spec, tmp_path)
    assert not outcome.ok
    rec = record(store, outcome, "alpha/d1/0")
    assert rec["status"] == "failed" and rec["exit_code"] == 3
    assert rec["reason"].startswith("exit code 3") and "something went wrong" in rec["reason"]
    assert outcome.failed == {"alpha/d1/0": rec["reason"]}
    assert b"something went wrong" in cell_file(store, outcome, "alpha/d1/0", "log.txt")
    assert store.manifest(outcome.run_id)["status"] == "failed"


def test_failures_do_not_stop_other_cells_and_results_are_checked(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        if ALG == "no-result":
            pass
        elif ALG == "bad-json":
            (OUT / "result.json").write_text('{"metrics": {"score": 1.0')
        elif ALG == "no-metric":
            result({"other": 1.0})
        elif ALG == "nan-metric":
            result({"score": float("nan")})
        elif ALG == "no-metrics":
            (OUT / "result.json").write_text('{"score": 1}')
        elif ALG == "bad-trajectory":
            result({"score": 1.0}, trajectory=[{"score": 2.0}])
        else:
            result({"score": 1.0})
    """,
        algorithms=["no-result", "bad-json", "no-metric", "nan-metric", "no-metrics", "bad-trajectory", "fine"],
        extra="retries: 0\n",
    )
    outcome, store = run(spec, tmp_path, workers=2)
    assert outcome.total == 7 and outcome.succeeded == 1
    reasons = {k.split("/")[0]: v for k, v in outcome.failed.items()}
    assert "no result.json" in reasons["no-result"]
    assert "not valid JSON" in reasons["bad-json"]
    assert "lacks the spec's metric 'score'" in reasons["no-metric"]
    assert "not a finite number" in reasons["nan-metric"] and "'score'" in reasons["nan-metric"]
    assert "'metrics'" in reasons["no-metrics"]
    assert "trajectory[0]" in reasons["bad-trajectory"]
    assert set(reasons) == {"no-result", "bad-json", "no-metric", "nan-metric", "no-metrics", "bad-trajectory"}
    for alg, reason in reasons.items():
        rec = record(store, outcome, f"{alg}/d1/0")
        assert rec["status"] == "failed" and rec["reason"] == reason and rec["exit_code"] == 0
        assert rec["metrics"] is None
    assert record(store, outcome, "fine/d1/0")["status"] == "succeeded"


def test_a_cell_killed_by_the_stop_signal_before_the_stop_is_seen_is_not_published(tmp_path: Path) -> None:
    """scancel (Slurm) or a terminal's Ctrl-C signals the cell's process as well as expkit: the cell can die of
    SIGTERM before expkit's own handler has marked the session as stopping. It was then published as failed
    ("killed by signal 15"); a stopped cell must be left for the resume instead, as the contract says."""
    import signal
    import threading

    from expkit.core.errors import Interrupted

    spec = make_spec(tmp_path, f"os.kill(os.getpid(), {int(signal.SIGTERM)})\n")
    executor = LocalExecutor()

    def stop_soon(event: CellEvent) -> None:
        if event.kind == "started":  # the handler of the signal, running a little after the cell died
            threading.Timer(0.3, executor.stop).start()

    store = FileStore(tmp_path / "store")
    with pytest.raises(Interrupted):
        start_run(spec, store, workers=1, executor=executor, on_event=stop_soon)
    assert not list((tmp_path / "store").rglob("run.json")), "a stopped cell was published"


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["sigterm", "sigkill-escalation"])
def test_timeout_kills_the_run_and_its_grandchild(tmp_path: Path, ignore_sigterm: bool) -> None:
    spec = make_spec(
        tmp_path,
        f"""
        import signal, subprocess
        if {ignore_sigterm}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        Path("pids.json").write_text(json.dumps([os.getpid(), child.pid]))
        time.sleep(60)
        result({{"score": 1.0}})
    """,
        extra="timeout: 1s\n",
    )
    outcome, store = run(spec, tmp_path, executor=LocalExecutor(kill_grace=0.3))
    pids = json.loads((spec.parent / "pids.json").read_text())
    assert wait_dead(pids) == []
    rec = record(store, outcome, "alpha/d1/0")
    assert rec["status"] == "failed" and "timed out" in rec["reason"]
    assert outcome.failed["alpha/d1/0"].startswith("timed out after 1s")


def test_retries_record_every_attempt(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        marker = Path("attempted-" + os.environ["EXPKIT_CELL"].replace("/", "_"))
        if ALG == "flaky" and not marker.exists():
            marker.write_text("1")
            print("first attempt fails")
            sys.exit(1)
        if ALG == "broken":
            sys.exit(2)
        result({"score": 1.0})
    """,
        algorithms=["flaky", "broken", "solid"],
        extra="retries: 2\n",
    )
    events: list[CellEvent] = []
    outcome, store = run(spec, tmp_path, on_event=events.append)
    flaky = record(store, outcome, "flaky/d1/0")
    assert flaky["status"] == "succeeded" and flaky["attempts"] == 2
    assert [a["status"] for a in flaky["attempt_history"]] == ["failed", "succeeded"]
    assert flaky["attempt_history"][0]["exit_code"] == 1
    assert flaky["attempt_history"][0]["reason"].startswith("exit code 1")
    # The published cell holds the successful attempt's files only.
    assert b"first attempt fails" not in cell_file(store, outcome, "flaky/d1/0", "log.txt")
    broken = record(store, outcome, "broken/d1/0")
    assert broken["status"] == "failed" and broken["attempts"] == 3
    assert [a["exit_code"] for a in broken["attempt_history"]] == [2, 2, 2]
    assert record(store, outcome, "solid/d1/0")["attempts"] == 1
    retrying = [(e.cell, e.attempt) for e in events if e.kind == "retrying"]
    assert sorted(retrying) == [("broken/d1/0", 1), ("broken/d1/0", 2), ("flaky/d1/0", 1)]
    assert outcome.succeeded == 2 and list(outcome.failed) == ["broken/d1/0"]


def test_command_not_found_fails_clearly(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "", command="[no-such-command-expkit-test, --x]")
    outcome, store = run(spec, tmp_path)
    reason = outcome.failed["alpha/d1/0"]
    assert "command not found" in reason and "no-such-command-expkit-test" in reason
    assert record(store, outcome, "alpha/d1/0")["status"] == "failed"


def test_command_not_executable_fails_clearly(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "", command="[./run.py]")  # no execute bit
    outcome, _ = run(spec, tmp_path)
    reason = outcome.failed["alpha/d1/0"]
    assert "not executable" in reason or "Permission" in reason


def test_environment_placeholders_and_working_directory(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        env = {k: v for k, v in os.environ.items() if k.startswith("EXPKIT_")}
        (OUT / "seen.json").write_text(json.dumps({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd(),
                                                   "out": str(OUT.resolve())}))
        result({"score": 0.0})
    """,
        args='["{algorithm}", "{dataset}", "{seed}", "{replicate}", "{params.budget}", "{output_dir}"]',
        datasets="[d1, {name: d2, params: {budget: 9}}]",
        replicates=2,
    )
    outcome, store = run(spec, tmp_path, workers=2)
    assert outcome.ok
    for cell in build_matrix(load_spec(spec).experiment):
        seen = json.loads(cell_file(store, outcome, cell.key, "seen.json"))
        env = seen["env"]
        assert set(ENV_VARS) <= set(env)
        assert env["EXPKIT_ALGORITHM"] == cell.algorithm and env["EXPKIT_DATASET"] == cell.dataset
        assert env["EXPKIT_REPLICATE"] == str(cell.replicate) and env["EXPKIT_SEED"] == str(cell.seed)
        assert json.loads(env["EXPKIT_PARAMS"]) == dict(cell.params)
        assert env["EXPKIT_RUN_ID"] == outcome.run_id and env["EXPKIT_CELL"] == cell.key
        assert Path(env["EXPKIT_OUTPUT_DIR"]).resolve() == Path(seen["out"])
        budget = 9 if cell.dataset == "d2" else 3
        assert seen["argv"] == [
            cell.algorithm,
            cell.dataset,
            str(cell.seed),
            str(cell.replicate),
            str(budget),
            env["EXPKIT_OUTPUT_DIR"],
        ]
        assert Path(seen["cwd"]) == spec.parent.resolve()


def test_prepare_runs_once_before_any_cell(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        with open("events.log", "a") as fh:
            fh.write("cell " + os.environ["EXPKIT_CELL"] + "\\n")
        result({"score": 1.0})
    """,
        algorithms=["alpha", "beta"],
        replicates=2,
        extra="""
        prepare:
          command: [python, prep.py, "{params.budget}"]
    """,
    )
    (spec.parent / "prep.py").write_text(
        "import os, sys\n"
        "print('preparing', sys.argv[1], os.environ['EXPKIT_RUN_ID'])\n"
        "open('events.log', 'a').write('prepare ' + sys.argv[1] + '\\n')\n"
    )
    outcome, store = run(spec, tmp_path, workers=2)
    assert outcome.ok
    lines = (spec.parent / "events.log").read_text().splitlines()
    assert lines[0] == "prepare 3"
    assert sum(line.startswith("prepare") for line in lines) == 1
    assert sorted(lines[1:]) == sorted(f"cell {c.key}" for c in build_matrix(load_spec(spec).experiment))
    assert store.get(f"{outcome.run_id}/{PREPARE_LOG_KEY}").decode().strip() == f"preparing 3 {outcome.run_id}"


def test_failing_prepare_raises_with_log_tail_and_runs_no_cell(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        Path("cell-ran").write_text("yes")
        result({"score": 1.0})
    """,
        extra="""
        prepare:
          command: [python, -c, "import sys; print('downloading'); print('fatal: no network'); sys.exit(4)"]
    """,
    )
    store = FileStore(tmp_path / "store")
    started: list[str] = []
    with pytest.raises(ExecutionError) as info:
        start_run(spec, store, workers=1, on_start=lambda run_id, n: started.append(run_id))
    msg = str(info.value)
    assert "exit code 4" in msg and "fatal: no network" in msg and "no cell was run" in msg
    assert info.value.exit_code == 1
    assert not (spec.parent / "cell-ran").exists()
    run_id = started[0]
    assert store.completed_cells(run_id) == set()
    assert b"fatal: no network" in store.get(f"{run_id}/{PREPARE_LOG_KEY}")
    assert store.manifest(run_id)["status"] == "failed"


def _intervals(store: FileStore, outcome: RunOutcome) -> list[tuple[float, float]]:
    recs = store.cell_records(outcome.run_id)
    return sorted((r["metrics"]["t0"], r["metrics"]["t1"]) for r in recs.values())


def _max_concurrency(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
    level = peak = 0
    for _, step in points:  # at equal times an end (-1) sorts before a start (+1)
        level += step
        peak = max(peak, level)
    return peak


def test_workers_run_cells_concurrently(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        t0 = time.time()
        time.sleep(0.3)
        result({"score": 1.0, "t0": t0, "t1": time.time()})
    """,
        algorithms=["alpha", "beta"],
        replicates=3,
    )
    outcome, store = run(spec, tmp_path, workers=2)
    assert outcome.ok
    assert _max_concurrency(_intervals(store, outcome)) == 2

    (tmp_path / "store2").mkdir()
    serial = start_run(spec, FileStore(tmp_path / "store2"), workers=1)
    assert _max_concurrency(_intervals(FileStore(tmp_path / "store2"), serial)) == 1


def test_parallelism_caps_default_workers(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        t0 = time.time()
        time.sleep(0.2)
        result({"score": 1.0, "t0": t0, "t1": time.time()})
    """,
        algorithms=["alpha", "beta"],
        replicates=2,
        extra="parallelism: 1\nresources: {cpu: 250m}\n",
    )
    store = FileStore(tmp_path / "store")
    outcome = start_run(spec, store)  # workers from the spec: min(cpus / 0.25, parallelism=1)
    assert store.manifest(outcome.run_id)["workers"] == 1
    assert _max_concurrency(_intervals(store, outcome)) == 1


def test_python_command_uses_expkits_interpreter(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        """
        (OUT / "exe.txt").write_text(sys.executable)
        result({"score": 1.0})
    """,
    )
    outcome, store = run(spec, tmp_path)
    assert cell_file(store, outcome, "alpha/d1/0", "exe.txt").decode() == sys.executable


def test_manifest_records_the_run(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, 'result({"score": 1.0})\n', replicates=2)
    outcome, store = run(spec, tmp_path, overrides=["budget=5"])
    manifest = store.manifest(outcome.run_id)
    loaded = load_spec(spec, ["budget=5"])
    assert manifest["spec_sha256"] == loaded.sha256 and manifest["overrides"] == {"budget": 5}
    assert manifest["status"] == "complete" and manifest["cells"] == 2
    assert manifest["counts"] == {"total": 2, "succeeded": 2, "failed": 0, "missing": 0}
    assert outcome.run_id.startswith("exe-") and len(outcome.run_id) == len("exe-") + 5
    stored = store.spec_text(outcome.run_id)
    assert "budget: 5" in stored
    assert any("pinned" in w for w in outcome.warnings)
    for cell in ("alpha/d1/0", "alpha/d1/1"):
        assert record(store, outcome, cell)["params"] == {"budget": 5}
    assert not os.path.exists(tmp_path / "store" / outcome.run_id / ".staging")


def test_quickstart_optimizers_through_the_executor(tmp_path: Path) -> None:
    # The quickstart on one function, 3 replicates: the runs follow the contract and the comparison
    # is meaningful (the ES beats random search on sphere in every replicate).
    quickstart = Path(__file__).parent.parent / "examples" / "quickstart"
    spec_dir = tmp_path / "quickstart"
    spec_dir.mkdir()
    (spec_dir / "optimizers.py").write_text((quickstart / "optimizers.py").read_text())
    text = (quickstart / "experiment.yml").read_text()
    start, end = text.index("  datasets:\n"), text.index("  replicates: 8\n")
    text = text[:start] + "  datasets:\n    - {name: sphere, params: {dim: 5}}\n" + text[end:]
    (spec_dir / "experiment.yml").write_text(text.replace("replicates: 8", "replicates: 3"))
    outcome, store = run(spec_dir / "experiment.yml", tmp_path, workers=2)
    assert outcome.ok and outcome.total == 9
    recs = store.cell_records(outcome.run_id)
    best = {(r["algorithm"], r["replicate"]): r["metrics"]["best"] for r in recs.values()}
    for rep in range(3):
        assert best["one-plus-one-es", rep] < best["random-search", rep] / 1000
        assert len({r["seed"] for r in recs.values() if r["replicate"] == rep}) == 1  # paired seeds
    for key, rec in recs.items():
        assert rec["metrics"]["evaluations"] == 2000
        traj = json.loads(store.get(f"{outcome.run_id}/runs/{key}/result.json"))["trajectory"]
        assert [p["step"] for p in traj] == list(range(50, 2001, 50))
        values = [p["best"] for p in traj]
        assert values == sorted(values, reverse=True) and values[-1] == rec["metrics"]["best"]
    # Re-running a cell by hand with its recorded seed reproduces it exactly.
    rec = recs["simulated-annealing/sphere/1"]
    out = tmp_path / "by-hand"
    subprocess.run(
        [
            sys.executable,
            "optimizers.py",
            "--algorithm=simulated-annealing",
            "--function=sphere",
            "--dim=5",
            "--budget=2000",
            f"--seed={rec['seed']}",
            f"--output-dir={out}",
        ],
        cwd=spec_dir,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert json.loads((out / "result.json").read_text())["metrics"]["best"] == rec["metrics"]["best"]

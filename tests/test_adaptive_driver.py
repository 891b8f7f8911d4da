"""Adaptive replicates, the driver (issue 18): waves of replicates into one run, locally and on Argo, every
decision recorded, resume and ``--complete``, and ``expkit results`` using the sequential p-values.

The statistics are :mod:`expkit.adaptive.sequential`'s (tested on their own); the designs here are chosen so
that the outcome does not depend on the procedure's details: a dominating algorithm (complete separation of ten
runs against ten) is decided at the first look of two, and two algorithms whose values differ by a quarter of
their spread (uniform noise on [0, 1), shift 0.25) are neither decided nor given up early: they run to
``max_replicates``. The kill-and-resume test checks against the design the decisions planned, whatever
they are.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import test_argo_submit as argo_tests
from s3server import S3Endpoint
from test_argo_submit import Cluster, spec_doc
from test_resume import kill_leftovers, processes_in, wait_until
from typer.testing import CliRunner

from expkit.adaptive.driver import Options, Waves, adaptive_summary, resume_adaptive, start_adaptive
from expkit.adaptive.sequential import decide_dataset
from expkit.cli import app
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec_text
from expkit.stores import FileStore

RUN = """\
import json, os, time
out = os.environ["EXPKIT_OUTPUT_DIR"]
alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
time.sleep(float(os.environ.get("SLEEP") or 0))
value = {"good": 0.0, "mid": 10.0, "bad": 20.0, "a2": 0.25}.get(alg, 0.0) + (seed % 1000) / 1000
with open("executions.log", "a") as fh:
    fh.write(os.environ["EXPKIT_CELL"] + "\\n")
with open(os.path.join(out, "result.json"), "w") as fh:
    json.dump({"metrics": {"loss": value}}, fh)
"""

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: race
spec:
  image: python:3.12-slim@sha256:{digest}
  command: [python, run.py]
  algorithms: [{algorithms}]
  datasets: [d1, d2]
  seed: 11
  metric: {{name: loss, goal: minimize}}
  env: [SLEEP]
  adaptive: {{min_replicates: {lo}, max_replicates: {hi}, wave: {wave}, stop: decided, rope: 0, alpha: 0.05}}
"""

DOMINATING = "{name: good}, {name: mid}, {name: bad}"
CLOSE = "{name: a1}, {name: a2}"


def write_spec(directory: Path, algorithms: str, lo: int = 10, hi: int = 20, wave: int = 10) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "run.py").write_text(RUN)
    (directory / ".expkitignore").write_text("executions.log\n")  # written by the runs: not code
    path = directory / "experiment.yml"
    path.write_text(SPEC.format(digest="b" * 64, algorithms=algorithms, lo=lo, hi=hi, wave=wave))
    return path


def executions(spec: Path) -> Counter[str]:
    log = spec.parent / "executions.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def recorded(store: FileStore, run_id: str) -> set[str]:
    return store.completed_cells(run_id)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def without_times(decisions: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "decided_at"} for d in decisions]


def replayed_decisions(store: FileStore, run_id: str) -> list[dict]:
    """The decisions recomputed here, independently of the driver, from the stored cells: at each look of
    each dataset, decide_dataset on the algorithms' stored values."""
    exp = load_spec_text(store.spec_text(run_id)).experiment
    waves = Waves(exp)
    records = store.cell_records(run_id)
    out = []
    for d in (ds.name for ds in exp.spec.datasets):
        reps = dict.fromkeys(waves.algorithms, waves.looks[0])
        for look, n in enumerate(waves.looks):
            values = {}
            for a in waves.algorithms:
                vals = []
                for r in range(reps[a]):
                    rec = records[f"{a}/{d}/{r}"]
                    vals.append(rec["metrics"]["loss"] if rec["status"] == "succeeded" else math.nan)
                values[a] = vals
            decision = decide_dataset(d, values, n, waves.config)
            out.append({**decision.record(), "wave": look})
            if decision.stopped or look + 1 == len(waves.looks):
                break
            for a in decision.active:
                reps[a] = waves.looks[look + 1]
    return without_times(out)


# ---------------------------------------------------------------------------------------------
# Locally, end to end through `expkit run`
# ---------------------------------------------------------------------------------------------


def test_dominating_algorithm_stops_at_min_replicates_on_every_dataset(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "exp", DOMINATING)
    store_dir = tmp_path / "store"
    code, output = cli("run", str(spec), "--store", str(store_dir), "-j", "2", "--no-results")
    assert code == 0, output
    store = FileStore(store_dir)
    [run_id] = store.list_runs()
    manifest = store.manifest(run_id)
    block = manifest["adaptive"]
    assert block["fixed_design_runs"] == 3 * 2 * 20 and block["runs"] == 3 * 2 * 10
    for name in ("d1", "d2"):
        state = block["datasets"][name]
        assert state["stopped"] and state["look"] == 0
        assert state["replicates"] == {"good": 10, "mid": 10, "bad": 10}
        assert state["reason"]
    assert len(recorded(store, run_id)) == 60 and sum(executions(spec).values()) == 60
    assert {c.split("/")[2] for c in recorded(store, run_id)} == {str(r) for r in range(10)}
    assert manifest["status"] == "complete" and manifest["cells"] == 60
    # every decision recorded: wave, dataset, pairs with statistic, boundary and decision
    assert [(d["dataset"], d["wave"]) for d in block["decisions"]] == [("d1", 0), ("d2", 0)]
    pair = block["decisions"][0]["pairs"][0]
    assert {"a", "b", "statistic", "boundary", "decision"} <= set(pair)
    assert without_times(block["decisions"]) == replayed_decisions(store, run_id)

    code, shown = cli("show", run_id, "--store", str(store_dir))
    assert code == 0, shown
    assert "60 of the fixed design's 120 runs used, 60 saved (50 %)" in " ".join(shown.split())
    assert "d1: 10 replicates, stopped:" in shown


def test_close_race_runs_to_max_replicates(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "exp", CLOSE)
    store = FileStore(tmp_path / "store")
    outcome = start_adaptive(spec, store, options=Options(workers=2))
    assert outcome.ok, outcome
    block = store.manifest(outcome.run_id)["adaptive"]
    assert block["runs"] == block["fixed_design_runs"] == 2 * 2 * 20
    for name in ("d1", "d2"):
        state = block["datasets"][name]
        assert state["stopped"] and state["replicates"] == {"a1": 20, "a2": 20} and state["look"] == 1
    assert [(d["dataset"], d["wave"]) for d in block["decisions"]] == [("d1", 0), ("d1", 1), ("d2", 0), ("d2", 1)]
    assert len(recorded(store, outcome.run_id)) == 80 and max(executions(spec).values()) == 1


def test_waves_of_undecided_datasets_start_while_others_run() -> None:
    """The next wave of a dataset is handed out the moment its current wave has ended, not when every
    dataset's wave has: the plan returns d1's second wave while d2's first is still running."""
    text = SPEC.format(digest="b" * 64, algorithms=CLOSE, lo=3, hi=6, wave=3)
    exp = load_spec_text(text).experiment
    waves = Waves(exp)

    class Store:
        def __init__(self) -> None:
            self.records: dict[str, dict] = {}

        def cell_records(self, run_id: str, keys: list[str]) -> dict[str, dict]:
            return {k: self.records[k] for k in keys if k in self.records}

        def put_json(self, key: str, doc: object) -> None:
            json.dumps(doc)

    from expkit.executors.base import CellOutcome, RunContext

    store = Store()
    ctx = RunContext("race-aaaaa", exp, Path("."), store, manifest={})  # type: ignore[arg-type]
    first = waves.first(ctx, build_matrix(exp), set())
    expected = sorted(f"{a}/{d}/{r}" for a in ("a1", "a2") for d in ("d1", "d2") for r in (0, 1, 2))
    assert sorted(c.key for c in first) == expected
    nxt = []
    for cell in [c for c in first if c.dataset == "d1"]:  # what run.py writes for the cell
        loss = (cell.seed % 1000) / 1000 + (0.25 if cell.algorithm == "a2" else 0.0)
        store.records[cell.key] = {"status": "succeeded", "metrics": {"loss": loss}}
        assert not nxt, "a wave was handed out before all its cells ended"
        nxt += waves.more(cell, CellOutcome(cell.key, "succeeded"))
    assert sorted(c.key for c in nxt) == [f"{a}/d1/{r}" for a in ("a1", "a2") for r in (3, 4, 5)]
    assert ctx.manifest["adaptive"]["datasets"]["d2"]["look"] == 0  # d2 still in its first wave
    assert waves.total() == 18


def test_kill_mid_wave_and_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "exp", CLOSE, lo=4, hi=12, wave=4)  # looks 4, 8, 12: 48 cells
    store_dir = tmp_path / "store"
    env = {**os.environ, "SLEEP": "0.05"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "expkit", "run", str(spec), "--store", str(store_dir), "-j", "2", "--no-results"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        mid = lambda: len(list(store_dir.glob("*/runs/*/*/*/run.json"))) >= 20 or proc.poll() is not None  # noqa: E731
        assert wait_until(mid, within=120), "the run never reached its second wave"
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(spec.parent)
    assert proc.returncode == -9, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    assert wait_until(lambda: not processes_in(spec.parent), within=10)
    store = FileStore(store_dir)
    [run_id] = store.list_runs()
    before = recorded(store, run_id)
    assert len(before) >= 20  # the first wave (16) and part of the second
    decided_before = without_times(store.manifest(run_id)["adaptive"]["decisions"])
    assert decided_before, "no wave was decided before the kill"

    outcome = resume_adaptive(run_id, store, options=Options(workers=2))
    assert outcome.ok, outcome
    after = recorded(store, run_id)
    block = store.manifest(run_id)["adaptive"]
    planned = {
        f"{a}/{d}/{r}" for d, s in block["datasets"].items() for a, n in s["replicates"].items() for r in range(n)
    }
    assert before < after == planned and block["runs"] == len(planned)  # nothing lost, the design complete
    counts = executions(spec)
    assert all(counts[k] == 1 for k in before), "a recorded cell was executed again"
    assert set(counts) == after
    decisions = without_times(store.manifest(run_id)["adaptive"]["decisions"])
    by_look = {(d["dataset"], d["wave"]): d for d in decisions}
    for d in decided_before:  # the decisions made before the kill are made again, the same
        assert by_look[d["dataset"], d["wave"]] == d
    assert decisions == replayed_decisions(store, run_id)
    assert outcome.skipped == len(before) and outcome.ran == len(planned) - len(before)


def test_resume_complete_runs_the_full_design_with_its_seeds(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "exp", DOMINATING)
    store = FileStore(tmp_path / "store")
    outcome = start_adaptive(spec, store, options=Options(workers=2))
    assert outcome.ok and outcome.total == 60
    decided = without_times(store.manifest(outcome.run_id)["adaptive"]["decisions"])
    again = resume_adaptive(outcome.run_id, store, options=Options(workers=2))  # nothing left to do
    assert again.ok and again.ran == 0 and again.skipped == 60 and again.total == 60
    assert without_times(store.manifest(outcome.run_id)["adaptive"]["decisions"]) == decided
    code, output = cli("run", "--resume", outcome.run_id, "--complete", "--store", str(store.root), "--no-results")
    assert code == 0, output
    manifest = store.manifest(outcome.run_id)
    assert len(recorded(store, outcome.run_id)) == 120 and max(executions(spec).values()) == 1
    assert manifest["cells"] == 120 and manifest["status"] == "complete"
    assert manifest["adaptive"]["completed_at"] and manifest["adaptive"]["runs_before_completion"] == 60
    fixed = load_spec_text(spec.read_text().split("  adaptive:")[0] + "  replicates: 20\n").experiment
    seeds = {c.key: c.seed for c in build_matrix(fixed)}
    records = store.cell_records(outcome.run_id)
    assert {k: r["seed"] for k, r in records.items()} == seeds  # the fixed design's seeds, cell for cell
    assert any("completed to the full design" in line for line in adaptive_summary(manifest))


def test_complete_on_a_run_that_is_not_adaptive_is_bad_input(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "exp", CLOSE)
    fixed = spec.read_text().split("  adaptive:")[0] + "  replicates: 2\n"
    spec.write_text(fixed)
    code, output = cli("run", str(spec), "--store", str(tmp_path / "store"), "--no-results")
    assert code == 0, output
    code, output = cli("run", "--resume", "latest", "--complete", "--store", str(tmp_path / "store"))
    assert code == 2
    assert "not an adaptive run" in output and "--resume" in output
    code, output = cli("run", str(spec), "--complete", "--store", str(tmp_path / "store"))
    assert code == 2 and "--complete only makes sense with --resume" in output


@pytest.mark.parametrize("flag", ["--json"])
def test_run_json_outcome_counts_the_adaptive_design(tmp_path: Path, flag: str) -> None:
    spec = write_spec(tmp_path / "exp", DOMINATING)
    code, output = cli("run", str(spec), "--store", str(tmp_path / "store"), flag)
    assert code == 0, output
    doc = json.loads(output[output.index("{") :])
    assert doc["total"] == 60 and doc["succeeded"] == 60 and doc["missing"] == 0


# ---------------------------------------------------------------------------------------------
# `expkit results` on an adaptive run
# ---------------------------------------------------------------------------------------------


def test_results_use_the_sequential_adjusted_p_values_and_say_so(tmp_path: Path) -> None:
    from expkit.adaptive.driver import sequential_config
    from expkit.adaptive.results import NOTE
    from expkit.adaptive.sequential import adjusted_pairwise

    spec = write_spec(tmp_path / "exp", DOMINATING)
    store = FileStore(tmp_path / "store")
    outcome = start_adaptive(spec, store, options=Options(workers=2))
    assert outcome.ok
    out = tmp_path / "results"
    code, output = cli("results", outcome.run_id, "--store", str(store.root), "-o", str(out), "--json")
    assert code == 0, output
    stats = json.loads((out / "stats.json").read_text())
    assert NOTE in stats["notes"]
    # the independent reference: adjusted_pairwise on the stored values of each dataset's design
    exp = load_spec_text(store.spec_text(outcome.run_id)).experiment
    records = store.cell_records(outcome.run_id)
    values = {
        d: {a: [records[f"{a}/{d}/{r}"]["metrics"]["loss"] for r in range(10)] for a in ("good", "mid", "bad")}
        for d in ("d1", "d2")
    }
    expected = {
        (p.dataset, p.a, p.b): p for p in adjusted_pairwise(values, {"d1": 10, "d2": 10}, sequential_config(exp))
    }
    pairs = [(d["dataset"], p) for d in stats["per_dataset"] for p in d["pairwise"]["pairs"]]
    assert len(pairs) == 6
    for dataset, pair in pairs:
        ref = expected.get((dataset, pair["a"], pair["b"])) or expected[(dataset, pair["b"], pair["a"])]
        assert pair["p_holm"] == pytest.approx(ref.p_adjusted)
        assert pair["winner"] == {"a_better": ref.a, "b_better": ref.b}.get(ref.decision)
    report = (out / "report.md").read_text()
    assert "60 of the fixed design's 120 runs used" in report
    assert "PARTIAL" not in report  # cells the waves did not plan are not missing


# ---------------------------------------------------------------------------------------------
# On Argo: the Kubernetes test double runs the waves, one workflow each, into the S3 store
# ---------------------------------------------------------------------------------------------

double = argo_tests.double  # the module's Kubernetes double (a fixture)


@pytest.fixture
def argo_cluster(double: tuple, s3_server: S3Endpoint, tmp_path: Path) -> Cluster:
    return argo_tests._cluster(double, s3_server, tmp_path)


ARGO_ADAPTIVE = {"min_replicates": 3, "max_replicates": 6, "wave": 3, "stop": "decided", "rope": 0.0}


def _argo_spec(directory: Path) -> Path:
    import yaml

    doc = spec_doc(
        "adaptargo",
        algorithms=[{"name": "a1", "params": {"offset": 0.0}}, {"name": "a2", "params": {"offset": 0.25}}],
        replicates=6,
        adaptive=ARGO_ADAPTIVE,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "experiment.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _check_two_waves(cluster: Cluster, run_id: str, spec: Path) -> None:
    store = cluster.store()
    manifest = store.manifest(run_id)
    block = manifest["adaptive"]
    assert [(d["dataset"], d["wave"]) for d in block["decisions"]] == [("d1", 0), ("d1", 1), ("d2", 0), ("d2", 1)], (
        block
    )
    assert all(s["stopped"] and s["replicates"] == {"a1": 6, "a2": 6} for s in block["datasets"].values())
    workflows = [w["name"] for w in manifest["cluster"]["workflows"]]
    assert (
        workflows[0] == run_id and len(workflows) >= 2 and all(w.startswith(f"{run_id}-retry-") for w in workflows[1:])
    )
    ran = Counter(e.cell for e in cluster.double.executions if e.workflow in workflows and e.cell)
    expected = {c.key: c.seed for c in build_matrix(load_spec_text(spec.read_text()).experiment)}
    assert set(ran) == set(expected) and max(ran.values()) == 1  # every cell once, none twice
    first_wave = {e.cell for e in cluster.double.executions if e.workflow == run_id and e.cell}
    assert {c.split("/")[2] for c in first_wave} == {"0", "1", "2"}
    records = store.cell_records(run_id)
    assert {k: r["seed"] for k, r in records.items()} == expected and {r["status"] for r in records.values()} == {
        "succeeded"
    }
    assert manifest["cells"] == 24 and block["runs"] == 24


@pytest.mark.timeout(180)
def test_argo_two_wave_adaptive_run_end_to_end_into_s3(argo_cluster: Cluster, tmp_path: Path) -> None:
    cluster = argo_cluster
    spec = _argo_spec(tmp_path / "study")
    result = cluster.invoke("submit", str(spec), "--watch", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    _check_two_waves(cluster, run_id, spec)


@pytest.mark.timeout(180)
def test_argo_waves_continue_with_status_watch_after_an_interrupted_submit(
    argo_cluster: Cluster, tmp_path: Path
) -> None:
    """`expkit submit` without --watch stands for a driver interrupted after the first wave: `expkit status
    RUN --watch` continues from the store and the manifest and runs the second wave."""
    cluster = argo_cluster
    spec = _argo_spec(tmp_path / "study")
    result = cluster.invoke("submit", str(spec), "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    assert json.loads(result.stdout)["cells"] == 12  # the first wave only: 3 replicates x 2 x 2
    again = cluster.invoke("status", run_id, "--watch", "--json")
    assert again.exit_code == 0, again.output
    _check_two_waves(cluster, run_id, spec)


@pytest.mark.timeout(180)
def test_status_watch_follows_a_run_that_is_not_adaptive(argo_cluster: Cluster, tmp_path: Path) -> None:
    import yaml

    cluster = argo_cluster
    path = tmp_path / "study" / "experiment.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(spec_doc("fixedargo", replicates=1), sort_keys=False), encoding="utf-8")
    result = cluster.invoke("submit", str(path), "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    watched = cluster.invoke("status", run_id, "--watch", "--json")
    assert watched.exit_code == 0, watched.output
    assert json.loads(watched.stdout)["counts"]["succeeded"] == 4
    assert len(cluster.store().completed_cells(run_id)) == 4
    refused = cluster.invoke("status", run_id, "--watch", "--no-sync")
    assert refused.exit_code == 2 and "--no-sync" in refused.output

"""The Slurm executor: the rendered batch scripts (pure), bad ``slurm:`` input, and runs against a real
one-node Slurm on loopback (tests/slurm_cluster.py; skipped where Slurm's packages are absent).

Against the real Slurm: a spec runs end to end and ``expkit results`` gives the same stats.json as a
local run of the same spec; a failing cell, a task that dies itself (published failed by the sync from
Slurm's state), a timed-out cell under a 1-minute ``--time``, a task Slurm stops at its 1-minute limit,
``stop`` mid-run, ``retry`` of the failed or missing cells into the same run, a failing prepare step,
an S3 store, the executor contract, and the store after each. About 4 minutes in all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - fixture
from typer.testing import CliRunner

from expkit.cli import app
from expkit.executors.slurm.render import (
    AUTO_MAX_CELLS,
    DEFAULT_SLOTS,
    MAX_ARRAY_TASKS,
    auto_cells_per_task,
    cell_profile,
    effective_slots,
    memory_mib,
    plan_arrays,
    render_array_script,
    render_prepare_script,
    time_minutes,
)
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec_text

RUN_PY = """\
import json, os, sys, time
from pathlib import Path
here = Path(__file__).parent
out = os.environ["EXPKIT_OUTPUT_DIR"]
alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
if alg == "flaky" and (here / "fail-flaky").exists():
    print("flaky fails while fail-flaky exists", flush=True)
    sys.exit(3)
if alg == "flaky" and (here / "hang-flaky").exists():
    time.sleep(60)
sleep = here / "sleep.txt"
if sleep.exists():
    time.sleep(float(sleep.read_text()))
value = (seed % 1000) / 1000 + (0.25 if alg == "flaky" else 0.0)
print("ran", alg, seed, flush=True)
with open(os.path.join(out, "result.json"), "w") as fh:
    json.dump({"metrics": {"error": value}}, fh)
"""


def spec_text(*, replicates: int = 3, extra: str = "", slurm: str = "", timeout: str = "") -> str:
    return f"""\
apiVersion: expkit/v1
kind: Experiment
metadata: {{name: sl}}
spec:
  image: example.org/lab/run:1@sha256:{"a" * 64}
  command: [python, run.py]
  algorithms: [{{name: steady}}, {{name: flaky}}]
  datasets: [d1, d2]
  replicates: {replicates}
  seed: 7
  metric: {{name: error, goal: minimize}}
  paired: true
{extra}{timeout}{slurm}"""


def write_study(tmp_path: Path, **kw: Any) -> Path:
    study = tmp_path / "study"
    study.mkdir()
    (study / "run.py").write_text(RUN_PY)
    (study / "experiment.yml").write_text(spec_text(**kw))
    return study / "experiment.yml"


# ---------------------------------------------------------------------------------------------------
# Rendering (pure)
# ---------------------------------------------------------------------------------------------------


def _exp(**kw: Any):
    return load_spec_text(spec_text(**kw)).experiment


def test_resources_become_sbatch_options_with_time_rounded_up_to_minutes() -> None:
    exp = _exp(
        extra="  resources: {cpu: 1.5, memory: 1.5Gi, gpu: 2}\n  retries: 1\n  parallelism: 3\n",
        timeout="  timeout: 61\n",
    )
    [plan] = plan_arrays(exp, build_matrix(exp))
    script = render_array_script(exp, "sl-abcde", plan, store_url="/s", spec_dir="/d", python="/py", parallelism=3)
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    # 61 s x 2 attempts + 30 s margin = 152 s -> 3 minutes; 1.5 cores -> 2 CPUs; 1.5 GiB = 1536 MiB
    assert sbatch == [
        "#SBATCH --job-name=expkit-sl-abcde",
        "#SBATCH --array=0-11%3",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=1536M",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --time=3",
    ]
    assert time_minutes(1, 0) == 1 and time_minutes(30, 0) == 1 and time_minutes(31, 0) == 2
    assert time_minutes(None, 3) is None
    assert time_minutes(60, 0, 3) == 4  # a task of 3 cells: 3 x 60 s + 30 s = 3.5 min
    assert memory_mib("512Mi") == 512 and memory_mib("1G") == 954 and memory_mib("1") == 1


def test_one_array_per_profile_never_one_job_per_cell_and_cells_per_task() -> None:
    exp = _exp(replicates=5, slurm="  slurm: {cells_per_task: 3}\n")
    plans = plan_arrays(exp, build_matrix(exp))
    assert len(plans) == 1 and plans[0].cells == 20 and len(plans[0].rows) == 7  # ceil(20 / 3)
    assert [len(r) for r in plans[0].rows] == [3] * 6 + [2]
    big = _exp(replicates=MAX_ARRAY_TASKS, slurm="  slurm: {cells_per_task: 1}\n")  # 4000 cells: split into
    # arrays Slurm's MaxArraySize accepts
    sizes = [len(p.rows) for p in plan_arrays(big, build_matrix(big))]
    assert sizes == [1000, 1000, 1000, 1000]


def test_auto_packing_rule() -> None:
    """``cells_per_task: auto`` (the default): ceil(cells / (4 x slots)), at most 20 cells and 4 h of timeouts
    a task, replicates of one algorithm x dataset together, --time sized for the packed cells."""
    assert auto_cells_per_task(200, 2, None, 0) == AUTO_MAX_CELLS == 20  # ceil(200 / 8) = 25, capped
    assert auto_cells_per_task(200, 10, None, 0) == 5 and auto_cells_per_task(12, 3, None, 0) == 1
    assert auto_cells_per_task(1000, 1, 3600, 1) == 2  # 2 cells x 2 attempts x 1 h = the 4 h bound
    assert auto_cells_per_task(1000, 1, 10**6, 0) == 1 and auto_cells_per_task(0, 1, None, 0) == 1
    exp = _exp(replicates=10, timeout="  timeout: 60\n")  # 2 algorithms x 2 datasets x 10 replicates
    assert exp.spec.slurm is None  # no slurm block: auto all the same
    [plan] = plan_arrays(exp, build_matrix(exp), cluster_cpus=2)  # 2 slots: ceil(40 / 8) = 5 cells a task
    assert [len(r) for r in plan.rows] == [5] * 8
    assert all(len({k.rsplit("/", 1)[0] for k in row}) == 1 for row in plan.rows)  # one algorithm x dataset
    assert sorted(k for r in plan.rows for k in r) == sorted(c.key for c in build_matrix(exp))
    assert plan.profile.minutes == 6  # 5 cells x 60 s + 30 s = 5.5 min
    assert "#SBATCH --time=6" in render_array_script(
        exp, "r", plan, store_url="/s", spec_dir="/d", python="p", parallelism=None
    )
    odd = _exp(replicates=3)  # 12 cells, 1 slot: ceil(12 / 4) = 3 ...
    assert [len(r) for r in plan_arrays(odd, build_matrix(odd), cluster_cpus=1)[0].rows] == [3] * 4
    [unknown] = plan_arrays(odd, build_matrix(odd))  # ... no parallelism, CPUs unknown: 64 slots
    assert [len(r) for r in unknown.rows] == [1] * 12
    one = _exp(replicates=10, slurm="  slurm: {cells_per_task: 1}\n")  # one cell per task stays available
    assert [len(r) for r in plan_arrays(one, build_matrix(one), cluster_cpus=2)[0].rows] == [1] * 40
    throttled = _exp(extra="  parallelism: 3\n  resources: {cpu: 2}\n")
    profile = cell_profile(throttled, build_matrix(throttled)[0])
    assert effective_slots(throttled, profile, 8) == 3 and effective_slots(throttled, profile, 4) == 2
    assert effective_slots(odd, cell_profile(odd, build_matrix(odd)[0]), None) == DEFAULT_SLOTS


def test_a_task_imports_nothing_of_the_submitting_side_and_keeps_the_run_contract(tmp_path: Path) -> None:
    """The lean task path, run for real outside Slurm: one table row published through the run contract
    (validated run.json, provenance, digests), and no pydantic, YAML, numpy, pandas, scipy, jinja2, rich,
    typer or spec model imported on the way."""
    from expkit.executors.slurm.render import cell_table
    from expkit.runs.manifest import build_manifest, spec_file_text
    from expkit.spec import load_spec
    from expkit.stores import FileStore

    spec = write_study(tmp_path, replicates=2, extra="  env: [STUDY_FLAG]\n")
    (spec.parent / "fail-flaky").write_text("")
    loaded = load_spec(spec)
    cells = build_matrix(loaded.experiment)
    store = FileStore(tmp_path / "store")
    manifest = build_manifest(loaded, "sl-lean1", "slurm", 1, len(cells), code={"digest": "sha256:c0de"})
    manifest["slurm"] = {"version": "25.11.0"}
    store.put("sl-lean1/experiment.yml", spec_file_text(loaded).encode())
    store.put_json("sl-lean1/manifest.json", manifest)
    [plan] = plan_arrays(loaded.experiment, cells, cluster_cpus=1)  # 8 cells, 1 slot: 2 a task
    table = cell_table(loaded.experiment, plan, {c.key: c for c in cells}, manifest=manifest, output_dir="@out@")
    store.put_json(f"sl-lean1/slurm/{plan.name}.cells.json", table)
    row = next(i for i, r in enumerate(plan.rows) if r[0].startswith("flaky/"))
    probe = (
        "import json, sys\nfrom expkit.executors.slurm.task import main\nrc = main(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
    )
    args = ["cells", "--store", str(store.root), "--run", "sl-lean1", "--table", f"slurm/{plan.name}.cells.json"]
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURMD_NODENAME": "n1",
        "STUDY_FLAG": "x",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    for index in (0, row):
        env["SLURM_ARRAY_TASK_ID"] = str(index)
        done = subprocess.run(
            [sys.executable, "-c", probe, *args, "--spec-dir", str(spec.parent)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.splitlines()[-1])
        heavy = ("pydantic", "yaml", "numpy", "pandas", "scipy", "jinja2", "rich", "typer", "minio", "expkit.spec")
        assert [m for m in out["modules"] if m.split(".")[0] in heavy or m.startswith("expkit.spec")] == []
        assert out["rc"] == (1 if index == row else 0)
    recs = store.cell_records("sl-lean1")  # checked against the CellRecord model by the store
    assert set(recs) == set(plan.rows[0]) | set(plan.rows[row])
    for key in plan.rows[0]:
        rec = recs[key]
        cell = next(c for c in cells if c.key == key)
        assert rec["status"] == "succeeded" and rec["seed"] == cell.seed and rec["executor"] == "slurm"
        assert rec["metrics"] == {"error": (cell.seed % 1000) / 1000} and rec["code_digest"] == "sha256:c0de"
        assert rec["slurm"]["version"] == "25.11.0" and rec["node"] == "n1" and rec["attempts"] == 1
        log = (store.root / "sl-lean1" / "runs" / key / "log.txt").read_text()
        assert f"ran steady {cell.seed}" in log
    assert all(recs[k]["reason"].startswith("exit code 3") for k in plan.rows[row])  # both cells of the task


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"rows": [["a/d/0"]], "seeds": {"a/d/0": 1}}, "not a cell table of this expkit version"),
        (
            {"rows": [["a/d/0"]], "seeds": {}, "cells": {}, "output_dir": "@", "rules": {}, "env": [], "manifest": {}},
            "a damaged cell table",
        ),
    ],
)
def test_a_task_given_an_old_or_damaged_cell_table_says_so_exit_2(tmp_path: Path, table: Any, says: str) -> None:
    from expkit.stores import FileStore

    store = FileStore(tmp_path / "store")
    store.put_json("sl-old01/slurm/t.cells.json", table)
    args = [
        "cells",
        "--store",
        str(store.root),
        "--run",
        "sl-old01",
        "--table",
        "slurm/t.cells.json",
        "--spec-dir",
        ".",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "expkit.executors.slurm.task", *args],
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "sl-old01/slurm/t.cells.json" in line and says in line and "expkit retry" in line


def test_slurm_block_and_quoting_of_every_user_value() -> None:
    slurm = (
        "  slurm:\n    partition: gpu,long\n    account: lab-x\n    qos: normal\n    constraint: 'skylake|icelake'\n"
        "    modules: [python/3.11]\n    venv: /home/me/my venv\n    extra: ['--exclusive', '--mail-type=END']\n"
    )
    exp = _exp(slurm=slurm)
    [plan] = plan_arrays(exp, build_matrix(exp))
    evil = "/data/it's $(touch pwned) `x`; rm -rf ~"
    script = render_array_script(
        exp, "sl-abcde", plan, store_url=evil, spec_dir=evil, python="python3", parallelism=None
    )
    lines = script.splitlines()
    assert "#SBATCH --partition=gpu,long" in lines and "#SBATCH --account=lab-x" in lines
    assert "#SBATCH --qos=normal" in lines and "#SBATCH --constraint=skylake|icelake" in lines
    assert "#SBATCH --exclusive" in lines and "#SBATCH --mail-type=END" in lines
    assert "#SBATCH --array=0-11" in lines  # no parallelism: no throttle
    assert "module load python/3.11" in lines
    assert ". '/home/me/my venv/bin/activate'" in lines
    exec_line = next(line for line in lines if line.startswith("exec "))
    argv = shlex.split(exec_line)[1:]  # the shell sees exactly the intended words, nothing expands
    assert argv[:4] == ["python3", "-m", "expkit.executors.slurm.task", "cells"]
    assert argv[argv.index("--store") + 1] == evil and argv[argv.index("--spec-dir") + 1] == evil
    assert argv[argv.index("--table") + 1] == f"slurm/{plan.name}.cells.json"  # cells come from a file
    assert "steady" not in script and "d1" not in script  # no cell name or parameter in the script
    # bash itself parses the script without running anything of the values
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_container_runs_the_pinned_image_with_apptainer() -> None:
    exp = _exp(slurm="  slurm: {container: apptainer}\n", extra="  prepare: {command: [python, prep.py]}\n")
    [plan] = plan_arrays(exp, build_matrix(exp))
    script = render_array_script(exp, "sl-abcde", plan, store_url="/s", spec_dir="/d", python="/py", parallelism=2)
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    argv = shlex.split(exec_line)
    assert argv[argv.index("--") + 1 :] == ["apptainer", "exec", f"docker://example.org/lab/run:1@sha256:{'a' * 64}"]
    prep = render_prepare_script(exp, "sl-abcde", store_url="/s", spec_dir="/d", python="/py")
    assert "expkit.executors.slurm.task prepare" in prep and "--array" not in prep


@pytest.mark.skipif(shutil.which("apptainer") is None, reason="apptainer is not installed here (HPC sites have it)")
def test_container_cell_runs_in_apptainer() -> None:  # pragma: no cover - needs apptainer and a registry
    pytest.skip("needs apptainer and a pinned image reachable from this machine")


# ---------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before anything is asked of Slurm
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slurm", "field", "fix"),
    [
        ("  slurm: {partition: 'debug; rm -rf /'}\n", "spec.slurm.partition", "no spaces or quotes"),
        ("  slurm: {extra: ['--array=0-3']}\n", "spec.slurm.extra[0]", "use one of --begin"),
        ("  slurm: {extra: ['--comment=$(id)']}\n", "spec.slurm.extra[0]", "is not an sbatch option"),
        ("  slurm: {container: docker}\n", "spec.slurm.container", "apptainer"),
        ("  slurm: {venv: relative/venv}\n", "spec.slurm.venv", "absolute path"),
        ("  slurm: {queue: x}\n", "spec.slurm.queue", ""),
        ("  slurm: {cells_per_task: many}\n", "spec.slurm.cells_per_task", "write 'auto' (the default)"),
    ],
)
def test_bad_slurm_block_is_one_line_exit_2(tmp_path: Path, slurm: str, field: str, fix: str) -> None:
    spec = write_study(tmp_path, slurm=slurm)
    result = CliRunner().invoke(app, ["submit", str(spec), "--to", "slurm", "--store", str(tmp_path / "store")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and field in lines[0] and fix in lines[0] and "experiment.yml:" in lines[0]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_unknown_target_and_unpinned_container_image_exit_2(tmp_path: Path) -> None:
    spec = write_study(tmp_path)
    result = CliRunner().invoke(app, ["submit", str(spec), "--to", "pbs", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "--to 'pbs': use argo (Kubernetes) or slurm" in result.output
    spec.write_text(spec.read_text().replace(f"@sha256:{'a' * 64}", "") + "  slurm: {container: apptainer}\n")
    result = CliRunner().invoke(app, ["submit", str(spec), "--to", "slurm", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "not pinned by digest" in result.output and "expkit pin" in result.output


# ---------------------------------------------------------------------------------------------------
# Against a real Slurm
# ---------------------------------------------------------------------------------------------------


def expkit(cluster: SlurmCluster, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXPKIT_STORE"}
    env.update(cluster.env, EXPKIT_PROGRESS_SECONDS="1")
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def records(store: Path, run_id: str) -> dict[str, dict[str, Any]]:
    return {
        str(p.parent.relative_to(store / run_id / "runs")): json.loads(p.read_text())
        for p in (store / run_id / "runs").glob("*/*/*/run.json")
    }


def submit(
    cluster: SlurmCluster, spec: Path, store: Path | str, *extra: str
) -> tuple[str, subprocess.CompletedProcess[str]]:
    done = expkit(
        cluster, "submit", str(spec), "--to", "slurm", "--store", str(store), "--json", *extra, cwd=spec.parent
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout)["run_id"], done


def wait_for(predicate: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.5)


def stats_without_provenance(path: Path) -> Any:
    doc = json.loads(path.read_text())
    for key in ("run_id", "generated_at", "expkit_version", "provenance", "run"):
        doc.pop(key, None)
    return doc


def test_end_to_end_same_statistics_as_a_local_run(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    prepare = "  prepare: {command: [python, -c, \"open('prepared.txt', 'w').write('ok')\"]}\n"
    spec = write_study(tmp_path, extra="  parallelism: 4\n" + prepare)
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 0, done.stderr
    assert (spec.parent / "prepared.txt").read_text() == "ok" and (store / run_id / "prepare.log").is_file()
    recs = records(store, run_id)
    assert len(recs) == 12 and all(r["status"] == "succeeded" for r in recs.values())
    rec = recs["steady/d1/0"]
    assert rec["executor"] == "slurm" and rec["slurm"]["version"] and rec["slurm"]["partition"] == "debug"
    assert rec["slurm"]["array_job_id"] and rec["slurm"]["array_task_id"] is not None
    assert rec["slurm"]["node"] == slurm_cluster.node and rec["node"] == slurm_cluster.node
    manifest = json.loads((store / run_id / "manifest.json").read_text())
    assert manifest["executor"] == "slurm" and manifest["status"] == "complete"
    assert manifest["slurm"]["version"] == slurm_cluster.run("sbatch", "--version").stdout.split()[-1]
    [array] = manifest["slurm"]["arrays"]
    # cells_per_task: auto (the default): 12 cells, min(parallelism 4, the cluster's CPUs) slots
    per_task = auto_cells_per_task(12, min(4, slurm_cluster.cpus), None, 0)
    tasks = 4 * -(-3 // per_task)  # 4 algorithm x dataset pairs of 3 replicates, packed pair by pair
    assert array["tasks"] == tasks and (store / run_id / "slurm" / f"{array['name']}.sh").is_file()
    assert f"#SBATCH --array=0-{tasks - 1}%4" in (store / run_id / "slurm" / f"{array['name']}.sh").read_text()

    local = expkit(slurm_cluster, "run", str(spec), "--store", str(tmp_path / "local"), "-q", cwd=spec.parent)
    assert local.returncode == 0, local.stderr
    for where, ref in ((store, run_id), (tmp_path / "local", "latest")):
        res = expkit(
            slurm_cluster, "results", ref, "--store", str(where), "-o", str(tmp_path / where.name), cwd=tmp_path
        )
        assert res.returncode == 0, res.stderr
    assert stats_without_provenance(tmp_path / "store" / "stats.json") == stats_without_provenance(
        tmp_path / "local" / "stats.json"
    )
    shown = expkit(slurm_cluster, "status", run_id, "--store", str(store), cwd=tmp_path)
    assert shown.returncode == 0 and "Succeeded — 12/12 succeeded" in shown.stdout
    shown = expkit(slurm_cluster, "show", run_id, "--store", str(store), cwd=tmp_path)
    assert (
        f"Slurm {manifest['slurm']['version']} · cluster expkit-test · jobs {array['job_id']} (run, 12 cells)"
        in shown.stdout
    )
    listed = expkit(slurm_cluster, "list", "--store", str(store), "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["succeeded"] == 12


def test_failing_cells_then_retry_only_those_into_the_same_run(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    spec = write_study(tmp_path, replicates=2)
    (spec.parent / "fail-flaky").write_text("")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1
    recs = records(store, run_id)
    failed = sorted(k for k, r in recs.items() if r["status"] == "failed")
    assert failed == ["flaky/d1/0", "flaky/d1/1", "flaky/d2/0", "flaky/d2/1"]
    assert all(recs[k]["reason"].startswith("exit code 3") for k in failed)
    steady_before = {k: r["ended_at"] for k, r in recs.items() if r["status"] == "succeeded"}
    logs = expkit(slurm_cluster, "logs", run_id, "--failed", "--store", str(store), cwd=tmp_path)
    assert logs.returncode == 0 and "flaky fails while fail-flaky exists" in logs.stdout
    every = expkit(slurm_cluster, "logs", run_id, "--store", str(store), cwd=tmp_path)
    assert every.returncode == 0 and "ran steady" in every.stdout  # the cells' log.txt ...
    tasks = json.loads((store / run_id / "manifest.json").read_text())["slurm"]["arrays"][0]["tasks"]
    assert every.stdout.count("expkit task ") == tasks  # ... then each array task's own output file

    (spec.parent / "fail-flaky").unlink()
    retried = expkit(slurm_cluster, "retry", run_id, "--store", str(store), "--watch", cwd=tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    recs = records(store, run_id)
    assert len(recs) == 8 and all(r["status"] == "succeeded" for r in recs.values())
    assert {k: recs[k]["ended_at"] for k in steady_before} == steady_before  # the others were not run again
    manifest = json.loads((store / run_id / "manifest.json").read_text())
    assert [a["kind"] for a in manifest["slurm"]["arrays"]] == ["run", "retry"]
    assert manifest["slurm"]["arrays"][1]["cells"] == 4 and manifest["status"] == "complete"
    again = expkit(slurm_cluster, "retry", run_id, "--store", str(store), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to retry" in again.stdout


def test_a_task_that_dies_is_published_failed_from_slurms_state(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    spec = write_study(tmp_path, replicates=1, slurm="  slurm: {python: /nonexistent/python3}\n")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1
    recs = records(store, run_id)
    assert len(recs) == 4 and all(r["status"] == "failed" for r in recs.values())
    reason = recs["steady/d1/0"]["reason"]
    assert "FAILED" in reason and "exit 127" in reason, reason
    log = (store / run_id / "runs" / "steady" / "d1" / "0" / "log.txt").read_text()
    assert "/nonexistent/python3" in log  # the task's own output, kept as the cell's log


def test_timed_out_cell_under_a_one_minute_time_limit(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    spec = write_study(tmp_path, replicates=1, timeout="  timeout: 2\n")
    (spec.parent / "sleep.txt").write_text("30")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1
    script = next((store / run_id / "slurm").glob("array-*.sh")).read_text()
    assert "#SBATCH --time=1" in script.splitlines()
    recs = records(store, run_id)
    assert len(recs) == 4 and all(r["reason"] == "timed out after 2s (killed)" for r in recs.values())


def test_a_packed_tasks_timed_out_cells_do_not_lose_the_others(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    """Four cells a task, two of them timing out: every cell of the task is published, the others succeeded."""
    spec = write_study(tmp_path, replicates=2, timeout="  timeout: 2\n", slurm="  slurm: {cells_per_task: 4}\n")
    (spec.parent / "hang-flaky").write_text("")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1, done.stdout + done.stderr
    [array] = json.loads((store / run_id / "manifest.json").read_text())["slurm"]["arrays"]
    assert array["tasks"] == 2  # 8 cells, 4 a task
    rows = json.loads((store / run_id / array["table"]).read_text())["rows"]
    assert all({k.split("/")[0] for k in row} == {"steady", "flaky"} for row in rows)  # each task mixes both
    recs = records(store, run_id)
    assert len(recs) == 8
    for key, rec in recs.items():
        if key.startswith("flaky/"):
            assert rec["status"] == "failed" and rec["reason"] == "timed out after 2s (killed)"
        else:
            assert rec["status"] == "succeeded" and rec["metrics"]["error"] == (rec["seed"] % 1000) / 1000


def test_a_stopped_run_stays_stopped_however_slurm_ended_or_forgot_its_tasks() -> None:
    """scancel'd tasks can end CANCELLED, FAILED (the task's own exit 143) or be forgotten by Slurm before
    status looks (MinJobAge, no accounting): the phase came from the tasks' states and said "Failed" in a CI
    run. `expkit stop` now records the stop in the manifest, and the phase follows it."""
    from expkit.executors.slurm.status import ArrayView, SlurmStatus, _phase

    counts = {"succeeded": 3, "failed": 0, "running": 0, "pending": 0, "missing": 5}
    for job_phase in ("Failed", "Gone", "Cancelled"):
        status = SlurmStatus("r", "", [ArrayView("array", "7", job_phase)], 8, dict(counts), {})
        assert _phase(status, None, stopped=True) == "Stopped", job_phase
    forgotten = SlurmStatus("r", "", [ArrayView("array", "7", "Gone")], 8, dict(counts), {})
    assert _phase(forgotten, None) == "Failed"  # not stopped by expkit: cells missing for another reason


def test_stop_mid_run_then_retry_runs_only_the_missing_cells(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    spec = write_study(tmp_path, replicates=2, extra="  parallelism: 1\n")
    (spec.parent / "sleep.txt").write_text("1")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(records(store, run_id)) >= 1)
    (spec.parent / "sleep.txt").write_text("60")  # the cells still to start now take long
    stopped = expkit(slurm_cluster, "stop", run_id, "--store", str(store), cwd=tmp_path)
    assert stopped.returncode == 0 and "cancelled Slurm jobs" in stopped.stdout, stopped.stdout + stopped.stderr

    watched = expkit(slurm_cluster, "status", run_id, "--watch", "--store", str(store), "--json", cwd=tmp_path)
    assert watched.returncode == 1  # followed until no task is left; not every cell succeeded
    shown = json.loads(watched.stdout)
    assert shown["done"]
    assert shown["phase"] == "Stopped" and shown["counts"]["missing"] >= 1 and shown["counts"]["failed"] == 0, shown
    kept = records(store, run_id)
    assert all(r["status"] == "succeeded" for r in kept.values()) and len(kept) < 8
    assert not list((store / run_id / ".staging").glob("*/*")), "a stopped cell left staged files"

    (spec.parent / "sleep.txt").write_text("0")
    retried = expkit(slurm_cluster, "retry", run_id, "--store", str(store), "--watch", cwd=tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    recs = records(store, run_id)
    assert len(recs) == 8 and all(r["status"] == "succeeded" for r in recs.values())
    assert {k: recs[k]["ended_at"] for k in kept} == {k: r["ended_at"] for k, r in kept.items()}


def test_into_an_s3_store_with_credentials_only_in_the_nodes_profile(
    slurm_cluster: SlurmCluster,  # noqa: F811
    s3_store: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = write_study(tmp_path, replicates=1)
    cfg = s3_store.config
    config = tmp_path / "expkit-config.toml"
    config.write_text(
        f'[s3]\nendpoint = "{cfg.endpoint}"\naccess_key_id = "{cfg.access_key}"\n'
        f'secret_access_key = "{cfg.secret_key}"\n'
    )
    config.chmod(0o600)
    monkeypatch.setenv("EXPKIT_CONFIG", str(config))  # what a shared home's profile file is on a cluster
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "cache"))
    for name in list(os.environ):
        if name.startswith(("AWS_", "EXPKIT_S3_")):
            monkeypatch.delenv(name)
    # expkit submit may hold credentials in its environment; sbatch (and so every job) never gets them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", cfg.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", cfg.secret_key)
    run_id, done = submit(slurm_cluster, spec, s3_store.url, "--watch")
    assert done.returncode == 0, done.stderr
    recs = s3_store.cell_records(run_id)
    assert len(recs) == 4 and all(r["status"] == "succeeded" for r in recs.values())
    assert all(r["slurm"]["array_job_id"] for r in recs.values())
    kept = [p.read_text(errors="replace") for p in (spec.parent / "expkit-slurm").rglob("*") if p.is_file()]
    kept += [s3_store.get(k).decode(errors="replace") for k in s3_store.list(f"{run_id}/")]
    assert kept and not any(cfg.secret_key in text or cfg.access_key in text for text in kept)


def test_slurm_executor_keeps_the_executor_contract(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    """Exactly the cells given run; every finished cell is published, a failed one with its reason;
    asynchronous: ``execute`` returns at once and the status sync sees the rest (expected seeds from
    the matrix module, not from the executor)."""
    from expkit.executors.base import Executor, RunContext
    from expkit.executors.slurm import SlurmClient, SlurmExecutor, watch_run
    from expkit.executors.slurm.client import slurm_environment
    from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
    from expkit.runs.matrix import derive_seed
    from expkit.spec import load_spec
    from expkit.stores import FileStore

    spec = write_study(tmp_path, replicates=2)
    (spec.parent / "fail-flaky").write_text("")
    loaded = load_spec(spec)
    cells = build_matrix(loaded.experiment)
    given = cells[1:6]  # some of each algorithm, not the whole matrix
    store = FileStore(tmp_path / "store")
    client = SlurmClient(slurm_environment(slurm_cluster.client_env()))
    executor = SlurmExecutor(client)
    assert isinstance(executor, Executor) and executor.name == "slurm"
    run_id = new_run_id(loaded.name, store.list_runs())
    manifest = build_manifest(loaded, run_id, executor.name, 1, len(cells))
    store.put(f"{run_id}/experiment.yml", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/manifest.json", manifest)
    ctx = RunContext(run_id, loaded.experiment, loaded.directory, store, manifest=manifest)
    assert executor.run_prepare(ctx) is None
    assert executor.execute(ctx, given) == []  # asynchronous: handed to Slurm, nothing published yet
    status = watch_run(client, store, run_id, lambda s: None, interval=0.5, timeout=180)
    assert status.done
    recs = store.cell_records(run_id)
    assert set(recs) == {c.key for c in given}
    for cell in given:
        rec = recs[cell.key]
        assert rec["seed"] == derive_seed(7, cell.dataset, cell.replicate)
        if cell.algorithm == "flaky":
            assert rec["status"] == "failed" and rec["reason"].startswith("exit code 3")
        else:
            assert rec["status"] == "succeeded" and rec["metrics"]["error"] == (rec["seed"] % 1000) / 1000


def test_a_failing_prepare_step_runs_no_cell(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    spec = write_study(tmp_path, replicates=1, extra="  prepare: {command: [python, -c, 'import sys; sys.exit(4)']}\n")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1
    shown = json.loads(expkit(slurm_cluster, "status", run_id, "--store", str(store), "--json", cwd=tmp_path).stdout)
    assert shown["phase"].startswith("Failed (the prepare step failed") and shown["counts"]["missing"] == 4
    assert records(store, run_id) == {} and (store / run_id / "prepare.log").is_file()


def test_sbatch_and_so_the_jobs_never_get_credentials() -> None:
    from expkit.executors.slurm.client import slurm_environment

    env = {
        "PATH": "/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "HOME": "/home/me",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ACCESS_KEY_ID": "a",
        "EXPKIT_S3_ENDPOINT": "http://x",
        "GITHUB_TOKEN": "t",
        "EXPKIT_REGISTRY_PASSWORD": "p",
    }
    assert slurm_environment(env) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm/slurm.conf", "HOME": "/home/me"}


def test_a_task_slurm_stops_at_its_time_limit_is_published_failed(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    """No spec.timeout, a partition with a 1-minute default limit: Slurm itself ends the task (TIMEOUT),
    and the sync publishes the cell failed with that reason (bounded: Slurm checks limits every 30 s)."""
    spec = write_study(tmp_path, replicates=1, slurm="  slurm: {partition: short}\n")
    spec.write_text(
        spec.read_text().replace("algorithms: [{name: steady}, {name: flaky}]", "algorithms: [{name: steady}]")
    )
    spec.write_text(spec.read_text().replace("datasets: [d1, d2]", "datasets: [d1]"))
    (spec.parent / "sleep.txt").write_text("600")
    store = tmp_path / "store"
    run_id, done = submit(slurm_cluster, spec, store, "--watch")
    assert done.returncode == 1, done.stdout + done.stderr
    [rec] = records(store, run_id).values()
    assert rec["status"] == "failed" and rec["slurm"]["state"] == "TIMEOUT"
    assert "Slurm stopped its task at the time limit (the partition's limit" in rec["reason"]


def test_without_slurm_commands_one_line_exit_1_and_nothing_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_study(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch here
    result = CliRunner().invoke(app, ["submit", str(spec), "--to", "slurm", "--store", str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sbatch: command not found" in errors[0] and "SLURM_CONF" in errors[0]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())

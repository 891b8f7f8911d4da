"""Benchmark of the Slurm executor's overhead (issue 19, item 6): expkit against a plain ``sbatch --array``.

Run (as root, with Debian's ``slurmctld slurmd slurm-client munge``): ``python bench/slurm_overhead.py
[--cells 200 --sleep 0.1 --cells-per-task 1]``. It starts its own one-node Slurm on loopback
(``tests/slurm_cluster.py``) and stops it at the end.

Both sides run the same program per cell (``run.py``: sleep ``--sleep`` seconds, write ``result.json``)
200 times on the same cluster, one CPU per task, no throttle:

* **baseline**: a plain batch script submitted with ``sbatch --array=0-199`` whose task computes its
  cell's seed from ``SLURM_ARRAY_TASK_ID``, sets the output directory and runs ``python run.py``;
* **expkit**: ``expkit submit --to slurm`` of a spec with the same cells (4 algorithms x 5 datasets x 10
  replicates), each task running its cell through the run contract and publishing it into a directory
  store (``run.json`` last).

Each is timed from submission until the last task is done (``squeue`` lists none of its tasks; for
expkit also: the store holds 200 ``run.json``), both polled every 0.2 s. The baseline runs once more at
the end, to show how much the cluster and the machine drifted during the benchmark; and once first, not
counted, to warm the fresh Slurm up (its first array ran twice as slowly: 99.1 s, then 50.3 s).
Printed: both times and the ratio expkit / baseline (target <= 1.2), from one run of each, baseline
first, for ``cells_per_task`` ``auto`` (the default) and 1.

Also printed: expkit's own cost per array task, outside Slurm: the median over ``--task-samples`` runs
of ``python -m expkit.executors.slurm.task cells`` for a one-cell row (start Python, import, read the
cell table, run the cell through the run contract, publish ``run.json``) minus the median of the bare
``python run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from slurm_cluster import SlurmCluster, missing_reason, start_cluster

RUN_PY = """\
import json, os, time
time.sleep({sleep})
with open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w") as fh:
    json.dump({{"metrics": {{"error": int(os.environ["EXPKIT_SEED"]) % 1000 / 1000}}}}, fh)
"""

BASELINE_SH = """\
#!/bin/bash
#SBATCH --cpus-per-task=1
set -eu
export EXPKIT_SEED=$SLURM_ARRAY_TASK_ID
export EXPKIT_OUTPUT_DIR={out}/$SLURM_ARRAY_TASK_ID
mkdir -p "$EXPKIT_OUTPUT_DIR"
cd {study}
exec {python} run.py
"""

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata: {{name: bench}}
spec:
  image: example.org/bench:1
  command: [python, run.py]
  algorithms: [{{name: a1}}, {{name: a2}}, {{name: a3}}, {{name: a4}}]
  datasets: [d1, d2, d3, d4, d5]
  replicates: {replicates}
  metric: {{name: error, goal: minimize}}
  slurm: {{cells_per_task: {per_task}}}
"""


def task_cost(study: Path, samples: int) -> tuple[float, float]:
    """Median seconds of one array task's entry running a one-cell row, and of the bare program."""
    from expkit.executors.slurm.render import cell_table, plan_arrays
    from expkit.runs.manifest import build_manifest
    from expkit.runs.matrix import build_matrix
    from expkit.spec import load_spec
    from expkit.stores import FileStore

    (study / "experiment.yml").write_text(SPEC.format(replicates=max(1, -(-samples // 20)), per_task=1))
    loaded = load_spec(study / "experiment.yml")
    cells = build_matrix(loaded.experiment)[:samples]
    store = FileStore(study.parent / "store-task")
    manifest = build_manifest(loaded, "bench-task", "slurm", 1, len(cells))
    store.put_json("bench-task/manifest.json", manifest)
    [plan] = plan_arrays(loaded.experiment, cells)
    table = cell_table(loaded.experiment, plan, {c.key: c for c in cells}, manifest=manifest, output_dir="@out@")
    store.put_json(f"bench-task/slurm/{plan.name}.cells.json", table)
    argv = [sys.executable, "-m", "expkit.executors.slurm.task", "cells", "--store", str(store.root)]
    argv += ["--run", "bench-task", "--table", f"slurm/{plan.name}.cells.json", "--spec-dir", str(study)]
    task_s, bare_s = [], []
    for index in range(len(plan.rows)):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
        t0 = time.monotonic()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        task_s.append(time.monotonic() - t0)
        out = study.parent / "bare" / str(index)
        out.mkdir(parents=True)
        t0 = time.monotonic()
        env = {**os.environ, "EXPKIT_OUTPUT_DIR": str(out), "EXPKIT_SEED": str(index)}
        subprocess.run([sys.executable, "run.py"], cwd=study, env=env, check=True)
        bare_s.append(time.monotonic() - t0)
    return statistics.median(task_s), statistics.median(bare_s)


def _wait(done: object, timeout: float = 1800.0) -> float:
    start = time.monotonic()
    while not done():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError("the benchmark did not finish in time")
        time.sleep(0.2)
    return time.monotonic()


def baseline(cluster: SlurmCluster, study: Path, cells: int, name: str = "baseline") -> float:
    """Seconds from ``sbatch --array`` until Slurm lists none of its tasks."""
    script = study.parent / f"{name}.sh"
    script.write_text(BASELINE_SH.format(out=study.parent / f"{name}-out", study=study, python=sys.executable))
    t0 = time.monotonic()
    job = cluster.run(
        "sbatch", "--parsable", f"--array=0-{cells - 1}", f"--output={study.parent}/b-%A_%a.out", str(script)
    )
    job_id = job.stdout.strip()
    assert job_id.isdigit(), job.stderr

    def finished() -> bool:
        return not cluster.run("squeue", "-h", "-j", job_id, "-o", "%i").stdout.strip()

    return _wait(finished) - t0


def with_expkit(cluster: SlurmCluster, study: Path, cells: int, per_task: str) -> float:
    """Seconds from ``expkit submit --to slurm`` until the store holds every cell's ``run.json`` and Slurm
    lists none of the run's tasks (the baseline's criterion)."""
    (study / "experiment.yml").write_text(SPEC.format(replicates=cells // 20, per_task=per_task))
    store = study.parent / f"store-{per_task}"
    t0 = time.monotonic()
    submitted = subprocess.run(
        [sys.executable, "-m", "expkit", "submit", "experiment.yml", "--to", "slurm", "--store", str(store)],
        cwd=study,
        env=cluster.client_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = submitted.stdout.strip().splitlines()[-1]

    manifest = json.loads((store / run_id / "manifest.json").read_text())
    jobs = ",".join(str(a["job_id"]) for a in manifest["slurm"]["arrays"])

    def finished() -> bool:
        if sum(1 for _ in (store / run_id / "runs").glob("*/*/*/run.json")) < cells:
            return False
        return not cluster.run("squeue", "-h", "-j", jobs, "-o", "%i").stdout.strip()

    return _wait(finished) - t0


def main() -> None:
    """Start a Slurm, time both sides once, print the ratio, stop the Slurm."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="cells (a multiple of 20)")
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds one cell sleeps")
    parser.add_argument(
        "--cells-per-task", default="auto,1", help="expkit: spec.slurm.cells_per_task, one run per value (auto,1)"
    )
    parser.add_argument("--task-samples", type=int, default=20, help="one-cell tasks timed outside Slurm")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    work = Path(tempfile.mkdtemp(prefix="expkit-bench-slurm-"))
    work.chmod(0o755)
    cluster = start_cluster(work / "slurm")
    version = cluster.run("sbatch", "--version").stdout.strip() or "?"
    timings: dict[str, float] = {}
    try:
        study = work / "study"
        study.mkdir()
        (study / "run.py").write_text(RUN_PY.format(sleep=args.sleep))
        warm_s = baseline(cluster, study, args.cells, "warm-up")  # a fresh Slurm starts its first array slowly
        base_s = baseline(cluster, study, args.cells)
        for per_task in args.cells_per_task.split(","):
            timings[per_task] = with_expkit(cluster, study, args.cells, per_task)
        again_s = baseline(cluster, study, args.cells, "again")  # the same baseline once more, last
        task_s, bare_s = task_cost(study, args.task_samples)
    finally:
        cluster.cancel_all()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{version} on {cluster.cpus} CPUs, {args.cells} cells of {args.sleep:g} s")
    print(f"baseline: plain sbatch --array of the same program, one cell per task: {base_s:.1f} s")
    for per_task, seconds in timings.items():
        print(
            f"expkit submit --to slurm, cells_per_task {per_task}: {seconds:.1f} s, "
            f"ratio expkit / baseline {seconds / base_s:.2f}x (target <= 1.2x)"
        )
    print(f"warm-up, not counted: the baseline on the fresh Slurm: {warm_s:.1f} s")
    print(f"the baseline once more, after expkit's runs (drift of the cluster and the machine): {again_s:.1f} s")
    print(
        f"one array task of one cell, outside Slurm (median of {args.task_samples}): {task_s:.3f} s; "
        f"the bare program: {bare_s:.3f} s; expkit's own cost per task: {task_s - bare_s:.3f} s"
    )


if __name__ == "__main__":
    main()

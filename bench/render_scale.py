"""How long rendering + strict validation of an Argo workflow takes, and how big the YAML gets.

Run:  python bench/render_scale.py

Shapes (algorithms x datasets x replicates): 10 x 10 x {10, 1,000, 10,000} (1 thousand, 100
thousand and 1 million cells), then many datasets: 10 x 1,000 x 100 and 10 x 10,000 x 10. Every
spec has a global parameter, a parameter per dataset and per algorithm, all used on the command
line. Each shape is rendered a few times in this one process; the best time is reported with its
parts (building the context, jinja, YAML parsing, schema check, semantic checks). The YAML size must
not grow with replicates; it grows with datasets (one DAG task each) — Argo keeps the workflow in
etcd, whose request limit is about 1.5 MB, so the last shape is over what one workflow can carry.

Then the size table of docs/argo.md ("Large runs"): the Workflow object the controller keeps for 1k,
10k, 100k and 1M cells (10 algorithms x 10 datasets), with and without sharding (at most 2,000 cells per
workflow) and batching (10 cells per pod): the spec as rendered (for a sharded run, its first shard) plus
the node status, MODELLED from Argo's node-status format by :mod:`expkit.executors.argo.sizes` (no
controller runs here), uncompressed and as Argo compresses it (gzip + base64, ``status.compressedNodes``),
against Argo's 1 MiB workflow limit and etcd's ~1.5 MB request limit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from expkit.executors.argo import render as R
from expkit.executors.argo.shards import Shard, plan_shards
from expkit.executors.argo.sizes import ARGO_MAX_WORKFLOW_SIZE, workflow_object_bytes
from expkit.executors.argo.validate import check_schema, check_semantics
from expkit.spec import LoadedSpec, load_spec_text

SHAPES = [(10, 10, 10), (10, 10, 1_000), (10, 10, 10_000), (10, 1_000, 100), (10, 10_000, 10)]
REPEAT = 3


def spec_text(algorithms: int, datasets: int, replicates: int) -> str:
    algs = "\n".join(f"    - {{name: algorithm-{i}, params: {{lr: 0.{i + 1}}}}}" for i in range(algorithms))
    dss = "\n".join(f"    - {{name: dataset-{i:05d}, params: {{dim: {i % 50 + 1}}}}}" for i in range(datasets))
    return f"""apiVersion: expkit/v1
kind: Experiment
metadata: {{name: scale}}
spec:
  image: registry.example/solver:1@sha256:{"a" * 64}
  command: [python, run.py]
  args: ["--alg={{algorithm}}", "--ds={{dataset}}", "--seed={{seed}}", "--dim={{params.dim}}", "--lr={{params.lr}}",
         "--budget={{params.budget}}", "--out={{output_dir}}"]
  params: {{budget: 100}}
  algorithms:
{algs}
  datasets:
{dss}
  replicates: {replicates}
  metric: {{name: best, goal: minimize}}
  parallelism: 200
  retries: 1
  timeout: 10m
"""


def measure(loaded: LoadedSpec) -> tuple[float, dict[str, float], int]:
    best_total, best_parts, size = float("inf"), {}, 0
    env = R.template_environment(str(R.data_dir(R.TEMPLATE_DIR)))
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        ctx = R._context(loaded.experiment, "scale-bench", loaded.sha256, None, None, "")
        t1 = time.perf_counter()
        text = env.get_template(R.TEMPLATE_NAME).render(**ctx)
        t2 = time.perf_counter()
        doc = R._parse(text)
        t3 = time.perf_counter()
        check_schema(doc)
        t4 = time.perf_counter()
        check_semantics(doc)
        t5 = time.perf_counter()
        # The public entry point does exactly these steps; check it agrees.
        if R.render_yaml(loaded, "scale-bench") != text:
            raise SystemExit("render_yaml disagrees with the measured steps")
        if t5 - t0 < best_total:
            best_total = t5 - t0
            best_parts = {
                "context": t1 - t0,
                "jinja": t2 - t1,
                "yaml": t3 - t2,
                "schema": t4 - t3,
                "semantics": t5 - t4,
            }
            size = len(text.encode())
    return best_total, best_parts, size


def main() -> None:
    print(f"{'shape (A x D x R)':>22} {'cells':>11} {'YAML bytes':>11} {'render+validate':>16}  parts (s)")
    base_sizes: dict[tuple[int, int], int] = {}
    for a, d, r in SHAPES:
        loaded = load_spec_text(spec_text(a, d, r))
        total, parts, size = measure(loaded)
        base_sizes.setdefault((a, d), size)
        growth = size - base_sizes[(a, d)]
        note = f"  (+{growth} B vs fewest replicates)" if growth else ""
        if size > R.ETCD_REQUEST_LIMIT:
            note += "  OVER the ~1.5 MB etcd limit: split into several workflows"
        detail = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
        print(f"{f'{a} x {d} x {r}':>22} {a * d * r:>11,} {size:>11,} {total:>15.3f}s  {detail}{note}")


SIZE_SHAPES = [(10, 10, 10), (10, 10, 100), (10, 10, 1_000), (10, 10, 10_000)]  # 1k, 10k, 100k, 1M cells
#: (label, cellsPerPod, maxCellsPerWorkflow)
SIZE_SETTINGS = [
    ("one workflow, 1 cell/pod", 1, 10**6),
    ("one workflow, 10 cells/pod", 10, 10**6),
    ("sharded 2,000, 1 cell/pod", 1, 2_000),
    ("sharded 2,000, 10 cells/pod", 10, 2_000),
]


def size_row(a: int, d: int, r: int, per_pod: int, limit: int) -> tuple[int, int, int, int, int, int]:
    """(workflows, cells in the first, nodes, spec bytes, status bytes, compressed status bytes)."""
    text = spec_text(a, d, r) + f"  kubernetes: {{cellsPerPod: {per_pod}, maxCellsPerWorkflow: {limit}}}\n"
    loaded = load_spec_text(text)
    shards = plan_shards(loaded.experiment)
    first = [k for b in shards[0] for k in b.keys]
    if len(shards) == 1:
        yaml_text = R.render_yaml(loaded, "scale-bench")
    else:
        yaml_text = R.render_yaml(loaded, "scale-bench", cells=first, shard=Shard(1, len(shards)))
    # spec.retries is 1: unbatched cells get a Retry node each; a batch pod retries its cells itself.
    est = workflow_object_bytes(len(yaml_text.encode()), len(first), per_pod, retries=per_pod == 1)
    return len(shards), len(first), est.nodes, est.spec_bytes, est.status_bytes, est.compressed_status_bytes


def size_table() -> None:
    print()
    print("Workflow object size (node status modelled; see expkit/executors/argo/sizes.py)")
    print(
        f"{'cells':>10} {'setting':>28} {'workflows':>9} {'cells/wf':>9} {'nodes/wf':>9} {'spec':>9} "
        f"{'status':>12} {'compressed':>11}  fits?"
    )
    for a, d, r in SIZE_SHAPES:
        for label, per_pod, limit in SIZE_SETTINGS:
            n, first, nodes, spec, status, packed = size_row(a, d, r, per_pod, limit)
            stored = spec + (status if spec + status <= ARGO_MAX_WORKFLOW_SIZE else packed)
            verdict = (
                "yes, uncompressed"
                if spec + status <= ARGO_MAX_WORKFLOW_SIZE
                else ("yes, compressed" if spec + packed <= ARGO_MAX_WORKFLOW_SIZE else "NO: over Argo's 1 MiB")
            )
            margin = ARGO_MAX_WORKFLOW_SIZE / stored
            print(
                f"{a * d * r:>10,} {label:>28} {n:>9,} {first:>9,} {nodes:>9,} {spec / 1e3:>8.0f}K "
                f"{status / 1e6:>10.2f}MB {packed / 1e3:>10.0f}K  {verdict} ({margin:.1f}x)"
            )


if __name__ == "__main__":
    main()
    size_table()

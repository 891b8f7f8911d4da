"""How long rendering + strict validation of an Argo workflow takes, and how big the YAML gets.

Run:  python bench/render_scale.py

Shapes (algorithms x datasets x replicates): 10 x 10 x {10, 1,000, 10,000} (1 thousand, 100
thousand and 1 million cells), then many datasets: 10 x 1,000 x 100 and 10 x 10,000 x 10. Every
spec has a global parameter, a parameter per dataset and per algorithm, all used on the command
line. Each shape is rendered a few times in this one process; the best time is reported with its
parts (building the context, jinja, YAML parsing, schema check, semantic checks). The YAML size must
not grow with replicates; it grows with datasets (one DAG task each) — Argo keeps the workflow in
etcd, whose request limit is about 1.5 MB, so the last shape is over what one workflow can carry.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from expkit.executors.argo import render as R
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
    env = R._environment(str(R.data_dir(R.TEMPLATE_DIR)))
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


if __name__ == "__main__":
    main()

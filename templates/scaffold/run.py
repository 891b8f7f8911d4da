"""One run of the scaffold experiment: minimise a toy function and write result.json (numpy only)."""

import argparse
import json
import os

import numpy as np

PROBLEMS = {
    "sphere": lambda x: float(np.sum(x * x)),
    "rastrigin": lambda x: float(10 * x.size + np.sum(x * x - 10 * np.cos(2 * np.pi * x))),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", required=True)
    ap.add_argument("--problem", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--out", default=os.environ.get("EXPKIT_OUTPUT_DIR", "."))
    args = ap.parse_args()
    params = json.loads(os.environ.get("EXPKIT_PARAMS", "{}"))
    rng = np.random.default_rng(args.seed)
    f = PROBLEMS[args.problem]
    x = rng.uniform(-5, 5, size=5)
    best = f(x)
    trajectory = []
    for evaluation in range(1, args.budget + 1):
        if args.algorithm == "random-search":
            candidate = rng.uniform(-5, 5, size=5)
        else:
            candidate = x + rng.normal(0, params.get("step", 0.3), size=5)
        value = f(candidate)
        if value < best:
            x, best = candidate, value
        if evaluation % 25 == 0:
            trajectory.append({"step": evaluation, "best": best})
    with open(os.path.join(args.out, "result.json"), "w") as fh:
        json.dump({"metrics": {"best": best}, "trajectory": trajectory}, fh)


if __name__ == "__main__":
    main()

"""Three black-box optimizers on seven benchmark functions: the expkit quickstart experiment.

One invocation is one run (one cell of the experiment): an optimizer minimizes a function with a
fixed budget of function evaluations, seeded, and writes ``result.json`` per expkit's run contract::

    {"metrics": {"best": <best value found>, "evaluations": <evaluations used>},
     "trajectory": [{"step": 50, "best": ...}, {"step": 100, "best": ...}, ...]}

Usage (expkit fills the placeholders; by hand, every flag has a default or an EXPKIT_* fallback)::

    python optimizers.py --algorithm one-plus-one-es --function sphere --dim 5 --budget 2000 \
        --seed 42 --output-dir out/

Only numpy is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

# The optimizers are single-threaded: keep numpy's BLAS from starting a thread pool per process,
# which only slows down start-up when several runs share the machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

TRAJECTORY_EVERY = 50  # record best-so-far every this many evaluations


# -- benchmark functions (global minimum 0 for all seven) ---------------------------------------


def sphere(x: np.ndarray) -> float:
    return float(np.dot(x, x))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rastrigin(x: np.ndarray) -> float:
    return float(10.0 * x.size + np.sum(x * x - 10.0 * np.cos(2.0 * math.pi * x)))


def ackley(x: np.ndarray) -> float:
    n = x.size
    return float(
        -20.0 * math.exp(-0.2 * math.sqrt(np.dot(x, x) / n))
        - math.exp(np.sum(np.cos(2.0 * math.pi * x)) / n)
        + 20.0
        + math.e
    )


def griewank(x: np.ndarray) -> float:
    i = np.arange(1, x.size + 1)
    return float(np.dot(x, x) / 4000.0 - np.prod(np.cos(x / np.sqrt(i))) + 1.0)


def ellipsoid(x: np.ndarray) -> float:
    """An ill-conditioned bowl: the axes' weights grow from 1 to 1e6."""
    weights = 10.0 ** (6.0 * np.arange(x.size) / max(x.size - 1, 1))
    return float(np.dot(weights, x * x))


def levy(x: np.ndarray) -> float:
    """Many local minima; the global one at x = (1, ..., 1)."""
    w = 1.0 + (x - 1.0) / 4.0
    inner = np.sum((w[:-1] - 1.0) ** 2 * (1.0 + 10.0 * np.sin(math.pi * w[:-1] + 1.0) ** 2))
    last = (w[-1] - 1.0) ** 2 * (1.0 + math.sin(2.0 * math.pi * w[-1]) ** 2)
    return float(math.sin(math.pi * w[0]) ** 2 + inner + last)


#: name -> (function, search-space half-width); the domain is [-w, w]^dim.
FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], float], float]] = {
    "sphere": (sphere, 5.0),
    "rosenbrock": (rosenbrock, 5.0),
    "rastrigin": (rastrigin, 5.12),
    "ackley": (ackley, 32.768),
    "griewank": (griewank, 600.0),
    "ellipsoid": (ellipsoid, 5.0),
    "levy": (levy, 10.0),
}


class Budget:
    """Counts evaluations, tracks the best value and records the best-so-far trajectory."""

    def __init__(self, f: Callable[[np.ndarray], float], budget: int) -> None:
        self.f = f
        self.budget = budget
        self.used = 0
        self.best = math.inf
        self.trajectory: list[dict[str, float]] = []

    @property
    def left(self) -> int:
        return self.budget - self.used

    def __call__(self, x: np.ndarray) -> float:
        value = self.f(x)
        self.used += 1
        self.best = min(self.best, value)
        if self.used % TRAJECTORY_EVERY == 0 or self.used == self.budget:
            self.trajectory.append({"step": self.used, "best": self.best})
        return value


# -- optimizers ---------------------------------------------------------------------------------


def random_search(fb: Budget, dim: int, width: float, rng: np.random.Generator) -> None:
    """Uniform samples over the whole domain."""
    while fb.left > 0:
        fb(rng.uniform(-width, width, dim))


def one_plus_one_es(fb: Budget, dim: int, width: float, rng: np.random.Generator) -> None:
    """(1+1) evolution strategy with the 1/5th success rule: the step size grows after a success and
    shrinks after a failure, so that in equilibrium about one mutation in five succeeds."""
    x = rng.uniform(-width, width, dim)
    fx = fb(x)
    sigma = 0.3 * width
    damping = 1.0 + dim / 2.0
    while fb.left > 0:
        y = np.clip(x + sigma * rng.standard_normal(dim), -width, width)
        fy = fb(y)
        success = fy <= fx
        if success:
            x, fx = y, fy
        # log(sigma) moves by +0.8/d on success and -0.2/d on failure: stationary at a 1/5 success rate.
        sigma *= math.exp(((1.0 if success else 0.0) - 0.2) / damping)
        sigma = min(max(sigma, 1e-12), 2.0 * width)


def simulated_annealing(fb: Budget, dim: int, width: float, rng: np.random.Generator) -> None:
    """Simulated annealing: Gaussian moves of a shrinking size, geometric cooling, Metropolis acceptance."""
    x = rng.uniform(-width, width, dim)
    fx = fb(x)
    n = max(fb.left, 1)
    t0, t_end = max(abs(fx), 1.0) * 0.1, 1e-6
    s0, s_end = 0.2 * width, 0.002 * width
    k = 0
    while fb.left > 0:
        frac = k / n
        temp = t0 * (t_end / t0) ** frac
        step = s0 * (s_end / s0) ** frac
        y = np.clip(x + step * rng.standard_normal(dim), -width, width)
        fy = fb(y)
        if fy <= fx or rng.random() < math.exp(-(fy - fx) / temp):
            x, fx = y, fy
        k += 1


ALGORITHMS: dict[str, Callable[[Budget, int, float, np.random.Generator], None]] = {
    "random-search": random_search,
    "one-plus-one-es": one_plus_one_es,
    "simulated-annealing": simulated_annealing,
}


def run(algorithm: str, function: str, dim: int, budget: int, seed: int) -> dict:
    """One run; returns the result.json document."""
    f, width = FUNCTIONS[function]
    fb = Budget(f, budget)
    ALGORITHMS[algorithm](fb, dim, width, np.random.default_rng(seed))
    return {"metrics": {"best": fb.best, "evaluations": fb.used}, "trajectory": fb.trajectory}


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithm", default=env.get("EXPKIT_ALGORITHM"), choices=sorted(ALGORITHMS))
    ap.add_argument("--function", default=env.get("EXPKIT_DATASET"), choices=sorted(FUNCTIONS))
    ap.add_argument("--dim", type=int, default=5)
    ap.add_argument("--budget", type=int, default=2000, help="function evaluations")
    ap.add_argument("--seed", type=int, default=int(env.get("EXPKIT_SEED", "0")))
    ap.add_argument("--output-dir", default=env.get("EXPKIT_OUTPUT_DIR", "."))
    args = ap.parse_args(argv)
    if args.algorithm is None or args.function is None:
        ap.error("give --algorithm and --function (or run it through expkit)")
    doc = run(args.algorithm, args.function, args.dim, args.budget, args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(doc) + "\n")
    print(
        f"{args.algorithm} on {args.function} (dim {args.dim}, seed {args.seed}): "
        f"best {doc['metrics']['best']:.6g} after {doc['metrics']['evaluations']} evaluations"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

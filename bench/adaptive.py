"""Benchmark of adaptive replicates (issue 18, item 6): the sequential procedure against the fixed design
on suites with known truth.

Run: ``python bench/adaptive.py [--datasets 60 --null-datasets 300 --quickstart-csv PATH --seed 18]``

Suites (4 algorithms per dataset unless said, runs paired by seed, goal minimize, max 50 replicates):

* ``normal``, ``heavy-tailed`` (Student t, 3 df), ``bimodal`` (two modes at +-1, sd 0.3): per dataset
  the true means are effect x a shuffle of (0, 0, 1, 2) with effect none / small (0.2) / medium (0.6) /
  large (1.5) in equal shares, plus a seed component shared by the algorithms (common random numbers);
  per-run noise scaled so the paired differences have unit spread;
* ``null``: every algorithm the same (normal noise): the false-claim rate with many datasets;
* ``quickstart``: the quickstart's real runs (``results.csv`` of ``expkit results``; ``--quickstart-csv``)
  resampled by replicate (pairing kept), 3 algorithms per function, plus per function a null copy in
  which every algorithm is resampled from the same algorithm's runs. Truth of a pair: the sign of the
  pseudo-median of the empirical paired differences (0 in the null copies).

Designs: the fixed design (``max_replicates`` per cell; Wilcoxon signed-rank per pair, Holm over the
pairs of a dataset) and the adaptive design (:func:`expkit.adaptive.sequential.race` with
``min 10, wave 5, max 50, stop: decided``) with the default spending (Hwang-Shih-DeCani, gamma and
futility of :class:`SequentialConfig`), the previous default (O'Brien-Fleming type, futility 0.3),
O'Brien-Fleming type and Pocock type at the default futility (``--design`` chooses others). Printed per
suite and overall: runs used (adaptive vs fixed, and the saving), the false-claim rate of each design
(the share of datasets with a difference declared where there is none or in the wrong direction;
target <= alpha), and the share of pairs whose conclusion (a better / b better / no difference)
differs from the fixed design's (target <= 5 %); per design the first look at which a dominating
algorithm can be declared better with 2, 3 and 4 algorithms (target: min_replicates, 10); first, the
CPU time of the boundaries of a 91-look design. The baseline of every ratio is the fixed design
measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from scipy import special

from expkit.adaptive import boundaries as boundaries_module
from expkit.adaptive.boundaries import Spending
from expkit.adaptive.sequential import SequentialConfig, first_decisive_look, race
from expkit.adaptive.sequential_ranks import oriented, signed_rank_z
from expkit.analysis.stats import holm

ALPHA = 0.05
MIN, WAVE, MAX = 10, 5, 50
EFFECTS = {"none": 0.0, "small": 0.2, "medium": 0.6, "large": 1.5}
ROPE = 0.3
DEFAULT = SequentialConfig(min_replicates=MIN, max_replicates=MAX, wave=WAVE, stop="decided", rope=ROPE)


@dataclass
class Dataset:
    """One simulated dataset: values (algorithm -> MAX replicates) and the true sign of each pair."""

    values: dict[str, np.ndarray]
    truth: dict[tuple[str, str], int]  # +1: a better (smaller, goal minimize), -1: b better, 0: none


@dataclass
class Tally:
    """What one design did on one suite."""

    datasets: int = 0
    pairs: int = 0
    runs_fixed: int = 0
    runs_adaptive: int = 0
    false_fixed: int = 0
    false_adaptive: int = 0
    differ: int = 0


def _noise(rng: np.random.Generator, shape: str, size: tuple[int, ...]) -> np.ndarray:
    if shape == "normal":
        return rng.normal(size=size)
    if shape == "heavy-tailed":
        return rng.standard_t(3, size=size) / math.sqrt(3.0)
    modes = rng.choice([-1.0, 1.0], size=size)
    return (modes + rng.normal(0.0, 0.3, size=size)) / math.sqrt(1.09)


def simulated(rng: np.random.Generator, shape: str, count: int, null: bool = False) -> Iterator[Dataset]:
    """``count`` datasets of 4 algorithms with known true shifts."""
    names = ("a1", "a2", "a3", "a4")
    for i in range(count):
        effect = 0.0 if null else list(EFFECTS.values())[i % len(EFFECTS)]
        means = effect * rng.permutation([0.0, 0.0, 1.0, 2.0])
        seed_part = rng.normal(size=MAX)
        noise = _noise(rng, shape, (len(names), MAX)) / math.sqrt(2.0)
        values = {n: means[j] + seed_part + noise[j] for j, n in enumerate(names)}
        truth = {(a, b): int(np.sign(means[j] - means[i2])) for (i2, a), (j, b) in _pairs(names)}
        yield Dataset(values, truth)


def _pairs(names: tuple[str, ...]) -> Iterator[tuple[tuple[int, str], tuple[int, str]]]:
    return itertools.combinations(enumerate(names), 2)


def _pseudo_median_sign(d: np.ndarray) -> int:
    walsh = (d[:, None] + d[None, :]) / 2.0  # every ordered pair: (D1 + D2)/2 with D1, D2 drawn from the runs
    med = float(np.median(walsh))
    return int(np.sign(med)) if abs(med) > 1e-12 else 0


def quickstart(rng: np.random.Generator, path: Path, copies: int) -> Iterator[Dataset]:
    """The quickstart's runs resampled by replicate, and null copies (one algorithm's runs for all)."""
    cells: dict[str, dict[str, dict[int, float]]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["metric"] != "best" or row["status"] != "succeeded":
                continue
            cells.setdefault(row["dataset"], {}).setdefault(row["algorithm"], {})[int(row["replicate"])] = float(
                row["value"]
            )
    for dataset in sorted(cells):
        algs = tuple(sorted(cells[dataset]))
        reps = sorted(set.intersection(*(set(cells[dataset][a]) for a in algs)))
        table = np.array([[cells[dataset][a][r] for r in reps] for a in algs])
        truth = {}
        for (i, a), (j, b) in _pairs(algs):
            truth[(a, b)] = -_pseudo_median_sign(table[i] - table[j])  # minimize: a smaller is a better
        for _ in range(copies):
            idx = rng.integers(0, len(reps), size=MAX)
            yield Dataset({a: table[i, idx] for i, a in enumerate(algs)}, dict(truth))
            pool = table[rng.integers(0, len(algs))]
            null = {a: pool[rng.integers(0, len(reps), size=MAX)] for a in algs}
            yield Dataset(null, {k: 0 for k in truth})


def fixed_design(values: dict[str, np.ndarray]) -> dict[tuple[str, str], int]:
    """The fixed design's conclusions: Wilcoxon signed-rank at MAX per pair, Holm over the pairs."""
    names = tuple(values)
    pairs = list(itertools.combinations(names, 2))
    z = [signed_rank_z(oriented(values[a], "minimize"), oriented(values[b], "minimize")) for a, b in pairs]
    p = holm([float(2.0 * special.ndtr(-abs(v))) for v in z])
    return {pair: (int(np.sign(v)) if q <= ALPHA else 0) for pair, v, q in zip(pairs, z, p)}


def evaluate(
    data: list[Dataset], spending: Spending, rope: float, futility: float, eliminate: bool, gamma: float = 0.5
) -> Tally:
    """Both designs on every dataset of a suite."""
    config = SequentialConfig(
        gamma=gamma,
        min_replicates=MIN,
        max_replicates=MAX,
        wave=WAVE,
        stop="decided",
        rope=rope,
        alpha=ALPHA,
        spending=spending,
        futility=futility,
        eliminate=eliminate,
    )
    tally = Tally()
    for ds in data:
        fixed = fixed_design(ds.values)
        decision = race("bench", ds.values, config)
        adaptive = {(p.a, p.b): {"a_better": 1, "b_better": -1}.get(p.decision, 0) for p in decision.pairs}
        tally.datasets += 1
        tally.pairs += len(fixed)
        tally.runs_fixed += MAX * len(ds.values)
        tally.runs_adaptive += sum(n for _, n in decision.replicates)
        tally.false_fixed += any(v != 0 and v != ds.truth[k] for k, v in fixed.items())
        tally.false_adaptive += any(v != 0 and v != ds.truth[k] for k, v in adaptive.items())
        tally.differ += sum(fixed[k] != adaptive[k] for k in fixed)
    return tally


def _line(name: str, t: Tally) -> str:
    saved = 1.0 - t.runs_adaptive / t.runs_fixed
    se = math.sqrt(ALPHA * (1 - ALPHA) / max(t.datasets, 1))
    return (
        f"{name:<14} {t.datasets:>5} {t.runs_fixed:>8} {t.runs_adaptive:>8} {saved:>7.1%}"
        f" {t.false_fixed / t.datasets:>8.3f} {t.false_adaptive / t.datasets:>8.3f} (MC se {se:.3f})"
        f" {t.differ / t.pairs:>8.1%}"
    )


def _designs(given: list[str] | None, futility: float) -> list[tuple[Spending, float, float]]:
    """--design values: spending[:gamma[:futility]]."""
    if not given:
        given = [f"{DEFAULT.spending}:{DEFAULT.gamma}", "obrien-fleming::0.3", "obrien-fleming", "pocock"]
    out = []
    for item in given:
        parts = item.split(":")
        kind = cast(Spending, parts[0])
        gamma = float(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT.gamma
        out.append((kind, gamma, float(parts[2]) if len(parts) > 2 else futility))
    return out


def _timing_line() -> str:
    """CPU time of the boundaries and repeated-p-value table of a 91-look design (wave 1 from 10 to
    100 replicates), computed afresh: the cost a driver pays once per process and design."""
    times = tuple(n / 100 for n in range(10, 101))
    boundaries_module._boundaries.cache_clear()
    boundaries_module._level_table.cache_clear()
    start = time.process_time()
    boundaries_module.repeated_p(times, [0], [0.0], DEFAULT.spending, DEFAULT.gamma)
    boundaries_module.boundaries(times, ALPHA, DEFAULT.spending, DEFAULT.gamma)
    spent = time.process_time() - start
    return f"boundary computation, 91 looks (table of {boundaries_module._LEVELS} levels): {spent:.2f} s CPU"


def main() -> None:
    """Run every suite with both spending functions and print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=60, help="datasets per simulated suite")
    parser.add_argument("--null-datasets", type=int, default=300)
    parser.add_argument("--quickstart-csv", type=Path, help="results.csv of an `expkit results` of the quickstart")
    parser.add_argument("--copies", type=int, default=6, help="resampled copies per quickstart function")
    parser.add_argument("--rope", type=float, default=ROPE, help="rope of the simulated suites (noise units)")
    parser.add_argument(
        "--design",
        action="append",
        help="spending[:gamma[:futility]], repeatable (default: the default design, obrien-fleming and pocock)",
    )
    parser.add_argument("--futility", type=float, default=DEFAULT.futility, help="default conditional power threshold")
    parser.add_argument("--eliminate", action="store_true", help="F-race: losers get no more seeds")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    suites: dict[str, tuple[list[Dataset], float]] = {}
    for shape in ("normal", "heavy-tailed", "bimodal"):
        suites[shape] = (list(simulated(rng, shape, args.datasets)), args.rope)
    suites["null"] = (list(simulated(rng, "normal", args.null_datasets, null=True)), args.rope)
    if args.quickstart_csv:
        suites["quickstart"] = (list(quickstart(rng, args.quickstart_csv, args.copies)), 0.0)
    else:
        print("quickstart suite skipped: pass --quickstart-csv expkit-results/<run-id>/results.csv")
    print(
        f"alpha {ALPHA}; looks {MIN}..{MAX} step {WAVE}; stop: decided; rope {args.rope} (quickstart: 0); "
        f"F-race elimination {'on' if args.eliminate else 'off'}"
    )
    print(_timing_line())
    for spending, gamma, futility in _designs(args.design, args.futility):
        start = time.process_time()
        total = Tally()
        print(f"\nspending: {spending}" + (f" gamma {gamma}" if spending == "hsd" else "") + f"; futility {futility}")
        print(
            f"{'suite':<14} {'sets':>5} {'fixed':>8} {'adaptive':>8} {'saved':>7} {'FWER fix':>8} {'FWER ada':>8}"
            f" {'':>14} {'differ':>8}"
        )
        for name, (data, rope) in suites.items():
            t = evaluate(data, spending, rope, futility, args.eliminate, gamma)
            print(_line(name, t))
            if name != "null":
                for f in (
                    "datasets",
                    "pairs",
                    "runs_fixed",
                    "runs_adaptive",
                    "false_fixed",
                    "false_adaptive",
                    "differ",
                ):
                    setattr(total, f, getattr(total, f) + getattr(t, f))
        print(_line("all but null", total))
        saved = 1.0 - total.runs_adaptive / total.runs_fixed
        config = SequentialConfig(
            min_replicates=MIN, max_replicates=MAX, wave=WAVE, stop="decided", rope=0.0, spending=spending, gamma=gamma
        )
        decisive = [first_decisive_look(config, k) for k in (2, 3, 4)]
        fwer = max(total.false_fixed, total.false_adaptive) / total.datasets
        print(
            f"targets: runs saved >= 40 %: {saved >= 0.4}; conclusions differing <= 5 %: "
            f"{total.differ / total.pairs <= 0.05}; false-claim rates <= alpha: {fwer <= ALPHA}; "
            f"dominance declared at n={MIN} (first decisive look, 2/3/4 algorithms: "
            f"{'/'.join(map(str, decisive))}): {all(n == MIN for n in decisive)} "
            f"({time.process_time() - start:.1f} s CPU)"
        )


if __name__ == "__main__":
    main()

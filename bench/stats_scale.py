"""Benchmark of the statistics stage at the issue's scale: 20 algorithms x 500 datasets x 30 replicates.

Run: ``python bench/stats_scale.py [--algorithms 20 --datasets 500 --replicates 30 --repeat 5 --fail 0.01]``

Prints, all measured in this one process on the same seeded synthetic table:

(a) ``expkit.analysis.stats.analyze`` on the tidy table (independent runs, no plots, no file writing);
(b) the naive way: one ``scipy.stats.mannwhitneyu`` call per (dataset, pair) on pre-extracted samples,
    timed on a subset of the pairs and extrapolated linearly when the full loop would exceed 60 s
    (the output says so);
(c) ONE vectorised ``scipy.stats.mannwhitneyu(A, B, axis=-1)`` over all pairs at once (arrays prebuilt,
    only the call is timed), on raw arrays and on arrays sorted within each cell (expkit hands scipy
    sorted samples, which speeds up scipy's ranking); the faster of the two is the reference;
(d) the across-dataset part (``expkit.analysis.stats.across_datasets`` on the aggregated datasets x algorithms
    table: ranks, Friedman, Iman-Davenport, Nemenyi CD, pairwise Wilcoxon with Holm) against
    ``autorank.autorank(table, alpha=0.05, verbose=False, force_mode="nonparametric")`` (Friedman +
    Nemenyi) on the same table;

then the ratios and whether each target of the issue is met: (a) at least 10x faster than (b); (a)
within 2x of (c); (d) expkit no slower than autorank.

Every figure is the minimum over ``--repeat`` runs, in process CPU time and in wall-clock time. The
targets are judged on CPU time: everything measured is single-threaded, so on an idle machine both
agree, while on a shared machine wall-clock time mostly measures the other jobs. The Nemenyi q cache is
cleared before each expkit across-dataset run so the studentized-range quantiles are recomputed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as sps

from expkit.analysis import stats

NAIVE_BUDGET_S = 60.0


def synthetic_table(n_alg: int, n_ds: int, n_rep: int, seed: int = 20240601, fail: float = 0.0) -> pd.DataFrame:
    """Tidy table with algorithm effects, dataset difficulty and noise; a fraction ``fail`` of runs failed."""
    rng = np.random.default_rng(seed)
    effect = np.linspace(0.0, 0.3, n_alg)
    difficulty = rng.normal(0.0, 1.0, n_ds)
    values = difficulty[:, None, None] + effect[None, :, None] + rng.normal(0.0, 0.5, (n_ds, n_alg, n_rep))
    failed = rng.random(values.shape) < fail
    values = np.where(failed, np.nan, values)
    d_idx, a_idx, r_idx = np.meshgrid(np.arange(n_ds), np.arange(n_alg), np.arange(n_rep), indexing="ij")
    seeds = 1_000 * d_idx + r_idx
    return pd.DataFrame(
        {
            "algorithm": np.array([f"alg{i:02d}" for i in range(n_alg)])[a_idx.ravel()],
            "dataset": np.array([f"ds{i:03d}" for i in range(n_ds)])[d_idx.ravel()],
            "replicate": r_idx.ravel(),
            "seed": seeds.ravel(),
            "metric": "score",
            "value": values.ravel(),
            "status": np.where(failed.ravel(), "failed", "succeeded"),
        }
    )


class Timing:
    """Minimum CPU and wall-clock seconds over repeated runs of one callable."""

    def __init__(self, repeat: int, fn: Callable[[], Any]) -> None:
        self.cpu = self.wall = float("inf")
        self.result: Any = None
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            self.result = fn()
            self.cpu = min(self.cpu, time.process_time() - cpu)
            self.wall = min(self.wall, time.perf_counter() - wall)

    @classmethod
    def of(cls, cpu: float, wall: float) -> Timing:
        t = cls(0, lambda: None)
        t.cpu, t.wall = cpu, wall
        return t

    def __str__(self) -> str:
        return f"{self.cpu:9.3f} s CPU {self.wall:9.3f} s wall"


def naive_loop(pairs: list[tuple[str, str, str]], samples: dict) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    for d, a, b in pairs:
        sps.mannwhitneyu(samples[d, a], samples[d, b])
    return Timing.of(time.process_time() - cpu, time.perf_counter() - wall)


def verdict(name: str, ratio: float, target: str, met: bool) -> str:
    return f"  {name:34s} = {ratio:8.2f}x   target {target:6s}: {'MET' if met else 'NOT MET'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--algorithms", type=int, default=20)
    parser.add_argument("--datasets", type=int, default=500)
    parser.add_argument("--replicates", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--fail",
        type=float,
        default=0.0,
        help="fraction of failed runs (default 0: complete data; 0.01 makes sample sizes ragged)",
    )
    args = parser.parse_args()
    k, n_ds, n_rep = args.algorithms, args.datasets, args.replicates
    table = synthetic_table(k, n_ds, n_rep, fail=args.fail)
    n_pairs = n_ds * k * (k - 1) // 2
    print(
        f"synthetic table: {k} algorithms x {n_ds} datasets x {n_rep} replicates = {len(table)} rows, "
        f"{n_pairs} per-dataset pairs, {int((table['status'] != 'succeeded').sum())} failed runs; "
        f"minimum over {args.repeat} runs"
    )

    # (a) full analysis; issue 14's effect-size intervals (intervals=True, the default) are timed in (e)
    t_a = Timing(
        args.repeat,
        lambda: stats.analyze(table, metric="score", goal="maximize", paired=False, intervals=False, bayes=False),
    )
    analysis = t_a.result
    t_dict = Timing(1, analysis.to_dict)
    t_paired = Timing(
        1, lambda: stats.analyze(table, metric="score", goal="maximize", paired=True, intervals=False, bayes=False)
    )
    print(f"(a) expkit.analysis.stats.analyze, full analysis:         {t_a}   (intervals in (e))")
    print(
        f"    for information (no target): to_dict {t_dict.cpu:.3f} s CPU; paired analysis (Wilcoxon, "
        f"Friedman per dataset) {t_paired.cpu:.3f} s CPU"
    )
    new_parts = pair_parts(table, args.repeat, t_a, t_paired)

    # (b) naive loop on samples as a user would hold them: one array per (dataset, algorithm)
    ok = table[table["status"] == "succeeded"]
    samples = {key: grp["value"].to_numpy() for key, grp in ok.groupby(["dataset", "algorithm"], sort=True)}
    algs = sorted(table["algorithm"].unique())
    dsets = sorted(table["dataset"].unique())
    pairs = [(d, algs[i], algs[j]) for d in dsets for i in range(k) for j in range(i + 1, k)]
    probe = naive_loop(pairs[: min(len(pairs), 2000)], samples)
    if probe.wall / min(len(pairs), 2000) * len(pairs) > NAIVE_BUDGET_S:
        subset = pairs[:: max(1, len(pairs) // 10_000)]
        part = naive_loop(subset, samples)
        scale = len(pairs) / len(subset)
        t_b = Timing.of(part.cpu * scale, part.wall * scale)
        how = f"timed {len(subset)} of {len(pairs)} pairs ({part.wall:.1f} s wall) and extrapolated linearly"
    else:
        t_b = naive_loop(pairs, samples)
        how = f"all {len(pairs)} pairs timed"
    print(f"(b) naive loop, one scipy mannwhitneyu per pair:  {t_b}   ({how})")

    # (c) one vectorised scipy call over all pairs; failed runs filled by the cell median so every slice
    # has the same length, which a single call needs
    cube = np.full((n_ds, k, n_rep), np.nan)
    d_code = pd.Categorical(table["dataset"], categories=dsets).codes
    a_code = pd.Categorical(table["algorithm"], categories=algs).codes
    cube[d_code, a_code, table["replicate"].to_numpy()] = table["value"].to_numpy()
    cube = np.where(np.isnan(cube), np.nanmedian(cube, axis=-1, keepdims=True), cube)
    ia, ib = np.triu_indices(k, 1)
    left, right = cube[:, ia, :], cube[:, ib, :]
    left_s, right_s = np.sort(left, axis=-1), np.sort(right, axis=-1)
    t_raw = Timing(args.repeat, lambda: sps.mannwhitneyu(left, right, axis=-1))
    t_sorted = Timing(args.repeat, lambda: sps.mannwhitneyu(left_s, right_s, axis=-1))
    t_c = t_raw if t_raw.cpu <= t_sorted.cpu else t_sorted
    print(
        f"(c) ONE vectorised scipy mannwhitneyu, all pairs: {t_c}   (arrays {left.shape}; raw "
        f"{t_raw.cpu:.3f} s, sorted within cells {t_sorted.cpu:.3f} s CPU; the faster is the reference)"
    )

    # (d) across-dataset part vs autorank on the same aggregated table
    complete = analysis.aggregated.dropna()

    def expkit_across() -> Any:
        stats._nemenyi_qs.cache_clear()
        return stats.across_datasets(complete, goal="maximize", alpha=0.05)

    t_d = Timing(max(args.repeat, 5), expkit_across)
    try:
        from autorank import autorank
    except ImportError:
        autorank = None
    t_r = None
    if autorank is not None:

        def run_autorank() -> Any:
            with contextlib.redirect_stdout(io.StringIO()):  # autorank prints its forced-mode notice
                return autorank(complete, alpha=0.05, verbose=False, force_mode="nonparametric")

        t_r = Timing(max(args.repeat, 5), run_autorank)
        print(f"(d) across datasets ({len(complete)} datasets):     expkit {t_d}")
        print(
            f"                                         autorank {t_r}   ({t_r.result.omnibus}+"
            f"{t_r.result.posthoc}, CD {t_r.result.cd:.4f}; expkit CD {t_d.result.nemenyi.cd_05:.4f})"
        )
    else:
        print(f"(d) across datasets: expkit {t_d}; autorank is not installed (pip install autorank)")

    across_new = across_parts(complete, max(args.repeat, 3))

    print("ratios (CPU time; wall-clock in brackets) and targets:")
    speedup = t_b.cpu / t_a.cpu
    print(verdict("naive loop / expkit", speedup, ">= 10", speedup >= 10) + f"   [{t_b.wall / t_a.wall:.2f}x]")
    vs_vector = t_a.cpu / t_c.cpu
    print(
        verdict("expkit / one vectorised call", vs_vector, "<= 2", vs_vector <= 2)
        + f"   [{t_a.wall / t_c.wall:.2f}x; vs the raw-array call {t_a.cpu / t_raw.cpu:.2f}x]"
    )
    if t_r is not None:
        ratio = t_d.cpu / t_r.cpu
        print(verdict("expkit across / autorank", ratio, "<= 1", ratio <= 1) + f"   [{t_d.wall / t_r.wall:.2f}x]")
    for name, t in new_parts + across_new:
        print(f"  {name:34s} = {t.cpu:8.3f} s   target <= 2 s: {'MET' if t.cpu <= 2.0 else 'NOT MET'}")


def across_parts(complete: pd.DataFrame, repeat: int) -> list[tuple[str, Timing]]:
    """(f) issue 14's across-dataset parts, each on its own line: the omnibus test on the benchmark's
    aggregated table (its many datasets take the asymptotic path); the exact Friedman distribution
    (dynamic program, cache cleared: k = 4 on 22 datasets, the largest exact case of k = 4); the
    Monte-Carlo Friedman p-value at its largest size (N k = 2000: 100 datasets x 20 algorithms); the
    Skillings-Mack test with 5 % of the cells missing (Monte-Carlo, same size); the whole
    across-dataset block with those missing cells (pairs over the datasets both algorithms have); and
    the Bayesian signed-rank test over datasets (item 5) on the pairs analyze tests."""
    from expkit.analysis.stats import bayes, block_tests

    rng = np.random.default_rng(14)
    values = complete.to_numpy(dtype=float)
    small = values[:100] if len(values) >= 100 else values
    holes = np.where(rng.random(small.shape) < 0.05, np.nan, small)
    exact_table = rng.normal(size=(22, 4))

    def exact() -> Any:
        block_tests._friedman_null.cache_clear()
        return stats.friedman_test(exact_table)

    def monte_carlo() -> Any:
        block_tests._friedman_mc_null.cache_clear()
        return stats.friedman_test(small)

    # the Bayesian signed-rank test over datasets as analyze runs it: the pairs bayes_family picks (with
    # 20 algorithms the best-ranked one's 19 pairs) over all datasets, 10,000 posterior samples each
    algs = [str(c) for c in complete.columns]
    ranks = complete.rank(axis=1, ascending=False).mean().to_numpy()
    bayes_family, _ = bayes.bayes_family(algs, list(ranks), None)
    bayes_label = f"{len(bayes_family)} x {len(values)}"

    def bayes_over_datasets() -> Any:
        return bayes.bayes_pairs(values, algs, bayes_family, goal="maximize", rope=0.01)

    parts = [
        ("omnibus test, this table", Timing(repeat, lambda: stats.friedman_test(values))),
        ("exact Friedman, 22 x 4", Timing(repeat, exact)),
        (f"Monte-Carlo Friedman, {small.shape[0]} x {small.shape[1]}", Timing(repeat, monte_carlo)),
        ("Skillings-Mack, 5 % missing", Timing(repeat, lambda: stats.skillings_mack_test(holes))),
        (
            "across block, 5 % missing",
            Timing(repeat, lambda: stats.across_datasets(pd.DataFrame(holes), goal="maximize")),
        ),
    ]
    parts.append((f"Bayesian signed-rank, {bayes_label}", Timing(repeat, bayes_over_datasets)))
    methods = [parts[0][1].result.method, parts[1][1].result.method, parts[2][1].result.method]
    print(f"(f) issue 14 across-dataset parts (methods: {', '.join(methods)}, {parts[3][1].result.method}):")
    for name, t in parts:
        print(f"    {name:32s} {t}")
    return parts


def pair_parts(table: pd.DataFrame, repeat: int, t_a: Timing, t_paired: Timing) -> list[tuple[str, Timing]]:
    """(e) issue 14's new per-dataset parts, each on its own line: the Hodges-Lehmann shifts with their
    exact intervals and the A12 (Newcombe) intervals of every pair, as the extra time of
    ``analyze(intervals=True)`` over (a); the same for paired runs (Walsh-average shifts, rank-biserial
    intervals); the replicates-needed computation (Noether); the Bayesian signed-rank test per dataset over
    the paired replicates (item 5) on the pairs ``analyze(paired=True)`` tests, as it runs it (with 20
    algorithms the pairs with each dataset's best: 19 x 500, 2,000 posterior samples each)."""
    from expkit.analysis.stats import bayes_local, prepare

    full = Timing(repeat, lambda: stats.analyze(table, metric="score", goal="maximize", paired=False, bayes=False))
    paired = Timing(1, lambda: stats.analyze(table, metric="score", goal="maximize", paired=True, bayes=False))
    power = Timing(repeat, lambda: stats.power_summary(30, paired=False, k=20))
    data = prepare._prepare(table, metric="score", paired=True, algorithms=None, datasets=None, penalty=-np.inf)
    cell = t_paired.result.aggregated.to_numpy(dtype=float)

    def local() -> Any:
        return bayes_local.per_dataset_bayes(data, cell, goal="maximize", rope=0.01, threshold=0.95, notes=[])

    t_local = Timing(repeat, local)
    counts = t_local.result.counts()
    parts = [
        ("intervals, independent runs", Timing.of(full.cpu - t_a.cpu, full.wall - t_a.wall)),
        ("intervals, paired runs", Timing.of(paired.cpu - t_paired.cpu, paired.wall - t_paired.wall)),
        ("power (replicates needed)", power),
        (f"Bayesian per dataset, {counts['tested']} pairs", t_local),
    ]
    print(
        f"(e) issue 14 per-dataset parts: analyze with intervals {full} (independent), {paired.cpu:.3f} s CPU (paired)"
    )
    for name, t in parts:
        print(f"    {name:32s} {t}")
    return parts


if __name__ == "__main__":
    main()

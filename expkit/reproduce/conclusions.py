"""Do the original and the re-run lead to the same statistical conclusions?

:func:`conclusion_check` runs :func:`expkit.analysis.stats.analyze` on both sides, over the algorithms,
datasets and runs compared, and compares the Friedman verdict, the significant per-dataset and
across-dataset pairs, the best average rank and Kendall's tau of the average ranks. A *flip* is a pair
significant in both runs with opposite winners; a pair significant in one run only, a different
Friedman decision or a different best average rank is a *disagreement*.
"""

from __future__ import annotations

import functools
from typing import TypeAlias

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit.analysis.collect import Collected
from expkit.analysis.stats import Analysis, Goal, analyze, check_failures
from expkit.core.fmt import format_number
from expkit.reproduce.comparison import ConclusionCheck, finite_or_none

#: A significant pair: (dataset, a, b); the dataset is "" for a pair across datasets.
PairKey: TypeAlias = tuple[str, str, str]
#: The significant pairs of one run and their winners (None: significant, without a direction).
SignificantPairs: TypeAlias = dict[PairKey, "str | None"]


def conclusion_check(
    original: Collected,
    rerun: Collected,
    *,
    orig_t_all: pd.DataFrame,
    rerun_t_all: pd.DataFrame,
    metric: str,
    goal: str,
    alpha: float,
    algorithms: list[str],
    datasets: list[str],
) -> ConclusionCheck:
    """Compare the conclusions of the two runs' tables (every run, failed ones included), restricted to
    ``algorithms`` and ``datasets``."""
    if len(algorithms) < 2 or not datasets:
        return _nothing_to_compare()
    spec = original.experiment.spec  # its pairing and failure policy hold for both sides
    run = functools.partial(_analyze, metric=metric, goal=goal, paired=spec.paired, alpha=alpha)
    ao, ar = (
        run(t, algorithms=algorithms, datasets=datasets, failures=spec.failures) for t in (orig_t_all, rerun_t_all)
    )
    fo, fpo = _friedman(ao, alpha)
    fr, fpr = _friedman(ar, alpha)
    flips: list[str] = []
    disagreements: list[str] = []
    notes: list[str] = []
    po, pr = _compare_pairs(
        _per_dataset_pairs(ao), _per_dataset_pairs(ar), "per-dataset pair", datasets, flips, disagreements
    )
    xo, xr = _compare_pairs(_across_pairs(ao), _across_pairs(ar), "across datasets", datasets, flips, disagreements)
    if fo is not None and fr is not None and fo != fr:
        disagreements.append(_friedman_disagreement(fo, fpo, fr, fpr))
    ranks_o, ranks_r = ao.across.average_ranks, ar.across.average_ranks
    best_o = _best(algorithms, ranks_o)
    best_r = _best(algorithms, ranks_r)
    if best_o != best_r and best_o and best_r:
        disagreements.append(
            f"best average rank: {', '.join(best_o)} in the original, {', '.join(best_r)} in the re-run"
        )
    tau = _kendall_tau(ranks_o, ranks_r, notes)
    return ConclusionCheck(
        friedman_original=fo,
        friedman_rerun=fr,
        friedman_p_original=fpo,
        friedman_p_rerun=fpr,
        pairs_original=po,
        pairs_rerun=pr,
        across_original=xo,
        across_rerun=xr,
        best_original=best_o,
        best_rerun=best_r,
        kendall_tau=tau,
        flips=tuple(flips),
        disagreements=tuple(disagreements),
        notes=tuple(notes),
    )


def _nothing_to_compare() -> ConclusionCheck:
    return ConclusionCheck(
        friedman_original=None,
        friedman_rerun=None,
        friedman_p_original=None,
        friedman_p_rerun=None,
        pairs_original=(),
        pairs_rerun=(),
        across_original=(),
        across_rerun=(),
        best_original=(),
        best_rerun=(),
        kendall_tau=None,
        flips=(),
        disagreements=(),
        notes=("fewer than two algorithms in common: no conclusions to compare",),
    )


def _analyze(
    table: pd.DataFrame,
    *,
    metric: str,
    goal: str,
    paired: bool,
    alpha: float,
    algorithms: list[str],
    datasets: list[str],
    failures: str | None = None,
) -> Analysis:
    table = table[table["algorithm"].isin(algorithms) & table["dataset"].isin(datasets)]
    orientation: Goal = "maximize" if goal == "maximize" else "minimize"
    return analyze(
        table,
        metric=metric,
        goal=orientation,
        paired=paired,
        alpha=alpha,
        algorithms=algorithms,
        datasets=datasets,
        failures=check_failures(failures or "penalize"),
        intervals=False,  # the conclusions compare decisions, not intervals
    )


def _friedman(an: Analysis, alpha: float) -> tuple[bool | None, float | None]:
    """(significant, p) of the Friedman test across datasets; (None, None) when it was not run."""
    f = an.across.friedman
    if f is None or f.p is None:
        return None, None
    return bool(f.p < alpha), float(f.p)


def _friedman_disagreement(fo: bool, fpo: float | None, fr: bool, fpr: float | None) -> str:
    return (
        f"Friedman test across datasets: {'significant' if fo else 'not significant'} in the "
        f"original (p = {format_number(fpo)}), {'significant' if fr else 'not significant'} in the "
        f"re-run (p = {format_number(fpr)})"
    )


def _per_dataset_pairs(an: Analysis) -> SignificantPairs:
    frame = an.pairwise
    frame = frame[frame["significant"].eq(True)]
    return {
        (str(r.dataset), str(r.a), str(r.b)): (None if r.winner is None or r.winner != r.winner else str(r.winner))
        for r in frame.itertuples()
    }


def _across_pairs(an: Analysis) -> SignificantPairs:
    return {("", p.a, p.b): p.winner for p in an.across.pairs if p.significant}


def _label(key: PairKey, winner: str | None) -> str:
    d, a, b = key
    where = f"{d}: " if d else ""
    if winner is None:
        return f"{where}{a} ≠ {b}"
    loser = b if winner == a else a
    return f"{where}{winner} > {loser}"


def _pair_order(datasets: list[str], key: PairKey) -> tuple[int, PairKey]:
    """Pairs in the datasets' order (pairs across datasets first), then by name."""
    return (datasets.index(key[0]) if key[0] in datasets else -1, key)


def _compare_pairs(
    so: SignificantPairs,
    sr: SignificantPairs,
    what: str,
    datasets: list[str],
    flips: list[str],
    disagreements: list[str],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Record the flips and disagreements between the significant pairs of the original ``so`` and of
    the re-run ``sr``; return both sides' pairs as labels."""
    for key in sorted(set(so) | set(sr), key=lambda k: _pair_order(datasets, k)):
        if key in so and key in sr:
            if so[key] and sr[key] and so[key] != sr[key]:
                flips.append(
                    f"{what}: original {_label(key, so[key])}, re-run {_label(key, sr[key])} "
                    "(both significant, opposite winners)"
                )
        elif key in so:
            disagreements.append(f"{what}: {_label(key, so[key])} is significant in the original only")
        else:
            disagreements.append(f"{what}: {_label(key, sr[key])} is significant in the re-run only")
    return (
        tuple(_label(k, so[k]) for k in sorted(so, key=lambda k: _pair_order(datasets, k))),
        tuple(_label(k, sr[k]) for k in sorted(sr, key=lambda k: _pair_order(datasets, k))),
    )


def _best(algorithms: list[str], ranks: tuple[float, ...] | None) -> tuple[str, ...]:
    if ranks is None:
        return ()
    low = min(ranks)
    return tuple(a for a, r in zip(algorithms, ranks) if abs(r - low) < 1e-12)


def _kendall_tau(
    ranks_o: tuple[float, ...] | None, ranks_r: tuple[float, ...] | None, notes: list[str]
) -> float | None:
    """Kendall's tau-b of the two runs' average ranks (1.0 when they are equal); why not, in ``notes``."""
    if ranks_o is None or ranks_r is None:
        notes.append("no complete dataset on one side: average ranks and Kendall's tau are not compared")
        return None
    if np.allclose(ranks_o, ranks_r, rtol=0, atol=1e-12):
        return 1.0
    with np.errstate(all="ignore"):
        value = sps.kendalltau(ranks_o, ranks_r).statistic
    tau = finite_or_none(value)
    if tau is None:
        notes.append("Kendall's tau is undefined: every algorithm has the same average rank in one run")
    return tau

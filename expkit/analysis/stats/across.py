"""Across datasets (blocks = datasets, cell = mean or median over replicates, only datasets where every
algorithm has a value): average ranks, Friedman, Iman-Davenport, the Nemenyi critical difference, the
pairwise Wilcoxon signed-rank tests over datasets with Holm, and the verdict in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit.analysis.stats.common import _name_list, _opt, _quiet
from expkit.analysis.stats.conventions import Goal, check_alpha, check_goal
from expkit.analysis.stats.formulas import _holm_grouped, _nemenyi_qs, friedman_chi2_from_ranks, iman_davenport
from expkit.analysis.stats.rank_tests import _wilcoxon_batch, minimal_p_friedman, minimal_p_wilcoxon
from expkit.analysis.stats.results import (
    AcrossDatasets,
    AcrossPair,
    FriedmanResult,
    ImanDavenportResult,
    NemenyiResult,
)
from expkit.core.errors import InputError
from expkit.core.fmt import format_p_value


class _OverDatasets(NamedTuple):
    """Pairwise Wilcoxon signed-rank tests over datasets, pair j = algorithms ``a[j]`` < ``b[j]``."""

    a: np.ndarray
    b: np.ndarray
    diffs: np.ndarray  # (pairs, datasets) cell of a - cell of b
    stat: np.ndarray
    p: np.ndarray
    p_holm: np.ndarray
    signed: np.ndarray  # R+ - R- (zero differences cancel); computed for significant pairs only


def across_datasets(cells: pd.DataFrame, *, goal: Goal, alpha: float = 0.05, aggregate: str = "mean") -> AcrossDatasets:
    """The across-dataset block on an already aggregated table (rows = datasets, columns = algorithms,
    NaN = no value): average ranks, Friedman, Iman-Davenport, Nemenyi CD, pairwise Wilcoxon with Holm.
    Rows with a NaN are excluded and listed. ``aggregate`` only labels the result."""
    goal = check_goal(goal)
    alpha = check_alpha(alpha)
    try:
        values = cells.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError(f"the aggregated table must hold numbers only: {err}") from err
    values = np.where(np.isfinite(values), values, np.nan)
    across, _ = _across_datasets(
        values,
        ~np.isnan(values),
        tuple(str(c) for c in cells.columns),
        tuple(str(i) for i in cells.index),
        goal=goal,
        alpha=alpha,
        aggregate=aggregate,
    )
    return across


def _across_datasets(
    cell: np.ndarray,
    has_value: np.ndarray,
    algs: tuple[str, ...],
    dsets: tuple[str, ...],
    *,
    goal: str,
    alpha: float,
    aggregate: str,
) -> tuple[AcrossDatasets, pd.DataFrame]:
    """The block and the rank table (rows = complete datasets, columns = algorithms) from the cell
    values (datasets x algorithms) and which cells have a value."""
    k = len(algs)
    notes: list[str] = []
    complete = np.all(has_value, axis=1) if k else np.zeros(len(dsets), dtype=bool)
    used = tuple(d for d, c in zip(dsets, complete) if c)
    excluded = tuple(d for d, c in zip(dsets, complete) if not c)
    rank_rows, rank_columns = pd.Index(used, name="dataset"), pd.Index(algs, name="algorithm")
    if excluded and k >= 2:
        _note_excluded(has_value, complete, algs, dsets, notes)
    verdict = None
    if k < 2:
        verdict = "one algorithm only: no across-dataset comparison"
    elif not used:
        notes.append("no dataset has valid runs of every algorithm: the across-dataset comparison was skipped")
        verdict = "no complete dataset: no across-dataset comparison"
    if verdict is not None:
        skipped = AcrossDatasets(aggregate, algs, used, excluded, None, None, None, None, (), verdict, tuple(notes))
        return skipped, pd.DataFrame(index=rank_rows, columns=rank_columns, dtype=float)
    values = cell[complete]  # (N, k)
    ranks = _ranks(values, goal, notes)
    avg = ranks.mean(axis=0)
    friedman, idr = _friedman_and_iman_davenport(values, avg, alpha, notes)
    nem = _nemenyi(k, len(used), alpha)
    pairs = _pairs_over_datasets(values, avg, algs, nem, goal=goal, alpha=alpha, notes=notes)
    verdict = _verdict(algs, avg, friedman, idr, nem, pairs, alpha, len(used))
    across = AcrossDatasets(
        aggregate, algs, used, excluded, tuple(float(r) for r in avg), friedman, idr, nem, pairs, verdict, tuple(notes)
    )
    return across, pd.DataFrame(ranks, index=rank_rows, columns=rank_columns)


def _note_excluded(
    has_value: np.ndarray, complete: np.ndarray, algs: tuple[str, ...], dsets: tuple[str, ...], notes: list[str]
) -> None:
    """Which datasets are left out because some algorithm has no value there (the first ten by name)."""
    parts = []
    for i in np.flatnonzero(~complete)[:10]:
        lacking = [a for a, c in zip(algs, has_value[i]) if not c]
        parts.append(f"{dsets[i]} (no valid run of {', '.join(lacking)})")
    n_excluded = int((~complete).sum())
    more = n_excluded - len(parts)
    notes.append(
        f"{n_excluded} dataset(s) excluded from the across-dataset comparison because some algorithm "
        f"has no valid run there: " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    )


def _ranks(values: np.ndarray, goal: str, notes: list[str]) -> np.ndarray:
    """Rank of each algorithm per complete dataset (1 = best, ties averaged), with a note on ties."""
    oriented = values if goal == "maximize" else -values
    ranks = np.asarray(sps.rankdata(-oriented, axis=1))
    n, k = values.shape
    tied_blocks = int(np.sum(np.any(np.diff(np.sort(values, axis=1), axis=1) == 0, axis=1))) if k > 1 else 0
    if tied_blocks:
        notes.append(
            f"{tied_blocks} of {n} complete dataset(s) have tied cell values: tied algorithms get the average "
            "rank and the Friedman statistic is tie-corrected"
        )
    return ranks


def _friedman_and_iman_davenport(
    values: np.ndarray, avg: np.ndarray, alpha: float, notes: list[str]
) -> tuple[FriedmanResult | None, ImanDavenportResult | None]:
    """Friedman (tie-corrected, scipy) and Iman-Davenport over the complete datasets; None with two algorithms."""
    n, k = values.shape
    if k == 2:
        notes.append(
            "two algorithms: the Friedman and Iman-Davenport tests need three or more, so the Wilcoxon "
            "signed-rank test over datasets is the comparison"
        )
    if k < 3:
        return None, None
    chi2_u = friedman_chi2_from_ranks(avg, n)
    if n < 2:
        return (
            FriedmanResult(None, None, chi2_u, k - 1, "one complete dataset: the Friedman test needs two or more"),
            ImanDavenportResult(None, k - 1, 0, None, "one complete dataset: Iman-Davenport needs two or more"),
        )
    with _quiet():
        res = sps.friedmanchisquare(*values.T)
    chi2, fp = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(chi2) and math.isfinite(fp)):
        undefined = "every dataset ties all algorithms: the Friedman statistic is undefined (no difference)"
        friedman = FriedmanResult(None, None, chi2_u, k - 1, undefined)
    else:
        friedman = FriedmanResult(chi2, fp, chi2_u, k - 1, None)
    pmin = minimal_p_friedman(n, k)
    if pmin >= alpha:
        notes.append(
            f"{n} datasets are too few for the Friedman test over {k} algorithms at α={alpha:g}: the "
            f"smallest reachable p-value is {pmin:.3g}"
        )
    if friedman.chi2 is None:
        return friedman, ImanDavenportResult(None, k - 1, (k - 1) * (n - 1), None, friedman.note)
    f_val, df1, df2, f_p = iman_davenport(friedman.chi2, n, k)
    f_note = "every dataset ranks the algorithms identically: F is infinite and p = 0" if math.isinf(f_val) else None
    return friedman, ImanDavenportResult(f_val, df1, df2, f_p, f_note)


def _nemenyi(k: int, n: int, alpha: float) -> NemenyiResult:
    """Nemenyi critical differences at 0.05, 0.10 and ``alpha`` for k algorithms on n datasets."""
    q05, q10, qa = _nemenyi_qs((0.05, 0.10, alpha), k)
    scale = math.sqrt(k * (k + 1) / (6.0 * n))
    return NemenyiResult(k, n, q05, q05 * scale, q10, q10 * scale, alpha, qa, qa * scale)


def _wilcoxon_over_datasets(values: np.ndarray, alpha: float, notes: list[str]) -> _OverDatasets:
    """Wilcoxon signed-rank test of every pair over the complete datasets, Holm across the pairs."""
    n, k = values.shape
    ia, ib = np.triu_indices(k, 1)
    diffs = (values[:, ia] - values[:, ib]).T  # (P, N)
    with _quiet():
        w_stat, w_p, _ = _wilcoxon_batch(diffs)
    w_holm = _holm_grouped(w_p, np.zeros(len(w_p), dtype=np.int64), 1)
    signed = np.zeros(len(w_p))
    sig_rows = np.flatnonzero(np.nan_to_num(w_holm, nan=1.0) < alpha)
    if sig_rows.size:
        abs_ranks = sps.rankdata(np.abs(diffs[sig_rows]), axis=-1)
        signed[sig_rows] = np.sum(np.sign(diffs[sig_rows]) * abs_ranks, axis=-1)
    pmin = minimal_p_wilcoxon(n)
    if pmin >= alpha:
        notes.append(
            f"{n} dataset(s) are too few for the Wilcoxon signed-rank test over datasets at α={alpha:g}: the "
            f"smallest reachable p-value is {pmin:.3g}"
        )
    elif len(ia) > 1 and pmin * len(ia) >= alpha:
        notes.append(
            f"Holm's correction over {len(ia)} pairs needs p < {alpha / len(ia):.3g} for a first rejection, but "
            f"the smallest p-value the Wilcoxon test reaches on {n} datasets is {pmin:.3g}: no pair of "
            "algorithms can be significant over datasets; add datasets"
        )
    return _OverDatasets(ia, ib, diffs, w_stat, w_p, w_holm, signed)


def _pairs_over_datasets(
    values: np.ndarray,
    avg: np.ndarray,
    algs: tuple[str, ...],
    nem: NemenyiResult | None,
    *,
    goal: str,
    alpha: float,
    notes: list[str],
) -> tuple[AcrossPair, ...]:
    """Every pair of algorithms over datasets: Wilcoxon with Holm, the winner, and the Nemenyi decision."""
    w = _wilcoxon_over_datasets(values, alpha, notes)
    sign = 1.0 if goal == "maximize" else -1.0
    pairs: list[AcrossPair] = []
    zero_pairs = 0
    for j, (x, y) in enumerate(zip(w.a, w.b)):
        sig = bool(np.isfinite(w.p_holm[j]) and w.p_holm[j] < alpha)
        direction = sign * w.signed[j]
        winner = (algs[x] if direction > 0 else algs[y] if direction < 0 else None) if sig else None
        pnote = None
        if np.all(w.diffs[j] == 0):
            zero_pairs += 1
            pnote = "equal cell values on every dataset: no difference (p = 1)"
        elif sig and winner is None:
            pnote = "significant, but the signed ranks balance: no direction, no winner"
        nem_sig = bool(nem is not None and abs(avg[x] - avg[y]) > nem.cd_alpha)
        pairs.append(
            AcrossPair(
                algs[x],
                algs[y],
                _opt(w.stat[j]),
                _opt(w.p[j]),
                _opt(w.p_holm[j]),
                sig,
                winner,
                float(avg[x]),
                float(avg[y]),
                nem_sig,
                pnote,
            )
        )
    if zero_pairs:
        notes.append(f"{zero_pairs} pair(s) of algorithms have equal cell values on every complete dataset: p = 1")
    return tuple(pairs)


def _verdict(
    algs: tuple[str, ...],
    avg: np.ndarray,
    friedman: FriedmanResult | None,
    idr: ImanDavenportResult | None,
    nem: NemenyiResult | None,
    pairs: Sequence[AcrossPair],
    alpha: float,
    n: int,
) -> str:
    """The across-dataset conclusion in one sentence: the best average rank, then what the tests allow."""
    best = [algs[i] for i in np.flatnonzero(np.isclose(avg, avg.min(), rtol=0, atol=1e-12))]
    lead = f"best average rank over {n} dataset(s): {' and '.join(best)} ({avg.min():.3f})"
    if len(algs) == 2:
        pair = pairs[0]
        if pair.significant and pair.winner:
            loser = pair.b if pair.winner == pair.a else pair.a
            return (
                f"{lead}; Wilcoxon over datasets: {pair.winner} is significantly better than {loser} "
                f"(p = {format_p_value(pair.p)})"
            )
        ptxt = f"p = {format_p_value(pair.p)}" if pair.p is not None else "not testable"
        return f"{lead}; Wilcoxon over datasets: no significant difference ({ptxt}, α = {alpha:g})"
    if idr is None or idr.p is None:
        return f"{lead}; the omnibus test could not be computed (see notes)"
    if idr.p >= alpha:
        return (
            f"{lead}; no significant difference among the algorithms (Iman-Davenport p = {format_p_value(idr.p)} "
            f"≥ α = {alpha:g}); post-hoc differences are not interpreted"
        )
    top = best[0]
    beaten = [p.b if p.a == top else p.a for p in pairs if top in (p.a, p.b) and p.nemenyi_significant]
    text = f"{lead}; the algorithms differ (Iman-Davenport p = {format_p_value(idr.p)} < α = {alpha:g})"
    if nem is not None:
        if beaten:
            text += f"; by Nemenyi (CD = {nem.cd_alpha:.3f}) {top} is significantly better than {_name_list(beaten)}"
        else:
            text += f"; by Nemenyi (CD = {nem.cd_alpha:.3f}) {top} is not significantly better than any other"
    return text

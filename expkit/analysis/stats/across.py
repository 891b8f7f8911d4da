"""Across datasets (blocks = datasets, cell = mean or median over replicates): average ranks, the omnibus
test that gates every claim (the Friedman test on complete datasets, exact or Monte-Carlo with few of
them; the Skillings-Mack test when some datasets lack an algorithm), Friedman and Iman-Davenport as
scipy computes them, the Nemenyi critical difference (for reference), the pairwise Wilcoxon signed-rank
tests over datasets with Holm (every pair, or the comparisons with a control) that drive the verdict,
and the verdict in one sentence.

Which datasets enter what: a dataset where every algorithm has a value is *complete*; it enters
everything. A dataset where two or more (but not all) algorithms have a value is *incomplete*: it has
no average rank (so it is not in the average ranks, Friedman, Iman-Davenport or Nemenyi), but it enters
the Skillings-Mack test and every pair of algorithms that both have a value there. A dataset with fewer
than two values enters nothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit.analysis.stats.block_tests import (
    friedman_test,
    minimal_p_friedman_exact,
    skillings_mack_test,
    sm_connected,
)
from expkit.analysis.stats.common import _opt, _quiet
from expkit.analysis.stats.conventions import Goal, check_alpha, check_goal
from expkit.analysis.stats.formulas import _holm_grouped, _nemenyi_qs, friedman_chi2_from_ranks, iman_davenport
from expkit.analysis.stats.rank_tests import _wilcoxon_batch, minimal_p_wilcoxon
from expkit.analysis.stats.results import (
    AcrossDatasets,
    AcrossPair,
    BlockTestResult,
    FriedmanResult,
    ImanDavenportResult,
    NemenyiResult,
)
from expkit.analysis.stats.verdict import skipped_verdict, verdict_sentence
from expkit.core.errors import InputError


class _OverDatasets(NamedTuple):
    """Pairwise Wilcoxon signed-rank tests over datasets, pair j = algorithms ``a[j]`` < ``b[j]``, each on
    the datasets where both have a value."""

    a: np.ndarray
    b: np.ndarray
    n: np.ndarray  # datasets used per pair
    better_a: np.ndarray  # datasets where a is better (oriented by the goal)
    better_b: np.ndarray
    all_zero: np.ndarray  # every difference is zero
    stat: np.ndarray
    p: np.ndarray
    diffs: np.ndarray  # (pairs, datasets) cell of a - cell of b, 0 where one has no value
    both: np.ndarray  # (pairs, datasets) both have a value


def across_datasets(
    cells: pd.DataFrame, *, goal: Goal, alpha: float = 0.05, aggregate: str = "mean", control: str | None = None
) -> AcrossDatasets:
    """The across-dataset block on an already aggregated table (rows = datasets, columns = algorithms,
    NaN = no value): average ranks, the omnibus test (Friedman, exact or Monte-Carlo with few datasets;
    Skillings-Mack when a dataset lacks an algorithm), Friedman and Iman-Davenport, Nemenyi CD, pairwise
    Wilcoxon with Holm (every pair, or the k - 1 comparisons with ``control``) and the verdict.
    ``aggregate`` only labels the result."""
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
        control=control,
    )
    return across


def check_control(control: str | None, algorithms: Sequence[str]) -> str | None:
    """``control`` when it names one of ``algorithms`` (or is None); InputError otherwise."""
    if control is None:
        return None
    if str(control) not in algorithms:
        raise InputError(f"control {control!r} is not one of the algorithms: use one of {', '.join(algorithms)}")
    return str(control)


class _Blocks(NamedTuple):
    """Which datasets enter what: complete ones everything, partial ones (two or more values, not all)
    the Skillings-Mack test and the pairs, the others nothing."""

    present: np.ndarray  # values per dataset
    complete: np.ndarray
    partial: np.ndarray
    used: tuple[str, ...]  # complete datasets
    excluded: tuple[str, ...]  # the others
    incomplete: tuple[tuple[str, tuple[str, ...]], ...]  # partial datasets and the algorithms they lack
    can_sm: bool  # the Skillings-Mack test applies


def _blocks(has_value: np.ndarray, algs: tuple[str, ...], dsets: tuple[str, ...]) -> _Blocks:
    k = len(algs)
    present = has_value.sum(axis=1) if k else np.zeros(len(dsets), dtype=np.int64)
    complete = present == k if k else np.zeros(len(dsets), dtype=bool)
    partial = (present >= 2) & ~complete
    incomplete = tuple(
        (dsets[i], tuple(a for a, v in zip(algs, has_value[i]) if not v)) for i in np.flatnonzero(partial)
    )
    can_sm = k >= 3 and bool(partial.any()) and sm_connected(has_value[complete | partial])
    used = tuple(d for d, c in zip(dsets, complete) if c)
    excluded = tuple(d for d, c in zip(dsets, complete) if not c)
    return _Blocks(present, complete, partial, used, excluded, incomplete, can_sm)


def _across_datasets(
    cell: np.ndarray,
    has_value: np.ndarray,
    algs: tuple[str, ...],
    dsets: tuple[str, ...],
    *,
    goal: str,
    alpha: float,
    aggregate: str,
    control: str | None = None,
) -> tuple[AcrossDatasets, pd.DataFrame]:
    """The block and the rank table (rows = complete datasets, columns = algorithms) from the cell
    values (datasets x algorithms) and which cells have a value."""
    control = check_control(control, algs)
    k = len(algs)
    notes: list[str] = []
    b = _blocks(has_value, algs, dsets)
    rank_rows, rank_columns = pd.Index(b.used, name="dataset"), pd.Index(algs, name="algorithm")
    verdict = None
    if k < 2:
        verdict = "one algorithm only: no across-dataset comparison"
    elif not b.used and not b.can_sm:
        verdict = skipped_verdict(algs, has_value)
    if b.excluded and k >= 2:
        _note_excluded(has_value, b.present, algs, dsets, notes, skipped=verdict is not None)
    if verdict is not None:
        if k >= 2:
            notes.append("no dataset has valid runs of every algorithm: the across-dataset comparison was skipped")
        skipped = AcrossDatasets(
            aggregate, algs, b.used, b.excluded, None, None, None, None, (), verdict, tuple(notes),
            None, b.incomplete, control, alpha,
        )  # fmt: skip
        return skipped, pd.DataFrame(index=rank_rows, columns=rank_columns, dtype=float)
    values = cell[b.complete]  # (N, k)
    ranks = _ranks(values, goal, notes) if b.used else np.zeros((0, k))
    avg = ranks.mean(axis=0) if b.used else None
    friedman, idr = _friedman_and_iman_davenport(values, avg, alpha, notes) if avg is not None else (None, None)
    usable = b.complete | b.partial
    omnibus = _omnibus(cell[usable], b.complete[usable], notes) if k >= 3 else None
    nem = _nemenyi(k, len(b.used), alpha) if b.used else None
    pairs = _pairs_over_datasets(
        cell, has_value, avg, algs, nem, omnibus, goal=goal, alpha=alpha, control=control, notes=notes
    )
    average = tuple(float(r) for r in avg) if avg is not None else None
    across = AcrossDatasets(
        aggregate, algs, b.used, b.excluded, average, friedman, idr, nem, pairs, "", tuple(notes),
        omnibus, b.incomplete, control, alpha,
    )  # fmt: skip
    across = replace(across, verdict=verdict_sentence(across))
    return across, pd.DataFrame(ranks, index=rank_rows, columns=rank_columns)


def _note_excluded(
    has_value: np.ndarray,
    present: np.ndarray,
    algs: tuple[str, ...],
    dsets: tuple[str, ...],
    notes: list[str],
    *,
    skipped: bool,
) -> None:
    """Which datasets lack an algorithm (the first ten of each kind) and what was done with them."""
    k = len(algs)

    def listed(rows: np.ndarray) -> str:
        parts = [
            f"{dsets[i]} (no valid run of {', '.join(a for a, c in zip(algs, has_value[i]) if not c)})"
            for i in rows[:10]
        ]
        return "; ".join(parts) + (f"; and {len(rows) - 10} more" if len(rows) > 10 else "")

    partial = np.flatnonzero((present >= 2) & (present < k))
    single = np.flatnonzero(present < 2)
    if skipped:
        rows = np.flatnonzero(present < k)
        notes.append(
            f"{rows.size} dataset(s) excluded from the across-dataset comparison because some algorithm "
            f"has no valid run there: {listed(rows)}"
        )
        return
    if partial.size:
        notes.append(
            f"{partial.size} dataset(s) lack a valid run of some algorithm and are excluded from the average ranks, "
            f"the Friedman test and the Nemenyi critical difference: {listed(partial)}; they enter the "
            "Skillings-Mack test over datasets and the pairs of algorithms that both have a value there"
        )
    if single.size:
        notes.append(
            f"{single.size} dataset(s) excluded from the across-dataset comparison because only one algorithm "
            f"(or none) has a valid run there: {listed(single)}"
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
    """Friedman (tie-corrected, scipy's asymptotic p) and Iman-Davenport over the complete datasets, for
    reference (the omnibus test decides); None with two algorithms."""
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
    pmin = minimal_p_friedman_exact(n, k)
    if pmin >= alpha:
        notes.append(
            f"{n} datasets are too few for the Friedman test over {k} algorithms at α={alpha:g}: the "
            f"smallest reachable p-value is {pmin:.3g} (every dataset ranking the algorithms the same way)"
        )
    if friedman.chi2 is None:
        return friedman, ImanDavenportResult(None, k - 1, (k - 1) * (n - 1), None, friedman.note)
    f_val, df1, df2, f_p = iman_davenport(friedman.chi2, n, k)
    if math.isinf(f_val):
        f_note = (
            "every dataset ranks the algorithms identically: F is infinite and its F-distribution p-value "
            "(0) means nothing; the omnibus test gives the exact probability"
        )
        return friedman, ImanDavenportResult(f_val, df1, df2, None, f_note)
    return friedman, ImanDavenportResult(f_val, df1, df2, f_p, None)


def _omnibus(values: np.ndarray, complete: np.ndarray, notes: list[str]) -> BlockTestResult | None:
    """The omnibus test that gates the pairwise claims: Friedman on the complete datasets, or Skillings-
    Mack on every dataset with two or more values when some lack an algorithm."""
    try:
        if complete.all():
            result = friedman_test(values)
        else:
            result = skillings_mack_test(values)
    except InputError as err:
        notes.append(f"the omnibus test over datasets could not be computed: {err}")
        return None
    return result


def _nemenyi(k: int, n: int, alpha: float) -> NemenyiResult:
    """Nemenyi critical differences at 0.05, 0.10 and ``alpha`` for k algorithms on n datasets."""
    q05, q10, qa = _nemenyi_qs((0.05, 0.10, alpha), k)
    scale = math.sqrt(k * (k + 1) / (6.0 * n))
    return NemenyiResult(k, n, q05, q05 * scale, q10, q10 * scale, alpha, qa, qa * scale)


def _wilcoxon_over_datasets(cell: np.ndarray, has_value: np.ndarray, goal: str) -> _OverDatasets:
    """Wilcoxon signed-rank test of every pair over the datasets where both have a value (pairs with
    the same number of such datasets share one batched call)."""
    k = cell.shape[1]
    ia, ib = np.triu_indices(k, 1)
    both = has_value[:, ia] & has_value[:, ib]  # (D, P)
    n = both.sum(axis=0)
    sign = 1.0 if goal == "maximize" else -1.0
    diffs_all = np.where(both, cell[:, ia] - cell[:, ib], 0.0).T  # (P, D)
    stat, p = np.full(len(ia), np.nan), np.full(len(ia), np.nan)
    for size in np.unique(n[n > 0]):
        rows = np.flatnonzero(n == size)
        d = diffs_all[rows][both.T[rows]].reshape(rows.size, int(size))
        with _quiet():
            w_stat, w_p, _ = _wilcoxon_batch(d)
        stat[rows], p[rows] = w_stat, w_p
    oriented = sign * diffs_all
    return _OverDatasets(
        ia,
        ib,
        n,
        np.sum((oriented > 0) & both.T, axis=1),
        np.sum((oriented < 0) & both.T, axis=1),
        np.all((diffs_all == 0) | ~both.T, axis=1) & (n > 0),
        stat,
        p,
        diffs_all,
        both.T,
    )


def _signed_ranks(w: _OverDatasets, rows: np.ndarray) -> np.ndarray:
    """R+ - R- of a - b for the pairs ``rows`` (zero differences cancel), over their shared datasets;
    computed only for the pairs that need a direction."""
    signed = np.zeros(len(w.a))
    for size in np.unique(w.n[rows]):
        sel = rows[w.n[rows] == size]
        d = w.diffs[sel][w.both[sel]].reshape(sel.size, int(size))
        signed[sel] = np.sum(np.sign(d) * sps.rankdata(np.abs(d), axis=-1), axis=-1)
    return signed


def _family(w: _OverDatasets, algs: tuple[str, ...], control: str | None) -> np.ndarray:
    """Which pairs form the Holm family: every pair, or those with the control."""
    if control is None:
        return np.ones(len(w.a), dtype=bool)
    c = algs.index(control)
    in_family: np.ndarray = (w.a == c) | (w.b == c)
    return in_family


def _too_few_notes(w: _OverDatasets, family: np.ndarray, alpha: float, notes: list[str]) -> None:
    """Notes when the datasets are too few for the Wilcoxon test over datasets, alone or with Holm."""
    n_max = int(w.n[family].max()) if family.any() else 0
    pmin = minimal_p_wilcoxon(n_max)
    m = int(family.sum())
    if pmin >= alpha:
        notes.append(
            f"{n_max} dataset(s) are too few for the Wilcoxon signed-rank test over datasets at α={alpha:g}: the "
            f"smallest reachable p-value is {pmin:.3g}"
        )
    elif m > 1 and pmin * m >= alpha:
        notes.append(
            f"Holm's correction over {m} pairs needs p < {alpha / m:.3g} for a first rejection, but "
            f"the smallest p-value the Wilcoxon test reaches on {n_max} datasets is {pmin:.3g}: no pair of "
            "algorithms can be significant over datasets; add datasets"
        )


def _pairs_over_datasets(
    cell: np.ndarray,
    has_value: np.ndarray,
    avg: np.ndarray | None,
    algs: tuple[str, ...],
    nem: NemenyiResult | None,
    omnibus: BlockTestResult | None,
    *,
    goal: str,
    alpha: float,
    control: str | None,
    notes: list[str],
) -> tuple[AcrossPair, ...]:
    """Every pair of algorithms over datasets: Wilcoxon with Holm over the family, the winner (when the
    omnibus test rejects, with three or more algorithms), and the Nemenyi decision for reference."""
    w = _wilcoxon_over_datasets(cell, has_value, goal)
    family = _family(w, algs, control) & (w.n > 0)
    p_family = np.where(family, w.p, np.nan)
    p_holm = _holm_grouped(p_family, np.zeros(len(w.p), dtype=np.int64), 1)
    _too_few_notes(w, family, alpha, notes)
    gate = len(algs) < 3 or (omnibus is not None and omnibus.p < alpha)
    sign = 1.0 if goal == "maximize" else -1.0
    signed = _signed_ranks(w, np.flatnonzero(np.nan_to_num(p_holm, nan=1.0) < alpha))
    pairs: list[AcrossPair] = []
    for j, (x, y) in enumerate(zip(w.a, w.b)):
        below = bool(np.isfinite(p_holm[j]) and p_holm[j] < alpha)
        direction = sign * signed[j]
        sig = bool(below and gate and direction != 0)
        winner = (algs[x] if direction > 0 else algs[y]) if sig else None
        pnote = _pair_note(w, j, family[j], below, gate, direction, control)
        nem_sig = bool(nem is not None and avg is not None and abs(avg[x] - avg[y]) > nem.cd_alpha)
        pairs.append(
            AcrossPair(
                algs[x],
                algs[y],
                _opt(w.stat[j]),
                _opt(w.p[j]),
                _opt(p_holm[j]),
                sig,
                winner,
                float(avg[x]) if avg is not None else math.nan,
                float(avg[y]) if avg is not None else math.nan,
                nem_sig,
                pnote,
                int(w.n[j]),
                int(w.better_a[j]),
                int(w.better_b[j]),
                bool(family[j]),
            )
        )
    zero_pairs = int(np.sum(w.all_zero))
    if zero_pairs:
        notes.append(f"{zero_pairs} pair(s) of algorithms have equal cell values on every dataset they share: p = 1")
    return tuple(pairs)


def _pair_note(
    w: _OverDatasets, j: int, in_family: bool, below: bool, gate: bool, direction: float, control: str | None
) -> str | None:
    """Why a pair over datasets has no value, no claim or no direction (None when nothing to say)."""
    if w.n[j] == 0:
        return "no dataset with a value of both: not testable"
    if w.all_zero[j]:
        return "equal cell values on every dataset: no difference (p = 1)"
    if not in_family:
        return f"not in the Holm family: the comparisons are with the control {control}"
    if below and not gate:
        return "p_holm < alpha, but the omnibus test over datasets did not reject: no claim"
    if below and direction == 0:
        return "significant, but the signed ranks balance: no direction, no winner"
    return None

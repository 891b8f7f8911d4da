"""The terminal summary: who wins where, which differences are significant, the across-dataset verdict,
then the notes. :meth:`~expkit.analysis.stats.analysis.Analysis.summary_lines` puts the parts together."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _best_names, _name_list
from expkit.analysis.stats.results import AcrossDatasets, OmnibusResult
from expkit.core.fmt import format_number, format_p_value

#: How many datasets the terminal summary lists one by one.
SUMMARY_MAX_DATASETS = 20


class _PairColumns(NamedTuple):
    """The pairwise table's columns the summary reads, as arrays (row = dataset x pair)."""

    a: np.ndarray
    b: np.ndarray
    significant: np.ndarray
    winner: np.ndarray
    p_holm: np.ndarray
    a12: np.ndarray
    rank_biserial: np.ndarray
    magnitude: np.ndarray


def _headline(metric: str, goal: str, paired: bool, algorithms: Sequence[str], datasets: Sequence[str]) -> str:
    """What was compared: the metric and its direction, how many algorithms and datasets, the design."""
    direction = "higher is better" if goal == "maximize" else "lower is better"
    design = "paired by seed" if paired else "independent runs"
    return f"Metric {metric!r} ({direction}): {len(algorithms)} algorithm(s) x {len(datasets)} dataset(s), {design}."


def _method_line(paired: bool, alpha: float) -> str:
    """Which pairwise test and correction the per-dataset lines report."""
    test = "Wilcoxon signed-rank" if paired else "Mann-Whitney U"
    effect = "matched-pairs rank-biserial r (direction from R+ vs R-)" if paired else "Vargha-Delaney A12"
    return (
        f"Per dataset: {test} for every pair, Holm-corrected within the dataset, α = {alpha:g}; effect size {effect}."
    )


def _dataset_lines(
    pairwise: pd.DataFrame,
    aggregated: pd.DataFrame,
    omnibus: Sequence[OmnibusResult],
    *,
    algorithms: tuple[str, ...],
    datasets: tuple[str, ...],
    aggregate: str,
    goal: str,
) -> list[str]:
    """One line per dataset (the first :data:`SUMMARY_MAX_DATASETS`): the best algorithm and whom it beats."""
    n_p = len(algorithms) * (len(algorithms) - 1) // 2
    columns = _PairColumns(*(pairwise[name].to_numpy() for name in _PairColumns._fields))
    lines = []
    for i, d in enumerate(datasets[:SUMMARY_MAX_DATASETS]):
        cells = aggregated.loc[d].to_numpy(dtype=float)
        best = _best_names(cells, algorithms, goal)
        if not best:
            lines.append(f"  {d}: no valid runs")
            continue
        text = _best_text(d, best, cells, range(i * n_p, (i + 1) * n_p), columns, algorithms, aggregate)
        omni = omnibus[i]
        if omni.test and omni.p is not None:
            label = "Friedman" if omni.test == "friedmanchisquare" else "Kruskal-Wallis"
            text += f"; {label} p={format_p_value(omni.p)}"
        lines.append(text)
    if len(datasets) > SUMMARY_MAX_DATASETS:
        lines.append(f"  ... {len(datasets) - SUMMARY_MAX_DATASETS} more dataset(s) in stats.json")
    return lines


def _best_text(
    dataset: str,
    best: tuple[str, ...],
    cells: np.ndarray,
    rows: range,
    columns: _PairColumns,
    algorithms: tuple[str, ...],
    aggregate: str,
) -> str:
    """The best algorithm on ``dataset`` (cell values ``cells``), and which others it is significantly
    better than or cannot be told apart from (pairwise rows ``rows``)."""
    position = {name: j for j, name in enumerate(algorithms)}
    top = best[0]
    beaten, unsure, lost = [], [], []
    for r in rows:
        if top not in (columns.a[r], columns.b[r]):
            continue
        other = columns.b[r] if columns.a[r] == top else columns.a[r]
        if np.isnan(cells[position[other]]):
            continue
        if columns.significant[r] and columns.winner[r] == top:
            beaten.append(other)
        elif columns.significant[r] and columns.winner[r] == other:
            lost.append(other)  # paired runs: the signed ranks can favour another than the best cell value
        else:
            if np.isnan(columns.rank_biserial[r]):
                a12_top = columns.a12[r] if columns.a[r] == top else 1 - columns.a12[r]
                effect = f"A12={format_number(a12_top, 2)}"
            else:
                rb_top = columns.rank_biserial[r] if columns.a[r] == top else -columns.rank_biserial[r]
                effect = f"r={format_number(rb_top, 2)}"
            unsure.append(
                f"{other} (p_holm={format_p_value(columns.p_holm[r])}, {effect} {columns.magnitude[r] or ''})".rstrip()
            )
    others = int(np.sum(~np.isnan(cells))) - 1
    tie_text = f" (tied with {', '.join(best[1:])})" if len(best) > 1 else ""
    text = f"  {dataset}: best {top}{tie_text} ({aggregate} {format_number(float(cells[position[top]]), 4)})"
    if others <= 0:
        return text + "; no other algorithm has runs here"
    if lost:
        text += f"; yet the pairwise test finds {', '.join(lost[:4])} significantly better"
        text += f" and {len(lost) - 4} more" if len(lost) > 4 else ""
    if len(beaten) == others:
        return text + f"; significantly better than all {others} other(s)"
    if beaten:
        text += f"; significantly better than {len(beaten)} of {others}"
        text += "; not separable from " if unsure else ""
    elif unsure:
        text += "; not significantly better than any other: "
    return text + ", ".join(unsure[:4]) + (f" and {len(unsure) - 4} more" if len(unsure) > 4 else "")


def _win_tie_loss_lines(wtl: pd.DataFrame, algorithms: tuple[str, ...]) -> list[str]:
    """Significant pairwise wins/ties/losses of each algorithm, summed over datasets and opponents."""
    if not len(wtl):
        return []
    totals = wtl.groupby("algorithm", sort=False)[["wins", "ties", "losses"]].sum()
    counts = totals.loc[list(algorithms)].to_numpy(dtype=np.int64)
    parts = [f"{a} {w}/{t}/{lo}" for a, (w, t, lo) in zip(algorithms, counts.tolist())]
    return ["Significant pairwise wins/ties/losses summed over datasets and opponents: " + ", ".join(parts)]


def _across_lines(ac: AcrossDatasets) -> list[str]:
    """The across-dataset block: average ranks, the omnibus test, Friedman and Iman-Davenport, the
    Wilcoxon-Holm pairs (primary), Nemenyi (reference), and the verdict sentence."""
    n = len(ac.datasets)
    lines = [
        f"Across datasets ({n} complete dataset(s), cell = {ac.aggregate} over replicates"
        + (f", {len(ac.incomplete)} incomplete" if ac.incomplete and ac.pairs else "")
        + (f", {len(ac.excluded) - len(ac.incomplete)} excluded" if len(ac.excluded) > len(ac.incomplete) else "")
        + "):"
    ]
    if not ac.pairs:
        lines.append(f"  {ac.verdict}")
        return lines
    if ac.average_ranks is not None:
        order = np.argsort(np.asarray(ac.average_ranks), kind="stable")
        lines.append(
            "  average ranks (1 = best): " + ", ".join(f"{ac.algorithms[i]} {ac.average_ranks[i]:.3f}" for i in order)
        )
    if ac.omnibus is not None:
        o = ac.omnibus
        name = "Skillings-Mack" if o.test == "skillings_mack" else "Friedman"
        stat = f"{o.statistic:.3f}" if o.statistic is not None else "undefined"
        lines.append(f"  omnibus: {name} {stat} over {o.n_blocks} datasets, {_p_text(o.p)} ({o.note})")
    lines += _friedman_lines(ac)
    lines += _pair_lines(ac)
    lines.append(f"  Verdict: {ac.verdict}")
    return lines


def _p_text(p: float | None) -> str:
    """'p = 0.0123' or, for an underflow, 'p < 1e-300' (never 'p = 0')."""
    return "p < 1e-300" if p is not None and float(p) == 0.0 else f"p = {format_p_value(p)}"


def _friedman_lines(ac: AcrossDatasets) -> list[str]:
    """scipy's Friedman (asymptotic) and Iman-Davenport over the complete datasets, for reference."""
    if ac.friedman is None:
        return []
    f = ac.friedman
    if f.chi2 is not None:
        text = (
            f"  for reference, over the complete datasets: Friedman χ² = {f.chi2:.3f} (tie-corrected; "
            f"{f.chi2_uncorrected:.3f} uncorrected), asymptotic {_p_text(f.p)}"
        )
    else:
        text = f"  Friedman: not computed ({f.note})"
    d = ac.iman_davenport
    if d is not None and d.f is not None:
        ftxt = "∞" if math.isinf(d.f) else f"{d.f:.3f}"
        ptxt = _p_text(d.p) if d.p is not None else "p not meaningful"
        text += f"; Iman-Davenport F({d.df1}, {d.df2}) = {ftxt}, {ptxt}"
    return [text]


def _pair_lines(ac: AcrossDatasets) -> list[str]:
    """The Wilcoxon-Holm pairs (the primary procedure) and the Nemenyi critical difference (reference)."""
    lines = []
    family = sum(p.in_family for p in ac.pairs)
    label = "Wilcoxon signed-rank over datasets" + (
        f" (Holm over {family} comparisons with {ac.control})" if ac.control else " (Holm)" if family > 1 else ""
    )
    sig_pairs = [p for p in ac.pairs if p.significant]
    if sig_pairs:
        shown = [
            f"{p.winner or p.a} > {(p.b if p.winner == p.a else p.a) if p.winner else p.b} "
            f"(p_holm={format_p_value(p.p_holm)})"
            for p in sig_pairs[:10]
        ]
        more = f" and {len(sig_pairs) - 10} more" if len(sig_pairs) > 10 else ""
        lines.append(f"  {label}, the primary procedure: " + ", ".join(shown) + more)
    else:
        lines.append(f"  {label}, the primary procedure: no significant difference claimed")
    if ac.nemenyi is not None and len(ac.algorithms) > 2:
        nm = ac.nemenyi
        text = f"  Nemenyi critical difference, for reference only: {nm.cd_05:.3f} (α=0.05), {nm.cd_10:.3f} (α=0.10)"
        if nm.alpha not in (0.05, 0.10):
            text += f", {nm.cd_alpha:.3f} (α={nm.alpha:g})"
        nem_pairs = [f"{p.a} vs {p.b}" for p in ac.pairs if p.nemenyi_significant]
        text += "; rank differences above CD: " + (_name_list(nem_pairs, 10) if nem_pairs else "none")
        lines.append(text)
    return lines


def _notes_block(notes: Sequence[str]) -> list[str]:
    """The notes as a bulleted block (nothing when there are none)."""
    if not notes:
        return []
    return ["Notes:"] + [f"  - {n}" for n in notes]

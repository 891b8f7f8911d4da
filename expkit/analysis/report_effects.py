"""The report's view of the per-dataset effects: the significant pairs with their effect sizes, shifts
and confidence intervals, the success-rate comparisons, the per-cell comparison with the best algorithm
for ``summary.csv`` and the optional intervals of ``table.tex``. :mod:`expkit.analysis.report` writes
them."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.stats import Analysis
from expkit.analysis.stats.bayes_local import LocalBayes
from expkit.core.fmt import format_number

NO_VALUE = "–"


def _num(value: Any, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return NO_VALUE
    return format_number(v, digits, missing=NO_VALUE) if math.isfinite(v) else NO_VALUE


def _signed(value: Any) -> str:
    """A number with its sign, '+0.12' or '-0.12' (a shift says which way)."""
    text = _num(value)
    return text if text == NO_VALUE or text.startswith("-") else "+" + text


def interval_text(low: Any, high: Any, *, signed: bool = False) -> str:
    """'[low, high]', or '' when either limit is missing."""
    fmt = _signed if signed else _num
    lo, hi = fmt(low), fmt(high)
    return "" if NO_VALUE in (lo, hi) else f"[{lo}, {hi}]"


def effect_label(analysis: Analysis) -> str:
    """The name of the design's effect size as the report writes it."""
    return "rank-biserial r" if analysis.paired else "A12"


def significant_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """The significant pairwise differences, winner first: its effect size (A12 of the winner, or the
    rank-biserial correlation from its side) with the interval, and the Hodges-Lehmann shift winner -
    loser in the metric's units with its interval (signed: negative when smaller is better)."""
    pairs = analysis.pairwise
    local = analysis.bayes_local
    rows = []
    significant = pairs["significant"].to_numpy(dtype=bool)
    for row, r in zip(np.flatnonzero(significant), pairs[significant].itertuples(index=False)):
        if r.winner is None or pd.isna(r.winner):
            continue
        first = r.winner == r.a
        if analysis.paired:
            eff, lo, hi = (r.rank_biserial, r.rank_biserial_low, r.rank_biserial_high)
            if not first:
                eff, lo, hi = -eff, -hi, -lo
        else:
            eff, lo, hi = r.a12, r.a12_low, r.a12_high
            if not first:
                eff, lo, hi = 1 - eff, 1 - hi, 1 - lo
        shift, s_lo, s_hi = r.shift_hl, r.shift_low, r.shift_high
        if not first:
            shift, s_lo, s_hi = -shift, -s_hi, -s_lo
        rows.append(
            {
                "dataset": r.dataset,
                "winner": r.winner,
                "loser": r.b if first else r.a,
                "p_holm": _num(r.p_holm),
                "effect": _num(eff, 2),
                "effect_ci": interval_text(lo, hi),
                "magnitude": r.magnitude,
                "shift": _signed(shift),
                "shift_ci": interval_text(s_lo, s_hi, signed=True),
                "shift_confidence": _num(100 * r.shift_confidence, 3) if pd.notna(r.shift_confidence) else NO_VALUE,
                "bayes": _bayes_text(local, int(row), first),
            }
        )
    return rows


def _bayes_text(local: LocalBayes | None, row: int, first: bool) -> str:
    """The per-dataset Bayesian signed-rank probabilities of a pairwise row from its winner's side,
    'P(better) / P(equivalent) / P(worse), decision', or '–' when the pair was not tested."""
    if local is None or local.result.decision[row] is None:
        return NO_VALUE
    res = local.result
    better, worse = (res.p_a[row], res.p_b[row]) if first else (res.p_b[row], res.p_a[row])
    return f"{better:.3f} / {res.p_rope[row]:.3f} / {worse:.3f}, {local.decision_text(row)}"


def bayes_head(analysis: Analysis) -> str:
    """The report's sentence on the per-dataset Bayesian signed-rank test ('' when it did not run)."""
    local = analysis.bayes_local
    if local is None or not local.counts()["tested"]:
        return ""
    c = local.counts()
    return (
        "Bayesian signed-rank test per dataset over the paired replicates (Benavoli et al. 2017; "
        f"{local.head()}): {c['decided_better']} of {c['tested']} tested pair(s) decided for a side, "
        f"{c['equivalent']} equivalent, {c['undecided']} undecided (per pair in stats.json and, against each "
        "dataset's best, in summary.csv). The table of significant differences shows P(better) / "
        "P(equivalent) / P(worse) from the better algorithm's side and the decision; – where the pair was "
        "not tested."
    )


#: The per-dataset Bayesian columns ``summary.csv`` gets in paired designs (from the algorithm's side).
BAYES_SUMMARY_COLUMNS = ("bayes_p_better", "bayes_p_equivalent", "bayes_p_best_better", "bayes_decision")


def _bayes_versus_best(analysis: Analysis, versus: pd.DataFrame) -> pd.DataFrame:
    """Per row of :meth:`Analysis.versus_best`: the per-dataset Bayesian signed-rank test of the algorithm
    against the dataset's best, read from the algorithm's side (NaN / empty when not tested)."""
    local = analysis.bayes_local
    pairs = analysis.pairwise
    where = {(d, a, b): i for i, (d, a, b) in enumerate(zip(pairs["dataset"], pairs["a"], pairs["b"]))}
    columns: dict[str, list[Any]] = {name: [] for name in BAYES_SUMMARY_COLUMNS}
    for alg, ds, best in zip(versus["algorithm"], versus["dataset"], versus["vs_best"]):
        row = where.get((ds, alg, best), where.get((ds, best, alg)))
        if local is None or row is None or local.result.decision[row] is None:
            values: tuple[Any, ...] = (np.nan, np.nan, np.nan, None)
        else:
            res, mine = local.result, (ds, alg, best) in where
            better, worse = (res.p_a[row], res.p_b[row]) if mine else (res.p_b[row], res.p_a[row])
            values = (float(better), float(res.p_rope[row]), float(worse), local.decision_text(row))
        for name, value in zip(BAYES_SUMMARY_COLUMNS, values):
            columns[name].append(value)
    frame: pd.DataFrame = pd.DataFrame(columns, columns=list(BAYES_SUMMARY_COLUMNS))
    return frame


def success_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """Pairs whose success rates differ significantly (Fisher's exact test, Holm per dataset)."""
    rates = analysis.success_rates
    if not len(rates):
        return []
    rows = []
    for r in rates[rates["significant"].to_numpy(dtype=bool)].itertuples(index=False):
        rows.append(
            {
                "dataset": r.dataset,
                "a": r.a,
                "b": r.b,
                "failed_a": f"{r.failed_a}/{r.failed_a + r.succeeded_a}",
                "failed_b": f"{r.failed_b}/{r.failed_b + r.succeeded_b}",
                "p_holm": _num(r.p_holm),
                "more_reliable": r.more_reliable,
            }
        )
    return rows


def failure_counts(analysis: Analysis) -> int:
    """How many failed runs the success-rate comparison saw (0: no section in the report)."""
    rates = analysis.success_rates
    if not len(rates):
        return 0
    per_cell = pd.concat(
        [
            rates[["dataset", "a", "failed_a"]].set_axis(["dataset", "algorithm", "failed"], axis=1),
            rates[["dataset", "b", "failed_b"]].set_axis(["dataset", "algorithm", "failed"], axis=1),
        ]
    ).drop_duplicates(["dataset", "algorithm"])
    return int(per_cell["failed"].sum())


def summary_frame(analysis: Analysis) -> pd.DataFrame:
    """``summary.csv``: the descriptives of every algorithm x dataset, then its comparison with the best
    algorithm of the dataset (effect size and Hodges-Lehmann shift with their intervals, Holm's p; in
    paired designs also the per-dataset Bayesian signed-rank test, :data:`BAYES_SUMMARY_COLUMNS`)."""
    desc = analysis.descriptives.reset_index(drop=True)
    full = analysis.versus_best().reset_index(drop=True)
    parts = [desc, full.drop(columns=["algorithm", "dataset"])]
    if analysis.bayes_local is not None:
        parts.append(_bayes_versus_best(analysis, full))
    frame: pd.DataFrame = pd.concat(parts, axis=1)
    return frame


def latex_interval(versus: pd.DataFrame, algorithm: str, dataset: str) -> str:
    """The Hodges-Lehmann interval of ``algorithm`` - best on ``dataset``, '[lo, hi]' with signs and
    powers of ten in LaTeX, for a second line of a table.tex cell ('' for the best itself or when there
    is none)."""
    row = versus[(versus["algorithm"] == algorithm) & (versus["dataset"] == dataset)]
    if not len(row):
        return ""
    text = interval_text(row["shift_low"].iloc[0], row["shift_high"].iloc[0], signed=True)
    return re.sub(r"([+-]?[0-9.]+)e([+-][0-9]+)", lambda m: f"${m[1]}\\times10^{{{int(m[2])}}}$", text)

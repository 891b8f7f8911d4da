"""The report's view of the per-dataset effects: the significant pairs with their effect sizes, shifts
and confidence intervals, the success-rate comparisons, the per-cell comparison with the best algorithm
for ``summary.csv`` and the optional intervals of ``table.tex``. :mod:`expkit.analysis.report` writes
them."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from expkit.analysis.stats import Analysis
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
    rows = []
    for r in pairs[pairs["significant"].to_numpy(dtype=bool)].itertuples(index=False):
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
            }
        )
    return rows


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
    algorithm of the dataset (effect size and Hodges-Lehmann shift with their intervals, Holm's p)."""
    desc = analysis.descriptives.reset_index(drop=True)
    versus = analysis.versus_best().drop(columns=["algorithm", "dataset"]).reset_index(drop=True)
    frame: pd.DataFrame = pd.concat([desc, versus], axis=1)
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

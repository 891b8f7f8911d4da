"""Every algorithm against the best one of its dataset: the effect size and the Hodges-Lehmann shift of
the pair, with their intervals, read from the algorithm's side (for summary.csv and table.tex)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _best_names

#: Columns of :meth:`~expkit.analysis.stats.analysis.Analysis.versus_best`.
VERSUS_COLUMNS = (
    "algorithm",
    "dataset",
    "vs_best",
    "effect",
    "effect_vs_best",
    "effect_low",
    "effect_high",
    "shift_vs_best",
    "shift_low",
    "shift_high",
    "p_holm_vs_best",
)


def _versus_best(
    pairwise: pd.DataFrame,
    aggregated: pd.DataFrame,
    *,
    algorithms: tuple[str, ...],
    datasets: tuple[str, ...],
    goal: str,
    paired: bool,
) -> pd.DataFrame:
    """One row per algorithm x dataset (algorithm-major, as the descriptives): the best algorithm of the
    dataset (the first one on a tie), and the pair's effect size (A12 of the algorithm vs the best, or
    the rank-biserial correlation when paired; oriented by the goal, so below 0.5 / 0 means worse), the
    shift algorithm - best in the metric's units and Holm's p. Empty for the best itself."""
    name = "rank_biserial" if paired else "a12"
    lookup: dict[tuple[str, str, str], Any] = {
        (str(r.dataset), str(r.a), str(r.b)): r for r in pairwise.itertuples(index=False)
    }
    rows = []
    for alg in algorithms:
        for ds in datasets:
            best = _best_names(aggregated.loc[ds].to_numpy(dtype=float), algorithms, goal)
            row: dict[str, object] = {"algorithm": alg, "dataset": ds, "vs_best": best[0] if best else None}
            row.update(_side(lookup, ds, alg, best[0], name) if best and best[0] != alg else _empty())
            rows.append(row)
    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(VERSUS_COLUMNS))
    return frame


def _empty() -> dict[str, object]:
    return {
        "effect": None,
        "effect_vs_best": np.nan,
        "effect_low": np.nan,
        "effect_high": np.nan,
        "shift_vs_best": np.nan,
        "shift_low": np.nan,
        "shift_high": np.nan,
        "p_holm_vs_best": np.nan,
    }


def _side(lookup: dict[tuple[str, str, str], Any], ds: str, alg: str, best: str, name: str) -> dict[str, object]:
    """The pair (alg, best) read from alg's side: effect, interval and shift flipped when alg is b."""
    first = (ds, alg, best) in lookup
    r = lookup.get((ds, alg, best)) or lookup.get((ds, best, alg))
    if r is None:
        return _empty()
    value, low, high = (float(getattr(r, f)) for f in (name, f"{name}_low", f"{name}_high"))
    shift, s_low, s_high = float(r.shift_hl), float(r.shift_low), float(r.shift_high)
    if not first:
        if name == "a12":
            value, low, high = 1.0 - value, 1.0 - high, 1.0 - low
        else:
            value, low, high = -value, -high, -low
        shift, s_low, s_high = -shift, -s_high, -s_low
    return {
        "effect": name,
        "effect_vs_best": value,
        "effect_low": low,
        "effect_high": high,
        "shift_vs_best": shift,
        "shift_low": s_low,
        "shift_high": s_high,
        "p_holm_vs_best": float(r.p_holm),
    }

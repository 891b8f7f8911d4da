"""The win/tie/loss overview: a heat map of pairwise counts, row algorithm against column opponent."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm
from matplotlib.figure import Figure

from expkit.analysis.plots.base import (
    OKABE_ITO,
    _check_formats,
    _finish,
    _require_columns,
    _save,
    _select,
    _shorten,
    _style,
)
from expkit.core.errors import InputError


def plot_rank_overview(
    wtl: pd.DataFrame,
    *,
    out_stem: Path,
    algorithms: Sequence[str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Heat map of pairwise win/tie/loss counts: row algorithm vs column opponent.

    ``wtl`` has columns ``algorithm, opponent, wins, ties, losses`` (counts over datasets of
    significant per-dataset decisions, from the row algorithm's point of view). Each cell reads
    ``w/t/l`` and is coloured by wins - losses (blue: row better, vermillion: row worse). Pairs
    absent from ``wtl`` are grey. ``algorithms`` picks and orders rows and columns. Writes
    ``<out_stem>.<fmt>``.
    """
    fmts = _check_formats(formats)
    df = _require_columns(wtl, ("algorithm", "opponent", "wins", "ties", "losses"), "the win/tie/loss table")
    if df.empty:
        raise InputError("the win/tie/loss table is empty; it needs at least one algorithm pair")
    algs, diff, text = _wtl_matrix(df, algorithms)
    out_stem = Path(out_stem)
    with _style():
        fig = _draw_wtl(algs, diff, text)
        written = _save(fig, out_stem, fmts)
        _finish(fig)
    return written


def _wtl_matrix(df: pd.DataFrame, algorithms: Sequence[str] | None) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """The algorithms (rows and columns), wins - losses per cell (NaN = no pair) and the ``w/t/l`` texts."""
    counts = df[["wins", "ties", "losses"]].apply(pd.to_numeric, errors="coerce")
    arr = counts.to_numpy(dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise InputError("wins, ties and losses must be non-negative whole numbers")
    keys = list(zip(df["algorithm"].astype(str), df["opponent"].astype(str)))
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise InputError(f"the win/tie/loss table lists the pair {dup[0]!r} vs {dup[1]!r} more than once")
    algs = _select(list(df["algorithm"].astype(str)) + list(df["opponent"].astype(str)), algorithms)
    if len(algs) < 2:
        raise InputError("the win/tie/loss overview needs at least 2 algorithms")
    pos = {a: i for i, a in enumerate(algs)}
    k = len(algs)
    diff = np.full((k, k), np.nan)
    text = [["" for _ in range(k)] for _ in range(k)]
    for (a, o), (w, t, lo) in zip(keys, arr.astype(int).tolist()):
        if a in pos and o in pos and a != o:
            diff[pos[a], pos[o]] = w - lo
            text[pos[a]][pos[o]] = f"{w}/{t}/{lo}"
    if np.all(np.isnan(diff)):
        raise InputError("the win/tie/loss table has no pair among the chosen algorithms")
    return algs, diff, text


def _draw_wtl(algs: list[str], diff: np.ndarray, text: list[list[str]]) -> Figure:
    """The heat map, sized so that labels and ``w/t/l`` texts fit."""
    k = len(algs)
    vmax = max(1.0, float(np.nanmax(np.abs(diff))))
    cmap = LinearSegmentedColormap.from_list("expkit_wl", [OKABE_ITO[3], "#ffffff", OKABE_ITO[0]])
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    longest = max(len(_shorten(a)) for a in algs)
    widest_cell = max(len(t) for row in text for t in row) if any(any(row) for row in text) else 5
    cell = max(0.62, 0.07 * widest_cell + 0.15)  # room for "w/t/l" at 9 pt
    left = 0.075 * longest + 0.25  # row labels
    top = 0.055 * longest + 0.3  # column labels rotated by 45 degrees
    font = 9
    right = 0.055 * longest + 1.3  # the last column label, rotated, reaches past the map; then the colour bar
    fig = Figure(figsize=(k * cell + left + right, k * cell + top + 0.7), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap.with_extremes(bad="#eeeeee"), norm=norm, aspect="equal")
    for i in range(k):
        for j in range(k):
            if i == j:
                ax.text(j, i, "\u2014", ha="center", va="center", fontsize=font, color="#888888")
            elif text[i][j]:
                dark = abs(diff[i, j]) / vmax > 0.6
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=font, color="white" if dark else "black")
    short = [_shorten(a) for a in algs]
    ax.set_xticks(range(k), short, rotation=45, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(k), short)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    caption = "cells: wins/ties/losses of the row algorithm against the column algorithm"
    per_line = max(24, int((fig.get_figwidth() - 0.4) / 0.068))  # characters of 9 pt text per line
    ax.set_xlabel("\n".join(textwrap.wrap(caption, per_line)), fontsize=9)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label("wins \u2212 losses")
    return fig

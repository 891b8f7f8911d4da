"""Demšar-style critical-difference diagrams: average ranks on an axis, the Nemenyi critical difference,
and bars joining the groups of algorithms that are not significantly different — by default the groups
the Nemenyi CD gives (:func:`cd_cliques`); the report passes the groups of its primary procedure, the
pairwise Wilcoxon tests with Holm (:func:`significance_cliques`), and the CD is then drawn for reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from expkit.analysis.plots.base import (
    AlgorithmStyle,
    _check_formats,
    _finish,
    _save,
    _shorten,
    _style,
    algorithm_styles,
)
from expkit.core.errors import InputError


def cd_cliques(avg_ranks: Mapping[str, float], cd: float) -> list[tuple[str, ...]]:
    """Maximal groups of algorithms whose average ranks all differ by less than ``cd``.

    Algorithms are sorted by rank (ties keep the mapping order); each group is a run of consecutive
    algorithms whose extreme ranks differ by < ``cd``. Groups contained in another group and
    single algorithms are left out. Returned best-first, each group best-first.
    """
    items = sorted(avg_ranks.items(), key=lambda kv: float(kv[1]))
    names = [k for k, _ in items]
    ranks = [float(v) for _, v in items]
    cliques: list[tuple[str, ...]] = []
    last_end = -1
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and j > last_end:  # not contained in the previous (larger or equal) group
            cliques.append(tuple(names[i : j + 1]))
            last_end = j
    return cliques


def significance_cliques(
    avg_ranks: Mapping[str, float], significant: Callable[[str, str], bool]
) -> list[tuple[str, ...]]:
    """Maximal groups of algorithms, consecutive in rank order, with no significantly different pair
    inside (``significant(a, b)`` says whether a pair differs, e.g. by Wilcoxon with Holm).

    Algorithms are sorted by rank (ties keep the mapping order); groups contained in another group and
    single algorithms are left out. Returned best-first, each group best-first."""
    names = [k for k, _ in sorted(avg_ranks.items(), key=lambda kv: float(kv[1]))]
    cliques: list[tuple[str, ...]] = []
    last_end = -1
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and not any(significant(names[t], names[j + 1]) for t in range(i, j + 1)):
            j += 1
        if j > i and j > last_end:  # not contained in the previous group
            cliques.append(tuple(names[i : j + 1]))
            last_end = j
    return cliques


def plot_cd_diagram(
    avg_ranks: Mapping[str, float],
    cd: float,
    *,
    alpha: float,
    n_datasets: int,
    out_stem: Path,
    formats: Sequence[str] = ("png", "pdf"),
    force: bool = False,
    algorithms: Sequence[str] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    groups_label: str | None = None,
) -> list[Path]:
    """Demšar-style critical-difference diagram of average ranks (1 = best, on the left).

    Algorithms are labelled on both sides (better half left), a bar shows the critical difference
    ``cd`` and thick bars join the maximal groups from :func:`cd_cliques` (no significant difference
    within a group) — or, when given, ``groups`` (e.g. :func:`significance_cliques` of the Wilcoxon-Holm
    decisions), named by ``groups_label`` under the diagram, the CD then drawn for reference. Refuses
    with :class:`InputError` when the picture would mislead — fewer than 2 algorithms, or fewer than 5
    datasets — unless ``force``. ``algorithms`` (spec order) only sets the
    marker colours so they match the other plots. Writes ``<out_stem>.<fmt>``.
    """
    fmts = _check_formats(formats)
    ranks = _finite_ranks(avg_ranks)
    cd = _finite_cd(cd)
    if not 0 < alpha < 1:
        raise InputError(f"alpha is {alpha!r}; it must lie between 0 and 1")
    if len(ranks) < 2 and not force:
        raise InputError("a CD diagram of fewer than 2 algorithms compares nothing; draw it anyway with --force")
    if n_datasets < 5 and not force:
        raise InputError(
            f"only {n_datasets} dataset(s): the Nemenyi test needs at least 5 for a meaningful "
            "CD diagram; draw it anyway with --force"
        )
    out_stem = Path(out_stem)
    styles = algorithm_styles(list(algorithms or []) + list(ranks))
    order = sorted(ranks, key=lambda a: ranks[a])
    cliques = cd_cliques(ranks, cd) if groups is None else _checked_groups(groups, ranks)
    k = len(order)
    note = f"Nemenyi test, \u03b1 = {alpha:g}, N = {n_datasets} dataset{'s' if n_datasets != 1 else ''}"
    if groups is not None:
        note = (
            f"Bars: {groups_label or 'given groups'}, \u03b1 = {alpha:g}; CD: Nemenyi, for reference; "
            f"N = {n_datasets} dataset{'s' if n_datasets != 1 else ''}"
        )

    with _style():
        fig = _draw_cd(
            order, ranks, cd, cliques, styles, note=note, n_datasets=n_datasets, warn=n_datasets < 5 or k < 2
        )
        written = _save(fig, out_stem, fmts)
        _finish(fig)
    return written


def _checked_groups(groups: Sequence[Sequence[str]], ranks: Mapping[str, float]) -> list[tuple[str, ...]]:
    """The groups as tuples sorted best-first; InputError when one names an algorithm without a rank."""
    out = []
    for group in groups:
        unknown = [a for a in group if a not in ranks]
        if unknown:
            raise InputError(f"group {list(group)} names {', '.join(map(str, unknown))}, which has no average rank")
        out.append(tuple(sorted((str(a) for a in group), key=lambda a: ranks[a])))
    return out


def _finite_ranks(avg_ranks: Mapping[str, float]) -> dict[str, float]:
    """The average ranks as floats; InputError when there are none or one is not a finite number."""
    if not avg_ranks:
        raise InputError("no average ranks to draw; the CD diagram needs at least 2 algorithms")
    ranks: dict[str, float] = {}
    for name, value in avg_ranks.items():
        try:
            r = float(value)
        except (TypeError, ValueError):
            r = math.nan
        if not math.isfinite(r):
            raise InputError(f"average rank of {name!r} is {value!r}, not a finite number")
        ranks[str(name)] = r
    return ranks


def _finite_cd(cd: Any) -> float:
    """The critical difference as a float; InputError unless it is a finite number >= 0."""
    try:
        value = float(cd)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(f"critical difference is {value!r}; it must be a finite number >= 0")
    return value


@dataclass(frozen=True)
class _CdLayout:
    """Where the parts of the diagram go, in inches (y grows downwards)."""

    high: int  # the worst rank on the axis
    text_w: float  # width of the label columns on either side
    axis_w: float
    top: float  # below the CD bar (and the warning line)
    line_y: float  # the rank axis
    clique_y0: float
    clique_step: float
    label_y0: float
    label_step: float
    width: float
    height: float

    def x(self, rank: float) -> float:
        """Horizontal position of ``rank`` on the axis (1, the best, on the left)."""
        return self.text_w + (rank - 1) / (self.high - 1) * self.axis_w


def _cd_layout(k: int, longest: int, n_cliques: int, n_label_rows: int, *, warn: bool) -> _CdLayout:
    """The layout for k algorithms, labels of at most ``longest`` characters and ``n_cliques`` bars."""
    high = max(k, 2)
    text_w = max(1.3, 0.075 * longest + 0.45)  # ~0.075 in per character at 10 pt
    axis_w = max(3.5, 0.55 * (high - 1))
    top = 0.95 if warn else 0.75  # room for the CD bar and its label (+ warning line)
    line_y = top + 0.35  # the rank axis
    clique_y0 = line_y + 0.25
    clique_step = 0.14
    label_y0 = clique_y0 + n_cliques * clique_step + 0.15
    label_step = 0.27
    height = label_y0 + n_label_rows * label_step + 0.45
    return _CdLayout(
        high, text_w, axis_w, top, line_y, clique_y0, clique_step, label_y0, label_step, 2 * text_w + axis_w, height
    )


def _draw_cd(
    order: list[str],
    ranks: Mapping[str, float],
    cd: float,
    cliques: list[tuple[str, ...]],
    styles: Mapping[str, AlgorithmStyle],
    *,
    note: str,
    n_datasets: int,
    warn: bool,
) -> Figure:
    """Lay the diagram out in inches (y grows downwards) on one invisible axes."""
    k = len(order)
    n_left = math.ceil(k / 2)
    left, right = order[:n_left], order[n_left:]
    labels = {a: f"{_shorten(a, 32)} ({ranks[a]:.2f})" for a in order}
    longest = max(len(s) for s in labels.values())
    lay = _cd_layout(k, longest, len(cliques), max(len(left), len(right), 1), warn=warn)

    fig = Figure(figsize=(lay.width, lay.height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)
    ax.set_axis_off()
    _draw_rank_axis(ax, lay)
    _draw_cd_bar(ax, lay, cd)
    _draw_algorithms(ax, lay, left, right, ranks, labels, styles)
    # cliques: thick bars joining algorithms that are not significantly different
    for i, clique in enumerate(cliques):
        y = lay.clique_y0 + i * lay.clique_step
        ax.plot(
            [lay.x(ranks[clique[0]]) - 0.06, lay.x(ranks[clique[-1]]) + 0.06],
            [y, y],
            color="black",
            linewidth=3.5,
            solid_capstyle="round",
            zorder=5,
        )
    _draw_notes(ax, lay, note=note, n_datasets=n_datasets, warn=warn)
    return fig


def _draw_rank_axis(ax: Any, lay: _CdLayout) -> None:
    """The rank axis with ticks: 1 (best) on the left."""
    line_y, high = lay.line_y, lay.high
    ax.plot([lay.x(1), lay.x(high)], [line_y, line_y], color="black", linewidth=1.2)
    for r in range(1, high + 1):
        ax.plot([lay.x(r), lay.x(r)], [line_y, line_y - 0.1], color="black", linewidth=1.0)
        ax.text(lay.x(r), line_y - 0.14, str(r), ha="center", va="bottom", fontsize=9)
    for half in np.arange(1.5, high, 1.0):
        ax.plot([lay.x(half), lay.x(half)], [line_y, line_y - 0.05], color="black", linewidth=0.7)


def _draw_cd_bar(ax: Any, lay: _CdLayout, cd: float) -> None:
    """The critical difference bar, above the axis on the left (clipped to the axis; the value is printed)."""
    cd_end = min(1 + cd, lay.high)
    bar_y = lay.top - 0.2
    ax.plot([lay.x(1), lay.x(cd_end)], [bar_y, bar_y], color="black", linewidth=1.5)
    for xb in (lay.x(1), lay.x(cd_end)):
        ax.plot([xb, xb], [bar_y - 0.06, bar_y + 0.06], color="black", linewidth=1.2)
    clipped = " (longer than the axis)" if cd_end < 1 + cd else ""
    ax.text(
        lay.x(1) + (lay.x(cd_end) - lay.x(1)) / 2,
        bar_y - 0.09,
        f"CD = {cd:.2f}{clipped}",
        ha="center",
        va="bottom",
        fontsize=9,
    )


def _draw_algorithms(
    ax: Any,
    lay: _CdLayout,
    left: list[str],
    right: list[str],
    ranks: Mapping[str, float],
    labels: Mapping[str, str],
    styles: Mapping[str, AlgorithmStyle],
) -> None:
    """Algorithms: better half to the left, worse half to the right, lines never cross; a marker each."""
    line_y, text_w, axis_w = lay.line_y, lay.text_w, lay.axis_w
    for i, alg in enumerate(left):
        x, y = lay.x(ranks[alg]), lay.label_y0 + i * lay.label_step
        ax.plot([x, x, text_w - 0.1], [line_y, y, y], color="#333333", linewidth=0.9)
        ax.text(text_w - 0.15, y, labels[alg], ha="right", va="center", fontsize=10)
    for i, alg in enumerate(reversed(right)):
        x, y = lay.x(ranks[alg]), lay.label_y0 + i * lay.label_step
        ax.plot([x, x, text_w + axis_w + 0.1], [line_y, y, y], color="#333333", linewidth=0.9)
        ax.text(text_w + axis_w + 0.15, y, labels[alg], ha="left", va="center", fontsize=10)
    for alg in left + right:
        st = styles[alg]
        ax.plot(
            [lay.x(ranks[alg])],
            [line_y],
            marker=st.marker,
            color=st.color,
            markersize=6,
            markeredgecolor="black",
            markeredgewidth=0.5,
            zorder=4,
        )


def _draw_notes(ax: Any, lay: _CdLayout, *, note: str, n_datasets: int, warn: bool) -> None:
    """The test and N at the bottom; a warning at the top when drawn despite too little data."""
    ax.text(lay.width / 2, lay.height - 0.15, note, ha="center", va="bottom", fontsize=9, color="#333333")
    if warn:
        reason = "fewer than 5 datasets" if n_datasets < 5 else "fewer than 2 algorithms"
        ax.text(
            lay.width / 2,
            0.12,
            f"Drawn on request despite {reason}: interpret with caution",
            ha="center",
            va="top",
            fontsize=9,
            color="#D55E00",
        )

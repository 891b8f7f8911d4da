"""The plot of a reproduction check: original versus re-run distributions, one panel per dataset.

matplotlib is imported only when a plot is drawn (``expkit.analysis.plots`` pulls it in).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

import numpy as np
import pandas as pd

from expkit.analysis.collect import Collected
from expkit.reproduce.comparison import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, CellComparison, Comparison
from expkit.reproduce.sides import metric_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.patches import Patch

    from expkit.analysis.plots import AlgorithmStyle

#: The mark above a cell for its verdict: (symbol, colour).
_MARKS = {REPRODUCED: ("✓", "#009E73"), NOT_REPRODUCED: ("✗", "#D55E00"), INCONCLUSIVE: ("?", "#666666")}
#: The original's box and the re-run's box of a cell: (offset from the algorithm's position, fill alpha, hatch).
_SIDES = ((-0.2, 0.15, ""), (0.2, 0.45, "//"))

_Values: TypeAlias = dict[tuple[str, str], np.ndarray]


@dataclass(frozen=True)
class _Panels:
    """What every dataset panel draws from."""

    algorithms: list[str]
    cells: dict[tuple[str, str], CellComparison]
    styles: dict[str, AlgorithmStyle]
    values: tuple[_Values, _Values]  # the original's and the re-run's valid values per (algorithm, dataset)
    ylabel: str


def plot_comparison(
    comparison: Comparison,
    original: Collected,
    rerun: Collected,
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Small multiples, one panel per dataset: for each algorithm the original's box (light) and the
    re-run's box (hatched) side by side with every run shown, and the cell's verdict above them."""
    from expkit.analysis import plots

    fmts = plots._check_formats(formats)
    keys = set(comparison.cell_keys or ())
    orig = metric_rows(original, comparison.metric, keys)
    re = metric_rows(rerun, comparison.metric, keys)
    cells = {(c.algorithm, c.dataset): c for c in comparison.cells}
    algs = [a for a in original.algorithms if any(k[0] == a for k in cells)]
    dsets = [d for d in original.datasets if any(k[1] == d for k in cells)]
    if not cells:
        return []
    better = "lower is better" if comparison.goal == "minimize" else "higher is better"
    panels = _Panels(
        algorithms=algs,
        cells=cells,
        styles=plots.algorithm_styles(original.algorithms),
        values=(_by_cell(orig), _by_cell(re)),
        ylabel=f"{comparison.metric} ({better})",
    )
    pages = plots._pages(dsets)
    base = f"compare-{plots.safe_filename(comparison.metric)}"
    written: list[Path] = []
    for page_no, page in enumerate(pages, start=1):
        title = f"Reproduction check: {comparison.verdict}"
        if len(pages) > 1:
            title += f" (page {page_no} of {len(pages)})"
        stem = out_dir / (base if len(pages) == 1 else f"{base}-{page_no}")
        written += _plot_page(comparison, panels, page, title, stem, fmts, out_dir)
    return written


def _by_cell(rows: pd.DataFrame) -> _Values:
    """The values of ``rows`` per (algorithm, dataset): the group keys of those two string columns."""
    groups = rows.groupby(["algorithm", "dataset"], sort=False)
    return {cast("tuple[str, str]", k): g["value"].to_numpy(dtype=float) for k, g in groups}


def _plot_page(
    comparison: Comparison,
    panels: _Panels,
    page: list[str],
    title: str,
    stem: Path,
    fmts: list[str],
    out_dir: Path,
) -> list[Path]:
    """One figure with the panels of the datasets ``page``, saved at ``stem`` in every format."""
    from matplotlib.figure import Figure

    from expkit.analysis import plots

    rows, cols = plots._grid(len(page))
    panel_w = max(3.0, 0.8 * len(panels.algorithms) + 1.2)
    with plots._style():
        fig = Figure(figsize=(cols * panel_w, rows * 3.3 + 0.6), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for idx, ax in enumerate(axes.flat):
            if idx >= len(page):
                ax.set_visible(False)
                continue
            _dataset_panel(ax, page[idx], panels, first_column=idx % cols == 0)
        fig.legend(handles=_legend_handles(comparison), loc="outside lower center", ncol=3, frameon=False)
        fig.suptitle(title)
        written = plots._save(fig, stem, fmts, inside=out_dir)
        plots._finish(fig)
    return written


def _dataset_panel(ax: Axes, ds: str, panels: _Panels, *, first_column: bool) -> None:
    from expkit.analysis import plots

    algs = panels.algorithms
    for i, alg in enumerate(algs):
        _cell_boxes(ax, i, alg, ds, panels)
        cell = panels.cells.get((alg, ds))
        if cell is not None:
            _verdict_mark(ax, i + 1, cell.verdict)
    ax.set_xticks(
        np.arange(1, len(algs) + 1),
        [plots._shorten(a, 18) for a in algs],
        rotation=30 if len(algs) > 2 else 0,
        ha="right" if len(algs) > 2 else "center",
        rotation_mode="anchor" if len(algs) > 2 else "default",
    )
    ax.set_xlim(0.4, len(algs) + 0.6)
    ax.set_title(plots._shorten(ds), pad=16)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if first_column:
        ax.set_ylabel(panels.ylabel)


def _cell_boxes(ax: Axes, i: int, alg: str, ds: str, panels: _Panels) -> None:
    """The original's and the re-run's box of one cell, with every run as a jittered point."""
    from matplotlib.colors import to_rgba

    st = panels.styles[alg]
    for side, (offset, alpha_fill, hatch) in enumerate(_SIDES):
        data = panels.values[side].get((alg, ds), np.empty(0))
        if not len(data):
            continue
        pos = i + 1 + offset
        bp = ax.boxplot(
            [data],
            positions=[pos],
            widths=0.34,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black", "linewidth": 1.3},
            whiskerprops={"color": "#444444"},
            capprops={"color": "#444444"},
        )
        box = bp["boxes"][0]
        box.set_facecolor(to_rgba(st.color, alpha_fill))
        box.set_edgecolor(st.color)
        if hatch:
            box.set_hatch(hatch)
        rng = np.random.default_rng(zlib.crc32(f"{ds}\0{alg}\0{side}".encode()))
        jitter = rng.uniform(-0.08, 0.08, size=len(data))
        ax.scatter(
            pos + jitter,
            data,
            s=10,
            marker=st.marker,
            color=st.color,
            edgecolors="white",
            linewidths=0.3,
            alpha=0.85,
            zorder=3,
        )


def _verdict_mark(ax: Axes, x: float, verdict: str) -> None:
    sym, colour = _MARKS[verdict]
    ax.text(
        x,
        1.0,
        sym,
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        color=colour,
        fontsize=12,
        fontweight="bold",
        clip_on=False,
    )


def _legend_handles(comparison: Comparison) -> list[Patch]:
    """The two sides' box styles, then the verdict marks."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=to_rgba("#777777", 0.15), edgecolor="#444444", label=f"original {comparison.original_run}"),
        Patch(
            facecolor=to_rgba("#777777", 0.45),
            edgecolor="#444444",
            hatch="//",
            label=f"re-run {comparison.rerun_run}",
        ),
    ]
    handles += [Patch(facecolor="white", edgecolor="white", label=f"{sym} {v}") for v, (sym, _) in _MARKS.items()]
    return handles

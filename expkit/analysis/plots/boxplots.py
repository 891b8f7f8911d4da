"""Box plots: per dataset one panel, per algorithm a box with every run shown as a jittered point."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from expkit.analysis.plots.base import (
    AlgorithmStyle,
    _better,
    _check_formats,
    _check_goal,
    _display_scale,
    _finish,
    _grid,
    _page_stem,
    _pages,
    _require_columns,
    _save,
    _scale_label,
    _scaled,
    _select,
    _shorten,
    _style,
    algorithm_styles,
    safe_filename,
)
from expkit.core.errors import InputError

#: ``log_scale`` choices of :func:`plot_boxplots` (``expkit results --log-scale``).
LOG_SCALES = ("auto", "on", "off")
#: ``auto`` draws a panel on a log axis when its values span more than this many powers of ten.
LOG_DECADES = 3.0


@dataclass(frozen=True)
class _Boxes:
    """What every panel of one box-plot figure shares."""

    metric: str
    goal: str
    algorithms: list[str]
    groups: Mapping[tuple[str, str], np.ndarray]  # (algorithm, dataset) -> values in run order, / 10**scale
    styles: Mapping[str, AlgorithmStyle]
    expected: int  # runs per cell when none is missing
    label_rot: int
    scale: int  # the values are drawn divided by 10**scale (0 but near the float limits)
    log_scale: str = "auto"  # "auto", "on" or "off"


def plot_boxplots(  # long: the docstring documents every option
    table: pd.DataFrame,
    *,
    metric: str,
    goal: str,
    out_dir: Path,
    algorithms: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    log_scale: str = "auto",
) -> list[Path]:
    """Box plots of ``metric`` per dataset (one panel each) with every run shown as a jittered point.

    ``table`` is the tidy results table (columns ``algorithm, dataset, metric, value`` and usually
    ``replicate, seed, status``); only ``status == "succeeded"`` rows with a finite value count. Panels
    where some algorithm has fewer runs than the most complete cell label each box with ``n=``. More
    than 12 datasets are spread over several pages: ``boxplots-<metric>-1.png``, ``-2.png``, ...
    ``algorithms``/``datasets`` choose and order what is drawn (default: order of first appearance);
    pass the spec's algorithm list so colours match the other plots.

    Values beyond 1e100 in magnitude (or below 1e-100) are drawn divided by a power of ten, which the
    axis label shows, so any finite value can be drawn.

    ``log_scale``: ``"auto"`` (default) draws a panel on a logarithmic axis when its values are all
    positive and span more than three decades (1e-25 and 6e-5 then look different), on a symmetric-log
    axis, noted in the panel, when they include zero or negative values and their non-zero magnitudes
    span more than three decades, and linearly otherwise; ``"on"`` uses a log axis (symmetric-log
    where values are not all positive) on every panel; ``"off"`` draws every panel linearly.

    Returns the written files, page by page, in the order of ``formats``.
    """
    goal = _check_goal(goal)
    fmts = _check_formats(formats)
    if log_scale not in LOG_SCALES:
        raise InputError(f"log-scale is {log_scale!r}; use --log-scale auto, on or off")
    df = _require_columns(table, ("algorithm", "dataset", "metric", "value"), "the results table")
    out_dir = Path(out_dir)
    algs = _select(df["algorithm"], algorithms)
    dsets = _select(df["dataset"], datasets)
    if not algs or not dsets:
        raise InputError("the results table is empty; run the experiment before plotting")
    ok = _valid_runs(df, metric, algs, dsets)
    # How many runs each cell should have: the most runs any cell has, counting failures too.
    id_col = "replicate" if "replicate" in df.columns else ("seed" if "seed" in df.columns else None)
    cell = df.groupby([df["algorithm"].astype(str), df["dataset"].astype(str)])
    expected = int((cell[id_col].nunique() if id_col else cell.size()).max())
    groups = {
        (str(alg), str(ds)): grp.sort_values(id_col or "value", kind="stable")["value"].to_numpy(dtype=float)
        for (alg, ds), grp in ok.groupby([ok["algorithm"].astype(str), ok["dataset"].astype(str)])
    }
    label_rot = 0 if len(algs) <= 3 and max(len(a) for a in algs) <= 10 else 45
    scale = _display_scale(*groups.values())
    groups = {key: _scaled(values, scale) for key, values in groups.items()}
    boxes = _Boxes(metric, goal, algs, groups, algorithm_styles(algs), expected, label_rot, scale, log_scale)
    pages = _pages(dsets)
    base = f"boxplots-{safe_filename(metric)}"
    written: list[Path] = []
    for page_no, page in enumerate(pages, start=1):
        stem = _page_stem(out_dir, base, page_no, len(pages))
        title = f"{metric}: page {page_no} of {len(pages)}" if len(pages) > 1 else None
        written += _box_page(boxes, page, title, stem, fmts, out_dir)
    return written


def _valid_runs(df: pd.DataFrame, metric: str, algs: list[str], dsets: list[str]) -> pd.DataFrame:
    """The succeeded runs of ``metric`` with a finite value on the chosen algorithms and datasets."""
    ok: pd.DataFrame = df[df["metric"].astype(str) == str(metric)]
    if "status" in df.columns:
        ok = ok[ok["status"].astype(str) == "succeeded"]
    values = pd.to_numeric(ok["value"], errors="coerce")
    ok = ok.assign(value=values)[np.isfinite(values.to_numpy(dtype=float))]
    ok = ok[ok["algorithm"].astype(str).isin(algs) & ok["dataset"].astype(str).isin(dsets)]
    if ok.empty:
        known = ", ".join(sorted(map(str, df["metric"].unique()))) or "none"
        raise InputError(
            f"no succeeded runs with a finite {metric!r} value to plot "
            f"(metrics in the table: {known}); check the metric name and the run statuses"
        )
    return ok


def _box_page(
    boxes: _Boxes, page: list[str], title: str | None, stem: Path, fmts: list[str], out_dir: Path
) -> list[Path]:
    """One figure with a panel per dataset of ``page``, written to ``stem.<fmt>``."""
    rows, cols = _grid(len(page))
    longest_title = max(len(_panel_title(boxes, ds)) for ds in page)
    panel_w = max(2.8, 0.42 * len(boxes.algorithms) + 1.2, 0.075 * longest_title + 1.2)  # titles fit
    with _style():
        fig = Figure(figsize=(cols * panel_w, rows * 3.2 + 0.3), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for idx, ax in enumerate(axes.flat):
            if idx >= len(page):
                ax.set_visible(False)
                continue
            _box_panel(ax, boxes, page[idx])
            if idx % cols == 0:
                ax.set_ylabel(_scale_label(f"{boxes.metric} ({_better(boxes.goal)})", boxes.scale))
        if title is not None:
            fig.suptitle(title)
        written = _save(fig, stem, fmts, inside=out_dir)
        _finish(fig)
    return written


def _counts(boxes: _Boxes, dataset: str) -> list[int]:
    """How many runs each algorithm has on ``dataset``."""
    return [len(boxes.groups.get((a, dataset), ())) for a in boxes.algorithms]


def _panel_title(boxes: _Boxes, dataset: str) -> str:
    """The dataset's name, and a note when some of its runs are missing."""
    incomplete = any(n < boxes.expected for n in _counts(boxes, dataset))
    return _shorten(dataset) + (f" (runs missing, n of {boxes.expected})" if incomplete else "")


def _box_panel(ax: Any, boxes: _Boxes, dataset: str) -> None:
    """The boxes and runs of every algorithm on ``dataset``; ``n=`` labels when some runs are missing."""
    algs = boxes.algorithms
    data = [boxes.groups.get((a, dataset), np.empty(0)) for a in algs]
    counts = [len(d) for d in data]
    incomplete = any(n < boxes.expected for n in counts)
    positions = np.arange(1, len(algs) + 1, dtype=float)
    filled = [i for i, d in enumerate(data) if len(d)]
    if filled:
        _draw_boxes(ax, [data[i] for i in filled], positions[filled], [boxes.styles[algs[i]] for i in filled])
        for i in filled:
            _draw_runs(ax, data[i], positions[i], boxes.styles[algs[i]], seed=f"{dataset}\0{algs[i]}")
    else:
        ax.text(0.5, 0.5, "no succeeded runs", transform=ax.transAxes, ha="center", va="center", color="#666666")
    labels = [f"{_shorten(a)}\nn={n}" if incomplete else _shorten(a) for a, n in zip(algs, counts)]
    ax.set_xticks(
        positions,
        labels,
        rotation=boxes.label_rot,
        ha="right" if boxes.label_rot else "center",
        rotation_mode="anchor" if boxes.label_rot else "default",
    )
    ax.set_xlim(0.4, len(algs) + 0.6)
    if filled:
        _set_yscale(ax, np.concatenate([data[i] for i in filled]), boxes.log_scale)
    ax.set_title(_panel_title(boxes, dataset))
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _decades(magnitudes: np.ndarray) -> float:
    """How many powers of ten the positive ``magnitudes`` span (0 for fewer than two)."""
    if magnitudes.size < 2:
        return 0.0
    return float(np.log10(magnitudes.max()) - np.log10(magnitudes.min()))


def _set_yscale(ax: Any, values: np.ndarray, mode: str) -> None:
    """A log y axis when ``mode`` asks for it, or (``auto``) when the values span more than
    :data:`LOG_DECADES` decades; symmetric-log, noted in the panel, where some values are not positive."""
    if mode == "off" or values.size == 0:
        return
    if np.all(values > 0):
        if mode == "on" or _decades(values) > LOG_DECADES:
            ax.set_yscale("log")
        return
    nonzero = np.abs(values[values != 0])
    if mode == "on" or _decades(nonzero) > LOG_DECADES:
        linthresh = float(nonzero.min()) if nonzero.size else 1.0
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.text(
            0.02,
            0.98,
            f"symmetric log scale, linear within \u00b1{linthresh:.2g}",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="#555555",
        )


def _draw_boxes(ax: Any, data: list[np.ndarray], positions: np.ndarray, styles: list[AlgorithmStyle]) -> None:
    """Box plots without fliers (every run is drawn as a point), filled in each algorithm's colour."""
    bp = ax.boxplot(
        data,
        positions=positions,
        widths=0.6,
        patch_artist=True,
        showfliers=False,
        medianprops={"color": "black", "linewidth": 1.5},
        whiskerprops={"color": "#444444"},
        capprops={"color": "#444444"},
    )
    for box, st in zip(bp["boxes"], styles):
        box.set_facecolor(to_rgba(st.color, 0.30))
        box.set_edgecolor(st.color)
        box.set_linewidth(1.2)
        if st.hatch:
            box.set_hatch(st.hatch)


def _draw_runs(ax: Any, values: np.ndarray, position: float, st: AlgorithmStyle, *, seed: str) -> None:
    """Every run as a point, jittered sideways by a generator seeded from ``seed`` (deterministic)."""
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    jitter = rng.uniform(-0.17, 0.17, size=len(values))
    ax.scatter(
        position + jitter,
        values,
        s=14,
        marker=st.marker,
        color=st.color,
        edgecolors="white",
        linewidths=0.4,
        alpha=0.85,
        zorder=3,
    )

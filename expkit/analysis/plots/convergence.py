"""Convergence curves: per dataset panel, per algorithm the median best-so-far value across replicates
and its inter-quartile band, against step, budget or time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from expkit.analysis.plots.base import (
    MAX_GRID_POINTS,
    TRAJECTORY_AXES,
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

_TRAJECTORY_COLUMNS = ("algorithm", "dataset", "replicate", "axis", "x", "metric", "value")
_BAND_COLUMNS = ["dataset", "algorithm", "axis", "x", "median", "q25", "q75", "n"]


def _choose_axis(traj: pd.DataFrame, axis: str | None) -> str:
    present = set(traj["axis"].astype(str))
    if axis is not None:
        if axis not in TRAJECTORY_AXES:
            raise InputError(f"axis is {axis!r}; use 'step', 'budget' or 'time'")
        if axis not in present:
            have = ", ".join(a for a in TRAJECTORY_AXES if a in present) or "none"
            raise InputError(f"the trajectories have no {axis!r} axis (available: {have}); pick another axis")
        return axis
    for candidate in TRAJECTORY_AXES:
        if candidate in present:
            return candidate
    raise InputError("the trajectories have no 'step', 'budget' or 'time' axis; check the result.json files")


def _log_x(x: np.ndarray, axis: str) -> bool:
    """Whether a time axis spans more than two decades (so it is drawn on a log scale)."""
    pos = x[x > 0]
    if axis != "time" or pos.size == 0:
        return False
    return bool(pos.max() / 100.0 > pos.min())  # not max / min: that overflows for a subnormal min


def _common_grid(xs: np.ndarray, axis: str, max_points: int) -> np.ndarray:
    grid = np.unique(xs)
    if grid.size <= max_points:
        return grid
    if _log_x(grid, axis):
        pos = grid[grid > 0]
        return np.unique(np.geomspace(pos.min(), pos.max(), max_points))
    lo, hi = grid.min(), grid.max()
    if np.isfinite(hi - lo):
        return np.unique(np.linspace(lo, hi, max_points))
    return np.unique(np.ldexp(np.linspace(lo / 2.0, hi / 2.0, max_points), 1))  # the span overflows a float


def _best_so_far_on(x: np.ndarray, v: np.ndarray, grid: np.ndarray, goal: str) -> np.ndarray:
    """A replicate's best-so-far value as a right-continuous step function evaluated on ``grid``
    (last value carried forward, NaN before its first record)."""
    order = np.argsort(x, kind="stable")
    x, v = x[order], v[order]
    best = np.minimum.accumulate(v) if goal == "minimize" else np.maximum.accumulate(v)
    idx = np.searchsorted(x, grid, side="right") - 1
    out = np.full(grid.shape, np.nan)
    defined = idx >= 0
    out[defined] = best[idx[defined]]
    return out


def convergence_bands(
    trajectories: pd.DataFrame,
    *,
    metric: str,
    goal: str,
    axis: str | None = None,
    algorithms: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    max_points: int = MAX_GRID_POINTS,
) -> pd.DataFrame:
    """Median and inter-quartile band of the best-so-far ``metric`` across replicates.

    ``trajectories`` is tidy: ``algorithm, dataset, replicate, axis, x, metric, value``. For each
    (dataset, algorithm) every replicate's running best (min for ``minimize``, max for ``maximize``)
    is evaluated as a step function on a common grid: the union of the replicates' x values, or
    ``max_points`` evenly spaced points (log-spaced for a time axis spanning > 2 decades) when the
    union is larger. A replicate is undefined before its first record and is then left out; ``n``
    says how many replicates each point summarises. Quartiles use linear interpolation (numpy default).

    Returns columns ``dataset, algorithm, axis, x, median, q25, q75, n`` sorted by dataset and
    algorithm in the requested order, then x; points where no replicate is defined are dropped.
    """
    goal = _check_goal(goal)
    df = _require_columns(trajectories, _TRAJECTORY_COLUMNS, "the trajectories table")
    if max_points < 2:
        raise InputError(f"max_points is {max_points}; use at least 2")
    df, chosen = _records_on_axis(df, metric, axis)
    algs = _select(df["algorithm"], algorithms)
    dsets = _select(df["dataset"], datasets)
    df = df[df["algorithm"].astype(str).isin(algs) & df["dataset"].astype(str).isin(dsets)]
    if df.empty:
        raise InputError(
            f"no finite {chosen!r} trajectory records of {metric!r} for the chosen algorithms and datasets"
        )
    frames: list[pd.DataFrame] = []
    grouped = dict(tuple(df.groupby([df["dataset"].astype(str), df["algorithm"].astype(str)])))
    for dataset in dsets:
        for alg in algs:
            cell = grouped.get((dataset, alg))
            if cell is not None:
                frames.append(_cell_band(cell, dataset, alg, chosen, goal, max_points))
    bands: pd.DataFrame = pd.concat(frames, ignore_index=True)[_BAND_COLUMNS]
    return bands


def _records_on_axis(df: pd.DataFrame, metric: str, axis: str | None) -> tuple[pd.DataFrame, str]:
    """The finite records of ``metric`` on the chosen axis (see :func:`_choose_axis`), and that axis."""
    df = df[df["metric"].astype(str) == str(metric)]
    if df.empty:
        raise InputError(
            f"the trajectories have no records of metric {metric!r}; "
            "check the metric name or that the runs write a 'trajectory'"
        )
    chosen = _choose_axis(df, axis)
    df = df[df["axis"].astype(str) == chosen]
    x = pd.to_numeric(df["x"], errors="coerce").to_numpy(dtype=float)
    v = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(v)
    return df.assign(x=x, value=v)[keep], chosen


def _cell_band(cell: pd.DataFrame, dataset: str, alg: str, axis: str, goal: str, max_points: int) -> pd.DataFrame:
    """The band of one (dataset, algorithm): its replicates' best-so-far curves on a common grid."""
    grid = _common_grid(cell["x"].to_numpy(), axis, max_points)
    curves = np.vstack(
        [
            _best_so_far_on(rep["x"].to_numpy(), rep["value"].to_numpy(), grid, goal)
            for _, rep in cell.groupby("replicate", sort=True, dropna=False)
        ]
    )
    n = np.sum(np.isfinite(curves), axis=0)
    mask = n > 0
    sub = curves[:, mask]
    # on values scaled by a power of two (exact), so that the interpolation cannot overflow
    top = np.nanmax(np.abs(sub)) if sub.size else 0.0
    e = int(np.frexp(top)[1]) if np.isfinite(top) and top > 0 else 0
    q25, med, q75 = np.ldexp(np.nanpercentile(np.ldexp(sub, -e), [25, 50, 75], axis=0), e)
    band: pd.DataFrame = pd.DataFrame(
        {
            "dataset": dataset,
            "algorithm": alg,
            "axis": axis,
            "x": grid[mask],
            "median": med,
            "q25": q25,
            "q75": q75,
            "n": n[mask].astype(int),
        }
    )
    return band


@dataclass(frozen=True)
class _Curves:
    """What every panel of one convergence figure shares."""

    metric: str
    goal: str
    algorithms: list[str]
    drawn: list[str]  # algorithms with a curve somewhere, in order: the legend
    per_dataset: Mapping[str, pd.DataFrame]  # dataset -> its rows of the bands
    styles: Mapping[str, AlgorithmStyle]
    axis: str
    entry_w: float  # width of one legend entry, inches
    x_scale: int  # x and the values are drawn divided by 10**x_scale and 10**v_scale (see _display_scale)
    v_scale: int
    x_log10: bool  # x is drawn as log10(x) on a linear axis (a log axis that reaches the float limits)


def plot_convergence(
    trajectories: pd.DataFrame,
    *,
    metric: str,
    goal: str,
    out_dir: Path,
    axis: str | None = None,
    algorithms: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Convergence curves: per dataset panel, per algorithm the median best-so-far ``metric`` (line)
    and its inter-quartile band across replicates, against step, budget or time (see
    :func:`convergence_bands`). ``axis`` defaults to step if present, else budget, else time. A time
    axis spanning more than two decades is drawn on a log scale. Values (and a linear x axis) beyond
    1e100 in magnitude, or below 1e-100, are drawn divided by a power of ten that the axis label shows.
    Files are ``convergence-<metric>-<axis>[-<page>].<fmt>``; returns them page by page.
    """
    goal = _check_goal(goal)
    fmts = _check_formats(formats)
    df = _require_columns(trajectories, _TRAJECTORY_COLUMNS, "the trajectories table")
    out_dir = Path(out_dir)
    algs = _select(df["algorithm"], algorithms)
    dsets = _select(df["dataset"], datasets)
    bands = convergence_bands(df, metric=metric, goal=goal, axis=axis, algorithms=algs, datasets=dsets)
    chosen = str(bands["axis"].iloc[0])
    drawn = [a for a in algs if a in set(bands["algorithm"])]
    # legend entry width in inches: handle + gap + ~0.075 in per character at 9 pt
    entry_w = 0.9 + 0.075 * max([len(_shorten(a, 30)) for a in drawn] + [len("IQR band")])
    bands, x_scale, v_scale, x_log10 = _for_drawing(bands, chosen)
    per_ds = {str(dataset): rows for dataset, rows in bands.groupby("dataset", sort=False)}
    curves = _Curves(
        metric, goal, algs, drawn, per_ds, algorithm_styles(algs), chosen, entry_w, x_scale, v_scale, x_log10
    )
    pages = _pages(dsets)
    base = f"convergence-{safe_filename(metric)}-{chosen}"
    written: list[Path] = []
    for page_no, page in enumerate(pages, start=1):
        stem = _page_stem(out_dir, base, page_no, len(pages))
        title = f"{metric}: page {page_no} of {len(pages)}" if len(pages) > 1 else None
        written += _convergence_page(curves, page, title, stem, fmts, out_dir)
    return written


def _for_drawing(bands: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, int, int, bool]:
    """The bands as drawn, with the powers of ten x and the values are divided by (see
    :func:`~expkit.analysis.plots.base._display_scale`), and whether x is drawn as log10(x): a log axis
    whose ticks would reach past the float limits (beyond 1e300 or below 1e-300) is drawn that way."""
    x = bands["x"].to_numpy(dtype=float)
    log = _log_x(x, axis)
    pos = x[x > 0]
    x_log10 = bool(log and (pos.max() > 1e300 or pos.min() < 1e-300))
    x_scale = 0 if log else _display_scale(x)
    v_scale = _display_scale(bands["median"], bands["q25"], bands["q75"])
    values = {c: _scaled(bands[c], v_scale) for c in ("median", "q25", "q75")}
    if x_log10:
        keep = x > 0
        out = bands.assign(**values)[keep]
        return out.assign(x=np.log10(x[keep])), 0, v_scale, True
    return bands.assign(x=_scaled(x, x_scale), **values), x_scale, v_scale, False


def _convergence_page(
    curves: _Curves, page: list[str], title: str | None, stem: Path, fmts: list[str], out_dir: Path
) -> list[Path]:
    """One figure with a panel per dataset of ``page`` and a legend below, written to ``stem.<fmt>``."""
    xlabel = {"step": "step", "budget": "budget", "time": "time (s)"}[curves.axis]
    drawn, styles = curves.drawn, curves.styles
    rows, cols = _grid(len(page))
    with _style():
        fig_w = max(cols * 3.6, 5.0)
        legend_cols = max(1, min(len(drawn) + 1, int(fig_w // curves.entry_w)))
        legend_rows = math.ceil((len(drawn) + 1) / legend_cols)
        fig = Figure(figsize=(fig_w, rows * 2.9 + 0.25 * legend_rows + 0.4), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for idx, ax in enumerate(axes.flat):
            if idx >= len(page):
                ax.set_visible(False)
                continue
            dataset = page[idx]
            _convergence_panel(
                ax, curves.per_dataset.get(dataset), dataset, curves.algorithms, styles, curves.axis, not curves.x_log10
            )
            if idx % cols == 0:
                ax.set_ylabel(_scale_label(f"{curves.metric}, best so far\n({_better(curves.goal)})", curves.v_scale))
            if idx // cols == rows - 1 or idx + cols >= len(page):
                ax.set_xlabel(f"log10 of {xlabel}" if curves.x_log10 else _scale_label(xlabel, curves.x_scale))
        handles: list[Artist] = [
            Line2D([], [], color=styles[a].color, linestyle=styles[a].linestyle, linewidth=2, label=_shorten(a, 30))
            for a in drawn
        ]
        handles.append(Patch(facecolor="#999999", alpha=0.3, label="IQR band"))
        fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, frameon=False)
        if title is not None:
            fig.suptitle(title)
        written = _save(fig, stem, fmts, inside=out_dir)
        _finish(fig)
    return written


def _convergence_panel(
    ax: Any,
    bands: pd.DataFrame | None,
    dataset: str,
    algs: Sequence[str],
    styles: Mapping[str, AlgorithmStyle],
    axis: str,
    log_allowed: bool = True,
) -> None:
    ax.set_title(_shorten(dataset))
    ax.grid(color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    if bands is None or bands.empty:
        ax.text(0.5, 0.5, "no trajectories", transform=ax.transAxes, ha="center", va="center", color="#666666")
        return
    for alg in algs:
        b = bands[bands["algorithm"] == alg]
        if b.empty:
            continue
        st = styles[alg]
        x = b["x"].to_numpy()
        ax.fill_between(
            x, b["q25"].to_numpy(), b["q75"].to_numpy(), step="post", color=st.color, alpha=0.2, linewidth=0
        )
        ax.step(x, b["median"].to_numpy(), where="post", color=st.color, linestyle=st.linestyle, linewidth=1.8)
        if len(x) == 1:  # a single point draws no line: mark it
            ax.plot(x, b["median"].to_numpy(), marker=st.marker, color=st.color, linestyle="none")
    if log_allowed and _log_x(bands["x"].to_numpy(dtype=float), axis):
        ax.set_xscale("log")

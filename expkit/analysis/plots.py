"""Figures for comparing algorithms: box plots, convergence curves, CD diagrams, win/tie/loss maps.

Every function takes plain pandas/dict input, draws on a fresh :class:`matplotlib.figure.Figure`
(never pyplot, so no global figure state leaks between calls), writes PNG and PDF (SVG on request)
and returns the written paths in a stable order. Output is deterministic: re-rendering the same input
gives byte-identical files (no creation dates or software stamps, seeded jitter, fixed SVG ids).

Colours come from the Okabe-Ito palette, which stays distinguishable for the common forms of colour
blindness. :func:`algorithm_colors` maps the spec-order algorithm list to colours; pass the same list
(``algorithms=``) to every plot so an algorithm has the same colour everywhere. With more algorithms
than colours the colours repeat and the marker, hatch and line style change instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from expkit.core.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "OKABE_ITO",
    "AlgorithmStyle",
    "algorithm_colors",
    "algorithm_styles",
    "convergence_bands",
    "cd_cliques",
    "plot_boxplots",
    "plot_convergence",
    "plot_cd_diagram",
    "plot_rank_overview",
    "safe_filename",
]

#: Okabe & Ito (2008) colour-blind-safe palette, ordered so the first colours contrast most on white.
#: Yellow comes late: it is hard to see on white and is used only from the seventh algorithm on.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
_LINESTYLES = ("-", "--", ":", "-.")

SUPPORTED_FORMATS = ("png", "pdf", "svg")
MAX_PANELS_PER_PAGE = 12
MAX_GRID_POINTS = 200
TRAJECTORY_AXES = ("step", "budget", "time")
_PNG_DPI = 150
_GOALS = ("minimize", "maximize")

_RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "pdf.fonttype": 42,  # embed TrueType so text stays editable and searchable
    "svg.fonttype": "path",
    "svg.hashsalt": "expkit",  # fixed element ids -> deterministic SVG
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# --------------------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class AlgorithmStyle:
    """How one algorithm is drawn: colour plus marker/hatch/line style (these change per colour cycle)."""

    color: str
    marker: str
    hatch: str
    linestyle: str


def _unique(items: Sequence[Any]) -> list[str]:
    """The distinct items as strings, in order of first appearance."""
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(str(item), None)
    return list(seen)


def algorithm_styles(algorithms: Sequence[str]) -> dict[str, AlgorithmStyle]:
    """Stable styles for the spec-order ``algorithms``: the i-th gets colour ``i % 8`` and, in its
    ``i // 8``-th trip through the palette, the ``i // 8``-th marker, hatch and line style."""
    styles: dict[str, AlgorithmStyle] = {}
    for i, name in enumerate(_unique(algorithms)):
        cycle = i // len(OKABE_ITO)
        styles[name] = AlgorithmStyle(
            color=OKABE_ITO[i % len(OKABE_ITO)],
            marker=_MARKERS[cycle % len(_MARKERS)],
            hatch=_HATCHES[cycle % len(_HATCHES)],
            linestyle=_LINESTYLES[cycle % len(_LINESTYLES)],
        )
    return styles


def algorithm_colors(algorithms: Sequence[str]) -> dict[str, str]:
    """Map each algorithm (in spec order, duplicates ignored) to an Okabe-Ito hex colour.

    The mapping depends only on the position in ``algorithms``, so passing the spec's algorithm list
    to every plot gives each algorithm the same colour everywhere. Beyond eight algorithms the colours
    repeat; :func:`algorithm_styles` then tells the repeats apart by marker, hatch and line style.
    """
    return {name: style.color for name, style in algorithm_styles(algorithms).items()}


# --------------------------------------------------------------------------------------- helpers


def _check_goal(goal: str) -> str:
    if goal not in _GOALS:
        raise InputError(f"goal is {goal!r}; use 'minimize' or 'maximize'")
    return goal


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = (formats,)
    out = _unique([str(f).lower().lstrip(".") for f in formats])
    if not out:
        raise InputError("formats is empty; pass at least one of 'png', 'pdf', 'svg'")
    bad = [f for f in out if f not in SUPPORTED_FORMATS]
    if bad:
        raise InputError(f"unsupported plot format {bad[0]!r}; use 'png', 'pdf' or 'svg'")
    return out


def _require_columns(df: Any, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame, not {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} lacks column(s) {', '.join(missing)}; it needs {', '.join(columns)}")
    return df


def safe_filename(name: str, *, max_len: int = 60) -> str:
    """A file-name-safe version of ``name`` (letters, digits, '.', '_', '-'; no leading dot).

    When anything had to change, a short hash of the original is appended so distinct names
    ("a/b", "a_b") never collide.
    """
    text = str(name)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:max_len] or "x"
    if clean != text:
        clean = f"{clean}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"
    return clean


def _better(goal: str) -> str:
    return "lower is better" if goal == "minimize" else "higher is better"


def _shorten(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_RC):
        yield


def _save(fig: Figure, stem: Path, formats: Sequence[str], *, inside: Path | None = None) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format, atomically and without timestamps."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        if inside is not None and path.resolve().parent != inside.resolve():
            raise InputError(f"refusing to write {path} outside the output directory {inside}")
        metadata: dict[str, Any] = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[
            fmt
        ]
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            fig.savefig(tmp, format=fmt, dpi=_PNG_DPI, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        log.debug("wrote %s", path)
        paths.append(path)
    return paths


def _finish(fig: Figure) -> None:
    """Release the figure's artists (the Figure is not registered with pyplot, so GC frees it)."""
    fig.clear()


def _pages(items: Sequence[str], per_page: int = MAX_PANELS_PER_PAGE) -> list[list[str]]:
    """Split ``items`` into the fewest pages of at most ``per_page``, balanced in size."""
    items = list(items)
    if not items:
        return []
    n_pages = math.ceil(len(items) / per_page)
    size = math.ceil(len(items) / n_pages)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels: at most 4 columns, roughly square."""
    cols = min(4, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def _page_stem(out_dir: Path, base: str, page: int, n_pages: int) -> Path:
    return out_dir / (base if n_pages == 1 else f"{base}-{page}")


def _select(present: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    return _unique(present) if wanted is None else _unique(wanted)


# --------------------------------------------------------------------------------------- box plots


def plot_boxplots(
    table: pd.DataFrame,
    *,
    metric: str,
    goal: str,
    out_dir: Path,
    algorithms: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Box plots of ``metric`` per dataset (one panel each) with every run shown as a jittered point.

    ``table`` is the tidy results table (columns ``algorithm, dataset, metric, value`` and usually
    ``replicate, seed, status``); only ``status == "succeeded"`` rows with a finite value count. Panels
    where some algorithm has fewer runs than the most complete cell label each box with ``n=``. More
    than 12 datasets are spread over several pages: ``boxplots-<metric>-1.png``, ``-2.png``, ...
    ``algorithms``/``datasets`` choose and order what is drawn (default: order of first appearance);
    pass the spec's algorithm list so colours match the other plots.

    Returns the written files, page by page, in the order of ``formats``.
    """
    goal = _check_goal(goal)
    fmts = _check_formats(formats)
    df = _require_columns(table, ("algorithm", "dataset", "metric", "value"), "the results table")
    out_dir = Path(out_dir)
    algs = _select(df["algorithm"], algorithms)
    dsets = _select(df["dataset"], datasets)
    if not algs or not dsets:
        raise InputError("the results table is empty; run the experiment before plotting")

    of_metric = df[df["metric"].astype(str) == str(metric)]
    ok = of_metric
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

    # How many runs each cell should have: the most runs any cell has, counting failures too.
    id_col = "replicate" if "replicate" in df.columns else ("seed" if "seed" in df.columns else None)
    cell = df.groupby([df["algorithm"].astype(str), df["dataset"].astype(str)])
    expected = int((cell[id_col].nunique() if id_col else cell.size()).max())

    styles = algorithm_styles(algs)
    groups = {
        key: grp.sort_values(id_col or "value", kind="stable")["value"].to_numpy(dtype=float)
        for key, grp in ok.groupby([ok["algorithm"].astype(str), ok["dataset"].astype(str)])
    }
    pages = _pages(dsets)
    base = f"boxplots-{safe_filename(metric)}"
    label_rot = 0 if len(algs) <= 3 and max(len(a) for a in algs) <= 10 else 45
    written: list[Path] = []
    for page_no, page in enumerate(pages, start=1):
        rows, cols = _grid(len(page))
        panel_w = max(2.8, 0.42 * len(algs) + 1.2)
        with _style():
            fig = Figure(figsize=(cols * panel_w, rows * 3.2 + 0.3), layout="constrained")
            axes = fig.subplots(rows, cols, squeeze=False)
            for idx, ax in enumerate(axes.flat):
                if idx >= len(page):
                    ax.set_visible(False)
                    continue
                dataset = page[idx]
                _box_panel(ax, dataset, algs, groups, styles, expected, label_rot)
                if idx % cols == 0:
                    ax.set_ylabel(f"{metric} ({_better(goal)})")
            if len(pages) > 1:
                fig.suptitle(f"{metric}: page {page_no} of {len(pages)}")
            written += _save(fig, _page_stem(out_dir, base, page_no, len(pages)), fmts, inside=out_dir)
            _finish(fig)
    return written


def _box_panel(
    ax: Any,
    dataset: str,
    algs: Sequence[str],
    groups: Mapping[tuple[str, str], np.ndarray],
    styles: Mapping[str, AlgorithmStyle],
    expected: int,
    label_rot: int,
) -> None:
    data = [groups.get((a, dataset), np.empty(0)) for a in algs]
    counts = [len(d) for d in data]
    incomplete = any(n < expected for n in counts)
    positions = np.arange(1, len(algs) + 1, dtype=float)
    filled = [i for i, d in enumerate(data) if len(d)]
    if filled:
        bp = ax.boxplot(
            [data[i] for i in filled],
            positions=positions[filled],
            widths=0.6,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black", "linewidth": 1.5},
            whiskerprops={"color": "#444444"},
            capprops={"color": "#444444"},
        )
        for i, box in zip(filled, bp["boxes"]):
            st = styles[algs[i]]
            box.set_facecolor(to_rgba(st.color, 0.30))
            box.set_edgecolor(st.color)
            box.set_linewidth(1.2)
            if st.hatch:
                box.set_hatch(st.hatch)
        for i in filled:
            st = styles[algs[i]]
            rng = np.random.default_rng(zlib.crc32(f"{dataset}\0{algs[i]}".encode()))
            jitter = rng.uniform(-0.17, 0.17, size=len(data[i]))
            ax.scatter(
                positions[i] + jitter,
                data[i],
                s=14,
                marker=st.marker,
                color=st.color,
                edgecolors="white",
                linewidths=0.4,
                alpha=0.85,
                zorder=3,
            )
    else:
        ax.text(0.5, 0.5, "no succeeded runs", transform=ax.transAxes, ha="center", va="center", color="#666666")
    labels = [f"{_shorten(a, 24)}\nn={n}" if incomplete else _shorten(a, 24) for a, n in zip(algs, counts)]
    ax.set_xticks(
        positions,
        labels,
        rotation=label_rot,
        ha="right" if label_rot else "center",
        rotation_mode="anchor" if label_rot else "default",
    )
    ax.set_xlim(0.4, len(algs) + 0.6)
    ax.set_title(_shorten(dataset) + (f" (runs missing, n of {expected})" if incomplete else ""))
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


# --------------------------------------------------------------------------------------- convergence


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
    return axis == "time" and pos.size > 0 and pos.max() / pos.min() > 100.0


def _common_grid(xs: np.ndarray, axis: str, max_points: int) -> np.ndarray:
    grid = np.unique(xs)
    if grid.size <= max_points:
        return grid
    if _log_x(grid, axis):
        pos = grid[grid > 0]
        return np.unique(np.geomspace(pos.min(), pos.max(), max_points))
    return np.unique(np.linspace(grid.min(), grid.max(), max_points))


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
    df = _require_columns(
        trajectories, ("algorithm", "dataset", "replicate", "axis", "x", "metric", "value"), "the trajectories table"
    )
    if max_points < 2:
        raise InputError(f"max_points is {max_points}; use at least 2")
    df = df[df["metric"].astype(str) == str(metric)]
    columns = ["dataset", "algorithm", "axis", "x", "median", "q25", "q75", "n"]
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
    df = df.assign(x=x, value=v)[keep]
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
            if cell is None:
                continue
            grid = _common_grid(cell["x"].to_numpy(), chosen, max_points)
            curves = np.vstack(
                [
                    _best_so_far_on(rep["x"].to_numpy(), rep["value"].to_numpy(), grid, goal)
                    for _, rep in cell.groupby("replicate", sort=True, dropna=False)
                ]
            )
            n = np.sum(np.isfinite(curves), axis=0)
            mask = n > 0
            sub = curves[:, mask]
            q25, med, q75 = np.nanpercentile(sub, [25, 50, 75], axis=0)
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": dataset,
                        "algorithm": alg,
                        "axis": chosen,
                        "x": grid[mask],
                        "median": med,
                        "q25": q25,
                        "q75": q75,
                        "n": n[mask].astype(int),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[columns]


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
    axis spanning more than two decades is drawn on a log scale. Files are
    ``convergence-<metric>-<axis>[-<page>].<fmt>``; returns them page by page.
    """
    goal = _check_goal(goal)
    fmts = _check_formats(formats)
    df = _require_columns(
        trajectories, ("algorithm", "dataset", "replicate", "axis", "x", "metric", "value"), "the trajectories table"
    )
    out_dir = Path(out_dir)
    algs = _select(df["algorithm"], algorithms)
    dsets = _select(df["dataset"], datasets)
    bands = convergence_bands(df, metric=metric, goal=goal, axis=axis, algorithms=algs, datasets=dsets)
    chosen = str(bands["axis"].iloc[0])
    styles = algorithm_styles(algs)
    drawn = [a for a in algs if a in set(bands["algorithm"])]
    per_ds = dict(tuple(bands.groupby("dataset", sort=False)))
    pages = _pages(dsets)
    base = f"convergence-{safe_filename(metric)}-{chosen}"
    xlabel = {"step": "step", "budget": "budget", "time": "time (s)"}[chosen]
    # legend entry width in inches: handle + gap + ~0.075 in per character at 9 pt
    entry_w = 0.9 + 0.075 * max([len(_shorten(a, 30)) for a in drawn] + [len("IQR band")])
    written: list[Path] = []
    for page_no, page in enumerate(pages, start=1):
        rows, cols = _grid(len(page))
        with _style():
            fig_w = max(cols * 3.6, 5.0)
            legend_cols = max(1, min(len(drawn) + 1, int(fig_w // entry_w)))
            legend_rows = math.ceil((len(drawn) + 1) / legend_cols)
            fig = Figure(figsize=(fig_w, rows * 2.9 + 0.25 * legend_rows + 0.4), layout="constrained")
            axes = fig.subplots(rows, cols, squeeze=False)
            for idx, ax in enumerate(axes.flat):
                if idx >= len(page):
                    ax.set_visible(False)
                    continue
                dataset = page[idx]
                _convergence_panel(ax, per_ds.get(dataset), dataset, algs, styles, chosen)
                if idx % cols == 0:
                    ax.set_ylabel(f"{metric}, best so far\n({_better(goal)})")
                if idx // cols == rows - 1 or idx + cols >= len(page):
                    ax.set_xlabel(xlabel)
            handles = [
                Line2D([], [], color=styles[a].color, linestyle=styles[a].linestyle, linewidth=2, label=_shorten(a, 30))
                for a in drawn
            ]
            handles.append(Patch(facecolor="#999999", alpha=0.3, label="IQR band"))
            fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, frameon=False)
            if len(pages) > 1:
                fig.suptitle(f"{metric}: page {page_no} of {len(pages)}")
            written += _save(fig, _page_stem(out_dir, base, page_no, len(pages)), fmts, inside=out_dir)
            _finish(fig)
    return written


def _convergence_panel(
    ax: Any,
    bands: pd.DataFrame | None,
    dataset: str,
    algs: Sequence[str],
    styles: Mapping[str, AlgorithmStyle],
    axis: str,
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
    if _log_x(bands["x"].to_numpy(dtype=float), axis):
        ax.set_xscale("log")


# --------------------------------------------------------------------------------------- CD diagram


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
) -> list[Path]:
    """Demšar-style critical-difference diagram of average ranks (1 = best, on the left).

    Algorithms are labelled on both sides (better half left), a bar shows the critical difference
    ``cd`` and thick bars join the maximal groups from :func:`cd_cliques` (no significant difference
    within a group). Refuses with :class:`InputError` when the picture would mislead — fewer than 2
    algorithms, or fewer than 5 datasets — unless ``force``. ``algorithms`` (spec order) only sets the
    marker colours so they match the other plots. Writes ``<out_stem>.<fmt>``.
    """
    fmts = _check_formats(formats)
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
    try:
        cd = float(cd)
    except (TypeError, ValueError):
        cd = math.nan
    if not math.isfinite(cd) or cd < 0:
        raise InputError(f"critical difference is {cd!r}; it must be a finite number >= 0")
    if not 0 < alpha < 1:
        raise InputError(f"alpha is {alpha!r}; it must lie between 0 and 1")
    if len(ranks) < 2 and not force:
        raise InputError(
            "a CD diagram of fewer than 2 algorithms compares nothing; draw it anyway with --force (force=True)"
        )
    if n_datasets < 5 and not force:
        raise InputError(
            f"only {n_datasets} dataset(s): the Nemenyi test needs at least 5 for a meaningful "
            "CD diagram; draw it anyway with --force (force=True)"
        )
    out_stem = Path(out_stem)
    styles = algorithm_styles(list(algorithms or []) + list(ranks))
    order = sorted(ranks, key=lambda a: ranks[a])
    cliques = cd_cliques(ranks, cd)
    k = len(order)

    with _style():
        fig = _draw_cd(
            order, ranks, cd, cliques, styles, alpha=alpha, n_datasets=n_datasets, warn=n_datasets < 5 or k < 2
        )
        written = _save(fig, out_stem, fmts)
        _finish(fig)
    return written


def _draw_cd(
    order: list[str],
    ranks: Mapping[str, float],
    cd: float,
    cliques: list[tuple[str, ...]],
    styles: Mapping[str, AlgorithmStyle],
    *,
    alpha: float,
    n_datasets: int,
    warn: bool,
) -> Figure:
    """Lay the diagram out in inches (y grows downwards) on one invisible axes."""
    k = len(order)
    high = max(k, 2)
    n_left = math.ceil(k / 2)
    left, right = order[:n_left], order[n_left:]
    labels = {a: f"{_shorten(a, 32)} ({ranks[a]:.2f})" for a in order}
    longest = max(len(s) for s in labels.values())
    text_w = max(1.3, 0.075 * longest + 0.45)  # ~0.075 in per character at 10 pt
    axis_w = max(3.5, 0.55 * (high - 1))
    width = 2 * text_w + axis_w

    top = 0.95 if warn else 0.75  # room for the CD bar and its label (+ warning line)
    line_y = top + 0.35  # the rank axis
    clique_y0 = line_y + 0.25
    clique_step = 0.14
    label_y0 = clique_y0 + len(cliques) * clique_step + 0.15
    label_step = 0.27
    height = label_y0 + max(len(left), len(right), 1) * label_step + 0.45

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()

    def xpos(rank: float) -> float:
        return text_w + (rank - 1) / (high - 1) * axis_w

    # rank axis with ticks: 1 (best) on the left
    ax.plot([xpos(1), xpos(high)], [line_y, line_y], color="black", linewidth=1.2)
    for r in range(1, high + 1):
        ax.plot([xpos(r), xpos(r)], [line_y, line_y - 0.1], color="black", linewidth=1.0)
        ax.text(xpos(r), line_y - 0.14, str(r), ha="center", va="bottom", fontsize=9)
    for r in np.arange(1.5, high, 1.0):
        ax.plot([xpos(r), xpos(r)], [line_y, line_y - 0.05], color="black", linewidth=0.7)

    # critical difference bar, above the axis on the left (clipped to the axis; the value is printed)
    cd_end = min(1 + cd, high)
    bar_y = top - 0.2
    ax.plot([xpos(1), xpos(cd_end)], [bar_y, bar_y], color="black", linewidth=1.5)
    for xb in (xpos(1), xpos(cd_end)):
        ax.plot([xb, xb], [bar_y - 0.06, bar_y + 0.06], color="black", linewidth=1.2)
    clipped = " (longer than the axis)" if cd_end < 1 + cd else ""
    ax.text(
        xpos(1) + (xpos(cd_end) - xpos(1)) / 2,
        bar_y - 0.09,
        f"CD = {cd:.2f}{clipped}",
        ha="center",
        va="bottom",
        fontsize=9,
    )

    # algorithms: better half to the left, worse half to the right, lines never cross
    for i, alg in enumerate(left):
        x, y = xpos(ranks[alg]), label_y0 + i * label_step
        ax.plot([x, x, text_w - 0.1], [line_y, y, y], color="#333333", linewidth=0.9)
        ax.text(text_w - 0.15, y, labels[alg], ha="right", va="center", fontsize=10)
    for i, alg in enumerate(reversed(right)):
        x, y = xpos(ranks[alg]), label_y0 + i * label_step
        ax.plot([x, x, text_w + axis_w + 0.1], [line_y, y, y], color="#333333", linewidth=0.9)
        ax.text(text_w + axis_w + 0.15, y, labels[alg], ha="left", va="center", fontsize=10)
    for alg in order:
        st = styles[alg]
        ax.plot(
            [xpos(ranks[alg])],
            [line_y],
            marker=st.marker,
            color=st.color,
            markersize=6,
            markeredgecolor="black",
            markeredgewidth=0.5,
            zorder=4,
        )

    # cliques: thick bars joining algorithms that are not significantly different
    for i, clique in enumerate(cliques):
        y = clique_y0 + i * clique_step
        ax.plot(
            [xpos(ranks[clique[0]]) - 0.06, xpos(ranks[clique[-1]]) + 0.06],
            [y, y],
            color="black",
            linewidth=3.5,
            solid_capstyle="round",
            zorder=5,
        )

    note = f"Nemenyi test, \u03b1 = {alpha:g}, N = {n_datasets} dataset{'s' if n_datasets != 1 else ''}"
    ax.text(width / 2, height - 0.15, note, ha="center", va="bottom", fontsize=9, color="#333333")
    if warn:
        reason = "fewer than 5 datasets" if n_datasets < 5 else "fewer than 2 algorithms"
        ax.text(
            width / 2,
            0.12,
            f"Drawn on request despite {reason}: interpret with caution",
            ha="center",
            va="top",
            fontsize=9,
            color="#D55E00",
        )
    return fig


# --------------------------------------------------------------------------------------- W/T/L map


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
    vmax = max(1.0, float(np.nanmax(np.abs(diff))))
    cmap = LinearSegmentedColormap.from_list("expkit_wl", [OKABE_ITO[3], "#ffffff", OKABE_ITO[0]])
    cmap = cmap.with_extremes(bad="#eeeeee")
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)

    longest = max(len(_shorten(a, 28)) for a in algs)
    widest_cell = max(len(t) for row in text for t in row) if any(any(row) for row in text) else 5
    cell = max(0.62, 0.07 * widest_cell + 0.15)  # room for "w/t/l" at 9 pt
    left = 0.075 * longest + 0.25  # row labels
    top = 0.055 * longest + 0.3  # column labels rotated by 45 degrees
    out_stem = Path(out_stem)
    font = 9
    with _style():
        fig = Figure(figsize=(k * cell + left + 1.3, k * cell + top + 0.45), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap, norm=norm, aspect="equal")
        for i in range(k):
            for j in range(k):
                if i == j:
                    ax.text(j, i, "\u2014", ha="center", va="center", fontsize=font, color="#888888")
                elif text[i][j]:
                    dark = abs(diff[i, j]) / vmax > 0.6
                    ax.text(
                        j, i, text[i][j], ha="center", va="center", fontsize=font, color="white" if dark else "black"
                    )
        short = [_shorten(a, 28) for a in algs]
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
        ax.set_xlabel("cells: wins/ties/losses of the row algorithm against the column algorithm", fontsize=9)
        bar = fig.colorbar(im, ax=ax, shrink=0.8)
        bar.set_label("wins \u2212 losses")
        written = _save(fig, out_stem, fmts)
        _finish(fig)
    return written

"""What every plot shares: the colour-blind-safe palette and per-algorithm styles, the matplotlib
settings, input checks, file names, deterministic saving and the paging of panels."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from expkit.core.errors import InputError

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType, RcKeyType

log = logging.getLogger(__name__)


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
_LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")

SUPPORTED_FORMATS = ("png", "pdf", "svg")
MAX_PANELS_PER_PAGE = 12
MAX_GRID_POINTS = 200
TRAJECTORY_AXES = ("step", "budget", "time")
_PNG_DPI = 150
#: Values larger (or, non-zero, smaller) in magnitude than these are drawn divided by a power of ten,
#: with the factor in the axis label: matplotlib's axis arithmetic overflows near the float limits.
_SCALE_ABOVE = 1e100
_SCALE_BELOW = 1e-100
_GOALS = ("minimize", "maximize")

_RC: dict[RcKeyType, Any] = {
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
    linestyle: LineStyleType


def _unique(items: Iterable[Any]) -> list[str]:
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


def _fit_texts(fig: Figure, *, rounds: int = 3) -> None:
    """Grow ``fig`` until every drawn artist (long names, captions, colour-bar labels) lies inside it.

    The layout engine makes room within the figure but cannot make the figure larger: a label wider
    than the space left would be cut at the edge. The figure grows by the overflow on each side,
    rounded up to 1/100 inch plus a margin (deterministic), and is laid out again. Figures without a layout
    engine are placed by hand and left as they are."""
    if fig.get_layout_engine() is None:  # placed by hand (the CD diagram): nothing would re-place the axes
        return
    for _ in range(rounds):
        fig.draw_without_rendering()  # runs the layout engine
        tight = fig.get_tightbbox()
        if tight is None:
            return
        width, height = fig.get_size_inches()
        grow_w = max(0.0, -tight.x0) + max(0.0, tight.x1 - width)
        grow_h = max(0.0, -tight.y0) + max(0.0, tight.y1 - height)
        if grow_w <= 0.005 and grow_h <= 0.005:
            return
        fig.set_size_inches(width + math.ceil(grow_w * 100 + 10) / 100, height + math.ceil(grow_h * 100 + 10) / 100)


def _save(fig: Figure, stem: Path, formats: Sequence[str], *, inside: Path | None = None) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format, atomically and without timestamps, after growing it
    so that no text is cut at its edge (:func:`_fit_texts`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    _fit_texts(fig)
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


def _display_scale(*arrays: Any) -> int:
    """The power of ten ``k`` to divide the plotted values by (0: draw them as they are): values whose
    largest magnitude is beyond 1e100 (or below 1e-100) are drawn as ``value / 10**k``, between 1 and 10."""
    finite = [np.abs(a[np.isfinite(a)]) for a in (np.asarray(x, dtype=float).ravel() for x in arrays)]
    top = max((float(a.max()) for a in finite if a.size), default=0.0)
    if top == 0.0 or _SCALE_BELOW <= top <= _SCALE_ABOVE:
        return 0
    return math.floor(math.log10(top))


def _scaled(values: Any, k: int) -> np.ndarray:
    """``values / 10**k``, with both factors inside the float range (``10**-324`` is not a float)."""
    array = np.asarray(values, dtype=float)
    if k == 0:
        return array
    half = k // 2
    with np.errstate(under="ignore"):
        scaled: np.ndarray = array * 10.0**-half * 10.0 ** -(k - half)
    return scaled


def _scale_label(label: str, k: int) -> str:
    """An axis label with the factor its values were divided by (see :func:`_display_scale`)."""
    return label if k == 0 else f"{label} ($\\times 10^{{{k}}}$)"


def _page_stem(out_dir: Path, base: str, page: int, n_pages: int) -> Path:
    return out_dir / (base if n_pages == 1 else f"{base}-{page}")


def _select(present: Iterable[Any], wanted: Iterable[Any] | None) -> list[str]:
    """The names to draw, in order: ``wanted`` if given, else those ``present`` in order of appearance."""
    return _unique(present) if wanted is None else _unique(wanted)

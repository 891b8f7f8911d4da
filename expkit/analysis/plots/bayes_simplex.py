"""The posterior simplex ("triangle") of the Bayesian signed-rank test (Benavoli et al., JMLR 2017, fig. 6):
each posterior sample (theta_a, theta_rope, theta_b) is a point in the triangle whose corners are "a
better", "equivalent" (top) and "b better"; the lines from the centre split it into the regions where each
theta is the largest, and the fraction of points in a region is its posterior probability."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from expkit.analysis.plots.base import OKABE_ITO, _check_formats, _finish, _grid, _save, _shorten, _style
from expkit.core.errors import InputError

#: At most this many pairs are drawn (one panel each).
MAX_SIMPLEX_PAIRS = 6
_H = math.sqrt(3) / 2


def plot_posterior_simplex(
    posteriors: Sequence[Mapping[str, Any]],
    *,
    out_stem: Path,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """One triangle per pair: ``posteriors`` are mappings with ``a``, ``b``, ``samples`` (S x 3 array of
    theta_a, theta_rope, theta_b), ``p_a``, ``p_rope``, ``p_b`` and ``rope``; the first
    :data:`MAX_SIMPLEX_PAIRS` are drawn. Writes ``<out_stem>.<fmt>``; deterministic bytes."""
    fmts = _check_formats(formats)
    items = [p for p in posteriors if p.get("samples") is not None and len(p["samples"])][:MAX_SIMPLEX_PAIRS]
    if not items:
        raise InputError("no posterior samples to draw: the Bayesian test was not run on any pair")
    with _style():
        rows, cols = _grid(len(items))
        fig = Figure(figsize=(3.4 * cols, 3.3 * rows), layout="constrained")
        for i, item in enumerate(items):
            _panel(fig.add_subplot(rows, cols, i + 1), item)
        written = _save(fig, Path(out_stem), fmts)
        _finish(fig)
    return written


def _panel(ax: Any, item: Mapping[str, Any]) -> None:
    """One triangle: corners a better (left), b better (right), equivalent (top), the samples as points."""
    s = np.asarray(item["samples"], dtype=float)
    x = s[:, 2] + 0.5 * s[:, 1]
    y = _H * s[:, 1]
    ax.plot([0, 1, 0.5, 0], [0, 0, _H, 0], color="black", linewidth=0.8)
    centre = (0.5, _H / 3)
    for mx, my in ((0.5, 0.0), (0.25, _H / 2), (0.75, _H / 2)):
        ax.plot([centre[0], mx], [centre[1], my], color="#888888", linewidth=0.6, linestyle="--")
    ax.scatter(x, y, s=2, color=OKABE_ITO[0], alpha=0.15, linewidths=0, rasterized=True)
    a, b = _shorten(str(item["a"]), 18), _shorten(str(item["b"]), 18)
    ax.text(0.0, -0.05, f"{a} better\nP = {float(item['p_a']):.3f}", ha="center", va="top", fontsize=8)
    ax.text(1.0, -0.05, f"{b} better\nP = {float(item['p_b']):.3f}", ha="center", va="top", fontsize=8)
    ax.text(0.5, _H + 0.03, f"equivalent, P = {float(item['p_rope']):.3f}", ha="center", va="bottom", fontsize=8)
    rope = float(item.get("rope") or 0.0)
    ax.set_title(f"{a} vs {b} (ROPE {rope:g})", fontsize=9)
    ax.set_xlim(-0.2, 1.2)
    ax.set_ylim(-0.25, _H + 0.15)
    ax.set_aspect("equal")
    ax.axis("off")

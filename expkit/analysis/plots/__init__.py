"""Figures for comparing algorithms: box plots, convergence curves, CD diagrams, win/tie/loss maps.

Every function takes plain pandas/dict input, draws on a fresh :class:`matplotlib.figure.Figure`
(never pyplot, so no global figure state leaks between calls), writes PNG and PDF (SVG on request)
and returns the written paths in a stable order. Output is deterministic: re-rendering the same input
gives byte-identical files (no creation dates or software stamps, seeded jitter, fixed SVG ids).

Colours come from the Okabe-Ito palette, which stays distinguishable for the common forms of colour
blindness. :func:`algorithm_colors` maps the spec-order algorithm list to colours; pass the same list
(``algorithms=``) to every plot so an algorithm has the same colour everywhere. With more algorithms
than colours the colours repeat and the marker, hatch and line style change instead.

Where things are: :mod:`.base` (palette, styles, checks, saving, paging), :mod:`.boxplots`,
:mod:`.convergence`, :mod:`.cd_diagram`, :mod:`.win_tie_loss`, :mod:`.bayes_simplex` (the posterior
triangle of the Bayesian signed-rank test).
"""

from __future__ import annotations

# The underscored helpers are re-exported for expkit.reproduce's comparison plots, which draw with them.
from expkit.analysis.plots.base import (
    MAX_GRID_POINTS,
    MAX_PANELS_PER_PAGE,
    OKABE_ITO,
    SUPPORTED_FORMATS,
    TRAJECTORY_AXES,
    AlgorithmStyle,
    algorithm_colors,
    algorithm_styles,
    safe_filename,
)
from expkit.analysis.plots.base import _check_formats as _check_formats
from expkit.analysis.plots.base import _finish as _finish
from expkit.analysis.plots.base import _grid as _grid
from expkit.analysis.plots.base import _pages as _pages
from expkit.analysis.plots.base import _save as _save
from expkit.analysis.plots.base import _shorten as _shorten
from expkit.analysis.plots.base import _style as _style
from expkit.analysis.plots.bayes_simplex import MAX_SIMPLEX_PAIRS, plot_posterior_simplex
from expkit.analysis.plots.boxplots import plot_boxplots
from expkit.analysis.plots.cd_diagram import cd_cliques, plot_cd_diagram, significance_cliques
from expkit.analysis.plots.convergence import convergence_bands, plot_convergence
from expkit.analysis.plots.win_tie_loss import plot_rank_overview

__all__ = [
    "MAX_GRID_POINTS",
    "MAX_PANELS_PER_PAGE",
    "MAX_SIMPLEX_PAIRS",
    "OKABE_ITO",
    "SUPPORTED_FORMATS",
    "TRAJECTORY_AXES",
    "AlgorithmStyle",
    "algorithm_colors",
    "algorithm_styles",
    "convergence_bands",
    "cd_cliques",
    "plot_boxplots",
    "plot_posterior_simplex",
    "plot_convergence",
    "plot_cd_diagram",
    "significance_cliques",
    "plot_rank_overview",
    "safe_filename",
]

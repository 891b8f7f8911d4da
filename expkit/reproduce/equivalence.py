"""The equivalence test on A12: does a re-run's distribution lie within a margin of the original's?

Two one-sided tests (TOST, Schuirmann 1987) on the Vargha-Delaney A12 of re-run versus original (the
Mann-Whitney functional, Wellek 2010 ch. 6): equivalent when the (1 - 2 alpha) confidence interval of
A12 lies inside 0.5 +/- margin. Runs with the same seed on both sides are paired (Munzel 1999
variance, t with n - 1 df); otherwise the samples are independent (Brunner-Munzel 2000 variance,
Satterthwaite df). Conventions in :data:`expkit.reproduce.comparison.CONVENTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from expkit.core.errors import InputError

DEFAULT_ALPHA = 0.05
#: Equivalence margin on A12: equivalent when A12 of re-run vs original lies inside 0.5 +/- 0.14,
#: i.e. inside (0.36, 0.64) — below Vargha & Delaney's "medium" threshold (0.64).
DEFAULT_MARGIN = 0.14


@dataclass(frozen=True)
class Equivalence:
    """TOST on A12 of re-run versus original (see :data:`expkit.reproduce.comparison.CONVENTIONS`)."""

    a12: float
    se: float
    df: float | None
    ci_low: float
    ci_high: float
    p: float
    paired: bool
    n: int  # pairs (paired) or the smaller sample (independent)
    feasible: bool
    min_n: int
    equivalent: bool


def _placements(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank placements: ``p_y[j]`` = share of x below y_j (ties half), ``p_x[i]`` likewise for x_i among y."""
    pooled = sps.rankdata(np.concatenate([x, y]))
    rx, ry = pooled[: len(x)], pooled[len(x) :]
    p_x = (rx - sps.rankdata(x)) / len(y)
    p_y = (ry - sps.rankdata(y)) / len(x)
    return p_x, p_y


def _a12_interval(
    x: np.ndarray, y: np.ndarray, *, paired: bool, alpha: float
) -> tuple[float, float, float | None, float]:
    """(A12, se, df, t quantile) for y against x (larger = better)."""
    p_x, p_y = _placements(x, y)
    # U of y over (n_x n_y), from the rank sum: exact (ranks are multiples of 1/2), unlike a mean of placements.
    ranks_y = sps.rankdata(np.concatenate([x, y]))[len(x) :]
    a12 = float((ranks_y.sum() - len(y) * (len(y) + 1) / 2) / (len(x) * len(y)))
    if paired:
        n = len(x)
        var = float(np.var(p_y - p_x, ddof=1)) / n if n > 1 else math.nan
        df: float | None = float(n - 1)
    else:
        v_y = float(np.var(p_y, ddof=1)) / len(y) if len(y) > 1 else math.nan
        v_x = float(np.var(p_x, ddof=1)) / len(x) if len(x) > 1 else math.nan
        var = v_x + v_y
        denom = (v_y**2 / (len(y) - 1) if len(y) > 1 else math.inf) + (
            v_x**2 / (len(x) - 1) if len(x) > 1 else math.inf
        )
        df = var**2 / denom if var > 1e-12 and denom > 0 else None
    # Placements are multiples of 1/(2n): a variance this small is rounding error of an exact zero.
    se = math.sqrt(var) if var > 1e-12 else 0.0
    q = float(sps.t.ppf(1 - alpha, df)) if df else math.nan
    return a12, se, df, q


def ideal_halfwidth(n_x: int, n_y: int, alpha: float) -> float:
    """Half-width of the TOST interval for two evenly spread, tie-free samples from one distribution:
    the narrowest interval independent samples of these sizes can give at A12 = 0.5."""
    x = (np.arange(n_x) + 0.5) / n_x
    y = (np.arange(n_y) + 0.5) / n_y + 1e-9  # no exact cross-sample ties when the sizes differ
    if n_x == n_y:
        y = x.copy()
    _, se, _, q = _a12_interval(x, y, paired=False, alpha=alpha)
    return q * se if math.isfinite(q) else math.inf


def min_replicates(*, alpha: float = DEFAULT_ALPHA, margin: float = DEFAULT_MARGIN, paired: bool) -> int:
    """The fewest runs per side for which the equivalence test can conclude at ``alpha``: paired, the
    smallest n with 2^-n < alpha; independent, the smallest n for which two identical tie-free samples of
    n runs each pass the TOST within ``margin``."""
    check_alpha_margin(alpha, margin)
    if paired:
        return max(2, math.floor(math.log2(1 / alpha)) + 1)
    n = 2
    while n < 1_000_000:
        if ideal_halfwidth(n, n, alpha) < margin:
            return n
        n = n + 1 if n < 1000 else int(n * 1.01) + 1
    return n  # pragma: no cover - unreachable for sane margins


def equivalence_test(
    original: Sequence[float],
    rerun: Sequence[float],
    *,
    goal: str,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    paired: bool = False,
) -> Equivalence:
    """TOST on A12 of ``rerun`` versus ``original`` (values in the metric's units; ``goal`` orients them).
    With ``paired`` the two sequences are matched by position (same seed)."""
    check_alpha_margin(alpha, margin)
    sign = 1.0 if goal == "maximize" else -1.0
    x = sign * np.asarray(original, dtype=float)
    y = sign * np.asarray(rerun, dtype=float)
    if paired and len(x) != len(y):
        raise InputError("paired equivalence test: the two samples must have the same length")
    if len(x) < 2 or len(y) < 2:
        raise InputError("the equivalence test needs at least two runs on each side")
    a12, se, df, q = _a12_interval(x, y, paired=paired, alpha=alpha)
    lo_b, hi_b = 0.5 - margin, 0.5 + margin
    if se > 0 and df:
        p = max(float(sps.t.sf((a12 - lo_b) / se, df)), float(sps.t.cdf((a12 - hi_b) / se, df)))
        lo, hi = a12 - q * se, a12 + q * se
    else:
        p = 0.0 if lo_b < a12 < hi_b else 1.0
        lo = hi = a12
    n = len(x) if paired else min(len(x), len(y))
    if paired:
        feasible = 2.0**-n < alpha
    else:
        feasible = ideal_halfwidth(len(x), len(y), alpha) < margin
    min_n = min_replicates(alpha=alpha, margin=margin, paired=paired)
    equivalent = bool(feasible and p < alpha)
    return Equivalence(
        a12=a12,
        se=se,
        df=df,
        ci_low=max(0.0, lo),
        ci_high=min(1.0, hi),
        p=p,
        paired=paired,
        n=n,
        feasible=bool(feasible),
        min_n=min_n,
        equivalent=equivalent,
    )


def check_alpha_margin(alpha: float, margin: float) -> None:
    """Raise :class:`~expkit.core.errors.InputError` unless ``alpha`` and ``margin`` both lie in (0, 0.5)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise InputError(f"--alpha {alpha!r}: give a significance level between 0 and 0.5, e.g. 0.05")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 0.5:
        raise InputError(
            f"--margin {margin!r}: give the equivalence margin on A12 between 0 and 0.5, e.g. 0.14 "
            "(A12 within 0.36-0.64)"
        )


def t_quantile(alpha: float, df: float | None) -> float:
    """The one-sided ``1 - alpha`` quantile of t with ``df`` degrees of freedom (normal when ``df`` is unknown)."""
    return float(sps.t.ppf(1 - alpha, df)) if df else float(sps.norm.ppf(1 - alpha))

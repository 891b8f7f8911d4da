"""The rank statistics the sequential procedure looks at, standardized, and the Hodges-Lehmann
repeated confidence interval it declares equivalence with.

Values are *oriented* first (:func:`oriented`): larger is better, a failed run (NaN) is -inf, worse
than every success as the failure policy ``penalize`` ranks it. A statistic is then the z-score of
a two-sided p-value with the sign of the observed effect, positive when the first algorithm is
better: z = sign * Phi^-1(1 - p/2). The p-value is exact where the exact null distribution applies
(Wilcoxon signed-rank without ties among the nonzero differences, n <= 300; Mann-Whitney U without
ties, both samples <= 50) and the normal approximation with the tie correction otherwise (what
scipy's ``method='auto'`` chooses, up to the size limits). Under the null these z-scores are
asymptotically the canonical joint normal sequence of :mod:`expkit.adaptive.boundaries` with
information proportional to the number of replicates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy import stats as sps

from expkit.analysis.stats import hl_paired, hl_two_sample, rank_sum_cdf, signed_rank_cdf

_SIGNED_RANK_EXACT_MAX = 300
_RANK_SUM_EXACT_MAX = 50


def oriented(values: np.ndarray, goal: str) -> np.ndarray:
    """Values with larger = better (``goal='minimize'`` negates them) and failed runs (NaN) at -inf."""
    out = np.asarray(values, dtype=float)
    out = -out if goal == "minimize" else out.copy()
    out[np.isnan(out)] = -np.inf
    return out


def _z_from_p(p: float, sign: float) -> float:
    if sign == 0 or p >= 1.0:
        return 0.0
    return float(math.copysign(float(special.ndtri(1.0 - max(p, 1e-300) / 2.0)), sign))


def _paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        d: np.ndarray = a - b
    d[np.isnan(d)] = 0.0  # two failures (-inf - -inf): a tie
    return d


def signed_rank_z(a: np.ndarray, b: np.ndarray) -> float:
    """Standardized Wilcoxon signed-rank statistic of the paired oriented samples ``a`` and ``b``
    (zero differences dropped, Wilcoxon's convention; > 0: ``a`` is better)."""
    d = _paired_differences(a, b)
    d = d[d != 0.0]
    n = d.size
    if n == 0:
        return 0.0
    ranks = sps.rankdata(np.abs(d))
    t_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    ties = np.unique(np.abs(d), return_counts=True)[1]
    if ties.max() == 1 and n <= _SIGNED_RANK_EXACT_MAX:
        cdf = signed_rank_cdf(n)
        t = int(round(t_plus))
        lower, upper = cdf[t], 1.0 - (cdf[t - 1] if t > 0 else 0.0)
        p = min(1.0, 2.0 * min(lower, upper))
    else:
        var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties**3 - ties)) / 48.0
        if var <= 0:
            return 0.0
        p = float(min(1.0, 2.0 * special.ndtr(-abs(t_plus - mean) / math.sqrt(var))))
    return _z_from_p(p, t_plus - mean)


def rank_sum_z(a: np.ndarray, b: np.ndarray) -> float:
    """Standardized Mann-Whitney U of the independent oriented samples ``a`` and ``b`` (> 0: ``a`` is
    better)."""
    m, n = a.size, b.size
    if m == 0 or n == 0:
        return 0.0
    both = np.concatenate([a, b])
    ranks = sps.rankdata(both)
    u = float(ranks[:m].sum()) - m * (m + 1) / 2.0
    mean = m * n / 2.0
    ties = np.unique(both, return_counts=True)[1]
    if ties.max() == 1 and max(m, n) <= _RANK_SUM_EXACT_MAX:
        cdf = rank_sum_cdf(m, n)
        k = int(round(u))
        lower, upper = cdf[k], 1.0 - (cdf[k - 1] if k > 0 else 0.0)
        p = min(1.0, 2.0 * min(lower, upper))
    else:
        total = m + n
        var = m * n / 12.0 * ((total + 1) - float(np.sum(ties**3 - ties)) / (total * (total - 1)))
        if var <= 0:
            return 0.0
        p = float(min(1.0, 2.0 * special.ndtr(-abs(u - mean) / math.sqrt(var))))
    return _z_from_p(p, u - mean)


def statistic(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    """The standardized rank statistic of ``a`` against ``b`` (oriented values, > 0: ``a`` is better)."""
    return signed_rank_z(a, b) if paired else rank_sum_z(a, b)


def shift_interval(a: np.ndarray, b: np.ndarray, paired: bool, level: float) -> tuple[float, float] | None:
    """Hodges-Lehmann confidence interval of the shift ``a - b`` (oriented units) with two-sided
    error ``level``, from the exact order statistics; None when it is not finite or the exact
    distribution cannot reach the confidence 1 - ``level`` with these sample sizes."""
    if not 0.0 < level < 1.0:
        return None
    if paired:
        result = hl_paired(_paired_differences(a, b)[None, :], level)
    else:
        result = hl_two_sample(a[None, :], b[None, :], level)
    low, high, confidence = float(result.low[0]), float(result.high[0]), float(result.confidence[0])
    if not (math.isfinite(low) and math.isfinite(high)) or confidence < 1.0 - level - 1e-12:
        return None
    return low, high

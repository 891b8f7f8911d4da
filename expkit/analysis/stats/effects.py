"""Effect sizes of a pair of algorithms and their confidence intervals, vectorised over many pairs.

* the **Hodges-Lehmann shift** in the metric's units, ``a - b``: for paired runs the median of the Walsh
  averages of the paired differences, for independent runs the median of all pairwise differences;
  its distribution-free confidence interval is the pair of order statistics of the same averages or
  differences that the exact signed-rank / rank-sum distribution selects (Hollander & Wolfe 1999,
  sections 3.3 and 4.3; what R's ``wilcox.test(conf.int=TRUE)`` computes when it uses the exact
  distribution), with the confidence it actually achieves;
* the **matched-pairs rank-biserial correlation** r = (R+ - R-) / (n(n+1)/2) (Kerby 2014) of paired runs,
  with a Wilson score interval for (1 + r)/2 on an effective sample size from the U-statistic variance
  (after Korn & Graubard 1998);
* a **score interval for A12** (Newcombe 2006, method 5).

Failed runs entered as +-infinity (``failures = 'penalize'``) are handled: a difference or an average
of two opposite infinities is a tie (0), as the rank tests treat it; an estimate that is not finite is
NaN, and the caller says why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import special
from scipy import stats as sps

from expkit.analysis.stats.common import _quiet
from expkit.analysis.stats.rank_tests import _row_chunks

#: Exact null distributions up to these sizes (cached); beyond, the normal approximation of the
#: critical order statistic (Hollander & Wolfe's large-sample formula).
_SIGNED_RANK_EXACT_MAX = 300
_RANK_SUM_EXACT_MAX = 50


class Intervals(NamedTuple):
    """Per row: an estimate and its confidence interval; ``confidence`` is the level achieved (the
    exact order-statistic intervals cannot hit every level), ``exact`` whether it comes from the exact
    null distribution (False: the normal approximation of the critical value)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    exact: np.ndarray


# ---------------------------------------------------------------------------------------------------
# null distributions and critical order statistics
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ <= t), t = 0 .. n(n+1)/2, of the Wilcoxon signed-rank statistic for n pairs without ties
    (generating function prod_j (1 + q^j) / 2, built with additions only, so it is accurate for any n)."""
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    top = 0
    for j in range(1, n + 1):
        shifted = pmf[: top + 1].copy()
        pmf[: top + 1] *= 0.5
        pmf[j : j + top + 1] += 0.5 * shifted
        top += j
    cdf: np.ndarray = np.minimum(np.cumsum(pmf), 1.0)
    return cdf


@functools.lru_cache(maxsize=512)
def rank_sum_cdf(m: int, n: int) -> np.ndarray:
    """P(U <= u), u = 0 .. mn, of the Mann-Whitney U for samples of m and n values without ties, from
    the recursion p(u; i, j) = i/(i+j) p(u - j; i-1, j) + j/(i+j) p(u; i, j-1) (additions only)."""
    if m > n:
        return rank_sum_cdf(n, m)  # U of m vs n and of n vs m have the same distribution
    # rows[j] = pmf of U for (i, j) with the current i; start with i = 0: U = 0 for every j
    rows = [np.ones(1) for _ in range(n + 1)]
    for i in range(1, m + 1):
        new = [np.ones(1)]  # j = 0: U = 0
        for j in range(1, n + 1):
            pmf = np.zeros(i * j + 1)
            pmf[j : j + len(rows[j])] += i / (i + j) * rows[j]  # the largest value is from the first sample
            pmf[: len(new[j - 1])] += j / (i + j) * new[j - 1]
            new.append(pmf)
        rows = new
    cdf: np.ndarray = np.minimum(np.cumsum(rows[n]), 1.0)
    return cdf


def _critical_from_cdf(cdf: np.ndarray, alpha: float) -> tuple[int, float]:
    """R's ``qu``: the smallest t with P(T <= t) >= alpha/2 (at least 1), and the confidence the
    interval [W_(qu), W_(M + 1 - qu)] achieves, 1 - 2 P(T <= qu - 1)."""
    qu = int(np.searchsorted(cdf, alpha / 2.0 - 1e-12 * alpha, side="left"))
    qu = max(qu, 1)
    return qu, float(1.0 - 2.0 * cdf[qu - 1])


@functools.lru_cache(maxsize=4096)
def walsh_critical(n: int, alpha: float) -> tuple[int, float, bool]:
    """(k, achieved confidence, exact) for the interval [W_(k), W_(M + 1 - k)] of the M = n(n+1)/2
    sorted Walsh averages of n paired differences (1-based order statistics)."""
    if n <= _SIGNED_RANK_EXACT_MAX:
        k, conf = _critical_from_cdf(signed_rank_cdf(n), alpha)
        return k, conf, True
    mean, sd = n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    k = max(1, int(math.floor(mean - special.ndtri(1.0 - alpha / 2.0) * sd + 0.5)))
    return k, float(1.0 - 2.0 * special.ndtr((k - 1 + 0.5 - mean) / sd)), False


@functools.lru_cache(maxsize=4096)
def shift_critical(m: int, n: int, alpha: float) -> tuple[int, float, bool]:
    """(k, achieved confidence, exact) for the interval [D_(k), D_(mn + 1 - k)] of the m n sorted
    pairwise differences of two independent samples (1-based order statistics)."""
    if max(m, n) <= _RANK_SUM_EXACT_MAX:
        k, conf = _critical_from_cdf(rank_sum_cdf(m, n), alpha)
        return k, conf, True
    mean, sd = m * n / 2.0, math.sqrt(m * n * (m + n + 1) / 12.0)
    k = max(1, int(math.floor(mean - special.ndtri(1.0 - alpha / 2.0) * sd + 0.5)))
    return k, float(1.0 - 2.0 * special.ndtr((k - 1 + 0.5 - mean) / sd)), False


# ---------------------------------------------------------------------------------------------------
# Hodges-Lehmann shifts
# ---------------------------------------------------------------------------------------------------


def _order_stats(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, k-th smallest and k-th largest of each row (1-based k), from one partial sort."""
    total = values.shape[-1]
    mid_lo, mid_hi = (total - 1) // 2, total // 2
    kth = sorted({k - 1, mid_lo, mid_hi, total - k})
    part = np.partition(values, kth, axis=-1)
    median = 0.5 * (part[:, mid_lo] + part[:, mid_hi])
    return median, part[:, k - 1], part[:, total - k]


def _ties_for_opposite_infinities(values: np.ndarray) -> np.ndarray:
    """inf - inf and inf + (-inf) are NaN; for the ranks they are ties, so they become 0."""
    return np.where(np.isnan(values), 0.0, values)


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def hl_paired(d: np.ndarray, alpha: float) -> Intervals:
    """Hodges-Lehmann shift of each row of paired differences ``d`` (rows, n; no NaN): the median of
    the Walsh averages (d_i + d_j)/2, i <= j, and its exact distribution-free interval."""
    rows, n = d.shape
    est, low, high = (np.full(rows, np.nan) for _ in range(3))
    if rows == 0 or n == 0:
        return Intervals(est, low, high, np.full(rows, np.nan), np.zeros(rows, dtype=bool))
    k, conf, exact = walsh_critical(n, alpha)
    iu, ju = np.triu_indices(n)
    has_inf = bool(np.isinf(d).any())
    with _quiet():
        for chunk in _row_chunks(rows, 4 * len(iu)):
            half = d[chunk] * 0.5  # halves first: no overflow near the largest float
            walsh = half[:, iu] + half[:, ju]
            if has_inf:
                walsh = _ties_for_opposite_infinities(walsh)
            est[chunk], low[chunk], high[chunk] = _order_stats(walsh, k)
    return Intervals(
        _finite_or_nan(est), _finite_or_nan(low), _finite_or_nan(high), np.full(rows, conf), np.full(rows, exact)
    )


def hl_two_sample(a: np.ndarray, b: np.ndarray, alpha: float) -> Intervals:
    """Hodges-Lehmann shift a - b of each row pair of independent samples ``a`` (rows, m) and ``b``
    (rows, n) (no NaN): the median of the m n differences a_i - b_j and its exact distribution-free interval."""
    rows, m = a.shape
    n = b.shape[-1]
    est, low, high = (np.full(rows, np.nan) for _ in range(3))
    if rows == 0 or m == 0 or n == 0:
        return Intervals(est, low, high, np.full(rows, np.nan), np.zeros(rows, dtype=bool))
    k, conf, exact = shift_critical(m, n, alpha)
    has_inf = bool(np.isinf(a).any() or np.isinf(b).any())
    with _quiet():
        for chunk in _row_chunks(rows, 4 * m * n):
            diff = (a[chunk][:, :, None] - b[chunk][:, None, :]).reshape(-1, m * n)
            if has_inf:
                diff = _ties_for_opposite_infinities(diff)
            est[chunk], low[chunk], high[chunk] = _order_stats(diff, k)
    return Intervals(
        _finite_or_nan(est), _finite_or_nan(low), _finite_or_nan(high), np.full(rows, conf), np.full(rows, exact)
    )


# ---------------------------------------------------------------------------------------------------
# rank-biserial correlation and A12: point estimates and intervals
# ---------------------------------------------------------------------------------------------------


def rank_biserial_paired(d: np.ndarray) -> np.ndarray:
    """Kerby's (2014) matched-pairs rank-biserial correlation of each row of differences ``d`` (rows, n;
    no NaN): (R+ - R-) / (n(n+1)/2), ranks of |d| averaged over ties, zero differences ranked with the
    others and split evenly between R+ and R- (scipy's ``zero_method='zsplit'``), so they cancel in
    R+ - R- and count in n. > 0: the first sample is larger."""
    rows, n = d.shape
    if rows == 0 or n == 0:
        return np.full(rows, np.nan)
    ranks = np.asarray(sps.rankdata(np.abs(d), axis=-1))
    signed = np.sum(np.sign(d) * ranks, axis=-1)
    out: np.ndarray = signed / (n * (n + 1) / 2.0)
    return out


def _wilson(p: np.ndarray, n_eff: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion ``p`` on ``n_eff`` observations with quantile ``z``."""
    z2 = z * z
    denominator = 1.0 + z2 / n_eff
    centre = (p + z2 / (2.0 * n_eff)) / denominator
    half = z * np.sqrt(p * (1.0 - p) / n_eff + z2 / (4.0 * n_eff * n_eff)) / denominator
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def rank_biserial_interval(d: np.ndarray, r: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval of the matched-pairs rank-biserial correlation ``r`` of each row of ``d``.

    r is, up to its diagonal terms, the U-statistic (2/(n(n-1))) sum_{i<j} sign(d_i + d_j), an estimate
    of rho = 2 P(D1 + D2 > 0) - 1 (sign of a Walsh average). Its variance is estimated by Hoeffding's
    first-order term, 4/n Var(h1(D)) with h1(x) = E sign(x + D) estimated per pair by the mean of
    sign(d_i + d_j) over j != i. The interval for p = (1 + r)/2 is the Wilson score interval with the
    effective sample size n_eff = min(n, p(1 - p) / Var(p)) and the t quantile with n - 1 degrees of
    freedom (after Korn & Graubard 1998), so it stays inside [-1, 1] and does not collapse when every
    difference has the same sign; it is mapped back as 2p - 1."""
    rows, n = d.shape
    low, high = np.full(rows, np.nan), np.full(rows, np.nan)
    if rows == 0 or n == 0:
        return low, high
    if n == 1:
        return np.full(rows, -1.0), np.full(rows, 1.0)
    var_h = np.empty(rows)
    eye = np.eye(n, dtype=bool)
    with _quiet():
        for chunk in _row_chunks(rows, 3 * n * n):
            x = d[chunk]
            signs = np.nan_to_num(np.sign(x[:, :, None] + x[:, None, :]), nan=0.0)
            signs[:, eye] = 0.0
            h1 = signs.sum(axis=-1) / (n - 1)
            var_h[chunk] = np.var(h1, axis=-1, ddof=1)
        p = np.clip((1.0 + r) / 2.0, 0.0, 1.0)
        var_p = var_h / n  # Var(r)/4 = (4/n) Var(h1) / 4
        n_eff = np.where(var_p > 0, p * (1.0 - p) / np.where(var_p > 0, var_p, 1.0), float(n))
        n_eff = np.clip(n_eff, 1.0, float(n))
        z = np.full(rows, float(sps.t.ppf(1.0 - alpha / 2.0, n - 1)))
        lo_p, hi_p = _wilson(p, n_eff, z)
    ok = np.isfinite(r)
    low[ok], high[ok] = 2.0 * lo_p[ok] - 1.0, 2.0 * hi_p[ok] - 1.0
    return low, high


def a12_interval(a12: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's (2006, method 5) score interval for A12 = P(a > b) + P(a = b)/2 with samples of
    ``n_a`` and ``n_b`` runs: the theta with (theta - A12)^2 = z^2 V(theta), where
    V(theta) = theta(1 - theta) / (n_a n_b) [(2N - 1) - (3N - 3) / ((2 - theta)(1 + theta))] and
    N = (n_a + n_b)/2 (Hanley & McNeil's variance under an exponential model). The limits are found by
    bisection on [0, A12] and [A12, 1]; they stay inside [0, 1] and do not collapse at A12 = 0 or 1."""
    a12 = np.asarray(a12, dtype=float)
    m, n = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    ok = np.isfinite(a12) & (m > 0) & (n > 0)
    low, high = np.full(a12.shape, np.nan), np.full(a12.shape, np.nan)
    if not ok.any():
        return low, high
    t, mm, nn = a12[ok], m[ok], n[ok]
    z2 = float(special.ndtri(1.0 - alpha / 2.0)) ** 2
    big_n = (mm + nn) / 2.0

    def excess(theta: np.ndarray) -> np.ndarray:
        v = theta * (1 - theta) / (mm * nn) * ((2 * big_n - 1) - (3 * big_n - 3) / ((2 - theta) * (1 + theta)))
        out: np.ndarray = (theta - t) ** 2 - z2 * v  # > 0: theta lies outside the interval
        return out

    low[ok] = _bisect(excess, np.zeros_like(t), t.copy(), outside_low=True)
    high[ok] = _bisect(excess, t.copy(), np.ones_like(t), outside_low=False)
    return low, high


def _bisect(
    excess: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, *, outside_low: bool
) -> np.ndarray:
    """The boundary between theta outside the interval (``excess`` > 0) and inside it, on [lo, hi] per
    row; ``outside_low``: the outside is the lower end of the bracket. A bracket end that is inside the
    interval (no crossing) is the limit itself (0 or 1)."""
    edge = lo if outside_low else hi
    with _quiet():
        inside_at_edge = ~(excess(edge) > 0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            outside = excess(mid) > 0
            if outside_low:
                lo, hi = np.where(outside, mid, lo), np.where(outside, hi, mid)
            else:
                lo, hi = np.where(outside, lo, mid), np.where(outside, mid, hi)
    out: np.ndarray = np.where(inside_at_edge, edge, 0.5 * (lo + hi))
    return out

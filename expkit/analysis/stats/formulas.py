"""Closed-form pieces of the statistics: Holm's step-down correction, the Vargha-Delaney magnitude of
A12, the Nemenyi critical value and critical difference, the Iman-Davenport F from a Friedman
statistic, and Demsar's Friedman statistic from average ranks."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from expkit.analysis.stats.common import _quiet
from expkit.analysis.stats.conventions import A12_LARGE, A12_MEDIUM, A12_SMALL


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of one family (NaN entries are not part of the family and stay NaN)."""
    values = np.asarray(p, dtype=float)
    return _holm_grouped(values, np.zeros(values.shape, dtype=np.int64), 1)


def a12_magnitude(a12: float) -> str:
    """Vargha & Delaney (2000) magnitude label of A12: negligible, small, medium or large."""
    return str(_magnitude(np.asarray([a12], dtype=float))[0])


def nemenyi_q(alpha: float, k: int) -> float:
    """Critical value q_alpha of the Nemenyi test for k algorithms (Demsar 2006, Table 5a)."""
    return _nemenyi_q(float(alpha), int(k))


def nemenyi_cd(alpha: float, k: int, n: int) -> float:
    """Nemenyi critical difference of average ranks for k algorithms on n datasets."""
    return _nemenyi_q(float(alpha), int(k)) * math.sqrt(k * (k + 1) / (6.0 * n))


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, int, int, float]:
    """Iman-Davenport statistic from a Friedman chi2 on n blocks and k algorithms: (F, df1, df2, p)."""
    df1, df2 = k - 1, (k - 1) * (n - 1)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        return math.inf, df1, df2, 0.0
    f = (n - 1) * chi2 / denominator
    return float(f), df1, df2, float(sps.f.sf(f, df1, df2))


def friedman_chi2_from_ranks(average_ranks: Sequence[float] | np.ndarray, n: int) -> float:
    """Demsar's (2006) Friedman statistic from average ranks (no tie correction)."""
    r = np.asarray(average_ranks, dtype=float)
    k = r.size
    return float(12.0 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4.0))


def _holm_grouped(p: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Holm adjustment within each group (NaN = not tested, left out of the family and kept NaN)."""
    out = np.full(p.shape, np.nan)
    if p.size == 0:
        return out
    valid = ~np.isnan(p)
    m = np.bincount(group[valid], minlength=n_groups)
    order = np.lexsort((np.where(valid, p, 2.0), group))
    g_sorted = group[order]
    p_sorted = p[order]
    starts = np.searchsorted(g_sorted, np.arange(n_groups))
    position = np.arange(p.size) - starts[g_sorted]
    scaled = np.minimum(1.0, (m[g_sorted] - position) * p_sorted)
    scaled = np.where(valid[order], scaled, 0.0)  # untested rows sit at the end of their group
    # running maximum within each group: one padded row per group, exact (no offsets)
    width = int(np.bincount(group, minlength=n_groups).max())
    table = np.zeros((n_groups, width))
    table[g_sorted, position] = scaled
    running = np.maximum.accumulate(table, axis=1)[g_sorted, position]
    adjusted = np.where(valid[order], running, np.nan)
    out[order] = adjusted
    return out


def _magnitude(a12: np.ndarray) -> np.ndarray:
    distance = np.round(np.abs(a12 - 0.5), 12)
    labels = np.full(a12.shape, None, dtype=object)
    ok = ~np.isnan(a12)
    labels[ok & (distance < A12_SMALL - 0.5 - 1e-12)] = "negligible"
    labels[ok & (distance >= A12_SMALL - 0.5 - 1e-12) & (distance < A12_MEDIUM - 0.5 - 1e-12)] = "small"
    labels[ok & (distance >= A12_MEDIUM - 0.5 - 1e-12) & (distance < A12_LARGE - 0.5 - 1e-12)] = "medium"
    labels[ok & (distance >= A12_LARGE - 0.5 - 1e-12)] = "large"
    return labels


@functools.lru_cache(maxsize=256)
def _nemenyi_qs(alphas: tuple[float, ...], k: int) -> tuple[float, ...]:
    """q_alpha for several alphas in one scipy call (the quantile costs a numerical integration)."""
    if k < 2:
        return tuple(math.nan for _ in alphas)
    unique = sorted(set(alphas))
    with _quiet():
        q = sps.studentized_range.ppf(1.0 - np.asarray(unique, dtype=float), k, np.inf) / math.sqrt(2.0)
    by_alpha = dict(zip(unique, np.atleast_1d(q).tolist()))
    return tuple(float(by_alpha[a]) for a in alphas)


def _nemenyi_q(alpha: float, k: int) -> float:
    return _nemenyi_qs((alpha,), k)[0]

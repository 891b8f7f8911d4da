"""The two-sample rank tests, vectorised: Mann-Whitney U and the Wilcoxon signed-rank test over many
pairs per scipy call, with scipy's per-pair choice of method; the exact signed-rank permutation
distribution (:func:`_signed_rank_permutation_p`); and the smallest p-value each test can reach for
given sample sizes (``minimal_p_*``), used to say when a test cannot be significant.

Speed: scipy is called once per batch of pairs with equal sample sizes (``axis=-1``). scipy's
``method='auto'`` decides between the exact and the asymptotic test once for a whole batch (exact only
when *no* slice has ties), so each batch is first split by what scipy would choose for one pair; the
numbers are then identical to one scipy call per pair (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

#: scipy's ``method='auto'`` of mannwhitneyu uses the exact distribution unless both samples have
#: more than this many values (or there are ties); wilcoxon uses it for n <= 50 without zeros/ties.
_MWU_EXACT_MAX = 8
_WILCOXON_EXACT_MAX = 50
#: With zeros or ties and at most this many pairs, scipy's ``method='auto'`` runs a permutation
#: test that enumerates all 2**n sign flips; expkit computes the same distribution directly.
_WILCOXON_PERMUTATION_MAX = 13

#: Elements handed to one scipy call: bounds memory, and ~10,000 pairs per call run faster than one
#: giant call (the arrays stay in cache; measured ~25% faster at 95,000 pairs).
_MAX_ELEMENTS_PER_CALL = 600_000


def minimal_p_mannwhitneyu(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value scipy's Mann-Whitney U can give for samples of these sizes (no ties)."""
    if n_a < 1 or n_b < 1:
        return 1.0
    if n_a > _MWU_EXACT_MAX and n_b > _MWU_EXACT_MAX:
        mu = n_a * n_b / 2.0
        s = math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12.0)
        return float(min(1.0, 2.0 * special.ndtr(-(n_a * n_b - mu - 0.5) / s)))
    return float(min(1.0, 2.0 / math.comb(n_a + n_b, n_a)))


def minimal_p_wilcoxon(n: int) -> float:
    """Smallest two-sided p-value scipy's Wilcoxon signed-rank test can give for n pairs (no ties, no zeros)."""
    if n < 1:
        return 1.0
    if n <= _WILCOXON_EXACT_MAX:
        return float(min(1.0, 2.0 ** (1 - n)))
    mn = n * (n + 1) / 4.0
    se = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    return float(min(1.0, 2.0 * special.ndtr(-mn / se)))


def minimal_p_friedman(n_blocks: int, k: int) -> float:
    """Smallest p-value of the Friedman chi-square test with n blocks and k treatments."""
    if n_blocks < 1 or k < 2:
        return 1.0
    return float(special.chdtrc(k - 1, n_blocks * (k - 1)))


def minimal_p_kruskal(sizes: Sequence[int]) -> float:
    """Smallest p-value of the Kruskal-Wallis test for these group sizes (groups fully separated)."""
    sizes = [int(s) for s in sizes if s > 0]
    total = sum(sizes)
    if len(sizes) < 2 or total < 2:
        return 1.0
    best = 0.0
    # rank sums of fully separated groups, smallest groups at the extremes maximise H; try both orders
    for order in (sorted(sizes), sorted(sizes, reverse=True)):
        start, h = 0, 0.0
        for size in order:
            rank_sum = size * (2 * start + size + 1) / 2.0
            h += rank_sum**2 / size
            start += size
        best = max(best, 12.0 / (total * (total + 1)) * h - 3.0 * (total + 1))
    return float(special.chdtrc(len(sizes) - 1, best))


# ---------------------------------------------------------------------------------------------------
# vectorised scipy calls
# ---------------------------------------------------------------------------------------------------


def _mwu_batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``scipy.stats.mannwhitneyu(a[i], b[i])`` with scipy's per-pair choice of method."""
    rows, n1, n2 = a.shape[0], a.shape[-1], b.shape[-1]
    u = np.empty(rows)
    p = np.empty(rows)
    method = np.empty(rows, dtype=object)
    parts: list[tuple[np.ndarray | None, str]]
    if n1 > _MWU_EXACT_MAX and n2 > _MWU_EXACT_MAX:
        parts = [(None, "asymptotic")]
    else:
        ties = _row_has_ties(np.concatenate([a, b], axis=-1))
        parts = [(np.flatnonzero(~ties), "exact"), (np.flatnonzero(ties), "asymptotic")]
    for idx, name in parts:
        for sel in _selections(idx, rows, n1 + n2):
            res = sps.mannwhitneyu(a[sel], b[sel], axis=-1)
            u[sel] = res.statistic
            p[sel] = res.pvalue
        method[slice(None) if idx is None else idx] = name
    return u, p, method


def wilcoxon_method(d: np.ndarray) -> str:
    """The method scipy's ``wilcoxon(d, method='auto')`` uses for the differences ``d`` of one pair,
    which is the one expkit uses: 'exact' for n <= 50 without zero differences or tied |d|,
    'permutation' (all 2**n sign flips) for n <= 13 with zeros or ties, else 'asymptotic'
    (tie-corrected normal approximation)."""
    d = np.asarray(d, dtype=float)
    if not (np.any(d == 0) or _row_has_ties(np.abs(d)[None, :])[0]):
        return "exact" if d.size <= _WILCOXON_EXACT_MAX else "asymptotic"
    return "permutation" if d.size <= _WILCOXON_PERMUTATION_MAX else "asymptotic"


def _wilcoxon_batch(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``scipy.stats.wilcoxon(d[i], zero_method='zsplit', method='auto')``: the statistic and
    the p-value of scipy's choice for each row alone (see :func:`wilcoxon_method`). Rows scipy would
    give a permutation test get the same p-value from :func:`_signed_rank_permutation_p`.

    ``wilcoxon(x, y)`` computes ``d = x - y`` first, so passing the differences is the same call.
    """
    rows, n = d.shape[0], d.shape[-1]
    stat = np.full(rows, np.nan)
    p = np.full(rows, np.nan)
    method = np.full(rows, None, dtype=object)
    if rows == 0 or n == 0:
        return stat, p, method
    parts: list[tuple[np.ndarray | None, str]]
    if n > _WILCOXON_EXACT_MAX:
        parts = [(None, "asymptotic")]
    else:
        flagged = np.any(d == 0, axis=-1) | _row_has_ties(np.abs(d))
        tied = "permutation" if n <= _WILCOXON_PERMUTATION_MAX else "asymptotic"
        parts = [(np.flatnonzero(~flagged), "exact"), (np.flatnonzero(flagged), tied)]
    for idx, name in parts:
        for sel in _selections(idx, rows, n):
            # The permutation rows' statistic (min(R+, R-)) does not depend on the method.
            res = sps.wilcoxon(
                d[sel], zero_method="zsplit", method="asymptotic" if name == "permutation" else name, axis=-1
            )
            stat[sel] = res.statistic
            p[sel] = _signed_rank_permutation_p(d[sel]) if name == "permutation" else res.pvalue
        method[slice(None) if idx is None else idx] = name
    return stat, p, method


def _signed_rank_permutation_p(d: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the signed-rank test (``zero_method='zsplit'``) from the exact null
    distribution of R+ over all 2**n sign flips of each row, given its (tied, averaged) ranks.

    This is what ``scipy.stats.wilcoxon(d, zero_method='zsplit', method=PermutationMethod())``
    computes by enumerating the flips (its ``method='auto'`` for n <= 13 with zeros or ties):
    p = min(1, 2 min(P(R+ <= r), P(R+ >= r))). Here the distribution comes from a dynamic program
    over doubled ranks, which are integers (average ranks are multiples of 1/2; the zeros' share
    of R+, half their rank sum, is the same constant for every flip and cancels out), so the
    comparisons are exact. A row with a NaN gets NaN."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    out = np.full(d.shape[0], np.nan)
    rows = np.flatnonzero(~np.isnan(d).any(axis=-1))
    n = d.shape[-1]
    per_call = max(1, _MAX_ELEMENTS_PER_CALL // (n * (n + 1) + 1))
    for start in range(0, rows.size, per_call):
        sel = rows[start : start + per_call]
        x = d[sel]
        ranks2 = np.rint(2 * sps.rankdata(np.abs(x), axis=-1)).astype(np.int64)
        # A zero's flip leaves R+ unchanged: weight 0 doubles every count, as scipy's enumeration does.
        weights = np.where(x != 0, ranks2, 0)
        observed = np.sum(np.where(x > 0, ranks2, 0), axis=-1)
        size = int(weights.sum(axis=-1).max()) + 1
        counts = np.zeros((sel.size, size))  # counts[r, s]: sign flips of row r whose R+ (doubled) is s
        counts[:, 0] = 1.0
        grid = np.arange(size)
        for j in range(n):
            src = grid[None, :] - weights[:, j, None]
            counts = counts + np.where(src >= 0, np.take_along_axis(counts, np.maximum(src, 0), axis=1), 0.0)
        cdf = np.cumsum(counts, axis=1)
        total = cdf[:, -1]  # 2 ** n, exact in floating point
        at_most = np.take_along_axis(cdf, observed[:, None], axis=1)[:, 0]
        below = np.where(observed > 0, np.take_along_axis(cdf, np.maximum(observed - 1, 0)[:, None], axis=1)[:, 0], 0.0)
        out[sel] = np.minimum(1.0, 2.0 * np.minimum(at_most, total - below) / total)
    return out


def _selections(idx: np.ndarray | None, rows: int, cost_per_row: int) -> Iterator[Any]:
    """Index selections of at most ~_MAX_ELEMENTS_PER_CALL elements; a plain slice when all rows fit."""
    per_call = max(1, _MAX_ELEMENTS_PER_CALL // max(1, cost_per_row))
    if idx is None:
        for start in range(0, rows, per_call):
            yield slice(start, min(rows, start + per_call))
        return
    if idx.size == 0:
        return
    if idx.size == rows and rows <= per_call:
        yield slice(None)
        return
    for start in range(0, idx.size, per_call):
        yield idx[start : start + per_call]


def _row_chunks(rows: int, cost_per_row: int) -> Iterator[slice]:
    per_call = max(1, 2_000_000 // max(1, cost_per_row))
    for start in range(0, rows, per_call):
        yield slice(start, min(rows, start + per_call))


def _row_has_ties(values: np.ndarray) -> np.ndarray:
    if values.shape[-1] < 2:
        return np.zeros(values.shape[:-1], dtype=bool)
    s = np.sort(values, axis=-1)
    ties: np.ndarray = np.any(s[..., 1:] == s[..., :-1], axis=-1)
    return ties

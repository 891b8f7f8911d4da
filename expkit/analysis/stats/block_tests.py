"""Omnibus tests over blocks (datasets) that stay exact with few blocks: the Friedman test on complete
blocks and the Skillings-Mack test when some blocks lack an algorithm.

The p-value is P(statistic >= observed) under the permutation null hypothesis: within every block, each
arrangement of the block's (average) ranks over its algorithms is equally likely, given the block's ties.
It is computed, in this order of preference:

* **exact** -- the whole permutation distribution. For Friedman, a dynamic program over the rank sums:
  the state is the sorted vector of (doubled, so integer) rank sums, which is enough because the statistic
  sum_j R_j^2 is symmetric in the algorithms; each block adds every distinct arrangement of its ranks with
  equal probability, the first block is held fixed (relabelling the algorithms changes nothing). This is the
  enumeration of all (k!)^(N-1) rankings, merged where they give the same rank sums. For Skillings-Mack
  (not symmetric in the algorithms) every combination of the blocks' arrangements is enumerated when there
  are at most :data:`_SM_EXACT_MAX` of them;
* **monte-carlo** -- :data:`MC_RESAMPLES` random permutations within every block drawn with the fixed seed
  :data:`MC_SEED` (so ``stats.json`` is byte-identical from run to run), p = (c + 1) / (B + 1) where c of
  the B permutations give a statistic at least as large (Phipson & Smyth 2010: never zero, and a valid
  p-value for any B), with its standard error sqrt(p (1 - p) / B);
* **asymptotic** -- many blocks: Iman-Davenport's F for Friedman, chi-square with k - 1 df for
  Skillings-Mack.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

from expkit.analysis.stats.common import _quiet
from expkit.analysis.stats.formulas import iman_davenport
from expkit.analysis.stats.results import BlockTestResult
from expkit.core.errors import InputError

#: Random permutations of a Monte-Carlo p-value, and the fixed seed they are drawn with.
MC_RESAMPLES = 9999
MC_SEED = 14
#: Elements the exact Friedman dynamic program may touch (~0.1 s); beyond, Monte-Carlo.
_EXACT_WORK = 4_000_000
#: Combinations of block arrangements the exact Skillings-Mack enumeration may visit.
_SM_EXACT_MAX = 20_000
#: Observed cells (datasets x algorithms) up to which the Monte-Carlo p-value is computed (~0.3 s); beyond,
#: the asymptotic approximation, which is accurate with that many blocks.
_MC_MAX_CELLS = 2_000
#: Elements of one Monte-Carlo chunk (bounds memory).
_MC_CHUNK = 2_000_000
METHODS = ("auto", "exact", "monte-carlo", "asymptotic")


def friedman_test(values: object, *, method: str = "auto") -> BlockTestResult:
    """The Friedman test on complete blocks: rows = blocks (datasets), columns = algorithms, no NaN.

    The statistic is the tie-corrected chi-square (``scipy.stats.friedmanchisquare``); the p-value comes
    from the exact permutation distribution when it is cheap, else from a seeded Monte-Carlo sample of it
    when the table has at most :data:`_MC_MAX_CELLS` cells, else from Iman-Davenport's F (``method``
    forces one of 'exact', 'monte-carlo', 'asymptotic'). The direction of the metric does not matter."""
    x = _table(values, allow_missing=False)
    method = _check_method(method)
    n, k = x.shape
    ranks2 = np.rint(2 * sps.rankdata(x, axis=1)).astype(np.int64)  # doubled ranks: integers with ties
    patterns = tuple(sorted(tuple(row) for row in np.sort(ranks2, axis=1).tolist()))
    observed = _sum_of_squares(ranks2.sum(axis=0))
    ties, log_arrangements = _ties(ranks2)
    chi2 = _tie_corrected_chi2(ranks2, ties, n, k)
    # P(every block falls in one given arrangement): the exact smallest p without ties, a bound with them
    log_rankings = float(log_arrangements.sum()) - float(log_arrangements.max())
    p_aligned = math.exp(-log_rankings)
    if chi2 is None:
        note = "every dataset ties all algorithms: the Friedman statistic is undefined and p = 1"
        return BlockTestResult("friedman", None, k - 1, 1.0, "exact", n, None, None, 1.0, note)
    if method in ("auto", "exact"):
        budget = None if method == "exact" else _EXACT_WORK
        null = _friedman_null(patterns, budget)
        if null is not None:
            values_s, tail = null
            p = float(tail[np.searchsorted(values_s, observed)])
            note = (
                "exact: the permutation distribution of the Friedman statistic over all "
                f"(k!)^(N-1) = {_count_text(log_rankings)} rankings (given the ties)"
            )
            return BlockTestResult("friedman", chi2, k - 1, p, "exact", n, None, None, float(tail[-1]), note)
        if method == "exact":
            raise InputError(f"the exact Friedman distribution for {n} datasets x {k} algorithms is too large")
    if method == "monte-carlo" or (method == "auto" and n * k <= _MC_MAX_CELLS):
        sample = _friedman_mc_null(patterns)
        count = int(sample.size - np.searchsorted(sample, observed, side="left"))
        return _monte_carlo_result("friedman", chi2, k - 1, n, count, p_aligned)
    return _friedman_asymptotic(chi2, n, k, p_aligned)


def skillings_mack_test(values: object, *, method: str = "auto") -> BlockTestResult:
    """The Skillings-Mack (1981) test: rows = blocks (datasets), columns = algorithms, NaN = no value.

    Blocks with fewer than two values carry no information and are left out. Within a block with k_i
    values the ranks r become sqrt(12 / (k_i + 1)) (r - (k_i + 1) / 2); A_j sums them per algorithm and
    SM = A' Sigma^- A with Sigma_jt = -lambda_jt (blocks holding both j and t) and Sigma_jj = sum_t
    lambda_jt. On complete blocks without ties SM is Friedman's statistic; on a balanced incomplete
    design it is Durbin's. The p-value: exact enumeration when there are at most :data:`_SM_EXACT_MAX`
    arrangements, else seeded Monte-Carlo up to :data:`_MC_MAX_CELLS` observed cells, else chi-square
    with k - 1 df (``method`` forces one). Raises InputError when the blocks do not connect every
    algorithm with every other."""
    x = _table(values, allow_missing=True)
    method = _check_method(method)
    seen = ~np.isnan(x)
    x = x[seen.sum(axis=1) >= 2]
    seen = ~np.isnan(x)
    k = x.shape[1]
    if x.shape[0] == 0:
        raise InputError("the Skillings-Mack test needs a dataset with values of two or more algorithms")
    scores = _sm_scores(x, seen)
    inverse = _sm_inverse(seen)
    observed = _quadratic(scores.sum(axis=0), inverse)
    n = x.shape[0]
    if not np.any(scores):
        note = "every dataset ties all its algorithms: no difference, p = 1"
        return BlockTestResult("skillings_mack", 0.0, k - 1, 1.0, "exact", n, None, None, 1.0, note)
    blocks = [tuple(sorted(row[m].tolist())) for row, m in zip(scores, seen)]
    log_combos = sum(_log_arrangements(b) for b in blocks)
    if method == "exact" and log_combos > math.log(100 * _SM_EXACT_MAX):
        raise InputError(f"the exact Skillings-Mack distribution has e^{log_combos:.0f} arrangements: too many")
    if method == "exact" or (method == "auto" and log_combos <= math.log(_SM_EXACT_MAX) + 1e-9):
        arrangements = [_distinct_arrangements(b) for b in blocks]
        combos = math.prod(len(a) for a in arrangements)
        stats_all = _sm_enumerate(arrangements, seen, inverse)
        tol = 1e-9 * max(1.0, observed)
        p = float(np.mean(stats_all >= observed - tol))
        p_min = float(np.mean(stats_all >= stats_all.max() - tol))
        note = f"exact: the permutation distribution of SM over all {combos} arrangements of the ranks within datasets"
        return BlockTestResult("skillings_mack", observed, k - 1, p, "exact", n, None, None, p_min, note)
    if method == "monte-carlo" or (method == "auto" and int(seen.sum()) <= _MC_MAX_CELLS):
        sample = _sm_mc_null(scores, seen, inverse)
        count = int(np.sum(sample >= observed - 1e-9 * max(1.0, observed)))
        return _monte_carlo_result("skillings_mack", observed, k - 1, n, count, None)
    p = float(special.chdtrc(k - 1, observed))
    note = f"asymptotic: chi-square with {k - 1} df (conservative with ties)"
    return BlockTestResult("skillings_mack", observed, k - 1, p, "asymptotic", n, None, None, None, note)


def minimal_p_friedman_exact(n_blocks: int, k: int) -> float:
    """Smallest p-value of the exact Friedman test with n blocks and k algorithms without ties: every
    block ranks the algorithms the same way, probability (1/k!)^(n-1)."""
    if n_blocks < 1 or k < 2:
        return 1.0
    return float(math.exp(-(n_blocks - 1) * math.lgamma(k + 1)))


def sm_connected(seen: np.ndarray) -> bool:
    """Whether the blocks with two or more values (rows of ``seen``) connect every algorithm (column)
    with every other, directly or through others: what the Skillings-Mack test needs."""
    used = seen[seen.sum(axis=1) >= 2].astype(float)
    k = seen.shape[1]
    if k < 2 or used.shape[0] == 0:
        return False
    reach = (used.T @ used) > 0
    linked = reach[0].copy()
    for _ in range(k):
        grown = reach[:, linked].any(axis=1) | linked
        if np.array_equal(grown, linked):
            break
        linked = grown
    return bool(linked.all())


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _table(values: object, *, allow_missing: bool) -> np.ndarray:
    """``values`` as a 2-D float array with at least two columns; InputError otherwise."""
    try:
        x = np.array(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError(f"the block table must hold numbers only: {err}") from err
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 1:
        raise InputError(f"the block table must be datasets x algorithms with two or more algorithms, not {x.shape}")
    if np.isinf(x).any() or (not allow_missing and np.isnan(x).any()):
        raise InputError("the Friedman test needs a finite value in every cell: use skillings_mack_test")
    return x


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    return method


def _sum_of_squares(v: np.ndarray) -> int:
    return int(np.dot(v.astype(np.int64), v.astype(np.int64)))


def _ties(ranks2: np.ndarray) -> tuple[float, np.ndarray]:
    """sum over blocks and tie groups of t^3 - t, and per block the log of its number of distinct
    arrangements, log(k! / prod t!), from doubled ranks (one vectorised pass)."""
    n, k = ranks2.shape
    keys = np.arange(n, dtype=np.int64)[:, None] * (2 * k + 2) + ranks2
    groups, counts = np.unique(keys, return_counts=True)
    rows = groups // (2 * k + 2)
    ties = float(np.sum(counts.astype(float) ** 3 - counts))
    log_arrangements = math.lgamma(k + 1) - np.bincount(rows, weights=special.gammaln(counts + 1.0), minlength=n)
    return ties, log_arrangements


def _tie_corrected_chi2(ranks2: np.ndarray, ties: float, n: int, k: int) -> float | None:
    """scipy's tie-corrected Friedman chi-square from doubled ranks; None when every block ties all."""
    r = ranks2.sum(axis=0) / 2.0
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:
        return None
    uncorrected = 12.0 / (n * k * (k + 1)) * float(np.sum(r * r)) - 3.0 * n * (k + 1)
    return float(uncorrected / correction)


def _log_arrangements(pattern: Sequence[float]) -> float:
    """log of the number of distinct arrangements of a block's ranks: k! / prod(t!) over tie groups."""
    _, counts = np.unique(np.asarray(pattern), return_counts=True)
    return math.lgamma(len(pattern) + 1) - sum(math.lgamma(int(c) + 1) for c in counts)


def _count_text(log_count: float) -> str:
    """A count given by its natural logarithm, in words: '46,656' or '10^23.4'."""
    log10 = log_count / math.log(10)
    return f"{round(10**log10):,}" if log10 < 15 else f"10^{log10:.1f}"


@functools.lru_cache(maxsize=64)
def _distinct_arrangements(pattern: tuple[float, ...]) -> np.ndarray:
    """Every distinct ordering of the block's values (ties give fewer than k!)."""
    return np.unique(np.array(list(itertools.permutations(pattern)), dtype=np.asarray(pattern).dtype), axis=0)


@functools.lru_cache(maxsize=64)
def _friedman_null(patterns: tuple[tuple[int, ...], ...], budget: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact null distribution of S = sum_j (doubled rank sum_j)^2 given the blocks' doubled ranks
    (``patterns``, sorted): ascending values of S and P(S >= value). None when it would cost more than
    ``budget`` elements (the first block is held fixed; the state is the sorted vector of rank sums)."""
    k = len(patterns[0])
    base = 2 * k * len(patterns) + 1
    if k > 9 or k * math.log2(base) >= 62 or (budget is not None and math.lgamma(k + 1) > math.log(budget)):
        return None
    first = max(patterns, key=_log_arrangements)
    rest = list(patterns)
    rest.remove(first)
    states = np.array([first], dtype=np.int64)
    weights: np.ndarray = np.ones(1)
    work = 0
    powers = base ** np.arange(k, dtype=np.int64)
    for pattern in rest:
        size = math.exp(_log_arrangements(pattern))
        work += int(len(states) * size * k)
        if budget is not None and work > budget:
            return None
        arrangements = _distinct_arrangements(pattern)
        new = (states[:, None, :] + arrangements[None, :, :]).reshape(-1, k)
        new.sort(axis=1)
        unique, first_of, inverse = np.unique(new @ powers, return_index=True, return_inverse=True)
        weights = np.bincount(inverse.reshape(-1), weights=np.repeat(weights / len(arrangements), len(arrangements)))
        states = new[first_of]
    s = np.einsum("ij,ij->i", states, states)
    order = np.argsort(s, kind="stable")
    s, w = s[order], weights[order]
    values, start = np.unique(s, return_index=True)
    mass = np.add.reduceat(w, start)
    tail = np.minimum(1.0, np.cumsum(mass[::-1])[::-1] / w.sum())
    return values, tail


@functools.lru_cache(maxsize=64)
def _friedman_mc_null(patterns: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Sorted S of :data:`MC_RESAMPLES` seeded random permutations within every block."""
    ranks2 = np.array(patterns, dtype=np.int64)
    n, k = ranks2.shape
    rng = np.random.default_rng(MC_SEED)
    out = np.empty(MC_RESAMPLES, dtype=np.int64)
    chunk = max(1, _MC_CHUNK // (n * k))
    for start in range(0, MC_RESAMPLES, chunk):
        b = min(chunk, MC_RESAMPLES - start)
        sums = rng.permuted(np.broadcast_to(ranks2, (b, n, k)), axis=-1).sum(axis=1)
        out[start : start + b] = np.einsum("ij,ij->i", sums, sums)
    out.sort()
    return out


def _monte_carlo_result(
    test: str, statistic: float, df: int, n: int, count: int, p_min: float | None
) -> BlockTestResult:
    """p = (c + 1) / (B + 1) with its standard error, and the note that says so."""
    p = (count + 1) / (MC_RESAMPLES + 1)
    se = math.sqrt(p * (1.0 - p) / MC_RESAMPLES)
    note = (
        f"Monte-Carlo: {MC_RESAMPLES} random permutations within datasets (seed {MC_SEED}), "
        f"p = (c + 1)/(B + 1) with c = {count}, SE {se:.2g}"
    )
    return BlockTestResult(test, statistic, df, p, "monte-carlo", n, MC_RESAMPLES, se, p_min, note)


def _friedman_asymptotic(chi2: float, n: int, k: int, p_aligned: float) -> BlockTestResult:
    """Iman-Davenport's F; when every dataset ranks the algorithms identically F is infinite and the
    p-value is the exact probability of that outcome (which may underflow to 0: printed as a bound)."""
    f, df1, df2, p = iman_davenport(chi2, n, k)
    if math.isinf(f):
        note = (
            "every dataset ranks the algorithms identically: Iman-Davenport's F is infinite, so p is the "
            "exact probability of that outcome (1/k!)^(N-1) given the ties"
        )
        return BlockTestResult("friedman", chi2, k - 1, p_aligned, "asymptotic", n, None, None, p_aligned, note)
    note = f"asymptotic: Iman-Davenport F({df1}, {df2}) = {f:.4g} from the tie-corrected chi-square"
    return BlockTestResult("friedman", chi2, k - 1, p, "asymptotic", n, None, None, p_aligned, note)


def _sm_scores(x: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Skillings-Mack's adjusted ranks sqrt(12/(k_i+1)) (r - (k_i+1)/2) (0 where there is no value)."""
    scores = np.zeros(x.shape)
    for i, (row, m) in enumerate(zip(x, seen)):
        ki = int(m.sum())
        scores[i, m] = math.sqrt(12.0 / (ki + 1)) * (sps.rankdata(row[m]) - (ki + 1) / 2.0)
    return scores


def _sm_inverse(seen: np.ndarray) -> np.ndarray:
    """The k x k matrix Q with SM = A' Q A: the inverse of the first k-1 rows and columns of Sigma
    (zero in the last row and column), a generalised inverse of Sigma when the design is connected."""
    if not sm_connected(seen):
        raise InputError(
            "the datasets do not connect every algorithm with every other (some pair never shares a dataset, "
            "directly or through others): the Skillings-Mack test does not apply"
        )
    used = seen.astype(float)
    lam = used.T @ used
    sigma = -lam
    np.fill_diagonal(sigma, 0.0)
    np.fill_diagonal(sigma, -sigma.sum(axis=1))
    k = seen.shape[1]
    q = np.zeros((k, k))
    with _quiet():
        q[: k - 1, : k - 1] = np.linalg.inv(sigma[: k - 1, : k - 1])
    return q


def _quadratic(a: np.ndarray, q: np.ndarray) -> float:
    return float(a @ q @ a)


def _sm_enumerate(arrangements: list[np.ndarray], seen: np.ndarray, q: np.ndarray) -> np.ndarray:
    """SM for every combination of the blocks' arrangements (each equally likely)."""
    k = seen.shape[1]
    totals = np.zeros((1, k))
    for arr, m in zip(arrangements, seen):
        placed = np.zeros((len(arr), k))
        placed[:, m] = arr
        totals = (totals[:, None, :] + placed[None, :, :]).reshape(-1, k)
    result: np.ndarray = np.einsum("bi,ij,bj->b", totals, q, totals)
    return result


def _sm_mc_null(scores: np.ndarray, seen: np.ndarray, q: np.ndarray) -> np.ndarray:
    """SM of :data:`MC_RESAMPLES` seeded random permutations of each block's scores among its values."""
    k = seen.shape[1]
    rng = np.random.default_rng(MC_SEED)
    sizes = seen.sum(axis=1)
    groups = []
    for size in sorted(set(sizes.tolist())):
        rows = np.flatnonzero(sizes == size)
        compact = np.sort(np.array([scores[i, seen[i]] for i in rows]), axis=1)
        onehot = np.zeros((rows.size * size, k))
        onehot[np.arange(rows.size * size), np.concatenate([np.flatnonzero(seen[i]) for i in rows])] = 1.0
        groups.append((compact, onehot))
    out = np.empty(MC_RESAMPLES)
    chunk = max(1, _MC_CHUNK // max(1, int(seen.sum())))
    for start in range(0, MC_RESAMPLES, chunk):
        b = min(chunk, MC_RESAMPLES - start)
        totals = np.zeros((b, k))
        for compact, onehot in groups:
            perm = rng.permuted(np.broadcast_to(compact, (b, *compact.shape)), axis=-1)
            totals += perm.reshape(b, -1) @ onehot
        out[start : start + b] = np.einsum("bi,ij,bj->b", totals, q, totals)
    return out

"""The Bayesian signed-rank test per dataset over the paired replicates (Benavoli et al., JMLR 2017), for
paired designs (``paired: true``: replicates paired by seed), vectorised over all the pairs it tests.

The test is the one of :mod:`~expkit.analysis.stats.bayes` (baycomp's ``SignedRankTest``) with the
observations being a pair's differences on the seeds where both algorithms have a run (oriented by the
goal: z > 0 means a is better; a failed run counts as worst, so a failed-vs-succeeded difference is
+-inf, and a Walsh average of +inf and -inf counts half to each side), instead of its cell values over
datasets. For each pair: P(a better), P(equivalent), P(b better) and the decision at the threshold.

Speed (20 algorithms x 500 datasets x 30 replicates = 95,000 pairs): one Dirichlet sample is a weight
vector over the n + 1 sorted observations (the pseudo-observation 0 included); with it,

    theta_a = 1 - sum_k w_k cum(lo_k) / W^2,   theta_b = sum_k w_k cum(dn_k) / W^2

where cum is the cumulative weight, W the total and lo_k / dn_k count the observations below 2r - z_k /
-2r - z_k (ties with the threshold count half: the mean of the strict and the non-strict count). So
theta is a sum of one product w_k cum(c) per sorted position k, and the pair selects which c: a sparse
matrix with n + 1 entries per pair (half-entries on ties) times the dense table of all products
w_k cum(c) of the posterior samples, one sparse-dense product for all the pairs at once. The weights
are **common random numbers**: one set of posterior samples per number of replicates n (exponentials,
and a gamma(0.5) draw for the pseudo-observation, inserted at its sorted position), seeded from
SHA-256 of ``"expkit-bayes-signed-rank-per-dataset\\0<n>"`` (:func:`size_seed`). A pair's result thus
depends only on its own differences, never on the other pairs, their order or the row order of the
table, and stats.json stays byte-identical.

Posterior samples: :data:`LOCAL_SAMPLES` = 2,000 per pair (Monte-Carlo standard error of a probability
sqrt(p(1 - p)/2000): at most 0.011, 0.0049 at p = 0.95), a fifth of the 10,000 of the test over datasets;
with them the pairs of the benchmark's scale take about 1 s. Which pairs: every pair with at most
:data:`~expkit.analysis.stats.bayes.BAYES_ALL_PAIRS_UP_TO` algorithms, otherwise on each dataset the
pairs with its best algorithm (best cell value), the comparisons ``summary.csv`` reports, and with the
``--control`` algorithm when one is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sparse

from expkit.analysis.stats.bayes import (
    BAYES_ALL_PAIRS_UP_TO,
    BAYES_CALIBRATED_FROM,
    BAYES_PRIOR,
    check_rope,
    check_threshold,
)
from expkit.analysis.stats.common import _name_list
from expkit.analysis.stats.prepare import _Prepared
from expkit.core.errors import InputError

#: Posterior samples per dataset-pair (Monte-Carlo standard error of a probability at most 0.011).
LOCAL_SAMPLES = 2_000
_SEED_TAG = "expkit-bayes-signed-rank-per-dataset"
#: Products w_k cum(c) x samples held at once (the dense table of one sample block).
_TABLE_CELLS = 1 << 22
#: Pairs per sparse-dense product (their thetas, pairs x samples, stay in the CPU cache).
_PAIR_CHUNK = 256
_TIE = 1e-12  # thetas are sums of weights: rounding ~1e-16

CONVENTION = (
    "Bayesian signed-rank test (Benavoli et al. 2017, as baycomp's SignedRankTest: Dirichlet process with "
    "a pseudo-observation 0 of prior strength 0.5) on each pair's paired differences over the seeds of "
    "one dataset, oriented by the goal (z > 0: a better); P(a better), P(equivalent), P(b better) are the "
    "fractions of posterior samples in which that region's theta is the largest (ties shared); the "
    "decision is the region reaching the threshold. Monte-Carlo with common random numbers: one set of "
    "posterior weights per number of paired replicates n, seeded by SHA-256 of "
    "'expkit-bayes-signed-rank-per-dataset\\0<n>', so a pair's result depends only on its own differences."
)


def size_seed(n: int) -> int:
    """The seed of the posterior samples shared by the pairs with ``n`` paired replicates: SHA-256 of
    'expkit-bayes-signed-rank-per-dataset\\0<n>', first 8 bytes little-endian."""
    digest = hashlib.sha256(f"{_SEED_TAG}\0{int(n)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shared_weights(n: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The unnormalised Dirichlet(0.5, 1, ..., 1) weights of the pairs with ``n`` observations: standard
    exponentials (n_samples x n, the observations in sorted order) and the gamma(0.5) weights of the
    pseudo-observation (n_samples,), from ``numpy.random.default_rng(size_seed(n))``."""
    rng = np.random.default_rng(size_seed(n))
    return rng.standard_exponential((n_samples, n)), rng.standard_gamma(BAYES_PRIOR, n_samples)


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Per row of the differences given to :func:`signed_rank_batch`: the number of paired observations,
    P(a better), P(equivalent), P(b better) (NaN without observations), the Monte-Carlo standard error
    and the decision ('a', 'b', 'equivalent', 'undecided'; None without observations)."""

    n: np.ndarray
    p_a: np.ndarray
    p_rope: np.ndarray
    p_b: np.ndarray
    mc_se: np.ndarray
    decision: np.ndarray
    rope: float
    threshold: float
    n_samples: int


def signed_rank_batch(
    diffs: np.ndarray,
    *,
    rope: float | None = 0.0,
    threshold: float = 0.95,
    n_samples: int = LOCAL_SAMPLES,
) -> BatchResult:
    """The Bayesian signed-rank test of each row of ``diffs`` (pairs x slots: the paired differences,
    oriented so that > 0 means a is better; NaN = no pair in that slot): vectorised over the rows, with the
    posterior samples shared by the rows with the same number of observations (:func:`shared_weights`)."""
    r, level = check_rope(rope), check_threshold(threshold)
    if int(n_samples) < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples!r}")
    z = np.atleast_2d(np.asarray(diffs, dtype=float))
    count = (~np.isnan(z)).sum(axis=1)
    probs = np.full((len(z), 3), np.nan)
    z_sorted = np.sort(z, axis=1)  # NaN last
    for size in np.unique(count[count > 0]):
        rows = np.flatnonzero(count == size)
        probs[rows] = _size_group(z_sorted[rows, : int(size)], r, int(n_samples))
    p_a, p_rope, p_b = probs[:, 0], probs[:, 1], probs[:, 2]
    with np.errstate(invalid="ignore"):
        spread = np.maximum(np.maximum(p_a * (1 - p_a), p_b * (1 - p_b)), p_rope * (1 - p_rope))
        se = np.sqrt(spread / int(n_samples))
    decision = np.full(len(z), None, dtype=object)
    has = count > 0
    decision[has] = "undecided"
    decision[has & (p_rope >= level)] = "equivalent"
    decision[has & (p_b >= level)] = "b"
    decision[has & (p_a >= level)] = "a"
    return BatchResult(count, p_a, p_rope, p_b, se, decision, r, level, int(n_samples))


def _cuts(z: np.ndarray, rope: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of sorted observations ``z`` (rows x n) and each probe v in (z_1, ..., z_n, 0) (the last one
    the pseudo-observation): how many observations lie strictly below / at or below 2r - v (the
    complement of a's region) and -2r - v (b's region); rows x (n + 1) each. Infinite z compare as
    infinities (a sum of +inf and -inf meets the threshold: it counts half)."""
    rows, n = z.shape
    probes = np.concatenate((z, np.zeros((rows, 1))), axis=1)
    out = [np.empty((rows, n + 1), dtype=np.int64) for _ in range(4)]
    step = max(1, (1 << 21) // ((n + 1) * n))
    for start in range(0, rows, step):
        block, left = probes[start : start + step], z[start : start + step, None, :]
        with np.errstate(invalid="ignore"):
            up, dn = 2 * rope - block, -2 * rope - block
        out[0][start : start + step] = (left < up[:, :, None]).sum(axis=-1)
        out[1][start : start + step] = (left <= up[:, :, None]).sum(axis=-1)
        out[2][start : start + step] = (left < dn[:, :, None]).sum(axis=-1)
        out[3][start : start + step] = (left <= dn[:, :, None]).sum(axis=-1)
    return out[0], out[1], out[2], out[3]


def _products(exp: np.ndarray, gam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The table of products of posterior samples ((n + 1)^2 + 1 rows x samples): row k (n + 1) + c is
    e_k C(c) for an observation k < n and g C(c) for k = n, with e the observations' weights in sorted
    order, g the pseudo-observation's and C(c) the cumulative weight of the c smallest observations; the
    last row is g^2. Also 1 / W^2 per sample (W = C(n) + g)."""
    s, n = exp.shape
    cum = np.zeros((s, n + 1))
    np.cumsum(exp, axis=1, out=cum[:, 1:])
    weights = np.concatenate((exp, gam[:, None]), axis=1)
    table = np.empty(((n + 1) * (n + 1) + 1, s))
    table[:-1] = (weights[:, :, None] * cum[:, None, :]).reshape(s, (n + 1) * (n + 1)).T
    table[-1] = gam * gam
    total = cum[:, n] + gam
    result: tuple[np.ndarray, np.ndarray] = (table, 1.0 / (total * total))
    return result


def _select(lo: np.ndarray, hi: np.ndarray, pseudo: float) -> sparse.csr_matrix:
    """The sparse selection, one row per pair, of sum_{i,j} w_i w_j [z_i + z_j below the threshold] (ties
    half) from :func:`_products`' table: e_k (C(lo_k) + C(hi_k)) / 2 per observation k, twice
    g (C(lo) + C(hi)) / 2 for the pseudo-observation against the observations (both orders), and
    ``pseudo`` g^2 for the pseudo-observation with itself."""
    rows, m = lo.shape
    coef = np.ones(m)
    coef[-1] = 2.0
    same = lo == hi
    base = np.arange(m) * m
    cols = np.stack((base + lo, base + hi, np.zeros_like(lo)), axis=-1)
    data = np.stack((np.where(same, coef, coef / 2), np.broadcast_to(coef / 2, lo.shape), np.zeros(lo.shape)), axis=-1)
    keep = np.stack((np.ones_like(same), ~same, np.zeros_like(same)), axis=-1)
    keep[:, -1, 2] = True  # the g^2 entry, after the last probe
    cols[:, -1, 2], data[:, -1, 2] = m * m, pseudo
    counts = keep.sum(axis=(1, 2))
    indptr = np.concatenate(([0], np.cumsum(counts)))
    return sparse.csr_matrix((data[keep], cols[keep], indptr), shape=(rows, m * m + 1))


def _thetas(
    table: np.ndarray,
    inv: np.ndarray,
    cuts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rope: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(theta_a, theta_b), pairs x samples, of the pairs with ``cuts`` from the products ``table``. The
    pseudo-observation with itself (0 + 0) is below 2r for r > 0, a tie at r = 0, never below -2r."""
    up_lo, up_hi, dn_lo, dn_hi = cuts
    theta_a = np.asarray(_select(up_lo, up_hi, 1.0 if rope > 0 else 0.5) @ table)
    theta_a *= -inv
    theta_a += 1.0
    theta_b = np.asarray(_select(dn_lo, dn_hi, 0.0 if rope > 0 else 0.5) @ table)
    theta_b *= inv
    return theta_a, theta_b


def _wins(theta_a: np.ndarray, theta_b: np.ndarray) -> np.ndarray:
    """Per pair, the posterior samples won by a, the ROPE and b (a tie within 1e-12 shared); pairs x 3."""
    theta_r = 1.0 - theta_a - theta_b
    top = np.maximum(np.maximum(theta_a, theta_b), theta_r) - _TIE
    win_a, win_r, win_b = theta_a >= top, theta_r >= top, theta_b >= top
    shared = win_a.astype(np.int8) + win_r + win_b
    if np.all(shared == 1):
        return np.stack((win_a.sum(axis=1), win_r.sum(axis=1), win_b.sum(axis=1)), axis=1).astype(float)
    share = 1.0 / shared
    return np.stack(((win_a * share).sum(axis=1), (win_r * share).sum(axis=1), (win_b * share).sum(axis=1)), axis=1)


def _size_group(z_sorted: np.ndarray, rope: float, n_samples: int) -> np.ndarray:
    """P(a better), P(equivalent), P(b better) of rows that all have n = z_sorted.shape[1] observations:
    one table of products per block of posterior samples, shared by all of them."""
    n = z_sorted.shape[1]
    cuts = _cuts(z_sorted, rope)
    exp, gam = shared_weights(n, n_samples)
    wins = np.zeros((len(z_sorted), 3))
    block = max(1, _TABLE_CELLS // ((n + 1) * (n + 1) + 1))
    for s0 in range(0, n_samples, block):
        table, inv = _products(exp[s0 : s0 + block], gam[s0 : s0 + block])
        for c0 in range(0, len(z_sorted), _PAIR_CHUNK):
            part = slice(c0, c0 + _PAIR_CHUNK)
            theta_a, theta_b = _thetas(table, inv, (cuts[0][part], cuts[1][part], cuts[2][part], cuts[3][part]), rope)
            wins[part] += _wins(theta_a, theta_b)
    result: np.ndarray = wins / n_samples
    return result


# ---------------------------------------------------------------------------------------------------
# the analysis' per-dataset block
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LocalBayes:
    """The per-dataset Bayesian signed-rank tests of a paired analysis, aligned with the rows of
    :attr:`~expkit.analysis.stats.analysis.Analysis.pairwise` (``tested`` marks the rows in the family;
    the others have NaN and None), with the options and the rule that picked the pairs."""

    algorithms: tuple[str, ...]
    a: np.ndarray  # algorithm index of side a, per pairwise row
    b: np.ndarray
    tested: np.ndarray
    result: BatchResult
    rope_given: bool
    rule: str

    def decision_text(self, row: int) -> str | None:
        """'<a> better', '<b> better', 'equivalent', 'undecided' (None: not tested)."""
        d = self.result.decision[row]
        if d is None:
            return None
        if d in ("a", "b"):
            return f"{self.algorithms[(self.a if d == 'a' else self.b)[row]]} better"
        return str(d)

    def record(self, row: int) -> dict[str, Any] | None:
        """The ``bayesian`` entry of a stats.json pair record (None: not tested)."""
        res = self.result
        if res.decision[row] is None:
            return None
        return {
            "n": int(res.n[row]),
            "p_a_better": float(res.p_a[row]),
            "p_equivalent": float(res.p_rope[row]),
            "p_b_better": float(res.p_b[row]),
            "decision": self.decision_text(row),
            "mc_se": float(res.mc_se[row]),
        }

    def counts(self) -> dict[str, int]:
        """How many tested pairs were decided for a side, equivalent or undecided."""
        d = self.result.decision
        return {
            "tested": int(sum(x is not None for x in d)),
            "decided_better": int(sum(x in ("a", "b") for x in d)),
            "equivalent": int(sum(x == "equivalent" for x in d)),
            "undecided": int(sum(x == "undecided" for x in d)),
        }

    def to_dict(self) -> dict[str, Any]:
        """The top-level ``bayesian_per_dataset`` block of stats.json (the pairs' numbers are in the
        per-dataset pair records)."""
        res = self.result
        sizes = sorted({int(n) for n, d in zip(res.n, res.decision) if d is not None})
        se = res.mc_se[~np.isnan(res.mc_se)]
        return {
            "test": "bayesian_signed_rank",
            "over": "paired replicates of each dataset (differences by seed)",
            "convention": CONVENTION,
            "pairs_tested": self.rule,
            "rope": res.rope,
            "rope_given": self.rope_given,
            "threshold": res.threshold,
            "prior": BAYES_PRIOR,
            "method": "monte-carlo",
            "n_samples": res.n_samples,
            "seeds": {str(n): size_seed(n) for n in sizes},
            "mc_se_max": float(se.max()) if se.size else None,
            "decisions": self.counts(),
            "where": "per_dataset[].pairwise.pairs[].bayesian",
        }

    def head(self) -> str:
        """The method in one clause, for the notes and the report."""
        rope = f"ROPE {self.result.rope:g}" if self.rope_given else "ROPE 0, none given for this metric"
        return (
            f"{rope}, decision at P ≥ {self.result.threshold:g}, {self.result.n_samples} seeded posterior samples "
            f"per pair (Monte-Carlo SE ≤ {_max_se(self.result.n_samples):.2g}), on {self.rule}"
        )

    def lines(self) -> list[str]:
        """The terminal summary's line: a block of its own (not under "Per dataset:", whose lines are one per
        dataset and become the HTML report's per-dataset table)."""
        c = self.counts()
        if not c["tested"]:
            return []
        line = (
            f"Bayesian signed-rank per dataset over the paired replicates ({self.head()}): "
            f"{c['decided_better']} of {c['tested']} pair(s) decided for a side, {c['equivalent']} equivalent, "
            f"{c['undecided']} undecided (stats.json: per-dataset pairs)"
        )
        return [line]


def _max_se(n_samples: int) -> float:
    return float(np.sqrt(0.25 / n_samples))


def local_family(data: _Prepared, cell: np.ndarray, goal: str, control: str | None = None) -> tuple[np.ndarray, str]:
    """Which rows of the pairwise table (dataset-major, pairs (i, j), i < j) get the per-dataset test, and
    the rule in words: every pair with at most BAYES_ALL_PAIRS_UP_TO algorithms; otherwise on each dataset
    the pairs with its best algorithm (best cell value, the first on a tie), and with ``control`` (the
    ``--control`` algorithm) when one is given."""
    k, n_d = len(data.algorithms), len(data.datasets)
    ia, ib = np.triu_indices(k, 1)
    if k <= BAYES_ALL_PAIRS_UP_TO:
        return np.ones(n_d * len(ia), dtype=bool), "every pair"
    scored = np.where(np.isnan(cell), -np.inf, cell if goal == "maximize" else -cell)
    has = ~np.all(np.isnan(cell), axis=1)
    best = np.where(has, np.argmax(scored, axis=1), -1)
    rows = (ia[None, :] == best[:, None]) | (ib[None, :] == best[:, None])
    rule = "the pairs with each dataset's best algorithm (best cell value)"
    if control is not None and control in data.algorithms:
        c = data.algorithms.index(control)
        rows |= ((ia == c) | (ib == c))[None, :]
        rule += f" and with the control {control}"
    return rows.ravel(), rule


def per_dataset_bayes(
    data: _Prepared,
    cell: np.ndarray,
    *,
    goal: str,
    rope: float | None,
    threshold: float,
    notes: list[str],
    n_samples: int = LOCAL_SAMPLES,
    control: str | None = None,
) -> LocalBayes | None:
    """The Bayesian signed-rank test per dataset over the paired replicates of the pairs
    :func:`local_family` picks (None with fewer than two algorithms); its notes go to ``notes``."""
    k, n_d = len(data.algorithms), len(data.datasets)
    if k < 2 or n_d == 0:
        return None
    ia, ib = np.triu_indices(k, 1)
    d_idx, a_idx, b_idx = np.repeat(np.arange(n_d), len(ia)), np.tile(ia, n_d), np.tile(ib, n_d)
    tested, rule = local_family(data, cell, goal, control)
    rows = np.flatnonzero(tested)
    x_a, x_b = data.x[d_idx[rows], a_idx[rows], :], data.x[d_idx[rows], b_idx[rows], :]
    sign = 1.0 if goal == "maximize" else -1.0
    with np.errstate(invalid="ignore"):
        diff = np.where(x_a == x_b, 0.0, sign * (x_a - x_b))  # two failed runs tie; NaN: no pair
    part = signed_rank_batch(diff, rope=rope, threshold=threshold, n_samples=n_samples)
    result = _spread(part, rows, len(d_idx))
    local = LocalBayes(data.algorithms, a_idx, b_idx, tested, result, rope is not None, rule)
    notes.extend(_local_notes(local, data.datasets, d_idx))
    return local


def _spread(part: BatchResult, rows: np.ndarray, total: int) -> BatchResult:
    """The batch result of ``rows`` placed into arrays over all ``total`` pairwise rows."""

    def put(values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(total, fill, dtype=dtype)
        out[rows] = values
        return out

    return BatchResult(
        n=put(part.n, 0, np.int64),
        p_a=put(part.p_a, np.nan, float),
        p_rope=put(part.p_rope, np.nan, float),
        p_b=put(part.p_b, np.nan, float),
        mc_se=put(part.mc_se, np.nan, float),
        decision=put(part.decision, None, object),
        rope=part.rope,
        threshold=part.threshold,
        n_samples=part.n_samples,
    )


def _local_notes(local: LocalBayes, datasets: Sequence[str], d_idx: np.ndarray) -> list[str]:
    """The method, and a warning when some pair rests on fewer than BAYES_CALIBRATED_FROM replicates."""
    c = local.counts()
    if not c["tested"]:
        return []
    head = (
        f"Bayesian signed-rank test per dataset over the paired replicates (Benavoli et al. 2017; {local.head()}): "
        f"{c['decided_better']} of {c['tested']} pair(s) decided for a side, {c['equivalent']} equivalent, "
        f"{c['undecided']} undecided; a posterior statement next to the Wilcoxon tests, which make the claims"
    )
    notes = [head]
    res = local.result
    few = local.tested & (res.n > 0) & (res.n < BAYES_CALIBRATED_FROM)
    if few.any():
        names = _name_list([datasets[i] for i in np.unique(d_idx[few])])
        notes.append(
            f"{int(few.sum())} per-dataset Bayesian pair(s) rest on fewer than {BAYES_CALIBRATED_FROM} paired "
            f"replicates (as few as {int(res.n[few].min())}; dataset(s) {names}): not a calibrated test there "
            "(under the null it decides a given direction at P >= 0.95 for about 13% of pairs with 3 replicates, "
            "9% with 5, 6-7% with 10); read the probabilities as evidence"
        )
    return notes

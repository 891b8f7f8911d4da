"""The Bayesian signed-rank test with a region of practical equivalence (Benavoli, Corani, Demsar &
Zaffalon, JMLR 2017, sec. 5; Benavoli et al., ICML 2014), as baycomp's ``SignedRankTest`` computes it.

For the differences z_1..z_n of a pair (oriented by the goal: z > 0 means a is better) and a
pseudo-observation z_0 = 0 with prior strength s = 0.5, the posterior of the Dirichlet process gives
weights w ~ Dirichlet(s, 1, ..., 1) over z_0..z_n, and

    theta_a = sum_ij w_i w_j [z_i + z_j > 2 r],   theta_b = sum_ij w_i w_j [z_i + z_j < -2 r],
    theta_rope = 1 - theta_a - theta_b

(a sum exactly equal to +-2r counts one half), r the ROPE in the metric's units. Each posterior sample
gives the region with the largest theta; P(a better), P(equivalent), P(b better) are the fractions of
the samples won by each region, with Monte-Carlo standard error sqrt(p (1 - p) / S).

Speed: the double sum is computed in O(n) per sample from the sorted z and the cumulative weights
(for each z_i, the z_j above 2r - z_i form a suffix of the sorted z), not O(n^2) as in baycomp; the
Dirichlet weights are exponential and gamma(s) draws (normalised in the formula), drawn in the sorted
order of the z in cache-sized chunks, so a pair over 500 datasets with 10,000 samples takes about 50 ms.

Determinism: each pair is sampled with its own ``numpy.random.default_rng(seed)``, the seed being the
first 8 bytes (little-endian) of SHA-256 of ``"expkit-bayes-signed-rank\\0<a>\\0<b>"``
(:func:`pair_seed`), so the numbers depend only on the pair's names and data, never on which other
pairs are analysed or in what order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from expkit.core.errors import InputError

#: Posterior samples per pair (Monte-Carlo standard error of a probability at most 0.005).
BAYES_SAMPLES = 10_000
#: Prior strength of the pseudo-observation z_0 = 0 (baycomp's default).
BAYES_PRIOR = 0.5
#: Default decision threshold: a region is decided when its posterior probability reaches it.
BAYES_THRESHOLD = 0.95
#: Posterior samples kept per pair for the simplex plot (the first ones drawn).
PLOT_SAMPLES = 3_000
_SEED_TAG = "expkit-bayes-signed-rank"
_CHUNK = 2000


@dataclass(frozen=True)
class BayesResult:
    """The Bayesian signed-rank test of one pair (a before b): posterior probabilities that a is better
    by more than the ROPE, that the two are equivalent (within the ROPE), that b is better; the decision
    at ``threshold`` ('a', 'b', 'equivalent' or 'undecided'); ``samples`` (theta_a, theta_rope, theta_b)
    rows kept for the simplex plot (not written to stats.json)."""

    a: str
    b: str
    n: int
    rope: float
    p_a: float
    p_rope: float
    p_b: float
    mc_se: float
    n_samples: int
    seed: int
    threshold: float
    decision: str
    samples: np.ndarray | None = None

    @property
    def winner(self) -> str | None:
        """The algorithm decided better, or None."""
        return self.a if self.decision == "a" else self.b if self.decision == "b" else None

    def to_dict(self) -> dict[str, Any]:
        """The stats.json record (no samples)."""
        return {
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "rope": float(self.rope),
            "p_a_better": float(self.p_a),
            "p_equivalent": float(self.p_rope),
            "p_b_better": float(self.p_b),
            "decision": self.decision_text(),
            "threshold": float(self.threshold),
            "method": "monte-carlo",
            "n_samples": self.n_samples,
            "mc_se": float(self.mc_se),
            "seed": self.seed,
            "prior": BAYES_PRIOR,
        }

    def decision_text(self) -> str:
        """'a better', 'b better', 'equivalent' or 'undecided', with names."""
        if self.decision == "equivalent":
            return "equivalent"
        if self.winner is not None:
            return f"{self.winner} better"
        return "undecided"

    def clause(self) -> str:
        """The clause for the verdict sentence, e.g. 'Bayesian signed-rank P(A better) = 0.97 with ROPE 0.01'."""
        if self.decision == "equivalent":
            head = f"P(equivalent){_prob(self.p_rope)}"
        elif self.p_b > self.p_a:
            head = f"P({self.b} better){_prob(self.p_b)}"
        else:
            head = f"P({self.a} better){_prob(self.p_a)}"
        rope = f"ROPE {self.rope:g}" if self.rope > 0 else "ROPE 0, none given"
        return f"Bayesian signed-rank {head} with {rope}"


def _prob(p: float) -> str:
    """' = 0.97', or ' ≥ 0.999' / ' ≤ 0.001' at the ends of the Monte-Carlo resolution (≥ and ≤, which
    the LaTeX caption puts in math mode; a bare > would print as ¿ in pdflatex's default encoding)."""
    if p > 0.999:
        return " ≥ 0.999"
    if p < 0.001:
        return " ≤ 0.001"
    return f" = {p:.3g}"


def pair_seed(a: str, b: str) -> int:
    """The seed of the pair (a, b): SHA-256 of 'expkit-bayes-signed-rank\\0a\\0b', first 8 bytes little-endian."""
    digest = hashlib.sha256(f"{_SEED_TAG}\0{a}\0{b}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def check_rope(rope: float | None) -> float:
    """The ROPE as a float >= 0 (None: 0). Raises InputError for a negative or non-finite value."""
    if rope is None:
        return 0.0
    value = float(rope)
    if not np.isfinite(value) or value < 0:
        raise InputError(f"rope must be a finite number >= 0 in the metric's units, got {rope!r}")
    return value


def check_threshold(threshold: float) -> float:
    """The decision threshold, in (0.5, 1). Raises InputError otherwise."""
    value = float(threshold)
    if not 0.5 < value < 1.0:
        raise InputError(f"the Bayesian decision threshold must be in (0.5, 1), got {threshold!r}")
    return value


def posterior_thetas(z: np.ndarray, weights: np.ndarray, rope: float) -> np.ndarray:
    """(theta_a, theta_rope, theta_b) for each row of ``weights`` (S x (n + 1), column 0 the weight of
    the pseudo-observation 0, not necessarily normalised) and differences ``z`` (n,); S x 3."""
    zz = np.concatenate(([0.0], np.asarray(z, dtype=float)))
    order = np.argsort(zz, kind="stable")
    w = np.ascontiguousarray(np.asarray(weights, dtype=float)[:, order].T)
    return _sorted_thetas(zz[order], w, rope)


def _sorted_thetas(zs: np.ndarray, w: np.ndarray, rope: float) -> np.ndarray:
    """:func:`posterior_thetas` for sorted ``zs`` (m,) and weights ``w`` (m x S) in the same order."""
    return _thetas_from(w, _thresholds(zs, rope))


class _Cuts(NamedTuple):
    """For each sorted z_i, the number of z_j below 2r - z_i (lo: strictly, hi: or equal) and below -2r - z_i."""

    up_lo: np.ndarray
    up_hi: np.ndarray
    dn_lo: np.ndarray
    dn_hi: np.ndarray


def _thresholds(zs: np.ndarray, rope: float) -> _Cuts:
    # a better: z_i + z_j > 2r  <=>  z_j > 2r - z_i (a suffix of the sorted z); b better: a prefix
    up, dn = 2 * rope - zs, -2 * rope - zs
    return _Cuts(
        np.searchsorted(zs, up, side="left"),
        np.searchsorted(zs, up, side="right"),
        np.searchsorted(zs, dn, side="left"),
        np.searchsorted(zs, dn, side="right"),
    )


def _thetas_from(w: np.ndarray, cuts: _Cuts) -> np.ndarray:
    """(theta_a, theta_rope, theta_b) per column of the sorted weights ``w`` (m x S); S x 3."""
    m, c = w.shape
    cum = np.empty((m + 1, c))
    cum[0] = 0.0
    if m <= 4096:  # a row-by-row running sum is several times faster than np.cumsum(axis=0) here
        for k in range(m):
            np.add(cum[k], w[k], out=cum[k + 1])
    else:
        np.cumsum(w, axis=0, out=cum[1:])
    total = cum[m]

    def part(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """sum_i w_i (cum[lo_i] + cum[hi_i]) / 2: the weight below the thresholds, ties counted half."""
        below = cum[lo] if np.array_equal(lo, hi) else 0.5 * (cum[lo] + cum[hi])
        result: np.ndarray = np.einsum("is,is->s", w, below)
        return result

    norm = total * total
    theta_a = (norm - part(cuts.up_lo, cuts.up_hi)) / norm
    theta_b = part(cuts.dn_lo, cuts.dn_hi) / norm
    return np.stack((theta_a, 1.0 - theta_a - theta_b, theta_b), axis=1)


def _sampled_thetas(z: np.ndarray, rope: float, rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """n_samples posterior draws of (theta_a, theta_rope, theta_b): the Dirichlet(prior, 1, ..., 1) weights
    are drawn directly in the sorted order of (0, z) (standard exponentials, gamma(prior) for the
    pseudo-observation), in chunks of :data:`_CHUNK` samples that stay in the CPU cache."""
    zz = np.concatenate(([0.0], z))
    order = np.argsort(zz, kind="stable")
    zs = zz[order]
    p0 = int(np.flatnonzero(order == 0)[0])
    cuts = _thresholds(zs, rope)
    out = []
    for start in range(0, n_samples, _CHUNK):
        c = min(_CHUNK, n_samples - start)
        w = rng.standard_exponential((zs.size, c))
        w[p0] = rng.standard_gamma(BAYES_PRIOR, c)
        out.append(_thetas_from(w, cuts))
    return np.concatenate(out, axis=0)


def signed_rank_test(
    a_values: Sequence[float] | np.ndarray,
    b_values: Sequence[float] | np.ndarray,
    *,
    rope: float | None = 0.0,
    goal: str = "maximize",
    names: tuple[str, str] = ("a", "b"),
    threshold: float = BAYES_THRESHOLD,
    n_samples: int = BAYES_SAMPLES,
    seed: int | None = None,
    keep: int = 0,
) -> BayesResult:
    """The Bayesian signed-rank test of paired values of a and b (e.g. their cell values on the shared
    datasets): P(a better by more than ``rope``), P(equivalent), P(b better). ``goal`` orients the
    differences; ``seed`` defaults to :func:`pair_seed` of ``names``; ``keep`` posterior samples are
    returned for the simplex plot. Pairs with a NaN on either side are left out."""
    r = check_rope(rope)
    level = check_threshold(threshold)
    if int(n_samples) < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples!r}")
    x = np.asarray(a_values, dtype=float)
    y = np.asarray(b_values, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError("the Bayesian signed-rank test needs two 1-d arrays of equal length (paired values)")
    ok = ~(np.isnan(x) | np.isnan(y))
    sign = -1.0 if goal == "minimize" else 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        z = sign * (x[ok] - y[ok])
    z = np.where(np.isnan(z), 0.0, z)  # inf - inf: a tie
    if z.size == 0:
        raise InputError("the Bayesian signed-rank test needs at least one pair of values (none given)")
    s = pair_seed(*names) if seed is None else int(seed)
    thetas = _sampled_thetas(z, r, np.random.default_rng(s), int(n_samples))
    # the region with the largest theta wins the sample; a tie (e.g. all differences 0 with ROPE 0:
    # theta_a = theta_b = 1/2) is shared, where baycomp's argmax would give it to the first region
    top = thetas >= thetas.max(axis=1, keepdims=True) - 1e-12  # thetas are sums of weights: rounding ~1e-16
    counts = (top / top.sum(axis=1, keepdims=True)).sum(axis=0) / thetas.shape[0]
    p_a, p_rope, p_b = (float(c) for c in counts)
    se = float(np.sqrt(max(p_a * (1 - p_a), p_b * (1 - p_b), p_rope * (1 - p_rope)) / thetas.shape[0]))
    decision = "a" if p_a >= level else "b" if p_b >= level else "equivalent" if p_rope >= level else "undecided"
    return BayesResult(
        a=names[0],
        b=names[1],
        n=int(z.size),
        rope=r,
        p_a=p_a,
        p_rope=p_rope,
        p_b=p_b,
        mc_se=se,
        n_samples=int(n_samples),
        seed=s,
        threshold=level,
        decision=decision,
        samples=thetas[: int(keep)].copy() if keep else None,
    )


def bayes_pairs(
    cell: np.ndarray,
    algorithms: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    *,
    goal: str,
    rope: float | None,
    threshold: float = BAYES_THRESHOLD,
    n_samples: int = BAYES_SAMPLES,
    keep: int = PLOT_SAMPLES,
) -> tuple[BayesResult, ...]:
    """The Bayesian signed-rank test over datasets of each pair (i, j) of columns of ``cell`` (datasets x
    algorithms cell values, NaN = no value): the datasets where both have a value are the observations;
    a pair without a shared dataset is left out."""
    out = []
    for i, j in pairs:
        if not np.any(~np.isnan(cell[:, i]) & ~np.isnan(cell[:, j])):
            continue  # no shared dataset: nothing to test (the Wilcoxon pair says so)
        out.append(
            signed_rank_test(
                cell[:, i],
                cell[:, j],
                rope=rope,
                goal=goal,
                names=(algorithms[i], algorithms[j]),
                threshold=threshold,
                n_samples=n_samples,
                keep=keep,
            )
        )
    return tuple(out)


#: With at most this many algorithms every pair is tested; with more, the pairs with the reference.
BAYES_ALL_PAIRS_UP_TO = 5
#: From this many observations on, the decision at 0.95 was measured to decide a direction in at most
#: 5% (+ Monte-Carlo error) of null studies (tests/test_stats_bayes.py); below, a note says it is not.
BAYES_CALIBRATED_FROM = 20
#: At most this many pairs are tested over datasets (the reference's nearest competitors by rank first).
BAYES_MAX_PAIRS = 20


def bayes_family(
    algorithms: Sequence[str], average_ranks: Sequence[float] | None, control: str | None
) -> tuple[list[tuple[int, int]], str]:
    """Which pairs get the Bayesian test over datasets, and the rule in words: every pair with at most
    :data:`BAYES_ALL_PAIRS_UP_TO` algorithms; otherwise the pairs of the control (``--control``) or of the
    best-ranked algorithm, nearest in average rank first, at most :data:`BAYES_MAX_PAIRS`. Pairs are
    (i, j) with i < j (display order)."""
    k = len(algorithms)
    if k < 2:
        return [], "fewer than two algorithms"
    if control is None and k <= BAYES_ALL_PAIRS_UP_TO:
        return [(i, j) for i in range(k) for j in range(i + 1, k)], "every pair"
    ranks = list(average_ranks) if average_ranks is not None else [float(i) for i in range(k)]
    if control is not None:
        ref, why = algorithms.index(control), f"the pairs with the control {control}"
    else:
        ref = min(range(k), key=lambda i: (ranks[i], i))
        why = f"the pairs with the best-ranked algorithm {algorithms[ref]}"
    others = sorted((j for j in range(k) if j != ref), key=lambda j: (abs(ranks[j] - ranks[ref]), j))
    if len(others) > BAYES_MAX_PAIRS:
        why += f", the {BAYES_MAX_PAIRS} nearest in average rank"
    return [(min(ref, j), max(ref, j)) for j in others[:BAYES_MAX_PAIRS]], why


def bayes_notes(results: Sequence[BayesResult], rule: str, rope: float | None, threshold: float) -> list[str]:
    """The notes of the Bayesian block: which pairs, the ROPE used, decisions."""
    if not results:
        return []
    head = (
        f"Bayesian signed-rank test over datasets (Benavoli et al. 2017) on {rule}: "
        f"{results[0].n_samples} seeded posterior samples per pair, decision at P >= {threshold:g}"
    )
    if rope is None:
        head += (
            "; no ROPE given for this metric (--rope / spec.rope set it for the primary metric), so ROPE = 0: "
            "P(equivalent) is 0 and the test only says "
            "which algorithm is more probably better"
        )
    else:
        head += f"; ROPE {rope:g} in the metric's units"
    notes = [head]
    fewest = min(r.n for r in results)
    if fewest < BAYES_CALIBRATED_FROM:
        notes.append(
            f"the Bayesian decision rests on as few as {fewest} dataset(s): with fewer than "
            f"{BAYES_CALIBRATED_FROM} it is not a calibrated test (under the null it decides a direction at "
            "P >= 0.95 in about 13% of studies per direction with 3 datasets, 10% with 5, 7% with 10); read its "
            "probabilities as evidence, the claims rest on the Wilcoxon signed-rank tests with Holm"
        )
    return notes


def bayes_record(
    results: Sequence[BayesResult], rule: str, rope: float | None, threshold: float
) -> dict[str, Any] | None:
    """The ``stats.json`` block of the Bayesian test over datasets (None when no pair was tested)."""
    if not results:
        return None
    return {
        "test": "bayesian_signed_rank",
        "over": "datasets (cell values)",
        "pairs_tested": rule,
        "rope": float(rope) if rope is not None else 0.0,
        "rope_given": rope is not None,
        "threshold": float(threshold),
        "prior": BAYES_PRIOR,
        "n_samples": results[0].n_samples,
        "pairs": [r.to_dict() for r in results],
    }


def bayes_lines(results: Sequence[BayesResult], rope: float | None, limit: int = 10) -> list[str]:
    """Terminal lines of the Bayesian test over datasets."""
    if not results:
        return []
    label = f"ROPE {rope:g}" if rope is not None else "ROPE 0 (none given)"
    lines = [f"  Bayesian signed-rank over datasets ({label}; P(a better) / P(equivalent) / P(b better)):"]
    for r in results[:limit]:
        lines.append(
            f"    {r.a} vs {r.b}: {r.p_a:.3f} / {r.p_rope:.3f} / {r.p_b:.3f} -> {r.decision_text()} "
            f"(n = {r.n}, Monte-Carlo SE {r.mc_se:.2g})"
        )
    if len(results) > limit:
        lines.append(f"    {len(results) - limit} more pair(s) in stats.json")
    return lines


def plot_posteriors(results: Sequence[BayesResult], claimed: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The posteriors for the simplex plot: the pairs the verdict claims first, then the others tested
    (the control's or the best-ranked algorithm's pairs when there are more than five algorithms)."""
    wanted = {frozenset(p) for p in claimed}
    ordered = sorted(results, key=lambda r: frozenset((r.a, r.b)) not in wanted)
    return [
        {"a": r.a, "b": r.b, "samples": r.samples, "p_a": r.p_a, "p_rope": r.p_rope, "p_b": r.p_b, "rope": r.rope}
        for r in ordered
        if r.samples is not None
    ]


def bayes_report_items(results: Sequence[BayesResult], rope: float | None, threshold: float) -> tuple[str, list[str]]:
    """The report's Bayesian bullet: its head (ROPE, threshold, samples) and one item per pair."""
    if not results:
        return "", []
    rope_text = f"ROPE {rope:g}" if rope is not None else "ROPE 0, none given (--rope)"
    head = f"{rope_text}, decision at P ≥ {threshold:g}, {results[0].n_samples} seeded posterior samples per pair"
    items = [
        f"{r.a} vs {r.b}: P({r.a} better) = {r.p_a:.3f}, P(equivalent) = {r.p_rope:.3f}, "
        f"P({r.b} better) = {r.p_b:.3f}, {r.decision_text()}"
        for r in results
    ]
    return head, items

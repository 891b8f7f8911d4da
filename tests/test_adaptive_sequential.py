"""The sequential decision procedure of adaptive replicates (issue 18, item 2 and its part of 5-7).

References the numbers are checked against:

* Jennison & Turnbull (2000), *Group Sequential Methods with Applications to Clinical Trials*, Table 2.1
  (Pocock's constants C_P(K, 0.05)) and Table 2.3 (O'Brien & Fleming's constants C_B(K, 0.05));
* the Lan-DeMets O'Brien-Fleming-type boundaries for 5 equally spaced looks, two-sided alpha = 0.05
  (0.025 per side): 4.8769, 3.3569, 2.6803, 2.2898, 2.0310 (Reboussin, DeMets, Kim & Lan 2000,
  "Computations for group sequential boundaries using the Lan-DeMets spending function method",
  Controlled Clinical Trials 21:190-207; what R's ``ldbounds::bounds(1:5/5)`` and
  ``gsDesign(k=5, test.type=2, sfu=sfLDOF)`` print);
* a seeded Monte-Carlo simulation of the canonical joint distribution (independent of the recursion);
* scipy's Wilcoxon and Mann-Whitney tests, statsmodels' Holm correction.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from expkit.adaptive.boundaries import Spending, boundaries, crossing_probability, repeated_p, spending
from expkit.adaptive.sequential import (
    SequentialConfig,
    adjusted_pairwise,
    decide_dataset,
    first_decisive_look,
    race,
)
from expkit.adaptive.sequential_ranks import oriented, rank_sum_z, signed_rank_z
from expkit.core.errors import InputError

ALPHA = 0.05


def _config(**kw: object) -> SequentialConfig:
    base: dict[str, object] = {"min_replicates": 10, "max_replicates": 50, "wave": 5, "stop": "decided", "rope": 0.0}
    base.update(kw)
    return SequentialConfig(**base)  # type: ignore[arg-type]


def _mc_bound(rate: float, trials: int) -> float:
    """alpha plus three Monte-Carlo standard errors."""
    return rate + 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


# --------------------------------------------------------------------------------------------------
# boundaries
# --------------------------------------------------------------------------------------------------


def test_obrien_fleming_spending_boundaries_match_the_published_table() -> None:
    got = boundaries([k / 5 for k in range(1, 6)], ALPHA, "obrien-fleming")
    assert got == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=3e-4)


@pytest.mark.parametrize(
    ("looks", "pocock", "obrien_fleming"),
    [(2, 2.178, 1.977), (3, 2.289, 2.004), (4, 2.361, 2.024), (5, 2.413, 2.040)],
)
def test_crossing_probability_reproduces_the_classical_constants(
    looks: int, pocock: float, obrien_fleming: float
) -> None:
    """Jennison & Turnbull Tables 2.1 and 2.3: the constant boundary C_P and the boundary
    C_B sqrt(K / k) each have total null crossing probability 0.05 (3 decimals published)."""
    times = [k / looks for k in range(1, looks + 1)]
    assert crossing_probability(times, [pocock] * looks) == pytest.approx(ALPHA, abs=2.5e-4)
    ob = [obrien_fleming * math.sqrt(looks / k) for k in range(1, looks + 1)]
    assert crossing_probability(times, ob) == pytest.approx(ALPHA, abs=2.5e-4)


@pytest.mark.parametrize(
    ("kind", "gamma"), [("obrien-fleming", 0.0), ("pocock", 0.0), ("hsd", -4.0), ("hsd", 0.5), ("hsd", 1.0)]
)
def test_boundaries_spend_alpha_as_a_brownian_motion_simulation_says(kind: Spending, gamma: float) -> None:
    """Independent check of the recursion: simulate Z_k = W(t_k)/sqrt(t_k) (seeded, 200,000 paths)
    and count first crossings per look against the spending function's increments."""
    times = np.array([10, 15, 20, 25, 30, 35, 40, 45, 50]) / 50.0
    bounds = np.array(boundaries(times, ALPHA, kind, gamma))
    rng = np.random.default_rng(20261207)
    paths = 200_000
    steps = rng.normal(size=(paths, times.size)) * np.sqrt(np.diff(np.concatenate([[0.0], times])))
    z = np.cumsum(steps, axis=1) / np.sqrt(times)
    crossed = np.abs(z) >= bounds
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    spent = np.array([spending(t, ALPHA, kind, gamma) for t in times])
    increments = np.diff(np.concatenate([[0.0], spent]))
    for k in range(times.size):
        observed = float(np.mean(first == k))
        se = math.sqrt(increments[k] * (1 - increments[k]) / paths)
        assert abs(observed - increments[k]) <= 4 * se + 1e-5, (k, observed, increments[k])
    total = float(np.mean(first >= 0))
    assert abs(total - ALPHA) <= 4 * math.sqrt(ALPHA * (1 - ALPHA) / paths)


def test_hwang_shih_decani_spending_is_the_published_function() -> None:
    """alpha (1 - e^(-gamma t)) / (1 - e^(-gamma)), alpha t at gamma = 0 (Hwang, Shih & DeCani 1990,
    Statistics in Medicine 9:1439-1445; R gsDesign's sfHSD), written out independently here."""
    for gamma in (-4.0, -1.0, 0.5, 1.0, 3.0):
        for t in (0.1, 0.2, 0.55, 1.0):
            expected = ALPHA * (1.0 - math.exp(-gamma * t)) / (1.0 - math.exp(-gamma))
            assert spending(t, ALPHA, "hsd", gamma) == pytest.approx(expected, rel=1e-12)
    assert spending(0.3, ALPHA, "hsd", 0.0) == pytest.approx(0.3 * ALPHA, rel=1e-12)
    assert spending(0.3, ALPHA, "hsd", 1e-9) == pytest.approx(0.3 * ALPHA, rel=1e-6)
    # gamma orders the designs: -4 spends at t = 0.2 less than O'Brien-Fleming-type's neighbourhood
    # of Pocock-type at gamma = 1, and every gamma spends alpha by t = 1
    assert spending(0.2, ALPHA, "hsd", -4.0) < spending(0.2, ALPHA, "hsd", 1.0) < spending(0.2, ALPHA, "pocock")
    assert spending(1.0, ALPHA, "hsd", 0.5) == pytest.approx(ALPHA)


@pytest.mark.parametrize(
    ("gamma", "times"), [(-4.0, (1 / 3, 2 / 3, 1.0)), (0.5, (0.2, 0.5, 0.6, 1.0)), (1.0, (0.5, 1.0))]
)
def test_hsd_boundaries_match_exact_multivariate_normal_probabilities(gamma: float, times: tuple[float, ...]) -> None:
    """Independent exact reference: the probability of staying inside (-c_j, c_j) for the first k looks,
    by scipy's multivariate normal CDF (Genz 1992 quasi-Monte-Carlo integration, error ~1e-7 here) with
    the canonical covariance sqrt(t_j / t_k), must be 1 - spending(t_k) at every k."""
    bounds = boundaries(times, ALPHA, "hsd", gamma)
    for k in range(1, len(times) + 1):
        t = np.array(times[:k])
        cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
        c = np.array(bounds[:k])
        inside = sps.multivariate_normal(mean=np.zeros(k), cov=cov, allow_singular=False, abseps=1e-8, releps=1e-8)
        stay = float(inside.cdf(c, lower_limit=-c, rng=np.random.default_rng(3)))
        assert 1.0 - stay == pytest.approx(spending(times[k - 1], ALPHA, "hsd", gamma), abs=2e-6), k


@pytest.mark.timeout(120)
def test_many_looks_spend_alpha_as_a_brownian_motion_simulation_says() -> None:
    """The banded, vectorised recursion with 91 looks (wave 1 from 10 to 100 replicates): cumulative
    first-crossing rates of 60,000 seeded Brownian paths at several looks against the spending function."""
    times = np.arange(10, 101) / 100.0
    bounds = np.array(boundaries(times, ALPHA, "hsd", 0.5))
    rng = np.random.default_rng(91)
    paths = 60_000
    steps = rng.normal(size=(paths, times.size)) * np.sqrt(np.diff(np.concatenate([[0.0], times])))
    crossed = np.abs(np.cumsum(steps, axis=1) / np.sqrt(times)) >= bounds
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), times.size)
    for k in (0, 10, 45, 90):
        expected = spending(float(times[k]), ALPHA, "hsd", 0.5)
        observed = float(np.mean(first <= k))
        assert abs(observed - expected) <= 4 * math.sqrt(expected * (1 - expected) / paths), (k, observed, expected)
    assert repeated_p(tuple(times), [90], [bounds[90]], "hsd", 0.5) == pytest.approx(ALPHA, rel=2e-3)


@pytest.mark.parametrize("kind", ["obrien-fleming", "pocock", "hsd"])
def test_repeated_p_value_is_the_level_whose_boundary_is_crossed(kind: Spending) -> None:
    times = tuple(n / 50 for n in range(10, 51, 5))
    for level in (0.001, 0.0123, 0.05 / 3, 0.05, 0.2):
        c = boundaries(times, level, kind)
        for k in (0, 4, 8):
            p = repeated_p(times, [k], [c[k]], kind)  # hsd: the default gamma of both functions
            assert p == pytest.approx(level, rel=2e-3)
    # the smallest over the looks seen, and 1 when nothing is near a boundary
    c = boundaries(times, 0.01, kind)
    assert repeated_p(times, [0, 1, 2], [0.5, c[1], -0.3], kind) == pytest.approx(0.01, rel=2e-3)
    assert repeated_p(times, [0, 1], [0.0, 0.1], kind) == 1.0


# --------------------------------------------------------------------------------------------------
# rank statistics
# --------------------------------------------------------------------------------------------------


def test_signed_rank_statistic_is_scipys_wilcoxon_p_value_as_a_z_score() -> None:
    rng = np.random.default_rng(3)
    for n in (6, 10, 25, 60):
        a, b = rng.normal(size=n), rng.normal(0.4, 1.0, size=n)
        z = signed_rank_z(a, b)
        ref = sps.wilcoxon(a, b, method="exact")  # expkit's exact distribution reaches n = 300
        assert 2 * sps.norm.sf(abs(z)) == pytest.approx(ref.pvalue, rel=1e-9)
        d = a - b  # T+ counts the positive Walsh averages (Tukey): its excess over n(n+1)/4 gives the sign
        walsh = (d[:, None] + d[None, :])[np.triu_indices(n)]
        assert np.sign(z) == np.sign(np.sum(walsh > 0) - np.sum(walsh < 0))
    ties = np.round(rng.normal(size=30), 1)  # ties and zeros: the normal approximation with tie correction
    other = np.round(rng.normal(0.3, 1.0, size=30), 1)
    ref = sps.wilcoxon(ties, other, method="asymptotic", correction=False, zero_method="wilcox")
    assert 2 * sps.norm.sf(abs(signed_rank_z(ties, other))) == pytest.approx(ref.pvalue, rel=1e-9)


def test_rank_sum_statistic_is_scipys_mann_whitney_p_value_as_a_z_score() -> None:
    rng = np.random.default_rng(4)
    for m, n in ((5, 7), (12, 12), (30, 30)):
        a, b = rng.normal(size=m), rng.normal(0.5, 1.0, size=n)
        ref = sps.mannwhitneyu(a, b, method="exact")
        z = rank_sum_z(a, b)
        assert 2 * sps.norm.sf(abs(z)) == pytest.approx(ref.pvalue, rel=1e-9)
        assert z < 0  # a is smaller: with oriented values larger is better
    a, b = np.round(rng.normal(size=20), 1), np.round(rng.normal(size=20), 1)
    ref = sps.mannwhitneyu(a, b, method="asymptotic", use_continuity=False)
    assert 2 * sps.norm.sf(abs(rank_sum_z(a, b))) == pytest.approx(ref.pvalue, rel=1e-9)


def test_failed_runs_rank_below_every_success_for_either_goal() -> None:
    ok, failed = np.arange(12.0), np.full(12, np.nan)
    for goal in ("minimize", "maximize"):
        assert signed_rank_z(oriented(ok, goal), oriented(failed, goal)) > 3.0
        assert rank_sum_z(oriented(ok, goal), oriented(failed, goal)) > 3.0
    both = np.full(12, np.nan)
    assert signed_rank_z(oriented(both, "minimize"), oriented(both, "minimize")) == 0.0


# --------------------------------------------------------------------------------------------------
# null calibration: the rate of any false claim over the whole sequential run
# --------------------------------------------------------------------------------------------------


def _null_suite(rng: np.random.Generator, datasets: int, algorithms: int, noise: str) -> list[dict[str, np.ndarray]]:
    out = []
    for _ in range(datasets):
        seed_part = rng.normal(size=50)
        values = {}
        for j in range(algorithms):
            if noise == "normal":
                x = seed_part + rng.normal(size=50)
            else:  # heavy-tailed with 5 % failed runs
                x = seed_part + rng.standard_t(2, size=50)
                x[rng.random(50) < 0.05] = np.nan
            values[f"alg{j}"] = x
        out.append(values)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("paired", "noise", "spending_kind", "stop"),
    [
        (True, "normal", "obrien-fleming", "decided"),
        (False, "heavy-failing", "obrien-fleming", "decided"),
        (True, "heavy-failing", "pocock", "decided"),
        (True, "normal", "pocock", "omnibus"),
        (True, "normal", "hsd", "decided"),
        (False, "heavy-failing", "hsd", "decided"),
        (True, "heavy-failing", "hsd", "omnibus"),
    ],
)
def test_false_claim_rate_under_the_null_is_at_most_alpha(
    paired: bool, noise: str, spending_kind: str, stop: str
) -> None:
    rng = np.random.default_rng(18)
    trials = 300
    config = _config(paired=paired, spending=spending_kind, stop=stop, futility=0.0)
    false_claims = 0
    for values in _null_suite(rng, trials, 3, noise):
        decision = race("null", values, config)
        false_claims += any(p.decision in ("a_better", "b_better") for p in decision.pairs)
    assert false_claims / trials <= _mc_bound(ALPHA, trials)


@pytest.mark.timeout(120)
def test_looking_with_the_fixed_design_test_every_wave_would_inflate_the_rate() -> None:
    """The reason for the procedure: the fixed-design test (Holm over the pairs, each look at level
    alpha) repeated at every look claims a difference far more often than alpha on the same null data
    the sequential procedure keeps at alpha."""
    rng = np.random.default_rng(18)
    trials, looks = 300, range(10, 51, 5)
    naive = 0
    for values in _null_suite(rng, trials, 3, "normal"):
        names = list(values)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        for n in looks:
            z = [signed_rank_z(values[a][:n], values[b][:n]) for a, b in pairs]
            p = sorted(2 * sps.norm.sf(abs(v)) for v in z)
            if p[0] <= ALPHA / len(p):  # Holm rejects something iff its first step does
                naive += 1
                break
    assert naive / trials > 2 * ALPHA


@pytest.mark.timeout(120)
def test_false_equivalence_rate_is_at_most_alpha() -> None:
    """Shift just outside the rope (1.05 x rope): equivalence would be a false claim."""
    rng = np.random.default_rng(7)
    trials, rope = 300, 0.5
    config = _config(rope=rope, futility=0.0)
    false_equivalence = 0
    for _ in range(trials):
        seed_part = rng.normal(size=50)
        values = {"a": seed_part + rng.normal(0, 0.3, 50), "b": seed_part + 1.05 * rope + rng.normal(0, 0.3, 50)}
        decision = race("edge", values, config)
        false_equivalence += decision.pairs[0].decision == "equivalent"
    assert false_equivalence / trials <= _mc_bound(ALPHA, trials)


# --------------------------------------------------------------------------------------------------
# behaviour: dominance, close race, elimination, records
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spending_kind", "minimum"), [("hsd", 10), ("pocock", 10), ("obrien-fleming", 20)])
def test_one_algorithm_dominating_stops_at_min_replicates_on_every_dataset(spending_kind: str, minimum: int) -> None:
    config = _config(min_replicates=minimum, spending=spending_kind)
    assert first_decisive_look(config, 3) == minimum
    rng = np.random.default_rng(11)
    for dataset in range(5):
        noise = rng.normal(size=(3, 50))
        values = {"best": noise[0], "mid": noise[1] + 10.0, "worst": noise[2] + 20.0}
        decision = race(f"d{dataset}", values, config)
        assert decision.stopped and decision.n == minimum, decision.reason
        assert {(p.a, p.b): p.decision for p in decision.pairs} == {
            ("best", "mid"): "a_better",
            ("best", "worst"): "a_better",
            ("mid", "worst"): "a_better",
        }
        assert decision.reason == f"every pair settled at n={minimum}: 3 difference(s)"


@pytest.mark.parametrize("algorithms", [2, 3, 4])
def test_default_design_declares_a_dominating_algorithm_better_at_min_replicates(algorithms: int) -> None:
    """The issue's example block (min 10, max 50, wave 5, alpha 0.05) with the default spending: an
    algorithm whose 10 paired differences all favour it by a large effect is declared better than each
    other at n = 10 (the exact signed-rank p-value 2^-9 = 0.00195 must cross the first Holm step's
    boundary, level alpha / pairs; O'Brien-Fleming-type spending cannot before n = 15 or 20)."""
    config = SequentialConfig(min_replicates=10, max_replicates=50, wave=5, stop="decided", rope=0.01, alpha=0.05)
    assert first_decisive_look(config, algorithms) == 10
    rng = np.random.default_rng(100 + algorithms)
    seed_part = rng.normal(size=10)
    values = {"best": seed_part - 5.0 + rng.normal(0, 0.1, 10)}
    for j in range(1, algorithms):
        values[f"other{j}"] = seed_part + rng.normal(0, 1.0, 10)
    decision = decide_dataset("iris", values, 10, config)
    wins = {(p.a, p.b): p.decision for p in decision.pairs if "best" in (p.a, p.b)}
    assert wins == {("best", f"other{j}"): "a_better" for j in range(1, algorithms)}
    separated = {f"alg{j}": 10.0 * j + rng.normal(size=50) for j in range(algorithms)}
    stopped = race("sep", separated, config)
    assert stopped.stopped and stopped.n == 10, stopped.reason
    assert {p.decision for p in stopped.pairs} == {"a_better"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithms", [2, 4])
def test_default_design_false_claim_rate_under_the_null_is_at_most_alpha(algorithms: int) -> None:
    """The whole default design (spending, gamma, futility) on 300 seeded null datasets."""
    rng = np.random.default_rng(1990)
    trials = 300
    config = SequentialConfig(min_replicates=10, max_replicates=50, wave=5, stop="decided", rope=0.01)
    false_claims = 0
    for values in _null_suite(rng, trials, algorithms, "normal"):
        decision = race("null", values, config)
        false_claims += any(p.decision in ("a_better", "b_better") for p in decision.pairs)
    assert false_claims / trials <= _mc_bound(ALPHA, trials)


def test_min_replicates_below_the_first_decisive_look_is_reported() -> None:
    """With O'Brien-Fleming spending and 3 algorithms no rank test can cross at n = 10 of 50."""
    assert first_decisive_look(_config(spending="obrien-fleming"), 3) == 20
    assert first_decisive_look(_config(spending="obrien-fleming"), 2) == 15
    assert first_decisive_look(_config(spending="hsd", gamma=-4.0), 4) == 15  # spends more early than OF-type
    assert first_decisive_look(_config(min_replicates=3, max_replicates=4, wave=1), 6) is None


@pytest.mark.parametrize("spending_kind", ["hsd", "obrien-fleming"])
def test_close_race_runs_to_max_replicates(spending_kind: Spending) -> None:
    """Shift 0.02 noise sds, rope 0, futility off: nothing can settle the pair but a difference claim,
    which has probability about alpha (a near-null); every other race runs to max_replicates, open."""
    rng = np.random.default_rng(5)
    config = _config(futility=0.0, spending=spending_kind)
    races, claims = 40, 0
    for _ in range(races):
        seed_part = rng.normal(size=50)
        values = {"a": seed_part + rng.normal(size=50), "b": seed_part + 0.02 + rng.normal(size=50)}
        decision = race("close", values, config)
        if decision.pairs[0].decision in ("a_better", "b_better"):
            claims += 1
            continue
        assert decision.stopped and decision.n == 50
        assert decision.reason == "max_replicates reached (n=50) with 1 pair(s) open"
        assert decision.pairs[0].decision == "open"
        assert dict(decision.replicates) == {"a": 50, "b": 50}
    assert claims / races <= _mc_bound(ALPHA, races)


def test_futility_settles_a_pair_without_a_detectable_difference() -> None:
    """Identical algorithms: the conditional power of ever crossing is tiny, the pair is settled early
    as open (no claim), and the dataset stops."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=50)
    values = {"a": x + rng.normal(0, 0.01, 50), "b": x + rng.normal(0, 0.01, 50)}
    decision = race("same", values, _config())
    pair = decision.pairs[0]
    assert decision.stopped and decision.n < 50
    assert pair.decision == "open" and pair.futile
    assert (
        decision.reason == f"every pair settled at n={decision.n}: 1 without a difference detectable by max_replicates"
    )


def test_f_race_elimination_stops_seeding_the_loser() -> None:
    """a and b are close, c is far worse: with elimination c gets no more seeds once decided worse
    (its pair with b is left open); without, it keeps running while its pair with b is open."""
    rng = np.random.default_rng(13)
    values = {
        "a": rng.normal(0.0, 0.1, size=50),
        "b": rng.normal(0.0, 10.0, size=50),  # as good as a on average, but noisy: b-c stays open
        "c": rng.normal(3.0, 0.1, size=50),
    }
    # O'Brien-Fleming-type spending: c cannot be decided worse before n = 15 (default: already at 10)
    on = _config(eliminate=True, futility=0.0, spending="obrien-fleming")
    first = decide_dataset("race", {k: v[:20] for k, v in values.items()}, 20, on)
    assert "c" not in first.active and "c" in first.eliminated
    assert first.active == ("a", "b")
    # later looks need no values of c beyond where it stopped
    later = decide_dataset("race", {"a": values["a"][:30], "b": values["b"][:30], "c": values["c"][:20]}, 30, on)
    assert dict(later.replicates)["c"] == 20
    assert next(p for p in later.pairs if (p.a, p.b) == ("b", "c")).n <= 20
    off = decide_dataset(
        "race", {k: v[:20] for k, v in values.items()}, 20, _config(futility=0.0, spending="obrien-fleming")
    )
    assert "c" in off.active


def test_an_algorithm_whose_pairs_are_all_settled_gets_no_more_seeds() -> None:
    rng = np.random.default_rng(17)
    seed_part = rng.normal(size=50)
    values = {"a": seed_part + rng.normal(size=50), "b": seed_part + 0.05 + rng.normal(size=50)}
    values["c"] = seed_part + 30.0 + rng.normal(size=50)
    decision = decide_dataset("ds", {k: v[:20] for k, v in values.items()}, 20, _config(futility=0.0))
    assert decision.active == ("a", "b") and decision.eliminated == ("c",)


@pytest.mark.parametrize("eliminate", [False, True])
def test_wave_by_wave_calls_with_only_the_runs_given_agree_with_race(eliminate: bool) -> None:
    """What the driver does: after each wave call decide_dataset with the values of the replicates each
    algorithm got so far, seed only ``active`` in the next wave; it ends where ``race`` on all the
    values ends, with the same decisions and per-algorithm replicate counts."""
    rng = np.random.default_rng(31)
    config = _config(eliminate=eliminate, rope=0.25)
    for _ in range(8):
        shifts = rng.choice([0.0, 0.3, 1.0, 3.0], size=4)
        seed_part = rng.normal(size=50)
        full = {f"alg{j}": seed_part + shifts[j] + rng.normal(size=50) for j in range(4)}
        given = dict.fromkeys(full, 0)
        active = tuple(full)
        for n in config.looks():
            for name in active:
                given[name] = n
            decision = decide_dataset("d", {k: full[k][: given[k]] for k in full}, n, config)
            assert json.loads(json.dumps(decision.record(), allow_nan=False))["n"] == n
            if decision.stopped:
                break
            active = decision.active
        reference = race("d", full, config)
        assert (decision.n, decision.reason) == (reference.n, reference.reason)
        assert decision.pairs == reference.pairs
        assert dict(decision.replicates) == given == dict(reference.replicates)


def test_decision_records_are_json_and_p_adjusted_is_holm_of_the_repeated_p_values() -> None:
    rng = np.random.default_rng(21)
    seed_part = rng.normal(size=50)
    values = {n: seed_part + shift + rng.normal(size=50) for n, shift in (("x", 0.0), ("y", 0.6), ("z", 1.2))}
    config = _config(rope=0.2)
    decision = decide_dataset("ds", {k: v[:30] for k, v in values.items()}, 30, config)
    record = json.loads(json.dumps(decision.record(), allow_nan=False))
    assert record["dataset"] == "ds" and record["n"] == 30 and record["look"] == 4
    assert {p["decision"] for p in record["pairs"]} <= {"a_better", "b_better", "equivalent", "open"}
    reference = multipletests([p.p_repeated for p in decision.pairs], method="holm")[1]
    assert [p.p_adjusted for p in decision.pairs] == pytest.approx(list(reference), rel=1e-12)
    for p in decision.pairs:
        if p.decision in ("a_better", "b_better"):
            assert p.p_adjusted <= ALPHA * 1.002
        elif not p.futile:
            assert abs(p.statistic) < p.boundary or p.p_adjusted > ALPHA * 0.998
    again = adjusted_pairwise({"ds": {k: v[:30] for k, v in values.items()}}, {"ds": 30}, config)
    assert [(p.dataset, p.a, p.b, p.p_adjusted) for p in again] == [
        ("ds", p.a, p.b, p.p_adjusted) for p in decision.pairs
    ]


def test_goal_maximize_reverses_the_direction() -> None:
    rng = np.random.default_rng(2)
    values = {"low": rng.normal(size=20), "high": rng.normal(size=20) + 10}
    up = decide_dataset("d", values, 20, _config(min_replicates=20, goal="maximize"))
    down = decide_dataset("d", values, 20, _config(min_replicates=20, goal="minimize"))
    assert up.pairs[0].decision == "b_better" and down.pairs[0].decision == "a_better"


def test_control_stop_rule_compares_with_the_control_only() -> None:
    rng = np.random.default_rng(8)
    values = {"base": rng.normal(size=50), "new1": rng.normal(size=50) - 5, "new2": rng.normal(size=50) - 5}
    decision = race("d", values, _config(stop="control", control="base", min_replicates=20))
    assert [(p.a, p.b) for p in decision.pairs] == [("base", "new1"), ("base", "new2")]
    assert decision.stopped and decision.n == 20
    assert decision.reason.startswith("every pair with the control settled at n=20")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_replicates": 1}, "adaptive.min_replicates"),
        ({"max_replicates": 5}, "adaptive.max_replicates"),
        ({"wave": 0}, "adaptive.wave"),
        ({"rope": -1.0}, "adaptive.rope"),
        ({"alpha": 1.5}, "adaptive.alpha"),
        ({"stop": "control"}, "adaptive.control"),
        ({"futility": 1.0}, "adaptive.futility"),
        ({"gamma": float("nan")}, "adaptive.gamma"),
        ({"gamma": 50.0}, "adaptive.gamma"),
        ({"spending": "linear"}, "adaptive.spending"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _config(**fields)


def test_bad_calls_are_input_errors() -> None:
    values = {"a": np.zeros(10), "b": np.ones(10)}
    with pytest.raises(InputError, match="not a look"):
        decide_dataset("d", values, 12, _config())
    with pytest.raises(InputError, match="has 10 values"):  # OF-type: nothing can be decided at n = 10
        decide_dataset("d", values, 15, _config(spending="obrien-fleming"))
    with pytest.raises(InputError, match="at least 2"):
        decide_dataset("d", {"a": np.zeros(10)}, 10, _config())
    with pytest.raises(InputError, match="adaptive.control"):
        decide_dataset("d", values, 10, _config(stop="control", control="zzz"))


def test_looks_end_at_max_replicates() -> None:
    assert _config().looks() == (10, 15, 20, 25, 30, 35, 40, 45, 50)
    assert _config(min_replicates=10, max_replicates=22, wave=5).looks() == (10, 15, 20, 22)
    assert _config(min_replicates=8, max_replicates=8).looks() == (8,)

"""Issue 14, per-dataset pairs: the direction of paired comparisons, paired and unpaired effect sizes
with confidence intervals, the Hodges-Lehmann shift, failed runs (``penalize`` / ``exclude``, Fisher's
exact test on success rates) and the replicates needed for a given effect (power).

Every number is checked against an independent reference named in the test's docstring: scipy, a
brute-force enumeration written here, test inversion with scipy's exact tests, a published formula, or
a seeded simulation (coverage, power, null calibration) with its Monte-Carlo error."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

from expkit.analysis import stats

COLUMNS = list(stats.REQUIRED_COLUMNS)

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def table_from(cells: dict[tuple[str, str], list[float | None]], *, metric: str = "m") -> pd.DataFrame:
    """Tidy table from {(algorithm, dataset): values}; None = failed run; seed of replicate r = 1000 d + r."""
    ds_index = {d: i for i, d in enumerate(sorted({d for _, d in cells}))}
    rows = []
    for (alg, ds), values in cells.items():
        for r, v in enumerate(values):
            failed = v is None
            value = np.nan if failed else float(v)
            rows.append((alg, ds, r, 1000 * ds_index[ds] + r, metric, value, "failed" if failed else "succeeded"))
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------
# item 2: paired designs take their direction from the paired test
# ---------------------------------------------------------------------------------------------------


def counterexample() -> tuple[np.ndarray, np.ndarray]:
    """The issue's table: a = b + 0.01 on 27 of 30 seeds and a = b - 100 on 3."""
    b = np.random.default_rng(14).normal(0.0, 1.0, 30)
    a = b + 0.01
    a[[4, 17, 25]] = b[[4, 17, 25]] - 100.0
    return a, b


def test_paired_counterexample_direction_comes_from_the_signed_ranks() -> None:
    """Reference: scipy.stats.wilcoxon and R+ = 378, R- = 87 by direct rank sums. The issue quotes
    p = 0.0017; with these floats the 27 small differences are not exactly tied (b + 0.01 - b is not 0.01
    in binary), so scipy uses the exact distribution of R+ and gives 2 P(R- <= 87) = 0.0019. The unpaired
    A12 of the same values is 0.45, which used to name b the winner."""
    a, b = counterexample()
    ref = sps.wilcoxon(a, b, zero_method="zsplit")
    assert ref.pvalue == pytest.approx(0.0019, abs=5e-5)
    d = a - b
    ranks = sps.rankdata(np.abs(d))
    r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    assert (r_plus, r_minus) == (378.0, 87.0)
    table = table_from({("a", "x"): a.tolist(), ("b", "x"): b.tolist()})
    an = stats.analyze(table, metric="m", goal="maximize", paired=True)
    row = an.pairwise.iloc[0]
    assert row.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert row.a12 < 0.5  # the unpaired A12 still points the other way
    assert row.significant and row.winner == "a"
    assert row.effect == "rank_biserial"
    assert row.rank_biserial == pytest.approx((378 - 87) / 465, abs=1e-12)
    assert row.shift_hl == pytest.approx(0.01, abs=1e-12)
    assert not any("b" in line.split(":")[0] and "significantly better" in line for line in an.summary_lines())
    down = stats.analyze(table, metric="m", goal="minimize", paired=True).pairwise.iloc[0]
    assert down.winner == "b" and down.rank_biserial == pytest.approx(-(378 - 87) / 465, abs=1e-12)
    assert down.shift_hl == pytest.approx(0.01, abs=1e-12)  # a - b in metric units, not oriented by the goal


# ---------------------------------------------------------------------------------------------------
# item 3: failed runs
# ---------------------------------------------------------------------------------------------------


def flaky_table(seed: int = 3, datasets: int = 10, replicates: int = 30) -> pd.DataFrame:
    """The issue's simulation: "flaky" and "solid" are the same algorithm (value = the seed's difficulty
    plus noise, lower is better), but flaky fails on the hardest 30 % of the seeds of every dataset."""
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str], list[float | None]] = {}
    for d in range(datasets):
        hard = rng.normal(0.0, 1.0, replicates)
        cut = np.quantile(hard, 0.7)
        solid = hard + rng.normal(0.0, 0.3, replicates)
        flaky = hard + rng.normal(0.0, 0.3, replicates)
        cells["solid", f"d{d}"] = solid.tolist()
        cells["flaky", f"d{d}"] = [None if h > cut else float(v) for h, v in zip(hard, flaky)]
    return table_from(cells)


@pytest.mark.parametrize("paired", [False, True])
def test_an_algorithm_that_fails_its_hardest_seeds_does_not_look_better(paired: bool) -> None:
    """Item 3: dropping failed runs made flaky significantly better on about half the datasets and
    overall; by default (failures = 'penalize') a failed run ranks below every successful run."""
    table = flaky_table()
    an = stats.analyze(table, metric="m", goal="minimize", paired=paired)
    assert "flaky" not in set(an.pairwise.winner.dropna())
    assert all(p.winner != "flaky" for p in an.across.pairs)
    assert an.across.rank_of("flaky") >= an.across.rank_of("solid")


def brute_walsh(d: np.ndarray) -> np.ndarray:
    """Every Walsh average (d_i + d_j) / 2, i <= j, by a double loop."""
    return np.array([(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))])


def brute_differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([xi - yj for xi in x for yj in y])


@pytest.mark.parametrize("seed", range(6))
def test_rank_biserial_and_hodges_lehmann_against_direct_enumeration(seed: int) -> None:
    """rank_biserial = (R+ - R-) / (n(n+1)/2) with scipy.stats.rankdata's average ranks (zeros split);
    the same number from the signs of the Walsh averages (a second, independent route: R+ - R- equals
    the sum of sign(d_i + d_j) over i <= j); R+ + R- = n(n+1)/2 and min(R+, R-) = scipy.stats.wilcoxon's
    statistic; shift_hl = the median of the brute-force Walsh averages (paired) or of all pairwise
    differences (independent)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 25))
    b = np.round(rng.normal(0.0, 1.0, n), 1)  # coarse values: ties and zero differences occur
    a = np.round(b + rng.normal(0.3, 1.0, n), 1)
    a[0] = b[0]  # at least one zero difference
    table = table_from({("a", "x"): a.tolist(), ("b", "x"): b.tolist()})
    row = stats.analyze(table, metric="m", goal="maximize", paired=True).pairwise.iloc[0]
    d = a - b
    ranks = sps.rankdata(np.abs(d))
    r_plus = ranks[d > 0].sum() + ranks[d == 0].sum() / 2
    r_minus = ranks[d < 0].sum() + ranks[d == 0].sum() / 2
    total = n * (n + 1) / 2
    assert r_plus + r_minus == pytest.approx(total)
    assert min(r_plus, r_minus) == pytest.approx(sps.wilcoxon(a, b, zero_method="zsplit").statistic)
    assert row.rank_biserial == pytest.approx((r_plus - r_minus) / total, abs=1e-12)
    walsh_signs = sum(np.sign(d[i] + d[j]) for i in range(n) for j in range(i, n))
    assert row.rank_biserial == pytest.approx(walsh_signs / total, abs=1e-12)
    assert row.shift_hl == pytest.approx(np.median(brute_walsh(d)), abs=1e-12)
    unpaired = stats.analyze(table, metric="m", goal="maximize", paired=False).pairwise.iloc[0]
    assert unpaired.shift_hl == pytest.approx(np.median(brute_differences(a, b)), abs=1e-12)
    assert unpaired.effect == "a12" and math.isnan(unpaired.rank_biserial)


def test_null_distributions_against_enumeration() -> None:
    """signed_rank_cdf and rank_sum_cdf against the distribution of R+ over all 2^n sign flips and of
    U over all C(m + n, m) rank arrangements, enumerated here."""
    import itertools

    for n in range(1, 11):
        counts = np.zeros(n * (n + 1) // 2 + 1)
        for signs in itertools.product((0, 1), repeat=n):
            counts[sum((i + 1) * s for i, s in enumerate(signs))] += 1
        np.testing.assert_allclose(stats.signed_rank_cdf(n), np.cumsum(counts) / 2**n, rtol=0, atol=1e-14)
    for m in range(1, 6):
        for n in range(1, 7):
            counts = np.zeros(m * n + 1)
            for xs in itertools.combinations(range(m + n), m):
                ys = [r for r in range(m + n) if r not in xs]
                counts[sum(1 for x in xs for y in ys if y < x)] += 1
            np.testing.assert_allclose(stats.rank_sum_cdf(m, n), np.cumsum(counts) / counts.sum(), atol=1e-14)


@pytest.mark.parametrize("n", [6, 9, 14, 25])
def test_paired_shift_interval_inverts_the_exact_signed_rank_test(n: int) -> None:
    """The Hodges-Lehmann interval is the set of shifts theta that scipy.stats.wilcoxon(d - theta,
    method='exact') does not reject at alpha (Hollander & Wolfe 1999, sec. 3.3): just inside each limit
    p >= alpha, just outside p < alpha; its achieved confidence is 1 - 2 P(T+ <= k - 1) (R's
    wilcox.test), e.g. 0.961 for n = 9 (k = 6)."""
    rng = np.random.default_rng(n)
    d = rng.normal(0.4, 1.0, n)
    hl = stats.hl_paired(d[None, :], 0.05)
    lo, hi = hl.low[0], hl.high[0]
    walsh = np.sort(brute_walsh(d))
    below_lo, above_lo = walsh[walsh < lo].max(initial=lo - 2.0), walsh[walsh > lo].min()
    below_hi, above_hi = walsh[walsh < hi].max(), walsh[walsh > hi].min(initial=hi + 2.0)
    inside = [(lo + above_lo) / 2, (below_hi + hi) / 2]
    outside = [(below_lo + lo) / 2, (hi + above_hi) / 2]
    for theta in inside:
        assert sps.wilcoxon(d - theta, method="exact").pvalue >= 0.05
    for theta in outside:
        assert sps.wilcoxon(d - theta, method="exact").pvalue < 0.05
    assert hl.estimate[0] == pytest.approx(np.median(walsh), abs=1e-12)
    if n == 9:
        assert stats.walsh_critical(9, 0.05)[:2] == (6, pytest.approx(0.9609375))
        assert hl.confidence[0] == pytest.approx(0.9609375)


@pytest.mark.parametrize(("m", "n"), [(5, 5), (8, 6), (12, 10), (20, 20)])
def test_two_sample_shift_interval_inverts_the_exact_rank_sum_test(m: int, n: int) -> None:
    """The two-sample Hodges-Lehmann interval is the set of shifts theta that
    scipy.stats.mannwhitneyu(x - theta, y, method='exact') does not reject at alpha (Hollander & Wolfe
    1999, sec. 4.3)."""
    rng = np.random.default_rng(m * 100 + n)
    x, y = rng.normal(0.5, 1.0, m), rng.normal(0.0, 1.0, n)
    hl = stats.hl_two_sample(np.sort(x)[None, :], np.sort(y)[None, :], 0.05)
    lo, hi = hl.low[0], hl.high[0]
    diffs = np.sort(brute_differences(x, y))
    below_lo, above_lo = diffs[diffs < lo].max(initial=lo - 2.0), diffs[diffs > lo].min()
    below_hi, above_hi = diffs[diffs < hi].max(), diffs[diffs > hi].min(initial=hi + 2.0)
    for theta in ((lo + above_lo) / 2, (below_hi + hi) / 2):
        assert sps.mannwhitneyu(x - theta, y, method="exact").pvalue >= 0.05
    for theta in ((below_lo + lo) / 2, (hi + above_hi) / 2):
        assert sps.mannwhitneyu(x - theta, y, method="exact").pvalue < 0.05
    assert hl.estimate[0] == pytest.approx(np.median(diffs), abs=1e-12)
    k, conf, exact = stats.shift_critical(m, n, 0.05)
    assert exact and conf == pytest.approx(1 - 2 * stats.rank_sum_cdf(m, n)[k - 1])
    assert lo == diffs[k - 1] and hi == diffs[m * n - k]


# ---------------------------------------------------------------------------------------------------
# item 6: intervals — reference formulas and coverage by simulation
# ---------------------------------------------------------------------------------------------------

N_SIM = 2000


def mc_band(level: float, n_sim: int = N_SIM) -> float:
    """Three Monte-Carlo standard errors of a proportion near ``level``."""
    return 3.0 * math.sqrt(level * (1.0 - level) / n_sim)


def test_a12_interval_solves_newcombes_score_equation() -> None:
    """Newcombe (2006, Stat. Med. 25:559, method 5): the limits are the roots theta of
    (theta - A12)^2 = z^2 V(theta), V(theta) = theta(1-theta)/(m n) [(2N-1) - (3N-3)/((2-theta)(1+theta))],
    N = (m+n)/2; here found independently per case with scipy.optimize.brentq."""
    from scipy.optimize import brentq

    z = sps.norm.ppf(0.975)
    cases = [(0.5, 10, 10), (0.7, 12, 8), (0.9, 30, 30), (1.0, 5, 5), (0.0, 6, 9), (0.62, 3, 40)]
    lo, hi = stats.a12_interval(
        np.array([c[0] for c in cases]), np.array([c[1] for c in cases]), np.array([c[2] for c in cases]), 0.05
    )
    for (a12, m, n), got_lo, got_hi in zip(cases, lo, hi):
        big_n = (m + n) / 2

        def g(t: float, a12: float = a12, m: int = m, n: int = n, big_n: float = big_n) -> float:
            v = t * (1 - t) / (m * n) * ((2 * big_n - 1) - (3 * big_n - 3) / ((2 - t) * (1 + t)))
            return (t - a12) ** 2 - z * z * v

        ref_lo = 0.0 if a12 == 0.0 else brentq(g, 0.0, a12 - 1e-15) if g(0.0) > 0 else 0.0
        ref_hi = 1.0 if a12 == 1.0 else brentq(g, a12 + 1e-15, 1.0) if g(1.0) > 0 else 1.0
        assert got_lo == pytest.approx(ref_lo, abs=1e-9) and got_hi == pytest.approx(ref_hi, abs=1e-9)
        assert 0.0 <= got_lo <= a12 <= got_hi <= 1.0
    assert lo[3] < 1.0 and hi[4] > 0.0  # no collapse at complete separation


def _coverage(hits: np.ndarray) -> float:
    return float(np.mean(hits))


@pytest.mark.parametrize("n", [8, 20])
def test_shift_intervals_cover_the_true_shift(n: int) -> None:
    """Coverage by simulation (seeded, 2000 samples): the exact Hodges-Lehmann intervals cover the true
    shift at least at the level they achieve, minus Monte-Carlo error (paired: the centre of symmetry of
    the differences; independent: the location shift between the samples)."""
    rng = np.random.default_rng(60 + n)
    d = rng.standard_t(3, (N_SIM, n)) + 0.7  # symmetric around 0.7, heavy tails
    paired = stats.hl_paired(d, 0.05)
    conf = float(paired.confidence[0])
    hits = (paired.low <= 0.7) & (0.7 <= paired.high)
    assert _coverage(hits) >= conf - mc_band(conf)
    x = rng.exponential(1.0, (N_SIM, n)) + 1.5
    y = rng.exponential(1.0, (N_SIM, n + 3))
    two = stats.hl_two_sample(np.sort(x, axis=1), np.sort(y, axis=1), 0.05)
    conf = float(two.confidence[0])
    assert _coverage((two.low <= 1.5) & (1.5 <= two.high)) >= conf - mc_band(conf)
    assert conf >= 0.95


@pytest.mark.parametrize(("n", "shift"), [(10, 0.0), (10, 1.0), (30, 0.5), (30, 2.5)])
def test_a12_interval_coverage_is_nominal(n: int, shift: float) -> None:
    """Newcombe's interval covers the true A12 = Phi(shift / sqrt(2)) of two normal samples at about
    95 % (simulation, seeded: within Monte-Carlo error and one point below, at most 99 % near complete
    separation, where it is known to be slightly conservative)."""
    rng = np.random.default_rng(int(10 * shift) + n)
    x, y = rng.normal(shift, 1.0, (N_SIM, n)), rng.normal(0.0, 1.0, (N_SIM, n))
    a12 = ((x[:, :, None] > y[:, None, :]).sum(axis=(1, 2))) / (n * n)
    lo, hi = stats.a12_interval(a12, np.full(N_SIM, n), np.full(N_SIM, n), 0.05)
    truth = sps.norm.cdf(shift / math.sqrt(2))
    cover = _coverage((lo <= truth) & (truth <= hi))
    # Newcombe's evaluation: close to nominal, slightly conservative near A12 = 0 or 1
    assert 0.95 - mc_band(0.95) - 0.01 <= cover <= 0.99


@pytest.mark.parametrize(("n", "delta"), [(10, 0.0), (10, 0.8), (30, 0.3), (30, 2.0)])
def test_rank_biserial_interval_coverage(n: int, delta: float) -> None:
    """The rank-biserial interval covers rho = 2 P(D + D' > 0) - 1 = 2 Phi(sqrt(2) delta) - 1 of normal
    differences at least at 95 % minus Monte-Carlo error (simulation, seeded)."""
    rng = np.random.default_rng(n + int(10 * delta))
    d = rng.normal(delta, 1.0, (N_SIM, n))
    r = stats.rank_biserial_paired(d)
    lo, hi = stats.rank_biserial_interval(d, r, 0.05)
    rho = 2 * sps.norm.cdf(math.sqrt(2) * delta) - 1
    assert _coverage((lo <= rho) & (rho <= hi)) >= 0.95 - mc_band(0.95)
    assert np.all((lo >= -1) & (hi <= 1) & (lo <= r + 1e-12) & (r <= hi + 1e-12))


# ---------------------------------------------------------------------------------------------------
# item 3: failure policy, success rates, null calibration
# ---------------------------------------------------------------------------------------------------


def test_exclude_reproduces_the_bias_and_warns() -> None:
    """With failures = 'exclude' (the old behaviour) flaky wins datasets and the overall comparison, and
    a warning says that failure rates differ."""
    an = stats.analyze(flaky_table(), metric="m", goal="minimize", paired=False, failures="exclude")
    assert an.failures == "exclude"
    assert (an.pairwise.winner == "flaky").sum() >= 3
    assert any(n.startswith("WARNING: failure rates differ") for n in an.notes)
    penalized = stats.analyze(flaky_table(), metric="m", goal="minimize", paired=False)
    assert penalized.failures == "penalize"
    assert not any(n.startswith("WARNING: failure rates differ") for n in penalized.notes)
    assert any("count as worse than every successful run" in n for n in penalized.notes)


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
@pytest.mark.parametrize("paired", [False, True])
def test_penalized_runs_equal_scipy_on_worst_values(goal: str, paired: bool) -> None:
    """Under 'penalize' every p-value and A12 equals scipy's on the samples with each failed run replaced
    by -inf (maximize) or +inf (minimize): below / above every successful run of the dataset and tied
    with the other failed runs (paired: two failed partners differ by 0, and the infinite differences
    tie in |d|); descriptives stay over the successful runs."""
    rng = np.random.default_rng(5)
    cells: dict[tuple[str, str], list[float | None]] = {}
    for d in ("p", "q"):
        for alg, shift in (("a", 0.0), ("b", 0.4), ("c", 0.8)):
            vals = rng.normal(shift, 1.0, 10)  # paired: scipy's exact permutation test over 2^10 sign flips
            cells[alg, d] = [None if rng.random() < 0.25 else float(v) for v in vals]
    table = table_from(cells)
    an = stats.analyze(table, metric="m", goal=goal, paired=paired)
    worst = -np.inf if goal == "maximize" else np.inf
    for row in an.pairwise.itertuples():
        xa = np.array([worst if v is None else v for v in cells[row.a, row.dataset]])
        xb = np.array([worst if v is None else v for v in cells[row.b, row.dataset]])
        if paired:
            with np.errstate(invalid="ignore"):
                d = np.where(xa == xb, 0.0, xa - xb)
            ref = sps.wilcoxon(d, zero_method="zsplit")
            assert row.p == pytest.approx(ref.pvalue, rel=1e-12) and row.statistic == ref.statistic
        else:
            ref = sps.mannwhitneyu(xa, xb)
            assert row.p == pytest.approx(ref.pvalue, rel=1e-12) and row.statistic == ref.statistic
            u = ref.statistic / (len(xa) * len(xb))
            assert row.a12 == pytest.approx(u if goal == "maximize" else 1 - u, abs=1e-12)
        assert row.n_a == len(xa)
    desc = an.descriptives.set_index(["algorithm", "dataset"])
    for (alg, d), vals in cells.items():
        ok = [v for v in vals if v is not None]
        assert desc.loc[(alg, d), "n"] == len(ok) and desc.loc[(alg, d), "mean"] == pytest.approx(np.mean(ok))


def naive_holm(p: list[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, written out."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_success_rates_match_fisher_exact_and_holm() -> None:
    """Per dataset and pair: p = scipy.stats.fisher_exact on [[succeeded_a, failed_a], [succeeded_b,
    failed_b]]; p_holm = Holm within the dataset (written out above); unfinished runs are not counted."""
    cells: dict[tuple[str, str], list[float | None]] = {
        ("a", "x"): [1.0] * 20,
        ("b", "x"): [1.0] * 12 + [None] * 8,
        ("c", "x"): [1.0] * 5 + [None] * 15,
        ("a", "y"): [1.0] * 10,
        ("b", "y"): [1.0] * 10,
        ("c", "y"): [1.0] * 9 + [None],
    }
    table = table_from(cells)
    table.loc[(table.algorithm == "a") & (table.dataset == "x") & (table.replicate >= 18), "status"] = "missing"
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    rates = an.success_rates
    for ds in ("x", "y"):
        rows = rates[rates.dataset == ds]
        expected = []
        for r in rows.itertuples():
            expected.append(sps.fisher_exact([[r.succeeded_a, r.failed_a], [r.succeeded_b, r.failed_b]]).pvalue)
        np.testing.assert_allclose(rows.p.to_numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(rows.p_holm.to_numpy(), naive_holm(expected), rtol=1e-12)
    ax = rates.set_index(["dataset", "a", "b"])
    assert (ax.loc[("x", "a", "c"), "succeeded_a"], ax.loc[("x", "a", "c"), "failed_a"]) == (18, 0)
    assert ax.loc[("x", "a", "c"), "significant"] and ax.loc[("x", "a", "c"), "more_reliable"] == "a"
    assert not ax.loc[("y", "a", "c"), "significant"]
    record = next(d for d in an.to_dict()["per_dataset"] if d["dataset"] == "x")["success_rates"]
    assert record["test"] == "fisher_exact" and len(record["pairs"]) == 3
    assert any("success rates differ significantly" in n for n in an.notes)


def test_failed_runs_on_a_dataset_without_any_success_are_left_out() -> None:
    """'worse than every successful run' needs a successful run: where every run failed, nothing is ranked."""
    cells: dict[tuple[str, str], list[float | None]] = {
        ("a", "x"): [None] * 4,
        ("b", "x"): [None] * 4,
        ("a", "y"): [1.0, 2.0, 3.0, 4.0],
        ("b", "y"): [None] * 4,
    }
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    rows = an.pairwise.set_index("dataset")
    assert math.isnan(rows.loc["x", "p"]) and rows.loc["y", "n_b"] == 4
    ref = sps.mannwhitneyu([1.0, 2.0, 3.0, 4.0], [-np.inf] * 4)  # tied failures: scipy's normal approximation
    assert rows.loc["y", "a12"] == 1.0 and rows.loc["y", "p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert rows.loc["y", "winner"] == "a"  # every failed run of b ranks below every run of a
    assert "x" in an.excluded_datasets and "y" not in an.excluded_datasets
    assert an.aggregated.loc["y", "b"] == 1.0  # the worst successful value of the dataset


@pytest.mark.parametrize("paired", [False, True])
def test_null_calibration_of_pairwise_and_success_rate_verdicts(paired: bool) -> None:
    """Null calibration (seeded): two identical algorithms whose runs fail independently with the same
    probability; over 400 simulated datasets of 15 replicates the metric test (failures penalised) and
    Fisher's test of the success rates each reject at most alpha + 3 Monte-Carlo standard errors."""
    rng = np.random.default_rng(11 if paired else 12)
    n_sim, reps, alpha = 400, 15, 0.05
    cells: dict[tuple[str, str], list[float | None]] = {}
    for d in range(n_sim):
        base = rng.normal(0.0, 1.0, reps)  # seed effects: pairing is meaningful
        for alg in ("a", "b"):
            vals = base + rng.normal(0.0, 1.0, reps)
            cells[alg, f"d{d:03d}"] = [None if rng.random() < 0.2 else float(v) for v in vals]
    an = stats.analyze(table_from(cells), metric="m", goal="minimize", paired=paired, intervals=False)
    band = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_sim)
    assert an.pairwise.significant.mean() <= band
    assert an.success_rates.significant.mean() <= band


# ---------------------------------------------------------------------------------------------------
# item 7: replicates needed (power)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("power", [0.8, 0.9])
def test_replicates_needed_is_noethers_formula(alpha: float, power: float) -> None:
    """Noether (1987, JASA 82:645): Mann-Whitney N = (z_{1-alpha/2} + z_power)^2 / (12 c (1 - c) (p - 1/2)^2)
    in total with c = 1/2 (so N/2 per algorithm); Wilcoxon signed-rank n = (...)^2 / (3 (p' - 1/2)^2)
    pairs. The detectable effect inverts the same formula."""
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    for p in (0.56, 0.64, 0.71, 0.8):
        total = z**2 / (12 * 0.25 * (p - 0.5) ** 2)
        assert stats.replicates_needed(p, paired=False, alpha=alpha, power=power) == math.ceil(total / 2)
        assert stats.replicates_needed(p, paired=True, alpha=alpha, power=power) == math.ceil(
            z**2 / (3 * (p - 0.5) ** 2)
        )
    for n in (12, 30, 100):
        for paired, factor in ((False, 6), (True, 3)):
            effect = 0.5 + z / math.sqrt(factor * n)
            got = stats.detectable_effect(n, paired=paired, alpha=alpha, power=power)
            assert got == (pytest.approx(effect) if effect < 1 else None)
    assert stats.replicates_needed(0.64, paired=False) == 67  # the default target: A12 >= 0.64
    assert stats.detectable_effect(3, paired=False) is None  # 3 vs 3 runs cannot reach p < 0.05


def test_power_at_the_recommended_replicates_by_simulation() -> None:
    """Monte-Carlo power (seeded, 1000 samples) at the recommended n is at least 0.8 minus 3 standard
    errors: normal samples shifted so that A12 = 0.64 (Mann-Whitney U, 67 per algorithm) and normal
    paired differences with P(D + D' > 0) = 0.64 (Wilcoxon, 134 pairs); and at n = 12 for the effect
    12 replicates are said to detect."""
    rng = np.random.default_rng(7)
    n_sim, band = 1000, 3 * math.sqrt(0.8 * 0.2 / 1000)
    n = stats.replicates_needed(0.64, paired=False)
    shift = math.sqrt(2) * sps.norm.ppf(0.64)
    x, y = rng.normal(shift, 1.0, (n_sim, n)), rng.normal(0.0, 1.0, (n_sim, n))
    assert np.mean(sps.mannwhitneyu(x, y, axis=-1).pvalue < 0.05) >= 0.8 - band
    n = stats.replicates_needed(0.64, paired=True)
    d = rng.normal(sps.norm.ppf(0.64) / math.sqrt(2), 1.0, (n_sim, n))
    assert np.mean(sps.wilcoxon(d, axis=-1).pvalue < 0.05) >= 0.8 - band
    effect = stats.detectable_effect(12, paired=False)
    assert effect is not None and 0.8 < effect < 0.9
    shift = math.sqrt(2) * sps.norm.ppf(effect)
    x, y = rng.normal(shift, 1.0, (n_sim, 12)), rng.normal(0.0, 1.0, (n_sim, 12))
    assert np.mean(sps.mannwhitneyu(x, y, axis=-1).pvalue < 0.05) >= 0.8 - band


def test_the_analysis_says_what_its_replicates_detect() -> None:
    """The notes and stats.json carry the sentence of the issue: 'N replicates detect only A12 >= x with
    80 % power; M are needed for 0.64'."""
    rng = np.random.default_rng(1)
    cells = {(a, d): rng.normal(0.0, 1.0, 12).tolist() for a in ("a", "b", "c") for d in ("x", "y")}
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    expected = stats.detectable_effect(12, paired=False)
    assert expected is not None
    sentence = f"12 replicates detect only A12 >= {expected:.2f} with 80 % power at α = 0.05 per pair; 67 are needed"
    assert any(n.startswith(sentence) for n in an.notes)
    block = an.to_dict()["power"]
    assert block["replicates"] == 12 and block["replicates_needed"] == 67 and block["method"] == "noether_1987"
    assert block["replicates_needed_holm_worst_case"] == stats.replicates_needed(0.64, paired=False, alpha=0.05 / 3)


# ---------------------------------------------------------------------------------------------------
# the spec field, the CLI and the report files
# ---------------------------------------------------------------------------------------------------

RUN_SCRIPT = """
import json, os, random
alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
hard = random.Random(seed).gauss(0.0, 1.0)  # the seed's difficulty, shared by both algorithms
if alg == "flaky" and hard > 0.5 and os.environ["EXPKIT_REPLICATE"] != "0":
    raise SystemExit(3)  # crashes on its hardest seeds (not on its first runs: expkit would stop scheduling it)
loss = hard + random.Random(seed * 7 + len(alg)).gauss(0.0, 0.3)
json.dump({"metrics": {"loss": loss}}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
"""

RUN_SPEC = """
apiVersion: expkit/v1
kind: Experiment
metadata: {{name: flaky}}
spec:
  image: python:3.12-slim@sha256:{digest}
  command: [python, run.py]
  algorithms: [{{name: solid}}, {{name: flaky}}]
  datasets: [d1, d2, d3]
  replicates: 10
  seed: 5
  metric: {{name: loss, goal: minimize}}
{extra}"""


@pytest.fixture(scope="module")
def flaky_run(tmp_path_factory: pytest.TempPathFactory):
    from expkit.runner import start_run
    from expkit.stores import FileStore

    root = tmp_path_factory.mktemp("flaky")
    (root / "run.py").write_text(RUN_SCRIPT)
    (root / "experiment.yml").write_text(RUN_SPEC.format(digest="c" * 64, extra=""))
    store = FileStore(root / "store")
    outcome = start_run(root / "experiment.yml", store, workers=2)
    return root, store, outcome.run_id


def test_spec_failures_field() -> None:
    """spec.failures accepts penalize and exclude, rejects anything else with the field's path, and is
    left out of the resolved spec when not given (the sha256 of existing specs does not change)."""
    from expkit.core.errors import ExpkitError
    from expkit.spec import experiment_dict, load_spec_text

    base = RUN_SPEC.format(digest="c" * 64, extra="")
    plain = load_spec_text(base)
    assert plain.experiment.spec.failures is None and "failures" not in experiment_dict(plain.experiment)["spec"]
    excl = load_spec_text(RUN_SPEC.format(digest="c" * 64, extra="  failures: exclude\n"))
    assert excl.experiment.spec.failures == "exclude" and excl.sha256 != plain.sha256
    with pytest.raises(ExpkitError, match="failures"):
        load_spec_text(RUN_SPEC.format(digest="c" * 64, extra="  failures: drop\n"))


def test_results_cli_failure_policy_and_interval_outputs(flaky_run, tmp_path) -> None:
    """`expkit results`: penalize by default (flaky is not better), `--failures exclude` brings the old
    bias back with its warning; stats.json records the policy, the intervals and the Fisher block;
    summary.csv compares every cell with the best; `--table-ci` adds the shift intervals to table.tex."""
    import json

    from typer.testing import CliRunner

    from expkit.cli import app

    root, store, run_id = flaky_run
    runner = CliRunner()
    res = runner.invoke(
        app, ["results", run_id, "--store", str(store.root), "-o", str(tmp_path / "p"), "--format", "png", "--table-ci"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert doc["failures"] == "penalize" and doc["conventions"]["failures"].startswith("failures = 'penalize'")
    pairs = [p for d in doc["per_dataset"] for p in d["pairwise"]["pairs"]]
    assert all(p["winner"] != "flaky" for p in pairs)
    assert all(p["a12_low"] <= p["a12"] <= p["a12_high"] for p in pairs)
    assert all(p["shift_hl"] is not None or "shift not finite" in p["note"] for p in pairs)
    assert any(d["success_rates"]["pairs"] for d in doc["per_dataset"])
    assert doc["power"]["replicates"] == 10
    summary = pd.read_csv(tmp_path / "p" / "summary.csv")
    assert {"vs_best", "effect_vs_best", "effect_low", "effect_high", "shift_vs_best", "shift_low"} <= set(summary)
    assert "\\shortstack[r]" in (tmp_path / "p" / "table.tex").read_text()
    md = (tmp_path / "p" / "report.md").read_text()
    assert "## Success rates" in md and "## Replicates" in md and "count as worse than every successful" in md
    assert "penalize: a failed run counts as worse" in md
    res = runner.invoke(
        app,
        [
            "results",
            run_id,
            "--store",
            str(store.root),
            "-o",
            str(tmp_path / "e"),
            "--format",
            "png",
            "--failures",
            "exclude",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e" / "stats.json").read_text())
    assert doc["failures"] == "exclude" and any(n.startswith("WARNING: failure rates differ") for n in doc["notes"])
    bad = runner.invoke(app, ["results", run_id, "--store", str(store.root), "--failures", "drop"])
    assert bad.exit_code == 2 and "penalize or exclude" in bad.output


def test_plan_cli(flaky_run) -> None:
    """`expkit plan SPEC` prints what the spec's replicates detect and what A12 = 0.64 needs (Noether);
    with --pilot it reads the pilot's failure rate; with failures: exclude it scales the recommendation."""
    import json

    from typer.testing import CliRunner

    from expkit.cli import app

    root, store, run_id = flaky_run
    runner = CliRunner()
    res = runner.invoke(app, ["plan", str(root / "experiment.yml")])
    assert res.exit_code == 0, res.output
    detect = stats.detectable_effect(10, paired=False)
    assert f"The spec's 10 replicates detect only A12 >= {detect:.2f}" in res.output
    assert "To detect A12 >= 0.64: 67 replicates" in res.output and "Recommendation: replicates: 67" in res.output
    res = runner.invoke(
        app, ["plan", str(root / "experiment.yml"), "--pilot", run_id, "--store", str(store.root), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert 0 < doc["pilot"]["failure_rate"] < 0.5 and doc["recommended_replicates"] == 67
    (root / "exclude.yml").write_text(RUN_SPEC.format(digest="c" * 64, extra="  failures: exclude\n"))
    res = runner.invoke(
        app, ["plan", str(root / "exclude.yml"), "--pilot", run_id, "--store", str(store.root), "--json"]
    )
    doc = json.loads(res.stdout)
    rate = doc["pilot"]["failure_rate"]
    assert doc["recommended_replicates"] == math.ceil(67 / (1 - rate))
    bad = runner.invoke(app, ["plan", str(root / "experiment.yml"), "--effect", "0.4"])
    assert bad.exit_code == 2 and "between 0.5 and 1" in bad.output


@pytest.mark.parametrize("paired", [False, True])
def test_report_rows_show_the_winners_effect_and_signed_shift(paired: bool) -> None:
    """The report's significant pairs read from the winner's side: its effect size (A12 > 0.5, or
    r > 0) inside its interval, and the shift better - worse with its sign (negative when lower is
    better), inside its interval."""
    from expkit.analysis.report_effects import significant_rows, summary_frame

    rng = np.random.default_rng(21)
    cells = {("fast", d): (rng.normal(0.0, 1.0, 15)).tolist() for d in ("x", "y")}
    cells.update({("slow", d): (rng.normal(2.0, 1.0, 15)).tolist() for d in ("x", "y")})
    an = stats.analyze(table_from(cells), metric="m", goal="minimize", paired=paired)
    rows = significant_rows(an)
    assert len(rows) == 2 and all(r["winner"] == "fast" and r["loser"] == "slow" for r in rows)
    for r in rows:
        effect, shift = float(r["effect"]), float(r["shift"])
        lo, hi = (float(v) for v in r["effect_ci"].strip("[]").split(", "))
        assert lo <= effect <= hi and (effect > 0.5 if not paired else effect > 0)
        s_lo, s_hi = (float(v) for v in r["shift_ci"].strip("[]").split(", "))
        assert r["shift"].startswith("-") and s_lo <= shift <= s_hi < 0
    summary = summary_frame(an).set_index(["algorithm", "dataset"])
    assert summary.loc[("slow", "x"), "vs_best"] == "fast" and summary.loc[("slow", "x"), "shift_vs_best"] > 0
    assert math.isnan(summary.loc[("fast", "x"), "shift_vs_best"])

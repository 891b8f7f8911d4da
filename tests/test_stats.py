"""Tests of expkit.analysis.stats: known answers on seeded synthetic data, equality with direct scipy calls, the
published worked example of Demšar (2006), edge cases, and determinism of ``to_dict``."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

from expkit.analysis import stats
from expkit.core.errors import ExpkitError, InputError

COLUMNS = list(stats.REQUIRED_COLUMNS)

# the library must not leak numpy/scipy warnings for degenerate data: it reports them in words
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def table_from(
    cells: dict[tuple[str, str], list[float | None]],
    *,
    metric: str = "m",
    seeds: dict[tuple[str, str], list[int]] | None = None,
) -> pd.DataFrame:
    """Tidy table from {(algorithm, dataset): values}; None = failed run. Seed of replicate r on a dataset
    is 100 * (dataset index) + r unless ``seeds`` says otherwise."""
    ds_index = {d: i for i, d in enumerate(sorted({d for _, d in cells}))}
    rows = []
    for (alg, ds), values in cells.items():
        for r, v in enumerate(values):
            seed = seeds[alg, ds][r] if seeds else 100 * ds_index[ds] + r
            failed = v is None
            rows.append((alg, ds, r, seed, metric, np.nan if failed else float(v), "failed" if failed else "succeeded"))
    return pd.DataFrame(rows, columns=COLUMNS)


def synthetic(
    shifts: dict[str, float], datasets: int, replicates: int, seed: int, *, noise: float = 1.0, fail: float = 0.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = {}
    for d in range(datasets):
        base = rng.normal()
        for alg, shift in shifts.items():
            vals = base + shift + rng.normal(0.0, noise, replicates)
            cells[alg, f"d{d:02d}"] = [None if rng.random() < fail else float(v) for v in vals]
    return table_from(cells)


def valid_values(table: pd.DataFrame, alg: str, ds: str) -> np.ndarray:
    rows = table[(table.algorithm == alg) & (table.dataset == ds) & (table.status == "succeeded")]
    rows = rows[np.isfinite(rows.value)]
    return rows.sort_values("replicate")["value"].to_numpy()


def paired_values(table: pd.DataFrame, a: str, b: str, ds: str) -> tuple[np.ndarray, np.ndarray]:
    ok = table[(table.dataset == ds) & (table.status == "succeeded") & np.isfinite(table.value)]
    left = ok[ok.algorithm == a].set_index(["replicate", "seed"])["value"]
    right = ok[ok.algorithm == b].set_index(["replicate", "seed"])["value"]
    both = left.index.intersection(right.index).sort_values()
    return left.loc[both].to_numpy(), right.loc[both].to_numpy()


def brute_a12(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) + 0.5 P(a = b) over all pairs of values (larger = a)."""
    greater = sum(1 for x in a for y in b if x > y)
    equal = sum(1 for x in a for y in b if x == y)
    return (greater + 0.5 * equal) / (len(a) * len(b))


def naive_holm(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def dumps(analysis: stats.Analysis) -> str:
    return json.dumps(analysis.to_dict(), allow_nan=False, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
@pytest.mark.parametrize("paired", [False, True])
def test_clearly_better_algorithm_wins_in_the_right_direction(goal: str, paired: bool) -> None:
    better = 3.0 if goal == "maximize" else -3.0
    table = synthetic({"base": 0.0, "good": better, "twin": 0.0}, datasets=8, replicates=15, seed=1)
    an = stats.analyze(table, metric="m", goal=goal, paired=paired)
    pw = an.pairwise
    for ds in an.datasets:
        rows = pw[pw.dataset == ds].set_index(["a", "b"])
        for other in ("base", "twin"):
            a, b = sorted(("good", other))
            row = rows.loc[(a, b)]
            assert row.significant
            assert row.winner == "good"
            # A12 of a vs b oriented by the goal: > 0.5 means a is better
            assert (row.a12 > 0.5) == (a == "good")
            assert row.magnitude == "large"
        assert an.best_on(ds) == ("good",)
    ranks = dict(zip(an.across.algorithms, an.across.average_ranks))
    assert ranks["good"] == 1.0
    assert an.across.friedman.p < 0.05 and an.across.iman_davenport.p < 0.05
    across = {(p.a, p.b): p for p in an.across.pairs}
    assert across["base", "good"].winner == "good" and across["base", "good"].significant
    assert not across["base", "twin"].significant
    wtl = an.win_tie_loss().set_index(["algorithm", "opponent"])
    assert wtl.loc[("good", "base"), "wins"] == 8 and wtl.loc[("base", "good"), "losses"] == 8


def test_same_distribution_is_not_significant() -> None:
    table = synthetic({"a": 0.0, "b": 0.0}, datasets=6, replicates=20, seed=7)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    pw = an.pairwise
    assert not pw.significant.any()
    assert pw.winner.isna().all()
    assert not an.across.pairs[0].significant


def test_identical_algorithms_are_never_significant() -> None:
    rng = np.random.default_rng(3)
    cells = {}
    for d in ("x", "y", "z"):
        vals = rng.normal(size=12).tolist()
        cells["a", d] = vals
        cells["b", d] = list(vals)
        cells["c", d] = [v + 5 for v in vals]
    table = table_from(cells)
    for paired in (False, True):
        an = stats.analyze(table, metric="m", goal="maximize", paired=paired)
        pw = an.pairwise.set_index(["dataset", "a", "b"])
        for d in ("x", "y", "z"):
            row = pw.loc[(d, "a", "b")]
            assert row.p == 1.0 and not row.significant and row.a12 == 0.5
            assert row.magnitude == "negligible"
            assert "identical samples" in row.note or "all paired differences are zero" in row.note
        assert any("identical samples" in n or "only zero paired differences" in n for n in an.notes)


def test_minimize_inverts_ranks_and_winners() -> None:
    table = synthetic({"low": -2.0, "high": 2.0, "mid": 0.0}, datasets=6, replicates=10, seed=11)
    up = stats.analyze(table, metric="m", goal="maximize", paired=False)
    down = stats.analyze(table, metric="m", goal="minimize", paired=False)
    assert up.across.rank_of("high") == 1.0 and down.across.rank_of("low") == 1.0
    assert up.across.rank_of("low") == 3.0 and down.across.rank_of("high") == 3.0
    pu, pdn = up.pairwise, down.pairwise
    np.testing.assert_allclose(pu.a12 + pdn.a12, 1.0)
    np.testing.assert_array_equal(pu.p.to_numpy(), pdn.p.to_numpy())
    assert set(pu.winner.dropna()) == {"high", "mid"} and set(pdn.winner.dropna()) == {"low", "mid"}
    assert up.ranks.loc[:, "high"].eq(1.0).all() and down.ranks.loc[:, "low"].eq(1.0).all()


def test_a12_matches_definition_and_median_difference() -> None:
    table = synthetic({"a": 0.0, "b": 0.4}, datasets=3, replicates=9, seed=5, fail=0.15)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, failures="exclude")
    for row in an.pairwise.itertuples():
        xa, xb = valid_values(table, row.a, row.dataset), valid_values(table, row.b, row.dataset)
        assert row.a12 == pytest.approx(brute_a12(xa, xb), abs=1e-12)
        assert row.median_diff == pytest.approx(np.median(xa) - np.median(xb), abs=1e-12)
    down = stats.analyze(table, metric="m", goal="minimize", paired=False, failures="exclude")
    for row in down.pairwise.itertuples():
        xa, xb = valid_values(table, row.a, row.dataset), valid_values(table, row.b, row.dataset)
        assert row.a12 == pytest.approx(brute_a12(xb, xa), abs=1e-12)  # smaller is better


# ---------------------------------------------------------------------------------------------------
# equality with direct scipy calls
# ---------------------------------------------------------------------------------------------------


def mixed_table(seed: int) -> pd.DataFrame:
    """Datasets that exercise every method scipy can pick: small samples with and without ties, large
    samples, unequal sizes from failed runs, integer-valued (tied) metrics, zero differences."""
    rng = np.random.default_rng(seed)
    cells = {}
    algs = ("p", "q", "r", "s")
    for d, (reps, kind) in enumerate(
        [(5, "cont"), (6, "int"), (12, "cont"), (12, "int"), (30, "cont"), (30, "int"), (60, "int"), (7, "cont")]
    ):
        for j, alg in enumerate(algs):
            if kind == "cont":
                vals = rng.normal(0.3 * j, 1.0, reps)
            else:
                vals = rng.integers(0, 4, reps).astype(float) + (j % 2)
            cells[alg, f"d{d}"] = [None if (reps > 6 and rng.random() < 0.1) else float(v) for v in vals]
    return table_from(cells)


def test_mannwhitneyu_vectorised_equals_per_pair_scipy() -> None:
    table = mixed_table(21)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, failures="exclude")
    methods = set()
    for row in an.pairwise.itertuples():
        xa, xb = valid_values(table, row.a, row.dataset), valid_values(table, row.b, row.dataset)
        ref = sps.mannwhitneyu(xa, xb)
        assert row.statistic == ref.statistic
        assert row.p == ref.pvalue
        assert row.a12 == ref.statistic / (len(xa) * len(xb))
        methods.add(row.method)
    assert methods == {"exact", "asymptotic"}


def test_wilcoxon_vectorised_equals_per_pair_scipy() -> None:
    table = mixed_table(22)
    an = stats.analyze(table, metric="m", goal="maximize", paired=True, failures="exclude")
    methods = set()
    for row in an.pairwise.itertuples():
        xa, xb = paired_values(table, row.a, row.b, row.dataset)
        assert row.n_a == len(xa)
        if np.all(xa == xb):
            assert row.p == 1.0
            continue
        assert row.method == stats.wilcoxon_method(xa - xb)
        ref = sps.wilcoxon(xa, xb, zero_method="zsplit")  # method='auto', permutation tests included
        assert row.statistic == ref.statistic
        assert row.p == pytest.approx(ref.pvalue, rel=1e-12, abs=0)
        methods.add(row.method)
    assert methods == {"exact", "permutation", "asymptotic"}


def test_omnibus_equals_scipy_kruskal_and_friedman() -> None:
    table = mixed_table(23)
    unpaired = stats.analyze(table, metric="m", goal="maximize", paired=False, failures="exclude")
    paired = stats.analyze(table, metric="m", goal="maximize", paired=True, failures="exclude")
    checked = 0
    for om_u, om_p in zip(unpaired.omnibus, paired.omnibus):
        ds = om_u.dataset
        groups = [valid_values(table, a, ds) for a in om_u.algorithms]
        ref = sps.kruskal(*groups)
        if np.isfinite(ref.statistic):
            assert om_u.test == "kruskal"
            assert om_u.statistic == pytest.approx(ref.statistic, rel=1e-12)
            assert om_u.p == pytest.approx(ref.pvalue, rel=1e-12)
            checked += 1
        wide = (
            table[(table.dataset == ds) & (table.status == "succeeded")]
            .pivot(index=["replicate", "seed"], columns="algorithm", values="value")
            .dropna()
        )
        if len(wide) >= 2:
            ref = sps.friedmanchisquare(*[wide[a].to_numpy() for a in om_p.algorithms])
            if np.isfinite(ref.statistic):
                assert om_p.test == "friedmanchisquare" and om_p.n_blocks == len(wide)
                assert om_p.statistic == pytest.approx(ref.statistic, rel=1e-12)
                assert om_p.p == pytest.approx(ref.pvalue, rel=1e-12)
                checked += 1
    assert checked >= 12


def test_kruskal_batched_over_datasets_with_failures_equals_scipy() -> None:
    table = synthetic({f"a{i}": 0.1 * i for i in range(6)}, datasets=30, replicates=8, seed=4, fail=0.08)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, failures="exclude")
    for om in an.omnibus:
        ref = sps.kruskal(*[valid_values(table, a, om.dataset) for a in om.algorithms])
        assert om.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert om.p == pytest.approx(ref.pvalue, rel=1e-12)


def test_across_datasets_equals_scipy() -> None:
    table = synthetic({"a": 0.0, "b": 0.3, "c": 0.6, "d": 0.1}, datasets=12, replicates=5, seed=9)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, aggregate="median")
    cells = table.groupby(["dataset", "algorithm"])["value"].median().unstack()
    assert np.allclose(an.aggregated.to_numpy(), cells.to_numpy())
    ref = sps.friedmanchisquare(*[cells[c].to_numpy() for c in cells.columns])
    assert an.across.friedman.chi2 == pytest.approx(ref.statistic, rel=1e-12)
    assert an.across.friedman.p == pytest.approx(ref.pvalue, rel=1e-12)
    ranks = sps.rankdata(-cells.to_numpy(), axis=1).mean(axis=0)
    np.testing.assert_allclose(an.across.average_ranks, ranks)
    p_raw = []
    for pair in an.across.pairs:
        ref = sps.wilcoxon(cells[pair.a].to_numpy(), cells[pair.b].to_numpy(), zero_method="zsplit")
        assert pair.statistic == ref.statistic and pair.p == pytest.approx(ref.pvalue, rel=1e-12)
        p_raw.append(ref.pvalue)
    np.testing.assert_allclose([p.p_holm for p in an.across.pairs], naive_holm(p_raw), rtol=1e-12)
    # the public helper on the aggregated table gives the same block
    direct = stats.across_datasets(cells, goal="maximize", alpha=0.05, aggregate="median")
    assert direct.average_ranks == an.across.average_ranks
    assert direct.iman_davenport == an.across.iman_davenport


def test_holm_textbook_and_against_naive() -> None:
    # m = 4: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 30):
        p = rng.random(m) ** 3
        np.testing.assert_allclose(stats.holm(p), naive_holm(p.tolist()), rtol=1e-14)
    out = stats.holm([0.01, np.nan, 0.02])  # untested entries are outside the family
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert np.isnan(out[1])


def test_per_dataset_holm_is_within_each_dataset() -> None:
    table = synthetic({"a": 0.0, "b": 0.5, "c": 1.0, "d": 1.5}, datasets=4, replicates=10, seed=2)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    for _ds, rows in an.pairwise.groupby("dataset"):
        np.testing.assert_allclose(rows.p_holm.to_numpy(), naive_holm(rows.p.tolist()), rtol=1e-14)
        np.testing.assert_array_equal(rows.significant.to_numpy(), rows.p_holm.to_numpy() < 0.05)


def test_a12_magnitude_thresholds_are_symmetric() -> None:
    # Vargha & Delaney (2000): negligible < 0.56, small < 0.64, medium < 0.71, large otherwise
    cases = {
        0.5: "negligible",
        0.555: "negligible",
        0.56: "small",
        0.639: "small",
        0.64: "medium",
        0.709: "medium",
        0.71: "large",
        1.0: "large",
    }
    for value, label in cases.items():
        assert stats.a12_magnitude(value) == label
        assert stats.a12_magnitude(1.0 - value) == label


def test_minimal_p_values() -> None:
    assert stats.minimal_p_mannwhitneyu(3, 3) == pytest.approx(2 / math.comb(6, 3))  # 0.1
    assert stats.minimal_p_mannwhitneyu(3, 3) == pytest.approx(
        sps.mannwhitneyu([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).pvalue
    )
    assert stats.minimal_p_mannwhitneyu(10, 12) == pytest.approx(
        sps.mannwhitneyu(np.arange(10.0), np.arange(10.0, 22.0)).pvalue
    )
    assert stats.minimal_p_wilcoxon(5) == pytest.approx(sps.wilcoxon(np.arange(1.0, 6.0)).pvalue)  # 0.0625
    assert stats.minimal_p_wilcoxon(60) == pytest.approx(sps.wilcoxon(np.arange(1.0, 61.0)).pvalue)
    sep = [np.arange(3.0) + 3 * i for i in range(3)]
    assert stats.minimal_p_kruskal([3, 3, 3]) == pytest.approx(sps.kruskal(*sep).pvalue)
    block = np.tile(np.arange(4.0), (6, 1))
    assert stats.minimal_p_friedman(6, 4) == pytest.approx(sps.friedmanchisquare(*block.T).pvalue)


# ---------------------------------------------------------------------------------------------------
# published worked example: Demšar (2006)
# ---------------------------------------------------------------------------------------------------

# J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1-30 (2006),
# Table 6: AUC of C4.5 with m = 0 and cf = 0.25 and of C4.5 with m, cf or both tuned, on 14 UCI data sets.
# Section 3.2.4 works the example: average ranks 3.143, 2.000, 2.893, 1.964; chi2_F = 9.28; F_F = 3.69
# (F(3, 39)); Nemenyi q_0.05 = 2.569, CD = 2.569 sqrt(4*5/(6*14)) = 1.25, so no pair differs at 0.05;
# at 0.10, q = 2.291, CD = 1.12: C4.5 is worse than C4.5+m and C4.5+m+cf.
# On "voting" the printed AUCs of C4.5+cf and C4.5+m+cf are both 0.975, but Table 6 ranks C4.5+cf 2nd and
# C4.5+m+cf 3rd (the unrounded values differ); 0.9751 reproduces that order and the published ranks.
DEMSAR_ALGS = ("C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf")
DEMSAR_AUC = {
    "adult (sample)": (0.763, 0.768, 0.771, 0.798),
    "breast cancer": (0.599, 0.591, 0.590, 0.569),
    "breast cancer wisconsin": (0.954, 0.971, 0.968, 0.967),
    "cmc": (0.628, 0.661, 0.654, 0.657),
    "ionosphere": (0.882, 0.888, 0.886, 0.898),
    "iris": (0.936, 0.931, 0.916, 0.931),
    "liver disorders": (0.661, 0.668, 0.609, 0.685),
    "lung cancer": (0.583, 0.583, 0.563, 0.625),
    "lymphography": (0.775, 0.838, 0.866, 0.875),
    "mushroom": (1.000, 1.000, 1.000, 1.000),
    "primary tumor": (0.940, 0.962, 0.965, 0.962),
    "rheum": (0.619, 0.666, 0.614, 0.669),
    "voting": (0.972, 0.981, 0.9751, 0.975),
    "wine": (0.957, 0.978, 0.946, 0.970),
}


def demsar_table(algorithms: tuple[str, ...] = DEMSAR_ALGS) -> pd.DataFrame:
    cells = {}
    for ds, values in DEMSAR_AUC.items():
        for alg, v in zip(DEMSAR_ALGS, values):
            if alg in algorithms:
                cells[alg, ds] = [v]  # one value per cell: the AUC reported in the paper
    return table_from(cells, metric="auc")


def test_demsar_2006_friedman_iman_davenport_nemenyi() -> None:
    table = demsar_table()
    an = stats.analyze(
        table, metric="auc", goal="maximize", paired=False, algorithms=DEMSAR_ALGS, datasets=tuple(DEMSAR_AUC)
    )
    ac = an.across
    assert len(ac.datasets) == 14 and ac.excluded == ()
    np.testing.assert_allclose(ac.average_ranks, [3.143, 2.000, 2.893, 1.964], atol=5e-4)
    assert ac.friedman.chi2_uncorrected == pytest.approx(9.28, abs=5e-3)
    f, df1, df2, _ = stats.iman_davenport(ac.friedman.chi2_uncorrected, 14, 4)
    assert (round(f, 2), df1, df2) == (3.69, 3, 39)
    # the reported statistic is scipy's tie-corrected one (several data sets have ties), and the
    # Iman-Davenport F of the analysis is derived from it
    ref = sps.friedmanchisquare(*np.array(list(DEMSAR_AUC.values())).T)
    assert ac.friedman.chi2 == pytest.approx(ref.statistic, rel=1e-12) and ac.friedman.chi2 > 9.28
    assert ac.iman_davenport.f == pytest.approx(stats.iman_davenport(ref.statistic, 14, 4)[0], rel=1e-12)
    assert ac.iman_davenport.p < 0.05  # Demšar: F_F = 3.69 > F(3, 39) critical value 2.85
    nem = ac.nemenyi
    assert nem.q_05 == pytest.approx(2.569, abs=5e-4) and nem.cd_05 == pytest.approx(1.25, abs=5e-3)
    assert nem.q_10 == pytest.approx(2.291, abs=5e-4) and nem.cd_10 == pytest.approx(1.12, abs=5e-3)
    assert not any(p.nemenyi_significant for p in ac.pairs)  # alpha = 0.05: nothing
    at_10 = stats.analyze(
        table,
        metric="auc",
        goal="maximize",
        paired=False,
        alpha=0.10,
        algorithms=DEMSAR_ALGS,
        datasets=tuple(DEMSAR_AUC),
    )
    assert {(p.a, p.b) for p in at_10.across.pairs if p.nemenyi_significant} == {
        ("C4.5", "C4.5+m"),
        ("C4.5", "C4.5+m+cf"),
    }


def test_demsar_2006_wilcoxon_c45_vs_c45m() -> None:
    # Demšar (2006) section 3.1.3: C4.5 vs C4.5+m on the same 14 data sets, zero differences split
    # between the sums: R+ = 93, R- = 12, T = min = 12 < 21 (critical value for N = 14, alpha = 0.05)
    table = demsar_table(("C4.5", "C4.5+m"))
    an = stats.analyze(table, metric="auc", goal="maximize", paired=False)
    (pair,) = an.across.pairs
    assert (pair.a, pair.b) == ("C4.5", "C4.5+m")
    assert pair.statistic == 12.0
    assert pair.p < 0.05 and pair.p_holm == pair.p and pair.significant and pair.winner == "C4.5+m"
    assert an.across.friedman is None and any("two algorithms" in n for n in an.notes)


def test_nemenyi_q_matches_demsar_table_5() -> None:
    # Demšar (2006) Table 5(a), critical values of the two-tailed Nemenyi test, k = 2..10
    q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    q10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]
    for k, (a, b) in enumerate(zip(q05, q10), start=2):
        assert stats.nemenyi_q(0.05, k) == pytest.approx(a, abs=1e-3)
        assert stats.nemenyi_q(0.10, k) == pytest.approx(b, abs=1e-3)
    assert stats.nemenyi_cd(0.05, 4, 14) == pytest.approx(1.25, abs=5e-3)


def test_friedman_from_ranks_equals_scipy_without_ties() -> None:
    rng = np.random.default_rng(12)
    data = rng.normal(size=(9, 5))
    avg = sps.rankdata(data, axis=1).mean(axis=0)
    assert stats.friedman_chi2_from_ranks(avg, 9) == pytest.approx(sps.friedmanchisquare(*data.T).statistic)


# ---------------------------------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------------------------------


def test_single_algorithm() -> None:
    table = synthetic({"only": 0.0}, datasets=3, replicates=5, seed=1)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    assert len(an.pairwise) == 0 and an.across.pairs == () and an.across.average_ranks is None
    assert any("only one algorithm" in n for n in an.notes)
    assert all(o.test is None for o in an.omnibus)
    assert dumps(an) and any("nothing to compare" in line for line in an.summary_lines())
    assert an.win_tie_loss().empty


def test_too_few_replicates_are_reported() -> None:
    cells = {}
    for d in ("d1", "d2"):
        cells["a", d] = [1.0, 2.0, 3.0]
        cells["b", d] = [10.0, 11.0, 12.0]  # perfectly separated, still cannot reach p < 0.05
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    assert not an.pairwise.significant.any()
    np.testing.assert_allclose(an.pairwise.p.to_numpy(), 0.1)
    assert any(n.startswith("3 replicate(s) are too few for a test at α=0.05") for n in an.notes)
    paired = stats.analyze(
        table_from({k: v + [v[-1] + 1, v[-1] + 2] for k, v in cells.items()}), metric="m", goal="maximize", paired=True
    )
    assert any("5 paired replicate(s) are too few" in n and "0.0625" in n for n in paired.notes)


def test_holm_makes_small_samples_hopeless_is_reported() -> None:
    # 5 runs: smallest MWU p = 2/252 = 0.0079 < 0.05, but Holm over 10 pairs needs p < 0.005
    cells = {(f"a{i}", "d"): list(np.arange(5.0) + 10 * i) for i in range(5)}
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    assert not an.pairwise.significant.any()
    assert any("Holm's correction over 10 pairs" in n for n in an.notes)


def test_too_few_datasets_are_reported() -> None:
    table = synthetic({"a": 0.0, "b": 5.0}, datasets=3, replicates=10, seed=3)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    assert not an.across.pairs[0].significant
    assert any("3 dataset(s) are too few for the Wilcoxon signed-rank test" in n for n in an.notes)
    three = synthetic({"a": 0.0, "b": 5.0, "c": 10.0}, datasets=2, replicates=10, seed=3)
    an3 = stats.analyze(three, metric="m", goal="maximize", paired=False)
    assert any("2 datasets are too few for the Friedman test" in n for n in an3.notes)


def test_ties_in_small_samples_follow_scipys_choice_and_are_reported() -> None:
    cells = {
        ("a", "d"): [1, 1, 2, 2, 3],
        ("b", "d"): [2, 3, 3, 4, 4],
        ("c", "d"): [5, 6, 7, 8, 9],
        ("e", "d"): [10, 11, 12, 13, 14],
    }
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    rows = an.pairwise.set_index(["a", "b"])
    assert rows.loc[("a", "b"), "method"] == "asymptotic"  # ties: scipy would not use the exact test
    assert rows.loc[("a", "c"), "method"] == "asymptotic"  # ties inside one sample count too
    assert rows.loc[("c", "e"), "method"] == "exact"
    for a, b in (("a", "b"), ("a", "c"), ("c", "e")):
        assert rows.loc[(a, b), "p"] == sps.mannwhitneyu(cells[a, "d"], cells[b, "d"]).pvalue
    assert any("tied values occur" in n and "small pair(s) with ties" in n for n in an.notes)
    paired = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=True)
    prow = paired.pairwise.set_index(["a", "b"])
    assert prow.loc[("c", "e"), "method"] == "permutation"  # all differences equal: tied |d|, n = 5
    assert prow.loc[("c", "e"), "p"] == sps.wilcoxon(cells["c", "d"], cells["e", "d"], zero_method="zsplit").pvalue
    assert any("zero or tied paired differences" in n and "all 2^n sign flips" in n for n in paired.notes)


def test_all_zero_differences_in_wilcoxon() -> None:
    cells = {
        ("a", "d"): [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        ("b", "d"): [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        ("c", "d"): [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0],
    }
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=True)
    row = an.pairwise.set_index(["a", "b"]).loc[("a", "b")]
    assert row.p == 1.0 and not row.significant and pd.isna(row.winner)
    assert "all paired differences are zero" in row.note
    assert any("only zero paired differences" in n for n in an.notes)


def test_failed_and_nan_values() -> None:
    table = synthetic({"a": 0.0, "b": 1.0, "c": 2.0}, datasets=4, replicates=8, seed=8)
    # c fails on every run of d01; one succeeded run of a reports NaN
    table.loc[(table.algorithm == "c") & (table.dataset == "d01"), ["status", "value"]] = ["failed", np.nan]
    idx = table.index[(table.algorithm == "a") & (table.dataset == "d02")][0]
    table.loc[idx, "value"] = np.nan
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, failures="exclude")
    assert an.excluded_datasets == ("d01",)
    assert "d01" not in an.across.datasets and len(an.across.datasets) == 3
    rows = an.pairwise.set_index(["dataset", "a", "b"])
    untested = rows.loc[("d01", "a", "c")]
    assert pd.isna(untested.p) and not untested.significant and "no valid run of c" in untested.note
    assert rows.loc[("d02", "a", "b"), "n_a"] == 7
    omni = {o.dataset: o for o in an.omnibus}
    assert omni["d01"].test is None and "only 2 algorithm(s)" in omni["d01"].note
    desc = an.descriptives.set_index(["algorithm", "dataset"])
    assert desc.loc[("c", "d01"), "n"] == 0 and desc.loc[("c", "d01"), "n_failed"] == 8
    assert desc.loc[("a", "d02"), "n_failed"] == 1
    joined = " | ".join(an.notes)
    assert "failed or are missing" in joined and "no finite value" in joined and "excluded" in joined
    data = json.loads(dumps(an))
    pair = next(
        p
        for d in data["per_dataset"]
        if d["dataset"] == "d01"
        for p in d["pairwise"]["pairs"]
        if (p["a"], p["b"]) == ("a", "c")
    )
    assert pair["p"] is None and pair["note"]
    cell = next(r for r in data["descriptives"] if (r["algorithm"], r["dataset"]) == ("c", "d01"))
    assert cell["median"] is None and cell["note"] == "no valid run"


def test_algorithm_without_any_result() -> None:
    table = synthetic({"a": 0.0, "b": 1.0}, datasets=3, replicates=6, seed=2)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, algorithms=("a", "b", "ghost"))
    assert an.across.datasets == () and set(an.excluded_datasets) == {"d00", "d01", "d02"}
    assert any("ghost" in n for n in an.notes)
    assert "no complete dataset" in an.across.verdict
    json.loads(dumps(an))


@pytest.mark.parametrize("paired", [False, True])
def test_every_run_failed(paired: bool) -> None:
    table = synthetic({"a": 0.0, "b": 1.0, "c": 2.0}, datasets=2, replicates=4, seed=1)
    table["status"], table["value"] = "failed", np.nan
    an = stats.analyze(table, metric="m", goal="maximize", paired=paired)
    assert an.pairwise.p.isna().all() and not an.pairwise.significant.any()
    assert an.across.average_ranks is None and set(an.excluded_datasets) == {"d00", "d01"}
    assert any("24 run(s) failed" in n for n in an.notes)
    assert any("no valid runs" in line for line in an.summary_lines())
    json.loads(dumps(an))


def test_across_datasets_on_an_aggregated_table() -> None:
    cells = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, np.nan, 2.5], "y": [2.0, 3.0, 1.0, 4.0, 3.5], "z": [0.5, 0.1, 0.2, 0.3, 0.4]},
        index=["d1", "d2", "d3", "d4", "d5"],
    )
    ac = stats.across_datasets(cells, goal="minimize")
    assert ac.excluded == ("d4",) and ac.datasets == ("d1", "d2", "d3", "d5")
    expected = sps.rankdata(cells.dropna().to_numpy(), axis=1).mean(axis=0)
    np.testing.assert_allclose(ac.average_ranks, expected)
    assert ac.rank_of("z") == 1.0
    assert any("d4 (no valid run of x)" in n for n in ac.notes)
    with pytest.raises(InputError):
        stats.across_datasets(cells, goal="best")


def test_all_values_equal_everywhere() -> None:
    cells = {(a, d): [1.0] * 6 for a in ("a", "b", "c") for d in ("x", "y", "z")}
    for paired in (False, True):
        an = stats.analyze(table_from(cells), metric="m", goal="minimize", paired=paired)
        assert not an.pairwise.significant.any() and (an.pairwise.p == 1.0).all()
        assert all(o.statistic is None and o.note for o in an.omnibus)
        assert an.across.friedman.chi2 is None and "ties all algorithms" in an.across.friedman.note
        assert an.across.average_ranks == (2.0, 2.0, 2.0)
        text = dumps(an)
        assert "NaN" not in text and "Infinity" not in text


def test_identical_rankings_give_infinite_iman_davenport() -> None:
    cells = {(a, f"d{i}"): [float(j + i)] for i in range(5) for j, a in enumerate(("a", "b", "c"))}
    an = stats.analyze(table_from(cells), metric="m", goal="maximize", paired=False)
    idr = an.across.iman_davenport
    # issue 14: the F-distribution p-value of an infinite F (0) is never reported as a p-value; the
    # omnibus test gives the exact probability, (1/3!)^(5-1) for 5 identical rankings of 3 algorithms
    assert math.isinf(idr.f) and idr.p is None and "infinite" in idr.note
    assert an.across.omnibus.p == pytest.approx(6.0**-4) and an.across.omnibus.method == "exact"
    data = json.loads(dumps(an))["across_datasets"]["iman_davenport"]
    assert data["F"] is None and data["p"] is None and "infinite" in data["note"]


def test_paired_runs_without_partner() -> None:
    rng = np.random.default_rng(4)
    cells = {("a", "d"): rng.normal(size=10).tolist(), ("b", "d"): rng.normal(size=10).tolist()}
    seeds = {("a", "d"): list(range(10)), ("b", "d"): list(range(3)) + list(range(103, 110))}
    an = stats.analyze(table_from(cells, seeds=seeds), metric="m", goal="maximize", paired=True)
    row = an.pairwise.iloc[0]
    assert row.n_a == 3 and row.n_b == 3
    assert any("without a partner of the same seed" in n for n in an.notes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"goal": "up"}, "goal"),
        ({"alpha": 1.5}, "alpha"),
        ({"aggregate": "max"}, "aggregate"),
        ({"metric": "nope"}, "not in the results table"),
        ({"algorithms": ("a", "a")}, "more than once"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs: dict, message: str) -> None:
    table = synthetic({"a": 0.0, "b": 1.0}, datasets=2, replicates=3, seed=1)
    args = {"metric": "m", "goal": "maximize", "paired": False} | kwargs
    with pytest.raises(InputError, match=message):
        stats.analyze(table, **args)


def test_bad_tables_raise_input_error() -> None:
    table = synthetic({"a": 0.0, "b": 1.0}, datasets=2, replicates=3, seed=1)
    with pytest.raises(InputError, match="lacks column"):
        stats.analyze(table.drop(columns=["seed"]), metric="m", goal="maximize", paired=False)
    with pytest.raises(InputError, match="duplicate row"):
        stats.analyze(pd.concat([table, table.iloc[:1]]), metric="m", goal="maximize", paired=True)
    with pytest.raises(ExpkitError):
        stats.describe(table, metric="other")


def test_other_metrics_and_statuses_are_ignored() -> None:
    table = synthetic({"a": 0.0, "b": 1.0}, datasets=3, replicates=6, seed=6)
    other = table.assign(metric="time", value=table.value * 100)
    missing = table.iloc[:2].assign(status="missing", value=np.nan, replicate=[6, 7])
    both = pd.concat([table, other, missing], ignore_index=True)
    an = stats.analyze(both, metric="m", goal="maximize", paired=False)
    ref = stats.analyze(table, metric="m", goal="maximize", paired=False)
    pd.testing.assert_frame_equal(an.pairwise, ref.pairwise)
    assert any("2 run(s) failed or are missing" in n for n in an.notes)


# ---------------------------------------------------------------------------------------------------
# describe, serialisation, determinism
# ---------------------------------------------------------------------------------------------------


def test_describe_matches_pandas() -> None:
    table = synthetic({"b": 0.0, "a": 1.0}, datasets=3, replicates=9, seed=13, fail=0.2)
    desc = stats.describe(table, metric="m")
    assert list(desc.columns) == ["algorithm", "dataset", "n", "n_failed", "median", "mean", "std", "q1", "q3", "iqr"]
    assert list(zip(desc.algorithm, desc.dataset)) == list(itertools.product(("a", "b"), ("d00", "d01", "d02")))
    ok = table[table.status == "succeeded"]
    grouped = ok.groupby(["algorithm", "dataset"])["value"]
    ref = pd.DataFrame(
        {
            "n": grouped.size(),
            "median": grouped.median(),
            "mean": grouped.mean(),
            "std": grouped.std(ddof=1),
            "q1": grouped.quantile(0.25),
            "q3": grouped.quantile(0.75),
        }
    )
    got = desc.set_index(["algorithm", "dataset"])
    for col in ("median", "mean", "std", "q1", "q3"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(got["n"].to_numpy(), ref["n"].to_numpy())
    np.testing.assert_allclose(got["iqr"], got["q3"] - got["q1"])
    failed = table[table.status != "succeeded"].groupby(["algorithm", "dataset"]).size()
    assert got["n_failed"].sum() == failed.sum()


def test_to_dict_is_deterministic_on_shuffled_rows() -> None:
    table = synthetic({"x": 0.0, "y": 0.5, "z": 1.0}, datasets=5, replicates=7, seed=17, fail=0.1)
    shuffled = table.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for paired in (False, True):
        one = dumps(stats.analyze(table, metric="m", goal="minimize", paired=paired))
        two = dumps(stats.analyze(shuffled, metric="m", goal="minimize", paired=paired))
        assert one == two
        assert "NaN" not in one and "Infinity" not in one


def test_to_dict_structure_and_conventions() -> None:
    table = synthetic({"x": 0.0, "y": 0.5, "z": 1.0}, datasets=3, replicates=6, seed=1)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False, datasets=("d02", "d00", "d01"))
    data = json.loads(dumps(an))
    assert data["datasets"] == ["d02", "d00", "d01"]
    assert [d["dataset"] for d in data["per_dataset"]] == ["d02", "d00", "d01"]
    for key in ("mannwhitneyu", "wilcoxon", "kruskal", "friedmanchisquare", "iman_davenport", "nemenyi", "holm", "a12"):
        assert data["conventions"][key]
    assert "zsplit" in data["conventions"]["wilcoxon"]
    assert "tie-corrected" in data["conventions"]["friedmanchisquare"]
    assert "studentized_range" in data["conventions"]["nemenyi"]
    block = data["per_dataset"][0]
    assert block["pairwise"]["test"] == "mannwhitneyu" and block["pairwise"]["convention"]
    assert block["omnibus"]["test"] == "kruskal" and block["omnibus"]["convention"]
    across = data["across_datasets"]
    assert across["friedman"]["convention"] and across["iman_davenport"]["convention"]
    assert [c["alpha"] for c in across["nemenyi"]["critical_differences"]] == [0.05, 0.10, 0.05]
    assert across["pairwise"]["convention"] and len(across["pairwise"]["pairs"]) == 3
    assert set(across["average_ranks"]) == {"x", "y", "z"}
    lines = an.summary_lines()
    assert any(line.startswith("  d02: best") for line in lines) and any("Verdict" in line for line in lines)


def test_result_is_immutable() -> None:
    table = synthetic({"x": 0.0, "y": 0.5}, datasets=2, replicates=5, seed=1)
    an = stats.analyze(table, metric="m", goal="maximize", paired=False)
    with pytest.raises(AttributeError):
        an.alpha = 0.1  # type: ignore[misc]
    frame = an.pairwise
    frame.loc[:, "p"] = 0.0
    assert not (an.pairwise.p == 0.0).all()


def test_signed_rank_permutation_p_equals_scipys_permutation_test() -> None:
    rng = np.random.default_rng(7)
    seen = set()
    for n in (*range(1, 11), 13):  # scipy enumerates all 2^n flips: 1 s at n = 13
        for shift in (0, 2, 4) if n != 13 else (3,):
            d = rng.integers(-3 + shift, 4 + shift, size=n).astype(float) * 0.5  # zeros and ties on purpose
            if not (np.any(d == 0) or len(np.unique(np.abs(d))) < n):
                d[0] = 0.0
            ours = stats._signed_rank_permutation_p(d)[0]
            if np.all(d == 0):
                assert ours == 1.0
                continue
            ref = sps.wilcoxon(d, zero_method="zsplit", method=sps.PermutationMethod())
            assert ours == pytest.approx(ref.pvalue, rel=1e-12, abs=0), d
            assert stats.wilcoxon_method(d) == "permutation"
            seen.add(ours < 0.1)
    assert seen == {True, False}  # small and large p-values were both checked
    assert np.isnan(stats._signed_rank_permutation_p(np.array([[1.0, np.nan, 2.0]]))[0])

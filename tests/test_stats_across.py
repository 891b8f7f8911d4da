"""Tests of the across-dataset comparison (issue 14, items 1, 4 and 9, and the verdict sentence).

* Item 1: the Friedman test over few datasets uses the exact permutation distribution (or a seeded
  Monte-Carlo estimate of it), checked against a brute-force enumeration written here and against the
  exact probabilities Friedman (1937) tabulated; the verdict is calibrated under the null for every
  N in 2..10 and k in 2..6; no p-value is ever printed as 0.
* Item 4: the pairwise Wilcoxon signed-rank tests over datasets with Holm drive the verdict, so the A-vs-B
  decision does not depend on unrelated algorithms (it does under Nemenyi); comparisons with a control;
  the critical-difference diagram's bars come from that procedure.
* Item 9: datasets that lack some algorithm enter the Skillings-Mack test (checked against the published
  example of Skillings & Mack 1981, Durbin's statistic for a balanced incomplete design, Friedman for
  complete blocks and a brute-force permutation distribution) and every pair where both have values.
* The verdict is one sentence naming the procedure, in the terminal summary, report.md, report.html and
  the table.tex caption.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from typer.testing import CliRunner

from expkit.analysis import plots, stats
from expkit.core.errors import InputError

# the library must not leak numpy/scipy warnings for degenerate data: it reports them in words
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

ALPHA = 0.05
#: A verdict that claims a difference: the omnibus test rejects, or one algorithm is better than another.
CLAIM = re.compile(r"the algorithms differ|\bis (?:significantly )?(?:better|worse) than")
#: A p-value printed as zero (or as the underflow marker) where the true value is not that small.
P_ZERO = re.compile(r"p\s*[=<]\s*(?:0(?![.\d])|<?1e-300)")


def frame(values: np.ndarray, algorithms: list[str] | None = None) -> pd.DataFrame:
    """An aggregated table: rows = datasets d0.., columns = algorithms (a0.. unless given)."""
    values = np.asarray(values, dtype=float)
    algs = algorithms or [f"a{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, columns=algs, index=[f"d{i}" for i in range(values.shape[0])])


def tidy(values: np.ndarray, algorithms: list[str]) -> pd.DataFrame:
    """A tidy results table with one replicate per cell; NaN = the cell has no run at all (an algorithm
    not run on that dataset), which no failure policy can turn into a value."""
    rows = []
    for i, row in enumerate(np.asarray(values, dtype=float)):
        rows += [(a, f"d{i}", 0, i, "m", v, "succeeded") for a, v in zip(algorithms, row) if not np.isnan(v)]
    return pd.DataFrame(rows, columns=list(stats.REQUIRED_COLUMNS))


def brute_force_block_p(values: np.ndarray, statistic) -> float:
    """P(statistic >= observed) over every way of permuting each block's within-block ranks among the
    block's observed cells (all blocks permuted, no symmetry argument), by enumeration."""
    values = np.asarray(values, dtype=float)
    ranks = np.full(values.shape, np.nan)
    options = []
    for i, row in enumerate(values):
        seen = np.flatnonzero(~np.isnan(row))
        ranks[i, seen] = sps.rankdata(row[seen])
        arrangements = []
        for perm in itertools.permutations(ranks[i, seen]):
            r = np.full(row.shape, np.nan)
            r[seen] = perm
            arrangements.append(r)
        options.append(np.array(arrangements))
    observed = statistic(ranks)
    grid = np.stack(np.meshgrid(*[np.arange(len(o)) for o in options], indexing="ij"), axis=-1).reshape(
        -1, len(options)
    )
    stack = np.stack([options[i][grid[:, i]] for i in range(len(options))], axis=1)  # (combos, N, k)
    values_all = np.array([statistic(s) for s in stack])
    return float(np.mean(values_all >= observed - 1e-9 * max(1.0, abs(observed))))


def sum_of_squared_rank_sums(ranks: np.ndarray) -> float:
    """Friedman's statistic up to constants fixed by the tie pattern: sum over algorithms of R_j^2."""
    return float(np.sum(np.nansum(ranks, axis=0) ** 2))


def skillings_mack_by_hand(values: np.ndarray) -> float:
    """Skillings & Mack (1981) SM = A' Sigma^- A, written from the paper: adjusted rank sums
    A_j = sum_i sqrt(12/(k_i+1)) (r_ij - (k_i+1)/2) over blocks with k_i >= 2 observed values,
    Sigma_jt = -lambda_jt (blocks holding both), Sigma_jj = sum_t lambda_jt; Moore-Penrose inverse."""
    values = np.asarray(values, dtype=float)
    k = values.shape[1]
    a = np.zeros(k)
    used = np.zeros(values.shape)
    for i, row in enumerate(values):
        seen = np.flatnonzero(~np.isnan(row))
        if seen.size < 2:
            continue
        r = sps.rankdata(row[seen])
        a[seen] += math.sqrt(12.0 / (seen.size + 1)) * (r - (seen.size + 1) / 2.0)
        used[i, seen] = 1.0
    lam = used.T @ used
    sigma = -lam
    np.fill_diagonal(sigma, 0.0)
    np.fill_diagonal(sigma, -sigma.sum(axis=1))
    return float(a @ np.linalg.pinv(sigma) @ a)


def sm_statistic_for(values: np.ndarray):
    """SM as a function of within-block ranks for the missing pattern of ``values`` (Sigma depends only on
    which cells have a value, so its pseudo-inverse is computed once)."""
    seen = ~np.isnan(values)
    used = seen.astype(float)
    sigma = -(used.T @ used)
    np.fill_diagonal(sigma, 0.0)
    np.fill_diagonal(sigma, -sigma.sum(axis=1))
    inverse = np.linalg.pinv(sigma)
    k_i = seen.sum(axis=1, keepdims=True)

    def statistic(ranks: np.ndarray) -> float:
        a = np.nansum(np.sqrt(12.0 / (k_i + 1)) * (ranks - (k_i + 1) / 2.0), axis=0)
        return float(a @ inverse @ a)

    return statistic


# ---------------------------------------------------------------------------------------------------
# item 1: the exact Friedman test over few datasets
# ---------------------------------------------------------------------------------------------------


def test_identical_rankings_on_two_datasets_are_not_a_difference() -> None:
    """The issue's example: 2 datasets rank 3 algorithms identically. Iman-Davenport's F is infinite and
    the old verdict said p = 0, 'the algorithms differ'; the exact p is (1/k!)^(N-1) = 1/6."""
    cells = frame([[3.0, 2.0, 1.0], [30.0, 20.0, 10.0]])
    ac = stats.across_datasets(cells, goal="maximize")
    assert not CLAIM.search(ac.verdict), ac.verdict
    assert ac.omnibus is not None and ac.omnibus.method == "exact"
    assert ac.omnibus.p == pytest.approx(1 / 6, rel=1e-12)
    assert ac.omnibus.p_min == pytest.approx(1 / 6, rel=1e-12)
    assert "exact" in ac.verdict and "0.167" in ac.verdict
    an = stats.analyze(tidy(cells.to_numpy(), ["a0", "a1", "a2"]), metric="m", goal="maximize", paired=False)
    text = "\n".join(an.summary_lines())
    assert not P_ZERO.search(text), text
    record = an.to_dict()["across_datasets"]
    assert record["omnibus"]["p"] == pytest.approx(1 / 6) and record["omnibus"]["method"] == "exact"
    assert record["iman_davenport"]["p"] is None  # F is infinite: its F-distribution p (0) is meaningless
    assert not any(p.significant for p in ac.pairs)


@pytest.mark.parametrize(
    "n, k, ties",
    [(2, 3, False), (3, 3, False), (5, 3, False), (3, 4, False), (2, 5, False), (4, 3, True), (3, 4, True)],
)
def test_exact_friedman_equals_brute_force_enumeration(n: int, k: int, ties: bool) -> None:
    """Reference: every one of the (k!)^N within-block permutations enumerated here (no symmetry
    argument), p = P(sum_j R_j^2 >= observed). With ties, the permutations of the tied ranks."""
    rng = np.random.default_rng(100 * n + k + ties)
    for _ in range(3):
        values = rng.integers(0, 3, size=(n, k)).astype(float) if ties else rng.normal(size=(n, k))
        if ties and np.all(values == values[:, :1]):
            values[0, 0] += 1.0
        res = stats.friedman_test(values)
        assert res.method == "exact" and res.test == "friedman"
        assert res.p == pytest.approx(brute_force_block_p(values, sum_of_squared_rank_sums), rel=1e-12)
        if not ties:
            assert res.statistic == pytest.approx(sps.friedmanchisquare(*values.T).statistic, rel=1e-12)
            assert res.p_min == pytest.approx(math.factorial(k) ** -(n - 1), rel=1e-12)


# Friedman (1937), JASA 32:675-701, exact distribution of chi2_r, as reproduced in Siegel (1956),
# Nonparametric Statistics for the Behavioral Sciences, Table N: (k, N, chi2_r, P(chi2 >= chi2_r) as printed).
FRIEDMAN_1937 = [
    (3, 2, 4.0, "0.167"),
    (3, 3, 6.0, "0.028"),
    (3, 4, 6.5, "0.042"),
    (3, 4, 8.0, "0.0046"),
    (3, 5, 6.4, "0.039"),
    (3, 5, 8.4, "0.0085"),
    (3, 6, 7.0, "0.029"),
    (3, 6, 25 / 3, "0.012"),
    (3, 6, 9.0, "0.0081"),
    (3, 9, 56 / 9, "0.048"),
    (3, 9, 78 / 9, "0.010"),
    (4, 2, 6.0, "0.042"),
    (4, 3, 7.4, "0.033"),
    (4, 3, 9.0, "0.0017"),
    (4, 4, 7.8, "0.036"),
    (4, 4, 9.6, "0.0069"),
]


@pytest.mark.parametrize("k, n, chi2, printed", FRIEDMAN_1937)
def test_exact_friedman_matches_friedman_1937_table(k: int, n: int, chi2: float, printed: str) -> None:
    rng = np.random.default_rng(int(chi2 * 1000) + n)
    # a seeded search for rankings whose statistic is the tabulated value
    candidates = rng.permuted(np.tile(np.arange(1.0, k + 1), (20_000, n, 1)), axis=-1)
    rank_sums = candidates.sum(axis=1)
    chi2_all = 12.0 / (n * k * (k + 1)) * np.sum(rank_sums**2, axis=1) - 3.0 * n * (k + 1)
    hits = np.flatnonzero(np.abs(chi2_all - chi2) < 1e-9)
    assert hits.size, f"no ranking with chi2 = {chi2} found"
    values = candidates[hits[0]]
    assert sps.friedmanchisquare(*values.T).statistic == pytest.approx(chi2, rel=1e-12)
    res = stats.friedman_test(values)
    decimals = len(printed.split(".")[1])
    assert abs(res.p - float(printed)) <= 0.5 * 10.0**-decimals + 1e-12, (res.p, printed)


def test_monte_carlo_friedman_is_seeded_stated_and_close_to_exact() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(size=(5, 5)) + np.arange(5) * 0.6
    exact = stats.friedman_test(values, method="exact")
    mc = stats.friedman_test(values, method="monte-carlo")
    assert mc.method == "monte-carlo" and mc.n_resamples == stats.MC_RESAMPLES and mc.mc_se is not None
    assert mc == stats.friedman_test(values, method="monte-carlo")  # seeded: identical on every call
    assert abs(mc.p - exact.p) <= 4 * mc.mc_se + 1 / mc.n_resamples
    assert mc.p >= 1 / (mc.n_resamples + 1)  # (c + 1) / (B + 1): never zero (Phipson & Smyth 2010)
    # too many rankings to enumerate cheaply: the automatic choice is Monte-Carlo, and it says so
    big = rng.normal(size=(9, 6))
    auto = stats.friedman_test(big)
    assert auto.method == "monte-carlo" and "Monte-Carlo" in auto.note and "SE" in auto.note
    extreme = stats.friedman_test(np.tile(np.arange(6.0), (9, 1)))
    assert extreme.p == pytest.approx(1 / (stats.MC_RESAMPLES + 1)) and extreme.p > 0
    assert extreme.p_min == pytest.approx(math.factorial(6) ** -8, rel=1e-12)


def test_many_datasets_use_the_asymptotic_test_and_never_print_p_zero() -> None:
    values = np.tile(np.arange(4.0), (1200, 1))  # every dataset ranks identically: F is infinite
    ac = stats.across_datasets(frame(values), goal="maximize")
    assert ac.omnibus.method == "asymptotic"
    assert 0.0 <= ac.omnibus.p < 1e-300
    assert "< 1e-300" in ac.verdict and not P_ZERO.search(ac.verdict.replace("< 1e-300", ""))


def _claims(values: np.ndarray, algs: list[str]) -> bool:
    """Whether the across-dataset verdict on ``values`` (datasets x algorithms) claims a difference."""
    ac = stats.across_datasets(pd.DataFrame(values, columns=algs), goal="maximize", alpha=ALPHA)
    return bool(CLAIM.search(ac.verdict))


def test_null_calibration_of_the_verdict_for_few_datasets() -> None:
    """Under the null (random rankings), the verdict claims a difference at most alpha of the time, plus
    Monte-Carlo error, for every N in 2..10 and k in 2..6, in each cell and pooled over the grid.

    The verdict claims a difference exactly when the omnibus test's p (k >= 3) or the Wilcoxon test's p
    (k = 2) is below alpha: that p is computed for 400 tables per cell, and the whole verdict is checked
    to agree with it on the first 8 tables of every cell (the full analysis costs milliseconds per call)."""
    rng = np.random.default_rng(20240614)
    sims, checked = 400, 8
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)
    rates = {}
    for n in range(2, 11):
        for k in range(2, 7):
            tables = rng.random((sims, n, k))
            if k == 2:
                p = np.array([stats.across_datasets(frame(t), goal="maximize").pairs[0].p for t in tables[:checked]])
                p = np.concatenate([p, sps.wilcoxon(tables[checked:, :, 0], tables[checked:, :, 1], axis=-1).pvalue])
            else:
                p = np.array([stats.friedman_test(t).p for t in tables])
            rates[n, k] = float(np.mean(p < ALPHA))
            algs = [f"a{j}" for j in range(k)]
            agree = [_claims(t, algs) == (pv < ALPHA) for t, pv in zip(tables[:checked], p[:checked])]
            assert all(agree), (n, k)
    too_high = {cell: rate for cell, rate in rates.items() if rate > bound}
    assert not too_high, f"rejection rate above {bound:.3f}: {too_high}"
    pooled = sum(rates.values()) / len(rates)
    assert pooled <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / (sims * len(rates))), pooled


@pytest.mark.parametrize("n, k", [(2, 3), (3, 3), (3, 4), (4, 5)])
def test_null_calibration_of_the_whole_verdict_where_it_was_anticonservative(n: int, k: int) -> None:
    """The issue's cells (N = 2-4, k = 3-5: 12-22 % false claims before), end to end through the verdict."""
    rng = np.random.default_rng(n * 100 + k)
    sims = 150
    algs = [f"a{j}" for j in range(k)]
    claims = sum(_claims(t, algs) for t in rng.random((sims, n, k)))
    assert claims / sims <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)


# ---------------------------------------------------------------------------------------------------
# item 4: Wilcoxon-Holm is the post-hoc procedure; comparisons with a control; the CD diagram's bars
# ---------------------------------------------------------------------------------------------------


def _a_b_with_unrelated(between: bool) -> pd.DataFrame:
    """A beats B by a little on 17 of 20 datasets and loses by a lot on 3 (Wilcoxon: not significant).
    Four unrelated algorithms U1..U4 are either worse than both on every dataset or between them."""
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 1.0, 20)
    gap = np.where(np.arange(20) < 17, rng.uniform(0.05, 0.2, 20), -rng.uniform(2.0, 3.0, 20))
    a, b = base + gap, base
    low, width = np.minimum(a, b), np.abs(a - b)
    columns = {"A": a, "B": b}
    for i in range(1, 5):
        columns[f"U{i}"] = low + width * i / 5 if between else low - 10.0 - i
    return pd.DataFrame(columns, index=[f"d{i:02d}" for i in range(20)])


def test_a_vs_b_does_not_depend_on_unrelated_algorithms() -> None:
    """Benavoli, Corani & Mangili (2016): the mean-rank (Nemenyi) decision on A vs B changes with the
    other algorithms; the Wilcoxon signed-rank test on A and B's values does not."""
    results = {between: stats.across_datasets(_a_b_with_unrelated(between), goal="maximize") for between in (0, 1)}
    pairs = {between: next(p for p in ac.pairs if {p.a, p.b} == {"A", "B"}) for between, ac in results.items()}
    assert pairs[0].p == pairs[1].p  # the same A and B data, the same test
    assert not pairs[0].significant and not pairs[1].significant
    assert pairs[0].nemenyi_significant != pairs[1].nemenyi_significant  # Nemenyi flips with the others
    ref = sps.wilcoxon(_a_b_with_unrelated(False)["A"], _a_b_with_unrelated(False)["B"], zero_method="zsplit")
    assert pairs[0].p == pytest.approx(ref.pvalue, rel=1e-12)
    for between in (1, 0):
        assert not re.search(r"\bA is (?:significantly )?better than[^;]*\bB\b", results[between].verdict)
    for ac in results.values():
        assert "Wilcoxon signed-rank over datasets" in ac.verdict and "Nemenyi" not in ac.verdict


def test_comparisons_with_a_control_use_holm_over_k_minus_1() -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(size=(12, 4)) + np.array([0.0, 0.8, 2.0, 0.1])
    cells = frame(values, ["base", "mid", "new", "twin"])
    ac = stats.across_datasets(cells, goal="maximize", control="new")
    assert ac.control == "new"
    family = [p for p in ac.pairs if "new" in (p.a, p.b)]
    assert len(family) == 3 and all(p.in_family for p in family)
    raw = [sps.wilcoxon(cells[p.a], cells[p.b], zero_method="zsplit").pvalue for p in family]
    m = len(raw)
    order = np.argsort(raw)
    expected = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):  # Holm (1979) written out
        running = max(running, min(1.0, (m - rank) * raw[i]))
        expected[i] = running
    np.testing.assert_allclose([p.p_holm for p in family], expected, rtol=1e-12)
    others = [p for p in ac.pairs if "new" not in (p.a, p.b)]
    assert all(not p.in_family and p.p_holm is None and not p.significant for p in others)
    assert all(p.p is not None for p in others)  # still tested, reported, not part of the family
    assert "Holm over 3 comparisons with new" in ac.verdict and ac.verdict.startswith("Over 12 datasets")
    with pytest.raises(InputError, match="control"):
        stats.across_datasets(cells, goal="maximize", control="ghost")
    an = stats.analyze(
        tidy(values, ["base", "mid", "new", "twin"]), metric="m", goal="maximize", paired=False, control="new"
    )
    record = an.to_dict()["across_datasets"]
    assert record["control"] == "new" and record["pairwise"]["family"] == "comparisons with the control new"


def test_post_hoc_claims_need_the_omnibus_test() -> None:
    """Demsar (2006), Benavoli et al. (2016): pairs are compared after the omnibus test rejects; a pair
    whose Holm p is below alpha while the omnibus test does not reject is reported but not claimed."""
    # a0 beats a1 on all 12 datasets by a tiny margin (Wilcoxon p = 2/4096, Holm over 28 pairs: 0.014),
    # the other six algorithms are random: the omnibus test over 8 algorithms need not reject
    rng = np.random.default_rng(2)
    for _ in range(20):
        values = rng.normal(size=(12, 8))
        values[:, 0] = values[:, 1] + 0.01
        ac = stats.across_datasets(frame(values), goal="maximize")
        pair = next(p for p in ac.pairs if (p.a, p.b) == ("a0", "a1"))
        if ac.omnibus.p >= ALPHA and pair.p_holm is not None and pair.p_holm < ALPHA:
            break
    else:
        pytest.fail("no table with that pattern in 20 draws")
    assert not pair.significant and "omnibus" in (pair.note or "")
    assert not CLAIM.search(ac.verdict)


def test_significance_cliques_match_brute_force() -> None:
    rng = np.random.default_rng(11)
    for _ in range(80):
        k = int(rng.integers(2, 8))
        names = [f"a{i}" for i in range(k)]
        ranks = {a: float(r) for a, r in zip(names, rng.permutation(k) + 1.0)}
        sig = {frozenset(p): bool(rng.random() < 0.4) for p in itertools.combinations(names, 2)}
        order = sorted(names, key=lambda a: ranks[a])
        runs = [
            tuple(order[i : j + 1])
            for i in range(k)
            for j in range(i + 1, k)
            if not any(sig[frozenset(p)] for p in itertools.combinations(order[i : j + 1], 2))
        ]
        maximal = [r for r in runs if not any(set(r) < set(s) for s in runs)]
        got = plots.significance_cliques(ranks, lambda a, b, sig=sig: sig[frozenset((a, b))])
        assert sorted(got) == sorted(maximal), (ranks, sig)


def test_cd_diagram_draws_the_primary_groups(tmp_path: Path) -> None:
    ranks = {"a": 1.2, "b": 2.0, "c": 2.9}
    files = plots.plot_cd_diagram(
        ranks,
        0.9,
        alpha=0.05,
        n_datasets=12,
        out_stem=tmp_path / "cd",
        formats=["png"],
        groups=[("a", "b"), ("b", "c")],
        groups_label="Wilcoxon signed-rank over datasets, Holm",
    )
    assert files[0].stat().st_size > 1000
    with pytest.raises(InputError, match="group"):
        plots.plot_cd_diagram(
            ranks, 0.9, alpha=0.05, n_datasets=12, out_stem=tmp_path / "x", formats=["png"], groups=[("a", "z")]
        )


# ---------------------------------------------------------------------------------------------------
# item 9: incomplete datasets, the Skillings-Mack test
# ---------------------------------------------------------------------------------------------------

# Skillings & Mack (1981), Technometrics 23(2):171-177, Table 1: four methods (A-D) of assembling a product,
# nine blocks, five missing cells. The R package Skillings.Mack (Srisuradetchai, 2015) runs this example in
# its documentation; its documented output is SM = 15.493049, chi-square p = 0.001440 with 3 df.
SKILLINGS_MACK_TABLE_1 = np.array(
    [
        [3.2, 4.1, 3.8, 4.2],
        [3.1, 3.9, 3.4, 4.0],
        [4.3, 3.5, 4.6, 4.8],
        [3.5, 3.6, 3.9, 4.0],
        [3.6, 4.2, 3.7, 3.9],
        [4.5, 4.7, 3.7, np.nan],
        [np.nan, 4.2, 3.4, np.nan],
        [4.3, 4.6, 4.4, 4.9],
        [3.5, np.nan, 3.7, 3.9],
    ]
)


def test_skillings_mack_published_example() -> None:
    res = stats.skillings_mack_test(SKILLINGS_MACK_TABLE_1, method="asymptotic")
    assert res.test == "skillings_mack" and res.df == 3 and res.n_blocks == 9
    assert res.statistic == pytest.approx(15.493049, abs=5e-7)
    assert res.p == pytest.approx(0.001440, abs=5e-7)
    assert res.statistic == pytest.approx(skillings_mack_by_hand(SKILLINGS_MACK_TABLE_1), rel=1e-12)
    auto = stats.skillings_mack_test(SKILLINGS_MACK_TABLE_1)
    assert auto.method == "monte-carlo" and auto.p <= 0.01 and auto.statistic == res.statistic


def test_skillings_mack_is_durbin_in_a_balanced_incomplete_design() -> None:
    """Durbin's (1951) statistic for a BIBD (Conover 1999, Practical Nonparametric Statistics, 5.9):
    D = 12 (t-1) / (r t (k-1)(k+1)) sum_j (R_j - r (k+1)/2)^2, t treatments, k per block, r blocks per
    treatment. Data: t = 5, k = 3, r = 6, ten blocks (percent conversion at five pressures)."""
    rows = [(16, 18, 32, None, None), (19, None, 46, 45, None), (26, None, None, 39, 61), (21, 35, None, None, 55),
            (None, 19, 47, 48, None), (None, 20, None, 33, 31), (None, 13, 13, None, 34), (None, None, 21, 30, 52),
            (24, None, 10, None, 50), (24, 31, None, 37, None)]  # fmt: skip
    values = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    assert np.all(np.sum(~np.isnan(values), axis=1) == 3) and np.all(np.sum(~np.isnan(values), axis=0) == 6)
    ranks = np.full(values.shape, np.nan)
    for i, row in enumerate(values):
        seen = ~np.isnan(row)
        ranks[i, seen] = sps.rankdata(row[seen])
    t, k, r = 5, 3, 6
    durbin = 12 * (t - 1) / (r * t * (k - 1) * (k + 1)) * np.sum((np.nansum(ranks, axis=0) - r * (k + 1) / 2) ** 2)
    res = stats.skillings_mack_test(values, method="asymptotic")
    assert res.statistic == pytest.approx(durbin, rel=1e-12)


def test_skillings_mack_reduces_to_friedman_on_complete_blocks() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(7, 4))
    res = stats.skillings_mack_test(values, method="asymptotic")
    ref = sps.friedmanchisquare(*values.T)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    tied = rng.integers(0, 3, size=(7, 4)).astype(float)  # with ties: Demsar's uncorrected statistic
    avg = sps.rankdata(tied, axis=1).mean(axis=0)
    assert stats.skillings_mack_test(tied, method="asymptotic").statistic == pytest.approx(
        stats.friedman_chi2_from_ranks(avg, 7), rel=1e-12
    )


def test_skillings_mack_permutation_p_equals_brute_force() -> None:
    values = np.array(
        [[1.0, 2.0, 3.0, np.nan], [2.0, np.nan, 3.5, 1.0], [np.nan, 1.0, 2.0, 3.0], [3.0, 1.0, 2.0, 4.0]]
    )  # fmt: skip
    res = stats.skillings_mack_test(values)
    assert res.method == "exact"
    assert res.p == pytest.approx(brute_force_block_p(values, sm_statistic_for(values)), rel=1e-12)
    mc = stats.skillings_mack_test(values, method="monte-carlo")
    assert abs(mc.p - res.p) <= 4 * mc.mc_se + 1 / mc.n_resamples


def test_incomplete_dataset_enters_the_omnibus_test_and_the_pairs() -> None:
    rng = np.random.default_rng(6)
    values = rng.normal(size=(9, 3)) + np.array([0.0, 1.0, 2.0])
    values[4, 2] = np.nan  # c has no valid run on d4
    an = stats.analyze(tidy(values, ["a", "b", "c"]), metric="m", goal="maximize", paired=False)
    ac = an.across
    assert ac.excluded == ("d4",) and "d4" not in ac.datasets  # not a complete block: no average rank
    assert ac.incomplete == (("d4", ("c",)),)
    assert ac.omnibus.test == "skillings_mack" and ac.omnibus.n_blocks == 9
    ref = skillings_mack_by_hand(values)
    assert ac.omnibus.statistic == pytest.approx(ref, rel=1e-12)
    ab = next(p for p in ac.pairs if (p.a, p.b) == ("a", "b"))
    assert ab.n == 9  # a and b both have a value on d4: the pair uses it
    assert ab.p == pytest.approx(sps.wilcoxon(values[:, 0], values[:, 1], zero_method="zsplit").pvalue, rel=1e-12)
    assert next(p for p in ac.pairs if (p.a, p.b) == ("a", "c")).n == 8
    note = next(n for n in an.notes if "d4" in n and "Skillings-Mack" in n)
    assert "no valid run of c" in note and "pairs" in note
    record = an.to_dict()["across_datasets"]
    assert record["incomplete_datasets"] == [
        {"dataset": "d4", "missing": ["c"], "used_in": "Skillings-Mack test and the pairs without c"}
    ]
    assert record["omnibus"]["test"] == "skillings_mack" and record["omnibus"]["convention"]
    assert "Skillings-Mack" in ac.verdict


def test_a_dataset_with_one_algorithm_is_left_out_and_said() -> None:
    values = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, 1.0], [2.0, 3.0, 1.0], [1.0, 3.0, 2.0]])
    an = stats.analyze(tidy(values, ["a", "b", "c"]), metric="m", goal="maximize", paired=False)
    assert an.across.omnibus.n_blocks == 3
    assert any("d1" in n and "only one algorithm" in n for n in an.notes)


@pytest.mark.parametrize("n, k", [(4, 3), (6, 4), (8, 3)])
def test_null_calibration_with_incomplete_datasets(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 10 + k)
    sims = 120
    algs = [f"a{j}" for j in range(k)]
    claims = 0
    for values in rng.random((sims, n, k)):
        holes = rng.random(n) < 0.5
        values[np.flatnonzero(holes), rng.integers(0, k, size=int(holes.sum()))] = np.nan
        ac = stats.across_datasets(frame(values, algs), goal="maximize")
        claims += bool(CLAIM.search(ac.verdict))
    assert claims / sims <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / sims)


# ---------------------------------------------------------------------------------------------------
# the verdict sentence
# ---------------------------------------------------------------------------------------------------


def test_verdict_is_one_pasteable_sentence_with_the_procedure() -> None:
    values = np.tile(np.array([3.0, 2.0, 1.0]), (10, 1)) + np.linspace(0, 1, 10)[:, None]
    values[3, 1] = 3.5  # B beats A once
    ac = stats.across_datasets(frame(values, ["A", "B", "C"]), goal="maximize")
    v = ac.verdict
    assert v.startswith("Over 10 datasets the algorithms differ (Friedman test, exact p = ")
    assert "A is better than B on 9 of 10 datasets (Wilcoxon signed-rank over datasets, Holm, p = " in v
    assert "and than C on 10 of 10 (p = " in v and "B is better than C on 10 of 10 (p = " in v
    assert v.endswith(".") and v.count(". ") == 0 and "\n" not in v
    extra = stats.verdict_sentence(
        ac, alpha=ALPHA, pair_clauses={("B", "A"): "Bayesian signed-rank P(A better) = 0.97 with ROPE 0.01"}
    )
    assert re.search(r"A is better than B on 9 of 10 datasets \([^)]*p = [^;)]*; Bayesian signed-rank", extra)
    two = stats.across_datasets(frame(values[:, :2], ["A", "B"]), goal="maximize")
    assert two.verdict.startswith("A is better than B on 9 of 10 datasets (Wilcoxon signed-rank over datasets, p = ")
    none = stats.across_datasets(frame(np.random.default_rng(1).random((8, 3)), ["A", "B", "C"]), goal="maximize")
    assert none.verdict.startswith("No significant difference among the 3 algorithms over 8 datasets (Friedman test")


RUN_SCRIPT = textwrap.dedent("""
    import json, os
    alg, ds = os.environ["EXPKIT_ALGORITHM"], os.environ["EXPKIT_DATASET"]
    loss = {"good": 1.0, "mid": 2.0, "bad": 3.0}[alg] + 0.1 * int(ds[1:]) + 0.01 * int(os.environ["EXPKIT_REPLICATE"])
    json.dump({"metrics": {"loss": loss}}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
""")

RUN_SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: ordered}
    spec:
      image: python:3.12-slim@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
      command: [python, run.py]
      algorithms: [{name: good}, {name: mid}, {name: bad}]
      datasets: [d1, d2, d3, d4, d5, d6, d7]
      replicates: 2
      seed: 3
      metric: {name: loss, goal: minimize}
""")


@pytest.fixture(scope="module")
def ordered_run(tmp_path_factory: pytest.TempPathFactory):
    from expkit.runner import start_run
    from expkit.stores import FileStore

    root = tmp_path_factory.mktemp("ordered")
    (root / "run.py").write_text(RUN_SCRIPT)
    (root / "experiment.yml").write_text(RUN_SPEC)
    store = FileStore(root / "store")
    return store, start_run(root / "experiment.yml", store, workers=2).run_id


def test_verdict_sentence_in_every_output(ordered_run, tmp_path: Path) -> None:
    from expkit.analysis.report import build_report

    store, run_id = ordered_run
    report = build_report(store, run_id, out_dir=tmp_path / "out", formats=("png",))
    sentence = report.analysis.across.verdict
    assert "good is better than mid on 7 of 7 datasets (Wilcoxon signed-rank over datasets, Holm, p = " in sentence
    assert any(sentence in line for line in report.summary)
    assert sentence in (tmp_path / "out" / "report.md").read_text()
    import html

    assert html.escape(sentence, quote=False) in (tmp_path / "out" / "report.html").read_text()
    tex = (tmp_path / "out" / "table.tex").read_text()
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption"))
    assert "good is better than mid on 7 of 7 datasets (Wilcoxon signed-rank over datasets, Holm, $p = " in caption
    assert "α" not in caption and "≥" not in caption
    stats_doc = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats_doc["across_datasets"]["verdict"] == sentence
    assert stats_doc["across_datasets"]["pairwise"]["primary"] is True


def test_cli_results_control(ordered_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from expkit.cli import app

    store, run_id = ordered_run
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["results", run_id, "--store", str(store.root), "--format", "png"]
    ok = runner.invoke(app, [*args, "--control", "bad", "-o", "c"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads((tmp_path / "c" / "stats.json").read_text())
    assert doc["across_datasets"]["control"] == "bad"
    assert "comparisons with bad" in doc["across_datasets"]["verdict"]
    bad = runner.invoke(app, [*args, "--control", "nope", "-o", "n"])
    assert bad.exit_code == 2 and "--control" in bad.output and "good, mid, bad" in bad.output

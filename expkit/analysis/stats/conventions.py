"""The names, options and written conventions of the statistics: required columns, the ``stats.json``
schema, the text of every convention and reference written into ``stats.json`` and ``docs/statistics.md``,
and the checks of the ``goal`` and ``aggregate`` options."""

from __future__ import annotations

from typing import Literal

from expkit.core.errors import InputError

Goal = Literal["minimize", "maximize"]
Aggregate = Literal["mean", "median"]

REQUIRED_COLUMNS = ("algorithm", "dataset", "replicate", "seed", "metric", "value", "status")
SUCCEEDED = "succeeded"
SCHEMA = "expkit.analysis.stats/1"

#: Vargha & Delaney (2000) thresholds on A12 (and symmetrically on 1 - A12).
A12_SMALL, A12_MEDIUM, A12_LARGE = 0.56, 0.64, 0.71

CONVENTIONS: dict[str, str] = {
    "mannwhitneyu": (
        "scipy.stats.mannwhitneyu(a, b), two-sided, use_continuity=True, method='auto' decided for each pair "
        "exactly as scipy decides for that pair alone: the exact null distribution when at least one sample "
        "has <= 8 values and the pair has no tied values, otherwise the normal approximation with tie "
        "correction and continuity correction. statistic = U of a (pairs with a > b plus half the ties)."
    ),
    "wilcoxon": (
        "scipy.stats.wilcoxon(a, b) on runs paired by (replicate, seed), two-sided, zero_method='zsplit' "
        "(zero differences are ranked with the others and their rank sum is split evenly between R+ and "
        "R-, as recommended by Demsar 2006, so they count towards n and make the test more conservative), "
        "correction=False, method chosen for each pair as scipy's method='auto' chooses it: 'exact' for "
        "n <= 50 without zero differences or ties; 'permutation' for n <= 13 with zeros or ties (the exact "
        "distribution of R+ over all 2^n sign flips given the tied ranks, equal to scipy's permutation "
        "test, computed by expkit in microseconds instead of scipy's 0.1-2 s per pair); otherwise "
        "'asymptotic' (normal approximation with tie correction). statistic = min(R+, R-). All-zero "
        "differences give p = 1."
    ),
    "kruskal": (
        "scipy.stats.kruskal over the algorithms that have values on the dataset (independent runs, >= 3 "
        "algorithms): H with tie correction, chi-square approximation with k-1 df."
    ),
    "friedmanchisquare": (
        "scipy.stats.friedmanchisquare: average ranks for ties within a block and the tie-corrected "
        "statistic chi2 / (1 - sum(t^3 - t) / (N k (k^2 - 1))), chi-square approximation with k-1 df. Per "
        "dataset (paired runs, >= 3 algorithms) the blocks are the seeds where every algorithm has a value; "
        "across datasets the blocks are the complete datasets. chi2_uncorrected is Demsar's (2006) eq. from "
        "the average ranks, 12N/(k(k+1)) (sum R_j^2 - k(k+1)^2/4), equal to chi2 when no block has ties."
    ),
    "iman_davenport": (
        "F = (N-1) chi2 / (N(k-1) - chi2) with chi2 the tie-corrected Friedman statistic, compared with the "
        "F distribution with k-1 and (k-1)(N-1) degrees of freedom (Iman & Davenport 1980; Demsar 2006 "
        "eq. 2). Without ties it is Demsar's F_F. When every dataset ranks the algorithms identically "
        "chi2 = N(k-1), F is infinite (reported as null with a note) and p = 0."
    ),
    "nemenyi": (
        "critical difference CD = q_alpha * sqrt(k(k+1)/(6N)) with q_alpha = "
        "scipy.stats.studentized_range.ppf(1 - alpha, k, inf) / sqrt(2), which reproduces Demsar (2006) "
        "Table 5(a); two algorithms differ when their average ranks differ by more than CD."
    ),
    "wilcoxon_over_datasets": (
        "scipy.stats.wilcoxon on the per-dataset cell values (mean or median over replicates) of two "
        "algorithms over the complete datasets, same options as the per-dataset Wilcoxon test "
        "(zero_method='zsplit', method 'exact', 'permutation' or 'asymptotic' chosen per pair); Holm across "
        "all pairs, or the single test when there are exactly two algorithms. Direction from the sign of R+ - R-."
    ),
    "holm": (
        "Holm (1979) step-down adjustment: with the m p-values of a family sorted ascending, "
        "p_holm(i) = max over j <= i of min(1, (m - j + 1) p(j)). Families: the tested pairs of one "
        "dataset; the pairwise Wilcoxon tests over datasets. Pairs that could not be tested are not part "
        "of the family. Significant means p_holm < alpha."
    ),
    "a12": (
        "Vargha & Delaney (2000) A12 = P(a better than b) + 0.5 P(a ties b) over all pairs of runs, "
        "computed from the Mann-Whitney U as U_a / (n_a n_b) and oriented by the goal (> 0.5 means a is "
        "better). With paired runs it is computed on the paired values, ignoring the pairing. Magnitude by "
        "max(A12, 1 - A12): negligible < 0.56, small < 0.64, medium < 0.71, large otherwise."
    ),
    "median_difference": (
        "median(a) - median(b) in the metric's units over each algorithm's valid runs on the dataset "
        "(not oriented by the goal)."
    ),
    "winner": (
        "per dataset: when p_holm < alpha, the algorithm with A12 > 0.5 (if A12 = 0.5, the better median); "
        "across datasets: when p_holm < alpha, the algorithm favoured by the signed ranks."
    ),
    "ranks": (
        "per complete dataset the algorithms are ranked on the cell value (mean or median over replicates), "
        "rank 1 = best given the goal, ties get the average rank; average ranks are means over datasets."
    ),
    "descriptives": (
        "over valid runs (status 'succeeded' and a finite value): n, median, mean, std (ddof=1), q1 and q3 "
        "(linear interpolation, numpy's default), iqr = q3 - q1."
    ),
    "minimal_p": (
        "for each test the smallest p-value the sample sizes allow (no ties assumed) is compared with alpha; "
        "when it is not below alpha the test cannot be significant and a note says so."
    ),
}

REFERENCES: tuple[str, ...] = (
    "Demsar, J. (2006). Statistical Comparisons of Classifiers over Multiple Data Sets. JMLR 7:1-30.",
    (
        "Vargha, A. & Delaney, H. D. (2000). A Critique and Improvement of the CL Common Language Effect Size "
        "Statistics of McGraw and Wong. Journal of Educational and Behavioral Statistics 25(2):101-132."
    ),
    "Holm, S. (1979). A Simple Sequentially Rejective Multiple Test Procedure. Scand. J. Statist. 6:65-70.",
    (
        "Iman, R. L. & Davenport, J. M. (1980). Approximations of the critical region of the Friedman "
        "statistic. Communications in Statistics 9(6):571-595."
    ),
)

_PAIR_COLUMNS = (
    "dataset",
    "a",
    "b",
    "test",
    "method",
    "n_a",
    "n_b",
    "statistic",
    "p",
    "p_holm",
    "a12",
    "magnitude",
    "median_a",
    "median_b",
    "median_diff",
    "winner",
    "significant",
    "note",
)


_GOALS: dict[str, Goal] = {"minimize": "minimize", "maximize": "maximize"}
_AGGREGATES: dict[str, Aggregate] = {"mean": "mean", "median": "median"}


def check_goal(goal: str) -> Goal:
    """``goal`` as a :data:`Goal`; :class:`~expkit.core.errors.InputError` unless 'minimize' or 'maximize'."""
    checked = _GOALS.get(goal) if isinstance(goal, str) else None
    if checked is None:
        raise InputError(f"goal must be 'minimize' or 'maximize', not {goal!r}")
    return checked


def check_aggregate(aggregate: str) -> Aggregate:
    """``aggregate`` as an :data:`Aggregate`; :class:`~expkit.core.errors.InputError` unless 'mean' or 'median'."""
    checked = _AGGREGATES.get(aggregate) if isinstance(aggregate, str) else None
    if checked is None:
        raise InputError(f"aggregate must be 'mean' or 'median', not {aggregate!r}")
    return checked


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float; :class:`~expkit.core.errors.InputError` unless a number strictly between 0 and 1."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha must be a number between 0 and 1 (exclusive), not {alpha!r}")
    return float(alpha)

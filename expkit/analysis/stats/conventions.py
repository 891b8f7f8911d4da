"""The names, options and written conventions of the statistics: required columns, the ``stats.json``
schema, the text of every convention and reference written into ``stats.json`` and ``docs/statistics.md``,
and the checks of the ``goal`` and ``aggregate`` options."""

from __future__ import annotations

from typing import Literal

from expkit.core.errors import InputError

Goal = Literal["minimize", "maximize"]
Aggregate = Literal["mean", "median"]
#: What failed runs mean for the tests: the worst result (default) or nothing (left out).
Failures = Literal["penalize", "exclude"]

REQUIRED_COLUMNS = ("algorithm", "dataset", "replicate", "seed", "metric", "value", "status")
SUCCEEDED = "succeeded"
FAILED = "failed"
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
        "test); otherwise "
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
        "eq. 2). Without ties it is Demsar's F_F. Reported for reference; the verdict uses the omnibus test "
        "(friedman_exact), which falls back on this F only with many datasets. When every dataset ranks the "
        "algorithms identically chi2 = N(k-1), F is infinite and its p-value (0) means nothing: F and p are "
        "null with a note."
    ),
    "nemenyi": (
        "critical difference CD = q_alpha * sqrt(k(k+1)/(6N)) with q_alpha = "
        "scipy.stats.studentized_range.ppf(1 - alpha, k, inf) / sqrt(2), which reproduces Demsar (2006) "
        "Table 5(a); two algorithms differ when their average ranks differ by more than CD. For reference "
        "only: a mean-rank test makes the decision on A vs B depend on the other algorithms in the study "
        "(Benavoli, Corani & Mangili 2016), so the verdict and the bars of the critical-difference diagram "
        "come from the pairwise Wilcoxon tests (wilcoxon_over_datasets)."
    ),
    "friedman_exact": (
        "the omnibus test over complete datasets (>= 3 algorithms) that gates every claim: the Friedman "
        "statistic (tie-corrected chi2) with the p-value P(sum_j R_j^2 >= observed) under the permutation "
        "null (within each dataset every arrangement of its ranks, given its ties, equally likely). method "
        "'exact': the whole distribution over all (k!)^(N-1) rankings, by a dynamic program over the sorted "
        "rank sums (used while that is small: without ties k = 3 up to N = 109, k = 4 up to "
        "22, k = 5 up to 7, k = 6 up to 3, k = 7 to 9 with 2 datasets); 'monte-carlo' when that is too large "
        "and N k <= 2000: B = 9999 random "
        "permutations within datasets from the fixed seed 14, p = (c + 1)/(B + 1) with c the permutations "
        "at least as extreme (never 0; Phipson & Smyth 2010), SE = sqrt(p(1 - p)/B); 'asymptotic' beyond: "
        "Iman-Davenport's F, or, when every dataset ranks the algorithms identically (F infinite), the exact "
        "probability of that outcome (1/k!)^(N-1). p_min is the smallest p-value the design allows, "
        "(1/k!)^(N-1) without ties: when it is not below alpha no difference can be claimed."
    ),
    "skillings_mack": (
        "the omnibus test when some datasets lack an algorithm (Skillings & Mack 1981): every dataset with "
        "two or more values is a block; within a block with k_i values the average ranks r become "
        "sqrt(12/(k_i+1)) (r - (k_i+1)/2), A_j sums them per algorithm, SM = A' Sigma^- A with Sigma_jt = "
        "-(blocks holding j and t) and Sigma_jj = sum_t (blocks holding j and t), the inverse taken on the "
        "first k-1 rows and columns. Equal to Friedman's uncorrected statistic on complete blocks and to "
        "Durbin's on a balanced incomplete design. p-value as for friedman_exact: exact enumeration of all "
        "arrangements when there are at most 20000, else Monte-Carlo (B = 9999, seed 14) up to 2000 "
        "observed cells, else chi-square with k-1 df (conservative with ties). Needs the datasets to "
        "connect every pair of algorithms, directly or through others."
    ),
    "wilcoxon_over_datasets": (
        "the primary post-hoc procedure, which drives the verdict (Benavoli, Corani & Mangili 2016): "
        "scipy.stats.wilcoxon on the per-dataset cell values (mean or median over replicates) of two "
        "algorithms over the datasets where both have a value, same options as the per-dataset Wilcoxon test "
        "(zero_method='zsplit', method 'exact', 'permutation' or 'asymptotic' chosen per pair); Holm across "
        "all pairs, or across the k-1 comparisons with the control (--control), or the single test when there "
        "are exactly two algorithms. With three or more algorithms a pair is claimed (significant) only when "
        "the omnibus test rejects too. Direction from the sign of R+ - R-. Holm rather than Shaffer's or "
        "Bergmann-Hommel's procedures: those rely on logical relations between the hypotheses (A = B and "
        "B = C imply A = C) that hold for equal locations but not for the Wilcoxon test's hypotheses "
        "(differences symmetric about zero)."
    ),
    "holm": (
        "Holm (1979) step-down adjustment: with the m p-values of a family sorted ascending, "
        "p_holm(i) = max over j <= i of min(1, (m - j + 1) p(j)). Families: the tested pairs of one "
        "dataset; the pairwise Wilcoxon tests over datasets (all pairs, or the comparisons with the control). "
        "Pairs that could not be tested are not part of the family. Significant means p_holm < alpha."
    ),
    "a12": (
        "Vargha & Delaney (2000) A12 = P(a better than b) + 0.5 P(a ties b) over all pairs of runs, "
        "computed from the Mann-Whitney U as U_a / (n_a n_b) and oriented by the goal (> 0.5 means a is "
        "better); the effect size of independent runs. Interval a12_low..a12_high: Newcombe's (2006) score "
        "interval (method 5) at level 1 - alpha, which stays inside [0, 1] and does not collapse at 0 or 1. "
        "With paired runs A12 is computed on the paired values ignoring the pairing, for information only "
        "(no interval, not used for decisions). Magnitude by max(A12, 1 - A12): negligible < 0.56, small < "
        "0.64, medium < 0.71, large otherwise."
    ),
    "rank_biserial": (
        "paired runs: Kerby's (2014) matched-pairs rank-biserial correlation r = (R+ - R-) / (n(n+1)/2) "
        "with the Wilcoxon test's ranks (zero differences split between R+ and R-, so they cancel but count "
        "in n), oriented by the goal (> 0 means a is better); the effect size of paired runs. It estimates "
        "rho = 2 P(D + D' > 0) - 1 for two independent paired differences. Interval: Wilson score interval "
        "for (1 + r)/2 on the effective sample size min(n, p(1 - p)/Var) with Var the U-statistic (Hoeffding) "
        "variance estimate and the t quantile with n - 1 df (after Korn & Graubard 1998), mapped back to r. "
        "Magnitude on A12's scale, (1 + r)/2: |r| < 0.12 negligible, < 0.28 small, < 0.42 medium, else large."
    ),
    "hodges_lehmann": (
        "shift_hl = the Hodges-Lehmann estimate of a - b in the metric's units, not oriented by the goal "
        "(> 0: a has larger values): paired runs, the median of the Walsh averages (d_i + d_j)/2, i <= j, of "
        "the paired differences; independent runs, the median of all n_a n_b differences a_i - b_j. "
        "Interval shift_low..shift_high: the order statistics k and M + 1 - k of the same averages or "
        "differences, k the smallest value with P(T <= k) >= alpha/2 under the exact null distribution of "
        "the signed-rank (n <= 300) or rank-sum (both samples <= 50) statistic, else its normal "
        "approximation (Hollander & Wolfe 1999; R's wilcox.test(conf.int = TRUE)); distribution-free for "
        "continuous values, approximate with ties. shift_confidence is the level it achieves, 1 - 2 P(T <= "
        "k - 1), which is below 1 - alpha when the samples are too small. Two failed runs (penalize) give a "
        "difference of 0; a shift that is not finite is null with a note."
    ),
    "median_difference": (
        "median(a) - median(b) in the metric's units over each algorithm's runs in the tests on the dataset "
        "(not oriented by the goal; failed runs count as -inf/+inf with failures = 'penalize')."
    ),
    "winner": (
        "per dataset: when p_holm < alpha, for paired runs the algorithm the signed ranks favour (R+ vs R-, "
        "the sign of the rank-biserial correlation), for independent runs the algorithm with A12 > 0.5 (if "
        "A12 = 0.5, the better median); across datasets: when p_holm < alpha, the algorithm favoured by the "
        "signed ranks."
    ),
    "failures": (
        "failures = 'penalize' (default): a failed run (status 'failed') counts as worse than every successful "
        "run of its dataset - it enters every rank test as -inf (maximize) or +inf (minimize), tied with the "
        "other failed runs (Arcuri & Briand 2014) - and as the worst successful value of its dataset in the "
        "cell values across datasets; on a dataset where no run succeeded failed runs are left out. "
        "failures = 'exclude': failed runs are left out, with a warning when failure rates differ. "
        "Unfinished runs and succeeded runs without a finite value are always left out. Descriptive "
        "statistics are over successful runs."
    ),
    "success_rates": (
        "per dataset, every pair: scipy.stats.fisher_exact on the 2 x 2 table of succeeded and failed runs "
        "(unfinished runs left out), two-sided; p = 1 when neither failed; Holm within the dataset; "
        "more_reliable names the algorithm with the lower failure rate when p_holm < alpha."
    ),
    "power": (
        "replicates needed for one pair's two-sided rank test at level alpha to detect an effect with power "
        "0.8: Noether (1987), n = (z_{1-alpha/2} + z_{0.8})^2 / (6 (A12 - 1/2)^2) per algorithm for "
        "Mann-Whitney U, n = (...)^2 / (3 (p - 1/2)^2) pairs for the Wilcoxon signed-rank test with "
        "p = P(D + D' > 0) = (1 + rho)/2; the detectable effect is the same formula solved for the effect at "
        "the analysis' replicates (the median over tested pairs of the smaller sample). Default target "
        "A12 = 0.64 (Vargha & Delaney's medium). Assumes continuous values; holm_worst_case uses alpha/m "
        "for m pairs per dataset."
    ),
    "ranks": (
        "per complete dataset the algorithms are ranked on the cell value (mean or median over replicates), "
        "rank 1 = best given the goal, ties get the average rank; average ranks are means over datasets. "
        "A dataset lacking some algorithm has no ranks: it enters the Skillings-Mack test and the pairs "
        "whose algorithms both have a value there (incomplete_datasets)."
    ),
    "verdict": (
        "one sentence naming the procedure: with three or more algorithms, no difference is claimed unless "
        "the omnibus test (friedman_exact or skillings_mack) rejects at alpha; then every pair claimed has a "
        "Holm-adjusted Wilcoxon p-value over datasets below alpha (p in the sentence = p_holm) and is said "
        "with the datasets on which the winner is better; the best-ranked algorithm's (or the control's) "
        "non-significant comparisons follow. With two algorithms, the single Wilcoxon test. A p-value is "
        "never printed as 0: an underflow reads p < 1e-300."
    ),
    "descriptives": (
        "over valid runs (status 'succeeded' and a finite value): n, median, mean, std (ddof=1), q1 and q3 "
        "(linear interpolation, numpy's default), iqr = q3 - q1."
    ),
    "minimal_p": (
        "for each test the smallest p-value the sample sizes allow (no ties assumed) is compared with alpha; "
        "when it is not below alpha the test cannot be significant and a note says so."
    ),
    "secondary_metrics": (
        "a spec may list several metrics, each analysed with its own goal exactly as a single metric is; the "
        "first is primary: it alone drives the verdict, tested at alpha. Claims about the secondary metrics "
        "are labelled secondary and Holm-corrected across metrics: for each comparison (an across-dataset "
        "pair a-b, or a pair a-b on one dataset) the family is that comparison's p-values on the secondary "
        "metrics (m - 1 values for m metrics), each already Holm-adjusted within its metric (p_holm); "
        "p_metrics is Holm's adjustment of that family, and a secondary claim stands when it is significant "
        "within its metric and p_metrics < alpha. A result.json without a secondary metric leaves that run "
        "out of that metric's tests (status 'missing', noted); without the primary metric the run fails."
    ),
    "bayesian_signed_rank": (
        "Bayesian signed-rank test over datasets (Benavoli, Corani, Demsar & Zaffalon 2017), as baycomp's "
        "SignedRankTest: the cell values' differences z (oriented by the goal, z > 0 = a better) and a "
        "pseudo-observation 0 of prior strength 0.5; weights w ~ Dirichlet(0.5, 1, ..., 1); theta_a = "
        "sum_ij w_i w_j [z_i + z_j > 2 rope], theta_b likewise < -2 rope (equality counts one half), "
        "theta_rope = 1 - theta_a - theta_b. P(a better), P(equivalent), P(b better) are the fractions of "
        "10,000 posterior samples in which that theta is the largest (a tie within 1e-12 is shared, where "
        "baycomp's argmax gives it to a; Monte-Carlo SE sqrt(p(1-p)/10000) <= "
        "0.005, recorded as mc_se). Seeded per pair: numpy default_rng with the first 8 bytes (little-endian) "
        "of SHA-256('expkit-bayes-signed-rank\\0<a>\\0<b>'), weights drawn in the sorted order of the "
        "differences, so stats.json is byte-identical. rope is in the metric's units (--rope, spec.rope; "
        "primary metric only); without one ROPE 0 is used and said, so P(equivalent) = 0. Decision: the "
        "region whose probability reaches the threshold (--bayes-threshold, default 0.95), else undecided. "
        "Pairs: every pair with <= 5 algorithms, else those of the control or the best-ranked algorithm "
        "(nearest in rank first, at most 20). The decision never changes the verdict's claims (Wilcoxon-Holm "
        "decides them); its clause P(...) joins the pair's parentheses. Under the null the decision at 0.95 "
        "picks a direction in about 5-6% of studies per direction with 20 or more datasets, but about 7% "
        "with 10, 10% with 5 and 13% with 3 (simulated), so with fewer than 20 datasets a note says it is "
        "not a calibrated test."
    ),
}

REFERENCES: tuple[str, ...] = (
    "Demsar, J. (2006). Statistical Comparisons of Classifiers over Multiple Data Sets. JMLR 7:1-30.",
    (
        "Benavoli, A., Corani, G., Demsar, J. & Zaffalon, M. (2017). Time for a change: a tutorial for "
        "comparing multiple classifiers through Bayesian analysis. JMLR 18(77):1-36."
    ),
    (
        "Vargha, A. & Delaney, H. D. (2000). A Critique and Improvement of the CL Common Language Effect Size "
        "Statistics of McGraw and Wong. Journal of Educational and Behavioral Statistics 25(2):101-132."
    ),
    "Holm, S. (1979). A Simple Sequentially Rejective Multiple Test Procedure. Scand. J. Statist. 6:65-70.",
    (
        "Iman, R. L. & Davenport, J. M. (1980). Approximations of the critical region of the Friedman "
        "statistic. Communications in Statistics 9(6):571-595."
    ),
    (
        "Kerby, D. S. (2014). The Simple Difference Formula: An Approach to Teaching Nonparametric Correlation. "
        "Comprehensive Psychology 3:11.IT.3.1."
    ),
    (
        "Hodges, J. L. & Lehmann, E. L. (1963). Estimates of location based on rank tests. Ann. Math. Statist. "
        "34(2):598-611."
    ),
    (
        "Hollander, M. & Wolfe, D. A. (1999). Nonparametric Statistical Methods, 2nd ed. Wiley (sections 3.2-3.3 "
        "and 4.2-4.3: Hodges-Lehmann estimators and their distribution-free confidence intervals)."
    ),
    (
        "Newcombe, R. G. (2006). Confidence intervals for an effect size measure based on the Mann-Whitney "
        "statistic. Part 2: asymptotic methods and evaluation. Statistics in Medicine 25(4):559-573."
    ),
    (
        "Korn, E. L. & Graubard, B. I. (1998). Confidence intervals for proportions with small expected number "
        "of positive counts estimated from survey data. Survey Methodology 24(2):193-201."
    ),
    (
        "Arcuri, A. & Briand, L. (2014). A Hitchhiker's guide to statistical tests for assessing randomized "
        "algorithms in software engineering. Software Testing, Verification and Reliability 24(3):219-250."
    ),
    (
        "Noether, G. E. (1987). Sample size determination for some common nonparametric tests. Journal of the "
        "American Statistical Association 82(398):645-647."
    ),
    (
        "Friedman, M. (1937). The use of ranks to avoid the assumption of normality implicit in the analysis of "
        "variance. Journal of the American Statistical Association 32(200):675-701."
    ),
    (
        "Skillings, J. H. & Mack, G. A. (1981). On the use of a Friedman-type statistic in balanced and unbalanced "
        "block designs. Technometrics 23(2):171-177."
    ),
    (
        "Benavoli, A., Corani, G. & Mangili, F. (2016). Should we really use post-hoc tests based on mean-ranks? "
        "JMLR 17(5):1-10."
    ),
    (
        "Phipson, B. & Smyth, G. K. (2010). Permutation P-values should never be zero: calculating exact P-values "
        "when permutations are randomly drawn. Statistical Applications in Genetics and Molecular Biology 9(1):39."
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
    "effect",
    "a12",
    "a12_low",
    "a12_high",
    "rank_biserial",
    "rank_biserial_low",
    "rank_biserial_high",
    "magnitude",
    "shift_hl",
    "shift_low",
    "shift_high",
    "shift_confidence",
    "shift_method",
    "median_a",
    "median_b",
    "median_diff",
    "winner",
    "significant",
    "note",
)


_GOALS: dict[str, Goal] = {"minimize": "minimize", "maximize": "maximize"}
_AGGREGATES: dict[str, Aggregate] = {"mean": "mean", "median": "median"}
_FAILURES: dict[str, Failures] = {"penalize": "penalize", "exclude": "exclude"}


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


def check_failures(failures: str) -> Failures:
    """``failures`` as a :data:`Failures`; :class:`~expkit.core.errors.InputError` unless 'penalize' or 'exclude'."""
    checked = _FAILURES.get(failures) if isinstance(failures, str) else None
    if checked is None:
        raise InputError(f"failures must be 'penalize' or 'exclude', not {failures!r}")
    return checked

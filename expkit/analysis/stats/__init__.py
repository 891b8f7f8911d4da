"""Stage 6: statistics — pairwise tests per dataset, omnibus tests, and the across-dataset comparison.

Input is the tidy results table (one row per cell x metric, columns ``algorithm, dataset, replicate,
seed, metric, value, status``). :func:`analyze` returns an immutable :class:`Analysis`;
:func:`describe` returns per algorithm x dataset descriptive statistics. Nothing here prints or
writes files: the report module turns the result into ``stats.json`` (``Analysis.to_dict()``), the
terminal summary (``Analysis.summary_lines()``) and plots.

What is computed (conventions in :data:`CONVENTIONS`, also written into ``stats.json`` and
``docs/statistics.md``):

* per dataset, every pair of algorithms: Mann-Whitney U (independent runs) or the Wilcoxon
  signed-rank test (runs paired by replicate and seed), the effect size with its confidence interval
  and magnitude (Vargha-Delaney A12 for independent runs, the matched-pairs rank-biserial correlation
  for paired runs), the Hodges-Lehmann shift a - b with its interval, the median difference, Holm's
  correction across the pairs of that dataset, the winner if significant (paired: from R+ vs R-);
* per dataset, every pair: Fisher's exact test of the success rates (Holm); failed runs count as worse
  than every successful run (``failures='penalize'``) or are left out (``'exclude'``);
* per dataset, an omnibus test over all algorithms: Kruskal-Wallis (independent) or Friedman
  (paired, blocks = seeds);
* across datasets (blocks = datasets, cell = mean or median over replicates): average ranks over the
  datasets where every algorithm has a value; the omnibus test that gates every claim (Friedman with
  its exact or seeded Monte-Carlo permutation p-value over few datasets, Iman-Davenport over many;
  Skillings-Mack when some datasets lack an algorithm); Friedman and Iman-Davenport as scipy computes
  them and the Nemenyi critical difference, for reference; pairwise Wilcoxon signed-rank tests over
  datasets with Holm (every pair, or the comparisons with a control; a single test with two
  algorithms), which drive the verdict; the verdict in one sentence (:func:`verdict_sentence`);
* across datasets, the Bayesian signed-rank test with a ROPE (Benavoli et al. 2017): P(a better),
  P(equivalent), P(b better), seeded per pair; its clause joins the verdict, it never makes a claim.

Speed: samples are arranged in a dataset x algorithm x replicate array and scipy is called once per
batch of pairs with equal sample sizes (``axis=-1``) instead of once per pair. scipy's ``method='auto'``
decides between the exact and the asymptotic test once for a whole batch (exact only when *no* slice
has ties), so each batch is first split by what scipy would choose for one pair; the numbers are then
identical to one scipy call per pair (tested). Where scipy's choice for a Wilcoxon pair is a
permutation test (n <= 13 with zeros or ties, 0.1-2 s per pair in scipy), expkit computes the same
exact distribution itself (:func:`_signed_rank_permutation_p`, ~12 us per pair).

Edge cases never raise and never leave a silent NaN: a value that cannot be computed is ``None`` in
``to_dict()`` and the reason is written in words in the record or in :attr:`Analysis.notes`.

Where things are, in the order :func:`analyze` uses them:

* :mod:`.conventions` — required columns, options, the convention and reference texts;
* :mod:`.prepare` — the results table checked and arranged as a dataset x algorithm x slot array;
* :mod:`.descriptives` — :func:`describe`: n, median, mean, std, quartiles per cell;
* :mod:`.rank_tests` — vectorised Mann-Whitney U and Wilcoxon, the exact signed-rank permutation
  distribution, the smallest reachable p-values;
* :mod:`.formulas` — Holm, A12 magnitude, Nemenyi q and CD, Iman-Davenport, Friedman from ranks;
* :mod:`.effects` — rank-biserial correlation, Hodges-Lehmann shifts, confidence intervals;
* :mod:`.pairwise` — every pair of algorithms on every dataset;
* :mod:`.failures` — success rates (Fisher's exact test) and the failure-policy warning;
* :mod:`.power` — replicates needed for an effect, the effect the replicates detect (Noether 1987);
* :mod:`.omnibus` — Kruskal-Wallis / Friedman on every dataset;
* :mod:`.block_tests` — :func:`friedman_test` and :func:`skillings_mack_test`: exact, Monte-Carlo or
  asymptotic p-values of the omnibus tests over datasets;
* :mod:`.across` — :func:`across_datasets`: ranks, the omnibus test, Friedman, Iman-Davenport, Nemenyi,
  Wilcoxon-Holm; :mod:`.verdict` — the verdict sentence;
* :mod:`.bayes` — :func:`signed_rank_test`, the Bayesian signed-rank test and its pairs;
  :mod:`.bayes_local` — the same test per dataset over paired replicates, vectorised over all pairs;
* :mod:`.results` — the result records; :mod:`.analysis` — :class:`Analysis` and :func:`analyze`;
* :mod:`.records` — the ``stats.json`` records; :mod:`.summary` — the terminal summary;
* :mod:`.metrics` — :func:`~.metrics.analyze_metrics`: several metrics, each with its own goal, the
  first primary, the secondary claims Holm-corrected across metrics.
"""

from __future__ import annotations

from expkit.analysis.stats.across import across_datasets
from expkit.analysis.stats.analysis import Analysis, analyze
from expkit.analysis.stats.bayes import BAYES_SAMPLES, BAYES_THRESHOLD, BayesResult, signed_rank_test
from expkit.analysis.stats.block_tests import (
    MC_RESAMPLES,
    MC_SEED,
    friedman_test,
    minimal_p_friedman_exact,
    skillings_mack_test,
)
from expkit.analysis.stats.conventions import (
    A12_LARGE,
    A12_MEDIUM,
    A12_SMALL,
    CONVENTIONS,
    REFERENCES,
    REQUIRED_COLUMNS,
    SCHEMA,
    SUCCEEDED,
    Aggregate,
    Failures,
    Goal,
    check_aggregate,
    check_alpha,
    check_failures,
    check_goal,
)
from expkit.analysis.stats.descriptives import describe
from expkit.analysis.stats.effects import (
    a12_interval,
    hl_paired,
    hl_two_sample,
    rank_biserial_interval,
    rank_biserial_paired,
    rank_sum_cdf,
    shift_critical,
    signed_rank_cdf,
    walsh_critical,
)
from expkit.analysis.stats.formulas import (
    _nemenyi_qs as _nemenyi_qs,  # bench/stats_scale.py clears its cache
)
from expkit.analysis.stats.formulas import (
    a12_magnitude,
    friedman_chi2_from_ranks,
    holm,
    iman_davenport,
    nemenyi_cd,
    nemenyi_q,
)
from expkit.analysis.stats.power import (
    DEFAULT_EFFECT,
    DEFAULT_POWER,
    PowerResult,
    detectable_effect,
    power_summary,
    replicates_needed,
)
from expkit.analysis.stats.rank_tests import (
    _signed_rank_permutation_p as _signed_rank_permutation_p,  # tested against scipy's permutation test
)
from expkit.analysis.stats.rank_tests import (
    minimal_p_friedman,
    minimal_p_kruskal,
    minimal_p_mannwhitneyu,
    minimal_p_wilcoxon,
    wilcoxon_method,
)
from expkit.analysis.stats.results import (
    AcrossDatasets,
    AcrossPair,
    BlockTestResult,
    FriedmanResult,
    ImanDavenportResult,
    NemenyiResult,
    OmnibusResult,
)
from expkit.analysis.stats.summary import SUMMARY_MAX_DATASETS
from expkit.analysis.stats.verdict import verdict_sentence

__all__ = [
    "BAYES_SAMPLES",
    "BAYES_THRESHOLD",
    "BayesResult",
    "signed_rank_test",
    "MC_RESAMPLES",
    "MC_SEED",
    "BlockTestResult",
    "friedman_test",
    "minimal_p_friedman_exact",
    "skillings_mack_test",
    "verdict_sentence",
    "A12_LARGE",
    "A12_MEDIUM",
    "A12_SMALL",
    "CONVENTIONS",
    "DEFAULT_EFFECT",
    "DEFAULT_POWER",
    "REFERENCES",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "SUCCEEDED",
    "SUMMARY_MAX_DATASETS",
    "AcrossDatasets",
    "AcrossPair",
    "Aggregate",
    "Analysis",
    "Failures",
    "FriedmanResult",
    "Goal",
    "ImanDavenportResult",
    "NemenyiResult",
    "OmnibusResult",
    "PowerResult",
    "a12_interval",
    "a12_magnitude",
    "across_datasets",
    "analyze",
    "check_aggregate",
    "check_alpha",
    "check_failures",
    "check_goal",
    "describe",
    "detectable_effect",
    "friedman_chi2_from_ranks",
    "hl_paired",
    "hl_two_sample",
    "holm",
    "iman_davenport",
    "minimal_p_friedman",
    "minimal_p_kruskal",
    "minimal_p_mannwhitneyu",
    "minimal_p_wilcoxon",
    "nemenyi_cd",
    "nemenyi_q",
    "power_summary",
    "rank_biserial_interval",
    "rank_biserial_paired",
    "rank_sum_cdf",
    "replicates_needed",
    "shift_critical",
    "signed_rank_cdf",
    "walsh_critical",
    "wilcoxon_method",
]

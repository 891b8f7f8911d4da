"""Stage 6: statistics — pairwise tests per dataset, omnibus tests, and the across-dataset comparison.

Input is the tidy results table (one row per cell x metric, columns ``algorithm, dataset, replicate,
seed, metric, value, status``). :func:`analyze` returns an immutable :class:`Analysis`;
:func:`describe` returns per algorithm x dataset descriptive statistics. Nothing here prints or
writes files: the report module turns the result into ``stats.json`` (``Analysis.to_dict()``), the
terminal summary (``Analysis.summary_lines()``) and plots.

What is computed (conventions in :data:`CONVENTIONS`, also written into ``stats.json`` and
``docs/statistics.md``):

* per dataset, every pair of algorithms: Mann-Whitney U (independent runs) or the Wilcoxon
  signed-rank test (runs paired by replicate and seed), Vargha-Delaney A12 with its magnitude, the
  median difference, Holm's correction across the pairs of that dataset, the winner if significant;
* per dataset, an omnibus test over all algorithms: Kruskal-Wallis (independent) or Friedman
  (paired, blocks = seeds);
* across datasets (blocks = datasets, cell = mean or median over replicates, only datasets where
  every algorithm has a value): average ranks, Friedman, Iman-Davenport, the Nemenyi critical
  difference at 0.05, 0.10 and the chosen alpha, and pairwise Wilcoxon signed-rank tests over
  datasets with Holm (a single test with two algorithms).

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
* :mod:`.pairwise` — every pair of algorithms on every dataset;
* :mod:`.omnibus` — Kruskal-Wallis / Friedman on every dataset;
* :mod:`.across` — :func:`across_datasets`: ranks, Friedman, Iman-Davenport, Nemenyi, Wilcoxon, verdict;
* :mod:`.results` — the result records; :mod:`.analysis` — :class:`Analysis` and :func:`analyze`;
* :mod:`.records` — the ``stats.json`` records; :mod:`.summary` — the terminal summary.
"""

from __future__ import annotations

from expkit.analysis.stats.across import across_datasets
from expkit.analysis.stats.analysis import Analysis, analyze
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
    Goal,
    check_aggregate,
    check_alpha,
    check_goal,
)
from expkit.analysis.stats.descriptives import describe
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
    FriedmanResult,
    ImanDavenportResult,
    NemenyiResult,
    OmnibusResult,
)
from expkit.analysis.stats.summary import SUMMARY_MAX_DATASETS

__all__ = [
    "A12_LARGE",
    "A12_MEDIUM",
    "A12_SMALL",
    "CONVENTIONS",
    "REFERENCES",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "SUCCEEDED",
    "SUMMARY_MAX_DATASETS",
    "AcrossDatasets",
    "AcrossPair",
    "Aggregate",
    "Analysis",
    "FriedmanResult",
    "Goal",
    "ImanDavenportResult",
    "NemenyiResult",
    "OmnibusResult",
    "a12_magnitude",
    "across_datasets",
    "analyze",
    "check_aggregate",
    "check_alpha",
    "check_goal",
    "describe",
    "friedman_chi2_from_ranks",
    "holm",
    "iman_davenport",
    "minimal_p_friedman",
    "minimal_p_kruskal",
    "minimal_p_mannwhitneyu",
    "minimal_p_wilcoxon",
    "nemenyi_cd",
    "nemenyi_q",
    "wilcoxon_method",
]

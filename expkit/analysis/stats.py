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
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from expkit.core.errors import InputError

logger = logging.getLogger(__name__)

Goal = Literal["minimize", "maximize"]
Aggregate = Literal["mean", "median"]

REQUIRED_COLUMNS = ("algorithm", "dataset", "replicate", "seed", "metric", "value", "status")
SUCCEEDED = "succeeded"
SCHEMA = "expkit.analysis.stats/1"

#: Vargha & Delaney (2000) thresholds on A12 (and symmetrically on 1 - A12).
A12_SMALL, A12_MEDIUM, A12_LARGE = 0.56, 0.64, 0.71

#: scipy's ``method='auto'`` of mannwhitneyu uses the exact distribution unless both samples have
#: more than this many values (or there are ties); wilcoxon uses it for n <= 50 without zeros/ties.
_MWU_EXACT_MAX = 8
_WILCOXON_EXACT_MAX = 50
#: With zeros or ties and at most this many pairs, scipy's ``method='auto'`` runs a permutation
#: test that enumerates all 2**n sign flips; expkit computes the same distribution directly.
_WILCOXON_PERMUTATION_MAX = 13

#: Datasets sharing a sample-size pattern below this count go through one nan_policy='omit' call.
_KRUSKAL_MIN_BATCH = 4

#: Elements handed to one scipy call: bounds memory, and ~10,000 pairs per call run faster than one
#: giant call (the arrays stay in cache; measured ~25% faster at 95,000 pairs).
_MAX_ELEMENTS_PER_CALL = 600_000

#: How many datasets the terminal summary lists one by one.
SUMMARY_MAX_DATASETS = 20

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


# ---------------------------------------------------------------------------------------------------
# result types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmnibusResult:
    """Omnibus test on one dataset (Kruskal-Wallis or Friedman); ``test`` is None when not run."""

    dataset: str
    test: str | None
    statistic: float | None
    p: float | None
    significant: bool
    algorithms: tuple[str, ...]
    n_blocks: int | None
    note: str | None


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test across datasets (tie-corrected, scipy) plus Demsar's uncorrected statistic."""

    chi2: float | None
    p: float | None
    chi2_uncorrected: float
    df: int
    note: str | None


@dataclass(frozen=True)
class ImanDavenportResult:
    """Iman-Davenport F test derived from the Friedman statistic; ``f`` may be ``math.inf``."""

    f: float | None
    df1: int
    df2: int
    p: float | None
    note: str | None


@dataclass(frozen=True)
class NemenyiResult:
    """Nemenyi critical differences (average-rank units) for k algorithms on n datasets."""

    k: int
    n: int
    q_05: float
    cd_05: float
    q_10: float
    cd_10: float
    alpha: float
    q_alpha: float
    cd_alpha: float


@dataclass(frozen=True)
class AcrossPair:
    """Two algorithms compared over datasets: Wilcoxon signed-rank (Holm) and the Nemenyi decision."""

    a: str
    b: str
    statistic: float | None
    p: float | None
    p_holm: float | None
    significant: bool
    winner: str | None
    rank_a: float
    rank_b: float
    nemenyi_significant: bool
    note: str | None


@dataclass(frozen=True)
class AcrossDatasets:
    """The across-dataset block: blocks = complete datasets, cell = mean/median over replicates."""

    aggregate: str
    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    excluded: tuple[str, ...]
    average_ranks: tuple[float, ...] | None
    friedman: FriedmanResult | None
    iman_davenport: ImanDavenportResult | None
    nemenyi: NemenyiResult | None
    pairs: tuple[AcrossPair, ...]
    verdict: str
    notes: tuple[str, ...]

    def rank_of(self, algorithm: str) -> float | None:
        """Average rank of ``algorithm`` (1 = best), or None when no complete dataset exists."""
        if self.average_ranks is None:
            return None
        return self.average_ranks[self.algorithms.index(algorithm)]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Immutable result of :func:`analyze`. Tables are handed out as copies."""

    metric: str
    goal: str
    paired: bool
    alpha: float
    aggregate: str
    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    pair_test: str
    omnibus: tuple[OmnibusResult, ...]
    across: AcrossDatasets
    notes: tuple[str, ...]
    _pairwise: pd.DataFrame = field(repr=False)
    _descriptives: pd.DataFrame = field(repr=False)
    _aggregated: pd.DataFrame = field(repr=False)
    _ranks: pd.DataFrame = field(repr=False)

    # -- tables -------------------------------------------------------------------------------------

    @property
    def pairwise(self) -> pd.DataFrame:
        """Per-dataset pairwise results, one row per dataset x pair (a before b in display order).

        Columns: dataset, a, b, test, method, n_a, n_b, statistic, p, p_holm, a12 (a vs b, > 0.5 = a
        better), magnitude, median_a, median_b, median_diff (median a - median b), winner (None unless
        significant), significant, note (why a value is missing, or an edge case).
        """
        return self._pairwise.copy()

    @property
    def descriptives(self) -> pd.DataFrame:
        """The :func:`describe` table of the analysed metric."""
        return self._descriptives.copy()

    @property
    def aggregated(self) -> pd.DataFrame:
        """Cell values (mean or median over replicates): rows = datasets, columns = algorithms."""
        return self._aggregated.copy()

    @property
    def ranks(self) -> pd.DataFrame:
        """Ranks (1 = best) on the complete datasets: rows = datasets, columns = algorithms."""
        return self._ranks.copy()

    @property
    def excluded_datasets(self) -> tuple[str, ...]:
        """Datasets left out of the across-dataset block because some algorithm has no value there."""
        return self.across.excluded

    def pairs_for(self, dataset: str) -> pd.DataFrame:
        """Pairwise rows of one dataset."""
        if dataset not in self.datasets:
            raise InputError(f"dataset {dataset!r} is not part of this analysis: use one of {list(self.datasets)}")
        frame = self._pairwise
        return frame[frame["dataset"] == dataset].reset_index(drop=True)

    def best_on(self, dataset: str) -> tuple[str, ...]:
        """Algorithms with the best cell value (mean/median over replicates) on ``dataset``."""
        if dataset not in self.datasets:
            raise InputError(f"dataset {dataset!r} is not part of this analysis: use one of {list(self.datasets)}")
        row = self._aggregated.loc[dataset].to_numpy(dtype=float)
        return _best_names(row, self.algorithms, self.goal)

    def win_tie_loss(self) -> pd.DataFrame:
        """Per ordered pair (algorithm, opponent): datasets won, tied and lost, from the significant
        per-dataset decisions (a significant pair without a direction counts as a tie); ``untested``
        counts datasets where the pair could not be tested. Rows in display order."""
        algs = self.algorithms
        k = len(algs)
        frame = self._pairwise
        index = {name: i for i, name in enumerate(algs)}
        wins = np.zeros((k, k), dtype=np.int64)
        ties = np.zeros((k, k), dtype=np.int64)
        untested = np.zeros((k, k), dtype=np.int64)
        if len(frame):
            ia = frame["a"].map(index).to_numpy()
            ib = frame["b"].map(index).to_numpy()
            tested = frame["p"].notna().to_numpy()
            win_a = (frame["winner"] == frame["a"]).to_numpy()
            win_b = (frame["winner"] == frame["b"]).to_numpy()
            tie = tested & ~win_a & ~win_b
            np.add.at(wins, (ia[win_a], ib[win_a]), 1)
            np.add.at(wins, (ib[win_b], ia[win_b]), 1)
            np.add.at(ties, (ia[tie], ib[tie]), 1)
            np.add.at(ties, (ib[tie], ia[tie]), 1)
            np.add.at(untested, (ia[~tested], ib[~tested]), 1)
            np.add.at(untested, (ib[~tested], ia[~tested]), 1)
        rows = [
            {
                "algorithm": algs[i],
                "opponent": algs[j],
                "wins": int(wins[i, j]),
                "ties": int(ties[i, j]),
                "losses": int(wins[j, i]),
                "untested": int(untested[i, j]),
            }
            for i in range(k)
            for j in range(k)
            if i != j
        ]
        return pd.DataFrame(rows, columns=["algorithm", "opponent", "wins", "ties", "losses", "untested"])

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, deterministic dict for ``stats.json``: fixed key and list order, plain
        floats, no NaN or infinity (those are None with a note in the same record), no timestamps."""
        frame = self._pairwise
        n_pairs = len(self.algorithms) * (len(self.algorithms) - 1) // 2
        columns = {name: _json_column(frame[name]) for name in _PAIR_COLUMNS if name != "dataset"}
        agg = self._aggregated
        per_dataset: list[dict[str, Any]] = []
        for i, (dataset, omni) in enumerate(zip(self.datasets, self.omnibus)):
            pairs = []
            for r in range(i * n_pairs, (i + 1) * n_pairs):
                pairs.append({name: columns[name][r] for name in _PAIR_COLUMNS if name != "dataset"})
            values = agg.loc[dataset].to_numpy(dtype=float)
            cell_note = None
            if np.isnan(values).any():
                missing = [a for a, v in zip(self.algorithms, values) if np.isnan(v)]
                cell_note = f"no valid run for {', '.join(missing)} on this dataset"
            per_dataset.append(
                {
                    "dataset": dataset,
                    "best": list(self.best_on(dataset)),
                    "cell_values": {a: _json_float(v) for a, v in zip(self.algorithms, values)},
                    "note": cell_note,
                    "omnibus": _omnibus_dict(omni),
                    "pairwise": {"test": self.pair_test, "convention": CONVENTIONS[self.pair_test], "pairs": pairs},
                }
            )
        desc = self._descriptives
        desc_cols = {name: _json_column(desc[name]) for name in desc.columns}
        descriptives = []
        for r in range(len(desc)):
            record = {name: desc_cols[name][r] for name in desc.columns}
            count = record["n"]
            record["note"] = (
                "no valid run" if count == 0 else "std needs at least two valid runs" if count == 1 else None
            )
            descriptives.append(record)
        return {
            "schema": SCHEMA,
            "metric": self.metric,
            "goal": self.goal,
            "paired": self.paired,
            "alpha": float(self.alpha),
            "aggregate": self.aggregate,
            "algorithms": list(self.algorithms),
            "datasets": list(self.datasets),
            "conventions": dict(CONVENTIONS),
            "references": list(REFERENCES),
            "descriptives": descriptives,
            "per_dataset": per_dataset,
            "win_tie_loss": self.win_tie_loss().to_dict(orient="records"),
            "across_datasets": _across_dict(self.across, self.alpha),
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        """A readable terminal summary: who wins where, which differences are significant, the
        across-dataset verdict, then the notes."""
        return _summary_lines(self)


# ---------------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------------


def analyze(
    table: pd.DataFrame,
    *,
    metric: str,
    goal: Goal,
    paired: bool,
    alpha: float = 0.05,
    aggregate: Aggregate = "mean",
    algorithms: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
) -> Analysis:
    """Compare the algorithms on ``metric``: per dataset, pairwise and omnibus; across datasets.

    ``goal`` says whether smaller or larger values are better; ``paired`` selects Wilcoxon/Friedman on
    runs matched by (replicate, seed) instead of Mann-Whitney/Kruskal-Wallis; ``aggregate`` is how
    replicates are summarised into one cell value for the across-dataset block; ``algorithms`` and
    ``datasets`` give the display order (default: sorted names found in the table).
    Raises :class:`~expkit.core.errors.InputError` for unusable input (missing columns, unknown metric,
    bad option, duplicate rows).
    """
    if goal not in ("minimize", "maximize"):
        raise InputError(f"goal must be 'minimize' or 'maximize', not {goal!r}")
    if aggregate not in ("mean", "median"):
        raise InputError(f"aggregate must be 'mean' or 'median', not {aggregate!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha must be a number between 0 and 1 (exclusive), not {alpha!r}")
    alpha = float(alpha)
    data = _prepare(table, metric=metric, paired=bool(paired), algorithms=algorithms, datasets=datasets)
    notes: list[str] = list(data.notes)
    algs, dsets = data.algorithms, data.datasets
    k = len(algs)
    sign = 1.0 if goal == "maximize" else -1.0

    xs = np.sort(data.x, axis=-1)  # NaN last: valid values first in each cell
    medians = _sorted_quantile(xs, data.n, 0.5)
    descriptives = _descriptives_frame(data, xs)

    if k < 2:
        notes.append(
            f"only one algorithm ({algs[0] if algs else 'none'}) has results: there is nothing to compare, "
            "so no test was run"
        )
    pair_test = "wilcoxon" if paired else "mannwhitneyu"
    pairwise = _per_dataset_pairs(data, xs, medians, sign=sign, paired=bool(paired), alpha=alpha, notes=notes)
    omnibus = _per_dataset_omnibus(data, xs, paired=bool(paired), alpha=alpha, notes=notes)

    with _quiet():
        if aggregate == "mean":
            cell = np.where(data.n > 0, np.nansum(data.x, axis=-1) / np.maximum(data.n, 1), np.nan)
        else:
            cell = medians
    aggregated = pd.DataFrame(cell, index=pd.Index(dsets, name="dataset"), columns=pd.Index(algs, name="algorithm"))
    across, ranks = _across_datasets(cell, data.n > 0, algs, dsets, goal=goal, alpha=alpha, aggregate=aggregate)
    notes.extend(across.notes)
    return Analysis(
        metric=metric,
        goal=goal,
        paired=bool(paired),
        alpha=alpha,
        aggregate=aggregate,
        algorithms=algs,
        datasets=dsets,
        pair_test=pair_test,
        omnibus=omnibus,
        across=across,
        notes=tuple(notes),
        _pairwise=pairwise,
        _descriptives=descriptives,
        _aggregated=aggregated,
        _ranks=ranks,
    )


def describe(
    table: pd.DataFrame, *, metric: str, algorithms: Sequence[str] | None = None, datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """Descriptive statistics per algorithm x dataset over the valid runs of ``metric``.

    Columns: algorithm, dataset, n (valid runs), n_failed (failed, missing or non-finite runs), median,
    mean, std (ddof=1), q1, q3, iqr. Rows sorted by algorithm then dataset in display order (default:
    sorted names); statistics of a cell without enough runs are NaN (std needs two).
    """
    data = _prepare(table, metric=metric, paired=False, algorithms=algorithms, datasets=datasets)
    return _descriptives_frame(data, np.sort(data.x, axis=-1))


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of one family (NaN entries are not part of the family and stay NaN)."""
    values = np.asarray(p, dtype=float)
    return _holm_grouped(values, np.zeros(values.shape, dtype=np.int64), 1)


def a12_magnitude(a12: float) -> str:
    """Vargha & Delaney (2000) magnitude label of A12: negligible, small, medium or large."""
    return str(_magnitude(np.asarray([a12], dtype=float))[0])


def nemenyi_q(alpha: float, k: int) -> float:
    """Critical value q_alpha of the Nemenyi test for k algorithms (Demsar 2006, Table 5a)."""
    return _nemenyi_q(float(alpha), int(k))


def nemenyi_cd(alpha: float, k: int, n: int) -> float:
    """Nemenyi critical difference of average ranks for k algorithms on n datasets."""
    return _nemenyi_q(float(alpha), int(k)) * math.sqrt(k * (k + 1) / (6.0 * n))


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, int, int, float]:
    """Iman-Davenport statistic from a Friedman chi2 on n blocks and k algorithms: (F, df1, df2, p)."""
    df1, df2 = k - 1, (k - 1) * (n - 1)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        return math.inf, df1, df2, 0.0
    f = (n - 1) * chi2 / denominator
    return float(f), df1, df2, float(sps.f.sf(f, df1, df2))


def friedman_chi2_from_ranks(average_ranks: Sequence[float], n: int) -> float:
    """Demsar's (2006) Friedman statistic from average ranks (no tie correction)."""
    r = np.asarray(average_ranks, dtype=float)
    k = r.size
    return float(12.0 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4.0))


def minimal_p_mannwhitneyu(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value scipy's Mann-Whitney U can give for samples of these sizes (no ties)."""
    if n_a < 1 or n_b < 1:
        return 1.0
    if n_a > _MWU_EXACT_MAX and n_b > _MWU_EXACT_MAX:
        mu = n_a * n_b / 2.0
        s = math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12.0)
        return float(min(1.0, 2.0 * special.ndtr(-(n_a * n_b - mu - 0.5) / s)))
    return float(min(1.0, 2.0 / math.comb(n_a + n_b, n_a)))


def minimal_p_wilcoxon(n: int) -> float:
    """Smallest two-sided p-value scipy's Wilcoxon signed-rank test can give for n pairs (no ties, no zeros)."""
    if n < 1:
        return 1.0
    if n <= _WILCOXON_EXACT_MAX:
        return float(min(1.0, 2.0 ** (1 - n)))
    mn = n * (n + 1) / 4.0
    se = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    return float(min(1.0, 2.0 * special.ndtr(-mn / se)))


def minimal_p_friedman(n_blocks: int, k: int) -> float:
    """Smallest p-value of the Friedman chi-square test with n blocks and k treatments."""
    if n_blocks < 1 or k < 2:
        return 1.0
    return float(special.chdtrc(k - 1, n_blocks * (k - 1)))


def minimal_p_kruskal(sizes: Sequence[int]) -> float:
    """Smallest p-value of the Kruskal-Wallis test for these group sizes (groups fully separated)."""
    sizes = [int(s) for s in sizes if s > 0]
    total = sum(sizes)
    if len(sizes) < 2 or total < 2:
        return 1.0
    best = 0.0
    # rank sums of fully separated groups, smallest groups at the extremes maximise H; try both orders
    for order in (sorted(sizes), sorted(sizes, reverse=True)):
        start, h = 0, 0.0
        for size in order:
            rank_sum = size * (2 * start + size + 1) / 2.0
            h += rank_sum**2 / size
            start += size
        best = max(best, 12.0 / (total * (total + 1)) * h - 3.0 * (total + 1))
    return float(special.chdtrc(len(sizes) - 1, best))


# ---------------------------------------------------------------------------------------------------
# input preparation
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    metric: str
    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    x: np.ndarray  # (D, K, S) values, NaN where no valid run; paired: slot = (replicate, seed)
    n: np.ndarray  # (D, K) valid runs
    failed: np.ndarray  # (D, K) failed / missing / non-finite runs
    notes: tuple[str, ...]


def _order(given: Sequence[str] | None, found: Sequence[str], kind: str) -> tuple[str, ...]:
    if given is None:
        return tuple(sorted(found))
    names = tuple(str(x) for x in given)
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise InputError(f"{kind} order lists {', '.join(dup)} more than once: give each name once")
    return names


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """``column == value`` as a bool array (NaN = False); via numpy, cheaper than pandas' string ops."""
    values = column.to_numpy()
    if values.dtype == object:
        return np.asarray(values == value, dtype=bool)
    return column.eq(value).to_numpy(dtype=bool, na_value=False)


def _factorize(column: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize`` on the column's values (categoricals keep their codes); -1 = missing."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype=np.int64), column.cat.categories
    return pd.factorize(column.to_numpy(), use_na_sentinel=True)


def _recode(raw: np.ndarray, uniques: Any, order: tuple[str, ...]) -> np.ndarray:
    """Codes of ``pd.factorize`` mapped to positions in ``order`` (-1 = not in the order or missing)."""
    position = {name: i for i, name in enumerate(order)}
    lookup = np.array([position.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
    return lookup[np.asarray(raw, dtype=np.int64)]  # raw -1 (missing) picks the trailing -1


def _prepare(
    table: pd.DataFrame, *, metric: str, paired: bool, algorithms: Sequence[str] | None, datasets: Sequence[str] | None
) -> _Prepared:
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"the results table must be a pandas DataFrame, not {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"the results table lacks column(s) {', '.join(missing)}: it needs {', '.join(REQUIRED_COLUMNS)}"
        )
    is_metric = _equals(table["metric"], metric)
    sub = table if is_metric.all() else table[is_metric]
    if len(sub) == 0:
        found = sorted({str(m) for m in table["metric"].dropna().unique()})
        raise InputError(
            f"metric {metric!r} is not in the results table: use one of {found or 'none (table is empty)'}"
        )
    notes: list[str] = []
    a_raw, a_uniques = _factorize(sub["algorithm"])
    d_raw, d_uniques = _factorize(sub["dataset"])
    alg_found = sorted({str(x) for x in a_uniques})
    ds_found = sorted({str(x) for x in d_uniques})
    algs = _order(algorithms, alg_found, "algorithm")
    dsets = _order(datasets, ds_found, "dataset")
    if not algs or not dsets:
        raise InputError("the algorithm and dataset orders must each name at least one entry")
    extra_a = sorted(set(alg_found) - set(algs))
    extra_d = sorted(set(ds_found) - set(dsets))
    if extra_a:
        notes.append(f"rows of algorithm(s) not in the requested order were ignored: {_name_list(extra_a)}")
    if extra_d:
        notes.append(f"rows of dataset(s) not in the requested order were ignored: {_name_list(extra_d)}")

    a_code = _recode(a_raw, a_uniques, algs)
    d_code = _recode(d_raw, d_uniques, dsets)
    keep = (a_code >= 0) & (d_code >= 0)
    values = pd.to_numeric(sub["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    succeeded = _equals(sub["status"], SUCCEEDED)
    finite = np.isfinite(values)
    ok = keep & succeeded & finite
    bad_value = keep & succeeded & ~finite
    if bad_value.any():
        notes.append(
            f"{int(bad_value.sum())} succeeded run(s) report no finite value (NaN or infinite) for {metric!r}; "
            "they are treated as missing"
        )
    n_d, n_k = len(dsets), len(algs)
    failed = np.bincount((d_code * n_k + a_code)[keep & ~ok], minlength=n_d * n_k).reshape(n_d, n_k)
    n_not_ok = int((keep & ~succeeded).sum())
    if n_not_ok:
        worst = np.argsort(-failed, axis=None, kind="stable")[:5]
        cells = [f"{algs[i % n_k]} on {dsets[i // n_k]} ({int(failed.flat[i])})" for i in worst if failed.flat[i]]
        more = int((failed > 0).sum()) - len(cells)
        notes.append(
            f"{n_not_ok} run(s) failed or are missing and were left out of every test; most affected: "
            + ", ".join(cells)
            + (f" and {more} more cell(s)" if more > 0 else "")
        )

    rep = pd.to_numeric(sub["replicate"], errors="coerce").to_numpy(dtype=float)[ok]
    if np.isnan(rep).any():
        raise InputError(
            f"{int(np.isnan(rep).sum())} succeeded row(s) have no integer replicate: fix the results table"
        )
    seed = pd.to_numeric(sub["seed"], errors="coerce").to_numpy(dtype=float)[ok]
    seed = np.where(np.isnan(seed), -1.0, seed).astype(np.int64)
    rep = rep.astype(np.int64)
    d_ok, a_ok, v_ok = d_code[ok], a_code[ok], values[ok]

    if paired:
        order = np.lexsort((a_ok, seed, rep, d_ok))
        d_s, a_s, r_s, s_s = d_ok[order], a_ok[order], rep[order], seed[order]
        same_key = np.zeros(len(order), dtype=bool)
        same_key[1:] = (d_s[1:] == d_s[:-1]) & (r_s[1:] == r_s[:-1]) & (s_s[1:] == s_s[:-1])
        dup = np.zeros(len(order), dtype=bool)
        dup[1:] = same_key[1:] & (a_s[1:] == a_s[:-1])
        key_id = np.cumsum(~same_key) - 1
        first_key = np.full(n_d, 0, dtype=np.int64)
        if len(order):
            starts = np.flatnonzero(np.r_[True, d_s[1:] != d_s[:-1]])
            first_key[d_s[starts]] = key_id[starts]
        slot = key_id - first_key[d_s] if len(order) else key_id
    else:
        # one integer key (cell, replicate): a single stable sort gives slots and duplicates
        r_min = int(rep.min()) if len(rep) else 0
        span = (int(rep.max()) - r_min + 1) if len(rep) else 1
        cell = d_ok * n_k + a_ok
        order = np.argsort(cell * span + (rep - r_min), kind="stable")
        d_s, a_s, r_s, s_s = d_ok[order], a_ok[order], rep[order], seed[order]
        c_s = cell[order]
        same_cell = np.zeros(len(order), dtype=bool)
        same_cell[1:] = c_s[1:] == c_s[:-1]
        dup = np.zeros(len(order), dtype=bool)
        dup[1:] = same_cell[1:] & (r_s[1:] == r_s[:-1])
        idx = np.arange(len(order))
        group_start = np.maximum.accumulate(np.where(~same_cell, idx, 0)) if len(order) else idx
        slot = idx - group_start
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise InputError(
            f"{int(dup.sum())} duplicate row(s) for metric {metric!r}, e.g. {algs[a_s[i]]} on {dsets[d_s[i]]} "
            f"replicate {int(r_s[i])}: keep one row per algorithm x dataset x replicate x metric"
        )
    n_slots = int(slot.max()) + 1 if len(order) else 0
    x = np.full((n_d, n_k, n_slots), np.nan)
    x[d_s, a_s, slot] = v_ok[order]
    n = np.bincount(d_s * n_k + a_s, minlength=n_d * n_k).reshape(n_d, n_k)

    empty_algs = [algs[j] for j in np.flatnonzero(~n.any(axis=0))]
    if empty_algs:
        notes.append(f"no valid run at all for metric {metric!r}: {_name_list(empty_algs)}")
    empty_ds = [dsets[i] for i in np.flatnonzero(~n.any(axis=1))]
    if empty_ds:
        notes.append(f"dataset(s) without any valid run for metric {metric!r}: {_name_list(empty_ds)}")
    return _Prepared(metric, algs, dsets, x, n, failed, tuple(notes))


# ---------------------------------------------------------------------------------------------------
# per dataset
# ---------------------------------------------------------------------------------------------------


def _per_dataset_pairs(
    data: _Prepared, xs: np.ndarray, medians: np.ndarray, *, sign: float, paired: bool, alpha: float, notes: list[str]
) -> pd.DataFrame:
    algs, dsets = data.algorithms, data.datasets
    n_d, k = len(dsets), len(algs)
    ia, ib = np.triu_indices(k, 1)
    n_p = len(ia)
    total = n_d * n_p
    pd_ = np.repeat(np.arange(n_d), n_p)
    pa = np.tile(ia, n_d)
    pb = np.tile(ib, n_d)
    stat = np.full(total, np.nan)
    p = np.full(total, np.nan)
    u_larger = np.full(total, np.nan)  # U of a / (n_a n_b): P(a > b) + 0.5 P(a = b)
    method = np.full(total, None, dtype=object)
    note = np.full(total, None, dtype=object)
    special = np.zeros(total, dtype=bool)  # identical samples / all-zero differences
    if paired:
        x_a = data.x[pd_, pa, :] if total else np.empty((0, data.x.shape[-1]))
        x_b = data.x[pd_, pb, :] if total else np.empty((0, data.x.shape[-1]))
        both = ~np.isnan(x_a) & ~np.isnan(x_b)
        n_a = both.sum(axis=-1)
        n_b = n_a.copy()
    else:
        n_a = data.n[pd_, pa]
        n_b = data.n[pd_, pb]
    testable = (n_a > 0) & (n_b > 0)
    too_few: dict[tuple[int, int], list[int]] = {}

    with _quiet():
        if paired:
            diff = x_a - x_b
            keys = np.where(testable, n_a, -1)
            for size in np.unique(keys[testable]):
                idx = np.flatnonzero(keys == size)
                block = diff[idx]
                if size < block.shape[-1]:
                    block = np.sort(block, axis=-1)[:, :size]  # NaN last; wilcoxon is order-invariant
                st, pv, meth = _wilcoxon_batch(block)
                stat[idx], p[idx], method[idx] = st, pv, meth
                if minimal_p_wilcoxon(int(size)) >= alpha:
                    too_few.setdefault((int(size), int(size)), []).extend(np.unique(pd_[idx]).tolist())
                zero_all = np.all(block == 0, axis=-1)
                if zero_all.any():
                    note[idx[zero_all]] = "all paired differences are zero: no difference (p = 1)"
                    special[idx[zero_all]] = True
            # A12 on the paired values (pairing ignored), by direct comparison of all run pairs
            a_masked = np.where(both, x_a, np.nan)
            b_masked = np.where(both, x_b, np.nan)
            for chunk in _row_chunks(total, max(1, data.x.shape[-1] ** 2)):
                ga, gb = a_masked[chunk][:, :, None], b_masked[chunk][:, None, :]
                greater = np.sum(ga > gb, axis=(1, 2))
                equal = np.sum(ga == gb, axis=(1, 2))
                u_larger[chunk] = (greater + 0.5 * equal) / np.maximum(n_a[chunk] * n_b[chunk], 1)
            u_larger[~testable] = np.nan
        else:
            keys = np.where(testable, n_a * (xs.shape[-1] + 1) + n_b, -1)
            for key in np.unique(keys[testable]):
                idx = np.flatnonzero(keys == key)
                s_a, s_b = int(n_a[idx[0]]), int(n_b[idx[0]])
                block_a = xs[pd_[idx], pa[idx], :s_a]
                block_b = xs[pd_[idx], pb[idx], :s_b]
                u, pv, meth = _mwu_batch(block_a, block_b)
                stat[idx], p[idx], method[idx] = u, pv, meth
                u_larger[idx] = u / (s_a * s_b)
                if minimal_p_mannwhitneyu(s_a, s_b) >= alpha:
                    too_few.setdefault((s_a, s_b), []).extend(np.unique(pd_[idx]).tolist())
                half = np.flatnonzero(u == s_a * s_b / 2.0)
                if half.size and s_a == s_b:
                    same = np.all(block_a[half] == block_b[half], axis=-1)  # both sorted
                    note[idx[half[same]]] = "identical samples: no difference (p = 1)"
                    special[idx[half[same]]] = True

    for i in np.flatnonzero(~testable):
        a_name, b_name = algs[pa[i]], algs[pb[i]]
        if paired and data.n[pd_[i], pa[i]] and data.n[pd_[i], pb[i]]:
            note[i] = f"no seed with valid runs of both {a_name} and {b_name}: not tested"
        else:
            lacking = [nm for nm, c in ((a_name, data.n[pd_[i], pa[i]]), (b_name, data.n[pd_[i], pb[i]])) if c == 0]
            note[i] = f"no valid run of {' and '.join(lacking)} on this dataset: not tested"
    if (~testable).any():
        bad = sorted(set(pd_[~testable].tolist()))
        notes.append(
            f"{int((~testable).sum())} pair(s) could not be tested for lack of valid runs "
            f"(dataset(s) {_name_list([dsets[i] for i in bad])}); they are left out of Holm's correction"
        )
    if paired and testable.any():
        short = testable & ((n_a < data.n[pd_, pa]) | (n_b < data.n[pd_, pb]))
        if short.any():
            notes.append(
                f"{int(short.sum())} pair(s) have runs without a partner of the same seed; the Wilcoxon "
                "test uses only the seeds where both algorithms have a valid run"
            )

    _note_small_samples(too_few, dsets, paired=paired, alpha=alpha, notes=notes)

    p_holm = _holm_grouped(p, pd_, n_d)
    a12 = u_larger if sign > 0 else 1.0 - u_larger
    significant = np.nan_to_num(p_holm, nan=1.0) < alpha
    winner = np.full(total, None, dtype=object)
    med_a = medians[pd_, pa] if total else np.empty(0)
    med_b = medians[pd_, pb] if total else np.empty(0)
    med_diff = med_a - med_b
    a_better = significant & ((a12 > 0.5) | ((a12 == 0.5) & (sign * med_diff > 0)))
    b_better = significant & ((a12 < 0.5) | ((a12 == 0.5) & (sign * med_diff < 0)))
    alg_arr = np.array(algs, dtype=object)
    winner[a_better] = alg_arr[pa[a_better]]
    winner[b_better] = alg_arr[pb[b_better]]
    undecided = significant & ~a_better & ~b_better
    note[undecided] = "significant, but A12 = 0.5 and equal medians: no direction, no winner"

    # per-dataset notes on Holm and ties, aggregated
    if total and k > 2:
        m = np.bincount(pd_[testable], minlength=n_d)
        best_p = np.full(n_d, np.inf)
        if testable.any():
            pmin = _vector_min_p(n_a[testable], n_b[testable], paired)
            np.minimum.at(best_p, pd_[testable], pmin)
        hopeless = (m > 1) & (best_p < alpha)  # tested pairs exist and one test alone could reject
        hopeless[hopeless] = best_p[hopeless] * m[hopeless] >= alpha
        if hopeless.any():
            names = [dsets[i] for i in np.flatnonzero(hopeless)]
            mm = int(m[hopeless].max())
            notes.append(
                f"Holm's correction over {mm} pairs per dataset needs p < {alpha / mm:.3g} for a first rejection, but "
                f"the smallest p-value these sample sizes allow is {float(best_p[hopeless].min()):.3g}: no pair can be "
                f"significant on dataset(s) {_name_list(names)}; run more replicates"
            )
    _note_ties(xs, data, paired=paired, method=method, n_a=n_a, n_b=n_b, notes=notes)
    if special.any():
        names = _name_list([dsets[i] for i in np.unique(pd_[special])])
        if paired:
            notes.append(
                f"{int(special.sum())} pair(s) have only zero paired differences: p = 1, no winner (dataset(s) {names})"
            )
        else:
            notes.append(
                f"{int(special.sum())} pair(s) have identical samples (same values): p = 1, A12 = 0.5 "
                f"(dataset(s) {names})"
            )
    if undecided.any():
        notes.append(f"{int(undecided.sum())} significant pair(s) have A12 = 0.5 and equal medians: no winner named")

    frame = pd.DataFrame(
        {
            "dataset": np.array(dsets, dtype=object)[pd_] if total else np.empty(0, dtype=object),
            "a": alg_arr[pa] if total else np.empty(0, dtype=object),
            "b": alg_arr[pb] if total else np.empty(0, dtype=object),
            "test": np.where(testable, "wilcoxon" if paired else "mannwhitneyu", None).astype(object),
            "method": method,
            "n_a": n_a.astype(np.int64),
            "n_b": n_b.astype(np.int64),
            "statistic": stat,
            "p": p,
            "p_holm": p_holm,
            "a12": a12,
            "magnitude": _magnitude(a12),
            "median_a": med_a,
            "median_b": med_b,
            "median_diff": med_diff,
            "winner": winner,
            "significant": significant,
            "note": note,
        },
        columns=list(_PAIR_COLUMNS),
    )
    return frame


def _per_dataset_omnibus(
    data: _Prepared, xs: np.ndarray, *, paired: bool, alpha: float, notes: list[str]
) -> tuple[OmnibusResult, ...]:
    algs, dsets = data.algorithms, data.datasets
    n_d, k = len(dsets), len(algs)
    test_name = "friedmanchisquare" if paired else "kruskal"
    stat = np.full(n_d, np.nan)
    pval = np.full(n_d, np.nan)
    blocks = np.full(n_d, -1, dtype=np.int64)
    reason: list[str | None] = [None] * n_d
    included = data.n > 0
    too_few: dict[str, list[int]] = {}
    if k < 3:
        return tuple(
            OmnibusResult(
                d,
                None,
                None,
                None,
                False,
                tuple(a for a, c in zip(algs, data.n[i]) if c),
                None,
                "fewer than three algorithms: the pairwise test is the whole comparison",
            )
            for i, d in enumerate(dsets)
        )
    groups: dict[bytes, list[int]] = {}
    for i in range(n_d):
        inc = np.flatnonzero(included[i])
        if inc.size < 3:
            reason[i] = f"only {inc.size} algorithm(s) have valid runs here: no omnibus test"
            continue
        if paired:
            complete = np.all(~np.isnan(data.x[i][inc]), axis=0)
            nb = int(complete.sum())
            blocks[i] = nb
            if nb < 2:
                reason[i] = (
                    f"{nb} seed(s) with a valid run of every algorithm: the Friedman test needs at least two "
                    "complete blocks"
                )
                continue
            key = inc.astype(np.int64).tobytes() + b"|" + np.int64(nb).tobytes()
        else:
            key = inc.astype(np.int64).tobytes()
        groups.setdefault(key, []).append(i)
    with _quiet():
        for rows in groups.values():
            ds = np.asarray(rows)
            inc = np.flatnonzero(included[ds[0]])
            if paired:
                complete = np.all(~np.isnan(data.x[ds][:, inc, :]), axis=1)  # (G, S)
                nb = int(complete[0].sum())
                slots = np.nonzero(complete)[1].reshape(len(ds), nb)
                samples = [data.x[ds[:, None], a, slots] for a in inc]
                res = sps.friedmanchisquare(*samples, axis=-1)
                pmin = minimal_p_friedman(nb, inc.size)
                label = f"{nb} complete seed(s) are too few for the Friedman test over {inc.size} algorithms"
                stat[ds] = np.atleast_1d(res.statistic)
                pval[ds] = np.atleast_1d(res.pvalue)
                if pmin >= alpha:
                    too_few.setdefault(
                        f"{label} at α={alpha:g}: the smallest reachable p-value is {pmin:.3g}", []
                    ).extend(ds.tolist())
                continue
            # H does not depend on the order of the samples, so datasets whose failed runs hit different
            # algorithms share one call once each dataset's samples are ordered by size
            sizes = data.n[ds][:, inc]
            perm = np.argsort(sizes, axis=1, kind="stable")
            sorted_sizes = np.take_along_axis(sizes, perm, axis=1)
            _, sub_of, counts = np.unique(sorted_sizes, axis=0, return_inverse=True, return_counts=True)
            sub_of = np.asarray(sub_of).reshape(-1)
            # rare size patterns: one call with NaN padding and nan_policy='omit' (scipy then loops over the
            # slices, ~0.5 ms each) is cheaper than one batched call per pattern (~2 ms each)
            rare = counts[sub_of] < _KRUSKAL_MIN_BATCH
            if rare.any():
                rows_r = ds[rare]
                width = int(data.n[rows_r][:, inc].max())
                res = sps.kruskal(*[xs[rows_r, a, :width] for a in inc], axis=-1, nan_policy="omit")
                stat[rows_r] = np.atleast_1d(res.statistic)
                pval[rows_r] = np.atleast_1d(res.pvalue)
            for g in range(int(sub_of.max()) + 1):
                rows_g = np.flatnonzero(sub_of == g)
                sz = sorted_sizes[rows_g[0]]
                if counts[g] >= _KRUSKAL_MIN_BATCH:
                    alg_idx = inc[perm[rows_g]]  # (G, k): algorithm of the j-th smallest sample per dataset
                    samples = [xs[ds[rows_g], alg_idx[:, j], : int(sz[j])] for j in range(inc.size)]
                    res = sps.kruskal(*samples, axis=-1)
                    stat[ds[rows_g]] = np.atleast_1d(res.statistic)
                    pval[ds[rows_g]] = np.atleast_1d(res.pvalue)
                pmin = minimal_p_kruskal(sz.tolist())
                if pmin >= alpha:
                    label = (
                        f"{_sizes_text(sz)} run(s) per algorithm are too few for the Kruskal-Wallis test over "
                        f"{inc.size} algorithms at α={alpha:g}: the smallest reachable p-value is {pmin:.3g}"
                    )
                    too_few.setdefault(label, []).extend(ds[rows_g].tolist())
    for msg, rows in too_few.items():
        notes.append(f"{msg} (dataset(s) {_name_list([dsets[i] for i in rows])})")
    out: list[OmnibusResult] = []
    undefined: list[str] = []
    names_of: dict[bytes, tuple[str, ...]] = {}
    for i, d in enumerate(dsets):
        key = included[i].tobytes()
        if key not in names_of:
            names_of[key] = tuple(a for a, c in zip(algs, included[i]) if c)
        inc_names = names_of[key]
        nb = int(blocks[i]) if paired and blocks[i] >= 0 else None
        if reason[i] is not None:
            out.append(OmnibusResult(d, None, None, None, False, inc_names, nb, reason[i]))
            continue
        if not (np.isfinite(stat[i]) and np.isfinite(pval[i])):
            undefined.append(d)
            msg = (
                "every block ties all algorithms: the Friedman statistic is undefined (no difference)"
                if paired
                else "all values on this dataset are equal: the Kruskal-Wallis statistic is undefined (no difference)"
            )
            out.append(OmnibusResult(d, test_name, None, None, False, inc_names, nb, msg))
            continue
        out.append(
            OmnibusResult(d, test_name, float(stat[i]), float(pval[i]), bool(pval[i] < alpha), inc_names, nb, None)
        )
    if undefined:
        notes.append(
            f"omnibus test undefined because all values tie (no difference) on dataset(s) {_name_list(undefined)}"
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# across datasets
# ---------------------------------------------------------------------------------------------------


def across_datasets(cells: pd.DataFrame, *, goal: Goal, alpha: float = 0.05, aggregate: str = "mean") -> AcrossDatasets:
    """The across-dataset block on an already aggregated table (rows = datasets, columns = algorithms,
    NaN = no value): average ranks, Friedman, Iman-Davenport, Nemenyi CD, pairwise Wilcoxon with Holm.
    Rows with a NaN are excluded and listed. ``aggregate`` only labels the result."""
    if goal not in ("minimize", "maximize"):
        raise InputError(f"goal must be 'minimize' or 'maximize', not {goal!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha must be a number between 0 and 1 (exclusive), not {alpha!r}")
    try:
        values = cells.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError(f"the aggregated table must hold numbers only: {err}") from None
    values = np.where(np.isfinite(values), values, np.nan)
    across, _ = _across_datasets(
        values,
        ~np.isnan(values),
        tuple(str(c) for c in cells.columns),
        tuple(str(i) for i in cells.index),
        goal=goal,
        alpha=float(alpha),
        aggregate=aggregate,
    )
    return across


def _across_datasets(
    cell: np.ndarray,
    has_value: np.ndarray,
    algs: tuple[str, ...],
    dsets: tuple[str, ...],
    *,
    goal: str,
    alpha: float,
    aggregate: str,
) -> tuple[AcrossDatasets, pd.DataFrame]:
    k = len(algs)
    notes: list[str] = []
    complete = np.all(has_value, axis=1) if k else np.zeros(len(dsets), dtype=bool)
    used = tuple(d for d, c in zip(dsets, complete) if c)
    excluded = tuple(d for d, c in zip(dsets, complete) if not c)
    empty_ranks = pd.DataFrame(
        index=pd.Index(used, name="dataset"), columns=pd.Index(algs, name="algorithm"), dtype=float
    )

    def result(
        ranks: tuple[float, ...] | None,
        friedman: FriedmanResult | None,
        idr: ImanDavenportResult | None,
        nem: NemenyiResult | None,
        pairs: tuple[AcrossPair, ...],
        verdict: str,
    ) -> AcrossDatasets:
        return AcrossDatasets(aggregate, algs, used, excluded, ranks, friedman, idr, nem, pairs, verdict, tuple(notes))

    if excluded and k >= 2:
        parts = []
        for i in np.flatnonzero(~complete)[:10]:
            lacking = [a for a, c in zip(algs, has_value[i]) if not c]
            parts.append(f"{dsets[i]} (no valid run of {', '.join(lacking)})")
        more = len(excluded) - len(parts)
        notes.append(
            f"{len(excluded)} dataset(s) excluded from the across-dataset comparison because some algorithm "
            f"has no valid run there: " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
        )
    if k < 2:
        return result(None, None, None, None, (), "one algorithm only: no across-dataset comparison"), empty_ranks
    n = len(used)
    if n == 0:
        notes.append("no dataset has valid runs of every algorithm: the across-dataset comparison was skipped")
        return result(None, None, None, None, (), "no complete dataset: no across-dataset comparison"), empty_ranks
    values = cell[complete]  # (N, k)
    oriented = values if goal == "maximize" else -values
    ranks = sps.rankdata(-oriented, axis=1)
    avg = ranks.mean(axis=0)
    rank_frame = pd.DataFrame(ranks, index=pd.Index(used, name="dataset"), columns=pd.Index(algs, name="algorithm"))
    tied_blocks = int(np.sum(np.any(np.diff(np.sort(values, axis=1), axis=1) == 0, axis=1))) if k > 1 else 0
    if tied_blocks:
        notes.append(
            f"{tied_blocks} of {n} complete dataset(s) have tied cell values: tied algorithms get the average "
            "rank and the Friedman statistic is tie-corrected"
        )

    friedman = idr = None
    if k == 2:
        notes.append(
            "two algorithms: the Friedman and Iman-Davenport tests need three or more, so the Wilcoxon "
            "signed-rank test over datasets is the comparison"
        )
    if k >= 3:
        chi2_u = friedman_chi2_from_ranks(avg, n)
        if n < 2:
            friedman = FriedmanResult(
                None, None, chi2_u, k - 1, "one complete dataset: the Friedman test needs two or more"
            )
            idr = ImanDavenportResult(None, k - 1, 0, None, "one complete dataset: Iman-Davenport needs two or more")
        else:
            with _quiet():
                res = sps.friedmanchisquare(*values.T)
            chi2, fp = float(res.statistic), float(res.pvalue)
            if not (math.isfinite(chi2) and math.isfinite(fp)):
                friedman = FriedmanResult(
                    None,
                    None,
                    chi2_u,
                    k - 1,
                    "every dataset ties all algorithms: the Friedman statistic is undefined (no difference)",
                )
            else:
                friedman = FriedmanResult(chi2, fp, chi2_u, k - 1, None)
            pmin = minimal_p_friedman(n, k)
            if pmin >= alpha:
                notes.append(
                    f"{n} datasets are too few for the Friedman test over {k} algorithms at α={alpha:g}: the "
                    f"smallest reachable p-value is {pmin:.3g}"
                )
            if friedman.chi2 is not None:
                f_val, df1, df2, f_p = iman_davenport(friedman.chi2, n, k)
                f_note = None
                if math.isinf(f_val):
                    f_note = "every dataset ranks the algorithms identically: F is infinite and p = 0"
                idr = ImanDavenportResult(f_val, df1, df2, f_p, f_note)
            else:
                idr = ImanDavenportResult(None, k - 1, (k - 1) * (n - 1), None, friedman.note)
    nem = None
    if n >= 1:
        q05, q10, qa = _nemenyi_qs((0.05, 0.10, alpha), k)
        scale = math.sqrt(k * (k + 1) / (6.0 * n))
        nem = NemenyiResult(k, n, q05, q05 * scale, q10, q10 * scale, alpha, qa, qa * scale)

    ia, ib = np.triu_indices(k, 1)
    diffs = (values[:, ia] - values[:, ib]).T  # (P, N)
    with _quiet():
        w_stat, w_p, _ = _wilcoxon_batch(diffs)
    sign = 1.0 if goal == "maximize" else -1.0
    w_holm = _holm_grouped(w_p, np.zeros(len(w_p), dtype=np.int64), 1)
    signed = np.zeros(len(w_p))  # R+ - R- (zero differences cancel), needed for significant pairs only
    sig_rows = np.flatnonzero(np.nan_to_num(w_holm, nan=1.0) < alpha)
    if sig_rows.size:
        abs_ranks = sps.rankdata(np.abs(diffs[sig_rows]), axis=-1)
        signed[sig_rows] = np.sum(np.sign(diffs[sig_rows]) * abs_ranks, axis=-1)
    pmin = minimal_p_wilcoxon(n)
    if pmin >= alpha:
        notes.append(
            f"{n} dataset(s) are too few for the Wilcoxon signed-rank test over datasets at α={alpha:g}: the "
            f"smallest reachable p-value is {pmin:.3g}"
        )
    elif len(ia) > 1 and pmin * len(ia) >= alpha:
        notes.append(
            f"Holm's correction over {len(ia)} pairs needs p < {alpha / len(ia):.3g} for a first rejection, but "
            f"the smallest p-value the Wilcoxon test reaches on {n} datasets is {pmin:.3g}: no pair of "
            "algorithms can be significant over datasets; add datasets"
        )
    pairs: list[AcrossPair] = []
    zero_pairs = 0
    for j, (x, y) in enumerate(zip(ia, ib)):
        sig = bool(np.isfinite(w_holm[j]) and w_holm[j] < alpha)
        direction = sign * signed[j]
        winner = (algs[x] if direction > 0 else algs[y] if direction < 0 else None) if sig else None
        pnote = None
        if np.all(diffs[j] == 0):
            zero_pairs += 1
            pnote = "equal cell values on every dataset: no difference (p = 1)"
        elif sig and winner is None:
            pnote = "significant, but the signed ranks balance: no direction, no winner"
        nem_sig = bool(nem is not None and abs(avg[x] - avg[y]) > nem.cd_alpha)
        pairs.append(
            AcrossPair(
                algs[x],
                algs[y],
                _opt(w_stat[j]),
                _opt(w_p[j]),
                _opt(w_holm[j]),
                sig,
                winner,
                float(avg[x]),
                float(avg[y]),
                nem_sig,
                pnote,
            )
        )
    if zero_pairs:
        notes.append(f"{zero_pairs} pair(s) of algorithms have equal cell values on every complete dataset: p = 1")
    verdict = _verdict(algs, avg, friedman, idr, nem, pairs, alpha, n)
    return result(tuple(float(r) for r in avg), friedman, idr, nem, tuple(pairs), verdict), rank_frame


def _verdict(
    algs: tuple[str, ...],
    avg: np.ndarray,
    friedman: FriedmanResult | None,
    idr: ImanDavenportResult | None,
    nem: NemenyiResult | None,
    pairs: list[AcrossPair],
    alpha: float,
    n: int,
) -> str:
    best = [algs[i] for i in np.flatnonzero(np.isclose(avg, avg.min(), rtol=0, atol=1e-12))]
    lead = f"best average rank over {n} dataset(s): {' and '.join(best)} ({avg.min():.3f})"
    if len(algs) == 2:
        pair = pairs[0]
        if pair.significant and pair.winner:
            loser = pair.b if pair.winner == pair.a else pair.a
            return f"{lead}; Wilcoxon over datasets: {pair.winner} is significantly better than {loser} (p = {_fmt(pair.p)})"
        ptxt = f"p = {_fmt(pair.p)}" if pair.p is not None else "not testable"
        return f"{lead}; Wilcoxon over datasets: no significant difference ({ptxt}, α = {alpha:g})"
    if idr is None or idr.p is None:
        return f"{lead}; the omnibus test could not be computed (see notes)"
    if idr.p >= alpha:
        return (
            f"{lead}; no significant difference among the algorithms (Iman-Davenport p = {_fmt(idr.p)} ≥ α = "
            f"{alpha:g}); post-hoc differences are not interpreted"
        )
    top = best[0]
    beaten = [p.b if p.a == top else p.a for p in pairs if top in (p.a, p.b) and p.nemenyi_significant]
    text = f"{lead}; the algorithms differ (Iman-Davenport p = {_fmt(idr.p)} < α = {alpha:g})"
    if nem is not None:
        if beaten:
            text += f"; by Nemenyi (CD = {nem.cd_alpha:.3f}) {top} is significantly better than {_name_list(beaten)}"
        else:
            text += f"; by Nemenyi (CD = {nem.cd_alpha:.3f}) {top} is not significantly better than any other"
    return text


# ---------------------------------------------------------------------------------------------------
# vectorised scipy calls
# ---------------------------------------------------------------------------------------------------


def _mwu_batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``scipy.stats.mannwhitneyu(a[i], b[i])`` with scipy's per-pair choice of method."""
    rows, n1, n2 = a.shape[0], a.shape[-1], b.shape[-1]
    u = np.empty(rows)
    p = np.empty(rows)
    method = np.empty(rows, dtype=object)
    if n1 > _MWU_EXACT_MAX and n2 > _MWU_EXACT_MAX:
        parts = [(None, "asymptotic")]
    else:
        ties = _row_has_ties(np.concatenate([a, b], axis=-1))
        parts = [(np.flatnonzero(~ties), "exact"), (np.flatnonzero(ties), "asymptotic")]
    for idx, name in parts:
        for sel in _selections(idx, rows, n1 + n2):
            res = sps.mannwhitneyu(a[sel], b[sel], axis=-1)
            u[sel] = res.statistic
            p[sel] = res.pvalue
        method[slice(None) if idx is None else idx] = name
    return u, p, method


def wilcoxon_method(d: np.ndarray) -> str:
    """The method scipy's ``wilcoxon(d, method='auto')`` uses for the differences ``d`` of one pair,
    which is the one expkit uses: 'exact' for n <= 50 without zero differences or tied |d|,
    'permutation' (all 2**n sign flips) for n <= 13 with zeros or ties, else 'asymptotic'
    (tie-corrected normal approximation)."""
    d = np.asarray(d, dtype=float)
    if not (np.any(d == 0) or _row_has_ties(np.abs(d)[None, :])[0]):
        return "exact" if d.size <= _WILCOXON_EXACT_MAX else "asymptotic"
    return "permutation" if d.size <= _WILCOXON_PERMUTATION_MAX else "asymptotic"


def _wilcoxon_batch(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``scipy.stats.wilcoxon(d[i], zero_method='zsplit', method='auto')``: the statistic and
    the p-value of scipy's choice for each row alone (see :func:`wilcoxon_method`). Rows scipy would
    give a permutation test get the same p-value from :func:`_signed_rank_permutation_p`.

    ``wilcoxon(x, y)`` computes ``d = x - y`` first, so passing the differences is the same call.
    """
    rows, n = d.shape[0], d.shape[-1]
    stat = np.full(rows, np.nan)
    p = np.full(rows, np.nan)
    method = np.full(rows, None, dtype=object)
    if rows == 0 or n == 0:
        return stat, p, method
    if n > _WILCOXON_EXACT_MAX:
        parts = [(None, "asymptotic")]
    else:
        flagged = np.any(d == 0, axis=-1) | _row_has_ties(np.abs(d))
        tied = "permutation" if n <= _WILCOXON_PERMUTATION_MAX else "asymptotic"
        parts = [(np.flatnonzero(~flagged), "exact"), (np.flatnonzero(flagged), tied)]
    for idx, name in parts:
        for sel in _selections(idx, rows, n):
            # The permutation rows' statistic (min(R+, R-)) does not depend on the method.
            res = sps.wilcoxon(
                d[sel], zero_method="zsplit", method="asymptotic" if name == "permutation" else name, axis=-1
            )
            stat[sel] = res.statistic
            p[sel] = _signed_rank_permutation_p(d[sel]) if name == "permutation" else res.pvalue
        method[slice(None) if idx is None else idx] = name
    return stat, p, method


def _signed_rank_permutation_p(d: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the signed-rank test (``zero_method='zsplit'``) from the exact null
    distribution of R+ over all 2**n sign flips of each row, given its (tied, averaged) ranks.

    This is what ``scipy.stats.wilcoxon(d, zero_method='zsplit', method=PermutationMethod())``
    computes by enumerating the flips (its ``method='auto'`` for n <= 13 with zeros or ties):
    p = min(1, 2 min(P(R+ <= r), P(R+ >= r))). Here the distribution comes from a dynamic program
    over doubled ranks, which are integers (average ranks are multiples of 1/2; the zeros' share
    of R+, half their rank sum, is the same constant for every flip and cancels out), so the
    comparisons are exact. A row with a NaN gets NaN."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    out = np.full(d.shape[0], np.nan)
    rows = np.flatnonzero(~np.isnan(d).any(axis=-1))
    n = d.shape[-1]
    per_call = max(1, _MAX_ELEMENTS_PER_CALL // (n * (n + 1) + 1))
    for start in range(0, rows.size, per_call):
        sel = rows[start : start + per_call]
        x = d[sel]
        ranks2 = np.rint(2 * sps.rankdata(np.abs(x), axis=-1)).astype(np.int64)
        # A zero's flip leaves R+ unchanged: weight 0 doubles every count, as scipy's enumeration does.
        weights = np.where(x != 0, ranks2, 0)
        observed = np.sum(np.where(x > 0, ranks2, 0), axis=-1)
        size = int(weights.sum(axis=-1).max()) + 1
        counts = np.zeros((sel.size, size))  # counts[r, s]: sign flips of row r whose R+ (doubled) is s
        counts[:, 0] = 1.0
        grid = np.arange(size)
        for j in range(n):
            src = grid[None, :] - weights[:, j, None]
            counts = counts + np.where(src >= 0, np.take_along_axis(counts, np.maximum(src, 0), axis=1), 0.0)
        cdf = np.cumsum(counts, axis=1)
        total = cdf[:, -1]  # 2 ** n, exact in floating point
        at_most = np.take_along_axis(cdf, observed[:, None], axis=1)[:, 0]
        below = np.where(observed > 0, np.take_along_axis(cdf, np.maximum(observed - 1, 0)[:, None], axis=1)[:, 0], 0.0)
        out[sel] = np.minimum(1.0, 2.0 * np.minimum(at_most, total - below) / total)
    return out


def _selections(idx: np.ndarray | None, rows: int, cost_per_row: int) -> Iterator[Any]:
    """Index selections of at most ~_MAX_ELEMENTS_PER_CALL elements; a plain slice when all rows fit."""
    per_call = max(1, _MAX_ELEMENTS_PER_CALL // max(1, cost_per_row))
    if idx is None:
        for start in range(0, rows, per_call):
            yield slice(start, min(rows, start + per_call))
        return
    if idx.size == 0:
        return
    if idx.size == rows and rows <= per_call:
        yield slice(None)
        return
    for start in range(0, idx.size, per_call):
        yield idx[start : start + per_call]


def _row_chunks(rows: int, cost_per_row: int) -> Iterator[slice]:
    per_call = max(1, 2_000_000 // max(1, cost_per_row))
    for start in range(0, rows, per_call):
        yield slice(start, min(rows, start + per_call))


def _row_has_ties(values: np.ndarray) -> np.ndarray:
    if values.shape[-1] < 2:
        return np.zeros(values.shape[:-1], dtype=bool)
    s = np.sort(values, axis=-1)
    return np.any(s[..., 1:] == s[..., :-1], axis=-1)


def _holm_grouped(p: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Holm adjustment within each group (NaN = not tested, left out of the family and kept NaN)."""
    out = np.full(p.shape, np.nan)
    if p.size == 0:
        return out
    valid = ~np.isnan(p)
    m = np.bincount(group[valid], minlength=n_groups)
    order = np.lexsort((np.where(valid, p, 2.0), group))
    g_sorted = group[order]
    p_sorted = p[order]
    starts = np.searchsorted(g_sorted, np.arange(n_groups))
    position = np.arange(p.size) - starts[g_sorted]
    scaled = np.minimum(1.0, (m[g_sorted] - position) * p_sorted)
    scaled = np.where(valid[order], scaled, 0.0)  # untested rows sit at the end of their group
    # running maximum within each group: one padded row per group, exact (no offsets)
    width = int(np.bincount(group, minlength=n_groups).max())
    table = np.zeros((n_groups, width))
    table[g_sorted, position] = scaled
    running = np.maximum.accumulate(table, axis=1)[g_sorted, position]
    adjusted = np.where(valid[order], running, np.nan)
    out[order] = adjusted
    return out


def _magnitude(a12: np.ndarray) -> np.ndarray:
    distance = np.round(np.abs(a12 - 0.5), 12)
    labels = np.full(a12.shape, None, dtype=object)
    ok = ~np.isnan(a12)
    labels[ok & (distance < A12_SMALL - 0.5 - 1e-12)] = "negligible"
    labels[ok & (distance >= A12_SMALL - 0.5 - 1e-12) & (distance < A12_MEDIUM - 0.5 - 1e-12)] = "small"
    labels[ok & (distance >= A12_MEDIUM - 0.5 - 1e-12) & (distance < A12_LARGE - 0.5 - 1e-12)] = "medium"
    labels[ok & (distance >= A12_LARGE - 0.5 - 1e-12)] = "large"
    return labels


@functools.lru_cache(maxsize=256)
def _nemenyi_qs(alphas: tuple[float, ...], k: int) -> tuple[float, ...]:
    """q_alpha for several alphas in one scipy call (the quantile costs a numerical integration)."""
    if k < 2:
        return tuple(math.nan for _ in alphas)
    unique = sorted(set(alphas))
    with _quiet():
        q = sps.studentized_range.ppf(1.0 - np.asarray(unique, dtype=float), k, np.inf) / math.sqrt(2.0)
    by_alpha = dict(zip(unique, np.atleast_1d(q).tolist()))
    return tuple(float(by_alpha[a]) for a in alphas)


def _nemenyi_q(alpha: float, k: int) -> float:
    return _nemenyi_qs((alpha,), k)[0]


def _sorted_quantile(xs: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolation quantile (numpy's default) of the first ``n`` values of sorted rows."""
    if xs.shape[-1] == 0:
        return np.full(n.shape, np.nan)
    pos = q * (np.maximum(n, 1) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n, 1) - 1)
    v_lo = np.take_along_axis(xs, lo[..., None], axis=-1)[..., 0]
    v_hi = np.take_along_axis(xs, hi[..., None], axis=-1)[..., 0]
    frac = pos - lo
    with _quiet():
        out = np.where(frac == 0, v_lo, v_lo + (v_hi - v_lo) * frac)
        if q == 0.5:
            out = np.where(frac == 0.5, (v_lo + v_hi) / 2.0, out)
    return np.where(n > 0, out, np.nan)


def _descriptives_frame(data: _Prepared, xs: np.ndarray) -> pd.DataFrame:
    n = data.n
    with _quiet():
        total = np.nansum(data.x, axis=-1)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        sq = np.nansum((data.x - mean[..., None]) ** 2, axis=-1)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
    q1 = _sorted_quantile(xs, n, 0.25)
    q3 = _sorted_quantile(xs, n, 0.75)
    med = _sorted_quantile(xs, n, 0.5)
    n_d, k = n.shape

    def flat(a: np.ndarray) -> np.ndarray:  # algorithm-major order
        return a.T.reshape(-1)

    return pd.DataFrame(
        {
            "algorithm": np.repeat(np.array(data.algorithms, dtype=object), n_d),
            "dataset": np.tile(np.array(data.datasets, dtype=object), k),
            "n": flat(n).astype(np.int64),
            "n_failed": flat(data.failed).astype(np.int64),
            "median": flat(med),
            "mean": flat(mean),
            "std": flat(std),
            "q1": flat(q1),
            "q3": flat(q3),
            "iqr": flat(q3 - q1),
        }
    )


# ---------------------------------------------------------------------------------------------------
# notes and helpers
# ---------------------------------------------------------------------------------------------------


def _note_small_samples(
    too_few: dict[tuple[int, int], list[int]], dsets: tuple[str, ...], *, paired: bool, alpha: float, notes: list[str]
) -> None:
    for (s_a, s_b), rows in sorted(too_few.items()):
        names = [dsets[i] for i in sorted(set(rows))]
        if paired:
            pmin = minimal_p_wilcoxon(s_a)
            notes.append(
                f"{s_a} paired replicate(s) are too few for a test at α={alpha:g}: the smallest p-value the "
                f"Wilcoxon signed-rank test can reach with {s_a} pairs is {pmin:.3g}, so no pair can be "
                f"significant (dataset(s) {_name_list(names)}); run more replicates"
            )
        else:
            pmin = minimal_p_mannwhitneyu(s_a, s_b)
            sizes = f"{s_a}" if s_a == s_b else f"{min(s_a, s_b)} and {max(s_a, s_b)}"
            notes.append(
                f"{sizes} replicate(s) are too few for a test at α={alpha:g}: the smallest p-value the "
                f"Mann-Whitney U test can reach with {s_a} vs {s_b} runs is {pmin:.3g}, so such pairs cannot "
                f"be significant (dataset(s) {_name_list(names)}); run more replicates"
            )


def _note_ties(
    xs: np.ndarray,
    data: _Prepared,
    *,
    paired: bool,
    method: np.ndarray,
    n_a: np.ndarray,
    n_b: np.ndarray,
    notes: list[str],
) -> None:
    if xs.size == 0:
        return
    if paired:
        permuted = method == "permutation"
        forced = (method == "asymptotic") & (n_a <= _WILCOXON_EXACT_MAX)
        if permuted.any() or forced.any():
            how = []
            if permuted.any():
                how.append(
                    f"{int(permuted.sum())} with at most {_WILCOXON_PERMUTATION_MAX} pairs get exact p-values "
                    "from all 2^n sign flips given the tied ranks (scipy's permutation test)"
                )
            if forced.any():
                how.append(
                    f"{int(forced.sum())} with more pairs use the tie-corrected normal approximation instead of "
                    "the exact distribution"
                )
            notes.append(
                f"{int(permuted.sum() + forced.sum())} pair(s) have zero or tied paired differences: ranks "
                "are averaged, zero differences split between R+ and R-; " + "; ".join(how)
            )
        return
    flat = xs.reshape(xs.shape[0], -1)
    s = np.sort(flat, axis=-1)
    tied = np.any((s[:, 1:] == s[:, :-1]) & ~np.isnan(s[:, 1:]), axis=-1)
    if not tied.any():
        return
    names = [data.datasets[i] for i in np.flatnonzero(tied)]
    text = (
        f"tied values occur on dataset(s) {_name_list(names)}: they get average ranks and the normal "
        "approximation is tie-corrected"
    )
    forced = (method == "asymptotic") & (np.minimum(n_a, n_b) <= _MWU_EXACT_MAX)
    if forced.any():
        text += (
            f"; {int(forced.sum())} small pair(s) with ties used the normal approximation instead of the exact "
            "test (scipy's choice)"
        )
    notes.append(text)


def _vector_min_p(n_a: np.ndarray, n_b: np.ndarray, paired: bool) -> np.ndarray:
    width = int(max(n_a.max(initial=0), n_b.max(initial=0))) + 1
    keys, inverse = np.unique(n_a.astype(np.int64) * width + n_b, return_inverse=True)
    mins = np.array(
        [
            minimal_p_wilcoxon(int(key // width))
            if paired
            else minimal_p_mannwhitneyu(int(key // width), int(key % width))
            for key in keys
        ]
    )
    return mins[np.asarray(inverse).reshape(-1)]


def _best_names(row: np.ndarray, algs: tuple[str, ...], goal: str) -> tuple[str, ...]:
    if row.size == 0 or np.all(np.isnan(row)):
        return ()
    best = np.nanmax(row) if goal == "maximize" else np.nanmin(row)
    return tuple(a for a, v in zip(algs, row) if v == best)


def _sizes_text(sizes: np.ndarray) -> str:
    uniq = sorted({int(s) for s in sizes})
    return str(uniq[0]) if len(uniq) == 1 else f"{uniq[0]}-{uniq[-1]}"


def _name_list(names: Sequence[str], limit: int = 8) -> str:
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _opt(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns on degenerate slices; those cases are reported in words, so silence the warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


# ---------------------------------------------------------------------------------------------------
# serialisation helpers
# ---------------------------------------------------------------------------------------------------


def _json_float(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _json_column(series: pd.Series) -> list[Any]:
    values = series.to_numpy()
    if values.dtype.kind == "f":
        return [v if math.isfinite(v) else None for v in values.tolist()]
    if values.dtype.kind in "iub":
        return values.tolist()
    out = []
    for v in values.tolist():
        if isinstance(v, float):
            out.append(v if math.isfinite(v) else None)
        elif isinstance(v, (np.floating, np.integer, np.bool_)):
            out.append(v.item())
        else:
            out.append(v)
    return out


def _omnibus_dict(o: OmnibusResult) -> dict[str, Any]:
    return {
        "test": o.test,
        "convention": CONVENTIONS[o.test] if o.test else None,
        "algorithms": list(o.algorithms),
        "n_blocks": o.n_blocks,
        "statistic": _json_float(o.statistic),
        "p": _json_float(o.p),
        "significant": o.significant,
        "note": o.note,
    }


def _across_dict(a: AcrossDatasets, alpha: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "aggregate": a.aggregate,
        "datasets": list(a.datasets),
        "excluded_datasets": list(a.excluded),
        "n_datasets": len(a.datasets),
        "ranks_convention": CONVENTIONS["ranks"],
        "average_ranks": (
            {name: float(r) for name, r in zip(a.algorithms, a.average_ranks)} if a.average_ranks is not None else None
        ),
        "friedman": None,
        "iman_davenport": None,
        "nemenyi": None,
        "pairwise": None,
        "verdict": a.verdict,
        "notes": list(a.notes),
    }
    if a.average_ranks is None:
        out["average_ranks_note"] = "no complete dataset or a single algorithm: no ranks"
    if a.friedman is not None:
        f = a.friedman
        out["friedman"] = {
            "test": "friedmanchisquare",
            "convention": CONVENTIONS["friedmanchisquare"],
            "chi2": _json_float(f.chi2),
            "p": _json_float(f.p),
            "chi2_uncorrected": _json_float(f.chi2_uncorrected),
            "df": f.df,
            "significant": bool(f.p is not None and f.p < alpha),
            "note": f.note,
        }
    if a.iman_davenport is not None:
        d = a.iman_davenport
        note = d.note
        out["iman_davenport"] = {
            "test": "iman_davenport",
            "convention": CONVENTIONS["iman_davenport"],
            "F": _json_float(d.f),
            "df1": d.df1,
            "df2": d.df2,
            "p": _json_float(d.p),
            "significant": bool(d.p is not None and d.p < alpha),
            "note": note,
        }
    if a.nemenyi is not None:
        nm = a.nemenyi
        out["nemenyi"] = {
            "test": "nemenyi",
            "convention": CONVENTIONS["nemenyi"],
            "k": nm.k,
            "n": nm.n,
            "critical_differences": [
                {"alpha": 0.05, "q": _json_float(nm.q_05), "cd": _json_float(nm.cd_05)},
                {"alpha": 0.10, "q": _json_float(nm.q_10), "cd": _json_float(nm.cd_10)},
                {"alpha": float(nm.alpha), "q": _json_float(nm.q_alpha), "cd": _json_float(nm.cd_alpha)},
            ],
        }
    if a.pairs:
        out["pairwise"] = {
            "test": "wilcoxon",
            "convention": CONVENTIONS["wilcoxon_over_datasets"],
            "holm": len(a.pairs) > 1,
            "holm_convention": CONVENTIONS["holm"],
            "pairs": [
                {
                    "a": p.a,
                    "b": p.b,
                    "statistic": p.statistic,
                    "p": p.p,
                    "p_holm": p.p_holm,
                    "significant": p.significant,
                    "winner": p.winner,
                    "rank_a": p.rank_a,
                    "rank_b": p.rank_b,
                    "nemenyi_significant": p.nemenyi_significant,
                    "note": p.note if p.note or p.p is not None else "not testable",
                }
                for p in a.pairs
            ],
        }
    return out


# ---------------------------------------------------------------------------------------------------
# terminal summary
# ---------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "<1e-300"
    return f"{value:.{digits}g}"


def _summary_lines(an: Analysis) -> list[str]:
    algs, dsets = an.algorithms, an.datasets
    direction = "higher is better" if an.goal == "maximize" else "lower is better"
    design = "paired by seed" if an.paired else "independent runs"
    lines = [f"Metric {an.metric!r} ({direction}): {len(algs)} algorithm(s) x {len(dsets)} dataset(s), {design}."]
    if len(algs) < 2:
        lines.append("Only one algorithm: nothing to compare.")
        lines.extend(_notes_block(an.notes))
        return lines
    test = "Wilcoxon signed-rank" if an.paired else "Mann-Whitney U"
    lines.append(
        f"Per dataset: {test} for every pair, Holm-corrected within the dataset, α = {an.alpha:g}; "
        f"effect size Vargha-Delaney A12."
    )
    frame = an._pairwise
    n_p = len(algs) * (len(algs) - 1) // 2
    sig = frame["significant"].to_numpy()
    winner = frame["winner"].to_numpy()
    a_col, b_col = frame["a"].to_numpy(), frame["b"].to_numpy()
    p_holm, a12 = frame["p_holm"].to_numpy(), frame["a12"].to_numpy()
    mags = frame["magnitude"].to_numpy()
    agg = an._aggregated
    for i, d in enumerate(dsets[:SUMMARY_MAX_DATASETS]):
        best = an.best_on(d)
        if not best:
            lines.append(f"  {d}: no valid runs")
            continue
        top = best[0]
        value = agg.loc[d, top]
        rows = range(i * n_p, (i + 1) * n_p)
        beaten, unsure = [], []
        for r in rows:
            if top not in (a_col[r], b_col[r]):
                continue
            other = b_col[r] if a_col[r] == top else a_col[r]
            if np.isnan(agg.loc[d, other]):
                continue
            if sig[r] and winner[r] == top:
                beaten.append(other)
            elif not (sig[r] and winner[r] == other):
                a12_top = a12[r] if a_col[r] == top else 1 - a12[r]
                unsure.append(f"{other} (p_holm={_fmt(p_holm[r])}, A12={_fmt(a12_top, 2)} {mags[r] or ''})".rstrip())
        others = int(np.sum(~np.isnan(agg.loc[d].to_numpy(dtype=float)))) - 1
        tie_text = f" (tied with {', '.join(best[1:])})" if len(best) > 1 else ""
        text = f"  {d}: best {top}{tie_text} ({an.aggregate} {_fmt(float(value), 4)})"
        if others <= 0:
            text += "; no other algorithm has runs here"
        elif len(beaten) == others:
            text += f"; significantly better than all {others} other(s)"
        else:
            if beaten:
                text += f"; significantly better than {len(beaten)} of {others}; not separable from "
            else:
                text += "; not significantly better than any other: "
            shown = unsure[:4]
            text += ", ".join(shown) + (f" and {len(unsure) - 4} more" if len(unsure) > 4 else "")
        omni = an.omnibus[i]
        if omni.test and omni.p is not None:
            label = "Friedman" if omni.test == "friedmanchisquare" else "Kruskal-Wallis"
            text += f"; {label} p={_fmt(omni.p)}"
        lines.append(text)
    if len(dsets) > SUMMARY_MAX_DATASETS:
        lines.append(f"  ... {len(dsets) - SUMMARY_MAX_DATASETS} more dataset(s) in stats.json")
    wtl = an.win_tie_loss()
    if len(wtl):
        totals = wtl.groupby("algorithm", sort=False)[["wins", "ties", "losses"]].sum()
        parts = [
            f"{a} {int(totals.loc[a, 'wins'])}/{int(totals.loc[a, 'ties'])}/{int(totals.loc[a, 'losses'])}"
            for a in algs
        ]
        lines.append("Significant pairwise wins/ties/losses summed over datasets and opponents: " + ", ".join(parts))
    lines.extend(_across_lines(an))
    lines.extend(_notes_block(an.notes))
    return lines


def _across_lines(an: Analysis) -> list[str]:
    ac = an.across
    n = len(ac.datasets)
    lines = [
        f"Across datasets ({n} complete dataset(s), cell = {ac.aggregate} over replicates"
        + (f", {len(ac.excluded)} excluded" if ac.excluded else "")
        + "):"
    ]
    if ac.average_ranks is None:
        lines.append(f"  {ac.verdict}")
        return lines
    order = np.argsort(np.asarray(ac.average_ranks), kind="stable")
    lines.append(
        "  average ranks (1 = best): " + ", ".join(f"{ac.algorithms[i]} {ac.average_ranks[i]:.3f}" for i in order)
    )
    if ac.friedman is not None:
        f = ac.friedman
        if f.chi2 is not None:
            text = (
                f"  Friedman χ² = {f.chi2:.3f} (tie-corrected; {f.chi2_uncorrected:.3f} uncorrected), p = {_fmt(f.p)}"
            )
        else:
            text = f"  Friedman: not computed ({f.note})"
        if ac.iman_davenport is not None and ac.iman_davenport.p is not None:
            d = ac.iman_davenport
            ftxt = "∞" if d.f is not None and math.isinf(d.f) else f"{d.f:.3f}"
            text += f"; Iman-Davenport F({d.df1}, {d.df2}) = {ftxt}, p = {_fmt(d.p)}"
        lines.append(text)
    if ac.nemenyi is not None and len(ac.algorithms) > 2:
        nm = ac.nemenyi
        text = f"  Nemenyi critical difference: {nm.cd_05:.3f} (α=0.05), {nm.cd_10:.3f} (α=0.10)"
        if nm.alpha not in (0.05, 0.10):
            text += f", {nm.cd_alpha:.3f} (α={nm.alpha:g})"
        nem_pairs = [f"{p.a} vs {p.b}" for p in ac.pairs if p.nemenyi_significant]
        text += "; rank differences above CD: " + (_name_list(nem_pairs, 10) if nem_pairs else "none")
        lines.append(text)
    sig_pairs = [p for p in ac.pairs if p.significant]
    label = "Wilcoxon signed-rank over datasets" + (" (Holm)" if len(ac.pairs) > 1 else "")
    if sig_pairs:
        shown = [
            f"{p.winner or p.a} > {(p.b if p.winner == p.a else p.a) if p.winner else p.b} (p_holm={_fmt(p.p_holm)})"
            for p in sig_pairs[:10]
        ]
        more = f" and {len(sig_pairs) - 10} more" if len(sig_pairs) > 10 else ""
        lines.append(f"  {label}: " + ", ".join(shown) + more)
    else:
        lines.append(f"  {label}: no significant difference")
    lines.append(f"  Verdict: {ac.verdict}")
    return lines


def _notes_block(notes: Sequence[str]) -> list[str]:
    if not notes:
        return []
    return ["Notes:"] + [f"  - {n}" for n in notes]

"""The result of the statistics, :class:`Analysis`, and :func:`analyze`, which computes it: per dataset,
pairwise and omnibus tests; across datasets, ranks and the tests of :mod:`~expkit.analysis.stats.across`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.stats.across import _across_datasets
from expkit.analysis.stats.bayes import (
    BAYES_THRESHOLD,
    BayesResult,
    bayes_family,
    bayes_lines,
    bayes_notes,
    bayes_pairs,
    bayes_record,
    check_rope,
    check_threshold,
)
from expkit.analysis.stats.bayes_local import LocalBayes, per_dataset_bayes
from expkit.analysis.stats.common import _best_names, _quiet
from expkit.analysis.stats.conventions import (
    CONVENTIONS,
    REFERENCES,
    SCHEMA,
    Aggregate,
    Failures,
    Goal,
    check_aggregate,
    check_alpha,
    check_failures,
    check_goal,
)
from expkit.analysis.stats.descriptives import _descriptives_frame, _sorted_quantile, float_range_notes, robust_mean
from expkit.analysis.stats.failures import _success_rates
from expkit.analysis.stats.omnibus import _per_dataset_omnibus
from expkit.analysis.stats.pairwise import _per_dataset_pairs
from expkit.analysis.stats.power import PowerResult, power_summary
from expkit.analysis.stats.prepare import _prepare, _Prepared
from expkit.analysis.stats.records import _across_dict, _descriptive_records, _per_dataset_records
from expkit.analysis.stats.results import AcrossDatasets, OmnibusResult
from expkit.analysis.stats.summary import (
    _across_lines,
    _dataset_lines,
    _headline,
    _method_line,
    _notes_block,
    _win_tie_loss_lines,
)
from expkit.analysis.stats.verdict import verdict_sentence
from expkit.analysis.stats.versus import _versus_best
from expkit.core.errors import InputError


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
    #: how failed runs entered the tests: 'penalize' (worst result) or 'exclude' (left out)
    failures: str = "penalize"
    #: what the replicates detect and what the default effect needs (None: fewer than two algorithms)
    power: PowerResult | None = None
    _success: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    #: the region of practical equivalence of the Bayesian test, in the metric's units (None: not given, 0 used)
    rope: float | None = None
    #: posterior probability at which the Bayesian test decides
    bayes_threshold: float = BAYES_THRESHOLD
    #: the Bayesian signed-rank tests over datasets (:mod:`~expkit.analysis.stats.bayes`) and which pairs
    bayes: tuple[BayesResult, ...] = ()
    bayes_rule: str = ""
    #: paired designs: the Bayesian signed-rank tests per dataset over the paired replicates
    #: (:mod:`~expkit.analysis.stats.bayes_local`), aligned with the rows of :attr:`pairwise`; None otherwise
    bayes_local: LocalBayes | None = None

    # -- tables -------------------------------------------------------------------------------------

    @property
    def pairwise(self) -> pd.DataFrame:
        """Per-dataset pairwise results, one row per dataset x pair (a before b in display order).

        Columns: dataset, a, b, test, method, n_a, n_b, statistic, p, p_holm, effect (the design's
        effect size: 'a12' for independent runs, 'rank_biserial' for paired runs), a12 (a vs b, > 0.5 =
        a better; with paired runs computed ignoring the pairing, for information) and its interval
        a12_low, a12_high (independent runs), rank_biserial (paired: (R+ - R-) / (n(n+1)/2) oriented by
        the goal, > 0 = a better) and rank_biserial_low, rank_biserial_high, magnitude (of the design's
        effect size), shift_hl (Hodges-Lehmann shift a - b in the metric's units, not oriented by the
        goal) with shift_low, shift_high, shift_confidence (the level the interval achieves) and
        shift_method ('exact' or 'asymptotic' critical value), median_a, median_b, median_diff (median a
        - median b), winner (None unless significant), significant, note (why a value is missing, or an
        edge case). Intervals are NaN when ``analyze(..., intervals=False)``.
        """
        return _copy(self._pairwise)

    def versus_best(self) -> pd.DataFrame:
        """Per algorithm x dataset (the order of :attr:`descriptives`): the best algorithm of the dataset
        (``vs_best``), the design's effect size of the algorithm against it with its interval, the
        Hodges-Lehmann shift algorithm - best with its interval, and Holm's p of the pair; NaN for the
        best itself."""
        return _versus_best(
            self._pairwise,
            self._aggregated,
            algorithms=self.algorithms,
            datasets=self.datasets,
            goal=self.goal,
            paired=self.paired,
        )

    @property
    def success_rates(self) -> pd.DataFrame:
        """Per dataset x pair: succeeded and failed runs of each side, Fisher's exact p, Holm within the
        dataset, significant, more_reliable (the algorithm that fails less often, when significant)."""
        return _copy(self._success)

    @property
    def descriptives(self) -> pd.DataFrame:
        """The :func:`describe` table of the analysed metric."""
        return _copy(self._descriptives)

    @property
    def aggregated(self) -> pd.DataFrame:
        """Cell values (mean or median over replicates): rows = datasets, columns = algorithms."""
        return _copy(self._aggregated)

    @property
    def ranks(self) -> pd.DataFrame:
        """Ranks (1 = best) on the complete datasets: rows = datasets, columns = algorithms."""
        return _copy(self._ranks)

    @property
    def excluded_datasets(self) -> tuple[str, ...]:
        """Datasets that are not complete (some algorithm has no value there): they have no average rank;
        those with two or more values still enter the Skillings-Mack test and the pairs over datasets
        (``across.incomplete``)."""
        return self.across.excluded

    def pairs_for(self, dataset: str) -> pd.DataFrame:
        """Pairwise rows of one dataset."""
        if dataset not in self.datasets:
            raise InputError(f"dataset {dataset!r} is not part of this analysis: use one of {list(self.datasets)}")
        frame = self._pairwise
        rows: pd.DataFrame = frame[frame["dataset"] == dataset].reset_index(drop=True)
        return rows

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
        table: pd.DataFrame = pd.DataFrame(
            rows, columns=["algorithm", "opponent", "wins", "ties", "losses", "untested"]
        )
        return table

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, deterministic dict for ``stats.json``: fixed key and list order, plain
        floats, no NaN or infinity (those are None with a note in the same record), no timestamps."""
        per_dataset = _per_dataset_records(
            self._pairwise,
            self._aggregated,
            self.omnibus,
            algorithms=self.algorithms,
            datasets=self.datasets,
            goal=self.goal,
            pair_test=self.pair_test,
            success=self._success,
            bayes_local=self.bayes_local,
        )
        return {
            "schema": SCHEMA,
            "metric": self.metric,
            "goal": self.goal,
            "paired": self.paired,
            "alpha": float(self.alpha),
            "aggregate": self.aggregate,
            "failures": self.failures,
            "algorithms": list(self.algorithms),
            "datasets": list(self.datasets),
            "conventions": dict(CONVENTIONS),
            "references": list(REFERENCES),
            "descriptives": _descriptive_records(self._descriptives),
            "per_dataset": per_dataset,
            "win_tie_loss": self.win_tie_loss().to_dict(orient="records"),
            "across_datasets": _across_dict(self.across, self.alpha),
            "power": self.power.to_dict() if self.power is not None else None,
            "bayesian": bayes_record(self.bayes, self.bayes_rule, self.rope, self.bayes_threshold),
            "bayesian_per_dataset": self.bayes_local.to_dict() if self.bayes_local is not None else None,
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        """A readable terminal summary: who wins where, which differences are significant, the
        across-dataset verdict, then the notes."""
        lines = [_headline(self.metric, self.goal, self.paired, self.algorithms, self.datasets)]
        if len(self.algorithms) < 2:
            return [*lines, "Only one algorithm: nothing to compare.", *_notes_block(self.notes)]
        lines.append(_method_line(self.paired, self.alpha))
        lines += _dataset_lines(
            self._pairwise,
            self._aggregated,
            self.omnibus,
            algorithms=self.algorithms,
            datasets=self.datasets,
            aggregate=self.aggregate,
            goal=self.goal,
        )
        lines += self.bayes_local.lines() if self.bayes_local is not None else []
        lines += _win_tie_loss_lines(self.win_tie_loss(), self.algorithms)
        lines += _across_lines(self.across)
        lines += bayes_lines(self.bayes, self.rope)
        return lines + _notes_block(self.notes)


# long: the analysis pipeline step by step (prepare, pairs, success rates, omnibus, across, power) in one place
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
    failures: Failures = "penalize",
    intervals: bool = True,
    control: str | None = None,
    rope: float | None = None,
    bayes_threshold: float = BAYES_THRESHOLD,
    bayes: bool = True,
) -> Analysis:
    """Compare the algorithms on ``metric``: per dataset, pairwise and omnibus; across datasets.

    ``goal`` says whether smaller or larger values are better; ``paired`` selects Wilcoxon/Friedman on
    runs matched by (replicate, seed) instead of Mann-Whitney/Kruskal-Wallis; ``aggregate`` is how
    replicates are summarised into one cell value for the across-dataset block; ``algorithms`` and
    ``datasets`` give the display order (default: sorted names found in the table). ``failures``:
    'penalize' counts a failed run as worse than every successful run of its dataset, 'exclude' leaves
    it out (with a warning when failure rates differ). ``intervals``: compute the Hodges-Lehmann shifts
    and the confidence intervals of the effect sizes (False skips them, for speed). ``control``: compare
    every algorithm with this one across datasets (Holm over k - 1 Wilcoxon tests), not every pair.
    ``rope``: the region of practical equivalence of the Bayesian signed-rank test over datasets, in the
    metric's units (None: ROPE 0, said in the notes); ``bayes_threshold``: the posterior probability at
    which it decides (default 0.95). Its clause joins the verdict sentence. With ``paired`` the same test
    also runs per dataset over the paired replicates (:attr:`Analysis.bayes_local`). ``bayes=False``
    skips both (for speed; the benchmark times them separately).
    Raises :class:`~expkit.core.errors.InputError` for unusable input (missing columns, unknown metric,
    bad option, duplicate rows).
    """
    goal, aggregate, alpha = check_goal(goal), check_aggregate(aggregate), check_alpha(alpha)
    failures = check_failures(failures)
    rope = None if rope is None else check_rope(rope)
    bayes_threshold = check_threshold(bayes_threshold)
    paired = bool(paired)
    penalty = None if failures == "exclude" else (-np.inf if goal == "maximize" else np.inf)
    data = _prepare(table, metric=metric, paired=paired, algorithms=algorithms, datasets=datasets, penalty=penalty)
    notes: list[str] = list(data.notes) + float_range_notes(data)
    if len(data.algorithms) < 2:
        notes.append(
            f"only one algorithm ({data.algorithms[0] if data.algorithms else 'none'}) has results: there is "
            "nothing to compare, so no test was run"
        )
    xs = np.sort(data.x, axis=-1)  # NaN last: valid values first in each cell
    medians = _sorted_quantile(xs, data.n, 0.5)
    sign = 1.0 if goal == "maximize" else -1.0
    pairwise = _per_dataset_pairs(
        data, xs, medians, sign=sign, paired=paired, alpha=alpha, notes=notes, intervals=intervals
    )
    success = _success_rates(data, alpha=alpha, policy=failures, notes=notes)
    omnibus = _per_dataset_omnibus(data, xs, paired=paired, alpha=alpha, notes=notes)
    cell = _cell_values(data, medians, aggregate, goal)
    across, ranks = _across_datasets(
        cell, data.n > 0, data.algorithms, data.datasets, goal=goal, alpha=alpha, aggregate=aggregate, control=control
    )
    notes.extend(across.notes)
    posterior: tuple[BayesResult, ...] = ()
    rule = ""
    if bayes:
        posterior, rule = _bayes(
            cell, data.algorithms, across, goal=goal, rope=rope, threshold=bayes_threshold, notes=notes
        )
    local = None
    if bayes and paired:
        local = per_dataset_bayes(
            data, cell, goal=goal, rope=rope, threshold=bayes_threshold, notes=notes, control=across.control
        )
    if posterior and across.pairs:
        clauses = {(r.a, r.b): r.clause() for r in posterior}
        across = replace(across, verdict=verdict_sentence(across, pair_clauses=clauses))
    power = _power(pairwise, paired=paired, k=len(data.algorithms), alpha=alpha, notes=notes)
    return Analysis(
        metric=metric,
        goal=goal,
        paired=paired,
        alpha=alpha,
        aggregate=aggregate,
        algorithms=data.algorithms,
        datasets=data.datasets,
        pair_test="wilcoxon" if paired else "mannwhitneyu",
        omnibus=omnibus,
        across=across,
        notes=tuple(notes),
        _pairwise=pairwise,
        _descriptives=_valid_descriptives(data, xs),
        _aggregated=pd.DataFrame(
            cell, index=pd.Index(data.datasets, name="dataset"), columns=pd.Index(data.algorithms, name="algorithm")
        ),
        _ranks=ranks,
        failures=failures,
        power=power,
        _success=success,
        rope=rope,
        bayes_threshold=bayes_threshold,
        bayes=posterior,
        bayes_rule=rule,
        bayes_local=local,
    )


def _copy(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame``, typed (pandas-stubs types ``DataFrame.copy()`` as Any)."""
    copied: pd.DataFrame = frame.copy()
    return copied


def _cell_values(data: _Prepared, medians: np.ndarray, aggregate: str, goal: str) -> np.ndarray:
    """The cell value of each dataset x algorithm: mean or median over its runs (NaN without runs).
    Penalised failed runs (+-inf in ``data.x``) count as the worst successful value of their dataset
    over all algorithms, so a mean stays finite and an algorithm that fails cannot gain from it."""
    x = data.x
    if data.penalized.any():
        finite = np.where(np.isfinite(x), x, np.nan)
        with _quiet():
            worst = np.nanmin(finite, axis=(1, 2)) if goal == "maximize" else np.nanmax(finite, axis=(1, 2))
        x = np.where(np.isinf(x), worst[:, None, None], x)
        if aggregate == "median":
            medians = _sorted_quantile(np.sort(x, axis=-1), data.n, 0.5)
    if aggregate == "median":
        return medians
    return robust_mean(x, data.n)  # finite for any finite values (computed scaled)


def _bayes(
    cell: np.ndarray,
    algorithms: tuple[str, ...],
    across: AcrossDatasets,
    *,
    goal: str,
    rope: float | None,
    threshold: float,
    notes: list[str],
) -> tuple[tuple[BayesResult, ...], str]:
    """The Bayesian signed-rank tests over datasets of the pairs :func:`bayes_family` picks, and the rule."""
    pairs, rule = bayes_family(algorithms, across.average_ranks, across.control)
    results = bayes_pairs(cell, algorithms, pairs, goal=goal, rope=rope, threshold=threshold)
    notes.extend(bayes_notes(results, rule, rope, threshold))
    return results, rule


def _power(pairwise: pd.DataFrame, *, paired: bool, k: int, alpha: float, notes: list[str]) -> PowerResult | None:
    """What the analysis' replicates detect (the median over tested pairs of the smaller sample size)
    and what A12 = 0.64 (or its paired analogue) needs, also as a note; None with fewer than two algorithms."""
    if k < 2:
        return None
    tested = pairwise["p"].notna().to_numpy()
    sizes = np.minimum(pairwise["n_a"].to_numpy(), pairwise["n_b"].to_numpy())[tested]
    replicates = int(np.floor(np.median(sizes))) if sizes.size else None
    power = power_summary(replicates, paired=paired, k=k, alpha=alpha)
    notes.append(power.sentence() + " (Noether 1987)")
    return power


def _valid_descriptives(data: _Prepared, xs: np.ndarray) -> pd.DataFrame:
    """The descriptives over the successful runs only (penalised failed runs are not values)."""
    valid = data.valid_only()
    return _descriptives_frame(valid, xs if valid is data else np.sort(valid.x, axis=-1))

"""The result of the statistics, :class:`Analysis`, and :func:`analyze`, which computes it: per dataset,
pairwise and omnibus tests; across datasets, ranks and the tests of :mod:`~expkit.analysis.stats.across`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.stats.across import _across_datasets
from expkit.analysis.stats.common import _best_names, _quiet
from expkit.analysis.stats.conventions import (
    CONVENTIONS,
    REFERENCES,
    SCHEMA,
    Aggregate,
    Goal,
    check_aggregate,
    check_alpha,
    check_goal,
)
from expkit.analysis.stats.descriptives import _descriptives_frame, _sorted_quantile
from expkit.analysis.stats.omnibus import _per_dataset_omnibus
from expkit.analysis.stats.pairwise import _per_dataset_pairs
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

    # -- tables -------------------------------------------------------------------------------------

    @property
    def pairwise(self) -> pd.DataFrame:
        """Per-dataset pairwise results, one row per dataset x pair (a before b in display order).

        Columns: dataset, a, b, test, method, n_a, n_b, statistic, p, p_holm, a12 (a vs b, > 0.5 = a
        better), magnitude, median_a, median_b, median_diff (median a - median b), winner (None unless
        significant), significant, note (why a value is missing, or an edge case).
        """
        return _copy(self._pairwise)

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
        """Datasets left out of the across-dataset block because some algorithm has no value there."""
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
        )
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
            "descriptives": _descriptive_records(self._descriptives),
            "per_dataset": per_dataset,
            "win_tie_loss": self.win_tie_loss().to_dict(orient="records"),
            "across_datasets": _across_dict(self.across, self.alpha),
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
        lines += _win_tie_loss_lines(self.win_tie_loss(), self.algorithms)
        lines += _across_lines(self.across)
        return lines + _notes_block(self.notes)


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
    goal, aggregate, alpha = check_goal(goal), check_aggregate(aggregate), check_alpha(alpha)
    paired = bool(paired)
    data = _prepare(table, metric=metric, paired=paired, algorithms=algorithms, datasets=datasets)
    notes: list[str] = list(data.notes)
    if len(data.algorithms) < 2:
        notes.append(
            f"only one algorithm ({data.algorithms[0] if data.algorithms else 'none'}) has results: there is "
            "nothing to compare, so no test was run"
        )
    xs = np.sort(data.x, axis=-1)  # NaN last: valid values first in each cell
    medians = _sorted_quantile(xs, data.n, 0.5)
    sign = 1.0 if goal == "maximize" else -1.0
    pairwise = _per_dataset_pairs(data, xs, medians, sign=sign, paired=paired, alpha=alpha, notes=notes)
    omnibus = _per_dataset_omnibus(data, xs, paired=paired, alpha=alpha, notes=notes)
    cell = _cell_values(data, medians, aggregate)
    across, ranks = _across_datasets(
        cell, data.n > 0, data.algorithms, data.datasets, goal=goal, alpha=alpha, aggregate=aggregate
    )
    notes.extend(across.notes)
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
        _descriptives=_descriptives_frame(data, xs),
        _aggregated=pd.DataFrame(
            cell, index=pd.Index(data.datasets, name="dataset"), columns=pd.Index(data.algorithms, name="algorithm")
        ),
        _ranks=ranks,
    )


def _copy(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame``, typed (pandas-stubs types ``DataFrame.copy()`` as Any)."""
    copied: pd.DataFrame = frame.copy()
    return copied


def _cell_values(data: _Prepared, medians: np.ndarray, aggregate: str) -> np.ndarray:
    """The cell value of each dataset x algorithm: mean or median over its valid runs (NaN without runs)."""
    if aggregate == "median":
        return medians
    with _quiet():
        return np.where(data.n > 0, np.nansum(data.x, axis=-1) / np.maximum(data.n, 1), np.nan)

"""Stage 4: collect a run from the store into tidy tables.

``collect`` reads every completed cell's ``run.json`` and ``result.json`` (concurrently where the
store can) and returns a :class:`Collected` with

* ``table`` — one row per cell × metric: ``algorithm, dataset, replicate, seed, metric, value,
  status, reason, attempts, duration_s, node, wall_s, cpu_s, max_rss_mb`` (the last three: what the
  cell's kept attempt used — wall time, CPU time user + system, peak resident memory in MB of 10^6
  bytes — from its ``run.json``'s ``resources``; empty where it was not measured). Failed cells and
  cells without a completion marker (``status`` ``failed`` / ``missing``) are rows with an empty
  value, never dropped;
* ``trajectories`` — one row per trajectory record × metric: ``algorithm, dataset, replicate,
  axis, x, metric, value`` (``axis`` is ``step``, ``budget`` or ``time``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from expkit.core.contract import RESULT_FILE, RUN_FILE, TRAJECTORY_AXES, parse_result
from expkit.core.errors import ArtifactError, InputError
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.records import cell_record_or_failure
from expkit.spec import Experiment, load_spec_text
from expkit.stores.base import RunStore, cell_prefix

if TYPE_CHECKING:
    from expkit.analysis.stats import Goal

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "algorithm",
    "dataset",
    "replicate",
    "seed",
    "metric",
    "value",
    "status",
    "reason",
    "attempts",
    "duration_s",
    "node",
    "wall_s",
    "cpu_s",
    "max_rss_mb",
]
TRAJECTORY_COLUMNS = ["algorithm", "dataset", "replicate", "axis", "x", "metric", "value"]


@dataclass(frozen=True)
class Collected:
    """A run read back from the store."""

    run_id: str
    experiment: Experiment
    manifest: dict[str, Any]
    table: pd.DataFrame
    trajectories: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)  # cell -> reason
    missing: tuple[str, ...] = ()  # cells without a completion marker
    code_versions: dict[str, list[str]] = field(default_factory=dict)  # code digest -> cells run under it
    #: secondary metric -> succeeded cells whose result.json lacks it (left out of that metric's tests)
    missing_metrics: dict[str, list[str]] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.experiment.spec.metric.name

    @property
    def goal(self) -> Goal:
        return self.experiment.spec.metric.goal

    @property
    def declared_metrics(self) -> list[tuple[str, Goal]]:
        """The spec's metrics with their goals, the primary first."""
        return [(m.name, m.goal) for m in self.experiment.spec.all_metrics]

    def goal_of(self, metric: str) -> Goal | None:
        """The goal the spec declares for ``metric`` (None: the spec does not list it)."""
        return next((g for name, g in self.declared_metrics if name == metric), None)

    @property
    def algorithms(self) -> list[str]:
        return [a.name for a in self.experiment.spec.algorithms]

    @property
    def datasets(self) -> list[str]:
        return [d.name for d in self.experiment.spec.datasets]

    @property
    def total(self) -> int:
        return len(self.algorithms) * len(self.datasets) * self.experiment.spec.replicates

    @property
    def partial(self) -> bool:
        """Some cells failed or have not finished (yet)."""
        return bool(self.failed or self.missing)

    @property
    def metrics(self) -> list[str]:
        return sorted(self.table["metric"].unique().tolist())


def collect(
    store: RunStore,
    run_ref: str,
    *,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Collected:
    """Read run ``run_ref`` (an id or ``latest``) from ``store`` into tidy tables."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    experiment = load_spec_text(store.spec_text(run_id)).experiment
    cells = build_matrix(experiment)
    done = store.completed_cells(run_id)
    keys = []
    for c in cells:
        if c.key in done:
            keys += [cell_prefix(run_id, c.key) + RUN_FILE, cell_prefix(run_id, c.key) + RESULT_FILE]
    if on_total:
        on_total(len(keys))
    blobs = store.read_many(keys, on_progress=on_progress)
    reader = _CellReader(experiment.spec.metric.name, tuple(m.name for m in experiment.spec.all_metrics[1:]))
    for c in cells:
        if c.key in done:
            prefix = cell_prefix(run_id, c.key)
            where = f"{store.url}/{prefix}{RUN_FILE}"
            reader.read(c, blobs.get(prefix + RUN_FILE), blobs.get(prefix + RESULT_FILE), where)
        else:
            reader.not_finished(c)
    table = pd.DataFrame.from_records(reader.table_rows(), columns=TABLE_COLUMNS)
    table = _ordered(table, experiment, ["algorithm", "dataset", "replicate", "metric"])
    trajectories = pd.DataFrame.from_records(reader.trajectory, columns=TRAJECTORY_COLUMNS)
    trajectories = _ordered(trajectories, experiment, ["algorithm", "dataset", "replicate", "axis", "metric", "x"])
    if reader.failed or reader.missing:
        log.info("run %s: %d failed, %d missing cells", run_id, len(reader.failed), len(reader.missing))
    return Collected(
        run_id,
        experiment,
        manifest,
        table,
        trajectories,
        reader.failed,
        tuple(reader.missing),
        reader.code_versions,
        reader.missing_metrics,
    )


#: A table row: the values of :data:`TABLE_COLUMNS`, in order.
_Row = tuple[Any, ...]
#: What a cell's rows say about it besides its metric: attempts, duration_s, node, wall_s, cpu_s, max_rss_mb.
_Facts = tuple[Any, Any, Any, Any, Any, Any]
_NO_FACTS: _Facts = (None, None, None, None, None, None)


def _cell_facts(record: dict[str, Any]) -> _Facts:
    """A ``run.json`` record's :data:`_Facts` (``resources`` as the local and Argo executors write it)."""
    found = record.get("resources")
    res: dict[str, Any] = found if isinstance(found, dict) else {}
    rss = res.get("max_rss_bytes")
    return (
        record.get("attempts"),
        record.get("duration_s"),
        record.get("node"),
        res.get("wall_s"),
        res.get("cpu_s"),
        round(rss / 1e6, 3) if isinstance(rss, int) else None,
    )


@dataclass
class _CellReader:
    """The rows of a run, gathered cell by cell (in matrix order). A failed or unfinished cell gets one
    row per metric name, so its rows are made once every cell is read and all names are known."""

    metric: str  # the spec's metric: failed cells get a row for it even if no cell reported it
    secondary: tuple[str, ...] = ()  # the spec's other metrics: a cell without one gets a 'missing' row for it
    rows: list[_Row] = field(default_factory=list)
    trajectory: list[tuple[str, str, int, str, float, str, float]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell -> reason
    missing: list[str] = field(default_factory=list)
    code_versions: dict[str, list[str]] = field(default_factory=dict)  # code digest -> cells
    missing_metrics: dict[str, list[str]] = field(default_factory=dict)  # secondary metric -> cells without it
    _pending: list[tuple[Cell, str, str, _Facts]] = field(default_factory=list)

    def not_finished(self, c: Cell) -> None:
        """A cell without a completion marker."""
        self.missing.append(c.key)
        self._pending.append((c, "missing", "not finished (no run.json)", _NO_FACTS))

    def read(self, c: Cell, run_json: bytes | None, result_json: bytes | None, where: str = RUN_FILE) -> None:
        """A completed cell: its metrics and trajectory, or why it failed (a ``run.json`` that is not
        a valid record, at ``where``, makes the cell failed with the reason)."""
        record = cell_record_or_failure(run_json, where, c.key)
        self.code_versions.setdefault(str(record.get("code_digest") or "unknown"), []).append(c.key)
        facts = _cell_facts(record)
        if record.get("status") != "succeeded":
            self._fail(c, str(record.get("reason") or "failed"), facts)
            return
        try:
            if result_json is None:
                raise ArtifactError("result.json is missing from a cell marked succeeded")
            doc = parse_result(result_json, self.metric)
        except ArtifactError as err:
            self._fail(c, str(err), facts)
            return
        for name, value in sorted(doc["metrics"].items()):
            self.rows.append(
                (
                    c.algorithm,
                    c.dataset,
                    c.replicate,
                    c.seed,
                    name,
                    float(value),
                    "succeeded",
                    None,
                    *facts,
                )
            )
        for name in self.secondary:
            if name not in doc["metrics"]:  # a missing secondary metric leaves this run out of its tests only
                self.missing_metrics.setdefault(name, []).append(c.key)
                reason = f"result.json lacks the secondary metric {name!r}"
                self.rows.append((c.algorithm, c.dataset, c.replicate, c.seed, name, np.nan, "missing", reason, *facts))
        for rec in doc.get("trajectory") or ():
            axes = [(a, rec[a]) for a in TRAJECTORY_AXES if isinstance(rec.get(a), (int, float))]
            for name, value in rec.items():
                if name in TRAJECTORY_AXES or value is None:
                    continue
                for axis, x in axes:
                    self.trajectory.append((c.algorithm, c.dataset, c.replicate, axis, float(x), name, float(value)))

    def _fail(self, c: Cell, reason: str, facts: _Facts) -> None:
        self.failed[c.key] = reason
        self._pending.append((c, "failed", reason, facts))

    def table_rows(self) -> list[_Row]:
        """The succeeded rows, then one row per failed or unfinished cell and metric name."""
        names = sorted({r[4] for r in self.rows} | {self.metric, *self.secondary})
        return self.rows + [
            (c.algorithm, c.dataset, c.replicate, c.seed, name, np.nan, status, reason, *facts)
            for c, status, reason, facts in self._pending
            for name in names
        ]


def select_metric(collected: Collected, metric: str | None) -> str:
    """The metric to analyse: the spec's, or ``metric`` when it exists in the results."""
    if metric is None:
        return collected.metric
    if metric not in collected.metrics:
        raise InputError(f"--metric {metric!r}: the run has no such metric; it has {', '.join(collected.metrics)}")
    return metric


def _ordered(df: pd.DataFrame, experiment: Experiment, by: list[str]) -> pd.DataFrame:
    """Sort in spec order (algorithms and datasets as listed), stable and reproducible."""
    out: pd.DataFrame
    if df.empty:
        out = df.reset_index(drop=True)
        return out
    algs = {a.name: i for i, a in enumerate(experiment.spec.algorithms)}
    dss = {d.name: i for i, d in enumerate(experiment.spec.datasets)}
    key = df.assign(_a=df["algorithm"].map(algs), _d=df["dataset"].map(dss))
    order = [("_a" if c == "algorithm" else "_d" if c == "dataset" else c) for c in by]
    out = key.sort_values(order, kind="mergesort").drop(columns=["_a", "_d"]).reset_index(drop=True)
    return out

"""Stage 4: collect a run from the store into tidy tables.

``collect`` reads every completed cell's ``run.json`` and ``result.json`` (concurrently where the
store can) and returns a :class:`Collected` with

* ``table`` — one row per cell × metric: ``algorithm, dataset, replicate, seed, metric, value,
  status, reason, attempts, duration_s, node``. Failed cells and cells without a completion marker
  (``status`` ``failed`` / ``missing``) are rows with an empty value, never dropped;
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

from expkit.core.contract import RESULT_FILE, RUN_FILE, TRAJECTORY_AXES, json_object_or_none, parse_result
from expkit.core.errors import ArtifactError, InputError
from expkit.runs.matrix import Cell, build_matrix
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

    @property
    def metric(self) -> str:
        return self.experiment.spec.metric.name

    @property
    def goal(self) -> Goal:
        return self.experiment.spec.metric.goal

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
    reader = _CellReader(experiment.spec.metric.name)
    for c in cells:
        if c.key in done:
            prefix = cell_prefix(run_id, c.key)
            reader.read(c, blobs.get(prefix + RUN_FILE), blobs.get(prefix + RESULT_FILE))
        else:
            reader.not_finished(c)
    table = pd.DataFrame.from_records(reader.table_rows(), columns=TABLE_COLUMNS)
    table = _ordered(table, experiment, ["algorithm", "dataset", "replicate", "metric"])
    trajectories = pd.DataFrame.from_records(reader.trajectory, columns=TRAJECTORY_COLUMNS)
    trajectories = _ordered(trajectories, experiment, ["algorithm", "dataset", "replicate", "axis", "metric", "x"])
    if reader.failed or reader.missing:
        log.info("run %s: %d failed, %d missing cells", run_id, len(reader.failed), len(reader.missing))
    return Collected(run_id, experiment, manifest, table, trajectories, reader.failed, tuple(reader.missing))


#: A table row: the values of :data:`TABLE_COLUMNS`, in order.
_Row = tuple[str, str, int, int, str, float, str, str | None, Any, Any, Any]


@dataclass
class _CellReader:
    """The rows of a run, gathered cell by cell (in matrix order). A failed or unfinished cell gets one
    row per metric name, so its rows are made once every cell is read and all names are known."""

    metric: str  # the spec's metric: failed cells get a row for it even if no cell reported it
    rows: list[_Row] = field(default_factory=list)
    trajectory: list[tuple[str, str, int, str, float, str, float]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell -> reason
    missing: list[str] = field(default_factory=list)
    _pending: list[tuple[Cell, str, str, Any, Any, Any]] = field(default_factory=list)

    def not_finished(self, c: Cell) -> None:
        """A cell without a completion marker."""
        self.missing.append(c.key)
        self._pending.append((c, "missing", "not finished (no run.json)", None, None, None))

    def read(self, c: Cell, run_json: bytes | None, result_json: bytes | None) -> None:
        """A completed cell: its metrics and trajectory, or why it failed."""
        record = json_object_or_none(run_json)
        if record is None:
            self._fail(c, "run.json is unreadable", None, None, None)
            return
        attempts, duration, node = record.get("attempts"), record.get("duration_s"), record.get("node")
        if record.get("status") != "succeeded":
            self._fail(c, str(record.get("reason") or "failed"), attempts, duration, node)
            return
        try:
            if result_json is None:
                raise ArtifactError("result.json is missing from a cell marked succeeded")
            doc = parse_result(result_json, self.metric)
        except ArtifactError as err:
            self._fail(c, str(err), attempts, duration, node)
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
                    attempts,
                    duration,
                    node,
                )
            )
        for rec in doc.get("trajectory") or ():
            axes = [(a, rec[a]) for a in TRAJECTORY_AXES if isinstance(rec.get(a), (int, float))]
            for name, value in rec.items():
                if name in TRAJECTORY_AXES or value is None:
                    continue
                for axis, x in axes:
                    self.trajectory.append((c.algorithm, c.dataset, c.replicate, axis, float(x), name, float(value)))

    def _fail(self, c: Cell, reason: str, attempts: Any, duration: Any, node: Any) -> None:
        self.failed[c.key] = reason
        self._pending.append((c, "failed", reason, attempts, duration, node))

    def table_rows(self) -> list[_Row]:
        """The succeeded rows, then one row per failed or unfinished cell and metric name."""
        names = sorted({r[4] for r in self.rows} | {self.metric})
        return self.rows + [
            (c.algorithm, c.dataset, c.replicate, c.seed, name, np.nan, status, reason, attempts, duration, node)
            for c, status, reason, attempts, duration, node in self._pending
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

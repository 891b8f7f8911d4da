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
from typing import Any

import numpy as np
import pandas as pd

from expkit.core.contract import RESULT_FILE, RUN_FILE, TRAJECTORY_AXES, json_object_or_none, parse_result
from expkit.core.errors import ArtifactError, InputError
from expkit.runs.matrix import build_matrix
from expkit.spec import Experiment, load_spec_text
from expkit.stores.base import RunStore, cell_prefix

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
    def goal(self) -> str:
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
    metric = experiment.spec.metric.name
    rows: list[tuple] = []
    traj_rows: list[tuple] = []
    failed: dict[str, str] = {}
    missing: list[str] = []
    pending_failed: list[tuple] = []
    for c in cells:
        prefix = cell_prefix(run_id, c.key)
        if c.key not in done:
            missing.append(c.key)
            pending_failed.append((c, "missing", "not finished (no run.json)", None, None, None))
            continue
        record = json_object_or_none(blobs.get(prefix + RUN_FILE))
        if record is None:
            failed[c.key] = "run.json is unreadable"
            pending_failed.append((c, "failed", failed[c.key], None, None, None))
            continue
        attempts, duration, node = record.get("attempts"), record.get("duration_s"), record.get("node")
        if record.get("status") != "succeeded":
            failed[c.key] = str(record.get("reason") or "failed")
            pending_failed.append((c, "failed", failed[c.key], attempts, duration, node))
            continue
        raw = blobs.get(prefix + RESULT_FILE)
        try:
            if raw is None:
                raise ArtifactError("result.json is missing from a cell marked succeeded")
            doc = parse_result(raw, metric)
        except ArtifactError as err:
            failed[c.key] = str(err)
            pending_failed.append((c, "failed", failed[c.key], attempts, duration, node))
            continue
        for name, value in sorted(doc["metrics"].items()):
            rows.append(
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
                    traj_rows.append((c.algorithm, c.dataset, c.replicate, axis, float(x), name, float(value)))
    metric_names = sorted({r[4] for r in rows} | {metric})
    for c, status, reason, attempts, duration, node in pending_failed:
        for name in metric_names:
            rows.append(
                (c.algorithm, c.dataset, c.replicate, c.seed, name, np.nan, status, reason, attempts, duration, node)
            )
    table = pd.DataFrame.from_records(rows, columns=TABLE_COLUMNS)
    table = _ordered(table, experiment, ["algorithm", "dataset", "replicate", "metric"])
    trajectories = pd.DataFrame.from_records(traj_rows, columns=TRAJECTORY_COLUMNS)
    trajectories = _ordered(trajectories, experiment, ["algorithm", "dataset", "replicate", "axis", "metric", "x"])
    if failed or missing:
        log.info("run %s: %d failed, %d missing cells", run_id, len(failed), len(missing))
    return Collected(run_id, experiment, manifest, table, trajectories, failed, tuple(missing))


def select_metric(collected: Collected, metric: str | None) -> str:
    """The metric to analyse: the spec's, or ``metric`` when it exists in the results."""
    if metric is None:
        return collected.metric
    if metric not in collected.metrics:
        raise InputError(f"--metric {metric!r}: the run has no such metric; it has {', '.join(collected.metrics)}")
    return metric


def _ordered(df: pd.DataFrame, experiment: Experiment, by: list[str]) -> pd.DataFrame:
    """Sort in spec order (algorithms and datasets as listed), stable and reproducible."""
    if df.empty:
        return df.reset_index(drop=True)
    algs = {a.name: i for i, a in enumerate(experiment.spec.algorithms)}
    dss = {d.name: i for i, d in enumerate(experiment.spec.datasets)}
    key = df.assign(_a=df["algorithm"].map(algs), _d=df["dataset"].map(dss))
    order = [("_a" if c == "algorithm" else "_d" if c == "dataset" else c) for c in by]
    return key.sort_values(order, kind="mergesort").drop(columns=["_a", "_d"]).reset_index(drop=True)

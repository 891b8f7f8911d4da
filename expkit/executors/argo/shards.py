"""How a run's cells are cut into pods (batches) and workflows (shards) — pure and deterministic.

* A **batch** is the replicates of one algorithm x dataset that one pod runs one after another
  (``kubernetes.cellsPerPod``, see :mod:`~expkit.executors.argo.podrunner`). Each (algorithm, dataset)'s
  replicates, sorted, are cut into consecutive chunks of ``cellsPerPod``.
* A **shard** is one Workflow object. A run with more cells than ``kubernetes.maxCellsPerWorkflow`` is
  submitted as several workflows under one run id, named ``<run-id>-s<k>`` (``k`` from 1, zero-padded to
  the width of the count). Batches are ordered replicate-major — chunk index, then dataset, then
  algorithm, in the spec's order — and shards take consecutive batches until the next would pass the
  limit, so a shard boundary never splits a batch and is the same on every render of the same spec.

See docs/argo.md ("Large runs") for the defaults and the size table that justifies them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from expkit.runs.matrix import build_matrix
from expkit.spec import Experiment

#: Cells per workflow unless ``kubernetes.maxCellsPerWorkflow`` says otherwise (docs/argo.md, "Large runs").
DEFAULT_MAX_CELLS_PER_WORKFLOW = 2000
#: ``cellsPerPod: auto`` aims at pods with at least this much work (pod start-up costs seconds).
AUTO_POD_SECONDS = 60.0
#: ... and at most this many cells in one pod.
AUTO_MAX_CELLS_PER_POD = 100


@dataclass(frozen=True)
class Batch:
    """The cells one pod runs: replicates of one algorithm x dataset, in order."""

    algorithm: str
    dataset: str
    replicates: tuple[int, ...]

    @property
    def keys(self) -> list[str]:
        """The cell keys ``alg/ds/rep``."""
        return [f"{self.algorithm}/{self.dataset}/{r}" for r in self.replicates]


def cells_per_pod(exp: Experiment) -> int:
    """``kubernetes.cellsPerPod`` as a number. ``auto``: enough runs of ``expectedRunTime`` for
    :data:`AUTO_POD_SECONDS` of work (at most :data:`AUTO_MAX_CELLS_PER_POD`), never more than fit in
    one ``spec.timeout``, never more than the replicates; 1 when a single run takes a minute or more."""
    k8s = exp.spec.kubernetes
    value = k8s.cellsPerPod if k8s is not None else None
    if value is None:
        return 1
    if value != "auto":
        return int(value)
    expected = max(float((k8s.expectedRunTime if k8s is not None else None) or 0.0), 0.001)
    n = min(math.ceil(AUTO_POD_SECONDS / expected), AUTO_MAX_CELLS_PER_POD)
    if exp.spec.timeout is not None:
        n = min(n, max(1, math.floor(exp.spec.timeout / expected)))
    return max(1, min(n, exp.spec.replicates))


def max_cells_per_workflow(exp: Experiment) -> int:
    """``kubernetes.maxCellsPerWorkflow``, or the default."""
    k8s = exp.spec.kubernetes
    value = k8s.maxCellsPerWorkflow if k8s is not None else None
    return int(value) if value is not None else DEFAULT_MAX_CELLS_PER_WORKFLOW


def plan_batches(exp: Experiment, keys: Sequence[str] | None = None) -> list[Batch]:
    """The pods of ``keys`` (cell keys; the whole matrix when None), replicate-major (see the module)."""
    per_pod = cells_per_pod(exp)
    spec = exp.spec
    if keys is None:
        keys = [c.key for c in build_matrix(exp)]
    reps: dict[tuple[str, str], list[int]] = {}
    for key in keys:
        alg, ds, rep = key.split("/")
        reps.setdefault((alg, ds), []).append(int(rep))
    alg_order = {a.name: i for i, a in enumerate(spec.algorithms)}
    ds_order = {d.name: i for i, d in enumerate(spec.datasets)}
    ordered: list[tuple[int, int, int, Batch]] = []
    for (alg, ds), values in reps.items():
        values = sorted(set(values))
        for chunk in range(0, len(values), per_pod):
            batch = Batch(alg, ds, tuple(values[chunk : chunk + per_pod]))
            ordered.append((chunk // per_pod, ds_order.get(ds, 0), alg_order.get(alg, 0), batch))
    ordered.sort(key=lambda t: t[:3])
    return [t[3] for t in ordered]


def plan_shards(exp: Experiment, keys: Sequence[str] | None = None) -> list[list[Batch]]:
    """The workflows of ``keys`` (the whole matrix when None): consecutive batches, each list at most
    ``maxCellsPerWorkflow`` cells (a batch is never split). One list when everything fits."""
    limit = max_cells_per_workflow(exp)
    shards: list[list[Batch]] = [[]]
    size = 0
    for batch in plan_batches(exp, keys):
        n = len(batch.replicates)
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(batch)
        size += n
    return shards


def shard_name(run_id: str, index: int, count: int) -> str:
    """The name of shard ``index`` (from 1) of ``count``: ``<run-id>-s<index>``, zero-padded."""
    return f"{run_id}-s{index:0{len(str(count))}d}"


#: Labels of a sharded run's workflows: which shard, of how many, of which submission (``run`` for the
#: run's first submission, ``retry-<token>`` for a retry).
LABEL_SHARD = "expkit.io/shard"
LABEL_SHARDS = "expkit.io/shards"
LABEL_SUBMISSION = "expkit.io/submission"


@dataclass(frozen=True)
class Shard:
    """One workflow of several of a run: ``index`` from 1 of ``count``, of submission ``submission``."""

    index: int
    count: int
    submission: str = "run"

    def name(self, run_id: str) -> str:
        """Its workflow's name (a retry's shards get names from the API server instead)."""
        return shard_name(run_id, self.index, self.count)

    def labels(self) -> dict[str, str]:
        """The labels that tie it to the other shards of its submission."""
        return {LABEL_SHARD: str(self.index), LABEL_SHARDS: str(self.count), LABEL_SUBMISSION: self.submission}


__all__ = [
    "AUTO_MAX_CELLS_PER_POD",
    "AUTO_POD_SECONDS",
    "DEFAULT_MAX_CELLS_PER_WORKFLOW",
    "LABEL_SHARD",
    "LABEL_SHARDS",
    "LABEL_SUBMISSION",
    "Batch",
    "Shard",
    "cells_per_pod",
    "max_cells_per_workflow",
    "plan_batches",
    "plan_shards",
    "shard_name",
]

"""The logs of a run's cells as the store keeps them (``<run-id>/runs/<cell>/log.txt``), for every store.

:func:`select_log_cells` picks the finished cells whose logs to show (``--cell``, ``--failed``, or per
algorithm, dataset and replicate), :func:`log_location` says where a cell's log is — a file path for a
directory store, the object's URL otherwise — and :func:`read_log` reads it. ``expkit logs`` and
``expkit show`` use them; for a run on Argo, ``expkit logs`` reads its pods while they exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.core.contract import LOG_FILE
from expkit.core.errors import InputError
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec_text
from expkit.stores.base import SPEC_KEY, ObjectNotFound, RunStore, cell_prefix

_CELL_FORMAT = "ALGORITHM/DATASET/REPLICATE"


@dataclass(frozen=True)
class LogCell:
    """A finished cell whose log to show: its key, status, reason (when failed) and where its log is."""

    cell: str
    status: str
    reason: str | None
    location: str


def parse_cell(text: str) -> tuple[str, str, int]:
    """``alg/ds/rep`` as (algorithm, dataset, replicate); :class:`InputError` for anything else."""
    parts = text.split("/")
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        raise InputError(f"--cell {text}: give a cell as {_CELL_FORMAT}, e.g. my-algorithm/my-dataset/0")
    return parts[0], parts[1], int(parts[2])


def log_location(store: RunStore, run_id: str, cell: str) -> str:
    """Where cell ``cell``'s log is: the file of a directory store, else ``<store url>/<key>``."""
    key = cell_prefix(run_id, cell) + LOG_FILE
    path = store.local_path(key)
    return str(path) if path is not None else f"{store.url.rstrip('/')}/{key}"


def select_log_cells(
    store: RunStore,
    run_id: str,
    *,
    cell: str | None = None,
    failed: bool = False,
    algorithm: str | None = None,
    dataset: str | None = None,
    replicate: int | None = None,
) -> list[LogCell]:
    """The finished cells of run ``run_id`` that match, in cell order. ``cell`` must name a cell of the run
    (:class:`InputError` otherwise, or when it has not finished); ``failed`` keeps the failed ones only."""
    records = store.checked_cell_records(run_id)  # lost outputs count as failed
    if cell is not None:
        algorithm, dataset, replicate = parse_cell(cell)
        _check_cell(store, run_id, cell, records)
    chosen = []
    for key, record in sorted(records.items(), key=lambda kv: _order(kv[0])):
        alg, ds, rep = key.split("/")
        if (algorithm and alg != algorithm) or (dataset and ds != dataset):
            continue
        if replicate is not None and rep != str(replicate):
            continue
        status = str(record.get("status") or "failed")
        if failed and status == "succeeded":
            continue
        reason = record.get("reason") if status != "succeeded" else None
        chosen.append(LogCell(key, status, reason, log_location(store, run_id, key)))
    return chosen


def _order(cell: str) -> tuple[str, str, int]:
    alg, ds, rep = cell.split("/")
    return alg, ds, int(rep) if rep.isdigit() else -1


def _check_cell(store: RunStore, run_id: str, cell: str, records: dict[str, dict[str, Any]]) -> None:
    """Refuse a ``--cell`` that is not a cell of the run, or has not finished."""
    if cell in records:
        return
    experiment = load_spec_text(store.spec_text(run_id), path=Path(f"{store.url}/{run_id}/{SPEC_KEY}")).experiment
    if any(c.key == cell for c in build_matrix(experiment)):
        raise InputError(f"--cell {cell}: it has not finished in run {run_id}, so it has no log yet")
    spec = experiment.spec
    algorithms = ", ".join(a.name for a in spec.algorithms)
    datasets = ", ".join(d.name for d in spec.datasets)
    raise InputError(
        f"--cell {cell}: run {run_id} has no such cell; its cells are {_CELL_FORMAT} with algorithms "
        f"{algorithms}, datasets {datasets} and replicates 0-{spec.replicates - 1}"
    )


def read_log(store: RunStore, run_id: str, cell: str) -> bytes | None:
    """The stored ``log.txt`` of ``cell`` (None when there is none)."""
    try:
        return store.get(cell_prefix(run_id, cell) + LOG_FILE)
    except ObjectNotFound:
        return None


__all__ = ["LogCell", "log_location", "parse_cell", "read_log", "select_log_cells"]

"""The executor plug point.

An executor turns cells into published results. The contract every executor keeps:

* :meth:`Executor.run_prepare` runs the spec's ``prepare`` command once before any cell, stores its
  log at ``<run-id>/prepare.log`` and raises :class:`~expkit.core.errors.ExecutionError` (with the log's
  tail) when it fails; then no cell runs.
* :meth:`Executor.execute` runs exactly the cells it is given, at most ``ctx.workers`` at a time.
  For every cell that finishes — succeeded or failed — it publishes the cell's outputs and its
  ``run.json`` record through :meth:`RunStore.publish_cell` (``run.json`` last). A cell whose run
  exits non-zero, times out, or leaves a missing or invalid ``result.json`` is published as
  *failed* with the reason; it is never dropped.
* It never publishes a half-finished cell. On interruption (Ctrl-C, SIGTERM) it stops every running
  process, publishes nothing more, and raises :class:`~expkit.core.errors.Interrupted`; the cells that
  were published stay, and a resume runs only the others.
* It reports progress through ``ctx.on_event`` and never prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from expkit.runs.matrix import Cell
from expkit.spec import Experiment
from expkit.stores.base import RunStore


@dataclass(frozen=True)
class CellEvent:
    """Progress of one cell: ``started``, ``retrying`` (an attempt failed, another follows) or ``finished``."""

    kind: Literal["started", "retrying", "finished"]
    cell: str
    status: Literal["succeeded", "failed"] | None = None
    reason: str | None = None
    attempt: int = 1


@dataclass
class RunContext:
    """What an executor needs to know about the run it executes."""

    run_id: str
    experiment: Experiment
    spec_dir: Path
    store: RunStore
    workers: int = 1
    on_event: Callable[[CellEvent], None] = field(default=lambda event: None)


@dataclass(frozen=True)
class CellOutcome:
    cell: str
    status: Literal["succeeded", "failed"]
    reason: str | None = None


class Executor(Protocol):
    """See the module docstring for the contract."""

    name: str

    def run_prepare(self, ctx: RunContext) -> None: ...

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]: ...

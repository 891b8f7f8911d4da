"""The executor plug point: what every executor promises whoever drives it.

An executor turns cells into published results. Its interface is a name and two methods
(:class:`Executor`, a runtime-checkable protocol). Whoever drives it — the runner
(:func:`expkit.runner.start_run` / :func:`~expkit.runner.resume_run`) or an executor's own front end
(``expkit submit`` / ``expkit retry`` for Argo) — first creates the run with the shared run-creation
code of :mod:`expkit.runs.manifest` (run id, resolved spec at ``<run-id>/experiment.yml``, manifest),
then hands the executor a :class:`RunContext` and the cells still to run.

The contract every executor keeps:

* **Prepare once, before any cell.** The spec's ``prepare`` command runs once before any cell of the
  session; when it fails, no cell runs. An executor that runs cells in this process runs it in
  :meth:`Executor.run_prepare`, stores its log at ``<run-id>/prepare.log`` and raises
  :class:`~expkit.core.errors.ExecutionError` (with the log's tail) when it fails. An executor whose cells
  run in a job it submits makes ``prepare`` that job's first step instead (Argo: the workflow's
  ``prepare`` task, which every cell task depends on); its ``run_prepare`` does nothing.
* **Exactly the cells given.** :meth:`Executor.execute` runs the cells it is given and no others. How
  many run at once: ``ctx.workers`` for a local executor; a cluster's scheduler within the spec's
  ``parallelism`` for Argo.
* **Every finished cell is published, failed ones too, never half.** For every cell that finishes —
  succeeded or failed — the cell's outputs and then its ``run.json`` record (the completion marker,
  last) reach the store: through :meth:`RunStore.publish_cell` for the local executor; for Argo the
  pods upload the outputs and the executor's sync writes ``run.json`` after them. A cell whose run exits
  non-zero, times out, or leaves a missing or invalid ``result.json`` is published as *failed* with the
  reason; it is never dropped. A half-finished cell is never published. What a run writes is untrusted
  input: a cell whose outputs cannot be read or published is published failed with the reason, and the
  other cells go on; only a failing store stops the session (a resume reruns the cells it did not record).
* **Interruption.** On Ctrl-C or SIGTERM the executor publishes nothing more and raises
  :class:`~expkit.core.errors.Interrupted`; the cells already published stay, and a resume (or, on
  Argo, ``expkit retry``) runs only the others. The local executor stops every running process first;
  a cluster's cells do not run in this process, so an asynchronous executor stops only its waiting and
  says how to stop the run (``expkit stop``) or collect it later.
* **Progress** goes through ``ctx.on_event`` (``started``, ``retrying``, ``finished`` after the cell is
  published); an executor never prints.

:meth:`Executor.execute` is honoured in one of two ways, and each executor says which:

* **synchronously** (:class:`~expkit.executors.local.LocalExecutor`; Argo's executor with ``wait=True``,
  the default): ``execute`` returns when every given cell has finished and is published, with one
  :class:`CellOutcome` per finished cell;
* **asynchronously** (Argo's executor with ``wait=False``, what ``expkit submit`` does): ``execute``
  returns as soon as the cells are handed to the scheduler, with the outcomes of the cells already
  published — none, for a fresh submission. The cells are published later, under the same rules, by the
  executor's sync (:func:`expkit.executors.argo.sync.sync_run`, run by ``expkit status``,
  ``expkit results`` and ``submit --watch``), and the run's manifest says ``submitted`` until then.

This is the shape of snakemake's executor interface (``run_job`` submits; a job's status arrives later)
and of kedro's runners (one ``run`` entry point, sequential or parallel behind it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from expkit.runs.cell import Cell
from expkit.stores.base import RunStore

if TYPE_CHECKING:  # a Slurm array task runs cells without loading the spec model
    from expkit.spec import Experiment

CellStatus = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class CellEvent:
    """Progress of one cell: ``started``, ``retrying`` (an attempt failed, another follows) or ``finished``."""

    kind: Literal["started", "retrying", "finished"]
    cell: str
    status: CellStatus | None = None
    reason: str | None = None
    attempt: int = 1


def _ignore(event: CellEvent) -> None:
    return None


@dataclass
class RunContext:
    """What an executor needs to know about the run it executes.

    ``manifest``: the run's manifest as the driver holds it, when it passes it. An executor that records
    facts of its own in the manifest (Argo: the cluster and its workflows) updates this dict and writes it
    to the store; without it, such an executor reads the manifest from the store.

    ``should_run``: when given, asked just before a cell starts; a cell it refuses is not started, not
    published and not returned (it stays missing). The runner's early stop uses it
    (:mod:`expkit.runner.canary`); an executor that hands all cells to a scheduler at once may ignore it.

    ``more_cells``: when given, called once for every given cell after it ended — with its outcome once it
    is published, or None when it was not run (refused by ``should_run``) — from the thread that called
    :meth:`Executor.execute`; the cells it returns are run in the same call, as if they had been given, and
    count toward its return value. Adaptive replicates use it to start a dataset's next wave as soon as its
    current wave is decided, while the workers go on with the other datasets' cells
    (:mod:`expkit.adaptive.driver`). The local executor honours it; an executor that hands all cells to a
    scheduler at once does not (:attr:`Executor.name` ``local`` is the one the adaptive driver runs through
    it; on Argo each wave is a workflow of its own).
    """

    run_id: str
    experiment: Experiment
    spec_dir: Path
    store: RunStore
    workers: int = 1
    on_event: Callable[[CellEvent], None] = field(default=_ignore)
    manifest: dict[str, Any] | None = None
    should_run: Callable[[Cell], bool] | None = None
    more_cells: Callable[[Cell, CellOutcome | None], Sequence[Cell]] | None = None


@dataclass(frozen=True)
class CellOutcome:
    """How one cell of the session ended (its published ``run.json`` says the rest)."""

    cell: str
    status: CellStatus
    reason: str | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs cells and publishes them into the run store; see the module docstring for the contract."""

    name: str

    def run_prepare(self, ctx: RunContext) -> None:
        """Make sure the spec's ``prepare`` command runs once before any cell (or do nothing when the job
        the executor submits runs it first)."""
        ...

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        """Run exactly ``cells`` of run ``ctx.run_id``; return the outcomes of the cells published by now."""
        ...


__all__ = ["CellEvent", "CellOutcome", "CellStatus", "Executor", "RunContext"]

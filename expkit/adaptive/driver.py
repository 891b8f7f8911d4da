"""Adaptive replicates, the driver: run replicates in waves into one run and record every decision.

A spec with an ``adaptive:`` block (:class:`expkit.spec.model.Adaptive`) has the matrix of the full design
(``max_replicates`` replicates, the seeds of the fixed design). :class:`Waves` chooses which of its cells
run: first ``min_replicates`` replicates of every algorithm on every dataset; when a dataset's wave has
finished, :func:`expkit.adaptive.sequential.decide_dataset` looks at it, and unless the dataset stopped the
next ``wave`` replicates of the algorithms still ``active`` there are added. Locally the waves go through
the runner and the local executor as one session (:class:`expkit.runner.driver.CellPlan`, the executor's
``more_cells`` hook): a dataset's next wave is queued the moment its current wave is decided, while the
workers go on with the other datasets' cells, so no worker waits for a decision. On Argo each wave is a
workflow of its own (:mod:`expkit.adaptive.argo`).

Every decision is a function of the stored cells alone, so a resumed run replays the decisions from the
store and gets the same ones (:meth:`Waves.first`): nothing is lost or run twice. The manifest's
``adaptive`` block records the configuration, every decision (wave, dataset, pairs with statistic, boundary
and decision), each dataset's state and the runs used against the fixed design's
(:func:`adaptive_summary`). ``expkit run --resume RUN --complete`` runs every missing cell of the full
design into the same run (:func:`resume_adaptive`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expkit.adaptive.records import MANIFEST_BLOCK, adaptive_summary, is_adaptive, is_completed
from expkit.core.errors import InputError
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.runner.driver import RunOutcome, resume_run, start_run
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.provenance import utc_now
from expkit.spec import Experiment, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore

if TYPE_CHECKING:  # the statistics (scipy) are imported when a decision is due, not by every command
    from expkit.adaptive.sequential import DatasetDecision, SequentialConfig

log = logging.getLogger(__name__)


def sequential_config(experiment: Experiment) -> SequentialConfig:
    """The sequential procedure's configuration for a spec with an ``adaptive:`` block."""
    from expkit.adaptive.sequential import SequentialConfig

    spec = experiment.spec
    a = spec.adaptive
    if a is None:
        raise InputError(f"experiment {experiment.metadata.name!r} has no 'adaptive:' block: it is not adaptive")
    return SequentialConfig(
        min_replicates=a.min_replicates,
        max_replicates=a.max_replicates,
        wave=a.wave,
        stop=a.stop,
        rope=a.rope,
        alpha=a.alpha,
        goal=spec.metric.goal,
        paired=spec.paired,
        control=a.control,
        spending=a.spending,
        gamma=a.gamma,
        futility=a.futility,
        eliminate=a.eliminate,
    )


@dataclass
class _Dataset:
    """Where a dataset is in its waves: the look (index into the looks), the algorithms still getting
    seeds, how many replicates each algorithm has in the design, and whether it stopped (and why)."""

    name: str
    look: int
    active: tuple[str, ...]
    reps: dict[str, int]
    stopped: bool = False
    reason: str = ""
    stuck: bool = False  # a cell of its wave was not run this session (early stop): it waits for a resume
    pending: set[str] = field(default_factory=set)


class Waves:
    """The cells of an adaptive run, wave by wave (a :class:`expkit.runner.driver.CellPlan`).

    ``first`` replays the decisions the stored cells allow (a new run has none) and returns the cells of
    every dataset's current wave that are not recorded; ``more`` is told of each cell that ended and, once a
    dataset's wave has all ended, decides and returns its next wave. Decisions and state go into the
    manifest's ``adaptive`` block as they are made. Used from one thread at a time (the executor's)."""

    def __init__(self, experiment: Experiment, config: SequentialConfig | None = None) -> None:
        self.experiment = experiment
        self.config = config or sequential_config(experiment)
        self.looks = tuple(self.config.looks())
        self.metric = experiment.spec.metric.name
        self.algorithms = tuple(a.name for a in experiment.spec.algorithms)
        self._cells = {c.key: c for c in build_matrix(experiment)}
        self._data: dict[str, _Dataset] = {}
        self._decisions: dict[tuple[str, int], dict[str, Any]] = {}
        self._recorded: set[str] = set()
        self._values: dict[str, float] = {}
        self._ctx: RunContext | None = None

    # -- the CellPlan protocol ---------------------------------------------------------------------
    def first(self, ctx: RunContext, cells: Sequence[Cell], done: set[str]) -> list[Cell]:
        """Replay the decisions the recorded cells ``done`` allow; the cells of the current waves to run."""
        self._ctx = ctx
        self._recorded = set(done)
        self._values = {}
        self._decisions = {}
        self._data = {
            d.name: _Dataset(d.name, 0, self.algorithms, dict.fromkeys(self.algorithms, self.looks[0]))
            for d in self.experiment.spec.datasets
        }
        todo: list[Cell] = []
        for name in self._data:
            todo += self._advance(name)
        self._write()
        return sorted(todo, key=lambda c: (c.replicate, self._order(c)))

    def more(self, cell: Cell, outcome: CellOutcome | None) -> list[Cell]:
        """The next wave of ``cell``'s dataset when ``cell`` ended its current wave (else nothing)."""
        state = self._data.get(cell.dataset)
        if state is None or cell.key not in state.pending:
            return []
        state.pending.discard(cell.key)
        if outcome is None:
            state.stuck = True  # not run (early stop or interruption): decided again on resume
        else:
            self._recorded.add(cell.key)
        if state.pending or state.stuck:
            return []
        todo = self._advance(cell.dataset)
        self._write()
        return todo

    def total(self) -> int:
        """The cells of the design so far: every wave of every dataset up to its current look."""
        return sum(sum(s.reps.values()) for s in self._data.values())

    # -- waves and decisions -----------------------------------------------------------------------
    def _order(self, cell: Cell) -> int:
        return list(self._data).index(cell.dataset) * len(self.algorithms) + self.algorithms.index(cell.algorithm)

    def _wave(self, state: _Dataset) -> list[Cell]:
        start = self.looks[state.look - 1] if state.look else 0
        n = self.looks[state.look]
        return [self._cells[f"{a}/{state.name}/{r}"] for r in range(start, n) for a in state.active]

    def _advance(self, name: str) -> list[Cell]:
        """Decide ``name``'s waves as far as the recorded cells allow; the missing cells of its current wave."""
        state = self._data[name]
        while not state.stopped:
            missing = [c for c in self._wave(state) if c.key not in self._recorded]
            if missing:
                state.pending = {c.key for c in missing}
                return missing
            decision = self._decide(state)
            if decision.stopped or state.look + 1 >= len(self.looks):
                state.stopped = True
                state.reason = decision.reason if decision.stopped else f"reached max_replicates ({self.looks[-1]})"
                state.active = ()
                return []
            state.look += 1
            state.active = tuple(a for a in self.algorithms if a in set(decision.active))
            for a in state.active:
                state.reps[a] = self.looks[state.look]
            if not state.active:
                state.stopped, state.reason = True, decision.reason or "no algorithm is still racing"
        return []

    def _decide(self, state: _Dataset) -> DatasetDecision:
        from expkit.adaptive.sequential import decide_dataset

        n = self.looks[state.look]
        values = self._read(state)
        decision = decide_dataset(state.name, values, n, self.config)
        record = dict(decision.record())
        record.setdefault("wave", state.look)
        record.setdefault("decided_at", utc_now())
        self._decisions[(state.name, state.look)] = record
        log.info("adaptive: %s after %d replicates: %s", state.name, n, decision.reason or "go on")
        return decision

    def _read(self, state: _Dataset) -> dict[str, list[float]]:
        """Each algorithm's metric on replicates 0.. of its design on the dataset (NaN: a failed run).
        An algorithm that stopped getting seeds has fewer than the others."""
        keys = [f"{a}/{state.name}/{r}" for a in self.algorithms for r in range(state.reps[a])]
        unread = [k for k in keys if k not in self._values]
        if unread and self._ctx is not None:
            records = self._ctx.store.cell_records(self._ctx.run_id, unread)
            for key in unread:
                self._values[key] = _metric_value(records.get(key), self.metric)
        return {
            a: [self._values.get(f"{a}/{state.name}/{r}", math.nan) for r in range(state.reps[a])]
            for a in self.algorithms
        }

    # -- the manifest ------------------------------------------------------------------------------
    def block(self) -> dict[str, Any]:
        """The manifest's ``adaptive`` block as of now."""
        c = self.config
        order = {d: i for i, d in enumerate(self._data)}
        decisions = [self._decisions[k] for k in sorted(self._decisions, key=lambda k: (order.get(k[0], 0), k[1]))]
        return {
            "procedure": "sequential (expkit.adaptive.sequential); per-dataset claims use its adjusted p-values",
            "config": {
                "min_replicates": c.min_replicates,
                "max_replicates": c.max_replicates,
                "wave": c.wave,
                "stop": c.stop,
                "rope": c.rope,
                "alpha": c.alpha,
                "control": c.control,
                "looks": list(self.looks),
            },
            "fixed_design_runs": len(self._cells),
            "runs": self.total(),
            "datasets": {
                s.name: {
                    "replicates": dict(s.reps),
                    "look": s.look,
                    "active": list(s.active),
                    "stopped": s.stopped,
                    "reason": s.reason,
                }
                for s in self._data.values()
            },
            "decisions": decisions,
        }

    def manifest(self) -> dict[str, Any]:
        """The run's manifest as :meth:`first` or :meth:`more` last wrote it (with the block)."""
        ctx = self._ctx
        if ctx is None:
            raise InputError("no run yet: call first() with the run's context before asking for its manifest")
        return ctx.manifest if ctx.manifest is not None else ctx.store.manifest(ctx.run_id)

    def _write(self) -> None:
        """Put the block into the run's manifest (the dict the runner holds) and store it."""
        ctx = self._ctx
        if ctx is None:
            return
        manifest = ctx.manifest if ctx.manifest is not None else ctx.store.manifest(ctx.run_id)
        previous = manifest.get(MANIFEST_BLOCK)
        block = self.block()
        if isinstance(previous, dict):  # what others keep in the block: completion, cells handed to workflows
            block.update({k: v for k, v in previous.items() if k not in block})
        manifest[MANIFEST_BLOCK] = block
        manifest["cells"] = block["runs"]
        ctx.store.put_json(f"{ctx.run_id}/{MANIFEST_KEY}", manifest)


def _metric_value(record: Mapping[str, Any] | None, metric: str) -> float:
    """A cell's metric from its ``run.json`` record; NaN for a failed run (or one without the metric)."""
    if not record or record.get("status") != "succeeded":
        return math.nan
    metrics = record.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


class _Complete:
    """Every missing cell of the full design (``--complete``); marks the adaptive run completed."""

    def __init__(self, n_cells: int) -> None:
        self.n_cells = n_cells

    def first(self, ctx: RunContext, cells: Sequence[Cell], done: set[str]) -> list[Cell]:
        """All the cells not recorded; the manifest says the run is being completed."""
        manifest = ctx.manifest if ctx.manifest is not None else ctx.store.manifest(ctx.run_id)
        block = manifest.get(MANIFEST_BLOCK)
        if isinstance(block, dict):
            block["completed_at"] = utc_now()
            block["runs_before_completion"] = block.get("runs")
        manifest["cells"] = self.n_cells
        ctx.store.put_json(f"{ctx.run_id}/{MANIFEST_KEY}", manifest)
        return list(cells)

    def more(self, cell: Cell, outcome: CellOutcome | None) -> list[Cell]:
        """Nothing: the full design is known."""
        return []

    def total(self) -> int:
        """The full design's cells."""
        return self.n_cells


@dataclass(frozen=True)
class Options:
    """What ``expkit run`` passes through to the runner (see :func:`expkit.runner.start_run`)."""

    workers: int | None = None
    executor: Executor | None = None
    on_event: Callable[[CellEvent], None] | None = None
    on_start: Callable[[str, int], None] | None = None
    canary: bool = False
    early_stop: bool = False
    on_notice: Callable[[str], None] | None = None


def start_adaptive(
    spec_path: str | Path, store: RunStore, *, overrides: Sequence[str] | Mapping[str, Any] = (), options: Options
) -> RunOutcome:
    """Start a new run of an adaptive spec: its waves run into the run as one session (:class:`Waves`)."""
    loaded = load_spec(spec_path, overrides)
    plan = Waves(loaded.experiment)
    return start_run(spec_path, store, overrides=overrides, plan=plan, **vars(options))


def resume_adaptive(
    run_ref: str,
    store: RunStore,
    *,
    spec_path: str | Path | None = None,
    rerun_failed: bool = False,
    allow_changes: bool = False,
    complete: bool = False,
    options: Options,
) -> RunOutcome:
    """Resume run ``run_ref``: an adaptive run goes on with its waves from the decisions the stored cells
    give (the same decisions as before: nothing is lost or repeated); with ``complete``, every missing cell
    of the full ``max_replicates`` design runs into it. A run that is not adaptive resumes as usual."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    where = Path(f"{store.url}/{run_id}/{SPEC_KEY}")
    experiment = load_spec_text(store.spec_text(run_id), path=where).experiment
    adaptive = experiment.spec.adaptive is not None and is_adaptive(manifest)
    if complete and not adaptive:
        raise InputError(
            f"--complete: run {run_id} is not an adaptive run (its spec has no 'adaptive:' block): "
            f"resume it with 'expkit run --resume {run_id}'"
        )
    plan: Waves | _Complete | None = None
    if complete or (adaptive and is_completed(manifest)):
        plan = _Complete(len(build_matrix(experiment)))
    elif adaptive:
        plan = Waves(experiment)
    return resume_run(
        run_id,
        store,
        spec_path=spec_path,
        rerun_failed=rerun_failed,
        allow_changes=allow_changes,
        plan=plan,
        **vars(options),
    )


__all__ = [
    "MANIFEST_BLOCK",
    "Options",
    "Waves",
    "adaptive_summary",
    "is_adaptive",
    "is_completed",
    "resume_adaptive",
    "sequential_config",
    "start_adaptive",
]

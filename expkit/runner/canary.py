"""Fail fast instead of burning the budget: canary cells, the early stop, and hints that match the cause.

A setup mistake — a mistyped command, a missing script, a script that cannot import its modules or
writes no ``result.json``, a metric name no run writes — fails every cell of a run alike. So before
fanning out, :func:`run_cells` runs one **canary** per algorithm (its first cell still to do: replicate 0
of the first dataset in a new run), and when a canary fails for such a reason it stops the run with one
line naming the cause and the fix (:class:`~expkit.core.errors.CanaryFailed`). The canaries are real
cells of the run: they are published like any other and never run again.

During the run, the **early stop** (:class:`EarlyStop`) watches each algorithm's first
:data:`EARLY_STOP_AFTER` finished cells: when they all failed the same way (the same kind, see
:func:`diagnose`), the algorithm's other cells are not started — they stay missing, so
``expkit run --resume`` runs them once the cause is fixed.

:func:`diagnose` reads the reason an executor recorded (:mod:`expkit.executors.local`,
:mod:`expkit.core.contract`) and says what kind of failure it is, whether it is a setup mistake that fails
every cell, whether the spec or the script is to blame, and the fix; :func:`failure_hint` turns the
failures of a run into the one next step that helps (fix the script, then ``--rerun-failed``; or fix the
spec, then a new run). :func:`smoke_test` runs the canaries of a spec without creating a run
(``expkit validate --smoke``).
"""

from __future__ import annotations

import difflib
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from expkit.core.contract import LOG_FILE
from expkit.core.errors import CanaryFailed
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.executors.local import LocalExecutor, log_tail
from expkit.runs.matrix import Cell, build_matrix
from expkit.spec import Experiment, LoadedSpec
from expkit.stores.base import cell_prefix

log = logging.getLogger(__name__)

#: An algorithm whose first this many finished cells all failed the same way is not scheduled any more.
EARLY_STOP_AFTER = 3

Blame = Literal["spec", "script", "run"]


@dataclass(frozen=True)
class Diagnosis:
    """What a recorded failure reason means.

    ``kind``: command-not-found, not-executable, missing-script, import-error, usage-error, no-result,
    missing-metric, bad-result (setup mistakes: every cell fails alike), timeout, crash or other.
    ``blame``: what to change — the ``spec`` (then start a new run: a resume keeps the stored spec), the
    ``script`` (then rerun the failed cells) or nothing known (``run``: look at the log). ``fix``: what to
    do, as a clause ("fix spec.command in experiment.yml (did you mean 'python'?)").
    """

    kind: str
    setup: bool
    blame: Blame
    fix: str


_SETUP_KINDS = frozenset(
    {
        "command-not-found",
        "not-executable",
        "missing-script",
        "import-error",
        "usage-error",
        "no-result",
        "missing-metric",
        "bad-result",
    }
)
_IMPORT = re.compile(r"\b(ModuleNotFoundError|ImportError|SyntaxError|IndentationError|TabError)\b:?(.*)")
_USAGE = re.compile(r": error: (unrecognized arguments|the following arguments are required|argument )")
_NO_FILE = re.compile(r"can't open file '([^']+)'")
_HAS = re.compile(r"\(it has (.*)\)\s*$")


def script_name(experiment: Experiment) -> str:
    """The file a run executes, as the user knows it: ``run.py`` of ``[python, run.py]``, else the command."""
    command = list(experiment.spec.command)
    if command and Path(command[0]).name.startswith("python") and len(command) > 1:
        if command[1] == "-m" and len(command) > 2:
            return f"the module {command[2]}"
        return command[1]
    return command[0] if command else "the script"


def diagnose(
    reason: str | None, *, experiment: Experiment, spec_file: str | Path, any_succeeded: bool = False
) -> Diagnosis:
    """What the failure ``reason`` of a cell of ``experiment`` (loaded from ``spec_file``) means and how to fix
    it; ``any_succeeded``: some cell of the run succeeded (then a missing metric is the script's doing)."""
    text = reason or ""
    script = script_name(experiment)
    spec = f"in {spec_file}"
    if text.startswith("command not found:"):
        command = text.split("'")[1] if text.count("'") >= 2 else ""
        close = difflib.get_close_matches(command, ["python", "python3"], n=1, cutoff=0.6)
        mean = f" (did you mean {close[0]!r}?)" if close and close[0] != command else ""
        return Diagnosis("command-not-found", True, "spec", f"fix spec.command {spec}{mean} or install the program")
    if text.startswith(("command not executable:", "cannot start ")):
        fix = f"make it executable (chmod +x) or name its interpreter in spec.command {spec}"
        return Diagnosis("not-executable", True, "spec", fix)
    found = _NO_FILE.search(text)
    if found:
        missing = Path(found.group(1)).name
        return Diagnosis("missing-script", True, "spec", f"create {missing} or fix spec.command/spec.args {spec}")
    found = _IMPORT.search(text)
    if found and found.group(1) in ("ModuleNotFoundError", "ImportError"):
        fix = f"install the missing module into expkit's Python environment (runs use it) or fix the import in {script}"
        return Diagnosis("import-error", True, "script", fix)
    if found:
        return Diagnosis("import-error", True, "script", f"fix the {found.group(1)} in {script}")
    if _USAGE.search(text):
        return Diagnosis("usage-error", True, "spec", f"make spec.args {spec} match the options {script} accepts")
    return _diagnose_result(text, experiment, spec, script, any_succeeded)


def _diagnose_result(text: str, experiment: Experiment, spec: str, script: str, any_succeeded: bool) -> Diagnosis:
    """The failures about ``result.json`` and how the process ended."""
    metric = experiment.spec.metric.name
    if "wrote no result.json" in text:
        fix = f"fix {script}: it must write result.json ({{'metrics': {{{metric!r}: ...}}}}) into $EXPKIT_OUTPUT_DIR"
        return Diagnosis("no-result", True, "script", fix)
    if "lacks the spec's metric" in text:
        if any_succeeded:
            fix = f"fix {script}: every run must write the metric {metric!r}"
            return Diagnosis("missing-metric", True, "script", fix)
        has = _HAS.search(text)
        names = re.findall(r"'([^']*)'", has.group(1)) if has else []
        close = difflib.get_close_matches(metric, names, n=1, cutoff=0.5)
        mean = f" (did you mean {close[0]!r}?)" if close else ""
        fix = f"set spec.metric.name {spec} to a metric the runs write{mean}"
        return Diagnosis("missing-metric", True, "spec", fix)
    if text.startswith("result.json"):
        return Diagnosis("bad-result", True, "script", f"fix what {script} writes into result.json")
    if text.startswith("timed out after"):
        return Diagnosis("timeout", False, "spec", f"raise spec.timeout {spec} or give the runs less work")
    if text.startswith(("exit code", "killed by signal")):
        return Diagnosis("crash", False, "script", f"fix {script}")
    return Diagnosis("other", False, "run", "find the cause in the cells' logs and fix it")


def _then(diagnosis: Diagnosis, run_id: str, spec_file: str | Path) -> str:
    """What to run after the fix: a new run when the spec changes (a resume keeps the stored spec), else the
    failed and missing cells again — with ``--allow-changes``, which records a change of the code or the
    environment in the run (the resume refuses to mix versions silently)."""
    if diagnosis.blame == "spec":
        return f"then start a new run: 'expkit run {spec_file}'"
    return f"then rerun what failed or is missing: 'expkit run --resume {run_id} --rerun-failed --allow-changes'"


def failure_hint(
    failed: Mapping[str, str], succeeded: int, *, run_id: str, experiment: Experiment, spec_file: str | Path
) -> str | None:
    """The next step after a run with failures (cell -> reason), matching the cause; None without failures."""
    if not failed:
        return None
    ok = succeeded > 0
    found = [diagnose(r, experiment=experiment, spec_file=spec_file, any_succeeded=ok) for r in failed.values()]
    pick = (
        next((d for d in found if d.blame == "script"), None)
        or next((d for d in found if d.blame == "run"), None)
        or found[0]
    )
    if pick.blame == "spec":  # a resume keeps the stored spec: only a new run uses the fixed one
        return f"{pick.fix}, {_then(pick, run_id, spec_file)}"
    return f"see why: 'expkit logs {run_id} --failed'; {pick.fix}, {_then(pick, run_id, spec_file)}"


def spec_file(loaded: LoadedSpec) -> Path:
    """The spec file ``loaded`` came from (for messages; ``experiment.yml`` in its directory when unknown)."""
    return loaded.path if loaded.path is not None else loaded.directory / "experiment.yml"


def pick_canaries(cells: Sequence[Cell]) -> list[Cell]:
    """One cell per algorithm: its first in ``cells`` (replicate-major: replicate 0 of the first dataset)."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        seen.setdefault(cell.algorithm, cell)
    return list(seen.values())


class EarlyStop:
    """Watches finished cells; an algorithm whose first :data:`EARLY_STOP_AFTER` finished cells all failed
    the same way is stopped: :meth:`should_run` is False for its cells from then on (thread-safe)."""

    def __init__(
        self,
        experiment: Experiment,
        spec_file: str | Path,
        after: int = EARLY_STOP_AFTER,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.experiment, self.spec_file, self.after = experiment, spec_file, after
        self.on_notice = on_notice  # told at once when an algorithm is stopped (else: a logged warning)
        self._first: dict[str, list[tuple[str, str]]] = {}  # algorithm -> (kind, reason) of its first cells
        self.stopped: dict[str, str] = {}  # algorithm -> the reason its first cells failed with
        self._lock = threading.Lock()

    def observe(self, event: CellEvent) -> None:
        """Count a finished cell toward its algorithm's first cells."""
        if event.kind != "finished":
            return
        algorithm = event.cell.split("/")[0]
        notice = None
        with self._lock:
            first = self._first.setdefault(algorithm, [])
            if len(first) >= self.after:
                return
            kind = "" if event.status == "succeeded" else self._kind(event.reason)
            first.append((kind, event.reason or "failed"))
            if len(first) == self.after and first[0][0] and all(k == first[0][0] for k, _ in first):
                self.stopped[algorithm] = first[0][1]
                notice = self._message(algorithm, first[0][1])
        if notice is not None:
            if self.on_notice is not None:
                self.on_notice(notice)
            else:
                log.warning("%s", notice)

    def _kind(self, reason: str | None) -> str:
        return diagnose(reason, experiment=self.experiment, spec_file=self.spec_file).kind

    def should_run(self, cell: Cell) -> bool:
        """Whether ``cell`` may still start (its algorithm is not stopped)."""
        with self._lock:
            return cell.algorithm not in self.stopped

    def messages(self) -> list[str]:
        """One line per stopped algorithm, saying why."""
        with self._lock:
            return [self._message(alg, reason) for alg, reason in sorted(self.stopped.items())]

    def _message(self, algorithm: str, reason: str) -> str:
        return (
            f"stopped scheduling {algorithm}: its first {self.after} runs all failed the same way ({reason}); "
            "its other runs were not started and stay missing"
        )


def run_cells(
    executor: Executor,
    ctx: RunContext,
    cells: Sequence[Cell],
    guard: EarlyStop | None,
    *,
    canary: bool,
    spec_file: str | Path,
    lost: Callable[[], BaseException | None] = lambda: None,
) -> list[CellOutcome]:
    """Run ``cells`` through ``executor``, with the early stop when a ``guard`` is given, and the canaries
    first when ``canary`` and the cells are more than the workers run at once (else they all run at once
    anyway, and waiting for the canaries would only add time). Raises
    :class:`~expkit.core.errors.CanaryFailed` (after the canaries are published) when a canary failed with
    a setup mistake: then no other cell is started. ``lost()``: why the session may not go on after the
    canaries (its lease was taken over), raised then."""
    if guard is not None:
        forward, watch = ctx.on_event, guard

        def on_event(event: CellEvent) -> None:
            forward(event)
            watch.observe(event)

        ctx = replace(ctx, on_event=on_event, should_run=guard.should_run)
    first = pick_canaries(cells) if canary and len(cells) > ctx.workers else []
    if len(first) == len(cells):  # nothing to fan out: the canaries would be the whole session
        first = []
    outcomes = list(executor.execute(ctx, first)) if first else []
    stop = _canary_stop(outcomes, ctx, spec_file)
    if stop is not None:
        raise CanaryFailed(stop)
    why = lost() if first else None
    if why is not None:
        raise why
    chosen = {c.key for c in first}
    outcomes += executor.execute(ctx, [c for c in cells if c.key not in chosen])
    return outcomes


def _canary_stop(outcomes: Sequence[CellOutcome], ctx: RunContext, spec_file: str | Path) -> str | None:
    """The one line that stops the run when a canary failed with a setup mistake; None otherwise."""
    any_ok = any(o.status == "succeeded" for o in outcomes)
    bad = []
    for o in outcomes:
        if o.status != "succeeded":
            d = diagnose(o.reason, experiment=ctx.experiment, spec_file=spec_file, any_succeeded=any_ok)
            if d.setup:
                bad.append((o, d))
    if not bad:
        return None
    o, d = bad[0]
    more = f" ({len(bad)} canaries failed: 'expkit show {ctx.run_id}')" if len(bad) > 1 else ""
    return (
        f"canary run {o.cell} failed: {o.reason}: {d.fix}, {_then(d, ctx.run_id, spec_file)}; "
        f"no other run was started{more}"
    )


@dataclass(frozen=True)
class SmokeResult:
    """How one canary of ``expkit validate --smoke`` ended: its metric value, or why it failed and the fix."""

    cell: str
    ok: bool
    metric: str
    value: float | None = None
    reason: str | None = None
    fix: str | None = None
    log_tail: str = ""


def smoke_test(
    loaded: LoadedSpec, *, workers: int = 1, on_event: Callable[[CellEvent], None] | None = None
) -> list[SmokeResult]:
    """Run the prepare step and the canary cells of ``loaded`` in a temporary store — no run is created —
    and say how each ended (``expkit validate --smoke``)."""
    from expkit.stores.filesystem import FileStore

    experiment = loaded.experiment
    cells = pick_canaries(build_matrix(experiment))
    run_id = f"{loaded.name}-smoke"
    with tempfile.TemporaryDirectory(prefix="expkit-smoke-") as tmp:
        store = FileStore(tmp)
        ctx = RunContext(
            run_id=run_id,
            experiment=experiment,
            spec_dir=loaded.directory,
            store=store,
            workers=max(1, min(workers, len(cells))),
            on_event=on_event or (lambda e: None),
        )
        executor = LocalExecutor()
        executor.run_prepare(ctx)
        outcomes = {o.cell: o for o in executor.execute(ctx, cells)}
        records = store.cell_records(run_id)
        any_ok = any(o.status == "succeeded" for o in outcomes.values())
        results = []
        for cell in cells:
            record = records.get(cell.key, {})
            if record.get("status") == "succeeded":
                value = (record.get("metrics") or {}).get(experiment.spec.metric.name)
                results.append(SmokeResult(cell.key, True, experiment.spec.metric.name, value=value))
                continue
            reason = record.get("reason") or "failed"
            d = diagnose(reason, experiment=experiment, spec_file=spec_file(loaded), any_succeeded=any_ok)
            tail = log_tail(Path(tmp) / cell_prefix(run_id, cell.key) / LOG_FILE, 5)
            metric = experiment.spec.metric.name
            results.append(SmokeResult(cell.key, False, metric, reason=reason, fix=d.fix, log_tail=tail))
    return results


__all__ = [
    "EARLY_STOP_AFTER",
    "Diagnosis",
    "EarlyStop",
    "SmokeResult",
    "diagnose",
    "failure_hint",
    "pick_canaries",
    "run_cells",
    "script_name",
    "smoke_test",
    "spec_file",
]

"""``expkit reproduce``: re-run an experiment (all of it, or a seeded sample) and compare the re-run
with the original (:func:`expkit.reproduce.verdict.compare_runs`).

The original is a bundle (its resolved spec is re-run with the bundle's own code, unpacked and checked
file by file — or, for a bundle without code, in a checkout of it) or a run in the store (a spec file
is re-run in its own directory). The reproduction (original, sample, spec directory) is recorded in
the re-run's manifest under ``reproduction`` before its cells run; differences between the original's
and the re-run's code or environment are reported as warnings (:func:`identity_warnings`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from expkit.analysis.collect import Collected, collect
from expkit.core.errors import ExpkitError, InputError
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.reproduce.bundle import Bundle, is_bundle_path, read_bundle
from expkit.reproduce.bundle_code import bundle_code_entries, materialize_code
from expkit.reproduce.comparison import Comparison
from expkit.reproduce.equivalence import DEFAULT_ALPHA, DEFAULT_MARGIN, check_alpha_margin, min_replicates
from expkit.reproduce.sides import collect_bundle, load_side
from expkit.reproduce.verdict import compare_runs
from expkit.runner import RunOutcome, start_run
from expkit.runs.code import code_diff, describe_list
from expkit.runs.environment import environment_diff
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.records import store_time
from expkit.spec import Experiment, load_spec
from expkit.stores.base import MANIFEST_KEY, RunStore

log = logging.getLogger(__name__)

#: Where ``expkit reproduce BUNDLE`` unpacks a bundle's code without ``--spec-dir`` (under the current directory).
REPRODUCE_DIR = "expkit-reproduce"


@dataclass(frozen=True)
class ReproduceOutcome:
    """What :func:`reproduce` did: the re-run, and its comparison with the original."""

    run: RunOutcome
    comparison: Comparison
    original: Collected
    rerun: Collected
    spec_dir: Path
    sample: tuple[str, ...] | None
    sample_seed: int | None
    warnings: tuple[str, ...] = ()


def sample_cells(experiment: Experiment, k: int, *, seed: int | None = None) -> tuple[str, ...]:
    """A seeded, reproducible sample of about ``k`` runs (cell keys ``alg/ds/rep``), in run-matrix order.

    The unit drawn is a (dataset, replicate) block with every algorithm, so the algorithms stay
    comparable by seed: ``ceil(k / n_algorithms)`` blocks, spread over the datasets as evenly as
    possible (which datasets get one more is drawn at random), replicates drawn without replacement.
    ``seed`` defaults to the spec's seed. ``k`` at or above the number of runs gives every run.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"--sample {k!r}: give the number of runs to re-run, at least 1")
    spec = experiment.spec
    algs = [a.name for a in spec.algorithms]
    dsets = [d.name for d in spec.datasets]
    reps = spec.replicates
    cells = build_matrix(experiment)
    if k >= len(cells):
        return tuple(c.key for c in cells)
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    blocks = min(math.ceil(k / len(algs)), len(dsets) * reps)
    base, extra = divmod(blocks, len(dsets))
    plus = set(rng.choice(len(dsets), size=extra, replace=False).tolist()) if extra else set()
    chosen: set[tuple[str, int]] = set()
    for i, d in enumerate(dsets):
        count = min(reps, base + (1 if i in plus else 0))
        for r in rng.choice(reps, size=count, replace=False).tolist():
            chosen.add((d, int(r)))
    return tuple(c.key for c in cells if (c.dataset, c.replicate) in chosen)


class _ReproductionExecutor:
    """Wraps an executor: runs only the sampled cells, in the directory that holds the experiment's code."""

    def __init__(self, inner: Executor, keep: frozenset[str] | None, spec_dir: Path | None) -> None:
        self.inner = inner
        self.keep = keep
        self.spec_dir = spec_dir
        self.name = inner.name

    def _ctx(self, ctx: RunContext) -> RunContext:
        return dataclasses.replace(ctx, spec_dir=self.spec_dir) if self.spec_dir is not None else ctx

    def run_prepare(self, ctx: RunContext) -> None:
        self.inner.run_prepare(self._ctx(ctx))

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        todo = [c for c in cells if self.keep is None or c.key in self.keep]
        return self.inner.execute(self._ctx(ctx), todo)

    def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            stop()


@dataclass(frozen=True)
class RunPlan:
    """What :func:`reproduce` is about to run for a bundle, shown to the user before anything runs: a
    bundle comes from someone else, and its command runs on this machine as this user."""

    source: Path
    command: tuple[str, ...]  # spec.command + spec.args, placeholders as written
    prepare: tuple[str, ...] | None
    env: tuple[str, ...]  # variables of this environment the spec passes on to its runs
    directory: Path
    runs: int
    unpacks: bool = False  # the bundle's code is unpacked into ``directory`` (and checked) first

    def lines(self) -> list[str]:
        """The plan in words, one line each."""
        lines = [f"{self.source} runs this command {self.runs} times, in {self.directory}, on this machine as you:"]
        lines.append(f"  {shlex.join(self.command)}")
        if self.unpacks:
            lines.append(f"with the bundle's code, unpacked into {self.directory} and checked against its sha256 first")
        if self.prepare:
            lines.append(f"and once before them: {shlex.join(self.prepare)}")
        if self.env:
            lines.append(f"passing on these variables of your environment: {', '.join(self.env)}")
        return lines


@dataclass(frozen=True)
class _Settings:
    """How to re-run and compare: the options of :func:`reproduce` that every path passes on."""

    sample: int | None
    workers: int | None
    seed: int | None
    executor: Executor | None
    on_event: Callable[[CellEvent], None] | None
    on_start: Callable[[str, int], None] | None
    alpha: float
    margin: float
    metric: str | None
    confirm: Callable[[RunPlan], bool] | None = None

    def sample_keys(self, experiment: Experiment) -> frozenset[str] | None:
        """The sampled runs' keys, or None to re-run every run."""
        return frozenset(sample_cells(experiment, self.sample, seed=self.seed)) if self.sample is not None else None

    def sample_seed(self, experiment: Experiment) -> int | None:
        """The seed the sample is drawn with (the spec's unless ``seed`` is given)."""
        return self.seed if self.seed is not None else experiment.spec.seed

    def wrap(self, keep: frozenset[str] | None, spec_dir: Path | None) -> _ReproductionExecutor:
        """The executor (local by default) restricted to ``keep``, running in ``spec_dir``."""
        return _ReproductionExecutor(self.executor or _local_executor(), keep, spec_dir)


def reproduce(
    source: str | Path,
    store: RunStore,
    *,
    original: str | Path | None = None,
    spec_dir: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    sample: int | None = None,
    workers: int | None = None,
    seed: int | None = None,
    executor: Executor | None = None,
    on_event: Callable[[CellEvent], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    metric: str | None = None,
    confirm: Callable[[RunPlan], bool] | None = None,
) -> ReproduceOutcome:
    """Re-run an experiment into ``store`` and compare the re-run with the original.

    ``source`` is a bundle (``.zip``: the bundle's run is the original and its resolved spec is
    re-run; a bundle that holds the run code has it unpacked into ``spec_dir`` — by default
    ``./expkit-reproduce/<run-id>/`` — or, when that directory already holds files, checked there
    (:func:`~expkit.reproduce.bundle_code.materialize_code`); a bundle without code runs in ``spec_dir``,
    a checkout of the code, by default the original's spec directory when it exists here) or a spec
    file (re-run with ``overrides`` in its own directory; the original is ``original`` — a run id or a
    bundle — or else the newest run in ``store`` with the same spec sha256). ``sample`` re-runs only a
    seeded sample of about that many runs (:func:`sample_cells`, ``seed`` defaults to the spec's seed)
    and the comparison is restricted to them. ``executor`` defaults to the local executor. For a bundle,
    ``confirm`` (when given) is shown the :class:`RunPlan` before anything runs; unless it returns True,
    nothing runs and :class:`~expkit.core.errors.ExpkitError` says so.
    """
    check_alpha_margin(alpha, margin)
    settings = _Settings(sample, workers, seed, executor, on_event, on_start, alpha, margin, metric, confirm)
    if is_bundle_path(source):
        if original is not None:
            raise InputError(
                f"{source} is a bundle and is the original itself; drop --original, or pass a spec file to re-run"
            )
        if overrides:
            raise InputError(
                "-p goes with a spec file: a bundle's spec already has the original run's overrides applied"
            )
        return _reproduce_bundle(read_bundle(source), spec_dir, store, settings)
    if str(source).lower().endswith(".zip"):
        raise InputError(f"{source}: no such bundle file; give a bundle written by 'expkit export' or a spec file")
    if spec_dir is not None:
        raise InputError("--spec-dir goes with a bundle; a spec file runs in its own directory")
    return _reproduce_spec(source, original, overrides, store, settings)


def _reproduce_spec(
    source: str | Path,
    original: str | Path | None,
    overrides: Sequence[str] | Mapping[str, Any],
    store: RunStore,
    s: _Settings,
) -> ReproduceOutcome:
    """Re-run a spec file (with ``overrides``) in its own directory and compare with ``original``."""
    loaded = load_spec(source, overrides)
    if original is not None:
        original_c = load_side(original, store)
    else:
        original_c = collect(store, _newest_run_of(store, loaded.sha256, str(source)))
    keep = s.sample_keys(loaded.experiment)
    wrapped = s.wrap(keep, None)
    info = _reproduction_info(original_c.run_id, s.sample, keep, s.sample_seed(loaded.experiment), loaded.directory)
    outcome = _run_annotated(
        lambda cb: start_run(
            source, store, overrides=overrides, workers=s.workers, executor=wrapped, on_event=s.on_event, on_start=cb
        ),
        store,
        info,
        s.on_start,
        spec_dir=None,
    )
    return _finish(outcome, store, original_c, keep, loaded.directory, loaded.experiment, s, list(loaded.warnings))


def _reproduce_bundle(bundle: Bundle, spec_dir: str | Path | None, store: RunStore, s: _Settings) -> ReproduceOutcome:
    """Re-run a bundle's resolved spec in the directory with the experiment's code and compare with its run."""
    warnings: list[str] = []
    original_c = collect_bundle(bundle)
    has_code = bool(bundle_code_entries(bundle))
    run_dir = _code_target(bundle, spec_dir) if has_code else _bundle_spec_dir(bundle, spec_dir, warnings)
    with tempfile.TemporaryDirectory(prefix="expkit-reproduce-") as tmp:
        spec_path = Path(tmp) / "experiment.yml"
        spec_path.write_text(bundle.spec_text, encoding="utf-8")
        loaded = load_spec(spec_path)
        keep = s.sample_keys(loaded.experiment)
        plan = dataclasses.replace(_plan(bundle, loaded.experiment, run_dir, keep), unpacks=has_code)
        if s.confirm is not None and not s.confirm(plan):
            raise ExpkitError(f"{bundle.path}: not confirmed, so nothing was run")
        if has_code:
            materialize_code(bundle, run_dir)  # unpacked, or checked where it already is
        wrapped = s.wrap(keep, run_dir)
        info = _reproduction_info(original_c.run_id, s.sample, keep, s.sample_seed(loaded.experiment), run_dir)
        outcome = _run_annotated(
            lambda cb: start_run(
                spec_path,
                store,
                workers=s.workers,
                executor=wrapped,
                on_event=s.on_event,
                on_start=cb,
                spec_dir=run_dir,
            ),
            store,
            info,
            s.on_start,
            spec_dir=run_dir,
        )
    return _finish(outcome, store, original_c, keep, run_dir, loaded.experiment, s, list(loaded.warnings) + warnings)


def _plan(bundle: Bundle, experiment: Experiment, run_dir: Path, keep: frozenset[str] | None) -> RunPlan:
    """What re-running ``bundle`` runs (see :class:`RunPlan`)."""
    spec = experiment.spec
    prepare = spec.prepare
    return RunPlan(
        source=bundle.path,
        command=tuple(spec.command) + tuple(spec.args),
        prepare=tuple(prepare.command) + tuple(prepare.args) if prepare is not None else None,
        env=tuple(getattr(spec, "env", None) or ()),
        directory=run_dir,
        runs=len(keep) if keep is not None else len(build_matrix(experiment)),
    )


def _local_executor() -> Executor:
    from expkit.executors.local import LocalExecutor

    return LocalExecutor()


def _code_target(bundle: Bundle, spec_dir: str | Path | None) -> Path:
    """Where a bundle's code goes for the re-run: ``--spec-dir``, else ``./expkit-reproduce/<run-id>/``."""
    if spec_dir is not None:
        return Path(spec_dir).expanduser().resolve()
    return (Path.cwd() / REPRODUCE_DIR / bundle.run_id).resolve()


def _bundle_spec_dir(bundle: Bundle, spec_dir: str | Path | None, warnings: list[str]) -> Path:
    if spec_dir is not None:
        path = Path(spec_dir).expanduser()
        if not path.is_dir():
            raise InputError(f"--spec-dir {spec_dir}: not a directory; give the checkout of the experiment's code")
        return path.resolve()
    recorded = bundle.manifest.get("spec_dir")
    if recorded and Path(recorded).is_dir():
        warnings.append(
            f"running in {recorded}, the original run's spec directory (from the bundle's manifest); "
            "pass --spec-dir to use another checkout of the code"
        )
        return Path(recorded).resolve()
    raise InputError(
        f"{bundle.path}: a bundle holds the spec and the results, not the experiment's code: pass "
        "--spec-dir DIR, the directory with the scripts the spec's command runs (a checkout of the "
        "paper's code)"
    )


def _newest_run_of(store: RunStore, sha: str, source: str) -> str:
    """The id of the newest run in ``store`` of the spec with sha256 ``sha``."""
    runs: list[tuple[datetime, str]] = []
    for run_id in store.list_runs():
        try:
            manifest = store.manifest(run_id)
        except ExpkitError as err:  # a damaged run (or one deleted meanwhile) is nobody's original
            log.warning("skipping run %s: %s", run_id, err)
            continue
        if manifest.get("spec_sha256") == sha:
            runs.append((store_time(manifest), run_id))
    if not runs:
        raise InputError(
            f"no earlier run of {source} (spec sha256 {sha[:12]}…) in {store.url} to compare with: pass "
            "--original RUN_OR_BUNDLE, or run the experiment first"
        )
    return max(runs)[1]


def _reproduction_info(
    original_id: str, sample: int | None, keep: frozenset[str] | None, seed: int | None, spec_dir: Path
) -> dict[str, Any]:
    return {
        "original": original_id,
        "sample": sample,
        "sample_seed": seed if sample is not None else None,
        "sampled_runs": len(keep) if keep is not None else None,
        "spec_dir": str(spec_dir),
    }


def _run_annotated(
    start: Callable[[Callable[[str, int], None]], RunOutcome],
    store: RunStore,
    info: dict[str, Any],
    on_start: Callable[[str, int], None] | None,
    spec_dir: Path | None,
) -> RunOutcome:
    """Start the run, recording the reproduction (and the real spec directory) in its manifest both
    before the cells run (so a resume works) and after the runner's last manifest write."""
    started: list[str] = []

    def annotate(run_id: str) -> None:
        manifest = store.manifest(run_id)
        manifest["reproduction"] = info
        if spec_dir is not None:
            manifest["spec_dir"] = str(spec_dir)
            manifest["spec_file"] = None
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)

    def cb(run_id: str, n: int) -> None:
        started.append(run_id)
        annotate(run_id)
        if on_start is not None:
            on_start(run_id, n)

    try:
        outcome = start(cb)
    finally:
        if started:
            try:
                annotate(started[0])
            except Exception:
                log.exception("could not record the reproduction in the manifest of %s", started[0])
    return outcome


def identity_warnings(original: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[str]:
    """What differs between the code and the environment of the original and of the re-run: a difference in
    the results may come from there (compared only where both runs recorded them)."""
    found = []
    old_code, new_code = original.get("code"), rerun.get("code")
    if isinstance(old_code, Mapping) and isinstance(new_code, Mapping) and old_code.get("source") == "files":
        if new_code.get("digest") != old_code.get("digest"):
            diff = code_diff(old_code, new_code)
            what = diff.describe() if diff else f"digest {old_code.get('digest')} → {new_code.get('digest')}"
            found.append(f"the re-run's code differs from the original's ({what})")
    old_env, new_env = original.get("environment"), rerun.get("environment")
    if isinstance(old_env, Mapping) and isinstance(new_env, Mapping):
        lines = environment_diff(old_env, new_env).lines()
        if lines:
            found.append(
                f"the re-run's environment differs from the original's ({describe_list(lines)}); a difference in "
                "the results may come from it (the bundle's requirements.txt has the original versions)"
            )
    return found


def _finish(
    outcome: RunOutcome,
    store: RunStore,
    original_c: Collected,
    keep: frozenset[str] | None,
    run_dir: Path,
    experiment: Experiment,
    s: _Settings,
    warnings: list[str],
) -> ReproduceOutcome:
    """Collect the re-run and compare it with the original (restricted to the sample, if any)."""
    rerun_c = collect(store, outcome.run_id)
    if keep is not None:
        per_cell = len(keep) / max(1, len(experiment.spec.algorithms) * len(experiment.spec.datasets))
        need = min_replicates(alpha=s.alpha, margin=s.margin, paired=True)
        if per_cell < need:
            warnings.append(
                f"the sample of {len(keep)} runs gives about {per_cell:.1f} runs per algorithm × dataset; "
                f"showing equivalence needs at least {need} per cell, so expect inconclusive cells "
                f"(use --sample {need * len(experiment.spec.algorithms) * len(experiment.spec.datasets)} "
                "or more)"
            )
    warnings += identity_warnings(original_c.manifest, rerun_c.manifest)
    comparison = compare_runs(original_c, rerun_c, alpha=s.alpha, margin=s.margin, metric=s.metric, cells=keep)
    return ReproduceOutcome(
        run=outcome,
        comparison=comparison,
        original=original_c,
        rerun=rerun_c,
        spec_dir=run_dir,
        sample=tuple(sorted(keep)) if keep is not None else None,
        sample_seed=s.sample_seed(experiment) if s.sample is not None else None,
        warnings=tuple(warnings),
    )

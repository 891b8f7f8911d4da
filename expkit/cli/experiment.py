"""Commands that work on a spec file: ``init``, ``validate``, ``schema``, ``run``, ``render``, ``pin``."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from expkit.cli.common import (
    CheckParamsOpt,
    JsonOpt,
    ParamsOpt,
    ProgressView,
    StoreOpt,
    app,
    err,
    handle_errors,
    open_checked_store,
    out,
    print_json,
    print_outcome,
    sigterm_to_interrupt,
    warn,
)
from expkit.core.errors import InputError

if TYPE_CHECKING:
    from expkit.runner import RunOutcome
    from expkit.runner.canary import SmokeResult
    from expkit.spec import Adaptive, LoadedSpec
    from expkit.stores.base import RunStore

# ------------------------------------------------------------------------------------------------
# init / validate / schema
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create experiment.yml and run.py.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Create a working experiment: [bold]experiment.yml[/] and the [bold]run.py[/] it runs.

    Example: [bold]expkit init my-study && expkit run my-study/experiment.yml[/]
    """
    from expkit.spec.scaffold import scaffold

    written = scaffold(directory, force=force)
    for path in written:
        out.print(f"created {path}")
    spec = shlex.quote(str(directory / "experiment.yml"))
    out.print(f"next: [bold]expkit run {escape(spec)}[/] (check it first: expkit validate {escape(spec)} --smoke)")


@app.command()
@handle_errors
def validate(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    params: CheckParamsOpt = None,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke",
            help="Also run the canaries — one run per algorithm (replicate 0 of the first dataset), after the "
            "prepare step — in a temporary directory: no run is created. Exit 1 when one fails, with the fix.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a spec file strictly, and the Argo workflow it renders to; exit 2 with one line per problem.

    Example: [bold]expkit validate experiment.yml -p budget=100[/]; before a long run:
    [bold]expkit validate experiment.yml --smoke[/]
    """
    from expkit.executors.argo import render_workflow
    from expkit.runs.matrix import build_matrix
    from expkit.spec import load_spec

    loaded = load_spec(file, params or [])
    spec = loaded.experiment.spec
    n = len(build_matrix(loaded.experiment))
    render_workflow(loaded, f"{loaded.name}-check")  # the Argo workflow it would submit is valid too
    smoked = _smoke(loaded, quiet=as_json) if smoke else None
    if as_json:
        doc = {"valid": True, "file": str(file), "cells": n, "spec_sha256": loaded.sha256}
        doc["warnings"] = list(loaded.warnings)
        if smoked is not None:
            doc["smoke"] = [vars(r) for r in smoked]
        print_json(doc)
    else:
        for w in loaded.warnings:
            warn(w)
        out.print(
            f"[green]✓[/] {escape(str(file))} is valid: {len(spec.algorithms)} algorithms × "
            f"{len(spec.datasets)} datasets × {spec.replicates} replicates = {n} runs"
        )
        if spec.adaptive is not None:
            a = spec.adaptive
            out.print(
                f"  adaptive: {a.min_replicates} to {a.max_replicates} replicates in waves of {a.wave} "
                f"(stop: {a.stop}, alpha {a.alpha:g}, rope {a.rope:g}); at most {n} runs, at least "
                f"{len(spec.algorithms) * len(spec.datasets) * a.min_replicates}"
            )
        _print_smoke(smoked or [])
    if smoked and not all(r.ok for r in smoked):
        raise typer.Exit(1)


def _smoke(loaded: LoadedSpec, *, quiet: bool) -> list[SmokeResult]:
    """Run the canaries of ``loaded`` in a temporary store, with progress on stderr unless ``quiet``."""
    from expkit.runner import default_workers
    from expkit.runner.canary import smoke_test

    view = ProgressView(quiet=quiet, failures=False)
    sigterm_to_interrupt()
    n = len(loaded.experiment.spec.algorithms)
    title = f"smoke test of {loaded.name}: {n} runs, one per algorithm, in a temporary directory (no run is created)"
    view.start(loaded.name, n, title=title)
    try:
        return smoke_test(loaded, workers=default_workers(loaded), on_event=view.on_event)
    finally:
        view.stop()


def _print_smoke(results: list[SmokeResult]) -> None:
    """One line per canary: its metric value, or why it failed, the fix and the last lines of its log."""
    from expkit.core.fmt import format_number

    for r in results:
        if r.ok:
            out.print(f"[green]✓[/] {r.cell}: {escape(r.metric)} = {format_number(r.value)}")
            continue
        out.print(f"[red]✗[/] {r.cell}: {escape(r.reason or 'failed')}")
        out.print(f"    fix: {escape(r.fix or '')}")
        for line in r.log_tail.splitlines():
            out.print(f"    | {escape(line)}")
    failed = sum(1 for r in results if not r.ok)
    if results and failed:
        out.print(f"[red]✗[/] smoke test: {failed} of {len(results)} runs failed; fix them before 'expkit run'")
    elif results:
        out.print(f"[green]✓[/] smoke test: the first run of every algorithm succeeded ({len(results)} runs)")


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the spec file (for editor completion).

    Example: [bold]expkit schema > expkit.schema.json[/], then in your YAML:
    [bold]# yaml-language-server: $schema=expkit.schema.json[/]
    """
    from expkit.spec import json_schema

    print_json(json_schema())


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def run(  # long: one parameter per command-line option, each with its help text
    file: Annotated[Optional[Path], typer.Argument(help="The experiment spec (YAML). Optional with --resume.")] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers", "-j", help="Runs at once (default: CPUs / spec.resources.cpu, capped by spec.parallelism)."
        ),
    ] = None,
    store: StoreOpt = None,
    params: ParamsOpt = None,
    resume: Annotated[
        Optional[str],
        typer.Option("--resume", metavar="RUN", help="Run only the cells of RUN (or 'latest') that have not finished."),
    ] = None,
    rerun_failed: Annotated[
        bool, typer.Option("--rerun-failed", help="With --resume: also rerun failed cells.")
    ] = False,
    complete: Annotated[
        bool,
        typer.Option(
            "--complete",
            help="With --resume, on an adaptive run: run every missing cell of the full max_replicates design "
            "into the same run.",
        ),
    ] = False,
    allow_changes: Annotated[
        bool,
        typer.Option(
            "--allow-changes",
            help="With --resume: go on although the code or environment changed since the run's last session; "
            "the change is recorded in the manifest and the report.",
        ),
    ] = False,
    no_results: Annotated[bool, typer.Option("--no-results", help="Skip the verdict at the end.")] = False,
    no_canary: Annotated[
        bool,
        typer.Option(
            "--no-canary",
            help="Do not run one run per algorithm first (a setup mistake then fails more runs before the early "
            "stop halts the algorithm).",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress output; only the outcome and errors.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every algorithm × dataset × replicate of a spec on this machine.

    Example: [bold]expkit run experiment.yml -j 2 -p budget=100[/]; after Ctrl-C or a crash:
    [bold]expkit run --resume latest[/]
    """
    _check_run_flags(file, resume, rerun_failed, params)
    if resume is None and complete:
        raise InputError("--complete only makes sense with --resume RUN (an adaptive run)")
    if resume is None and allow_changes:
        raise InputError("--allow-changes only makes sense with --resume RUN")
    run_store = open_checked_store(store)
    view = ProgressView(quiet=quiet)
    sigterm_to_interrupt()
    if file is not None and resume is None:
        from expkit.spec import load_spec

        for w in load_spec(file, params or []).warnings:
            warn(w)
    try:
        outcome = _start_or_resume(
            file,
            resume,
            run_store,
            view,
            params or [],
            workers,
            rerun_failed,
            allow_changes=allow_changes,
            canary=not no_canary,
            complete=complete,
        )
    finally:
        view.stop()
    verdict: list[str] = []
    if not no_results and not as_json and outcome.succeeded:
        from expkit.analysis.report import run_verdict

        verdict = run_verdict(run_store, outcome.run_id)
    _print_run_outcome(outcome, verdict, as_json)
    if not outcome.ok:
        raise typer.Exit(1)


_NO_SPEC = "give a spec file (expkit run experiment.yml) or --resume RUN"


def _check_run_flags(file: Path | None, resume: str | None, rerun_failed: bool, params: list[str] | None) -> None:
    """Reject combinations of ``expkit run`` arguments that make no sense."""
    if file is None and resume is None:
        raise InputError(_NO_SPEC)
    if resume is None and rerun_failed:
        raise InputError("--rerun-failed only makes sense with --resume RUN")
    if resume is not None and params:
        raise InputError("-p cannot change a run being resumed: its parameters are fixed; start a new run instead")


def _start_or_resume(
    file: Path | None,
    resume: str | None,
    run_store: RunStore,
    view: ProgressView,
    params: list[str],
    workers: int | None,
    rerun_failed: bool,
    *,
    allow_changes: bool = False,
    canary: bool = True,
    complete: bool = False,
) -> RunOutcome:
    """Resume run ``resume`` when given, else start a new run of the spec ``file``; an adaptive spec's run
    goes through the adaptive driver (waves)."""
    from expkit.adaptive.driver import Options, resume_adaptive, start_adaptive
    from expkit.runner import start_run

    options = Options(workers, None, view.on_event, view.start, canary, True, view.notice)
    if resume is not None:
        return resume_adaptive(
            resume,
            run_store,
            spec_path=file,
            rerun_failed=rerun_failed,
            allow_changes=allow_changes,
            complete=complete,
            options=options,
        )
    if file is None:  # _check_run_flags has refused this already
        raise InputError(_NO_SPEC)
    adaptive = _adaptive_block(file, params)
    if adaptive is not None:

        def on_start(run_id: str, n: int) -> None:
            waves = f"waves of {adaptive.wave} replicates from {adaptive.min_replicates} to {adaptive.max_replicates}"
            view.start(run_id, n, title=f"run [bold]{run_id}[/]: adaptive, at most {n} runs ({waves})")

        options = dataclasses.replace(options, on_start=on_start)
        return start_adaptive(file, run_store, overrides=params, options=options)
    return start_run(
        file,
        run_store,
        overrides=params,
        workers=workers,
        on_event=view.on_event,
        on_start=view.start,
        canary=canary,
        early_stop=True,
        on_notice=view.notice,
    )


def _adaptive_block(file: Path, params: list[str]) -> Adaptive | None:
    """The spec ``file``'s ``adaptive:`` block (None: a fixed design)."""
    from expkit.spec import load_spec

    return load_spec(file, params).experiment.spec.adaptive


def _print_run_outcome(outcome: RunOutcome, verdict: list[str], as_json: bool) -> None:
    """What ``expkit run`` prints at the end: the outcome as JSON, or as text with the short verdict (the
    full comparison is ``expkit results``')."""
    if as_json:
        print_json(
            {
                "run_id": outcome.run_id,
                "store": outcome.store_url,
                "total": outcome.total,
                "succeeded": outcome.succeeded,
                "failed": outcome.failed,
                "missing": outcome.missing,
                "ran": outcome.ran,
                "skipped": outcome.skipped,
                "duration_s": round(outcome.duration_s, 3),
                "stopped": list(outcome.stopped),
                "hint": outcome.hint,
            }
        )
        return
    print_outcome(outcome, verdict)


# ------------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def render(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the YAML here instead of stdout.")
    ] = None,
    params: CheckParamsOpt = None,
    run_id: Annotated[
        Optional[str], typer.Option("--run-id", help="Run id to render for (default: a new '<name>-<5 chars>').")
    ] = None,
    namespace: Annotated[
        Optional[str], typer.Option("--namespace", "-n", help="Namespace to set on the Workflow.")
    ] = None,
    expkit_image: Annotated[
        Optional[str],
        typer.Option(
            "--expkit-image", help="Pinned expkit image for the finalize step (omit: status is read at collection)."
        ),
    ] = None,
) -> None:
    """Render the Argo Workflow a spec submits to, validated strictly against Argo's schema (a run over
    kubernetes.maxCellsPerWorkflow cells: all its workflows, one YAML stream with '---' between them).

    Example: [bold]expkit render experiment.yml -o workflow.yaml -p budget=100[/]
    """
    import secrets
    import string

    from expkit.executors.argo.workflows import render_stream, render_submission
    from expkit.spec import load_spec

    loaded = load_spec(file, params or [])
    for w in loaded.warnings:
        warn(w)
    if run_id is None:
        alphabet = string.ascii_lowercase + string.digits
        run_id = f"{loaded.name}-{''.join(secrets.choice(alphabet) for _ in range(5))}"
    planned = render_submission(loaded, run_id, namespace=namespace, expkit_image=expkit_image)
    text = render_stream(planned)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"-o {output}: cannot write the workflow ({e.strerror})") from e
    shards = f", {len(planned)} workflows" if len(planned) > 1 else ""
    err.print(f"wrote {escape(str(output))} ({len(text.encode())} bytes, run id {run_id}{shards})")


# ------------------------------------------------------------------------------------------------
# pin
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def pin(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML); rewritten in place.")],
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 when an image is not pinned by digest (for a paper's CI)."
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow plain HTTP and unverified TLS for a registry that is not on loopback."),
    ] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Re-resolve images that are already pinned.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and show, but do not rewrite the file.")] = False,
) -> None:
    """Pin every image in a spec to its manifest digest (registry HTTP API v2), keeping comments and layout.

    Credentials come from EXPKIT_REGISTRY_USERNAME/EXPKIT_REGISTRY_PASSWORD or the Docker config file.
    Example: [bold]expkit pin experiment.yml[/]; in CI: [bold]expkit pin --check experiment.yml[/]
    """
    from expkit.reproduce.pin import check_spec_file, pin_spec_file

    if check:
        unpinned = check_spec_file(file)
        for field in unpinned:
            out.print(escape(field.describe()))
        if unpinned:
            raise typer.Exit(1)
        out.print(f"[green]✓[/] every image in {escape(str(file))} is pinned by digest")
        return
    result = pin_spec_file(file, insecure=insecure, refresh=refresh, dry_run=dry_run)
    for image in result.images:
        out.print(escape(image.describe()))
    for note in result.notes:
        warn(note)
    if result.written:
        out.print(f"[green]✓[/] rewrote {escape(str(file))}")

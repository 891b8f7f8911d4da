"""Commands that work on a spec file: ``init``, ``validate``, ``schema``, ``run``, ``render``, ``pin``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from expkit.cli.common import (
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
    out.print(f"next: [bold]expkit run {directory / 'experiment.yml'}[/]")


@app.command()
@handle_errors
def validate(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a spec file strictly, and the Argo workflow it renders to; exit 2 with one line per problem.

    Example: [bold]expkit validate experiment.yml -p budget=100[/]
    """
    from expkit.executors.argo import render_workflow
    from expkit.runs.matrix import build_matrix
    from expkit.spec import load_spec

    loaded = load_spec(file, params or [])
    spec = loaded.experiment.spec
    n = len(build_matrix(loaded.experiment))
    render_workflow(loaded, f"{loaded.name}-check")  # the Argo workflow it would submit is valid too
    if as_json:
        print_json(
            {
                "valid": True,
                "file": str(file),
                "cells": n,
                "spec_sha256": loaded.sha256,
                "warnings": list(loaded.warnings),
            }
        )
        return
    for w in loaded.warnings:
        warn(w)
    out.print(
        f"[green]✓[/] {escape(str(file))} is valid: {len(spec.algorithms)} algorithms × "
        f"{len(spec.datasets)} datasets × {spec.replicates} replicates = {n} runs"
    )


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
def run(
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
    no_results: Annotated[bool, typer.Option("--no-results", help="Skip the statistical summary at the end.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every algorithm × dataset × replicate of a spec on this machine.

    Example: [bold]expkit run experiment.yml -j 2 -p budget=100[/]; after Ctrl-C or a crash:
    [bold]expkit run --resume latest[/]
    """
    _check_run_flags(file, resume, rerun_failed, params)
    run_store = open_checked_store(store)
    view = ProgressView()
    sigterm_to_interrupt()
    if file is not None and resume is None:
        from expkit.spec import load_spec

        for w in load_spec(file, params or []).warnings:
            warn(w)
    try:
        outcome = _start_or_resume(file, resume, run_store, view, params or [], workers, rerun_failed)
    finally:
        view.stop()
    summary: list[str] | None = None
    if not no_results and outcome.succeeded:
        summary = _results_summary(run_store, outcome.run_id)
    _print_run_outcome(outcome, summary, as_json)
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
) -> RunOutcome:
    """Resume run ``resume`` when given, else start a new run of the spec ``file``."""
    from expkit.runner import resume_run, start_run

    if resume is not None:
        return resume_run(
            resume,
            run_store,
            spec_path=file,
            rerun_failed=rerun_failed,
            workers=workers,
            on_event=view.on_event,
            on_start=view.start,
        )
    if file is None:  # _check_run_flags has refused this already
        raise InputError(_NO_SPEC)
    return start_run(
        file,
        run_store,
        overrides=params,
        workers=workers,
        on_event=view.on_event,
        on_start=view.start,
    )


def _print_run_outcome(outcome: RunOutcome, summary: list[str] | None, as_json: bool) -> None:
    """What ``expkit run`` prints at the end: the outcome as JSON, or as text with the statistical summary."""
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
            }
        )
        return
    print_outcome(outcome)
    if summary:
        out.print()
        for line in summary:
            out.print(escape(line))


def _results_summary(store: RunStore, run_id: str) -> list[str]:
    """The statistical summary printed after a run; a problem here never fails the run."""
    from expkit.analysis.report import summary_or_reason

    return summary_or_reason(store, run_id)


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
    params: ParamsOpt = None,
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
    """Render the Argo Workflow a spec submits to, validated strictly against Argo's schema.

    Example: [bold]expkit render experiment.yml -o workflow.yaml -p budget=100[/]
    """
    import secrets
    import string

    from expkit.executors.argo import render_yaml
    from expkit.spec import load_spec

    loaded = load_spec(file, params or [])
    for w in loaded.warnings:
        warn(w)
    if run_id is None:
        alphabet = string.ascii_lowercase + string.digits
        run_id = f"{loaded.name}-{''.join(secrets.choice(alphabet) for _ in range(5))}"
    text = render_yaml(loaded, run_id, namespace=namespace, expkit_image=expkit_image)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"-o {output}: cannot write the workflow ({e.strerror})") from e
    err.print(f"wrote {escape(str(output))} ({len(text.encode())} bytes, run id {run_id})")


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

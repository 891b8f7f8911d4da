"""Commands for paper bundles and re-runs: ``export``, ``import``, ``compare``, ``reproduce``."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    print_outcome,
    sigterm_to_interrupt,
    warn,
)
from expkit.core.errors import InputError

if TYPE_CHECKING:
    from expkit.reproduce.comparison import Comparison
    from expkit.reproduce.rerun import RunPlan

# ------------------------------------------------------------------------------------------------
# export / import / compare / reproduce
# ------------------------------------------------------------------------------------------------


@app.command("export")
@handle_errors
def export_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, or 'latest'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle to write (.zip).")],
    store: StoreOpt = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Leave the statistics, tables and plots out.")] = False,
    redact: Annotated[
        bool,
        typer.Option(
            "--redact",
            help="Replace the values of known credentials found in the logs with [REDACTED:<VARIABLE>] "
            "(without it, such a log refuses the export).",
        ),
    ] = False,
    license_id: Annotated[
        Optional[str],
        typer.Option(
            "--license", help="SPDX license of the bundle (default: the spec's metadata.license; one is required)."
        ),
    ] = None,
    no_code: Annotated[
        bool, typer.Option("--no-code", help="Leave the run code out (the bundle then cannot re-run by itself).")
    ] = False,
    code_dir: Annotated[
        Optional[Path],
        typer.Option("--code-dir", help="Where the run code is now (default: the run's spec directory)."),
    ] = None,
) -> None:
    """Pack a run into a paper bundle: spec, manifest, every cell's results and logs, the run code and
    its package versions, statistics, tables, plots, an RO-Crate description, a CITATION.cff and a README
    with the commands to reproduce it. Needs a license (metadata.license or --license). Logs holding the
    value of a credential (AWS_SECRET_ACCESS_KEY, ...) refuse the export unless --redact.

    Example: [bold]expkit export latest -o paper-bundle.zip[/]
    """
    from expkit.reproduce.bundle import export_run

    path = export_run(
        open_checked_store(store),
        run_ref,
        output,
        include_report=not no_report,
        redact=redact,
        license_id=license_id,
        include_code=not no_code,
        code_dir=code_dir,
        on_warning=warn,
    )
    out.print(f"[green]✓[/] wrote {escape(str(path))} ({path.stat().st_size} bytes)")


@app.command("import")
@handle_errors
def import_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by 'expkit export'.")],
    store: StoreOpt = None,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Refuse bundles larger than this uncompressed (default 2 GiB).")
    ] = 2 * 1024**3,
    max_ratio: Annotated[
        float,
        typer.Option("--max-ratio", help="Refuse entries over 1 MiB that expand more than this (a zip bomb)."),
    ] = 200.0,
) -> None:
    """Load a paper bundle into a store, under its original run id (checked before anything is written),
    marked imported: it is never resumed or re-run ('expkit reproduce BUNDLE' re-runs it after asking).

    Example: [bold]expkit import paper-bundle.zip && expkit results <run-id>[/]
    """
    from expkit.reproduce.bundle import import_bundle

    if max_bytes < 1 or max_ratio < 1:
        raise InputError("--max-bytes and --max-ratio must be at least 1")
    run_store = open_checked_store(store)
    run_id = import_bundle(bundle, run_store, max_bytes=max_bytes, max_ratio=max_ratio)
    out.print(f"[green]✓[/] imported run [bold]{run_id}[/] into {escape(run_store.url)}; next: expkit results {run_id}")


def _print_comparison(comparison: Comparison, files: list[Path], as_json: bool) -> None:
    from expkit.reproduce.compare import comparison_json

    if as_json:
        sys.stdout.write(comparison_json(comparison))
    else:
        for line in comparison.summary_lines():
            out.print(escape(line))
        if files:
            out.print(f"wrote {escape(str(files[0].parent))}/ (compare.json and plots)")
    if comparison.exit_code:
        raise typer.Exit(comparison.exit_code)


AlphaOpt = Annotated[float, typer.Option("--alpha", "-a", help="Significance level.")]
MarginOpt = Annotated[
    float,
    typer.Option("--margin", help="Equivalence margin on A12: a re-run is equivalent when A12 is within 0.5 ± margin."),
]
CompareOutOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for compare.json and plots.")]
OriginalOpt = Annotated[
    Optional[str],
    typer.Option(
        "--original",
        help="With a spec file: the run or bundle to compare with (default: the newest run of the "
        "same spec in the store).",
    ),
]
SpecDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--spec-dir",
        help="With a bundle: where its code is unpacked and checked (default ./expkit-reproduce/<run-id>/); for a "
        "bundle without code, a checkout of the experiment's code.",
    ),
]
SampleOpt = Annotated[
    Optional[int],
    typer.Option("--sample", help="Re-run only a seeded random sample of about K runs (a quick audit)."),
]
SampleSeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of the sample (default: the spec's seed).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", "-j", help="Runs at once.")]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Run a bundle's command without asking (required when stdin is not a terminal).",
    ),
]


def _confirmer(yes: bool) -> Callable[[RunPlan], bool]:
    """Show what a bundle will run (on stderr), then ask — or go ahead with --yes; without a terminal to
    ask on, refuse with what to do."""

    def confirm(plan: RunPlan) -> bool:
        for line in plan.lines():
            err.print(escape(line))
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(
                f"{plan.source} comes with a command to run (above) and stdin is not a terminal to ask on: "
                "check it, then pass --yes"
            )
        return typer.confirm("Run it?", default=False, err=True)

    return confirm


@app.command()
@handle_errors
def compare(
    original: Annotated[str, typer.Argument(help="The original: a run id, 'latest', or a bundle (.zip).")],
    rerun: Annotated[str, typer.Argument(help="The re-run: a run id, 'latest', or a bundle (.zip).")],
    store: StoreOpt = None,
    alpha: AlphaOpt = 0.05,
    margin: MarginOpt = 0.14,
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric (default: the spec's).")] = None,
    output: CompareOutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check statistically whether a re-run reproduces the original, per cell and in its conclusions.

    Exit code 0 reproduced, 1 not reproduced, 3 inconclusive (too few runs to tell), 2 bad input.
    Example: [bold]expkit compare paper-bundle.zip latest[/]
    """
    from expkit.reproduce.compare import (
        compare_runs,
        default_out_dir,
        load_side,
        write_comparison,
    )

    run_store = open_checked_store(store)
    orig = load_side(original, run_store)
    new = load_side(rerun, run_store)
    comparison = compare_runs(orig, new, alpha=alpha, margin=margin, metric=metric)
    files = write_comparison(comparison, orig, new, output or default_out_dir(comparison))
    _print_comparison(comparison, files, as_json)


@app.command()
@handle_errors
def reproduce(
    source: Annotated[Path, typer.Argument(help="A spec file or a paper bundle (.zip).")],
    store: StoreOpt = None,
    original: OriginalOpt = None,
    spec_dir: SpecDirOpt = None,
    sample: SampleOpt = None,
    seed: SampleSeedOpt = None,
    workers: WorkersOpt = None,
    params: ParamsOpt = None,
    alpha: AlphaOpt = 0.05,
    margin: MarginOpt = 0.14,
    output: CompareOutOpt = None,
    as_json: JsonOpt = False,
    yes: YesOpt = False,
) -> None:
    """Re-run an experiment (all of it, or a sample) on this machine and compare it with the original.
    A bundle's own code is unpacked and checked against its sha256 digest; its command is shown first and
    runs only once you confirm it (or with --yes).

    Exit code 0 reproduced, 1 not reproduced, 3 inconclusive, 2 bad input.
    Example: [bold]expkit reproduce paper-bundle.zip --sample 40[/]
    """
    from expkit.reproduce.compare import default_out_dir, write_comparison
    from expkit.reproduce.compare import reproduce as reproduce_run

    view = ProgressView()
    sigterm_to_interrupt()
    try:
        outcome = reproduce_run(
            source,
            open_checked_store(store),
            original=original,
            spec_dir=spec_dir,
            overrides=params or [],
            sample=sample,
            workers=workers,
            seed=seed,
            on_event=view.on_event,
            on_start=view.start,
            alpha=alpha,
            margin=margin,
            confirm=_confirmer(yes),
        )
    finally:
        view.stop()
    for w in outcome.warnings:
        warn(w)
    if not as_json:
        print_outcome(outcome.run)
    comparison = outcome.comparison
    files = write_comparison(comparison, outcome.original, outcome.rerun, output or default_out_dir(comparison))
    _print_comparison(comparison, files, as_json)

"""Commands for paper bundles and re-runs: ``export``, ``import``, ``compare``, ``reproduce``."""

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
    handle_errors,
    open_checked_store,
    out,
    print_outcome,
    sigterm_to_interrupt,
    warn,
)

if TYPE_CHECKING:
    from expkit.reproduce.comparison import Comparison

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
) -> None:
    """Pack a run into a paper bundle: spec, manifest, every cell's results and logs, statistics, tables,
    plots, an RO-Crate description and a README on how to reproduce it.

    Example: [bold]expkit export latest -o paper-bundle.zip[/]
    """
    from expkit.reproduce.bundle import export_run

    path = export_run(open_checked_store(store), run_ref, output, include_report=not no_report)
    out.print(f"[green]✓[/] wrote {escape(str(path))} ({path.stat().st_size} bytes)")


@app.command("import")
@handle_errors
def import_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by 'expkit export'.")],
    store: StoreOpt = None,
) -> None:
    """Load a paper bundle into a store, under its original run id (checked before anything is written).

    Example: [bold]expkit import paper-bundle.zip && expkit results <run-id>[/]
    """
    from expkit.reproduce.bundle import import_bundle

    run_store = open_checked_store(store)
    run_id = import_bundle(bundle, run_store)
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
    typer.Option("--spec-dir", help="With a bundle: the directory holding the experiment's code (a checkout)."),
]
SampleOpt = Annotated[
    Optional[int],
    typer.Option("--sample", help="Re-run only a seeded random sample of about K runs (a quick audit)."),
]
SampleSeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of the sample (default: the spec's seed).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", "-j", help="Runs at once.")]


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
) -> None:
    """Re-run an experiment (all of it, or a sample) on this machine and compare it with the original.

    Exit code 0 reproduced, 1 not reproduced, 3 inconclusive, 2 bad input.
    Example: [bold]expkit reproduce paper-bundle.zip --spec-dir . --sample 40[/]
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

"""The ``expkit`` command line: parse, call one library function, format the answer.

Exit codes: 0 success, 1 failure (a cell failed, a server is unreachable), 2 bad input (spec file,
flag, unknown run), 130 interrupted. Errors are one line on stderr, never a traceback (``--debug``
shows one for bug reports).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from expkit import __version__
from expkit.errors import ExpkitError, InputError

app = typer.Typer(
    name="expkit",
    help="Run computational experiments reproducibly and compare algorithms with proper statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Wide enough when piped that tables are not folded; a terminal uses its own width.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
log = logging.getLogger("expkit")
_state: dict[str, Any] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[Optional[str], typer.Option(
    "--store", envvar="EXPKIT_STORE", show_envvar=True,
    help="Run store: a directory (default ./expkit-runs) or s3://bucket/prefix.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
KubeconfigOpt = Annotated[Optional[str], typer.Option(
    "--kubeconfig", metavar="FILE", help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; in a pod "
                                         "without one, the pod's service account).")]
ContextOpt = Annotated[Optional[str], typer.Option(
    "--context", envvar="EXPKIT_KUBE_CONTEXT", show_envvar=True, help="Kubeconfig context (default: the current one).")]
NamespaceOpt = Annotated[Optional[str], typer.Option(
    "--namespace", "-n", envvar="EXPKIT_NAMESPACE", show_envvar=True,
    help="Namespace (default: the run's, else the context's, else 'default').")]
ParamsOpt = Annotated[Optional[list[str]], typer.Option(
    "--param", "-p", metavar="KEY=VALUE",
    help="Override a parameter (repeatable); values parse as JSON when they can. Recorded in the run's manifest.")]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Map library errors to one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ExpkitError as e:
            if _state["debug"]:
                err.print_exception()
            for other in getattr(e, "others", [])[:20]:
                err.print(f"[bold red]error:[/] {escape(other)}")
            raise _fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
            if _state["debug"]:
                err.print_exception()
            raise _fail(f"internal error: {e.__class__.__name__}: {e} (rerun with --debug and report it)", 1) from None

    return wrapper  # type: ignore[return-value]


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _version(value: bool) -> None:
    if value:
        out.print(f"expkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """expkit turns one spec file into seeded runs of every algorithm on every dataset, stores every
    result, and compares the algorithms with the right statistical tests.

    Start with [bold]expkit init[/], then [bold]expkit run experiment.yml[/].
    """
    _state["debug"] = debug
    level = logging.DEBUG if verbose > 1 or debug else logging.INFO if verbose else logging.WARNING
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("expkit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _open_store(url: str | None):
    from expkit.stores import open_store

    store = open_store(url)
    check = getattr(store, "check", None)  # remote stores: fail fast on a bad bucket, credentials or endpoint
    if check is not None:
        check()
    return store


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}")


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
    from expkit.scaffold import scaffold

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
    from expkit.matrix import build_matrix
    from expkit.spec import load_spec

    from expkit.executors.argo import render_workflow

    loaded = load_spec(file, params or [])
    spec = loaded.experiment.spec
    n = len(build_matrix(loaded.experiment))
    render_workflow(loaded, f"{loaded.name}-check")  # the Argo workflow it would submit is valid too
    if as_json:
        _print_json({"valid": True, "file": str(file), "cells": n, "spec_sha256": loaded.sha256,
                     "warnings": list(loaded.warnings)})
        return
    for w in loaded.warnings:
        _warn(w)
    out.print(f"[green]✓[/] {escape(str(file))} is valid: {len(spec.algorithms)} algorithms × "
              f"{len(spec.datasets)} datasets × {spec.replicates} replicates = {n} runs")


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the spec file (for editor completion).

    Example: [bold]expkit schema > expkit.schema.json[/], then in your YAML:
    [bold]# yaml-language-server: $schema=expkit.schema.json[/]
    """
    from expkit.spec import json_schema

    _print_json(json_schema())


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------

class _ProgressView:
    """A live progress bar fed by executor events (from worker threads)."""

    def __init__(self) -> None:
        self.ok = self.failed = self.running = 0
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]✓ {task.fields[ok]}[/] [red]✗ {task.fields[failed]}[/] ▶ {task.fields[running]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err, transient=False, disable=not err.is_terminal,
        )
        self.task = None

    def start(self, run_id: str, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(run_id, total=total, ok=0, failed=0, running=0)
        err.print(f"run [bold]{run_id}[/]: {total} runs to do")

    def on_event(self, event: Any) -> None:
        with self._lock:
            if event.kind == "started":
                self.running += 1
            elif event.kind == "finished":
                self.running -= 1
                if event.status == "succeeded":
                    self.ok += 1
                else:
                    self.failed += 1
                    self.progress.console.print(f"[red]✗[/] {event.cell}: {escape(event.reason or 'failed')}")
            if self.task is not None:
                self.progress.update(self.task, completed=self.ok + self.failed, ok=self.ok, failed=self.failed,
                                     running=self.running)

    def stop(self) -> None:
        self.progress.stop()


def _sigterm_to_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@app.command()
@handle_errors
def run(
    file: Annotated[Optional[Path], typer.Argument(help="The experiment spec (YAML). Optional with --resume.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", "-j", help="Runs at once (default: CPUs / spec.resources.cpu, capped by spec.parallelism).")] = None,
    store: StoreOpt = None,
    params: ParamsOpt = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", metavar="RUN", help="Run only the cells of RUN (or 'latest') that have not finished.")] = None,
    rerun_failed: Annotated[bool, typer.Option("--rerun-failed", help="With --resume: also rerun failed cells.")] = False,
    no_results: Annotated[bool, typer.Option("--no-results", help="Skip the statistical summary at the end.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every algorithm × dataset × replicate of a spec on this machine.

    Example: [bold]expkit run experiment.yml -j 2 -p budget=100[/]; after Ctrl-C or a crash:
    [bold]expkit run --resume latest[/]
    """
    from expkit.runner import resume_run, start_run

    if file is None and resume is None:
        raise InputError("give a spec file (expkit run experiment.yml) or --resume RUN")
    if resume is None and rerun_failed:
        raise InputError("--rerun-failed only makes sense with --resume RUN")
    if resume is not None and params:
        raise InputError("-p cannot change a run being resumed: its parameters are fixed; start a new run instead")
    run_store = _open_store(store)
    view = _ProgressView()
    _sigterm_to_interrupt()
    if file is not None and resume is None:
        from expkit.spec import load_spec

        for w in load_spec(file, params or []).warnings:
            _warn(w)
    try:
        if resume is not None:
            outcome = resume_run(resume, run_store, spec_path=file, rerun_failed=rerun_failed, workers=workers,
                                 on_event=view.on_event, on_start=view.start)
        else:
            outcome = start_run(file, run_store, overrides=params or [], workers=workers,  # type: ignore[arg-type]
                                on_event=view.on_event, on_start=view.start)
    finally:
        view.stop()
    summary: list[str] | None = None
    if not no_results and outcome.succeeded:
        summary = _results_summary(run_store, outcome.run_id)
    if as_json:
        _print_json({"run_id": outcome.run_id, "store": outcome.store_url, "total": outcome.total,
                     "succeeded": outcome.succeeded, "failed": outcome.failed, "missing": outcome.missing,
                     "ran": outcome.ran, "skipped": outcome.skipped, "duration_s": round(outcome.duration_s, 3)})
    else:
        _print_outcome(outcome)
        if summary:
            out.print()
            for line in summary:
                out.print(escape(line))
    if not outcome.ok:
        raise typer.Exit(1)


def _results_summary(store: Any, run_id: str) -> list[str]:
    """The statistical summary printed after a run; a problem here never fails the run."""
    from expkit.report import summary_or_reason

    return summary_or_reason(store, run_id)


def _print_outcome(outcome: Any) -> None:
    mark = "[green]✓[/]" if outcome.ok else "[red]✗[/]"
    out.print(f"{mark} run [bold]{outcome.run_id}[/] in {escape(outcome.store_url)}: {outcome.succeeded}/{outcome.total}"
              f" succeeded, {len(outcome.failed)} failed, {outcome.missing} missing "
              f"({outcome.ran} run now, {outcome.skipped} done before, {outcome.duration_s:.1f}s)")
    if outcome.failed:
        out.print("failed runs:")
        for i, (cell, reason) in enumerate(outcome.failed.items()):
            if i == 20:
                out.print(f"  … and {len(outcome.failed) - 20} more (expkit show {outcome.run_id})")
                break
            out.print(f"  {cell}: {escape(reason)}")
        out.print(f"logs: expkit show {outcome.run_id}; rerun them: expkit run --resume {outcome.run_id} --rerun-failed")
    out.print(f"results: [bold]expkit results {outcome.run_id}[/]")


# ------------------------------------------------------------------------------------------------
# list / show
# ------------------------------------------------------------------------------------------------

@app.command("list")
@handle_errors
def list_cmd(
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    cluster: Annotated[bool, typer.Option("--cluster", help="List the expkit workflows in the cluster's namespace "
                                                            "instead of the runs in the store.")] = False,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """List the runs in the store, newest first, with per-status counts; with --cluster, the workflows in the cluster.

    Example: [bold]expkit list --store s3://lab-bucket/expkit[/]; [bold]expkit list --cluster -n research[/]
    """
    from expkit.catalog import list_runs

    if cluster:
        from expkit.cli_cluster import list_cluster

        list_cluster(kubeconfig, context, namespace, as_json)
        return

    run_store = _open_store(store)
    infos = list_runs(run_store)
    if as_json:
        _print_json([i.to_dict() for i in infos])
        return
    if not infos:
        out.print(f"no runs in {escape(run_store.url)} yet: start one with 'expkit run FILE'")
        return
    table = Table("run", "experiment", "started", "status", "succeeded", "failed", "missing", box=None)
    for i in infos:
        table.add_row(i.run_id, i.experiment, i.started_at[:19].replace("T", " "), i.status,
                      str(i.succeeded), f"[red]{i.failed}[/]" if i.failed else "0", str(i.missing))
    out.print(table)


@app.command()
@handle_errors
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, or 'latest'.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run's provenance (spec hash, image, overrides, host), counts and failures.

    Example: [bold]expkit show latest --json[/]
    """
    from expkit.catalog import show_run

    doc = show_run(_open_store(store), run_ref)
    if as_json:
        _print_json(doc)
        return
    m = doc["manifest"]
    c = doc["counts"]
    host = m.get("host") or {}
    rows = [
        ("run", doc["run_id"]), ("experiment", m.get("experiment")), ("store", doc["store"]),
        ("status", f"{m.get('status')} — {c['succeeded']}/{c['total']} succeeded, {c['failed']} failed, "
                   f"{c['missing']} missing"),
        ("started", m.get("started_at")), ("ended", m.get("ended_at")),
        ("spec sha256", m.get("spec_sha256")),
        ("image", f"{m.get('image')}" + ("" if m.get("image_pinned") else "  (not pinned by digest)")),
        ("overrides", json.dumps(m.get("overrides") or {})), ("executor", f"{m.get('executor')}, {m.get('workers')} workers"),
        ("seeds", f"base {m.get('seed')}; {m.get('seed_scheme')}"),
        ("expkit", m.get("expkit_version")),
        ("host", f"{host.get('hostname')} · {host.get('platform')} · Python {host.get('python')} · "
                 f"{host.get('cpu_count')} CPUs · {host.get('cpu_model')}"),
        ("nodes", ", ".join(doc["nodes"]) or "-"),
        *([("cluster", f"context {m['cluster'].get('context')} · {m['cluster'].get('server')} · namespace "
                       f"{m['cluster'].get('namespace')} · Kubernetes {m['cluster'].get('server_version')} · "
                       f"Argo {m['cluster'].get('argo_version') or 'unknown'}")] if m.get("cluster") else []),
        ("cell time", f"total {doc['cell_seconds']['total']}s, median {doc['cell_seconds']['median']}s, "
                      f"max {doc['cell_seconds']['max']}s"),
    ]
    table = Table(show_header=False, box=None)
    for k, v in rows:
        table.add_row(f"[bold]{k}[/]", escape(str(v)))
    out.print(table)
    if doc["failures"]:
        out.print(f"[red]failed cells ({len(doc['failures'])}):[/]")
        for f in doc["failures"][:50]:
            out.print(f"  {f['cell']}: {escape(str(f['reason']))} (attempts: {f['attempts']})")


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------

class _CollectProgress:
    """A progress bar for collecting large runs (shown on a terminal, for more than a few hundred objects)."""

    THRESHOLD = 500

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def on_total(self, total: int) -> None:
        if total >= self.THRESHOLD and err.is_terminal:
            self.progress = Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=err, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("collect", total=total)

    def on_progress(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command()
@handle_errors
def results(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, or 'latest'.")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Directory for the report files (default: expkit-results/<run-id>).")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric to compare (default: the spec's).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="Significance level.")] = 0.05,
    aggregate: Annotated[str, typer.Option(
        "--aggregate", help="How replicates become one value per dataset across datasets: mean or median.")] = "mean",
    formats: Annotated[Optional[list[str]], typer.Option(
        "--format", help="Plot formats (repeatable): png, pdf, svg. Default: png and pdf.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Draw plots expkit would refuse as misleading (e.g. a CD diagram over < 5 datasets).")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the algorithms of a run: statistics, plots, CSV/LaTeX tables and a report.

    Writes results.csv, summary.csv, stats.json, table.tex, report.md, report.html and the plots.
    Example: [bold]expkit results latest -o paper/results --alpha 0.05[/]
    """
    from expkit.cli_cluster import sync_before_results
    from expkit.report import build_report, stats_json

    if aggregate not in ("mean", "median"):
        raise InputError(f"--aggregate {aggregate!r}: use mean or median")
    sync_before_results(run_ref, store)  # a run on Argo: bring its cells' status into the store first
    bar = _CollectProgress()
    try:
        report = build_report(_open_store(store), run_ref, out_dir=output, metric=metric, alpha=alpha,
                              aggregate=aggregate, formats=tuple(formats or ("png", "pdf")), force=force,
                              on_total=bar.on_total, on_progress=bar.on_progress)
    finally:
        bar.stop()
    if as_json:
        sys.stdout.write(stats_json(report.collected, report.analysis))
        return
    for line in report.summary:
        out.print(escape(line))
    for reason in report.skipped_plots:
        _warn(f"not drawn: {reason}")
    out.print(f"\nwrote {len(report.files)} files to [bold]{escape(str(report.out_dir))}[/] "
              f"(report.html, report.md, table.tex, stats.json, results.csv, summary.csv, plots)")


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
    from expkit.bundle import export_run

    path = export_run(_open_store(store), run_ref, output, include_report=not no_report)
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
    from expkit.bundle import import_bundle

    run_store = _open_store(store)
    run_id = import_bundle(bundle, run_store)
    out.print(f"[green]✓[/] imported run [bold]{run_id}[/] into {escape(run_store.url)}; next: expkit results {run_id}")


def _print_comparison(comparison: Any, files: list[Path], as_json: bool) -> None:
    from expkit.compare import comparison_json

    if as_json:
        sys.stdout.write(comparison_json(comparison))
    else:
        for line in comparison.summary_lines():
            out.print(escape(line))
        if files:
            out.print(f"wrote {escape(str(files[0].parent))}/ (compare.json and plots)")
    if comparison.exit_code:
        raise typer.Exit(comparison.exit_code)


MarginOpt = Annotated[float, typer.Option(
    "--margin", help="Equivalence margin on A12: a re-run is equivalent when A12 is within 0.5 ± margin.")]


@app.command()
@handle_errors
def compare(
    original: Annotated[str, typer.Argument(help="The original: a run id, 'latest', or a bundle (.zip).")],
    rerun: Annotated[str, typer.Argument(help="The re-run: a run id, 'latest', or a bundle (.zip).")],
    store: StoreOpt = None,
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="Significance level.")] = 0.05,
    margin: MarginOpt = 0.14,
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric (default: the spec's).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for compare.json and plots.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check statistically whether a re-run reproduces the original, per cell and in its conclusions.

    Exit code 0 reproduced, 1 not reproduced, 3 inconclusive (too few runs to tell), 2 bad input.
    Example: [bold]expkit compare paper-bundle.zip latest[/]
    """
    from expkit.compare import compare_runs, default_out_dir, load_side, write_comparison

    run_store = _open_store(store)
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
    original: Annotated[Optional[str], typer.Option(
        "--original", help="With a spec file: the run or bundle to compare with (default: the newest run of the "
                           "same spec in the store).")] = None,
    spec_dir: Annotated[Optional[Path], typer.Option(
        "--spec-dir", help="With a bundle: the directory holding the experiment's code (a checkout).")] = None,
    sample: Annotated[Optional[int], typer.Option(
        "--sample", help="Re-run only a seeded random sample of about K runs (a quick audit).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the sample (default: the spec's seed).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", help="Runs at once.")] = None,
    params: ParamsOpt = None,
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="Significance level.")] = 0.05,
    margin: MarginOpt = 0.14,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for compare.json and plots.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run an experiment (all of it, or a sample) on this machine and compare it with the original.

    Exit code 0 reproduced, 1 not reproduced, 3 inconclusive, 2 bad input.
    Example: [bold]expkit reproduce paper-bundle.zip --spec-dir . --sample 40[/]
    """
    from expkit.compare import default_out_dir, reproduce as reproduce_run, write_comparison

    view = _ProgressView()
    _sigterm_to_interrupt()
    try:
        outcome = reproduce_run(source, _open_store(store), original=original, spec_dir=spec_dir,
                                overrides=params or [], sample=sample, workers=workers, seed=seed,
                                on_event=view.on_event, on_start=view.start, alpha=alpha, margin=margin)
    finally:
        view.stop()
    for w in outcome.warnings:
        _warn(w)
    if not as_json:
        _print_outcome(outcome.run)
    comparison = outcome.comparison
    files = write_comparison(comparison, outcome.original, outcome.rerun, output or default_out_dir(comparison))
    _print_comparison(comparison, files, as_json)


# ------------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------------

@app.command()
@handle_errors
def render(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the YAML here instead of stdout.")] = None,
    params: ParamsOpt = None,
    run_id: Annotated[Optional[str], typer.Option(
        "--run-id", help="Run id to render for (default: a new '<name>-<5 chars>').")] = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", "-n", help="Namespace to set on the Workflow.")] = None,
    expkit_image: Annotated[Optional[str], typer.Option(
        "--expkit-image", help="Pinned expkit image for the finalize step (omit: status is read at collection).")] = None,
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
        _warn(w)
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
    check: Annotated[bool, typer.Option(
        "--check", help="Change nothing; exit 1 when an image is not pinned by digest (for a paper's CI).")] = False,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Allow plain HTTP and unverified TLS for a registry that is not on loopback.")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Re-resolve images that are already pinned.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and show, but do not rewrite the file.")] = False,
) -> None:
    """Pin every image in a spec to its manifest digest (registry HTTP API v2), keeping comments and layout.

    Credentials come from EXPKIT_REGISTRY_USERNAME/EXPKIT_REGISTRY_PASSWORD or the Docker config file.
    Example: [bold]expkit pin experiment.yml[/]; in CI: [bold]expkit pin --check experiment.yml[/]
    """
    from expkit.pin import check_spec_file, pin_spec_file

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
        _warn(note)
    if result.written:
        out.print(f"[green]✓[/] rewrote {escape(str(file))}")


def main() -> None:
    """Console-script entry point."""
    app()
from expkit import cli_cluster  # noqa: E402,F401  (registers the cluster commands)
from expkit import cli_cluster_setup  # noqa: E402,F401  (registers 'expkit cluster ...')

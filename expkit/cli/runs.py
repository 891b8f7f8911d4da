"""Commands that read a run store: ``list``, ``show``, ``results``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from expkit.cli.common import (
    ContextOpt,
    JsonOpt,
    KubeconfigOpt,
    NamespaceOpt,
    StoreOpt,
    app,
    err,
    handle_errors,
    open_checked_store,
    out,
    print_json,
    warn,
)
from expkit.core.errors import InputError

if TYPE_CHECKING:
    from expkit.analysis.report import Report
    from expkit.stores.base import RunStore

# ------------------------------------------------------------------------------------------------
# list / show
# ------------------------------------------------------------------------------------------------


@app.command("list")
@handle_errors
def list_cmd(
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster", help="List the expkit workflows in the cluster's namespace instead of the runs in the store."
        ),
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """List the runs in the store, newest first, with per-status counts; with --cluster, the workflows in the cluster.

    Example: [bold]expkit list --store s3://lab-bucket/expkit[/]; [bold]expkit list --cluster -n research[/]
    """
    from expkit.stores.catalog import list_runs

    if cluster:
        from expkit.cli.cluster import list_cluster

        list_cluster(kubeconfig, context, namespace, as_json)
        return

    run_store = open_checked_store(store)
    infos = list_runs(run_store)
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    if not infos:
        out.print(f"no runs in {escape(run_store.url)} yet: start one with 'expkit run FILE'")
        return
    table = Table("run", "experiment", "started", "status", "succeeded", "failed", "missing", box=None)
    for i in infos:
        if i.problem:
            warn(i.problem)
        table.add_row(
            i.run_id,
            escape(i.experiment),
            i.started_at[:19].replace("T", " "),
            escape(i.status) + (f" (imported from {escape(i.imported)})" if i.imported else ""),
            str(i.succeeded),
            f"[red]{i.failed}[/]" if i.failed else "0",
            str(i.missing),
        )
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
    from expkit.stores.catalog import show_run

    doc = show_run(open_checked_store(store), run_ref)
    if as_json:
        print_json(doc)
        return
    table = Table(show_header=False, box=None)
    for k, v in _show_rows(doc):
        table.add_row(f"[bold]{k}[/]", escape(str(v)))
    out.print(table)
    from expkit.adaptive.records import adaptive_summary

    for line in adaptive_summary(doc["manifest"]):  # an adaptive run: runs used and saved, why each dataset stopped
        out.print(escape(line), soft_wrap=True)
    if doc["failures"]:
        out.print(f"[red]failed cells ({len(doc['failures'])}):[/]")
        for f in doc["failures"][:50]:
            out.print(f"  {f['cell']}: {escape(str(f['reason']))} (attempts: {f['attempts']})")
            out.print(f"    log: {escape(str(f['log']))}")
        more = f" ({len(doc['failures']) - 50} more not shown)" if len(doc["failures"]) > 50 else ""
        out.print(f"their logs: [bold]expkit logs {doc['run_id']} --failed[/]{more}")


def _show_rows(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of ``expkit show``'s table: (label, value) from the run's manifest and counts."""
    m = doc["manifest"]
    c = doc["counts"]
    host = m.get("host") or {}
    seconds = doc["cell_seconds"]
    status = (
        f"{m.get('status')} — {c['succeeded']}/{c['total']} succeeded, {c['failed']} failed, {c['missing']} missing"
    )
    machine = (
        f"{host.get('hostname')} · {host.get('platform')} · Python {host.get('python')} · "
        f"{host.get('cpu_count')} CPUs · {host.get('cpu_model')}"
    )
    rows: list[tuple[str, Any]] = [
        ("run", doc["run_id"]),
        ("experiment", m.get("experiment")),
        ("store", doc["store"]),
        ("status", status),
        ("started", m.get("started_at")),
        ("ended", m.get("ended_at") or "not finished"),
        ("spec sha256", m.get("spec_sha256")),
        ("image", f"{m.get('image')}" + ("" if m.get("image_pinned") else "  (not pinned by digest)")),
        ("overrides", json.dumps(m.get("overrides") or {})),
        ("executor", f"{m.get('executor')}, {m.get('workers')} workers"),
        ("seeds", f"base {m.get('seed')}; {m.get('seed_scheme')}"),
        ("expkit", m.get("expkit_version")),
        ("host", machine),
        ("nodes", ", ".join(doc["nodes"]) or "-"),
    ]
    if m.get("imported"):
        source = m["imported"].get("from")
        note = f"{m['imported'].get('at')} from {source}: never resumed; re-run it with 'expkit reproduce {source}'"
        rows.insert(4, ("imported", note))
    if m.get("cluster"):
        rows.append(("cluster", _cluster_row(m["cluster"])))
    if isinstance(m.get("slurm"), dict):  # a run submitted with --to slurm
        sl = m["slurm"]
        jobs = ", ".join(f"{a.get('job_id')} ({a.get('kind')}, {a.get('cells')} cells)" for a in sl.get("arrays", []))
        rows.append(("slurm", f"Slurm {sl.get('version')} · cluster {sl.get('cluster') or '?'} · jobs {jobs or '-'}"))
    rows += _provenance_rows(m, doc.get("code_versions") or {})
    rows.append(
        (
            "cell time",
            f"total {seconds['total']}s, median {seconds['median']}s, max {seconds['max']}s"
            if seconds.get("median") is not None
            else "no finished cell yet",
        )
    )
    return rows


def _provenance_rows(m: dict[str, Any], versions: dict[str, int]) -> list[tuple[str, Any]]:
    """The rows about the run's code and environment, and the changes recorded by ``--allow-changes``."""
    from expkit.runs.code import describe_code
    from expkit.runs.environment import describe_environment

    rows: list[tuple[str, Any]] = [("code", describe_code(m.get("code")))]
    if m.get("executor") == "local" or m.get("environment"):
        rows.append(("environment", describe_environment(m.get("environment"))))
    changes = m.get("changes") or []
    if changes:
        sessions = ", ".join(str(c.get("session")) for c in changes)
        rows.append(("changes", f"code or environment changed before session {sessions} (--allow-changes)"))
    if len(versions) > 1:
        counts = "; ".join(f"{digest[:19]}…: {n} cell{'s' if n != 1 else ''}" for digest, n in versions.items())
        rows.append(("code versions", f"mixed — {counts}"))
    return rows


def _cluster_row(cluster: dict[str, Any]) -> str:
    """Where a run on Argo ran: context, API server, namespace, Kubernetes and Argo versions."""
    return (
        f"context {cluster.get('context')} · {cluster.get('server')} · namespace {cluster.get('namespace')} · "
        f"Kubernetes {cluster.get('server_version')} · Argo {cluster.get('argo_version') or 'unknown'}"
    )


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------


class _CollectProgress:
    """A progress bar for collecting large runs (shown on a terminal, for more than a few hundred objects)."""

    THRESHOLD = 500

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def on_total(self, total: int) -> None:
        """Show the bar when there are ``total`` objects to collect, if that is many and stderr is a terminal."""
        if total >= self.THRESHOLD and err.is_terminal:
            self.progress = Progress(
                TextColumn("collecting"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("collect", total=total)

    def on_progress(self, n: int) -> None:
        """Advance the bar by ``n`` collected objects."""
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def stop(self) -> None:
        """Remove the bar (it is transient)."""
        if self.progress is not None:
            self.progress.stop()


@app.command()
@handle_errors
def results(  # long: one parameter per command-line option, each with its help text
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, or 'latest'.")],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Directory for the report files (default: expkit-results/<run-id>)."),
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(
            "--metric",
            "-m",
            help="Analyse only this metric, with the goal the spec gives it (default: every metric the spec "
            "lists; the first drives the verdict, the others are secondary).",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="Significance level.")] = 0.05,
    aggregate: Annotated[
        str,
        typer.Option(
            "--aggregate", help="How replicates become one value per dataset across datasets: mean or median."
        ),
    ] = "mean",
    formats: Annotated[
        Optional[list[str]],
        typer.Option("--format", help="Plot formats (repeatable): png, pdf, svg. Default: png and pdf."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Draw plots expkit would refuse as misleading (e.g. a CD diagram over < 5 datasets)."
        ),
    ] = False,
    log_scale: Annotated[
        str,
        typer.Option(
            "--log-scale",
            metavar="auto|on|off",
            help="Box plots' y axis: auto (log where a dataset's values span more than three decades), on or off.",
        ),
    ] = "auto",
    failures: Annotated[
        Optional[str],
        typer.Option(
            "--failures",
            help="Failed runs: 'penalize' (worse than every successful run of the dataset) or 'exclude' "
            "(left out). Default: the spec's spec.failures, else penalize.",
        ),
    ] = None,
    table_ci: Annotated[
        bool,
        typer.Option("--table-ci", help="Add each cell's Hodges-Lehmann interval against the best to table.tex."),
    ] = False,
    control: Annotated[
        Optional[str],
        typer.Option(
            "--control",
            metavar="ALG",
            help="Compare every algorithm with ALG across datasets (Wilcoxon, Holm over k-1 tests) instead "
            "of every pair with every other: what a paper proposing ALG needs.",
        ),
    ] = None,
    rope: Annotated[
        Optional[float],
        typer.Option(
            "--rope",
            help="Region of practical equivalence of the Bayesian signed-rank test, in the primary metric's "
            "units (e.g. 0.01): smaller differences count as equivalent. Default: the spec's rope, else 0.",
        ),
    ] = None,
    bayes_threshold: Annotated[
        float,
        typer.Option(
            "--bayes-threshold",
            help="Posterior probability at which the Bayesian test decides (A better, equivalent, B better).",
        ),
    ] = 0.95,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the algorithms of a run: statistics, plots, CSV/LaTeX tables and a report.

    Writes results.csv, summary.csv, stats.json, table.tex, report.md, report.html and the plots.
    Example: [bold]expkit results latest -o paper/results --alpha 0.05 --control my-algorithm[/]
    """
    from expkit.analysis.report import stats_json
    from expkit.cli.cluster import sync_before_results
    from expkit.cli.slurm import sync_before_results as slurm_sync_before_results

    if aggregate not in ("mean", "median"):
        raise InputError(f"--aggregate {aggregate!r}: use mean or median")
    if failures not in (None, "penalize", "exclude"):
        raise InputError(f"--failures {failures!r}: use penalize or exclude")
    if log_scale not in ("auto", "on", "off"):
        raise InputError(f"--log-scale {log_scale!r}: use auto, on or off")
    run_store = open_checked_store(store)
    sync_before_results(run_ref, run_store)  # a run on Argo: bring its cells' status into the store first
    slurm_sync_before_results(run_ref, run_store)  # a run on Slurm: the same, from Slurm
    from expkit.adaptive.results import adaptive_design

    report = _build_report_with_progress(
        run_store,
        run_ref,
        design=adaptive_design(run_store, run_ref),  # an adaptive run: the sequential procedure's claims
        out_dir=output,
        metric=metric,
        alpha=alpha,
        aggregate=aggregate,
        formats=tuple(formats or ("png", "pdf")),
        force=force,
        log_scale=log_scale,
        failures=failures,
        table_intervals=table_ci,
        control=control,
        rope=rope,
        bayes_threshold=bayes_threshold,
    )
    if as_json:
        sys.stdout.write(stats_json(report.collected, report.analysis, report.metrics))
        return
    _print_report(report)


def _build_report_with_progress(store: RunStore, run_ref: str, **options: Any) -> Report:
    """:func:`~expkit.analysis.report.build_report` with a progress bar while a large run is collected."""
    from expkit.analysis.report import build_report

    bar = _CollectProgress()
    try:
        return build_report(store, run_ref, on_total=bar.on_total, on_progress=bar.on_progress, **options)
    finally:
        bar.stop()


def _print_report(report: Report) -> None:
    """The summary of a report, the plots it did not draw and where its files are."""
    for line in report.summary:
        out.print(escape(line))
    for reason in report.skipped_plots:
        warn(f"not drawn: {reason}")
    out.print(
        f"\nwrote {len(report.files)} files to [bold]{escape(str(report.out_dir))}[/] "
        f"(report.html, report.md, table.tex, stats.json, results.csv, summary.csv, plots)"
    )
    html = (report.out_dir / "report.html").resolve()
    out.print(f"report: [bold]{escape(str(html))}[/] — open it in a browser: {escape(_open_command(html))}")


def _open_command(path: Path) -> str:
    """How to open ``path`` in a browser from this platform's shell."""
    opener = {"darwin": "open", "win32": "start"}.get(sys.platform, "xdg-open")
    return f"{opener} {path}"

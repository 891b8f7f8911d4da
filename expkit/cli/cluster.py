"""The cluster commands of the ``expkit`` CLI: submit, status, logs, stop, retry, ``list --cluster``.

Registered on :data:`expkit.cli.app` when :mod:`expkit.cli` imports this module (its last line).
Every command takes the same connection flags: ``--kubeconfig`` (else ``$KUBECONFIG``, else
``~/.kube/config``; in a pod without a kubeconfig, the pod's service account), ``--context`` (else
the current context) and ``--namespace`` (else the run's namespace from its manifest, else the
context's, else ``default``). The library work is in :mod:`expkit.executors.argo` (:mod:`.runs`,
:mod:`.sync`, the client in :mod:`.client`); this module parses, calls, and formats.

Two helpers serve the commands of :mod:`expkit.cli.runs`: :func:`list_cluster` is ``expkit list
--cluster``, and :func:`sync_before_results` lets ``expkit results`` first sync the cell status of
a run submitted to Argo whose cells lack their ``run.json`` (connecting with the run's recorded
context and namespace, or ``$EXPKIT_KUBE_CONTEXT`` / ``$EXPKIT_NAMESPACE``); when the cluster cannot
be reached it says what to run and reports the cells as missing.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from expkit.cli.common import (
    ContextOpt,
    JsonOpt,
    KubeconfigOpt,
    NamespaceOpt,
    ParamsOpt,
    StoreOpt,
    app,
    err,
    handle_errors,
    open_checked_store,
    out,
    print_json,
    progress_seconds,
    warn,
)
from expkit.core.errors import ExpkitError, InputError

if TYPE_CHECKING:
    from expkit.executors.argo.client import ArgoClient
    from expkit.executors.argo.executor import Submission
    from expkit.executors.argo.runs import CellPod
    from expkit.executors.argo.sync import RunStatus
    from expkit.stores.base import RunStore

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run id, or 'latest' (newest run in the store).")]
_MAX_FOLLOW = 20


def _client(kubeconfig: str | None, context: str | None, namespace: str | None) -> ArgoClient:
    from expkit.executors.argo.client import ArgoClient

    return ArgoClient(kubeconfig, context, namespace)


def _run_and_manifest(
    store_url: str | None, run_ref: str, *, required: bool = False
) -> tuple[RunStore, str, dict[str, Any] | None]:
    """The store, the run id and its manifest (None when the run is not in the store and not ``required``)."""
    from expkit.core.errors import RunNotFound

    store = open_checked_store(store_url)
    try:
        run_id = store.resolve_run_id(run_ref)
        return store, run_id, store.manifest(run_id)
    except RunNotFound:
        if required or run_ref == "latest":
            raise
        return store, run_ref, None


def _on_slurm(manifest: dict[str, Any] | None) -> bool:
    """Whether the run was submitted to Slurm (``expkit submit --to slurm``): the commands dispatch to
    :mod:`expkit.cli.slurm`."""
    return (manifest or {}).get("executor") == "slurm"


def _connect_for(
    manifest: dict[str, Any] | None, kubeconfig: str | None, context: str | None, namespace: str | None
) -> ArgoClient:
    """Explicit flags first, then the run's recorded namespace, then the kubeconfig's defaults."""
    cluster = (manifest or {}).get("cluster") or {}
    return _client(kubeconfig, context, namespace or cluster.get("namespace"))


class _WatchView:
    """Live progress of a cluster run: a bar (on a terminal) and one line per newly failed cell."""

    def __init__(self, run_id: str, workflow: str) -> None:
        self.run_id, self.workflow = run_id, workflow
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]✓ {task.fields[ok]}[/] [red]✗ {task.fields[failed]}[/] ▶ {task.fields[running]} "
                "… {task.fields[pending]}  {task.fields[phase]}"
            ),
            TimeElapsedColumn(),
            console=err,
            transient=False,
            disable=not err.is_terminal,
        )
        self.task: Any = None
        self.reported: set[str] = set()
        self.phase: str | None = None
        self.last_line = float("-inf")  # when the last plain progress line was printed

    def __enter__(self) -> _WatchView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, status: RunStatus) -> None:
        """Show a new status: the bar, and a line per newly failed cell."""
        c = status.counts
        if self.task is None:
            self.task = self.progress.add_task(
                self.workflow, total=status.total, ok=0, failed=0, running=0, pending=status.total, phase=""
            )
        self.progress.update(
            self.task,
            total=status.total,
            completed=c["succeeded"] + c["failed"],
            ok=c["succeeded"],
            failed=c["failed"],
            running=c["running"],
            pending=c["pending"],
            phase=status.phase,
        )
        for cell, reason in status.failed.items():
            if cell not in self.reported:
                self.reported.add(cell)
                self.progress.console.print(f"[red]✗[/] {escape(cell)}: {escape(reason)}")
        now = time.monotonic()
        if not err.is_terminal and now - self.last_line >= progress_seconds():  # no bar: a plain line
            self.last_line = now
            err.print(
                f"progress: {c['succeeded'] + c['failed']}/{status.total} done ({c['failed']} failed), "
                f"{c['running']} running, {c['pending']} pending, workflow {status.phase}",
                markup=False,
            )
        if status.phase != self.phase and not err.is_terminal and not status.done:  # the summary follows at the end
            err.print(
                f"{self.workflow}: {status.phase} — {c['succeeded']}/{status.total} succeeded, {c['failed']} "
                f"failed, {c['running']} running, {c['pending']} pending"
            )
        self.phase = status.phase


def _print_status(status: RunStatus, store_url: str | None) -> None:
    c = status.counts
    mark = "[green]✓[/]" if status.ok else ("[red]✗[/]" if status.done else "▶")
    waiting = f"{c['pending']} not started" if status.done else f"{c['pending']} pending"  # done: never will
    out.print(
        f"{mark} run [bold]{escape(status.run_id)}[/]: {escape(status.phase)} — "
        f"{c['succeeded']}/{status.total} succeeded, {c['failed']} failed, {c['running']} running, {waiting}"
    )
    for w in status.workflows:
        note = f" ({escape(str(w.message))})" if w.message else ""
        out.print(f"  workflow {escape(w.name)}: {escape(w.phase)}{note}")
    if status.failed:
        out.print("failed cells:")
        for i, (cell, reason) in enumerate(status.failed.items()):
            if i == 20:
                out.print(f"  … and {len(status.failed) - 20} more (expkit status {status.run_id} --json)")
                break
            attempts = status.records.get(cell, {}).get("attempts")
            out.print(f"  {escape(cell)}: {escape(reason)}" + (f" (attempts: {attempts})" if attempts else ""))
    if store_url is not None:
        out.print(f"synced {status.synced} cell records into {escape(store_url)}")


# ------------------------------------------------------------------------------------------------
# submit
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def submit(  # long: one parameter per command-line option, each with its help text
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML); its images must be pinned by digest.")],
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    store: StoreOpt = None,
    params: ParamsOpt = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Follow the workflow until it finishes, sync the cells into the store, exit 1 if it failed (for CI).",
        ),
    ] = False,
    expkit_image: Annotated[
        Optional[str],
        typer.Option("--expkit-image", help="Pinned expkit image for the finalize exit handler (default: none)."),
    ] = None,
    to: Annotated[
        str, typer.Option("--to", metavar="WHERE", help="argo (Kubernetes, the default) or slurm (job arrays).")
    ] = "argo",
    as_json: JsonOpt = False,
) -> None:
    """Submit a spec to Argo Workflows as a new run; its outputs go to the S3 store (the cluster's artifact bucket).
    With --to slurm: to Slurm as job arrays, into a shared directory or S3 store (docs/slurm.md).

    Example: [bold]expkit submit experiment.yml --store s3://lab-bucket/expkit --watch[/]
    """
    from expkit.executors.argo.executor import check_images
    from expkit.executors.argo.runs import submit_run
    from expkit.spec import load_spec

    run_store = open_checked_store(store)
    if to != "argo":
        if to != "slurm":
            raise InputError(f"--to {to!r}: use argo (Kubernetes) or slurm")
        from expkit.cli import slurm

        slurm.submit(file, run_store, params or [], watch=watch, as_json=as_json)
        return
    loaded = load_spec(file, params or [])
    check_images(loaded, str(file))  # before connecting: an unpinned image is bad input (exit 2)
    for w in loaded.warnings:
        warn(w)
    with _client(kubeconfig, context, namespace) as argo:
        if loaded.experiment.spec.adaptive is not None:  # adaptive replicates: one workflow per wave
            from expkit.adaptive.argo_waves import submit_adaptive

            sub = submit_adaptive(file, run_store, argo, overrides=params or [], expkit_image=expkit_image)
        else:
            sub = submit_run(file, run_store, argo, overrides=params or [], expkit_image=expkit_image)
        if not as_json:
            err.print(
                f"submitted run [bold]{sub.run_id}[/]: {sub.cells} cells, {_workflows_text(sub)} in namespace "
                f"{sub.namespace} ({escape(sub.context)}, {escape(sub.server)})"
            )
        if not watch:
            _print_submitted(sub, as_json)
            return
        if loaded.experiment.spec.adaptive is not None:
            status = _drive(argo, run_store, sub.run_id, sub.workflow, expkit_image)
        else:
            status = _watch(argo, run_store, sub)
    _finish_watch(status, sub, run_store.url, as_json)


def _drive(argo: ArgoClient, run_store: RunStore, run_id: str, workflow: str, expkit_image: str | None) -> RunStatus:
    """Drive an adaptive run's waves (watch, sync, decide, submit the next wave) with the watch view."""
    from expkit.adaptive.argo_waves import drive_waves

    with _WatchView(run_id, workflow) as view:
        return drive_waves(argo, run_store, run_id, expkit_image=expkit_image, on_update=view.update)


def _watch_existing(argo: ArgoClient, run_store: RunStore, run_id: str, manifest: dict[str, Any]) -> RunStatus:
    """``status --watch``: drive an adaptive run's waves, or follow another run's workflows to their end."""
    from expkit.executors.argo.sync import watch_run

    names = [str(w.get("name")) for w in (manifest.get("cluster") or {}).get("workflows") or [] if w.get("name")]
    if isinstance(manifest.get("adaptive"), dict):
        return _drive(argo, run_store, run_id, names[0] if names else run_id, None)
    if not names:
        raise InputError(f"run {run_id} has no workflow recorded in its manifest: it did not run on Argo")
    return watch_run(argo, run_store, run_id, names)


def _workflows_text(sub: Submission) -> str:
    """``workflow NAME``, or for a sharded run ``N workflows FIRST .. LAST``."""
    names = sub.names
    return f"workflow {names[0]}" if len(names) == 1 else f"{len(names)} workflows {names[0]} .. {names[-1]}"


def _print_submitted(sub: Submission, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "run_id": sub.run_id,
                "workflow": sub.workflow,
                "workflows": list(sub.names),
                "namespace": sub.namespace,
                "context": sub.context,
                "server": sub.server,
                "cells": sub.cells,
                "store": sub.store_url,
            }
        )
        return
    out.print(sub.run_id)
    err.print(
        f"follow it: expkit status {sub.run_id} (or submit with --watch); logs: expkit logs "
        f"{sub.run_id}; results when done: expkit results {sub.run_id}"
    )


def _watch(argo: ArgoClient, run_store: RunStore, sub: Submission) -> RunStatus:
    from expkit.core.errors import Interrupted
    from expkit.executors.argo.sync import watch_run

    try:
        with _WatchView(sub.run_id, sub.workflow) as view:
            return watch_run(argo, run_store, sub.run_id, sub.names, view.update)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped watching; run {sub.run_id} keeps running on the cluster: follow it with "
            f"'expkit status {sub.run_id}', stop it with 'expkit stop {sub.run_id}'"
        ) from None


def _finish_watch(status: RunStatus, sub: Submission, store_url: str, as_json: bool) -> None:
    if as_json:
        print_json({**status.to_dict(), "workflow": sub.workflow, "namespace": sub.namespace, "store": store_url})
    else:
        _print_status(status, store_url)
        out.print(
            f"results: [bold]expkit results {sub.run_id}[/]"
            + ("" if status.ok else f"; rerun the failed cells: expkit retry {sub.run_id}")
        )
    if status.phase != "Succeeded":
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# status / stop / retry
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def status(  # long: one parameter per command-line option, each with its help text
    run_ref: RunArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    store: StoreOpt = None,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Only read the cluster; write nothing to the store.")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="An adaptive run: drive its waves until every dataset has stopped (continues an interrupted "
            "'submit --watch'); another run: follow its workflows until they finish.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a cluster run's phase, cell counts and failed cells; sync finished cells into the store.

    Example: [bold]expkit status latest --store s3://lab-bucket/expkit[/]
    """
    from expkit.executors.argo.sync import collect_status, sync_run

    run_store, run_id, manifest = _run_and_manifest(store, run_ref)
    if _on_slurm(manifest):
        from expkit.cli import slurm

        slurm.status(run_store, run_id, no_sync=no_sync, watch=watch, as_json=as_json)
        return
    if watch and (manifest is None or no_sync):
        raise InputError("--watch syncs the run into the store: leave out --no-sync, and give a run of the store")
    with _connect_for(manifest, kubeconfig, context, namespace) as argo:
        if watch and manifest is not None:
            result = _watch_existing(argo, run_store, run_id, manifest)
            synced_to = run_store.url
        elif manifest is None or no_sync:
            if manifest is None:
                warn(f"run {run_id} is not in {run_store.url}: showing the cluster's view, syncing nothing")
            result = collect_status(argo, run_id, total=(manifest or {}).get("cells"))
            synced_to = None
        else:
            result = sync_run(argo, run_store, run_id)
            synced_to = run_store.url
    if as_json:
        print_json(
            {
                **result.to_dict(),
                "store": synced_to,
                "cells": {
                    k: {
                        f: r.get(f)
                        for f in ("status", "reason", "exit_code", "attempts", "node", "duration_s", "workflow")
                    }
                    for k, r in sorted(result.records.items())
                },
            }
        )
        return
    _print_status(result, synced_to)


@app.command()
@handle_errors
def stop(
    run_ref: RunArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    store: StoreOpt = None,
) -> None:
    """Stop a cluster run (spec.shutdown: Stop): running cells are stopped, no new cell starts.

    Finished cells are kept; rerun the rest later with [bold]expkit retry RUN[/].
    Example: [bold]expkit stop exp-x7k2p[/]
    """
    from expkit.executors.argo.runs import stop_run

    run_store, run_id, manifest = _run_and_manifest(store, run_ref)
    if _on_slurm(manifest):
        from expkit.cli import slurm

        slurm.stop(run_store, run_id)
        return
    with _connect_for(manifest, kubeconfig, context, namespace) as argo:
        stopped = stop_run(argo, run_id)
    if not stopped:
        out.print(f"nothing to stop: every workflow of run {escape(run_id)} has finished")
        return
    out.print(f"stopping {', '.join(stopped)}; see [bold]expkit status {escape(run_id)}[/]")


@app.command()
@handle_errors
def retry(
    run_ref: RunArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    store: StoreOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the retry until it finishes (exit 1 if it failed).")
    ] = False,
    expkit_image: Annotated[
        Optional[str],
        typer.Option("--expkit-image", help="Pinned expkit image for the finalize exit handler (default: none)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rerun only the failed or missing cells of a cluster run, as a new workflow writing into the same run.

    Example: [bold]expkit retry exp-x7k2p --watch[/]
    """
    from expkit.executors.argo.runs import retry_run

    run_store, run_id, manifest = _run_and_manifest(store, run_ref, required=True)
    if _on_slurm(manifest):
        from expkit.cli import slurm

        slurm.retry(run_store, run_id, watch=watch, as_json=as_json)
        return
    with _connect_for(manifest, kubeconfig, context, namespace) as argo:
        sub = retry_run(argo, run_store, run_id, expkit_image=expkit_image)
        if sub is None:
            out.print(f"nothing to retry: every cell of run {escape(run_id)} succeeded")
            return
        if not as_json:
            err.print(
                f"retrying {sub.cells} cells of run [bold]{sub.run_id}[/] as {_workflows_text(sub)} in "
                f"namespace {sub.namespace}"
            )
        if not watch:
            if as_json:
                print_json(
                    {
                        "run_id": sub.run_id,
                        "workflow": sub.workflow,
                        "workflows": list(sub.names),
                        "namespace": sub.namespace,
                        "cells": sub.cells,
                    }
                )
            else:
                out.print(sub.workflow)
            return
        result = _watch(argo, run_store, sub)
    _finish_watch(result, sub, run_store.url, as_json)


# ------------------------------------------------------------------------------------------------
# logs
# ------------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def logs(  # long: one parameter per command-line option, each with its help text
    run_ref: RunArg,
    cell: Annotated[
        Optional[str],
        typer.Option("--cell", "-c", metavar="ALG/DATASET/REP", help="Only this cell, e.g. my-alg/iris/0."),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed cells.")] = False,
    algorithm: Annotated[Optional[str], typer.Option("--algorithm", "-a", help="Only this algorithm's cells.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset's cells.")] = None,
    replicate: Annotated[Optional[int], typer.Option("--replicate", "-r", help="Only this replicate.")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="A cluster run: stream the logs of running cells until they end (lines prefixed with the cell).",
        ),
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    store: StoreOpt = None,
) -> None:
    """Print the logs of a run's cells: their log.txt in the store (a directory or S3); for a run on Argo,
    the logs of its pods while they exist (--failed: the failed cells' stored logs).

    Example: [bold]expkit logs latest --failed[/]; [bold]expkit logs exp-x7k2p --cell cma-es/sphere/3[/]
    """
    from expkit.stores.cell_logs import parse_cell

    run_store, run_id, manifest = _run_and_manifest(store, run_ref)
    if cell is not None:
        algorithm, dataset, replicate = parse_cell(cell)
    if _on_slurm(manifest) and not follow:  # the cells' log.txt in the store, then the tasks' own output
        _print_stored_logs(
            run_store, run_id, cell=cell, failed=failed, algorithm=algorithm, dataset=dataset, replicate=replicate
        )
        if cell is None and not failed:
            from expkit.cli import slurm

            slurm.task_outputs(run_store, run_id, manifest or {})
        return
    on_cluster = manifest is None or bool(manifest.get("cluster")) or manifest.get("executor") == "argo"
    if not on_cluster or failed:
        if follow:
            raise InputError(f"--follow streams the pods of a run on Argo; run {run_id} {_where(manifest)}")
        _print_stored_logs(
            run_store, run_id, cell=cell, failed=failed, algorithm=algorithm, dataset=dataset, replicate=replicate
        )
        return
    try:
        pods = _print_pod_logs(
            run_id, manifest, (kubeconfig, context, namespace), algorithm, dataset, replicate, follow
        )
    except ExpkitError as err:
        if manifest is None or follow:
            raise
        warn(f"the cluster cannot be read ({err}); showing the logs kept in the store")
        pods = []
    if pods is not None:  # None: a pod was followed, and that stream is all there is
        stored = _logs_from_store(run_store, run_id, manifest, algorithm, dataset, replicate, skip=set(pods))
        if not pods and not stored:
            if cell is None and algorithm is None and dataset is None and replicate is None:
                raise InputError(
                    f"no logs for run {run_id} yet: no cell has a pod or a stored log (expkit status {run_id})"
                )
            raise InputError(
                f"no pods and no stored logs for those cells of run {run_id}: check the filters "
                f"(expkit status {run_id})"
            )


def _where(manifest: dict[str, Any] | None) -> str:
    executor = (manifest or {}).get("executor") or "local"
    return f"ran on the {executor} executor: its logs are complete in the store (leave out --follow)"


def _print_pod_logs(
    run_id: str,
    manifest: dict[str, Any] | None,
    connection: tuple[str | None, str | None, str | None],
    algorithm: str | None,
    dataset: str | None,
    replicate: int | None,
    follow: bool,
) -> list[str] | None:
    """Print (or with ``follow``, stream) the pod logs of the matching cells of a run on Argo; the cells
    printed (None when following: the stream is all there is)."""
    from expkit.executors.argo.runs import cell_pods

    with _connect_for(manifest, *connection) as argo:
        pods = cell_pods(argo, run_id, algorithm=algorithm, dataset=dataset, replicate=replicate)
        if follow:
            live = [p for p in pods if p.phase in ("Pending", "Running")] or pods[-1:]
            if len(live) > _MAX_FOLLOW:
                raise InputError(
                    f"--follow would stream {len(live)} pods at once (at most {_MAX_FOLLOW}): narrow it "
                    "with --cell or --algorithm/--dataset/--replicate"
                )
            if live:
                _follow(argo, live)
                return None
        for pod in pods:
            out.print(
                f"[bold]==> {escape(pod.cell)}[/] (attempt {pod.attempt}, pod {escape(pod.pod)}, "
                f"{escape(pod.phase)}, node {escape(str(pod.node))}) [bold]<==[/]"
            )
            for chunk in argo.pod_log(pod.pod):
                sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
    return [p.cell for p in pods]


def _print_stored_logs(store: RunStore, run_id: str, **selection: Any) -> None:
    """Print the stored ``log.txt`` of the finished cells that match ``selection`` (see
    :func:`expkit.stores.cell_logs.select_log_cells`), each under a header with its status and location."""
    from expkit.stores.cell_logs import read_log, select_log_cells

    chosen = select_log_cells(store, run_id, **selection)
    if not chosen:
        what = "failed cells" if selection.get("failed") else "finished cells matching the filters"
        out.print(f"run {run_id} has no {what}")
        return
    for c in chosen:
        status = c.status + (f": {c.reason}" if c.reason else "")
        out.print(f"==> {escape(c.cell)} ({escape(status)}; {escape(c.location)}) <==", soft_wrap=True)
        data = read_log(store, run_id, c.cell)
        sys.stdout.write(data.decode("utf-8", "replace") if data is not None else "(no log.txt)\n")
        sys.stdout.flush()


def _follow(argo: ArgoClient, pods: list[CellPod]) -> None:
    lines: queue.SimpleQueue[tuple[str, bytes | None]] = queue.SimpleQueue()
    failures: list[ExpkitError] = []

    def pump(pod: CellPod) -> None:
        buf = b""
        try:
            for chunk in argo.pod_log(pod.pod, follow=True):
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    lines.put((pod.cell, line))
            if buf:
                lines.put((pod.cell, buf))
        except ExpkitError as e:
            failures.append(e)
        except Exception as e:  # noqa: BLE001 - reported after the other streams end, never lost in a thread
            failures.append(ExpkitError(f"following the log of {pod.pod} failed: {e.__class__.__name__}: {e}"))
        finally:
            lines.put((pod.cell, None))

    threads = [threading.Thread(target=pump, args=(p,), daemon=True) for p in pods]
    for t in threads:
        t.start()
    open_streams = len(threads)
    while open_streams:
        cell, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        sys.stdout.write(f"[{cell}] {line.decode('utf-8', 'replace')}\n")
        sys.stdout.flush()
    if failures:
        raise failures[0]


def _logs_from_store(
    store: RunStore,
    run_id: str,
    manifest: dict[str, Any] | None,
    algorithm: str | None,
    dataset: str | None,
    replicate: int | None,
    skip: set[str],
) -> bool:
    """Print the stored ``log.txt`` of the matching finished cells that have no pod any more."""
    from expkit.core.contract import LOG_FILE
    from expkit.stores.base import ObjectNotFound, cell_prefix

    if manifest is None:
        return False
    printed = False
    for cell in sorted(store.completed_cells(run_id) - skip):
        alg, ds, rep = cell.split("/")
        if (
            (algorithm and alg != algorithm)
            or (dataset and ds != dataset)
            or (replicate is not None and rep != str(replicate))
        ):
            continue
        try:
            data = store.get(cell_prefix(run_id, cell) + LOG_FILE)
        except ObjectNotFound:
            continue
        out.print(f"[bold]==> {escape(cell)}[/] (from {escape(store.url)}: the pod is gone) [bold]<==[/]")
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        printed = True
    return printed


# ------------------------------------------------------------------------------------------------
# list --cluster, and results syncing first (called from expkit.cli.runs)
# ------------------------------------------------------------------------------------------------


def list_cluster(kubeconfig: str | None, context: str | None, namespace: str | None, as_json: bool) -> None:
    """``expkit list --cluster``: the expkit workflows in the cluster's namespace."""
    from expkit.executors.argo.runs import list_cluster_runs

    with _client(kubeconfig, context, namespace) as argo:
        rows = list_cluster_runs(argo)
        where = f"namespace {argo.namespace} ({argo.target.describe()})"
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        out.print(f"no expkit workflows in {escape(where)}")
        return
    table = Table("run", "workflow", "experiment", "phase", "progress", "started", "finished", box=None)

    def when(stamp: str | None) -> str:
        return (stamp or "-").replace("T", " ").rstrip("Z")

    for r in rows:
        table.add_row(
            r.run_id, r.workflow, r.experiment, r.phase, r.progress or "-", when(r.started_at), when(r.finished_at)
        )
    out.print(table)


def sync_before_results(run_ref: str | None, store: RunStore) -> None:
    """For a run submitted to Argo with cells lacking run.json: sync them from the cluster first (see
    :func:`expkit.executors.argo.sync.sync_for_results`). Never fails ``results``: when the cluster cannot
    be read, one warning says what to run."""
    from expkit.executors.argo.sync import sync_for_results

    result = sync_for_results(run_ref, store)
    if result.synced:
        err.print(f"synced {result.synced} cell records of {result.run_id} from the cluster ({result.where})")
    if not result.done:
        warn(f"run {result.run_id} is still {result.phase} on the cluster: these results are partial")
    if result.warning:
        warn(result.warning)


__all__ = ["list_cluster", "logs", "retry", "status", "stop", "submit", "sync_before_results"]

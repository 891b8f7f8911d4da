"""The Slurm side of the cluster commands: ``submit --to slurm``, and ``status``, ``stop``, ``retry``,
``logs`` of a run whose manifest says it ran on Slurm.

:mod:`expkit.cli.cluster` dispatches here (on ``--to slurm``, or on the run's recorded executor), so the
commands and their exit codes are the same as for Argo. The library work is in
:mod:`expkit.executors.slurm`; this module parses, calls and formats.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from expkit.cli.common import err, out, print_json, progress_seconds, warn

if TYPE_CHECKING:
    from expkit.executors.slurm.status import SlurmStatus
    from expkit.stores.base import RunStore


def _print_status(status: SlurmStatus, store_url: str | None) -> None:
    c = status.counts
    mark = "[green]✓[/]" if status.ok else ("[red]✗[/]" if status.done else "▶")
    out.print(
        f"{mark} run [bold]{escape(status.run_id)}[/] (Slurm): {escape(status.phase)} — {c['succeeded']}/"
        f"{status.total} succeeded, {c['failed']} failed, {c['running']} running, {c['pending']} pending, "
        f"{c['missing']} missing"
    )
    for w in status.workflows:
        out.print(f"  job {escape(w.job_id)} ({escape(w.name)}): {escape(w.phase)}")
    if status.failed:
        out.print("failed cells:")
        for i, (cell, reason) in enumerate(sorted(status.failed.items())):
            if i == 20:
                out.print(f"  … and {len(status.failed) - 20} more (expkit status {status.run_id} --json)")
                break
            out.print(f"  {escape(cell)}: {escape(reason)}")
    if store_url is not None and status.synced:
        out.print(f"synced {status.synced} cell records into {escape(store_url)}")


def _status_json(status: SlurmStatus, store_url: str | None) -> dict[str, Any]:
    fields = ("status", "reason", "exit_code", "attempts", "node", "duration_s")
    return {
        **status.to_dict(),
        "store": store_url,
        "cells": {k: {f: r.get(f) for f in fields} for k, r in sorted(status.records.items())},
    }


def _watch(run_store: RunStore, run_id: str) -> SlurmStatus:
    import time

    from expkit.core.errors import Interrupted
    from expkit.executors.slurm import SlurmClient, watch_run

    last = [float("-inf")]
    reported: set[str] = set()

    def update(status: SlurmStatus) -> None:
        for cell, reason in sorted(status.failed.items()):
            if cell not in reported:
                reported.add(cell)
                err.print(f"[red]✗[/] {escape(cell)}: {escape(reason)}")
        now = time.monotonic()
        if now - last[0] >= progress_seconds():
            last[0] = now
            c = status.counts
            err.print(
                f"progress: {c['succeeded'] + c['failed']}/{status.total} done ({c['failed']} failed), "
                f"{c['running']} running, {c['pending']} pending",
                markup=False,
            )

    try:
        return watch_run(SlurmClient(), run_store, run_id, update)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped watching; run {run_id} keeps running on Slurm: follow it with 'expkit status {run_id}', "
            f"stop it with 'expkit stop {run_id}'"
        ) from None


def _finish(status: SlurmStatus, run_store: RunStore, as_json: bool) -> None:
    if as_json:
        print_json(_status_json(status, run_store.url))
    else:
        _print_status(status, run_store.url)
        out.print(
            f"results: [bold]expkit results {status.run_id}[/]"
            + ("" if status.ok else f"; rerun the failed or missing cells: expkit retry {status.run_id}")
        )
    if not status.ok:
        raise typer.Exit(1)


def submit(file: Path, run_store: RunStore, params: list[str], *, watch: bool, as_json: bool) -> None:
    """``expkit submit FILE --to slurm``: a new run as job arrays."""
    from expkit.executors.slurm import SlurmClient, submit_run
    from expkit.executors.slurm.executor import check_container
    from expkit.spec import load_spec

    loaded = load_spec(file, params)
    check_container(loaded, str(file))  # before asking Slurm: an unpinned image is bad input (exit 2)
    container = bool(loaded.experiment.spec.slurm and loaded.experiment.spec.slurm.container)
    for w in loaded.warnings:
        if container or "not pinned by digest" not in w:  # without a container the image is not used
            warn(w)
    run_id, arrays = submit_run(file, run_store, SlurmClient(), overrides=params)
    cells = sum(int(a["cells"]) for a in arrays)
    if not as_json:
        jobs = ", ".join(f"{a['job_id']} ({a['tasks']} tasks)" for a in arrays)
        err.print(f"submitted run [bold]{run_id}[/] to Slurm: {cells} cells as job arrays {jobs}")
    if watch:
        _finish(_watch(run_store, run_id), run_store, as_json)
        return
    if as_json:
        print_json({"run_id": run_id, "cells": cells, "jobs": arrays, "store": run_store.url})
        return
    out.print(run_id)
    err.print(
        f"follow it: expkit status {run_id} (or submit with --watch); logs: expkit logs {run_id}; "
        f"results when done: expkit results {run_id}"
    )


def status(run_store: RunStore, run_id: str, *, no_sync: bool, watch: bool, as_json: bool) -> None:
    """``expkit status RUN`` of a Slurm run (``--watch``: follow it until no task is queued or running)."""
    from expkit.core.errors import InputError
    from expkit.executors.slurm import SlurmClient, collect_status, sync_run

    if watch:
        if no_sync:
            raise InputError("--watch syncs the run into the store: leave out --no-sync")
        _finish(_watch(run_store, run_id), run_store, as_json)
        return
    client = SlurmClient()
    result = collect_status(client, run_store, run_id) if no_sync else sync_run(client, run_store, run_id)
    where = None if no_sync else run_store.url
    if as_json:
        print_json(_status_json(result, where))
        return
    _print_status(result, where)


def stop(run_store: RunStore, run_id: str) -> None:
    """``expkit stop RUN`` of a Slurm run: scancel its queued and running jobs."""
    from expkit.executors.slurm import SlurmClient, stop_run

    stopped = stop_run(SlurmClient(), run_store, run_id)
    if not stopped:
        out.print(f"nothing to stop: every job of run {escape(run_id)} has finished")
        return
    out.print(f"cancelled Slurm jobs {', '.join(stopped)}; see [bold]expkit status {escape(run_id)}[/]")


def retry(run_store: RunStore, run_id: str, *, watch: bool, as_json: bool) -> None:
    """``expkit retry RUN`` of a Slurm run: the failed or missing cells as new arrays into the same run."""
    from expkit.executors.slurm import SlurmClient, retry_run

    submitted = retry_run(SlurmClient(), run_store, run_id)
    if submitted is None:
        out.print(f"nothing to retry: every cell of run {escape(run_id)} succeeded")
        return
    _, arrays = submitted
    cells = sum(int(a["cells"]) for a in arrays)
    if not as_json:
        err.print(
            f"retrying {cells} cells of run [bold]{run_id}[/] as Slurm jobs {', '.join(a['job_id'] for a in arrays)}"
        )
    if watch:
        _finish(_watch(run_store, run_id), run_store, as_json)
        return
    if as_json:
        print_json({"run_id": run_id, "cells": cells, "jobs": arrays})
    else:
        out.print(", ".join(str(a["job_id"]) for a in arrays))


def task_outputs(run_store: RunStore, run_id: str, manifest: dict[str, Any]) -> None:
    """Print the output files of the run's Slurm tasks (what the task wrapper itself logged)."""
    block = manifest.get("slurm") or {}
    logs = Path(str(block.get("dir", ""))) / "logs"
    files = sorted(logs.glob("*.out")) if logs.is_dir() else []
    if not files:
        out.print(f"no Slurm task output files in {escape(str(logs))}")
        return
    for path in files:
        out.print(f"[bold]==> {escape(path.name)}[/] ({escape(str(path))}) [bold]<==[/]")
        sys.stdout.write(path.read_text(errors="replace"))
        sys.stdout.flush()


def sync_before_results(run_ref: str | None, run_store: RunStore) -> None:
    """For a Slurm run whose cells lack run.json: sync from Slurm first; never fails ``results``."""
    from expkit.executors.slurm.status import sync_for_results

    result, warning = sync_for_results(run_ref, run_store)
    if result is not None and result.synced:
        err.print(f"synced {result.synced} cell records of {result.run_id} from Slurm")
    if result is not None and not result.done:
        warn(f"run {result.run_id} is still {result.phase} on Slurm: these results are partial")
    if warning:
        warn(warning)


__all__ = ["retry", "status", "stop", "submit", "sync_before_results", "task_outputs"]

"""What every ``expkit`` command shares: the Typer app, the common options, output on stdout/stderr,
and the mapping of library errors to exit codes (0 success, 1 failure, 2 bad input, 130 interrupted).

Errors are one line on stderr, never a traceback (``--debug`` shows one for bug reports). The command
modules (:mod:`.experiment`, :mod:`.runs`, :mod:`.reproduce`, :mod:`.cluster`, :mod:`.cluster_setup`)
import from here and register their commands on :data:`app`; nothing here imports them.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional, ParamSpec, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from expkit import __version__
from expkit.core.errors import ExpkitError

if TYPE_CHECKING:
    from expkit.executors.base import CellEvent
    from expkit.runner import RunOutcome
    from expkit.stores.base import RunStore

    _StreamHandler = logging.StreamHandler[TextIO]
else:
    _StreamHandler = logging.StreamHandler  # subscriptable at run time only from Python 3.11

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

P = ParamSpec("P")
R = TypeVar("R")

StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        envvar="EXPKIT_STORE",
        show_envvar=True,
        help="Run store: a directory (default ./expkit-runs) or s3://bucket/prefix.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
KubeconfigOpt = Annotated[
    Optional[str],
    typer.Option(
        "--kubeconfig",
        metavar="FILE",
        help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; in a pod "
        "without one, the pod's service account).",
    ),
]
ContextOpt = Annotated[
    Optional[str],
    typer.Option(
        "--context",
        envvar="EXPKIT_KUBE_CONTEXT",
        show_envvar=True,
        help="Kubeconfig context (default: the current one).",
    ),
]
NamespaceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--namespace",
        "-n",
        envvar="EXPKIT_NAMESPACE",
        show_envvar=True,
        help="Namespace (default: the run's, else the context's, else 'default').",
    ),
]
ParamsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="Override a parameter (repeatable); values parse as JSON when they can. Recorded in the run's manifest.",
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map library errors to one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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

    return wrapper


class _StderrHandler(_StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _version(value: bool) -> None:
    if value:
        out.print(f"expkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
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


def open_checked_store(url: str | None) -> RunStore:
    """The run store at ``url`` (default ./expkit-runs); a remote one is checked first (bucket, credentials)."""
    from expkit.stores import open_store

    store = open_store(url)
    check = getattr(store, "check", None)  # remote stores: fail fast on a bad bucket, credentials or endpoint
    if check is not None:
        check()
    return store


def print_json(doc: Any) -> None:
    """Print ``doc`` as indented JSON on stdout (anything JSON cannot encode as its ``str``)."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def warn(message: str) -> None:
    """Print a warning on stderr."""
    err.print(f"[yellow]warning:[/] {escape(message)}")


class ProgressView:
    """A live progress bar fed by executor events (from worker threads)."""

    def __init__(self) -> None:
        self.ok = self.failed = self.running = 0
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]✓ {task.fields[ok]}[/] [red]✗ {task.fields[failed]}[/] ▶ {task.fields[running]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            disable=not err.is_terminal,
        )
        self.task: TaskID | None = None

    def start(self, run_id: str, total: int) -> None:
        """Show the bar for a run of ``total`` cells (the runner's ``on_start``)."""
        self.progress.start()
        self.task = self.progress.add_task(run_id, total=total, ok=0, failed=0, running=0)
        err.print(f"run [bold]{run_id}[/]: {total} runs to do")

    def on_event(self, event: CellEvent) -> None:
        """Count a cell that started or finished, and print why a cell failed (the runner's ``on_event``)."""
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
                self.progress.update(
                    self.task, completed=self.ok + self.failed, ok=self.ok, failed=self.failed, running=self.running
                )

    def stop(self) -> None:
        """Stop the bar (it stays on the terminal)."""
        self.progress.stop()


def sigterm_to_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so that a killed run is recorded as interrupted (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def print_outcome(outcome: RunOutcome) -> None:
    """Print what a run achieved, its first failed cells and what to do next."""
    mark = "[green]✓[/]" if outcome.ok else "[red]✗[/]"
    out.print(
        f"{mark} run [bold]{outcome.run_id}[/] in {escape(outcome.store_url)}: {outcome.succeeded}/{outcome.total}"
        f" succeeded, {len(outcome.failed)} failed, {outcome.missing} missing "
        f"({outcome.ran} run now, {outcome.skipped} done before, {outcome.duration_s:.1f}s)"
    )
    if outcome.failed:
        out.print("failed runs:")
        for i, (cell, reason) in enumerate(outcome.failed.items()):
            if i == 20:
                out.print(f"  … and {len(outcome.failed) - 20} more (expkit show {outcome.run_id})")
                break
            out.print(f"  {cell}: {escape(reason)}")
        out.print(
            f"logs: expkit show {outcome.run_id}; rerun them: expkit run --resume {outcome.run_id} --rerun-failed"
        )
    out.print(f"results: [bold]expkit results {outcome.run_id}[/]")

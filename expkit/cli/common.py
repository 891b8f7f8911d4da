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
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
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
from expkit.cli.plain_help import ExpkitTyper
from expkit.core.errors import ExpkitError

if TYPE_CHECKING:
    from expkit.executors.base import CellEvent
    from expkit.runner import RunOutcome
    from expkit.stores.base import RunStore

    _StreamHandler = logging.StreamHandler[TextIO]
else:
    _StreamHandler = logging.StreamHandler  # subscriptable at run time only from Python 3.11

app = ExpkitTyper(
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
_interrupt: dict[str, Any] = {}  # the signal handlers replaced by sigterm_to_interrupt, the watchdog

P = ParamSpec("P")
R = TypeVar("R")

StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        metavar="URL",
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
        metavar="NAME",
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
        metavar="NAME",
        envvar="EXPKIT_NAMESPACE",
        show_envvar=True,
        help="Namespace (default: the run's, else the context's, else 'default').",
    ),
]
_PARAMS_HELP = "Override a parameter (repeatable); values parse as JSON when they can."
ParamsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--param", "-p", metavar="KEY=VALUE", help=f"{_PARAMS_HELP} Recorded in the run's manifest."),
]
#: ``-p`` of the commands that create no run (``validate``, ``render``): nothing is recorded.
CheckParamsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--param", "-p", metavar="KEY=VALUE", help=f"{_PARAMS_HELP} As 'expkit run -p' would apply it."),
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
            # An interrupt that reached here before the runner turned it into Interrupted (e.g. between the
            # canary cells and the fan-out): the finished cells are kept all the same, so say how to resume.
            run_id = _state.get("run_id")
            hint = f": finished cells are kept: resume with 'expkit run --resume {run_id}'" if run_id else ""
            raise _fail(f"interrupted{hint}", 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
            if _state["debug"]:
                err.print_exception()
            raise _fail(f"internal error: {e.__class__.__name__}: {e} (rerun with --debug and report it)", 1) from None
        finally:
            _state.pop("run_id", None)
            _end_of_command()

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


#: Seconds between the plain progress lines printed when stderr is not a terminal (EXPKIT_PROGRESS_SECONDS).
PROGRESS_SECONDS = 10.0


def progress_seconds() -> float:
    """Seconds between plain progress lines: ``EXPKIT_PROGRESS_SECONDS``, else :data:`PROGRESS_SECONDS`."""
    try:
        seconds = float(os.environ.get("EXPKIT_PROGRESS_SECONDS", PROGRESS_SECONDS))
    except ValueError:
        return PROGRESS_SECONDS
    return seconds if seconds > 0 else PROGRESS_SECONDS


def _duration(seconds: float) -> str:
    """``45s``, ``3m07s``, ``2h05m``: a duration for a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressView:
    """Progress fed by executor events (from worker threads): a live bar on a terminal; elsewhere (nohup, a
    batch scheduler, a log file) a plain line every :data:`PROGRESS_SECONDS`; nothing with ``quiet``."""

    def __init__(self, *, quiet: bool = False, failures: bool = True) -> None:
        self.ok = self.failed = self.running = 0
        self.total = 0
        self.quiet = quiet
        self.failures = failures and not quiet  # a line per failed cell, as it fails
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._live = False  # the bar was started (a disabled one still prints a newline when stopped)
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
            disable=quiet or not err.is_terminal,
        )
        self.task: TaskID | None = None

    def start(self, run_id: str, total: int, *, title: str | None = None) -> None:
        """Show the bar (or start the plain lines) for a run of ``total`` cells (the runner's ``on_start``);
        ``title`` replaces the first line ("run RUN: N runs to do")."""
        _state["run_id"] = run_id  # for the message of an interrupted run that must stop at once
        self.total, self._t0 = total, time.monotonic()
        if self.quiet:
            return
        if not self.progress.disable:
            self.progress.start()
            self._live = True
        self.task = self.progress.add_task(run_id, total=total, ok=0, failed=0, running=0)
        err.print(title or f"run [bold]{run_id}[/]: {total} runs to do")
        if not err.is_terminal and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, args=(progress_seconds(),), daemon=True)
            self._ticker.start()

    def line(self) -> str:
        """The plain progress line: done (failed), running, elapsed and the estimated time left."""
        with self._lock:
            done, failed, running = self.ok + self.failed, self.failed, self.running
        elapsed = time.monotonic() - self._t0
        eta = _duration(elapsed / done * (self.total - done)) if done else "?"
        return (
            f"progress: {done}/{self.total} done ({failed} failed), {running} running, "
            f"elapsed {_duration(elapsed)}, ETA {eta}"
        )

    def _tick(self, seconds: float) -> None:
        while not self._done.wait(seconds):
            err.print(self.line(), markup=False)

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
                    if self.failures:
                        self.progress.console.print(f"[red]✗[/] {event.cell}: {escape(event.reason or 'failed')}")
            if self.task is not None:
                self.progress.update(
                    self.task, completed=self.ok + self.failed, ok=self.ok, failed=self.failed, running=self.running
                )

    def notice(self, message: str) -> None:
        """Print a notice of the runner at once (an algorithm the early stop stopped; the outcome repeats it)."""
        if not self.quiet:
            self.progress.console.print(f"[yellow]{escape(message)}[/]")

    def stop(self) -> None:
        """Stop the bar (it stays on the terminal) or the plain lines."""
        self._done.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._live:
            self.progress.stop()
            self._live = False


#: How long a command may take to stop after SIGINT/SIGTERM before expkit kills its runs and exits at once.
FORCE_EXIT_SECONDS = 10.0


def sigterm_to_interrupt() -> None:
    """SIGINT and SIGTERM stop the command within seconds (installed from the main thread only).

    The first signal raises ``KeyboardInterrupt`` in the main thread: a run stops its processes, keeps
    what is published and records itself as interrupted (exit code 130). SIGINT counts even when it
    was inherited as ignored (a script's background job). If the command has not ended
    :data:`FORCE_EXIT_SECONDS` later — a store that does not answer, a stuck thread — or when a second
    signal arrives, every process of the runs is killed and expkit exits with 130 at once.
    """
    if threading.current_thread() is not threading.main_thread() or "signals" in _interrupt:
        return
    first: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if first:
            _force_exit(f"{name} again")
        first.append(time.monotonic())
        timer = threading.Timer(
            FORCE_EXIT_SECONDS, _force_exit, args=(f"not stopped {FORCE_EXIT_SECONDS:g}s after {name}",)
        )
        timer.daemon = True
        timer.start()
        _interrupt["timer"] = timer
        raise KeyboardInterrupt

    _interrupt["signals"] = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _end_of_command() -> None:
    """After a command: the signal handlers from before :func:`sigterm_to_interrupt` again (commands also
    run inside other programs, e.g. tests). Except after an interrupt while threads that the interpreter's
    exit waits for are still alive: then the watchdog and the handlers (a second signal stops at once) stay."""
    timer = _interrupt.get("timer")
    if timer is not None and any(not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return
    if timer is not None:
        timer.cancel()
    _interrupt.pop("timer", None)
    previous = _interrupt.pop("signals", None)
    if previous and threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            if handler is not None:  # None: not installed from Python; nothing to put back
                signal.signal(sig, handler)


def _force_exit(why: str) -> None:
    """Kill the processes of every run of this process and exit with 130 now (no cleanup: it may hang)."""
    from expkit.executors.local import kill_all_now

    try:
        kill_all_now()
    finally:
        run_id = _state.get("run_id")
        hint = f"expkit run --resume {run_id}" if run_id else "expkit run --resume latest"
        message = f"error: interrupted ({why}): stopped at once; finished cells are kept: resume with '{hint}'\n"
        try:
            os.write(2, message.encode())
        finally:
            os._exit(130)


def print_outcome(outcome: RunOutcome, verdict: Sequence[str] = ()) -> None:
    """Print what a run achieved, its first failed cells, the algorithms the early stop stopped, what to do
    next (matching the failures' cause), the ``verdict`` lines and how to see the full comparison."""
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
    for line in outcome.stopped:
        out.print(f"[yellow]{escape(line)}[/]")
    if outcome.hint:
        out.print(f"next: {escape(outcome.hint)}")
    elif outcome.missing:
        out.print(f"next: run what is missing: 'expkit run --resume {outcome.run_id}'")
    for line in verdict:
        out.print(escape(line))
    if outcome.succeeded:
        out.print(f"full comparison, plots and report: [bold]expkit results {outcome.run_id}[/]")

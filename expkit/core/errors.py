"""Exception classes. Every error expkit raises on purpose derives from :class:`ExpkitError`.

Each class carries the process exit code the CLI maps it to: 2 for bad input (the user can fix the
file or the flag), 1 for a failure while doing the work. Messages are one line, say what is wrong
and what to do, and never contain credentials.
"""

from __future__ import annotations


class ExpkitError(Exception):
    """Base class: a failure expkit expected and can explain in one line."""

    exit_code = 1


class InputError(ExpkitError):
    """Bad input from the user: a spec file, a flag, a parameter override."""

    exit_code = 2


class SpecError(InputError):
    """The experiment spec is invalid. ``str(err)`` names the file, the field path and the fix."""

    def __init__(
        self, message: str, *, path: str | None = None, field: str | None = None, line: int | None = None
    ) -> None:
        self.path = path
        self.field = field
        self.line = line
        self.detail = message
        self.others: list[str] = []  # further problems in the same file, formatted like this one
        where = path or "<spec>"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(prefix + message)


class StoreError(ExpkitError):
    """The run store cannot be read or written (missing run, unreachable server, bad object)."""


class RunNotFound(StoreError):
    """No run with the requested id exists in the store."""

    exit_code = 2


class ArtifactError(StoreError):
    """A stored artifact (result.json, an object key) is malformed or unsafe."""


class ExecutionError(ExpkitError):
    """Running the experiment failed as a whole (prepare step failed, executor crashed)."""


class Interrupted(ExpkitError):
    """The user interrupted the run; finished cells are kept and the run can be resumed."""

    exit_code = 130


class DiskFull(ExpkitError):
    """A write failed because the file system is full (or the user's quota is used up). The message names
    the path, the free space there and, when known, how much the write needed (see :mod:`expkit.core.diskfull`)."""

    def __init__(self, message: str, *, path: str, free: int | None = None, needed: int | None = None) -> None:
        self.path = path
        self.free = free
        self.needed = needed
        super().__init__(message)


class CanaryFailed(ExecutionError):
    """A canary cell (the first cell of an algorithm, run before the others) failed for a reason that fails
    every cell — a setup mistake; no other cell was started. The message names the cause and the fix."""

"""A run's output directory is untrusted input: checked before anything in it is read or published.

:func:`vet_outputs` runs after every process of the run is gone and before ``result.json`` is read.
It leaves only what a store can hold and a reader can trust — regular files and directories — and
says what it changed:

* a symbolic link is never followed: ``result.json`` as a link fails the cell (the reason names the
  link's target); any other link is removed, with a note in the cell's record;
* FIFOs, sockets and device files are removed (a FIFO would block whoever reads it);
* names that are not UTF-8, or that cannot be store keys, and paths longer than
  :data:`MAX_PATH_BYTES` bytes (deep nesting) are removed;
* ``run.json`` is expkit's: whatever the run put there is removed; a ``log.txt`` that is no longer a
  regular file is removed;
* a run that removed or replaced its output directory gets a fresh, empty one and fails.

Directories and files get owner read/write permission back, so that publishing, reading and removing
them never fails on a mode the run set. Removing a tree works at any depth (:func:`remove_tree`).
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from expkit.core.contract import LOG_FILE, RESULT_FILE, RUN_FILE
from expkit.core.errors import ArtifactError
from expkit.stores.base import check_key

log = logging.getLogger(__name__)

#: The longest path (UTF-8 bytes, relative to the output directory) a cell may publish: with the
#: store's prefix it stays under S3's 1024-byte key limit, and nesting stays bounded.
MAX_PATH_BYTES = 512
#: Notes kept in a cell's record (the rest are counted).
MAX_NOTES = 20
_QUOTE = 80

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass
class Vetted:
    """What :func:`vet_outputs` changed (``notes``) and, when the cell must fail, why (``problem``)."""

    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    dropped: int = 0

    def note(self, text: str) -> None:
        """Record one change (the first :data:`MAX_NOTES` are kept word for word)."""
        self.dropped += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)

    def summary(self) -> list[str]:
        """The notes for the cell's record, with a count of those left out."""
        extra = self.dropped - len(self.notes)
        return self.notes + ([f"... and {extra} more"] if extra > 0 else [])


def _q(text: str) -> str:
    """``text`` (a name a run chose) quoted for a one-line message: bytes that are not UTF-8 replaced,
    control characters escaped, the middle of a long one left out."""
    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    half = (_QUOTE - 3) // 2
    return repr(shown if len(shown) <= _QUOTE else shown[:half] + "..." + shown[-half:])  # a path's end names it


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def vet_outputs(stage: Path) -> Vetted:
    """Check and clean the output directory ``stage`` in place (see the module docstring)."""
    vetted = Vetted()
    try:
        st = os.lstat(stage)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        what = "removed its output directory (EXPKIT_OUTPUT_DIR)"
        if st is not None:
            link = " with a symbolic link" if stat.S_ISLNK(st.st_mode) else ""
            what = f"replaced its output directory (EXPKIT_OUTPUT_DIR){link}"
            os.unlink(stage)
        stage.mkdir()
        vetted.problem = f"the run {what}; nothing of it is kept"
        return vetted
    os.chmod(stage, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    _vet_top(stage, vetted)
    stack = [stage]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            entries = list(it)
        for entry in entries:
            sub = _vet_entry(stage, Path(entry.path), vetted)
            if sub is not None:
                stack.append(sub)
    return vetted


def _vet_top(stage: Path, vetted: Vetted) -> None:
    """The reserved names at the top: ``run.json`` (expkit's), ``log.txt``, ``result.json``."""
    run_file, log_file, result_file = stage / RUN_FILE, stage / LOG_FILE, stage / RESULT_FILE
    if os.path.lexists(run_file):
        _remove(run_file)
        vetted.note(f"removed the run's own {RUN_FILE}: that name is expkit's record of the cell")
    if not os.path.lexists(log_file):
        vetted.note(f"the run deleted its {LOG_FILE}: its output is lost")
    elif not stat.S_ISREG(os.lstat(log_file).st_mode):
        _remove(log_file)
        vetted.note(f"removed {LOG_FILE}: the run replaced its log with something that is not a file")
    if os.path.islink(result_file):
        target = _link_target(result_file)
        os.unlink(result_file)
        vetted.problem = (
            f"{RESULT_FILE} is a symbolic link (to {_q(target)}): write the file itself into the output "
            "directory; expkit never follows links"
        )
    elif os.path.isdir(result_file):
        vetted.problem = f"{RESULT_FILE} is a directory, not a file"


def _vet_entry(stage: Path, path: Path, vetted: Vetted) -> Path | None:
    """Check one entry; return it when it is a directory to descend into."""
    rel = path.relative_to(stage).as_posix()
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        target = _link_target(path)
        os.unlink(path)
        vetted.note(f"removed symbolic link {_q(rel)} -> {_q(target)}: links are not kept")
        return None
    problem = _name_problem(rel)
    if problem is None and not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        problem = f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'a special file')})"
    if problem is not None:
        _remove(path)
        vetted.note(f"removed {_q(rel)}: {problem}")
        return None
    wanted = stat.S_IRWXU if stat.S_ISDIR(st.st_mode) else stat.S_IRUSR | stat.S_IWUSR
    if stat.S_IMODE(st.st_mode) & wanted != wanted:
        os.chmod(path, stat.S_IMODE(st.st_mode) | wanted)
    return path if stat.S_ISDIR(st.st_mode) else None


def _name_problem(rel: str) -> str | None:
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if size > MAX_PATH_BYTES:
        return f"nested too deep or named too long (paths in the output directory are at most {MAX_PATH_BYTES} bytes)"
    try:
        check_key(rel)
    except ArtifactError:
        return "its name cannot be a store key (no backslashes or drive letters)"
    return None


def _remove(path: Path) -> None:
    """Remove a file, a link or a directory tree at ``path`` (never following links)."""
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    else:
        os.unlink(path)


def remove_tree(path: Path) -> None:
    """Remove the directory tree at ``path``, however deep: directories are moved up into one flat
    holding directory before they are emptied, so neither the recursion nor a path grows with the depth.
    Links inside are removed, never followed."""
    holding = path.parent / f".rm-{uuid.uuid4().hex[:12]}"
    holding.mkdir()
    os.rename(path, holding / "0")
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    hold_fd = os.open(holding, flags)
    try:
        queue, counter = ["0"], 1
        while queue:
            name = queue.pop()
            os.chmod(name, stat.S_IRWXU, dir_fd=hold_fd)  # a directory (checked before it was moved here)
            fd = os.open(name, flags, dir_fd=hold_fd)
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                for child, is_dir in entries:
                    if is_dir:
                        os.rename(child, str(counter), src_dir_fd=fd, dst_dir_fd=hold_fd)
                        queue.append(str(counter))
                        counter += 1
                    else:
                        os.unlink(child, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=hold_fd)
    finally:
        os.close(hold_fd)
    os.rmdir(holding)


def remove_quietly(path: Path) -> None:
    """:func:`remove_tree` (or unlink) that logs instead of raising: for cleaning up after a cell."""
    try:
        if os.path.lexists(path):
            _remove(path)
    except OSError as err:
        log.warning("could not remove %s: %s", path, err)

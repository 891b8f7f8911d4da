"""The code identity of a local run: which files it uses, hashed into one digest, and where git says they came from.

The files of a run are those of the spec file's directory (where every run starts), minus what is
excluded:

* in a git work tree, exactly what ``git ls-files --cached --others --exclude-standard`` lists (tracked
  files and untracked ones that ``.gitignore``, ``.git/info/exclude`` and the global excludes file do
  not exclude); elsewhere (no git, or a copy of the code unpacked from a bundle) every file, minus what
  a ``.gitignore`` in the directory or below excludes (gitignore syntax, by the ``pathspec`` package);
* in both cases, what an ``.expkitignore`` file (gitignore syntax, in the directory or below) excludes,
  the run store and results directories inside it, and what running code leaves behind
  (:data:`BUILTIN_EXCLUDES`: ``.git``, ``__pycache__``, ``*.pyc``, virtual environments, tool caches).

Symbolic links to files count with the content they point to; links to directories and broken links
are left out. The set is capped (:data:`MAX_FILES` files, :data:`MAX_BYTES` bytes): past the cap,
:class:`CodeTooLarge` (exit 2) names the biggest entries and how to exclude them.

The **code digest** is ``sha256:`` + the sha256 of the sorted lines ``<path>\\0<sha256 of the file>\\n``
(paths relative to the spec's directory, ``/``-separated, UTF-8): the same files with the same content
give the same digest on any machine, with or without git. :func:`code_identity` returns it with the
per-file list and, in a git work tree, the commit, whether the work tree is dirty, and the sha256 of
``git diff HEAD``. A cluster run's code is its image: :func:`image_identity`. :func:`code_diff` says
which files changed between two identities (what ``expkit run --resume`` checks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from expkit.core.errors import InputError

log = logging.getLogger(__name__)

#: At most this many files are hashed as a run's code.
MAX_FILES = 5000
#: At most this many bytes (50 MB) are hashed as a run's code.
MAX_BYTES = 50 * 1000 * 1000
#: Files that say what to exclude (gitignore syntax); ``.gitignore`` only where git does not read it itself.
EXPKITIGNORE = ".expkitignore"
GITIGNORE = ".gitignore"
#: Directory names never part of a run's code: version control, caches, virtual environments, run stores
#: and results written by expkit.
BUILTIN_EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "expkit-runs",
        "expkit-results",
        "expkit-reproduce",  # where 'expkit reproduce BUNDLE' unpacks a bundle's code
        # what well-known tools write into the working directory unless told otherwise
        "wandb",
        "mlruns",
        "lightning_logs",
        "smac3_output",
    }
)
#: File name patterns never part of a run's code: byte-compiled Python, Finder metadata, and
#: ``.expkitignore`` itself (it says what the code is, so excluding more never changes the code).
BUILTIN_EXCLUDED_FILES = ("*.pyc", "*.pyo", ".DS_Store", EXPKITIGNORE)
BUILTIN_EXCLUDES = (*sorted(f"{d}/" for d in BUILTIN_EXCLUDED_DIRS), *BUILTIN_EXCLUDED_FILES)
#: How many changed files or packages a message names before "and N more".
NAMED_AT_MOST = 10
#: How long a git command may take.
GIT_TIMEOUT_S = 60.0
#: The walk gives up counting past this many files (the message then says "more than").
_WALK_LIMIT = 200_000
_CHUNK = 1 << 20
_BUILTIN_FILES_SPEC = pathspec.GitIgnoreSpec.from_lines(BUILTIN_EXCLUDED_FILES)


class CodeTooLarge(InputError):
    """The spec's directory holds more than the cap; the message names the biggest entries and the fix."""


@dataclass(frozen=True)
class CodeFile:
    """One file of a run's code: its path relative to the spec's directory, its size and (once hashed) sha256."""

    path: str
    size: int
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``manifest.json``'s ``code.files``."""
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class CodeDiff:
    """Which files differ between two code identities (paths relative to the spec's directory)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self, at_most: int = NAMED_AT_MOST) -> str:
        """``modified run.py, added util.py`` — at most ``at_most`` names, then ``and N more``."""
        named = [f"modified {p}" for p in self.modified]
        named += [f"added {p}" for p in self.added]
        named += [f"removed {p}" for p in self.removed]
        return _at_most(named, at_most)

    def to_dict(self) -> dict[str, list[str]]:
        """As recorded in the manifest's ``changes``."""
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


# -- which files -------------------------------------------------------------------------------------


def code_files(spec_dir: str | Path, *, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """The files of the run code in ``spec_dir`` (see the module docstring), relative to it, sorted.

    ``exclude``: further directories or files to leave out (the run store, when it is inside). Raises
    :class:`CodeTooLarge` past the cap and :class:`~expkit.core.errors.InputError` for a directory that
    cannot be read."""
    return [Path(f.path) for f in _select(Path(spec_dir), exclude, MAX_FILES, MAX_BYTES)]


def _found(spec_dir: Path, exclude: Sequence[str | Path]) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of every file of the code in ``spec_dir``, uncapped, not hashed."""
    root = spec_dir.resolve()
    if not root.is_dir():
        raise InputError(f"{spec_dir}: not a directory; the run code is the spec file's directory")
    rules = _Rules(root, _excluded_inside(root, exclude))
    listed = _git_listing(root)
    return _from_listing(root, listed, rules) if listed else _walk(root, rules, "")


def run_exclusions(spec_dir: str | Path, code: Mapping[str, Any] | None) -> list[Path]:
    """The paths a run's sessions generated in ``spec_dir`` (its manifest's ``code.generated``), to pass as
    ``exclude=`` to :func:`code_files` / :func:`code_identity` for the file set of that run's code."""
    generated = code.get("generated") if isinstance(code, Mapping) else None
    return [Path(spec_dir) / g for g in generated or [] if isinstance(g, str)]


def _select(spec_dir: Path, exclude: Sequence[str | Path], max_files: int, max_bytes: int) -> list[CodeFile]:
    """The files of the code in ``spec_dir`` with their sizes (not yet hashed), sorted by path; capped."""
    files: list[CodeFile] = []
    total = 0
    for rel, size in _found(spec_dir, exclude):
        files.append(CodeFile(rel, size))
        total += size
        if len(files) > _WALK_LIMIT:
            break
    if len(files) > max_files or total > max_bytes:
        raise CodeTooLarge(_too_large(spec_dir, files, total, max_files, max_bytes))
    return sorted(files, key=lambda f: f.path)


def _excluded_inside(root: Path, exclude: Sequence[str | Path]) -> set[str]:
    """The relative paths under ``root`` of the ``exclude`` paths that lie inside it."""
    inside: set[str] = set()
    for path in exclude:
        try:
            rel = Path(path).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        if rel.parts:
            inside.add(rel.as_posix())
    return inside


class _Rules:
    """What is excluded below ``root``: built-in names, the ``extra`` paths and the ignore files' patterns
    (``.expkitignore`` everywhere; ``.gitignore`` too when git does not apply them itself)."""

    def __init__(self, root: Path, extra: set[str]) -> None:
        self.root = root
        self.extra = extra
        self.names: tuple[str, ...] = (EXPKITIGNORE, GITIGNORE)
        self._specs: dict[str, list[pathspec.GitIgnoreSpec]] = {}
        self._dirs: dict[str, bool] = {}

    def _specs_of(self, rel_dir: str) -> list[pathspec.GitIgnoreSpec]:
        """The patterns of the ignore files in ``rel_dir``, the most decisive (``.expkitignore``) first."""
        if rel_dir not in self._specs:
            specs = []
            for name in self.names:
                path = self.root / rel_dir / name
                try:
                    if path.is_file():
                        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                        specs.append(pathspec.GitIgnoreSpec.from_lines(lines))
                except OSError as err:
                    raise InputError(f"{path}: cannot read it ({err.strerror or err}); make it readable") from err
            self._specs[rel_dir] = specs
        return self._specs[rel_dir]

    def _ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the nearest ignore file with a matching pattern excludes ``rel`` (git's precedence)."""
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:depth])
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            for spec in self._specs_of(base):
                verdict = spec.check_file(sub).include
                if verdict is not None:
                    return bool(verdict)
        return False

    def dir_excluded(self, rel: str) -> bool:
        """Whether the directory ``rel`` (and so everything below it) is excluded."""
        if rel not in self._dirs:
            parent = rel.rpartition("/")[0]
            name = rel.rpartition("/")[2]
            self._dirs[rel] = (
                (bool(parent) and self.dir_excluded(parent))
                or name in BUILTIN_EXCLUDED_DIRS
                or rel in self.extra
                or (self.root / rel / "pyvenv.cfg").is_file()  # a virtual environment, whatever its name
                or self._ignored(rel, True)
            )
        return self._dirs[rel]

    def file_excluded(self, rel: str) -> bool:
        """Whether the file ``rel`` is excluded (by a directory above it or by a pattern)."""
        parent = rel.rpartition("/")[0]
        if parent and self.dir_excluded(parent):
            return True
        return rel in self.extra or _BUILTIN_FILES_SPEC.match_file(rel) or self._ignored(rel, False)


def _walk(root: Path, rules: _Rules, rel_dir: str) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of every file below ``root/rel_dir`` the rules keep (links to files followed)."""
    try:
        entries = sorted(os.scandir(root / rel_dir), key=lambda e: e.name)
    except OSError as err:
        raise InputError(f"{root / rel_dir}: cannot list it ({err.strerror or err}); make it readable") from err
    for entry in entries:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if entry.is_dir(follow_symlinks=False):
            if not rules.dir_excluded(rel):
                yield from _walk(root, rules, rel)
            continue
        size = _regular_size(root / rel)
        if size is not None and not rules.file_excluded(_checked_name(root, rel)):
            yield rel, size


def _from_listing(root: Path, listed: list[str], rules: _Rules) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of the files git listed that the rules keep (a listed directory — a
    submodule — is walked)."""
    rules.names = (EXPKITIGNORE,)  # git has applied .gitignore already
    for rel in sorted(set(listed)):
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            if not rules.dir_excluded(rel):
                yield from _walk(root, rules, rel)
            continue
        size = _regular_size(path)
        if size is not None and not rules.file_excluded(_checked_name(root, rel)):
            yield rel, size


def _regular_size(path: Path) -> int | None:
    """The size of the regular file at ``path`` (links followed); None for anything else or a broken link."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _checked_name(root: Path, rel: str) -> str:
    """``rel`` when it is UTF-8 text (a manifest and a bundle hold it); InputError naming the file otherwise."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{root / rel!r}: the file name is not UTF-8; rename it, or exclude it in {root / EXPKITIGNORE}"
        ) from None
    return rel


def _too_large(spec_dir: Path, files: list[CodeFile], total: int, max_files: int, max_bytes: int) -> str:
    """One line: how big the code is, the biggest entries (top-level directories or files) and the fix."""
    by_top: dict[str, list[int]] = {}
    for f in files:
        top, sep, _ = f.path.partition("/")
        entry = by_top.setdefault(top + ("/" if sep else ""), [0, 0])
        entry[0] += 1
        entry[1] += f.size
    key = 1 if total > max_bytes else 0
    biggest = sorted(by_top.items(), key=lambda kv: (-kv[1][key], kv[0]))[:3]
    named = ", ".join(
        f"{name} ({n:,} files, {_mb(size)})" if name.endswith("/") else f"{name} ({_mb(size)})"
        for name, (n, size) in biggest
    )
    count = f"more than {_WALK_LIMIT:,}" if len(files) > _WALK_LIMIT else f"{len(files):,}"
    example = biggest[0][0] if biggest else "data/"
    return (
        f"{spec_dir}: the run code (this directory's files) is too big to hash: {count} files, {_mb(total)} "
        f"(limits: {max_files:,} files, {_mb(max_bytes)}); biggest: {named}; exclude data and outputs with a "
        f"{EXPKITIGNORE} file there (gitignore syntax, e.g. a line '{example}') or with .gitignore"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


# -- hashing -----------------------------------------------------------------------------------------


def code_identity(
    spec_dir: str | Path,
    *,
    exclude: Sequence[str | Path] = (),
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """The code identity of a local run started from ``spec_dir``, as stored in ``manifest.json``:
    ``{"source": "files", "digest", "files": [{path, sha256, size}], "bytes", "git": {...} | None}``."""
    root = Path(spec_dir)
    files = [_hashed(root, f) for f in _select(root, exclude, max_files, max_bytes)]
    return {
        "source": "files",
        "digest": digest_of(files),
        "files": [f.to_dict() for f in files],
        "bytes": sum(f.size for f in files),
        "git": git_info(root),
    }


def digest_of(files: Sequence[CodeFile]) -> str:
    """``sha256:`` + the sha256 over the sorted ``<path>\\0<sha256>\\n`` lines of ``files``."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def _hashed(root: Path, f: CodeFile) -> CodeFile:
    """``f`` with the sha256 (and the size) of its content now."""
    path = root / f.path
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as err:
        raise InputError(
            f"{path}: cannot read it to hash the run code ({err.strerror or err}); make it readable, or "
            f"exclude it in {root / EXPKITIGNORE}"
        ) from err
    return CodeFile(f.path, size, h.hexdigest())


def image_identity(image: str | None) -> dict[str, Any]:
    """A cluster run's code identity: its image, and the image's digest when it is pinned."""
    match = re.search(r"@(sha256:[0-9a-f]{64})$", image or "")
    return {"source": "image", "image": image, "digest": match.group(1) if match else None}


def after_session(
    spec_dir: str | Path, start: Mapping[str, Any], *, exclude: Sequence[str | Path] = ()
) -> tuple[list[str], dict[str, Any] | None]:
    """What a session did to the code it started with (``start``, a :func:`code_identity`): the paths it
    added — outputs of the runs or the prepare step, a whole new directory as one path — and, when a file
    of ``start`` was modified or removed meanwhile, the code identity now (else None). Uncapped, and only
    the files of ``start`` are read, so a prepare step that downloads gigabytes costs a listing."""
    root = Path(spec_dir)
    known = _file_hashes(start)
    known_dirs = {p.rsplit("/", 1)[0] for p in known if "/" in p}
    known_dirs |= {d.rsplit("/", i)[0] for d in list(known_dirs) for i in range(1, d.count("/") + 1)}
    added: set[str] = set()
    kept: list[CodeFile] = []
    for rel, size in _found(root, exclude):
        if rel in known:
            kept.append(CodeFile(rel, size))
            continue
        parts = rel.split("/")
        prefix = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) not in known_dirs), rel)
        added.add(prefix)
    now = [_hashed(root, f) for f in kept]
    if len(now) == len(known) and all(known[f.path] == f.sha256 for f in now):
        return sorted(added), None
    return sorted(added), {
        "source": "files",
        "digest": digest_of(now),
        "files": [f.to_dict() for f in now],
        "bytes": sum(f.size for f in now),
        "git": git_info(root),
    }


# -- git ---------------------------------------------------------------------------------------------


def _git(args: Sequence[str], cwd: Path) -> bytes | None:
    """The stdout of ``git ARGS`` run in ``cwd`` (an argv list, no shell); None when git is missing or fails."""
    exe = shutil.which("git")
    if exe is None:
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            [exe, *args], cwd=cwd, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.info("git %s in %s: %s", args[0], cwd, err)
        return None
    if proc.returncode != 0:
        log.debug("git %s in %s: exit %d: %s", args[0], cwd, proc.returncode, proc.stderr[:200])
        return None
    return proc.stdout


def _git_listing(root: Path) -> list[str] | None:
    """What git lists in ``root`` (tracked, and untracked not ignored), relative to it; None outside a work
    tree, when git is missing, or when git lists nothing (the directory itself is ignored)."""
    if _git(["rev-parse", "--is-inside-work-tree"], root) != b"true\n":
        return None
    out = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], root)
    if not out:
        return None
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def git_info(spec_dir: str | Path) -> dict[str, Any] | None:
    """Where the code came from when ``spec_dir`` is in a git work tree: ``commit`` (None before the first),
    ``dirty`` (``git status`` shows any change or untracked file), ``diff_sha256`` (of ``git diff HEAD
    --binary``, None when that is empty) and ``remote`` (``origin``'s URL without credentials)."""
    root = Path(spec_dir).resolve()
    top = _git(["rev-parse", "--show-toplevel"], root)
    if not top:
        return None
    top_dir = Path(os.fsdecode(top.strip()))
    head = _git(["rev-parse", "--verify", "-q", "HEAD"], top_dir)
    status = _git(["status", "--porcelain", "-z"], top_dir)
    diff = _git(["diff", "HEAD", "--binary", "--no-ext-diff", "--no-color"], top_dir) if head else None
    remote = _git(["config", "--get", "remote.origin.url"], top_dir)
    return {
        "commit": head.decode().strip() if head else None,
        "dirty": bool(status),
        "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None,
        "remote": strip_credentials(remote.decode("utf-8", "replace").strip()) if remote else None,
        "path": os.path.relpath(root, top_dir).replace(os.sep, "/"),
    }


def strip_credentials(url: str) -> str:
    """``url`` without a user or password (``https://user:token@host/x`` → ``https://host/x``)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


# -- comparing ---------------------------------------------------------------------------------------


def code_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> CodeDiff:
    """Which files were added, removed or modified from the code identity ``old`` to ``new``."""
    before = _file_hashes(old)
    after = _file_hashes(new)
    return CodeDiff(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        modified=sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    )


def _file_hashes(identity: Mapping[str, Any]) -> dict[str, str]:
    files = identity.get("files") or []
    return {str(f.get("path")): str(f.get("sha256")) for f in files if isinstance(f, Mapping)}


def _at_most(items: Sequence[str], at_most: int) -> str:
    """``a, b, c`` — at most ``at_most`` items, then ``and N more``."""
    shown = ", ".join(items[:at_most])
    return shown + (f" and {len(items) - at_most} more" if len(items) > at_most else "")


def describe_list(items: Sequence[str], at_most: int = NAMED_AT_MOST) -> str:
    """``items`` joined, at most ``at_most`` of them, then ``and N more`` (for one-line messages)."""
    return _at_most(items, at_most)


# -- summaries ---------------------------------------------------------------------------------------


def describe_code(code: Mapping[str, Any] | None) -> str:
    """One line about a run's code: ``sha256:1a2b3c4d5e6f… · 12 files, 0.1 MB · git 0123abc (dirty)``."""
    if not isinstance(code, Mapping):
        return "not recorded (a run from before expkit recorded its code)"
    digest = str(code.get("digest") or "")
    short = digest[:19] + "…" if len(digest) > 19 else digest or "no digest"
    if code.get("source") == "image":
        return f"the image {code.get('image')}" + (f" ({short})" if code.get("digest") else " (not pinned: no digest)")
    files = code.get("files") or []
    text = f"{short} · {len(files)} files, {_mb(int(code.get('bytes') or 0))}"
    git = code.get("git")
    if isinstance(git, Mapping):
        commit = str(git.get("commit") or "")[:12] or "no commit yet"
        text += f" · git {commit}" + (" (dirty)" if git.get("dirty") else "")
    return text


def code_versions(records: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """The cells (sorted keys) that ran under each code digest, from their ``run.json`` records (cells from
    before expkit recorded it fall under ``unknown``)."""
    versions: dict[str, list[str]] = {}
    for key, record in sorted(records.items()):
        if record.get("invalid_record"):
            continue
        versions.setdefault(str(record.get("code_digest") or "unknown"), []).append(key)
    return versions


def describe_change(entry: Mapping[str, Any]) -> str:
    """One line about a change recorded in the manifest's ``changes``: ``session 2: modified run.py;
    numpy 1.26.4 → 2.0.0``."""
    parts: list[str] = []
    code = entry.get("code")
    if isinstance(code, Mapping) and isinstance(code.get("files"), Mapping):
        files = code["files"]
        diff = CodeDiff(*(list(files.get(k) or []) for k in ("added", "removed", "modified")))
        if diff:
            parts.append(diff.describe())
    env = entry.get("environment")
    if isinstance(env, Mapping):
        named = [f"Python {' → '.join(str(v) for v in env['python'])}"] if env.get("python") else []
        packages = env.get("packages")
        for name, pair in sorted(packages.items() if isinstance(packages, Mapping) else []):
            old, new = (list(pair) + [None, None])[:2] if isinstance(pair, list) else (None, None)
            named.append(
                f"added {name} {new}"
                if old is None
                else f"removed {name} {old}"
                if new is None
                else f"{name} {old} → {new}"
            )
        if env.get("executable"):
            named.append("the command's executable")
        if env.get("libc"):
            named.append(f"C library {' → '.join(str(v) for v in env['libc'])}")
        if named:
            parts.append(describe_list(named))
    return f"session {entry.get('session')}: " + ("; ".join(parts) or "the code digest changed")

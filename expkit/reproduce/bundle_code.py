"""The run code and environment in a paper bundle: written by ``expkit export``, unpacked and checked by
``expkit reproduce``.

A local run's manifest lists the files of its code (``code.files``: path, sha256, size — the file set
of :func:`expkit.runs.code.code_identity`) and their digest. :func:`export_code` copies exactly those
files from the run's spec directory (or ``--code-dir``) while hashing them, and refuses — naming the
files — when one changed or went missing since the run: a bundle holds the code that ran, or no code.
:func:`requirements_file` writes the packages the runs' interpreter had (``environment.packages``)
as a pip requirements file with exact versions. :func:`materialize_code` puts a bundle's ``code/``
into a directory for a re-run — unpacked into an empty one, or checked against one that already
holds it — and verifies every file and the digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expkit.core.errors import ArtifactError, InputError
from expkit.reproduce.bundle_crate import CODE_DIR, block
from expkit.reproduce.bundle_read import Bundle
from expkit.runs.code import CodeFile, describe_list, digest_of
from expkit.runs.environment import requirements_text
from expkit.stores.base import check_key

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


def code_block(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The manifest's code identity when it lists files (a local run), else None (a cluster run's image)."""
    code = manifest.get("code")
    if isinstance(code, Mapping) and code.get("source") == "files" and isinstance(code.get("files"), list):
        return code
    return None


def _listed(code: Mapping[str, Any], where: str) -> dict[str, str]:
    """``{path: sha256}`` of the manifest's code files, every path a safe relative one."""
    files: dict[str, str] = {}
    for entry in code.get("files") or []:
        path = str(entry.get("path")) if isinstance(entry, Mapping) else ""
        try:
            check_key(path)
        except ArtifactError:
            raise InputError(f"{where}: code.files lists the unsafe path {path[:80]!r}; the manifest is damaged") from (
                None
            )
        files[path] = str(entry.get("sha256"))
    return files


def _copy_hashing(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` (directories created; executable stays executable) and return the sha256
    of what was copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        if os.fstat(fin.fileno()).st_mode & 0o100:
            os.chmod(dest, 0o755)
    return digest.hexdigest()


def export_code(
    manifest: Mapping[str, Any], run_id: str, code_dir: str | Path | None, scratch: Path
) -> dict[str, Path]:
    """The bundle entries ``code/<path>`` of a local run: its code files copied into ``scratch`` from
    ``code_dir`` (default: the run's spec directory), each checked against the manifest's sha256. Empty
    for a run whose code is its image. Raises :class:`InputError` naming the files that changed."""
    code = code_block(manifest)
    if code is None:
        return {}
    listed = _listed(code, f"run {run_id}: manifest.json")
    recorded = manifest.get("spec_dir")
    root = Path(code_dir) if code_dir is not None else Path(str(recorded)) if recorded else None
    if root is None or not root.is_dir():
        flag = f"--code-dir {code_dir}" if code_dir is not None else f"the run's spec directory {recorded}"
        raise InputError(
            f"run {run_id}: {flag} is not a directory on this machine, and the bundle holds the run code: pass "
            f"--code-dir DIR with the code as it was when the run ran{_commit_hint(code)}, or --no-code to leave "
            "the code out"
        )
    entries: dict[str, Path] = {}
    changed: list[str] = []
    for path, sha in sorted(listed.items()):
        dest = scratch / path
        try:
            got = _copy_hashing(root / path, dest)
        except OSError:
            changed.append(f"removed {path}")
            continue
        if got != sha:
            changed.append(f"modified {path}")
        entries[f"{CODE_DIR}/{path}"] = dest
    if changed:
        raise InputError(
            f"run {run_id}: the run code in {root} changed since the run ({describe_list(changed)}); a bundle holds "
            f"the code that ran: restore it{_commit_hint(code)}, pass --code-dir DIR with a copy as it was, or "
            "--no-code to leave the code out"
        )
    return entries


def _commit_hint(code: Mapping[str, Any]) -> str:
    git = block(code, "git")
    commit = git.get("commit")
    if not commit:
        return ""
    return f" (git commit {str(commit)[:12]}" + (" plus local changes" if git.get("dirty") else "") + ")"


def requirements_file(manifest: Mapping[str, Any], run_id: str) -> bytes | None:
    """``requirements.txt``: the runs' packages with exact versions, under a header naming the interpreter,
    the OS and the C library; None when the run recorded no packages."""
    env = manifest.get("environment")
    if not isinstance(env, Mapping) or not isinstance(env.get("packages"), Mapping):
        return None
    python = block(env, "python")
    recorded = f"recorded by expkit {env.get('expkit_version')}"
    interpreter = f"Python {python.get('version')} ({python.get('implementation')})"
    header = [
        f"# The packages the runs of {run_id} used, with their exact versions ({recorded}).",
        f"# {interpreter}; {env.get('os')}; C library {env.get('libc')}.",
        "# Install into a fresh virtual environment: pip install -r requirements.txt",
    ]
    return ("\n".join(header) + "\n" + requirements_text(env)).encode()


def bundle_code_entries(bundle: Bundle) -> list[str]:
    """The bundle's ``code/`` entries, sorted."""
    return sorted(n for n in bundle.extras if n.startswith(f"{CODE_DIR}/"))


def materialize_code(bundle: Bundle, dest: Path) -> str:
    """Make ``dest`` hold the bundle's run code: unpack it when ``dest`` is missing or empty, else check
    the files already there. Every file's sha256 and the code digest are verified against the manifest;
    returns the digest. Raises :class:`InputError` naming what differs."""
    code = code_block(bundle.manifest)
    if code is None:
        raise InputError(f"{bundle.path}: the run's code is its image, not files; pass --spec-dir with a checkout")
    listed = _listed(code, f"{bundle.path}: manifest.json")
    present = {n[len(CODE_DIR) + 1 :] for n in bundle_code_entries(bundle)}
    if present != set(listed):
        missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
        what = "; ".join(p for p in (_named("missing", missing), _named("not in the manifest", extra)) if p)
        raise InputError(f"{bundle.path}: code/ does not hold the files manifest.json lists ({what}); refusing it")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--spec-dir {dest}: not a directory; give a new or empty directory to unpack the code into")
    if dest.is_dir() and any(dest.iterdir()):
        got = {p: _sha256(dest / p) for p in listed}
        where = f"{dest} (already there)"
    else:
        got = _unpack(bundle, dest, sorted(listed))
        where = str(dest)
    changed = [f"modified {p}" if got[p] else f"missing {p}" for p, sha in sorted(listed.items()) if got[p] != sha]
    if changed:
        raise InputError(
            f"{where}: the code differs from the bundle's ({describe_list(changed)}): give --spec-dir a new or "
            "empty directory to unpack the bundle's code into"
        )
    digest = digest_of([CodeFile(p, 0, sha) for p, sha in listed.items()])
    if digest != code.get("digest"):
        raise InputError(f"{bundle.path}: the code digest is {digest}, not {code.get('digest')} as manifest.json says")
    return digest


def _named(what: str, paths: list[str]) -> str:
    return f"{what}: {describe_list(paths)}" if paths else ""


def _sha256(path: Path) -> str:
    """The sha256 of the file at ``path``; "" when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def _unpack(bundle: Bundle, dest: Path, paths: list[str]) -> dict[str, str]:
    """Write the bundle's ``code/`` files into ``dest`` (a fresh directory), returning each one's sha256."""
    tmp = dest.with_name(f".{dest.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    got: dict[str, str] = {}
    try:
        with bundle.reader() as reader:
            for path in paths:
                info = reader.zf.getinfo(f"{CODE_DIR}/{path}")
                target = tmp / path
                reader.extract(info, target)
                if (info.external_attr >> 16) & 0o100:  # it was executable (a script the spec runs)
                    os.chmod(target, 0o755)
                got[path] = _sha256(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir():
            dest.rmdir()  # empty: checked by the caller
        os.replace(tmp, dest)
    except OSError as err:
        raise InputError(f"--spec-dir {dest}: cannot unpack the code there ({err.strerror or err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %d code files of %s into %s", len(paths), bundle.path, dest)
    return got

"""Reading and importing paper bundles (see :mod:`expkit.reproduce.bundle` and docs/reproducibility.md).

:func:`read_bundle` validates a bundle without writing anything and without reading its large entries:
every entry's name, kind, size and compression ratio from the zip's directory; the spec, the manifest
and every cell's ``run.json`` checked strictly (:mod:`expkit.runs.records`); only the layout of the
store. :func:`import_loaded` then streams each entry from the zip into the store (through a local
staging directory, never a whole entry in memory), cells with ``run.json`` last and the manifest last
of all, marked ``imported`` — so an imported run is never resumed, re-run or taken as ``latest``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import stat
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from expkit.core.contract import RUN_FILE
from expkit.core.errors import ArtifactError, ExpkitError, InputError, RunNotFound
from expkit.reproduce.bundle_crate import BUNDLE_ONLY, BUNDLE_ONLY_DIRS
from expkit.runs.matrix import build_matrix
from expkit.runs.provenance import utc_now
from expkit.runs.records import (
    IMPORTED_KEY,
    MAX_RECORD_BYTES,
    cell_record_problem,
    load_manifest,
    parse_json_record,
)
from expkit.spec import Experiment, load_spec_text
from expkit.stores.base import MANIFEST_KEY, PREPARE_LOG_KEY, RUNS_DIR, SPEC_KEY, RunStore, check_key

log = logging.getLogger(__name__)

#: Default cap on the total uncompressed size of a bundle.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Default cap on an entry's expansion (uncompressed / compressed size), for entries over :data:`RATIO_FLOOR`.
DEFAULT_MAX_RATIO = 200
#: Entries up to this size may expand more (a small file of zeros is no threat).
RATIO_FLOOR = 1024 * 1024
#: Limits on an entry's name: characters, directory depth, bytes of one segment.
MAX_NAME_CHARS = 1024
MAX_DEPTH = 32
MAX_SEGMENT_BYTES = 255
#: The largest ``experiment.yml`` a bundle may hold.
MAX_SPEC_BYTES = 4 * 1024 * 1024

_CHUNK = 1024 * 1024
_STORE_INTERNAL = (".staging", ".tmp-")
_FOREIGN = "the bundle is damaged or was not written by 'expkit export'"


@dataclass(frozen=True)
class Limits:
    """What :func:`read_bundle` accepts: the total uncompressed size and an entry's expansion ratio."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_ratio: float = DEFAULT_MAX_RATIO


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its run id, spec and manifest, and the zip entries it holds (read on demand)."""

    path: Path
    run_id: str
    spec_bytes: bytes
    manifest_bytes: bytes
    entries: Mapping[str, zipfile.ZipInfo]  # the run's store objects: experiment.yml, manifest.json, runs/...
    extras: tuple[str, ...]  # README.md, ro-crate-metadata.json, CITATION.cff, requirements.txt, results/, code/
    limits: Limits = Limits()

    @property
    def cells(self) -> list[str]:
        """Cell keys (``alg/ds/rep``) in the bundle, sorted."""
        return sorted({"/".join(k.split("/")[1:4]) for k in self.entries if k.startswith(f"{RUNS_DIR}/")})

    @property
    def spec_text(self) -> str:
        """The resolved spec, as stored with the run."""
        return self.spec_bytes.decode("utf-8")

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` as the bundle holds it (checked by :func:`read_bundle`)."""
        manifest: dict[str, Any] = json.loads(self.manifest_bytes)
        return manifest

    @contextmanager
    def reader(self) -> Iterator[BundleReader]:
        """The bundle's zip, open for streaming its entries (see :class:`BundleReader`)."""
        try:
            zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise InputError(f"{self.path}: cannot be read any more ({err}); was it changed meanwhile?") from None
        with zf:
            yield BundleReader(self.path, zf, self.limits.max_bytes)


class BundleReader:
    """Streams entries out of an open bundle, never more than an entry's header says nor more than the
    bundle's cap in all, and never a whole entry in memory."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, max_bytes: int) -> None:
        self.path = path
        self.zf = zf
        self.left = max_bytes

    def copy(self, info: zipfile.ZipInfo, dst: _Sink | None) -> int:
        """Copy the entry ``info`` into ``dst`` (or only check it, for None) and return its size.
        Raises :class:`InputError` when it is damaged, larger than its header says or over the cap
        (a failure to write ``dst`` is raised as it is)."""
        n = 0
        with self._guard(info):
            src = self.zf.open(info)
        with src:
            while True:
                with self._guard(info):
                    chunk = src.read(min(_CHUNK, info.file_size + 1 - n))  # the CRC is checked at the end
                if not chunk:
                    break
                n += len(chunk)
                if n > info.file_size:
                    raise InputError(
                        f"{self.path}: entry {info.filename!r} is larger than its header says; refusing the bundle"
                    )
                if n > self.left:
                    raise InputError(f"{self.path}: more than the size cap uncompressed; refusing the bundle")
                if dst is not None:
                    dst.write(chunk)
        self.left -= n
        return n

    @contextmanager
    def _guard(self, info: zipfile.ZipInfo) -> Iterator[None]:
        """Reading the zip: any failure is the bundle's, one line naming the entry."""
        try:
            yield
        except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError, ValueError, EOFError) as e:
            raise InputError(f"{self.path}: entry {info.filename!r} cannot be read ({e}); {_FOREIGN}") from None

    def read(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        """A small entry's bytes (at most ``limit``)."""
        if info.file_size > limit:
            raise InputError(
                f"{self.path}: entry {info.filename!r} is {info.file_size} bytes, over the {limit}-byte limit for it"
            )
        with tempfile.SpooledTemporaryFile(max_size=limit + 1) as buf:
            self.copy(info, buf)
            buf.seek(0)
            data: bytes = buf.read()
        return data

    def extract(self, info: zipfile.ZipInfo, dest: Path) -> None:
        """Write the entry ``info`` into the local file ``dest`` (its directory is created)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as fh:
            self.copy(info, fh)

    def sha256(self, info: zipfile.ZipInfo) -> str:
        """The sha256 of the entry's bytes."""
        digest = _HashSink()
        self.copy(info, digest)
        return digest.hash.hexdigest()


class _Sink(Protocol):
    """Where :meth:`BundleReader.copy` writes: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> int: ...


class _HashSink:
    """A write-only file that hashes what is written to it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def is_bundle_path(ref: str | Path) -> bool:
    """Whether ``ref`` names an existing ``.zip`` file (rather than a run id)."""
    p = Path(ref)
    return p.suffix.lower() == ".zip" and p.is_file()


def read_bundle(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
) -> Bundle:
    """Open and validate a bundle without writing anything (see the module docstring for the checks).

    Raises :class:`~expkit.core.errors.InputError` naming the offending entry (and field) and what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such bundle file; give the path of a .zip written by 'expkit export'")
    limits = Limits(max_bytes, max_ratio)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise InputError(f"{p}: not a readable zip file ({err}); give a bundle written by 'expkit export'") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        _check_entries(p, zf.infolist(), limits)
        dirs = tuple(f"{d}/" for d in BUNDLE_ONLY_DIRS)
        extra = {i.filename for i in infos if i.filename in BUNDLE_ONLY or i.filename.startswith(dirs)}
        entries = {i.filename: i for i in infos if i.filename not in extra}
        extras = tuple(sorted(extra))
        for required in (SPEC_KEY, MANIFEST_KEY):
            if required not in entries:
                raise InputError(f"{p}: the bundle has no {required}; it was not written by 'expkit export'")
        reader = BundleReader(p, zf, max_bytes)
        spec_bytes = reader.read(entries[SPEC_KEY], MAX_SPEC_BYTES)
        manifest_bytes = reader.read(entries[MANIFEST_KEY], MAX_RECORD_BYTES)
        experiment, manifest = _check_spec_and_manifest(p, spec_bytes, manifest_bytes)
        _check_layout(p, entries, experiment)
        _check_records(reader, entries)
    return Bundle(p, manifest["run_id"], spec_bytes, manifest_bytes, entries, extras, limits)


def _check_spec_and_manifest(p: Path, spec_bytes: bytes, manifest_bytes: bytes) -> tuple[Experiment, dict[str, Any]]:
    """The bundle's spec (a valid spec) and manifest (a valid manifest of that very spec)."""
    manifest = load_manifest(manifest_bytes, f"{p}: entry {MANIFEST_KEY!r}", _FOREIGN)
    try:
        loaded = load_spec_text(spec_bytes.decode("utf-8"), path=Path(f"{p}:{SPEC_KEY}"))
    except UnicodeDecodeError:
        raise InputError(f"{p}: experiment.yml is not UTF-8 text; the bundle is damaged") from None
    if loaded.sha256 != manifest["spec_sha256"]:
        raise InputError(
            f"{p}: entry {MANIFEST_KEY!r}: spec_sha256 is not the sha256 of the bundle's {SPEC_KEY}; {_FOREIGN}"
        )
    return loaded.experiment, manifest


def _check_layout(p: Path, entries: Mapping[str, zipfile.ZipInfo], experiment: Experiment) -> None:
    """Only the store layout's entries, every cell one of the spec's run matrix and finished (``run.json``)."""
    known = {c.key for c in build_matrix(experiment)}
    cells: dict[str, set[str]] = {}
    for key in entries:
        parts = key.split("/")
        if parts[0] == RUNS_DIR:
            cell = "/".join(parts[1:4])
            if len(parts) < 5 or cell not in known:
                raise InputError(
                    f"{p}: entry {key!r} is not a file of a cell of the spec's run matrix; refusing the bundle"
                )
            cells.setdefault(cell, set()).add("/".join(parts[4:]))
        elif key not in (SPEC_KEY, MANIFEST_KEY, PREPARE_LOG_KEY):
            raise InputError(
                f"{p}: unexpected entry {key!r}: a bundle holds only README.md, ro-crate-metadata.json, "
                "CITATION.cff, requirements.txt, experiment.yml, manifest.json, prepare.log, runs/, results/ and code/"
            )
    for cell, files in sorted(cells.items()):
        if RUN_FILE not in files:
            raise InputError(f"{p}: cell {cell} has no {RUN_FILE} (an unfinished cell); refusing the bundle")


def _check_records(reader: BundleReader, entries: Mapping[str, zipfile.ZipInfo]) -> None:
    """Every cell's ``run.json`` is a valid record (:class:`~expkit.runs.records.CellRecord`)."""
    for name in sorted(entries):
        if not name.startswith(f"{RUNS_DIR}/") or name.count("/") != 4 or not name.endswith(f"/{RUN_FILE}"):
            continue
        where = f"{reader.path}: entry {name!r}"
        try:
            doc = parse_json_record(reader.read(entries[name], MAX_RECORD_BYTES), where)
        except ValueError as err:
            raise InputError(f"{err}; {_FOREIGN}") from None
        problem = cell_record_problem(doc)
        if problem is not None:
            raise InputError(f"{where}: {problem}; {_FOREIGN}")


def _check_name(what: str, name: str) -> None:
    """A safe store key of bounded length and depth, and not a store-internal name."""
    if len(name) > MAX_NAME_CHARS or name.count("/") > MAX_DEPTH:
        raise InputError(
            f"{what[:200]}… is longer than {MAX_NAME_CHARS} characters or deeper than {MAX_DEPTH} directories; "
            "refusing the bundle"
        )
    try:
        check_key(name)
    except ArtifactError:
        raise InputError(
            f"{what} is an unsafe path (absolute, '..', '.', empty segment, backslash or drive); refusing the bundle"
        ) from None
    if any(len(part.encode()) > MAX_SEGMENT_BYTES for part in name.split("/")):
        raise InputError(f"{what} has a path segment longer than {MAX_SEGMENT_BYTES} bytes; refusing the bundle")
    if any(m in part for part in name.split("/") for m in _STORE_INTERNAL):
        raise InputError(f"{what} is a store-internal name (.staging, .tmp-); refusing the bundle")


def _check_entries(path: Path, infos: Iterable[zipfile.ZipInfo], limits: Limits) -> None:
    """Every entry name safe, no duplicates, no links or special files, no encryption, sizes and
    expansion under the caps (from the zip's directory; :class:`BundleReader` checks them again)."""
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        what = f"{path}: entry {name!r}"
        if name in seen:
            raise InputError(f"{what} appears twice; refusing an ambiguous bundle")
        seen.add(name)
        _check_name(what, name)
        mode = (info.external_attr >> 16) & 0xFFFF
        kind_bits = stat.S_IFMT(mode)  # 0 when the writer recorded permissions only
        if info.create_system == 3 and kind_bits and kind_bits not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise InputError(f"{what} is {kind}; bundles hold regular files only")
        if info.flag_bits & 0x1:
            raise InputError(f"{what} is encrypted; bundles are not encrypted")
        if info.file_size > limits.max_bytes:
            raise InputError(f"{what} is {info.file_size} bytes uncompressed, over the {limits.max_bytes}-byte limit")
        if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise InputError(
                f"{what} expands {info.file_size} bytes from {info.compress_size} (more than "
                f"{limits.max_ratio:g}:1): refusing a likely zip bomb (raise --max-ratio if the bundle is trusted)"
            )
        total += info.file_size
        if total > limits.max_bytes:
            raise InputError(
                f"{path}: the entries add up to more than {limits.max_bytes} bytes uncompressed; refusing "
                "it (raise --max-bytes if the bundle is trusted)"
            )


# ---------------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------------


def import_bundle(
    path: str | Path, store: RunStore, *, max_bytes: int = DEFAULT_MAX_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
) -> str:
    """Import a bundle's run into ``store`` under its original run id and return the id.

    Everything is validated before the first write (:func:`read_bundle`). When the store already has
    the run with identical content this is a no-op; with different content it raises
    :class:`~expkit.core.errors.InputError`. Entries are streamed (constant memory); cells are published
    with ``run.json`` last, the manifest — marked ``imported`` — is written last of all (a run exists for
    readers only once its manifest does). An import that fails midway removes what it wrote.
    """
    bundle = read_bundle(path, max_bytes=max_bytes, max_ratio=max_ratio)
    return import_loaded(bundle, store)


def import_loaded(bundle: Bundle, store: RunStore) -> str:
    """Import an already validated :class:`Bundle` (see :func:`import_bundle`)."""
    run_id = bundle.run_id
    prefix = f"{run_id}/"
    try:
        store.manifest(run_id)
        exists = True
    except RunNotFound:
        exists = False
    except InputError:  # a damaged run of that id: not the same content
        exists = True
    if exists:
        if _same_content(store, run_id, bundle):
            log.info("run %s is already in %s with the same content: nothing to import", run_id, store.url)
            return run_id
        raise InputError(
            f"run {run_id} already exists in {store.url} with different content: import into "
            "another store (--store), or delete that run first"
        )
    fresh = next(iter(store.list(prefix)), None) is None
    try:
        n_cells = _write_run(bundle, store)
        manifest = bundle.manifest
        manifest[IMPORTED_KEY] = {"at": utc_now(), "from": bundle.path.name}
        store.put_json(prefix + MANIFEST_KEY, manifest)
    except BaseException:
        if fresh:  # nothing was there before: leave nothing behind
            _remove_quietly(store, prefix)
        raise
    log.info("imported %s (%d cells) into %s", run_id, n_cells, store.url)
    return run_id


def _write_run(bundle: Bundle, store: RunStore) -> int:
    """Stream the spec, the prepare log and every cell into ``store`` (not the manifest); the number of cells."""
    run_id = bundle.run_id
    prefix = f"{run_id}/"
    by_cell: dict[str, list[str]] = {}
    for name in bundle.entries:
        parts = name.split("/")
        if parts[0] == RUNS_DIR:
            by_cell.setdefault("/".join(parts[1:4]), []).append(name)
    store.put(prefix + SPEC_KEY, bundle.spec_bytes)
    staging = store.staging_dir(run_id)
    try:
        with bundle.reader() as reader:
            if PREPARE_LOG_KEY in bundle.entries:
                local = staging / f"import-{uuid.uuid4().hex[:12]}.log"
                reader.extract(bundle.entries[PREPARE_LOG_KEY], local)
                store.put_file(prefix + PREPARE_LOG_KEY, local)
                local.unlink()
            for cell in sorted(by_cell):
                stage = staging / f"import-{uuid.uuid4().hex[:12]}"
                for name in sorted(by_cell[cell]):
                    reader.extract(bundle.entries[name], stage / "/".join(name.split("/")[4:]))
                store.publish_cell(run_id, cell, stage)  # run.json last; ``stage`` is consumed
    except OSError as err:
        where = err.filename if isinstance(err.filename, str) else staging
        raise ExpkitError(f"cannot stage the cells of {run_id} for import in {where}: {err.strerror}") from err
    finally:
        clear = getattr(store, "clear_staging", None)
        if clear is not None:
            clear(run_id)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return len(by_cell)


def _remove_quietly(store: RunStore, prefix: str) -> None:
    try:
        store.delete(prefix)
    except Exception as err:  # noqa: BLE001 - never mask the original error while cleaning up
        log.warning("could not remove the partial import %s from %s: %s", prefix, store.url, err)


def _same_content(store: RunStore, run_id: str, bundle: Bundle) -> bool:
    """Whether the store's run holds exactly the bundle's objects (the manifest compared without the import mark)."""
    prefix = f"{run_id}/"
    present = {k[len(prefix) :] for k in store.list(prefix) if not any(m in k for m in _STORE_INTERNAL)}
    # Only completed cells count as the run's content (an unfinished cell is not part of a bundle).
    done = store.completed_cells(run_id)
    present = {k for k in present if not k.startswith(f"{RUNS_DIR}/") or "/".join(k.split("/")[1:4]) in done}
    if present != set(bundle.entries):
        return False
    try:
        stored = json.loads(store.get(prefix + MANIFEST_KEY))
    except ValueError:
        return False
    if not isinstance(stored, dict):
        return False
    ours = bundle.manifest
    if {k: v for k, v in stored.items() if k != IMPORTED_KEY} != {k: v for k, v in ours.items() if k != IMPORTED_KEY}:
        return False
    with bundle.reader() as reader, tempfile.TemporaryDirectory(prefix="expkit-import-") as tmp:
        for name in sorted(present - {MANIFEST_KEY}):
            if _store_sha256(store, prefix + name, Path(tmp) / "object") != reader.sha256(bundle.entries[name]):
                return False
    return True


def _store_sha256(store: RunStore, key: str, scratch: Path) -> str | None:
    """The sha256 of a stored object, streamed (through ``scratch`` for a remote store); None when it is gone."""
    local = store.local_path(key)
    try:
        if local is None:
            store.get_file(key, scratch)
            local = scratch
        digest = hashlib.sha256()
        with open(local, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except (ExpkitError, OSError):
        return None
    return digest.hexdigest()

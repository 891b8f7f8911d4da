"""Paper bundles: one zip file with everything a reader needs to check and reproduce a run.

:func:`export_run` writes ``bundle.zip`` with, at its root::

    README.md                      how to reproduce, import and re-analyse the run (the exact commands)
    ro-crate-metadata.json         RO-Crate 1.1 / Process Run Crate 0.5 metadata (:mod:`.bundle_crate`)
    CITATION.cff                   how to cite the bundle (:mod:`.bundle_cite`)
    experiment.yml                 the resolved spec, as stored with the run
    manifest.json                  provenance, as stored with the run (without an import's mark)
    requirements.txt               the runs' packages with exact versions, when the run recorded them
    prepare.log                    the prepare step's log, when the run had one
    runs/<alg>/<dataset>/<rep>/    every completed cell's files (result.json, run.json, log.txt, outputs)
    results/                       stats.json, tables, report and plots (``build_report``)
    code/                          a local run's code: the files its manifest lists (:mod:`.bundle_code`)

The zip is deterministic: entries sorted by name, every timestamp 1980-01-01 00:00:00, permissions
0644 (0755 for a file of the run code that was executable), DEFLATE at a fixed level, no extra
fields, so exporting the same run twice gives the same bytes. Entries are streamed from the store
into the zip, never a whole entry in memory. Before anything is written every log is scanned for the
values of the credentials expkit knows (:mod:`.bundle_secrets`): the export is refused, or with
``redact`` the values are replaced and the README says where.

:func:`import_bundle` puts a bundle's run back into a store under its original run id, marked
imported (:mod:`.bundle_read`: every entry validated before anything is written, then streamed).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from expkit.core.contract import LOG_FILE, RUN_FILE
from expkit.core.errors import InputError, StoreError
from expkit.reproduce.bundle_cite import CITATION_NAME, citation_cff
from expkit.reproduce.bundle_code import export_code, requirements_file
from expkit.reproduce.bundle_crate import (
    BUNDLE_ONLY,
    CODE_DIR,
    CRATE_NAME,
    README_NAME,
    REQUIREMENTS_NAME,
    RESULTS_DIR,
    AlgorithmRuns,
    CrateInput,
    Facts,
    algorithm_runs,
    crate_gaps,
    crate_json,
)
from expkit.reproduce.bundle_read import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_RATIO,
    Bundle,
    import_bundle,
    import_loaded,
    is_bundle_path,
    read_bundle,
)
from expkit.reproduce.bundle_readme import readme
from expkit.reproduce.bundle_secrets import SecretScanner, known_secrets
from expkit.runs.records import IMPORTED_KEY, MAX_RECORD_BYTES, cell_record_or_failure
from expkit.spec import Experiment, check_license, load_spec_text
from expkit.stores.base import MANIFEST_KEY, PREPARE_LOG_KEY, RUNS_DIR, SPEC_KEY, ObjectNotFound, RunStore

__all__ = [
    "BUNDLE_ONLY",
    "CRATE_NAME",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RATIO",
    "README_NAME",
    "RESULTS_DIR",
    "Bundle",
    "export_run",
    "import_bundle",
    "import_loaded",
    "is_bundle_path",
    "read_bundle",
]

log = logging.getLogger(__name__)

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644  # regular file, rw-r--r--
_EXECUTABLE_MODE = 0o100755  # a file of the run code that was executable (rwxr-xr-x)
_COMPRESS_LEVEL = 6
_CHUNK = 1024 * 1024
_STORE_INTERNAL = (".staging", ".tmp-")
_DOWNLOADS = 8

#: An entry's content: bytes made here, or a local file (in the store, downloaded, redacted or a report file).
_Source = bytes | Path


def export_run(
    store: RunStore,
    run_ref: str,
    out_path: str | Path,
    *,
    include_report: bool = True,
    redact: bool = False,
    environ: Mapping[str, str] | None = None,
    license_id: str | None = None,
    include_code: bool = True,
    code_dir: str | Path | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Path:
    """Write run ``run_ref`` (an id or ``latest``) of ``store`` as a deterministic bundle at ``out_path``.

    Only completed cells (those with ``run.json``) are included; ``include_report`` adds the
    statistics, tables and plots of ``build_report`` under ``results/``. A local run's code (the files
    its manifest lists, from ``code_dir`` or the run's spec directory, checked against their sha256:
    :func:`~expkit.reproduce.bundle_code.export_code`) goes under ``code/`` unless ``include_code`` is
    False, and the packages its interpreter had into ``requirements.txt``. The license is the spec's
    ``metadata.license`` (``license_id`` supplies or replaces it; one of them is required).
    ``on_warning`` is told each recommended RO-Crate property the spec left empty, naming the field.
    Every log (``log.txt``, ``prepare.log``) is scanned for the values of the credentials in ``environ``
    (default: this process's environment) and the profile files
    (:func:`~expkit.reproduce.bundle_secrets.known_secrets`): one found refuses the export with an
    :class:`~expkit.core.errors.InputError` naming the file and the variable, unless ``redact`` replaces
    each value with ``[REDACTED:<VARIABLE>]`` (noted in the README). Returns the bundle's path. Raises
    :class:`InputError` when ``out_path`` cannot be written.
    """
    run_id = store.resolve_run_id(run_ref)
    out = Path(out_path)
    if out.suffix.lower() != ".zip":
        raise InputError(f"-o {out}: a bundle is a zip file; give a name ending in .zip")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: the directory {out.parent} does not exist; create it first")
    manifest = store.manifest(run_id)
    spec_text = store.spec_text(run_id)
    spec_where = f"{store.url}/{run_id}/{SPEC_KEY}"
    experiment = load_spec_text(spec_text, path=Path(spec_where)).experiment
    license_id = _bundle_license(experiment, license_id, spec_where)
    for gap in crate_gaps(experiment, manifest):
        log.info("%s", gap)
        if on_warning is not None:
            on_warning(gap)
    with tempfile.TemporaryDirectory(prefix="expkit-export-") as tmp:
        entries: dict[str, _Source] = dict(_local_files(store, run_id, Path(tmp) / "objects"))
        redacted = _screen_logs(store.url, run_id, entries, Path(tmp) / "redacted", redact, environ)
        entries[SPEC_KEY] = spec_text.encode()  # the stored bytes (valid UTF-8 decodes and encodes back exactly)
        entries[MANIFEST_KEY] = _manifest_bytes(store, run_id, manifest)
        if include_code:
            entries.update(export_code(manifest, run_id, code_dir, Path(tmp) / "code"))
        requirements = requirements_file(manifest, run_id)
        if requirements is not None:
            entries[REQUIREMENTS_NAME] = requirements
        if include_report:
            entries.update(_report_files(store, run_id, Path(tmp) / "report"))
        _describe(entries, run_id, manifest, experiment, license_id, redacted)
        _write_atomically(out, entries)
    log.info("exported %s (%d entries) to %s", run_id, len(entries), out)
    return out


def _bundle_license(experiment: Experiment, given: str | None, spec_where: str) -> str:
    """The bundle's license: ``--license`` when given (checked), else the spec's ``metadata.license``."""
    if given is not None:
        try:
            return check_license(given)
        except ValueError as err:
            raise InputError(f"--license: {err}") from None
    if experiment.metadata.license:
        return experiment.metadata.license
    raise InputError(
        f"{spec_where}: metadata.license is missing, and a bundle needs a license for others to reuse what it "
        "holds: add 'license: <SPDX id>' (e.g. CC-BY-4.0) under metadata in the spec for the next runs, or pass "
        "--license CC-BY-4.0 to this export"
    )


def _describe(
    entries: dict[str, _Source],
    run_id: str,
    manifest: Mapping[str, Any],
    experiment: Experiment,
    license_id: str,
    redacted: Mapping[str, list[str]],
) -> None:
    """Add the README, CITATION.cff and the RO-Crate (which lists every other entry) to ``entries``."""
    names = sorted([*entries, README_NAME, CITATION_NAME, CRATE_NAME])
    entries[README_NAME] = readme(run_id, manifest, experiment, names, license_id, redacted).encode()
    entries[CITATION_NAME] = citation_cff(run_id, manifest, experiment, license_id).encode()
    facts = {n: _facts(src) for n, src in entries.items() if "/" not in n or n.startswith(f"{RESULTS_DIR}/")}
    algorithms = [a.name for a in experiment.spec.algorithms]
    crate = CrateInput(run_id, manifest, experiment, names, facts, _algorithm_runs(entries, algorithms), license_id)
    entries[CRATE_NAME] = crate_json(crate).encode()


def _algorithm_runs(entries: Mapping[str, _Source], algorithms: list[str]) -> dict[str, AlgorithmRuns]:
    """Each algorithm's runs in the bundle (from the cells' ``run.json``), for its CreateAction."""
    pairs = []
    for name, src in entries.items():
        parts = name.split("/")
        if parts[0] != RUNS_DIR or len(parts) != 5 or parts[4] != RUN_FILE:
            continue
        if isinstance(src, bytes):
            data = src
        else:
            with open(src, "rb") as fh:
                data = fh.read(MAX_RECORD_BYTES + 1)  # a larger one is refused as it is parsed
        pairs.append((parts[1], cell_record_or_failure(data, name, "/".join(parts[1:4]))))
    return algorithm_runs(pairs, algorithms)


def _run_keys(store: RunStore, run_id: str) -> list[str]:
    """The run's object keys relative to ``<run-id>/``, sorted: incomplete cells, the spec and the
    manifest left out (those two are written from what :func:`export_run` read)."""
    prefix = f"{run_id}/"
    done = store.completed_cells(run_id)
    wanted = []
    for key in sorted(k for k in store.list(prefix) if not any(m in k for m in _STORE_INTERNAL)):
        rel = key[len(prefix) :]
        parts = rel.split("/")
        if rel in (SPEC_KEY, MANIFEST_KEY):
            continue
        if parts[0] == RUNS_DIR and (len(parts) < 5 or "/".join(parts[1:4]) not in done):
            continue  # a cell without its completion marker is not part of the run yet
        wanted.append(rel)
    return wanted


def _local_files(store: RunStore, run_id: str, scratch: Path) -> dict[str, Path]:
    """Every object of the run as a local file: the store's own file where it keeps one (a directory),
    else downloaded into ``scratch`` (a few at a time, each streamed). Objects gone meanwhile are left out."""
    prefix = f"{run_id}/"
    rels = _run_keys(store, run_id)
    found: dict[str, Path] = {}
    remote: list[str] = []
    for rel in rels:
        local = store.local_path(prefix + rel)
        if local is not None:
            found[rel] = local
        else:
            remote.append(rel)

    def fetch(item: tuple[int, str]) -> tuple[str, Path | None]:
        i, rel = item
        dest = scratch / f"{i:08d}"
        try:
            store.get_file(prefix + rel, dest)
        except ObjectNotFound:
            return rel, None
        return rel, dest

    if remote:
        scratch.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=_DOWNLOADS, thread_name_prefix="expkit-export") as pool:
            for rel, path in pool.map(fetch, enumerate(remote)):
                if path is not None:
                    found[rel] = path
    return found


def _is_log(name: str) -> bool:
    parts = name.split("/")
    return name == PREPARE_LOG_KEY or (parts[0] == RUNS_DIR and len(parts) == 5 and parts[4] == LOG_FILE)


def _screen_logs(
    url: str,
    run_id: str,
    entries: dict[str, _Source],
    scratch: Path,
    redact: bool,
    environ: Mapping[str, str] | None,
) -> dict[str, list[str]]:
    """Scan every log in ``entries`` for credential values: refuse (:class:`InputError` naming the file and
    the variable, never the value), or with ``redact`` point the entry at a redacted copy. Returns
    ``{entry: [variables]}`` of the redacted logs."""
    scanner = SecretScanner.of(known_secrets(environ))
    redacted: dict[str, list[str]] = {}
    if not scanner:
        return redacted
    for name in sorted(n for n in entries if _is_log(n)):
        src = entries[name]
        if not isinstance(src, Path):
            continue
        copy = scratch / name if redact else None
        with open(src, "rb") as fh:
            if copy is None:
                found = scanner.scan(fh)
            else:
                copy.parent.mkdir(parents=True, exist_ok=True)
                with open(copy, "wb") as dst:
                    found = scanner.scan(fh, dst)
        if not found:
            if copy is not None:
                copy.unlink()
            continue
        if copy is None:
            raise InputError(
                f"{url}/{run_id}/{name} contains the value of {sorted(found)[0]}, a credential: refusing to "
                "export it (rotate that credential; 'expkit export --redact' replaces such values with "
                "[REDACTED:<VARIABLE>])"
            )
        entries[name] = copy
        redacted[name] = sorted(found)
        log.warning("%s/%s/%s: replaced the value of %s", url, run_id, name, ", ".join(sorted(found)))
    return redacted


def _manifest_bytes(store: RunStore, run_id: str, manifest: Mapping[str, Any]) -> bytes:
    """The manifest as stored; for an imported run, as its bundle had it (the import's mark removed)."""
    if IMPORTED_KEY not in manifest:
        return store.get(f"{run_id}/{MANIFEST_KEY}")
    original = {k: v for k, v in manifest.items() if k != IMPORTED_KEY}
    return (json.dumps(original, indent=2, sort_keys=True) + "\n").encode()


def _report_files(store: RunStore, run_id: str, out_dir: Path) -> dict[str, Path]:
    from expkit.analysis.report import (
        build_report,  # the report pulls in matplotlib: only when asked for
    )

    report = build_report(store, run_id, out_dir=out_dir)
    return {f"{RESULTS_DIR}/{p.relative_to(out_dir).as_posix()}": p for p in sorted(report.files) if p.is_file()}


def _facts(src: _Source) -> Facts:
    """Size and sha256 of an entry's content, streamed."""
    if isinstance(src, bytes):
        return len(src), hashlib.sha256(src).hexdigest()
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _zip_info(name: str, size: int, executable: bool = False) -> zipfile.ZipInfo:
    """A normalised entry: fixed timestamp and permissions, DEFLATE at a fixed level, no extra fields."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so external_attr carries the permissions
    info.external_attr = (_EXECUTABLE_MODE if executable else _FILE_MODE) << 16
    info.file_size = size  # known ahead, as ZipFile.writestr sets it: decides ZIP64 the same way
    # Python 3.13 renamed ZipInfo._compresslevel to compress_level.
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", _COMPRESS_LEVEL)
    return info


def _write_zip(fh: io.BufferedWriter, entries: Mapping[str, _Source]) -> None:
    """A deterministic zip of ``entries`` (sorted by name), each streamed from its source."""
    with zipfile.ZipFile(fh, "w") as zf:
        for name in sorted(entries):
            src = entries[name]
            with io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb") as data:
                size = data.seek(0, io.SEEK_END)
                data.seek(0)
                executable = isinstance(src, Path) and name.startswith(f"{CODE_DIR}/") and _is_executable(src)
                with zf.open(_zip_info(name, size, executable), "w") as dst:
                    shutil.copyfileobj(data, dst, _CHUNK)


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)


def _write_atomically(out: Path, entries: Mapping[str, _Source]) -> None:
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            _write_zip(fh, entries)
        os.replace(tmp, out)
    except OSError as err:
        raise InputError(f"-o {out}: cannot write the bundle ({err.strerror})") from err
    except zipfile.LargeZipFile as err:  # pragma: no cover - ZIP64 is allowed by default
        raise StoreError(f"-o {out}: {err}") from err
    finally:
        if tmp.exists():
            tmp.unlink()

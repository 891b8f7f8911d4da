"""Paper bundles: one zip file with everything a reader needs to check and reproduce a run.

:func:`export_run` writes ``bundle.zip`` with, at its root::

    README.md                      how to reproduce, import and re-analyse the run
    ro-crate-metadata.json         RO-Crate 1.1 metadata (see docs/reproducibility.md)
    experiment.yml                 the resolved spec, as stored with the run
    manifest.json                  provenance, as stored with the run
    prepare.log                    the prepare step's log, when the run had one
    runs/<alg>/<dataset>/<rep>/    every completed cell's files (result.json, run.json, log.txt, outputs)
    results/                       stats.json, tables, report and plots (``build_report``)

The zip is deterministic: entries sorted by name, every timestamp 1980-01-01 00:00:00, permissions
0644, DEFLATE at a fixed level, no extra fields, so exporting the same run twice gives the same bytes.

:func:`import_bundle` puts a bundle's run back into a store under its original run id. Every entry is
validated *before* anything is written (unsafe names, ``..``, absolute paths, symlinks, duplicates,
encrypted members, entries outside the layout, cells without ``run.json`` and a cap on the total
uncompressed size); cells are published with ``run.json`` last and the manifest goes last of all, so
a crash leaves no run that readers would take as complete. Importing a bundle whose run is already
in the store with the same content is a no-op; with different content it is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit import __version__
from expkit.core.contract import RUN_FILE
from expkit.core.errors import ArtifactError, ExpkitError, InputError, RunNotFound
from expkit.runs.matrix import build_matrix
from expkit.spec import Experiment, Paper, load_spec_text
from expkit.stores.base import (
    MANIFEST_KEY,
    PREPARE_LOG_KEY,
    RUNS_DIR,
    SPEC_KEY,
    ObjectNotFound,
    RunStore,
    check_key,
    check_run_id,
)

log = logging.getLogger(__name__)

README_NAME = "README.md"
CRATE_NAME = "ro-crate-metadata.json"
RESULTS_DIR = "results"
#: Default cap on the total uncompressed size of a bundle that :func:`import_bundle` accepts.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Entries of a bundle that are not part of the run's store layout.
BUNDLE_ONLY = (README_NAME, CRATE_NAME)

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644  # regular file, rw-r--r--
_COMPRESS_LEVEL = 6
_CRATE_CONTEXT = ["https://w3id.org/ro/crate/1.1/context", {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256"}]
_CRATE_CONFORMS = "https://w3id.org/ro/crate/1.1"
_STORE_INTERNAL = (".staging", ".tmp-")
#: Descriptions of the files at the bundle's root.
_DESCRIPTIONS = {
    SPEC_KEY: "The resolved experiment spec (defaults written out, parameter overrides applied).",
    MANIFEST_KEY: "Provenance of the run: expkit version, spec sha256, image, host, seeds scheme, sessions.",
    PREPARE_LOG_KEY: "Log of the spec's prepare step.",
    README_NAME: "How to reproduce and re-analyse this run.",
}

_FORMATS = {
    ".json": "application/json",
    ".yml": "application/yaml",
    ".yaml": "application/yaml",
    ".csv": "text/csv",
    ".tex": "application/x-tex",
    ".md": "text/markdown",
    ".html": "text/html",
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".log": "text/plain",
}


# ---------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------


def export_run(store: RunStore, run_ref: str, out_path: str | Path, *, include_report: bool = True) -> Path:
    """Write run ``run_ref`` (an id or ``latest``) of ``store`` as a deterministic bundle at ``out_path``.

    Only completed cells (those with ``run.json``) are included; ``include_report`` adds the
    statistics, tables and plots of ``build_report`` under ``results/``. Returns the bundle's path.
    Raises :class:`~expkit.core.errors.InputError` when ``out_path`` cannot be written.
    """
    run_id = store.resolve_run_id(run_ref)
    out = Path(out_path)
    if out.suffix.lower() != ".zip":
        raise InputError(f"-o {out}: a bundle is a zip file; give a name ending in .zip")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: the directory {out.parent} does not exist; create it first")
    entries = _run_entries(store, run_id)
    if include_report:
        entries.update(_report_entries(store, run_id))
    manifest = json.loads(entries[MANIFEST_KEY])
    entries[README_NAME] = _readme(
        run_id, manifest, load_spec_text(entries[SPEC_KEY].decode()).experiment, include_report
    ).encode()
    entries[CRATE_NAME] = _crate_json(run_id, manifest, entries).encode()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_zip_bytes(entries))
        os.replace(tmp, out)
    except OSError as err:
        raise InputError(f"-o {out}: cannot write the bundle ({err.strerror})") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("exported %s (%d entries) to %s", run_id, len(entries), out)
    return out


def _run_entries(store: RunStore, run_id: str) -> dict[str, bytes]:
    """The run's objects, keyed by their path relative to ``<run-id>/``; incomplete cells left out."""
    prefix = f"{run_id}/"
    keys = sorted(k for k in store.list(prefix) if not any(m in k for m in _STORE_INTERNAL))
    done = store.completed_cells(run_id)
    wanted = []
    for key in keys:
        rel = key[len(prefix) :]
        parts = rel.split("/")
        if parts[0] == RUNS_DIR and (len(parts) < 5 or "/".join(parts[1:4]) not in done):
            continue  # a cell without its completion marker is not part of the run yet
        wanted.append(key)
    blobs = store.read_many(wanted)
    out = {k[len(prefix) :]: blobs[k] for k in wanted if k in blobs}
    for required in (SPEC_KEY, MANIFEST_KEY):
        if required not in out:
            raise RunNotFound(f"run {run_id!r} in {store.url} has no {required}: it cannot be exported")
    return out


def _report_entries(store: RunStore, run_id: str) -> dict[str, bytes]:
    from expkit.analysis.report import (
        build_report,  # the report pulls in matplotlib: only when asked for
    )

    with tempfile.TemporaryDirectory(prefix="expkit-export-") as tmp:
        report = build_report(store, run_id, out_dir=tmp)
        root = Path(tmp)
        return {
            f"{RESULTS_DIR}/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in sorted(report.files)
            if p.is_file()
        }


def _zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    """A deterministic zip of ``entries``: sorted names, fixed timestamps and permissions."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the permissions
            info.external_attr = _FILE_MODE << 16
            zf.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=_COMPRESS_LEVEL)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _format_of(name: str) -> str:
    return _FORMATS.get(Path(name).suffix.lower(), "application/octet-stream")


def _image_digest(image: str) -> str | None:
    return image.split("@", 1)[1] if "@" in image else None


def _crate_json(run_id: str, manifest: Mapping[str, Any], entries: Mapping[str, bytes]) -> str:
    """``ro-crate-metadata.json`` (RO-Crate 1.1): the root dataset, its files, the spec, the image,
    expkit, and one CreateAction for the run (instrument: spec, image, expkit; result: runs, results)."""
    experiment = load_spec_text(entries[SPEC_KEY].decode()).experiment
    n_cells = len({"/".join(k.split("/")[1:4]) for k in entries if k.startswith(f"{RUNS_DIR}/")})
    results = sorted(k for k in entries if k.startswith(f"{RESULTS_DIR}/"))
    top_files = sorted(k for k in entries if "/" not in k and k != CRATE_NAME)
    paper = _paper_entity(experiment.metadata.paper)
    root = _root_dataset(run_id, manifest, experiment, top_files, n_cells, has_results=bool(results))
    if paper is not None:
        root["citation"] = {"@id": paper["@id"]}
    graph: list[dict[str, Any]] = [
        {
            "@id": CRATE_NAME,
            "@type": "CreativeWork",
            "conformsTo": {"@id": _CRATE_CONFORMS},
            "about": {"@id": "./"},
        },
        root,
    ]
    graph.extend(_top_file_entity(name, entries, experiment) for name in top_files)
    graph.append(_runs_dataset(n_cells))
    if results:
        graph.append(_results_dataset(results))
        graph.extend(_file_entity(name, entries) for name in results)
    graph.append(_image_entity(experiment.spec.image))
    graph.append(
        {
            "@id": "#expkit",
            "@type": "SoftwareApplication",
            "name": "expkit",
            "version": str(manifest.get("expkit_version") or __version__),
        }
    )
    graph.append(_create_action(run_id, manifest, experiment, n_cells, has_results=bool(results)))
    if paper is not None:
        graph.append(paper)
    return (
        json.dumps({"@context": _CRATE_CONTEXT, "@graph": graph}, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    )


def _file_entity(name: str, entries: Mapping[str, bytes], description: str | None = None) -> dict[str, Any]:
    """A File entity: format, size and sha256 of the entry ``name``."""
    entity: dict[str, Any] = {
        "@id": name,
        "@type": "File",
        "name": name,
        "encodingFormat": _format_of(name),
        "contentSize": str(len(entries[name])),
        "sha256": _sha256(entries[name]),
    }
    if description:
        entity["description"] = description
    return entity


def _top_file_entity(name: str, entries: Mapping[str, bytes], experiment: Experiment) -> dict[str, Any]:
    """A file at the bundle's root; the spec is also the crate's source code (YAML)."""
    entity = _file_entity(name, entries, _DESCRIPTIONS.get(name))
    if name == SPEC_KEY:
        entity["@type"] = ["File", "SoftwareSourceCode"]
        entity["programmingLanguage"] = "YAML"
        entity["version"] = experiment.apiVersion
    return entity


def _root_dataset(
    run_id: str,
    manifest: Mapping[str, Any],
    experiment: Experiment,
    top_files: list[str],
    n_cells: int,
    *,
    has_results: bool,
) -> dict[str, Any]:
    """The crate's root dataset: the bundle, its parts, and the run it describes."""
    meta = experiment.metadata
    has_part = [{"@id": name} for name in top_files] + [{"@id": f"{RUNS_DIR}/"}]
    if has_results:
        has_part.append({"@id": f"{RESULTS_DIR}/"})
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": f"{meta.name}: expkit run {run_id}",
        "description": (meta.description or f"Experiment {meta.name}") + f" (expkit run {run_id}, "
        f"{n_cells} completed runs; see README.md to reproduce it).",
        "identifier": run_id,
        "hasPart": has_part,
        "mainEntity": {"@id": SPEC_KEY},
        "mentions": {"@id": f"#run-{run_id}"},
    }
    date = (manifest.get("ended_at") or manifest.get("started_at") or "")[:10]
    if date:
        root["datePublished"] = date
    return root


def _paper_entity(paper: Paper | None) -> dict[str, Any] | None:
    """The paper the run belongs to, when the spec names its DOI or URL."""
    if paper is None or not (paper.doi or paper.url):
        return None
    paper_id = f"https://doi.org/{paper.doi}" if paper.doi else str(paper.url)
    entity: dict[str, Any] = {"@id": paper_id, "@type": "ScholarlyArticle"}
    if paper.title:
        entity["name"] = paper.title
    if paper.doi:
        entity["identifier"] = paper_id
    return entity


def _runs_dataset(n_cells: int) -> dict[str, Any]:
    return {
        "@id": f"{RUNS_DIR}/",
        "@type": "Dataset",
        "name": "Per-run outputs",
        "description": f"{n_cells} completed runs, one directory each at "
        f"{RUNS_DIR}/<algorithm>/<dataset>/<replicate>/: result.json (metrics, "
        "trajectory), run.json (status record, seed, attempts), log.txt and any "
        "other output.",
    }


def _results_dataset(results: list[str]) -> dict[str, Any]:
    return {
        "@id": f"{RESULTS_DIR}/",
        "@type": "Dataset",
        "name": "Statistics, tables and plots",
        "description": "Written by 'expkit results': stats.json (every test), results.csv, "
        "summary.csv, table.tex, report.md/html and plots.",
        "hasPart": [{"@id": name} for name in results],
    }


def _image_entity(image: str) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "@id": "#image",
        "@type": "SoftwareApplication",
        "name": image.split("@", 1)[0],
        "identifier": image,
        "description": "Container image every run executes in (spec.image).",
    }
    digest = _image_digest(image)
    if digest:
        entity["softwareVersion"] = digest
    return entity


def _create_action(
    run_id: str, manifest: Mapping[str, Any], experiment: Experiment, n_cells: int, *, has_results: bool
) -> dict[str, Any]:
    """The run as a CreateAction: spec, image and expkit in, per-run outputs (and results) out."""
    status = manifest.get("status")
    action: dict[str, Any] = {
        "@id": f"#run-{run_id}",
        "@type": "CreateAction",
        "name": f"expkit run {run_id}",
        "description": f"{manifest.get('cells', n_cells)} runs ({len(experiment.spec.algorithms)} algorithms x "
        f"{len(experiment.spec.datasets)} datasets x {experiment.spec.replicates} replicates) "
        f"on the {manifest.get('executor', 'unknown')} executor.",
        "instrument": [{"@id": SPEC_KEY}, {"@id": "#image"}, {"@id": "#expkit"}],
        "object": [{"@id": SPEC_KEY}],
        "result": [{"@id": f"{RUNS_DIR}/"}] + ([{"@id": f"{RESULTS_DIR}/"}] if has_results else []),
        "actionStatus": {
            "@id": "http://schema.org/CompletedActionStatus"
            if status == "complete"
            else "http://schema.org/FailedActionStatus"
            if status == "failed"
            else "http://schema.org/ActiveActionStatus"
        },
    }
    if manifest.get("started_at"):
        action["startTime"] = manifest["started_at"]
    if manifest.get("ended_at"):
        action["endTime"] = manifest["ended_at"]
    return action


def _readme(run_id: str, manifest: Mapping[str, Any], experiment: Experiment, include_report: bool) -> str:
    meta = experiment.metadata
    spec = experiment.spec
    lines = [
        f"# {meta.name} — expkit run {run_id}",
        "",
        meta.description or "",
        "",
        (
            f"{len(spec.algorithms)} algorithms × {len(spec.datasets)} datasets × {spec.replicates} replicates, "
            f"metric `{spec.metric.name}` ({spec.metric.goal}), image `{spec.image}`, spec sha256 "
            f"`{manifest.get('spec_sha256')}`, run with expkit {manifest.get('expkit_version')}."
        ),
        "",
        "## Contents",
        "",
        "- `experiment.yml` — the resolved spec (overrides applied): it re-runs the experiment without flags",
        "- `manifest.json` — provenance: expkit version, spec sha256, image, host, seeds scheme, sessions",
        (
            "- `runs/<algorithm>/<dataset>/<replicate>/` — each run's `result.json`, `run.json` (status, seed), "
            "`log.txt` and other outputs"
        ),
    ]
    if include_report:
        lines.append("- `results/` — `stats.json` (every test), CSV and LaTeX tables, the report and the plots")
    lines += [
        "- `ro-crate-metadata.json` — RO-Crate 1.1 metadata describing all of the above",
        "",
        "## Re-analyse",
        "",
        "```console",
        "$ expkit import bundle.zip            # puts the run into ./expkit-runs under its run id",
        f"$ expkit results {run_id}",
        "```",
        "",
        "## Reproduce",
        "",
        "Re-running needs the experiment's code (the scripts `spec.command` runs), which is in the image",
        "and in the paper's repository, not in this bundle. From a checkout of that code:",
        "",
        "```console",
        "$ expkit reproduce bundle.zip --spec-dir path/to/code   # re-runs the spec, compares with this run",
        "$ expkit reproduce bundle.zip --spec-dir path/to/code --sample 60   # a seeded spot check",
        "```",
        "",
        "The comparison (`expkit compare ORIGINAL RERUN` does the same for two existing runs) tests every",
        "algorithm × dataset cell for a difference (Mann–Whitney U, Kolmogorov–Smirnov, Holm) and for",
        "equivalence (TOST on Vargha–Delaney A12), and checks that the statistical conclusions agree.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# reading and import
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A validated bundle read into memory: the run's store objects (keys relative to ``<run-id>/``)."""

    path: Path
    run_id: str
    objects: Mapping[str, bytes]  # experiment.yml, manifest.json, prepare.log, runs/...
    extras: Mapping[str, bytes]  # README.md, ro-crate-metadata.json, results/...

    @property
    def cells(self) -> list[str]:
        """Cell keys (``alg/ds/rep``) in the bundle, sorted."""
        return sorted({"/".join(k.split("/")[1:4]) for k in self.objects if k.startswith(f"{RUNS_DIR}/")})

    @property
    def spec_text(self) -> str:
        """The resolved spec, as stored with the run."""
        return self.objects[SPEC_KEY].decode("utf-8")

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` (checked to be a JSON object by :func:`read_bundle`)."""
        manifest: dict[str, Any] = json.loads(self.objects[MANIFEST_KEY])
        return manifest


def is_bundle_path(ref: str | Path) -> bool:
    """Whether ``ref`` names an existing ``.zip`` file (rather than a run id)."""
    p = Path(ref)
    return p.suffix.lower() == ".zip" and p.is_file()


def read_bundle(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle:
    """Open and validate a bundle without writing anything (see :func:`import_bundle` for the checks).

    Raises :class:`~expkit.core.errors.InputError` naming the offending entry and what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such bundle file; give the path of a .zip written by 'expkit export'")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{p}: not a readable zip file ({err}); give a bundle written by 'expkit export'") from None
    with zf:
        infos = zf.infolist()
        _check_entries(p, infos, max_bytes)
        data = _read_entries(p, zf, infos, max_bytes)
    objects = {k: v for k, v in data.items() if not (k in BUNDLE_ONLY or k.startswith(f"{RESULTS_DIR}/"))}
    extras = {k: v for k, v in data.items() if k not in objects}
    for required in (SPEC_KEY, MANIFEST_KEY):
        if required not in objects:
            raise InputError(f"{p}: the bundle has no {required}; it was not written by 'expkit export'")
    run_id = _bundle_run_id(p, objects[MANIFEST_KEY])
    try:
        experiment = load_spec_text(objects[SPEC_KEY].decode("utf-8"), path=Path(f"{p}:{SPEC_KEY}")).experiment
    except UnicodeDecodeError:
        raise InputError(f"{p}: experiment.yml is not UTF-8 text; the bundle is damaged") from None
    _check_layout(p, objects, experiment)
    return Bundle(p, run_id, objects, extras)


def _read_entries(p: Path, zf: zipfile.ZipFile, infos: Iterable[zipfile.ZipInfo], max_bytes: int) -> dict[str, bytes]:
    """Every file entry's bytes, never more than its header says nor more than ``max_bytes`` in all."""
    data: dict[str, bytes] = {}
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        try:
            with zf.open(info) as fh:
                blob = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as err:
            raise InputError(f"{p}: entry {info.filename!r} cannot be read ({err}); the bundle is damaged") from None
        if len(blob) > info.file_size:
            raise InputError(f"{p}: entry {info.filename!r} is larger than its header says; refusing the bundle")
        total += len(blob)
        if total > max_bytes:
            raise InputError(
                f"{p}: more than {max_bytes} bytes uncompressed; refusing it (raise the limit if the bundle is trusted)"
            )
        data[info.filename] = blob
    return data


def _bundle_run_id(p: Path, manifest_bytes: bytes) -> str:
    """The run id the bundle's manifest names, checked."""
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        raise InputError(f"{p}: manifest.json is not valid JSON; the bundle is damaged") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("run_id"), str):
        raise InputError(f"{p}: manifest.json has no run_id; the bundle was not written by 'expkit export'")
    try:
        return check_run_id(manifest["run_id"])
    except RunNotFound:
        raise InputError(f"{p}: manifest.json names {manifest['run_id']!r}, which is not a run id") from None


def _check_layout(p: Path, objects: Mapping[str, bytes], experiment: Experiment) -> None:
    """Only the store layout's entries, every cell one of the spec's run matrix and finished (``run.json``)."""
    known = {c.key for c in build_matrix(experiment)}
    cells: dict[str, set[str]] = {}
    for key in objects:
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
                f"{p}: unexpected entry {key!r}: a bundle holds only README.md, "
                "ro-crate-metadata.json, experiment.yml, manifest.json, prepare.log, runs/ and results/"
            )
    for cell, files in sorted(cells.items()):
        if RUN_FILE not in files:
            raise InputError(f"{p}: cell {cell} has no {RUN_FILE} (an unfinished cell); refusing the bundle")


def _check_entries(path: Path, infos: Iterable[zipfile.ZipInfo], max_bytes: int) -> None:
    """Every entry name safe, no duplicates, no links or special files, no encryption, size under the cap."""
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        what = f"{path}: entry {name!r}"
        if name in seen:
            raise InputError(f"{what} appears twice; refusing an ambiguous bundle")
        seen.add(name)
        try:
            check_key(name)
        except ArtifactError:
            raise InputError(
                f"{what} is an unsafe path (absolute, '..', '.', empty segment, backslash or drive); "
                "refusing the bundle"
            ) from None
        if any(m in part for part in name.split("/") for m in _STORE_INTERNAL):
            raise InputError(f"{what} is a store-internal name (.staging, .tmp-); refusing the bundle")
        mode = (info.external_attr >> 16) & 0xFFFF
        kind_bits = stat.S_IFMT(mode)  # 0 when the writer recorded permissions only
        if info.create_system == 3 and kind_bits and kind_bits not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise InputError(f"{what} is {kind}; bundles hold regular files only")
        if info.flag_bits & 0x1:
            raise InputError(f"{what} is encrypted; bundles are not encrypted")
        if info.file_size > max_bytes:
            raise InputError(f"{what} is {info.file_size} bytes uncompressed, over the {max_bytes}-byte limit")
        total += info.file_size
        if total > max_bytes:
            raise InputError(
                f"{path}: the entries add up to more than {max_bytes} bytes uncompressed; refusing "
                "it (raise the limit if the bundle is trusted)"
            )


def import_bundle(path: str | Path, store: RunStore, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Import a bundle's run into ``store`` under its original run id and return the id.

    Everything is validated before the first write (:func:`read_bundle`). When the store already has
    the run with identical content this is a no-op; with different content it raises
    :class:`~expkit.core.errors.InputError`. Cells are published with ``run.json`` last, the manifest is
    written last of all (a run exists for readers only once its manifest does).
    """
    bundle = read_bundle(path, max_bytes=max_bytes)
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
    if exists:
        if _same_content(store, run_id, bundle):
            log.info("run %s is already in %s with the same content: nothing to import", run_id, store.url)
            return run_id
        raise InputError(
            f"run {run_id} already exists in {store.url} with different content: import into "
            "another store (--store), or delete that run first"
        )
    for key in (SPEC_KEY, PREPARE_LOG_KEY):
        if key in bundle.objects:
            store.put(prefix + key, bundle.objects[key])
    by_cell: dict[str, dict[str, bytes]] = {}
    for key, blob in bundle.objects.items():
        parts = key.split("/")
        if parts[0] == RUNS_DIR:
            by_cell.setdefault("/".join(parts[1:4]), {})["/".join(parts[4:])] = blob
    staging = store.staging_dir(run_id)
    try:
        for cell in sorted(by_cell):
            stage = staging / f"import-{uuid.uuid4().hex[:12]}"
            for rel, blob in sorted(by_cell[cell].items()):
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
            store.publish_cell(run_id, cell, stage)  # run.json last; ``stage`` is consumed
    except OSError as err:
        raise ExpkitError(f"cannot stage the cells of {run_id} for import: {err.strerror}") from err
    finally:
        clear = getattr(store, "clear_staging", None)
        if clear is not None:
            clear(run_id)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    store.put(prefix + MANIFEST_KEY, bundle.objects[MANIFEST_KEY])
    log.info("imported %s (%d cells) into %s", run_id, len(by_cell), store.url)
    return run_id


def _same_content(store: RunStore, run_id: str, bundle: Bundle) -> bool:
    prefix = f"{run_id}/"
    present = {k[len(prefix) :] for k in store.list(prefix) if not any(m in k for m in _STORE_INTERNAL)}
    # Only completed cells count as the run's content (an unfinished cell is not part of a bundle).
    done = store.completed_cells(run_id)
    present = {k for k in present if not k.startswith(f"{RUNS_DIR}/") or "/".join(k.split("/")[1:4]) in done}
    if present != set(bundle.objects):
        return False
    try:
        blobs = store.read_many([prefix + k for k in sorted(present)])
    except ObjectNotFound:  # pragma: no cover - read_many leaves missing keys out instead
        return False
    return all(blobs.get(prefix + k) == v for k, v in bundle.objects.items())

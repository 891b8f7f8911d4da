"""The records expkit keeps about a run, checked strictly whenever they are read back.

A run's ``manifest.json`` and every cell's ``run.json`` come back from a store or a bundle, where
anyone with write access (or a bundle's author) may have put anything. Before expkit uses one it is
checked here: valid JSON, at most :data:`MAX_RECORD_BYTES`, and the fields expkit reads have the
types and forms expkit writes (:class:`Manifest`, :class:`CellRecord`). Fields expkit does not read
are kept as they are (a newer expkit may add some). A bad manifest is an
:class:`~expkit.core.errors.InputError` naming the file and the field (exit code 2); a bad
``run.json`` makes that cell failed with the reason (:func:`cell_record_or_failure`).

An imported run (``expkit import``) carries an ``imported`` block the importer sets (``at``: the
import time on this machine, ``from``: the bundle's file name). Such a run is never resumed or re-run
(:func:`refuse_imported`), and it never becomes ``latest``; :func:`store_time` orders runs by when
they arrived in the store, never by a bundle's claim.
"""

from __future__ import annotations

import getpass
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from expkit.core.contract import RUN_FILE
from expkit.core.errors import InputError
from expkit.core.safejson import JSONLimitError, parse_json

#: The largest ``manifest.json`` or ``run.json`` expkit reads (they are a few KB when expkit writes them).
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: The manifest's block an import adds.
IMPORTED_KEY = "imported"
#: The manifest's field naming the user who created the run (``latest`` is the newest run of this user).
USER_KEY = "user"

_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_WORD_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_time(value: str) -> datetime:
    """``datetime.fromisoformat``, also for a trailing ``Z`` on Python 3.10; ValueError when it is none."""
    if len(value) > 64:
        raise ValueError("too long")
    return datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)


def _timestamp(value: str) -> str:
    """An ISO 8601 timestamp with a time zone, as expkit writes them (``2026-01-02T03:04:05.678Z``)."""
    try:
        parsed = _parse_time(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 timestamp such as 2026-01-02T03:04:05.678Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; expkit writes UTC timestamps ending in Z")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{value[:70]!r} is not {what}")
        return value

    return AfterValidator(check)


Timestamp = Annotated[str, AfterValidator(_timestamp)]
RunId = Annotated[str, Field(max_length=63), _pattern(_RUN_ID_RE, "a run id ('<experiment>-<5 chars>')")]
Sha256 = Annotated[str, _pattern(_SHA256_RE, "a sha256 (64 lowercase hex digits)")]
Word = Annotated[str, _pattern(_WORD_RE, "a word of letters, digits, '_', '.' or '-'")]
Count = Annotated[int, Field(ge=0, le=2**53)]
Text = Annotated[str, Field(max_length=65536)]


class _Record(BaseModel):
    """Strict types for the fields expkit reads; other fields are kept (a newer expkit may add some)."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class HostInfo(_Record):
    """The machine a run was started on (``manifest.host``)."""

    hostname: Text | None = None
    platform: Text | None = None
    machine: Text | None = None
    python: Text | None = None
    python_executable: Text | None = None
    cpu_count: Count | None = None
    cpu_model: Text | None = None


class MetricInfo(_Record):
    """The spec's metric (``manifest.metric``)."""

    name: Text
    goal: Literal["minimize", "maximize"]


class Session(_Record):
    """One ``expkit run`` (or resume) of the run (``manifest.sessions[]``)."""

    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    cells: Count | None = None
    workers: Count | None = None
    status: Word | None = None
    expkit_version: Text | None = None
    host: Text | None = None


class Counts(_Record):
    """Cell counts at the end of the last session (``manifest.counts``)."""

    total: Count
    succeeded: Count
    failed: Count
    missing: int


class ClusterInfo(_Record):
    """Where a run on Argo ran (``manifest.cluster``)."""

    context: Text | None = None
    server: Text | None = None
    namespace: Text | None = None
    server_version: Text | None = None
    argo_version: Text | None = None
    workflows: list[dict[str, Any]] = []


class Reproduction(_Record):
    """What ``expkit reproduce`` re-ran (``manifest.reproduction``)."""

    original: Text | None = None
    sample: Count | None = None
    sample_seed: int | None = None
    sampled_runs: Count | None = None
    spec_dir: Text | None = None


class CodeFileInfo(_Record):
    """One file of a local run's code (``manifest.code.files[]``)."""

    path: Text
    sha256: Sha256
    size: Count


class GitInfo(_Record):
    """Where a local run's code came from in git (``manifest.code.git``)."""

    commit: Annotated[str, _pattern(re.compile(r"^[0-9a-f]{40,64}$"), "a git commit id")] | None = None
    dirty: bool | None = None
    diff_sha256: Sha256 | None = None
    remote: Text | None = None


class CodeInfo(_Record):
    """A run's code identity (``manifest.code``): the files of a local run, or a cluster run's image."""

    source: Literal["files", "image"]
    digest: Text | None = None
    files: list[CodeFileInfo] = []
    git: GitInfo | None = None
    image: Text | None = None
    generated: list[Text] = []


class EnvironmentInfo(_Record):
    """The environment a local run's command used (``manifest.environment``)."""

    digest: Text | None = None
    packages: dict[str, Text] | None = None
    python: dict[str, Any] | None = None
    command: dict[str, Any] | None = None


class Imported(_Record):
    """Set by ``expkit import``: when (on this machine) and from which bundle file."""

    at: Timestamp
    from_: Text = Field(alias="from")


class Manifest(_Record):
    """``<run-id>/manifest.json``: the run's provenance (see :func:`expkit.runs.manifest.build_manifest`)."""

    run_id: RunId
    experiment: Text
    expkit_version: Text
    spec_sha256: Sha256
    spec_file: Text | None = None
    spec_dir: Text | None = None
    image: Text | None = None
    image_pinned: bool | None = None
    overrides: dict[str, Any] = {}
    executor: Word
    workers: Count | None = None
    cells: Count
    algorithms: list[Text] = []
    datasets: list[Text] = []
    replicates: Count | None = None
    seed: Count | None = None
    seed_scheme: Text | None = None
    metric: MetricInfo | None = None
    paired: bool | None = None
    host: HostInfo | None = None
    code: CodeInfo | None = None
    environment: EnvironmentInfo | None = None
    changes: list[dict[str, Any]] = []
    user: Text | None = None
    started_at: Timestamp
    ended_at: Timestamp | None = None
    status: Word
    sessions: list[Session] = []
    counts: Counts | None = None
    cluster: ClusterInfo | None = None
    reproduction: Reproduction | None = None
    imported: Imported | None = None


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ResourceInfo(_Record):
    """What a cell used and was given (``run.json``'s ``resources``): wall time, CPU time and peak memory
    (local cells, from the main process's rusage); requests, limits and the node (cluster cells)."""

    wall_s: Seconds | None = None
    cpu_s: Seconds | None = None
    cpu_user_s: Seconds | None = None
    cpu_system_s: Seconds | None = None
    max_rss_bytes: Count | None = None
    requested: dict[str, Text] | None = None
    limits: dict[str, Text] | None = None
    node: Text | None = None


class CellRecord(_Record):
    """``<run-id>/runs/<alg>/<dataset>/<rep>/run.json``: one cell's status record (local or Argo)."""

    status: Literal["succeeded", "failed"]
    cell: Text | None = None
    algorithm: Text | None = None
    dataset: Text | None = None
    replicate: int | Text | None = None
    seed: int | None = None
    params: dict[str, Any] | None = None
    reason: Text | None = None
    exit_code: int | None = None
    attempts: Count | None = None
    attempt_history: list[dict[str, Any]] | None = None
    started_at: Text | None = None  # as the executor reported it (Argo's node times); nothing orders by them
    ended_at: Text | None = None
    duration_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    host: Text | None = None
    node: Text | None = None
    cpu_model: Text | None = None
    executor: Text | None = None
    code_digest: Text | None = None
    environment_digest: Text | None = None
    resources: ResourceInfo | None = None
    metrics: dict[str, Any] | None = None
    phase: Text | None = None
    workflow: Text | None = None
    node_id: Text | None = None
    log_key: Text | None = None


def _first_problem(err: ValidationError, doc: Any) -> str:
    """``field.path: what is wrong`` of the first validation error (pydantic's union tags left out)."""
    first = err.errors(include_url=False)[0]
    loc: list[str] = []
    node = doc
    for part in first["loc"]:  # keep the keys and indices that exist in the document
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif first["type"] == "missing" and isinstance(node, dict):
            loc.append(str(part))
            break
        else:
            break
        loc.append(str(part))
    message = str(first["msg"]).removeprefix("Value error, ")
    message = re.sub(r"valid dictionary or instance of \w+", "JSON object", message)
    message = message.replace("Input should be", "should be").replace("valid dictionary", "JSON object")
    if first["type"] == "missing":
        message = "is missing"
    return f"{'.'.join(loc) or '(top level)'}: {message}"


def parse_json_record(data: bytes, where: str) -> Any:
    """``data`` parsed as JSON within :func:`~expkit.core.safejson.parse_json`'s limits and at most
    :data:`MAX_RECORD_BYTES`; :class:`ValueError` saying what is wrong, prefixed with ``where``."""
    try:
        return parse_json(data, max_bytes=MAX_RECORD_BYTES)
    except JSONLimitError as err:
        raise ValueError(f"{where}: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{where}: not valid JSON ({str(err)[:120]})") from None


def check_manifest(doc: Any, where: str, fix: str) -> dict[str, Any]:
    """Return ``doc`` when it is a valid manifest; else raise :class:`InputError`
    (``<where>: <field>: <problem>; <fix>``)."""
    if not isinstance(doc, dict):
        raise InputError(f"{where}: not a JSON object; {fix}")
    try:
        Manifest.model_validate(doc)
    except ValidationError as err:
        raise InputError(f"{where}: {_first_problem(err, doc)}; {fix}") from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply; {fix}") from None
    return doc


def load_manifest(data: bytes, where: str, fix: str) -> dict[str, Any]:
    """Parse and check the bytes of a ``manifest.json`` (see :func:`check_manifest`)."""
    try:
        doc = parse_json_record(data, where)
    except ValueError as err:
        raise InputError(f"{err}; {fix}") from None
    return check_manifest(doc, where, fix)


def cell_record_problem(doc: Any) -> str | None:
    """What is wrong with a parsed ``run.json`` (``field: problem``), or None when it is valid."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    try:
        CellRecord.model_validate(doc)
    except ValidationError as err:
        return _first_problem(err, doc)
    except RecursionError:
        return "nested too deeply"
    return None


def cell_record_or_failure(data: bytes | None, where: str, cell: str) -> dict[str, Any]:
    """The ``run.json`` record in ``data`` when it is valid; otherwise a failed record whose reason names
    ``where`` and the problem, so the cell counts as failed (and ``--rerun-failed`` reruns it)."""
    if data is None:
        return failed_record(cell, f"{where}: {RUN_FILE} disappeared while it was read")
    try:
        doc = parse_json_record(data, where)
    except ValueError as err:
        return failed_record(cell, f"invalid {RUN_FILE}: {err}")
    problem = cell_record_problem(doc)
    if problem is not None:
        return failed_record(cell, f"invalid {RUN_FILE}: {where}: {problem}")
    record: dict[str, Any] = doc
    return record


def failed_record(cell: str, reason: str) -> dict[str, Any]:
    """A stand-in record for a cell whose ``run.json`` cannot be used: failed, with ``reason``."""
    return {"cell": cell, "status": "failed", "reason": reason, "invalid_record": True}


def is_imported(manifest: dict[str, Any]) -> bool:
    """Whether the run came from a bundle (``expkit import``) rather than being run on this store."""
    return isinstance(manifest.get(IMPORTED_KEY), dict)


def refuse_imported(manifest: dict[str, Any], run_id: str, what: str) -> None:
    """Raise :class:`InputError` when the run was imported: expkit never runs an imported run's command
    behind the user's back; ``expkit reproduce BUNDLE`` shows the command and asks first."""
    if is_imported(manifest):
        source = str((manifest.get(IMPORTED_KEY) or {}).get("from") or "a bundle")
        raise InputError(
            f"run {run_id} was imported from {source}: expkit does not {what} an imported run; to re-run "
            f"its experiment use 'expkit reproduce {source}', which shows the command and asks first"
        )


def store_time(manifest: dict[str, Any]) -> datetime:
    """When the run arrived in this store: its import time for an imported run, else when expkit created it.
    A bundle's own claim (its ``started_at``) never counts; an unreadable time is the epoch."""
    imported = manifest.get(IMPORTED_KEY)
    raw = imported.get("at") if isinstance(imported, dict) else manifest.get("started_at")
    if not isinstance(raw, str):
        return _EPOCH
    try:
        parsed = _parse_time(raw)
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def current_user() -> str | None:
    """The login name of this process's user (recorded in new manifests), or None when there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return None

"""What is in a run store: the runs, their status counts, their provenance and their failures."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from expkit.core.errors import InputError, RunNotFound
from expkit.runs.code import code_versions
from expkit.runs.records import IMPORTED_KEY, is_imported, store_time
from expkit.stores.base import RunStore
from expkit.stores.cell_logs import log_location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """One run at a glance."""

    run_id: str
    experiment: str
    started_at: str
    ended_at: str | None
    status: str
    executor: str
    total: int
    succeeded: int
    failed: int
    imported: str | None = None  # the bundle file an imported run came from
    problem: str | None = None  # why the run's manifest cannot be read (then nothing else is known)

    @property
    def missing(self) -> int:
        """Cells without a record yet."""
        return max(self.total - self.succeeded - self.failed, 0)

    @property
    def complete(self) -> bool:
        """Whether every cell succeeded."""
        return self.succeeded == self.total

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived counts, for JSON output."""
        return {**asdict(self), "missing": self.missing, "complete": self.complete}


def run_info(store: RunStore, run_id: str, manifest: dict[str, Any] | None = None) -> RunInfo:
    """One run at a glance, from its manifest (read unless given) and its cell records."""
    manifest = manifest if manifest is not None else store.manifest(run_id)
    records = store.checked_cell_records(run_id)  # lost outputs count as failed
    succeeded = sum(1 for r in records.values() if r.get("status") == "succeeded")
    return RunInfo(
        run_id=run_id,
        experiment=str(manifest.get("experiment", "")),
        started_at=str(manifest.get("started_at", "")),
        ended_at=manifest.get("ended_at"),
        status=str(manifest.get("status", "unknown")),
        executor=str(manifest.get("executor", "")),
        total=int(manifest.get("cells", len(records))),
        succeeded=succeeded,
        failed=len(records) - succeeded,
        imported=str(manifest[IMPORTED_KEY].get("from", "")) if is_imported(manifest) else None,
    )


def list_runs(store: RunStore) -> list[RunInfo]:
    """Every run in the store, newest first — by when it arrived here: an imported run by its import time,
    never by its bundle's claim. A run whose manifest is bad is listed with status ``invalid`` and the
    :attr:`RunInfo.problem`, last."""
    found: list[tuple[Any, RunInfo]] = []
    bad: list[RunInfo] = []
    for run_id in store.list_runs():
        try:
            manifest = store.manifest(run_id)
        except RunNotFound:
            continue  # deleted since it was listed
        except InputError as err:
            log.debug("run %s: %s", run_id, err)
            bad.append(RunInfo(run_id, "", "", None, "invalid", "", 0, 0, 0, problem=str(err)))
            continue
        found.append((store_time(manifest), run_info(store, run_id, manifest)))
    found.sort(key=lambda t: (t[0], t[1].run_id), reverse=True)
    return [info for _, info in found] + sorted(bad, key=lambda i: i.run_id)


def show_run(store: RunStore, run_ref: str) -> dict[str, Any]:
    """Provenance and state of one run: the manifest, the counts and every failed cell with its reason and
    where its log is."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    records = store.checked_cell_records(run_id)  # lost outputs count as failed
    info = run_info(store, run_id, manifest)
    failures = [
        {
            "cell": k,
            "reason": r.get("reason"),
            "exit_code": r.get("exit_code"),
            "attempts": r.get("attempts"),
            "log": log_location(store, run_id, k),  # a file path, or the object's URL (expkit logs RUN --failed)
        }
        for k, r in sorted(records.items())
        if r.get("status") != "succeeded"
    ]
    durations = sorted(float(r.get("duration_s") or 0.0) for r in records.values())
    return {
        "run_id": run_id,
        "store": store.url,
        "manifest": manifest,
        "counts": {"total": info.total, "succeeded": info.succeeded, "failed": info.failed, "missing": info.missing},
        "complete": info.complete,
        "failures": failures,
        "cell_seconds": {
            "total": round(sum(durations), 3),
            "median": round(durations[len(durations) // 2], 3) if durations else None,
            "max": round(durations[-1], 3) if durations else None,
        },
        "nodes": sorted({str(r.get("node")) for r in records.values() if r.get("node")}),
        "code_versions": {digest: len(cells) for digest, cells in code_versions(records).items()},
    }

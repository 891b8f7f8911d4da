"""What is in a run store: the runs, their status counts, their provenance and their failures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from expkit.stores.base import RunStore


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
    records = store.cell_records(run_id)
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
    )


def list_runs(store: RunStore) -> list[RunInfo]:
    """Every run in the store, newest first."""
    infos = [run_info(store, r) for r in store.list_runs()]
    return sorted(infos, key=lambda i: (i.started_at, i.run_id), reverse=True)


def show_run(store: RunStore, run_ref: str) -> dict[str, Any]:
    """Provenance and state of one run: the manifest, the counts and every failed cell with its reason."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    records = store.cell_records(run_id)
    info = run_info(store, run_id, manifest)
    failures = [
        {"cell": k, "reason": r.get("reason"), "exit_code": r.get("exit_code"), "attempts": r.get("attempts")}
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
    }

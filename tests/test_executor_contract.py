"""The executor contract of ``expkit/executors/base.py``, kept by the local executor and by the Argo one.

Both satisfy the runtime-checkable :class:`~expkit.executors.base.Executor` protocol and run through the
same path, :func:`expkit.runner.start_run` / :func:`~expkit.runner.resume_run`: exactly the cells given
run, every finished cell is published (a failed one with its reason), progress arrives through
``on_event``. The Argo executor runs against the Kubernetes test double of ``tests/test_argo_submit.py``
(a real HTTP server playing the API server and Argo's controller, uploading to the SeaweedFS test server);
expected values come from the spec and :mod:`expkit.runs.matrix`, never from the code under test.
"""

# ruff: noqa: F811 - the fixtures of test_argo_submit (the Kubernetes double) are imported to be used by name
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_argo_submit import Cluster, cluster, double, write_spec  # noqa: F401 - cluster, double: fixtures

from expkit.executors.argo.executor import ArgoExecutor
from expkit.executors.argo.sync import sync_run
from expkit.executors.base import CellEvent, Executor, RunContext
from expkit.executors.local import LocalExecutor
from expkit.runner import resume_run, start_run
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import build_matrix, derive_seed
from expkit.spec import load_spec
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, cell_prefix

pytestmark = pytest.mark.timeout(120)

FAILING = "worse/d2/1"
OFFSET = {"good": 0.0, "worse": 0.5}  # the algorithms' "offset" parameter in write_spec


def _executors(cluster: Cluster) -> dict[str, Callable[[], Any]]:
    return {"local": LocalExecutor, "argo": lambda: ArgoExecutor(cluster.client())}


def test_both_executors_satisfy_the_protocol(cluster: Cluster) -> None:
    with cluster.client() as argo:
        local, on_argo = LocalExecutor(), ArgoExecutor(argo)
        assert isinstance(local, Executor) and isinstance(on_argo, Executor)
        assert (local.name, on_argo.name) == ("local", "argo")

    class NoExecute:
        name = "broken"

        def run_prepare(self, ctx: RunContext) -> None:
            return None

    assert not isinstance(NoExecute(), Executor)


@pytest.mark.parametrize("kind", ["local", "argo"])
def test_a_run_through_the_runner_keeps_the_contract(cluster: Cluster, tmp_path: Path, kind: str) -> None:
    spec = write_spec(tmp_path / "study", retries=0, params={"fail": [FAILING]})
    expected = build_matrix(load_spec(spec).experiment)
    store = cluster.store()
    events: list[CellEvent] = []
    executor = _executors(cluster)[kind]()
    try:
        outcome = start_run(spec, store, executor=executor, on_event=events.append)
    finally:
        if kind == "argo":
            executor.argo.close()
    # Exactly the cells of the matrix ran, and every one is published, the failed one with its reason.
    assert (outcome.total, outcome.succeeded, outcome.ran) == (8, 7, 8)
    assert list(outcome.failed) == [FAILING] and "exit code 3" in outcome.failed[FAILING]
    assert store.completed_cells(outcome.run_id) == {c.key for c in expected}
    records = store.cell_records(outcome.run_id)
    for cell in expected:
        rec = records[cell.key]
        assert rec["executor"] == kind
        assert rec["status"] == ("failed" if cell.key == FAILING else "succeeded")
        assert rec["seed"] == derive_seed(11, cell.dataset, cell.replicate)
        if rec["status"] == "succeeded":
            assert rec["metrics"]["loss"] == pytest.approx((cell.seed % 1000) / 1000.0 + OFFSET[cell.algorithm])
    # Progress: every cell started, then finished once with the status of its published record.
    finished = {e.cell: e for e in events if e.kind == "finished"}
    assert set(finished) == {c.key for c in expected}
    assert all(finished[k].status == records[k]["status"] for k in finished)
    assert finished[FAILING].reason and "exit code 3" in finished[FAILING].reason
    order = [(e.kind, e.cell) for e in events]
    assert all(order.index(("started", k)) < order.index(("finished", k)) for k in finished)
    manifest = store.manifest(outcome.run_id)
    assert manifest["executor"] == kind and manifest["counts"]["failed"] == 1


def test_resume_on_argo_reruns_only_the_failed_cell_as_a_retry_workflow(cluster: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "still-broken"
    flag.touch()
    spec = write_spec(tmp_path / "study", retries=0, params={"fail": [FAILING], "fail_flag": str(flag)})
    store = cluster.store()
    with cluster.client() as argo:
        first = start_run(spec, store, executor=ArgoExecutor(argo))
        assert list(first.failed) == [FAILING]
        flag.unlink()  # fixed
        events: list[CellEvent] = []
        again = resume_run(first.run_id, store, rerun_failed=True, executor=ArgoExecutor(argo), on_event=events.append)
    assert again.ok and (again.ran, again.skipped, again.succeeded) == (1, 7, 8)
    assert [(e.kind, e.cell, e.status) for e in events if e.kind == "finished"] == [("finished", FAILING, "succeeded")]
    retry_wf = store.get_json(cell_prefix(first.run_id, FAILING) + "run.json")["workflow"]
    assert retry_wf.startswith(f"{first.run_id}-retry-")
    assert sorted(e.cell for e in cluster.double.executions if e.workflow == retry_wf) == [FAILING]
    assert store.get_json(cell_prefix(first.run_id, "good/d1/0") + "run.json")["workflow"] == first.run_id


def test_argo_without_wait_returns_at_once_and_sync_publishes_later(cluster: Cluster, tmp_path: Path) -> None:
    loaded = load_spec(write_spec(tmp_path / "study"))
    cells = build_matrix(loaded.experiment)
    store = cluster.store()
    # The run is created the way the runner creates one; then its cells go to the executor.
    run_id = new_run_id(loaded.name, store.list_runs())
    store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/{MANIFEST_KEY}", build_manifest(loaded, run_id, "argo", len(cells), len(cells)))
    ctx = RunContext(run_id, loaded.experiment, loaded.directory, store)
    with cluster.client() as argo:
        executor = ArgoExecutor(argo, wait=False)
        executor.run_prepare(ctx)
        assert executor.execute(ctx, cells) == []  # asynchronous: nothing published yet
        manifest = store.manifest(run_id)
        assert manifest["status"] == "submitted" and [w["name"] for w in manifest["cluster"]["workflows"]] == [run_id]
        assert store.completed_cells(run_id) == set()
        cluster.double.wait_finished(run_id, cluster.namespace)
        later = cluster.store()  # as `expkit status` would: the listing above is remembered by `store`
        status = sync_run(argo, later, run_id)
    assert status.synced == 8 and status.ok
    assert later.completed_cells(run_id) == {c.key for c in cells}
    assert {r["status"] for r in later.cell_records(run_id).values()} == {"succeeded"}
    assert later.manifest(run_id)["status"] == "complete"

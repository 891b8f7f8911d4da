"""Large runs on Argo: sharding (several workflows under one run id) and batching (several cells per pod).

Pure tests check where shard boundaries fall and what the rendered workflows look like (golden YAML in
``tests/golden/``); the end-to-end tests run in the Kubernetes test double (``tests/k8s_double.py``, a
real HTTP server playing Argo's controller, which runs every container's command locally and uploads
its outputs to the real S3 test server) through the CLI. Expected values come from the spec and from
:mod:`expkit.runs.matrix` (seeds), never from the code under test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_double import K8sDouble
from s3server import S3Endpoint, new_bucket_name
from test_argo_submit import IMAGE, Cluster, _cluster

from expkit.cli import app
from expkit.executors.argo.render import ETCD_REQUEST_LIMIT
from expkit.executors.argo.shards import DEFAULT_MAX_CELLS_PER_WORKFLOW, cells_per_pod, plan_shards
from expkit.executors.argo.sizes import workflow_object_bytes
from expkit.executors.argo.status import cell_records_from_workflow
from expkit.executors.argo.validate import validate_workflow
from expkit.executors.argo.workflows import render_stream, render_submission
from expkit.runs.matrix import build_matrix, derive_seed
from expkit.spec import load_spec_text
from expkit.stores.base import cell_prefix

GOLDEN = Path(__file__).parent / "golden"

#: A cheap cell (no Python start-up): writes {"metrics": {"loss": <seed>}} — braces as printf's octal
#: escapes, so the spec has no placeholder braces — and fails on purpose for the cells listed in its first
#: argument (params.fail), while the file named by its second (params.flag) exists, or always without one;
#: with a third (params.hold), it first waits (at most 30 s) for that file.
CELL = (
    'if [ -n "$3" ]; then i=0; while [ ! -e "$3" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; fi; '
    'if [ -z "$2" ] || [ -e "$2" ]; then case " $1 " in *" $EXPKIT_CELL "*) echo "boom $EXPKIT_CELL"; exit 3;; '
    "esac; fi; "
    'printf \'\\173"metrics": \\173"loss": %s\\175\\175\' "$EXPKIT_SEED" > "$EXPKIT_OUTPUT_DIR/result.json"; '
    'echo "ran $EXPKIT_CELL seed $EXPKIT_SEED"'
)


def spec_doc(
    name: str = "shards", *, algorithms: int = 2, datasets: int = 2, replicates: int = 5, **extra: Any
) -> dict[str, Any]:
    k8s = extra.pop("kubernetes", {})
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["sh", "-c", CELL],
        "args": ["sh", "{params.fail}", "{params.flag}", "{params.hold}"],
        "params": {"fail": extra.pop("fail", ""), "flag": extra.pop("flag", ""), "hold": extra.pop("hold", "")},
        "algorithms": [{"name": f"a{i}"} for i in range(algorithms)],
        "datasets": [f"d{i}" for i in range(datasets)],
        "replicates": replicates,
        "seed": 7,
        "metric": {"name": "loss", "goal": "minimize"},
        "kubernetes": k8s,
        **extra,
    }
    return {"apiVersion": "expkit/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": body}


def loaded_of(doc: dict) -> Any:
    return load_spec_text(yaml.safe_dump(doc, sort_keys=False))


def write(tmp: Path, doc: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "experiment.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Pure: where the boundaries fall, what is rendered
# ---------------------------------------------------------------------------------------------


def test_a_10000_cell_run_becomes_several_workflows_each_under_the_limit() -> None:
    doc = spec_doc(algorithms=4, datasets=5, replicates=500, kubernetes={"cellsPerPod": 8})
    loaded = loaded_of(doc)
    planned = render_submission(loaded, "shards-abcde")
    assert len(planned) == 5  # 10,000 cells / the default 2,000 per workflow
    names = [p.doc["metadata"]["name"] for p in planned]
    assert names == [f"shards-abcde-s{i}" for i in range(1, 6)]
    every = [k for p in planned for k in p.cells]
    assert sorted(every) == sorted(c.key for c in build_matrix(loaded.experiment)) and len(set(every)) == 10_000
    for p in planned:
        assert len(p.cells) <= DEFAULT_MAX_CELLS_PER_WORKFLOW
        labels = p.doc["metadata"]["labels"]
        assert labels["expkit.io/run-id"] == "shards-abcde" and labels["expkit.io/shards"] == "5"
        validate_workflow(p.doc)
        # The object the controller keeps: this spec plus one status node per pod (modelled, see
        # expkit/executors/argo/sizes.py), compressed as Argo stores it once it is large.
        size = workflow_object_bytes(len(p.text.encode()), len(p.cells), cells_per_pod=8)
        assert size.compressed < ETCD_REQUEST_LIMIT
    # Each shard's cells are whole batches: a batch is one algorithm x dataset, 8 consecutive replicates.
    batches = {(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]) // 8) for k in every}
    owner: dict[Any, int] = {}
    for i, p in enumerate(planned):
        for k in p.cells:
            owner.setdefault((k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]) // 8), i)
            assert owner[(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]) // 8)] == i
    assert len(owner) == len(batches)
    # Deterministic: the same spec renders the same stream.
    again = render_stream(render_submission(loaded, "shards-abcde"))
    assert again == render_stream(planned)


def test_shards_never_split_a_batch_and_take_replicates_in_order() -> None:
    loaded = loaded_of(
        spec_doc(algorithms=2, datasets=1, replicates=10, kubernetes={"cellsPerPod": 3, "maxCellsPerWorkflow": 7})
    )
    shards = plan_shards(loaded.experiment)
    # Batches replicate-major: [0,1,2] of a0 and a1 (6 cells), then [3,4,5] ... at most 7 cells a shard.
    got = [[(b.algorithm, b.replicates) for b in shard] for shard in shards]
    assert got == [
        [("a0", (0, 1, 2)), ("a1", (0, 1, 2))],
        [("a0", (3, 4, 5)), ("a1", (3, 4, 5))],
        [("a0", (6, 7, 8)), ("a1", (6, 7, 8)), ("a0", (9,))],  # 7 cells: the limit
        [("a1", (9,))],
    ]


def test_cells_per_pod_auto_follows_the_documented_rule() -> None:
    def per_pod(expected: str, timeout: str | None = None, replicates: int = 500) -> int:
        extra = {"timeout": timeout} if timeout else {}
        doc = spec_doc(replicates=replicates, kubernetes={"cellsPerPod": "auto", "expectedRunTime": expected}, **extra)
        return cells_per_pod(loaded_of(doc).experiment)

    assert per_pod("2s") == 30  # 60 s of work per pod
    assert per_pod("0.1s") == 100  # at most 100 cells a pod
    assert per_pod("2s", timeout="20s") == 10  # never more than fits in one timeout
    assert per_pod("90s") == 1  # a minute or more: one per pod
    assert per_pod("2s", replicates=4) == 4  # never more than the replicates


def test_bad_batching_settings_are_one_line_spec_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    for k8s, words in (
        ({"cellsPerPod": "auto"}, "expectedRunTime"),
        ({"cellsPerPod": 0}, "between 1 and 10000"),
        ({"cellsPerPod": 50, "maxCellsPerWorkflow": 10}, "maxCellsPerWorkflow"),
    ):
        path = write(tmp_path, spec_doc(kubernetes=k8s))
        result = CliRunner().invoke(app, ["validate", str(path)])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "cellsPerPod" in lines[0] and words in lines[0], lines


def test_a_parameter_holding_the_batch_runners_markers_is_refused(tmp_path: Path) -> None:
    """A batch pod's runner replaces U+E000..U+E001 markers in the argv after Argo substituted the
    parameters: a parameter value holding them would be rewritten (into a seed, a path), so render refuses it."""
    from typer.testing import CliRunner

    doc = spec_doc(kubernetes={"cellsPerPod": 5}, fail="\ue000S\ue001")
    result = CliRunner().invoke(app, ["render", str(write(tmp_path, doc)), "-o", str(tmp_path / "wf.yaml")])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "spec.params" in lines[0] and "U+E000" in lines[0], lines
    assert not (tmp_path / "wf.yaml").exists()


def test_render_writes_every_shard_as_one_yaml_stream(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    doc = spec_doc(replicates=6, kubernetes={"cellsPerPod": 3, "maxCellsPerWorkflow": 6})
    path = write(tmp_path, doc)
    out = tmp_path / "wf.yaml"
    result = CliRunner().invoke(app, ["render", str(path), "--run-id", "shards-x1y2z", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 workflows" in result.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["metadata"]["name"] for d in docs] == [f"shards-x1y2z-s{i}" for i in range(1, 5)]
    for d in docs:
        validate_workflow(d)
    assert out.read_text().count("\n---\n") == 3
    # stdout: the same stream
    printed = CliRunner().invoke(app, ["render", str(path), "--run-id", "shards-x1y2z"])
    assert printed.exit_code == 0 and printed.stdout == out.read_text()


def test_golden_yaml_of_a_small_sharded_and_batched_spec() -> None:
    doc = spec_doc(
        "golden-shards",
        algorithms=2,
        datasets=1,
        replicates=3,
        kubernetes={"cellsPerPod": 2, "maxCellsPerWorkflow": 2},
        timeout="30s",
        retries=1,
        parallelism=4,
    )
    doc["spec"]["command"] = ["python", "run.py"]
    doc["spec"]["args"] = ["--seed", "{seed}", "--out", "{output_dir}/r{replicate}.json", "--alg", "{algorithm}"]
    text = render_stream(render_submission(loaded_of(doc), "golden-shards-abcde"))
    golden = GOLDEN / "argo_sharded_batched.yaml"
    if os.environ.get("EXPKIT_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), (
        "the rendered workflows changed: review the diff, then regenerate with EXPKIT_UPDATE_GOLDEN=1"
    )
    # three workflows of 2 cells each (batches [0,1] of a0, [0,1] of a1, [2] of a0 and a1), the probe once
    docs = list(yaml.safe_load_all(text))
    assert [d["metadata"]["name"] for d in docs] == [f"golden-shards-abcde-s{i}" for i in (1, 2, 3)]
    assert [d["spec"]["parallelism"] for d in docs] == [1, 1, 1]  # 4 // 3
    assert ["probe-environment" in str(d["spec"]["templates"]) for d in docs] == [True, False, False]


def test_batch_pod_status_becomes_one_record_per_cell() -> None:
    """A batch pod's node as Argo reports it, its output parameter carrying the runner's outcomes."""
    loaded = loaded_of(spec_doc(replicates=3, kubernetes={"cellsPerPod": 3}))
    wf = render_submission(loaded, "shards-abcde")[0].doc
    entries = [
        {"r": 0, "x": 0, "m": None, "t0": 1_700_000_000.0, "t1": 1_700_000_002.5, "h": [[0, 2.5, None]]},
        {"r": 1, "x": 3, "m": "exit code 3", "t0": 1_700_000_002.5, "t1": 1_700_000_003.0, "h": [[3, 0.5, "x"]]},
    ]
    node = {
        "id": "shards-abcde-1",
        "name": "shards-abcde.ds-d0.alg-a0(0:[0,1,2])",
        "type": "Pod",
        "templateName": "cell",
        "phase": "Failed",
        "message": "Pod was active on the node longer than the specified deadline",
        "hostNodeName": "node-a",
        "startedAt": "2023-11-14T22:13:20Z",
        "finishedAt": "2023-11-14T22:14:20Z",
        "inputs": {
            "parameters": [
                {"name": "algorithm", "value": "a0"},
                {"name": "dataset", "value": "d0"},
                {"name": "datasetSeed", "value": "12345"},
                {"name": "replicates", "value": "[0,1,2]"},
                {"name": "params", "value": "{}"},
            ]
        },
        "outputs": {"parameters": [{"name": "cells", "value": json.dumps(entries)}], "exitCode": "1"},
    }
    wf["status"] = {"phase": "Failed", "nodes": {node["id"]: node}}
    records = cell_records_from_workflow(wf)
    assert sorted(records) == ["a0/d0/0", "a0/d0/1", "a0/d0/2"]
    ok, bad, lost = records["a0/d0/0"], records["a0/d0/1"], records["a0/d0/2"]
    assert ok["status"] == "succeeded" and ok["duration_s"] == 2.5 and ok["node"] == "node-a"
    assert ok["started_at"] == "2023-11-14T22:13:20.000Z" and ok["attempts"] == 1
    assert bad["status"] == "failed" and bad["exit_code"] == 3 and bad["reason"] == "exit code 3"
    assert lost["status"] == "failed" and "deadline" in lost["reason"] and lost["attempts"] == 0
    # seeds: the scheme of expkit.runs.matrix, from the dataset's offset
    assert [records[f"a0/d0/{r}"]["seed"] for r in range(3)] == [
        (12345 + r * 1640531527) % (2**31 - 1) for r in range(3)
    ]


# ---------------------------------------------------------------------------------------------
# End to end in the Kubernetes test double
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def double(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[K8sDouble, str]]:
    bucket = new_bucket_name("shards")
    root = s3_server.store(bucket, "", cache_dir=tmp_path_factory.mktemp("double-cache"), create=True)
    with K8sDouble(artifacts=root, scratch=tmp_path_factory.mktemp("double")) as dbl:
        yield dbl, bucket
    assert dbl.errors == [], dbl.errors


@pytest.fixture
def cluster(double: tuple[K8sDouble, str], s3_server: S3Endpoint, tmp_path: Path) -> Cluster:
    return _cluster(double, s3_server, tmp_path)


def _records(c: Cluster, run_id: str) -> dict[str, dict[str, Any]]:
    return c.store().cell_records(run_id)


def test_batching_runs_n_cells_per_pod_and_one_failure_leaves_the_others(cluster: Cluster) -> None:
    doc = spec_doc(replicates=4, kubernetes={"cellsPerPod": 4}, retries=1, fail="a1/d0/2")
    path = write(cluster.tmp / "study", doc)
    result = cluster.invoke("submit", str(path), "--watch", "--json")
    assert result.exit_code == 1, result.output  # one cell failed
    run_id = json.loads(result.stdout)["run_id"]
    ran = [e for e in cluster.double.executions if e.workflow == run_id and "probe" not in e.node_name]
    assert len(ran) == 4  # 2 algorithms x 2 datasets, one pod each for its 4 replicates
    assert {e.env["EXPKIT_BATCH_REPLICATES"] for e in ran} == {"[0,1,2,3]"}
    records = _records(cluster, run_id)
    assert len(records) == 16
    failed = {k for k, r in records.items() if r["status"] == "failed"}
    assert failed == {"a1/d0/2"}
    bad = records["a1/d0/2"]
    assert bad["exit_code"] == 3 and bad["attempts"] == 2 and "exit code 3" in bad["reason"]
    store = cluster.store()
    assert b"boom a1/d0/2" in store.get(cell_prefix(run_id, "a1/d0/2") + "log.txt")
    for key, rec in records.items():
        alg, ds, rep = key.split("/")
        if key in failed:
            continue
        assert rec["status"] == "succeeded" and rec["seed"] == derive_seed(7, ds, int(rep))
        assert rec["metrics"]["loss"] == derive_seed(7, ds, int(rep))  # each cell its own result.json
        assert f"ran {key} seed".encode() in store.get(cell_prefix(run_id, key) + "log.txt")
    manifest = store.manifest(run_id)
    assert manifest["counts"] == {"total": 16, "succeeded": 15, "failed": 1, "missing": 0}
    # The batch pod of the failure is still there (failed pods are kept) and its log has every cell.
    logs = cluster.invoke("logs", run_id, "--algorithm", "a1", "--dataset", "d0", "--replicate", "2")
    assert logs.exit_code == 0, logs.output
    assert "boom a1/d0/2" in logs.stdout


@pytest.mark.timeout(900)
def test_a_10000_cell_run_runs_end_to_end_into_the_s3_store(cluster: Cluster) -> None:
    doc = spec_doc(algorithms=4, datasets=5, replicates=500, kubernetes={"cellsPerPod": 100}, parallelism=10)
    path = write(cluster.tmp / "study", doc)
    result = cluster.invoke("submit", str(path), "--watch", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    run_id = out["run_id"]
    assert out["phase"] == "Succeeded" and out["counts"]["succeeded"] == 10_000 and out["total"] == 10_000
    workflows = cluster.double.workflows(cluster.namespace)
    names = sorted(w["metadata"]["name"] for w in workflows)
    assert names == [f"{run_id}-s{i}" for i in range(1, 6)]
    for wf in workflows:
        # The object as the double's controller left it: spec and status, under etcd's limit.
        assert len(json.dumps(wf).encode()) < ETCD_REQUEST_LIMIT
        assert wf["spec"]["parallelism"] == 2  # the run's 10, shared by its 5 workflows
    store = cluster.store()
    manifest = store.manifest(run_id)
    assert manifest["status"] == "complete"
    assert manifest["counts"] == {"total": 10_000, "succeeded": 10_000, "failed": 0, "missing": 0}
    assert [w["name"] for w in manifest["cluster"]["workflows"]] == names
    assert len(store.completed_cells(run_id)) == 10_000
    for key in ("a0/d0/0", "a3/d4/499", "a2/d1/250"):
        alg, ds, rep = key.split("/")
        assert store.get_json(cell_prefix(run_id, key) + "run.json")["metrics"]["loss"] == derive_seed(7, ds, int(rep))
    status = cluster.invoke("status", run_id, "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["counts"]["succeeded"] == 10_000
    listed = cluster.invoke("list", "--cluster", "--json")
    rows = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert len(rows) == 1 and rows[0]["phase"] == "Succeeded" and "+4 shards" in rows[0]["workflow"]


def test_sharded_run_status_stop_and_retry_treat_the_shards_as_one_run(cluster: Cluster) -> None:
    flag = cluster.tmp / "still-broken"
    flag.touch()
    k8s = {"cellsPerPod": 2, "maxCellsPerWorkflow": 4}
    doc = spec_doc(replicates=4, kubernetes=k8s, fail="a0/d1/3", flag=str(flag))
    path = write(cluster.tmp / "study", doc)
    first = cluster.invoke("submit", str(path), "--watch", "--json")
    assert first.exit_code == 1, first.output
    doc1 = json.loads(first.stdout)
    run_id = doc1["run_id"]
    assert doc1["total"] == 16 and doc1["counts"]["failed"] == 1 and doc1["counts"]["succeeded"] == 15
    assert doc1["phase"] == "Failed" and len(doc1["workflows"]) == 4
    # stop: every workflow has finished, nothing to stop
    stopped = cluster.invoke("stop", run_id)
    assert stopped.exit_code == 0 and "nothing to stop" in stopped.output
    # retry: only the failed cell, into the same run
    flag.unlink()  # fixed
    retried = cluster.invoke("retry", run_id, "--watch", "--json")
    assert retried.exit_code == 0, retried.output
    doc2 = json.loads(retried.stdout)
    assert doc2["counts"] == {"pending": 0, "running": 0, "succeeded": 16, "failed": 0}
    retry_runs = [e for e in cluster.double.executions if e.workflow == doc2["workflow"]]
    assert len(retry_runs) == 1  # one pod, for the one failed cell
    assert cluster.store().manifest(run_id)["status"] == "complete"


def test_a_shard_that_cannot_be_created_takes_the_others_back(cluster: Cluster) -> None:
    doc = spec_doc(replicates=3, kubernetes={"maxCellsPerWorkflow": 4})  # 12 cells: 3 workflows
    path = write(cluster.tmp / "study", doc)
    cluster.double.controller_enabled = False  # nothing runs: this is about creating and deleting
    cluster.double.fail("create", 403, "Forbidden", "quota exceeded", after=1)
    result = cluster.invoke("submit", str(path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    # The first shard was created, then deleted with the failed submission; the run is not in the store.
    where = f"/namespaces/{cluster.namespace}/workflows"
    created = [r for r in cluster.double.requests if r.method == "POST" and r.path.endswith(where)]
    assert len(created) == 2
    assert cluster.double.workflows(cluster.namespace) == []
    assert cluster.store().list_runs() == []


def test_stop_stops_every_shard_of_a_running_run(cluster: Cluster) -> None:
    hold = cluster.tmp / "never"
    doc = spec_doc(replicates=2, kubernetes={"maxCellsPerWorkflow": 4}, hold=str(hold), parallelism=2)
    path = write(cluster.tmp / "study", doc)
    submitted = cluster.invoke("submit", str(path), "--json")
    assert submitted.exit_code == 0, submitted.output
    names = json.loads(submitted.stdout)["workflows"]
    run_id = json.loads(submitted.stdout)["run_id"]
    assert names == [f"{run_id}-s1", f"{run_id}-s2"]
    dbl = cluster.double

    def running_in(name: str) -> int:
        return len([e for e in dbl.executions if e.workflow == name and e.cell and e.exit_code is None])

    dbl.wait(lambda: running_in(names[0]) >= 1 and running_in(names[1]) >= 1, 20, "cells running in both shards")
    status = cluster.invoke("status", run_id, "--json")
    doc1 = json.loads(status.stdout)
    assert doc1["phase"] == "Running" and doc1["total"] == 8 and len(doc1["workflows"]) == 2
    stopped = cluster.invoke("stop", run_id)
    assert stopped.exit_code == 0, stopped.output
    assert names[0] in stopped.output and names[1] in stopped.output
    for name in names:
        wf = dbl.wait_finished(name, cluster.namespace, timeout=20)  # well before the 30 s hold
        assert wf["spec"]["shutdown"] == "Stop" and wf["status"]["phase"] == "Failed"
    final = json.loads(cluster.invoke("status", run_id, "--json").stdout)
    assert final["done"] is True and final["counts"]["succeeded"] == 0


def test_a_timed_out_cell_of_a_batch_pod_is_killed_and_the_next_one_runs(cluster: Cluster) -> None:
    hold = cluster.tmp / "never"
    doc = spec_doc(datasets=1, replicates=2, kubernetes={"cellsPerPod": 2}, timeout="1s")
    doc["spec"]["algorithms"][1]["params"] = {"hold": str(hold)}  # a1's cells wait for a file that never comes
    path = write(cluster.tmp / "study", doc)
    result = cluster.invoke("submit", str(path), "--watch", "--json")
    assert result.exit_code == 1, result.output
    run_id = json.loads(result.stdout)["run_id"]
    records = _records(cluster, run_id)
    assert {k: r["status"] for k, r in records.items()} == {
        "a0/d0/0": "succeeded",
        "a0/d0/1": "succeeded",
        "a1/d0/0": "failed",
        "a1/d0/1": "failed",  # it ran (and timed out) after the first one timed out
    }
    for key in ("a1/d0/0", "a1/d0/1"):
        rec = records[key]
        assert rec["reason"] == "timed out after 1s (killed)" and rec["exit_code"] is None
        assert rec["duration_s"] is not None and rec["attempts"] == 1


def test_workflows_created_in_the_same_second_are_listed_in_creation_order(cluster: Cluster) -> None:
    """A run's workflows are combined newest-last (a cell's state is the newest workflow's that plans it).
    creationTimestamp has whole seconds, so a retry created in the same second as the last shards must not be
    ordered by name (``<run>-retry-…`` sorts before ``<run>-s3``): that read the retried cell's old failure
    as the run's state and ended `retry --watch` early with exit 1 under load."""
    from expkit.executors.argo.workflows import render_submission

    cluster.double.controller_enabled = False
    loaded = loaded_of(spec_doc(replicates=4, kubernetes={"cellsPerPod": 2, "maxCellsPerWorkflow": 4}))
    run_id = "shards-order"
    planned = render_submission(loaded, run_id, namespace=cluster.namespace)
    retry = render_submission(loaded, run_id, namespace=cluster.namespace, retry=True)
    client = cluster.client()
    names = []
    for wf in [*planned, *retry]:
        created = client.create_workflow(wf.doc)
        names.append(created["metadata"]["name"])
    # as the API server records them when every creation falls within one second
    double = cluster.double

    def same_second() -> None:
        from k8s_double import WORKFLOWS

        for name in names:
            wf = double.api.get_object(WORKFLOWS, cluster.namespace, name)
            wf["metadata"]["creationTimestamp"] = "2026-12-07T00:00:00Z"
            double.api.put_object(WORKFLOWS, cluster.namespace, name, wf, "MODIFIED")

    double.call(same_second)
    assert [w["metadata"]["name"] for w in client.run_workflows(run_id)] == names

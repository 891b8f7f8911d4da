"""Submitting, following and managing Argo runs — end to end against the Kubernetes test double.

The double (``tests/k8s_double.py``) is a real HTTP server speaking the Kubernetes API and playing
Argo's controller: it runs every cell's command locally and uploads its outputs to the real S3
test server (SeaweedFS, ``tests/s3server.py``), which is also the run store. The CLI is driven
with typer's CliRunner (and a subprocess for ``logs --follow``); expected values come from the
spec and from :mod:`expkit.runs.matrix` (the local executor's seeds), never from the code under test.
"""

from __future__ import annotations

import base64
import copy
import csv
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_double import (
    ADMIN_TOKEN,
    VIEWER_TOKEN,
    K8sDouble,
    bind_inputs,
    loop_items,
    substitute,
)
from s3server import S3Endpoint, free_ports, new_bucket_name
from typer.testing import CliRunner

from expkit.cli import app
from expkit.core.contract import ENV_VARS, run_environment
from expkit.executors.argo import render_workflow
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.errors import WorkflowRejected
from expkit.executors.argo.render import OUTPUT_DIR, RenderError
from expkit.executors.argo.status import (
    WorkflowStatusError,
    cell_records_from_workflow,
    expected_cell_count,
    planned_cells,
    summarize,
)
from expkit.runs.matrix import build_matrix, derive_seed, render_argv
from expkit.spec import load_spec_text
from expkit.stores.base import cell_prefix

pytestmark = pytest.mark.timeout(120)

#: The cell's program: no braces (they would be expkit placeholders), behaviour from its parameters.
SCRIPT = textwrap.dedent("""\
    import json, os, sys, time
    P = json.loads(os.environ["EXPKIT_PARAMS"])
    cell = os.environ["EXPKIT_CELL"]
    print("start " + cell, flush=True)
    hold = P.get("hold") or ""
    t0 = time.time()
    while hold and not os.path.exists(hold) and time.time() - t0 < 30:
        time.sleep(0.05)
    if hold:
        print("released " + cell, flush=True)
    time.sleep(P.get("sleep", 0))
    flag = P.get("fail_flag") or ""
    if cell in P.get("fail", []) and (not flag or os.path.exists(flag)):
        print("boom: cell " + cell + " failed on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    seed = int(os.environ["EXPKIT_SEED"])
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump(dict(metrics=dict(loss=(seed % 1000) / 1000.0 + P.get("offset", 0.0)), seed=seed), fh)
    with open(os.path.join(out, "extra.txt"), "w") as fh:
        fh.write("extra output of " + cell)
""")
IMAGE = "python:3.12-slim@sha256:" + "a" * 64


def spec_doc(name: str = "argotest", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["python", "-c", SCRIPT],
        "params": {},
        "algorithms": [
            {"name": "good", "params": {"offset": 0.0}},
            {"name": "worse", "params": {"offset": 0.5, "sleep": 1.0}},
        ],
        "datasets": ["d1", "d2"],
        "replicates": 2,
        "seed": 11,
        "retries": 1,
        "metric": {"name": "loss", "goal": "minimize"},
    }
    body.update(spec)
    return {"apiVersion": "expkit/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": body}


def write_spec(directory: Path, name: str = "argotest", **spec: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "experiment.yml"
    path.write_text(yaml.safe_dump(spec_doc(name, **spec), sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Fixtures: one double (and bucket) per module; a fresh namespace and store prefix per test
# ---------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    double: K8sDouble
    s3: S3Endpoint
    bucket: str
    prefix: str
    namespace: str
    kubeconfig: Path
    tmp: Path

    @property
    def store_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def env(self) -> dict[str, str | None]:
        cfg = self.tmp / "expkit-config.toml"
        cfg.touch()
        return {
            **self.s3.env(),
            "KUBECONFIG": str(self.kubeconfig),
            "EXPKIT_STORE": self.store_url,
            "EXPKIT_CACHE_DIR": str(self.tmp / "cache"),
            "EXPKIT_CONFIG": str(cfg),
            "EXPKIT_PROFILE": None,
            "AWS_SESSION_TOKEN": None,
            "EXPKIT_KUBE_CONTEXT": None,
            "EXPKIT_NAMESPACE": None,
            "EXPKIT_S3_ATTEMPTS": "2",
            "EXPKIT_S3_BACKOFF": "0.05",
        }

    def invoke(self, *args: str, **env: str | None):
        return CliRunner().invoke(app, list(args), env={**self.env, **env}, catch_exceptions=False)

    def store(self):
        return self.s3.store(self.bucket, self.prefix, cache_dir=self.tmp / "test-cache")

    def client(self, context: str | None = None) -> ArgoClient:
        return ArgoClient(self.kubeconfig, context)


@pytest.fixture(scope="module")
def double(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[K8sDouble, str]]:
    bucket = new_bucket_name("argo")
    root = s3_server.store(bucket, "", cache_dir=tmp_path_factory.mktemp("double-cache"), create=True)
    with K8sDouble(artifacts=root, scratch=tmp_path_factory.mktemp("double")) as dbl:
        yield dbl, bucket
    assert dbl.errors == [], dbl.errors


def _cluster(double: tuple[K8sDouble, str], s3: S3Endpoint, tmp: Path) -> Cluster:
    dbl, bucket = double
    dbl.reset()
    tag = uuid.uuid4().hex[:8]
    dbl.workdir = tmp
    kubeconfig = dbl.kubeconfig(tmp / "kubeconfig", namespace=f"ns-{tag}", unreachable_port=free_ports(1)[0])
    return Cluster(dbl, s3, bucket, f"runs-{tag}", f"ns-{tag}", kubeconfig, tmp)


@pytest.fixture
def cluster(double: tuple[K8sDouble, str], s3_server: S3Endpoint, tmp_path: Path) -> Cluster:
    return _cluster(double, s3_server, tmp_path)


def run_id_of(text: str, name: str = "argotest") -> str:
    import re

    match = re.search(rf"\b{name}-[a-z0-9]{{5}}\b", text)
    assert match, text
    return match.group(0)


def error_lines(result: Any) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


# ---------------------------------------------------------------------------------------------
# One finished run with a failing cell, shared by the tests that read it
# ---------------------------------------------------------------------------------------------


@dataclass
class Finished:
    cluster: Cluster
    run_id: str
    result: Any
    spec: Path


@pytest.fixture(scope="module")
def finished(
    double: tuple[K8sDouble, str], s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Finished:
    c = _cluster(double, s3_server, tmp_path_factory.mktemp("finished"))
    spec = write_spec(c.tmp / "study", params={"fail": ["worse/d2/1"]})
    result = c.invoke("submit", str(spec), "--watch")
    return Finished(c, run_id_of(result.output), result, spec)


def test_submit_watch_exits_1_when_the_workflow_failed_and_records_provenance(finished: Finished) -> None:
    c, run_id = finished.cluster, finished.run_id
    assert finished.result.exit_code == 1, finished.result.output
    assert "Traceback" not in finished.result.output
    assert "worse/d2/1" in finished.result.stderr  # the failure is reported as it happens
    store = c.store()
    manifest = store.manifest(run_id)
    assert manifest["executor"] == "argo" and manifest["cells"] == 8
    cluster = manifest["cluster"]
    assert cluster["context"] == "double" and cluster["namespace"] == c.namespace
    assert cluster["server"] == c.double.url
    assert cluster["server_version"] == c.double.server_version
    assert cluster["argo_version"] == c.double.argo_version
    assert [w["name"] for w in cluster["workflows"]] == [run_id] and cluster["workflows"][0]["phase"] == "Failed"
    assert manifest["status"] == "failed" and manifest["counts"] == {
        "total": 8,
        "succeeded": 7,
        "failed": 1,
        "missing": 0,
    }
    stored = load_spec_text(store.spec_text(run_id)).experiment
    assert [a.name for a in stored.spec.algorithms] == ["good", "worse"]
    assert stored.spec.params["fail"] == ["worse/d2/1"]
    # The workflow was created strictly validated, named after the run id, in the context's namespace.
    creates = [
        r for r in c.double.requests if r.method == "POST" and r.path.endswith(f"/namespaces/{c.namespace}/workflows")
    ]
    assert len(creates) == 1 and creates[0].query.get("fieldValidation") == "Strict"
    assert json.loads(creates[0].body)["metadata"]["name"] == run_id
    assert c.double.workflow(run_id, c.namespace)["status"]["phase"] == "Failed"
    # Credentials travel in headers only: no S3 key, secret or bearer token in any request body.
    assert c.double.credentials_seen([c.s3.access_key, c.s3.secret_key, ADMIN_TOKEN, VIEWER_TOKEN]) == []
    assert any(r.headers.get("Authorization") == f"Bearer {ADMIN_TOKEN}" for r in c.double.requests)
    # Every cell ran with the environment of the run contract and no credentials of ours.
    ran = [e for e in c.double.executions if e.workflow == run_id and e.cell]  # not the environment probe
    assert {e.cell for e in ran} == {cell.key for cell in build_matrix(stored)}
    assert all(set(e.env) == set(ENV_VARS) for e in ran)


def _rows(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_results_of_a_cluster_run_read_like_a_local_run(finished: Finished, tmp_path: Path) -> None:
    c, run_id = finished.cluster, finished.run_id
    result = c.invoke("results", run_id, "-o", str(tmp_path / "out"), "--format", "png")
    assert result.exit_code == 0, result.output
    assert "7/8 runs succeeded" in result.output and "worse/d2/1" in result.output
    rows = {(r["algorithm"], r["dataset"], r["replicate"]): r for r in _rows(tmp_path / "out") if r["metric"] == "loss"}
    assert len(rows) == 8
    failed = rows[("worse", "d2", "1")]
    assert failed["status"] == "failed" and "exit code 3" in failed["reason"] and failed["value"] == ""
    assert failed["attempts"] == "2"  # spec.retries = 1: two pods
    offsets = {"good": 0.0, "worse": 0.5}
    for (alg, ds, rep), row in rows.items():
        assert row["node"] in ("node-a", "node-b")
        if (alg, ds, rep) == ("worse", "d2", "1"):
            continue
        assert row["status"] == "succeeded" and row["attempts"] == "1"
        seed = derive_seed(11, ds, int(rep))  # what a local run gets
        assert row["seed"] == str(seed)
        assert float(row["value"]) == pytest.approx(seed % 1000 / 1000 + offsets[alg])
        if alg == "worse":
            assert float(row["duration_s"]) >= 1.0  # the cell sleeps 1 s
    assert {r["node"] for r in rows.values()} == {"node-a", "node-b"}  # spread over both nodes
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats  # the statistics were computed
    # The store holds what a local run leaves: outputs, log.txt from Argo's archived log, run.json.
    store = c.store()
    prefix = cell_prefix(run_id, "good/d1/0")
    assert store.get(prefix + "extra.txt") == b"extra output of good/d1/0"
    assert b"start good/d1/0" in store.get(prefix + "log.txt")
    failed_record = store.get_json(cell_prefix(run_id, "worse/d2/1") + "run.json")
    assert failed_record["status"] == "failed" and failed_record["exit_code"] == 3
    assert [a["exit_code"] for a in failed_record["attempt_history"]] == [3, 3]
    assert b"boom: cell worse/d2/1 failed on purpose" in store.get(cell_prefix(run_id, "worse/d2/1") + "log.txt")
    record = store.get_json(prefix + "run.json")
    assert (
        record["executor"] == "argo"
        and record["workflow"] == run_id
        and record["metrics"]["loss"] == pytest.approx(derive_seed(11, "d1", 0) % 1000 / 1000)
    )


def test_status_and_list_cluster(finished: Finished) -> None:
    c, run_id = finished.cluster, finished.run_id
    result = c.invoke("status", run_id, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["phase"] == "Failed" and doc["done"] is True and doc["total"] == 8
    assert doc["counts"] == {"pending": 0, "running": 0, "succeeded": 7, "failed": 1}
    assert list(doc["failed"]) == ["worse/d2/1"] and "exit code 3" in doc["failed"]["worse/d2/1"]
    assert doc["synced"] == 0  # submit --watch synced everything already
    text = c.invoke("status", run_id)
    assert text.exit_code == 0 and "failed cells:" in text.output and "worse/d2/1" in text.output
    listed = c.invoke("list", "--cluster", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["run_id"], r["workflow"], r["experiment"], r["phase"]) for r in rows] == [
        (run_id, run_id, "argotest", "Failed")
    ]
    plain = c.invoke("list", "--json")  # the store listing is unchanged
    assert plain.exit_code == 0 and [r["run_id"] for r in json.loads(plain.stdout)] == [run_id]


def test_logs_of_a_failed_cell_and_of_a_cell_whose_pod_is_gone(finished: Finished) -> None:
    c, run_id = finished.cluster, finished.run_id
    result = c.invoke("logs", run_id, "--algorithm", "worse", "--dataset", "d2", "--replicate", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("boom: cell worse/d2/1 failed on purpose") == 2  # both attempts
    assert "attempt 2" in result.stdout
    # Succeeded pods are deleted (podGC OnPodSuccess): the log comes from the store's log.txt.
    assert not [p for p in c.double.pods(c.namespace) if p["metadata"]["annotations"]["expkit.io/cell"] == "good/d1/0"]
    gone = c.invoke("logs", run_id, "-a", "good", "-d", "d1", "-r", "0")
    assert gone.exit_code == 0, gone.output
    assert "start good/d1/0" in gone.stdout and c.store_url in gone.stdout


# ---------------------------------------------------------------------------------------------
# Retry, stop, results syncing, follow
# ---------------------------------------------------------------------------------------------


def test_retry_reruns_only_the_failed_cells_into_the_same_run(cluster: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "still-broken"
    flag.touch()
    spec = write_spec(
        tmp_path / "study", retries=0, params={"fail": ["worse/d2/1", "good/d1/0"], "fail_flag": str(flag)}
    )
    first = cluster.invoke("submit", str(spec), "--watch", "--json")
    assert first.exit_code == 1, first.output
    run_id = json.loads(first.stdout)["run_id"]
    assert json.loads(first.stdout)["counts"]["failed"] == 2
    flag.unlink()  # fixed
    retried = cluster.invoke("retry", run_id, "--watch", "--json")
    assert retried.exit_code == 0, retried.output
    doc = json.loads(retried.stdout)
    retry_wf = doc["workflow"]
    assert retry_wf.startswith(f"{run_id}-retry-") and doc["phase"] == "Succeeded"
    assert doc["counts"] == {"pending": 0, "running": 0, "succeeded": 8, "failed": 0}
    ran = sorted(e.cell for e in cluster.double.executions if e.workflow == retry_wf)
    assert ran == ["good/d1/0", "worse/d2/1"]
    create = [r for r in cluster.double.requests if r.method == "POST" and b"generateName" in r.body]
    assert len(create) == 1 and "name" not in json.loads(create[0].body)["metadata"]
    assert json.loads(create[0].body)["metadata"]["labels"]["expkit.io/run-id"] == run_id
    out = tmp_path / "out"
    result = cluster.invoke("results", run_id, "-o", str(out), "--format", "png")
    assert result.exit_code == 0, result.output
    rows = [r for r in _rows(out) if r["metric"] == "loss"]
    assert len(rows) == 8 and {r["status"] for r in rows} == {"succeeded"}
    store = cluster.store()
    assert store.get_json(cell_prefix(run_id, "good/d1/0") + "run.json")["workflow"] == retry_wf
    assert store.get_json(cell_prefix(run_id, "good/d2/0") + "run.json")["workflow"] == run_id
    again = cluster.invoke("retry", run_id)
    assert again.exit_code == 0 and "nothing to retry" in again.output


def test_stop_stops_running_cells_and_starts_no_more(cluster: Cluster, tmp_path: Path) -> None:
    hold = tmp_path / "never"
    spec = write_spec(tmp_path / "study", parallelism=2, retries=0, params={"hold": str(hold)})
    submitted = cluster.invoke("submit", str(spec))
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.stdout.strip()

    def cells_started() -> int:  # the environment probe step is not a cell
        return len([e for e in cluster.double.executions if e.workflow == run_id and e.cell])

    cluster.double.wait(lambda: cells_started() == 2 and cluster.double.running_processes() == 2, 20, "two cells")
    stopped = cluster.invoke("stop", run_id)
    assert stopped.exit_code == 0, stopped.output
    assert run_id in stopped.output
    wf = cluster.double.wait_finished(run_id, cluster.namespace, timeout=15)  # well before the 30 s hold
    assert wf["spec"]["shutdown"] == "Stop" and wf["status"]["phase"] == "Failed"
    assert "Stopped" in wf["status"]["message"]
    assert cluster.double.running_processes() == 0
    assert cells_started() == 2  # nothing new started
    status = cluster.invoke("status", run_id, "--json")
    doc = json.loads(status.stdout)
    assert doc["counts"] == {"pending": 6, "running": 0, "succeeded": 0, "failed": 2}
    assert all("Stopped" in reason for reason in doc["failed"].values())
    assert cluster.invoke("stop", run_id).output.startswith("nothing to stop")


def test_results_syncs_a_run_whose_cells_lack_run_json(cluster: Cluster, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "study",
        params={"fail": ["good/d2/0"]},
        algorithms=[{"name": "good", "params": {"offset": 0.0}}, {"name": "worse", "params": {"offset": 0.5}}],
    )
    submitted = cluster.invoke("submit", str(spec))
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.stdout.strip()
    cluster.double.wait_finished(run_id, cluster.namespace)
    assert cluster.store().completed_cells(run_id) == set()
    # Without cluster access: one warning saying what to run; the cells show as missing.
    blind = cluster.invoke(
        "results", run_id, "-o", str(tmp_path / "blind"), "--format", "png", EXPKIT_KUBE_CONTEXT="nowhere"
    )
    assert blind.exit_code == 0, blind.output
    warning = [ln for ln in blind.stderr.splitlines() if "could not be read" in ln]
    assert len(warning) == 1 and f"expkit status {run_id}" in warning[0] and "nowhere" in warning[0]
    assert {r["status"] for r in _rows(tmp_path / "blind")} == {"missing"}
    # With it: synced first, then the same results as after --watch.
    result = cluster.invoke("results", run_id, "-o", str(tmp_path / "out"), "--format", "png")
    assert result.exit_code == 0, result.output
    assert "synced 8 cell records" in result.stderr
    rows = {(r["algorithm"], r["dataset"], r["replicate"]): r for r in _rows(tmp_path / "out") if r["metric"] == "loss"}
    assert rows[("good", "d2", "0")]["status"] == "failed" and rows[("good", "d2", "0")]["attempts"] == "2"
    assert sum(r["status"] == "succeeded" for r in rows.values()) == 7
    assert len(cluster.store().completed_cells(run_id)) == 8


def test_logs_follow_streams_a_running_cell_until_it_ends(cluster: Cluster, tmp_path: Path) -> None:
    release = tmp_path / "release"
    spec = write_spec(
        tmp_path / "study", replicates=1, datasets=["d1"], algorithms=[{"name": "good"}], params={"hold": str(release)}
    )
    submitted = cluster.invoke("submit", str(spec))
    run_id = submitted.stdout.strip()
    cluster.double.wait(lambda: cluster.double.running_processes() == 1, 20, "the cell to run")
    env = {k: v for k, v in {**os.environ, **cluster.env}.items() if v is not None}
    proc = subprocess.Popen(
        [sys.executable, "-m", "expkit", "logs", run_id, "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The follower is connected once the double has served a follow request for the pod.
        try:
            cluster.double.wait(
                lambda: any(
                    r.path.endswith("/log") and r.query.get("follow") == "true" for r in cluster.double.requests
                ),
                30,
                "the follow request",
            )
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"no follow request; the command said: {proc.communicate()}") from None
        time.sleep(0.2)
        release.touch()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == ["[good/d1/0] start good/d1/0", "[good/d1/0] released good/d1/0"]
    cluster.double.wait_finished(run_id, cluster.namespace)


# ---------------------------------------------------------------------------------------------
# Errors: one line each
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["401", "403", "crd", "409", "422", "unreachable"])
def test_cluster_errors_are_one_line_exit_1(cluster: Cluster, tmp_path: Path, case: str) -> None:
    spec = write_spec(tmp_path / "study")
    flags: list[str] = []
    if case == "401":
        flags, expected = ["--context", "stranger"], ["401", "rejected the credentials", "'stranger'"]
    elif case == "403":
        flags, expected = (
            ["--context", "viewer"],
            [
                "not allowed to create workflows.argoproj.io",
                f"namespace '{cluster.namespace}'",
                "as user 'viewer'",
                "403",
            ],
        )
    elif case == "crd":
        cluster.double.crd_installed = False
        expected = [f"is Argo Workflows installed? the workflows.argoproj.io CRD was not found in {cluster.double.url}"]
    elif case == "409":
        cluster.double.fail("create", 409, "AlreadyExists", 'workflows.argoproj.io "x" already exists', times=None)
        expected = ["already exists", "409", "tried run ids"]
    elif case == "422":
        cluster.double.fail(
            "create",
            422,
            "Invalid",
            'Workflow.argoproj.io "x" is invalid: denied by policy',
            details={
                "causes": [
                    {
                        "reason": "FieldValueForbidden",
                        "field": "spec.serviceAccountName",
                        "message": "Forbidden: the default service account may not run workflows",
                    }
                ]
            },
        )
        expected = ["422", "spec.serviceAccountName: Forbidden: the default service account may not run workflows"]
    else:
        flags, expected = ["--context", "nowhere"], ["cannot reach", "'nowhere'", "connection refused"]
    result = cluster.invoke("submit", str(spec), *flags)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert cluster.store().list_runs() == []  # nothing is left behind in the store
    if case == "unreachable":
        port = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][1]["cluster"]["server"]
        assert port in lines[0]


def test_unknown_field_is_rejected_by_strict_server_side_validation(cluster: Cluster, tmp_path: Path) -> None:
    # This "cluster" runs an Argo whose CRD lacks spec.ttlStrategy: strict validation must refuse the workflow.
    cluster.double.unknown_fields.add(("WorkflowSpec", "ttlStrategy"))
    result = cluster.invoke("submit", str(write_spec(tmp_path / "study")))
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and 'strict decoding error: unknown field "spec.ttlStrategy"' in lines[0]
    assert "400" in lines[0] and cluster.double.workflows(cluster.namespace) == []
    assert cluster.store().list_runs() == []


def test_invalid_value_is_a_422_with_the_field(cluster: Cluster) -> None:
    loaded = load_spec_text(yaml.safe_dump(spec_doc()))
    doc = render_workflow(loaded, "argotest-bad00")
    doc["spec"]["parallelism"] = "seven"
    with cluster.client() as argo, pytest.raises(WorkflowRejected) as info:
        argo.create_workflow(doc)
    assert "422" in str(info.value) and "spec.parallelism" in str(info.value)
    assert info.value.exit_code == 1 and isinstance(info.value.__cause__, Exception)


def test_a_409_on_create_is_retried_with_another_run_id(cluster: Cluster, tmp_path: Path) -> None:
    cluster.double.controller_enabled = False  # nothing needs to run here
    cluster.double.fail("create", 409, "AlreadyExists", 'workflows.argoproj.io "taken" already exists', times=1)
    result = cluster.invoke("submit", str(write_spec(tmp_path / "study")))
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    creates = [
        json.loads(r.body)["metadata"]["name"]
        for r in cluster.double.requests
        if r.method == "POST" and r.path.endswith(f"/namespaces/{cluster.namespace}/workflows")
    ]
    assert len(creates) == 2 and creates[0] != creates[1] == run_id
    assert cluster.store().list_runs() == [run_id]
    assert [w["metadata"]["name"] for w in cluster.double.workflows(cluster.namespace)] == [run_id]


def test_unpinned_image_is_refused_before_any_request(cluster: Cluster, tmp_path: Path) -> None:
    before = len(cluster.double.requests)
    result = cluster.invoke("submit", str(write_spec(tmp_path / "study", image="python:3.12-slim")))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "not pinned by digest" in lines[0] and "expkit pin" in lines[0]
    assert len(cluster.double.requests) == before


def test_kubeconfig_context_namespace_and_flags(cluster: Cluster, tmp_path: Path) -> None:
    cluster.double.controller_enabled = False
    spec = write_spec(tmp_path / "study")
    default = cluster.invoke("submit", str(spec), "--json")
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["namespace"] == cluster.namespace  # the context's namespace
    other = f"{cluster.namespace}-other"
    cluster.double.create_namespace(other)  # as on a real server, a workflow's namespace must exist
    flagged = cluster.invoke("submit", str(spec), "--namespace", other, "--json")
    assert flagged.exit_code == 0, flagged.output
    run_id = json.loads(flagged.stdout)["run_id"]
    assert [w["metadata"]["name"] for w in cluster.double.workflows(other)] == [run_id]
    # status finds the run in the namespace its manifest records, without the flag.
    status = cluster.invoke("status", run_id, "--json", "--no-sync")
    assert status.exit_code == 0 and json.loads(status.stdout)["workflows"][0]["name"] == run_id
    wrong = cluster.invoke("submit", str(spec), "--context", "nope")
    assert wrong.exit_code == 2 and "context 'nope' is not in kubeconfig" in wrong.stderr
    missing = cluster.invoke("submit", str(spec), "--kubeconfig", str(tmp_path / "absent"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    local = cluster.invoke("submit", str(spec), "--store", str(tmp_path / "local-store"))
    assert local.exit_code == 2 and "s3://" in local.stderr


# ---------------------------------------------------------------------------------------------
# Pure parts: the explicit-cell render mode, status from node statuses
# ---------------------------------------------------------------------------------------------


def _interpret(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cells a workflow runs, with argv and env, through the double's interpreter."""
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    cells = {}
    for task in templates[doc["spec"]["entrypoint"]]["dag"]["tasks"]:
        fan = templates[task["template"]]
        if "dag" not in fan:
            continue
        fan_in = bind_inputs(fan, {p["name"]: p["value"] for p in task["arguments"]["parameters"]})
        scope = {f"inputs.parameters.{k}": v for k, v in fan_in.items()}
        for atask in fan["dag"]["tasks"]:
            cell_t = templates[atask["template"]]
            for item in loop_items(atask, scope):
                args = {
                    p["name"]: substitute(p["value"], {**scope, "item": str(item)})
                    for p in atask["arguments"]["parameters"]
                }
                cscope = {f"inputs.parameters.{k}": v for k, v in bind_inputs(cell_t, args).items()}
                ctr = cell_t["container"]
                env = {e["name"]: substitute(e["value"], cscope) for e in ctr["env"]}
                cells[env["EXPKIT_CELL"]] = {
                    "argv": [substitute(x, cscope) for x in ctr["command"] + ctr["args"]],
                    "env": env,
                    "key": substitute(cell_t["outputs"]["artifacts"][0]["s3"]["key"], cscope),
                }
    return cells


def test_explicit_cell_mode_runs_exactly_those_cells_as_a_local_run_would() -> None:
    doc_spec = spec_doc(
        args=["--a={algorithm}", "--s={seed}", "--x={params.x}"],
        params={"x": 1},
        algorithms=[{"name": "a1", "params": {"x": 2}}, {"name": "a2"}, {"name": "a3"}],
        datasets=[{"name": "d1", "params": {"x": 3}}, "d2", "d3"],
        replicates=5,
    )
    loaded = load_spec_text(yaml.safe_dump(doc_spec))
    wanted = ["a1/d2/4", "a1/d2/0", "a2/d1/3", "a3/d3/1"]
    doc = render_workflow(
        loaded, "argotest-abcde", cells=wanted, generate_name="argotest-abcde-retry-", key_prefix="p/"
    )
    assert "name" not in doc["metadata"] and doc["metadata"]["generateName"] == "argotest-abcde-retry-"
    assert doc["metadata"]["labels"]["expkit.io/run-id"] == "argotest-abcde"
    cells = _interpret(doc)
    assert sorted(cells) == sorted(wanted)
    by_key = {c.key: c for c in build_matrix(loaded.experiment)}
    for key, run in cells.items():
        cell = by_key[key]
        assert run["argv"] == render_argv(loaded.experiment, cell, OUTPUT_DIR)
        local = run_environment(
            run_id="argotest-abcde",
            algorithm=cell.algorithm,
            dataset=cell.dataset,
            replicate=cell.replicate,
            seed=cell.seed,
            params=cell.params,
            output_dir=OUTPUT_DIR,
        )
        assert json.loads(run["env"].pop("EXPKIT_PARAMS")) == json.loads(local.pop("EXPKIT_PARAMS"))
        assert run["env"] == local
        assert run["key"] == f"p/{cell_prefix('argotest-abcde', key)}".rstrip("/")
    assert planned_cells(doc) == set(wanted) and expected_cell_count(doc) == 4
    full = render_workflow(loaded, "argotest-abcde")
    assert planned_cells(full) is None and expected_cell_count(full) == 3 * 3 * 5
    with pytest.raises(RenderError, match="not in the matrix"):
        render_workflow(loaded, "argotest-abcde", cells=["a1/d2/5"])
    with pytest.raises(RenderError, match="empty"):
        render_workflow(loaded, "argotest-abcde", cells=[])


def _node(wf: str, name: str, kind: str, phase: str, inputs: dict[str, str] | None = None, **extra: Any) -> dict:
    node = {
        "id": f"{wf}-{abs(hash(name)) % 10**9}",
        "name": name,
        "type": kind,
        "phase": phase,
        "templateName": "cell" if inputs else "algorithms",
        **extra,
    }
    if inputs:
        node["inputs"] = {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]}
    return node


def _workflow_with_nodes() -> dict[str, Any]:
    loaded = load_spec_text(yaml.safe_dump(spec_doc()))
    wf = render_workflow(loaded, "argotest-stat0")
    name = "argotest-stat0"

    def inp(alg: str, ds: str, rep: int) -> dict[str, str]:
        return {"algorithm": alg, "dataset": ds, "datasetSeed": "1000", "replicate": str(rep), "params": '{"k": 1}'}

    attempt1 = _node(
        name,
        f"{name}.ds-d1.alg-good(0:0)(0)",
        "Pod",
        "Failed",
        inp("good", "d1", 0),
        startedAt="2024-05-01T10:00:00Z",
        finishedAt="2024-05-01T10:00:07Z",
        hostNodeName="n1",
        message="Error (exit code 2)",
        outputs={"exitCode": "2"},
    )
    attempt2 = _node(
        name,
        f"{name}.ds-d1.alg-good(0:0)(1)",
        "Pod",
        "Succeeded",
        inp("good", "d1", 0),
        startedAt="2024-05-01T10:00:08Z",
        finishedAt="2024-05-01T10:00:20Z",
        hostNodeName="n2",
        outputs={"exitCode": "0", "artifacts": [{"name": "main-logs", "s3": {"key": "w/p/main.log"}}]},
    )
    retry = _node(
        name,
        f"{name}.ds-d1.alg-good(0:0)",
        "Retry",
        "Succeeded",
        inp("good", "d1", 0),
        startedAt="2024-05-01T10:00:00Z",
        finishedAt="2024-05-01T10:00:21Z",
        children=[attempt1["id"], attempt2["id"]],
    )
    oom = _node(
        name,
        f"{name}.ds-d2.alg-worse(1:1)",
        "Pod",
        "Failed",
        inp("worse", "d2", 1),
        startedAt="2024-05-01T10:01:00Z",
        finishedAt="2024-05-01T10:01:30Z",
        hostNodeName="n1",
        message="OOMKilled (exit code 137)",
        outputs={"exitCode": "137"},
    )
    running = _node(
        name,
        f"{name}.ds-d2.alg-good(0:0)",
        "Pod",
        "Running",
        inp("good", "d2", 0),
        startedAt="2024-05-01T10:02:00Z",
        hostNodeName="n2",
    )
    group = _node(name, f"{name}.ds-d1", "DAG", "Running")
    wf["status"] = {"phase": "Running", "nodes": {n["id"]: n for n in (attempt1, attempt2, retry, oom, running, group)}}
    return wf


def test_cell_records_from_node_status() -> None:
    wf = _workflow_with_nodes()
    records = cell_records_from_workflow(wf)
    assert sorted(records) == ["good/d1/0", "good/d2/0", "worse/d2/1"]
    ok = records["good/d1/0"]
    assert ok["status"] == "succeeded" and ok["attempts"] == 2 and ok["node"] == "n2" and ok["exit_code"] == 0
    assert ok["duration_s"] == 21.0 and ok["log_key"] == "w/p/main.log"
    assert [(a["attempt"], a["exit_code"], a["status"], a["node"]) for a in ok["attempt_history"]] == [
        (1, 2, "failed", "n1"),
        (2, 0, "succeeded", "n2"),
    ]
    assert ok["seed"] == (1000 + 0 * 1640531527) % (2**31 - 1) and ok["params"] == {"k": 1}
    bad = records["worse/d2/1"]
    assert bad["status"] == "failed" and bad["exit_code"] == 137 and bad["reason"] == "OOMKilled (exit code 137)"
    assert bad["attempts"] == 1 and bad["duration_s"] == 30.0 and bad["seed"] == (1000 + 1640531527) % (2**31 - 1)
    assert records["good/d2/0"]["status"] == "running" and records["good/d2/0"]["duration_s"] is None
    summary = summarize(wf)
    assert summary.total == 8 and summary.counts == {"pending": 5, "running": 1, "succeeded": 1, "failed": 1}
    # Argo compresses large node maps: the same records come out of status.compressedNodes.
    packed = copy.deepcopy(wf)
    nodes = packed["status"].pop("nodes")
    packed["status"]["compressedNodes"] = base64.b64encode(gzip.compress(json.dumps(nodes).encode())).decode()
    assert cell_records_from_workflow(packed) == records
    offloaded = copy.deepcopy(wf)
    offloaded["status"] = {"phase": "Running", "offloadNodeStatusVersion": "fnv:123"}
    with pytest.raises(WorkflowStatusError, match="offloaded"):
        cell_records_from_workflow(offloaded)


def test_in_cluster_config_when_there_is_no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import incluster_config

    from expkit.executors.argo import kubeconfig as argo_kubeconfig

    token, cert, ns_file = tmp_path / "token", tmp_path / "ca.crt", tmp_path / "namespace"
    token.write_text("in-cluster-token")
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n")
    ns_file.write_text("research\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setattr(argo_kubeconfig, "SA_NAMESPACE_FILE", str(ns_file))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    target, cfg = argo_kubeconfig.load_target()
    assert (target.context, target.server, target.namespace, target.kubeconfig) == (
        "in-cluster",
        "https://10.96.0.1:443",
        "research",
        None,
    )
    assert cfg.api_key["BearerToken"] == "bearer in-cluster-token" and cfg.ssl_ca_cert == str(cert)
    assert argo_kubeconfig.load_target(namespace="other")[0].namespace == "other"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(argo_kubeconfig.ClusterConfigError, match="no kubeconfig found") as info:
        argo_kubeconfig.load_target()
    assert info.value.exit_code == 2

"""Issue 17, "Bugs" 1-6 and "Unclear messages": what a real Kubernetes API server showed, reproduced in the
Kubernetes test double (tests/k8s_double.py, a real HTTP server driven through the real ``kubernetes``
client) — a missing namespace, a non-admin bound to the ``expkit-submitter`` Role under enforced RBAC,
discovery with ``/status`` subresources, a purged claim still terminating, claim resizing, a TLS server with
an unknown CA, and a workflow no controller touches. The CLI runs through typer's CliRunner on
``expkit.cli.app``; the run store is the real S3 test server (SeaweedFS)."""

from __future__ import annotations

import json
import logging
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_double import (
    SUBMITTER_TOKEN,
    SUBMITTER_USER,
    K8sDouble,
    core_object,
    core_resource,
    write_requests,
)
from s3server import S3Endpoint, free_ports, new_bucket_name
from typer.testing import CliRunner

from expkit import cluster as cl
from expkit.cli import app
from expkit.cluster import objects as co

pytestmark = pytest.mark.timeout(120)

IMAGE = "python:3.12-slim@sha256:" + "a" * 64
SCRIPT = textwrap.dedent("""\
    import json, os
    with open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w") as fh:
        json.dump(dict(metrics=dict(loss=0.5)), fh)
""")


def write_spec(directory: Path, **spec: Any) -> Path:
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["python", "-c", SCRIPT],
        "algorithms": [{"name": "good"}, {"name": "other"}],
        "datasets": ["d1", "d2"],
        "replicates": 2,
        "metric": {"name": "loss", "goal": "minimize"},
        **spec,
    }
    doc = {"apiVersion": "expkit/v1", "kind": "Experiment", "metadata": {"name": "fixes"}, "spec": body}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "experiment.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Env:
    double: K8sDouble
    s3: S3Endpoint
    bucket: str
    ns: str
    kubeconfig: Path
    tmp: Path

    def invoke(self, *args: str, **env: str | None) -> Any:
        cfg = self.tmp / "expkit-config.toml"
        cfg.touch()
        base: dict[str, str | None] = {
            **self.s3.env(),
            "KUBECONFIG": str(self.kubeconfig),
            "EXPKIT_STORE": f"s3://{self.bucket}/runs-{self.ns}",
            "EXPKIT_CACHE_DIR": str(self.tmp / "cache"),
            "EXPKIT_CONFIG": str(cfg),
            "EXPKIT_PROFILE": None,
            "AWS_SESSION_TOKEN": None,
            "EXPKIT_KUBE_CONTEXT": None,
            "EXPKIT_NAMESPACE": None,
            "EXPKIT_REGISTRY_PASSWORD": None,
            "EXPKIT_S3_ATTEMPTS": "2",
        }
        if args[0] == "cluster":  # cluster check reads the bucket over S3 only when asked to
            base["EXPKIT_S3_ENDPOINT"] = None
        logger = logging.getLogger("expkit")
        saved = (logger.handlers[:], logger.level, logger.propagate)
        try:
            return CliRunner().invoke(app, list(args), env={**base, **env}, catch_exceptions=False)
        finally:  # the CLI points the logger at the runner's stderr, which is closed afterwards
            logger.handlers[:], logger.level, logger.propagate = saved

    def setup(self, context: str | None = None) -> cl.ClusterSetup:
        return cl.ClusterSetup(str(self.kubeconfig), context, self.ns)

    def install(self, **options: Any) -> cl.InstallReport:
        wait = options.pop("wait", False)
        with self.setup() as setup:
            return cl.install(setup, co.InstallOptions(namespace=self.ns, **options), wait=wait, timeout=0)

    def checks(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        res = self.invoke("cluster", "check", "--json", *args)
        doc = json.loads(res.stdout)
        return res.exit_code, {c["name"]: c for c in doc["checks"]}

    def submit(self, *args: str) -> str:
        res = self.invoke("submit", str(write_spec(self.tmp / "study")), *args)
        assert res.exit_code == 0, res.output
        return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def double(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory):
    bucket = new_bucket_name("fixes")
    root = s3_server.store(bucket, "", cache_dir=tmp_path_factory.mktemp("double-cache"), create=True)
    with K8sDouble(artifacts=root, scratch=tmp_path_factory.mktemp("double")) as d:
        yield d, bucket


@pytest.fixture
def env(double: tuple[K8sDouble, str], s3_server: S3Endpoint, tmp_path: Path) -> Env:
    """A fresh namespace that does not exist yet (install creates it) and a kubeconfig defaulting to it."""
    d, bucket = double
    d.reset()
    d.workdir = tmp_path
    ns = f"fx-{uuid.uuid4().hex[:8]}"
    kc = d.kubeconfig(tmp_path / "kubeconfig", namespace=ns, unreachable_port=free_ports(1)[0], create_namespace=False)
    return Env(d, s3_server, bucket, ns, kc, tmp_path)


def error_line(res: Any) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. submit into a namespace that does not exist
# ---------------------------------------------------------------------------------------------


def test_submit_into_a_missing_namespace_says_it_does_not_exist_and_how_to_create_it(env: Env) -> None:
    res = env.invoke("submit", str(write_spec(env.tmp / "study")), "-n", "no-such-ns")
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert "namespace 'no-such-ns' does not exist" in line
    assert "kubectl create namespace no-such-ns" in line and "expkit cluster install -n no-such-ns" in line
    assert "--namespace" in line and "TTL" not in line and "workflows.argoproj.io" not in line
    # the real server's answer was a 404 for the namespace, not for the workflow
    creates = [r for r in env.double.requests if r.method == "POST" and "/namespaces/no-such-ns/workflows" in r.path]
    assert len(creates) == 1
    listing = env.invoke("list", "--json")
    assert json.loads(listing.stdout) == []  # the run was forgotten


# ---------------------------------------------------------------------------------------------
# 2 and 3. a non-admin bound to expkit-submitter (RBAC enforced); the CRD count from discovery
# ---------------------------------------------------------------------------------------------


def submitter_rules(ns: str) -> list[dict[str, Any]]:
    """Least privilege, written out: what submit/status/stop/retry/logs and cluster check use, no more."""
    return [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflows"],
            "verbs": ["create", "get", "list", "watch", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [co.ARTIFACT_CONFIGMAP], "verbs": ["get"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [co.CREDENTIALS_SECRET, co.PULL_SECRET],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [co.MINIO, "argo-workflows-workflow-controller", "workflow-controller"],
            "verbs": ["get"],
        },
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": [co.MINIO], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [co.BUCKET_JOB], "verbs": ["get"]},
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"],
            "resourceNames": [co.WORKFLOW_SA],
            "verbs": ["get"],
        },
    ]


def test_the_submitter_role_is_read_only_except_workflows_and_names_what_check_reads() -> None:
    role = co.submitter_role(co.InstallOptions(namespace="lab"))
    assert role["rules"] == submitter_rules("lab")
    for rule in role["rules"][1:]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"} and "*" not in json.dumps(rule)
    static = [d for d in yaml.safe_load_all(Path("manifests/minio/rbac.yaml").read_text()) if d]
    (static_role,) = [d for d in static if d["kind"] == "Role" and d["metadata"]["name"] == co.SUBMITTER_ROLE]
    assert static_role["rules"] == submitter_rules("expkit")
    docs = Path("docs/cluster.md").read_text(encoding="utf-8")
    assert "rolebindings" in docs and "expkit-submitter" in docs


def test_cluster_check_as_a_user_bound_to_the_submitter_role_reads_everything_it_needs(env: Env) -> None:
    env.install()
    env.double.bind_submitter(env.ns)
    code, found = env.checks("--context", "submitter")
    assert code == 0, found
    could_not = {n for n, c in found.items() if c["ok"] is None}
    # only the controller lives outside the namespace, where a namespaced Role cannot grant reading it
    assert could_not == {"workflow-controller"}, found
    assert "not allowed" not in json.dumps({n: c for n, c in found.items() if n != "workflow-controller"})
    assert found["workflow-service-account"]["ok"] is True
    assert found["submit-permission"]["ok"] is True
    # 3: discovery lists workflowtasksets/status and workflowartifactgctasks/status; they are not CRDs
    assert found["argo-crds"]["ok"] is True and found["argo-crds"]["detail"].startswith("8 Argo CRDs")
    code, admin = env.checks()
    assert admin["argo-crds"]["detail"].startswith("8 Argo CRDs")
    # the double enforced RBAC for her: the CRD list was refused, then discovery answered
    refused = [
        r
        for r in env.double.requests
        if r.headers.get("Authorization") == f"Bearer {SUBMITTER_TOKEN}"
        and r.path.endswith("customresourcedefinitions")
    ]
    assert refused


def test_the_submitter_can_submit_follow_and_read_logs(env: Env) -> None:
    env.install()
    env.double.bind_submitter(env.ns)
    run_id = env.submit("--context", "submitter")
    env.double.wait_finished(run_id, env.ns)
    res = env.invoke("status", run_id, "--context", "submitter")
    assert res.exit_code == 0 and "8/8 succeeded" in res.stdout, res.output
    res = env.invoke("logs", run_id, "--context", "submitter")
    assert res.exit_code == 0 and "==> good/d1/0" in res.stdout, res.output
    # every workflow and pod request of this test was hers
    mine = [r for r in env.double.requests if f"/namespaces/{env.ns}/workflows" in r.path]
    assert mine and all(r.headers.get("Authorization") == f"Bearer {SUBMITTER_TOKEN}" for r in mine)


# ---------------------------------------------------------------------------------------------
# 4. expkit show before any cell finished
# ---------------------------------------------------------------------------------------------


def test_show_of_a_run_with_no_finished_cell_says_so_instead_of_none(env: Env) -> None:
    env.double.controller_enabled = False
    env.install()
    run_id = env.submit()
    res = env.invoke("show", run_id)
    assert res.exit_code == 0, res.output
    assert "None" not in res.stdout, res.stdout
    assert "not finished" in res.stdout and "no finished cell yet" in res.stdout


# ---------------------------------------------------------------------------------------------
# 5. install right after uninstall --purge while the claim still terminates
# ---------------------------------------------------------------------------------------------


def test_install_after_purge_waits_for_the_terminating_claim_then_creates_it(env: Env) -> None:
    d = env.double
    env.install()
    d.claim_release_seconds = 1.5
    res = env.invoke("cluster", "uninstall", "--purge", "--yes")
    assert res.exit_code == 0, res.output
    assert (
        (core_object(d, "persistentvolumeclaims", env.ns, co.MINIO_PVC) or {})
        .get("metadata", {})
        .get("deletionTimestamp")
    )
    res = env.invoke("cluster", "install", "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    by = {r["name"]: r for r in json.loads(res.stdout)["results"] if r["kind"] == "PersistentVolumeClaim"}
    assert by[co.MINIO_PVC]["action"] == "created"
    claim = core_object(d, "persistentvolumeclaims", env.ns, co.MINIO_PVC)
    assert claim is not None and not claim["metadata"].get("deletionTimestamp")


def test_install_refuses_with_the_fix_when_the_claim_does_not_go_in_time(env: Env) -> None:
    d = env.double
    env.install()
    d.claim_release_seconds = None  # a pod keeps using it
    with env.setup() as setup:
        cl.uninstall(setup, env.ns, purge=True)
    before = len(write_requests(d))
    with env.setup() as setup, pytest.raises(cl.InstallTimeout) as caught:
        cl.install(setup, co.InstallOptions(namespace=env.ns), wait=False, deletion_timeout=0.3)
    text = str(caught.value)
    assert f"persistentvolumeclaim '{co.MINIO_PVC}'" in text and "still being deleted" in text
    assert f"kubectl -n {env.ns} get pvc {co.MINIO_PVC}" in text and "install again" in text
    assert len(write_requests(d)) == before  # decided before writing anything
    assert "unchanged" not in text


# ---------------------------------------------------------------------------------------------
# 6. --storage-size on an existing claim
# ---------------------------------------------------------------------------------------------


def test_a_smaller_storage_size_is_refused_before_anything_is_written(env: Env) -> None:
    env.install(storage_size="20Gi")
    before = len(write_requests(env.double))
    res = env.invoke("cluster", "install", "--no-wait", "--storage-size", "10Gi")
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert "20Gi" in line and "cannot shrink" in line and "--storage-size 20Gi" in line
    assert len(write_requests(env.double)) == before
    # without --storage-size the live size is kept: no refusal, nothing to change
    res = env.invoke("cluster", "install", "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    assert {r["action"] for r in json.loads(res.stdout)["results"]} == {"unchanged"}


def test_a_distributed_reinstall_without_storage_size_keeps_the_volumes_size(env: Env) -> None:
    env.install(distributed=4, storage_size="5Gi")
    res = env.invoke("cluster", "install", "--no-wait", "--distributed", "4", "--json")
    assert res.exit_code == 0, res.output
    assert {r["action"] for r in json.loads(res.stdout)["results"]} == {"unchanged"}


def test_growing_where_the_storage_class_does_not_allow_expansion_is_refused_with_how(env: Env) -> None:
    env.install(storage_size="20Gi", storage_class="fixed")
    before = len(write_requests(env.double))
    res = env.invoke("cluster", "install", "--no-wait", "--storage-size", "30Gi", "--storage-class", "fixed")
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert "StorageClass 'fixed'" in line and "allowVolumeExpansion" in line
    assert "kubectl patch storageclass fixed" in line and "--purge" in line
    assert "core.PersistentVolumeClaimSpec" not in res.output and "422" not in line and "403" not in line
    assert len(write_requests(env.double)) == before


def test_growing_an_unbound_claim_is_refused_and_an_expandable_class_grows(env: Env) -> None:
    d = env.double
    d.claims_bound = False
    env.install(storage_size="20Gi")
    before = len(write_requests(d))
    res = env.invoke("cluster", "install", "--no-wait", "--storage-size", "30Gi")
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert "not bound" in line and "Pending" in line and "core.PersistentVolumeClaimSpec" not in res.output
    assert len(write_requests(d)) == before

    def bind() -> None:
        res_ = core_resource("persistentvolumeclaims")
        claim = d.api.get_object(res_, env.ns, co.MINIO_PVC)
        claim["status"] = {"phase": "Bound", "capacity": {"storage": "20Gi"}}
        d.api.put_object(res_, env.ns, co.MINIO_PVC, claim, "MODIFIED")

    d.call(bind)
    res = env.invoke("cluster", "install", "--no-wait", "--storage-size", "30Gi", "--json")
    assert res.exit_code == 0, res.output
    pvc = next(r for r in json.loads(res.stdout)["results"] if r["name"] == co.MINIO_PVC)
    assert pvc["action"] == "updated" and "20Gi -> 30Gi" in pvc["detail"]
    assert core_object(d, "persistentvolumeclaims", env.ns, co.MINIO_PVC)["spec"]["resources"]["requests"] == {
        "storage": "30Gi"
    }


# ---------------------------------------------------------------------------------------------
# Unclear messages
# ---------------------------------------------------------------------------------------------


def test_check_says_the_bucket_job_is_still_running(env: Env) -> None:
    env.double.workloads_ready = False
    env.install()
    _, found = env.checks()
    bucket = found["bucket"]
    assert bucket["ok"] is None  # in progress: the minio line carries the failure
    assert "still running" in bucket["detail"] and "outside the cluster" not in bucket["detail"]
    assert f"job/{co.BUCKET_JOB}" in bucket["detail"] + bucket["hint"]


def test_check_as_a_non_admin_after_install_does_not_advise_running_install(env: Env) -> None:
    env.install()  # nobody bound alice: every read in the namespace is refused
    res = env.invoke("cluster", "check", "--context", "submitter")
    assert res.exit_code == 1, res.output
    assert "expkit cluster install" not in res.stdout, res.stdout
    assert f"--role {co.SUBMITTER_ROLE} --user" in res.stdout
    _, found = env.checks("--context", "submitter")
    assert found["artifact-repository"]["ok"] is None and SUBMITTER_USER in found["artifact-repository"]["detail"]


def test_check_of_an_unreachable_server_prints_no_pull_secrets_line(env: Env, tmp_path: Path) -> None:
    code, found = env.checks("--context", "nowhere")
    assert code == 1 and "pull-secrets" not in found
    _, reachable = env.checks()
    assert list(found) == list(reachable)
    spec = write_spec(tmp_path / "pulls", kubernetes={"imagePullSecrets": ["expkit-registry"]})
    _, with_spec = env.checks("--context", "nowhere", "--spec", str(spec))
    assert with_spec["pull-secrets"]["ok"] is None


def test_a_tls_verification_failure_names_a_certificate_problem_and_the_ca_setting(env: Env, tmp_path: Path) -> None:
    front = env.double.tls_front(tmp_path / "tls")
    try:
        kc = env.double.kubeconfig(tmp_path / "kc-tls", namespace=env.ns, tls_port=front.port, create_namespace=False)
        res = env.invoke("cluster", "check", "--context", "untrusted", "--json", KUBECONFIG=str(kc))
        api = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["api-server"]
        text = api["detail"] + " " + api["hint"]
        assert "certificate" in text and "certificate-authority" in text and str(kc) in text
        assert "cluster is running" not in text and "start the cluster" not in text
        res = env.invoke("list", "--cluster", "--context", "untrusted", KUBECONFIG=str(kc))
        line = error_line(res)
        assert "certificate-authority-data" in line and "check that the cluster is running" not in line
    finally:
        front.close()


def test_a_tls_failure_the_client_reports_as_status_0_is_a_certificate_problem_too() -> None:
    """Without urllib3 retries the kubernetes client raises ``ApiException(status=0, reason="SSLError ...")``."""
    from kubernetes.client.exceptions import ApiException

    from expkit.executors.argo.errors import ClusterTLSError, translate
    from expkit.executors.argo.kubeconfig import ClusterTarget

    target = ClusterTarget("lab", "https://10.0.0.1:6443", "ns", "/home/me/.kube/config")
    reason = (
        "SSLError\nHTTPSConnectionPool(host='10.0.0.1', port=6443): Max retries exceeded with url: /version "
        "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: unable to get local issuer certificate (_ssl.c:1006)')))"
    )
    err = translate(ApiException(status=0, reason=reason), target, "ns", "get", "workflows.argoproj.io")
    assert isinstance(err, ClusterTLSError)
    assert "unable to get local issuer certificate" in str(err) and "/home/me/.kube/config" in str(err)
    assert "certificate-authority-data" in str(err) and "cluster is running" not in str(err)


def test_status_says_no_controller_seems_to_process_the_namespace_after_a_minute(env: Env) -> None:
    d = env.double
    d.controller_enabled = False
    env.install()
    run_id = env.submit()
    res = env.invoke("status", run_id)
    assert res.exit_code == 0 and "no Argo controller" not in res.stdout, res.output
    d.backdate(run_id, env.ns, 90)
    res = env.invoke("status", run_id)
    assert res.exit_code == 0, res.output
    assert f"no Argo controller seems to be processing namespace {env.ns}" in res.stdout
    assert "expkit cluster check" in res.stdout


def test_cells_of_a_failed_workflow_that_never_started_are_not_started(env: Env) -> None:
    d = env.double
    d.controller_enabled = False
    env.install()
    run_id = env.submit()

    def fail() -> None:  # the controller rejects the workflow before creating any pod
        from k8s_double import WORKFLOWS

        wf = d.api.get_object(WORKFLOWS, env.ns, run_id)
        wf["status"] = {
            "phase": "Failed",
            "message": "invalid spec: templates.x: ...",
            "finishedAt": "2026-01-01T00:00:00Z",
        }
        d.api.put_object(WORKFLOWS, env.ns, run_id, wf, "MODIFIED")

    d.call(fail)
    res = env.invoke("status", run_id)
    assert "8 not started" in res.stdout and "pending" not in res.stdout, res.output
    doc = json.loads(env.invoke("status", run_id, "--json").stdout)
    assert doc["not_started"] == 8 and doc["done"] is True, doc  # scripts see it too


def test_logs_with_no_pods_and_no_filters_does_not_mention_filters(env: Env) -> None:
    env.double.controller_enabled = False
    env.install()
    run_id = env.submit()
    res = env.invoke("logs", run_id)
    assert res.exit_code == 2
    line = error_line(res)
    assert "filter" not in line and "no cell" in line and f"expkit status {run_id}" in line
    res = env.invoke("logs", run_id, "--algorithm", "good")
    assert "check the filters" in error_line(res)

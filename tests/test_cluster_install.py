"""``expkit cluster install | check | uninstall`` against the Kubernetes API test double (tests/k8s_double.py,
a real HTTP server speaking the Kubernetes API): creation, idempotence (a second install makes no write
request), updates, refusals, waiting, dry-run, uninstall and purge, every check, and no credential in any
output, log or error. The ``cluster``-marked test runs install/check/uninstall on a real cluster when
``EXPKIT_TEST_KUBECONFIG`` is set."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from k8s_double import K8sDouble, core_object, core_objects, core_resource, settle, write_requests
from typer.testing import CliRunner

from expkit import cluster as cl
from expkit.cli import app
from expkit.cluster import objects as co

SPEC = (
    textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: clustercheck
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [python, run.py]
      algorithms: [{{name: a}}]
      datasets: [d]
      replicates: 1
      metric: {{name: loss, goal: minimize}}
""")
    + "{kubernetes}"
)


@pytest.fixture(scope="module")
def double():
    with K8sDouble() as d:
        yield d


@pytest.fixture
def k8s(double: K8sDouble, tmp_path: Path) -> SimpleNamespace:
    """The double, reset, and a kubeconfig whose contexts default to a fresh namespace."""
    double.reset()
    ns = f"t-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    kc = double.kubeconfig(tmp_path / "kubeconfig", namespace=ns, unreachable_port=port, create_namespace=False)
    return SimpleNamespace(double=double, kubeconfig=str(kc), ns=ns)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_for(k8s: SimpleNamespace, context: str | None = None) -> cl.ClusterSetup:
    return cl.ClusterSetup(k8s.kubeconfig, context)


def install(k8s: SimpleNamespace, **options: Any) -> cl.InstallReport:
    password = options.pop("registry_password", None)
    wait = options.pop("wait", True)
    with setup_for(k8s) as setup:
        return cl.install(
            setup, co.InstallOptions(namespace=k8s.ns, **options), registry_password=password, wait=wait, timeout=0
        )


def secret_values(k8s: SimpleNamespace) -> list[str]:
    """The plain and base64 forms of the namespace's stored credentials."""
    secret = core_object(k8s.double, "secrets", k8s.ns, co.CREDENTIALS_SECRET)
    creds = co.credentials_from_secret(secret)
    return [creds.access_key, creds.secret_key, *secret["data"].values()]


def cli(k8s: SimpleNamespace, *args: str, input: str | None = None, env: dict[str, str] | None = None):
    runner = CliRunner()
    base = {
        "KUBECONFIG": k8s.kubeconfig,
        "EXPKIT_NAMESPACE": None,
        "EXPKIT_KUBE_CONTEXT": None,
        "EXPKIT_S3_ENDPOINT": None,
        "EXPKIT_REGISTRY_PASSWORD": None,
    }
    logger = logging.getLogger("expkit")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        return runner.invoke(app, ["-vv", *args], input=input, env={**base, **(env or {})}, catch_exceptions=False)
    finally:  # the CLI points the logger at the runner's stderr, which is closed afterwards
        logger.handlers[:], logger.level, logger.propagate = saved


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines():
    handler = _Records()
    logger = logging.getLogger("expkit")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------


def test_install_creates_everything_and_a_second_install_writes_nothing(k8s, log_lines) -> None:
    d = k8s.double
    first = install(k8s)
    assert first.credentials == "generated" and first.changed
    expected = [
        (o["kind"], o["metadata"]["name"])
        for o in co.desired_objects(co.InstallOptions(namespace=k8s.ns), co.generate_credentials())
    ]
    assert [(r.kind, r.name) for r in first.results] == expected
    assert {r.action for r in first.results} == {"created"}
    for kind, name in expected:
        plural = co.KINDS[kind][1]
        stored = core_object(d, plural, None if kind == "Namespace" else k8s.ns, name)
        assert stored is not None, f"{kind}/{name} not on the server"
        assert kind == "Namespace" or stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "expkit"
    # MinIO, Argo's repository and the Job all use the one Secret, which holds fresh random keys
    creds = co.credentials_from_secret(core_object(d, "secrets", k8s.ns, co.CREDENTIALS_SECRET))
    assert creds is not None and len(creds.secret_key) >= 40
    cm = core_object(d, "configmaps", k8s.ns, co.ARTIFACT_CONFIGMAP)
    assert yaml.safe_load(cm["data"]["default-v1"])["s3"]["endpoint"] == f"minio.{k8s.ns}.svc:9000"

    writes = len(write_requests(d))
    second = install(k8s)
    assert {r.action for r in second.results} == {"unchanged"} and not second.changed
    assert second.credentials == "kept"
    assert len(write_requests(d)) == writes  # idempotent: not one POST/PATCH/DELETE
    assert co.credentials_from_secret(core_object(d, "secrets", k8s.ns, co.CREDENTIALS_SECRET)) == creds
    # the keys never travelled in plain text and were never logged
    assert d.credentials_seen([creds.access_key, creds.secret_key]) == []
    assert not any(v in line for v in secret_values(k8s) for line in log_lines)
    assert any("created" in line for line in log_lines)


def test_install_patches_only_what_changed_and_keeps_the_credentials(k8s) -> None:
    d = k8s.double
    install(k8s)
    creds = secret_values(k8s)[:2]
    before = len(write_requests(d))
    report = install(k8s, bucket="results-v2", storage_size="40Gi")
    actions = {r.name: r.action for r in report.results if r.action != "unchanged"}
    assert actions == {co.ARTIFACT_CONFIGMAP: "updated", co.MINIO_PVC: "updated", co.BUCKET_JOB: "replaced"}
    new_writes = write_requests(d)[before:]
    assert [w.method for w in new_writes] == ["PATCH", "PATCH", "DELETE", "POST"]
    assert (
        core_object(d, "persistentvolumeclaims", k8s.ns, co.MINIO_PVC)["spec"]["resources"]["requests"]["storage"]
        == "40Gi"
    )
    job = core_object(d, "jobs", k8s.ns, co.BUCKET_JOB)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "expkit/results-v2"
    assert secret_values(k8s)[:2] == creds

    # a volume never shrinks: refused before anything is written (tests/test_cluster_fixes.py has the rest)
    before = len(write_requests(d))
    with pytest.raises(cl.StorageSizeRefused, match="40Gi: a volume cannot shrink"):
        install(k8s, bucket="results-v2", storage_size="10Gi")
    assert len(write_requests(d)) == before

    # drift on the server (someone edited the Deployment) is put back
    def drift() -> None:
        res = core_resource("deployments")
        dep = d.api.get_object(res, k8s.ns, co.MINIO)
        dep["spec"]["template"]["spec"]["containers"][0]["image"] = "minio/minio:latest"
        d.api.put_object(res, k8s.ns, co.MINIO, dep, "MODIFIED")

    d.call(drift)
    report = install(k8s, bucket="results-v2", storage_size="40Gi")
    dep = next(r for r in report.results if r.kind == "Deployment")
    assert dep.action == "updated" and "containers[0].image" in dep.detail
    live = core_object(d, "deployments", k8s.ns, co.MINIO)
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == co.MINIO_IMAGE


def test_install_leaves_objects_it_did_not_create_alone(k8s) -> None:
    d = k8s.double
    mine = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": co.ARTIFACT_CONFIGMAP, "namespace": k8s.ns},
        "data": {"default-v1": "s3: {bucket: theirs, endpoint: s3.example.org}"},
    }
    with setup_for(k8s) as setup:
        setup.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": k8s.ns}})
        setup.create(mine)
    report = install(k8s)
    result = next(r for r in report.results if r.name == co.ARTIFACT_CONFIGMAP)
    assert result.action == "skipped" and "not created by expkit" in result.detail
    ns_result = next(r for r in report.results if r.kind == "Namespace")
    assert ns_result.action == "unchanged"  # existing namespace: never relabelled
    assert core_object(d, "configmaps", k8s.ns, co.ARTIFACT_CONFIGMAP)["data"] == mine["data"]
    # keys it did not generate are never taken as MinIO's root credentials
    other = f"{k8s.ns}-other"
    with setup_for(k8s) as setup:
        setup.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
        setup.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": co.CREDENTIALS_SECRET, "namespace": other},
                "stringData": {"accesskey": "AKIAEXAMPLEKEY", "secretkey": "their-s3-secret-key"},
            }
        )
        with pytest.raises(cl.InstallRejected, match="was not created by expkit"):
            cl.install(setup, co.InstallOptions(namespace=other), wait=False)
    with setup_for(k8s) as setup:
        results = cl.uninstall(setup, k8s.ns)
    assert next(r for r in results if r.name == co.ARTIFACT_CONFIGMAP).action == "skipped"
    assert core_object(d, "configmaps", k8s.ns, co.ARTIFACT_CONFIGMAP) is not None


def test_switching_between_standalone_and_distributed_is_refused(k8s) -> None:
    install(k8s)
    before = len(write_requests(k8s.double))
    with pytest.raises(cl.InstallRejected, match="runs as a single pod; switching to --distributed 4"):
        install(k8s, distributed=4)
    assert len(write_requests(k8s.double)) == before


def test_distributed_install_then_uninstall_keeps_the_volumes_until_purge(k8s) -> None:
    d = k8s.double
    report = install(k8s, distributed=4, storage_size="5Gi")
    assert report.mode == "distributed(4)"
    kinds = {(r.kind, r.name) for r in report.results}
    assert {("StatefulSet", "minio"), ("Service", "minio-hl"), ("PodDisruptionBudget", "minio")} <= kinds
    assert ("Deployment", "minio") not in kinds and ("PersistentVolumeClaim", co.MINIO_PVC) not in kinds
    claims = sorted(c["metadata"]["name"] for c in core_objects(d, "persistentvolumeclaims", k8s.ns))
    assert claims == [f"data-minio-{i}" for i in range(4)]  # made by the (double's) StatefulSet controller
    with pytest.raises(cl.InstallRejected, match="cannot be resized to 6"):
        install(k8s, distributed=6)
    with pytest.raises(cl.InstallRejected, match="runs distributed"):
        install(k8s)
    assert {r.action for r in install(k8s, distributed=4, storage_size="5Gi").results} == {"unchanged"}
    # the claim template of a StatefulSet is immutable: reported, the rest still applied
    bigger = next(r for r in install(k8s, distributed=4, storage_size="8Gi").results if r.kind == "StatefulSet")
    assert bigger.action == "kept" and "volumeClaimTemplates" in bigger.detail

    with setup_for(k8s) as setup:
        results = cl.uninstall(setup, k8s.ns)
    by = {(r.kind, r.name): r.action for r in results}
    assert by[("StatefulSet", "minio")] == "deleted" and by[("Service", "minio-hl")] == "deleted"
    assert all(by[("PersistentVolumeClaim", c)] == "kept" for c in claims)
    assert by[("Secret", co.CREDENTIALS_SECRET)] == "kept"
    assert sorted(c["metadata"]["name"] for c in core_objects(d, "persistentvolumeclaims", k8s.ns)) == claims
    assert core_object(d, "statefulsets", k8s.ns, "minio") is None
    assert core_object(d, "namespaces", None, k8s.ns) is not None  # the namespace stays

    with setup_for(k8s) as setup:
        results = cl.uninstall(setup, k8s.ns, purge=True)
    assert {r.name for r in results if r.action == "deleted"} == {*claims, co.CREDENTIALS_SECRET}
    assert core_objects(d, "persistentvolumeclaims", k8s.ns) == []
    assert core_object(d, "secrets", k8s.ns, co.CREDENTIALS_SECRET) is None


def test_uninstall_then_install_reuses_the_kept_credentials_and_volume(k8s) -> None:
    install(k8s)
    creds = secret_values(k8s)[:2]
    with setup_for(k8s) as setup:
        cl.uninstall(setup, k8s.ns)
    report = install(k8s)
    assert report.credentials == "kept" and secret_values(k8s)[:2] == creds
    by = {r.name: r.action for r in report.results}
    assert by[co.MINIO_PVC] == "unchanged" and by[co.MINIO] == "created"


def test_waiting_says_what_is_not_ready_and_a_failed_bucket_job_is_retried(k8s) -> None:
    d = k8s.double
    d.workloads_ready = False
    with pytest.raises(cl.InstallTimeout):
        install(k8s)
    opts = co.InstallOptions(namespace=k8s.ns)
    with setup_for(k8s) as setup, pytest.raises(cl.InstallTimeout, match=r"MinIO \(deployment/minio\).*not ready"):
        cl.wait_ready(setup, opts, timeout=0)

    def fail_job() -> None:
        res = core_resource("jobs")
        job = d.api.get_object(res, k8s.ns, co.BUCKET_JOB)
        job["status"] = {
            "failed": 13,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        }
        d.api.put_object(res, k8s.ns, co.BUCKET_JOB, job, "MODIFIED")

    d.call(fail_job)
    with setup_for(k8s) as setup, pytest.raises(cl.ClusterError, match="bucket Job 'expkit-create-bucket'.*failed"):
        cl.wait_ready(setup, opts, timeout=0)
    d.workloads_ready = True
    settle(d, "deployments", k8s.ns, co.MINIO)
    report = install(k8s)
    job = next(r for r in report.results if r.kind == "Job")
    assert job.action == "replaced" and "failed" in job.detail
    with setup_for(k8s) as setup:
        assert cl.wait_ready(setup, opts, timeout=0) is True


def test_an_unauthorized_user_gets_one_line_naming_what_is_missing(k8s) -> None:
    before = len(write_requests(k8s.double))
    res = cli(k8s, "cluster", "install", "--context", "viewer", "--no-wait")
    assert res.exit_code == 1
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "not allowed to create namespace" in line and "403" in line
    assert len(write_requests(k8s.double)) == before + 1  # the refused POST, nothing after it


def test_api_errors_never_carry_a_credential(k8s) -> None:
    password = "s3cr3t-registry-" + uuid.uuid4().hex
    k8s.double.fail(
        "create",
        422,
        "Invalid",
        f'Secret "expkit-registry" is invalid: data: Invalid value: "{password}"',
        resource="secrets",
        times=None,
    )
    res = cli(
        k8s,
        "cluster",
        "install",
        "--no-wait",
        "--registry-server",
        "ghcr.io",
        "--registry-username",
        "bot",
        "--registry-password-stdin",
        input=password + "\n",
    )
    assert res.exit_code == 1
    assert "refused to create" in res.stderr and "<redacted>" in res.stderr
    assert password not in res.output + res.stderr


# ---------------------------------------------------------------------------------------------
# The CLI: dry-run, registry, JSON, no credentials in any output
# ---------------------------------------------------------------------------------------------


def test_dry_run_prints_every_object_redacted_and_changes_nothing(k8s) -> None:
    before = len(k8s.double.requests)
    res = cli(
        k8s,
        "cluster",
        "install",
        "--dry-run",
        "--distributed",
        "4",
        "--bucket",
        "shared",
        "--registry-server",
        "ghcr.io",
        "--registry-username",
        "bot",
    )
    assert res.exit_code == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Secret") == 2 and "StatefulSet" in kinds and "Job" in kinds
    assert all(d["metadata"].get("namespace", d["metadata"]["name"]) == k8s.ns for d in docs)
    for secret in (d for d in docs if d["kind"] == "Secret"):
        assert set(secret["data"].values()) == {"<redacted>"}
    assert len(k8s.double.requests) == before  # not even a read: dry-run is offline
    # offline too: no kubeconfig at all, explicit namespace
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["cluster", "install", "--dry-run", "-n", "offline"],
        env={"KUBECONFIG": str(Path(k8s.kubeconfig).parent / "none")},
        catch_exceptions=False,
    )
    assert res.exit_code == 0 and "namespace: offline" in res.stdout


def test_registry_password_comes_from_stdin_or_the_environment_only(k8s) -> None:
    d = k8s.double
    res = cli(k8s, "cluster", "install", "--no-wait", "--registry-server", "ghcr.io", "--registry-username", "bot")
    assert res.exit_code == 2 and "--registry-password-stdin" in res.stderr and "EXPKIT_REGISTRY_PASSWORD" in res.stderr
    password = "pw-" + uuid.uuid4().hex
    res = cli(
        k8s,
        "cluster",
        "install",
        "--no-wait",
        "--registry-server",
        "ghcr.io",
        "--registry-username",
        "bot",
        "--registry-password-stdin",
        input=password + "\n",
    )
    assert res.exit_code == 0, res.stderr
    secret = core_object(d, "secrets", k8s.ns, co.PULL_SECRET)
    auth = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]["ghcr.io"]
    assert auth["password"] == password and auth["username"] == "bot"
    assert core_object(d, "serviceaccounts", k8s.ns, co.WORKFLOW_SA)["imagePullSecrets"] == [{"name": co.PULL_SECRET}]
    assert password not in res.output + res.stderr
    # the same password from the environment changes nothing; no registry flags keeps the pull secret
    before = len(write_requests(d))
    res = cli(
        k8s,
        "cluster",
        "install",
        "--no-wait",
        "--registry-server",
        "ghcr.io",
        "--registry-username",
        "bot",
        env={"EXPKIT_REGISTRY_PASSWORD": password},
    )
    assert res.exit_code == 0 and "updated" not in res.stdout
    res = cli(k8s, "cluster", "install", "--no-wait")
    assert res.exit_code == 0 and len(write_requests(d)) == before
    assert core_object(d, "secrets", k8s.ns, co.PULL_SECRET) is not None


def test_no_credential_appears_in_any_output(k8s) -> None:
    outputs, stdouts = [], []
    for args in (
        ["cluster", "install"],
        ["cluster", "install", "--json"],
        ["cluster", "check"],
        ["cluster", "check", "--json"],
        ["cluster", "uninstall"],
        ["cluster", "uninstall", "--json"],
        ["cluster", "install", "--dry-run"],
    ):
        res = cli(k8s, *args)
        assert res.exit_code == 0, (args, res.stderr)
        outputs.append(res.output + res.stderr)
        stdouts.append(res.stdout)
    assert "INFO expkit" in "".join(outputs)  # -vv: the log went to stderr and is checked too
    values = secret_values(k8s)
    assert all(v not in text for v in values for text in outputs)
    report = json.loads(stdouts[1])
    assert report["namespace"] == k8s.ns and report["changed"] is False and report["ready"] is True
    assert report["credentials"] == "kept" and not any(v in json.dumps(report) for v in values)


def test_uninstall_purge_needs_confirmation(k8s) -> None:
    install(k8s)
    res = cli(k8s, "cluster", "uninstall", "--purge")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert core_object(k8s.double, "persistentvolumeclaims", k8s.ns, co.MINIO_PVC) is not None
    res = cli(k8s, "cluster", "uninstall", "--purge", "--yes")
    assert res.exit_code == 0
    assert core_object(k8s.double, "persistentvolumeclaims", k8s.ns, co.MINIO_PVC) is None


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


def checks(k8s: SimpleNamespace, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict]]:
    res = cli(k8s, "cluster", "check", "--json", *args, env=env)
    assert res.stdout.startswith("{"), res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is (res.exit_code == 0)
    return res.exit_code, {c["name"]: c for c in doc["checks"]}


def test_check_is_all_green_after_install(k8s) -> None:
    install(k8s)
    code, found = checks(k8s)
    assert code == 0
    assert [n for n, c in found.items() if c["ok"] is not True] == []
    assert list(found) == [n for n in cl.CHECK_NAMES if n != "pull-secrets"]
    assert "workflow-controller" in found["workflow-controller"]["detail"]
    assert found["bucket"]["detail"].startswith("'expkit' created in the cluster")
    res = cli(k8s, "cluster", "check")
    assert res.exit_code == 0 and res.stdout.count("✓") == len(found) and "✗" not in res.stdout


@pytest.mark.parametrize("scenario", ["no-argo", "controller-down", "not-installed", "minio-not-ready", "viewer"])
def test_check_reports_each_failure_with_a_fix(k8s, scenario: str) -> None:
    d = k8s.double
    args: list[str] = []
    if scenario != "not-installed":
        if scenario == "minio-not-ready":
            d.workloads_ready = False
        install(k8s, wait=False)
    if scenario == "no-argo":
        d.crd_installed = False
    if scenario == "controller-down":
        d.controller_enabled = False
    if scenario == "viewer":
        args = ["--context", "viewer"]
    code, found = checks(k8s, *args)
    assert code == 1
    failed = {n: c for n, c in found.items() if c["ok"] is False}
    expected = {
        "no-argo": {"argo-crds"},
        "controller-down": {"workflow-controller"},
        "not-installed": {"artifact-repository", "workflow-service-account"},
        "minio-not-ready": {"minio"},
        "viewer": {"submit-permission"},
    }[scenario]
    assert set(failed) == expected
    for c in failed.values():
        assert c["hint"] and "\n" not in c["detail"]
    res = cli(k8s, "cluster", "check", *args)
    assert res.exit_code == 1 and res.stdout.count("✗") == len(expected) and "fix:" in res.stdout


def test_check_with_a_spec_checks_its_service_account_and_pull_secrets(k8s, tmp_path: Path) -> None:
    install(k8s)
    plain = tmp_path / "plain.yml"
    plain.write_text(SPEC.format(digest="b" * 64, kubernetes=""))
    code, found = checks(k8s, "--spec", str(plain))
    # No serviceAccountName: workflows use expkit-workflow by default, which install created.
    assert code == 0 and found["workflow-service-account"]["ok"] is True
    assert "'expkit-workflow' exists" in found["workflow-service-account"]["detail"]
    assert "pull-secrets" not in found
    other = tmp_path / "other.yml"
    other.write_text(SPEC.format(digest="b" * 64, kubernetes="  kubernetes:\n    serviceAccountName: someone-else\n"))
    code, found = checks(k8s, "--spec", str(other))
    assert code == 1 and found["workflow-service-account"]["ok"] is False
    assert "'someone-else' is missing" in found["workflow-service-account"]["detail"]

    full = tmp_path / "full.yml"
    full.write_text(
        SPEC.format(
            digest="b" * 64,
            kubernetes="  kubernetes:\n    serviceAccountName: expkit-workflow\n"
            "    imagePullSecrets: [expkit-registry]\n",
        )
    )
    code, found = checks(k8s, "--spec", str(full))
    assert code == 1 and found["workflow-service-account"]["ok"] is True
    assert found["pull-secrets"]["ok"] is False and "'expkit-registry' is missing" in found["pull-secrets"]["detail"]
    install(k8s, registry_server="ghcr.io", registry_username="bot", registry_password="x-" + uuid.uuid4().hex)
    code, found = checks(k8s, "--spec", str(full))
    assert code == 0 and found["pull-secrets"]["ok"] is True


def test_check_against_an_unreachable_server_says_so_and_stops(k8s) -> None:
    code, found = checks(k8s, "--context", "nowhere")
    assert code == 1
    assert found["api-server"]["ok"] is False and "connection refused" in found["api-server"]["detail"]
    assert [c["ok"] for n, c in found.items() if n not in ("kubeconfig", "api-server")] == [None] * 8  # no pull-secrets
    code, found = checks(k8s, "--context", "no-such-context")
    assert code == 1 and found["kubeconfig"]["ok"] is False and "no-such-context" in found["kubeconfig"]["detail"]


def test_check_reads_the_bucket_over_s3_when_an_endpoint_is_set(k8s, s3_server, tmp_path: Path) -> None:
    bucket = f"expkit-chk-{uuid.uuid4().hex[:10]}"
    s3_server.store(bucket, cache_dir=tmp_path / "cache", create=True)
    install(k8s, bucket=bucket)
    code, found = checks(k8s, env={**s3_server.env(), "EXPKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert code == 0 and found["bucket"]["ok"] is True and s3_server.endpoint in found["bucket"]["detail"]

    install(k8s, bucket=f"missing-{uuid.uuid4().hex[:10]}")
    code, found = checks(k8s, env={**s3_server.env(), "EXPKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert code == 1 and found["bucket"]["ok"] is False and "expkit cluster install" in found["bucket"]["hint"]

    # without AWS_* keys the check uses the namespace's Secret; the test server rejects them — and no key is shown
    env = {
        "EXPKIT_S3_ENDPOINT": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "EXPKIT_CONFIG": str(tmp_path / "none.toml"),
        "EXPKIT_CACHE_DIR": str(tmp_path / "cache"),
    }
    install(k8s, bucket=bucket)
    res = cli(k8s, "cluster", "check", env=env)
    assert res.exit_code == 1
    line = next(ln for ln in res.stdout.splitlines() if ln[2:].startswith("bucket "))
    assert line.startswith("✗") and f"Secret {co.CREDENTIALS_SECRET}" in res.stdout
    assert all(v not in res.output + res.stderr for v in secret_values(k8s))


# ---------------------------------------------------------------------------------------------
# A real cluster (EXPKIT_TEST_KUBECONFIG)
# ---------------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_install_check_uninstall_on_a_real_cluster() -> None:
    kubeconfig = os.environ.get("EXPKIT_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip("set EXPKIT_TEST_KUBECONFIG to run against a real cluster (Argo Workflows installed)")
    ns = f"expkit-test-{uuid.uuid4().hex[:8]}"
    context = os.environ.get("EXPKIT_TEST_CONTEXT")
    with cl.ClusterSetup(kubeconfig, context, ns) as setup:
        try:
            opts = co.InstallOptions(namespace=ns, storage_size="1Gi")
            first = cl.install(setup, opts, timeout=float(os.environ.get("EXPKIT_TEST_INSTALL_TIMEOUT", "600")))
            assert first.ready is True and first.credentials == "generated"
            second = cl.install(setup, opts, wait=False)
            assert {r.action for r in second.results} == {"unchanged"}, [
                r for r in second.results if r.action != "unchanged"
            ]
            results = {c.name: c for c in cl.check(setup)}
            assert [n for n, c in results.items() if c.ok is False] == []
            assert results["minio"].ok and results["bucket"].ok
        finally:
            cl.uninstall(setup, ns, purge=True)
            setup.delete("Namespace", None, ns)

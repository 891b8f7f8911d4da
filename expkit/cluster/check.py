"""``expkit cluster check``: everything a cluster run needs, in order, each with how to fix a failure.

The API server, Argo's CRDs and controller, the namespace's artifact repository and the Secret with its
keys, MinIO, the bucket (read over S3 when ``EXPKIT_S3_ENDPOINT`` is set), the right to submit, the
workflow service account and, for a spec, its pull secrets. A check that cannot run (no permission to
look) is reported as such (``ok`` None), not as a failure.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from expkit.cluster import objects as co
from expkit.cluster.api import ClusterSetup, job_failed, job_succeeded
from expkit.core.errors import ExpkitError
from expkit.executors.argo.errors import ClusterAuthError, ClusterConfigError, ClusterTLSError
from expkit.executors.argo.names import CONTROLLER_LOCATIONS

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ARGO_CRDS = ("workflows.argoproj.io", "workflowtaskresults.argoproj.io")


@dataclass(frozen=True)
class CheckResult:
    """One line of ``expkit cluster check``: ``ok`` True (✓), False (✗) or None (could not be checked)."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return dataclasses.asdict(self)


CHECK_NAMES = (
    "kubeconfig",
    "api-server",
    "argo-crds",
    "workflow-controller",
    "artifact-repository",
    "credentials-secret",
    "minio",
    "bucket",
    "submit-permission",
    "workflow-service-account",
    "pull-secrets",
)


def run_checks(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    namespace: str | None = None,
    *,
    spec_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    setup: ClusterSetup | None = None,
) -> list[CheckResult]:
    """Connect and run :func:`check`; a kubeconfig problem is reported as a failed check, not raised."""
    if setup is not None:
        return check(setup, spec_path=spec_path, environ=environ)
    try:
        own = ClusterSetup(kubeconfig, context, namespace)
    except ClusterConfigError as err:
        return [
            CheckResult("kubeconfig", False, str(err), "pass --kubeconfig FILE and --context NAME, or set KUBECONFIG")
        ]
    with own:
        return check(own, spec_path=spec_path, environ=environ)


def check(
    setup: ClusterSetup, *, spec_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> list[CheckResult]:
    """Everything a cluster run needs, in order; each result says how to fix a failure."""
    env = os.environ if environ is None else environ
    ns = setup.namespace
    kube = setup.target.kubeconfig or "in-cluster service account"
    out = [CheckResult("kubeconfig", True, f"context {setup.target.context!r}, namespace {ns!r} ({kube})")]
    k8s_spec = _spec_kubernetes(spec_path) if spec_path else None
    try:
        version = setup.server_version()
    except ExpkitError as err:
        out.append(CheckResult("api-server", False, str(err), _api_server_hint(err, setup)))
        pulls = k8s_spec is not None and bool(k8s_spec.get("imagePullSecrets"))
        out += [
            CheckResult(n, None, "not checked: the API server is not reachable")
            for n in CHECK_NAMES[2:]
            if n != "pull-secrets" or pulls  # the lines a reachable server would print, no more
        ]
        return out
    out.append(CheckResult("api-server", True, f"{setup.target.server} answers: Kubernetes {version}"))
    out.append(_check_crds(setup))
    out.append(_check_controller(setup))
    repo, repo_result, secret_result, creds = _check_repository(setup)
    out += [repo_result, secret_result]
    out.append(_check_minio(setup, repo))
    out.append(_check_bucket(setup, repo, creds, env))
    out.append(_check_submit(setup))
    out.append(_check_service_account(setup, k8s_spec, spec_path))
    if k8s_spec is not None and k8s_spec.get("imagePullSecrets"):
        out.append(_check_pull_secrets(setup, list(k8s_spec["imagePullSecrets"])))
    return out


def _api_server_hint(err: ExpkitError, setup: ClusterSetup) -> str:
    """How to fix an API server that did not answer: a certificate problem names the kubeconfig's CA setting."""
    if isinstance(err, ClusterTLSError):
        where = setup.target.kubeconfig or "the kubeconfig"
        return (
            f"set the cluster's certificate-authority (CA file) or certificate-authority-data (base64 PEM) in "
            f"{where} to the CA of {setup.target.server}, or fetch a fresh kubeconfig"
        )
    return "start the cluster, refresh the credentials or pick another --context"


def _spec_kubernetes(spec_path: str | Path) -> dict[str, Any]:
    from expkit.spec import load_spec

    loaded = load_spec(spec_path)
    k8s = loaded.experiment.spec.kubernetes
    return k8s.model_dump(exclude_none=True) if k8s is not None else {}


def _guard(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except ClusterAuthError as err:
        return CheckResult(name, None, f"could not check: {err}")
    except ExpkitError as err:
        return CheckResult(name, False, str(err))


def _check_crds(setup: ClusterSetup) -> CheckResult:
    hint = (
        "install Argo Workflows (docs/cluster.md: kubectl apply --server-side -n argo -f "
        ".../install.yaml) or pick the right --context"
    )

    def run() -> CheckResult:
        try:
            names = {(c.get("metadata") or {}).get("name") for c in setup.list("CustomResourceDefinition", None)}
        except ClusterAuthError:
            names = set()
            doc = (
                setup.request("GET", "/apis/argoproj.io/v1alpha1", what="the argoproj.io API group", missing_ok=True)
                or {}
            )
            for res in doc.get("resources") or []:
                if "/" not in str(res.get("name")):  # workflowtasksets/status is a subresource, not a CRD
                    names.add(f"{res.get('name')}.argoproj.io")
        missing = [n for n in ARGO_CRDS if n not in names]
        if "workflows.argoproj.io" in missing:
            return CheckResult("argo-crds", False, "the workflows.argoproj.io CRD is not installed", hint)
        if missing:
            return CheckResult(
                "argo-crds",
                False,
                f"{', '.join(missing)} missing: Argo Workflows older than 3.4?",
                "upgrade Argo Workflows (expkit's workflow RBAC targets the emissary executor of 3.4 and newer)",
            )
        found = sum(1 for n in names if str(n).endswith(".argoproj.io"))
        return CheckResult("argo-crds", True, f"{found} Argo CRDs ({', '.join(ARGO_CRDS)} ...)")

    return _guard("argo-crds", run)


def _check_controller(setup: ClusterSetup) -> CheckResult:
    """The controller is looked for as a Deployment named ``workflow-controller`` (release manifests) or
    ``argo-workflows-workflow-controller`` (Helm chart), first in ``argo``, then in any namespace."""
    hint = "install Argo Workflows' controller, or check 'kubectl get deploy -A | grep workflow-controller'"
    found: list[dict[str, Any]] = []
    denied = False
    for ns, name in CONTROLLER_LOCATIONS:
        try:
            dep = setup.get("Deployment", ns, name)
        except ClusterAuthError:
            denied = True
            continue
        if dep is not None:
            found.append(dep)
            break
    if not found:
        for _, name in CONTROLLER_LOCATIONS:
            try:
                found += setup.list("Deployment", None, field_selector=f"metadata.name={name}")
            except ClusterAuthError:
                denied = True
    if not found:
        if denied:
            return CheckResult(
                "workflow-controller",
                None,
                "could not check: not allowed to read Deployments in namespace 'argo' or cluster-wide (a Role "
                "in your namespace cannot grant that)",
                "ask your administrator whether Argo's workflow-controller runs; 'expkit status RUN' says when no "
                "controller processes a submitted run",
            )
        return CheckResult(
            "workflow-controller",
            False,
            "no Deployment 'workflow-controller' in namespace 'argo' or any other namespace",
            hint,
        )
    dep = found[0]
    meta = dep.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    image = next(
        (
            c.get("image")
            for c in (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
            if c.get("image")
        ),
        "",
    )
    tag = str(image).split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    available = int((dep.get("status") or {}).get("availableReplicas") or 0)
    if available < 1:
        return CheckResult(
            "workflow-controller",
            False,
            f"Deployment {where} has no available replica",
            f"kubectl -n {meta.get('namespace')} describe deploy/{meta.get('name')}",
        )
    return CheckResult("workflow-controller", True, f"{where} available{f' (Argo {tag})' if tag else ''}")


def _check_repository(
    setup: ClusterSetup,
) -> tuple[dict[str, Any] | None, CheckResult, CheckResult, co.Credentials | None]:
    """The default artifact repository (its S3 block, when usable) and the Secret holding its keys."""
    hint = f"run 'expkit cluster install -n {setup.namespace}', or configure another S3 endpoint (docs/cluster.md)"
    repo, repo_result = _read_repository(setup, hint)
    if repo is None:
        return None, repo_result, CheckResult("credentials-secret", None, "not checked: no artifact repository"), None
    secret_result, creds = _check_repository_secret(setup, repo, hint)
    return repo, repo_result, secret_result, creds


def _read_repository(setup: ClusterSetup, hint: str) -> tuple[dict[str, Any] | None, CheckResult]:
    """The S3 block of the namespace's default artifact repository (None when there is no usable one)."""
    ns = setup.namespace
    try:
        cm = setup.get("ConfigMap", ns, co.ARTIFACT_CONFIGMAP)
    except ClusterAuthError as err:
        return None, CheckResult("artifact-repository", None, f"could not check: {err}")
    except ExpkitError as err:
        return None, CheckResult("artifact-repository", False, str(err))
    if cm is None:
        return None, CheckResult(
            "artifact-repository", False, f"no ConfigMap {co.ARTIFACT_CONFIGMAP!r} in namespace {ns!r}", hint
        )
    key = ((cm.get("metadata") or {}).get("annotations") or {}).get(co.DEFAULT_REPO_ANNOTATION)
    if not key:
        return None, CheckResult(
            "artifact-repository",
            False,
            f"ConfigMap {co.ARTIFACT_CONFIGMAP!r} has no {co.DEFAULT_REPO_ANNOTATION} annotation",
            f"annotate it with the key of the default repository ({hint})",
        )
    text = (cm.get("data") or {}).get(key)
    try:
        repo = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        repo = None
    s3 = (repo or {}).get("s3") if isinstance(repo, dict) else None
    if not isinstance(s3, dict) or not s3.get("bucket") or not s3.get("endpoint"):
        return None, CheckResult(
            "artifact-repository",
            False,
            f"key {key!r} of ConfigMap {co.ARTIFACT_CONFIGMAP!r} is not an S3 repository with a bucket and an endpoint",
            hint,
        )
    scheme = "http" if s3.get("insecure") else "https"
    return s3, CheckResult(
        "artifact-repository", True, f"default {key!r}: bucket {s3['bucket']!r} at {scheme}://{s3['endpoint']}"
    )


def _check_repository_secret(
    setup: ClusterSetup, s3: Mapping[str, Any], hint: str
) -> tuple[CheckResult, co.Credentials | None]:
    """The Secret(s) the repository's ``accessKeySecret``/``secretKeySecret`` name, and the keys in them."""
    ns = setup.namespace
    refs = [s3.get("accessKeySecret") or {}, s3.get("secretKeySecret") or {}]
    names = {str(r.get("name")) for r in refs if isinstance(r, dict)}
    if not all(isinstance(r, dict) and r.get("name") and r.get("key") for r in refs):
        return CheckResult(
            "credentials-secret", False, "the repository names no accessKeySecret/secretKeySecret", hint
        ), None
    name = next(iter(names)) if len(names) == 1 else None
    try:
        secrets_ = {n: setup.get("Secret", ns, n) for n in names}
    except ClusterAuthError as err:
        return CheckResult("credentials-secret", None, f"could not check: {err}"), None
    missing = [n for n, s in secrets_.items() if s is None]
    if missing:
        return CheckResult(
            "credentials-secret",
            False,
            f"Secret {missing[0]!r} named by the repository is missing in namespace {ns!r}",
            hint,
        ), None
    values = [_secret_value(secrets_[str(ref["name"])], ref["key"]) for ref in refs]
    if not all(values):
        return CheckResult(
            "credentials-secret", False, f"Secret {name or sorted(names)} lacks the key(s) the repository names", hint
        ), None
    creds = co.Credentials(values[0], values[1])
    setup.sensitive(creds.access_key, creds.secret_key)
    return CheckResult("credentials-secret", True, f"Secret {name or sorted(names)} has both keys"), creds


def _secret_value(secret: Mapping[str, Any] | None, key: str) -> str:
    """The decoded value of ``key`` in ``secret`` ("" when absent or not base64 UTF-8)."""
    raw = ((secret or {}).get("data") or {}).get(key)
    try:
        return base64.b64decode(raw or "", validate=True).decode() if raw else ""
    except (ValueError, UnicodeDecodeError):
        return ""


def _is_our_minio(setup: ClusterSetup, repo: Mapping[str, Any] | None) -> bool:
    endpoint = str((repo or {}).get("endpoint") or "")
    host = endpoint.split(":", 1)[0]
    ns = setup.namespace
    return host in (f"{co.MINIO}.{ns}.svc", f"{co.MINIO}.{ns}.svc.cluster.local", f"{co.MINIO}.{ns}", co.MINIO)


def _check_minio(setup: ClusterSetup, repo: Mapping[str, Any] | None) -> CheckResult:
    ns = setup.namespace
    if repo is None:
        return CheckResult("minio", None, "not checked: no artifact repository")
    if not _is_our_minio(setup, repo):
        return CheckResult(
            "minio",
            None,
            f"the repository's endpoint {repo.get('endpoint')} is not this namespace's "
            "MinIO: not checked here (see the bucket check)",
        )

    def run() -> CheckResult:
        for kind in ("Deployment", "StatefulSet"):
            obj = setup.get(kind, ns, co.MINIO)
            if obj is None:
                continue
            want = int((obj.get("spec") or {}).get("replicas", 1))
            ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
            if ready >= want:
                return CheckResult("minio", True, f"{kind.lower()}/{co.MINIO}: {ready}/{want} ready")
            return CheckResult(
                "minio",
                False,
                f"{kind.lower()}/{co.MINIO}: {ready}/{want} ready",
                f"kubectl -n {ns} describe {kind.lower()}/{co.MINIO}; kubectl -n {ns} logs {kind.lower()}/{co.MINIO}",
            )
        return CheckResult(
            "minio",
            False,
            f"no MinIO Deployment or StatefulSet {co.MINIO!r} in namespace {ns!r}",
            f"run 'expkit cluster install -n {ns}'",
        )

    return _guard("minio", run)


def _check_bucket(
    setup: ClusterSetup, repo: Mapping[str, Any] | None, creds: co.Credentials | None, env: Mapping[str, str]
) -> CheckResult:
    ns = setup.namespace
    if repo is None:
        return CheckResult("bucket", None, "not checked: no artifact repository")
    bucket = str(repo.get("bucket"))
    if env.get("EXPKIT_S3_ENDPOINT"):
        return _check_bucket_s3(bucket, creds, env, ns)
    if _is_our_minio(setup, repo):
        try:
            job = setup.get("Job", ns, co.BUCKET_JOB)
        except ExpkitError:
            job = None
        if job is not None and job_succeeded(job):
            return CheckResult(
                "bucket",
                True,
                f"{bucket!r} created in the cluster by job/{co.BUCKET_JOB} (to check it "
                "from here, port-forward MinIO and set EXPKIT_S3_ENDPOINT)",
            )
        if job is not None and job_failed(job):
            return CheckResult(
                "bucket",
                False,
                f"job/{co.BUCKET_JOB} failed to create {bucket!r}",
                f"kubectl -n {ns} logs job/{co.BUCKET_JOB}; then 'expkit cluster install -n {ns}' retries it",
            )
        if job is not None:  # neither succeeded nor failed: in progress, not (yet) a failure
            return CheckResult(
                "bucket",
                None,
                f"job/{co.BUCKET_JOB} is still running: {bucket!r} is not created yet",
                f"wait for it ('expkit cluster install -n {ns}' waits until it is done); if it does not "
                f"finish: kubectl -n {ns} logs job/{co.BUCKET_JOB}",
            )
    return CheckResult(
        "bucket",
        None,
        f"{bucket!r} could not be checked from outside the cluster",
        f"kubectl -n {ns} port-forward svc/{co.MINIO} 9000:9000, then EXPKIT_S3_ENDPOINT="
        "http://127.0.0.1:9000 expkit cluster check",
    )


def _check_bucket_s3(bucket: str, creds: co.Credentials | None, env: Mapping[str, str], ns: str) -> CheckResult:
    from expkit.stores.s3.store import S3Config, S3Store

    try:
        cfg = S3Config.from_env(env)
        if cfg.access_key is None and creds is not None:
            cfg = dataclasses.replace(
                cfg,
                access_key=creds.access_key,
                secret_key=creds.secret_key,
                credentials_source=f"Secret {co.CREDENTIALS_SECRET} in namespace {ns}",
            )
        store = S3Store(bucket, "", cfg, cache=False)
        store.check()
    except ExpkitError as err:
        return CheckResult(
            "bucket",
            False,
            f"{bucket!r} at {env.get('EXPKIT_S3_ENDPOINT')}: {err}",
            f"run 'expkit cluster install -n {ns}' (it creates the bucket), or check the endpoint",
        )
    return CheckResult(
        "bucket", True, f"{bucket!r} exists at {cfg.endpoint} (credentials from {cfg.credentials_source})"
    )


def self_subject_access_review(
    setup: ClusterSetup, verb: str, resource: str, group: str = "", namespace: str | None = None
) -> tuple[bool, str]:
    """Whether the current user may ``verb`` ``resource`` (SelfSubjectAccessReview), and the server's reason."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace or setup.namespace,
                "verb": verb,
                "group": group,
                "resource": resource,
            }
        },
    }
    doc = setup.request("POST", SSAR_PATH, body=body, what="selfsubjectaccessreviews") or {}
    status = doc.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")


def _check_submit(setup: ClusterSetup) -> CheckResult:
    ns = setup.namespace

    def run() -> CheckResult:
        allowed, _ = self_subject_access_review(setup, "create", "workflows", "argoproj.io", ns)
        if allowed:
            return CheckResult("submit-permission", True, f"you may create workflows in namespace {ns!r}")
        return CheckResult(
            "submit-permission",
            False,
            f"you may not create workflows in namespace {ns!r}",
            f"ask an administrator: kubectl -n {ns} create rolebinding <you>-expkit --role "
            f"{co.SUBMITTER_ROLE} --user <you>",
        )

    return _guard("submit-permission", run)


def _check_service_account(
    setup: ClusterSetup, k8s_spec: Mapping[str, Any] | None, spec_path: str | Path | None
) -> CheckResult:
    ns = setup.namespace
    # Unset in the spec means the renderer's default, the account `cluster install` creates.
    name = (k8s_spec or {}).get("serviceAccountName") or co.WORKFLOW_SA

    def run() -> CheckResult:
        if setup.get("ServiceAccount", ns, name) is None:
            return CheckResult(
                "workflow-service-account",
                False,
                f"ServiceAccount {name!r} is missing in namespace {ns!r}",
                f"run 'expkit cluster install -n {ns}'",
            )
        if name == co.WORKFLOW_SA and setup.get("RoleBinding", ns, co.WORKFLOW_SA) is None:
            return CheckResult(
                "workflow-service-account",
                False,
                f"RoleBinding {co.WORKFLOW_SA!r} is missing: workflow pods could not report results",
                f"run 'expkit cluster install -n {ns}'",
            )
        return CheckResult("workflow-service-account", True, f"ServiceAccount {name!r} exists")

    return _guard("workflow-service-account", run)


def _check_pull_secrets(setup: ClusterSetup, names: Sequence[str]) -> CheckResult:
    ns = setup.namespace

    def run() -> CheckResult:
        bad = []
        for n in names:
            obj = setup.get("Secret", ns, n)
            if obj is None:
                bad.append(f"{n!r} is missing")
            elif obj.get("type") != "kubernetes.io/dockerconfigjson":
                bad.append(f"{n!r} is of type {obj.get('type')!r}, not kubernetes.io/dockerconfigjson")
        if bad:
            return CheckResult(
                "pull-secrets",
                False,
                "; ".join(bad),
                f'echo "$TOKEN" | expkit cluster install -n {ns} --registry-server HOST '
                "--registry-username USER --registry-password-stdin",
            )
        return CheckResult("pull-secrets", True, f"{', '.join(names)} present")

    return _guard("pull-secrets", run)


def failed(results: Iterable[CheckResult]) -> bool:
    """True when any check failed (``ok`` False); checks that could not run do not count."""
    return any(r.ok is False for r in results)


__all__ = [
    "ARGO_CRDS",
    "CHECK_NAMES",
    "CheckResult",
    "check",
    "failed",
    "run_checks",
    "self_subject_access_review",
]

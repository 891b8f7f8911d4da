"""Set a namespace up for expkit, check it, tear it down: ``expkit cluster install|check|uninstall``.

Besides :mod:`.client`, the only module that talks to the Kubernetes API. It reuses the client's connection
(:class:`~expkit.executors.argo.client.ArgoClient`: kubeconfig, context, namespace, timeouts, its errors)
and sends raw JSON requests for any kind in :data:`.cluster_objects.KINDS`, so one code path serves every
object. The objects themselves are built by :mod:`.cluster_objects` (pure).

**Install is idempotent.** For each desired object it reads the live one and:

* creates it when it is missing;
* leaves it alone when the live object already carries every field expkit sets (fields the API server
  adds — defaults, status — do not count), and reports it ``unchanged``: a second install makes no
  write request at all;
* otherwise sends a JSON merge patch of expkit's fields and reports ``updated`` (with the fields);
* never changes the credentials Secret once it exists (the keys MinIO's data was written with), never
  changes the namespace, replaces the bucket Job when its spec changed or it failed, and never touches an
  object that exists without expkit's ``app.kubernetes.io/managed-by: expkit`` label (``skipped``).

Volumes only grow (a smaller ``--storage-size`` is reported and ignored); switching between standalone
and distributed MinIO, or changing the number of distributed pods, is refused (it is a new store: see
docs/cluster.md).

**The bucket** is created inside the cluster by a one-shot Job running the MinIO image's bundled ``mc``
(``mc mb --ignore-existing``) with the credentials from the Secret: no port-forward, no network path from
this machine to MinIO needed. Install waits for MinIO and the Job (``wait``/``timeout``).

No credential ever appears in a return value, a log record or an error message: values read from Secrets
stay in memory, and API error messages are scrubbed of them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from expkit.cluster import objects as co
from expkit.core.errors import ExpkitError, InputError
from expkit.executors.argo.client import (
    CONTROLLER_LOCATIONS,
    ArgoClient,
    ClusterAuthError,
    ClusterConfigError,
    ClusterError,
    ClusterTarget,
    ClusterUnreachable,
    _one_line,
    _why_unreachable,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
DEFAULT_TIMEOUT = 300.0
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ARGO_CRDS = ("workflows.argoproj.io", "workflowtaskresults.argoproj.io")
MANAGED_BY = ("app.kubernetes.io/managed-by", "expkit")
MINIO_PVC_SELECTOR = "app.kubernetes.io/name=minio,app.kubernetes.io/part-of=expkit"


class InstallRejected(ClusterError):
    """The API server refused an object (400/422), or the live setup cannot be changed into the desired one."""


class InstallTimeout(ClusterError):
    """MinIO or the bucket Job did not become ready in time."""


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------


class ClusterSetup:
    """A connection for install/check/uninstall: raw JSON requests for the kinds in ``KINDS``.

    Built on :class:`ArgoClient` (pass one to share its connection). Every method raises a
    :class:`ClusterError` subclass with one line naming the context and server; ``get`` returns None for
    a missing object. Strings registered with :meth:`sensitive` never appear in an error message.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike | None = None,
        context: str | None = None,
        namespace: str | None = None,
        *,
        argo: ArgoClient | None = None,
    ) -> None:
        self.argo = argo if argo is not None else ArgoClient(kubeconfig, context, namespace)
        self._owns = argo is None
        self.api = self.argo.api
        self.target: ClusterTarget = self.argo.target
        self.timeout = self.argo.timeout
        self._secrets: set[str] = set()

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def close(self) -> None:
        if self._owns:
            self.argo.close()

    def __enter__(self) -> ClusterSetup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def sensitive(self, *values: str | None) -> None:
        """Register credential values to scrub from every error message."""
        self._secrets.update(v for v in values if v and len(v) >= 4)

    def scrub(self, text: str) -> str:
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "<redacted>")
        return text

    # -- raw requests -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str = "",
        namespace: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """Send one request; the decoded JSON answer (None for 404 when ``missing_ok``)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            m, url, hdrs, data, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(m, url, header_params=hdrs, body=data, _request_timeout=self.timeout)
            resp.read()
        except ApiException as err:
            raise self._api_error(err.status, err.body, err.reason, method, what or path, namespace) from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ClusterUnreachable(
                f"cannot reach the Kubernetes API server of {self.target.describe()}: "
                f"{_why_unreachable(err)}; check that the cluster is running and that the "
                "kubeconfig points at it"
            ) from err
        status = resp.status
        raw = resp.data or b""
        if status == 404 and missing_ok:
            return None
        if not 200 <= status <= 299:
            raise self._api_error(status, raw, getattr(resp, "reason", ""), method, what or path, namespace)
        try:
            return json.loads(raw) if raw else None
        except ValueError as err:
            raise ClusterError(
                f"the API server of {self.target.describe()} sent invalid JSON for {method} {what or path}"
            ) from err

    def _api_error(
        self, status: int | None, body: Any, reason: Any, method: str, what: str, namespace: str | None
    ) -> ClusterError:
        doc: dict[str, Any] = {}
        if body:
            try:
                loaded = json.loads(body)
                doc = loaded if isinstance(loaded, dict) else {}
            except (TypeError, ValueError):
                doc = {}
        code = status or doc.get("code")
        message = self.scrub(_one_line(doc.get("message") or reason or ""))
        where = self.target.describe()
        verb = {"GET": "read", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}.get(
            method.upper(), method.lower()
        )
        scope = f" in namespace {namespace!r}" if namespace else ""
        if code == 401:
            return ClusterAuthError(
                f"the API server of {where} rejected the credentials (401 Unauthorized): log in "
                "again or pick another --context"
            )
        if code == 403:
            return ClusterAuthError(
                f"not allowed to {verb} {what}{scope} on {where} (403 Forbidden): ask a cluster "
                "administrator to run 'expkit cluster install' for you, or for a Role that "
                f"grants it ({message})"
            )
        if code in (400, 422):
            causes = [c for c in (doc.get("details") or {}).get("causes") or [] if isinstance(c, dict)]
            text = (
                "; ".join(
                    self.scrub(
                        _one_line(f"{c.get('field')}: {c.get('message')}" if c.get("field") else str(c.get("message")))
                    )
                    for c in causes
                )
                or message
            )
            return InstallRejected(f"the API server of {where} refused to {verb} {what}{scope} ({code}): {text}")
        if code == 409:
            return ClusterError(
                f"conflict while trying to {verb} {what}{scope} on {where} (409): {message}; run the command again"
            )
        if code == 404:
            return ClusterError(f"{what} not found{scope} on {where} (404): {message}")
        return ClusterError(
            f"the API server of {where} answered {code} to {verb} {what}{scope}: {message or 'no details'}"
        )

    # -- objects ------------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.request(
            "GET",
            co.object_path(kind, namespace, name),
            what=f"{kind.lower()} {name!r}",
            namespace=namespace,
            missing_ok=True,
        )

    def list(
        self, kind: str, namespace: str | None, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (all namespaces when None)."""
        prefix, plural, _ = co.KINDS[kind]
        path = co.object_path(kind, namespace) if namespace else f"{prefix}/{plural}"
        doc = self.request(
            "GET",
            path,
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
            what=plural,
            namespace=namespace,
        )
        return list((doc or {}).get("items") or [])

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return self.request(
            "POST",
            co.object_path(str(obj["kind"]), meta.get("namespace")),
            body=dict(obj),
            query={"fieldValidation": "Strict"},
            what=co.describe(obj),
            namespace=meta.get("namespace"),
        )

    def patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``)."""
        return self.request(
            "PATCH",
            co.object_path(kind, namespace, name),
            body=dict(patch),
            content_type="application/merge-patch+json",
            query={"fieldValidation": "Strict"},
            what=f"{kind.lower()} {name!r}",
            namespace=namespace,
        )

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete (dependents in the background); False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        doc = self.request(
            "DELETE",
            co.object_path(kind, namespace, name),
            body=body,
            what=f"{kind.lower()} {name!r}",
            namespace=namespace,
            missing_ok=True,
        )
        return doc is not None

    def server_version(self) -> str:
        doc = self.request("GET", "/version", what="the server version") or {}
        return str(doc.get("gitVersion") or f"v{doc.get('major')}.{doc.get('minor')}")


def _managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1]


# ---------------------------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectResult:
    """What install/uninstall did with one object."""

    kind: str
    name: str
    namespace: str | None
    action: str  # created | updated | unchanged | replaced | kept | skipped | deleted | absent | would-*
    detail: str = ""

    @property
    def ref(self) -> str:
        return co.describe({"kind": self.kind, "metadata": {"name": self.name}})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class InstallReport:
    """The outcome of :func:`install` (never holds a credential)."""

    context: str
    server: str
    namespace: str
    bucket: str
    endpoint: str
    mode: str  # standalone | distributed(N)
    results: list[ObjectResult] = field(default_factory=list)
    credentials: str = "kept"  # generated | kept
    ready: bool | None = None  # None: not waited for
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(r.action in ("created", "updated", "replaced", "deleted") for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["changed"] = self.changed
        return doc


def dry_run_yaml(opts: co.InstallOptions, *, registry_password: str | None = None) -> str:
    """Every object install would apply (fresh credentials), as YAML with every Secret value redacted."""
    objs = co.desired_objects(opts, co.generate_credentials(), registry_password=registry_password)
    return co.to_yaml([co.redact(o) for o in objs])


def _existing_mode(setup: ClusterSetup, ns: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return setup.get("Deployment", ns, co.MINIO), setup.get("StatefulSet", ns, co.MINIO)


def _refuse_mode_change(opts: co.InstallOptions, dep: dict[str, Any] | None, sts: dict[str, Any] | None) -> None:
    ns = opts.namespace
    how = (
        f"export your runs (expkit export), then 'expkit cluster uninstall -n {ns} --purge' and install again, "
        "or install into another namespace"
    )
    if opts.distributed and dep is not None and _managed(dep):
        raise InstallRejected(
            f"MinIO in namespace {ns!r} runs as a single pod; switching to --distributed "
            f"{opts.distributed} would start an empty store: {how}"
        )
    if not opts.distributed and sts is not None and _managed(sts):
        raise InstallRejected(
            f"MinIO in namespace {ns!r} runs distributed ({(sts.get('spec') or {}).get('replicas')} "
            f"pods); leave out --distributed or pass --distributed "
            f"{(sts.get('spec') or {}).get('replicas')} to keep it: a single pod would start an "
            f"empty store ({how})"
        )
    if opts.distributed and sts is not None and _managed(sts):
        live = int((sts.get("spec") or {}).get("replicas") or 0)
        if live != opts.distributed:
            raise InstallRejected(
                f"MinIO in namespace {ns!r} runs {live} pods; an erasure set cannot be resized to "
                f"{opts.distributed}: pass --distributed {live}, or {how}"
            )


def install(
    setup: ClusterSetup,
    opts: co.InstallOptions,
    *,
    registry_password: str | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_result: Callable[[ObjectResult], None] | None = None,
) -> InstallReport:
    """Apply the setup of ``opts.namespace`` (see the module docstring): create what is missing, patch what
    differs, keep the credentials; then (with ``wait``) wait for MinIO and the bucket Job."""
    opts.validate()
    if registry_password is not None and not opts.registry_server:
        raise InputError("a registry password was given without --registry-server and --registry-username")
    if opts.registry_server and registry_password is None:
        raise InputError(
            "--registry-server needs the password: pipe it to --registry-password-stdin or set "
            "EXPKIT_REGISTRY_PASSWORD (never on the command line)"
        )
    setup.sensitive(registry_password)
    ns = opts.namespace
    report = InstallReport(
        setup.target.context,
        setup.target.server,
        ns,
        opts.bucket,
        opts.endpoint,
        f"distributed({opts.distributed})" if opts.distributed else "standalone",
    )

    ns_exists = setup.get("Namespace", None, ns) is not None
    live_secret = live_sa = None
    if ns_exists:
        live_secret = setup.get("Secret", ns, co.CREDENTIALS_SECRET)
        live_sa = setup.get("ServiceAccount", ns, co.WORKFLOW_SA)
        _refuse_mode_change(opts, *_existing_mode(setup, ns))
    creds: co.Credentials | None = None
    if live_secret is not None and not _managed(live_secret):
        raise InstallRejected(
            f"Secret {co.CREDENTIALS_SECRET!r} in namespace {ns!r} was not created by expkit (the "
            "keys of another S3 endpoint?): MinIO would take them as its root credentials. Use "
            "another namespace, or delete the Secret if it is not needed"
        )
    if live_secret is not None:
        creds = co.credentials_from_secret(live_secret)
        if creds is None:
            raise InstallRejected(
                f"Secret {co.CREDENTIALS_SECRET!r} in namespace {ns!r} exists but lacks "
                f"{co.ACCESS_KEY!r}/{co.SECRET_KEY!r}: fix it, or delete it to generate new keys "
                "(MinIO's existing data needs the old ones)"
            )
    else:
        creds = co.generate_credentials()
        report.credentials = "generated"
    setup.sensitive(creds.access_key, creds.secret_key)

    pulls: list[str] = []
    for ref in (live_sa or {}).get("imagePullSecrets") or []:
        if isinstance(ref, dict) and ref.get("name") and ref["name"] not in pulls:
            pulls.append(str(ref["name"]))
    desired = co.desired_objects(opts, creds, registry_password=registry_password, pull_secrets=pulls)

    for obj in desired:
        result = _apply(setup, obj)
        report.results.append(result)
        if result.detail and result.action in ("kept", "skipped"):
            report.notes.append(f"{result.ref}: {result.detail}")
        log.info("%s %s", result.ref, result.action)
        if on_result is not None:
            on_result(result)
    if wait:
        report.ready = wait_ready(setup, opts, timeout=timeout)
    return report


def _apply(setup: ClusterSetup, obj: Mapping[str, Any]) -> ObjectResult:
    kind = str(obj["kind"])
    meta = obj.get("metadata") or {}
    name, ns = str(meta["name"]), meta.get("namespace")
    live = setup.get(kind, ns, name)
    if live is None:
        setup.create(obj)
        return ObjectResult(kind, name, ns, "created")
    policy = co.install_policy(obj)
    if policy in ("create", "keep"):
        return ObjectResult(
            kind,
            name,
            ns,
            "unchanged",
            "exists; never changed by install"
            if policy == "create"
            else "exists; kept (the keys MinIO's data was written with)",
        )
    if not _managed(live):
        return ObjectResult(kind, name, ns, "skipped", "exists but was not created by expkit: left alone")
    want = co.comparable(obj)
    diffs = co.differences(want, live)
    if not diffs:
        if policy == "replace" and _job_failed(live):
            setup.delete(kind, ns, name)
            _wait_gone(setup, kind, ns, name)
            setup.create(obj)
            return ObjectResult(kind, name, ns, "replaced", "the previous run failed")
        return ObjectResult(kind, name, ns, "unchanged")
    if policy == "replace":
        setup.delete(kind, ns, name)
        _wait_gone(setup, kind, ns, name)
        setup.create(obj)
        return ObjectResult(kind, name, ns, "replaced", "changed: " + ", ".join(diffs[:6]))
    if kind == "PersistentVolumeClaim":
        return _apply_pvc(setup, obj, live, diffs)
    if kind == "StatefulSet":
        frozen = [
            d
            for d in diffs
            if d.split(".")[:2][-1].split("[")[0]
            in ("volumeClaimTemplates", "serviceName", "podManagementPolicy", "selector")
        ]
        if frozen:
            note = (
                "cannot change " + ", ".join(frozen[:4]) + " of a running StatefulSet (immutable); kept the live values"
            )
            want["spec"] = {
                k: v
                for k, v in want["spec"].items()
                if k not in ("volumeClaimTemplates", "serviceName", "podManagementPolicy", "selector")
            }
            rest = co.differences(want, live)
            if not rest:
                return ObjectResult(kind, name, ns, "kept", note)
            setup.patch(kind, ns, name, want)
            return ObjectResult(kind, name, ns, "updated", "changed: " + ", ".join(rest[:6]) + "; " + note)
    setup.patch(kind, ns, name, want)
    return ObjectResult(kind, name, ns, "updated", "changed: " + ", ".join(diffs[:6]))


def _apply_pvc(setup: ClusterSetup, obj: Mapping[str, Any], live: Mapping[str, Any], diffs: list[str]) -> ObjectResult:
    meta = obj["metadata"]
    name, ns = meta["name"], meta["namespace"]
    size_path = "spec.resources.requests.storage"
    other = [d for d in diffs if d != size_path and not d.startswith("metadata.")]
    want_size = obj["spec"]["resources"]["requests"]["storage"]
    live_size = ((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    patch: dict[str, Any] = {}
    notes = []
    if any(d.startswith("metadata.") for d in diffs):
        patch["metadata"] = co.comparable(obj)["metadata"]
    if size_path in diffs:
        if _bytes(want_size) > _bytes(live_size):
            patch["spec"] = {"resources": {"requests": {"storage": want_size}}}
        else:
            notes.append(f"kept {live_size}: a volume cannot shrink")
    if other:
        notes.append(
            "cannot change " + ", ".join(other[:4]) + " of an existing claim (immutable); "
            "'expkit cluster uninstall --purge' deletes it"
        )
    if not patch:
        return ObjectResult("PersistentVolumeClaim", name, ns, "kept", "; ".join(notes))
    setup.patch("PersistentVolumeClaim", ns, name, patch)
    detail = (
        f"storage {live_size} -> {want_size} (the StorageClass must allow expansion)" if "spec" in patch else "labels"
    )
    return ObjectResult("PersistentVolumeClaim", name, ns, "updated", "; ".join([detail, *notes]))


_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def _bytes(quantity: Any) -> float:
    text = str(quantity or "0")
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * _UNITS[suffix]
            except ValueError:
                return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def _job_failed(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])


def _job_succeeded(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    return int(status.get("succeeded") or 0) > 0 or any(
        c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _wait_gone(setup: ClusterSetup, kind: str, ns: str | None, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while setup.get(kind, ns, name) is not None:
        if time.monotonic() > deadline:
            raise InstallTimeout(
                f"{kind.lower()} {name!r} in namespace {ns!r} was not deleted within {timeout:.0f}s: "
                "run the command again"
            )
        time.sleep(0.5)


def _workload_ready(obj: Mapping[str, Any] | None) -> bool:
    if obj is None:
        return False
    want = int((obj.get("spec") or {}).get("replicas", 1))
    status = obj.get("status") or {}
    return int(status.get("readyReplicas") or 0) >= want and int(status.get("availableReplicas") or 0) >= want


def wait_ready(
    setup: ClusterSetup,
    opts: co.InstallOptions,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until MinIO is ready and the bucket Job succeeded; raise :class:`InstallTimeout` (or
    :class:`ClusterError` when the Job failed) with what to look at."""
    ns = opts.namespace
    kind = "StatefulSet" if opts.distributed else "Deployment"
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        workload = setup.get(kind, ns, co.MINIO)
        job = setup.get("Job", ns, co.BUCKET_JOB)
        if job is not None and _job_failed(job):
            raise ClusterError(
                f"the bucket Job {co.BUCKET_JOB!r} in namespace {ns!r} failed: see 'kubectl logs "
                f"-n {ns} job/{co.BUCKET_JOB}', fix the cause and run 'expkit cluster install' again "
                "(it retries the Job)"
            )
        if _workload_ready(workload) and job is not None and _job_succeeded(job):
            return True
        if time.monotonic() >= deadline:
            what = (
                f"MinIO ({kind.lower()}/{co.MINIO})"
                if not _workload_ready(workload)
                else f"the bucket Job ({co.BUCKET_JOB})"
            )
            raise InstallTimeout(
                f"{what} in namespace {ns!r} was not ready after {timeout:.0f}s: see 'kubectl get "
                f"pods -n {ns}' and 'kubectl describe -n {ns} {kind.lower()}/{co.MINIO}' (image pull, "
                "volume provisioning, node capacity); install again to keep waiting"
            )
        sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------------------------
# Uninstall
# ---------------------------------------------------------------------------------------------

#: Deleted in this order; the credentials Secret and the volumes only with ``purge``.
_UNINSTALL_ORDER: tuple[tuple[str, str], ...] = (
    ("Job", co.BUCKET_JOB),
    ("RoleBinding", co.WORKFLOW_SA),
    ("Role", co.WORKFLOW_SA),
    ("Role", co.SUBMITTER_ROLE),
    ("ServiceAccount", co.WORKFLOW_SA),
    ("ConfigMap", co.ARTIFACT_CONFIGMAP),
    ("PodDisruptionBudget", co.MINIO),
    ("Service", co.MINIO),
    ("Service", co.MINIO_HEADLESS),
    ("Deployment", co.MINIO),
    ("StatefulSet", co.MINIO),
    ("Secret", co.PULL_SECRET),
)


def uninstall(
    setup: ClusterSetup, namespace: str, *, purge: bool = False, on_result: Callable[[ObjectResult], None] | None = None
) -> list[ObjectResult]:
    """Delete what install created in ``namespace`` — only objects labelled ``managed-by: expkit``. The
    volumes and the credentials Secret that opens them are kept unless ``purge``; the namespace is kept."""
    results: list[ObjectResult] = []

    def record(r: ObjectResult) -> None:
        results.append(r)
        log.info("%s %s", r.ref, r.action)
        if on_result is not None:
            on_result(r)

    if setup.get("Namespace", None, namespace) is None:
        raise InputError(
            f"namespace {namespace!r} does not exist on {setup.target.describe()}: check --namespace and --context"
        )
    for kind, name in _UNINSTALL_ORDER:
        record(_delete_managed(setup, kind, namespace, name))
    claims = [co.MINIO_PVC] + sorted(
        (c.get("metadata") or {}).get("name")
        for c in setup.list("PersistentVolumeClaim", namespace, label_selector=MINIO_PVC_SELECTOR)
        if (c.get("metadata") or {}).get("name") != co.MINIO_PVC
    )
    if purge:
        for claim in claims:
            record(_delete_managed(setup, "PersistentVolumeClaim", namespace, claim))
        record(_delete_managed(setup, "Secret", namespace, co.CREDENTIALS_SECRET))
    else:
        for claim in claims:
            if setup.get("PersistentVolumeClaim", namespace, claim) is not None:
                record(ObjectResult("PersistentVolumeClaim", claim, namespace, "kept", "the data; --purge deletes it"))
        if setup.get("Secret", namespace, co.CREDENTIALS_SECRET) is not None:
            record(
                ObjectResult(
                    "Secret", co.CREDENTIALS_SECRET, namespace, "kept", "opens the kept volume; --purge deletes it"
                )
            )
    return results


def _delete_managed(setup: ClusterSetup, kind: str, ns: str, name: str) -> ObjectResult:
    live = setup.get(kind, ns, name)
    if live is None:
        return ObjectResult(kind, name, ns, "absent")
    if not _managed(live):
        return ObjectResult(kind, name, ns, "skipped", "not created by expkit: left alone")
    setup.delete(kind, ns, name)
    return ObjectResult(kind, name, ns, "deleted")


# ---------------------------------------------------------------------------------------------
# Check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One line of ``expkit cluster check``: ``ok`` True (✓), False (✗) or None (could not be checked)."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
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
    kubeconfig: str | os.PathLike | None = None,
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
        out.append(
            CheckResult(
                "api-server", False, str(err), "start the cluster, refresh the credentials or pick another --context"
            )
        )
        out += [CheckResult(n, None, "not checked: the API server is not reachable") for n in CHECK_NAMES[2:]]
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
        found = sorted(n for n in names if str(n).endswith(".argoproj.io"))
        return CheckResult("argo-crds", True, f"{len(found)} Argo CRDs ({', '.join(ARGO_CRDS)} ...)")

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
                "could not check: not allowed to read Deployments in namespace 'argo' or cluster-wide",
                "ask your administrator whether Argo's workflow-controller runs",
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
    ns = setup.namespace
    hint = f"run 'expkit cluster install -n {ns}', or configure another S3 endpoint (docs/cluster.md)"
    skipped = CheckResult("credentials-secret", None, "not checked: no artifact repository")
    try:
        cm = setup.get("ConfigMap", ns, co.ARTIFACT_CONFIGMAP)
    except ClusterAuthError as err:
        return None, CheckResult("artifact-repository", None, f"could not check: {err}"), skipped, None
    except ExpkitError as err:
        return None, CheckResult("artifact-repository", False, str(err)), skipped, None
    if cm is None:
        return (
            None,
            CheckResult(
                "artifact-repository", False, f"no ConfigMap {co.ARTIFACT_CONFIGMAP!r} in namespace {ns!r}", hint
            ),
            skipped,
            None,
        )
    key = ((cm.get("metadata") or {}).get("annotations") or {}).get(co.DEFAULT_REPO_ANNOTATION)
    if not key:
        return (
            None,
            CheckResult(
                "artifact-repository",
                False,
                f"ConfigMap {co.ARTIFACT_CONFIGMAP!r} has no {co.DEFAULT_REPO_ANNOTATION} annotation",
                f"annotate it with the key of the default repository ({hint})",
            ),
            skipped,
            None,
        )
    text = (cm.get("data") or {}).get(key)
    try:
        repo = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        repo = None
    s3 = (repo or {}).get("s3") if isinstance(repo, dict) else None
    if not isinstance(s3, dict) or not s3.get("bucket") or not s3.get("endpoint"):
        return (
            None,
            CheckResult(
                "artifact-repository",
                False,
                f"key {key!r} of ConfigMap {co.ARTIFACT_CONFIGMAP!r} "
                "is not an S3 repository with a bucket and an endpoint",
                hint,
            ),
            skipped,
            None,
        )
    scheme = "http" if s3.get("insecure") else "https"
    ok = CheckResult(
        "artifact-repository", True, f"default {key!r}: bucket {s3['bucket']!r} at {scheme}://{s3['endpoint']}"
    )
    refs = [s3.get("accessKeySecret") or {}, s3.get("secretKeySecret") or {}]
    names = {r.get("name") for r in refs if isinstance(r, dict)}
    if not all(isinstance(r, dict) and r.get("name") and r.get("key") for r in refs):
        return (
            s3,
            ok,
            CheckResult("credentials-secret", False, "the repository names no accessKeySecret/secretKeySecret", hint),
            None,
        )
    name = next(iter(names)) if len(names) == 1 else None
    try:
        secrets_ = {n: setup.get("Secret", ns, n) for n in names}
    except ClusterAuthError as err:
        return s3, ok, CheckResult("credentials-secret", None, f"could not check: {err}"), None
    missing = [n for n, s in secrets_.items() if s is None]
    if missing:
        return (
            s3,
            ok,
            CheckResult(
                "credentials-secret",
                False,
                f"Secret {missing[0]!r} named by the repository is missing in namespace {ns!r}",
                hint,
            ),
            None,
        )
    values = []
    for ref in refs:
        raw = ((secrets_[ref["name"]] or {}).get("data") or {}).get(ref["key"])
        try:
            values.append(base64.b64decode(raw or "", validate=True).decode() if raw else "")
        except (ValueError, UnicodeDecodeError):
            values.append("")
    if not all(values):
        return (
            s3,
            ok,
            CheckResult(
                "credentials-secret",
                False,
                f"Secret {name or sorted(names)} lacks the key(s) the repository names",
                hint,
            ),
            None,
        )
    creds = co.Credentials(values[0], values[1])
    setup.sensitive(creds.access_key, creds.secret_key)
    return s3, ok, CheckResult("credentials-secret", True, f"Secret {name or sorted(names)} has both keys"), creds


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
        if job is not None and _job_succeeded(job):
            return CheckResult(
                "bucket",
                True,
                f"{bucket!r} created in the cluster by job/{co.BUCKET_JOB} (to check it "
                "from here, port-forward MinIO and set EXPKIT_S3_ENDPOINT)",
            )
        if job is not None and _job_failed(job):
            return CheckResult(
                "bucket",
                False,
                f"job/{co.BUCKET_JOB} failed to create {bucket!r}",
                f"kubectl -n {ns} logs job/{co.BUCKET_JOB}; then 'expkit cluster install -n {ns}' retries it",
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
    "CHECK_NAMES",
    "CheckResult",
    "ClusterSetup",
    "InstallRejected",
    "InstallReport",
    "InstallTimeout",
    "ObjectResult",
    "check",
    "dry_run_yaml",
    "failed",
    "install",
    "run_checks",
    "self_subject_access_review",
    "uninstall",
    "wait_ready",
]

"""Every Kubernetes object ``expkit cluster install`` applies, built as plain dicts — pure, no ``kubernetes`` import.

One namespace holds one user's (or one team's) setup:

* **MinIO**, the S3 store Argo writes each run's outputs and logs to: a credentials ``Secret`` (random
  keys, generated once and kept), then either a ``PersistentVolumeClaim`` + single-replica ``Deployment``
  (``strategy: Recreate``, because the volume is ReadWriteOnce) or, with ``distributed=N`` (4..16), a
  ``StatefulSet`` of N pods with one volume each, erasure-coded across them, a headless ``Service`` for
  the peers and a ``PodDisruptionBudget`` keeping write quorum; a ``ClusterIP`` ``Service`` ``minio``
  either way; a one-shot ``Job`` that creates the bucket with MinIO's bundled ``mc``.
* **Argo's artifact repository**: the namespace's ``artifact-repositories`` ConfigMap (default key
  ``default-v1``) pointing at ``minio.<ns>.svc:9000`` with the Secret's keys — the rendered workflows
  reference it and carry no endpoint or credentials.
* **RBAC**: the ``expkit-workflow`` ServiceAccount for workflow pods with a Role granting only what
  Argo's emissary executor needs (``workflowtaskresults``: create, patch), and a ``expkit-submitter``
  Role an administrator binds to each person who submits to the namespace.
* optionally a ``kubernetes.io/dockerconfigjson`` pull Secret for a private registry.

The same builders produce the static manifests in ``manifests/minio/`` (tests keep them equal).
:func:`to_yaml` writes YAML that Go's YAML 1.1 parser reads back the same: strings such as ``y``,
``no`` or ``off`` are always quoted.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from expkit.core.errors import InputError
from expkit.executors.argo.names import CONTROLLER_LOCATIONS

# ---------------------------------------------------------------------------------------------
# Names and pinned versions
# ---------------------------------------------------------------------------------------------

#: MinIO community edition, RELEASE.2025-09-07T16-13-09Z, pinned by its multi-arch index digest.
#: MinIO stopped publishing official community images in late 2025; this digest is the last release's
#: as recorded in public material (several independent repositories pin the same digest for this tag
#: on quay.io and Docker Hub). If the registry no longer serves it, mirror the image into your own
#: registry and pass ``--minio-image REGISTRY/minio@sha256:...`` (docs/cluster.md). The image bundles
#: ``mc`` (MinIO's client), used by the bucket Job.
MINIO_IMAGE = (
    "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    "@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e"
)

DEFAULT_NAMESPACE = "expkit"
DEFAULT_BUCKET = "expkit"
DEFAULT_STORAGE = "20Gi"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

MINIO = "minio"  # Deployment / StatefulSet / Service / PDB name
MINIO_HEADLESS = "minio-hl"  # headless Service of the distributed StatefulSet
MINIO_PVC = "minio-data"  # the standalone volume
MINIO_VOLUME = "data"  # the StatefulSet's volumeClaimTemplate (PVCs data-minio-<i>)
MINIO_PORT = 9000
CREDENTIALS_SECRET = "expkit-s3-credentials"
ACCESS_KEY = "accesskey"
SECRET_KEY = "secretkey"
ARTIFACT_CONFIGMAP = "artifact-repositories"
ARTIFACT_KEY = "default-v1"
DEFAULT_REPO_ANNOTATION = "workflows.argoproj.io/default-artifact-repository"
WORKFLOW_SA = "expkit-workflow"
SUBMITTER_ROLE = "expkit-submitter"
PULL_SECRET = "expkit-registry"
BUCKET_JOB = "expkit-create-bucket"
MIN_DISTRIBUTED, MAX_DISTRIBUTED = 4, 16

PART_OF = {"app.kubernetes.io/part-of": "expkit", "app.kubernetes.io/managed-by": "expkit"}
SELECTOR = {"app.kubernetes.io/name": "minio", "app.kubernetes.io/part-of": "expkit"}
RUN_AS = 1000  # MinIO runs as this non-root user and group; fsGroup makes the volume writable for it

#: Where each kind lives in the API: (path prefix, plural, namespaced).
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),  # read only
    "StorageClass": ("/apis/storage.k8s.io/v1", "storageclasses", False),  # read only
}
API_VERSIONS = {
    "Namespace": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "ServiceAccount": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._/-]*)?$")


# ---------------------------------------------------------------------------------------------
# Options and credentials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallOptions:
    """What to install. ``distributed`` is 0 for a single MinIO pod, else the number of pods (4..16)."""

    namespace: str = DEFAULT_NAMESPACE
    bucket: str = DEFAULT_BUCKET
    storage_size: str = DEFAULT_STORAGE
    storage_class: str | None = None
    distributed: int = 0
    minio_image: str = MINIO_IMAGE
    registry_server: str | None = None
    registry_username: str | None = None
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    def validate(self) -> InstallOptions:
        """Raise :class:`InputError` naming the flag when a value cannot work; return self."""
        if not _DNS_LABEL.match(self.namespace) or len(self.namespace) > 63:
            raise InputError(
                f"--namespace {self.namespace!r}: a namespace is a DNS label (lowercase letters, digits "
                "and '-', at most 63 characters)"
            )
        if not _BUCKET.match(self.bucket) or ".." in self.bucket or _is_ip(self.bucket):
            raise InputError(
                f"--bucket {self.bucket!r}: an S3 bucket name is 3-63 lowercase letters, digits, '.' or "
                "'-', starting and ending with a letter or digit"
            )
        if not _QUANTITY.match(self.storage_size) or _quantity_is_zero(self.storage_size):
            raise InputError(f"--storage-size {self.storage_size!r}: give a Kubernetes quantity such as 20Gi or 1Ti")
        if self.storage_class is not None and not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", self.storage_class):
            raise InputError(f"--storage-class {self.storage_class!r} is not a valid StorageClass name")
        if self.distributed and not MIN_DISTRIBUTED <= self.distributed <= MAX_DISTRIBUTED:
            raise InputError(
                f"--distributed {self.distributed}: distributed MinIO needs {MIN_DISTRIBUTED} to "
                f"{MAX_DISTRIBUTED} pods (one erasure set); leave it out for a single pod"
            )
        if not _DIGEST.search(self.minio_image):
            raise InputError(
                f"--minio-image {self.minio_image!r} is not pinned by digest: write "
                "REGISTRY/minio@sha256:<64 hex digits>"
            )
        if (self.registry_server is None) != (self.registry_username is None):
            raise InputError(
                "--registry-server and --registry-username go together: give both (and the password on "
                "stdin with --registry-password-stdin, or in EXPKIT_REGISTRY_PASSWORD)"
            )
        if self.registry_server is not None and not _HOST.match(self.registry_server):
            raise InputError(
                f"--registry-server {self.registry_server!r}: give the registry host, e.g. "
                "ghcr.io or registry.example.org:5000"
            )
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", self.cluster_domain):
            raise InputError(f"--cluster-domain {self.cluster_domain!r} is not a DNS domain")
        return self

    @property
    def endpoint(self) -> str:
        """MinIO's in-cluster S3 endpoint (``host:port``, plain http)."""
        return f"{MINIO}.{self.namespace}.svc:{MINIO_PORT}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _quantity_is_zero(text: str) -> bool:
    digits = re.match(r"^[0-9.]+", text)
    return digits is not None and float(digits.group(0)) == 0


@dataclass(frozen=True)
class Credentials:
    """An S3 access key pair. Never in ``repr``, never logged, never printed."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"


def generate_credentials() -> Credentials:
    """Fresh random MinIO root credentials (URL-safe: they also go into the bucket Job's ``MC_HOST`` URL)."""
    return Credentials(access_key="expkit-" + secrets.token_urlsafe(15), secret_key=secrets.token_urlsafe(36))


def credentials_from_secret(obj: Mapping[str, Any]) -> Credentials | None:
    """The key pair of a live credentials Secret (``data`` is base64), or None when a key is missing."""
    data = obj.get("data") or {}
    try:
        access = base64.b64decode(data.get(ACCESS_KEY) or "", validate=True).decode()
        secret = base64.b64decode(data.get(SECRET_KEY) or "", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return Credentials(access, secret) if access and secret else None


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": name if component != "minio" else "minio",
        "app.kubernetes.io/component": component,
        **PART_OF,
    }
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels
    meta.update(extra)
    return meta


def _obj(kind: str, metadata: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": metadata, **body}


def namespace_object(opts: InstallOptions) -> dict[str, Any]:
    """The namespace, labelled as expkit's."""
    return _obj("Namespace", {"name": opts.namespace, "labels": dict(PART_OF)})


def credentials_secret(opts: InstallOptions, creds: Credentials) -> dict[str, Any]:
    """MinIO's root credentials, which are also the keys Argo uploads with (``data`` base64, never stringData,
    so the live object compares equal)."""
    return _obj(
        "Secret",
        _meta(CREDENTIALS_SECRET, opts.namespace, "credentials"),
        type="Opaque",
        data={ACCESS_KEY: _b64(creds.access_key), SECRET_KEY: _b64(creds.secret_key)},
    )


def pull_secret(opts: InstallOptions, password: str) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret for ``opts.registry_server`` (deterministic bytes)."""
    if not opts.registry_server or not opts.registry_username:
        raise InputError("a pull secret needs --registry-server and --registry-username")
    auth = _b64(f"{opts.registry_username}:{password}")
    doc = {"auths": {opts.registry_server: {"username": opts.registry_username, "password": password, "auth": auth}}}
    return _obj(
        "Secret",
        _meta(PULL_SECRET, opts.namespace, "registry"),
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": _b64(json.dumps(doc, sort_keys=True, separators=(",", ":")))},
    )


def pvc(opts: InstallOptions) -> dict[str, Any]:
    """The standalone MinIO's volume."""
    return _obj("PersistentVolumeClaim", _meta(MINIO_PVC, opts.namespace, "minio"), spec=_pvc_spec(opts))


def _pvc_spec(opts: InstallOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": opts.storage_size}}}
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return spec


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}}


def _minio_container(opts: InstallOptions, args: list[str]) -> dict[str, Any]:
    return {
        "name": "minio",
        "image": opts.minio_image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entrypoint runs ``minio`` with these arguments. The root filesystem is read-only:
        # MinIO writes only to /data and to its certs directory, which lives on the /tmp emptyDir.
        "args": args,
        "env": [
            _secret_env("MINIO_ROOT_USER", ACCESS_KEY),
            _secret_env("MINIO_ROOT_PASSWORD", SECRET_KEY),
            {"name": "HOME", "value": "/tmp"},
            {"name": "MINIO_BROWSER", "value": "off"},
            {"name": "MINIO_UPDATE", "value": "off"},
        ],
        "ports": [{"name": "s3", "containerPort": MINIO_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/minio/health/ready", "port": "s3"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "livenessProbe": {
            "httpGet": {"path": "/minio/health/live", "port": "s3"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": MINIO_VOLUME, "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def _server_args(target: str) -> list[str]:
    return ["server", target, "--address", f":{MINIO_PORT}", "--certs-dir", "/tmp/.minio/certs"]


def _pod_spec(opts: InstallOptions, args: list[str], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [_minio_container(opts, args)],
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }


def deployment(opts: InstallOptions) -> dict[str, Any]:
    """Standalone MinIO: one pod on one ReadWriteOnce volume (``Recreate``: the old pod releases it first)."""
    spec = _pod_spec(
        opts, _server_args("/data"), [{"name": MINIO_VOLUME, "persistentVolumeClaim": {"claimName": MINIO_PVC}}]
    )
    return _obj(
        "Deployment",
        _meta(MINIO, opts.namespace, "minio"),
        spec={
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {"metadata": {"labels": dict(SELECTOR)}, "spec": spec},
        },
    )


def distributed_target(opts: InstallOptions) -> str:
    """MinIO's expansion syntax for the N peers' drives."""
    host = f"{MINIO}-{{0...{opts.distributed - 1}}}.{MINIO_HEADLESS}.{opts.namespace}.svc.{opts.cluster_domain}"
    return f"http://{host}/data"


def statefulset(opts: InstallOptions) -> dict[str, Any]:
    """Distributed MinIO: N pods, one volume each, one erasure set; pods on distinct nodes."""
    spec = _pod_spec(opts, _server_args(distributed_target(opts)), [])
    spec["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": dict(SELECTOR)}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    claim_meta = {
        "name": MINIO_VOLUME,
        "labels": {"app.kubernetes.io/name": "minio", "app.kubernetes.io/component": "minio", **PART_OF},
    }
    return _obj(
        "StatefulSet",
        _meta(MINIO, opts.namespace, "minio"),
        spec={
            "serviceName": MINIO_HEADLESS,
            "replicas": opts.distributed,
            "podManagementPolicy": "Parallel",  # the peers must start together to form the erasure set
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {"metadata": {"labels": dict(SELECTOR)}, "spec": spec},
            "volumeClaimTemplates": [{"metadata": claim_meta, "spec": _pvc_spec(opts)}],
        },
    )


def parity(drives: int) -> int:
    """MinIO's default parity (EC:M) for an erasure set of ``drives`` drives."""
    if drives <= 1:
        return 0
    if drives <= 3:
        return 1
    if drives <= 5:
        return 2
    if drives <= 7:
        return 3
    return 4


def write_quorum(drives: int) -> int:
    """Drives that must be up to write: data drives, plus one when parity is exactly half."""
    p = parity(drives)
    data = drives - p
    return data + 1 if data == p else data


def pdb(opts: InstallOptions) -> dict[str, Any]:
    """Voluntary disruptions (drains, upgrades) never take more pods than write quorum allows."""
    return _obj(
        "PodDisruptionBudget",
        _meta(MINIO, opts.namespace, "minio"),
        spec={
            "maxUnavailable": opts.distributed - write_quorum(opts.distributed),
            "selector": {"matchLabels": dict(SELECTOR)},
        },
    )


def service(opts: InstallOptions) -> dict[str, Any]:
    """MinIO's ClusterIP Service (the in-cluster S3 endpoint)."""
    return _obj(
        "Service",
        _meta(MINIO, opts.namespace, "minio"),
        spec={
            "type": "ClusterIP",
            "selector": dict(SELECTOR),
            "ports": [{"name": "s3", "port": MINIO_PORT, "targetPort": "s3", "protocol": "TCP"}],
        },
    )


def headless_service(opts: InstallOptions) -> dict[str, Any]:
    """The headless Service of the distributed StatefulSet's peers."""
    return _obj(
        "Service",
        _meta(MINIO_HEADLESS, opts.namespace, "minio"),
        spec={
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # peers find each other before they are ready
            "selector": dict(SELECTOR),
            "ports": [{"name": "s3", "port": MINIO_PORT, "targetPort": "s3", "protocol": "TCP"}],
        },
    )


def artifact_repository_text(opts: InstallOptions) -> str:
    """The ``default-v1`` entry: Argo's ``ArtifactRepository`` as YAML text (the ConfigMap holds strings)."""
    repo = {
        "s3": {
            "bucket": opts.bucket,
            "endpoint": opts.endpoint,
            "insecure": True,
            "accessKeySecret": {"name": CREDENTIALS_SECRET, "key": ACCESS_KEY},
            "secretKeySecret": {"name": CREDENTIALS_SECRET, "key": SECRET_KEY},
        }
    }
    return to_yaml([repo])


def artifact_repositories(opts: InstallOptions) -> dict[str, Any]:
    """The namespace's ``artifact-repositories`` ConfigMap, its default pointing at MinIO."""
    meta = _meta(ARTIFACT_CONFIGMAP, opts.namespace, "argo-config", annotations={DEFAULT_REPO_ANNOTATION: ARTIFACT_KEY})
    return _obj("ConfigMap", meta, data={ARTIFACT_KEY: artifact_repository_text(opts)})


def service_account(opts: InstallOptions, *, pull_secrets: Sequence[str] = ()) -> dict[str, Any]:
    """The workflow pods' account (``spec.kubernetes.serviceAccountName: expkit-workflow``)."""
    obj = _obj("ServiceAccount", _meta(WORKFLOW_SA, opts.namespace, "workflow"))
    if pull_secrets:
        obj["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return obj


def workflow_role(opts: InstallOptions) -> dict[str, Any]:
    """All Argo's emissary executor needs (Argo >= 3.4): report each step's outputs as a WorkflowTaskResult."""
    return _obj(
        "Role",
        _meta(WORKFLOW_SA, opts.namespace, "workflow"),
        rules=[{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}],
    )


def workflow_role_binding(opts: InstallOptions) -> dict[str, Any]:
    """Binds the workflow Role to the workflow ServiceAccount."""
    return _obj(
        "RoleBinding",
        _meta(WORKFLOW_SA, opts.namespace, "workflow"),
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKFLOW_SA},
        subjects=[{"kind": "ServiceAccount", "name": WORKFLOW_SA, "namespace": opts.namespace}],
    )


def submitter_role(opts: InstallOptions) -> dict[str, Any]:
    """What a person needs for submit/status/logs/stop/retry and ``expkit cluster check`` in this namespace,
    and no more: write verbs only on workflows, and ``get`` by name on exactly the objects check reads (MinIO,
    the bucket Job, the artifact repository, its Secret, the pull Secret, the workflow RoleBinding, the
    controller's Deployment when Argo runs in this namespace); service accounts by any name, because a spec
    may name its own. Not bound to anyone: ``kubectl create rolebinding ... --role expkit-submitter --user NAME``."""
    controllers = sorted({name for _, name in CONTROLLER_LOCATIONS})
    return _obj(
        "Role",
        _meta(SUBMITTER_ROLE, opts.namespace, "submitter"),
        rules=[
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["workflows"],
                "verbs": ["create", "get", "list", "watch", "patch", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ARTIFACT_CONFIGMAP], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [CREDENTIALS_SECRET, PULL_SECRET],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "resourceNames": [MINIO, *controllers],
                "verbs": ["get"],
            },
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": [MINIO], "verbs": ["get"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [BUCKET_JOB], "verbs": ["get"]},
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["rolebindings"],
                "resourceNames": [WORKFLOW_SA],
                "verbs": ["get"],
            },
        ],
    )


def bucket_job(opts: InstallOptions) -> dict[str, Any]:
    """Create the bucket from inside the cluster with the MinIO image's bundled ``mc`` (idempotent:
    ``--ignore-existing``). The credentials reach ``mc`` through ``MC_HOST_expkit``, built by the kubelet
    from the Secret-backed variables (``$(VAR)`` expansion): no key appears in the Job object. ``mc`` fails
    while MinIO is still starting; the Job retries (OnFailure, back-off) until it is up."""
    env = [
        _secret_env("S3_ACCESS_KEY", ACCESS_KEY),
        _secret_env("S3_SECRET_KEY", SECRET_KEY),
        {"name": "MC_HOST_expkit", "value": f"http://$(S3_ACCESS_KEY):$(S3_SECRET_KEY)@{opts.endpoint}"},
        {"name": "HOME", "value": "/tmp"},
    ]
    container = {
        "name": "mc",
        "image": opts.minio_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["mc", "--config-dir", "/tmp/.mc", "mb", "--ignore-existing", f"expkit/{opts.bucket}"],
        "env": env,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return _obj(
        "Job",
        _meta(BUCKET_JOB, opts.namespace, "bucket"),
        spec={
            "backoffLimit": 12,
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": BUCKET_JOB, **PART_OF}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
                },
            },
        },
    )


def desired_objects(
    opts: InstallOptions, creds: Credentials, *, registry_password: str | None = None, pull_secrets: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Everything install applies, in apply order. ``registry_password`` adds the pull Secret (with
    ``opts.registry_server``/``registry_username``); ``pull_secrets`` names Secrets the workflow
    ServiceAccount uses to pull (the new pull Secret is added to them)."""
    opts.validate()
    pulls = list(pull_secrets)
    objs = [namespace_object(opts), credentials_secret(opts, creds)]
    if registry_password is not None:
        objs.append(pull_secret(opts, registry_password))
        if PULL_SECRET not in pulls:
            pulls.append(PULL_SECRET)
    if opts.distributed:
        objs += [headless_service(opts), statefulset(opts), pdb(opts)]
    else:
        objs += [pvc(opts), deployment(opts)]
    objs += [
        service(opts),
        artifact_repositories(opts),
        service_account(opts, pull_secrets=pulls),
        workflow_role(opts),
        workflow_role_binding(opts),
        submitter_role(opts),
        bucket_job(opts),
    ]
    return objs


def install_policy(obj: Mapping[str, Any]) -> str:
    """``create`` for the namespace, ``keep`` for the credentials, ``replace`` for the Job, else ``apply``."""
    kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
    if kind == "Namespace":
        return "create"
    if kind == "Secret" and name == CREDENTIALS_SECRET:
        return "keep"
    if kind == "Job":
        return "replace"
    return "apply"


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    """The API path of a kind's collection, or of one object when ``name`` is given."""
    prefix, plural, namespaced = KINDS[kind]
    base = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{base}/{name}" if name else base


def describe(obj: Mapping[str, Any]) -> str:
    """``kind/name`` as kubectl prints it (``deployment.apps/minio``)."""
    kind = str(obj.get("kind"))
    group = API_VERSIONS.get(kind, "v1").rpartition("/")[0]
    return f"{kind.lower()}{'.' + group if group else ''}/{(obj.get('metadata') or {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# Comparing desired with live objects
# ---------------------------------------------------------------------------------------------


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` does not carry what ``desired`` says (``desired`` must be a subset of ``live``:
    fields the API server adds — defaults, status, uid — are ignored; lists must match item by item)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        out: list[str] = []
        for key, value in desired.items():
            out += differences(value, live.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        out = []
        for i, (d, lv) in enumerate(zip(desired, live, strict=True)):
            out += differences(d, lv, f"{path}[{i}]")
        return out
    if desired != live:
        return [path]
    return []


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a desired object install compares and patches (metadata reduced to labels/annotations)."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    meta = obj.get("metadata") or {}
    out["metadata"] = {k: copy.deepcopy(meta[k]) for k in ("labels", "annotations") if k in meta}
    return out


def redact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every Secret value replaced by ``<redacted>`` (not base64: it cannot be applied by mistake)."""
    out = copy.deepcopy(dict(obj))
    if out.get("kind") == "Secret":
        for section in ("data", "stringData"):
            if isinstance(out.get(section), dict):
                out[section] = {k: "<redacted>" for k in out[section]}
    return out


# ---------------------------------------------------------------------------------------------
# YAML that Go reads back the same
# ---------------------------------------------------------------------------------------------

#: Plain scalars Go's YAML 1.1 parser (go-yaml v2, behind sigs.k8s.io/yaml and kubectl) reads as booleans.
GO_YAML_BOOLS = frozenset("y Y yes Yes YES n N no No NO true True TRUE false False FALSE on On ON off Off OFF".split())


class _GoSafeDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string Go would read as a boolean and never writes anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        """Never write YAML anchors and aliases."""
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if value in GO_YAML_BOOLS:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_GoSafeDumper.add_representer(str, _represent_str)


def to_yaml(docs: Iterable[Any]) -> str:
    """Multi-document YAML (``---`` between documents), keys in builder order, Go-safe quoting."""
    return yaml.dump_all(
        list(docs), Dumper=_GoSafeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120
    )


__all__ = [
    "ACCESS_KEY",
    "ARTIFACT_CONFIGMAP",
    "ARTIFACT_KEY",
    "BUCKET_JOB",
    "CREDENTIALS_SECRET",
    "Credentials",
    "DEFAULT_BUCKET",
    "DEFAULT_NAMESPACE",
    "DEFAULT_REPO_ANNOTATION",
    "DEFAULT_STORAGE",
    "GO_YAML_BOOLS",
    "InstallOptions",
    "KINDS",
    "MINIO",
    "MINIO_HEADLESS",
    "MINIO_IMAGE",
    "MINIO_PVC",
    "PULL_SECRET",
    "SECRET_KEY",
    "SUBMITTER_ROLE",
    "WORKFLOW_SA",
    "artifact_repositories",
    "artifact_repository_text",
    "bucket_job",
    "comparable",
    "credentials_from_secret",
    "credentials_secret",
    "deployment",
    "describe",
    "desired_objects",
    "differences",
    "distributed_target",
    "generate_credentials",
    "headless_service",
    "install_policy",
    "namespace_object",
    "object_path",
    "parity",
    "pdb",
    "pull_secret",
    "pvc",
    "redact",
    "service",
    "service_account",
    "statefulset",
    "submitter_role",
    "to_yaml",
    "workflow_role",
    "workflow_role_binding",
    "write_quorum",
]

"""``expkit cluster install``: apply the setup of a namespace — MinIO, Argo's artifact repository, RBAC.

The objects are built by :mod:`expkit.cluster.objects` (pure); this module applies them through a
:class:`~expkit.cluster.api.ClusterSetup`.

**Install is idempotent.** For each desired object it reads the live one and:

* creates it when it is missing;
* leaves it alone when the live object already carries every field expkit sets (fields the API server
  adds — defaults, status — do not count), and reports it ``unchanged``: a second install makes no
  write request at all;
* otherwise sends a JSON merge patch of expkit's fields and reports ``updated`` (with the fields);
* never changes the credentials Secret once it exists (the keys MinIO's data was written with), never
  changes the namespace, replaces the bucket Job when its spec changed or it failed, and never touches an
  object that exists without expkit's ``app.kubernetes.io/managed-by: expkit`` label (``skipped``).

**Before writing anything**, install reads the live volumes: a claim still being deleted (right after
``uninstall --purge``: its ``deletionTimestamp`` is set while MinIO's pod lets go of it) is waited for,
up to ``deletion_timeout``, then refused with the fix; a ``--storage-size`` other than the standalone
claim's is decided here — a smaller one is refused, a larger one only where the claim is bound and its
StorageClass has ``allowVolumeExpansion: true`` (else refused, saying how), and without
``storage_size_given`` the live size is kept. Switching between standalone and distributed MinIO, or
changing the number of distributed pods, is refused (it is a new store: see docs/cluster.md).

**The bucket** is created inside the cluster by a one-shot Job running the MinIO image's bundled ``mc``
(``mc mb --ignore-existing``) with the credentials from the Secret: no port-forward, no network path from
this machine to MinIO needed. Install waits for MinIO and the Job (``wait``/``timeout``).

No credential ever appears in a return value, a log record or an error message: values read from Secrets
stay in memory, and API error messages are scrubbed of them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expkit.cluster import objects as co
from expkit.cluster.api import (
    ClusterSetup,
    InstallRejected,
    InstallTimeout,
    ObjectResult,
    StorageSizeRefused,
    is_managed,
    job_failed,
    job_succeeded,
)
from expkit.core.errors import InputError
from expkit.core.quantity import quantity_bytes
from expkit.executors.argo.errors import ClusterAuthError, ClusterError

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
DEFAULT_TIMEOUT = 300.0
#: How long install waits for a volume claim that is still being deleted (``uninstall --purge`` just ran).
DELETION_TIMEOUT = 120.0
#: Fields of a StatefulSet the API server refuses to change.
_FROZEN_STATEFULSET = ("volumeClaimTemplates", "serviceName", "podManagementPolicy", "selector")


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
        """Whether install created, changed or replaced anything."""
        return any(r.action in ("created", "updated", "replaced", "deleted") for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
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
    if opts.distributed and dep is not None and is_managed(dep):
        raise InstallRejected(
            f"MinIO in namespace {ns!r} runs as a single pod; switching to --distributed "
            f"{opts.distributed} would start an empty store: {how}"
        )
    if not opts.distributed and sts is not None and is_managed(sts):
        raise InstallRejected(
            f"MinIO in namespace {ns!r} runs distributed ({(sts.get('spec') or {}).get('replicas')} "
            f"pods); leave out --distributed or pass --distributed "
            f"{(sts.get('spec') or {}).get('replicas')} to keep it: a single pod would start an "
            f"empty store ({how})"
        )
    if opts.distributed and sts is not None and is_managed(sts):
        live = int((sts.get("spec") or {}).get("replicas") or 0)
        if live != opts.distributed:
            raise InstallRejected(
                f"MinIO in namespace {ns!r} runs {live} pods; an erasure set cannot be resized to "
                f"{opts.distributed}: pass --distributed {live}, or {how}"
            )


def _check_registry_password(opts: co.InstallOptions, registry_password: str | None) -> None:
    if registry_password is not None and not opts.registry_server:
        raise InputError("a registry password was given without --registry-server and --registry-username")
    if opts.registry_server and registry_password is None:
        raise InputError(
            "--registry-server needs the password: pipe it to --registry-password-stdin or set "
            "EXPKIT_REGISTRY_PASSWORD (never on the command line)"
        )


def _credentials(live_secret: Mapping[str, Any] | None, ns: str) -> co.Credentials | None:
    """The keys of the live credentials Secret (None: there is none, generate them); refused when the Secret
    was not created by expkit or lacks a key."""
    if live_secret is None:
        return None
    if not is_managed(live_secret):
        raise InstallRejected(
            f"Secret {co.CREDENTIALS_SECRET!r} in namespace {ns!r} was not created by expkit (the "
            "keys of another S3 endpoint?): MinIO would take them as its root credentials. Use "
            "another namespace, or delete the Secret if it is not needed"
        )
    creds = co.credentials_from_secret(live_secret)
    if creds is None:
        raise InstallRejected(
            f"Secret {co.CREDENTIALS_SECRET!r} in namespace {ns!r} exists but lacks "
            f"{co.ACCESS_KEY!r}/{co.SECRET_KEY!r}: fix it, or delete it to generate new keys "
            "(MinIO's existing data needs the old ones)"
        )
    return creds


def _pull_secrets(live_sa: Mapping[str, Any] | None) -> list[str]:
    """The pull Secrets the live workflow ServiceAccount already names (install keeps them)."""
    pulls: list[str] = []
    for ref in (live_sa or {}).get("imagePullSecrets") or []:
        if isinstance(ref, dict) and ref.get("name") and ref["name"] not in pulls:
            pulls.append(str(ref["name"]))
    return pulls


def install(
    setup: ClusterSetup,
    opts: co.InstallOptions,
    *,
    registry_password: str | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_result: Callable[[ObjectResult], None] | None = None,
    storage_size_given: bool = True,
    deletion_timeout: float = DELETION_TIMEOUT,
) -> InstallReport:
    """Apply the setup of ``opts.namespace`` (see the module docstring): first decide about the live volumes
    (wait for a claim being deleted, refuse a size the claim cannot take — nothing written yet), then create
    what is missing, patch what differs, keep the credentials; then (with ``wait``) wait for MinIO and the
    bucket Job. ``storage_size_given`` False: keep the live claim's size instead of ``opts.storage_size``."""
    opts.validate()
    _check_registry_password(opts, registry_password)
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
    live_secret = live_sa = None
    if setup.get("Namespace", None, ns) is not None:
        live_secret = setup.get("Secret", ns, co.CREDENTIALS_SECRET)
        live_sa = setup.get("ServiceAccount", ns, co.WORKFLOW_SA)
        _refuse_mode_change(opts, *_existing_mode(setup, ns))
        opts = _check_volumes(setup, opts, storage_size_given, deletion_timeout)
    creds = _credentials(live_secret, ns)
    if creds is None:
        creds = co.generate_credentials()
        report.credentials = "generated"
    setup.sensitive(creds.access_key, creds.secret_key)
    desired = co.desired_objects(opts, creds, registry_password=registry_password, pull_secrets=_pull_secrets(live_sa))
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


def _claim_names(opts: co.InstallOptions) -> list[str]:
    """The volume claims install's MinIO uses: the standalone claim, or one per distributed pod."""
    if opts.distributed:
        return [f"{co.MINIO_VOLUME}-{co.MINIO}-{i}" for i in range(opts.distributed)]
    return [co.MINIO_PVC]


def _check_volumes(
    setup: ClusterSetup, opts: co.InstallOptions, size_given: bool, deletion_timeout: float
) -> co.InstallOptions:
    """Decide about the live claims before anything is written: wait for those being deleted, and check (or,
    without ``size_given``, adopt) the standalone claim's size. Returns the options to apply."""
    ns = opts.namespace
    if opts.distributed and not size_given:  # keep the live claim template's size (it is immutable anyway)
        sts = setup.get("StatefulSet", ns, co.MINIO) or {}
        templates = (sts.get("spec") or {}).get("volumeClaimTemplates") or [{}]
        size = (((templates[0].get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        if size and is_managed(sts):
            opts = dataclasses.replace(opts, storage_size=str(size))
    for name in _claim_names(opts):
        live = setup.get("PersistentVolumeClaim", ns, name)
        if live is not None and (live.get("metadata") or {}).get("deletionTimestamp"):
            log.warning("persistentvolumeclaim %r in namespace %r is being deleted: waiting for it to go", name, ns)
            _wait_gone(setup, "PersistentVolumeClaim", ns, name, deletion_timeout)
            live = None
        if live is None or opts.distributed or not is_managed(live):
            continue
        live_size = str(((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage") or "")
        if not live_size or _bytes(live_size) == _bytes(opts.storage_size):
            continue
        if not size_given:
            opts = dataclasses.replace(opts, storage_size=live_size)
            continue
        _check_resize(setup, opts, live, live_size)
    return opts


def _check_resize(setup: ClusterSetup, opts: co.InstallOptions, live: Mapping[str, Any], live_size: str) -> None:
    """Refuse (:class:`StorageSizeRefused`) a ``--storage-size`` the live claim cannot take, saying what to do."""
    ns, want = opts.namespace, opts.storage_size
    claim = f"persistentvolumeclaim {co.MINIO_PVC!r} in namespace {ns!r}"
    anew = (
        f"or export your runs (expkit export), 'expkit cluster uninstall -n {ns} --purge' and install again with "
        f"--storage-size {want}"
    )
    if _bytes(want) < _bytes(live_size):
        raise StorageSizeRefused(
            f"{claim} is {live_size}: a volume cannot shrink to {want}; pass --storage-size {live_size} (or leave "
            f"it out), {anew}"
        )
    phase = str((live.get("status") or {}).get("phase") or "Pending")
    if phase != "Bound":
        raise StorageSizeRefused(
            f"{claim} is not bound to a volume yet (phase {phase}): its size cannot change until it is "
            f"(kubectl -n {ns} describe pvc {co.MINIO_PVC}); leave out --storage-size, {anew}"
        )
    name = str((live.get("spec") or {}).get("storageClassName") or "")
    try:
        sc = setup.get("StorageClass", None, name) if name else None
    except ClusterAuthError as err:
        raise StorageSizeRefused(
            f"{claim} is {live_size}; growing it to {want} needs its StorageClass {name!r} to allow volume "
            f"expansion, which cannot be read here ({err}); ask an administrator, {anew}"
        ) from err
    if sc is None or not sc.get("allowVolumeExpansion"):
        what = f"StorageClass {name!r} does not allow" if name else "the claim has no StorageClass that allows"
        raise StorageSizeRefused(
            f"{claim} is {live_size}; growing it to {want} needs volume expansion, and {what} it "
            f"(allowVolumeExpansion): where its provisioner can resize volumes, an administrator can turn it on "
            f"(kubectl patch storageclass {name or 'NAME'} -p '{{\"allowVolumeExpansion\": true}}'), {anew}"
        )


def _replace(setup: ClusterSetup, obj: Mapping[str, Any], detail: str) -> ObjectResult:
    kind, meta = str(obj["kind"]), obj.get("metadata") or {}
    name, ns = str(meta["name"]), meta.get("namespace")
    setup.delete(kind, ns, name)
    _wait_gone(setup, kind, ns, name)
    setup.create(obj)
    return ObjectResult(kind, name, ns, "replaced", detail)


def _apply(setup: ClusterSetup, obj: Mapping[str, Any]) -> ObjectResult:
    kind = str(obj["kind"])
    meta = obj.get("metadata") or {}
    name, ns = str(meta["name"]), meta.get("namespace")
    live = setup.get(kind, ns, name)
    if live is not None and (live.get("metadata") or {}).get("deletionTimestamp"):  # going: never "unchanged"
        _wait_gone(setup, kind, ns, name)
        setup.create(obj)
        return ObjectResult(kind, name, ns, "created", "the previous one was being deleted")
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
    if not is_managed(live):
        return ObjectResult(kind, name, ns, "skipped", "exists but was not created by expkit: left alone")
    want = co.comparable(obj)
    diffs = co.differences(want, live)
    if not diffs:
        if policy == "replace" and job_failed(live):
            return _replace(setup, obj, "the previous run failed")
        return ObjectResult(kind, name, ns, "unchanged")
    if policy == "replace":
        return _replace(setup, obj, "changed: " + ", ".join(diffs[:6]))
    if kind == "PersistentVolumeClaim":
        return _apply_pvc(setup, obj, live, diffs)
    if kind == "StatefulSet":
        frozen = [d for d in diffs if d.split(".")[:2][-1].split("[")[0] in _FROZEN_STATEFULSET]
        if frozen:
            return _apply_statefulset(setup, obj, live, want, frozen)
    setup.patch(kind, ns, name, want)
    return ObjectResult(kind, name, ns, "updated", "changed: " + ", ".join(diffs[:6]))


def _apply_statefulset(
    setup: ClusterSetup, obj: Mapping[str, Any], live: Mapping[str, Any], want: dict[str, Any], frozen: list[str]
) -> ObjectResult:
    """Patch what may change of a live StatefulSet, keeping the fields the API server refuses to change."""
    meta = obj.get("metadata") or {}
    name, ns = str(meta["name"]), meta.get("namespace")
    note = "cannot change " + ", ".join(frozen[:4]) + " of a running StatefulSet (immutable); kept the live values"
    want["spec"] = {k: v for k, v in want["spec"].items() if k not in _FROZEN_STATEFULSET}
    rest = co.differences(want, live)
    if not rest:
        return ObjectResult("StatefulSet", name, ns, "kept", note)
    setup.patch("StatefulSet", ns, name, want)
    return ObjectResult("StatefulSet", name, ns, "updated", "changed: " + ", ".join(rest[:6]) + "; " + note)


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


def _bytes(quantity: Any) -> float:
    text = str(quantity or "0")
    try:
        return quantity_bytes(text)
    except ValueError:
        pass
    try:
        return float(text)  # e.g. an exponent form the server may echo back
    except ValueError:
        return 0.0


def _wait_gone(setup: ClusterSetup, kind: str, ns: str | None, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while setup.get(kind, ns, name) is not None:
        if time.monotonic() > deadline:
            raise InstallTimeout(
                f"{kind.lower()} {name!r} in namespace {ns!r} is still being deleted after {timeout:g}s "
                f"(a pod may still use it; see kubectl -n {ns} get {_SHORT.get(kind, kind.lower())} {name} and "
                f"kubectl -n {ns} get pods): wait until it is gone, then install again"
            )
        time.sleep(0.5)


_SHORT = {"PersistentVolumeClaim": "pvc"}


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
        if job is not None and job_failed(job):
            raise ClusterError(
                f"the bucket Job {co.BUCKET_JOB!r} in namespace {ns!r} failed: see 'kubectl logs "
                f"-n {ns} job/{co.BUCKET_JOB}', fix the cause and run 'expkit cluster install' again "
                "(it retries the Job)"
            )
        if _workload_ready(workload) and job is not None and job_succeeded(job):
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


__all__ = ["DEFAULT_TIMEOUT", "POLL_SECONDS", "InstallReport", "dry_run_yaml", "install", "wait_ready"]

"""``expkit cluster uninstall``: delete what install created in a namespace — only objects labelled
``app.kubernetes.io/managed-by: expkit``. The volumes and the credentials Secret that opens them are kept
unless ``purge``; the namespace itself is always kept."""

from __future__ import annotations

import logging
from collections.abc import Callable

from expkit.cluster import objects as co
from expkit.cluster.api import ClusterSetup, ObjectResult, is_managed
from expkit.core.errors import InputError

log = logging.getLogger(__name__)

MINIO_PVC_SELECTOR = "app.kubernetes.io/name=minio,app.kubernetes.io/part-of=expkit"

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
        str((c.get("metadata") or {}).get("name"))
        for c in setup.list("PersistentVolumeClaim", namespace, label_selector=MINIO_PVC_SELECTOR)
        if (c.get("metadata") or {}).get("name") != co.MINIO_PVC
    )
    if purge:
        for claim in claims:
            record(_delete_managed(setup, "PersistentVolumeClaim", namespace, claim))
        record(_delete_managed(setup, "Secret", namespace, co.CREDENTIALS_SECRET))
        return results
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
    if not is_managed(live):
        return ObjectResult(kind, name, ns, "skipped", "not created by expkit: left alone")
    setup.delete(kind, ns, name)
    return ObjectResult(kind, name, ns, "deleted")


__all__ = ["MINIO_PVC_SELECTOR", "uninstall"]

"""The connection ``expkit cluster install|check|uninstall`` works through: raw JSON requests for any kind.

:class:`ClusterSetup` reuses the Argo executor's connection
(:class:`~expkit.executors.argo.client.ArgoClient`: kubeconfig, context, namespace, timeouts) and sends
raw JSON requests by path (:meth:`ArgoClient.request <expkit.executors.argo.client.ArgoClient.request>`)
for any kind in :data:`expkit.cluster.objects.KINDS`, so one code path serves every object; the
Kubernetes client itself stays inside :mod:`expkit.executors.argo`. Errors are one line naming the
context and the server, and no credential registered with :meth:`ClusterSetup.sensitive` ever appears in
one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expkit.cluster import objects as co
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.errors import ClusterAuthError, ClusterError, one_line, unreachable
from expkit.executors.argo.kubeconfig import ClusterTarget

MANAGED_BY = ("app.kubernetes.io/managed-by", "expkit")
_VERBS = {"GET": "read", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


class InstallRejected(ClusterError):
    """The API server refused an object (400/422), or the live setup cannot be changed into the desired one."""


class StorageSizeRefused(InstallRejected):
    """``--storage-size`` cannot be applied to the existing volume (shrinking, an unbound claim, a StorageClass
    without volume expansion): bad input, exit code 2; nothing was written."""

    exit_code = 2


class InstallTimeout(ClusterError):
    """MinIO or the bucket Job did not become ready in time."""


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` carries expkit's ``app.kubernetes.io/managed-by: expkit`` label."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY[0]) == MANAGED_BY[1])


def job_failed(job: Mapping[str, Any]) -> bool:
    """A Job with a ``Failed`` condition."""
    status = job.get("status") or {}
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])


def job_succeeded(job: Mapping[str, Any]) -> bool:
    """A Job with a succeeded pod or a ``Complete`` condition."""
    status = job.get("status") or {}
    return int(status.get("succeeded") or 0) > 0 or any(
        c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or []
    )


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
        """``kind/name`` as kubectl names it."""
        return co.describe({"kind": self.kind, "metadata": {"name": self.name}})

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return dataclasses.asdict(self)


def _status_doc(body: Any) -> dict[str, Any]:
    if not body:
        return {}
    try:
        loaded = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class ClusterSetup:
    """A connection for install/check/uninstall: raw JSON requests for the kinds in ``KINDS``.

    Built on :class:`ArgoClient` (pass one to share its connection). Every method raises a
    :class:`ClusterError` subclass with one line naming the context and server; ``get`` returns None for
    a missing object. Strings registered with :meth:`sensitive` never appear in an error message.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        *,
        argo: ArgoClient | None = None,
    ) -> None:
        self.argo = argo if argo is not None else ArgoClient(kubeconfig, context, namespace)
        self._owns = argo is None
        self.target: ClusterTarget = self.argo.target
        self.timeout = self.argo.timeout
        self._secrets: set[str] = set()

    @property
    def namespace(self) -> str:
        """The namespace in effect (``--namespace``, else the context's, else ``default``)."""
        return self.target.namespace

    def close(self) -> None:
        """Close the connection, unless it was lent by the caller."""
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
        """``text`` with every registered credential replaced by ``<redacted>``."""
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
        resp = self.argo.request(method, path, query=query, body=body, content_type=content_type)
        if resp.raised and not resp.status:  # no answer at all: the client's transport failed (e.g. TLS)
            raise unreachable(ConnectionError(resp.reason), self.target)
        if resp.raised:
            raise self._api_error(resp.status, resp.data, resp.reason, method, what or path, namespace)
        raw = resp.data or b""
        if resp.status == 404 and missing_ok:
            return None
        if resp.status is None or not 200 <= resp.status <= 299:
            raise self._api_error(resp.status, raw, resp.reason, method, what or path, namespace)
        try:
            return json.loads(raw) if raw else None
        except ValueError as err:
            raise ClusterError(
                f"the API server of {self.target.describe()} sent invalid JSON for {method} {what or path}"
            ) from err

    def _api_error(
        self, status: int | None, body: Any, reason: Any, method: str, what: str, namespace: str | None
    ) -> ClusterError:
        doc = _status_doc(body)
        code = status or doc.get("code")
        message = self.scrub(one_line(doc.get("message") or reason or ""))
        where = self.target.describe()
        verb = _VERBS.get(method.upper(), method.lower())
        scope = f" in namespace {namespace!r}" if namespace else ""
        if code == 401:
            return ClusterAuthError(
                f"the API server of {where} rejected the credentials (401 Unauthorized): log in "
                "again or pick another --context"
            )
        if code == 403 and verb == "read" and namespace:  # what check and the run commands read
            return ClusterAuthError(
                f"not allowed to read {what}{scope} on {where} (403 Forbidden): ask an administrator to bind "
                f"you to the {co.SUBMITTER_ROLE!r} Role of that namespace (kubectl -n {namespace} create rolebinding "
                f"<you>-expkit --role {co.SUBMITTER_ROLE} --user <you>) ({message})"
            )
        if code == 403:
            return ClusterAuthError(
                f"not allowed to {verb} {what}{scope} on {where} (403 Forbidden): ask a cluster "
                "administrator to run 'expkit cluster install' for you, or for a Role that "
                f"grants it ({message})"
            )
        if code in (400, 422):
            causes = [c for c in (doc.get("details") or {}).get("causes") or [] if isinstance(c, dict)]
            text = "; ".join(self._cause(c) for c in causes) or message
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

    def _cause(self, cause: Mapping[str, Any]) -> str:
        text = f"{cause.get('field')}: {cause.get('message')}" if cause.get("field") else str(cause.get("message"))
        return self.scrub(one_line(text))

    # -- objects ------------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        obj: dict[str, Any] | None = self.request(
            "GET",
            co.object_path(kind, namespace, name),
            what=f"{kind.lower()} {name!r}",
            namespace=namespace,
            missing_ok=True,
        )
        return obj

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
        """Create ``obj`` with strict field validation."""
        meta = obj.get("metadata") or {}
        created: dict[str, Any] = self.request(
            "POST",
            co.object_path(str(obj["kind"]), meta.get("namespace")),
            body=dict(obj),
            query={"fieldValidation": "Strict"},
            what=co.describe(obj),
            namespace=meta.get("namespace"),
        )
        return created

    def patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``)."""
        patched: dict[str, Any] = self.request(
            "PATCH",
            co.object_path(kind, namespace, name),
            body=dict(patch),
            content_type="application/merge-patch+json",
            query={"fieldValidation": "Strict"},
            what=f"{kind.lower()} {name!r}",
            namespace=namespace,
        )
        return patched

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
        """The API server's version (``gitVersion`` of ``/version``)."""
        doc = self.request("GET", "/version", what="the server version") or {}
        return str(doc.get("gitVersion") or f"v{doc.get('major')}.{doc.get('minor')}")


__all__ = [
    "MANAGED_BY",
    "ClusterSetup",
    "InstallRejected",
    "InstallTimeout",
    "ObjectResult",
    "StorageSizeRefused",
    "is_managed",
    "job_failed",
    "job_succeeded",
]

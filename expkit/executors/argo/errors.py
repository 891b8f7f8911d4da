"""Errors of a cluster connection, and the translation of the Kubernetes client's exceptions into them.

Every failure talking to a cluster becomes one line naming the context, the server and what to do:
:func:`translate` turns an ``ApiException`` (by its HTTP status and the ``Status`` object in its body)
or a transport error into a :class:`ClusterError` subclass. ``expkit cluster`` reuses :func:`one_line`,
:func:`why_unreachable` and :func:`unreachable` for its own messages; it never sees the client's
exception classes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from expkit.core.errors import ExpkitError, InputError
from expkit.executors.argo.names import RESOURCE


class ClusterError(ExpkitError):
    """Talking to the cluster failed; the message names the context and the server."""


class ClusterConfigError(InputError):
    """No usable kubeconfig, or the requested context does not exist (exit code 2)."""


class ClusterUnreachable(ClusterError):
    """The API server cannot be reached."""


class ClusterAuthError(ClusterError):
    """401 (credentials rejected) or 403 (the verb on the resource is not allowed)."""


class ArgoNotInstalled(ClusterError):
    """The ``workflows.argoproj.io`` CRD is absent: Argo Workflows is not installed."""


class WorkflowConflict(ClusterError):
    """409: a workflow with that name already exists."""


class WorkflowRejected(ClusterError):
    """400/422: the API server rejected the workflow (unknown field, invalid value)."""


class WorkflowNotFound(ClusterError):
    """The run has no workflow in the namespace (wrong namespace or context, or deleted by its TTL)."""

    exit_code = 2


class Endpoint(Protocol):
    """What a message names: the context and the server (a :class:`~.kubeconfig.ClusterTarget`)."""

    @property
    def context(self) -> str:
        """The kubeconfig context (or ``in-cluster``)."""
        ...

    @property
    def server(self) -> str:
        """The API server's URL."""
        ...

    def describe(self) -> str:
        """``context 'NAME' (SERVER)``."""
        ...


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def why_unreachable(err: BaseException) -> str:
    """Why a connection failed, in a few words (refused, timed out, TLS, unknown host, else the error)."""
    text = str(getattr(err, "reason", None) or err)
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "ssl" in low or "certificate" in low:
        return f"TLS error: {one_line(text, 160)}"
    if "name or service not known" in low or "nodename nor servname" in low or "name resolution" in low:
        return "host name not found"
    return one_line(text, 160)


def unreachable(err: BaseException, target: Endpoint) -> ClusterUnreachable:
    """The error for an API server that cannot be reached (``err``: the transport's exception)."""
    return ClusterUnreachable(
        f"cannot reach the Kubernetes API server of {target.describe()}: {why_unreachable(err)}; "
        "check that the cluster is running and that the kubeconfig points at it"
    )


def status_body(err: ApiException) -> dict[str, Any]:
    """The Kubernetes ``Status`` object an ``ApiException`` carries in its body (``{}`` when there is none)."""
    try:
        doc = json.loads(err.body or "")
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def translate(
    err: BaseException, target: Endpoint, namespace: str, verb: str, resource: str, name: str | None = None
) -> ExpkitError:
    """The one-line :class:`ClusterError` for ``err``, raised by ``verb`` on ``resource`` (``name``) in
    ``namespace`` of ``target``."""
    if not isinstance(err, ApiException):
        return unreachable(err, target)
    where = target.describe()
    body = status_body(err)
    code = err.status or body.get("code")
    message = one_line(body.get("message") or err.reason or "")
    details: Mapping[str, Any] = body.get("details") or {}
    if code == 401:
        return ClusterAuthError(
            f"the API server of {where} rejected the credentials (401 Unauthorized): refresh "
            "them (log in again) or pick another --context"
        )
    if code == 403:
        return _forbidden(where, namespace, verb, resource, message, details)
    if code == 404:
        return _not_found(target, namespace, resource, name, message, details)
    if code == 409:
        return WorkflowConflict(f"{message or 'conflict'} (409 Conflict, namespace {namespace!r} on {where})")
    if code == 422:
        return _invalid(where, resource, message, details)
    if code == 400:
        hint = (
            "; the cluster's Argo version does not know this field: upgrade Argo Workflows or submit to another cluster"
            if "unknown field" in message
            else ""
        )
        return WorkflowRejected(
            f"the API server of {where} rejected the request to {verb} {resource} (400 Bad Request): {message}{hint}"
        )
    return ClusterError(
        f"the API server of {where} answered {code} {err.reason or ''} to {verb} {resource}"
        f"{f' {name!r}' if name else ''}: {message or 'no details'}".replace("  ", " ")
    )


def _forbidden(
    where: str, namespace: str, verb: str, resource: str, message: str, details: Mapping[str, Any]
) -> ClusterAuthError:
    kind = details.get("kind") or resource.split(".")[0]
    group = details.get("group") or ".".join(resource.split(".")[1:])
    what = ".".join(p for p in (kind, group) if p) or resource
    user = re.search(r'User "([^"]+)"', message)
    who = f" as user {user.group(1)!r}" if user else (f" ({message})" if message else "")
    return ClusterAuthError(
        f"not allowed to {verb} {what} in namespace {namespace!r}{who} on {where} "
        f"(403 Forbidden): ask for a Role granting '{verb}' on '{what}' in that namespace"
    )


def _not_found(
    target: Endpoint, namespace: str, resource: str, name: str | None, message: str, details: Mapping[str, Any]
) -> ClusterError:
    if resource == RESOURCE and (not details.get("name") or "could not find the requested resource" in message):
        return ArgoNotInstalled(
            f"is Argo Workflows installed? the {RESOURCE} CRD was not found in "
            f"{target.server} (context {target.context!r}): install Argo Workflows "
            "or pick the right --context"
        )
    thing = f"{resource} {name!r}" if name else resource
    return WorkflowNotFound(
        f"{thing} not found in namespace {namespace!r} on {target.describe()}: check --namespace and "
        "--context (finished workflows are deleted after their TTL)"
    )


def _invalid(where: str, resource: str, message: str, details: Mapping[str, Any]) -> WorkflowRejected:
    causes = [c for c in details.get("causes") or [] if isinstance(c, dict)]
    text = (
        "; ".join(
            one_line(f"{c.get('field')}: {c.get('message')}" if c.get("field") else str(c.get("message")))
            for c in causes
        )
        or message
    )
    return WorkflowRejected(
        f"the API server of {where} rejected the {resource.split('.')[0][:-1]} (422 Invalid): {text}"
    )


__all__ = [
    "ArgoNotInstalled",
    "ClusterAuthError",
    "ClusterConfigError",
    "ClusterError",
    "ClusterUnreachable",
    "Endpoint",
    "WorkflowConflict",
    "WorkflowNotFound",
    "WorkflowRejected",
    "one_line",
    "status_body",
    "translate",
    "unreachable",
    "why_unreachable",
]

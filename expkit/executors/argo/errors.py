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


class ClusterTLSError(ClusterUnreachable):
    """The API server's TLS certificate cannot be verified with the kubeconfig's CA (or the handshake failed)."""


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


class NamespaceNotFound(ClusterError):
    """The namespace does not exist on the cluster (exit code 2: a wrong ``--namespace`` or context)."""

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


def _tls_problem(err: BaseException) -> str | None:
    """The TLS failure behind ``err`` in a few words (None when it is not one)."""
    seen: set[int] = set()
    cause: BaseException | None = err
    texts = []
    while cause is not None and id(cause) not in seen:  # urllib3 wraps the ssl error in MaxRetryError(SSLError)
        seen.add(id(cause))
        texts.append(str(getattr(cause, "reason", None) or cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(texts)
    low = text.lower()
    if "certificate verify failed" in low:
        found = re.search(r"certificate verify failed: ([^(\]'\")]+)", text, re.IGNORECASE)
        return "certificate verify failed" + (f": {found.group(1).strip()}" if found else "")
    if "ssl" in low or "certificate" in low or "tls" in low:
        return one_line(text, 160)
    return None


def unreachable(err: BaseException, target: Endpoint) -> ClusterUnreachable:
    """The error for an API server that cannot be reached (``err``: the transport's exception). A certificate
    that cannot be verified is a :class:`ClusterTLSError` naming the kubeconfig's CA settings."""
    tls = _tls_problem(err)
    if tls is not None:
        kubeconfig = getattr(target, "kubeconfig", None)
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "the kubeconfig"
        if tls.startswith("certificate verify failed"):
            return ClusterTLSError(
                f"the TLS certificate of the Kubernetes API server of {target.describe()} cannot be verified "
                f"({tls}): a certificate problem, not a connection one — the cluster's certificate-authority "
                f"(a CA file) or certificate-authority-data (base64 PEM) in {where} must name the CA that signed "
                "the server's certificate (fetch a fresh kubeconfig from the cluster's provider)"
            )
        return ClusterTLSError(
            f"the TLS handshake with the Kubernetes API server of {target.describe()} failed ({tls}): check the "
            f"server URL's scheme and port, and the certificate-authority / certificate-authority-data of {where}"
        )
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
    if not isinstance(err, ApiException) or (not err.status and _tls_problem(err)):  # status 0: no answer
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


def missing_namespace(namespace: str, target: Endpoint) -> NamespaceNotFound:
    """The error for a namespace that does not exist: how to create it, or how to pick another."""
    return NamespaceNotFound(
        f"namespace {namespace!r} does not exist on {target.describe()}: create it (kubectl create namespace "
        f"{namespace}, then expkit cluster install -n {namespace}) or pass --namespace with an existing one "
        "(kubectl get namespaces)"
    )


def _not_found(
    target: Endpoint, namespace: str, resource: str, name: str | None, message: str, details: Mapping[str, Any]
) -> ClusterError:
    if details.get("kind") == "namespaces" and not details.get("group"):  # the NamespaceLifecycle admission
        return missing_namespace(str(details.get("name") or namespace), target)
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
    "ClusterTLSError",
    "ClusterUnreachable",
    "Endpoint",
    "NamespaceNotFound",
    "WorkflowConflict",
    "WorkflowNotFound",
    "WorkflowRejected",
    "missing_namespace",
    "one_line",
    "status_body",
    "translate",
    "unreachable",
    "why_unreachable",
]

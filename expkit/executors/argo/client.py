"""The connection to a cluster: :class:`ArgoClient`, the transport every cluster operation goes through.

It wraps the official client (``CustomObjectsApi`` for ``workflows.argoproj.io``, ``CoreV1Api`` for
pods and their logs, ``VersionApi``; raw requests by path for ``expkit cluster``) and turns every
failure into one line naming the context, the server and what to do
(:mod:`~expkit.executors.argo.errors`). Where it connects comes from
:func:`~expkit.executors.argo.kubeconfig.load_target`. The run operations built on it are in
:mod:`~expkit.executors.argo.runs` (submit, stop, retry, pods, listing) and
:mod:`~expkit.executors.argo.sync` (status, sync, watch).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from expkit import __version__
from expkit.core.errors import ExpkitError
from expkit.executors.argo.errors import ClusterError, WorkflowNotFound, translate, unreachable
from expkit.executors.argo.kubeconfig import ClusterTarget, load_target
from expkit.executors.argo.names import (
    CONTROLLER_LOCATIONS,
    GROUP,
    LABEL_RUN_ID,
    MAIN_CONTAINER,
    PLURAL,
    RESOURCE,
    VERSION,
)
from expkit.executors.argo.status import DONE_PHASES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: A watch request asks the server to end the stream after this long; the client then re-reads and re-watches.
WATCH_SECONDS = 60


@dataclass(frozen=True)
class RawResponse:
    """The answer to :meth:`ArgoClient.request` as the server sent it (an error status included).

    ``raised``: the client raised the status as an exception (e.g. a TLS failure, status 0) instead of
    returning a response.
    """

    status: int | None
    data: Any
    reason: str
    raised: bool = False


def _phase(workflow: Mapping[str, Any]) -> str:
    return str((workflow.get("status") or {}).get("phase") or "")


def _resource_version(workflow: Mapping[str, Any]) -> str | None:
    rv = (workflow.get("metadata") or {}).get("resourceVersion")
    return None if rv is None else str(rv)


class ArgoClient:
    """One connection to a cluster (see :func:`load_target`), for Argo workflows and their pods.

    Every method raises a :class:`ClusterError` subclass (one line, the cause chained) instead of
    the client's exceptions. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.target: ClusterTarget
        self.target, cfg = load_target(kubeconfig, context, namespace)
        cfg.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.2)
        self.timeout = (connect_timeout, read_timeout)
        self.api = k8s.ApiClient(cfg)
        self.api.user_agent = f"expkit/{__version__}"
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)

    @property
    def namespace(self) -> str:
        """The namespace every request of this client addresses."""
        return self.target.namespace

    def close(self) -> None:
        """Release the connection pool."""
        self.api.close()  # type: ignore[no-untyped-call]  # kubernetes' ApiClient.close has no annotations

    def __enter__(self) -> ArgoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArgoClient({self.target.describe()}, namespace={self.namespace!r})"

    # -- transport -------------------------------------------------------------------------------
    def _translate(self, err: BaseException, verb: str, resource: str, name: str | None = None) -> ExpkitError:
        return translate(err, self.target, self.namespace, verb, resource, name)

    def _call(
        self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            raise self._translate(err, verb, resource, name) from err

    def _raw(
        self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any
    ) -> Any:
        """Call without the client's models (the raw JSON): tolerant of what the models would reject."""
        resp = self._call(verb, resource, fn, *args, name=name, _preload_content=False, **kwargs)
        try:
            return json.loads(resp.data or b"null")
        except ValueError as err:
            raise ClusterError(
                f"the API server of {self.target.describe()} sent invalid JSON for {verb} {resource}"
            ) from err

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> RawResponse:
        """Send one request by path (any kind of object, raw JSON, bearer token auth) and return the answer
        as it came, an error status included: the caller words its own errors. Raises
        :class:`~expkit.executors.argo.errors.ClusterUnreachable` when the server cannot be reached."""
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
            resp.read()  # type: ignore[no-untyped-call]  # kubernetes' RESTResponse.read has no annotations
        except ApiException as err:
            return RawResponse(err.status, err.body, str(err.reason or ""), raised=True)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise unreachable(err, self.target) from err
        return RawResponse(resp.status, resp.data or b"", str(getattr(resp, "reason", "") or ""))

    # -- cluster facts ----------------------------------------------------------------------------
    def server_version(self) -> str:
        """The API server's version (``gitVersion`` of ``/version``); also checks reachability and credentials."""
        doc = self._raw("get", "version", k8s.VersionApi(self.api).get_code) or {}
        return str(doc.get("gitVersion") or f"v{doc.get('major')}.{doc.get('minor')}")

    def argo_version(self) -> str | None:
        """Argo Workflows' version if discoverable: the image tag of the workflow-controller Deployment
        (``argo`` namespace, then the run's), else the ``app.kubernetes.io/version`` label or annotation of
        the ``workflows.argoproj.io`` CRD. ``None`` when neither is readable (e.g. no permission)."""
        return self._controller_tag() or self._crd_version()

    def _controller_tag(self) -> str | None:
        apps = k8s.AppsV1Api(self.api)
        places = [*CONTROLLER_LOCATIONS, *((self.namespace, n) for _, n in CONTROLLER_LOCATIONS)]
        for ns, dep_name in places:
            try:
                dep = self._raw("get", "deployments.apps", apps.read_namespaced_deployment, dep_name, ns)
            except ExpkitError as err:
                log.debug("argo version: deployment %s/%s: %s", ns, dep_name, err)
                continue
            containers = ((((dep or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
            for ctr in containers or []:
                image = str(ctr.get("image") or "")
                tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
                if tag:
                    return tag
        return None

    def _crd_version(self) -> str | None:
        try:
            crd = self._raw(
                "get",
                "customresourcedefinitions.apiextensions.k8s.io",
                k8s.ApiextensionsV1Api(self.api).read_custom_resource_definition,
                RESOURCE,
            )
        except ExpkitError as err:
            log.debug("argo version: CRD %s: %s", RESOURCE, err)
            return None
        meta = (crd or {}).get("metadata") or {}
        for field_ in ("labels", "annotations"):
            version = (meta.get(field_) or {}).get("app.kubernetes.io/version")
            if version:
                return str(version)
        return None

    # -- workflows --------------------------------------------------------------------------------
    def create_workflow(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Workflow with server-side strict field validation (unknown fields are rejected)."""
        name = (doc.get("metadata") or {}).get("name")
        doc = _stamped(doc)
        created: dict[str, Any] = self._call(
            "create",
            RESOURCE,
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            dict(doc),
            field_validation="Strict",
            name=name,
        )
        return created

    def get_workflow(self, name: str) -> dict[str, Any]:
        """The workflow ``name`` of the namespace."""
        workflow: dict[str, Any] = self._call(
            "get",
            RESOURCE,
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            name=name,
        )
        return workflow

    def list_workflows(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Workflows of the namespace (matching ``label_selector``), oldest first."""
        doc = self._call(
            "list",
            RESOURCE,
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = list((doc or {}).get("items") or [])
        return sorted(items, key=_creation_order)

    def patch_workflow(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``) of a workflow."""
        patched: dict[str, Any] = self._call(
            "patch",
            RESOURCE,
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            dict(patch),
            name=name,
        )
        return patched

    def delete_workflow(self, name: str) -> None:
        """Delete the workflow ``name`` (its pods go with it)."""
        self._call(
            "delete",
            RESOURCE,
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            name=name,
        )

    def watch_workflow(
        self, name: str, on_update: Callable[[dict[str, Any]], None], *, watch_seconds: int = WATCH_SECONDS
    ) -> dict[str, Any]:
        """Call ``on_update(workflow)`` with every new state of workflow ``name`` until its phase is final;
        return the final object. Argo's CRD has no status subresource: the controller writes the status
        on the whole object, so every change arrives as a MODIFIED event of the object itself."""
        current = self.get_workflow(name)
        on_update(current)
        seen = _resource_version(current)
        while _phase(current) not in DONE_PHASES:
            current, seen = self._follow(name, current, seen, on_update, watch_seconds)
            if _phase(current) not in DONE_PHASES:
                latest = self.get_workflow(name)  # the stream ended (server timeout): catch up, then watch again
                if _resource_version(latest) != seen:
                    current = latest
                    seen = _resource_version(latest)
                    on_update(current)
        return current

    def _follow(
        self,
        name: str,
        current: dict[str, Any],
        seen: str | None,
        on_update: Callable[[dict[str, Any]], None],
        watch_seconds: int,
    ) -> tuple[dict[str, Any], str | None]:
        """One watch stream on workflow ``name`` from resource version ``seen``: until the workflow
        finishes or the server ends the stream. Returns the newest state and its resource version."""
        stream = k8s_watch.Watch()  # type: ignore[no-untyped-call]  # kubernetes' Watch has no annotations
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=seen,
                timeout_seconds=watch_seconds,
                _request_timeout=(self.timeout[0], watch_seconds + 30),
            ):
                obj = event.get("raw_object") or event.get("object")
                if event.get("type") == "DELETED":
                    raise WorkflowNotFound(
                        f"workflow {name!r} was deleted from namespace {self.namespace!r} "
                        f"on {self.target.describe()} while being watched"
                    )
                if not isinstance(obj, dict) or (obj.get("metadata") or {}).get("name") != name:
                    continue
                rv = _resource_version(obj)
                if rv is not None and rv == seen:
                    continue
                seen, current = rv, obj
                on_update(current)
                if _phase(current) in DONE_PHASES:
                    stream.stop()  # type: ignore[no-untyped-call]
                    break
        except ApiException as err:
            if err.status != 410:  # 410 Gone: the resource version expired; re-read below
                raise self._translate(err, "watch", RESOURCE, name) from err
            seen = None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise self._translate(err, "watch", RESOURCE, name) from err
        finally:
            stream.stop()  # type: ignore[no-untyped-call]
        return current, seen

    # -- pods -------------------------------------------------------------------------------------
    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        """Pods of the namespace matching ``label_selector`` (raw JSON)."""
        doc = self._raw("list", "pods", self.core.list_namespaced_pod, self.namespace, label_selector=label_selector)
        return list((doc or {}).get("items") or [])

    def pod_log(self, pod: str, *, container: str = MAIN_CONTAINER, follow: bool = False) -> Iterator[bytes]:
        """The log of a pod's container, in chunks; with ``follow``, until the container ends."""
        timeout = None if follow else self.timeout  # a followed log may stay silent for hours
        resp = self._call(
            "get",
            "pods/log",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            follow=follow,
            _preload_content=False,
            _request_timeout=timeout,
            name=pod,
        )
        try:
            for chunk in resp.stream(4096, decode_content=True):
                if chunk:
                    yield chunk
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise self._translate(err, "get", "pods/log", pod) from err
        finally:
            resp.release_conn()

    # -- a run's workflows ------------------------------------------------------------------------
    def run_workflows(self, run_id: str) -> list[dict[str, Any]]:
        """The workflows of run ``run_id`` (the first run and its retries), oldest first."""
        return self.list_workflows(f"{LABEL_RUN_ID}={run_id}")


#: When expkit created a workflow, to the microsecond: ``creationTimestamp`` has whole seconds, and a run's
#: workflows are combined newest-last (a retry or an adaptive wave created in the same second as the last
#: shards must still come after them).
CREATED_ANNOTATION = "expkit.io/created-at"


def _stamped(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with :data:`CREATED_ANNOTATION` set to now (a copy; the rendered workflow stays pure)."""
    meta = dict(doc.get("metadata") or {})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta["annotations"] = {**(meta.get("annotations") or {}), CREATED_ANNOTATION: stamp}
    return {**doc, "metadata": meta}


def _creation_order(workflow: Mapping[str, Any]) -> tuple[str, str, str]:
    """Sort key, oldest first: the server's creation second, then expkit's microseconds, then the name."""
    meta = workflow.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str(annotations.get(CREATED_ANNOTATION) or ""),
        str(meta.get("name") or ""),
    )


__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "WATCH_SECONDS", "ArgoClient", "RawResponse"]

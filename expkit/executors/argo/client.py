"""Run experiments on a Kubernetes cluster with Argo Workflows — the only module that imports ``kubernetes``.

:class:`ArgoClient` wraps the official client (``CustomObjectsApi`` for ``workflows.argoproj.io``,
``CoreV1Api`` for pods and their logs, ``VersionApi``) and turns every failure into one line naming
the context, the server and what to do (:class:`ClusterError` and its subclasses). On top of it:

* :func:`submit_run` — render and validate the workflow, write ``<run-id>/experiment.yml`` and
  ``<run-id>/manifest.json`` (with the cluster's provenance) into the S3 run store, then create the
  Workflow with server-side strict field validation;
* :func:`watch_run` — follow the workflow through a watch stream until it finishes;
* :func:`collect_status` / :func:`sync_run` — read cell status from the workflow objects of a run
  and write each finished cell's ``run.json`` (plus ``log.txt``) into the store, completion marker last;
* :func:`stop_run`, :func:`retry_run` (only the failed or missing cells, into the same run id),
  :func:`cell_pods` and :meth:`ArgoClient.pod_log`, :func:`list_cluster_runs`.

**Workflow names.** A run's first workflow is named after the run id, which expkit picks
(``<experiment>-<5 chars>``, not yet in the store) and retries on ``409 AlreadyExists`` with a new id,
rather than letting the API server pick it with ``generateName``: the run id must be known *before*
the workflow exists, so that the spec and manifest are in the store before any cell can write there,
and so that the workflow's own labels (``expkit.io/run-id``, which Argo does not template) and the
literal artifact keys carry it. Retry workflows, which write into an existing run id, do use
``generateName: <run-id>-retry-``: nothing in them depends on their name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from expkit import __version__
from expkit.core.contract import LOG_FILE, RESULT_FILE, RUN_FILE, json_object_or_none, parse_result
from expkit.core.errors import ArtifactError, ExpkitError, InputError, StoreError
from expkit.executors.argo.render import render_workflow
from expkit.executors.argo.status import (
    DONE_PHASES,
    WorkflowSummary,
    cell_records_from_workflow,
    planned_cells,
    summarize,
)
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import build_matrix
from expkit.runs.provenance import utc_now
from expkit.spec import LoadedSpec, is_pinned, load_spec, load_spec_text
from expkit.stores.base import (
    MANIFEST_KEY,
    SPEC_KEY,
    ObjectNotFound,
    RunStore,
    cell_prefix,
)

log = logging.getLogger(__name__)

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "workflows"
RESOURCE = f"{PLURAL}.{GROUP}"
LABEL_RUN_ID = "expkit.io/run-id"
LABEL_EXPERIMENT = "expkit.io/experiment"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
CELL_ANNOTATION = "expkit.io/cell"
MAIN_CONTAINER = "main"
DEFAULT_KUBECONFIG = "~/.kube/config"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: A watch request asks the server to end the stream after this long; the client then re-reads and re-watches.
WATCH_SECONDS = 60
SUBMIT_ATTEMPTS = 5
#: Where Argo's workflow controller usually runs, and its Deployment names (install manifests, Helm chart).
CONTROLLER_LOCATIONS = (("argo", "workflow-controller"), ("argo", "argo-workflows-workflow-controller"))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterTarget:
    """Where requests go: the kubeconfig context (or ``in-cluster``), its server and the namespace."""

    context: str
    server: str
    namespace: str
    kubeconfig: str | None = None  # None: the pod's service account (in-cluster)

    def describe(self) -> str:
        return f"context {self.context!r} ({self.server})"


def _kubeconfig_files(kubeconfig: str | os.PathLike | None) -> tuple[list[str], bool]:
    """The kubeconfig files to read and whether they were asked for explicitly."""
    if kubeconfig:
        paths = [os.path.expanduser(str(kubeconfig))]
        return [p for p in paths if os.path.isfile(p)] or paths, True
    env = os.environ.get("KUBECONFIG", "")
    paths = [os.path.expanduser(p) for p in env.split(os.pathsep) if p] or [os.path.expanduser(DEFAULT_KUBECONFIG)]
    return [p for p in paths if os.path.isfile(p)], bool(env)


def _read_contexts(files: Sequence[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Contexts by name (the first file that names one wins, as kubectl merges) and the current context."""
    contexts: dict[str, dict[str, Any]] = {}
    current = None
    for path in files:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ClusterConfigError(
                f"kubeconfig {path} cannot be read ({err.__class__.__name__}): fix it or pass another with --kubeconfig"
            ) from err
        if not isinstance(doc, dict):
            raise ClusterConfigError(
                f"kubeconfig {path} is not a kubeconfig (a YAML mapping): pass another with --kubeconfig"
            )
        for item in doc.get("contexts") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                contexts.setdefault(item["name"], item.get("context") or {})
        if current is None and doc.get("current-context"):
            current = str(doc["current-context"])
    return contexts, current


def load_target(
    kubeconfig: str | os.PathLike | None = None, context: str | None = None, namespace: str | None = None
) -> tuple[ClusterTarget, k8s.Configuration]:
    """Resolve the connection: ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``), the
    context (else the current one) and the namespace (else the context's, else ``default``). With no
    kubeconfig at all, inside a pod, the pod's service account is used (in-cluster config)."""
    files, explicit = _kubeconfig_files(kubeconfig)
    cfg = k8s.Configuration()
    if not any(os.path.isfile(f) for f in files):
        if explicit:
            raise ClusterConfigError(
                f"kubeconfig {', '.join(files) or os.environ.get('KUBECONFIG')} does not exist: "
                "check --kubeconfig / $KUBECONFIG"
            )
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)
            except ConfigException as err:
                raise ClusterConfigError(
                    f"in-cluster configuration failed ({err}): mount the service account token or pass --kubeconfig"
                ) from err
            ns = namespace
            if ns is None:
                try:
                    ns = Path(SA_NAMESPACE_FILE).read_text(encoding="utf-8").strip() or None
                except OSError:
                    ns = None
            return ClusterTarget("in-cluster", cfg.host, ns or "default", None), cfg
        raise ClusterConfigError(
            f"no kubeconfig found ({DEFAULT_KUBECONFIG}, $KUBECONFIG unset) and not running "
            "inside a cluster: pass --kubeconfig FILE or set KUBECONFIG"
        )
    contexts, current = _read_contexts(files)
    name = context or current
    if name is None:
        raise ClusterConfigError(
            f"kubeconfig {os.pathsep.join(files)} has no current-context: pass --context "
            f"(it has: {', '.join(sorted(contexts)) or 'no contexts'})"
        )
    if name not in contexts:
        raise ClusterConfigError(
            f"context {name!r} is not in kubeconfig {os.pathsep.join(files)}: it has "
            f"{', '.join(sorted(contexts)) or 'no contexts'}"
        )
    try:
        k8s_config.load_kube_config(
            config_file=os.pathsep.join(files), context=name, client_configuration=cfg, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError) as err:
        raise ClusterConfigError(
            f"kubeconfig {os.pathsep.join(files)}, context {name!r}: {_one_line(str(err))}; "
            "fix the kubeconfig or pick another --context"
        ) from err
    ns = namespace or contexts[name].get("namespace") or "default"
    return ClusterTarget(name, cfg.host, str(ns), os.pathsep.join(files)), cfg


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_body(err: ApiException) -> dict[str, Any]:
    try:
        doc = json.loads(err.body or "")
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _why_unreachable(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err)
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "ssl" in low or "certificate" in low:
        return f"TLS error: {_one_line(text, 160)}"
    if "name or service not known" in low or "nodename nor servname" in low or "name resolution" in low:
        return "host name not found"
    return _one_line(text, 160)


class ArgoClient:
    """One connection to a cluster (see :func:`load_target`), for Argo workflows and their pods.

    Every method raises a :class:`ClusterError` subclass (one line, the cause chained) instead of
    the client's exceptions. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike | None = None,
        context: str | None = None,
        namespace: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.target, cfg = load_target(kubeconfig, context, namespace)
        cfg.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.2)
        self.timeout = (connect_timeout, read_timeout)
        self.api = k8s.ApiClient(cfg)
        self.api.user_agent = f"expkit/{__version__}"
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> ArgoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArgoClient({self.target.describe()}, namespace={self.namespace!r})"

    # -- errors ----------------------------------------------------------------------------------
    def _translate(self, err: BaseException, verb: str, resource: str, name: str | None = None) -> ExpkitError:
        where = self.target.describe()
        ns = self.namespace
        if not isinstance(err, ApiException):
            return ClusterUnreachable(
                f"cannot reach the Kubernetes API server of {where}: {_why_unreachable(err)}; "
                "check that the cluster is running and that the kubeconfig points at it"
            )
        body = _status_body(err)
        code = err.status or body.get("code")
        message = _one_line(body.get("message") or err.reason or "")
        details = body.get("details") or {}
        if code == 401:
            return ClusterAuthError(
                f"the API server of {where} rejected the credentials (401 Unauthorized): refresh "
                "them (log in again) or pick another --context"
            )
        if code == 403:
            what = ".".join(
                p
                for p in (
                    details.get("kind") or resource.split(".")[0],
                    details.get("group") or ".".join(resource.split(".")[1:]),
                )
                if p
            )
            what = what or resource
            user = re.search(r'User "([^"]+)"', message)
            who = f" as user {user.group(1)!r}" if user else (f" ({message})" if message else "")
            return ClusterAuthError(
                f"not allowed to {verb} {what} in namespace {ns!r}{who} on {where} "
                f"(403 Forbidden): ask for a Role granting '{verb}' on '{what}' in that namespace"
            )
        if (
            code == 404
            and resource == RESOURCE
            and (not details.get("name") or "could not find the requested resource" in message)
        ):
            return ArgoNotInstalled(
                f"is Argo Workflows installed? the {RESOURCE} CRD was not found in "
                f"{self.target.server} (context {self.target.context!r}): install Argo Workflows "
                "or pick the right --context"
            )
        if code == 404:
            thing = f"{resource} {name!r}" if name else resource
            return WorkflowNotFound(
                f"{thing} not found in namespace {ns!r} on {where}: check --namespace and "
                "--context (finished workflows are deleted after their TTL)"
            )
        if code == 409:
            return WorkflowConflict(f"{message or 'conflict'} (409 Conflict, namespace {ns!r} on {where})")
        if code == 422:
            causes = [c for c in details.get("causes") or [] if isinstance(c, dict)]
            text = (
                "; ".join(
                    _one_line(f"{c.get('field')}: {c.get('message')}" if c.get("field") else c.get("message"))
                    for c in causes
                )
                or message
            )
            return WorkflowRejected(
                f"the API server of {where} rejected the {resource.split('.')[0][:-1]} (422 Invalid): {text}"
            )
        if code == 400:
            hint = (
                "; the cluster's Argo version does not know this field: upgrade Argo Workflows or submit to "
                "another cluster"
                if "unknown field" in message
                else ""
            )
            return WorkflowRejected(
                f"the API server of {where} rejected the request to {verb} {resource} "
                f"(400 Bad Request): {message}{hint}"
            )
        return ClusterError(
            f"the API server of {where} answered {code} {err.reason or ''} to {verb} {resource}"
            f"{f' {name!r}' if name else ''}: {message or 'no details'}".replace("  ", " ")
        )

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

    # -- cluster facts ----------------------------------------------------------------------------
    def server_version(self) -> str:
        """The API server's version (``gitVersion`` of ``/version``); also checks reachability and credentials."""
        doc = self._raw("get", "version", k8s.VersionApi(self.api).get_code) or {}
        return str(doc.get("gitVersion") or f"v{doc.get('major')}.{doc.get('minor')}")

    def argo_version(self) -> str | None:
        """Argo Workflows' version if discoverable: the image tag of the workflow-controller Deployment
        (``argo`` namespace, then the run's), else the ``app.kubernetes.io/version`` label or annotation of
        the ``workflows.argoproj.io`` CRD. ``None`` when neither is readable (e.g. no permission)."""
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
        return self._call(
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

    def get_workflow(self, name: str) -> dict[str, Any]:
        return self._call(
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
        items = list((doc or {}).get("items") or [])
        return sorted(
            items,
            key=lambda w: (
                (w.get("metadata") or {}).get("creationTimestamp") or "",
                (w.get("metadata") or {}).get("name") or "",
            ),
        )

    def patch_workflow(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``) of a workflow."""
        return self._call(
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

    def delete_workflow(self, name: str) -> None:
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
        seen = (current.get("metadata") or {}).get("resourceVersion")
        while ((current.get("status") or {}).get("phase") or "") not in DONE_PHASES:
            stream = k8s_watch.Watch()
            try:
                for event in stream.stream(
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
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv is not None and rv == seen:
                        continue
                    seen, current = rv, obj
                    on_update(current)
                    if ((current.get("status") or {}).get("phase") or "") in DONE_PHASES:
                        stream.stop()
                        break
            except ApiException as err:
                if err.status != 410:  # 410 Gone: the resource version expired; re-read below
                    raise self._translate(err, "watch", RESOURCE, name) from err
                seen = None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                raise self._translate(err, "watch", RESOURCE, name) from err
            finally:
                stream.stop()
            if ((current.get("status") or {}).get("phase") or "") not in DONE_PHASES:
                latest = self.get_workflow(name)  # the stream ended (server timeout): catch up, then watch again
                if (latest.get("metadata") or {}).get("resourceVersion") != seen:
                    current = latest
                    seen = (latest.get("metadata") or {}).get("resourceVersion")
                    on_update(current)
        return current

    # -- pods -------------------------------------------------------------------------------------
    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
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


# ---------------------------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A workflow created for a run: the run id, the workflow's name and where it runs."""

    run_id: str
    workflow: str
    namespace: str
    context: str
    server: str
    cells: int
    store_url: str
    retry: bool = False


def _key_prefix(store: RunStore) -> str:
    """Artifact keys are relative to the bucket's root: a store under a prefix needs that prefix."""
    if not store.url.startswith("s3://"):
        raise InputError(
            f"--store {store.url}: a cluster run writes its outputs through Argo's artifact repository, "
            "so its store must be that S3 bucket: pass --store s3://BUCKET/PREFIX (or set EXPKIT_STORE)"
        )
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    return f"{prefix}/" if prefix else ""


def check_images(loaded: LoadedSpec, where: str) -> None:
    """Refuse images not pinned by digest (a cluster run must name the exact image it ran)."""
    image = loaded.experiment.spec.image
    if not is_pinned(image):
        raise InputError(
            f"{where}: spec.image {image!r} is not pinned by digest; a cluster run must name the exact "
            f"image: run 'expkit pin {where}' (or write image@sha256:<digest>)"
        )


def _cluster_block(argo: ArgoClient, server_version: str, argo_version: str | None) -> dict[str, Any]:
    return {
        "context": argo.target.context,
        "server": argo.target.server,
        "namespace": argo.namespace,
        "server_version": server_version,
        "argo_version": argo_version,
        "workflows": [],
    }


def _workflow_entry(created: Mapping[str, Any], kind: str, cells: int) -> dict[str, Any]:
    meta = created.get("metadata") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "created_at": meta.get("creationTimestamp"),
        "kind": kind,
        "cells": cells,
        "phase": (created.get("status") or {}).get("phase") or "Pending",
    }


def submit_run(
    spec_path: str | Path,
    store: RunStore,
    argo: ArgoClient,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    expkit_image: str | None = None,
    attempts: int = SUBMIT_ATTEMPTS,
) -> Submission:
    """Submit the spec at ``spec_path`` as a new run: render and validate the workflow, write the spec and the
    manifest into ``store``, create the workflow (strict field validation). On 409 the run id is taken on the
    cluster: the store objects are removed and another id is tried (``attempts`` in all)."""
    loaded = load_spec(spec_path, overrides)
    check_images(loaded, str(spec_path))
    key_prefix = _key_prefix(store)
    n_cells = len(build_matrix(loaded.experiment))
    server_version = argo.server_version()
    argo_version = argo.argo_version()
    spec = loaded.experiment.spec
    conflicts: list[str] = []
    last: WorkflowConflict | None = None
    for _ in range(max(1, attempts)):
        run_id = new_run_id(loaded.name, store.list_runs())
        doc = render_workflow(
            loaded, run_id, namespace=argo.namespace, expkit_image=expkit_image, key_prefix=key_prefix
        )
        manifest = build_manifest(loaded, run_id, "argo", spec.parallelism or n_cells, n_cells)
        manifest.update(status="submitted", cluster=_cluster_block(argo, server_version, argo_version))
        store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
        try:
            created = argo.create_workflow(doc)
        except WorkflowConflict as err:
            _forget(store, run_id)
            conflicts.append(run_id)
            last = err
            log.info("workflow %s already exists in %s: trying another run id", run_id, argo.namespace)
            continue
        except BaseException:
            _forget(store, run_id)
            raise
        manifest["cluster"]["workflows"].append(_workflow_entry(created, "run", n_cells))
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
        log.info("submitted %s: %d cells, namespace %s, %s", run_id, n_cells, argo.namespace, argo.target.describe())
        return Submission(
            run_id,
            (created.get("metadata") or {}).get("name") or run_id,
            argo.namespace,
            argo.target.context,
            argo.target.server,
            n_cells,
            store.url,
        )
    raise WorkflowConflict(
        f"{last}; tried run ids {', '.join(conflicts)}: delete old workflows of experiment "
        f"{loaded.name!r} from namespace {argo.namespace!r} or use another namespace"
    ) from last


def _forget(store: RunStore, run_id: str) -> None:
    try:
        store.delete(f"{run_id}/")
    except Exception:
        log.exception("could not remove %s from %s", run_id, store.url)


# ---------------------------------------------------------------------------------------------
# Status and sync
# ---------------------------------------------------------------------------------------------


@dataclass
class RunStatus:
    """A run as the cluster sees it, over all its workflows (the first and its retries)."""

    run_id: str
    phase: str  # the newest workflow's phase ("Running" while any workflow runs)
    workflows: list[WorkflowSummary]
    total: int
    counts: dict[str, int]
    failed: dict[str, str]
    records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    synced: int = 0

    @property
    def done(self) -> bool:
        return all(w.done for w in self.workflows)

    @property
    def ok(self) -> bool:
        return self.done and self.phase == "Succeeded" and self.counts.get("succeeded", 0) == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "counts": dict(self.counts),
            "failed": dict(self.failed),
            "synced": self.synced,
            "workflows": [
                {
                    "name": w.name,
                    "phase": w.phase,
                    "message": w.message,
                    "started_at": w.started_at,
                    "finished_at": w.finished_at,
                    "cells": w.total,
                    "counts": dict(w.counts),
                }
                for w in self.workflows
            ],
        }


def status_from_workflows(run_id: str, workflows: Sequence[Mapping[str, Any]], total: int | None = None) -> RunStatus:
    """Combine the workflows of a run (oldest first): a cell's state is the one of the newest workflow that
    plans it, so a retry's pending cell hides the failure it is retrying."""
    summaries: list[WorkflowSummary] = []
    per_workflow: list[dict[str, dict[str, Any]]] = []
    for wf in workflows:
        records = cell_records_from_workflow(wf)
        per_workflow.append(records)
        summaries.append(summarize(wf, records))
    combined: dict[str, dict[str, Any]] = {}
    covered: set[str] = set()
    everything = False
    for wf, records in zip(reversed(workflows), reversed(per_workflow)):
        if everything:
            break
        for key, rec in records.items():
            if key not in covered and key not in combined:
                combined[key] = rec
        planned = planned_cells(wf)
        if planned is None:
            everything = True
        else:
            covered |= planned
    n_total = total if total is not None else (summaries[0].total if summaries else 0)
    counts = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
    failed: dict[str, str] = {}
    for key, rec in combined.items():
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        if rec["status"] == "failed":
            failed[key] = str(rec.get("reason") or "failed")
    counts["pending"] += max(n_total - len(combined), 0)
    running = [s for s in summaries if not s.done]
    phase = (running[-1].phase if running else summaries[-1].phase) if summaries else "Unknown"
    if running and phase in DONE_PHASES:
        phase = "Running"
    return RunStatus(run_id, phase, summaries, n_total, counts, dict(sorted(failed.items())), combined)


def collect_status(argo: ArgoClient, run_id: str, total: int | None = None) -> RunStatus:
    """The cluster's view of run ``run_id``; :class:`WorkflowNotFound` when it has no workflow here."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise WorkflowNotFound(
            f"no workflow of run {run_id!r} in namespace {argo.namespace!r} on "
            f"{argo.target.describe()}: check --namespace and --context (finished workflows are "
            "deleted after their TTL, 7 days by default)"
        )
    return status_from_workflows(run_id, workflows, total)


def _bucket_reader(store: RunStore) -> Callable[[str], bytes | None]:
    """Read an object by its key relative to the bucket's root (where Argo archives logs)."""
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    lock = threading.Lock()
    root: list[RunStore] = []

    def read(key: str) -> bytes | None:
        try:
            if not prefix:
                return store.get(key)
            if key.startswith(prefix + "/"):
                return store.get(key[len(prefix) + 1 :])
            with lock:
                if not root:
                    s3: Any = store  # an S3Store: its bucket's root, same endpoint and credentials
                    root.append(type(store)(s3.bucket, "", s3.config, cache=False))  # type: ignore[call-arg]
            return root[0].get(key)
        except ObjectNotFound:
            return None
        except StoreError as err:
            log.warning("could not read the archived log %s: %s", key, err)
            return None

    return read


def sync_cells(
    store: RunStore,
    run_id: str,
    records: Mapping[str, Mapping[str, Any]],
    *,
    metric: str | None = None,
    workers: int = 8,
) -> int:
    """Write the ``run.json`` of every finished cell in ``records`` into ``store`` (and its archived log as
    ``log.txt``), ``run.json`` last — after the cell's artifacts, which Argo uploaded before marking the node
    finished. A cell Argo reports as succeeded whose ``result.json`` is missing or invalid is recorded as
    failed, as a local run would be. Cells whose stored record already reflects the same node and phase are
    left alone. Returns the number of records written."""
    finished = {k: r for k, r in records.items() if r.get("status") in ("succeeded", "failed")}
    if not finished:
        return 0
    markers = {k: cell_prefix(run_id, k) + RUN_FILE for k in finished}
    existing = store.read_many(list(markers.values()))
    todo = []
    for key, rec in finished.items():
        old = json_object_or_none(existing.get(markers[key]))
        if old and all(old.get(f) == rec.get(f) for f in ("workflow", "node_id", "phase")):
            continue
        todo.append(key)
    if not todo:
        return 0
    results = store.read_many(
        [cell_prefix(run_id, k) + RESULT_FILE for k in todo if finished[k]["status"] == "succeeded"]
    )
    read_log = _bucket_reader(store)

    def write(key: str) -> None:
        rec = dict(finished[key])
        prefix = cell_prefix(run_id, key)
        if rec["status"] == "succeeded":
            raw = results.get(prefix + RESULT_FILE)
            try:
                if raw is None:
                    raise ArtifactError(
                        f"exited 0 but wrote no {RESULT_FILE} in its output directory (or Argo did "
                        "not upload it: check the artifact repository)"
                    )
                rec["metrics"] = parse_result(raw, metric)["metrics"]
            except ArtifactError as err:
                rec.update(status="failed", reason=str(err))
        if rec.get("log_key"):
            data = read_log(str(rec["log_key"]))
            if data is not None:
                store.put(prefix + LOG_FILE, data)
        store.put_json(prefix + RUN_FILE, rec)  # the completion marker, last

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="expkit-sync") as pool:
        list(pool.map(write, todo))
    log.info("run %s: synced %d cell records into %s", run_id, len(todo), store.url)
    return len(todo)


def _update_manifest(store: RunStore, run_id: str, manifest: dict[str, Any], status: RunStatus) -> None:
    stored = store.cell_records(run_id)
    succeeded = sum(1 for r in stored.values() if r.get("status") == "succeeded")
    total = int(manifest.get("cells") or status.total)
    if status.done:
        manifest["status"] = "complete" if succeeded == total else ("partial" if len(stored) < total else "failed")
        manifest["ended_at"] = max((w.finished_at or "" for w in status.workflows), default="") or utc_now()
    else:
        manifest["status"] = "running"
    manifest["counts"] = {
        "total": total,
        "succeeded": succeeded,
        "failed": len(stored) - succeeded,
        "missing": total - len(stored),
    }
    cluster = manifest.setdefault("cluster", {})
    entries = {e.get("name"): e for e in cluster.setdefault("workflows", []) if isinstance(e, dict)}
    for w in status.workflows:
        entry = entries.get(w.name)
        if entry is None:
            entry = {"name": w.name}
            cluster["workflows"].append(entry)
        entry.update(phase=w.phase, message=w.message, started_at=w.started_at, finished_at=w.finished_at)
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)


def sync_run(argo: ArgoClient, store: RunStore, run_id: str) -> RunStatus:
    """Read the run's workflows and write every finished cell's ``run.json`` into the store; update the
    manifest's status and counts. Returns the status (``synced``: records written now)."""
    manifest = store.manifest(run_id)
    status = collect_status(argo, run_id, total=manifest.get("cells"))
    status.synced = sync_cells(store, run_id, status.records, metric=(manifest.get("metric") or {}).get("name"))
    _update_manifest(store, run_id, manifest, status)
    return status


def watch_run(
    argo: ArgoClient,
    store: RunStore | None,
    run_id: str,
    workflow: str,
    on_update: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Follow ``workflow`` of run ``run_id`` until it finishes, calling ``on_update`` with the run's status on
    every change; then sync the cells into ``store`` (when given) and return the final status."""
    earlier = [w for w in argo.run_workflows(run_id) if (w.get("metadata") or {}).get("name") != workflow]
    total = None
    if store is not None:
        try:
            total = store.manifest(run_id).get("cells")
        except ExpkitError:
            total = None

    def changed(obj: dict[str, Any]) -> None:
        if on_update is not None:
            on_update(status_from_workflows(run_id, [*earlier, obj], total))

    final = argo.watch_workflow(workflow, changed)
    if store is None:
        return status_from_workflows(run_id, [*earlier, final], total)
    return sync_run(argo, store, run_id)


# ---------------------------------------------------------------------------------------------
# Stop, retry
# ---------------------------------------------------------------------------------------------


def stop_run(argo: ArgoClient, run_id: str) -> list[str]:
    """Stop every unfinished workflow of the run (``spec.shutdown: Stop``: running pods are stopped, nothing
    new starts, exit handlers run). Returns the names of the workflows stopped."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise WorkflowNotFound(
            f"no workflow of run {run_id!r} in namespace {argo.namespace!r} on "
            f"{argo.target.describe()}: check --namespace and --context"
        )
    stopped = []
    for wf in workflows:
        name = (wf.get("metadata") or {}).get("name")
        if ((wf.get("status") or {}).get("phase") or "") in DONE_PHASES:
            continue
        argo.patch_workflow(name, {"spec": {"shutdown": "Stop"}})
        stopped.append(name)
    return stopped


def retry_run(argo: ArgoClient, store: RunStore, run_ref: str, *, expkit_image: str | None = None) -> Submission | None:
    """Resubmit only the cells of run ``run_ref`` that failed or never finished, as a new workflow writing into
    the same run id (finished cells are kept). ``None`` when every cell succeeded."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    if manifest.get("executor") != "argo":
        raise InputError(
            f"run {run_id} ran with the {manifest.get('executor')} executor, not on Argo: rerun its "
            f"failed cells with 'expkit run --resume {run_id} --rerun-failed'"
        )
    workflows = argo.run_workflows(run_id)
    busy = [w for w in workflows if ((w.get("status") or {}).get("phase") or "") not in DONE_PHASES]
    if busy:
        name = (busy[0].get("metadata") or {}).get("name")
        phase = (busy[0].get("status") or {}).get("phase") or "Pending"
        raise InputError(
            f"workflow {name} of run {run_id} is still {phase}: wait for it ('expkit status {run_id}') "
            f"or stop it ('expkit stop {run_id}') first"
        )
    if workflows:
        sync_run(argo, store, run_id)
    loaded = load_spec_text(store.spec_text(run_id), path=Path(f"{store.url}/{run_id}/{SPEC_KEY}"))
    check_images(loaded, f"{store.url}/{run_id}/{SPEC_KEY}")
    done = {k for k, r in store.cell_records(run_id).items() if r.get("status") == "succeeded"}
    todo = [c.key for c in build_matrix(loaded.experiment) if c.key not in done]
    if not todo:
        return None
    base = f"{run_id}-retry-"[:58]
    doc = render_workflow(
        loaded,
        run_id,
        namespace=argo.namespace,
        expkit_image=expkit_image,
        key_prefix=_key_prefix(store),
        cells=todo,
        generate_name=base,
    )
    # Stale attempts go first, so a reader never sees an old run.json next to the new attempt's files.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="expkit-retry") as pool:
        list(pool.map(lambda k: store.delete(cell_prefix(run_id, k)), todo))
    created = argo.create_workflow(doc)
    manifest.setdefault("cluster", {}).setdefault("workflows", []).append(_workflow_entry(created, "retry", len(todo)))
    manifest["status"] = "submitted"
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    name = (created.get("metadata") or {}).get("name") or base
    log.info("retry of %s: workflow %s, %d cells", run_id, name, len(todo))
    return Submission(
        run_id, name, argo.namespace, argo.target.context, argo.target.server, len(todo), store.url, retry=True
    )


# ---------------------------------------------------------------------------------------------
# Logs, listing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPod:
    """One pod of a cell (one attempt)."""

    cell: str
    pod: str
    workflow: str
    phase: str
    node: str | None
    attempt: int
    created_at: str


def cell_pods(
    argo: ArgoClient,
    run_id: str,
    *,
    algorithm: str | None = None,
    dataset: str | None = None,
    replicate: int | None = None,
) -> list[CellPod]:
    """The pods of the run's cells (found by the ``workflows.argoproj.io/workflow`` label of each of the run's
    workflows and the ``expkit.io/cell`` annotation), filtered, in cell order then attempt order. Pods of
    succeeded cells are usually gone (``podGC: OnPodSuccess``): their logs are in the store's ``log.txt``."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise WorkflowNotFound(
            f"no workflow of run {run_id!r} in namespace {argo.namespace!r} on "
            f"{argo.target.describe()}: check --namespace and --context"
        )
    found: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for wf in workflows:
        wf_name = (wf.get("metadata") or {}).get("name")
        for pod in argo.list_pods(f"{WORKFLOW_LABEL}={wf_name}"):
            meta = pod.get("metadata") or {}
            cell = (meta.get("annotations") or {}).get(CELL_ANNOTATION)
            if not cell or cell.count("/") != 2:
                continue
            alg, ds, rep = cell.split("/")
            if (
                (algorithm is not None and alg != algorithm)
                or (dataset is not None and ds != dataset)
                or (replicate is not None and rep != str(replicate))
            ):
                continue
            found.setdefault(cell, []).append((meta.get("creationTimestamp") or "", pod, wf_name))
    out: list[CellPod] = []
    for cell in sorted(
        found,
        key=lambda c: (c.split("/")[0], c.split("/")[1], int(c.split("/")[2]) if c.split("/")[2].isdigit() else 0),
    ):
        attempts = sorted(found[cell], key=lambda t: (t[0], t[1]["metadata"]["name"]))
        for attempt, (created, pod, wf_name) in enumerate(attempts, 1):
            phase = str((pod.get("status") or {}).get("phase") or "")
            out.append(
                CellPod(
                    cell,
                    pod["metadata"]["name"],
                    wf_name,
                    phase,
                    (pod.get("spec") or {}).get("nodeName"),
                    attempt,
                    created,
                )
            )
    return out


@dataclass(frozen=True)
class ClusterWorkflow:
    """An expkit workflow in the namespace (``expkit list --cluster``)."""

    run_id: str
    workflow: str
    experiment: str
    phase: str
    progress: str | None
    started_at: str | None
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_cluster_runs(argo: ArgoClient) -> list[ClusterWorkflow]:
    """Workflows carrying the expkit labels in the namespace, newest first."""
    out = []
    for wf in argo.list_workflows(LABEL_RUN_ID):
        meta = wf.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = wf.get("status") or {}
        out.append(
            ClusterWorkflow(
                labels.get(LABEL_RUN_ID, ""),
                meta.get("name", ""),
                labels.get(LABEL_EXPERIMENT, ""),
                status.get("phase") or "Pending",
                status.get("progress"),
                status.get("startedAt") or meta.get("creationTimestamp"),
                status.get("finishedAt"),
            )
        )
    return sorted(out, key=lambda w: (w.started_at or "", w.workflow), reverse=True)


__all__ = [
    "ArgoClient",
    "ArgoNotInstalled",
    "CellPod",
    "ClusterAuthError",
    "ClusterConfigError",
    "ClusterError",
    "ClusterTarget",
    "ClusterUnreachable",
    "ClusterWorkflow",
    "RunStatus",
    "Submission",
    "WorkflowConflict",
    "WorkflowNotFound",
    "WorkflowRejected",
    "cell_pods",
    "check_images",
    "collect_status",
    "list_cluster_runs",
    "load_target",
    "retry_run",
    "status_from_workflows",
    "stop_run",
    "submit_run",
    "sync_cells",
    "sync_run",
    "watch_run",
]

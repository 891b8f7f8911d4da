"""A TEST DOUBLE of a Kubernetes API server with Argo Workflows installed — for tests only, never a cluster.

:class:`K8sDouble` runs a real HTTP server on 127.0.0.1 in a background thread (its own asyncio event
loop) that speaks enough of the Kubernetes API for the official ``kubernetes`` client and expkit's
Argo client, and plays Argo's workflow controller and the kubelet for the workflows created on it.

Built on KMock (``pip install kmock``): its ``KubernetesEmulator`` provides the aiohttp server, the
parsing of Kubernetes URLs into resource / namespace / name / action, the in-memory object store with
history (``api.objects``), and API discovery (``/api``, ``/apis``, ...); objects it does not know are
served by it too (the workflow-controller Deployment and the Argo CRD, pre-loaded for version
discovery). KMock's emulator does not do what this double needs for workflows and pods, so
:class:`_ArgoApi` extends it through its documented extension point (subclass, override
``_handle``) and answers these resources itself:

* ``workflows.argoproj.io/v1alpha1``: create (``generateName``, ``uid``, ``resourceVersion``,
  ``creationTimestamp``; 409 ``AlreadyExists``), get, list (label and field selectors), watch
  (initial ``ADDED`` events, then changes; ``resourceVersion`` and ``timeoutSeconds`` honoured),
  JSON merge patch, delete. ``fieldValidation=Strict`` is honoured the way the real API server does
  for a custom resource with a structural schema: the body is checked against expkit's vendored
  Argo schema, an unknown field is a **400 BadRequest** ``... cannot be handled as a Workflow:
  strict decoding error: unknown field "spec.x"`` (what ``kube-apiserver`` answers for strict
  decoding errors, with no causes), and a value of the wrong type a **422 Invalid** with the field in
  ``details.causes`` — whatever the fieldValidation. (Argo's default "minimal" CRDs preserve unknown
  fields, so a real cluster catches less; this double behaves like one with Argo's full CRDs.)
* ``/version`` (the client asks for ``/version/``), pods (list with label selectors, get) and pod
  logs (``/log``, with ``follow=true`` streaming until the container exits);
* authentication and RBAC: a bearer token names a user; unknown tokens get 401, verbs the user
  lacks get 403 with the real server's message and ``details``; the Argo CRD can be "uninstalled"
  (404 on the workflows resource) and any verb can be made to fail once or always (:meth:`K8sDouble.fail`).

The controller (:class:`_Controller`) interprets the submitted workflow the way Argo does for the
features expkit renders: DAG templates with ``dependencies``, ``withSequence`` / ``withParam`` /
``withItems`` loops, input defaults, ``{{...}}`` substitution and the integer subset of ``{{=...}}``
expressions, ``retryStrategy`` (a ``Retry`` node with one ``Pod`` child per attempt),
``activeDeadlineSeconds``, ``parallelism``, ``podGC: OnPodSuccess``, ``shutdown: Stop``. Node
names and ids are Argo's (``<wf>.ds-x.alg-y(0:3)``, ``<wf>-<fnv32a(name)>``), pods get the
``workflows.argoproj.io/workflow`` label and the template's labels and annotations, and each Pod
node gets ``hostNodeName`` from a round robin over fake nodes (``node-a``, ``node-b``). Like a
kubelet, it actually runs each container's command — substituted argv and env only, no shell, no
inherited environment, ``python`` being this interpreter, the working directory ``workdir``, each
``emptyDir`` mount a fresh local directory (its mount path rewritten in argv and env) — then uploads
the output artifact directory file by file to the real S3 test server under the artifact's key and
the container log to ``<workflow>/<pod>/main.log`` (the default ``keyFormat``), recording both in
the node's outputs, with the exit code, before marking the node finished.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from expkit.executors.argo import validate as argo_validate

ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"
WORKFLOWS = kmock.resource(ARGO_GROUP, ARGO_VERSION, "workflows")
PODS = kmock.resource("", "v1", "pods")
ADMIN_TOKEN = "expkit-double-admin-" + secrets.token_hex(8)
VIEWER_TOKEN = "expkit-double-viewer-" + secrets.token_hex(8)
SUBMITTER_TOKEN = "expkit-double-submitter-" + secrets.token_hex(8)
SUBMITTER_USER = "alice"
#: A token's permissions: None (cluster admin), a set of verbs (on everything), or RBAC (the Roles bound to
#: the user by RoleBindings in the request's namespace, evaluated like the API server's RBAC authorizer).
RBAC = "rbac"
DONE = ("Succeeded", "Failed", "Error")
STOP_MESSAGE = "Stopped with strategy 'Stop'"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
_VERBS = {"CREATE": "create", "FETCH": "get", "LIST": "list", "WATCH": "watch", "UPDATE": "patch", "DELETE": "delete"}


def now() -> str:
    """Kubernetes timestamps: RFC 3339, whole seconds, UTC."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fnv32a(text: str) -> int:
    """Argo's node-id hash (Go's ``hash/fnv`` New32a)."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


# ---------------------------------------------------------------------------------------------
# Argo's template substitution (the subset expkit renders)
# ---------------------------------------------------------------------------------------------


def _eval_expression(expr: str, scope: Mapping[str, str]) -> Any:
    """An Argo ``{{=...}}`` expression: integer ``+``, ``*``, ``%``, ``asInt(...)`` and variables (int64)."""

    def name_of(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{name_of(node.value)}.{node.attr}"
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            return f"{name_of(node.value)}.{node.slice.value}"
        raise ValueError(f"unsupported expression {expr!r}")

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult, ast.Mod, ast.Sub)):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Mult: lambda: a * b, ast.Mod: lambda: a % b, ast.Sub: lambda: a - b}
            out = ops[type(node.op)]()
            if not -(2**63) <= out < 2**63:
                raise ValueError(f"int64 overflow in {expr!r}")
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("asInt", "int"):
            return int(ev(node.args[0]))
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            return scope[name_of(node)]
        raise ValueError(f"unsupported expression {expr!r}")

    return ev(ast.parse(expr.strip(), mode="eval"))


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """fasttemplate semantics: ``{{`` up to the next ``}}`` is a tag (trimmed), ``{{=...}}`` an expression."""
    out, pos = [], 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        end = text.find("}}", start + 2)
        if end < 0:
            raise ValueError(f"unclosed tag in {text!r}")
        out.append(text[pos:start])
        tag = text[start + 2 : end].strip()
        out.append(str(_eval_expression(tag[1:], scope)) if tag.startswith("=") else scope[tag])
        pos = end + 2


def substitute_all(node: Any, scope: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return substitute(node, scope) if "{{" in node else node
    if isinstance(node, dict):
        return {k: substitute_all(v, scope) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_all(v, scope) for v in node]
    return node


def bind_inputs(template: Mapping[str, Any], arguments: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for param in (template.get("inputs") or {}).get("parameters") or []:
        name = param["name"]
        if name in arguments:
            values[name] = arguments[name]
        elif "default" in param:
            values[name] = param["default"]
        elif "value" in param:
            values[name] = param["value"]
        else:
            raise ValueError(f"input {name!r} of template {template['name']!r} is not supplied")
    return values


def loop_items(task: Mapping[str, Any], scope: Mapping[str, str]) -> list[Any] | None:
    if "withSequence" in task:
        seq = task["withSequence"]
        if "count" in seq:
            return list(range(int(substitute(str(seq["count"]), scope))))
        start, end = int(substitute(str(seq.get("start", 0)), scope)), int(substitute(str(seq["end"]), scope))
        return list(range(start, end + 1))
    if "withParam" in task:
        items = json.loads(substitute(task["withParam"], scope))
        if not isinstance(items, list):
            raise ValueError(f"withParam of {task['name']} is not a JSON list")
        return items
    if "withItems" in task:
        return list(task["withItems"])
    return None


def _item_text(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Selectors, statuses
# ---------------------------------------------------------------------------------------------


def label_match(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(selector: str | None, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        k, _, v = term.replace("==", "=").partition("=")
        actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(k.strip())
        if actual != v.strip():
            return False
    return True


class StatusError(Exception):
    """A Kubernetes ``Status`` failure answer."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, dict(details or {})

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(body, status=status)


@dataclass
class Recorded:
    """A request the double received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Fault:
    verb: str
    resource: str
    status: StatusError
    times: int | None  # None: every time
    after: int = 0  # let this many matching requests through first


@dataclass
class Execution:
    """One container the controller ran (a pod attempt)."""

    workflow: str
    namespace: str
    cell: str | None
    node_name: str
    pod: str
    host: str
    argv: list[str]
    env: dict[str, str]
    exit_code: int | None = None


@dataclass
class _PodLog:
    data: bytearray = field(default_factory=bytearray)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    def finish(self) -> None:
        self.done = True
        self.changed.set()


# ---------------------------------------------------------------------------------------------
# The API server
# ---------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _ArgoApi(kmock.KubernetesEmulator):
    """KMock's emulator, with workflows, pods, logs, auth and faults answered by the double (see the module)."""

    double: Any = None
    _rv: int = 0
    _watchers: list = attrs.field(factory=list)
    _logs: dict = attrs.field(factory=dict)

    # -- plumbing -----------------------------------------------------------------------------------
    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def publish(self, resource: Any, kind: str, obj: Mapping[str, Any]) -> None:
        for queue, res, match in list(self._watchers):
            if res == resource and match(obj):
                queue.put_nowait({"type": kind, "object": copy.deepcopy(dict(obj))})

    def items(self, resource: Any, namespace: str | None) -> list[dict[str, Any]]:
        out = []
        for (res, ns, _), obj in self.objects.items():
            if res == resource and not obj.deleted and (namespace is None or ns == namespace):
                out.append(copy.deepcopy(obj.raw))
        return out

    def get_object(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def put_object(self, resource: Any, namespace: str, name: str, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        """Store a new version (bumping resourceVersion) and tell the watchers."""
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = self.next_rv()
        key = (resource, namespace, name)
        if key not in self.objects:
            self.objects[key] = obj
        elif self.objects[key].deleted:
            self.objects[key].create(obj)
        else:
            history = self.objects[key].history
            history.append(obj)
            if len(history) > 8:
                del history[:-8]
        self.publish(resource, kind, obj)
        return obj

    def remove_object(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        last = copy.deepcopy(self.objects[key].raw)
        last["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[key].delete()
        self.publish(resource, "DELETED", last)
        return last

    def pod_log(self, pod: str) -> _PodLog:
        return self._logs.setdefault(pod, _PodLog())

    # -- request dispatch ---------------------------------------------------------------------------
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        double = self.double
        double.requests.append(
            Recorded(
                str(request.method.value),
                request.url.path,
                dict(request.params),
                dict(request.headers),
                bytes(request.body),
            )
        )
        try:
            if request.url.path.rstrip("/") == "/version":
                self._authenticate(request)
                return _json(double.version_info())
            user, allowed = self._authenticate(request)
            if request.url.path.rstrip("/") == f"/apis/{ARGO_GROUP}/{ARGO_VERSION}":
                return _argo_discovery(double)
            res = request.resource
            is_workflows = res is not None and res.group == ARGO_GROUP and res.plural == "workflows"
            is_pods = res is not None and res.group == "" and res.plural == "pods"
            if res is not None and res.group == ARGO_GROUP and not double.crd_installed:
                raise StatusError(404, "NotFound", "the server could not find the requested resource")
            if is_workflows or is_pods:
                verb = (
                    "get"
                    if request.subresource == "log"
                    else _VERBS.get(str(getattr(request.action, "name", "")), "get")
                )
                plural = "pods/log" if request.subresource == "log" else res.plural
                self._authorize(user, allowed, verb, res, plural, request)
                self._inject_faults(verb, plural)
                if is_workflows:
                    return await self._workflows(request, verb)
                return await self._pods(request, verb)
            if is_core(res):  # namespaces, secrets, deployments, ... (see "Core resources" below)
                return await _core_request(self, request, user, allowed)
            return await super()._handle(request)
        except StatusError as err:
            return _json(err.body(), err.code)

    def _authenticate(self, request: kmock.Request) -> tuple[str, set[str] | None]:
        header = request.headers.get("Authorization") or request.headers.get("authorization") or ""
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        user = self.double.tokens.get(token) if token else None
        if user is None:
            raise StatusError(401, "Unauthorized", "Unauthorized")
        return user

    def _authorize(
        self, user: str, allowed: set[str] | None, verb: str, res: Any, plural: str, request: kmock.Request
    ) -> None:
        if allowed is None or (allowed != RBAC and verb in allowed):
            return
        if allowed == RBAC and _rbac_allows(self, user, verb, res.group, plural, request.namespace, request.name):
            return
        group = res.group
        what = f"{plural}.{group}" if group else plural
        subject = f'{what} "{request.name}"' if request.name else what
        scope = f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
        details = {"group": group, "kind": plural.split("/")[0]}
        if request.name:
            details["name"] = request.name
        raise StatusError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{plural}" in API group "{group}"{scope}',
            details,
        )

    def _inject_faults(self, verb: str, plural: str) -> None:
        for fault in list(self.double.faults):
            if fault.verb == verb and fault.resource == plural:
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.double.faults.remove(fault)
                raise fault.status

    # -- workflows ----------------------------------------------------------------------------------
    async def _workflows(self, request: kmock.Request, verb: str) -> aiohttp.web.StreamResponse:
        ns = request.namespace
        if verb == "create":
            return _json(self._create_workflow(request, ns), 201)
        if verb == "list":
            items = [
                o
                for o in self.items(WORKFLOWS, ns)
                if label_match(request.params.get("labelSelector"), o["metadata"].get("labels") or {})
                and field_match(request.params.get("fieldSelector"), o)
            ]
            return _json(
                {
                    "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
                    "kind": "WorkflowList",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": items,
                }
            )
        if verb == "watch":
            return await self._watch(request, WORKFLOWS, ns)
        obj = self.get_object(WORKFLOWS, ns, request.name)
        if obj is None:
            raise StatusError(
                404,
                "NotFound",
                f'workflows.{ARGO_GROUP} "{request.name}" not found',
                {"name": request.name, "group": ARGO_GROUP, "kind": "workflows"},
            )
        if verb == "get":
            return _json(obj)
        if verb == "patch":
            return _json(self._patch_workflow(request, ns, obj))
        if verb == "delete":
            self.double.controller.cancel(ns, request.name)
            self.remove_object(WORKFLOWS, ns, request.name)
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": request.name,
                        "group": ARGO_GROUP,
                        "kind": "workflows",
                        "uid": obj["metadata"].get("uid"),
                    },
                }
            )
        raise StatusError(405, "MethodNotAllowed", f"{verb} is not supported on workflows by this double")

    def _check(self, doc: dict[str, Any], name: str, strict: bool) -> None:
        """The API server's decoding of a Workflow against the CRD's schema (see the module docstring)."""
        body = {k: v for k, v in doc.items() if k != "status"}
        schema = self.double.schema()
        problem = argo_validate._SchemaChecker(schema).check(body, schema, ())
        if problem is None:
            return
        path = argo_validate._fmt(problem[0])
        if problem[1].startswith("unknown field"):
            if strict:
                raise StatusError(
                    400,
                    "BadRequest",
                    f'Workflow in version "{ARGO_VERSION}" cannot be handled as a '
                    f'Workflow: strict decoding error: unknown field "{path}"',
                )
            return  # (a real server would prune it; the double keeps it)
        raise StatusError(
            422,
            "Invalid",
            f'Workflow.{ARGO_GROUP} "{name}" is invalid: {path}: Invalid value: {problem[1]}',
            {
                "name": name,
                "group": ARGO_GROUP,
                "kind": "Workflow",
                "causes": [{"reason": "FieldValueInvalid", "message": f"Invalid value: {problem[1]}", "field": path}],
            },
        )

    def _create_workflow(self, request: kmock.Request, ns: str) -> dict[str, Any]:
        doc = request.data
        if not isinstance(doc, dict):
            raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
        meta = doc.setdefault("metadata", {})
        if meta.get("namespace") not in (None, ns):
            raise StatusError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        name = meta.get("name")
        if not name and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
            while True:
                name = meta["generateName"][:58] + "".join(secrets.choice(alphabet) for _ in range(5))
                if self.get_object(WORKFLOWS, ns, name) is None:
                    break
        if not name:
            raise StatusError(
                422,
                "Invalid",
                "Workflow.argoproj.io is invalid: metadata.name: Required value: name or generateName is required",
                {
                    "kind": "Workflow",
                    "group": ARGO_GROUP,
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: name or generateName is required",
                            "field": "metadata.name",
                        }
                    ],
                },
            )
        self._check(doc, name, request.params.get("fieldValidation") == "Strict")
        _core_preload(self)
        if self.get_object(core_resource("namespaces"), None, ns) is None:  # the NamespaceLifecycle admission
            raise _core_not_found("namespaces", "", ns)
        if self.get_object(WORKFLOWS, ns, name) is not None:
            raise StatusError(
                409,
                "AlreadyExists",
                f'workflows.{ARGO_GROUP} "{name}" already exists',
                {"name": name, "group": ARGO_GROUP, "kind": "workflows"},
            )
        meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        stored = self.put_object(WORKFLOWS, ns, name, doc, "ADDED")
        self.double.controller.start(ns, name)
        return stored

    def _patch_workflow(self, request: kmock.Request, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        patch = request.data
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if isinstance(patch, list) or ctype == "application/json-patch+json":
            import jsonpatch

            new = jsonpatch.apply_patch(obj, patch)
        elif isinstance(patch, dict):
            from kmock._internal.dicts import merge_patch_dict

            new = copy.deepcopy(dict(merge_patch_dict(obj, patch)))
        else:
            raise StatusError(400, "BadRequest", "the patch is neither a JSON merge patch nor a JSON patch")
        self._check(new, request.name, request.params.get("fieldValidation") == "Strict")
        stored = self.put_object(WORKFLOWS, ns, request.name, new, "MODIFIED")
        if (new.get("spec") or {}).get("shutdown"):
            self.double.controller.shutdown(ns, request.name)
        return stored

    async def _watch(self, request: kmock.Request, resource: Any, ns: str | None) -> aiohttp.web.StreamResponse:
        labels, fields_ = request.params.get("labelSelector"), request.params.get("fieldSelector")

        def match(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (
                (ns is None or meta.get("namespace") == ns)
                and label_match(labels, meta.get("labels") or {})
                and field_match(fields_, obj)
            )

        try:
            since = int(request.params.get("resourceVersion") or 0)
        except ValueError:
            since = 0
        timeout = float(request.params.get("timeoutSeconds") or 1800)
        queue: asyncio.Queue = asyncio.Queue()
        initial = [o for o in self.items(resource, ns) if match(o) and int(o["metadata"]["resourceVersion"]) > since]
        entry = (queue, resource, match)
        self._watchers.append(entry)
        loop = asyncio.get_running_loop()

        async def events() -> Any:
            try:
                yield b""  # send the headers now
                for obj in initial:
                    yield {"type": "ADDED", "object": obj}
                deadline = loop.time() + timeout
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        yield await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        return
            finally:
                if entry in self._watchers:
                    self._watchers.remove(entry)

        return await kmock.Response(status=200, headers={"Content-Type": "application/json"}, payload=events())(request)

    # -- pods -----------------------------------------------------------------------------------------
    async def _pods(self, request: kmock.Request, verb: str) -> aiohttp.web.StreamResponse:
        ns = request.namespace
        if verb == "list":
            items = [
                o
                for o in self.items(PODS, ns)
                if label_match(request.params.get("labelSelector"), o["metadata"].get("labels") or {})
            ]
            return _json(
                {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": str(self._rv)}, "items": items}
            )
        if verb == "watch":
            return await self._watch(request, PODS, ns)
        obj = self.get_object(PODS, ns, request.name)
        if obj is None:
            raise StatusError(
                404, "NotFound", f'pods "{request.name}" not found', {"name": request.name, "kind": "pods"}
            )
        if request.subresource != "log":
            return _json(obj)
        plog = self.pod_log(request.name)
        if request.params.get("follow") != "true":
            return aiohttp.web.Response(body=bytes(plog.data), content_type="text/plain")

        async def chunks() -> Any:
            yield b""
            sent = 0
            while True:
                plog.changed.clear()
                if len(plog.data) > sent:
                    chunk = bytes(plog.data[sent:])
                    sent += len(chunk)
                    yield chunk
                if plog.done and sent >= len(plog.data):
                    return
                await plog.changed.wait()

        return await kmock.Response(status=200, headers={"Content-Type": "text/plain"}, payload=chunks())(request)


# ---------------------------------------------------------------------------------------------
# The controller (Argo's workflow-controller + a kubelet)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    namespace: str
    name: str
    spec: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    semaphore: asyncio.Semaphore
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    procs: set = field(default_factory=set)
    task: asyncio.Task | None = None


class _Controller:
    def __init__(self, double: K8sDouble) -> None:
        self.double = double
        self.runs: dict[tuple[str, str], _Run] = {}
        self._host_turn = 0

    @property
    def api(self) -> _ArgoApi:
        return self.double.api

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, ns: str, name: str) -> None:
        if not self.double.controller_enabled:
            return
        wf = self.api.get_object(WORKFLOWS, ns, name)
        spec = wf["spec"]
        run = _Run(
            ns,
            name,
            spec,
            {t["name"]: t for t in spec["templates"]},
            asyncio.Semaphore(spec.get("parallelism") or self.double.parallelism),
        )
        self.runs[(ns, name)] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run))

    def shutdown(self, ns: str, name: str) -> None:
        run = self.runs.get((ns, name))
        if run is not None:
            run.stop.set()

    def cancel(self, ns: str, name: str) -> None:
        run = self.runs.pop((ns, name), None)
        if run is not None:
            run.stop.set()
            if run.task is not None:
                run.task.cancel()

    # -- status --------------------------------------------------------------------------------------
    def _flush(self, run: _Run, **fields_: Any) -> None:
        wf = self.api.get_object(WORKFLOWS, run.namespace, run.name)
        if wf is None:
            return
        status = wf.setdefault("status", {})
        status.update(fields_)
        status["nodes"] = copy.deepcopy(run.nodes)
        pods = [n for n in run.nodes.values() if n["type"] == "Pod"]
        status["progress"] = f"{sum(1 for n in pods if n['phase'] == 'Succeeded')}/{len(pods)}"
        self.api.put_object(WORKFLOWS, run.namespace, run.name, wf, "MODIFIED")

    def _node(
        self,
        run: _Run,
        name: str,
        kind: str,
        template: str | None,
        parent: str | None,
        boundary: str | None,
        inputs: Mapping[str, str] | None = None,
        phase: str = "Running",
    ) -> dict[str, Any]:
        node_id = run.name if name == run.name else f"{run.name}-{fnv32a(name)}"
        node = {
            "id": node_id,
            "name": name,
            "displayName": name.rsplit(".", 1)[-1],
            "type": kind,
            "phase": phase,
            "startedAt": now(),
        }
        if template:
            node["templateName"] = template
        if boundary:
            node["boundaryID"] = boundary
        if inputs:
            node["inputs"] = {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]}
        run.nodes[node_id] = node
        if parent is not None:
            run.nodes[parent].setdefault("children", []).append(node_id)
        return node

    def _done(self, run: _Run, node: dict[str, Any], phase: str, message: str | None = None) -> None:
        node.update(phase=phase, finishedAt=now())
        if message:
            node["message"] = message

    # -- the workflow ---------------------------------------------------------------------------------
    async def _run(self, run: _Run) -> None:
        root = self._node(run, run.name, "DAG", run.spec["entrypoint"], None, None)
        self._flush(run, phase="Running", startedAt=root["startedAt"])
        try:
            phase = await self._template(run, run.spec["entrypoint"], {}, run.name, run.name, None)
            self._done(run, root, phase)
            if run.spec.get("onExit"):
                await self._template(run, run.spec["onExit"], {}, f"{run.name}.onExit", run.name, run.name)
            message = None
            if run.stop.is_set():
                phase, message = "Failed", STOP_MESSAGE
            elif phase != "Succeeded":
                failed = [n["name"] for n in run.nodes.values() if n["type"] == "Pod" and n["phase"] != "Succeeded"]
                message = f"child '{failed[0]}' failed" if failed else "a task failed"
            self._flush(run, phase=phase, finishedAt=now(), message=message)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a broken workflow is an Error phase, as in Argo
            self._flush(run, phase="Error", finishedAt=now(), message=f"{err.__class__.__name__}: {err}")
            self.double.errors.append(err)

    async def _template(
        self, run: _Run, name: str, inputs: Mapping[str, str], node_name: str, parent: str, boundary: str | None
    ) -> str:
        tmpl = run.templates[name]
        if "dag" in tmpl:
            node = (
                run.nodes[run.name]
                if node_name == run.name
                else self._node(run, node_name, "DAG", name, parent, boundary, inputs)
            )
            phase = await self._dag(run, tmpl, inputs, node_name, node["id"])
            if node_name != run.name:
                self._done(run, node, phase)
            return phase
        if "container" not in tmpl:
            raise ValueError(f"template {name!r}: only dag and container templates are supported by the double")
        strategy = tmpl.get("retryStrategy")
        if not strategy:
            return await self._pod(run, tmpl, inputs, node_name, parent, boundary)
        node = self._node(run, node_name, "Retry", name, parent, boundary, inputs)
        limit = int(strategy.get("limit", 0))
        phase = "Failed"
        for attempt in range(limit + 1):
            phase = await self._pod(run, tmpl, inputs, f"{node_name}({attempt})", node["id"], boundary)
            if phase == "Succeeded" or run.stop.is_set():
                break
        last = run.nodes[node["children"][-1]] if node.get("children") else {}
        self._done(run, node, phase, last.get("message") if phase != "Succeeded" else None)
        if "children" in node:
            node["outputs"] = copy.deepcopy(last.get("outputs") or {})
            node["hostNodeName"] = last.get("hostNodeName")
        self._flush(run)
        return phase

    async def _dag(
        self, run: _Run, tmpl: Mapping[str, Any], inputs: Mapping[str, str], node_name: str, node_id: str
    ) -> str:
        scope = self._scope(run, inputs)
        results: dict[str, str] = {}
        remaining = list(tmpl["dag"]["tasks"])
        while remaining:
            ready = [t for t in remaining if all(d in results for d in t.get("dependencies") or [])]
            remaining = [t for t in remaining if t not in ready]
            phases = await asyncio.gather(*(self._task(run, t, scope, node_name, node_id, results) for t in ready))
            results.update({t["name"]: p for t, p in zip(ready, phases)})
        # continueOn: {failed: true} — a failed task does not fail the DAG (its node stays Failed)
        tolerated = {t["name"] for t in tmpl["dag"]["tasks"] if (t.get("continueOn") or {}).get("failed")}
        failed = [n for n, p in results.items() if p not in ("Succeeded", "Skipped") and n not in tolerated]
        return "Failed" if failed else "Succeeded"

    async def _task(
        self,
        run: _Run,
        task: Mapping[str, Any],
        scope: Mapping[str, str],
        parent_name: str,
        boundary: str,
        results: Mapping[str, str],
    ) -> str:
        name = f"{parent_name}.{task['name']}"
        if any(results.get(d) != "Succeeded" for d in task.get("dependencies") or []) or run.stop.is_set():
            self._node(run, name, "Skipped", task["template"], boundary, boundary, phase="Omitted")
            return "Omitted"
        target = run.templates[task["template"]]
        items = loop_items(task, scope)
        if items is None:
            args = {
                p["name"]: substitute(p["value"], scope) for p in (task.get("arguments") or {}).get("parameters", [])
            }
            return await self._template(run, task["template"], bind_inputs(target, args), name, boundary, boundary)
        group = self._node(run, name, "TaskGroup", None, boundary, boundary)
        if not items:
            self._done(run, group, "Skipped", "Skipped, empty params")
            return "Skipped"

        async def one(i: int, item: Any) -> str:
            iscope = {**scope, "item": _item_text(item)}
            if isinstance(item, dict):
                iscope.update({f"item.{k}": _item_text(v) for k, v in item.items()})
            args = {
                p["name"]: substitute(p["value"], iscope) for p in (task.get("arguments") or {}).get("parameters", [])
            }
            return await self._template(
                run,
                task["template"],
                bind_inputs(target, args),
                f"{name}({i}:{_item_text(item)})",
                group["id"],
                boundary,
            )

        phases = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        phase = "Succeeded" if all(p == "Succeeded" for p in phases) else "Failed"
        self._done(run, group, phase)
        return phase

    def _scope(self, run: _Run, inputs: Mapping[str, str]) -> dict[str, str]:
        return {
            **{f"inputs.parameters.{k}": v for k, v in inputs.items()},
            "workflow.name": run.name,
            "workflow.namespace": run.namespace,
        }

    # -- one pod (the kubelet part) -------------------------------------------------------------------
    async def _pod(
        self,
        run: _Run,
        tmpl: Mapping[str, Any],
        inputs: Mapping[str, str],
        node_name: str,
        parent: str,
        boundary: str | None,
    ) -> str:
        async with run.semaphore:
            if run.stop.is_set():
                return "Failed"  # never started: no node, like a pod the controller never created
            host = self.double.nodes[self._host_turn % len(self.double.nodes)]
            self._host_turn += 1
            node = self._node(run, node_name, "Pod", tmpl["name"], parent, boundary, inputs)
            node["hostNodeName"] = host
            pod_name = f"{run.name}-{tmpl['name']}-{fnv32a(node_name)}"
            scope = self._scope(run, inputs)
            scope["pod.name"] = pod_name
            self._flush(run)
            meta = substitute_all(tmpl.get("metadata") or {}, scope)
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": run.namespace,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": now(),
                    "labels": {
                        **((run.spec.get("podMetadata") or {}).get("labels") or {}),
                        **(meta.get("labels") or {}),
                        "workflows.argoproj.io/workflow": run.name,
                        "workflows.argoproj.io/completed": "false",
                    },
                    "annotations": {
                        **(meta.get("annotations") or {}),
                        "workflows.argoproj.io/node-name": node_name,
                        "workflows.argoproj.io/node-id": node["id"],
                    },
                },
                "spec": {"nodeName": host, "containers": [{"name": "main", "image": tmpl["container"].get("image")}]},
                "status": {"phase": "Running"},
            }
            self.api.put_object(PODS, run.namespace, pod_name, pod, "ADDED")
            workdir = Path(tempfile.mkdtemp(prefix=f"{pod_name}-", dir=self.double.scratch))
            try:
                rc, message = await self._execute(run, tmpl, scope, pod_name, node_name, host, workdir)
                phase = "Succeeded" if rc == 0 and message is None else "Failed"
                outputs: dict[str, Any] = {"exitCode": str(rc)} if rc is not None else {}
                artifacts = await self._upload(run, tmpl, scope, pod_name, workdir)
                if artifacts:
                    outputs["artifacts"] = artifacts
                parameters = self._output_parameters(tmpl, workdir)
                if parameters:
                    outputs["parameters"] = parameters
                if outputs:
                    node["outputs"] = outputs
                if phase == "Failed" and message is None:
                    message = f"Error (exit code {rc})"
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            self._done(run, node, phase, message)
            pod["status"]["phase"] = phase
            pod["metadata"]["labels"]["workflows.argoproj.io/completed"] = "true"
            self.api.put_object(PODS, run.namespace, pod_name, pod, "MODIFIED")
            if phase == "Succeeded" and (run.spec.get("podGC") or {}).get("strategy") == "OnPodSuccess":
                self.api.remove_object(PODS, run.namespace, pod_name)
            self._flush(run)
            return phase

    def _output_parameters(self, tmpl: Mapping[str, Any], workdir: Path) -> list[dict[str, str]]:
        """Output parameters ``valueFrom.path`` (read from the container's volumes, as Argo's executor does
        after the main container exits, whatever its exit code), else their ``valueFrom.default``."""
        mounts = self._mounts(tmpl, workdir)
        out = []
        for param in (tmpl.get("outputs") or {}).get("parameters") or []:
            source = param.get("valueFrom") or {}
            if "path" not in source:
                continue
            local = Path(self._remap(source["path"], mounts))
            if local.is_file():
                out.append({"name": param["name"], "value": local.read_text(encoding="utf-8")})
            elif "default" in source:
                out.append({"name": param["name"], "value": source["default"]})
        return out

    def _mounts(self, tmpl: Mapping[str, Any], workdir: Path) -> dict[str, Path]:
        mounts = {}
        for m in tmpl["container"].get("volumeMounts") or []:
            local = workdir / "volumes" / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = local
        return mounts

    @staticmethod
    def _remap(text: str, mounts: Mapping[str, Path]) -> str:
        for path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, str(local))
        return text

    async def _execute(
        self,
        run: _Run,
        tmpl: Mapping[str, Any],
        scope: Mapping[str, str],
        pod_name: str,
        node_name: str,
        host: str,
        workdir: Path,
    ) -> tuple[int | None, str | None]:
        ctr = tmpl["container"]
        mounts = self._mounts(tmpl, workdir)
        argv = [
            self._remap(substitute(a, scope), mounts) for a in [*(ctr.get("command") or []), *(ctr.get("args") or [])]
        ]
        env = {e["name"]: self._remap(substitute(e.get("value", ""), scope), mounts) for e in ctr.get("env") or []}
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
            if ctr.get("image") in self.double.images_without_python:  # as a kubelet reports a missing executable
                argv[0] = str(workdir / "no-python-in-this-image" / "python3")
        execution = Execution(
            run.name, run.namespace, env.get("EXPKIT_CELL"), node_name, pod_name, host, argv, dict(env)
        )
        self.double.executions.append(execution)
        plog = self.api.pod_log(pod_name)
        proc_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "LANG": "C.UTF-8", **env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(self.double.workdir or workdir),
                env=proc_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            plog.add(f"exec failed: {err}\n".encode())
            plog.finish()
            return None, f"failed to start the container: {err}"
        run.procs.add(proc)

        async def pump() -> None:
            while chunk := await proc.stdout.read(4096):
                plog.add(chunk)

        reader = asyncio.get_running_loop().create_task(pump())
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(run.stop.wait())
        message = None
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=tmpl.get("activeDeadlineSeconds"), return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                message = STOP_MESSAGE if stopper in done else DEADLINE_MESSAGE
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await waiter
        finally:
            stopper.cancel()
            run.procs.discard(proc)
            await reader
            plog.finish()
        execution.exit_code = proc.returncode
        return proc.returncode, message

    async def _upload(
        self, run: _Run, tmpl: Mapping[str, Any], scope: Mapping[str, str], pod_name: str, workdir: Path
    ) -> list[dict[str, Any]]:
        repo = self.double.artifacts
        if repo is None:
            return []
        mounts = self._mounts(tmpl, workdir)
        out = []
        for art in (tmpl.get("outputs") or {}).get("artifacts") or []:
            key = substitute(art["s3"]["key"], scope)
            local = Path(self._remap(art["path"], mounts))
            files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
            for path in files:
                await asyncio.to_thread(repo.put, f"{key}/{path.relative_to(local).as_posix()}", path.read_bytes())
            if local.is_file():  # a file artifact with archive: none is uploaded as the key itself
                files = [local]
                await asyncio.to_thread(repo.put, key, local.read_bytes())
            if files or not art.get("optional"):
                out.append({"name": art["name"], "path": art["path"], "s3": {"key": key}})
        if (tmpl.get("archiveLocation") or {}).get("archiveLogs"):
            key = f"{run.name}/{pod_name}/main.log"
            await asyncio.to_thread(repo.put, key, bytes(self.api.pod_log(pod_name).data))
            out.append({"name": "main-logs", "s3": {"key": key}})
        return out


# ---------------------------------------------------------------------------------------------
# The double, in a background thread
# ---------------------------------------------------------------------------------------------


class K8sDouble:
    """The test double's public face: start it, point a kubeconfig at :attr:`url`, inspect what happened.

    ``artifacts`` is the artifact repository (a run store on the bucket's root: ``put(key, data)``);
    ``workdir`` the containers' working directory (the "image's"); ``nodes`` the fake Kubernetes nodes.
    Knobs: :attr:`crd_installed`, :attr:`unknown_fields` (schema fields this "cluster's Argo" lacks),
    :meth:`fail`; records: :attr:`requests`, :attr:`executions`, :attr:`errors`.
    """

    def __init__(
        self,
        *,
        artifacts: Any = None,
        workdir: str | Path | None = None,
        nodes: Iterable[str] = ("node-a", "node-b"),
        parallelism: int = 4,
        server_version: str = "v1.31.2+double",
        argo_version: str = "v3.6.4",
        scratch: str | Path | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.workdir = Path(workdir) if workdir else None
        self.nodes = list(nodes)
        self.parallelism = parallelism
        self.server_version = server_version
        self.argo_version = argo_version
        self.tokens: dict[str | None, tuple[str, set[str] | None]] = {
            ADMIN_TOKEN: ("admin", None),
            VIEWER_TOKEN: ("viewer", {"get", "list", "watch"}),
            SUBMITTER_TOKEN: (SUBMITTER_USER, RBAC),
        }
        self.crd_installed = True
        self.controller_enabled = True
        self.workloads_ready = True  # core workloads (Deployment, StatefulSet, Job) report ready when written
        self.claims_bound = True  # a new PVC is bound at once (False: it stays Pending, as with no provisioner)
        #: A deleted PVC keeps a deletionTimestamp (the pvc-protection finalizer, while a pod still uses it) for
        #: this many seconds before it goes; 0: at once; None: until the test removes it.
        self.claim_release_seconds: float | None = 0
        self.unknown_fields: set[tuple[str, str]] = set()  # ($defs name, property) removed from the schema
        self.images_without_python: set[str] = set()  # images whose "python"/"python3" cannot be started
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.executions: list[Execution] = []
        self.errors: list[BaseException] = []
        self._scratch_owned = scratch is None
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="k8s-double-"))
        self.controller = _Controller(self)
        self.api: _ArgoApi | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> K8sDouble:
        self._thread = threading.Thread(target=self._serve, name="k8s-double", daemon=True)
        self._thread.start()
        if not self._ready.wait(20) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes test double did not start: {self._failure}")
        return self

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported by start()
            self._failure = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.api = _ArgoApi(double=self)
        self._preload()
        async with self.api, kmock.Server(self.api, host="127.0.0.1") as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()
            for run in list(self.controller.runs.values()):
                run.stop.set()
                for proc in list(run.procs):  # no container outlives the double
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if run.task is not None:
                    run.task.cancel()
            await asyncio.sleep(0)

    def _preload(self) -> None:
        """What version discovery reads: the controller Deployment (argo namespace) and the Argo CRD."""
        self.api.objects["apps/v1/deployments", "argo", "workflow-controller"] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "workflow-controller", "namespace": "argo"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "workflow-controller",
                                "image": f"quay.io/argoproj/workflow-controller:{self.argo_version}",
                            }
                        ]
                    }
                }
            },
        }
        self.api.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, "workflows.argoproj.io"] = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "workflows.argoproj.io", "labels": {"app.kubernetes.io/part-of": "argo"}},
        }

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
        if self._scratch_owned:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> K8sDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- knobs ----------------------------------------------------------------------------------------
    def version_info(self) -> dict[str, str]:
        major, minor = self.server_version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.server_version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def schema(self) -> dict[str, Any]:
        schema = argo_validate._schema()
        if not self.unknown_fields:
            return schema
        schema = copy.deepcopy(schema)
        for definition, prop in self.unknown_fields:
            schema["$defs"][definition]["properties"].pop(prop, None)
        return schema

    def fail(
        self,
        verb: str,
        status: int,
        reason: str,
        message: str,
        *,
        resource: str = "workflows",
        details: Mapping[str, Any] | None = None,
        times: int | None = 1,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` requests (None: all) to ``verb`` on ``resource`` with this Status
        (after letting ``after`` of them through)."""
        self.faults.append(Fault(verb, resource, StatusError(status, reason, message, details), times, after))

    def reset(self) -> None:
        self.crd_installed = True
        self.controller_enabled = True
        self.workloads_ready = True
        self.claims_bound = True
        self.claim_release_seconds = 0
        self.unknown_fields.clear()
        self.faults.clear()

    # -- reading state (thread-safe: runs on the double's loop) ----------------------------------------
    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def workflows(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.call(lambda: self.api.items(WORKFLOWS, namespace))

    def workflow(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.call(lambda: self.api.get_object(WORKFLOWS, namespace, name))

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.call(lambda: self.api.items(PODS, namespace))

    def running_processes(self) -> int:
        return self.call(lambda: sum(len(r.procs) for r in self.controller.runs.values()))

    def wait(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "the double") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def wait_finished(self, name: str, namespace: str, timeout: float = 30) -> dict[str, Any]:
        self.wait(
            lambda: ((self.workflow(name, namespace) or {}).get("status") or {}).get("phase") in DONE,
            timeout,
            f"workflow {name} to finish",
        )
        return self.workflow(name, namespace)

    def backdate(self, name: str, namespace: str, seconds: float) -> None:
        """Make workflow ``name`` look ``seconds`` older (its ``creationTimestamp``): time passing, for the
        checks that wait a while for a controller."""

        def run() -> None:
            wf = self.api.get_object(WORKFLOWS, namespace, name)
            stamp = datetime.now(timezone.utc).timestamp() - seconds
            wf["metadata"]["creationTimestamp"] = datetime.fromtimestamp(stamp, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            self.api.put_object(WORKFLOWS, namespace, name, wf, "MODIFIED")

        self.call(run)

    def create_namespace(self, name: str) -> None:
        """An administrator's ``kubectl create namespace NAME`` (nothing when it exists)."""
        self.call(lambda: _ensure_namespace(self.api, name))

    def bind_submitter(self, namespace: str, role: str = "expkit-submitter") -> None:
        """An administrator's ``kubectl -n NS create rolebinding alice-expkit --role ROLE --user alice``."""

        def run() -> None:
            res = core_resource("rolebindings")
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{SUBMITTER_USER}-expkit", "namespace": namespace, "uid": str(uuid.uuid4())},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": SUBMITTER_USER}],
            }
            self.api.put_object(res, namespace, binding["metadata"]["name"], binding, "ADDED")

        self.call(run)

    def tls_front(self, directory: str | Path) -> _TlsFront:
        """An HTTPS front of the API server whose certificate is self-signed (an unknown CA): use its ``port``
        as ``kubeconfig(tls_port=...)``; stop it with ``close()``. Needs the ``openssl`` command."""
        return _TlsFront(self.port, Path(directory)).start()

    def credentials_seen(self, secrets_: Iterable[str]) -> list[str]:
        """Which of ``secrets_`` appear in a request body the double received (should be none)."""
        bodies = [r.body for r in list(self.requests)]
        return [s for s in secrets_ if s and any(s.encode() in b for b in bodies)]

    # -- kubeconfig -----------------------------------------------------------------------------------
    def kubeconfig(
        self,
        path: str | Path,
        *,
        namespace: str = "expkit",
        unreachable_port: int | None = None,
        create_namespace: bool = True,
        tls_port: int | None = None,
    ) -> Path:
        """Write a kubeconfig with contexts ``double`` (admin, current), ``viewer`` (read-only), ``submitter``
        (user ``alice``, allowed only what RoleBindings in the namespace grant her), ``stranger`` (a token the
        server does not know), with ``unreachable_port`` ``nowhere`` (nothing listens) and with ``tls_port``
        ``untrusted`` (HTTPS with a certificate no CA in the kubeconfig or the system signed: see
        :meth:`tls_front`). With ``create_namespace`` the contexts' namespace exists (as on a cluster whose
        administrator set the context up); without it, it does not until someone creates it."""
        if create_namespace:
            self.call(lambda: _ensure_namespace(self.api, namespace))
        clusters: list[dict[str, Any]] = [{"name": "double", "cluster": {"server": self.url}}]
        users = [
            {"name": "admin", "user": {"token": ADMIN_TOKEN}},
            {"name": "viewer", "user": {"token": VIEWER_TOKEN}},
            {"name": SUBMITTER_USER, "user": {"token": SUBMITTER_TOKEN}},
            {"name": "stranger", "user": {"token": "not-a-known-token"}},
        ]
        contexts = [
            {"name": n, "context": {"cluster": "double", "user": u, "namespace": namespace}}
            for n, u in (
                ("double", "admin"),
                ("viewer", "viewer"),
                ("submitter", SUBMITTER_USER),
                ("stranger", "stranger"),
            )
        ]
        if tls_port is not None:
            clusters.append({"name": "untrusted", "cluster": {"server": f"https://127.0.0.1:{tls_port}"}})
            contexts.append(
                {"name": "untrusted", "context": {"cluster": "untrusted", "user": "admin", "namespace": namespace}}
            )
        if unreachable_port is not None:
            clusters.append({"name": "nowhere", "cluster": {"server": f"http://127.0.0.1:{unreachable_port}"}})
            contexts.append(
                {"name": "nowhere", "context": {"cluster": "nowhere", "user": "admin", "namespace": namespace}}
            )
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": users,
            "contexts": contexts,
            "current-context": "double",
            "preferences": {},
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        path.chmod(0o600)
        return path


__all__ = [
    "ADMIN_TOKEN",
    "SUBMITTER_TOKEN",
    "SUBMITTER_USER",
    "VIEWER_TOKEN",
    "Execution",
    "K8sDouble",
    "Recorded",
    "bind_inputs",
    "fnv32a",
    "label_match",
    "loop_items",
    "substitute",
    "substitute_all",
]


# ---------------------------------------------------------------------------------------------
# Core resources: what ``expkit cluster install / check / uninstall`` reads and writes
# ---------------------------------------------------------------------------------------------
# The API server's behaviour for namespaces, secrets, configmaps, serviceaccounts, services, PVCs,
# deployments, statefulsets, jobs, PDBs, roles, rolebindings and CRDs (read-only), plus
# SelfSubjectAccessReview: create (201; uid, resourceVersion, creationTimestamp, generation; 409
# AlreadyExists; 404 when the namespace does not exist; Secret ``stringData`` folded into base64
# ``data``; a Service gets a ``clusterIP``), get (404 ``<plural> "<name>" not found``), list (label and
# ``metadata.name`` field selectors, all namespaces when none is given), JSON merge / strategic merge
# patch (a strategic merge patch is applied as a merge patch — enough for expkit's patches; the
# immutable fields of a Job's pod template, a PVC's spec (except growing its storage) and a
# StatefulSet's spec (except replicas, template, updateStrategy, ...) are refused with 422 like the real
# server), delete (a namespace takes its objects with it). The same authentication, RBAC (verbs per
# token) and fault injection as for workflows apply. Like the controllers of a cluster, the double
# settles workloads when they are written: with ``K8sDouble.workloads_ready`` (default True) a
# Deployment/StatefulSet reports all replicas ready and a Job succeeded, otherwise none ready and the
# Job active; a StatefulSet's volumeClaimTemplates get their PVCs (``<claim>-<set>-<i>``), which stay
# when the StatefulSet is deleted. Namespaces default, kube-system, kube-public and argo exist from the
# start.
#
# KMock's URL parser reads ``/api/v1/namespaces`` and ``/api/v1/namespaces/NAME`` as a namespace scope
# with no resource (and fails on the former); :func:`_parse_path` fixes that before it is used.

from kmock._internal import parsing as _kmock_parsing  # noqa: E402 - this section's own import

_kmock_parse_path = _kmock_parsing.parse_path


def _parse_path(path: str) -> Any:
    """``/api/v1/namespaces[/NAME[/status|/finalize]]`` is the Namespace resource itself."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        return _kmock_parsing.ParsedPath(
            "", "v1", "namespaces", None, parts[3] if len(parts) > 3 else None, parts[4] if len(parts) > 4 else None
        )
    return _kmock_parse_path(path)


if getattr(_kmock_parsing.parse_path, "__name__", "") != "_parse_path":
    _kmock_parsing.parse_path = _parse_path

#: (group, plural) -> (kind, namespaced)
CORE_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("", "namespaces"): ("Namespace", False),
    ("", "secrets"): ("Secret", True),
    ("", "configmaps"): ("ConfigMap", True),
    ("", "serviceaccounts"): ("ServiceAccount", True),
    ("", "services"): ("Service", True),
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("apps", "deployments"): ("Deployment", True),
    ("apps", "statefulsets"): ("StatefulSet", True),
    ("batch", "jobs"): ("Job", True),
    ("policy", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
    ("rbac.authorization.k8s.io", "roles"): ("Role", True),
    ("rbac.authorization.k8s.io", "rolebindings"): ("RoleBinding", True),
    ("apiextensions.k8s.io", "customresourcedefinitions"): ("CustomResourceDefinition", False),
    ("storage.k8s.io", "storageclasses"): ("StorageClass", False),
}
_CORE_VERSIONS = {
    "": "v1",
    "apps": "v1",
    "batch": "v1",
    "policy": "v1",
    "rbac.authorization.k8s.io": "v1",
    "apiextensions.k8s.io": "v1",
    "storage.k8s.io": "v1",
}
SSAR = ("authorization.k8s.io", "selfsubjectaccessreviews")
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "argo")
_STATEFULSET_MUTABLE = {
    "replicas",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "ordinals",
}


def core_resource(plural: str) -> Any:
    """The KMock resource key of a core plural (``secrets``, ``deployments``, ...)."""
    for (group, p), _ in CORE_KINDS.items():
        if p == plural:
            return kmock.resource(group, _CORE_VERSIONS[group], plural)
    raise KeyError(plural)


def is_core(res: Any) -> bool:
    return res is not None and ((res.group, res.plural) in CORE_KINDS or (res.group, res.plural) == SSAR)


ARGO_CRDS = (
    "workflows",
    "workflowtaskresults",
    "workflowtemplates",
    "clusterworkflowtemplates",
    "cronworkflows",
    "workfloweventbindings",
    "workflowtasksets",
    "workflowartifactgctasks",
)


def _core_preload(api: _ArgoApi) -> None:
    """Once: the built-in namespaces and Argo's other CRDs. Always: the workflow-controller Deployment
    (pre-loaded in ``argo``) reports one available replica while ``controller_enabled``, none otherwise."""
    double = api.double
    if not getattr(double, "_core_preloaded", False):
        res = core_resource("namespaces")
        for ns in BUILTIN_NAMESPACES:
            if api.get_object(res, None, ns) is None:
                api.put_object(
                    res,
                    None,
                    ns,
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
                        "status": {"phase": "Active"},
                    },
                    "ADDED",
                )
        crds = core_resource("customresourcedefinitions")
        for plural in ARGO_CRDS:
            name = f"{plural}.{ARGO_GROUP}"
            if api.get_object(crds, None, name) is None:
                api.put_object(
                    crds,
                    None,
                    name,
                    {
                        "apiVersion": "apiextensions.k8s.io/v1",
                        "kind": "CustomResourceDefinition",
                        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "argo"}},
                        "spec": {"group": ARGO_GROUP, "names": {"plural": plural}, "scope": "Namespaced"},
                    },
                    "ADDED",
                )
        classes = core_resource("storageclasses")
        for name, expands in STORAGE_CLASSES.items():
            sc: dict[str, Any] = {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
                "provisioner": "double.example/volumes",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            }
            if name == DEFAULT_STORAGE_CLASS:
                sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
            if expands:
                sc["allowVolumeExpansion"] = True
            api.put_object(classes, None, name, sc, "ADDED")
        double._core_preloaded = True
    deployments = core_resource("deployments")
    dep = api.get_object(deployments, "argo", "workflow-controller")
    if dep is not None:
        up = 1 if double.controller_enabled else 0
        if (dep.get("status") or {}).get("availableReplicas") != up:
            dep["status"] = {"replicas": 1, "readyReplicas": up, "availableReplicas": up, "updatedReplicas": 1}
            api.put_object(deployments, "argo", "workflow-controller", dep, "MODIFIED")


def _core_not_found(plural: str, group: str, name: str) -> StatusError:
    what = f"{plural}.{group}" if group else plural
    return StatusError(404, "NotFound", f'{what} "{name}" not found', {"name": name, "group": group, "kind": plural})


def _invalid(kind: str, group: str, name: str, field_: str, message: str) -> StatusError:
    return StatusError(
        422,
        "Invalid",
        f'{kind}{"." + group if group else ""} "{name}" is invalid: {field_}: {message}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_}],
        },
    )


def _settle(double: Any, kind: str, obj: dict[str, Any]) -> None:
    """What the cluster's controllers would soon write into the status."""
    ready = getattr(double, "workloads_ready", True)
    spec = obj.get("spec") or {}
    gen = (obj.get("metadata") or {}).get("generation", 1)
    if kind in ("Deployment", "StatefulSet"):
        n = int(spec.get("replicas", 1))
        up = n if ready else 0
        status: dict[str, Any] = {
            "observedGeneration": gen,
            "replicas": n,
            "readyReplicas": up,
            "availableReplicas": up,
            "updatedReplicas": n,
        }
        if kind == "Deployment":
            status["conditions"] = [
                {
                    "type": "Available",
                    "status": "True" if ready else "False",
                    "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                }
            ]
            if not ready:
                status["unavailableReplicas"] = n
        obj["status"] = status
    elif kind == "Job":
        obj["status"] = (
            {
                "succeeded": 1,
                "startTime": now(),
                "completionTime": now(),
                "conditions": [{"type": "Complete", "status": "True"}],
            }
            if ready
            else {"active": 1, "startTime": now()}
        )
    elif kind == "PersistentVolumeClaim":
        bound = (obj.get("status") or {}).get("phase") == "Bound" or getattr(double, "claims_bound", True)
        obj["status"] = (
            {"phase": "Bound", "capacity": dict((spec.get("resources") or {}).get("requests") or {})}
            if bound
            else {"phase": "Pending"}
        )
    elif kind == "Namespace":
        obj["status"] = {"phase": "Active"}


def _claim_volumes(api: _ArgoApi, ns: str, sts: Mapping[str, Any]) -> None:
    """The StatefulSet controller's PVCs, one per claim template and replica (kept on deletion)."""
    res = core_resource("persistentvolumeclaims")
    spec = sts.get("spec") or {}
    for tmpl in spec.get("volumeClaimTemplates") or []:
        for i in range(int(spec.get("replicas", 1))):
            name = f"{tmpl['metadata']['name']}-{sts['metadata']['name']}-{i}"
            if api.get_object(res, ns, name) is None:
                claim = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": now(),
                        "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                    },
                    "spec": copy.deepcopy(tmpl.get("spec") or {}),
                }
                _settle(api.double, "PersistentVolumeClaim", claim)
                api.put_object(res, ns, name, claim, "ADDED")


def _check_immutable(kind: str, group: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    o, n = old.get("spec") or {}, new.get("spec") or {}
    if kind == "Job" and o.get("template") != n.get("template"):
        raise _invalid("Job", group, name, "spec.template", "Invalid value: field is immutable")
    if kind == "StatefulSet":
        changed = sorted(k for k in set(o) | set(n) if k not in _STATEFULSET_MUTABLE and o.get(k) != n.get(k))
        if changed:
            raise _invalid(
                "StatefulSet",
                group,
                name,
                "spec",
                "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )
    if kind == "Deployment" and o.get("selector") != n.get("selector"):
        raise _invalid("Deployment", group, name, "spec.selector", "Invalid value: field is immutable")


def _quantity(text: Any) -> float:
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
    }
    s = str(text or "0")
    for suffix in sorted(units, key=len, reverse=True):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * units[suffix]
    return float(s)


def _self_subject_access_review(double: Any, user: str, allowed: set[str] | None, doc: Any) -> dict[str, Any]:
    attrs_ = ((doc or {}).get("spec") or {}).get("resourceAttributes") or {}
    verb = attrs_.get("verb") or ""
    if allowed == RBAC:
        resource = str(attrs_.get("resource") or "") + (
            f"/{attrs_['subresource']}" if attrs_.get("subresource") else ""
        )
        ok = _rbac_allows(
            double.api, user, verb, attrs_.get("group") or "", resource, attrs_.get("namespace"), attrs_.get("name")
        )
    else:
        ok = allowed is None or verb in allowed
    out = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": None},
        "spec": (doc or {}).get("spec") or {},
        "status": {"allowed": ok},
    }
    if ok:
        out["status"]["reason"] = f'RBAC: allowed by the double\'s rules for user "{user}"'
    return out


async def _core_request(
    api: _ArgoApi, request: kmock.Request, user: str, allowed: set[str] | None
) -> aiohttp.web.StreamResponse:
    """Answer a request for a core resource (see the section's comment)."""
    double = api.double
    res = request.resource
    _core_preload(api)
    if (res.group, res.plural) == SSAR:
        return _json(_self_subject_access_review(double, user, allowed, request.data), 201)
    kind, namespaced = CORE_KINDS[(res.group, res.plural)]
    group, plural = res.group, res.plural
    res = kmock.resource(group, _CORE_VERSIONS[group], plural)
    verb = _VERBS.get(str(getattr(request.action, "name", "")), "get")
    api._authorize(user, allowed, verb, res, plural, request)
    api._inject_faults(verb, plural)
    ns = request.namespace if namespaced else None

    def hidden(o: Mapping[str, Any]) -> bool:  # Argo's CRDs, while the double plays "Argo not installed"
        return (
            kind == "CustomResourceDefinition"
            and not double.crd_installed
            and str((o.get("spec") or {}).get("group") or o["metadata"]["name"]).endswith("argoproj.io")
        )

    if verb == "list":
        items = [
            o
            for o in api.items(res, ns)
            if label_match(request.params.get("labelSelector"), o["metadata"].get("labels") or {})
            and field_match(request.params.get("fieldSelector"), o)
            and not hidden(o)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return _json(
            {
                "apiVersion": f"{group}/{_CORE_VERSIONS[group]}".lstrip("/"),
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(api._rv)},
                "items": items,
            }
        )
    if verb == "watch":
        return await api._watch(request, res, ns)
    if verb == "create":
        if kind == "CustomResourceDefinition":
            raise StatusError(405, "MethodNotAllowed", "the double does not create CRDs")
        return _json(_core_create(api, res, kind, group, plural, ns, request), 201)
    obj = api.get_object(res, ns, request.name)
    if obj is None or hidden(obj):
        raise _core_not_found(plural, group, request.name)
    if verb == "get":
        return _json(obj)
    if verb == "patch":
        return _json(_core_patch(api, res, kind, group, ns, request, obj))
    if verb == "delete":
        if kind == "PersistentVolumeClaim" and double.claim_release_seconds != 0:
            return _json(_terminate_claim(api, res, ns, request.name, obj))
        if kind == "Namespace":
            for (r, o_ns, o_name), stored in list(api.objects.items()):
                if o_ns == request.name and not stored.deleted:
                    api.remove_object(r, o_ns, o_name)
        api.remove_object(res, ns, request.name)
        return _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": request.name, "group": group, "kind": plural, "uid": obj["metadata"].get("uid")},
            }
        )
    raise StatusError(405, "MethodNotAllowed", f"{verb} is not supported on {plural} by this double")


def _core_create(
    api: _ArgoApi, res: Any, kind: str, group: str, plural: str, ns: str | None, request: kmock.Request
) -> dict[str, Any]:
    doc = request.data
    if not isinstance(doc, dict):
        raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
    doc = copy.deepcopy(doc)
    meta = doc.setdefault("metadata", {})
    if ns is not None and meta.get("namespace") not in (None, ns):
        raise StatusError(
            400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
        )
    name = meta.get("name")
    if not name:
        raise _invalid(kind, group, "", "metadata.name", "Required value: name or generateName is required")
    if ns is not None and api.get_object(core_resource("namespaces"), None, ns) is None:
        raise _core_not_found("namespaces", "", ns)
    if api.get_object(res, ns, name) is not None:
        raise StatusError(
            409,
            "AlreadyExists",
            f'{plural}{"." + group if group else ""} "{name}" already exists',
            {"name": name, "group": group, "kind": plural},
        )
    doc.setdefault("apiVersion", f"{group}/{_CORE_VERSIONS[group]}".lstrip("/"))
    doc.setdefault("kind", kind)
    if kind == "Secret" and doc.get("stringData"):
        import base64

        data = doc.setdefault("data", {})
        for k, v in doc.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    if kind == "Service" and (doc.get("spec") or {}).get("clusterIP") != "None":
        ip = f"10.96.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        doc.setdefault("spec", {}).update(clusterIP=ip, clusterIPs=[ip])
    if kind == "PersistentVolumeClaim" and not (doc.get("spec") or {}).get("storageClassName"):
        default = _default_storage_class(api)  # the DefaultStorageClass admission plugin
        if default is not None:
            doc.setdefault("spec", {})["storageClassName"] = default
    if ns is not None:
        meta["namespace"] = ns
    meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
    _settle(api.double, kind, doc)
    stored = api.put_object(res, ns, name, doc, "ADDED")
    if kind == "StatefulSet":
        _claim_volumes(api, ns, stored)
    return stored


def _core_patch(
    api: _ArgoApi, res: Any, kind: str, group: str, ns: str | None, request: kmock.Request, obj: dict[str, Any]
) -> dict[str, Any]:
    patch = request.data
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
    if isinstance(patch, list) or ctype == "application/json-patch+json":
        import jsonpatch

        new = jsonpatch.apply_patch(obj, patch)
    elif isinstance(patch, dict):
        from kmock._internal.dicts import merge_patch_dict

        new = copy.deepcopy(dict(merge_patch_dict(obj, patch)))
    else:
        raise StatusError(400, "BadRequest", "the patch is neither a JSON merge patch nor a JSON patch")
    for key in ("uid", "creationTimestamp", "name", "namespace"):
        if key in obj["metadata"]:
            new.setdefault("metadata", {})[key] = obj["metadata"][key]
    if kind == "PersistentVolumeClaim":
        _check_claim_update(api, request.name, obj, new)
    _check_immutable(kind, group, request.name, obj, new)
    if (new.get("spec"), new.get("data"), new.get("rules")) != (obj.get("spec"), obj.get("data"), obj.get("rules")):
        new["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
    _settle(api.double, kind, new)
    stored = api.put_object(res, ns, request.name, new, "MODIFIED")
    if kind == "StatefulSet":
        _claim_volumes(api, ns, stored)
    return stored


def core_objects(double: K8sDouble, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """The stored objects of a core plural (``secrets``, ``deployments``, ...), in one namespace or all."""
    return double.call(lambda: double.api.items(core_resource(plural), namespace))


def core_object(double: K8sDouble, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """One stored core object, or None."""
    return double.call(lambda: double.api.get_object(core_resource(plural), namespace, name))


def write_requests(double: K8sDouble) -> list[Recorded]:
    """The requests that could change state (POST, PUT, PATCH, DELETE), SelfSubjectAccessReviews excluded."""
    return [
        r
        for r in list(double.requests)
        if r.method.upper() in ("POST", "PUT", "PATCH", "DELETE") and not r.path.endswith("/selfsubjectaccessreviews")
    ]


def settle(double: K8sDouble, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """Let the "controllers" act again on one stored workload (after ``workloads_ready`` changed)."""

    def run() -> dict[str, Any] | None:
        res = core_resource(plural)
        obj = double.api.get_object(res, namespace, name)
        if obj is None:
            return None
        _settle(double, obj.get("kind") or CORE_KINDS[(res.group, plural)][0], obj)
        return double.api.put_object(res, namespace, name, obj, "MODIFIED")

    return double.call(run)


# ---------------------------------------------------------------------------------------------
# RBAC, discovery, claims, storage classes and TLS: what the real API server does that expkit's
# cluster commands meet (issue 17)
# ---------------------------------------------------------------------------------------------
# * RBAC (a token whose permissions are ``RBAC``): a request is allowed when a RoleBinding in the request's
#   namespace names the user (``kind: User``) and its Role has a rule matching the API group, the resource
#   (``pods/log`` for a subresource), the verb and — when the rule lists ``resourceNames`` — the object's
#   name (so a rule with names never allows list, watch or create, as in Kubernetes). Nothing is allowed at
#   the cluster scope (no ClusterRoleBindings); discovery and ``/version`` are open to every authenticated
#   user (the ``system:discovery`` ClusterRole), and so is creating a SelfSubjectAccessReview, which is
#   answered with the same rules.
# * Discovery of ``argoproj.io/v1alpha1`` lists the eight resources of Argo's full CRDs and the ``/status``
#   subresources two of them have (``workflowtasksets/status``, ``workflowartifactgctasks/status``).
# * Creating a workflow in a namespace that does not exist is the NamespaceLifecycle admission's 404
#   ``namespaces "X" not found`` with ``details.kind: namespaces``.
# * A deleted PVC is kept with a ``deletionTimestamp`` and the ``kubernetes.io/pvc-protection`` finalizer for
#   ``claim_release_seconds`` (while MinIO's pod still uses it), then goes; creating one of that name
#   meanwhile is 409 AlreadyExists.
# * PVC updates: an unbound claim's spec is immutable (422 with the Go struct diff the real server prints),
#   a bound claim may only grow — shrinking is 422, growing is refused by the PersistentVolumeClaimResize
#   admission (403) unless its StorageClass has ``allowVolumeExpansion: true``; other fields are 422.
#   StorageClasses ``standard`` (the default, expandable) and ``fixed`` (not) exist; a claim without a class
#   gets the default (the DefaultStorageClass admission).

DEFAULT_STORAGE_CLASS = "standard"
STORAGE_CLASSES = {"standard": True, "fixed": False}  # name -> allowVolumeExpansion
ARGO_STATUS_SUBRESOURCES = ("workflowtasksets", "workflowartifactgctasks")


def _matches(values: Any, value: Any) -> bool:
    values = list(values or [])
    return "*" in values or value in values


def _rbac_allows(
    api: Any, user: str, verb: str, group: str, resource: str, namespace: str | None, name: str | None
) -> bool:
    """Whether the Roles bound to ``user`` in ``namespace`` allow ``verb`` on ``resource`` (``name``)."""
    if not namespace:
        return False
    for binding in api.items(core_resource("rolebindings"), namespace):
        if not any(s.get("kind") == "User" and s.get("name") == user for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        role = api.get_object(core_resource("roles"), namespace, ref.get("name")) if ref.get("kind") == "Role" else None
        for rule in (role or {}).get("rules") or []:
            if not (
                _matches(rule.get("apiGroups"), group)
                and _matches(rule.get("resources"), resource)
                and _matches(rule.get("verbs"), verb)
            ):
                continue
            if rule.get("resourceNames") and name not in rule["resourceNames"]:
                continue
            return True
    return False


def _argo_discovery(double: Any) -> aiohttp.web.Response:
    """``GET /apis/argoproj.io/v1alpha1`` (an APIResourceList), as with Argo's full CRDs installed."""
    if not double.crd_installed:
        return _json(StatusError(404, "NotFound", "the server could not find the requested resource").body(), 404)
    verbs = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
    resources: list[dict[str, Any]] = []
    for plural in ARGO_CRDS:
        kind = {"workflowtaskresults": "WorkflowTaskResult", "workfloweventbindings": "WorkflowEventBinding"}.get(
            plural, plural[:-1].replace("workflow", "Workflow").replace("cron", "Cron").replace("cluster", "Cluster")
        )
        kind = kind[0].upper() + kind[1:]
        namespaced = plural != "clusterworkflowtemplates"
        resources.append(
            {"name": plural, "singularName": plural[:-1], "namespaced": namespaced, "kind": kind, "verbs": verbs}
        )
        if plural in ARGO_STATUS_SUBRESOURCES:
            resources.append(
                {
                    "name": f"{plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return _json(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
            "resources": resources,
        }
    )


def _ensure_namespace(api: Any, namespace: str) -> None:
    _core_preload(api)
    res = core_resource("namespaces")
    if api.get_object(res, None, namespace) is None:
        api.put_object(
            res,
            None,
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
                "status": {"phase": "Active"},
            },
            "ADDED",
        )


def _default_storage_class(api: Any) -> str | None:
    for sc in api.items(core_resource("storageclasses"), None):
        if ((sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")) == "true":
            return str(sc["metadata"]["name"])
    return None


def _terminate_claim(api: Any, res: Any, ns: str | None, name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """DELETE of a PVC still in use: 200 with the object, now carrying a deletionTimestamp; it goes later."""
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        return obj
    meta["deletionTimestamp"] = now()
    meta["deletionGracePeriodSeconds"] = 0
    meta["finalizers"] = ["kubernetes.io/pvc-protection"]
    stored = api.put_object(res, ns, name, obj, "MODIFIED")
    delay = api.double.claim_release_seconds
    if delay is not None:
        asyncio.get_running_loop().call_later(delay, lambda: api.remove_object(res, ns, name))
    return stored


def _struct_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The ``cmp.Diff`` the real server appends to an immutable-spec error (here over the JSON form)."""
    import difflib

    a = json.dumps(old, indent=1, sort_keys=True).splitlines()
    b = json.dumps(new, indent=1, sort_keys=True).splitlines()
    lines = [ln for ln in difflib.ndiff(a, b) if not ln.startswith("?")]
    return "\n  core.PersistentVolumeClaimSpec{\n" + "\n".join(f"  {ln}" for ln in lines) + "\n  }\n"


def _check_claim_update(api: Any, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """The API server's validation and PersistentVolumeClaimResize admission of a PVC update."""
    o, n = old.get("spec") or {}, new.get("spec") or {}
    if o == n:
        return
    bound = (old.get("status") or {}).get("phase") == "Bound"

    def size(spec: Mapping[str, Any]) -> Any:
        return ((spec.get("resources") or {}).get("requests") or {}).get("storage")

    def without_size(spec: Mapping[str, Any]) -> dict[str, Any]:
        s = copy.deepcopy(dict(spec))
        ((s.get("resources") or {}).get("requests") or {}).pop("storage", None)
        return s

    immutable = (
        "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
        "for bound claims"
    )
    if not bound or without_size(o) != without_size(n):
        raise _invalid("PersistentVolumeClaim", "", name, "spec", immutable + _struct_diff(o, n))
    if _quantity(size(n)) < _quantity(((old.get("status") or {}).get("capacity") or {}).get("storage") or size(o)):
        raise _invalid(
            "PersistentVolumeClaim",
            "",
            name,
            "spec.resources.requests.storage",
            "Forbidden: field can not be less than status.capacity",
        )
    sc = api.get_object(core_resource("storageclasses"), None, o.get("storageClassName") or "")
    if _quantity(size(n)) > _quantity(size(o)) and not (sc or {}).get("allowVolumeExpansion"):
        raise StatusError(
            403,
            "Forbidden",
            f'persistentvolumeclaims "{name}" is forbidden: only dynamically provisioned pvc can be resized and '
            "the storageclass that provisions the pvc must support resize",
            {"name": name, "kind": "persistentvolumeclaims"},
        )


class _TlsFront:
    """HTTPS on 127.0.0.1 in front of the double's HTTP port, with a throw-away self-signed certificate that
    no kubeconfig trusts: a client that verifies the server fails the TLS handshake, as against a cluster
    whose CA the kubeconfig does not name."""

    def __init__(self, upstream: int | None, directory: Path) -> None:
        import socket
        import ssl

        from registry import self_signed

        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "front-cert.pem", directory / "front-key.pem"
        self_signed(cert, key)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert), str(key))
        self._upstream = upstream
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._closed = threading.Event()

    def start(self) -> _TlsFront:
        threading.Thread(target=self._accept, name="k8s-double-tls", daemon=True).start()
        return self

    def _accept(self) -> None:
        import socket
        import ssl

        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return

            def serve(raw: socket.socket) -> None:
                try:
                    tls = self._ctx.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    raw.close()  # the client refused the certificate
                    return
                with tls, socket.create_connection(("127.0.0.1", self._upstream or 0)) as up:
                    threading.Thread(target=self._pipe, args=(up, tls), daemon=True).start()
                    self._pipe(tls, up)

            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._closed.set()
        self._sock.close()

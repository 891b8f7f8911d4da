"""Strict, offline validation of an Argo ``Workflow`` document (a dict, as parsed from YAML).

Two layers, both run by :func:`validate_workflow`:

1. **Schema**: the document is checked against Argo's Workflow schema
   (``templates/argo/workflow.schema.json``, generated from hera's models of the Argo API, see
   ``scripts/generate_argo_schema.py``) with every object closed: an unknown field such as ``withParams`` or
   ``s3.kye`` is an error naming its path, where Argo itself would silently drop it.
2. **Semantics** Argo checks at submission time (and some it only finds while running): the
   entrypoint and the exit handler exist, template and task names are valid and unique, every
   template a task or step references exists, DAG dependencies exist and are acyclic, every
   required input parameter is supplied and every ``{{inputs.parameters.X}}`` a template uses is
   declared, template tags are closed.

Nothing here talks to a cluster; the limits of an offline check are listed in ``docs/argo.md``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, NoReturn

from expkit.core.data import data_dir
from expkit.core.errors import ExpkitError

SCHEMA_PATH = data_dir("templates/argo") / "workflow.schema.json"
API_VERSION = "argoproj.io/v1alpha1"

#: Argo's own name rules (argo-workflows ``validation_utils.go``).
_FIELD_NAME_RE = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
_FIELD_NAME_MAX = 128
_PARAM_NAME_RE = re.compile(r"^[-a-zA-Z0-9_]+$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_TEMPLATE_KINDS = (
    "container",
    "script",
    "dag",
    "steps",
    "resource",
    "suspend",
    "containerSet",
    "data",
    "http",
    "plugin",
)
_INPUT_REF_RE = re.compile(r"inputs\.parameters(?:\.([-a-zA-Z0-9_]+)|\[\s*['\"]([-a-zA-Z0-9_]+)['\"]\s*\])")
_SIMPLE_TAG_PREFIXES = (
    "inputs.",
    "outputs.",
    "item",
    "workflow.",
    "tasks.",
    "steps.",
    "pod.",
    "node.",
    "retries",
    "lastRetry.",
)


#: A field path in a workflow document (keys and list indexes), and a problem found at one.
_Path = tuple[str | int, ...]
_Problem = tuple[_Path, str]


class WorkflowValidationError(ExpkitError):
    """A rendered workflow is not a valid Argo Workflow. ``str(err)`` names the field path and the problem."""

    exit_code = 1

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"invalid Argo workflow: {path}: {problem}")


# ---------------------------------------------------------------------------------------------
# Schema layer
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    try:
        schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExpkitError(
            f"the Argo workflow schema {SCHEMA_PATH} is missing or unreadable ({err}): reinstall expkit"
        ) from None
    return schema


def _fmt(path: _Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "null":
        return value is None
    return True


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _SchemaChecker:
    """A small validator for the JSON Schema subset the generated schema uses
    (``$ref``, ``type``, ``properties``, ``additionalProperties``, ``required``, ``items``, ``anyOf``)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema
        self.defs: Mapping[str, Any] = schema.get("$defs", {})

    def resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def check(self, value: Any, node: Mapping[str, Any], path: _Path) -> _Problem | None:
        """The first problem found as ``(path, message)``, or ``None``."""
        node = self.resolve(node)
        if "anyOf" in node:
            return self._any_of(value, node["anyOf"], path)
        kind = node.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            if not any(_type_ok(value, k) for k in kinds):
                expected = " or ".join(_TYPE_NAMES.get(k) or str(k) for k in kinds)
                return path, f"must be {expected}, got {_short(value)}"
        if "enum" in node and value not in node["enum"]:
            return path, f"must be one of {', '.join(map(str, node['enum']))}, got {_short(value)}"
        if isinstance(value, dict):
            return self._object(value, node, path)
        if isinstance(value, list) and "items" in node:
            items = node["items"]
            for i, item in enumerate(value):
                err = self.check(item, items, (*path, i))
                if err:
                    return err
        return None

    def _any_of(self, value: Any, branches: list[Any], path: _Path) -> _Problem | None:
        errors: list[_Problem] = []
        for branch in branches:
            err = self.check(value, branch, path)
            if err is None:
                return None
            errors.append(err)
        # Report the most specific failure: the branch that got deepest into the value.
        return max(errors, key=lambda e: len(e[0]))

    def _object(self, value: dict[Any, Any], node: Mapping[str, Any], path: _Path) -> _Problem | None:
        props: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key in node.get("required", ()):
            if key not in value:
                return (*path, key), "required field is missing"
        for key, sub in value.items():
            if not isinstance(key, str):
                return path, f"field names must be strings, got {_short(key)}"
            if key in props:
                err = self.check(sub, props[key], (*path, key))
            elif extra is False:
                close = difflib.get_close_matches(key, list(props), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(sorted(props))}"
                return (*path, key), f"unknown field {key!r} ({hint})"
            elif isinstance(extra, dict):
                err = self.check(sub, extra, (*path, key))
            else:
                err = None
            if err:
                return err
        return None


def check_schema(doc: Any) -> None:
    """Raise :class:`WorkflowValidationError` if ``doc`` does not match Argo's (strict) Workflow schema."""
    schema = _schema()
    err = _SchemaChecker(schema).check(doc, schema, ())
    if err:
        raise WorkflowValidationError(_fmt(err[0]), err[1])


# ---------------------------------------------------------------------------------------------
# Semantic layer
# ---------------------------------------------------------------------------------------------


def _fail(path: _Path, problem: str) -> NoReturn:
    raise WorkflowValidationError(_fmt(path), problem)


def _check_field_name(name: Any, path: _Path, what: str) -> None:
    if not isinstance(name, str) or not _FIELD_NAME_RE.match(name) or len(name) > _FIELD_NAME_MAX:
        _fail(
            path,
            f"{what} {name!r} is invalid: use at most {_FIELD_NAME_MAX} letters, digits and '-', "
            "starting with a letter or digit",
        )


def _strings(node: Any, path: _Path) -> Iterator[tuple[_Path, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))


def _tags(text: str) -> Iterator[str]:
    """The template tags in ``text`` (fasttemplate semantics: ``{{`` up to the next ``}}``)."""
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            return
        end = text.find("}}", start + 2)
        if end < 0:
            raise ValueError("a '{{' is never closed with '}}'")
        yield text[start + 2 : end]
        pos = end + 2


def _check_tags(tmpl: Mapping[str, Any], path: _Path, declared: set[str]) -> None:
    """Tags are closed; ``inputs.parameters.X`` references name declared inputs."""
    for spath, text in _strings(tmpl, path):
        if "{{" not in text:
            continue
        try:
            tags = list(_tags(text))
        except ValueError as err:
            _fail(spath, f"{err}: {_short(text)}")
        for tag in tags:
            body = tag.strip()
            if body.startswith("="):
                refs = [m.group(1) or m.group(2) for m in _INPUT_REF_RE.finditer(body)]
            elif body.startswith("inputs.parameters."):
                refs = [body[len("inputs.parameters.") :]]
            elif body.startswith(_SIMPLE_TAG_PREFIXES):
                refs = []
            else:
                _fail(
                    spath,
                    f"unknown template tag '{{{{{tag}}}}}': Argo would fail to resolve it "
                    "(a literal '{{' cannot appear in a workflow)",
                )
            for ref in refs:
                if ref not in declared:
                    _fail(
                        spath,
                        f"'{{{{{tag}}}}}' refers to input parameter {ref!r}, which the template does not "
                        f"declare (declared: {', '.join(sorted(declared)) or 'none'})",
                    )


def _check_dag(tasks: list[Mapping[str, Any]], path: _Path, templates: Mapping[str, Mapping[str, Any]]) -> None:
    names: dict[str, int] = {}
    for i, task in enumerate(tasks):
        _check_field_name(task.get("name"), (*path, i, "name"), "task name")
        if task["name"] in names:
            _fail((*path, i, "name"), f"duplicate task name {task['name']!r} (also tasks[{names[task['name']]}])")
        names[task["name"]] = i
    graph: dict[str, list[str]] = {}
    for i, task in enumerate(tasks):
        tpath = (*path, i)
        loops = [k for k in ("withItems", "withParam", "withSequence") if k in task]
        if len(loops) > 1:
            _fail(tpath, f"a task may use only one of withItems, withParam, withSequence, not {', '.join(loops)}")
        if "dependencies" in task and "depends" in task:
            _fail(tpath, "use either 'dependencies' or 'depends', not both")
        deps = list(task.get("dependencies") or [])
        if "depends" in task:
            deps += [
                t
                for t in re.findall(r"[A-Za-z0-9][-A-Za-z0-9]*(?=\.|\b)", task["depends"])
                if t
                not in ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
            ]
        for dep in deps:
            if dep not in names:
                _fail((*tpath, "dependencies"), f"depends on task {dep!r}, which this DAG does not have")
        graph[task["name"]] = deps
        _check_call(task, tpath, templates)
    _check_acyclic(graph, path)


def _check_call(call: Mapping[str, Any], path: _Path, templates: Mapping[str, Mapping[str, Any]]) -> None:
    """A DAG task or step: its template exists and gets every input it needs."""
    if "templateRef" in call:
        return  # lives in a WorkflowTemplate: only the cluster can check it
    name = call.get("template")
    if name is None:
        if "inline" not in call:
            _fail(path, "names no 'template' (nor 'templateRef' or 'inline')")
        return
    target = templates.get(name)
    if target is None:
        close = difflib.get_close_matches(name, list(templates), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail((*path, "template"), f"template {name!r} does not exist{hint}")
    inputs = {p["name"]: p for p in (target.get("inputs") or {}).get("parameters") or []}
    given = [p["name"] for p in (call.get("arguments") or {}).get("parameters") or []]
    for j, arg in enumerate(given):
        if arg not in inputs:
            _fail((*path, "arguments", "parameters", j, "name"), f"template {name!r} has no input parameter {arg!r}")
    for pname, param in inputs.items():
        if pname not in given and "value" not in param and "default" not in param:
            _fail((*path, "arguments"), f"input parameter {pname!r} of template {name!r} is not supplied")


def _check_acyclic(graph: Mapping[str, list[str]], path: _Path) -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in graph:
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        state[root] = 1
        while stack:
            node, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycle = [n for n, _ in stack[[n for n, _ in stack].index(nxt) :]] + [nxt]
                _fail(path, f"dependency cycle: {' -> '.join(cycle)}")
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(graph[nxt])))


def _check_metadata(meta: Mapping[str, Any]) -> None:
    name = meta.get("name")
    if name is None and not meta.get("generateName"):
        _fail(("metadata",), "needs a 'name' or a 'generateName'")
    if name is not None and (not _DNS_LABEL_RE.match(name) or len(name) > 63):
        _fail(("metadata", "name"), f"{name!r} is not a DNS-1123 label (at most 63 lowercase letters, digits, '-')")
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            prefix, _, local = key.rpartition("/")
            if not _LABEL_NAME_RE.match(local) or len(local) > 63 or len(prefix) > 253:
                _fail(("metadata", field, key), "is not a valid Kubernetes key (name part at most 63 characters)")
            if field == "labels" and (len(value) > 63 or not _LABEL_VALUE_RE.match(value)):
                _fail(
                    ("metadata", field, key),
                    f"label value {_short(value)} is invalid: at most 63 letters, "
                    "digits, '-', '_' or '.', starting and ending with a letter or digit",
                )


def check_semantics(doc: Mapping[str, Any]) -> None:
    """The checks Argo's own validation makes beyond the schema (see the module docstring)."""
    if doc.get("apiVersion") != API_VERSION:
        _fail(("apiVersion",), f"must be {API_VERSION!r}, got {_short(doc.get('apiVersion'))}")
    if doc.get("kind") != "Workflow":
        _fail(("kind",), f"must be 'Workflow', got {_short(doc.get('kind'))}")
    _check_metadata(doc["metadata"])
    spec = doc["spec"]
    tlist = spec.get("templates") or []
    templates: dict[str, Mapping[str, Any]] = {}
    for i, tmpl in enumerate(tlist):
        _check_field_name(tmpl.get("name"), ("spec", "templates", i, "name"), "template name")
        if tmpl["name"] in templates:
            _fail(("spec", "templates", i, "name"), f"duplicate template name {tmpl['name']!r}")
        templates[tmpl["name"]] = tmpl
    for field in ("entrypoint", "onExit"):
        ref = spec.get(field)
        if field == "entrypoint" and ref is None and not spec.get("workflowTemplateRef"):
            _fail(("spec", "entrypoint"), "required field is missing")
        if ref is not None and ref not in templates:
            _fail(("spec", field), f"template {ref!r} does not exist (templates: {', '.join(templates) or 'none'})")
    for i, tmpl in enumerate(tlist):
        tpath = ("spec", "templates", i)
        kinds = [k for k in _TEMPLATE_KINDS if k in tmpl]
        if len(kinds) != 1:
            what = ", ".join(kinds) if kinds else "none"
            _fail(tpath, f"a template needs exactly one of {', '.join(_TEMPLATE_KINDS)} (has: {what})")
        declared: set[str] = set()
        for j, param in enumerate((tmpl.get("inputs") or {}).get("parameters") or []):
            if not _PARAM_NAME_RE.match(param["name"]):
                _fail(
                    (*tpath, "inputs", "parameters", j, "name"),
                    f"{param['name']!r} is not a parameter name (letters, digits, '_' and '-')",
                )
            if param["name"] in declared:
                _fail((*tpath, "inputs", "parameters", j, "name"), f"duplicate input parameter {param['name']!r}")
            declared.add(param["name"])
        _check_tags(tmpl, tpath, declared)
        if "dag" in tmpl:
            _check_dag(tmpl["dag"].get("tasks") or [], (*tpath, "dag", "tasks"), templates)
        for g, group in enumerate(tmpl.get("steps") or []):
            for s, step in enumerate(group):
                _check_call(step, (*tpath, "steps", g, s), templates)
    for spath, text in _strings({k: v for k, v in spec.items() if k != "templates"}, ("spec",)):
        if "{{" in text:
            try:
                list(_tags(text))
            except ValueError as err:
                _fail(spath, f"{err}: {_short(text)}")


def validate_workflow(doc: dict[str, Any]) -> None:
    """Validate an Argo Workflow document strictly; raise :class:`WorkflowValidationError` naming the
    field path and the problem. Pure and offline."""
    if not isinstance(doc, dict):
        raise WorkflowValidationError("(top level)", f"a workflow must be a mapping, got {_short(doc)}")
    check_schema(doc)
    check_semantics(doc)

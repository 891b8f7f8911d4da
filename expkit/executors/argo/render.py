"""Render a validated experiment spec into an Argo ``Workflow`` — pure and offline.

Pipeline: spec -> the plain data this module computes -> the jinja2 template
``templates/argo/workflow.yaml.j2`` -> YAML text -> dict -> :func:`~expkit.executors.argo.validate.validate_workflow`
-> returned. Nothing here talks to a cluster or imports ``kubernetes``.

Shape (compact: the size grows with algorithms + datasets, never with replicates)::

    main (DAG)
      prepare                      spec.prepare, once, when there is one
      ds-<dataset>  (one task per dataset, after prepare) -> template "algorithms"
    algorithms (DAG, shared by every dataset)
      alg-<algorithm> (one task per algorithm), withSequence count=replicates -> template "cell[-<alg>]"
    cell[-<alg>] (container: the spec's image, command and args; one template per scheduling profile)
    probe-environment (``probe=True``: the image's Python reports itself, beside the cells)
    finalize (exit handler, only when an expkit image is given)

With ``kubernetes.cellsPerPod`` > 1 a cell template is a *batch* template: it loops over lists of
replicates and runs :mod:`~expkit.executors.argo.podrunner` (see docs/argo.md, "Large runs").

A cell's Argo node is therefore named ``<run-id>.ds-<dataset>.alg-<algorithm>(<replicate>:<replicate>)``
and its pod carries the annotation ``expkit.io/cell: <algorithm>/<dataset>/<replicate>``; its inputs
(``algorithm``, ``dataset``, ``replicate``) are in the node status too.

Values: the seed is computed inside the workflow by an Argo expression from the dataset's offset
``S_d`` (computed here) and the replicate (:data:`SEED_EXPRESSION`, the scheme of
:mod:`expkit.runs.matrix`). Parameters are resolved per cell as global < dataset < algorithm: datasets
pass their values (global folded in) down to the ``algorithms`` template, each algorithm task
overrides its own, and ``EXPKIT_PARAMS`` is assembled from per-key JSON fragments, so no A x D
table is ever written (see docs/argo.md).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from expkit.core.data import data_dir
from expkit.core.errors import InputError
from expkit.executors.argo.encoding import argo_json, raw_value, template_environment
from expkit.executors.argo.encoding import yaml_value as yaml_value  # re-exported
from expkit.executors.argo.podrunner import (
    BATCH_ENV,
    OUTPUT_MARK,
    PROBE_OUTPUT,
    REPLICATE_MARK,
    RUNNER_SCRIPT,
    SEED_MARK,
    STATUS_PARAMETER,
    probe_wrapper,
    runner_interpreter,
)
from expkit.executors.argo.shards import Shard, cells_per_pod
from expkit.executors.argo.validate import WorkflowValidationError, validate_workflow
from expkit.runs.environment import PROBE_SCRIPT
from expkit.runs.matrix import SEED_MODULUS, SEED_STRIDE, dataset_seed
from expkit.spec import (
    CELL_PLACEHOLDERS,
    Experiment,
    LoadedSpec,
    Scheduling,
    is_pinned,
    substitute,
)

log = logging.getLogger(__name__)

TEMPLATE_DIR = "templates/argo"
TEMPLATE_NAME = "workflow.yaml.j2"
#: Where a cell writes its outputs in the container (an emptyDir volume), uploaded as an artifact.
OUTPUT_DIR = "/expkit/output"
OUTPUT_VOLUME = "expkit-output"
#: Where a batch pod's runner writes its cells' outcomes (an emptyDir volume; an output parameter).
STATUS_DIR = "/expkit/status"
STATUS_VOLUME = "expkit-status"
#: Memory request and limit of a run when the spec does not set ``resources.memory``.
DEFAULT_MEMORY = "1Gi"
DEFAULT_POD_GC = "OnPodSuccess"
#: Keep a finished workflow (and so its node status, which ``expkit results`` reads) for 7 days.
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
#: About what etcd accepts for one object (its default request limit is 1.5 MiB); Argo stores the
#: workflow (spec and status) as one object.
ETCD_REQUEST_LIMIT = 1_500_000
#: The namespace's artifact repositories ConfigMap (key-only artifacts resolve through it).
ARTIFACT_REPOSITORY_CONFIGMAP = "artifact-repositories"
#: What the exit handler runs in the expkit image (see docs/argo.md, "The finalize step").
FINALIZE_COMMAND = ("expkit", "argo-finalize")
FINALIZE_RESOURCES = {"cpu": "100m", "memory": "256Mi"}
#: The seed of a cell, computed by Argo from the cell's inputs with integer arithmetic (int64):
#: the same formula as :func:`expkit.runs.matrix.derive_seed`.
SEED_EXPRESSION = (
    f"{{{{=(asInt(inputs.parameters.datasetSeed) + asInt(inputs.parameters.replicate) * "
    f"{SEED_STRIDE}) % {SEED_MODULUS}}}}}"
)

_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MARK_RE = re.compile("\ue000([0-9]+)\ue001")
_CONTROL_RE = re.compile(r"[\x00-\x07\x0b\x0e-\x1f\x7f]")
_TAG = {
    "algorithm": "{{inputs.parameters.algorithm}}",
    "dataset": "{{inputs.parameters.dataset}}",
    "replicate": "{{inputs.parameters.replicate}}",
    "seed": SEED_EXPRESSION,
}


#: Workflow pods run as this account unless ``spec.kubernetes.serviceAccountName`` says otherwise; it is
#: the one ``expkit cluster install`` creates (see ``cluster_objects.WORKFLOW_SA``).
DEFAULT_SERVICE_ACCOUNT = "expkit-workflow"


class RenderError(InputError):
    """The spec cannot be expressed as an Argo workflow; the message says which field and what to change."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def cpu_quantity(cores: float) -> str:
    """Cores as a Kubernetes quantity: ``"2"``, ``"500m"``."""
    millis = max(1, round(cores * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _resources(exp: Experiment) -> dict[str, dict[str, str]]:
    res = exp.spec.resources
    amounts = {"cpu": cpu_quantity(res.cpu), "memory": res.memory or DEFAULT_MEMORY}
    if res.gpu:
        amounts["nvidia.com/gpu"] = str(res.gpu)
    # Guaranteed QoS: requests equal to limits, so every run gets the same machine share.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _scheduling(global_: Scheduling | None, own: Scheduling | None) -> dict[str, Any]:
    """Effective scheduling: nodeSelector merged (own keys win), tolerations added, each affinity
    kind given by the algorithm replacing the global one."""

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", exclude_none=True) if model is not None else None

    node_selector = {
        **((global_.nodeSelector if global_ else None) or {}),
        **((own.nodeSelector if own else None) or {}),
    }
    tolerations = [
        dump(t)
        for t in (*((global_.tolerations if global_ else None) or ()), *((own.tolerations if own else None) or ()))
    ]
    affinity = {**(dump(global_.affinity if global_ else None) or {}), **(dump(own.affinity if own else None) or {})}
    return {"nodeSelector": node_selector or None, "tolerations": tolerations or None, "affinity": affinity or None}


def _timeout(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, math.ceil(seconds))


def _check_literal_text(text: str, tag_starts: set[int], field: str) -> None:
    pos = text.find("{{")
    while pos >= 0:
        if pos not in tag_starts:
            raise RenderError(
                f"{field}: {text!r} contains '{{{{' outside a placeholder, which Argo would read as a template "
                "tag: remove the literal '{{' (in the spec, '{{{{' is a literal '{{'), or put a character "
                "between a literal '{{' and a placeholder"
            )
        pos = text.find("{{", pos + 1)


def map_argument(template: str, field: str, resolve: Callable[[str], tuple[bool, str]]) -> str:
    """Map the placeholders of one command-line item to Argo.

    ``resolve(name)`` returns ``(is_tag, text)``: an Argo tag, or literal text. The result is
    checked so that the only ``{{`` in it start the tags inserted here.
    """
    names: list[str] = []

    def marker(name: str) -> str:
        names.append(name)
        return f"\ue000{len(names) - 1}\ue001"

    if "\ue000" in template or "\ue001" in template:
        raise RenderError(f"{field}: contains the private-use characters U+E000/U+E001, which expkit reserves")

    class _Markers(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return marker(key)

    marked = substitute(template, _Markers())
    out: list[str] = []
    tag_starts: set[int] = set()
    length = 0
    pos = 0
    for m in _MARK_RE.finditer(marked):
        literal = marked[pos : m.start()]
        out.append(literal)
        length += len(literal)
        is_tag, text = resolve(names[int(m.group(1))])
        if is_tag:
            tag_starts.add(length)
        out.append(text)
        length += len(text)
        pos = m.end()
    out.append(marked[pos:])
    result = "".join(out)
    _check_literal_text(result, tag_starts, field)
    return result


# ---------------------------------------------------------------------------------------------
# The render context
# ---------------------------------------------------------------------------------------------


def _referenced_params(exp: Experiment) -> list[str]:
    """Parameter names used as ``{params.X}`` in the cell command line, in first-use order."""
    seen: dict[str, None] = {}

    class _Collect(dict[str, str]):
        def __missing__(self, key: str) -> str:
            if key.startswith("params."):
                seen.setdefault(key[len("params.") :], None)
            return ""

    for item in (*exp.spec.command, *exp.spec.args):
        substitute(item, _Collect())
    return list(seen)


def _fragment(key: str, value: Any) -> str:
    return f', "{key}": {argo_json(value)}'


def _unquotable(text: str) -> str | None:
    """A character Argo cannot pass through a parameter: Argo splices parameter values into JSON with
    Go's ``strconv.Quote``, whose ``\\a``, ``\\v``, ``\\xNN`` and ``\\UNNNNNNNN`` escapes are not JSON."""
    m = _CONTROL_RE.search(text)
    if m:
        return m.group(0)
    return next((ch for ch in text if ord(ch) > 0xFFFF and unicodedata.category(ch).startswith("C")), None)


def _check_param_text(name: str, value: Any, where: str) -> str:
    text = raw_value(value)
    if "{{" in text:
        raise RenderError(
            f"{where}: the value of parameter {name!r} ({text!r}) contains '{{{{', which Argo would read "
            "as a template tag, and the parameter is used in spec.command/spec.args: remove the '{{'"
        )
    if "\ue000" in text or "\ue001" in text:  # a batch pod's runner would read them as its own markers
        raise RenderError(
            f"{where}: the value of parameter {name!r} contains the private-use characters U+E000/U+E001, "
            "which expkit reserves: remove them"
        )
    bad = _unquotable(text)
    if bad is not None:
        raise RenderError(
            f"{where}: the value of parameter {name!r} contains the control character {bad!r}, which "
            "Argo cannot pass to a command line: remove it (EXPKIT_PARAMS carries any value)"
        )
    return text


def _select(exp: Experiment, cells: Collection[str]) -> dict[str, dict[str, list[int]]]:
    """``{dataset: {algorithm: [replicates]}}`` of the cell keys ``alg/ds/rep`` to run (each checked)."""
    spec = exp.spec
    algorithms = {a.name for a in spec.algorithms}
    datasets = {d.name for d in spec.datasets}
    chosen: dict[str, dict[str, set[int]]] = {}
    for key in cells:
        parts = key.split("/") if isinstance(key, str) else []
        rep = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else -1
        if len(parts) != 3 or parts[0] not in algorithms or parts[1] not in datasets or not 0 <= rep < spec.replicates:
            raise RenderError(
                f"cell {key!r} is not in the matrix of experiment {exp.metadata.name!r}: cells are "
                f"'<algorithm>/<dataset>/<replicate>' with replicate 0..{spec.replicates - 1}"
            )
        chosen.setdefault(parts[1], {}).setdefault(parts[0], set()).add(rep)
    if not chosen:
        raise RenderError("no cells to run: the explicit cell list is empty")
    return {d: {a: sorted(r) for a, r in by_alg.items()} for d, by_alg in chosen.items()}


@dataclass(frozen=True)
class _Fanout:
    """What the fan-out tasks pass down: parameters and the explicit cell selection (a retry), if any."""

    glob: dict[str, Any]  # spec.params
    used: list[str]  # parameters referenced as {params.X} in the cell command line
    alg_keys: list[str]  # every key some algorithm sets (K_all)
    needs_full_json: bool  # some algorithm sets no parameter: it takes the dataset's whole JSON
    # {dataset: {algorithm: [replicates]}} of an explicit cell list, else None (the whole matrix)
    selected: dict[str, dict[str, list[int]]] | None
    loop_algs: list[str]  # algorithms with a cell in the explicit list
    per_pod: int = 1  # kubernetes.cellsPerPod: >1 loops over batches of replicates (lists), not replicates

    def loop_value(self, reps: Sequence[int]) -> str:
        """What an algorithm task loops over for ``reps``: the replicates, or their batches."""
        items: list[Any] = list(reps)
        if self.per_pod > 1:
            items = [items[i : i + self.per_pod] for i in range(0, len(items), self.per_pod)]
        return json.dumps(items, separators=(",", ":"))

    def rest(self, params: Mapping[str, Any]) -> str:
        """The JSON fragments of the parameters no algorithm sets."""
        return "".join(_fragment(k, params[k]) for k in sorted(params) if k not in self.alg_keys)


def _fanout(exp: Experiment, cells: Collection[str] | None) -> _Fanout:
    spec = exp.spec
    # An explicit cell list (a retry): each dataset task passes, per algorithm, the JSON list of its
    # replicates to run ("r-<algorithm>"), looped over with withParam — O(cells listed), not O(matrix).
    selected = _select(exp, cells) if cells is not None else None
    loop_algs = (
        [a.name for a in spec.algorithms if any(a.name in by_alg for by_alg in selected.values())]
        if selected is not None
        else []
    )
    return _Fanout(
        glob=dict(spec.params),
        used=_referenced_params(exp),
        alg_keys=sorted({k for a in spec.algorithms for k in a.params}),
        needs_full_json=any(not a.params for a in spec.algorithms),
        selected=selected,
        loop_algs=loop_algs,
        per_pod=cells_per_pod(exp),
    )


def _fanout_defaults(fan: _Fanout) -> dict[str, str | None]:
    """Inputs of the shared "algorithms" template, with their defaults (the global values)."""
    glob = fan.glob
    defaults: dict[str, str | None] = {"dataset": None, "datasetSeed": None}
    if fan.needs_full_json:
        defaults["datasetParams"] = argo_json(glob)
    if fan.alg_keys:
        defaults["datasetRest"] = fan.rest(glob)
        for k in fan.alg_keys:
            defaults[f"f-{k}"] = _fragment(k, glob[k]) if k in glob else ""
    for x in fan.used:
        defaults[f"p-{x}"] = _check_param_text(x, glob[x], "spec.params") if x in glob else ""
    for name in fan.loop_algs:
        defaults[f"r-{name}"] = "[]"
    return defaults


def _dataset_tasks(exp: Experiment, fan: _Fanout, defaults: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """One task per dataset: only the values that differ from the defaults."""
    spec = exp.spec
    datasets = []
    for i, ds in enumerate(spec.datasets):
        if fan.selected is not None and ds.name not in fan.selected:
            continue
        merged = {**fan.glob, **ds.params}
        values: dict[str, str] = {"dataset": ds.name, "datasetSeed": str(dataset_seed(spec.seed, ds.name))}
        if fan.needs_full_json:
            values["datasetParams"] = argo_json(merged)
        if fan.alg_keys:
            values["datasetRest"] = fan.rest(merged)
            for k in fan.alg_keys:
                values[f"f-{k}"] = _fragment(k, merged[k]) if k in merged else ""
        for x in fan.used:
            if x in ds.params:
                values[f"p-{x}"] = _check_param_text(x, ds.params[x], f"spec.datasets[{i}].params")
        for name in fan.loop_algs:
            reps = (fan.selected or {})[ds.name].get(name, [])
            values[f"r-{name}"] = fan.loop_value(reps)
        args = [(n, v) for n, v in values.items() if n in ("dataset", "datasetSeed") or v != defaults[n]]
        datasets.append({"task": f"ds-{ds.name}", "args": args})
    return datasets


def _profiles(exp: Experiment) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Scheduling profiles, one cell template each, and the cell template of every algorithm."""
    profiles: dict[str, dict[str, Any]] = {}
    cell_of: dict[str, str] = {}
    for alg in exp.spec.algorithms:
        sched = _scheduling(exp.spec.kubernetes, alg.kubernetes)
        key = json.dumps(sched, sort_keys=True)
        if key not in profiles:
            name = "cell" if alg.kubernetes is None else f"cell-{alg.name}"
            profiles[key] = {"name": name, "scheduling": sched}
        cell_of[alg.name] = profiles[key]["name"]
    return profiles, cell_of


def _merged_params_json(own_params: Mapping[str, Any], alg_keys: Sequence[str]) -> str:
    """An algorithm's ``EXPKIT_PARAMS``: its own fragments, then the dataset's for the keys it leaves."""
    if not own_params:
        return "{{inputs.parameters.datasetParams}}"
    own = "".join(_fragment(k, own_params[k]) for k in sorted(own_params))[2:]
    return (
        "{"
        + own
        + "".join(f"{{{{inputs.parameters.f-{k}}}}}" for k in alg_keys if k not in own_params)
        + "{{inputs.parameters.datasetRest}}}"
    )


def _algorithm_tasks(exp: Experiment, fan: _Fanout, cell_of: Mapping[str, str]) -> list[dict[str, Any]]:
    """One task per algorithm in the shared template."""
    algorithms = []
    for i, alg in enumerate(exp.spec.algorithms):
        if fan.selected is not None and alg.name not in fan.loop_algs:
            continue
        args: list[tuple[str, str]] = [
            ("algorithm", alg.name),
            ("dataset", "{{inputs.parameters.dataset}}"),
            ("datasetSeed", "{{inputs.parameters.datasetSeed}}"),
            ("replicates" if fan.per_pod > 1 else "replicate", "{{item}}"),
            ("params", _merged_params_json(alg.params, fan.alg_keys)),
        ]
        for x in fan.used:
            if x in alg.params:
                args.append((f"p-{x}", _check_param_text(x, alg.params[x], f"spec.algorithms[{i}].params")))
            else:
                args.append((f"p-{x}", f"{{{{inputs.parameters.p-{x}}}}}"))
        loop = f"{{{{inputs.parameters.r-{alg.name}}}}}" if fan.selected is not None else None
        if loop is None and fan.per_pod > 1:  # the whole matrix, batched: the same batches for every dataset
            loop = fan.loop_value(range(exp.spec.replicates))
        algorithms.append({"task": f"alg-{alg.name}", "template": cell_of[alg.name], "args": args, "loop": loop})
    return algorithms


def _cell_container(exp: Experiment, run_id: str, used: Sequence[str], per_pod: int = 1) -> dict[str, Any]:
    """The cell container's command line, environment and inputs (batched: the pod runner's, see
    :mod:`~expkit.executors.argo.podrunner`, with the replicate, seed and output directory as its markers)."""
    spec = exp.spec
    if per_pod > 1:
        marks = {"replicate": REPLICATE_MARK, "seed": SEED_MARK, "output_dir": OUTPUT_MARK}
    else:
        marks = {"output_dir": OUTPUT_DIR}

    def resolve(name: str) -> tuple[bool, str]:
        if name in marks:
            return False, marks[name]
        if name in _TAG:
            return True, _TAG[name]
        if name.startswith("params.") and name[len("params.") :] in used:
            return True, f"{{{{inputs.parameters.p-{name[len('params.') :]}}}}}"
        raise RenderError(
            f"unknown placeholder {{{name}}}: allowed: "
            + ", ".join("{" + n + "}" for n in CELL_PLACEHOLDERS)
            + ", {params.NAME}"
        )

    command = [map_argument(c, f"spec.command[{i}]", resolve) for i, c in enumerate(spec.command)]
    cell_args = [map_argument(a, f"spec.args[{i}]", resolve) for i, a in enumerate(spec.args)]
    cell_env = [
        ("EXPKIT_RUN_ID", run_id),
        ("EXPKIT_ALGORITHM", _TAG["algorithm"]),
        ("EXPKIT_DATASET", _TAG["dataset"]),
        ("EXPKIT_REPLICATE", _TAG["replicate"]),
        ("EXPKIT_SEED", SEED_EXPRESSION),
        ("EXPKIT_PARAMS", "{{inputs.parameters.params}}"),
        ("EXPKIT_OUTPUT_DIR", OUTPUT_DIR),
        ("EXPKIT_CELL", f"{_TAG['algorithm']}/{_TAG['dataset']}/{_TAG['replicate']}"),
    ]
    cell_inputs = ["algorithm", "dataset", "datasetSeed", "replicate", "params", *(f"p-{x}" for x in used)]
    if per_pod > 1:
        cell_args = [*command, *cell_args]
        command = [runner_interpreter(list(spec.command)), "-c", RUNNER_SCRIPT]
        cell_env = [
            *(e for e in cell_env if e[0] in ("EXPKIT_RUN_ID", "EXPKIT_ALGORITHM", "EXPKIT_DATASET", "EXPKIT_PARAMS")),
            *zip(
                BATCH_ENV,
                (
                    "{{inputs.parameters.replicates}}",
                    "{{inputs.parameters.datasetSeed}}",
                    str(spec.timeout or ""),
                    str(spec.retries),
                    OUTPUT_DIR,
                    f"{STATUS_DIR}/{STATUS_PARAMETER}.json",
                ),
            ),
        ]
        cell_inputs[3] = "replicates"
    return {"cell_inputs": cell_inputs, "cell_command": command, "cell_args": cell_args, "cell_env": cell_env}


def _prepare(exp: Experiment, run_id: str) -> dict[str, Any] | None:
    """The ``prepare`` task (the spec's prepare command, parameters substituted), or None."""
    spec = exp.spec
    if spec.prepare is None:
        return None
    glob = dict(spec.params)
    values = {f"params.{k}": v for k, v in glob.items()}

    def prep(items: Sequence[str], field: str) -> list[str]:
        out = []
        for i, item in enumerate(items):
            text = substitute(item, values)
            _check_literal_text(text, set(), f"{field}[{i}]")
            out.append(text)
        return out

    return {
        "command": prep(spec.prepare.command, "spec.prepare.command"),
        "args": prep(spec.prepare.args, "spec.prepare.args"),
        "env": [("EXPKIT_RUN_ID", run_id), ("EXPKIT_PARAMS", argo_json(glob))],
        "timeout": _timeout(spec.prepare.timeout),
        "scheduling": _scheduling(spec.kubernetes, None),
    }


def _finalize(exp: Experiment, run_id: str, expkit_image: str | None, key_prefix: str) -> dict[str, Any] | None:
    """The ``finalize`` exit handler, only with a pinned expkit image."""
    if expkit_image is None:
        return None
    if not is_pinned(expkit_image):
        raise RenderError(
            f"expkit image {expkit_image!r} is not pinned by digest: give "
            "'registry/repo:tag@sha256:<64 hex digits>' (or no expkit image, which leaves the "
            "finalize step out)"
        )
    return {
        "image": expkit_image,
        "command": list(FINALIZE_COMMAND),
        "env": [
            ("EXPKIT_RUN_ID", run_id),
            ("EXPKIT_WORKFLOW_NAME", "{{workflow.name}}"),
            ("EXPKIT_WORKFLOW_STATUS", "{{workflow.status}}"),
            ("EXPKIT_WORKFLOW_FAILURES", "{{workflow.failures}}"),
            ("EXPKIT_OUTPUT_DIR", OUTPUT_DIR),
        ],
        "resources": {"requests": dict(FINALIZE_RESOURCES), "limits": dict(FINALIZE_RESOURCES)},
        "output_key": f"{key_prefix}{run_id}/finalize",
        "scheduling": _scheduling(exp.spec.kubernetes, None),
    }


def _probe(exp: Experiment, run_id: str, key_prefix: str) -> dict[str, Any]:
    """The environment probe step: the image's Python reports its packages into ``<run-id>/environment.json``
    (docs/reproducibility.md); it runs beside the cells, and its failure (no Python) fails nothing."""
    return {
        "command": [runner_interpreter(list(exp.spec.command)), "-c", probe_wrapper(PROBE_SCRIPT)],
        "env": [("EXPKIT_RUN_ID", run_id)],
        "resources": {"requests": dict(FINALIZE_RESOURCES), "limits": dict(FINALIZE_RESOURCES)},
        "path": PROBE_OUTPUT,
        "output_key": f"{key_prefix}{run_id}/environment.json",
        "scheduling": _scheduling(exp.spec.kubernetes, None),
    }


def _cell_limits(exp: Experiment, per_pod: int) -> dict[str, Any]:
    """A cell pod's deadline and Argo retries. A batch pod retries its cells itself (no Argo retry, which
    would rerun them all) and gets the time of all its cells' attempts, plus a minute."""
    spec = exp.spec
    if per_pod == 1:
        return {"timeout": _timeout(spec.timeout), "retries": spec.retries}
    deadline = None if spec.timeout is None else spec.timeout * (spec.retries + 1) * per_pod + 60
    return {"timeout": _timeout(deadline), "retries": 0}


def _metadata(exp: Experiment, run_id: str, sha256: str) -> dict[str, Any]:
    """The workflow's labels and annotations, its pods' labels, and the pod settings of ``spec.kubernetes``."""
    k8s = exp.spec.kubernetes
    return {
        "labels": {
            "expkit.io/experiment": exp.metadata.name,
            "expkit.io/run-id": run_id,
            "expkit.io/spec-sha256": sha256[:63],
        },
        "annotations": {"expkit.io/spec-sha256": sha256},
        "pod_labels": {"expkit.io/experiment": exp.metadata.name, "expkit.io/run-id": run_id},
        # Default: the account `expkit cluster install` creates with the executor's minimal Role.
        "service_account": (k8s.serviceAccountName if k8s and k8s.serviceAccountName else DEFAULT_SERVICE_ACCOUNT),
        "image_pull_secrets": [{"name": n} for n in ((k8s.imagePullSecrets if k8s else None) or [])],
        "pod_gc": (k8s.podGC if k8s and k8s.podGC else DEFAULT_POD_GC),
        "ttl": (
            k8s.ttlSecondsAfterFinished if k8s and k8s.ttlSecondsAfterFinished is not None else DEFAULT_TTL_SECONDS
        ),
    }


def _context(
    exp: Experiment,
    run_id: str,
    sha256: str,
    namespace: str | None,
    expkit_image: str | None,
    key_prefix: str,
    cells: Collection[str] | None = None,
    generate_name: str | None = None,
    shard: Shard | None = None,
    probe: bool = False,
) -> dict[str, Any]:
    """Everything the template renders, computed in the order the spec's fields are checked."""
    spec = exp.spec
    fan = _fanout(exp, cells)
    defaults = _fanout_defaults(fan)
    datasets = _dataset_tasks(exp, fan, defaults)
    profiles, cell_of = _profiles(exp)
    algorithms = _algorithm_tasks(exp, fan, cell_of)
    container = _cell_container(exp, run_id, fan.used, fan.per_pod)
    prepare = _prepare(exp, run_id)
    finalize = _finalize(exp, run_id, expkit_image, key_prefix)
    meta = _metadata(exp, run_id, sha256)
    parallelism = spec.parallelism
    if shard is not None:  # labels tie the shards to the run; the run's parallelism is shared among them
        meta["labels"].update(shard.labels())
        parallelism = max(1, parallelism // shard.count) if parallelism else None
    return {
        "name": shard.name(run_id) if shard is not None else run_id,
        "generate_name": generate_name,
        "namespace": namespace,
        **meta,
        "parallelism": parallelism,
        "artifact_repository_configmap": ARTIFACT_REPOSITORY_CONFIGMAP,
        "image": spec.image,
        "resources": _resources(exp),
        "prepare": prepare,
        "datasets": datasets,
        "fanout_inputs": list(defaults.items()),
        "algorithms": algorithms,
        "replicates": str(spec.replicates),
        "cells": list(profiles.values()),
        **container,
        **_cell_limits(exp, fan.per_pod),
        "output_dir": OUTPUT_DIR,
        "output_volume": OUTPUT_VOLUME,
        "output_key": f"{key_prefix}{run_id}/runs/{_TAG['algorithm']}/{_TAG['dataset']}"
        + ("" if fan.per_pod > 1 else f"/{_TAG['replicate']}"),
        "batch": {"status_dir": STATUS_DIR, "status_volume": STATUS_VOLUME, "parameter": STATUS_PARAMETER}
        if fan.per_pod > 1
        else None,
        "finalize": finalize,
        "probe": _probe(exp, run_id, key_prefix) if probe else None,
    }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _check_inputs(
    loaded: LoadedSpec, run_id: str, namespace: str | None, key_prefix: str, generate_name: str | None = None
) -> None:
    name = loaded.name
    bad_prefix = generate_name is not None and (
        not re.fullmatch(r"[a-z0-9][-a-z0-9]*", generate_name) or len(generate_name) > 58
    )
    if bad_prefix:
        raise RenderError(
            f"generateName {generate_name!r} must be at most 58 lowercase letters, digits and '-', "
            "starting with a letter or digit (the API server appends 5 characters)"
        )
    if not _RUN_ID_RE.match(run_id) or len(run_id) > 63:
        raise RenderError(
            f"run id {run_id!r} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-'): "
            f"run ids look like '{name}-<5 chars>'"
        )
    if not run_id.startswith(f"{name}-"):
        raise RenderError(
            f"run id {run_id!r} does not belong to experiment {name!r}: run ids look like '{name}-<5 chars>'"
        )
    if namespace is not None and (not _RUN_ID_RE.match(namespace) or len(namespace) > 63):
        raise RenderError(f"namespace {namespace!r} is not a Kubernetes namespace name (DNS-1123 label)")
    if key_prefix and (
        not re.fullmatch(r"([A-Za-z0-9._-]+/)+", key_prefix)
        or any(p in (".", "..") for p in key_prefix.split("/")[:-1])
    ):
        raise RenderError(
            f"key prefix {key_prefix!r} must be relative '/'-separated segments ending with '/', e.g. 'experiments/'"
        )


def render_yaml(
    loaded: LoadedSpec,
    run_id: str,
    *,
    namespace: str | None = None,
    expkit_image: str | None = None,
    key_prefix: str = "",
    cells: Collection[str] | None = None,
    generate_name: str | None = None,
    shard: Shard | None = None,
) -> str:
    """The Argo Workflow of ``loaded`` as YAML text, validated strictly (see :func:`render_workflow`)."""
    return _render(
        loaded,
        run_id,
        namespace=namespace,
        expkit_image=expkit_image,
        key_prefix=key_prefix,
        cells=cells,
        generate_name=generate_name,
        shard=shard,
    )[0]


def render_workflow(
    loaded: LoadedSpec,
    run_id: str,
    *,
    namespace: str | None = None,
    expkit_image: str | None = None,
    key_prefix: str = "",
    cells: Collection[str] | None = None,
    generate_name: str | None = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """The Argo Workflow of ``loaded`` as a dict, ready to submit; validated strictly.

    ``run_id`` becomes ``metadata.name`` (it must be ``<experiment>-<suffix>``), unless
    ``generate_name`` is given: then the workflow has ``metadata.generateName`` instead and the API
    server picks its name, while labels, ``EXPKIT_RUN_ID`` and artifact keys still carry ``run_id``
    (a retry writes into an existing run). ``cells`` (keys ``alg/ds/rep``) restricts the workflow to
    those cells: each algorithm task loops with ``withParam`` over the replicates its dataset lists,
    so the size grows with the number of cells listed. ``expkit_image`` (pinned by digest) adds the
    ``finalize`` exit handler; without it there is none. Cell outputs go to
    ``<key_prefix><run-id>/runs/<algorithm>/<dataset>/<replicate>/`` in the namespace's artifact
    repository. Raises :class:`RenderError` (exit code 2) for a spec Argo cannot run as written and
    :class:`~expkit.executors.argo.validate.WorkflowValidationError` if the result is not a valid workflow.
    ``shard`` makes it one of several workflows of the run (its name, labels and share of
    ``spec.parallelism``; see :mod:`~expkit.executors.argo.shards`).
    """
    return _render(
        loaded,
        run_id,
        namespace=namespace,
        expkit_image=expkit_image,
        key_prefix=key_prefix,
        cells=cells,
        generate_name=generate_name,
        shard=shard,
    )[1]


def render_both(loaded: LoadedSpec, run_id: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """The YAML text and the object of :func:`render_workflow` (same options), rendered and validated once;
    ``probe=True`` adds the environment probe step (see docs/reproducibility.md)."""
    return _render(loaded, run_id, **options)


def _parse(text: str) -> dict[str, Any]:
    """Parse the rendered YAML. The cyclic garbage collector is paused meanwhile: parsing allocates
    only acyclic objects, and collections triggered by their sheer number double the time."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc: dict[str, Any] = yaml.load(text, Loader=loader)
        return doc
    except yaml.YAMLError as err:
        raise WorkflowValidationError(f"{TEMPLATE_DIR}/{TEMPLATE_NAME}", f"rendered text is not YAML: {err}") from err
    finally:
        if was_enabled:
            gc.enable()


def _render(
    loaded: LoadedSpec,
    run_id: str,
    *,
    namespace: str | None,
    expkit_image: str | None,
    key_prefix: str,
    cells: Collection[str] | None = None,
    generate_name: str | None = None,
    shard: Shard | None = None,
    probe: bool = False,
) -> tuple[str, dict[str, Any]]:
    _check_inputs(loaded, run_id, namespace, key_prefix, generate_name)
    exp = loaded.experiment
    ctx = _context(exp, run_id, loaded.sha256, namespace, expkit_image, key_prefix, cells, generate_name, shard, probe)
    env = template_environment(str(data_dir(TEMPLATE_DIR)))
    try:
        text = env.get_template(TEMPLATE_NAME).render(**ctx)
    except jinja2.TemplateError as err:  # a bug in the shipped template, not in the spec
        raise WorkflowValidationError(f"{TEMPLATE_DIR}/{TEMPLATE_NAME}", f"template error: {err}") from err
    doc = _parse(text)
    validate_workflow(doc)
    if len(text) > ETCD_REQUEST_LIMIT:
        log.warning(
            "the workflow of %s is %d bytes, over the ~%d bytes Kubernetes (etcd) accepts for one object: "
            "split the experiment into several runs (see docs/argo.md)",
            run_id,
            len(text),
            ETCD_REQUEST_LIMIT,
        )
    log.debug("rendered workflow %s: %d bytes, %d templates", run_id, len(text), len(doc["spec"]["templates"]))
    return text, doc

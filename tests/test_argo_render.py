"""Rendering a spec into an Argo Workflow, and validating workflows strictly (offline).

Several tests run the rendered workflow through a small interpreter of the Argo features it uses
(simple ``{{...}}`` substitution with fasttemplate semantics, input defaults, ``withSequence``, and
the arithmetic subset of expression tags) and compare every cell's argv and environment with what
the local executor computes for the same cell (``matrix.render_argv`` / ``contract.run_environment``).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import k8s_double
import pytest
import yaml

from expkit.core.contract import ENV_VARS, run_environment
from expkit.core.errors import ExpkitError, InputError
from expkit.executors.argo import (
    RenderError,
    WorkflowValidationError,
    render_workflow,
    render_yaml,
    validate_workflow,
)
from expkit.executors.argo.render import (
    DEFAULT_MEMORY,
    OUTPUT_DIR,
    SEED_EXPRESSION,
    yaml_value,
)
from expkit.runs.matrix import build_matrix, derive_seed, render_argv
from expkit.spec import LoadedSpec, load_spec, load_spec_text
from expkit.stores.base import cell_prefix

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "quickstart.workflow.yaml"
GOLDEN_RUN_ID = "quickstart-golde"
IMAGE = "registry.example/opt:1@sha256:" + "0" * 64
EXPKIT_IMAGE = "registry.example/expkit:0.1@sha256:" + "1" * 64


def make_spec(**spec: Any) -> LoadedSpec:
    """A spec from keyword fields of ``spec:`` (dumped as JSON-like YAML flow)."""
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["python", "run.py"],
        "args": ["--alg={algorithm}", "--ds={dataset}", "--seed={seed}", "--rep={replicate}", "--out={output_dir}"],
        "algorithms": [{"name": "a1"}, {"name": "a2"}],
        "datasets": ["d1", "d2"],
        "replicates": 3,
        "metric": {"name": "best", "goal": "minimize"},
    }
    body.update(spec)
    doc = {"apiVersion": "expkit/v1", "kind": "Experiment", "metadata": {"name": "exp"}, "spec": body}
    return load_spec_text(yaml_value(doc))


# ---------------------------------------------------------------------------------------------
# A small interpreter of the Argo features the rendered workflow uses
# ---------------------------------------------------------------------------------------------

# The interpreter is the test double's (tests/k8s_double.py), which plays Argo's controller there.
_eval_expression = k8s_double._eval_expression
substitute_tags = k8s_double.substitute
_bind = k8s_double.bind_inputs


def _scope(inputs: dict[str, str]) -> dict[str, str]:
    return {f"inputs.parameters.{k}": v for k, v in inputs.items()}


def _args(task: dict, scope: dict[str, str]) -> dict[str, str]:
    return {p["name"]: substitute_tags(p["value"], scope) for p in task.get("arguments", {}).get("parameters", [])}


def simulate(doc: dict) -> dict[str, dict[str, Any]]:
    """Every cell the workflow runs: ``{"alg/ds/rep": {"command", "args", "env", "key", "node", "template"}}``."""
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    cells: dict[str, dict[str, Any]] = {}
    for task in templates[doc["spec"]["entrypoint"]]["dag"]["tasks"]:
        fan = templates[task["template"]]
        if "dag" not in fan:
            continue  # the prepare task
        fan_inputs = _bind(fan, _args(task, {}))
        for atask in fan["dag"]["tasks"]:
            cell_t = templates[atask["template"]]
            for r in range(int(atask["withSequence"]["count"])):
                scope = {**_scope(fan_inputs), "item": str(r)}
                inputs = _bind(cell_t, _args(atask, scope))
                cscope = _scope(inputs)
                ctr = cell_t["container"]
                run = {
                    "command": [substitute_tags(c, cscope) for c in ctr["command"]],
                    "args": [substitute_tags(a, cscope) for a in ctr.get("args", [])],
                    "env": {e["name"]: substitute_tags(e["value"], cscope) for e in ctr["env"]},
                    "key": substitute_tags(cell_t["outputs"]["artifacts"][0]["s3"]["key"], cscope),
                    "node": f"{doc['metadata']['name']}.{task['name']}.{atask['name']}({r}:{r})",
                    "template": cell_t,
                }
                cells[run["env"]["EXPKIT_CELL"]] = run
    return cells


def assert_matches_local(loaded: LoadedSpec, run_id: str = "exp-abcde", **kwargs: Any) -> dict[str, dict]:
    doc = render_workflow(loaded, run_id, **kwargs)
    cells = simulate(doc)
    matrix = build_matrix(loaded.experiment)
    assert sorted(cells) == sorted(c.key for c in matrix)
    for cell in matrix:
        run = cells[cell.key]
        assert run["command"] + run["args"] == render_argv(loaded.experiment, cell, OUTPUT_DIR), cell.key
        local = run_environment(
            run_id=run_id,
            algorithm=cell.algorithm,
            dataset=cell.dataset,
            replicate=cell.replicate,
            seed=cell.seed,
            params=cell.params,
            output_dir=OUTPUT_DIR,
        )
        env = dict(run["env"])
        assert set(env) == set(ENV_VARS)
        assert json.loads(env.pop("EXPKIT_PARAMS")) == json.loads(local.pop("EXPKIT_PARAMS")), cell.key
        assert env == local
        assert run["key"] + "/" == cell_prefix(run_id, cell.key)
    return cells


# ---------------------------------------------------------------------------------------------
# The rendered workflow computes what local runs compute
# ---------------------------------------------------------------------------------------------


def test_quickstart_cells_match_local_runs() -> None:
    loaded = load_spec(REPO / "examples" / "quickstart" / "experiment.yml")
    cells = assert_matches_local(loaded, "quickstart-abcde")
    assert len(cells) == 3 * 7 * 8


def test_params_merge_global_dataset_algorithm_per_cell() -> None:
    loaded = make_spec(
        args=["--x={params.x}", "--y={params.y}", "--z={params.z}", "--w={params.w}", "{params.cfg}"],
        params={"x": 1, "y": "global", "cfg": {"depth": 2, "tags": ["a", "b"]}, "z": False},
        algorithms=[
            {"name": "a1", "params": {"x": 10, "only_a1": [1, 2], "w": "from-a1"}},
            {"name": "a2", "params": {"y": "alg", "cfg": {"depth": 9}, "w": None}},
            {"name": "a3"},
        ],
        datasets=[
            {"name": "d1", "params": {"x": 5, "y": "ds", "w": 1.5}},
            {"name": "d2", "params": {"w": "d2"}},
            {"name": "d3", "params": {"z": True, "w": {"nested": {"k": "v"}}, "extra": 0}},
        ],
        replicates=2,
    )
    assert_matches_local(loaded)


def test_seed_expression_equals_matrix_derive_seed() -> None:
    loaded = make_spec(seed=987654321, datasets=["sphere", "rosenbrock", "ackley"], replicates=5)
    doc = render_workflow(loaded, "exp-abcde")
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    env = {e["name"]: e["value"] for e in templates["cell"]["container"]["env"]}
    assert env["EXPKIT_SEED"] == SEED_EXPRESSION and SEED_EXPRESSION.startswith("{{=")
    offsets = {}
    for task in templates["main"]["dag"]["tasks"]:
        args = {p["name"]: p["value"] for p in task["arguments"]["parameters"]}
        offsets[args["dataset"]] = args["datasetSeed"]
    expr = SEED_EXPRESSION[3:-2]
    for ds in ("sphere", "rosenbrock", "ackley"):
        for rep in (0, 1, 4, 999_999, 2**31 - 2):
            scope = {"inputs.parameters.datasetSeed": offsets[ds], "inputs.parameters.replicate": str(rep)}
            assert _eval_expression(expr, scope) == derive_seed(987654321, ds, rep), (ds, rep)


# ---------------------------------------------------------------------------------------------
# Shape and size
# ---------------------------------------------------------------------------------------------


def _scale_spec(algorithms: int, datasets: int, replicates: int) -> LoadedSpec:
    return make_spec(
        args=[
            "--alg={algorithm}",
            "--ds={dataset}",
            "--seed={seed}",
            "--dim={params.dim}",
            "--lr={params.lr}",
            "--out={output_dir}",
        ],
        params={"budget": 100},
        algorithms=[{"name": f"algorithm-{i}", "params": {"lr": i / 10}} for i in range(algorithms)],
        datasets=[{"name": f"dataset-{i:04d}", "params": {"dim": i % 7 + 1}} for i in range(datasets)],
        replicates=replicates,
    )


def test_compact_fan_out_size_does_not_grow_with_replicates() -> None:
    big = render_yaml(_scale_spec(10, 100, 1000), "exp-abcde")
    assert len(big.encode()) < 50_000  # 1,000,000 cells
    sizes = {r: len(render_yaml(_scale_spec(10, 100, r), "exp-abcde")) for r in (10, 99, 100_000)}
    assert sizes[10] == sizes[99]
    assert sizes[100_000] - sizes[10] == 10 * 4  # only the digits of the 10 withSequence counts
    doc = yaml.load(big, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    assert len(templates["main"]["dag"]["tasks"]) == 100
    assert len(templates["algorithms"]["dag"]["tasks"]) == 10
    assert all(t["withSequence"] == {"count": "1000"} for t in templates["algorithms"]["dag"]["tasks"])


def test_prepare_runs_first_and_node_names_map_back_to_cells() -> None:
    loaded = make_spec(
        params={"url": "https://x.test/data"},
        prepare={"command": ["python", "fetch.py"], "args": ["--from={params.url}"], "timeout": "5m"},
    )
    doc = render_workflow(loaded, "exp-abcde")
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    tasks = templates["main"]["dag"]["tasks"]
    assert tasks[0] == {"name": "prepare", "template": "prepare"}
    assert all(t["dependencies"] == ["prepare"] for t in tasks[1:])
    prep = templates["prepare"]
    assert prep["container"]["image"] == IMAGE
    assert prep["container"]["command"] + prep["container"]["args"] == [
        "python",
        "fetch.py",
        "--from=https://x.test/data",
    ]
    assert prep["activeDeadlineSeconds"] == 300
    cells = simulate(doc)
    assert cells["a2/d1/2"]["node"] == "exp-abcde.ds-d1.alg-a2(2:2)"
    annotations = templates["cell"]["metadata"]["annotations"]
    scope = _scope({"algorithm": "a2", "dataset": "d1", "replicate": "2"})
    assert substitute_tags(annotations["expkit.io/cell"], scope) == "a2/d1/2"


def test_no_shell_command_is_the_spec_command() -> None:
    loaded = make_spec(command=["./bin/solver", "--alg", "{algorithm}"], args=["a; rm -rf /", "$(echo hi)"])
    doc = render_workflow(loaded, "exp-abcde")
    ctr = {t["name"]: t for t in doc["spec"]["templates"]}["cell"]["container"]
    assert ctr["command"] == ["./bin/solver", "--alg", "{{inputs.parameters.algorithm}}"]
    assert ctr["args"] == ["a; rm -rf /", "$(echo hi)"]
    assert not any(c in ("sh", "bash", "/bin/sh", "-c") for c in ctr["command"] + ctr["args"])


def test_placeholders_map_to_argo_parameters() -> None:
    loaded = make_spec(args=["{algorithm}", "{dataset}", "{replicate}", "{seed}", "{output_dir}", "lit{{x}}"])
    ctr = {t["name"]: t for t in render_workflow(loaded, "exp-abcde")["spec"]["templates"]}["cell"]["container"]
    assert ctr["args"] == [
        "{{inputs.parameters.algorithm}}",
        "{{inputs.parameters.dataset}}",
        "{{inputs.parameters.replicate}}",
        SEED_EXPRESSION,
        "/expkit/output",
        "lit{x}",
    ]


# ---------------------------------------------------------------------------------------------
# Safe insertion
# ---------------------------------------------------------------------------------------------

NASTY = [
    'He said "hi"',
    "it's",
    "line1\nline2: x\n- y",
    "#not a comment",
    "a: b",
    "on",
    "yes",
    "NO",
    "~",
    "null",
    "}}",
    "x}}y",
    "{",
    "[1, 2]",
    "{a: 1}",
    "&anchor *ref",
    "!!python/object:os.system",
    "--- \n...",
    "\t tab",
    "emoji 😀 \U0001f600",
    "\u2028\x85",
    "\\u0041",
    "back\\slash",
    "%TAG",
    "@at `tick`",
]


def test_injection_attempts_stay_data() -> None:
    params = {f"p{i}": v for i, v in enumerate(NASTY)}
    loaded = make_spec(
        args=["--v={params.p2}", "--w={params.p9}", 'literal "quoted": x # y', "{params.p17}"],
        params=params,
        datasets=[{"name": "d1", "params": {"inj": "}}\n  evil: true", "brace": "{{not-a-tag}}"}}],
        algorithms=[{"name": "a1", "params": {"q": "{{workflow.name}}", "obj": {"k{{": ["}}", "{{x}}"]}}}],
        kubernetes={
            "nodeSelector": {"pool": 'gpu"}, evil: {x: 1'},
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v\n  evil: 1", "effect": "NoSchedule"}],
        },
    )
    text = render_yaml(loaded, "exp-abcde")
    doc = yaml.safe_load(text)
    cells = assert_matches_local(loaded)  # every value arrives intact, EXPKIT_PARAMS included
    assert json.loads(cells["a1/d1/0"]["env"]["EXPKIT_PARAMS"])["obj"] == {"k{{": ["}}", "{{x}}"]}
    cell_t = {t["name"]: t for t in doc["spec"]["templates"]}["cell"]
    assert cell_t["nodeSelector"] == {"pool": 'gpu"}, evil: {x: 1'}
    assert cell_t["tolerations"][0]["value"] == "v\n  evil: 1"
    assert "evil" not in cell_t and "evil" not in doc["spec"]
    # A '{{' that Argo would read as a tag appears only in expkit's own tags.
    for line in text.splitlines():
        rest = line
        for tag in ("{{inputs.parameters.", "{{item}}", "{{=(asInt(inputs.parameters.datasetSeed)"):
            rest = rest.replace(tag, "")
        assert "{{" not in rest, line


def test_param_with_template_tag_used_in_args_is_rejected() -> None:
    loaded = make_spec(args=["--fmt={params.fmt}"], params={"fmt": "{{workflow.name}}"})
    with pytest.raises(RenderError, match=r"spec.params: .*'fmt'.*'\{\{'"):
        render_workflow(loaded, "exp-abcde")
    loaded = make_spec(args=["--fmt={params.fmt}"], datasets=[{"name": "d1", "params": {"fmt": "a{{b"}}])
    with pytest.raises(RenderError, match=r"spec.datasets\[0\].params"):
        render_workflow(loaded, "exp-abcde")


@pytest.mark.parametrize("value", ["bell\a", "tab\vvertical", "del\x7f", "tag \U000e0041"])
def test_param_argo_cannot_quote_used_in_args_is_rejected(value: str) -> None:
    loaded = make_spec(args=["--v={params.v}"], params={"v": value})
    with pytest.raises(RenderError, match="control character"):
        render_workflow(loaded, "exp-abcde")
    assert_matches_local(make_spec(params={"v": value}))  # EXPKIT_PARAMS carries it (JSON-escaped)


@pytest.mark.parametrize("arg", ["{{{{x}}}}", "{{{seed}}}", "pre{{{{{algorithm}"])
def test_literal_argo_tag_in_args_is_rejected(arg: str) -> None:
    loaded = make_spec(args=[arg])
    with pytest.raises(RenderError, match=r"spec.args\[0\]: .*outside a placeholder") as info:
        render_workflow(loaded, "exp-abcde")
    assert info.value.exit_code == 2 and isinstance(info.value, InputError)


def test_literal_braces_next_to_placeholders_that_argo_can_read_are_kept() -> None:
    loaded = make_spec(args=['{{"seed": {seed}}}', "{{x}}{dataset}", "{algorithm}}}"])
    cells = assert_matches_local(loaded)
    assert cells["a1/d2/1"]["args"] == [f'{{"seed": {derive_seed(0, "d2", 1)}}}', "{x}d2", "a1}"]


# ---------------------------------------------------------------------------------------------
# Cluster settings
# ---------------------------------------------------------------------------------------------


def _templates(loaded: LoadedSpec, **kwargs: Any) -> dict[str, dict]:
    return {t["name"]: t for t in render_workflow(loaded, "exp-abcde", **kwargs)["spec"]["templates"]}


def test_guaranteed_qos_requests_equal_limits() -> None:
    res = _templates(make_spec(resources={"cpu": "1500m", "memory": "3Gi"}))["cell"]["container"]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "1500m", "memory": "3Gi"}
    res = _templates(make_spec(resources={"cpu": 2}))["cell"]["container"]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "2", "memory": DEFAULT_MEMORY}


def test_gpu_limit() -> None:
    res = _templates(make_spec(resources={"cpu": 4, "memory": "16Gi", "gpu": 2}))["cell"]["container"]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "2"
    assert res["requests"] == res["limits"]


def test_scheduling_global_and_per_algorithm() -> None:
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
        }
    }
    loaded = make_spec(
        kubernetes={
            "nodeSelector": {"pool": "bench", "arch": "amd64"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": node_affinity},
        },
        algorithms=[
            {"name": "a1"},
            {
                "name": "a2",
                "kubernetes": {"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
            },
            {"name": "a3"},
        ],
    )
    templates = _templates(loaded)
    default, gpu = templates["cell"], templates["cell-a2"]
    assert default["nodeSelector"] == {"pool": "bench", "arch": "amd64"}
    assert default["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert default["affinity"] == {"nodeAffinity": node_affinity}
    assert gpu["nodeSelector"] == {"pool": "gpu", "arch": "amd64"}
    assert gpu["tolerations"] == [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"},
    ]
    assert gpu["affinity"] == {"nodeAffinity": node_affinity}
    by_task = {t["name"]: t["template"] for t in templates["algorithms"]["dag"]["tasks"]}
    assert by_task == {"alg-a1": "cell", "alg-a2": "cell-a2", "alg-a3": "cell"}
    assert_matches_local(loaded)


def test_one_cell_template_per_scheduling_profile() -> None:
    gpu = {"nodeSelector": {"pool": "gpu"}}
    loaded = make_spec(
        algorithms=[
            {"name": "a1", "kubernetes": gpu},
            {"name": "a2"},
            {"name": "a3", "kubernetes": gpu},
            {"name": "a4", "kubernetes": {"nodeSelector": {"pool": "cpu"}}},
        ]
    )
    templates = _templates(loaded)
    by_task = {t["name"]: t["template"] for t in templates["algorithms"]["dag"]["tasks"]}
    assert by_task == {"alg-a1": "cell-a1", "alg-a2": "cell", "alg-a3": "cell-a1", "alg-a4": "cell-a4"}
    assert "nodeSelector" not in templates["cell"]
    assert templates["cell-a4"]["nodeSelector"] == {"pool": "cpu"}


def test_retry_deadline_and_workflow_settings() -> None:
    loaded = make_spec(
        retries=2,
        timeout="90.5s",
        parallelism=7,
        kubernetes={
            "serviceAccountName": "runner",
            "imagePullSecrets": ["regcred"],
            "podGC": "OnWorkflowSuccess",
            "ttlSecondsAfterFinished": 3600,
        },
    )
    doc = render_workflow(loaded, "exp-abcde", namespace="research")
    cell = {t["name"]: t for t in doc["spec"]["templates"]}["cell"]
    assert cell["retryStrategy"]["limit"] == 2
    assert cell["activeDeadlineSeconds"] == 91
    spec = doc["spec"]
    assert spec["parallelism"] == 7
    assert spec["serviceAccountName"] == "runner"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["podGC"] == {"strategy": "OnWorkflowSuccess"}
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 3600}
    assert doc["metadata"]["namespace"] == "research"
    plain = render_workflow(make_spec(), "exp-abcde")
    cell = {t["name"]: t for t in plain["spec"]["templates"]}["cell"]
    assert "retryStrategy" not in cell and "activeDeadlineSeconds" not in cell
    assert plain["spec"]["podGC"] == {"strategy": "OnPodSuccess"} and "parallelism" not in plain["spec"]


def test_labels_name_and_spec_hash() -> None:
    loaded = make_spec()
    meta = render_workflow(loaded, "exp-x7k2p")["metadata"]
    assert meta["name"] == "exp-x7k2p"
    assert meta["labels"]["expkit.io/experiment"] == "exp"
    assert meta["labels"]["expkit.io/run-id"] == "exp-x7k2p"
    assert meta["labels"]["expkit.io/spec-sha256"] == loaded.sha256[:63]
    assert meta["annotations"]["expkit.io/spec-sha256"] == loaded.sha256 and len(loaded.sha256) == 64
    with pytest.raises(RenderError, match="does not belong to experiment 'exp'"):
        render_workflow(loaded, "other-x7k2p")
    with pytest.raises(RenderError, match="DNS-1123"):
        render_workflow(loaded, "exp-X7K2P")


def test_artifacts_follow_the_store_layout_without_credentials() -> None:
    loaded = make_spec(prepare={"command": ["true"]})
    text = render_yaml(loaded, "exp-abcde", expkit_image=EXPKIT_IMAGE, key_prefix="team/")
    doc = yaml.safe_load(text)
    assert doc["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories"}
    cells = simulate(doc)
    assert cells["a2/d1/0"]["key"] == "team/exp-abcde/runs/a2/d1/0"
    art = cells["a2/d1/0"]["template"]["outputs"]["artifacts"][0]
    assert art["path"] == OUTPUT_DIR and art["archive"] == {"none": {}} and set(art["s3"]) == {"key"}
    assert cells["a2/d1/0"]["template"]["archiveLocation"] == {"archiveLogs": True}

    def walk(node: Any, path: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                assert k not in (
                    "accessKeySecret",
                    "secretKeySecret",
                    "endpoint",
                    "bucket",
                    "accessKey",
                    "secretKey",
                    "sessionTokenSecret",
                    "caSecret",
                ), f"{path}.{k}"
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(doc)
    assert "secret" not in text.lower()


def test_finalize_exit_handler_needs_a_pinned_expkit_image() -> None:
    loaded = make_spec()
    assert "onExit" not in render_workflow(loaded, "exp-abcde")["spec"]
    doc = render_workflow(loaded, "exp-abcde", expkit_image=EXPKIT_IMAGE)
    assert doc["spec"]["onExit"] == "finalize"
    fin = {t["name"]: t for t in doc["spec"]["templates"]}["finalize"]
    assert fin["container"]["image"] == EXPKIT_IMAGE
    assert fin["outputs"]["artifacts"][0]["s3"] == {"key": "exp-abcde/finalize"}
    with pytest.raises(RenderError, match="not pinned by digest"):
        render_workflow(loaded, "exp-abcde", expkit_image="ghcr.io/expkit/expkit:latest")


# ---------------------------------------------------------------------------------------------
# Strict validation
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart_doc() -> dict:
    loaded = load_spec(REPO / "examples" / "quickstart" / "experiment.yml")
    return render_workflow(loaded, GOLDEN_RUN_ID, expkit_image=EXPKIT_IMAGE)


def _by_name(doc: dict, name: str) -> dict:
    return next(t for t in doc["spec"]["templates"] if t["name"] == name)


def test_rendered_workflow_validates(quickstart_doc: dict) -> None:
    validate_workflow(copy.deepcopy(quickstart_doc))


def test_misspelled_with_param_is_rejected_with_its_path(quickstart_doc: dict) -> None:
    doc = copy.deepcopy(quickstart_doc)
    task = _by_name(doc, "algorithms")["dag"]["tasks"][1]
    task["withParams"] = task.pop("withSequence")
    index = doc["spec"]["templates"].index(_by_name(doc, "algorithms"))
    with pytest.raises(WorkflowValidationError) as info:
        validate_workflow(doc)
    assert info.value.path == f"spec.templates[{index}].dag.tasks[1].withParams"
    assert "unknown field 'withParams'" in str(info.value) and "did you mean 'withParam'" in str(info.value)
    assert info.value.exit_code == 1 and isinstance(info.value, ExpkitError)


def test_misspelled_s3_key_is_rejected_with_its_path(quickstart_doc: dict) -> None:
    doc = copy.deepcopy(quickstart_doc)
    art = _by_name(doc, "cell")["outputs"]["artifacts"][0]
    art["s3"] = {"kye": art["s3"]["key"]}
    index = doc["spec"]["templates"].index(_by_name(doc, "cell"))
    with pytest.raises(WorkflowValidationError, match=r"did you mean 'key'") as info:
        validate_workflow(doc)
    assert info.value.path == f"spec.templates[{index}].outputs.artifacts[0].s3.kye"


@pytest.mark.parametrize(
    "mutate, path, message",
    [
        (lambda d: d["spec"].update(entrypoint="mian"), "spec.entrypoint", "template 'mian' does not exist"),
        (lambda d: d["spec"].update(onExit="nope"), "spec.onExit", "does not exist"),
        (
            lambda d: _by_name(d, "main")["dag"]["tasks"][0].update(template="algoritms"),
            "dag.tasks[0].template",
            "did you mean 'algorithms'",
        ),
        (
            lambda d: _by_name(d, "main")["dag"]["tasks"][0].update(dependencies=["ghost"]),
            "dag.tasks[0].dependencies",
            "task 'ghost'",
        ),
        (
            lambda d: [
                t.update(dependencies=[n])
                for t, n in zip(_by_name(d, "main")["dag"]["tasks"][:2], ["ds-ellipsoid", "ds-sphere"])
            ],
            "dag.tasks",
            "dependency cycle",
        ),
        (
            lambda d: _by_name(d, "cell")["container"].update(resources={"limits": {"cpu": True}}),
            "container.resources.limits.cpu",
            "must be a string or a number",
        ),
        (
            lambda d: _by_name(d, "cell")["container"]["args"].append("{{inputs.parameters.nope}}"),
            "container.args[6]",
            "input parameter 'nope'",
        ),
        (lambda d: _by_name(d, "cell")["container"]["args"].append("{{oops"), "container.args[6]", "never closed"),
        (
            lambda d: _by_name(d, "main")["dag"]["tasks"][0]["arguments"]["parameters"].pop(0),
            "dag.tasks[0].arguments",
            "'dataset' of template 'algorithms' is not supplied",
        ),
        (lambda d: d["metadata"]["labels"].update({"expkit.io/run-id": "x" * 64}), "metadata.labels", "label value"),
        (lambda d: d.update(kind="CronWorkflow"), "kind", "must be 'Workflow'"),
        (lambda d: d["spec"].update(parallelism="7"), "spec.parallelism", "must be an integer"),
    ],
)
def test_semantic_and_type_errors_name_the_path(quickstart_doc: dict, mutate: Any, path: str, message: str) -> None:
    doc = copy.deepcopy(quickstart_doc)
    mutate(doc)
    with pytest.raises(WorkflowValidationError) as info:
        validate_workflow(doc)
    assert path in info.value.path and message in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------
# Golden file
# ---------------------------------------------------------------------------------------------

EXAMPLE_SPECS = sorted((REPO / "examples").glob("*/*.yml"))


@pytest.mark.parametrize("spec", EXAMPLE_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_golden_files(spec: Path) -> None:
    """Every example spec renders to its golden workflow (which validated strictly on the way)."""
    loaded = load_spec(spec)
    golden = REPO / "tests" / "golden" / f"{spec.parent.name}.{spec.stem}.workflow.yaml"
    if spec.parent.name == "quickstart" and spec.stem == "experiment":
        golden = GOLDEN
    text = render_yaml(loaded, f"{loaded.name[:44]}-golde")
    if os.environ.get("EXPKIT_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"golden file {golden.name} missing: run with EXPKIT_UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(encoding="utf-8"), (
        f"the rendered workflow of {spec} changed: review the diff, then regenerate with EXPKIT_UPDATE_GOLDEN=1"
    )


def test_every_example_has_a_golden_file() -> None:
    assert len(EXAMPLE_SPECS) >= 3  # quickstart, automl-smac experiment and smoke

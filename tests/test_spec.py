"""Stage 1, the spec: strict loading, one-line errors that name file, line, field and fix; overrides;
the resolved spec; the JSON Schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from expkit.core.errors import InputError, SpecError
from expkit.runs.matrix import build_matrix, cell_params
from expkit.spec import (
    apply_overrides,
    dump_experiment,
    is_pinned,
    json_schema,
    load_spec,
    load_spec_text,
    parse_cpu,
    parse_duration,
    parse_overrides,
    placeholders,
    substitute,
)

HERE = Path(__file__).parent
CORPUS = HERE / "malformed"
EXPECTED = yaml.safe_load((CORPUS / "expected.yml").read_text())
QUICKSTART = HERE.parent / "examples" / "quickstart" / "experiment.yml"
DIGEST = "sha256:" + "0123456789abcdef" * 4

# A message "contains a fix hint" when it tells the reader what to write or do.
FIX_HINT = re.compile(r"\b(write|use|add|remove|did you mean|define|give|keep only|check|must|e\.g\.|allowed)\b")

BASE = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: demo
spec:
  image: {image}
  command: [python, run.py]
  args: ["--seed={{seed}}", "--alg={{algorithm}}"]
  algorithms:
    - name: alpha
    - name: beta
  datasets: [d1, d2]
  replicates: 3
  metric: {{name: score, goal: minimize}}
"""


def spec_text(image: str = "python:3.12-slim", **extra: str) -> str:
    """The BASE spec, with extra ``spec:`` fields appended as raw YAML lines."""
    text = BASE.format(image=image)
    for key, value in extra.items():
        text += f"  {key}: {value}\n"
    return text


# ---------------------------------------------------------------------------------------------
# The malformed corpus
# ---------------------------------------------------------------------------------------------


def test_corpus_and_expectations_match() -> None:
    files = {p.name for p in CORPUS.glob("*.yml") if p.name != "expected.yml"}
    assert len(files) >= 30
    assert files == set(EXPECTED), (sorted(files - set(EXPECTED)), sorted(set(EXPECTED) - files))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_spec_is_rejected_clearly(name: str) -> None:
    expect = EXPECTED[name]
    path = CORPUS / name
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert err.exit_code == 2
    assert msg.startswith(str(path) + ":"), msg
    field = expect["field"]
    assert err.field == field, msg
    if field is not None:
        assert f": {field}: " in msg, msg
    if "line" in expect:
        assert err.line == expect["line"], msg
        assert msg.startswith(f"{path}:{expect['line']}: "), msg
    assert expect["contains"] in msg, msg
    assert FIX_HINT.search(err.detail), msg
    for other in err.others:  # further problems are formatted the same way
        assert other.startswith(str(path)) and "\n" not in other


def test_further_problems_are_collected() -> None:
    text = spec_text(retries="50", parallelism="0")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, path=Path("two.yml"))
    fields = [info.value.field, *(o.split(": ")[1] for o in info.value.others)]
    assert set(fields) == {"spec.retries", "spec.parallelism"}


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yml")
    assert str(info.value).startswith(str(tmp_path / "nope.yml"))
    assert "not found" in str(info.value)
    assert info.value.exit_code == 2


def test_not_utf8_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(spec_text().replace("demo", "d\xe9mo").encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "UTF-8" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Valid specs
# ---------------------------------------------------------------------------------------------


def test_defaults_are_filled_in() -> None:
    loaded = load_spec_text(spec_text())
    spec = loaded.experiment.spec
    assert spec.retries == 0 and spec.seed == 0 and spec.paired is False
    assert spec.timeout is None and spec.parallelism is None and spec.prepare is None
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0 and spec.resources.memory is None
    assert spec.params == {}
    assert loaded.experiment.metadata.description == ""
    assert loaded.name == "demo"
    assert loaded.overrides == {}


def test_dataset_shorthand_strings() -> None:
    text = spec_text().replace("datasets: [d1, d2]", "datasets: [d1, {name: d2, params: {n: 3}}]")
    datasets = load_spec_text(text).experiment.spec.datasets
    assert [(d.name, d.params) for d in datasets] == [("d1", {}), ("d2", {"n": 3})]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("2.5s", 2.5),
        ("1m30s", 90.0),
        ("45", 45.0),
        (90, 90.0),
        (0.5, 0.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds
    text = spec_text(timeout=json.dumps(value))
    assert load_spec_text(text).experiment.spec.timeout == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "m", "1d", "-5s", "0", True])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(("value", "cores"), [("500m", 0.5), ("250m", 0.25), (2, 2.0), ("1.5", 1.5), (0.5, 0.5)])
def test_cpu_amounts(value: object, cores: float) -> None:
    assert parse_cpu(value) == cores
    text = spec_text(resources=json.dumps({"cpu": value}))
    assert load_spec_text(text).experiment.spec.resources.cpu == cores


def test_prepare_and_params_placeholders_are_accepted() -> None:
    text = spec_text(
        params="{url: 'http://x/{{literal}}', budget: 10}",
        prepare="{command: [python, fetch.py, '{params.url}'], timeout: 5m}",
    )
    text = text.replace('"--alg={algorithm}"', '"--alg={algorithm}", "--b={params.budget}", "--o={output_dir}"')
    loaded = load_spec_text(text)
    assert loaded.experiment.spec.prepare.timeout == 300.0
    assert loaded.experiment.spec.args[-1] == "--o={output_dir}"


def test_param_defined_for_every_algorithm_is_resolvable() -> None:
    text = (
        spec_text()
        .replace("- name: alpha", "- {name: alpha, params: {lr: 1}}")
        .replace("- name: beta", "- {name: beta, params: {lr: 2}}")
        .replace('"--alg={algorithm}"', '"--lr={params.lr}"')
    )
    load_spec_text(text)  # no error
    only_one = text.replace("- {name: beta, params: {lr: 2}}", "- name: beta")
    with pytest.raises(SpecError, match=r"define 'lr'"):
        load_spec_text(only_one)


@pytest.mark.parametrize(
    "algs, datasets, ok",
    [
        ("[{name: a}, {name: b}]", "[{name: d1, params: {lr: 1}}, {name: d2, params: {lr: 2}}]", True),  # every dataset
        ("[{name: a, params: {lr: 1}}, {name: b}]", "[{name: d1, params: {lr: 1}}, {name: d2, params: {lr: 2}}]", True),
        ("[{name: a, params: {lr: 1}}, {name: b}]", "[{name: d1, params: {lr: 1}}, {name: d2}]", False),  # (b, d2)
        ("[{name: a}, {name: b}]", "[{name: d1}, {name: d2, params: {lr: 2}}]", False),
    ],
)
def test_param_must_resolve_for_every_algorithm_dataset_pair(algs: str, datasets: str, ok: bool) -> None:
    text = spec_text().replace('"--alg={algorithm}"', '"--lr={params.lr}"')
    text = re.sub(r"  algorithms:\n    - name: alpha\n    - name: beta\n", f"  algorithms: {algs}\n", text)
    text = text.replace("datasets: [d1, d2]", f"datasets: {datasets}")
    if ok:
        loaded = load_spec_text(text)
        exp = loaded.experiment
        assert all("lr" in cell_params(exp, c.algorithm, c.dataset) for c in build_matrix(exp))
    else:
        with pytest.raises(SpecError, match=r"define 'lr'"):
            load_spec_text(text)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_libyaml_and_python_parsers_read_every_spec_alike() -> None:
    from expkit.spec import loader as spec_module

    files = sorted({*HERE.parent.glob("examples/*/*.yml"), *CORPUS.glob("*.yml"), *(HERE / "golden").glob("*.yaml")})
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        try:
            fast = yaml.load(text, Loader=spec_module._FastUniqueKeyLoader)
        except yaml.YAMLError:
            with pytest.raises(yaml.YAMLError):  # rejected by both; the message comes from the Python parser
                yaml.load(text, Loader=spec_module._UniqueKeyLoader)
            continue
        assert fast == yaml.load(text, Loader=spec_module._UniqueKeyLoader), path


def test_placeholder_helpers() -> None:
    assert placeholders("a{seed}b{{x}}{ params.lr }") == ["seed", "params.lr"]
    assert substitute("{{{seed}}}", {"seed": 7}) == "{7}"
    assert substitute("{x}/{y}", {"x": "s", "y": [1, "a"]}) == 's/[1, "a"]'
    with pytest.raises(ValueError, match="stray"):
        placeholders("a}b")


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


def test_parse_overrides_json_or_string() -> None:
    parsed = parse_overrides(
        ["a=10", "b=true", "c=[1, 2]", "d=hello", "e=1e-3", "f=", 'g={"x": 1}', "h=k=v", 'i="10"', "j=null", "k=0.5s"]
    )
    assert parsed == {
        "a": 10,
        "b": True,
        "c": [1, 2],
        "d": "hello",
        "e": 0.001,
        "f": "",
        "g": {"x": 1},
        "h": "k=v",
        "i": "10",
        "j": None,
        "k": "0.5s",
    }
    assert isinstance(parsed["a"], int) and isinstance(parsed["i"], str)


@pytest.mark.parametrize("item", ["novalue", "=5", "bad key=1", " =1"])
def test_parse_overrides_rejects_malformed(item: str) -> None:
    with pytest.raises(InputError) as info:
        parse_overrides([item])
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def _layered() -> str:
    text = spec_text(params="{lr: 0.1, budget: 100}")
    text = text.replace("datasets: [d1, d2]", "datasets: [{name: d1, params: {lr: 0.2}}, d2]")
    return text.replace("- name: alpha", "- {name: alpha, params: {lr: 0.3, budget: 7}}")


def test_params_precedence_without_overrides() -> None:
    exp = load_spec_text(_layered()).experiment
    assert cell_params(exp, "alpha", "d1") == {"lr": 0.3, "budget": 7}
    assert cell_params(exp, "beta", "d1") == {"lr": 0.2, "budget": 100}
    assert cell_params(exp, "beta", "d2") == {"lr": 0.1, "budget": 100}


def test_override_wins_at_every_level(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yml"
    path.write_text(_layered())
    loaded = load_spec(path, ["lr=0.9"])
    assert loaded.overrides == {"lr": 0.9}
    for cell in build_matrix(loaded.experiment):
        assert cell.params["lr"] == 0.9
    spec = loaded.experiment.spec
    assert spec.params["lr"] == 0.9 and spec.datasets[0].params["lr"] == 0.9
    assert spec.algorithms[0].params == {"lr": 0.9, "budget": 7}  # only the overridden key changes
    assert "lr" not in spec.algorithms[1].params  # not added where it was not defined


def test_override_as_mapping_and_json_value() -> None:
    loaded = load_spec_text(_layered(), overrides={"budget": [1, 2]})
    assert loaded.overrides == {"budget": [1, 2]}
    assert {tuple(c.params["budget"]) for c in build_matrix(loaded.experiment)} == {(1, 2)}


def test_unknown_override_names_close_matches(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yml"
    path.write_text(_layered())
    with pytest.raises(InputError) as info:
        load_spec(path, ["budgett=5"])
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert "did you mean 'budget'" in msg and str(path) in msg and "lr" in msg
    assert "\n" not in msg


def test_unknown_override_on_spec_without_params() -> None:
    with pytest.raises(InputError, match="none"):
        load_spec_text(spec_text(), overrides=["x=1"])


def test_resolved_spec_round_trips_to_the_same_sha256(tmp_path: Path) -> None:
    text = (
        _layered() + "  timeout: 1h30m\n  resources: {cpu: 500m, memory: 2Gi}\n"
        "  prepare: {command: [python, prep.py, '{params.budget}'], timeout: 90s}\n"
    )
    path = tmp_path / "experiment.yml"
    path.write_text(text)
    loaded = load_spec(path, ["lr=0.9", "budget=50"])
    dumped = dump_experiment(loaded.experiment)
    again = load_spec_text(dumped)
    assert again.sha256 == loaded.sha256
    assert again.experiment == loaded.experiment
    assert build_matrix(again.experiment) == build_matrix(loaded.experiment)
    assert [c.params for c in build_matrix(again.experiment)] == [c.params for c in build_matrix(loaded.experiment)]
    assert loaded.to_yaml() == dumped
    # ... and differs from the spec without the overrides.
    assert load_spec(path).sha256 != loaded.sha256


def test_sha256_ignores_formatting() -> None:
    flow = spec_text()
    block = (
        flow.replace("datasets: [d1, d2]", "datasets:\n    - d1\n    - {name: d2}").replace(
            "metric: {name: score, goal: minimize}", "metric:\n    goal: minimize\n    name: score"
        )
        + "  # a comment\n  retries: 0\n"
    )
    assert load_spec_text(flow).sha256 == load_spec_text(block).sha256
    assert load_spec_text(flow).sha256 != load_spec_text(flow.replace("replicates: 3", "replicates: 4")).sha256


# ---------------------------------------------------------------------------------------------
# Image pinning
# ---------------------------------------------------------------------------------------------


def test_unpinned_image_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yml"
    path.write_text(spec_text(image="python:3.12-slim"))
    loaded = load_spec(path)
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert warning.startswith(str(path)) and "spec.image" in warning and "pin" in warning
    assert not is_pinned(loaded.experiment.spec.image)


@pytest.mark.parametrize("image", [f"python:3.12-slim@{DIGEST}", f"ghcr.io/org/img@{DIGEST}"])
def test_pinned_image_has_no_warning(image: str) -> None:
    loaded = load_spec_text(spec_text(image=image))
    assert loaded.warnings == ()
    assert is_pinned(image)


def test_quickstart_spec_loads() -> None:
    loaded = load_spec(QUICKSTART)
    assert loaded.directory == QUICKSTART.parent.resolve()
    assert len(build_matrix(loaded.experiment)) == 3 * 7 * 8
    assert loaded.experiment.spec.paired is True


# ---------------------------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------------------------


def test_json_schema_shape() -> None:
    schema = json_schema()
    json.dumps(schema)  # serializable
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) >= {"apiVersion", "kind", "metadata", "spec"}
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    spec_ref = schema["properties"]["spec"]["$ref"].rsplit("/", 1)[-1]
    spec_def = schema["$defs"][spec_ref]
    assert {"image", "command", "algorithms", "datasets"} <= set(spec_def["required"])
    # since `metrics:` (several metrics) exists, exactly one of metric / metrics is required
    assert spec_def["oneOf"] == [{"required": ["metric"]}, {"required": ["metrics"]}]
    assert spec_def.get("additionalProperties") is False


def _valid_docs() -> list[dict]:
    docs = [yaml.safe_load(QUICKSTART.read_text()), yaml.safe_load(spec_text(timeout="90s", resources="{cpu: 500m}"))]
    docs.append(yaml.safe_load(_layered()))
    return docs


def test_json_schema_validates_valid_specs_and_rejects_bad_ones() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for doc in _valid_docs():
        errors = [e.message for e in validator.iter_errors(doc)]
        assert errors == []
    for name in ("unknown-field.yml", "wrong-kind.yml", "missing-metric.yml", "bad-goal.yml", "empty-algorithms.yml"):
        doc = yaml.safe_load((CORPUS / name).read_text())
        assert not validator.is_valid(doc), name


def test_override_leaves_original_experiment_untouched() -> None:
    exp = load_spec_text(_layered()).experiment
    new = apply_overrides(exp, {"lr": 5})
    assert exp.spec.params["lr"] == 0.1 and new.spec.params["lr"] == 5


# ---------------------------------------------------------------------------------------------
# Adaptive replicates (issue 18): the optional `adaptive:` block
# ---------------------------------------------------------------------------------------------

ADAPTIVE = "{min_replicates: 4, max_replicates: 10, wave: 2, stop: decided, rope: 0.01, alpha: 0.05}"


def _adaptive_text(block: str = ADAPTIVE, replicates: str | None = None) -> str:
    text = BASE.format(image="python:3.12-slim")
    text = text.replace("  replicates: 3\n", f"  replicates: {replicates}\n" if replicates is not None else "")
    return text + f"  adaptive: {block}\n"


def test_adaptive_block_fills_in_replicates_as_max_replicates() -> None:
    exp = load_spec_text(_adaptive_text()).experiment
    assert exp.spec.replicates == 10
    assert exp.spec.adaptive is not None
    a = exp.spec.adaptive
    assert (a.min_replicates, a.max_replicates, a.wave, a.stop, a.rope, a.alpha) == (4, 10, 2, "decided", 0.01, 0.05)
    assert load_spec_text(_adaptive_text(replicates="10")).experiment.spec.replicates == 10


def test_adaptive_matrix_is_the_full_design_with_the_same_seeds() -> None:
    """Issue 18 item 3: replicate r of an adaptive spec has the seed of the fixed max_replicates design."""
    adaptive = build_matrix(load_spec_text(_adaptive_text()).experiment)
    fixed_text = BASE.format(image="python:3.12-slim").replace("replicates: 3", "replicates: 10")
    fixed = build_matrix(load_spec_text(fixed_text).experiment)
    assert [(c.key, c.seed) for c in adaptive] == [(c.key, c.seed) for c in fixed]
    assert len(adaptive) == 2 * 2 * 10


def test_spec_without_adaptive_block_is_unchanged() -> None:
    loaded = load_spec_text(BASE.format(image="python:3.12-slim"))
    assert loaded.experiment.spec.adaptive is None
    assert "adaptive" not in dump_experiment(loaded.experiment)


@pytest.mark.parametrize(
    ("block", "replicates", "field", "words"),
    [
        (ADAPTIVE, "8", "spec.replicates", "max_replicates"),
        (
            "{min_replicates: 12, max_replicates: 10, wave: 2, rope: 0.01}",
            None,
            "spec.adaptive.min_replicates",
            "at most",
        ),
        ("{min_replicates: 4, max_replicates: 10, wave: 0, rope: 0.01}", None, "spec.adaptive.wave", "at least 1"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, stop: sometimes}", None, "spec.adaptive.stop", "decided"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, stop: control}", None, "spec.adaptive.control", "control"),
        (
            "{min_replicates: 4, max_replicates: 10, wave: 2, stop: control, control: gamma}",
            None,
            "spec.adaptive.control",
            "alpha",
        ),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, control: alpha}", None, "spec.adaptive.control", "stop"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, alpha: 1.5}", None, "spec.adaptive.alpha", "less than 1"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, rope: -1}", None, "spec.adaptive.rope", "at least 0"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, rop: 0.1}", None, "spec.adaptive.rop", "'rope'"),
        ("{max_replicates: 10, wave: 2}", None, "spec.adaptive.min_replicates", "missing"),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, spending: linear}", None, "spec.adaptive.spending", "hsd"),
        (
            "{min_replicates: 4, max_replicates: 10, wave: 2, futility: 1}",
            None,
            "spec.adaptive.futility",
            "less than 1",
        ),
        ("{min_replicates: 4, max_replicates: 10, wave: 2, gamma: 100}", None, "spec.adaptive.gamma", "40"),
    ],
)
def test_adaptive_block_errors_name_the_field_and_the_fix(
    block: str, replicates: str | None, field: str, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(_adaptive_text(block, replicates), path=Path("exp.yml"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("exp.yml:"), message
    assert f" {field}: " in message, message
    assert words in message, message
    assert FIX_HINT.search(message), message


def test_adaptive_design_settings_reach_the_sequential_procedure() -> None:
    """The spending function, gamma, futility and F-race elimination are the spec's, defaults the procedure's."""
    from expkit.adaptive.driver import sequential_config
    from expkit.adaptive.sequential import SequentialConfig

    default = sequential_config(load_spec_text(_adaptive_text()).experiment)
    library = SequentialConfig(min_replicates=4, max_replicates=10, wave=2, stop="decided", rope=0.01)
    assert (default.spending, default.gamma, default.futility, default.eliminate) == (
        library.spending,
        library.gamma,
        library.futility,
        library.eliminate,
    )
    block = "{min_replicates: 4, max_replicates: 10, wave: 2, spending: pocock, futility: 0, eliminate: true}"
    tuned = sequential_config(load_spec_text(_adaptive_text(block)).experiment)
    assert (tuned.spending, tuned.futility, tuned.eliminate) == ("pocock", 0.0, True)


def test_adaptive_in_the_json_schema() -> None:
    schema = json_schema()
    spec_def = schema["$defs"]["ExperimentSpec"]
    assert "replicates" not in spec_def["required"]
    assert spec_def["anyOf"] == [{"required": ["replicates"]}, {"required": ["adaptive"]}]
    adaptive = schema["$defs"]["Adaptive"]
    names = {"min_replicates", "max_replicates", "wave", "stop", "rope", "alpha", "control"}
    names |= {"spending", "gamma", "futility", "eliminate"}  # the design's tuning, with documented defaults
    assert set(adaptive["properties"]) == names
    assert adaptive["properties"]["stop"]["enum"] == ["decided", "omnibus", "control"]
    assert adaptive["additionalProperties"] is False
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(yaml.safe_load(_adaptive_text()))
    no_reps = yaml.safe_load(BASE.format(image="python:3.12-slim").replace("  replicates: 3\n", ""))
    assert not validator.is_valid(no_reps)


def test_validate_cli_reports_adaptive_errors_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from expkit.cli import app

    path = tmp_path / "experiment.yml"
    path.write_text(_adaptive_text(replicates="8"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "spec.replicates" in result.output and "max_replicates" in result.output
    path.write_text(_adaptive_text())
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "adaptive" in result.output

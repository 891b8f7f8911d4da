"""Fuzzing the two readers of untrusted text (issue 13): the spec loader and the result.json reader.

Hypothesis generates YAML (random structures, deep nesting, anchors and aliases, odd scalars) and
result.json payloads (random bytes, random JSON, deep nesting, huge numbers). Whatever it makes, the
spec loader returns a spec or raises :class:`InputError` (``expkit validate`` exits 0 or 2, never a
traceback), and ``parse_result`` returns a document or raises :class:`ArtifactError`. Runs are
derandomized (the same examples every time) and sized to take well under a minute on 2 cores;
memory is bounded by checking that the documented size limits apply before anything is parsed
(and, for alias bombs, by tracing the allocations of the refused load).
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

#: A hostile input that hangs inside C code (the YAML parser, pydantic) is not interrupted by a signal:
#: the thread method ends the whole test run instead of letting it hang.
pytestmark = pytest.mark.timeout(240, method="thread")

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from expkit.cli import app  # noqa: E402
from expkit.core.contract import MAX_RESULT_BYTES, parse_result  # noqa: E402
from expkit.core.errors import ArtifactError, InputError  # noqa: E402
from expkit.core.safejson import load_json  # noqa: E402
from expkit.spec import load_spec_text  # noqa: E402
from expkit.spec import loader as spec_loader  # noqa: E402
from expkit.spec.limits import MAX_SPEC_BYTES  # noqa: E402

FUZZ = settings(
    derandomize=True,
    database=None,  # nothing written into the work tree
    deadline=5000,  # ms per example: none may take more than a few seconds
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata: {name: fuzz}
spec:
  image: python:3.12-slim@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
  command: [python, run.py]
  params: {budget: 10}
  algorithms: [{name: a}]
  datasets: [d1]
  replicates: 2
  metric: {name: loss, goal: minimize}
"""

#: Scalars as YAML writes them, the odd ones included (YAML 1.1 booleans, sexagesimals, tags, ...).
ODD_SCALARS = [
    # hypothesis favours the first entries of a list: the hostile ones come first
    ".inf",
    "9" * 5000,
    ".nan",
    "1.0e+999",
    "-.inf",
    "9" * 400,
    "1" + "0" * 320 + ".0",
    "1.7976931348623157e+308",
    "5e-324",
    "*undefined",
    "a" * 2000,
    "0x1F",
    "0o17",
    "017",
    "1_000",
    "190:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!str 5",
    "!!int '7'",
    "!!float '1.5'",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "'quoted'",
    '"tab\\there"',
    '"\\u0000"',
    "''",
    "-",
    "?",
    "<<",
    "=",
    "!custom x",
    "0",
    "-0",
    "~",
    "null",
    "true",
    "NO",
    "yes",
    "on",
    "1e999",
    ".NaN",
    "-1.0e-999",
]
KEYS = ["budget", "name", "params", "x", "<<", "1", "true", "~", "a b", "spec", "replicates", "seed", "timeout"]


@st.composite
def yaml_value(draw: st.DrawFn, depth: int = 0) -> str:
    """YAML text (flow style) of a random value, with anchors and aliases among its parts."""
    kind = draw(st.sampled_from(["scalar", "scalar", "list", "map", "alias", "deep"] if depth < 4 else ["scalar"]))
    if kind == "scalar":
        return draw(st.sampled_from(ODD_SCALARS) | st.integers().map(str) | st.floats().map(repr))
    if kind == "alias":
        return draw(st.sampled_from(["*a0", "*a1", "*a2", "*missing"]))
    if kind == "deep":
        n = draw(st.integers(1, 400))
        return "[" * n + draw(yaml_value(depth + 1)) + "]" * n
    items = draw(st.lists(yaml_value(depth + 1), max_size=6))
    anchor = draw(st.sampled_from(["", "", "&a0 ", "&a1 ", "&a2 "]))
    if kind == "list":
        return anchor + "[" + ", ".join(items) + "]"
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=len(items), max_size=len(items)))
    return anchor + "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, items)) + "}"


@st.composite
def alias_bomb(draw: st.DrawFn) -> str:
    """``levels`` anchors, each a list of ``fan`` aliases of the one before."""
    levels, fan = draw(st.integers(3, 12)), draw(st.integers(2, 12))
    lines = [f"    l0: &l0 [{', '.join(['x'] * fan)}]"]
    lines += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return SPEC.replace("  params: {budget: 10}\n", "  params:\n" + "\n".join(lines) + "\n")


FIELDS = [
    "params: {budget: 10}",
    "replicates: 2",
    "datasets: [d1]",
    "algorithms: [{name: a}]",
    "metric: {name: loss, goal: minimize}",
    "metadata: {name: fuzz}",
]


@st.composite
def mutated_spec(draw: st.DrawFn) -> str:
    """The valid spec with one field's value replaced by a random one (or a field added)."""
    target = draw(st.sampled_from(FIELDS))
    key = target.split(":", 1)[0]
    value = draw(yaml_value())
    if draw(st.booleans()):
        extra = draw(st.sampled_from(["seed", "timeout", "retries", "parallelism", "resources", "prepare", "paired"]))
        return SPEC.replace("  replicates: 2\n", f"  replicates: 2\n  {extra}: {value}\n")
    return SPEC.replace(target, f"{key}: {value}")


SCALAR_FIELDS = [
    "seed: {}",
    "timeout: {}",
    "retries: {}",
    "parallelism: {}",
    "paired: {}",
    "resources: {{cpu: {}}}",
    "resources: {{gpu: {}}}",
    "resources: {{memory: {}}}",
    "prepare: {{command: [python, x.py], timeout: {}}}",
    "params: {{budget: {}}}",
    "params: {{budget: [1, {{x: {}}}]}}",
]


@st.composite
def scalar_field_spec(draw: st.DrawFn) -> str:
    """The valid spec with one more scalar field (or parameter) set to an odd scalar."""
    field = draw(st.sampled_from(SCALAR_FIELDS)).format(draw(st.sampled_from(ODD_SCALARS)))
    return SPEC.replace("  replicates: 2\n", f"  replicates: 2\n  {field}\n")


def spec_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        scalar_field_spec(),
        scalar_field_spec(),
        mutated_spec(),
        yaml_value(),
        alias_bomb(),
        st.text(alphabet=st.sampled_from(list("[]{}:,-&*!?|>'\"#% \n\tab01.~")), max_size=300),
        st.text(max_size=200),
    )


def check_spec_text(text: str) -> None:
    try:
        load_spec_text(text)
    except InputError:
        pass  # a spec error (exit 2): the only way a spec may be refused


@FUZZ
@given(spec_texts())
def test_spec_loader_returns_a_spec_or_an_input_error(text: str) -> None:
    check_spec_text(text)


@settings(FUZZ, max_examples=200)
@given(spec_texts())
def test_validate_exits_0_or_2_without_a_traceback(tmp_path: Path, text: str) -> None:
    spec = tmp_path / "experiment.yml"
    spec.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output


@settings(FUZZ, max_examples=25)
@given(alias_bomb())
def test_alias_bombs_are_refused_in_bounded_memory(text: str) -> None:
    tracemalloc.start()
    try:
        check_spec_text(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"loading took {peak >> 20} MB"


def test_spec_size_limit_applies_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_parse(*_: Any, **__: Any) -> None:
        raise AssertionError("the YAML was parsed before its size was checked")

    monkeypatch.setattr(spec_loader, "check_yaml_limits", must_not_parse)
    monkeypatch.setattr(spec_loader, "_parse_document", must_not_parse)
    with pytest.raises(InputError, match="larger than"):
        load_spec_text("# " + "x" * MAX_SPEC_BYTES + "\n" + SPEC)
    with pytest.raises(InputError, match="larger than"):
        load_spec_text("é" * (MAX_SPEC_BYTES // 2 + 1))  # counted in bytes, not characters


# ---------------------------------------------------------------------------------------------
# result.json
# ---------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def result_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "shaped", "deep", "number"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "shaped":
        doc: dict[str, Any] = {"metrics": draw(st.dictionaries(st.sampled_from(["loss", "x", ""]), json_values))}
        if draw(st.booleans()):
            doc["trajectory"] = draw(st.lists(st.dictionaries(st.sampled_from(["step", "time", "loss"]), json_values)))
        return json.dumps(doc).encode()
    if kind == "deep":
        n = draw(st.integers(1, 300_000))
        opener = draw(st.sampled_from(["[", '{"metrics": ']))
        closer = "]" if opener == "[" else "}"
        return (opener * n + "1" + closer * n).encode()
    digits = draw(st.integers(300, 6000))
    return b'{"metrics": {"loss": ' + b"9" * digits + b"}}"


@FUZZ
@given(result_payloads(), st.sampled_from([None, "loss"]))
def test_parse_result_returns_a_document_or_an_artifact_error(data: bytes, metric: str | None) -> None:
    try:
        doc = parse_result(data, metric)
    except ArtifactError as err:
        assert len(str(err)) < 1000  # one line of bounded length, never the whole input
        return
    metrics = doc["metrics"]
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert metric is None or metric in metrics


@FUZZ
@given(result_payloads())
def test_bounded_json_loader_returns_a_value_or_an_artifact_error(data: bytes) -> None:
    try:
        load_json(data, what="x.json")
    except ArtifactError:
        pass


def test_result_size_limit_applies_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import expkit.core.safejson as safejson

    def must_not_parse(*_: Any, **__: Any) -> None:
        raise AssertionError("result.json was parsed before its size was checked")

    monkeypatch.setattr(safejson.json, "loads", must_not_parse)
    with pytest.raises(ArtifactError, match="cap|limit"):
        parse_result(b" " * (MAX_RESULT_BYTES + 1))
    with pytest.raises(ArtifactError, match="limit"):
        load_json(b" " * (16 * 1024 * 1024 + 1), what="x.json")

"""Stage 1: the experiment spec (``apiVersion: expkit/v1``, ``kind: Experiment``).

Loading is strict: unknown fields, wrong types, duplicate names, bad names and unknown placeholders
are rejected with a :class:`~expkit.core.errors.SpecError` whose message names the file, the line where
known, the field path and the fix. Nothing here prints; warnings are returned on :class:`LoadedSpec`.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from expkit.core.errors import InputError, SpecError

API_VERSION = "expkit/v1"
KIND = "Experiment"

#: Placeholders a cell's command and args may contain, besides ``{params.NAME}``.
CELL_PLACEHOLDERS = ("algorithm", "dataset", "seed", "replicate", "output_dir")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$")
_MEMORY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


# ---------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------


def _check_name(value: str, max_len: int = 63) -> str:
    if not _NAME_RE.match(value) or len(value) > max_len:
        suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:max_len] or "my-name"
        raise ValueError(
            f"{value!r} is not a valid name: use at most {max_len} lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit (DNS-1123), e.g. {suggestion!r}"
        )
    return value


def _check_experiment_name(value: str) -> str:
    # Run ids are "<name>-<5 chars>" and must still be a DNS-1123 label (63 chars).
    return _check_name(value, max_len=50)


Name = Annotated[str, AfterValidator(_check_name)]
ExperimentName = Annotated[str, AfterValidator(_check_experiment_name)]


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string such as ``90s``, ``5m``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90, '90s', '5m' or '1h30m', not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _DURATION_RE.match(text)
        if text and re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif not text or not m or not any(m.groups()):
            raise ValueError(f"{value!r} is not a duration: write seconds (90) or '90s', '5m', '1h30m'")
        else:
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
    else:
        return value  # let pydantic report the type error
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}: write e.g. 90, '90s', '5m' or '1h30m'")
    return seconds


def parse_cpu(value: Any) -> Any:
    """CPU cores as a number (``2``, ``0.5``) or Kubernetes millicores (``500m``)."""
    if isinstance(value, bool):
        raise ValueError("must be a number of cores such as 1, 0.5 or '500m'")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a CPU amount: write cores (1, 0.5) or millicores ('500m')") from None
    if isinstance(value, (int, float)) and value <= 0:
        raise ValueError("must be more than 0 cores: write e.g. 1, 0.5 or '500m'")
    return value


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?$"},
            ],
            "description": "seconds, or a string such as '90s', '5m', '1h30m'",
        }
    ),
]
Cpu = Annotated[
    float,
    BeforeValidator(parse_cpu),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?m?$"}],
            "description": "cores (1, 0.5) or millicores ('500m')",
        }
    ),
]
ParamValue = Annotated[
    Any,
    WithJsonSchema({"description": "any JSON value: string, number, boolean, list or mapping"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_param_names(params: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in params:
        if not _PARAM_RE.match(str(key)):
            suggestion = re.sub(r"[^A-Za-z0-9_-]+", "_", str(key)).strip("_-") or "name"
            if not re.match(r"[A-Za-z_]", suggestion):
                suggestion = "p_" + suggestion
            raise _LocatedValueError(
                (key,),
                f"parameter name {key!r} is invalid: use letters, digits, '_' and '-', starting with a "
                f"letter or '_', e.g. {suggestion!r}",
            )
    return params


Params = Annotated[dict[str, ParamValue], AfterValidator(_check_param_names)]


class Paper(_Model):
    """The publication the experiment belongs to."""

    title: str | None = None
    doi: str | None = Field(
        default=None, description="e.g. 10.1000/xyz123", json_schema_extra={"pattern": _DOI_RE.pattern}
    )
    url: str | None = None

    @field_validator("doi")
    @classmethod
    def _doi(cls, v: str | None) -> str | None:
        if v is not None and not _DOI_RE.match(v):
            bare = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", "", v.strip(), flags=re.IGNORECASE)
            example = bare if _DOI_RE.match(bare) else "10.1000/xyz123"
            raise ValueError(f"{v!r} is not a DOI: write the bare DOI, e.g. {example!r}")
        return v


class Metadata(_Model):
    name: ExperimentName = Field(description="DNS-1123 name, at most 50 characters; run ids are '<name>-<5 chars>'")
    description: str = ""
    paper: Paper | None = None


class Metric(_Model):
    name: str = Field(description="key in each run's result.json 'metrics' that the comparison uses")
    goal: Literal["minimize", "maximize"]

    @field_validator("name")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not _METRIC_RE.match(v):
            raise ValueError(f"{v!r} is not a valid metric name: use letters, digits, '_', '.', '-'")
        return v


class Resources(_Model):
    cpu: Cpu = Field(default=1.0, description="cores per run; also decides how many runs share a machine")
    memory: str | None = Field(default=None, description="Kubernetes quantity such as '2Gi'")
    gpu: int = Field(default=0, ge=0, le=16)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not _MEMORY_RE.match(v):
            raise ValueError(f"{v!r} is not a memory quantity: write e.g. '512Mi', '2Gi' or '4G'")
        return v


class Toleration(_Model):
    """A Kubernetes toleration (``kubectl explain pod.spec.tolerations``)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)


class Affinity(_Model):
    """A Kubernetes affinity; the terms inside are checked against Argo's schema when the workflow is rendered."""

    nodeAffinity: dict[str, Any] | None = None
    podAffinity: dict[str, Any] | None = None
    podAntiAffinity: dict[str, Any] | None = None


class Scheduling(_Model):
    """Where runs may be placed on a Kubernetes cluster (ignored by local runs)."""

    nodeSelector: dict[str, str] | None = Field(default=None, description="node labels a run's node must have")
    tolerations: list[Toleration] | None = None
    affinity: Affinity | None = None


class KubernetesSettings(Scheduling):
    """Cluster settings for ``expkit render``/``submit`` (ignored by local runs)."""

    serviceAccountName: Name | None = None
    imagePullSecrets: list[Name] | None = Field(default=None, description="names of docker-registry Secrets")
    podGC: Literal["OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"] | None = Field(
        default=None, description="when Argo deletes finished pods (default OnPodSuccess)"
    )
    ttlSecondsAfterFinished: int | None = Field(
        default=None, ge=0, description="delete the finished workflow object after this many seconds (default 7 days)"
    )


class Algorithm(_Model):
    name: Name
    description: str = ""
    params: Params = Field(default_factory=dict)
    kubernetes: Scheduling | None = Field(
        default=None,
        description="scheduling for this algorithm's runs: "
        "nodeSelector keys override the global ones, tolerations add to them, "
        "each affinity kind given replaces the global one",
    )


def _dataset_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Dataset(_Model):
    name: Name
    params: Params = Field(default_factory=dict)


DatasetEntry = Annotated[Dataset, BeforeValidator(_dataset_shorthand)]


class Prepare(_Model):
    """A command run once, in the spec's directory, before any cell (fetch or preprocess data)."""

    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    timeout: Duration | None = None


class ExperimentSpec(_Model):
    image: str = Field(description="container image, pinned by digest: 'repo[:tag]@sha256:<64 hex>'")
    command: list[str] = Field(min_length=1, description="argv of one run; placeholders allowed")
    args: list[str] = Field(default_factory=list, description="appended to command; placeholders allowed")
    params: Params = Field(default_factory=dict, description="global parameters, overridable with -p")
    algorithms: list[Algorithm] = Field(min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    replicates: int = Field(ge=1, le=1_000_000, description="stochastic runs per algorithm x dataset")
    seed: int = Field(default=0, ge=0, lt=2**63, description="base seed the per-replicate seeds derive from")
    metric: Metric
    paired: bool = Field(
        default=False, description="replicates are paired by seed (Wilcoxon) or independent (Mann-Whitney)"
    )
    resources: Resources = Field(default_factory=Resources)
    timeout: Duration | None = Field(default=None, description="per run; a run over it is killed and failed")
    retries: int = Field(default=0, ge=0, le=10, description="extra attempts for a failed run")
    parallelism: int | None = Field(default=None, ge=1, description="at most this many runs at once")
    prepare: Prepare | None = None
    kubernetes: KubernetesSettings | None = Field(default=None, description="cluster settings (Argo only)")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not _IMAGE_RE.match(v):
            raise ValueError(
                f"{v!r} is not an image reference: write 'registry/repo:tag@sha256:<64 hex digits>' in lowercase"
            )
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentSpec:
        for kind, entries in (("algorithms", self.algorithms), ("datasets", self.datasets)):
            seen: dict[str, int] = {}
            for i, entry in enumerate(entries):
                if entry.name in seen:
                    raise _LocatedValueError(
                        (kind, i, "name"),
                        f"duplicate name {entry.name!r} (also at {kind}[{seen[entry.name]}]): give each entry its own name",
                    )
                seen[entry.name] = i
        return self


class Experiment(_Model):
    """The whole spec file."""

    apiVersion: Literal["expkit/v1"] = Field(alias="apiVersion")
    kind: Literal["Experiment"]
    metadata: Metadata
    spec: ExperimentSpec


class _LocatedValueError(ValueError):
    """A model-level check that knows which field it is about (relative to the model)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, with overrides applied, and what loading it noticed."""

    experiment: Experiment
    path: Path | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        """The directory runs execute in (the spec file's directory)."""
        return (self.path.parent if self.path else Path.cwd()).resolve()

    @property
    def name(self) -> str:
        return self.experiment.metadata.name

    def to_yaml(self) -> str:
        """The resolved spec as YAML: overrides applied, defaults written out."""
        return dump_experiment(self.experiment)

    @property
    def sha256(self) -> str:
        return spec_sha256(self.experiment)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key; ``problem_mark`` is the repeated key's position."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKeyError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].line + 1}): keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

if getattr(yaml, "__with_libyaml__", False):

    class _FastUniqueKeyLoader(yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """The same loader on libyaml's C parser: ten times faster on a spec with thousands of datasets."""

    _FastUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
else:  # pragma: no cover - PyYAML built without libyaml
    _FastUniqueKeyLoader = None  # type: ignore[assignment,misc]


def _load_with(cls: type, text: str) -> tuple[Any, yaml.Node | None]:
    loader = cls(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    """``(data, node)`` of a YAML document, parsed once: with libyaml when PyYAML has it, else in
    Python. Any error is raised by the Python parser, so that messages do not depend on libyaml."""
    if _FastUniqueKeyLoader is not None:
        with contextlib.suppress(yaml.YAMLError):  # parsed again below, for the Python parser's message
            return _load_with(_FastUniqueKeyLoader, text)
    return _load_with(_UniqueKeyLoader, text)


def load_spec(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> LoadedSpec:
    """Read, parse and validate a spec file, then apply ``-p key=value`` overrides.

    Raises :class:`SpecError` (exit code 2) for anything wrong with the file or the overrides.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found: check the path", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(
            f"cannot read the file ({err.__class__.__name__}): check it is a readable UTF-8 text file", path=str(path)
        ) from err
    return load_spec_text(text, path=p, overrides=overrides)


def load_spec_text(
    text: str, *, path: Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> LoadedSpec:
    """Like :func:`load_spec` for spec text already in memory (``path`` is only used in messages)."""
    where = str(path) if path else "<spec>"
    try:
        data, node = _parse(text)
    except _DuplicateKeyError as err:
        mark = err.problem_mark
        loc = _loc_of_key(yaml.compose(text, Loader=yaml.SafeLoader), mark) if mark else None
        raise SpecError(
            str(err.problem), path=where, field=_format_loc(loc) if loc else None, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and cmark is not None and (mark is None or cmark.line != mark.line):
            problem += f" ({context} that starts at line {cmark.line + 1})"
        raise SpecError(
            f"not valid YAML: {problem}; check the indentation, brackets and quoting",
            path=where,
            line=mark.line + 1 if mark else None,
        ) from None
    if data is None:
        raise SpecError(
            "the file is empty: write apiVersion, kind, metadata and spec (run 'expkit init' for a working example)",
            path=where,
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"the file must be a YAML mapping with apiVersion, kind, metadata and spec, not a "
            f"{type(data).__name__}: run 'expkit init' for a working example",
            path=where,
            line=1,
        )
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as err:
        raise _spec_error_from_validation(err, data, node, where) from None
    _check_placeholders(experiment, node, where)
    parsed = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    experiment = apply_overrides(experiment, parsed, where)
    warnings: list[str] = []
    if not is_pinned(experiment.spec.image):
        warnings.append(
            f"{where}: spec.image: {experiment.spec.image!r} is not pinned by digest; local runs go ahead, "
            "but 'expkit submit' will refuse it (run 'expkit pin' or write 'repo:tag@sha256:<digest>')"
        )
    return LoadedSpec(experiment=experiment, path=path, overrides=parsed, warnings=tuple(warnings))


def is_pinned(image: str) -> bool:
    """Whether an image reference names a manifest digest (``...@sha256:<64 hex>``)."""
    return bool(_DIGEST_RE.search(image))


def _spec_error_from_validation(err: ValidationError, data: Any, node: yaml.Node | None, where: str) -> SpecError:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        ctx = e.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, _LocatedValueError):
            loc = loc + inner.loc
        loc = _clean_loc(loc, data)
        lines.append((loc, _friendly(e, loc, data)))
    loc, message = lines[0]
    first = SpecError(message, path=where, field=_format_loc(loc), line=_line_of(node, loc))
    first.others = [
        str(SpecError(m, path=where, field=_format_loc(lc), line=_line_of(node, lc))) for lc, m in lines[1:]
    ]
    return first


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union/validator tags from a location, keeping only keys present in the data."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif (
            isinstance(part, str)
            and (cur is None or isinstance(cur, dict))
            and not part.startswith(("function-", "list[", "dict["))
            and part not in {"str", "int", "float", "bool", "Dataset", "Algorithm", "none", "constrained-str"}
        ):
            out.append(part)  # a missing or extra key
            cur = None
        # else: a pydantic tag (union member, validator) with no counterpart in the data
    return tuple(out)


def _format_loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _loc_of_key(node: yaml.Node | None, mark: yaml.Mark, loc: tuple = ()) -> tuple | None:
    """The location (field path) of the mapping key that starts at ``mark``, if any."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            here = (*loc, getattr(k, "value", "?"))
            if k.start_mark.index == mark.index:
                return here
            found = _loc_of_key(v, mark, here)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _loc_of_key(v, mark, (*loc, i))
            if found:
                return found
    return None


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        nxt = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def _known_fields(loc: tuple) -> list[str]:
    model: Any = Experiment
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        ann = info.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            for c in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
    return list(getattr(model, "model_fields", {}).keys()) if isinstance(model, type) else []


def _friendly(e: dict, loc: tuple, data: Any) -> str:
    kind = e["type"]
    got = e.get("input")
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        known = _known_fields(loc)
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = (
            f"did you mean {close[0]!r}?" if close else (f"known fields: {', '.join(known)}" if known else "remove it")
        )
        return f"unknown field {key!r}: {hint} (or remove it)"
    if kind == "missing":
        return "required field is missing: add it (see 'expkit schema' or 'expkit init' for an example)"
    if kind == "literal_error":
        expected = (e.get("ctx") or {}).get("expected", "")
        return f"must be {expected}, got {got!r}"
    if kind in ("value_error", "assertion_error"):
        msg = str((e.get("ctx") or {}).get("error") or e["msg"])
        return msg
    ctx = e.get("ctx") or {}
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        word, key = bounds[kind]
        return f"must be {word} {ctx.get(key)}, got {_short(got)}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"must not be empty, got {_short(got)}: give at least {n} entr{'y' if n == 1 else 'ies'}"
    if kind == "too_long":
        return f"has too many entries (at most {ctx.get('max_length')}): remove some"
    if kind == "list_type" and isinstance(got, str):
        return f"must be a list, got the string {_short(got)}: write a YAML list, [a, b] or one '- item' per line"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "string": "a string",
            "list": "a list",
            "dict": "a mapping",
            "model": "a mapping",
        }
        for k, v in expected.items():
            if kind.startswith(k):
                return f"must be {v}, got {_short(got)}"
    return f"{e['msg'][0].lower()}{e['msg'][1:]}, got {_short(got)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Placeholders
# ---------------------------------------------------------------------------------------------


def placeholders(template: str) -> list[str]:
    """Names of the ``{placeholders}`` in ``template``. Raises ValueError on a stray brace."""
    names = []
    for m in _TOKEN_RE.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise ValueError(f"stray {tok!r} in {template!r}: write '{tok}{tok}' for a literal brace")
        names.append(m.group(1).strip())
    return names


def substitute(template: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` with ``values[name]`` (``{{``/``}}`` are literal braces).

    Strings are inserted as they are; other values as JSON (``true``, ``0.1``, ``[1, 2]``).
    """

    def repl(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        value = values[m.group(1).strip()]
        return value if isinstance(value, str) else json.dumps(value)

    return _TOKEN_RE.sub(repl, template)


def _check_placeholders(exp: Experiment, node: yaml.Node | None, where: str) -> None:
    spec = exp.spec
    always = set(spec.params)

    # A {params.X} must resolve for every cell: defined globally, or for each (algorithm, dataset)
    # pair in the algorithm's or the dataset's params. No pair lacks it exactly when every algorithm
    # or every dataset has it (else an algorithm without it meets a dataset without it).
    def resolvable(name: str) -> bool:
        return (
            name in always
            or all(name in a.params for a in spec.algorithms)
            or all(name in d.params for d in spec.datasets)
        )

    fields = [("command", spec.command, True), ("args", spec.args, True)]
    if spec.prepare:
        fields += [("prepare.command", spec.prepare.command, False), ("prepare.args", spec.prepare.args, False)]
    for fname, items, per_cell in fields:
        for i, item in enumerate(items):
            loc = ("spec", *fname.split("."), i)
            try:
                names = placeholders(item)
            except ValueError as err:
                raise SpecError(str(err), path=where, field=_format_loc(loc), line=_line_of(node, loc)) from None
            for name in names:
                if name.startswith("params."):
                    pname = name[len("params.") :]
                    ok = resolvable(pname) if per_cell else pname in always
                    if not ok:
                        scope = (
                            "in spec.params, or in the params of every algorithm or dataset"
                            if per_cell
                            else "in spec.params (prepare runs once, outside any cell)"
                        )
                        raise SpecError(
                            f"placeholder {{{name}}} names a parameter that is not defined: define {pname!r} {scope}",
                            path=where,
                            field=_format_loc(loc),
                            line=_line_of(node, loc),
                        )
                elif not per_cell or name not in CELL_PLACEHOLDERS:
                    allowed = ", ".join("{" + n + "}" for n in CELL_PLACEHOLDERS) + ", {params.NAME}"
                    if not per_cell:
                        allowed = "{params.NAME}"
                    close = difflib.get_close_matches(name, list(CELL_PLACEHOLDERS), n=1) if per_cell else []
                    hint = f"did you mean {{{close[0]}}}? " if close else ""
                    raise SpecError(
                        f"unknown placeholder {{{name}}}: {hint}allowed here: {allowed} "
                        "(write '{{' for a literal brace)",
                        path=where,
                        field=_format_loc(loc),
                        line=_line_of(node, loc),
                    )


# ---------------------------------------------------------------------------------------------
# Overrides and resolution
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings. Values are read as JSON when they parse (``10``, ``true``,
    ``[1,2]``), as plain strings otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"-p {item!r}: write parameter overrides as key=value, e.g. -p budget=200")
        if not _PARAM_RE.match(key):
            raise InputError(f"-p {item!r}: {key!r} is not a parameter name (letters, digits, '_' and '-')")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return out


def apply_overrides(exp: Experiment, overrides: Mapping[str, Any], where: str = "<spec>") -> Experiment:
    """Return the experiment with each override set wherever the parameter is defined.

    An override wins over the global, dataset and algorithm values alike, so the resolved spec is
    self-contained: running it without overrides gives the same cells.
    """
    if not overrides:
        return exp
    spec = exp.spec
    defined = set(spec.params)
    for entry in (*spec.algorithms, *spec.datasets):
        defined |= set(entry.params)
    unknown = sorted(set(overrides) - defined)
    if unknown:
        known = ", ".join(sorted(defined)) or "none"
        close = difflib.get_close_matches(unknown[0], sorted(defined), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"-p {unknown[0]}: {where} defines no parameter {unknown[0]!r}{hint}; parameters in the spec: {known}"
        )

    def patched(params: Mapping[str, Any], add: bool) -> dict[str, Any]:
        out = dict(params)
        for k, v in overrides.items():
            if add or k in out:
                out[k] = v
        return out

    new_spec = spec.model_copy(
        update={
            "params": patched(spec.params, add=True),
            "algorithms": [a.model_copy(update={"params": patched(a.params, add=False)}) for a in spec.algorithms],
            "datasets": [d.model_copy(update={"params": patched(d.params, add=False)}) for d in spec.datasets],
        }
    )
    return exp.model_copy(update={"spec": new_spec})


def experiment_dict(exp: Experiment) -> dict[str, Any]:
    """The spec as plain data, defaults included, in the file's field order."""
    return exp.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_experiment(exp: Experiment) -> str:
    return yaml.safe_dump(experiment_dict(exp), sort_keys=False, allow_unicode=True, width=100)


def spec_sha256(exp: Experiment) -> str:
    """sha256 of the canonical JSON of the resolved spec (key order and formatting do not matter)."""
    canonical = json.dumps(experiment_dict(exp), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec file, for editor completion (e.g. yaml-language-server)."""
    schema = Experiment.model_json_schema(by_alias=True)
    # A dataset may also be written as just its name (the shorthand _dataset_shorthand expands).
    datasets = schema["$defs"]["ExperimentSpec"]["properties"]["datasets"]
    datasets["items"] = {
        "anyOf": [
            {"type": "string", "pattern": _NAME_RE.pattern, "description": "shorthand for {name: ...}"},
            datasets["items"],
        ]
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "expkit Experiment (expkit/v1)"
    return schema

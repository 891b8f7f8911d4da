"""Stage 1: the experiment spec model (``apiVersion: expkit/v1``, ``kind: Experiment``).

The pydantic models are strict: unknown fields, wrong types, duplicate names and bad names are
rejected. :mod:`.loader` turns their validation errors into one-line ``file:line`` messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from expkit.core.contract import ENV_NAME_RE, ENV_VARS, is_credential_name
from expkit.core.quantity import QUANTITY_RE
from expkit.spec.slurm import SlurmSettings

API_VERSION = "expkit/v1"
KIND = "Experiment"

#: A parameter name (in ``params`` and in ``-p`` overrides).
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
_ORCID_RE = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")

#: The longest duration a timeout may be (a year): longer ones overflow the clocks that enforce them.
MAX_DURATION_SECONDS = 366 * 24 * 3600
#: The most CPU cores one run may request.
MAX_CPU = 10_000

#: A location in the spec: keys and list indices from the top (``("spec", "algorithms", 0, "name")``).
Loc = tuple[str | int, ...]


class LocatedValueError(ValueError):
    """A check that knows which field it is about (relative to the model it runs in, or to the file)."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


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
        seconds = _float(value)
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
    if not math.isfinite(seconds) or seconds > MAX_DURATION_SECONDS:
        raise ValueError(
            f"must be a duration of at most {MAX_DURATION_SECONDS} seconds (366 days), got {_cut(value)}: "
            "write e.g. 90, '90s', '5m' or '1h30m', or leave the field out for no timeout"
        )
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}: write e.g. 90, '90s', '5m' or '1h30m'")
    return seconds


def _float(value: float) -> float:
    """``float(value)``; infinity for an integer beyond the float range (a 400-digit one)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _cut(value: Any) -> str:
    """``repr(value)``, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    if isinstance(value, (int, float)) and not (math.isfinite(_float(value)) and value <= MAX_CPU):
        raise ValueError(f"must be a number of cores up to {MAX_CPU}, got {_cut(value)}: write e.g. 1, 0.5 or '500m'")
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
        if not PARAM_NAME_RE.match(str(key)):
            suggestion = re.sub(r"[^A-Za-z0-9_-]+", "_", str(key)).strip("_-") or "name"
            if not re.match(r"[A-Za-z_]", suggestion):
                suggestion = "p_" + suggestion
            raise LocatedValueError(
                (key,),
                f"parameter name {key!r} is invalid: use letters, digits, '_' and '-', starting with a "
                f"letter or '_', e.g. {suggestion!r}",
            )
    return params


def _check_param_values(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Parameter values are JSON (they reach a run as ``EXPKIT_PARAMS``): no NaN or infinity anywhere."""
    loc = non_finite_number(params)
    if loc is not None:
        raise LocatedValueError(
            loc,
            "must be a finite number (JSON has no NaN or infinity, and a run gets its parameters as JSON): "
            "write a number, or quote it to make it a string",
        )
    return params


def non_finite_number(value: Any) -> Loc | None:
    """Where in ``value`` (nested dicts and lists) the first NaN or infinite float is, or None.
    Iterative; the loader bounds how many values and how deep (:mod:`expkit.spec.limits`)."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return loc
        if isinstance(item, dict):
            stack.extend(((*loc, str(k)), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(item))))
    return None


Params = Annotated[dict[str, ParamValue], AfterValidator(_check_param_names), AfterValidator(_check_param_values)]


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


def check_license(value: str) -> str:
    """An SPDX license identifier or expression (``MIT``, ``CC-BY-4.0``, ``Apache-2.0 OR MIT``), in its
    canonical spelling; ValueError saying how to write one otherwise."""
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

    try:
        return str(canonicalize_license_expression(value))
    except InvalidLicenseExpression:
        raise ValueError(
            f"{_cut(value)} is not an SPDX license identifier: write one from https://spdx.org/licenses/, "
            "e.g. 'CC-BY-4.0' (results and data), 'MIT' or 'Apache-2.0' (code), or an expression such as "
            "'CC-BY-4.0 AND MIT'"
        ) from None


def _check_orcid(value: str) -> str:
    """An ORCID iD (``0000-0002-1825-0097`` or its https://orcid.org/ URL, check digit verified), as its URL."""
    bare = re.sub(r"^(https?://)?orcid\.org/", "", value.strip())
    if not _ORCID_RE.match(bare):
        raise ValueError(f"{_cut(value)} is not an ORCID iD: write e.g. '0000-0002-1825-0097'")
    digits = bare.replace("-", "")
    total = 0
    for d in digits[:-1]:
        total = (total + int(d)) * 2
    check = (12 - total % 11) % 11
    if digits[-1] != ("X" if check == 10 else str(check)):
        raise ValueError(f"{_cut(value)} is not a valid ORCID iD (its check digit is wrong): copy it from orcid.org")
    return f"https://orcid.org/{bare}"


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+\.[^\s]*$", value):
        raise ValueError(f"{_cut(value)} is not an http(s) URL: write e.g. 'https://github.com/org/repo'")
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _organization(value: Any) -> Any:
    """An affiliation written as just its name is ``{name: ...}``."""
    return {"name": value} if isinstance(value, str) else value


class Organization(_Model):
    """An author's affiliation: its name and, optionally, its URL (a ROR id https://ror.org/..., or a homepage)."""

    name: Annotated[str, AfterValidator(_check_text)]
    url: Annotated[str, AfterValidator(_check_url)] | None = None


class Author(_Model):
    """An author of the experiment: credited in an exported bundle's RO-Crate and ``CITATION.cff``."""

    name: Annotated[str, AfterValidator(_check_text)] = Field(
        description="full name; 'Family, Given' makes the split into family and given names explicit"
    )
    orcid: Annotated[str, AfterValidator(_check_orcid)] | None = Field(
        default=None, description="ORCID iD, e.g. 0000-0002-1825-0097"
    )
    affiliation: Annotated[Organization, BeforeValidator(_organization)] | None = Field(
        default=None,
        description="the organization the author works for: its name, or {name, url}; the first author's is the "
        "bundle's publisher",
    )


class Metadata(_Model):
    name: ExperimentName = Field(description="DNS-1123 name, at most 50 characters; run ids are '<name>-<5 chars>'")
    description: str = ""
    paper: Paper | None = None
    license: Annotated[str, AfterValidator(check_license)] | None = Field(
        default=None,
        description="SPDX license of what 'expkit export' bundles (results, code), e.g. CC-BY-4.0; required to export",
    )
    authors: list[Author] | None = Field(default=None, description="who made the experiment, credited in bundles")
    repository: Annotated[str, AfterValidator(_check_url)] | None = Field(
        default=None, description="URL of the experiment's code repository, e.g. https://github.com/org/repo"
    )


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
        if v is not None and not QUANTITY_RE.match(v):
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
    maxCellsPerWorkflow: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="a run with more cells is submitted as several workflows (shards) under one run id "
        "(default 2000; see docs/argo.md, 'Large runs')",
    )
    cellsPerPod: int | Literal["auto"] | None = Field(
        default=None,
        description="replicates of one algorithm x dataset run one after another in one pod (default 1); "
        "'auto' derives it from expectedRunTime and spec.timeout",
    )
    expectedRunTime: Duration | None = Field(
        default=None, description="the expected duration of one run, for 'cellsPerPod: auto'"
    )

    @model_validator(mode="after")
    def _batching(self) -> KubernetesSettings:
        per_pod = self.cellsPerPod
        if isinstance(per_pod, int) and not 1 <= per_pod <= 10_000:
            raise LocatedValueError(("cellsPerPod",), "must be between 1 and 10000, or 'auto'")
        if per_pod == "auto" and self.expectedRunTime is None:
            raise LocatedValueError(
                ("cellsPerPod",),
                "'auto' needs kubernetes.expectedRunTime (the duration of one run, e.g. '5s'), or give a number",
            )
        limit = self.maxCellsPerWorkflow
        if isinstance(per_pod, int) and limit is not None and per_pod > limit:
            raise LocatedValueError(
                ("cellsPerPod",),
                f"{per_pod} is more than maxCellsPerWorkflow ({limit}): a pod's cells never span two "
                "workflows; lower cellsPerPod or raise maxCellsPerWorkflow",
            )
        return self


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


def _check_env_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not ENV_NAME_RE.match(name):
            raise LocatedValueError(
                (i,),
                f"{name[:60]!r} is not a valid environment variable name: use letters, digits and '_', "
                "not starting with a digit (the name only; the value comes from expkit's environment)",
            )
        if name in ENV_VARS:
            raise LocatedValueError((i,), f"{name} is set by expkit for every run (the run contract): remove it")
        if name in seen:
            raise LocatedValueError((i,), f"duplicate name {name!r} (also at env[{seen[name]}]): remove one")
        seen[name] = i
    return names


EnvNames = Annotated[list[str], AfterValidator(_check_env_names)]


class Adaptive(_Model):
    """Adaptive replicates (racing): run replicates in waves and stop a dataset once its comparisons are
    settled by a sequential procedure whose error holds under repeated looks (``docs/adaptive.md``)."""

    min_replicates: int = Field(ge=2, le=1_000_000, description="always run at least this many replicates")
    max_replicates: int = Field(
        ge=2, le=1_000_000, description="never more; the matrix is the full design of this many"
    )
    wave: int = Field(ge=1, le=1_000_000, description="replicates added per wave on a dataset not yet decided")
    stop: Literal["decided", "omnibus", "control"] = Field(
        default="decided",
        description="when a dataset stops: 'decided' (every pair significant or equivalent), 'omnibus' (the "
        "omnibus test decides), 'control' (every algorithm decided against 'control')",
    )
    rope: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="equivalence margin in the primary metric's units"
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, allow_inf_nan=False, description="error rate of the procedure")
    control: Name | None = Field(default=None, description="the algorithm compared with the others (stop: control)")
    spending: Literal["hsd", "obrien-fleming", "pocock"] = Field(
        default="hsd",
        description="alpha-spending function of the group-sequential boundaries: 'hsd' (Hwang-Shih-DeCani, with "
        "gamma), 'obrien-fleming' (closest to the fixed design, decides later) or 'pocock' (decides earliest)",
    )
    gamma: float = Field(
        default=0.5, ge=-40, le=40, allow_inf_nan=False, description="Hwang-Shih-DeCani parameter (spending: hsd)"
    )
    futility: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="stop a pair as 'no difference detectable' below this conditional power (0: never)",
    )
    eliminate: bool = Field(
        default=False,
        description="F-race elimination: an algorithm decided worse than another stops getting seeds at once",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Adaptive:
        if self.min_replicates > self.max_replicates:
            raise LocatedValueError(
                ("min_replicates",),
                f"must be at most max_replicates ({self.max_replicates}), got {self.min_replicates}: "
                "lower min_replicates or raise max_replicates",
            )
        if self.stop == "control" and self.control is None:
            raise LocatedValueError(
                ("control",), "stop: control needs the control algorithm: add 'control: <algorithm name>'"
            )
        if self.stop != "control" and self.control is not None:
            raise LocatedValueError(
                ("control",), f"is only used with stop: control (stop is {self.stop!r}): remove it or set stop: control"
            )
        return self


def _replicates_from_adaptive(data: Any) -> Any:
    """``replicates`` defaults to ``adaptive.max_replicates``; when both are given they must be equal."""
    if not isinstance(data, dict) or not isinstance(data.get("adaptive"), dict):
        return data
    most = data["adaptive"].get("max_replicates")
    if not isinstance(most, int) or isinstance(most, bool):
        return data  # the Adaptive model reports it
    if "replicates" not in data:
        return {**data, "replicates": most}
    if data["replicates"] != most:
        raise LocatedValueError(
            ("replicates",),
            f"must equal adaptive.max_replicates ({most}) in an adaptive spec, got {_cut(data['replicates'])}: "
            f"remove replicates (it then is {most}) or set it to {most}",
        )
    return data


class ExperimentSpec(_Model):
    image: str = Field(description="container image, pinned by digest: 'repo[:tag]@sha256:<64 hex>'")
    command: list[str] = Field(min_length=1, description="argv of one run; placeholders allowed")
    args: list[str] = Field(default_factory=list, description="appended to command; placeholders allowed")
    params: Params = Field(default_factory=dict, description="global parameters, overridable with -p")
    algorithms: list[Algorithm] = Field(min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    replicates: int = Field(
        ge=1,
        le=1_000_000,
        description="stochastic runs per algorithm x dataset (with 'adaptive': optional, equal to max_replicates)",
    )
    seed: int = Field(default=0, ge=0, lt=2**63, description="base seed the per-replicate seeds derive from")
    # The spec file says ``metric:`` (one metric, as before) or ``metrics:`` (a list, the first primary),
    # never both. The field is named ``metric_entry`` so that :attr:`metric` can be the primary metric
    # either way; an unset field is left out of the resolved spec, so old specs keep their sha256.
    metric_entry: Metric | None = Field(
        default=None, alias="metric", description="the metric the comparison uses (or list them under 'metrics')"
    )
    metrics: list[Metric] | None = Field(
        default=None,
        min_length=1,
        description="several metrics, each with its goal; the first is primary (drives the verdict), the others "
        "are secondary (Holm-corrected across metrics); instead of 'metric'",
    )
    paired: bool = Field(
        default=False, description="replicates are paired by seed (Wilcoxon) or independent (Mann-Whitney)"
    )
    # None means 'penalize'; left out of the resolved spec then, so specs written before the field
    # existed keep their sha256 (resume, reproduce and the Argo labels compare it).
    failures: Literal["penalize", "exclude"] | None = Field(
        default=None,
        description="what a failed run means for the statistics: 'penalize' (the default) counts it as worse "
        "than every successful run of its dataset; 'exclude' leaves it out (biased when failure rates differ)",
    )
    # None (no ROPE, the Bayesian test uses 0) is left out of the resolved spec, so existing specs keep
    # their sha256.
    rope: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="region of practical equivalence of the Bayesian signed-rank test, in the primary "
        "metric's units: differences smaller than this count as equivalent (overridden by --rope)",
    )
    resources: Resources = Field(default_factory=Resources)
    timeout: Duration | None = Field(default=None, description="per run; a run over it is killed and failed")
    retries: int = Field(default=0, ge=0, le=10, description="extra attempts for a failed run")
    parallelism: int | None = Field(default=None, ge=1, description="at most this many runs at once")
    prepare: Prepare | None = None
    env: EnvNames | None = Field(
        default=None,
        description="names of environment variables of expkit's environment that local runs and the prepare "
        "step also get (values are never written into the spec); runs otherwise get only PATH, HOME, LANG, "
        "LC_*, TZ, TMPDIR and the EXPKIT_* variables",
    )
    kubernetes: KubernetesSettings | None = Field(default=None, description="cluster settings (Argo only)")
    slurm: SlurmSettings | None = Field(default=None, description="Slurm settings (expkit submit --to slurm only)")
    # None (no adaptive block) is left out of the resolved spec, so existing specs keep their sha256.
    adaptive: Adaptive | None = Field(
        default=None,
        description="adaptive replicates: run replicates in waves from min_replicates up to max_replicates and "
        "stop each dataset once its comparisons are settled",
    )

    @model_validator(mode="before")
    @classmethod
    def _adaptive_replicates(cls, data: Any) -> Any:
        return _replicates_from_adaptive(data)

    @model_validator(mode="after")
    def _adaptive_control(self) -> ExperimentSpec:
        control = self.adaptive.control if self.adaptive is not None else None
        names = [a.name for a in self.algorithms]
        if control is not None and control not in names:
            raise LocatedValueError(
                ("adaptive", "control"),
                f"{control!r} is not an algorithm of the spec: use one of {', '.join(map(repr, names))}",
            )
        return self

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not _IMAGE_RE.match(v):
            raise ValueError(
                f"{v!r} is not an image reference: write 'registry/repo:tag@sha256:<64 hex digits>' in lowercase"
            )
        return v

    @property
    def metric(self) -> Metric:
        """The primary metric: ``metric``, or the first of ``metrics``."""
        return self.all_metrics[0]

    @property
    def all_metrics(self) -> tuple[Metric, ...]:
        """Every metric the spec lists, the primary first."""
        if self.metrics:
            return tuple(self.metrics)
        if self.metric_entry is None:  # the validator below makes this unreachable
            raise ValueError("the spec has no metric")
        return (self.metric_entry,)

    @model_validator(mode="after")
    def _one_metric_field(self) -> ExperimentSpec:
        if (self.metric_entry is None) == (self.metrics is None):
            both = self.metric_entry is not None
            raise LocatedValueError(
                ("metrics" if both else "metric",),
                "give either 'metric: {name, goal}' or 'metrics: [{name, goal}, ...]' (the first primary), "
                + ("not both" if both else "one of them is required"),
            )
        names = [m.name for m in self.metrics or ()]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise LocatedValueError(("metrics", i, "name"), f"duplicate metric {name!r}: list each metric once")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentSpec:
        groups: tuple[tuple[str, Sequence[Algorithm | Dataset]], ...] = (
            ("algorithms", self.algorithms),
            ("datasets", self.datasets),
        )
        for kind, entries in groups:
            seen: dict[str, int] = {}
            for i, entry in enumerate(entries):
                if entry.name in seen:
                    raise LocatedValueError(
                        (kind, i, "name"),
                        f"duplicate name {entry.name!r} (also at {kind}[{seen[entry.name]}]): "
                        "give each entry its own name",
                    )
                seen[entry.name] = i
        return self


class Experiment(_Model):
    """The whole spec file."""

    apiVersion: Literal["expkit/v1"] = Field(alias="apiVersion")
    kind: Literal["Experiment"]
    metadata: Metadata
    spec: ExperimentSpec


# ---------------------------------------------------------------------------------------------
# The spec as data
# ---------------------------------------------------------------------------------------------


def experiment_dict(exp: Experiment) -> dict[str, Any]:
    """The spec as plain data, defaults included, in the file's field order."""
    return exp.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_experiment(exp: Experiment) -> str:
    """The spec as YAML, defaults included, in the file's field order."""
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
    # Exactly one of metric (one metric) and metrics (several, the first primary) is required.
    schema["$defs"]["ExperimentSpec"]["oneOf"] = [{"required": ["metric"]}, {"required": ["metrics"]}]
    # replicates may be left out when the adaptive block gives max_replicates.
    spec_def = schema["$defs"]["ExperimentSpec"]
    spec_def["required"] = [name for name in spec_def["required"] if name != "replicates"]
    spec_def["anyOf"] = [{"required": ["replicates"]}, {"required": ["adaptive"]}]
    # An affiliation may also be written as just its name.
    schema["$defs"]["Author"]["properties"]["affiliation"]["anyOf"].insert(1, {"type": "string"})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "expkit Experiment (expkit/v1)"
    return schema


def env_warnings(exp: Experiment, where: str) -> list[str]:
    """Warnings about the spec's ``env:`` list: every named variable that holds a credential."""
    return [
        f"{where}: spec.env[{i}]: {name} is a credential: every run gets its value and can write it into its "
        "log and outputs (kept in the store and in exported bundles); name it only if the runs need it"
        for i, name in enumerate(exp.spec.env or ())
        if is_credential_name(name)
    ]


def is_pinned(image: str) -> bool:
    """Whether an image reference names a manifest digest (``...@sha256:<64 hex>``)."""
    return bool(_DIGEST_RE.search(image))

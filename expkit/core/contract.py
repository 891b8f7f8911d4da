"""The run contract: what a run receives and what it must leave behind.

A run receives its algorithm, dataset, seed, replicate and parameters through placeholders in its
command line and through environment variables (:data:`ENV_VARS`), writes anything it likes into
``EXPKIT_OUTPUT_DIR``, and must write ``result.json`` there::

    {"metrics": {"error": 0.12, "time": 3.4},
     "trajectory": [{"step": 1, "error": 0.5}, {"step": 2, "error": 0.3}]}

``metrics`` maps names to finite numbers and must contain the spec's (primary) metric, else the run fails; a
secondary metric of a ``metrics:`` list that is missing leaves the run out of that metric's tests only
(``expkit results`` notes it). ``trajectory`` is
optional: a list of records, each with at least one of ``step``, ``budget`` or ``time`` and numeric
metric values, used for convergence plots. ``run.json`` and ``log.txt`` are written by expkit and
must not be written by the run.

A run's environment is clean (:func:`clean_environment`): ``PATH``, ``HOME``, ``LANG``, ``LC_*``,
``TZ`` and ``TMPDIR`` from expkit's environment, the variables the spec's ``env:`` list names, and
the ``EXPKIT_*`` variables of :func:`run_environment` — nothing else, so credentials expkit itself
uses (``AWS_*``, ``EXPKIT_S3_*``, registry passwords) never reach a run unless the spec names them.
Everything a run writes is untrusted input: :func:`parse_result` turns any ``result.json`` into a
document or one :class:`~expkit.core.errors.ArtifactError`, never another exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from expkit.core.errors import ArtifactError
from expkit.core.safejson import JSONLimitError, parse_json

RESULT_FILE = "result.json"
RUN_FILE = "run.json"  # the completion marker, written last
LOG_FILE = "log.txt"
RESERVED_FILES = (RUN_FILE, LOG_FILE)
MAX_RESULT_BYTES = 16 * 1024 * 1024
TRAJECTORY_AXES = ("step", "budget", "time")
ENV_VARS = (
    "EXPKIT_ALGORITHM",
    "EXPKIT_DATASET",
    "EXPKIT_REPLICATE",
    "EXPKIT_SEED",
    "EXPKIT_PARAMS",
    "EXPKIT_OUTPUT_DIR",
    "EXPKIT_RUN_ID",
    "EXPKIT_CELL",
)


#: Variables of expkit's environment that every run (and the prepare step) gets when they are set.
BASE_ENV_VARS = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
#: ... and every variable whose name starts with one of these (the locale categories).
BASE_ENV_PREFIXES = ("LC_",)
#: A name the spec's ``env:`` list may hold.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREDENTIAL_NAME_RE = re.compile(
    r"^(AWS_|EXPKIT_S3_|EXPKIT_REGISTRY_|AZURE_|GOOGLE_|GCP_|KUBECONFIG$|DOCKER_CONFIG$|DOCKER_AUTH)"
    r"|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|AUTH|(^|_)(API_?)?KEY(_ID)?$",
    re.IGNORECASE,
)


def is_credential_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (``AWS_SECRET_ACCESS_KEY``,
    ``EXPKIT_S3_*``, ``EXPKIT_REGISTRY_PASSWORD``, ``*_TOKEN``, ``*_PASSWORD``, ``*_API_KEY``, ...)."""
    return bool(_CREDENTIAL_NAME_RE.search(name))


def clean_environment(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The part of ``environ`` a run may see: :data:`BASE_ENV_VARS`, ``LC_*``, and the names in ``allow``
    (the spec's ``env:`` list) that are set. Add :func:`run_environment` on top for a cell."""
    wanted = set(BASE_ENV_VARS) | set(allow)
    return {k: v for k, v in environ.items() if k in wanted or k.startswith(BASE_ENV_PREFIXES)}


def run_environment(
    *, run_id: str, algorithm: str, dataset: str, replicate: int, seed: int, params: Mapping[str, Any], output_dir: str
) -> dict[str, str]:
    """The ``EXPKIT_*`` environment variables of one run (see :func:`clean_environment` for the rest)."""
    return {
        "EXPKIT_RUN_ID": run_id,
        "EXPKIT_ALGORITHM": algorithm,
        "EXPKIT_DATASET": dataset,
        "EXPKIT_REPLICATE": str(replicate),
        "EXPKIT_SEED": str(seed),
        "EXPKIT_PARAMS": json.dumps(dict(params), sort_keys=True),
        "EXPKIT_OUTPUT_DIR": output_dir,
        "EXPKIT_CELL": f"{algorithm}/{dataset}/{replicate}",
    }


#: How much of a value or a name from a ``result.json`` an error message quotes.
_QUOTE_CHARS = 60


def _number(value: Any) -> bool:
    """A finite number that fits a float (a 400-digit integer does not: it is no metric)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _quote(value: Any) -> str:
    """``repr(value)``, cut short: error messages quote what a run wrote, never all of it."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_QUOTE_CHARS:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def parse_result(data: bytes, metric: str | None = None) -> dict[str, Any]:
    """Check a ``result.json`` and return it parsed. Raises :class:`ArtifactError` saying what is wrong
    (in a message of bounded length) for anything that is not a valid result — too large, not UTF-8,
    nested too deeply, integers too large for a float, non-finite values — and never another exception."""
    if len(data) > MAX_RESULT_BYTES:
        raise ArtifactError(
            f"result.json is {len(data)} bytes, over the {MAX_RESULT_BYTES} byte cap: "
            "write large outputs to other files in the output directory"
        )
    try:
        doc = parse_json(data, max_bytes=MAX_RESULT_BYTES)
    except JSONLimitError as err:
        raise ArtifactError(f"result.json {err}: write a flat {{'metrics': {{name: number}}}} object") from None
    except UnicodeDecodeError as err:
        raise ArtifactError(f"result.json is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (ValueError, RecursionError) as err:
        raise ArtifactError(f"result.json is not valid JSON ({str(err)[:200]})") from None
    if not isinstance(doc, dict):
        raise ArtifactError("result.json must be a JSON object with a 'metrics' object")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ArtifactError("result.json has no 'metrics' object (name -> number)")
    bad = [k for k, v in metrics.items() if not _number(v)]
    if bad:
        raise ArtifactError(f"result.json metric {_quote(bad[0])} is {_quote(metrics[bad[0]])}, not a finite number")
    if metric is not None and metric not in metrics:
        names = sorted(metrics)
        listed = ", ".join(_quote(n) for n in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise ArtifactError(f"result.json lacks the spec's metric {metric!r} (it has {listed})")
    traj = doc.get("trajectory")
    if traj is not None:
        if not isinstance(traj, list):
            raise ArtifactError("result.json 'trajectory' must be a list of records")
        for i, rec in enumerate(traj):
            if not isinstance(rec, dict) or not any(_number(rec.get(a)) for a in TRAJECTORY_AXES):
                raise ArtifactError(f"result.json trajectory[{i}] needs a numeric 'step', 'budget' or 'time'")
            bad = [k for k, v in rec.items() if v is not None and not _number(v)]
            if bad:
                raise ArtifactError(
                    f"result.json trajectory[{i}].{_quote(bad[0])} is {_quote(rec[bad[0]])}, not a finite number"
                )
    return doc


def json_object_or_none(data: bytes | None) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None when it is absent, not JSON, or not an object."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None

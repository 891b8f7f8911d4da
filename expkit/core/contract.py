"""The run contract: what a run receives and what it must leave behind.

A run receives its algorithm, dataset, seed, replicate and parameters through placeholders in its
command line and through environment variables (:data:`ENV_VARS`), writes anything it likes into
``EXPKIT_OUTPUT_DIR``, and must write ``result.json`` there::

    {"metrics": {"error": 0.12, "time": 3.4},
     "trajectory": [{"step": 1, "error": 0.5}, {"step": 2, "error": 0.3}]}

``metrics`` maps names to finite numbers and must contain the spec's metric. ``trajectory`` is
optional: a list of records, each with at least one of ``step``, ``budget`` or ``time`` and numeric
metric values, used for convergence plots. ``run.json`` and ``log.txt`` are written by expkit and
must not be written by the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from expkit.core.errors import ArtifactError

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


def run_environment(
    *, run_id: str, algorithm: str, dataset: str, replicate: int, seed: int, params: Mapping[str, Any], output_dir: str
) -> dict[str, str]:
    """The ``EXPKIT_*`` environment variables of one run."""
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_result(data: bytes, metric: str | None = None) -> dict[str, Any]:
    """Check a ``result.json`` and return it parsed. Raises :class:`ArtifactError` saying what is wrong."""
    if len(data) > MAX_RESULT_BYTES:
        raise ArtifactError(
            f"result.json is {len(data)} bytes, over the {MAX_RESULT_BYTES} byte cap: "
            "write large outputs to other files in the output directory"
        )
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ArtifactError(f"result.json is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ArtifactError("result.json must be a JSON object with a 'metrics' object")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ArtifactError("result.json has no 'metrics' object (name -> number)")
    bad = [k for k, v in metrics.items() if not _number(v)]
    if bad:
        raise ArtifactError(f"result.json metric {bad[0]!r} is {metrics[bad[0]]!r}, not a finite number")
    if metric is not None and metric not in metrics:
        raise ArtifactError(f"result.json lacks the spec's metric {metric!r} (it has {', '.join(sorted(metrics))})")
    traj = doc.get("trajectory")
    if traj is not None:
        if not isinstance(traj, list):
            raise ArtifactError("result.json 'trajectory' must be a list of records")
        for i, rec in enumerate(traj):
            if not isinstance(rec, dict) or not any(_number(rec.get(a)) for a in TRAJECTORY_AXES):
                raise ArtifactError(f"result.json trajectory[{i}] needs a numeric 'step', 'budget' or 'time'")
            bad = [k for k, v in rec.items() if v is not None and not _number(v)]
            if bad:
                raise ArtifactError(f"result.json trajectory[{i}].{bad[0]} is {rec[bad[0]]!r}, not a finite number")
    return doc


def json_object_or_none(data: bytes | None) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None when it is absent, not JSON, or not an object."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None

"""What the runs of each algorithm used: the report's time and memory table and ``resources.csv``.

A fair comparison gives every algorithm the same budget, and reviewers ask what each one cost. Every
cell's ``run.json`` records what its kept attempt used (``resources``: wall time, CPU time — user plus
system, from the run's rusage — and peak resident memory; on a cluster the wall time, the node and the
container's requests and limits). :func:`resource_summary` sums that up per algorithm over its finished
cells (succeeded and failed; unfinished cells used nothing yet), from the ``wall_s``, ``cpu_s`` and
``max_rss_mb`` columns of :func:`expkit.analysis.collect.collect`'s table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.collect import Collected
from expkit.core.fmt import format_number

#: The columns of ``resources.csv``, one row per algorithm.
RESOURCE_COLUMNS = [
    "algorithm",
    "cells",
    "wall_s_median",
    "wall_s_total",
    "cpu_s_median",
    "cpu_s_total",
    "max_rss_mb_median",
    "max_rss_mb_max",
]


def resource_summary(collected: Collected) -> pd.DataFrame:
    """Per algorithm (in spec order): its finished cells, and the median and total wall time and CPU
    time (seconds) and the median and largest peak memory (MB of 10^6 bytes) over the cells that
    measured them (NaN where none did)."""
    table = collected.table
    cells = table[table["status"] != "missing"].drop_duplicates(["algorithm", "dataset", "replicate"])
    rows: list[dict[str, Any]] = []
    for alg in collected.algorithms:
        mine = cells[cells["algorithm"] == alg]
        wall, cpu, rss = (pd.to_numeric(mine[c], errors="coerce").dropna() for c in ("wall_s", "cpu_s", "max_rss_mb"))
        rows.append(
            {
                "algorithm": alg,
                "cells": len(mine),
                "wall_s_median": _median(wall),
                "wall_s_total": float(wall.sum()) if len(wall) else np.nan,
                "cpu_s_median": _median(cpu),
                "cpu_s_total": float(cpu.sum()) if len(cpu) else np.nan,
                "max_rss_mb_median": _median(rss),
                "max_rss_mb_max": float(rss.max()) if len(rss) else np.nan,
            }
        )
    summary: pd.DataFrame = pd.DataFrame.from_records(rows, columns=RESOURCE_COLUMNS)
    return summary


def _median(values: pd.Series) -> float:
    return float(values.median()) if len(values) else np.nan


def resource_rows(summary: pd.DataFrame) -> list[dict[str, str]]:
    """The summary's rows as the report shows them (numbers formatted, "–" where nothing was measured)."""

    def text(value: Any) -> str:
        return format_number(value, 4, missing="–")

    return [
        {"algorithm": str(r["algorithm"]), "cells": str(r["cells"]), **{c: text(r[c]) for c in RESOURCE_COLUMNS[2:]}}
        for r in summary.to_dict("records")
    ]


def budget_text(collected: Collected) -> str:
    """What every run was given (``spec.resources``), and whether it was enforced where the run ran."""
    res = collected.experiment.spec.resources
    parts = [f"{res.cpu:g} CPU" + ("s" if res.cpu != 1 else "")]
    if res.memory:
        parts.append(f"{res.memory} memory")
    if res.gpu:
        parts.append(f"{res.gpu} GPU" + ("s" if res.gpu != 1 else ""))
    executor = str(collected.manifest.get("executor") or "")
    where = (
        "requests equal to limits in each pod"
        if executor == "argo"
        else "locally these decide how many runs share the machine; memory is not enforced"
    )
    return f"Every run was given {', '.join(parts)} (spec.resources; {where})"

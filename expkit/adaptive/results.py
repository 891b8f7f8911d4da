"""``expkit results`` on an adaptive run: the per-dataset claims of the sequential procedure.

A fixed-design test reused after several looks claims too much (the looks inflate its error rate), so on an
adaptive run the primary metric's per-dataset claims are those of
:func:`expkit.adaptive.sequential.adjusted_pairwise` — each pair's Holm-adjusted repeated p-value and
decision at the dataset's last look — and the notes say so. The across-dataset analysis is unchanged: it
runs over the per-dataset summaries as for any run. Cells the waves never planned are not "missing" in the
report. An adaptive run completed to the full design (``--complete``) is analysed as a fixed design.

The analysis layer cannot import this one; :func:`adaptive_design` builds the
:class:`expkit.analysis.report.Design` hook that :func:`~expkit.analysis.report.build_report` accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from expkit.adaptive.driver import sequential_config
from expkit.adaptive.records import MANIFEST_BLOCK, adaptive_summary, is_adaptive, is_completed
from expkit.adaptive.sequential import PairDecision, adjusted_pairwise
from expkit.analysis.collect import Collected
from expkit.analysis.report import Design
from expkit.analysis.stats import Analysis
from expkit.stores.base import RunStore

NOTE = (
    "adaptive run: the per-dataset claims (p_holm, significant, winner) are the sequential procedure's "
    "Holm-adjusted repeated p-values and decisions at each dataset's last look (expkit.adaptive.sequential, "
    "docs/statistics.md), not the fixed-design tests, which would overstate significance after repeated "
    "looks; the across-dataset tests use the per-dataset summaries as usual"
)


def adaptive_design(store: RunStore, run_ref: str) -> Design | None:
    """The :class:`~expkit.analysis.report.Design` of run ``run_ref`` when it is adaptive (and not completed
    to the full design); None otherwise."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    if not is_adaptive(manifest) or is_completed(manifest):
        return None
    block: dict[str, Any] = manifest[MANIFEST_BLOCK]
    planned = _planned(block)
    last_n = _last_looks(block)

    def reshape(collected: Collected) -> Collected:
        return _reshape(collected, planned)

    def primary(collected: Collected, analysis: Analysis) -> Analysis:
        return sequential_claims(collected, analysis, last_n)

    return Design(reshape, primary, tuple(adaptive_summary(manifest)))


def _planned(block: Mapping[str, Any]) -> set[tuple[str, str, int]]:
    """(algorithm, dataset, replicate) of every cell the waves planned."""
    out: set[tuple[str, str, int]] = set()
    for dataset, state in (block.get("datasets") or {}).items():
        for algorithm, reps in (state.get("replicates") or {}).items():
            out.update((algorithm, dataset, r) for r in range(int(reps)))
    return out


def _last_looks(block: Mapping[str, Any]) -> dict[str, int]:
    """Each dataset's replicates per algorithm at its last decided look."""
    last: dict[str, int] = {}
    for decision in block.get("decisions") or ():
        last[str(decision["dataset"])] = int(decision["n"])
    return last


def _reshape(collected: Collected, planned: set[tuple[str, str, int]]) -> Collected:
    """The collected run without the cells the waves never planned (they are not missing: not needed)."""
    table = collected.table
    keys = list(zip(table["algorithm"], table["dataset"], table["replicate"].astype(int)))
    unplanned = np.array([k not in planned for k in keys], dtype=bool)
    keep = ~(unplanned & (table["status"] == "missing").to_numpy())
    missing = tuple(k for k in collected.missing if _key(k) in planned)
    return dataclasses.replace(collected, table=table[keep].reset_index(drop=True), missing=missing)


def _key(cell: str) -> tuple[str, str, int]:
    algorithm, dataset, replicate = cell.split("/")
    return algorithm, dataset, int(replicate)


def sequential_claims(collected: Collected, analysis: Analysis, last_n: Mapping[str, int]) -> Analysis:
    """``analysis`` with its per-dataset pairs' ``p_holm``, ``significant`` and ``winner`` replaced by the
    sequential procedure's (column ``sequential`` says its decision), and the note that says so."""
    config = sequential_config(collected.experiment)
    values = _values(collected, last_n)
    decided = adjusted_pairwise(values, {d: last_n[d] for d in values}, config) if values else []
    by_pair: dict[tuple[str, str, str], PairDecision] = {(p.dataset, p.a, p.b): p for p in decided}
    frame = analysis.pairwise
    p_holm: list[float] = []
    significant: list[bool] = []
    winner: list[str | None] = []
    sequential: list[str] = []
    for dataset, a, b in zip(frame["dataset"].astype(str), frame["a"].astype(str), frame["b"].astype(str)):
        found = by_pair.get((dataset, a, b)) or by_pair.get((dataset, b, a))
        if found is None:  # a dataset no wave has decided yet: no claim
            p_holm.append(math.nan)
            significant.append(False)
            winner.append(None)
            sequential.append("open")
            continue
        better = {"a_better": found.a, "b_better": found.b}.get(found.decision)
        p_holm.append(found.p_adjusted)
        significant.append(better is not None)
        winner.append(better)
        sequential.append(found.decision if found.a == a else _flip(found.decision))
    frame = frame.assign(
        p_holm=p_holm, significant=significant, winner=np.array(winner, dtype=object), sequential=sequential
    )
    return dataclasses.replace(analysis, _pairwise=frame, notes=(*analysis.notes, NOTE))


def _flip(decision: str) -> str:
    return {"a_better": "b_better", "b_better": "a_better"}.get(decision, decision)


def _values(collected: Collected, last_n: Mapping[str, int]) -> dict[str, dict[str, list[float]]]:
    """Per decided dataset, each algorithm's primary metric on replicates 0..n-1 of the design (NaN: a
    failed run); an algorithm that stopped getting seeds earlier has the replicates it ran."""
    table = collected.table
    rows = table[table["metric"] == collected.metric]
    out: dict[str, dict[str, list[float]]] = {}
    for dataset in collected.datasets:
        n = last_n.get(dataset)
        if n is None:
            continue
        here = rows[rows["dataset"] == dataset]
        per: dict[str, list[float]] = {}
        for algorithm in collected.algorithms:
            mine = here[(here["algorithm"] == algorithm) & (here["status"] != "missing")]
            got = {int(r): (float(v) if s == "succeeded" else math.nan) for r, v, s in _triples(mine)}
            reps = [r for r in range(n) if r in got]
            per[algorithm] = [got[r] for r in range(len(reps))] if reps == list(range(len(reps))) else []
        out[dataset] = per
    return out


def _triples(frame: pd.DataFrame) -> list[tuple[Any, Any, Any]]:
    return list(zip(frame["replicate"], frame["value"], frame["status"]))


__all__ = ["NOTE", "adaptive_design", "sequential_claims"]

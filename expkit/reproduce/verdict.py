""":func:`compare_runs`: the reproduction check of two collected runs, cell by cell and overall.

Overall: *reproduced* only when every cell is reproduced, the conclusions agree and the specs are the
same experiment; *not reproduced* when a cell is not reproduced or a conclusion flips; *inconclusive*
otherwise (see :data:`expkit.reproduce.comparison.CONVENTIONS`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import pandas as pd

from expkit.analysis.collect import Collected, select_metric
from expkit.analysis.stats import holm
from expkit.core.errors import InputError
from expkit.reproduce.cells import cell_tests, cell_verdict
from expkit.reproduce.comparison import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    CellComparison,
    Comparison,
    ConclusionCheck,
    SpecCheck,
    finite_or_none,
)
from expkit.reproduce.conclusions import conclusion_check
from expkit.reproduce.equivalence import DEFAULT_ALPHA, DEFAULT_MARGIN, check_alpha_margin
from expkit.reproduce.sides import failures, metric_rows, restriction
from expkit.reproduce.spec_check import spec_check


def compare_runs(
    original: Collected,
    rerun: Collected,
    *,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    metric: str | None = None,
    cells: Collection[str] | None = None,
) -> Comparison:
    """Compare a re-run with the original run (see :mod:`expkit.reproduce.compare` for the method).

    ``cells`` restricts both sides to those runs (``alg/ds/rep`` keys), e.g. a sampled re-run; by
    default both are restricted to the runs that finished (succeeded or failed) on both sides.
    """
    check_alpha_margin(alpha, margin)
    name, goal, notes = _metric_and_goal(original, rerun, metric)
    spec = spec_check(original, rerun)
    keys = restriction(original, rerun, cells)
    orig_t = metric_rows(original, name, keys)
    rerun_t = metric_rows(rerun, name, keys)
    algs = [a for a in original.algorithms if a in rerun.algorithms]
    dsets = [d for d in original.datasets if d in rerun.datasets]
    common, only_o, only_r = _cell_sets(original, rerun, orig_t, rerun_t, algs, dsets)
    all_o = metric_rows(original, name, keys, valid_only=False)
    all_r = metric_rows(rerun, name, keys, valid_only=False)
    cell_results = _compare_cells(common, orig_t, rerun_t, all_o, all_r, goal=goal, alpha=alpha, margin=margin)
    conclusions = conclusion_check(
        original,
        rerun,
        orig_t_all=all_o,
        rerun_t_all=all_r,
        metric=name,
        goal=goal,
        alpha=alpha,
        algorithms=algs,
        datasets=dsets,
    )
    verdict, reasons = _overall(cell_results, conclusions, spec, only_o, only_r)
    if orig_t.empty and rerun_t.empty:
        notes.append("no valid runs on either side")
    return Comparison(
        original_run=original.run_id,
        rerun_run=rerun.run_id,
        experiment=original.experiment.metadata.name,
        metric=name,
        goal=goal,
        alpha=float(alpha),
        margin=float(margin),
        cells=tuple(cell_results),
        only_original=only_o,
        only_rerun=only_r,
        conclusions=conclusions,
        spec=spec,
        verdict=verdict,
        reasons=tuple(reasons),
        notes=tuple(notes),
        restricted=None if cells is None else len(keys),
        cell_keys=frozenset(keys),
    )


def _metric_and_goal(original: Collected, rerun: Collected, metric: str | None) -> tuple[str, str, list[str]]:
    """The metric compared, its goal (the original's), and notes on how they were chosen."""
    name = select_metric(original, metric)
    if name not in rerun.metrics:
        raise InputError(f"the re-run {rerun.run_id} has no metric {name!r}; it has {', '.join(rerun.metrics)}")
    declared = original.goal_of(name)  # every metric the spec lists has its own goal
    goal = declared or original.goal
    notes: list[str] = []
    if declared is None:
        notes.append(f"metric {name!r} has no declared goal; the spec metric's goal ({goal}) is used")
    rerun_goal = rerun.goal_of(name) or rerun.goal
    if rerun_goal != goal:
        notes.append(f"the re-run's spec says goal {rerun_goal}, the original's {goal}: the original's is used")
    return name, goal, notes


def _cell_sets(
    original: Collected,
    rerun: Collected,
    orig_t: pd.DataFrame,
    rerun_t: pd.DataFrame,
    algs: list[str],
    dsets: list[str],
) -> tuple[list[tuple[str, str]], tuple[str, ...], tuple[str, ...]]:
    """The (algorithm, dataset) cells with valid runs on both sides, and the ``alg/ds`` keys of those
    with valid runs on one side only."""
    pairs_o = set(zip(orig_t["algorithm"], orig_t["dataset"]))
    pairs_r = set(zip(rerun_t["algorithm"], rerun_t["dataset"]))
    common = [(a, d) for d in dsets for a in algs if (a, d) in pairs_o and (a, d) in pairs_r]
    only_o = tuple(
        f"{a}/{d}"
        for d in original.datasets
        for a in original.algorithms
        if (a, d) in pairs_o and (a, d) not in pairs_r
    )
    only_r = tuple(
        f"{a}/{d}" for d in rerun.datasets for a in rerun.algorithms if (a, d) in pairs_r and (a, d) not in pairs_o
    )
    return common, only_o, only_r


def _compare_cells(
    common: list[tuple[str, str]],
    orig_t: pd.DataFrame,
    rerun_t: pd.DataFrame,
    all_o: pd.DataFrame,
    all_r: pd.DataFrame,
    *,
    goal: str,
    alpha: float,
    margin: float,
) -> list[CellComparison]:
    """Test every common cell and give its verdict, Holm-correcting over all tests of all cells (two per cell)."""
    fails_o, fails_r = failures(all_o), failures(all_r)
    groups_o = {k: g for k, g in orig_t.groupby(["algorithm", "dataset"], sort=False)}
    groups_r = {k: g for k, g in rerun_t.groupby(["algorithm", "dataset"], sort=False)}
    raw = [
        cell_tests(
            a,
            d,
            groups_o[(a, d)],
            groups_r[(a, d)],
            goal=goal,
            alpha=alpha,
            margin=margin,
            failed=(fails_o.get((a, d), 0), fails_r.get((a, d), 0)),
        )
        for a, d in common
    ]
    family = np.array(
        [r.mwu_p if r.mwu_p is not None else np.nan for r in raw]
        + [r.ks_p if r.ks_p is not None else np.nan for r in raw],
        dtype=float,
    )
    adjusted = holm(family) if family.size else family
    return [
        cell_verdict(r, finite_or_none(adjusted[i]), finite_or_none(adjusted[len(raw) + i]), alpha=alpha, margin=margin)
        for i, r in enumerate(raw)
    ]


def _overall(
    cells: list[CellComparison],
    conclusions: ConclusionCheck,
    spec: SpecCheck,
    only_o: tuple[str, ...],
    only_r: tuple[str, ...],
) -> tuple[str, list[str]]:
    """The overall verdict and its reasons."""
    reasons: list[str] = []
    bad = [c for c in cells if c.verdict == NOT_REPRODUCED]
    unsure = [c for c in cells if c.verdict == INCONCLUSIVE]
    if bad:
        reasons.append(f"{len(bad)} cell(s) not reproduced: " + _some(c.key for c in bad))
    if conclusions.flips:
        reasons.append("a conclusion flips: " + "; ".join(conclusions.flips[:5]))
    if bad or conclusions.flips:
        return NOT_REPRODUCED, reasons
    if not cells:
        reasons.append("no algorithm × dataset cell has valid runs on both sides: nothing could be compared")
    if unsure:
        reasons.append(f"{len(unsure)} cell(s) inconclusive: " + _some(c.key for c in unsure))
    if conclusions.disagreements:
        reasons.append("the conclusions differ: " + "; ".join(conclusions.disagreements[:5]))
    if only_o:
        reasons.append(f"{len(only_o)} cell(s) have runs in the original only: " + ", ".join(only_o[:10]))
    if only_r:
        reasons.append(f"{len(only_r)} cell(s) have runs in the re-run only: " + ", ".join(only_r[:10]))
    if spec.status == "different":
        reasons.append(
            f"the specs differ in {', '.join(spec.material[:6])}: a different experiment is not a "
            "reproduction of this one"
        )
    if reasons:
        return INCONCLUSIVE, reasons
    reasons.append(f"all {len(cells)} cell(s) reproduced and the conclusions agree")
    return REPRODUCED, reasons


def _some(keys: Iterable[str], limit: int = 10) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are."""
    shown = list(keys)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more

"""The JSON records of ``stats.json``: plain floats (no NaN or infinity: those are None with a note in
the same record), fixed key and list order. :meth:`~expkit.analysis.stats.analysis.Analysis.to_dict`
assembles them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from expkit.analysis.stats.bayes_local import LocalBayes
from expkit.analysis.stats.block_tests import MC_SEED
from expkit.analysis.stats.common import _best_names
from expkit.analysis.stats.conventions import _PAIR_COLUMNS, CONVENTIONS
from expkit.analysis.stats.failures import SUCCESS_COLUMNS
from expkit.analysis.stats.results import (
    AcrossDatasets,
    AcrossPair,
    BlockTestResult,
    FriedmanResult,
    ImanDavenportResult,
    NemenyiResult,
    OmnibusResult,
)


def _json_float(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _json_column(series: pd.Series) -> list[Any]:
    """The column as JSON values: Python scalars, None for NaN and infinity."""
    values = series.to_numpy()
    if values.dtype.kind == "f":
        return [v if math.isfinite(v) else None for v in values.tolist()]
    if values.dtype.kind in "iub":
        return list(values.tolist())
    out: list[Any] = []
    for v in values.tolist():
        if isinstance(v, float):
            out.append(v if math.isfinite(v) else None)
        elif isinstance(v, (np.floating, np.integer, np.bool_)):
            out.append(v.item())
        else:
            out.append(v)
    return out


def _omnibus_dict(o: OmnibusResult) -> dict[str, Any]:
    return {
        "test": o.test,
        "convention": CONVENTIONS[o.test] if o.test else None,
        "algorithms": list(o.algorithms),
        "n_blocks": o.n_blocks,
        "statistic": _json_float(o.statistic),
        "p": _json_float(o.p),
        "significant": o.significant,
        "note": o.note,
    }


def _per_dataset_records(
    pairwise: pd.DataFrame,
    aggregated: pd.DataFrame,
    omnibus: Sequence[OmnibusResult],
    *,
    algorithms: tuple[str, ...],
    datasets: tuple[str, ...],
    goal: str,
    pair_test: str,
    success: pd.DataFrame | None = None,
    bayes_local: LocalBayes | None = None,
) -> list[dict[str, Any]]:
    """One record per dataset: best algorithms, cell values, the omnibus test, every pair (in paired
    designs with its per-dataset Bayesian signed-rank test, ``bayesian``: None when not tested) and the
    success-rate comparison."""
    n_pairs = len(algorithms) * (len(algorithms) - 1) // 2
    names = [name for name in _PAIR_COLUMNS if name != "dataset"]
    columns = {name: _json_column(pairwise[name]) for name in names}
    success_rows = _success_records(success, len(datasets), n_pairs)
    effect_name = "rank_biserial" if pair_test == "wilcoxon" else "a12"
    records: list[dict[str, Any]] = []
    for i, (dataset, omni) in enumerate(zip(datasets, omnibus)):
        pairs = [{name: columns[name][r] for name in names} for r in range(i * n_pairs, (i + 1) * n_pairs)]
        if bayes_local is not None:
            for r, pair in enumerate(pairs, start=i * n_pairs):
                pair["bayesian"] = bayes_local.record(r)
        values = aggregated.loc[dataset].to_numpy(dtype=float)
        cell_note = None
        if np.isnan(values).any():
            missing = [a for a, v in zip(algorithms, values) if np.isnan(v)]
            cell_note = f"no valid run for {', '.join(missing)} on this dataset"
        records.append(
            {
                "dataset": dataset,
                "best": list(_best_names(values, algorithms, goal)),
                "cell_values": {a: _json_float(v) for a, v in zip(algorithms, values)},
                "note": cell_note,
                "omnibus": _omnibus_dict(omni),
                "pairwise": {
                    "test": pair_test,
                    "convention": CONVENTIONS[pair_test],
                    # the other conventions the pairs follow, by their name in the top-level conventions
                    "conventions": [effect_name, "hodges_lehmann", "holm", "winner", "failures"],
                    "pairs": pairs,
                },
                "success_rates": success_rows[i],
            }
        )
    return records


def _success_records(success: pd.DataFrame | None, n_datasets: int, n_pairs: int) -> list[dict[str, Any]]:
    """Per dataset, the Fisher success-rate block: the pairs only where some run failed there."""
    names = [name for name in SUCCESS_COLUMNS if name != "dataset"]
    if success is None or not len(success):
        return [
            {"test": "fisher_exact", "convention": CONVENTIONS["success_rates"], "pairs": [], "note": "no pairs"}
            for _ in range(n_datasets)
        ]
    columns = {name: _json_column(success[name]) for name in names}
    failed = (success["failed_a"].to_numpy() + success["failed_b"].to_numpy()).reshape(n_datasets, n_pairs)
    out = []
    for i in range(n_datasets):
        rows = range(i * n_pairs, (i + 1) * n_pairs) if failed[i].any() else range(0)
        out.append(
            {
                "test": "fisher_exact",
                "convention": CONVENTIONS["success_rates"],
                "pairs": [{name: columns[name][r] for name in names} for r in rows],
                "note": None if failed[i].any() else "no failed run on this dataset",
            }
        )
    return out


def _descriptive_records(desc: pd.DataFrame) -> list[dict[str, Any]]:
    """The descriptives table as records, each with a note when a statistic is missing for lack of runs."""
    columns = {name: _json_column(desc[name]) for name in desc.columns}
    records = []
    for r in range(len(desc)):
        record = {name: columns[name][r] for name in desc.columns}
        count = record["n"]
        record["note"] = "no valid run" if count == 0 else "std needs at least two valid runs" if count == 1 else None
        if count > 1 and (record["std"] is None or record["iqr"] is None):
            record["note"] = "the std or IQR lies beyond the float range (values near +-1.8e308), so it is left out"
        records.append(record)
    return records


def _across_dict(a: AcrossDatasets, alpha: float) -> dict[str, Any]:
    """The across-dataset block; a test that was not run is None. ``omnibus`` is the test that gates the
    claims, ``pairwise`` (Wilcoxon, Holm) the primary post-hoc result; Friedman's asymptotic p-value,
    Iman-Davenport and Nemenyi are there for reference."""
    out: dict[str, Any] = {
        "aggregate": a.aggregate,
        "datasets": list(a.datasets),
        "excluded_datasets": list(a.excluded),
        "incomplete_datasets": [
            {
                "dataset": d,
                "missing": list(missing),
                "used_in": f"Skillings-Mack test and the pairs without {', '.join(missing)}"
                if a.omnibus is not None and a.omnibus.test == "skillings_mack"
                else f"the pairs without {', '.join(missing)}",
            }
            for d, missing in a.incomplete
        ]
        if a.pairs
        else [],
        "n_datasets": len(a.datasets),
        "control": a.control,
        "ranks_convention": CONVENTIONS["ranks"],
        "average_ranks": (
            {name: float(r) for name, r in zip(a.algorithms, a.average_ranks)} if a.average_ranks is not None else None
        ),
        "omnibus": _omnibus_across_record(a.omnibus, alpha) if a.omnibus is not None else None,
        "friedman": _friedman_record(a.friedman, alpha) if a.friedman is not None else None,
        "iman_davenport": _iman_davenport_record(a.iman_davenport, alpha) if a.iman_davenport is not None else None,
        "nemenyi": _nemenyi_record(a.nemenyi) if a.nemenyi is not None else None,
        "pairwise": _pairs_over_datasets_record(a.pairs, a.control) if a.pairs else None,
        "verdict": a.verdict,
        "verdict_convention": CONVENTIONS["verdict"],
        "notes": list(a.notes),
    }
    if a.average_ranks is None:
        out["average_ranks_note"] = "no complete dataset or a single algorithm: no ranks"
    return out


def _omnibus_across_record(o: BlockTestResult, alpha: float) -> dict[str, Any]:
    """The omnibus test over datasets with how its p-value was obtained."""
    return {
        "test": o.test,
        "convention": CONVENTIONS["skillings_mack" if o.test == "skillings_mack" else "friedman_exact"],
        "statistic": _json_float(o.statistic),
        "df": o.df,
        "p": float(o.p),
        "method": o.method,
        "n_resamples": o.n_resamples,
        "mc_se": _json_float(o.mc_se),
        "seed": MC_SEED if o.method == "monte-carlo" else None,
        "p_min": _json_float(o.p_min),
        "n_datasets": o.n_blocks,
        "significant": bool(o.p < alpha),
        "note": o.note,
    }


def _friedman_record(f: FriedmanResult, alpha: float) -> dict[str, Any]:
    return {
        "test": "friedmanchisquare",
        "convention": CONVENTIONS["friedmanchisquare"],
        "chi2": _json_float(f.chi2),
        "p": _json_float(f.p),
        "chi2_uncorrected": _json_float(f.chi2_uncorrected),
        "df": f.df,
        "significant": bool(f.p is not None and f.p < alpha),
        "note": f.note,
    }


def _iman_davenport_record(d: ImanDavenportResult, alpha: float) -> dict[str, Any]:
    return {
        "test": "iman_davenport",
        "convention": CONVENTIONS["iman_davenport"],
        "F": _json_float(d.f),
        "df1": d.df1,
        "df2": d.df2,
        "p": _json_float(d.p),
        "significant": bool(d.p is not None and d.p < alpha),
        "note": d.note,
    }


def _nemenyi_record(nm: NemenyiResult) -> dict[str, Any]:
    return {
        "test": "nemenyi",
        "convention": CONVENTIONS["nemenyi"],
        "k": nm.k,
        "n": nm.n,
        "critical_differences": [
            {"alpha": 0.05, "q": _json_float(nm.q_05), "cd": _json_float(nm.cd_05)},
            {"alpha": 0.10, "q": _json_float(nm.q_10), "cd": _json_float(nm.cd_10)},
            {"alpha": float(nm.alpha), "q": _json_float(nm.q_alpha), "cd": _json_float(nm.cd_alpha)},
        ],
    }


def _pairs_over_datasets_record(pairs: Sequence[AcrossPair], control: str | None) -> dict[str, Any]:
    return {
        "test": "wilcoxon",
        "primary": True,
        "convention": CONVENTIONS["wilcoxon_over_datasets"],
        "holm": sum(p.in_family for p in pairs) > 1,
        "holm_convention": CONVENTIONS["holm"],
        "family": f"comparisons with the control {control}" if control else "all pairs",
        "pairs": [
            {
                "a": p.a,
                "b": p.b,
                "n_datasets": p.n,
                "better_a": p.better_a,
                "better_b": p.better_b,
                "statistic": p.statistic,
                "p": p.p,
                "in_family": p.in_family,
                "p_holm": p.p_holm,
                "significant": p.significant,
                "winner": p.winner,
                "rank_a": _json_float(p.rank_a),
                "rank_b": _json_float(p.rank_b),
                "nemenyi_significant": p.nemenyi_significant,
                "note": p.note if p.note or p.p is not None else "not testable",
            }
            for p in pairs
        ],
    }

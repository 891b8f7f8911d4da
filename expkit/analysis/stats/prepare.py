"""Input preparation: the tidy results table of one metric, checked and arranged as a dataset x
algorithm x slot array of valid values (slot = replicate, or (replicate, seed) for paired runs), with
counts of valid and failed runs and notes on what was left out.

Failed runs (status ``failed``) follow the failure policy: with a ``penalty`` (``failures = 'penalize'``,
the default of :func:`~expkit.analysis.stats.analyze`) a failed run enters the array as that value,
-inf when larger is better and +inf when smaller is better, so it ranks below every successful run of
its dataset and ties with the other failed runs (Arcuri & Briand 2014); without one (``'exclude'``) it is
left out. On a dataset where no run succeeded there is nothing to rank a failure below, so its failed
runs are left out either way. Unfinished (``missing``) runs and succeeded runs without a finite value
are always left out: they are not failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _name_list
from expkit.analysis.stats.conventions import FAILED, REQUIRED_COLUMNS, SUCCEEDED
from expkit.core.errors import InputError


@dataclass(frozen=True)
class _Prepared:
    """The valid values of one metric, arranged for the tests (see the module docstring)."""

    metric: str
    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    x: np.ndarray  # (D, K, S) values, NaN where no valid run; paired: slot = (replicate, seed)
    n: np.ndarray  # (D, K) runs in the tests: valid runs, plus the penalised failed runs
    failed: np.ndarray  # (D, K) failed / missing / non-finite runs
    notes: tuple[str, ...]
    penalized: np.ndarray  # (D, K) failed runs in ``x`` as the worst value (failures = 'penalize')
    finished: np.ndarray  # (D, K, 2) runs with status succeeded, failed (for the success-rate test)

    def valid_only(self) -> _Prepared:
        """The same runs without the penalised failures: successful runs with a finite value only."""
        if not self.penalized.any():
            return self
        x = np.where(np.isfinite(self.x), self.x, np.nan)
        return replace(self, x=x, n=self.n - self.penalized, penalized=np.zeros_like(self.penalized))


def _order(given: Sequence[str] | None, found: Sequence[str], kind: str) -> tuple[str, ...]:
    if given is None:
        return tuple(sorted(found))
    names = tuple(str(x) for x in given)
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise InputError(f"{kind} order lists {', '.join(dup)} more than once: give each name once")
    return names


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """``column == value`` as a bool array (NaN = False); via numpy, cheaper than pandas' string ops."""
    values = column.to_numpy()
    if values.dtype == object:
        return np.asarray(values == value, dtype=bool)
    return column.eq(value).to_numpy(dtype=bool, na_value=False)


def _factorize(column: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize`` on the column's values (categoricals keep their codes); -1 = missing."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype=np.int64), column.cat.categories
    return pd.factorize(column.to_numpy(), use_na_sentinel=True)


def _recode(raw: np.ndarray, uniques: Any, order: tuple[str, ...]) -> np.ndarray:
    """Codes of ``pd.factorize`` mapped to positions in ``order`` (-1 = not in the order or missing)."""
    position = {name: i for i, name in enumerate(order)}
    lookup = np.array([position.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
    return lookup[np.asarray(raw, dtype=np.int64)]  # raw -1 (missing) picks the trailing -1


class _Slots(NamedTuple):
    """Valid runs sorted by cell, each with its slot in the cell; ``dup`` marks a repeated slot."""

    order: np.ndarray  # positions of the valid runs in sorted order
    dataset: np.ndarray
    algorithm: np.ndarray
    replicate: np.ndarray
    slot: np.ndarray
    dup: np.ndarray


def _prepare(
    table: pd.DataFrame,
    *,
    metric: str,
    paired: bool,
    algorithms: Sequence[str] | None,
    datasets: Sequence[str] | None,
    penalty: float | None = None,
) -> _Prepared:
    """Check ``table`` and arrange the valid runs of ``metric`` (raises InputError for unusable input);
    ``penalty``: the value failed runs enter the tests with (None: they are left out)."""
    sub = _metric_rows(table, metric)
    notes: list[str] = []
    algs, a_code = _codes(sub["algorithm"], algorithms, "algorithm", notes)
    dsets, d_code = _codes(sub["dataset"], datasets, "dataset", notes)
    if not algs or not dsets:
        raise InputError("the algorithm and dataset orders must each name at least one entry")
    n_d, n_k = len(dsets), len(algs)
    runs = _valid_runs(sub, metric, a_code, d_code, algs, dsets, notes, penalty)
    values, ok, failed = runs.values, runs.used, runs.failed
    rep, seed = _replicates_and_seeds(sub, ok)
    d_ok, a_ok = d_code[ok], a_code[ok]
    slots = _paired_slots(d_ok, a_ok, rep, seed, n_d) if paired else _independent_slots(d_ok, a_ok, rep, n_k)
    if slots.dup.any():
        i = int(np.flatnonzero(slots.dup)[0])
        raise InputError(
            f"{int(slots.dup.sum())} duplicate row(s) for metric {metric!r}, e.g. {algs[slots.algorithm[i]]} on "
            f"{dsets[slots.dataset[i]]} replicate {int(slots.replicate[i])}: keep one row per algorithm x dataset "
            "x replicate x metric"
        )
    n_slots = int(slots.slot.max()) + 1 if len(slots.order) else 0
    x = np.full((n_d, n_k, n_slots), np.nan)
    x[slots.dataset, slots.algorithm, slots.slot] = values[ok][slots.order]
    n = np.bincount(slots.dataset * n_k + slots.algorithm, minlength=n_d * n_k).reshape(n_d, n_k)
    _note_empty(n, algs, dsets, metric, notes)
    return _Prepared(metric, algs, dsets, x, n, failed, tuple(notes), runs.penalized, runs.finished)


def _metric_rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric``, after checking that ``table`` is a DataFrame with the required columns."""
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"the results table must be a pandas DataFrame, not {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"the results table lacks column(s) {', '.join(missing)}: it needs {', '.join(REQUIRED_COLUMNS)}"
        )
    is_metric = _equals(table["metric"], metric)
    sub = table if is_metric.all() else table[is_metric]
    if len(sub) == 0:
        found = sorted({str(m) for m in table["metric"].dropna().unique()})
        raise InputError(
            f"metric {metric!r} is not in the results table: use one of {found or 'none (table is empty)'}"
        )
    return sub


def _codes(
    column: pd.Series, given: Sequence[str] | None, kind: str, notes: list[str]
) -> tuple[tuple[str, ...], np.ndarray]:
    """The display order of ``kind`` names and each row's position in it (-1 = not in the order)."""
    raw, uniques = _factorize(column)
    found = sorted({str(x) for x in uniques})
    order = _order(given, found, kind)
    extra = sorted(set(found) - set(order))
    if extra:
        notes.append(f"rows of {kind}(s) not in the requested order were ignored: {_name_list(extra)}")
    return order, _recode(raw, uniques, order)


class _Runs(NamedTuple):
    """The rows of one metric sorted out: their values (failed runs as the penalty), which rows enter
    the tests, and counts per dataset x algorithm."""

    values: np.ndarray
    used: np.ndarray  # valid runs and penalised failed runs
    failed: np.ndarray  # (D, K) failed / missing / non-finite runs
    penalized: np.ndarray  # (D, K) failed runs entered as the penalty
    finished: np.ndarray  # (D, K, 2) status succeeded / failed


def _valid_runs(
    sub: pd.DataFrame,
    metric: str,
    a_code: np.ndarray,
    d_code: np.ndarray,
    algs: tuple[str, ...],
    dsets: tuple[str, ...],
    notes: list[str],
    penalty: float | None,
) -> _Runs:
    """Which rows are valid runs, which failed runs enter as ``penalty``, and counts, with notes on the rest."""
    keep = (a_code >= 0) & (d_code >= 0)
    values = pd.to_numeric(sub["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    succeeded = _equals(sub["status"], SUCCEEDED)
    finite = np.isfinite(values)
    ok = keep & succeeded & finite
    bad_value = keep & succeeded & ~finite
    if bad_value.any():
        notes.append(
            f"{int(bad_value.sum())} succeeded run(s) report no finite value (NaN or infinite) for {metric!r}; "
            "they are treated as missing"
        )
    n_d, n_k = len(dsets), len(algs)
    cell = d_code * n_k + a_code
    failed_status = keep & _equals(sub["status"], FAILED)
    penalized = np.zeros(len(values), dtype=bool)
    if penalty is not None and failed_status.any():
        has_success = np.bincount(d_code[ok], minlength=n_d) > 0
        penalized = failed_status & has_success[np.maximum(d_code, 0)]
        values = np.where(penalized, penalty, values)

    def per_cell(mask: np.ndarray) -> np.ndarray:
        return np.bincount(cell[mask], minlength=n_d * n_k).reshape(n_d, n_k)

    failed = per_cell(keep & ~ok)
    finished = np.stack([per_cell(keep & succeeded), per_cell(failed_status)], axis=-1)
    left_out = keep & ~succeeded & ~penalized
    if left_out.any():
        notes.append(
            f"{int(left_out.sum())} run(s) failed or are missing and were left out of every test; most affected: "
            + _most_affected(per_cell(left_out), algs, dsets)
        )
    if penalized.any():
        notes.append(
            f"{int(penalized.sum())} failed run(s) count as worse than every successful run of their dataset "
            "(failures = 'penalize'): they enter every test tied for last place; most affected: "
            + _most_affected(per_cell(penalized), algs, dsets)
        )
    return _Runs(values, ok | penalized, failed, per_cell(penalized), finished)


def _most_affected(counts: np.ndarray, algs: tuple[str, ...], dsets: tuple[str, ...]) -> str:
    """The five cells with the highest counts, as 'alg on dataset (count)', and how many more."""
    n_k = len(algs)
    worst = np.argsort(-counts, axis=None, kind="stable")[:5]
    cells = [f"{algs[i % n_k]} on {dsets[i // n_k]} ({int(counts.flat[i])})" for i in worst if counts.flat[i]]
    more = int((counts > 0).sum()) - len(cells)
    return ", ".join(cells) + (f" and {more} more cell(s)" if more > 0 else "")


def _replicates_and_seeds(sub: pd.DataFrame, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer replicate and seed (-1 when missing) of the runs in the tests; InputError for a missing replicate."""
    rep = pd.to_numeric(sub["replicate"], errors="coerce").to_numpy(dtype=float)[ok]
    if np.isnan(rep).any():
        raise InputError(
            f"{int(np.isnan(rep).sum())} succeeded or failed row(s) have no integer replicate: fix the results table"
        )
    seed = pd.to_numeric(sub["seed"], errors="coerce").to_numpy(dtype=float)[ok]
    seed = np.where(np.isnan(seed), -1.0, seed).astype(np.int64)
    return rep.astype(np.int64), seed


def _paired_slots(d_ok: np.ndarray, a_ok: np.ndarray, rep: np.ndarray, seed: np.ndarray, n_d: int) -> _Slots:
    """Slots of paired runs: one per (replicate, seed) of a dataset, shared by all algorithms."""
    order = np.lexsort((a_ok, seed, rep, d_ok))
    d_s, a_s, r_s, s_s = d_ok[order], a_ok[order], rep[order], seed[order]
    same_key = np.zeros(len(order), dtype=bool)
    same_key[1:] = (d_s[1:] == d_s[:-1]) & (r_s[1:] == r_s[:-1]) & (s_s[1:] == s_s[:-1])
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = same_key[1:] & (a_s[1:] == a_s[:-1])
    key_id = np.cumsum(~same_key) - 1
    first_key = np.full(n_d, 0, dtype=np.int64)
    if len(order):
        starts = np.flatnonzero(np.r_[True, d_s[1:] != d_s[:-1]])
        first_key[d_s[starts]] = key_id[starts]
    slot = key_id - first_key[d_s] if len(order) else key_id
    return _Slots(order, d_s, a_s, r_s, slot, dup)


def _independent_slots(d_ok: np.ndarray, a_ok: np.ndarray, rep: np.ndarray, n_k: int) -> _Slots:
    """Slots of independent runs: the runs of a cell in replicate order."""
    # one integer key (cell, replicate): a single stable sort gives slots and duplicates
    r_min = int(rep.min()) if len(rep) else 0
    span = (int(rep.max()) - r_min + 1) if len(rep) else 1
    cell = d_ok * n_k + a_ok
    order = np.argsort(cell * span + (rep - r_min), kind="stable")
    d_s, a_s, r_s = d_ok[order], a_ok[order], rep[order]
    c_s = cell[order]
    same_cell = np.zeros(len(order), dtype=bool)
    same_cell[1:] = c_s[1:] == c_s[:-1]
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = same_cell[1:] & (r_s[1:] == r_s[:-1])
    idx = np.arange(len(order))
    group_start = np.maximum.accumulate(np.where(~same_cell, idx, 0)) if len(order) else idx
    return _Slots(order, d_s, a_s, r_s, idx - group_start, dup)


def _note_empty(n: np.ndarray, algs: tuple[str, ...], dsets: tuple[str, ...], metric: str, notes: list[str]) -> None:
    """Notes on algorithms and datasets without a single valid run."""
    empty_algs = [algs[j] for j in np.flatnonzero(~n.any(axis=0))]
    if empty_algs:
        notes.append(f"no valid run at all for metric {metric!r}: {_name_list(empty_algs)}")
    empty_ds = [dsets[i] for i in np.flatnonzero(~n.any(axis=1))]
    if empty_ds:
        notes.append(f"dataset(s) without any valid run for metric {metric!r}: {_name_list(empty_ds)}")

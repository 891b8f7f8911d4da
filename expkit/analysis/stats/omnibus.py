"""Per dataset, one omnibus test over all algorithms with valid runs there: Kruskal-Wallis (independent
runs) or Friedman (paired runs, blocks = the seeds where every algorithm has a value).

Datasets that include the same algorithms (and, for Friedman, the same number of complete blocks) share
one scipy call."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from expkit.analysis.stats.common import _name_list, _quiet, _sizes_text
from expkit.analysis.stats.prepare import _Prepared
from expkit.analysis.stats.rank_tests import minimal_p_friedman, minimal_p_kruskal
from expkit.analysis.stats.results import OmnibusResult

#: Datasets sharing a sample-size pattern below this count go through one nan_policy='omit' call.
_KRUSKAL_MIN_BATCH = 4


@dataclass
class _OmnibusTests:
    """Statistic and p-value per dataset (NaN until tested), and notes on samples too small for alpha."""

    stat: np.ndarray
    pval: np.ndarray
    #: text of a "too few" note -> the datasets it applies to
    too_few: dict[str, list[int]] = field(default_factory=dict)


def _per_dataset_omnibus(
    data: _Prepared, xs: np.ndarray, *, paired: bool, alpha: float, notes: list[str]
) -> tuple[OmnibusResult, ...]:
    """One :class:`OmnibusResult` per dataset, in display order; notes go to ``notes``."""
    if len(data.algorithms) < 3:
        return _pairwise_only(data)
    groups, reason, blocks = _omnibus_groups(data, paired=paired)
    n_d = len(data.datasets)
    tests = _OmnibusTests(np.full(n_d, np.nan), np.full(n_d, np.nan))
    with _quiet():
        for rows in groups.values():
            ds = np.asarray(rows)
            inc = np.flatnonzero(data.n[ds[0]] > 0)
            if paired:
                _friedman_group(data, ds, inc, alpha, tests)
            else:
                _kruskal_group(data, xs, ds, inc, alpha, tests)
    for msg, rows in tests.too_few.items():
        notes.append(f"{msg} (dataset(s) {_name_list([data.datasets[i] for i in rows])})")
    return _omnibus_results(data, tests, blocks, reason, paired=paired, alpha=alpha, notes=notes)


def _pairwise_only(data: _Prepared) -> tuple[OmnibusResult, ...]:
    """With fewer than three algorithms there is no omnibus test."""
    return tuple(
        OmnibusResult(
            d,
            None,
            None,
            None,
            False,
            tuple(a for a, c in zip(data.algorithms, data.n[i]) if c),
            None,
            "fewer than three algorithms: the pairwise test is the whole comparison",
        )
        for i, d in enumerate(data.datasets)
    )


def _omnibus_groups(data: _Prepared, *, paired: bool) -> tuple[dict[bytes, list[int]], list[str | None], np.ndarray]:
    """Datasets that share one scipy call, why a dataset gets no test, and complete blocks (paired, else -1)."""
    n_d = len(data.datasets)
    blocks = np.full(n_d, -1, dtype=np.int64)
    reason: list[str | None] = [None] * n_d
    groups: dict[bytes, list[int]] = {}
    for i in range(n_d):
        inc = np.flatnonzero(data.n[i] > 0)
        if inc.size < 3:
            reason[i] = f"only {inc.size} algorithm(s) have valid runs here: no omnibus test"
            continue
        if paired:
            complete = np.all(~np.isnan(data.x[i][inc]), axis=0)
            nb = int(complete.sum())
            blocks[i] = nb
            if nb < 2:
                reason[i] = (
                    f"{nb} seed(s) with a valid run of every algorithm: the Friedman test needs at least two "
                    "complete blocks"
                )
                continue
            key = inc.astype(np.int64).tobytes() + b"|" + np.int64(nb).tobytes()
        else:
            key = inc.astype(np.int64).tobytes()
        groups.setdefault(key, []).append(i)
    return groups, reason, blocks


def _friedman_group(data: _Prepared, ds: np.ndarray, inc: np.ndarray, alpha: float, tests: _OmnibusTests) -> None:
    """Friedman on datasets ``ds`` over algorithms ``inc``, blocks = the seeds where all have a value."""
    complete = np.all(~np.isnan(data.x[ds][:, inc, :]), axis=1)  # (G, S)
    nb = int(complete[0].sum())
    slots = np.nonzero(complete)[1].reshape(len(ds), nb)
    samples = [data.x[ds[:, None], a, slots] for a in inc]
    res = sps.friedmanchisquare(*samples, axis=-1)
    pmin = minimal_p_friedman(nb, inc.size)
    label = f"{nb} complete seed(s) are too few for the Friedman test over {inc.size} algorithms"
    tests.stat[ds] = np.atleast_1d(res.statistic)
    tests.pval[ds] = np.atleast_1d(res.pvalue)
    if pmin >= alpha:
        tests.too_few.setdefault(f"{label} at α={alpha:g}: the smallest reachable p-value is {pmin:.3g}", []).extend(
            ds.tolist()
        )


def _kruskal_group(
    data: _Prepared, xs: np.ndarray, ds: np.ndarray, inc: np.ndarray, alpha: float, tests: _OmnibusTests
) -> None:
    """Kruskal-Wallis on datasets ``ds`` over algorithms ``inc`` (``xs``: values sorted, NaN last)."""
    # H does not depend on the order of the samples, so datasets whose failed runs hit different
    # algorithms share one call once each dataset's samples are ordered by size
    sizes = data.n[ds][:, inc]
    perm = np.argsort(sizes, axis=1, kind="stable")
    sorted_sizes = np.take_along_axis(sizes, perm, axis=1)
    _, sub_of, counts = np.unique(sorted_sizes, axis=0, return_inverse=True, return_counts=True)
    sub_of = np.asarray(sub_of).reshape(-1)
    # rare size patterns: one call with NaN padding and nan_policy='omit' (scipy then loops over the
    # slices, ~0.5 ms each) is cheaper than one batched call per pattern (~2 ms each)
    rare = counts[sub_of] < _KRUSKAL_MIN_BATCH
    if rare.any():
        rows_r = ds[rare]
        width = int(data.n[rows_r][:, inc].max())
        res = sps.kruskal(*[xs[rows_r, a, :width] for a in inc], axis=-1, nan_policy="omit")
        tests.stat[rows_r] = np.atleast_1d(res.statistic)
        tests.pval[rows_r] = np.atleast_1d(res.pvalue)
    for g in range(int(sub_of.max()) + 1):
        rows_g = np.flatnonzero(sub_of == g)
        sz = sorted_sizes[rows_g[0]]
        if counts[g] >= _KRUSKAL_MIN_BATCH:
            alg_idx = inc[perm[rows_g]]  # (G, k): algorithm of the j-th smallest sample per dataset
            samples = [xs[ds[rows_g], alg_idx[:, j], : int(sz[j])] for j in range(inc.size)]
            res = sps.kruskal(*samples, axis=-1)
            tests.stat[ds[rows_g]] = np.atleast_1d(res.statistic)
            tests.pval[ds[rows_g]] = np.atleast_1d(res.pvalue)
        pmin = minimal_p_kruskal(sz.tolist())
        if pmin >= alpha:
            label = (
                f"{_sizes_text(sz)} run(s) per algorithm are too few for the Kruskal-Wallis test over "
                f"{inc.size} algorithms at α={alpha:g}: the smallest reachable p-value is {pmin:.3g}"
            )
            tests.too_few.setdefault(label, []).extend(ds[rows_g].tolist())


def _omnibus_results(
    data: _Prepared,
    tests: _OmnibusTests,
    blocks: np.ndarray,
    reason: list[str | None],
    *,
    paired: bool,
    alpha: float,
    notes: list[str],
) -> tuple[OmnibusResult, ...]:
    """The results per dataset; a statistic that is not finite means all values tie (said in a note)."""
    test_name = "friedmanchisquare" if paired else "kruskal"
    included = data.n > 0
    out: list[OmnibusResult] = []
    undefined: list[str] = []
    names_of: dict[bytes, tuple[str, ...]] = {}
    for i, d in enumerate(data.datasets):
        key = included[i].tobytes()
        if key not in names_of:
            names_of[key] = tuple(a for a, c in zip(data.algorithms, included[i]) if c)
        inc_names = names_of[key]
        nb = int(blocks[i]) if paired and blocks[i] >= 0 else None
        stat, pval = tests.stat[i], tests.pval[i]
        if reason[i] is not None:
            out.append(OmnibusResult(d, None, None, None, False, inc_names, nb, reason[i]))
            continue
        if not (np.isfinite(stat) and np.isfinite(pval)):
            undefined.append(d)
            msg = (
                "every block ties all algorithms: the Friedman statistic is undefined (no difference)"
                if paired
                else "all values on this dataset are equal: the Kruskal-Wallis statistic is undefined (no difference)"
            )
            out.append(OmnibusResult(d, test_name, None, None, False, inc_names, nb, msg))
            continue
        out.append(OmnibusResult(d, test_name, float(stat), float(pval), bool(pval < alpha), inc_names, nb, None))
    if undefined:
        notes.append(
            f"omnibus test undefined because all values tie (no difference) on dataset(s) {_name_list(undefined)}"
        )
    return tuple(out)

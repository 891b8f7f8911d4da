"""Descriptive statistics per algorithm x dataset (n, median, mean, std, quartiles, IQR) and the
quantiles of sorted rows they are computed with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _quiet
from expkit.analysis.stats.prepare import _prepare, _Prepared


def describe(
    table: pd.DataFrame, *, metric: str, algorithms: Sequence[str] | None = None, datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """Descriptive statistics per algorithm x dataset over the valid runs of ``metric``.

    Columns: algorithm, dataset, n (valid runs), n_failed (failed, missing or non-finite runs), median,
    mean, std (ddof=1), q1, q3, iqr. Rows sorted by algorithm then dataset in display order (default:
    sorted names); statistics of a cell without enough runs are NaN (std needs two).
    """
    data = _prepare(table, metric=metric, paired=False, algorithms=algorithms, datasets=datasets)
    return _descriptives_frame(data, np.sort(data.x, axis=-1))


def _sorted_quantile(xs: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolation quantile (numpy's default) of the first ``n`` values of sorted rows."""
    if xs.shape[-1] == 0:
        return np.full(n.shape, np.nan)
    pos = q * (np.maximum(n, 1) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n, 1) - 1)
    v_lo = np.take_along_axis(xs, lo[..., None], axis=-1)[..., 0]
    v_hi = np.take_along_axis(xs, hi[..., None], axis=-1)[..., 0]
    frac = pos - lo
    with _quiet():
        out = np.where(frac == 0, v_lo, v_lo + (v_hi - v_lo) * frac)
        if q == 0.5:
            out = np.where(frac == 0.5, (v_lo + v_hi) / 2.0, out)
    return np.where(n > 0, out, np.nan)


def _descriptives_frame(data: _Prepared, xs: np.ndarray) -> pd.DataFrame:
    n = data.n
    with _quiet():
        total = np.nansum(data.x, axis=-1)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        sq = np.nansum((data.x - mean[..., None]) ** 2, axis=-1)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
    q1 = _sorted_quantile(xs, n, 0.25)
    q3 = _sorted_quantile(xs, n, 0.75)
    med = _sorted_quantile(xs, n, 0.5)
    n_d, k = n.shape

    def flat(a: np.ndarray) -> np.ndarray:  # algorithm-major order
        return np.ravel(a.T)

    frame: pd.DataFrame = pd.DataFrame(
        {
            "algorithm": np.repeat(np.array(data.algorithms, dtype=object), n_d),
            "dataset": np.tile(np.array(data.datasets, dtype=object), k),
            "n": flat(n).astype(np.int64),
            "n_failed": flat(data.failed).astype(np.int64),
            "median": flat(med),
            "mean": flat(mean),
            "std": flat(std),
            "q1": flat(q1),
            "q3": flat(q3),
            "iqr": flat(q3 - q1),
        }
    )
    return frame

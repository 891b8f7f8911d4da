"""Descriptive statistics per algorithm x dataset (n, median, mean, std, quartiles, IQR) and the
quantiles of sorted rows they are computed with.

Any finite values work, up to the ends of the float range: the mean and the standard deviation of a
cell are computed on its values scaled by a power of two (so that the largest is below 1, which
makes the sums and squares safe from overflow and underflow) and scaled back, which gives exactly
the unscaled result wherever that one does not overflow. Quantiles interpolate without forming a
difference that could overflow. A statistic whose true value lies beyond the float range (the
std or IQR of values near +-1.8e308) is NaN, and :func:`float_range_notes` says so in words, as
it does when the values of a dataset differ only at the last digits floats hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _name_list, _quiet
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


#: Values of a metric beyond this magnitude get a note: their differences may overflow the float range.
NEAR_FLOAT_MAX = 1e300
#: A dataset whose values spread over less than this fraction of their magnitude (about 4,500 units in
#: the last place) gets a note: the differences between them are at the precision of floats.
PRECISION_SPREAD = 2.0**-40


def _sorted_quantile(xs: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolation quantile (numpy's default) of the first ``n`` values of sorted rows. Where
    the difference of the two neighbours overflows, their halves are interpolated instead."""
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
        overflow = ~np.isfinite(out) & np.isfinite(v_lo) & np.isfinite(v_hi)
        if overflow.any():
            halves = 2.0 * (v_lo / 2.0 + (v_hi / 2.0 - v_lo / 2.0) * frac)
            out = np.where(overflow, halves, out)
    return np.where(n > 0, out, np.nan)


def _scale_exponents(x: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (NaN = no value), the exponent ``e`` with ``max |x| < 2**e`` (0 for no value)."""
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1], dtype=np.int64)
    with _quiet():
        top = np.nanmax(np.abs(np.where(np.isfinite(x), x, np.nan)), axis=-1)
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return np.frexp(top)[1]


def robust_mean(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The mean of the valid values of each row of ``x`` (NaN padded; ``n`` valid per row), computed
    on values scaled by a power of two: finite for any finite values, and bit for bit numpy's sum
    divided by n wherever that does not overflow. Rows with an infinite value keep it."""
    return _robust_moments(x, n)[0]


def _robust_moments(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std with ddof=1)`` per row, computed scaled (see :func:`robust_mean`); a std beyond the
    float range is NaN."""
    e = _scale_exponents(x)
    with _quiet():
        scaled = np.ldexp(x, -e[..., None])
        mean = np.where(n > 0, np.nansum(scaled, axis=-1) / np.maximum(n, 1), np.nan)
        sq = np.nansum((scaled - mean[..., None]) ** 2, axis=-1)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
        mean, std = np.ldexp(mean, e), np.ldexp(std, e)
    return mean, np.where(np.isinf(std), np.nan, std)


def float_range_notes(data: _Prepared) -> list[str]:
    """Notes on values at the limits of floats: values near the largest float (statistics that
    overflow are missing), and datasets whose values differ only at the precision of floats."""
    finite = np.where(np.isfinite(data.x), data.x, np.nan)  # failed runs may stand in as +-inf
    notes: list[str] = []
    if not np.isfinite(finite).any():
        return notes
    with _quiet():
        top = float(np.nanmax(np.abs(finite)))
        if top > NEAR_FLOAT_MAX:
            notes.append(
                f"values of {data.metric} reach {top:.3g}, near the largest float (1.8e308), the edge of the float "
                "range: means and standard deviations are computed scaled, a std, IQR or difference of values "
                "beyond the float range is reported as missing, and paired differences that overflow tie"
            )
        hi, lo = np.nanmax(finite, axis=(1, 2)), np.nanmin(finite, axis=(1, 2))
        size = np.fmax(np.abs(hi), np.abs(lo))
        close = (hi > lo) & ((hi / 2.0 - lo / 2.0) < size * (PRECISION_SPREAD / 2.0))
    if close.any():
        names = _name_list([d for d, c in zip(data.datasets, close) if c])
        notes.append(
            f"values of {data.metric} on dataset(s) {names} differ only in their last digits (relative spread "
            f"below {PRECISION_SPREAD:.1g}), at the limit of float precision (about 16 significant digits): "
            "their order may be rounding, not a real difference"
        )
    return notes


def _descriptives_frame(data: _Prepared, xs: np.ndarray) -> pd.DataFrame:
    n = data.n
    mean, std = _robust_moments(data.x, n)
    q1 = _sorted_quantile(xs, n, 0.25)
    q3 = _sorted_quantile(xs, n, 0.75)
    med = _sorted_quantile(xs, n, 0.5)
    with _quiet():
        iqr = q3 - q1
    iqr = np.where(np.isinf(iqr) & np.isfinite(q1) & np.isfinite(q3), np.nan, iqr)  # beyond the float range
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
            "iqr": flat(iqr),
        }
    )
    return frame

"""Success rates per dataset: for every pair of algorithms, Fisher's exact test of their proportions of
failed runs (``scipy.stats.fisher_exact`` on the 2 x 2 table of succeeded and failed runs, two-sided),
Holm-corrected within the dataset, next to the metric tests; and the warning that goes with
``failures = 'exclude'`` when failure rates differ (leaving out an algorithm's failures hides its
hardest runs and biases the comparison in its favour)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit.analysis.stats.common import _name_list, _quiet
from expkit.analysis.stats.formulas import _holm_grouped
from expkit.analysis.stats.prepare import _Prepared

#: Columns of :attr:`~expkit.analysis.stats.analysis.Analysis.success_rates`.
SUCCESS_COLUMNS = (
    "dataset",
    "a",
    "b",
    "succeeded_a",
    "failed_a",
    "succeeded_b",
    "failed_b",
    "p",
    "p_holm",
    "significant",
    "more_reliable",
)


def _success_rates(data: _Prepared, *, alpha: float, policy: str, notes: list[str]) -> pd.DataFrame:
    """One row per dataset x pair (a before b in display order): finished runs of each side, Fisher's
    exact p (1 when neither failed), Holm within the dataset, and the algorithm that fails less often
    when the difference is significant. Pairs where one side has no finished run are not tested (NaN)."""
    k = len(data.algorithms)
    ia, ib = np.triu_indices(k, 1)
    n_d = len(data.datasets)
    d_idx = np.repeat(np.arange(n_d), len(ia))
    a_idx, b_idx = np.tile(ia, n_d), np.tile(ib, n_d)
    ok, bad = data.finished[..., 0], data.finished[..., 1]
    s_a, f_a, s_b, f_b = ok[d_idx, a_idx], bad[d_idx, a_idx], ok[d_idx, b_idx], bad[d_idx, b_idx]
    testable = (s_a + f_a > 0) & (s_b + f_b > 0)
    p = np.where(testable, 1.0, np.nan)
    need = np.flatnonzero(testable & ((f_a > 0) | (f_b > 0)))
    if need.size:
        tables = np.stack([s_a[need], f_a[need], s_b[need], f_b[need]], axis=-1)
        unique, inverse = np.unique(tables, axis=0, return_inverse=True)
        with _quiet():
            p_unique = np.array([sps.fisher_exact([[t[0], t[1]], [t[2], t[3]]]).pvalue for t in unique])
        p[need] = np.minimum(1.0, p_unique[np.asarray(inverse).reshape(-1)])
    p_holm = _holm_grouped(p, d_idx, n_d)
    significant = np.nan_to_num(p_holm, nan=1.0) < alpha
    algs = np.array(data.algorithms, dtype=object)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_a, rate_b = f_a / np.maximum(s_a + f_a, 1), f_b / np.maximum(s_b + f_b, 1)
    more = np.full(len(p), None, dtype=object)
    more[significant & (rate_a < rate_b)] = algs[a_idx[significant & (rate_a < rate_b)]]
    more[significant & (rate_b < rate_a)] = algs[b_idx[significant & (rate_b < rate_a)]]
    frame: pd.DataFrame = pd.DataFrame(
        {
            "dataset": np.array(data.datasets, dtype=object)[d_idx] if len(d_idx) else np.empty(0, dtype=object),
            "a": algs[a_idx] if len(a_idx) else np.empty(0, dtype=object),
            "b": algs[b_idx] if len(b_idx) else np.empty(0, dtype=object),
            "succeeded_a": s_a.astype(np.int64),
            "failed_a": f_a.astype(np.int64),
            "succeeded_b": s_b.astype(np.int64),
            "failed_b": f_b.astype(np.int64),
            "p": p,
            "p_holm": p_holm,
            "significant": significant,
            "more_reliable": more,
        },
        columns=list(SUCCESS_COLUMNS),
    )
    _note_success_rates(data, frame, policy=policy, notes=notes)
    return frame


def _note_success_rates(data: _Prepared, frame: pd.DataFrame, *, policy: str, notes: list[str]) -> None:
    """Notes on significant differences in success rates, and the bias warning under 'exclude'."""
    sig = frame[frame["significant"]]
    if len(sig):
        shown = [
            f"{r.more_reliable} fails less often than {r.b if r.more_reliable == r.a else r.a} on {r.dataset} "
            f"(Fisher p_holm = {r.p_holm:.3g})"
            for r in sig.head(5).itertuples()
        ]
        more = f" and {len(sig) - 5} more" if len(sig) > 5 else ""
        notes.append(
            f"success rates differ significantly in {len(sig)} pair(s) (Fisher's exact test, Holm per dataset): "
            + "; ".join(shown)
            + more
        )
    if policy != "exclude":
        return
    ok, bad = data.finished[..., 0], data.finished[..., 1]
    total = ok + bad
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(total > 0, bad / np.maximum(total, 1), np.nan)
    spread = np.nanmax(rate, axis=1, initial=0.0) - np.nanmin(np.where(np.isnan(rate), np.inf, rate), axis=1)
    differ = np.flatnonzero((spread > 0) & np.isfinite(spread))
    if differ.size:
        notes.append(
            "WARNING: failure rates differ between algorithms on dataset(s) "
            f"{_name_list([data.datasets[i] for i in differ])}, and failures = 'exclude' leaves the failed runs "
            "out: an algorithm that fails on its hardest runs then looks better than it is. Use failures = "
            "'penalize' (the default) to count a failed run as worse than every successful one"
        )

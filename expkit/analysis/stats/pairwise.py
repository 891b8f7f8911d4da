"""Per dataset, every pair of algorithms: Mann-Whitney U (independent runs) or the Wilcoxon signed-rank
test (runs paired by replicate and seed), the effect size (Vargha-Delaney A12 for independent runs, the
matched-pairs rank-biserial correlation for paired runs) with its confidence interval, the
Hodges-Lehmann shift a - b with its interval, the median difference, Holm's correction across the pairs
of the dataset and the winner if significant (paired runs: the side the signed ranks favour); plus the
notes that explain untested pairs, too small samples, ties and identical samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from expkit.analysis.stats.common import _name_list, _quiet
from expkit.analysis.stats.conventions import _PAIR_COLUMNS
from expkit.analysis.stats.effects import (
    Intervals,
    a12_interval,
    hl_paired,
    hl_two_sample,
    rank_biserial_interval,
    rank_biserial_paired,
)
from expkit.analysis.stats.formulas import _holm_grouped, _magnitude
from expkit.analysis.stats.prepare import _Prepared
from expkit.analysis.stats.rank_tests import (
    _MWU_EXACT_MAX,
    _WILCOXON_EXACT_MAX,
    _WILCOXON_PERMUTATION_MAX,
    _mwu_batch,
    _row_chunks,
    _wilcoxon_batch,
    minimal_p_mannwhitneyu,
    minimal_p_wilcoxon,
)


class _PairIndex(NamedTuple):
    """Row r of the pairwise table compares algorithms ``a[r]`` < ``b[r]`` (display order) on ``dataset[r]``."""

    dataset: np.ndarray
    a: np.ndarray
    b: np.ndarray


@dataclass
class _PairTests:
    """What the tests found, per row of the pairwise table (NaN or None where a pair was not tested)."""

    n_a: np.ndarray
    n_b: np.ndarray
    stat: np.ndarray
    p: np.ndarray
    u_larger: np.ndarray  # U of a / (n_a n_b): P(a > b) + 0.5 P(a = b)
    method: np.ndarray
    note: np.ndarray
    special: np.ndarray  # identical samples / all-zero differences
    #: paired: (R+ - R-) / (n(n+1)/2), > 0 = a larger, and its interval (NaN for independent runs)
    rb: np.ndarray
    rb_low: np.ndarray
    rb_high: np.ndarray
    #: Hodges-Lehmann shift a - b in the metric's units, its interval and the confidence it achieves
    shift: np.ndarray
    shift_low: np.ndarray
    shift_high: np.ndarray
    shift_conf: np.ndarray
    shift_method: np.ndarray
    #: sample sizes (n_a, n_b) too small to reach alpha -> the dataset of each row tested with them
    too_few: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    @classmethod
    def untested(cls, n_a: np.ndarray, n_b: np.ndarray) -> _PairTests:
        """No pair tested yet; ``n_a`` and ``n_b`` are the sample sizes the tests will use."""
        total = len(n_a)

        def nan() -> np.ndarray:
            return np.full(total, np.nan)

        return cls(
            n_a=n_a,
            n_b=n_b,
            stat=nan(),
            p=nan(),
            u_larger=nan(),
            method=np.full(total, None, dtype=object),
            note=np.full(total, None, dtype=object),
            special=np.zeros(total, dtype=bool),
            rb=nan(),
            rb_low=nan(),
            rb_high=nan(),
            shift=nan(),
            shift_low=nan(),
            shift_high=nan(),
            shift_conf=nan(),
            shift_method=np.full(total, None, dtype=object),
        )

    def set_shift(self, idx: np.ndarray, shift: Intervals) -> None:
        """Store the Hodges-Lehmann shifts of rows ``idx``."""
        self.shift[idx], self.shift_low[idx], self.shift_high[idx] = shift.estimate, shift.low, shift.high
        self.shift_conf[idx] = shift.confidence
        self.shift_method[idx] = np.where(shift.exact, "exact", "asymptotic")

    @property
    def testable(self) -> np.ndarray:
        """Rows where both algorithms have runs to compare."""
        return (self.n_a > 0) & (self.n_b > 0)


class _Decision(NamedTuple):
    """Holm-adjusted p-values, effect sizes oriented by the goal, medians and the verdict of each row."""

    p_holm: np.ndarray
    a12: np.ndarray
    a12_low: np.ndarray
    a12_high: np.ndarray
    rb: np.ndarray
    rb_low: np.ndarray
    rb_high: np.ndarray
    significant: np.ndarray
    winner: np.ndarray
    median_a: np.ndarray
    median_b: np.ndarray
    median_diff: np.ndarray
    undecided: np.ndarray  # significant without a direction


def _per_dataset_pairs(
    data: _Prepared,
    xs: np.ndarray,
    medians: np.ndarray,
    *,
    sign: float,
    paired: bool,
    alpha: float,
    notes: list[str],
    intervals: bool = True,
) -> pd.DataFrame:
    """The pairwise table (columns :data:`_PAIR_COLUMNS`), one row per dataset x pair; notes go to ``notes``.
    ``intervals``: compute the Hodges-Lehmann shifts and the effect sizes' confidence intervals."""
    k = len(data.algorithms)
    ia, ib = np.triu_indices(k, 1)
    n_d = len(data.datasets)
    index = _PairIndex(np.repeat(np.arange(n_d), len(ia)), np.tile(ia, n_d), np.tile(ib, n_d))
    with _quiet():
        if paired:
            tests = _wilcoxon_pairs(data, index, alpha, intervals)
        else:
            tests = _mann_whitney_pairs(data, xs, index, alpha, intervals)
    _note_untested(data, index, tests, paired=paired, notes=notes)
    _note_small_samples(tests.too_few, data.datasets, paired=paired, alpha=alpha, notes=notes)
    decision = _decide(data, index, tests, medians, sign=sign, alpha=alpha, paired=paired, intervals=intervals)
    _note_holm_out_of_reach(data, index, tests, paired=paired, alpha=alpha, notes=notes)
    _note_ties(xs, data, paired=paired, method=tests.method, n_a=tests.n_a, n_b=tests.n_b, notes=notes)
    _note_no_difference(data, index, tests, paired=paired, notes=notes)
    if decision.undecided.any():
        what = "R+ = R-" if paired else "A12 = 0.5 and equal medians"
        notes.append(f"{int(decision.undecided.sum())} significant pair(s) have {what}: no winner named")
    if intervals:
        _note_infinite_shifts(data, index, tests, notes)
    return _pairs_frame(data, index, tests, decision, paired=paired)


# ---------------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------------


def _wilcoxon_pairs(data: _Prepared, index: _PairIndex, alpha: float, intervals: bool) -> _PairTests:
    """Wilcoxon signed-rank tests on the runs paired by (replicate, seed), one scipy call per sample size;
    the rank-biserial correlation (and with ``intervals`` its interval and the Hodges-Lehmann shift)."""
    width = data.x.shape[-1]
    x_a = data.x[index.dataset, index.a, :] if len(index.dataset) else np.empty((0, width))
    x_b = data.x[index.dataset, index.b, :] if len(index.dataset) else np.empty((0, width))
    both = ~np.isnan(x_a) & ~np.isnan(x_b)
    n_a = both.sum(axis=-1)
    tests = _PairTests.untested(n_a, n_a.copy())
    diff = np.where(x_a == x_b, 0.0, x_a - x_b)  # two failed runs (both -inf or +inf) are a tie, not NaN
    keys = np.where(tests.testable, n_a, -1)
    for size in np.unique(keys[tests.testable]):
        idx = np.flatnonzero(keys == size)
        block = diff[idx]
        if size < block.shape[-1]:
            block = np.sort(block, axis=-1)[:, :size]  # NaN last; the tests are order-invariant
        st, pv, meth = _wilcoxon_batch(block)
        tests.stat[idx], tests.p[idx], tests.method[idx] = st, pv, meth
        tests.rb[idx] = rank_biserial_paired(block)
        if intervals:
            tests.rb_low[idx], tests.rb_high[idx] = rank_biserial_interval(block, tests.rb[idx], alpha)
            tests.set_shift(idx, hl_paired(block, alpha))
        if minimal_p_wilcoxon(int(size)) >= alpha:
            tests.too_few.setdefault((int(size), int(size)), []).extend(np.unique(index.dataset[idx]).tolist())
        zero_all = np.all(block == 0, axis=-1)
        if zero_all.any():
            tests.note[idx[zero_all]] = "all paired differences are zero: no difference (p = 1)"
            tests.special[idx[zero_all]] = True
    _paired_a12(x_a, x_b, both, tests)
    return tests


def _paired_a12(x_a: np.ndarray, x_b: np.ndarray, both: np.ndarray, tests: _PairTests) -> None:
    """A12 on the paired values (pairing ignored), by direct comparison of all run pairs."""
    a_masked = np.where(both, x_a, np.nan)
    b_masked = np.where(both, x_b, np.nan)
    for chunk in _row_chunks(len(x_a), max(1, x_a.shape[-1] ** 2)):
        ga, gb = a_masked[chunk][:, :, None], b_masked[chunk][:, None, :]
        greater = np.sum(ga > gb, axis=(1, 2))
        equal = np.sum(ga == gb, axis=(1, 2))
        tests.u_larger[chunk] = (greater + 0.5 * equal) / np.maximum(tests.n_a[chunk] * tests.n_b[chunk], 1)
    tests.u_larger[~tests.testable] = np.nan


def _mann_whitney_pairs(
    data: _Prepared, xs: np.ndarray, index: _PairIndex, alpha: float, intervals: bool
) -> _PairTests:
    """Mann-Whitney U tests on the independent runs, one scipy call per pair of sample sizes (and with
    ``intervals`` the Hodges-Lehmann shift of each pair)."""
    tests = _PairTests.untested(data.n[index.dataset, index.a], data.n[index.dataset, index.b])
    n_a, n_b = tests.n_a, tests.n_b
    keys = np.where(tests.testable, n_a * (xs.shape[-1] + 1) + n_b, -1)
    for key in np.unique(keys[tests.testable]):
        idx = np.flatnonzero(keys == key)
        s_a, s_b = int(n_a[idx[0]]), int(n_b[idx[0]])
        block_a = xs[index.dataset[idx], index.a[idx], :s_a]
        block_b = xs[index.dataset[idx], index.b[idx], :s_b]
        u, pv, meth = _mwu_batch(block_a, block_b)
        tests.stat[idx], tests.p[idx], tests.method[idx] = u, pv, meth
        tests.u_larger[idx] = u / (s_a * s_b)
        if intervals:
            tests.set_shift(idx, hl_two_sample(block_a, block_b, alpha))
        if minimal_p_mannwhitneyu(s_a, s_b) >= alpha:
            tests.too_few.setdefault((s_a, s_b), []).extend(np.unique(index.dataset[idx]).tolist())
        half = np.flatnonzero(u == s_a * s_b / 2.0)
        if half.size and s_a == s_b:
            same = np.all(block_a[half] == block_b[half], axis=-1)  # both sorted
            tests.note[idx[half[same]]] = "identical samples: no difference (p = 1)"
            tests.special[idx[half[same]]] = True
    return tests


def _decide(
    data: _Prepared,
    index: _PairIndex,
    tests: _PairTests,
    medians: np.ndarray,
    *,
    sign: float,
    alpha: float,
    paired: bool,
    intervals: bool,
) -> _Decision:
    """Holm within each dataset, effect sizes oriented by the goal (``sign`` +1 maximise, -1 minimise),
    the winner of each significant pair; notes rows without a direction.

    The direction of a paired comparison is the side the signed ranks favour (R+ vs R-, the statistic
    the Wilcoxon test decides on); of an independent one the side A12 favours (if A12 = 0.5, the better
    median)."""
    total = len(index.dataset)
    p_holm = _holm_grouped(tests.p, index.dataset, len(data.datasets))
    a12 = tests.u_larger if sign > 0 else 1.0 - tests.u_larger
    a12_low, a12_high = np.full(total, np.nan), np.full(total, np.nan)
    if intervals and not paired:
        lo, hi = a12_interval(tests.u_larger, tests.n_a, tests.n_b, alpha)
        a12_low, a12_high = (lo, hi) if sign > 0 else (1.0 - hi, 1.0 - lo)
    rb = sign * tests.rb
    rb_low, rb_high = (tests.rb_low, tests.rb_high) if sign > 0 else (-tests.rb_high, -tests.rb_low)
    significant = np.nan_to_num(p_holm, nan=1.0) < alpha
    winner = np.full(total, None, dtype=object)
    med_a = medians[index.dataset, index.a] if total else np.empty(0)
    med_b = medians[index.dataset, index.b] if total else np.empty(0)
    with np.errstate(invalid="ignore"):
        med_diff = med_a - med_b
    if paired:
        a_better, b_better = significant & (rb > 0), significant & (rb < 0)
    else:
        a_better = significant & ((a12 > 0.5) | ((a12 == 0.5) & (sign * med_diff > 0)))
        b_better = significant & ((a12 < 0.5) | ((a12 == 0.5) & (sign * med_diff < 0)))
    alg_arr = np.array(data.algorithms, dtype=object)
    winner[a_better] = alg_arr[index.a[a_better]]
    winner[b_better] = alg_arr[index.b[b_better]]
    undecided = significant & ~a_better & ~b_better
    tests.note[undecided] = (
        "significant, but R+ = R-: no direction, no winner"
        if paired
        else "significant, but A12 = 0.5 and equal medians: no direction, no winner"
    )
    return _Decision(
        p_holm, a12, a12_low, a12_high, rb, rb_low, rb_high, significant, winner, med_a, med_b, med_diff, undecided
    )


def _pairs_frame(
    data: _Prepared, index: _PairIndex, tests: _PairTests, decision: _Decision, *, paired: bool
) -> pd.DataFrame:
    """The pairwise table in the column order of :data:`_PAIR_COLUMNS`."""
    total = len(index.dataset)
    alg_arr = np.array(data.algorithms, dtype=object)
    test = np.full(total, None, dtype=object)
    test[tests.testable] = "wilcoxon" if paired else "mannwhitneyu"
    effect = np.full(total, None, dtype=object)
    effect[tests.testable] = "rank_biserial" if paired else "a12"
    # the magnitude of the design's effect size: rank-biserial r on A12's scale, (1 + r) / 2
    magnitude = _magnitude((1.0 + decision.rb) / 2.0) if paired else _magnitude(decision.a12)
    frame: pd.DataFrame = pd.DataFrame(
        {
            "dataset": np.array(data.datasets, dtype=object)[index.dataset] if total else np.empty(0, dtype=object),
            "a": alg_arr[index.a] if total else np.empty(0, dtype=object),
            "b": alg_arr[index.b] if total else np.empty(0, dtype=object),
            "test": test,
            "method": tests.method,
            "n_a": tests.n_a.astype(np.int64),
            "n_b": tests.n_b.astype(np.int64),
            "statistic": tests.stat,
            "p": tests.p,
            "p_holm": decision.p_holm,
            "effect": effect,
            "a12": decision.a12,
            "a12_low": decision.a12_low,
            "a12_high": decision.a12_high,
            "rank_biserial": decision.rb,
            "rank_biserial_low": decision.rb_low,
            "rank_biserial_high": decision.rb_high,
            "magnitude": magnitude,
            "shift_hl": tests.shift,
            "shift_low": tests.shift_low,
            "shift_high": tests.shift_high,
            "shift_confidence": tests.shift_conf,
            "shift_method": tests.shift_method,
            "median_a": decision.median_a,
            "median_b": decision.median_b,
            "median_diff": decision.median_diff,
            "winner": decision.winner,
            "significant": decision.significant,
            "note": tests.note,
        },
        columns=list(_PAIR_COLUMNS),
    )
    return frame


# ---------------------------------------------------------------------------------------------------
# notes
# ---------------------------------------------------------------------------------------------------


def _note_untested(data: _Prepared, index: _PairIndex, tests: _PairTests, *, paired: bool, notes: list[str]) -> None:
    """Why each untested pair was not tested, a note on how many, and on paired runs without a partner."""
    algs, n = data.algorithms, data.n
    untested = ~tests.testable
    for i in np.flatnonzero(untested):
        d, a, b = index.dataset[i], index.a[i], index.b[i]
        if paired and n[d, a] and n[d, b]:
            tests.note[i] = f"no seed with valid runs of both {algs[a]} and {algs[b]}: not tested"
        else:
            lacking = [nm for nm, c in ((algs[a], n[d, a]), (algs[b], n[d, b])) if c == 0]
            tests.note[i] = f"no valid run of {' and '.join(lacking)} on this dataset: not tested"
    if untested.any():
        bad = sorted(set(index.dataset[untested].tolist()))
        notes.append(
            f"{int(untested.sum())} pair(s) could not be tested for lack of valid runs "
            f"(dataset(s) {_name_list([data.datasets[i] for i in bad])}); they are left out of Holm's correction"
        )
    if paired and tests.testable.any():
        short = tests.testable & ((tests.n_a < n[index.dataset, index.a]) | (tests.n_b < n[index.dataset, index.b]))
        if short.any():
            notes.append(
                f"{int(short.sum())} pair(s) have runs without a partner of the same seed; the Wilcoxon "
                "test uses only the seeds where both algorithms have a valid run"
            )


def _note_infinite_shifts(data: _Prepared, index: _PairIndex, tests: _PairTests, notes: list[str]) -> None:
    """A note on tested pairs whose Hodges-Lehmann shift is not finite (failed runs counted as worst)."""
    lost = tests.testable & np.isnan(tests.shift) & ~np.isnan(tests.p)
    if not lost.any():
        return
    tests.note[lost & pd.isna(tests.note)] = (
        "shift not finite: failed runs (counted as worst) dominate the differences, or they exceed the float range"
    )
    names = _name_list([data.datasets[i] for i in np.unique(index.dataset[lost])])
    notes.append(
        f"{int(lost.sum())} pair(s) have no finite Hodges-Lehmann shift: failed runs, counted as worse than every "
        f"successful run, dominate the differences, or the differences exceed the float range (dataset(s) {names})"
    )


def _note_holm_out_of_reach(
    data: _Prepared, index: _PairIndex, tests: _PairTests, *, paired: bool, alpha: float, notes: list[str]
) -> None:
    """A note on datasets where Holm's correction makes every pair unable to reach significance."""
    n_d, k = len(data.datasets), len(data.algorithms)
    if not (len(index.dataset) and k > 2):
        return
    testable = tests.testable
    m = np.bincount(index.dataset[testable], minlength=n_d)
    best_p = np.full(n_d, np.inf)
    if testable.any():
        pmin = _vector_min_p(tests.n_a[testable], tests.n_b[testable], paired)
        np.minimum.at(best_p, index.dataset[testable], pmin)
    hopeless = (m > 1) & (best_p < alpha)  # tested pairs exist and one test alone could reject
    hopeless[hopeless] = best_p[hopeless] * m[hopeless] >= alpha
    if hopeless.any():
        names = [data.datasets[i] for i in np.flatnonzero(hopeless)]
        mm = int(m[hopeless].max())
        notes.append(
            f"Holm's correction over {mm} pairs per dataset needs p < {alpha / mm:.3g} for a first rejection, but "
            f"the smallest p-value these sample sizes allow is {float(best_p[hopeless].min()):.3g}: no pair can be "
            f"significant on dataset(s) {_name_list(names)}; run more replicates"
        )


def _note_no_difference(
    data: _Prepared, index: _PairIndex, tests: _PairTests, *, paired: bool, notes: list[str]
) -> None:
    """A note on pairs with identical samples (independent) or only zero differences (paired)."""
    special = tests.special
    if not special.any():
        return
    names = _name_list([data.datasets[i] for i in np.unique(index.dataset[special])])
    if paired:
        notes.append(
            f"{int(special.sum())} pair(s) have only zero paired differences: p = 1, no winner (dataset(s) {names})"
        )
    else:
        notes.append(
            f"{int(special.sum())} pair(s) have identical samples (same values): p = 1, A12 = 0.5 (dataset(s) {names})"
        )


def _note_small_samples(
    too_few: dict[tuple[int, int], list[int]], dsets: tuple[str, ...], *, paired: bool, alpha: float, notes: list[str]
) -> None:
    for (s_a, s_b), rows in sorted(too_few.items()):
        names = [dsets[i] for i in sorted(set(rows))]
        if paired:
            pmin = minimal_p_wilcoxon(s_a)
            notes.append(
                f"{s_a} paired replicate(s) are too few for a test at α={alpha:g}: the smallest p-value the "
                f"Wilcoxon signed-rank test can reach with {s_a} pairs is {pmin:.3g}, so no pair can be "
                f"significant (dataset(s) {_name_list(names)}); run more replicates"
            )
        else:
            pmin = minimal_p_mannwhitneyu(s_a, s_b)
            sizes = f"{s_a}" if s_a == s_b else f"{min(s_a, s_b)} and {max(s_a, s_b)}"
            notes.append(
                f"{sizes} replicate(s) are too few for a test at α={alpha:g}: the smallest p-value the "
                f"Mann-Whitney U test can reach with {s_a} vs {s_b} runs is {pmin:.3g}, so such pairs cannot "
                f"be significant (dataset(s) {_name_list(names)}); run more replicates"
            )


def _note_ties(
    xs: np.ndarray,
    data: _Prepared,
    *,
    paired: bool,
    method: np.ndarray,
    n_a: np.ndarray,
    n_b: np.ndarray,
    notes: list[str],
) -> None:
    if xs.size == 0:
        return
    if paired:
        permuted = method == "permutation"
        forced = (method == "asymptotic") & (n_a <= _WILCOXON_EXACT_MAX)
        if permuted.any() or forced.any():
            how = []
            if permuted.any():
                how.append(
                    f"{int(permuted.sum())} with at most {_WILCOXON_PERMUTATION_MAX} pairs get exact p-values "
                    "from all 2^n sign flips given the tied ranks (scipy's permutation test)"
                )
            if forced.any():
                how.append(
                    f"{int(forced.sum())} with more pairs use the tie-corrected normal approximation instead of "
                    "the exact distribution"
                )
            notes.append(
                f"{int(permuted.sum() + forced.sum())} pair(s) have zero or tied paired differences: ranks "
                "are averaged, zero differences split between R+ and R-; " + "; ".join(how)
            )
        return
    flat = xs.reshape(xs.shape[0], -1)
    s = np.sort(flat, axis=-1)
    tied = np.any((s[:, 1:] == s[:, :-1]) & ~np.isnan(s[:, 1:]), axis=-1)
    if not tied.any():
        return
    names = [data.datasets[i] for i in np.flatnonzero(tied)]
    text = (
        f"tied values occur on dataset(s) {_name_list(names)}: they get average ranks and the normal "
        "approximation is tie-corrected"
    )
    forced = (method == "asymptotic") & (np.minimum(n_a, n_b) <= _MWU_EXACT_MAX)
    if forced.any():
        text += (
            f"; {int(forced.sum())} small pair(s) with ties used the normal approximation instead of the exact "
            "test (scipy's choice)"
        )
    notes.append(text)


def _vector_min_p(n_a: np.ndarray, n_b: np.ndarray, paired: bool) -> np.ndarray:
    width = int(max(n_a.max(initial=0), n_b.max(initial=0))) + 1
    keys, inverse = np.unique(n_a.astype(np.int64) * width + n_b, return_inverse=True)
    mins = np.array(
        [
            minimal_p_wilcoxon(int(key // width))
            if paired
            else minimal_p_mannwhitneyu(int(key // width), int(key % width))
            for key in keys
        ]
    )
    return mins[np.asarray(inverse).reshape(-1)]

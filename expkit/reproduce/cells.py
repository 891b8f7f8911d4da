"""One algorithm x dataset cell of a reproduction check: the tests and the verdict in words.

* **different?** two-sided Mann-Whitney U and two-sample Kolmogorov-Smirnov tests of the original
  runs against the re-runs (Holm-corrected by the caller over all tests of all compared cells);
* **equivalent?** the TOST on A12 of :mod:`expkit.reproduce.equivalence`, paired by seed when the
  seeds agree;
* **verdict**: *not reproduced* when significantly different; *reproduced* when equivalent, not
  different and the re-run has no more failed runs; *inconclusive* otherwise, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit.analysis.stats import a12_magnitude
from expkit.core.fmt import format_number
from expkit.reproduce.comparison import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    CellComparison,
    finite_or_none,
)
from expkit.reproduce.equivalence import Equivalence, equivalence_test, ideal_halfwidth, t_quantile


@dataclass(frozen=True)
class CellTests:
    """The tests of one cell before the Holm correction: raw p-values and the equivalence test."""

    algorithm: str
    dataset: str
    n_original: int
    n_rerun: int
    paired: bool
    median_original: float | None
    median_rerun: float | None
    mwu_p: float | None
    ks_p: float | None
    ks_statistic: float | None
    equivalence: Equivalence | None
    equivalence_error: str | None  # why there is no equivalence test
    seed_mismatch: bool  # the same replicates have different seeds on the two sides
    failed_original: int = 0
    failed_rerun: int = 0


# ---------------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------------


def cell_tests(
    algorithm: str,
    dataset: str,
    go: pd.DataFrame,
    gr: pd.DataFrame,
    *,
    goal: str,
    alpha: float,
    margin: float,
    failed: tuple[int, int] = (0, 0),
) -> CellTests:
    """Test the cell's valid original runs ``go`` against its valid re-runs ``gr`` (``failed``: the
    failed runs of each side, for the verdict)."""
    xo = go["value"].to_numpy(dtype=float)
    xr = gr["value"].to_numpy(dtype=float)
    seeds_o = dict(zip(go["replicate"].astype(int), go["seed"].astype(int)))
    seeds_r = dict(zip(gr["replicate"].astype(int), gr["seed"].astype(int)))
    common = sorted(set(seeds_o) & set(seeds_r))
    paired = bool(common) and all(seeds_o[r] == seeds_r[r] for r in common)
    mwu_p, ks_p, ks_stat = _difference_tests(xo, xr)
    if paired:
        vo = dict(zip(go["replicate"].astype(int), xo))
        vr = dict(zip(gr["replicate"].astype(int), xr))
        a, b = [vo[r] for r in common], [vr[r] for r in common]
    else:
        a, b = list(xo), list(xr)
    eq: Equivalence | None = None
    eq_error: str | None = None
    if len(a) >= 2 and len(b) >= 2:
        eq = equivalence_test(a, b, goal=goal, alpha=alpha, margin=margin, paired=paired)
    else:
        eq_error = (
            f"too few valid runs to compare ({len(xo)} original, {len(xr)} re-run"
            + (f", {len(common)} pairs" if paired else "")
            + "; the tests need at least 2 on each side)"
        )
    return CellTests(
        algorithm=algorithm,
        dataset=dataset,
        n_original=len(xo),
        n_rerun=len(xr),
        paired=paired,
        median_original=float(np.median(xo)) if len(xo) else None,
        median_rerun=float(np.median(xr)) if len(xr) else None,
        mwu_p=mwu_p,
        ks_p=ks_p,
        ks_statistic=ks_stat,
        equivalence=eq,
        equivalence_error=eq_error,
        seed_mismatch=bool(common) and not paired,
        failed_original=failed[0],
        failed_rerun=failed[1],
    )


def _difference_tests(xo: np.ndarray, xr: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """(Mann-Whitney p, KS p, KS statistic), two-sided; all None when a side has no value."""
    if not (len(xo) and len(xr)):
        return None, None, None
    with np.errstate(all="ignore"):
        mwu_p = finite_or_none(sps.mannwhitneyu(xo, xr, alternative="two-sided").pvalue)
        ks = sps.ks_2samp(xo, xr)
    return mwu_p, finite_or_none(ks.pvalue), finite_or_none(ks.statistic)


# ---------------------------------------------------------------------------------------------------
# the verdict
# ---------------------------------------------------------------------------------------------------


def cell_verdict(
    r: CellTests, mwu_h: float | None, ks_h: float | None, *, alpha: float, margin: float
) -> CellComparison:
    """The cell's verdict and its reason in words, from its tests and the Holm-adjusted p-values."""
    eq = r.equivalence
    different = bool((mwu_h is not None and mwu_h < alpha) or (ks_h is not None and ks_h < alpha))
    if different:
        verdict, reason = NOT_REPRODUCED, _different_reason(r, mwu_h, ks_h, alpha=alpha, margin=margin)
    elif eq is None:
        verdict, reason = INCONCLUSIVE, r.equivalence_error or "no equivalence test"
    elif not eq.feasible:
        verdict, reason = INCONCLUSIVE, _too_few_reason(r, eq, alpha=alpha, margin=margin)
    elif eq.equivalent and r.failed_rerun > r.failed_original:
        verdict = INCONCLUSIVE
        reason = (
            f"the values are equivalent (A12 = {eq.a12:.2f}, {100 * (1 - 2 * alpha):g}% interval "
            f"[{eq.ci_low:.2f}, {eq.ci_high:.2f}]), but {r.failed_rerun} re-run(s) failed against "
            f"{r.failed_original} in the original"
        )
    elif eq.equivalent:
        verdict, reason = REPRODUCED, _equivalent_reason(r, eq, alpha=alpha, margin=margin)
    else:
        verdict, reason = INCONCLUSIVE, _undecided_reason(r, eq, alpha=alpha, margin=margin)
    if r.seed_mismatch:
        reason += "; note: the seeds of the two runs differ for the same replicates, so they are not paired"
    return CellComparison(
        algorithm=r.algorithm,
        dataset=r.dataset,
        n_original=r.n_original,
        n_rerun=r.n_rerun,
        failed_original=r.failed_original,
        failed_rerun=r.failed_rerun,
        paired=bool(r.paired),
        median_original=r.median_original,
        median_rerun=r.median_rerun,
        equivalence=eq,
        mwu_p=r.mwu_p,
        mwu_p_holm=mwu_h,
        ks_statistic=r.ks_statistic,
        ks_p=r.ks_p,
        ks_p_holm=ks_h,
        different=different,
        verdict=verdict,
        reason=reason,
    )


def _design(r: CellTests) -> str:
    eq = r.equivalence
    if eq is not None and eq.paired:
        return f"paired by seed, {eq.n} pairs"
    return f"independent runs, {r.n_original} original and {r.n_rerun} re-run"


def _medians(r: CellTests) -> str:
    if r.median_original is None or r.median_rerun is None:
        return ""
    return f"median {format_number(r.median_original)} → {format_number(r.median_rerun)}"


def _different_reason(r: CellTests, mwu_h: float | None, ks_h: float | None, *, alpha: float, margin: float) -> str:
    eq = r.equivalence
    tests = []
    if mwu_h is not None and mwu_h < alpha:
        tests.append(f"Mann–Whitney p_holm = {format_number(mwu_h)}")
    if ks_h is not None and ks_h < alpha:
        tests.append(f"KS p_holm = {format_number(ks_h)}")
    if eq is not None:
        direction = (
            "the re-run is worse"
            if eq.a12 < 0.5
            else "the re-run is better"
            if eq.a12 > 0.5
            else "no shift in location, the shape differs"
        )
        size = f"A12 = {eq.a12:.2f} ({a12_magnitude(eq.a12)})"
    else:
        direction, size = "the distributions differ", ""
    med = _medians(r)
    reason = f"significantly different ({', '.join(tests)}): {direction}; " + "; ".join(x for x in (size, med) if x)
    if eq is not None and eq.equivalent:
        reason += (
            f"; the shift is inside the margin [{0.5 - margin:.2f}, {0.5 + margin:.2f}], but the difference "
            "is significant"
        )
    return reason


def _too_few_reason(r: CellTests, eq: Equivalence, *, alpha: float, margin: float) -> str:
    if eq.paired:
        return (
            f"too few runs to show equivalence: {eq.n} paired runs cannot reach a p-value below "
            f"2^-{eq.n} = {2.0**-eq.n:.3g}, which is not below α = {alpha:g}; at least {eq.min_n} "
            f"replicates are needed ({_design(r)})"
        )
    n_o, n_r = r.n_original, r.n_rerun
    half = ideal_halfwidth(n_o, n_r, alpha)
    return (
        f"too few runs to show equivalence: with independent runs ({n_o} original, {n_r} re-run; the "
        f"seeds differ) even two identical samples would give a {100 * (1 - 2 * alpha):g}% interval of "
        f"A12 of ±{half:.2f}, wider than the margin ±{margin:.2f}; about {eq.min_n} runs per side are "
        "needed"
    )


def _equivalent_reason(r: CellTests, eq: Equivalence, *, alpha: float, margin: float) -> str:
    med = _medians(r)
    return (
        f"equivalent: A12 = {eq.a12:.2f}, {100 * (1 - 2 * alpha):g}% interval [{eq.ci_low:.2f}, "
        f"{eq.ci_high:.2f}] inside [{0.5 - margin:.2f}, {0.5 + margin:.2f}] (TOST p = {format_number(eq.p)}; "
        f"{_design(r)}); not significantly different" + (f"; {med}" if med else "")
    )


def _undecided_reason(r: CellTests, eq: Equivalence, *, alpha: float, margin: float) -> str:
    reason = (
        f"neither significantly different nor shown equivalent: A12 = {eq.a12:.2f}, "
        f"{100 * (1 - 2 * alpha):g}% interval [{eq.ci_low:.2f}, {eq.ci_high:.2f}] is not inside "
        f"[{0.5 - margin:.2f}, {0.5 + margin:.2f}] ({_design(r)})"
    )
    gap = margin - abs(eq.a12 - 0.5)
    if gap > 0 and eq.se > 0:
        need = math.ceil(eq.n * (t_quantile(alpha, eq.df) * eq.se / gap) ** 2)
        reason += f"; at this spread about {max(need, eq.n + 1)} runs per side would be needed"
    elif gap <= 0:
        reason += "; the estimate itself lies outside the margin"
    return reason

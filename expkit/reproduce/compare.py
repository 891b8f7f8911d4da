"""Statistical reproduction check: does a re-run reproduce the original run?

:func:`compare_runs` compares two collected runs cell by cell (algorithm x dataset) and at the level
of the conclusions; :func:`write_comparison` writes ``compare.json`` and a plot of the original versus
re-run distributions; :func:`reproduce` re-runs an experiment (all cells or a seeded sample) and
compares it with the original. Each side can be a run in a store or a bundle (:func:`load_side`).

Per cell (method and conventions in :data:`CONVENTIONS` and docs/reproducibility.md):

* **different?** two-sided Mann-Whitney U and two-sample Kolmogorov-Smirnov tests of the original
  runs against the re-runs, Holm-corrected over all tests of all compared cells;
* **equivalent?** two one-sided tests (TOST, Schuirmann 1987) on the Vargha-Delaney A12 of re-run
  versus original (the Mann-Whitney functional, Wellek 2010 ch. 6): equivalent when the (1 - 2 alpha)
  confidence interval of A12 lies inside 0.5 +/- margin (default 0.14, i.e. below a "medium" effect).
  Runs with the same seed on both sides are paired (Munzel 1999 variance, t with n - 1 df); otherwise
  the samples are independent (Brunner-Munzel 2000 variance, Satterthwaite df);
* **verdict**: *not reproduced* when significantly different; *reproduced* when equivalent and not
  different; *inconclusive* otherwise, with the reason in words (too few runs for the equivalence test
  to be able to conclude — computed explicitly —, or neither different nor equivalent).

Conclusions: the Friedman verdict, the significant per-dataset and across-dataset pairs, the best
average rank and Kendall's tau of the average ranks, computed with :func:`expkit.analysis.stats.analyze` on
both sides. Overall: *reproduced* only when every cell is reproduced and the conclusions agree; *not
reproduced* when a cell is not reproduced or a conclusion flips (a pair significant in both runs with
opposite winners); *inconclusive* otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from expkit import __version__
from expkit.analysis.collect import Collected, collect, select_metric
from expkit.analysis.stats import a12_magnitude, analyze, holm
from expkit.core.errors import InputError
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.reproduce.bundle import Bundle, import_loaded, is_bundle_path, read_bundle
from expkit.runner import RunOutcome, start_run
from expkit.runs.matrix import Cell, build_matrix
from expkit.spec import Experiment, experiment_dict, load_spec
from expkit.stores.base import MANIFEST_KEY, RunStore
from expkit.stores.filesystem import FileStore

log = logging.getLogger(__name__)

SCHEMA = "expkit.reproduce.compare/1"
DEFAULT_ALPHA = 0.05
#: Equivalence margin on A12: equivalent when A12 of re-run vs original lies inside 0.5 +/- 0.14,
#: i.e. inside (0.36, 0.64) — below Vargha & Delaney's "medium" threshold (0.64).
DEFAULT_MARGIN = 0.14
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
#: Suggested process exit codes: inconclusive is neither a success nor a refutation.
EXIT_CODES = {REPRODUCED: 0, NOT_REPRODUCED: 1, INCONCLUSIVE: 3}

#: Spec fields that may differ between original and re-run without making it another experiment:
#: they change how many runs there are, which seeds they get, or how they are scheduled — not what one
#: run computes. Anything else (command, args, params, algorithms, datasets, metric, image, pairing,
#: prepare) makes the re-run a different experiment.
COMPATIBLE_FIELDS = (
    "metadata.name",
    "metadata.description",
    "metadata.paper",
    "spec.replicates",
    "spec.seed",
    "spec.parallelism",
    "spec.resources",
    "spec.timeout",
    "spec.retries",
    "spec.kubernetes",
    "spec.algorithms[*].description",
    "spec.algorithms[*].kubernetes",
)

CONVENTIONS: dict[str, str] = {
    "a12": (
        "Vargha-Delaney A12 of re-run versus original, oriented by the metric's goal: P(a re-run is better "
        "than an original run) + 0.5 P(tie), from mid-rank placements; 0.5 = no shift, < 0.5 = the re-run is "
        "worse. Magnitude by max(A12, 1 - A12): negligible < 0.56, small < 0.64, medium < 0.71, large."
    ),
    "pairing": (
        "runs are paired when, for every replicate valid on both sides, the re-run has the original's "
        "seed (same spec.seed: the seed scheme gives each (dataset, replicate) the same seed); the pairs "
        "are the replicates valid on both sides. Otherwise the samples are treated as independent."
    ),
    "equivalence": (
        "TOST (Schuirmann 1987) on A12 with equivalence range (0.5 - margin, 0.5 + margin), i.e. "
        "interval inclusion of the (1 - 2 alpha) confidence interval A12 +/- t(1 - alpha, df) se. "
        "Independent runs: se^2 = var(P_rerun)/n_rerun + var(P_orig)/n_orig with P the mid-rank "
        "placements of each run among the other sample, df by Satterthwaite (Brunner & Munzel "
        "2000). Paired runs: se^2 = var(P_rerun,k - P_orig,k)/n over the n pairs, df = n - 1 "
        "(Munzel 1999). se = 0 (e.g. identical paired values) gives a point interval."
    ),
    "feasibility": (
        "equivalence is only tested when the sample sizes allow it: paired, a distribution-free "
        "one-sided test on n pairs cannot reach p below 2^-n, so n needs 2^-n < alpha (n >= 5 at "
        "alpha = 0.05); independent, two identical tie-free samples of the given sizes must be "
        "able to pass the TOST (n >= 25 per side at alpha = 0.05, margin 0.14). Otherwise the "
        "cell is inconclusive and the needed number of runs is stated."
    ),
    "difference": (
        "scipy.stats.mannwhitneyu (two-sided, method='auto') and scipy.stats.ks_2samp (two-sided, "
        "method='auto') of the original against the re-run values; Holm (1979) over all tests of all "
        "compared cells (two per cell); different when either adjusted p < alpha."
    ),
    "verdict": (
        "cell: not reproduced when different; reproduced when equivalent, not different and the "
        "re-run has no more failed runs than the original; inconclusive otherwise. Overall: "
        "reproduced when every cell is reproduced, the conclusions agree and the specs are the same "
        "experiment; not reproduced when a cell is not reproduced or a conclusion flips; "
        "inconclusive otherwise."
    ),
    "conclusions": (
        "expkit.analysis.stats.analyze on each side, over the algorithms, datasets and cells compared: "
        "Friedman across datasets significant or not (>= 3 algorithms), the significant "
        "per-dataset pairs and across-dataset pairs with their winners, the best average rank, and "
        "Kendall's tau (scipy.stats.kendalltau, tau-b) of the average ranks. A flip is a pair "
        "significant in both runs with opposite winners; a pair significant in one run only, a "
        "different Friedman decision or a different best average rank is a disagreement."
    ),
}

REFERENCES: tuple[str, ...] = (
    (
        "Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power approach for "
        "assessing the equivalence of average bioavailability. J. Pharmacokinet. Biopharm. 15(6):657-680."
    ),
    (
        "Wellek, S. (2010). Testing Statistical Hypotheses of Equivalence and Noninferiority, 2nd ed. Chapman & "
        "Hall/CRC, ch. 6 (equivalence in terms of the Mann-Whitney functional)."
    ),
    (
        "Brunner, E. & Munzel, U. (2000). The nonparametric Behrens-Fisher problem: asymptotic theory and a "
        "small-sample approximation. Biometrical Journal 42(1):17-25."
    ),
    "Munzel, U. (1999). Nonparametric methods for paired samples. Statistica Neerlandica 53(3):277-286.",
    (
        "Vargha, A. & Delaney, H. D. (2000). A Critique and Improvement of the CL Common Language Effect Size "
        "Statistics of McGraw and Wong. Journal of Educational and Behavioral Statistics 25(2):101-132."
    ),
    "Holm, S. (1979). A Simple Sequentially Rejective Multiple Test Procedure. Scand. J. Statist. 6:65-70.",
)


# ---------------------------------------------------------------------------------------------------
# the equivalence test on A12
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivalence:
    """TOST on A12 of re-run versus original (see :data:`CONVENTIONS`)."""

    a12: float
    se: float
    df: float | None
    ci_low: float
    ci_high: float
    p: float
    paired: bool
    n: int  # pairs (paired) or the smaller sample (independent)
    feasible: bool
    min_n: int
    equivalent: bool


def _placements(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank placements: ``p_y[j]`` = share of x below y_j (ties half), ``p_x[i]`` likewise for x_i among y."""
    pooled = sps.rankdata(np.concatenate([x, y]))
    rx, ry = pooled[: len(x)], pooled[len(x) :]
    p_x = (rx - sps.rankdata(x)) / len(y)
    p_y = (ry - sps.rankdata(y)) / len(x)
    return p_x, p_y


def _a12_interval(
    x: np.ndarray, y: np.ndarray, *, paired: bool, alpha: float
) -> tuple[float, float, float | None, float]:
    """(A12, se, df, t quantile) for y against x (larger = better)."""
    p_x, p_y = _placements(x, y)
    # U of y over (n_x n_y), from the rank sum: exact (ranks are multiples of 1/2), unlike a mean of placements.
    ranks_y = sps.rankdata(np.concatenate([x, y]))[len(x) :]
    a12 = float((ranks_y.sum() - len(y) * (len(y) + 1) / 2) / (len(x) * len(y)))
    if paired:
        n = len(x)
        var = float(np.var(p_y - p_x, ddof=1)) / n if n > 1 else math.nan
        df: float | None = float(n - 1)
    else:
        v_y = float(np.var(p_y, ddof=1)) / len(y) if len(y) > 1 else math.nan
        v_x = float(np.var(p_x, ddof=1)) / len(x) if len(x) > 1 else math.nan
        var = v_x + v_y
        denom = (v_y**2 / (len(y) - 1) if len(y) > 1 else math.inf) + (
            v_x**2 / (len(x) - 1) if len(x) > 1 else math.inf
        )
        df = var**2 / denom if var > 1e-12 and denom > 0 else None
    # Placements are multiples of 1/(2n): a variance this small is rounding error of an exact zero.
    se = math.sqrt(var) if var > 1e-12 else 0.0
    q = float(sps.t.ppf(1 - alpha, df)) if df else math.nan
    return a12, se, df, q


def _ideal_halfwidth(n_x: int, n_y: int, alpha: float) -> float:
    """Half-width of the TOST interval for two evenly spread, tie-free samples from one distribution:
    the narrowest interval independent samples of these sizes can give at A12 = 0.5."""
    x = (np.arange(n_x) + 0.5) / n_x
    y = (np.arange(n_y) + 0.5) / n_y + 1e-9  # no exact cross-sample ties when the sizes differ
    if n_x == n_y:
        y = x.copy()
    _, se, _, q = _a12_interval(x, y, paired=False, alpha=alpha)
    return q * se if math.isfinite(q) else math.inf


def min_replicates(*, alpha: float = DEFAULT_ALPHA, margin: float = DEFAULT_MARGIN, paired: bool) -> int:
    """The fewest runs per side for which the equivalence test can conclude at ``alpha``: paired, the
    smallest n with 2^-n < alpha; independent, the smallest n for which two identical tie-free samples of
    n runs each pass the TOST within ``margin``."""
    _check_alpha_margin(alpha, margin)
    if paired:
        return max(2, math.floor(math.log2(1 / alpha)) + 1)
    n = 2
    while n < 1_000_000:
        if _ideal_halfwidth(n, n, alpha) < margin:
            return n
        n = n + 1 if n < 1000 else int(n * 1.01) + 1
    return n  # pragma: no cover - unreachable for sane margins


def equivalence_test(
    original: Sequence[float],
    rerun: Sequence[float],
    *,
    goal: str,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    paired: bool = False,
) -> Equivalence:
    """TOST on A12 of ``rerun`` versus ``original`` (values in the metric's units; ``goal`` orients them).
    With ``paired`` the two sequences are matched by position (same seed)."""
    _check_alpha_margin(alpha, margin)
    sign = 1.0 if goal == "maximize" else -1.0
    x = sign * np.asarray(original, dtype=float)
    y = sign * np.asarray(rerun, dtype=float)
    if paired and len(x) != len(y):
        raise InputError("paired equivalence test: the two samples must have the same length")
    if len(x) < 2 or len(y) < 2:
        raise InputError("the equivalence test needs at least two runs on each side")
    a12, se, df, q = _a12_interval(x, y, paired=paired, alpha=alpha)
    lo_b, hi_b = 0.5 - margin, 0.5 + margin
    if se > 0 and df:
        p = max(float(sps.t.sf((a12 - lo_b) / se, df)), float(sps.t.cdf((a12 - hi_b) / se, df)))
        lo, hi = a12 - q * se, a12 + q * se
    else:
        p = 0.0 if lo_b < a12 < hi_b else 1.0
        lo = hi = a12
    n = len(x) if paired else min(len(x), len(y))
    if paired:
        feasible = 2.0**-n < alpha
    else:
        feasible = _ideal_halfwidth(len(x), len(y), alpha) < margin
    min_n = min_replicates(alpha=alpha, margin=margin, paired=paired)
    equivalent = bool(feasible and p < alpha)
    return Equivalence(
        a12=a12,
        se=se,
        df=df,
        ci_low=max(0.0, lo),
        ci_high=min(1.0, hi),
        p=p,
        paired=paired,
        n=n,
        feasible=bool(feasible),
        min_n=min_n,
        equivalent=equivalent,
    )


def _check_alpha_margin(alpha: float, margin: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise InputError(f"--alpha {alpha!r}: give a significance level between 0 and 0.5, e.g. 0.05")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 0.5:
        raise InputError(
            f"--margin {margin!r}: give the equivalence margin on A12 between 0 and 0.5, e.g. 0.14 "
            "(A12 within 0.36-0.64)"
        )


# ---------------------------------------------------------------------------------------------------
# result types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellComparison:
    """One algorithm x dataset cell: original runs against re-runs."""

    algorithm: str
    dataset: str
    n_original: int
    n_rerun: int
    failed_original: int
    failed_rerun: int
    paired: bool
    median_original: float | None
    median_rerun: float | None
    equivalence: Equivalence | None
    mwu_p: float | None
    mwu_p_holm: float | None
    ks_statistic: float | None
    ks_p: float | None
    ks_p_holm: float | None
    different: bool
    verdict: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.algorithm}/{self.dataset}"

    def to_dict(self) -> dict[str, Any]:
        eq = self.equivalence
        return {
            "algorithm": self.algorithm,
            "dataset": self.dataset,
            "verdict": self.verdict,
            "reason": self.reason,
            "n_original": self.n_original,
            "n_rerun": self.n_rerun,
            "failed_original": self.failed_original,
            "failed_rerun": self.failed_rerun,
            "paired": self.paired,
            "median_original": _jf(self.median_original),
            "median_rerun": _jf(self.median_rerun),
            "median_shift": _jf(
                None
                if self.median_original is None or self.median_rerun is None
                else self.median_rerun - self.median_original
            ),
            "difference": {
                "mannwhitneyu_p": _jf(self.mwu_p),
                "mannwhitneyu_p_holm": _jf(self.mwu_p_holm),
                "ks_statistic": _jf(self.ks_statistic),
                "ks_p": _jf(self.ks_p),
                "ks_p_holm": _jf(self.ks_p_holm),
                "different": self.different,
            },
            "equivalence": None
            if eq is None
            else {
                "a12": _jf(eq.a12),
                "magnitude": a12_magnitude(eq.a12),
                "se": _jf(eq.se),
                "df": _jf(eq.df),
                "ci_low": _jf(eq.ci_low),
                "ci_high": _jf(eq.ci_high),
                "p_tost": _jf(eq.p),
                "paired": eq.paired,
                "n": eq.n,
                "feasible": eq.feasible,
                "min_n": eq.min_n,
                "equivalent": eq.equivalent,
            },
        }


@dataclass(frozen=True)
class ConclusionCheck:
    """Do the two runs lead to the same statistical conclusions?"""

    friedman_original: bool | None
    friedman_rerun: bool | None
    friedman_p_original: float | None
    friedman_p_rerun: float | None
    pairs_original: tuple[str, ...]  # "dataset: winner > loser" (or "a ~ b" without a direction)
    pairs_rerun: tuple[str, ...]
    across_original: tuple[str, ...]
    across_rerun: tuple[str, ...]
    best_original: tuple[str, ...]
    best_rerun: tuple[str, ...]
    kendall_tau: float | None
    flips: tuple[str, ...]
    disagreements: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def agree(self) -> bool:
        return not self.flips and not self.disagreements

    def to_dict(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "friedman": {
                "original_significant": self.friedman_original,
                "rerun_significant": self.friedman_rerun,
                "original_p": _jf(self.friedman_p_original),
                "rerun_p": _jf(self.friedman_p_rerun),
            },
            "significant_pairs": {"original": list(self.pairs_original), "rerun": list(self.pairs_rerun)},
            "significant_across_pairs": {"original": list(self.across_original), "rerun": list(self.across_rerun)},
            "best_average_rank": {"original": list(self.best_original), "rerun": list(self.best_rerun)},
            "kendall_tau": _jf(self.kendall_tau),
            "flips": list(self.flips),
            "disagreements": list(self.disagreements),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SpecCheck:
    """Is the re-run the same experiment? ``status``: identical, compatible (only fields of
    :data:`COMPATIBLE_FIELDS` differ) or different."""

    sha_original: str | None
    sha_rerun: str | None
    status: str
    differences: tuple[str, ...]
    material: tuple[str, ...]
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sha256_original": self.sha_original,
            "sha256_rerun": self.sha_rerun,
            "differences": list(self.differences),
            "material_differences": list(self.material),
            "message": self.message,
        }


@dataclass(frozen=True, eq=False)
class Comparison:
    """Immutable result of :func:`compare_runs`."""

    original_run: str
    rerun_run: str
    experiment: str
    metric: str
    goal: str
    alpha: float
    margin: float
    cells: tuple[CellComparison, ...]
    only_original: tuple[str, ...]
    only_rerun: tuple[str, ...]
    conclusions: ConclusionCheck
    spec: SpecCheck
    verdict: str
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    restricted: int | None = None  # number of runs (alg/ds/rep) the comparison was restricted to
    cell_keys: frozenset[str] | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        """0 reproduced, 1 not reproduced, 3 inconclusive (see :data:`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]

    def cells_with(self, verdict: str) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == verdict]

    def to_dict(self) -> dict[str, Any]:
        """Deterministic, JSON-serialisable dict for ``compare.json`` (no NaN, no timestamps)."""
        counts = {v: len(self.cells_with(v)) for v in VERDICTS}
        return {
            "schema": SCHEMA,
            "expkit_version": __version__,
            "original": self.original_run,
            "rerun": self.rerun_run,
            "experiment": self.experiment,
            "metric": self.metric,
            "goal": self.goal,
            "alpha": float(self.alpha),
            "margin": float(self.margin),
            "equivalence_range": [0.5 - self.margin, 0.5 + self.margin],
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "counts": counts,
            "restricted_to_runs": self.restricted,
            "spec": self.spec.to_dict(),
            "cells": [c.to_dict() for c in self.cells],
            "only_original": list(self.only_original),
            "only_rerun": list(self.only_rerun),
            "conclusions": self.conclusions.to_dict(),
            "notes": list(self.notes),
            "conventions": dict(CONVENTIONS),
            "references": list(REFERENCES),
        }

    def summary_lines(self) -> list[str]:
        """A readable account: the verdict, why, and every cell that is not reproduced."""
        lines = [f"Reproduction check of {self.original_run} by {self.rerun_run}: {self.verdict.upper()}"]
        c = {v: len(self.cells_with(v)) for v in VERDICTS}
        lines.append(
            f"  metric {self.metric!r} ({'lower' if self.goal == 'minimize' else 'higher'} is better), "
            f"α = {self.alpha:g}, equivalent when A12 lies in [{0.5 - self.margin:.2f}, "
            f"{0.5 + self.margin:.2f}]; {len(self.cells)} cell(s): {c[REPRODUCED]} reproduced, "
            f"{c[NOT_REPRODUCED]} not reproduced, {c[INCONCLUSIVE]} inconclusive"
        )
        for reason in self.reasons:
            lines.append(f"  - {reason}")
        shown = 0
        for cell in self.cells:
            if cell.verdict == REPRODUCED:
                continue
            if shown == 20:
                lines.append(f"  ... {len(self.cells) - c[REPRODUCED] - 20} more in compare.json")
                break
            lines.append(f"  {cell.key}: {cell.verdict} — {cell.reason}")
            shown += 1
        if self.spec.message:
            lines.append(f"  spec: {self.spec.message}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return lines


# ---------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------


def compare_runs(
    original: Collected,
    rerun: Collected,
    *,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    metric: str | None = None,
    cells: Collection[str] | None = None,
) -> Comparison:
    """Compare a re-run with the original run (see the module docstring for the method).

    ``cells`` restricts both sides to those runs (``alg/ds/rep`` keys), e.g. a sampled re-run; by
    default both are restricted to the runs that finished (succeeded or failed) on both sides.
    """
    _check_alpha_margin(alpha, margin)
    name = select_metric(original, metric)
    if name not in rerun.metrics:
        raise InputError(f"the re-run {rerun.run_id} has no metric {name!r}; it has {', '.join(rerun.metrics)}")
    goal = original.goal
    notes: list[str] = []
    if name != original.metric:
        notes.append(f"metric {name!r} has no declared goal; the spec metric's goal ({goal}) is used")
    if rerun.goal != goal:
        notes.append(f"the re-run's spec says goal {rerun.goal}, the original's {goal}: the original's is used")
    spec = _spec_check(original, rerun)
    keys = _restriction(original, rerun, cells)
    orig_t = _values(original, name, keys)
    rerun_t = _values(rerun, name, keys)
    pairs_o = set(zip(orig_t["algorithm"], orig_t["dataset"]))
    pairs_r = set(zip(rerun_t["algorithm"], rerun_t["dataset"]))
    algs = [a for a in original.algorithms if a in rerun.algorithms]
    dsets = [d for d in original.datasets if d in rerun.datasets]
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
    all_o = _values(original, name, keys, valid_only=False)
    all_r = _values(rerun, name, keys, valid_only=False)
    fails_o, fails_r = _failures(all_o), _failures(all_r)
    groups_o = {k: g for k, g in orig_t.groupby(["algorithm", "dataset"], sort=False)}
    groups_r = {k: g for k, g in rerun_t.groupby(["algorithm", "dataset"], sort=False)}
    raw = [
        _cell_tests(a, d, groups_o[(a, d)], groups_r[(a, d)], goal=goal, alpha=alpha, margin=margin) for a, d in common
    ]
    for r in raw:
        r["failed_o"] = fails_o.get((r["algorithm"], r["dataset"]), 0)
        r["failed_r"] = fails_r.get((r["algorithm"], r["dataset"]), 0)
    family = np.array(
        [r["mwu_p"] if r["mwu_p"] is not None else np.nan for r in raw]
        + [r["ks_p"] if r["ks_p"] is not None else np.nan for r in raw],
        dtype=float,
    )
    adjusted = holm(family) if family.size else family
    cell_results = []
    for i, r in enumerate(raw):
        mwu_h, ks_h = adjusted[i], adjusted[len(raw) + i]
        cell_results.append(_cell_verdict(r, _opt(mwu_h), _opt(ks_h), goal=goal, alpha=alpha, margin=margin))
    conclusions = _conclusions(
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


def _restriction(original: Collected, rerun: Collected, cells: Collection[str] | None) -> set[str]:
    done_o = _finished_keys(original)
    done_r = _finished_keys(rerun)
    keys = done_o & done_r
    if cells is not None:
        wanted = set(cells)
        keys &= wanted
    return keys


def _finished_keys(c: Collected) -> set[str]:
    t = c.table
    finished = t[t["status"] != "missing"]
    return {f"{a}/{d}/{r}" for a, d, r in zip(finished["algorithm"], finished["dataset"], finished["replicate"])}


def _values(c: Collected, metric: str, keys: set[str], *, valid_only: bool = True) -> pd.DataFrame:
    """Rows of ``metric`` restricted to ``keys``; with ``valid_only`` only succeeded, finite values."""
    t = c.table
    t = t[t["metric"] == metric]
    key = t["algorithm"].astype(str) + "/" + t["dataset"].astype(str) + "/" + t["replicate"].astype(str)
    t = t[key.isin(keys)]
    if valid_only:
        t = t[(t["status"] == "succeeded") & np.isfinite(t["value"].astype(float))]
    return t.reset_index(drop=True)


def _failures(table: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Failed (or non-finite) runs per (algorithm, dataset)."""
    bad = table[(table["status"] != "succeeded") | ~np.isfinite(table["value"].astype(float))]
    return {k: int(n) for k, n in bad.groupby(["algorithm", "dataset"], sort=False).size().items()}


def _cell_tests(
    algorithm: str, dataset: str, go: pd.DataFrame, gr: pd.DataFrame, *, goal: str, alpha: float, margin: float
) -> dict[str, Any]:
    xo = go["value"].to_numpy(dtype=float)
    xr = gr["value"].to_numpy(dtype=float)
    seeds_o = dict(zip(go["replicate"].astype(int), go["seed"].astype(int)))
    seeds_r = dict(zip(gr["replicate"].astype(int), gr["seed"].astype(int)))
    common = sorted(set(seeds_o) & set(seeds_r))
    paired = bool(common) and all(seeds_o[r] == seeds_r[r] for r in common)
    out: dict[str, Any] = {
        "algorithm": algorithm,
        "dataset": dataset,
        "n_o": len(xo),
        "n_r": len(xr),
        "paired": paired,
        "median_o": float(np.median(xo)) if len(xo) else None,
        "median_r": float(np.median(xr)) if len(xr) else None,
        "mwu_p": None,
        "ks_p": None,
        "ks_stat": None,
        "eq": None,
        "eq_error": None,
        "seed_mismatch": bool(common) and not paired,
    }
    if len(xo) and len(xr):
        with np.errstate(all="ignore"):
            out["mwu_p"] = _opt(sps.mannwhitneyu(xo, xr, alternative="two-sided").pvalue)
            ks = sps.ks_2samp(xo, xr)
        out["ks_p"], out["ks_stat"] = _opt(ks.pvalue), _opt(ks.statistic)
    if paired:
        vo = dict(zip(go["replicate"].astype(int), xo))
        vr = dict(zip(gr["replicate"].astype(int), xr))
        a, b = [vo[r] for r in common], [vr[r] for r in common]
    else:
        a, b = list(xo), list(xr)
    if len(a) >= 2 and len(b) >= 2:
        out["eq"] = equivalence_test(a, b, goal=goal, alpha=alpha, margin=margin, paired=paired)
    else:
        out["eq_error"] = (
            f"too few valid runs to compare ({len(xo)} original, {len(xr)} re-run"
            + (f", {len(common)} pairs" if paired else "")
            + "; the tests need at least 2 on each side)"
        )
    return out


def _cell_verdict(
    r: dict[str, Any], mwu_h: float | None, ks_h: float | None, *, goal: str, alpha: float, margin: float
) -> CellComparison:
    eq: Equivalence | None = r["eq"]
    different = bool((mwu_h is not None and mwu_h < alpha) or (ks_h is not None and ks_h < alpha))
    n_o, n_r = r["n_o"], r["n_r"]
    failed_o, failed_r = r.get("failed_o", 0), r.get("failed_r", 0)
    lo_b, hi_b = 0.5 - margin, 0.5 + margin
    design = (
        f"paired by seed, {eq.n} pairs"
        if eq is not None and eq.paired
        else f"independent runs, {n_o} original and {n_r} re-run"
    )
    med = ""
    if r["median_o"] is not None and r["median_r"] is not None:
        med = f"median {_num(r['median_o'])} → {_num(r['median_r'])}"
    if different:
        verdict = NOT_REPRODUCED
        tests = []
        if mwu_h is not None and mwu_h < alpha:
            tests.append(f"Mann–Whitney p_holm = {_num(mwu_h)}")
        if ks_h is not None and ks_h < alpha:
            tests.append(f"KS p_holm = {_num(ks_h)}")
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
        reason = f"significantly different ({', '.join(tests)}): {direction}; " + "; ".join(x for x in (size, med) if x)
        if eq is not None and eq.equivalent:
            reason += f"; the shift is inside the margin [{lo_b:.2f}, {hi_b:.2f}], but the difference is significant"
    elif eq is None:
        verdict = INCONCLUSIVE
        reason = r["eq_error"] or "no equivalence test"
    elif not eq.feasible:
        verdict = INCONCLUSIVE
        if eq.paired:
            reason = (
                f"too few runs to show equivalence: {eq.n} paired runs cannot reach a p-value below "
                f"2^-{eq.n} = {2.0**-eq.n:.3g}, which is not below α = {alpha:g}; at least {eq.min_n} "
                f"replicates are needed ({design})"
            )
        else:
            half = _ideal_halfwidth(n_o, n_r, alpha)
            reason = (
                f"too few runs to show equivalence: with independent runs ({n_o} original, {n_r} re-run; the "
                f"seeds differ) even two identical samples would give a {100 * (1 - 2 * alpha):g}% interval of "
                f"A12 of ±{half:.2f}, wider than the margin ±{margin:.2f}; about {eq.min_n} runs per side are "
                "needed"
            )
    elif eq.equivalent and failed_r > failed_o:
        verdict = INCONCLUSIVE
        reason = (
            f"the values are equivalent (A12 = {eq.a12:.2f}, {100 * (1 - 2 * alpha):g}% interval "
            f"[{eq.ci_low:.2f}, {eq.ci_high:.2f}]), but {failed_r} re-run(s) failed against {failed_o} in the "
            "original"
        )
    elif eq.equivalent:
        verdict = REPRODUCED
        reason = (
            f"equivalent: A12 = {eq.a12:.2f}, {100 * (1 - 2 * alpha):g}% interval [{eq.ci_low:.2f}, "
            f"{eq.ci_high:.2f}] inside [{lo_b:.2f}, {hi_b:.2f}] (TOST p = {_num(eq.p)}; {design}); not "
            "significantly different" + (f"; {med}" if med else "")
        )
    else:
        verdict = INCONCLUSIVE
        reason = (
            f"neither significantly different nor shown equivalent: A12 = {eq.a12:.2f}, "
            f"{100 * (1 - 2 * alpha):g}% interval [{eq.ci_low:.2f}, {eq.ci_high:.2f}] is not inside "
            f"[{lo_b:.2f}, {hi_b:.2f}] ({design})"
        )
        gap = margin - abs(eq.a12 - 0.5)
        if gap > 0 and eq.se > 0:
            need = math.ceil(eq.n * (_t_quantile(alpha, eq.df) * eq.se / gap) ** 2)
            reason += f"; at this spread about {max(need, eq.n + 1)} runs per side would be needed"
        elif gap <= 0:
            reason += "; the estimate itself lies outside the margin"
    if r.get("seed_mismatch"):
        reason += "; note: the seeds of the two runs differ for the same replicates, so they are not paired"
    return CellComparison(
        algorithm=r["algorithm"],
        dataset=r["dataset"],
        n_original=n_o,
        n_rerun=n_r,
        failed_original=failed_o,
        failed_rerun=failed_r,
        paired=bool(r["paired"]),
        median_original=r["median_o"],
        median_rerun=r["median_r"],
        equivalence=eq,
        mwu_p=r["mwu_p"],
        mwu_p_holm=mwu_h,
        ks_statistic=r["ks_stat"],
        ks_p=r["ks_p"],
        ks_p_holm=ks_h,
        different=different,
        verdict=verdict,
        reason=reason,
    )


def _t_quantile(alpha: float, df: float | None) -> float:
    return float(sps.t.ppf(1 - alpha, df)) if df else float(sps.norm.ppf(1 - alpha))


def _conclusions(
    original: Collected,
    rerun: Collected,
    *,
    orig_t_all: pd.DataFrame,
    rerun_t_all: pd.DataFrame,
    metric: str,
    goal: str,
    alpha: float,
    algorithms: list[str],
    datasets: list[str],
) -> ConclusionCheck:
    notes: list[str] = []
    if len(algorithms) < 2 or not datasets:
        return ConclusionCheck(
            None,
            None,
            None,
            None,
            (),
            (),
            (),
            (),
            (),
            (),
            None,
            (),
            (),
            ("fewer than two algorithms in common: no conclusions to compare",),
        )
    paired = original.experiment.spec.paired
    analyses = []
    for t in (orig_t_all, rerun_t_all):
        t = t[t["algorithm"].isin(algorithms) & t["dataset"].isin(datasets)]
        analyses.append(
            analyze(
                t,
                metric=metric,
                goal=goal,
                paired=paired,
                alpha=alpha,  # type: ignore[arg-type]
                algorithms=algorithms,
                datasets=datasets,
            )
        )
    ao, ar = analyses

    def friedman(an: Any) -> tuple[bool | None, float | None]:
        f = an.across.friedman
        if f is None or f.p is None:
            return None, None
        return bool(f.p < alpha), float(f.p)

    fo, fpo = friedman(ao)
    fr, fpr = friedman(ar)

    def sig_pairs(an: Any) -> dict[tuple[str, str, str], str | None]:
        frame = an.pairwise
        frame = frame[frame["significant"] == True]
        return {
            (str(r.dataset), str(r.a), str(r.b)): (None if r.winner is None or r.winner != r.winner else str(r.winner))
            for r in frame.itertuples()
        }

    def across_pairs(an: Any) -> dict[tuple[str, str, str], str | None]:
        return {("", p.a, p.b): p.winner for p in an.across.pairs if p.significant}

    flips: list[str] = []
    disagreements: list[str] = []

    def label(key: tuple[str, str, str], winner: str | None) -> str:
        d, a, b = key
        where = f"{d}: " if d else ""
        if winner is None:
            return f"{where}{a} ≠ {b}"
        loser = b if winner == a else a
        return f"{where}{winner} > {loser}"

    def compare_sets(so: dict, sr: dict, what: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        for key in sorted(set(so) | set(sr), key=lambda k: (datasets.index(k[0]) if k[0] in datasets else -1, k)):
            if key in so and key in sr:
                if so[key] and sr[key] and so[key] != sr[key]:
                    flips.append(
                        f"{what}: original {label(key, so[key])}, re-run {label(key, sr[key])} "
                        "(both significant, opposite winners)"
                    )
            elif key in so:
                disagreements.append(f"{what}: {label(key, so[key])} is significant in the original only")
            else:
                disagreements.append(f"{what}: {label(key, sr[key])} is significant in the re-run only")
        order = lambda k: (datasets.index(k[0]) if k[0] in datasets else -1, k)
        return (
            tuple(label(k, so[k]) for k in sorted(so, key=order)),
            tuple(label(k, sr[k]) for k in sorted(sr, key=order)),
        )

    po, pr = compare_sets(sig_pairs(ao), sig_pairs(ar), "per-dataset pair")
    xo, xr = compare_sets(across_pairs(ao), across_pairs(ar), "across datasets")
    if fo is not None and fr is not None and fo != fr:
        disagreements.append(
            f"Friedman test across datasets: {'significant' if fo else 'not significant'} in the "
            f"original (p = {_num(fpo)}), {'significant' if fr else 'not significant'} in the "
            f"re-run (p = {_num(fpr)})"
        )
    ranks_o, ranks_r = ao.across.average_ranks, ar.across.average_ranks
    best_o = _best(algorithms, ranks_o)
    best_r = _best(algorithms, ranks_r)
    if best_o != best_r and best_o and best_r:
        disagreements.append(
            f"best average rank: {', '.join(best_o)} in the original, {', '.join(best_r)} in the re-run"
        )
    tau = None
    if ranks_o is not None and ranks_r is not None:
        if np.allclose(ranks_o, ranks_r, rtol=0, atol=1e-12):
            tau = 1.0
        else:
            with np.errstate(all="ignore"):
                value = sps.kendalltau(ranks_o, ranks_r).statistic
            tau = _opt(value)
            if tau is None:
                notes.append("Kendall's tau is undefined: every algorithm has the same average rank in one run")
    else:
        notes.append("no complete dataset on one side: average ranks and Kendall's tau are not compared")
    return ConclusionCheck(
        fo, fr, fpo, fpr, po, pr, xo, xr, best_o, best_r, tau, tuple(flips), tuple(disagreements), tuple(notes)
    )


def _best(algorithms: list[str], ranks: tuple[float, ...] | None) -> tuple[str, ...]:
    if ranks is None:
        return ()
    low = min(ranks)
    return tuple(a for a, r in zip(algorithms, ranks) if abs(r - low) < 1e-12)


def _overall(
    cells: list[CellComparison],
    conclusions: ConclusionCheck,
    spec: SpecCheck,
    only_o: tuple[str, ...],
    only_r: tuple[str, ...],
) -> tuple[str, list[str]]:
    reasons: list[str] = []
    bad = [c for c in cells if c.verdict == NOT_REPRODUCED]
    unsure = [c for c in cells if c.verdict == INCONCLUSIVE]
    if bad:
        reasons.append(
            f"{len(bad)} cell(s) not reproduced: "
            + ", ".join(c.key for c in bad[:10])
            + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        )
    if conclusions.flips:
        reasons.append("a conclusion flips: " + "; ".join(conclusions.flips[:5]))
    if bad or conclusions.flips:
        return NOT_REPRODUCED, reasons
    if not cells:
        reasons.append("no algorithm × dataset cell has valid runs on both sides: nothing could be compared")
    if unsure:
        reasons.append(
            f"{len(unsure)} cell(s) inconclusive: "
            + ", ".join(c.key for c in unsure[:10])
            + (f" and {len(unsure) - 10} more" if len(unsure) > 10 else "")
        )
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


# ---------------------------------------------------------------------------------------------------
# spec check
# ---------------------------------------------------------------------------------------------------


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            out[path] = {}
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        out[path + "[]"] = [v["name"] for v in value]  # membership and order
        for v in value:
            _flatten(v, f"{path}[{v['name']}]", out)
    else:
        out[path] = value


def _compatible(path: str) -> bool:
    for pattern in COMPATIBLE_FIELDS:
        if "[*]" in pattern:
            head, tail = pattern.split("[*]", 1)
            if path.startswith(head + "[") and "]" in path[len(head) :]:
                rest = path[path.index("]", len(head)) + 1 :]
                if rest == tail or rest.startswith(tail + "."):
                    return True
        elif path == pattern or path.startswith(pattern + "."):
            return True
    return False


def _spec_check(original: Collected, rerun: Collected) -> SpecCheck:
    sha_o = original.manifest.get("spec_sha256")
    sha_r = rerun.manifest.get("spec_sha256")
    fo: dict[str, Any] = {}
    fr: dict[str, Any] = {}
    _flatten(experiment_dict(original.experiment), "", fo)
    _flatten(experiment_dict(rerun.experiment), "", fr)
    diffs = tuple(sorted(k for k in set(fo) | set(fr) if fo.get(k, _MISSING) != fr.get(k, _MISSING)))
    if not diffs:
        return SpecCheck(sha_o, sha_r, "identical", (), (), None)
    material = tuple(d for d in diffs if not _compatible(d))
    if material:
        msg = (
            f"the re-run's spec differs from the original's in {', '.join(material[:8])}"
            + (" and more" if len(material) > 8 else "")
            + ": it is a different experiment, so the overall "
            "verdict cannot be 'reproduced'"
        )
        return SpecCheck(sha_o, sha_r, "different", diffs, material, msg)
    msg = f"the specs differ only in {', '.join(diffs[:8])}, which do not change what a run computes"
    if any(d == "spec.seed" for d in diffs):
        msg += "; the seeds differ, so runs are compared as independent samples"
    return SpecCheck(sha_o, sha_r, "compatible", diffs, (), msg)


_MISSING = object()


# ---------------------------------------------------------------------------------------------------
# inputs: a run id or a bundle
# ---------------------------------------------------------------------------------------------------


def load_side(ref: str | Path, store: RunStore | None) -> Collected:
    """Collect one side of a comparison: a bundle (an existing ``.zip`` file, read into a temporary
    store) or a run id / ``latest`` in ``store``."""
    text = str(ref)
    if text.lower().endswith(".zip"):
        if not is_bundle_path(text):
            raise InputError(
                f"{text}: no such bundle file; give the path of a .zip written by 'expkit export' or a run id"
            )
        return collect_bundle(read_bundle(text))
    if store is None:
        raise InputError(f"{text!r} is not a bundle path and no store was given to look the run up in")
    return collect(store, text)


def collect_bundle(bundle: Bundle) -> Collected:
    """Collect a bundle's run through a temporary filesystem store (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="expkit-bundle-") as tmp:
        store = FileStore(tmp)
        import_loaded(bundle, store)
        return collect(store, bundle.run_id)


# ---------------------------------------------------------------------------------------------------
# output: compare.json and the plot
# ---------------------------------------------------------------------------------------------------


def default_out_dir(comparison: Comparison) -> Path:
    """Where ``expkit compare`` writes by default: ``expkit-results/compare-<original>-<rerun>``."""
    return Path("expkit-results") / f"compare-{comparison.original_run}-{comparison.rerun_run}"


def comparison_json(comparison: Comparison) -> str:
    """``compare.json``: deterministic (fixed order, no timestamps, no NaN)."""
    return json.dumps(comparison.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_comparison(
    comparison: Comparison,
    original: Collected,
    rerun: Collected,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Write ``compare.json`` and ``compare-<metric>.png/pdf`` (original versus re-run distributions,
    one panel per dataset) into ``out_dir``; returns the written paths."""
    target = Path(out_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"-o {target}: cannot create the output directory ({err.strerror})") from err
    path = target / "compare.json"
    tmp = path.with_name(".compare.json.tmp")
    tmp.write_text(comparison_json(comparison), encoding="utf-8", newline="\n")
    tmp.replace(path)
    files = [path]
    files += plot_comparison(comparison, original, rerun, target, formats=formats)
    return files


def plot_comparison(
    comparison: Comparison,
    original: Collected,
    rerun: Collected,
    out_dir: Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Small multiples, one panel per dataset: for each algorithm the original's box (light) and the
    re-run's box (hatched) side by side with every run shown, and the cell's verdict above them."""
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from expkit.analysis import plots

    fmts = plots._check_formats(formats)
    keys = set(comparison.cell_keys or ())
    orig = _values(original, comparison.metric, keys)
    re = _values(rerun, comparison.metric, keys)
    cells = {(c.algorithm, c.dataset): c for c in comparison.cells}
    algs = [a for a in original.algorithms if any(k[0] == a for k in cells)]
    dsets = [d for d in original.datasets if any(k[1] == d for k in cells)]
    if not cells:
        return []
    styles = plots.algorithm_styles(original.algorithms)
    go = {k: g["value"].to_numpy(dtype=float) for k, g in orig.groupby(["algorithm", "dataset"], sort=False)}
    gr = {k: g["value"].to_numpy(dtype=float) for k, g in re.groupby(["algorithm", "dataset"], sort=False)}
    marks = {REPRODUCED: ("✓", "#009E73"), NOT_REPRODUCED: ("✗", "#D55E00"), INCONCLUSIVE: ("?", "#666666")}
    pages = plots._pages(dsets)
    base = f"compare-{plots.safe_filename(comparison.metric)}"
    written: list[Path] = []
    better = "lower is better" if comparison.goal == "minimize" else "higher is better"
    for page_no, page in enumerate(pages, start=1):
        rows, cols = plots._grid(len(page))
        panel_w = max(3.0, 0.8 * len(algs) + 1.2)
        with plots._style():
            fig = Figure(figsize=(cols * panel_w, rows * 3.3 + 0.6), layout="constrained")
            axes = fig.subplots(rows, cols, squeeze=False)
            for idx, ax in enumerate(axes.flat):
                if idx >= len(page):
                    ax.set_visible(False)
                    continue
                ds = page[idx]
                for i, alg in enumerate(algs):
                    st = styles[alg]
                    cell = cells.get((alg, ds))
                    for side, (data, offset, alpha_fill, hatch) in enumerate(
                        (
                            (go.get((alg, ds), np.empty(0)), -0.2, 0.15, ""),
                            (gr.get((alg, ds), np.empty(0)), 0.2, 0.45, "//"),
                        )
                    ):
                        pos = i + 1 + offset
                        if len(data):
                            bp = ax.boxplot(
                                [data],
                                positions=[pos],
                                widths=0.34,
                                patch_artist=True,
                                showfliers=False,
                                medianprops={"color": "black", "linewidth": 1.3},
                                whiskerprops={"color": "#444444"},
                                capprops={"color": "#444444"},
                            )
                            box = bp["boxes"][0]
                            box.set_facecolor(to_rgba(st.color, alpha_fill))
                            box.set_edgecolor(st.color)
                            if hatch:
                                box.set_hatch(hatch)
                            rng = np.random.default_rng(zlib.crc32(f"{ds}\0{alg}\0{side}".encode()))
                            jitter = rng.uniform(-0.08, 0.08, size=len(data))
                            ax.scatter(
                                pos + jitter,
                                data,
                                s=10,
                                marker=st.marker,
                                color=st.color,
                                edgecolors="white",
                                linewidths=0.3,
                                alpha=0.85,
                                zorder=3,
                            )
                    if cell is not None:
                        sym, colour = marks[cell.verdict]
                        ax.text(
                            i + 1,
                            1.0,
                            sym,
                            transform=ax.get_xaxis_transform(),
                            ha="center",
                            va="bottom",
                            color=colour,
                            fontsize=12,
                            fontweight="bold",
                            clip_on=False,
                        )
                ax.set_xticks(
                    np.arange(1, len(algs) + 1),
                    [plots._shorten(a, 18) for a in algs],
                    rotation=30 if len(algs) > 2 else 0,
                    ha="right" if len(algs) > 2 else "center",
                    rotation_mode="anchor" if len(algs) > 2 else "default",
                )
                ax.set_xlim(0.4, len(algs) + 0.6)
                ax.set_title(plots._shorten(ds), pad=16)
                ax.grid(axis="y", color="#dddddd", linewidth=0.6)
                ax.set_axisbelow(True)
                if idx % cols == 0:
                    ax.set_ylabel(f"{comparison.metric} ({better})")
            handles = [
                Patch(
                    facecolor=to_rgba("#777777", 0.15), edgecolor="#444444", label=f"original {comparison.original_run}"
                ),
                Patch(
                    facecolor=to_rgba("#777777", 0.45),
                    edgecolor="#444444",
                    hatch="//",
                    label=f"re-run {comparison.rerun_run}",
                ),
            ]
            handles += [
                Patch(facecolor="white", edgecolor="white", label=f"{sym} {v}") for v, (sym, _) in marks.items()
            ]
            fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
            title = f"Reproduction check: {comparison.verdict}"
            if len(pages) > 1:
                title += f" (page {page_no} of {len(pages)})"
            fig.suptitle(title)
            written += plots._save(
                fig, out_dir / (base if len(pages) == 1 else f"{base}-{page_no}"), fmts, inside=out_dir
            )
            plots._finish(fig)
    return written


# ---------------------------------------------------------------------------------------------------
# reproduce
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReproduceOutcome:
    """What :func:`reproduce` did: the re-run, and its comparison with the original."""

    run: RunOutcome
    comparison: Comparison
    original: Collected
    rerun: Collected
    spec_dir: Path
    sample: tuple[str, ...] | None
    sample_seed: int | None
    warnings: tuple[str, ...] = ()


def sample_cells(experiment: Experiment, k: int, *, seed: int | None = None) -> tuple[str, ...]:
    """A seeded, reproducible sample of about ``k`` runs (cell keys ``alg/ds/rep``), in run-matrix order.

    The unit drawn is a (dataset, replicate) block with every algorithm, so the algorithms stay
    comparable by seed: ``ceil(k / n_algorithms)`` blocks, spread over the datasets as evenly as
    possible (which datasets get one more is drawn at random), replicates drawn without replacement.
    ``seed`` defaults to the spec's seed. ``k`` at or above the number of runs gives every run.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"--sample {k!r}: give the number of runs to re-run, at least 1")
    spec = experiment.spec
    algs = [a.name for a in spec.algorithms]
    dsets = [d.name for d in spec.datasets]
    reps = spec.replicates
    cells = build_matrix(experiment)
    if k >= len(cells):
        return tuple(c.key for c in cells)
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    blocks = min(math.ceil(k / len(algs)), len(dsets) * reps)
    base, extra = divmod(blocks, len(dsets))
    plus = set(rng.choice(len(dsets), size=extra, replace=False).tolist()) if extra else set()
    chosen: set[tuple[str, int]] = set()
    for i, d in enumerate(dsets):
        count = min(reps, base + (1 if i in plus else 0))
        for r in rng.choice(reps, size=count, replace=False).tolist():
            chosen.add((d, int(r)))
    return tuple(c.key for c in cells if (c.dataset, c.replicate) in chosen)


class _ReproductionExecutor:
    """Wraps an executor: runs only the sampled cells, in the directory that holds the experiment's code."""

    def __init__(self, inner: Executor, keep: frozenset[str] | None, spec_dir: Path | None) -> None:
        self.inner = inner
        self.keep = keep
        self.spec_dir = spec_dir
        self.name = inner.name

    def _ctx(self, ctx: RunContext) -> RunContext:
        return dataclasses.replace(ctx, spec_dir=self.spec_dir) if self.spec_dir is not None else ctx

    def run_prepare(self, ctx: RunContext) -> None:
        self.inner.run_prepare(self._ctx(ctx))

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        todo = [c for c in cells if self.keep is None or c.key in self.keep]
        return self.inner.execute(self._ctx(ctx), todo)

    def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            stop()


def reproduce(
    source: str | Path,
    store: RunStore,
    *,
    original: str | Path | None = None,
    spec_dir: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    sample: int | None = None,
    workers: int | None = None,
    seed: int | None = None,
    executor: Executor | None = None,
    on_event: Callable[[CellEvent], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    metric: str | None = None,
) -> ReproduceOutcome:
    """Re-run an experiment into ``store`` and compare the re-run with the original.

    ``source`` is a bundle (``.zip``: the bundle's run is the original and its resolved spec is
    re-run; the experiment's code is not in a bundle, so the runs execute in ``spec_dir`` — a checkout
    of the code —, by default the original's spec directory when it exists on this machine) or a spec
    file (re-run with ``overrides`` in its own directory; the original is ``original`` — a run id or a
    bundle — or else the newest run in ``store`` with the same spec sha256). ``sample`` re-runs only a
    seeded sample of about that many runs (:func:`sample_cells`, ``seed`` defaults to the spec's seed)
    and the comparison is restricted to them. ``executor`` defaults to the local executor.
    """
    _check_alpha_margin(alpha, margin)
    warnings: list[str] = []
    if is_bundle_path(source):
        if original is not None:
            raise InputError(
                f"{source} is a bundle and is the original itself; drop --original, or pass a spec file to re-run"
            )
        if overrides:
            raise InputError(
                "-p goes with a spec file: a bundle's spec already has the original run's overrides applied"
            )
        bundle = read_bundle(source)
        original_c = collect_bundle(bundle)
        run_dir = _bundle_spec_dir(bundle, spec_dir, warnings)
        spec_text = bundle.spec_text
        return _reproduce_text(
            spec_text,
            run_dir,
            store,
            original_c,
            sample=sample,
            workers=workers,
            seed=seed,
            executor=executor,
            on_event=on_event,
            on_start=on_start,
            alpha=alpha,
            margin=margin,
            metric=metric,
            warnings=warnings,
        )
    if str(source).lower().endswith(".zip"):
        raise InputError(f"{source}: no such bundle file; give a bundle written by 'expkit export' or a spec file")
    if spec_dir is not None:
        raise InputError("--spec-dir goes with a bundle; a spec file runs in its own directory")
    loaded = load_spec(source, overrides)
    if original is not None:
        original_c = load_side(original, store)
    else:
        original_c = collect(store, _newest_run_of(store, loaded.sha256, str(source)))
    keep = frozenset(sample_cells(loaded.experiment, sample, seed=seed)) if sample is not None else None
    wrapped = _ReproductionExecutor(executor or _local_executor(), keep, None)
    info = _reproduction_info(
        original_c.run_id, sample, keep, seed if seed is not None else loaded.experiment.spec.seed, loaded.directory
    )
    outcome = _run_annotated(
        lambda cb: start_run(
            source, store, overrides=overrides, workers=workers, executor=wrapped, on_event=on_event, on_start=cb
        ),
        store,
        info,
        on_start,
        spec_dir=None,
    )
    return _finish(
        outcome,
        store,
        original_c,
        keep,
        loaded.directory,
        sample,
        seed,
        loaded.experiment,
        alpha,
        margin,
        metric,
        list(loaded.warnings) + warnings,
    )


def _local_executor() -> Executor:
    from expkit.executors.local import LocalExecutor

    return LocalExecutor()


def _bundle_spec_dir(bundle: Bundle, spec_dir: str | Path | None, warnings: list[str]) -> Path:
    if spec_dir is not None:
        path = Path(spec_dir).expanduser()
        if not path.is_dir():
            raise InputError(f"--spec-dir {spec_dir}: not a directory; give the checkout of the experiment's code")
        return path.resolve()
    recorded = bundle.manifest.get("spec_dir")
    if recorded and Path(recorded).is_dir():
        warnings.append(
            f"running in {recorded}, the original run's spec directory (from the bundle's manifest); "
            "pass --spec-dir to use another checkout of the code"
        )
        return Path(recorded).resolve()
    raise InputError(
        f"{bundle.path}: a bundle holds the spec and the results, not the experiment's code: pass "
        "--spec-dir DIR, the directory with the scripts the spec's command runs (a checkout of the "
        "paper's code)"
    )


def _newest_run_of(store: RunStore, sha: str, source: str) -> str:
    runs = []
    for run_id in store.list_runs():
        manifest = store.manifest(run_id)
        if manifest.get("spec_sha256") == sha:
            runs.append((manifest.get("started_at") or "", run_id))
    if not runs:
        raise InputError(
            f"no earlier run of {source} (spec sha256 {sha[:12]}…) in {store.url} to compare with: pass "
            "--original RUN_OR_BUNDLE, or run the experiment first"
        )
    return max(runs)[1]


def _reproduction_info(
    original_id: str, sample: int | None, keep: frozenset[str] | None, seed: int | None, spec_dir: Path
) -> dict[str, Any]:
    return {
        "original": original_id,
        "sample": sample,
        "sample_seed": seed if sample is not None else None,
        "sampled_runs": len(keep) if keep is not None else None,
        "spec_dir": str(spec_dir),
    }


def _run_annotated(
    start: Callable[[Callable[[str, int], None]], RunOutcome],
    store: RunStore,
    info: dict[str, Any],
    on_start: Callable[[str, int], None] | None,
    spec_dir: Path | None,
) -> RunOutcome:
    """Start the run, recording the reproduction (and the real spec directory) in its manifest both
    before the cells run (so a resume works) and after the runner's last manifest write."""
    started: list[str] = []

    def annotate(run_id: str) -> None:
        manifest = store.manifest(run_id)
        manifest["reproduction"] = info
        if spec_dir is not None:
            manifest["spec_dir"] = str(spec_dir)
            manifest["spec_file"] = None
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)

    def cb(run_id: str, n: int) -> None:
        started.append(run_id)
        annotate(run_id)
        if on_start is not None:
            on_start(run_id, n)

    try:
        outcome = start(cb)
    finally:
        if started:
            try:
                annotate(started[0])
            except Exception:
                log.exception("could not record the reproduction in the manifest of %s", started[0])
    return outcome


def _reproduce_text(
    spec_text: str,
    run_dir: Path,
    store: RunStore,
    original_c: Collected,
    *,
    sample: int | None,
    workers: int | None,
    seed: int | None,
    executor: Executor | None,
    on_event: Callable[[CellEvent], None] | None,
    on_start: Callable[[str, int], None] | None,
    alpha: float,
    margin: float,
    metric: str | None,
    warnings: list[str],
) -> ReproduceOutcome:
    with tempfile.TemporaryDirectory(prefix="expkit-reproduce-") as tmp:
        spec_path = Path(tmp) / "experiment.yml"
        spec_path.write_text(spec_text, encoding="utf-8")
        loaded = load_spec(spec_path)
        keep = frozenset(sample_cells(loaded.experiment, sample, seed=seed)) if sample is not None else None
        wrapped = _ReproductionExecutor(executor or _local_executor(), keep, run_dir)
        info = _reproduction_info(
            original_c.run_id, sample, keep, seed if seed is not None else loaded.experiment.spec.seed, run_dir
        )
        outcome = _run_annotated(
            lambda cb: start_run(spec_path, store, workers=workers, executor=wrapped, on_event=on_event, on_start=cb),
            store,
            info,
            on_start,
            spec_dir=run_dir,
        )
    return _finish(
        outcome,
        store,
        original_c,
        keep,
        run_dir,
        sample,
        seed,
        loaded.experiment,
        alpha,
        margin,
        metric,
        list(loaded.warnings) + warnings,
    )


def _finish(
    outcome: RunOutcome,
    store: RunStore,
    original_c: Collected,
    keep: frozenset[str] | None,
    run_dir: Path,
    sample: int | None,
    seed: int | None,
    experiment: Experiment,
    alpha: float,
    margin: float,
    metric: str | None,
    warnings: list[str],
) -> ReproduceOutcome:
    rerun_c = collect(store, outcome.run_id)
    if keep is not None:
        per_cell = len(keep) / max(1, len(experiment.spec.algorithms) * len(experiment.spec.datasets))
        need = min_replicates(alpha=alpha, margin=margin, paired=True)
        if per_cell < need:
            warnings.append(
                f"the sample of {len(keep)} runs gives about {per_cell:.1f} runs per algorithm × dataset; "
                f"showing equivalence needs at least {need} per cell, so expect inconclusive cells "
                f"(use --sample {need * len(experiment.spec.algorithms) * len(experiment.spec.datasets)} "
                "or more)"
            )
    comparison = compare_runs(original_c, rerun_c, alpha=alpha, margin=margin, metric=metric, cells=keep)
    return ReproduceOutcome(
        run=outcome,
        comparison=comparison,
        original=original_c,
        rerun=rerun_c,
        spec_dir=run_dir,
        sample=tuple(sorted(keep)) if keep is not None else None,
        sample_seed=(seed if seed is not None else experiment.spec.seed) if sample is not None else None,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _opt(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _jf(value: Any) -> float | None:
    return None if value is None else _opt(value)


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:.3g}"

"""The result of a reproduction check: per-cell and conclusion verdicts, the spec check, the overall
:class:`Comparison`, the method's conventions and references, and the ``compare.json`` form.

Verdicts: *reproduced*, *not reproduced*, *inconclusive* (:data:`VERDICTS`), with suggested process
exit codes (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from expkit import __version__
from expkit.analysis.stats import a12_magnitude
from expkit.reproduce.equivalence import Equivalence

SCHEMA = "expkit.reproduce.compare/1"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
#: Suggested process exit codes: inconclusive is neither a success nor a refutation.
EXIT_CODES = {REPRODUCED: 0, NOT_REPRODUCED: 1, INCONCLUSIVE: 3}

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
        """``algorithm/dataset``."""
        return f"{self.algorithm}/{self.dataset}"

    def to_dict(self) -> dict[str, Any]:
        """The cell's entry in ``compare.json``."""
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
            "median_original": json_float(self.median_original),
            "median_rerun": json_float(self.median_rerun),
            "median_shift": json_float(
                None
                if self.median_original is None or self.median_rerun is None
                else self.median_rerun - self.median_original
            ),
            "difference": {
                "mannwhitneyu_p": json_float(self.mwu_p),
                "mannwhitneyu_p_holm": json_float(self.mwu_p_holm),
                "ks_statistic": json_float(self.ks_statistic),
                "ks_p": json_float(self.ks_p),
                "ks_p_holm": json_float(self.ks_p_holm),
                "different": self.different,
            },
            "equivalence": None
            if eq is None
            else {
                "a12": json_float(eq.a12),
                "magnitude": a12_magnitude(eq.a12),
                "se": json_float(eq.se),
                "df": json_float(eq.df),
                "ci_low": json_float(eq.ci_low),
                "ci_high": json_float(eq.ci_high),
                "p_tost": json_float(eq.p),
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
        """Whether no conclusion flips and none differs."""
        return not self.flips and not self.disagreements

    def to_dict(self) -> dict[str, Any]:
        """The ``conclusions`` entry of ``compare.json``."""
        return {
            "agree": self.agree,
            "friedman": {
                "original_significant": self.friedman_original,
                "rerun_significant": self.friedman_rerun,
                "original_p": json_float(self.friedman_p_original),
                "rerun_p": json_float(self.friedman_p_rerun),
            },
            "significant_pairs": {"original": list(self.pairs_original), "rerun": list(self.pairs_rerun)},
            "significant_across_pairs": {"original": list(self.across_original), "rerun": list(self.across_rerun)},
            "best_average_rank": {"original": list(self.best_original), "rerun": list(self.best_rerun)},
            "kendall_tau": json_float(self.kendall_tau),
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
        """The ``spec`` entry of ``compare.json``."""
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
        """The cells with ``verdict``, in comparison order."""
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
# numbers
# ---------------------------------------------------------------------------------------------------


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_float(value: Any) -> float | None:
    """A number for ``compare.json``: a finite float or None (JSON has no NaN)."""
    return None if value is None else finite_or_none(value)

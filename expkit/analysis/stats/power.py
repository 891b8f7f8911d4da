"""How many replicates are enough: the replicates a pair of algorithms needs for its rank test to
detect a given effect with a given power, and the smallest effect the replicates at hand detect.

The effect is on the scale the report uses. For independent runs it is A12 = P(a > b) + P(a = b)/2 and
the test is Mann-Whitney U; Noether's (1987) sample size for two groups of equal size is
n = (z_{1-alpha/2} + z_{power})^2 / (6 (A12 - 1/2)^2) per algorithm (his N = (...)^2 / (12 c (1-c)
(A12 - 1/2)^2) total with c = 1/2). For runs paired by seed it is p = P(D + D' > 0) for two independent
paired differences, the parameter the matched-pairs rank-biserial correlation estimates (r = 2p - 1),
and the test is the Wilcoxon signed-rank test; Noether's sample size is n = (z_{1-alpha/2} +
z_{power})^2 / (3 (p - 1/2)^2) pairs. Both are normal approximations under the null variance; they
need continuous values (ties cost power) and give the power of one pair at level alpha. With Holm over
m pairs the first rejection needs alpha/m, so :func:`replicates_needed` with ``alpha / m`` is the
conservative number for a family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import special

from expkit.analysis.stats.conventions import CONVENTIONS
from expkit.analysis.stats.rank_tests import minimal_p_mannwhitneyu, minimal_p_wilcoxon
from expkit.core.errors import InputError

#: Vargha & Delaney's "medium" A12, the default effect to plan for.
DEFAULT_EFFECT = 0.64
DEFAULT_POWER = 0.8


def _check(effect: float | None, power: float, alpha: float) -> None:
    if effect is not None and not 0.5 < effect < 1.0:
        raise InputError(f"effect {effect!r}: give A12 (or its paired analogue) between 0.5 and 1, e.g. 0.64")
    if not 0.0 < power < 1.0:
        raise InputError(f"power {power!r}: give a probability between 0 and 1, e.g. 0.8")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha {alpha!r}: give a significance level between 0 and 1, e.g. 0.05")


def _z_sum(alpha: float, power: float) -> float:
    return float(special.ndtri(1.0 - alpha / 2.0) + special.ndtri(power))


def replicates_needed(
    effect: float = DEFAULT_EFFECT, *, paired: bool, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> int:
    """Replicates per algorithm (independent runs) or pairs (paired runs) for the two-sided rank test at
    level ``alpha`` to detect ``effect`` (A12, or P(D + D' > 0) when paired) with probability ``power``
    (Noether 1987), at least the smallest number with which the test can reach ``alpha`` at all."""
    _check(effect, power, alpha)
    factor = 3.0 if paired else 6.0
    n = max(2, math.ceil(_z_sum(alpha, power) ** 2 / (factor * (effect - 0.5) ** 2) - 1e-9))
    while _min_p(n, paired) >= alpha:
        n += 1
    return n


def detectable_effect(n: int, *, paired: bool, alpha: float = 0.05, power: float = DEFAULT_POWER) -> float | None:
    """The smallest effect (A12, or P(D + D' > 0) when paired) that ``n`` replicates per algorithm (or
    pairs) detect with probability ``power`` at level ``alpha`` (Noether 1987, solved for the effect);
    None when no effect is detectable: the test cannot reach ``alpha`` with n, or the effect would exceed 1."""
    _check(None, power, alpha)
    if n < 1 or _min_p(n, paired) >= alpha:
        return None
    factor = 3.0 if paired else 6.0
    effect = 0.5 + _z_sum(alpha, power) / math.sqrt(factor * n)
    return effect if effect < 1.0 else None


@dataclass(frozen=True)
class PowerResult:
    """What the replicates of an analysis can detect, and what a target effect needs."""

    paired: bool
    alpha: float
    power: float
    target: float
    replicates: int | None  # the typical per-pair sample size of the analysis (None: nothing tested)
    detectable: float | None
    needed: int
    pairs_per_dataset: int
    needed_family: int  # at alpha / pairs_per_dataset: Holm's first rejection in the worst case
    reachable: bool = True  # the test can give p < alpha with ``replicates`` at all

    @property
    def effect_name(self) -> str:
        """The effect's name in words."""
        return "P(D + D' > 0)" if self.paired else "A12"

    def sentence(self) -> str:
        """The recommendation in one sentence, e.g. '12 replicates detect only A12 >= 0.83 with 80 %
        power at alpha = 0.05 per pair; 67 are needed for A12 >= 0.64'."""
        what = "paired replicates" if self.paired else "replicates"
        pct = f"{100 * self.power:g} %"
        need = f"{self.needed} are needed for {self.effect_name} >= {self.target:g}"
        if self.paired:
            need += f" (rank-biserial >= {2 * self.target - 1:.2g})"
        if self.replicates is None:
            return f"{need} ({pct} power, α = {self.alpha:g} per pair)"
        if self.detectable is None and self.reachable:
            head = (
                f"{self.replicates} {what} reach {pct} power at α = {self.alpha:g} per pair only for effects near "
                f"the maximum ({self.effect_name} close to 1)"
            )
        elif self.detectable is None:
            head = f"{self.replicates} {what} cannot give p < {self.alpha:g}, so they detect no effect"
        else:
            head = (
                f"{self.replicates} {what} detect only {self.effect_name} >= {self.detectable:.2f} with {pct} "
                f"power at α = {self.alpha:g} per pair"
            )
        return f"{head}; {need}"

    def to_dict(self) -> dict[str, Any]:
        """The ``power`` block of stats.json."""
        return {
            "convention": CONVENTIONS["power"],
            "method": "noether_1987",
            "test": "wilcoxon" if self.paired else "mannwhitneyu",
            "effect": "p_walsh" if self.paired else "a12",
            "alpha": self.alpha,
            "power": self.power,
            "target": self.target,
            "replicates": self.replicates,
            "detectable": self.detectable,
            "test_can_reach_alpha": self.reachable,
            "replicates_needed": self.needed,
            "pairs_per_dataset": self.pairs_per_dataset,
            "replicates_needed_holm_worst_case": self.needed_family,
            "sentence": self.sentence(),
        }


def power_summary(
    replicates: int | None,
    *,
    paired: bool,
    k: int,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target: float = DEFAULT_EFFECT,
) -> PowerResult:
    """What ``replicates`` per pair detect and what ``target`` needs, for k algorithms (k(k-1)/2 pairs
    per dataset, for the worst-case Holm figure)."""
    m = max(1, k * (k - 1) // 2)
    detectable = detectable_effect(replicates, paired=paired, alpha=alpha, power=power) if replicates else None
    return PowerResult(
        paired=paired,
        alpha=alpha,
        power=power,
        target=target,
        replicates=replicates,
        detectable=detectable,
        needed=replicates_needed(target, paired=paired, alpha=alpha, power=power),
        pairs_per_dataset=m,
        needed_family=replicates_needed(target, paired=paired, alpha=alpha / m, power=power),
        reachable=bool(replicates) and _min_p(int(replicates or 0), paired) < alpha,
    )


def _min_p(n: int, paired: bool) -> float:
    return minimal_p_wilcoxon(n) if paired else minimal_p_mannwhitneyu(n, n)

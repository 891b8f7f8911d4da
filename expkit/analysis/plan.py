"""How many replicates an experiment needs: ``expkit plan SPEC [--pilot RUN]``.

From the spec alone: what its replicates detect with the chosen power at alpha per pair, and how many
replicates a target effect (default A12 = 0.64, Vargha & Delaney's "medium") needs, for the design the
spec declares (independent runs: Mann-Whitney U; paired by seed: Wilcoxon signed-rank), by Noether's
(1987) formulas (:mod:`expkit.analysis.stats.power`). With a pilot run, also what the pilot's data say:
how many runs failed (with ``failures: exclude`` the replicates are scaled up so that enough succeed),
whether values tie (the formulas assume continuous values), and the replicates that would detect the
median effect the pilot observed. Nothing is run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from expkit.analysis.collect import Collected, select_metric
from expkit.analysis.stats import (
    DEFAULT_EFFECT,
    DEFAULT_POWER,
    PowerResult,
    analyze,
    power_summary,
    replicates_needed,
)
from expkit.core.errors import InputError
from expkit.spec import Experiment


@dataclass(frozen=True)
class PilotFacts:
    """What a pilot run tells the plan."""

    run_id: str
    replicates: int | None  # median per-pair sample size in the pilot's tests
    failure_rate: float  # failed / finished runs
    tied_datasets: int
    datasets: int
    observed_effect: float | None  # median over tested pairs, on the plan's effect scale (>= 0.5)
    needed_for_observed: int | None


@dataclass(frozen=True)
class ReplicatePlan:
    """The recommendation of :func:`plan_replicates`."""

    experiment: str
    algorithms: int
    replicates: int  # what the spec asks for
    failures: str
    target: PowerResult  # at the spec's replicates, for the target effect
    pilot: PilotFacts | None
    recommended: int

    def lines(self) -> list[str]:
        """The plan in words, one finding per line."""
        t = self.target
        design = "paired by seed (Wilcoxon signed-rank)" if t.paired else "independent runs (Mann-Whitney U)"
        name = t.effect_name
        lines = [
            (
                f"Plan for {self.experiment}: {self.algorithms} algorithm(s), {t.pairs_per_dataset} pair(s) per "
                f"dataset, {design}, α = {t.alpha:g} per pair, power {t.power:g} (Noether 1987)."
            ),
        ]
        if t.detectable is None and not t.reachable:
            lines.append(f"  The spec's {self.replicates} replicates cannot give p < {t.alpha:g}: none detected.")
        elif t.detectable is None:
            lines.append(f"  The spec's {self.replicates} replicates reach that power only for effects near 1.")
        else:
            lines.append(f"  The spec's {self.replicates} replicates detect only {name} >= {t.detectable:.2f}.")
        lines.append(
            f"  To detect {name} >= {t.target:g}: {t.needed} replicates ({t.needed_family} if every pair must pass "
            f"Holm's first step, α/{t.pairs_per_dataset})."
        )
        if self.pilot is not None:
            lines += _pilot_lines(self.pilot, name, self.failures)
        lines.append(f"  Recommendation: replicates: {self.recommended}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON."""
        return {
            "experiment": self.experiment,
            "algorithms": self.algorithms,
            "replicates": self.replicates,
            "failures": self.failures,
            "power": self.target.to_dict(),
            "pilot": None if self.pilot is None else dict(self.pilot.__dict__),
            "recommended_replicates": self.recommended,
        }


def _pilot_lines(p: PilotFacts, name: str, failures: str) -> list[str]:
    out = [
        (
            f"  Pilot {p.run_id}: {p.replicates if p.replicates is not None else 'no'} replicate(s) per pair in "
            f"the tests, {100 * p.failure_rate:.1f} % of finished runs failed, tied values on {p.tied_datasets} "
            f"of {p.datasets} dataset(s)."
        )
    ]
    if p.failure_rate > 0 and failures == "exclude":
        out.append("  With failures: exclude the failed runs are lost, so the recommendation is scaled up for them.")
    if p.tied_datasets:
        out.append("  The formulas assume continuous values; ties cost power, so treat the numbers as a lower bound.")
    if p.observed_effect is None:
        out.append("  The pilot shows no effect to plan for.")
    elif p.needed_for_observed is not None:
        out.append(
            f"  The pilot's median observed effect, {name} = {p.observed_effect:.2f}, needs {p.needed_for_observed} "
            "replicates (an estimate from a small sample: plan for the target effect, not only this one)."
        )
    return out


def plan_replicates(
    experiment: Experiment,
    *,
    pilot: Collected | None = None,
    effect: float = DEFAULT_EFFECT,
    power: float = DEFAULT_POWER,
    alpha: float = 0.05,
) -> ReplicatePlan:
    """The replicates ``experiment`` needs to detect ``effect`` (A12, or P(D + D' > 0) for a paired
    design) with ``power`` at ``alpha`` per pair, and what its current replicates detect; with a
    ``pilot`` run, adjusted for the pilot's failed runs (``failures: exclude``) and with the effect it
    observed. Raises :class:`~expkit.core.errors.InputError` for an effect, power or alpha out of range."""
    spec = experiment.spec
    k = len(spec.algorithms)
    failures = spec.failures or "penalize"
    target = power_summary(spec.replicates, paired=spec.paired, k=k, alpha=alpha, power=power, target=effect)
    facts = _pilot_facts(pilot, experiment, alpha=alpha, power=power, failures=failures) if pilot else None
    recommended = target.needed
    if facts is not None and failures == "exclude" and facts.failure_rate > 0:
        recommended = math.ceil(target.needed / max(1e-9, 1.0 - facts.failure_rate))
    return ReplicatePlan(experiment.metadata.name, k, spec.replicates, failures, target, facts, recommended)


def _pilot_facts(pilot: Collected, experiment: Experiment, *, alpha: float, power: float, failures: str) -> PilotFacts:
    """Failure rate, ties, sample sizes and the median observed effect of a pilot run, analysed with the
    planned experiment's metric, goal and design."""
    spec = experiment.spec
    try:
        metric = select_metric(pilot, spec.metric.name)
    except InputError as err:
        raise InputError(f"--pilot {pilot.run_id}: {err}") from err
    table = pilot.table[pilot.table["metric"] == metric]
    finished = table[table["status"].isin(["succeeded", "failed"])]
    rate = float((finished["status"] == "failed").mean()) if len(finished) else 0.0
    ok = table[(table["status"] == "succeeded") & np.isfinite(table["value"].to_numpy(dtype=float))]
    tied = int(sum(bool(g.duplicated().any()) for _, g in ok.groupby("dataset")["value"]))
    analysis = analyze(
        pilot.table,
        metric=metric,
        goal=spec.metric.goal,
        paired=spec.paired,
        alpha=alpha,
        algorithms=pilot.algorithms,
        datasets=pilot.datasets,
        failures="exclude" if failures == "exclude" else "penalize",
        intervals=False,
    )
    pairs = analysis.pairwise
    tested = pairs["p"].notna().to_numpy()
    if spec.paired:
        sizes = (1.0 + np.abs(pairs["rank_biserial"].to_numpy(dtype=float))) / 2.0
    else:
        a12 = pairs["a12"].to_numpy(dtype=float)
        sizes = np.maximum(a12, 1.0 - a12)
    observed = float(np.median(sizes[tested])) if tested.any() else None
    if observed is not None and not 0.5 < observed < 1.0:
        observed = None
    needed = replicates_needed(observed, paired=spec.paired, alpha=alpha, power=power) if observed is not None else None
    replicates = analysis.power.replicates if analysis.power is not None else None
    return PilotFacts(pilot.run_id, replicates, rate, tied, len(pilot.datasets), observed, needed)

"""The sequential decision procedure of adaptive replicates: after each wave, per dataset and per pair
of algorithms, is the question settled?

The procedure (docs/statistics.md, "Adaptive replicates: the sequential procedure"):

* **looks** at n = min_replicates, min + wave, ..., max_replicates replicates per algorithm, information
  fraction t = n / max_replicates;
* **per pair**, the standardized rank statistic (Wilcoxon signed-rank for paired runs, Mann-Whitney U
  for independent runs; :mod:`.sequential_ranks`) against two-sided group-sequential boundaries from a
  Lan-DeMets alpha-spending function (Hwang-Shih-DeCani with gamma 0.5 by default, chosen so that
  with min 10 / max 50 / wave 5 a dominating algorithm among up to 4 is declared better at n = 10;
  O'Brien-Fleming or Pocock type on request; :mod:`.boundaries`), summarised
  as a **repeated p-value**: the smallest level at which the design would have stopped by now;
* **per dataset**, Holm's step-down procedure over the family of pairs (every pair, or every pair with
  the control) on the repeated p-values: a pair is a difference ("a_better" / "b_better") when it is
  rejected; the family-wise rate of false difference claims over the whole sequential run is at most
  alpha (repeated p-values are valid p-values for any stopping rule, Holm is valid for any dependence,
  and both only grow the set of claims as data accumulate);
* **equivalence** by repeated confidence intervals (Jennison & Turnbull 1989): the Hodges-Lehmann
  interval of the pair's shift at the look's nominal level of the Bonferroni design (alpha / pairs)
  lies inside [-rope, rope]; the probability of any false equivalence claim on a dataset is at most
  alpha;
* **futility** (non-binding, never a claim): an open pair whose conditional power of crossing the
  final boundary under the trend seen so far is below ``config.futility`` is settled without a
  difference;
* **who gets seeds**: an algorithm whose pairs with the running algorithms are all settled gets no more
  seeds on the dataset; with ``config.eliminate`` (F-race) also one decided worse than a running one
  (under ``stop: control``, worse than the control); its pairs keep their last result.

:func:`decide_dataset` recomputes the whole trajectory from the values at every call, so the driver
keeps no state: the same values give the same decisions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special

from expkit.adaptive.boundaries import SPENDING_FUNCTIONS, Spending, boundaries, repeated_p
from expkit.adaptive.sequential_ranks import oriented, shift_interval, statistic
from expkit.analysis.stats import holm
from expkit.core.errors import InputError

Stop = Literal["decided", "omnibus", "control"]
Decision = Literal["a_better", "b_better", "equivalent", "open"]
STOP_RULES: tuple[Stop, ...] = ("decided", "omnibus", "control")


@dataclass(frozen=True)
class SequentialConfig:
    """The adaptive design: looks, stopping rule, equivalence margin (metric units), level, goal,
    pairing, control, the spending function (``gamma``: its Hwang-Shih-DeCani parameter), whether
    F-race elimination is on and the futility threshold (conditional power; 0: off).

    The defaults (``spending="hsd"``, ``gamma=0.5``, ``futility=0.1``) are the design on which every
    target of bench/adaptive.py holds at once (docs/statistics.md, "The choice"): false claims <= alpha,
    <= 5 % of conclusions differing from the fixed design, >= 40 % runs saved, and a dominating
    algorithm declared better at min_replicates = 10 of 50 with 2 to 4 algorithms
    (:func:`first_decisive_look`)."""

    min_replicates: int
    max_replicates: int
    wave: int
    stop: Stop
    rope: float
    alpha: float = 0.05
    goal: Literal["minimize", "maximize"] = "minimize"
    paired: bool = True
    control: str | None = None
    spending: Spending = "hsd"
    eliminate: bool = False
    futility: float = 0.1
    gamma: float = 0.5  # Hwang-Shih-DeCani parameter, for spending "hsd" only

    def __post_init__(self) -> None:
        problems = _config_problems(self)
        if problems:
            raise InputError(problems[0])

    def looks(self) -> tuple[int, ...]:
        """Replicate counts at which a look happens: min, min + wave, ..., and max."""
        out = list(range(self.min_replicates, self.max_replicates, self.wave))
        out.append(self.max_replicates)
        return tuple(out)

    def times(self) -> tuple[float, ...]:
        """Information fractions n / max_replicates of the looks."""
        return tuple(n / self.max_replicates for n in self.looks())


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_problems(c: SequentialConfig) -> list[str]:
    out = []
    if not isinstance(c.min_replicates, int) or c.min_replicates < 2:
        out.append(f"adaptive.min_replicates: {c.min_replicates!r} must be an integer of at least 2, e.g. 10")
    elif not isinstance(c.max_replicates, int) or c.max_replicates < c.min_replicates:
        out.append(f"adaptive.max_replicates: {c.max_replicates!r} must be an integer >= min_replicates, e.g. 50")
    if not isinstance(c.wave, int) or c.wave < 1:
        out.append(f"adaptive.wave: {c.wave!r} must be an integer of at least 1, e.g. 5")
    if c.stop not in STOP_RULES:
        out.append(f"adaptive.stop: {c.stop!r} is not one of {', '.join(STOP_RULES)}")
    if not (_is_number(c.rope) and math.isfinite(c.rope) and c.rope >= 0):
        out.append(f"adaptive.rope: {c.rope!r} must be a finite number >= 0 in metric units, e.g. 0.01")
    if not (_is_number(c.alpha) and 0.0 < c.alpha < 1.0):
        out.append(f"adaptive.alpha: {c.alpha!r} must lie strictly between 0 and 1, e.g. 0.05")
    if c.goal not in ("minimize", "maximize"):
        out.append(f"adaptive.goal: {c.goal!r} must be minimize or maximize")
    if c.stop == "control" and not c.control:
        out.append("adaptive.control: stop: control needs the control algorithm's name: add control: NAME")
    if not (_is_number(c.futility) and 0.0 <= c.futility < 1.0):
        out.append(f"adaptive.futility: {c.futility!r} must be a conditional power in [0, 1), e.g. 0.3 (0: off)")
    if c.spending not in SPENDING_FUNCTIONS:
        out.append(f"adaptive.spending: {c.spending!r} is not one of {', '.join(SPENDING_FUNCTIONS)}")
    if not (_is_number(c.gamma) and -40.0 <= c.gamma <= 40.0):
        out.append(
            f"adaptive.gamma: {c.gamma!r} must be a number between -40 and 40, e.g. 0.5 (-4: O'Brien-Fleming-like)"
        )
    return out


@dataclass(frozen=True)
class PairDecision:
    """One pair at one look. ``statistic`` > 0: ``a`` is better (the goal's direction); ``boundary``:
    the critical value of |statistic| at this look at the pair's Holm level; ``p_adjusted``: the
    Holm-adjusted repeated p-value; ``n``: replicates per algorithm the pair was last looked at with."""

    a: str
    b: str
    n: int
    statistic: float
    boundary: float
    p_adjusted: float
    decision: Decision
    dataset: str = ""
    p_repeated: float = 1.0
    shift_interval: tuple[float, float] | None = None
    futile: bool = False  # open, and the conditional power to be a difference by max_replicates < config.futility

    def record(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers are None)."""
        interval = None if self.shift_interval is None else [_num(v) for v in self.shift_interval]
        return {
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "statistic": _num(self.statistic),
            "boundary": _num(self.boundary),
            "p_repeated": _num(self.p_repeated),
            "p_adjusted": _num(self.p_adjusted),
            "decision": self.decision,
            "futile": self.futile,
            "shift_interval": interval,
        }


@dataclass(frozen=True)
class DatasetDecision:
    """The decision on one dataset after a look."""

    dataset: str
    look: int
    n: int
    stopped: bool
    reason: str
    pairs: tuple[PairDecision, ...]
    active: tuple[str, ...]
    eliminated: tuple[str, ...] = field(default=())  # got no more seeds before the dataset stopped
    replicates: tuple[tuple[str, int], ...] = field(default=())  # (algorithm, replicates it was looked at with)

    def record(self) -> dict[str, Any]:
        """JSON-safe dict for the manifest."""
        return {
            "dataset": self.dataset,
            "look": self.look,
            "n": self.n,
            "stopped": self.stopped,
            "reason": self.reason,
            "active": list(self.active),
            "eliminated": list(self.eliminated),
            "replicates": dict(self.replicates),
            "pairs": [p.record() for p in self.pairs],
        }


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _family(algorithms: Sequence[str], config: SequentialConfig) -> list[tuple[str, str]]:
    if config.stop == "control":
        control = str(config.control)
        if control not in algorithms:
            raise InputError(
                f"adaptive.control: {control!r} is not an algorithm of this dataset ({', '.join(algorithms)}); "
                "name one of them"
            )
        return [(control, x) for x in algorithms if x != control]
    return list(itertools.combinations(algorithms, 2))


@dataclass
class _PairState:
    a: str
    b: str
    looks: list[int] = field(default_factory=list)
    z: list[float] = field(default_factory=list)
    n: int = 0
    p_rep: float = 1.0
    equivalent: bool = False
    futile: bool = False
    interval: tuple[float, float] | None = None


class _Trajectory:
    """The procedure replayed look by look on one dataset."""

    def __init__(self, dataset: str, values: Mapping[str, Sequence[float]], config: SequentialConfig) -> None:
        self.dataset, self.config = dataset, config
        self.algorithms = tuple(values)
        if len(self.algorithms) < 2:
            raise InputError(
                f"adaptive: dataset {dataset!r} has {len(self.algorithms)} algorithm(s); compare at least 2"
            )
        self.data = {k: oriented(np.asarray(v, dtype=float), config.goal) for k, v in values.items()}
        self.pairs = [_PairState(a, b) for a, b in _family(self.algorithms, config)]
        self.times = config.times()
        self.active = set(self.algorithms)
        self.rejected: dict[tuple[str, str], bool] = {}
        self.level_rank: dict[tuple[str, str], float] = {}
        self.seen: dict[str, int] = {}

    def look(self, k: int) -> None:
        """Look ``k``: every pair of two running algorithms gets its statistic, repeated p-value,
        interval and futility; then Holm, elimination and retirement."""
        n = self.config.looks()[k]
        m = len(self.pairs)
        rci = boundaries(self.times, self.config.alpha / m, self.config.spending, self.config.gamma)[k]
        for name in self.active:
            self.seen[name] = n
        for pair in self.pairs:
            if pair.a not in self.active or pair.b not in self.active:
                continue
            a, b = self._sample(pair.a, n), self._sample(pair.b, n)
            pair.looks.append(k)
            pair.z.append(statistic(a, b, self.config.paired))
            pair.n = n
            pair.p_rep = repeated_p(self.times, pair.looks, pair.z, self.config.spending, self.config.gamma)
            if math.isfinite(rci) and not pair.equivalent:
                interval = shift_interval(a, b, self.config.paired, float(2.0 * special.ndtr(-rci)))
                if interval is not None:
                    pair.interval = interval
                    pair.equivalent = -self.config.rope <= interval[0] and interval[1] <= self.config.rope
            pair.futile = self._conditional_power(k, pair.z[-1]) < self.config.futility
        self._holm()
        if self.config.eliminate:
            self._eliminate()
        self._retire()

    def _conditional_power(self, k: int, z: float) -> float:
        """P(|Z| >= the last boundary at level alpha at max_replicates | Z_k = z) under the trend seen
        so far, the drift z / sqrt(t_k) (stochastic curtailment, Jennison & Turnbull 2000, section 10.2)."""
        t = self.times[k]
        final = boundaries(self.times, self.config.alpha, self.config.spending, self.config.gamma)[-1]
        if t >= 1.0:
            return 0.0 if abs(z) < final else 1.0
        mean, sd = z / math.sqrt(t), math.sqrt(1.0 - t)
        return float(special.ndtr((mean - final) / sd) + special.ndtr((-final - mean) / sd))

    def _sample(self, name: str, n: int) -> np.ndarray:
        data = self.data[name]
        if data.size < n:
            raise InputError(
                f"adaptive: algorithm {name!r} on dataset {self.dataset!r} has {data.size} values but is active at "
                f"n={n}; pass the values of replicates 0..{n - 1} (NaN for a failed run)"
            )
        return data[:n]

    def _holm(self) -> None:
        """Holm's step-down on the repeated p-values, each step checked against the exact boundaries
        of its level: the pair at rank r (0-based, smallest p first) is rejected when every pair before
        it is and it crossed the boundary of level alpha / (m - r) at one of its looks."""
        m, alpha = len(self.pairs), self.config.alpha
        order = sorted(range(m), key=lambda i: self.pairs[i].p_rep)
        going = True
        for rank, i in enumerate(order):
            pair = self.pairs[i]
            level = alpha / (m - rank)
            self.level_rank[(pair.a, pair.b)] = level
            bounds = boundaries(self.times, level, self.config.spending, self.config.gamma)
            crossed = any(abs(z) >= bounds[k] for k, z in zip(pair.looks, pair.z))
            going = going and crossed
            if going:
                self.rejected[(pair.a, pair.b)] = True

    def direction(self, pair: _PairState) -> Decision:
        """The decision of a pair now."""
        if self.rejected.get((pair.a, pair.b)):
            return "a_better" if _crossing_sign(pair, self) > 0 else "b_better"
        return "equivalent" if pair.equivalent else "open"

    def _eliminate(self) -> None:
        control = self.config.control if self.config.stop == "control" else None
        losers = []
        for pair in self.pairs:
            decision = self.direction(pair)
            if decision not in ("a_better", "b_better"):
                continue
            winner, loser = (pair.a, pair.b) if decision == "a_better" else (pair.b, pair.a)
            if winner in self.active and loser in self.active and loser != control and loser not in losers:
                losers.append(loser)
        for loser in losers:
            self.active.discard(loser)

    def settled(self, pair: _PairState) -> bool:
        """Decided (a difference or equivalent), or open without a difference detectable by max_replicates."""
        return self.direction(pair) != "open" or pair.futile

    def _retire(self) -> None:
        """An algorithm whose pairs with the running algorithms are all settled gets no more seeds."""
        done = []
        for name in self.algorithms:
            live = [p for p in self.pairs if name in (p.a, p.b) and p.a in self.active and p.b in self.active]
            if name in self.active and all(self.settled(p) for p in live):
                done.append(name)
        for name in done:
            self.active.discard(name)

    def stop_reason(self, n: int, last: bool) -> tuple[bool, str]:
        """Whether the dataset stops after this look, and why (one sentence)."""
        live = [p for p in self.pairs if p.a in self.active and p.b in self.active]
        decisions = [self.direction(p) for p in live]
        unsettled = sum(not self.settled(p) for p in live)
        differences = sum(d in ("a_better", "b_better") for d in decisions)
        if self.config.stop == "omnibus" and differences:
            return True, f"a difference between algorithms found at n={n}"
        if unsettled == 0:
            return True, _settled_sentence(self, n)
        if last:
            return True, f"max_replicates reached (n={n}) with {unsettled} pair(s) open"
        return False, f"{unsettled} of {len(self.pairs)} pair(s) open at n={n}"

    def pair_decisions(self, k: int) -> tuple[PairDecision, ...]:
        """Every pair of the family as it stands after look ``k``."""
        adjusted = holm([p.p_rep for p in self.pairs])
        out = []
        for pair, p_adj in zip(self.pairs, adjusted):
            level = self.level_rank.get((pair.a, pair.b), self.config.alpha / len(self.pairs))
            last = pair.looks[-1] if pair.looks else k
            out.append(
                PairDecision(
                    a=pair.a,
                    b=pair.b,
                    n=pair.n,
                    statistic=pair.z[-1] if pair.z else 0.0,
                    boundary=boundaries(self.times, level, self.config.spending, self.config.gamma)[last],
                    p_adjusted=float(min(1.0, p_adj)),
                    decision=self.direction(pair),
                    dataset=self.dataset,
                    p_repeated=pair.p_rep,
                    shift_interval=pair.interval,
                    futile=pair.futile and self.direction(pair) == "open",
                )
            )
        return tuple(out)


def _settled_sentence(trajectory: _Trajectory, n: int) -> str:
    """'every pair settled at n=15: 2 differences, 1 equivalent, 1 no difference detectable by max_replicates'."""
    counts: dict[str, int] = {}
    for pair in trajectory.pairs:
        decision = trajectory.direction(pair)
        if decision in ("a_better", "b_better"):
            key = "difference(s)"
        elif decision == "equivalent":
            key = "equivalent"
        elif pair.futile:
            key = "without a difference detectable by max_replicates"
        else:
            key = "left open with an eliminated algorithm"
        counts[key] = counts.get(key, 0) + 1
    what = "every pair with the control" if trajectory.config.stop == "control" else "every pair"
    return f"{what} settled at n={n}: " + ", ".join(f"{v} {k}" for k, v in counts.items())


def _crossing_sign(pair: _PairState, trajectory: _Trajectory) -> float:
    """The statistic at the first look where it crossed the boundary of its Holm level (its sign is
    the direction of the claim); the last statistic if none did."""
    level = trajectory.level_rank.get((pair.a, pair.b), trajectory.config.alpha)
    bounds = boundaries(trajectory.times, level, trajectory.config.spending, trajectory.config.gamma)
    for k, z in zip(pair.looks, pair.z):
        if abs(z) >= bounds[k]:
            return z
    return pair.z[-1] if pair.z else 0.0


def decide_dataset(
    dataset: str, values: Mapping[str, Sequence[float]], n: int, config: SequentialConfig
) -> DatasetDecision:
    """The decision on ``dataset`` after the look at ``n`` replicates per algorithm.

    values: algorithm -> metric values of replicates 0..n-1 (index = replicate, NaN = failed run,
    ranked worse than every success as the failure policy 'penalize' does); an algorithm eliminated
    at an earlier look needs only the values it was given. n must be one of config.looks(). The
    trajectory is replayed from the first look, so the decision depends on the values only."""
    looks = config.looks()
    if n not in looks:
        raise InputError(
            f"adaptive: n={n} on dataset {dataset!r} is not a look of the design ({', '.join(map(str, looks))})"
        )
    return _replay(dataset, values, config, looks.index(n), until_stop=False)


def race(dataset: str, values: Mapping[str, Sequence[float]], config: SequentialConfig) -> DatasetDecision:
    """What the adaptive design decides on ``dataset`` given every replicate it could run (``values``:
    algorithm -> values of replicates 0..max_replicates-1): the decision at the look where it stops,
    having seen only the replicates it would have run. For simulations and what-if analyses."""
    return _replay(dataset, values, config, len(config.looks()) - 1, until_stop=True)


def _replay(
    dataset: str, values: Mapping[str, Sequence[float]], config: SequentialConfig, target: int, *, until_stop: bool
) -> DatasetDecision:
    looks = config.looks()
    trajectory = _Trajectory(dataset, values, config)
    stopped, reason = False, ""
    for k in range(target + 1):
        trajectory.look(k)
        stopped, reason = trajectory.stop_reason(looks[k], k == len(looks) - 1)
        if stopped and until_stop:
            target = k
            break
    n = looks[target]
    early = tuple(
        a
        for a in trajectory.algorithms
        if trajectory.seen.get(a, 0) < n or (not stopped and a not in trajectory.active)
    )
    return DatasetDecision(
        dataset=dataset,
        look=target,
        n=n,
        stopped=stopped,
        reason=reason,
        pairs=trajectory.pair_decisions(target),
        active=() if stopped else tuple(a for a in trajectory.algorithms if a in trajectory.active),
        eliminated=early,
        replicates=tuple((a, trajectory.seen.get(a, 0)) for a in trajectory.algorithms),
    )


def adjusted_pairwise(
    values_by_dataset: Mapping[str, Mapping[str, Sequence[float]]],
    final_n: Mapping[str, int] | int,
    config: SequentialConfig,
) -> list[PairDecision]:
    """Every dataset's pairs at its last look (``final_n``: per dataset, or one n for all): the
    sequential procedure's decisions and Holm-adjusted repeated p-values, which is what ``expkit
    results`` reports on an adaptive run instead of the fixed-design tests."""
    out: list[PairDecision] = []
    for dataset, values in values_by_dataset.items():
        n = final_n if isinstance(final_n, int) else final_n.get(dataset)
        if n is None:
            raise InputError(f"adaptive: no final replicate count for dataset {dataset!r}; pass final_n[{dataset!r}]")
        out.extend(decide_dataset(dataset, values, n, config).pairs)
    return out


def first_decisive_look(config: SequentialConfig, algorithms: int) -> int | None:
    """The smallest look (replicates per algorithm) at which a pair can be declared a difference at
    all: where the most extreme rank statistic (every run of one algorithm better) crosses the first
    Holm step's boundary; None if no look can. With few replicates the exact rank tests cannot reach
    small p-values, so a ``min_replicates`` below this look only looks without being able to stop."""
    family = algorithms - 1 if config.stop == "control" else algorithms * (algorithms - 1) // 2
    bounds = boundaries(config.times(), config.alpha / max(family, 1), config.spending, config.gamma)
    for n, c in zip(config.looks(), bounds):
        p = 2.0 ** (1 - n) if config.paired else 2.0 / math.comb(2 * n, n)
        if float(special.ndtri(1.0 - p / 2.0)) >= c:
            return n
    return None

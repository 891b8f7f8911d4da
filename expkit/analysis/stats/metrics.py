"""Several metrics: each analysed with its own goal by :func:`~expkit.analysis.stats.analyze`, the
first primary (it drives the verdict), the claims about the others Holm-corrected across metrics.

The family (``CONVENTIONS['secondary_metrics']``): for one comparison — an across-dataset pair a-b, or
a pair a-b on one dataset — the p-values of that comparison on the secondary metrics, each already
Holm-adjusted within its own metric (``p_holm``). ``p_metrics`` is Holm's adjustment of that family; a
secondary claim stands when it is significant within its metric and ``p_metrics < alpha``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from expkit.analysis.stats.analysis import Analysis
from expkit.analysis.stats.conventions import Goal
from expkit.analysis.stats.formulas import holm
from expkit.core.errors import InputError

#: where an across-dataset claim is made (a per-dataset claim names its dataset)
ACROSS = "across datasets"


@dataclass(frozen=True)
class MetricClaim:
    """One comparison on one secondary metric: ``scope`` is a dataset or :data:`ACROSS`; ``p_holm`` is
    the p-value adjusted within the metric, ``p_metrics`` that adjusted again across the secondary
    metrics; ``significant`` = significant within the metric and ``p_metrics < alpha``."""

    metric: str
    scope: str
    a: str
    b: str
    p_holm: float | None
    p_metrics: float | None
    significant: bool
    winner: str | None

    def to_dict(self) -> dict[str, Any]:
        """The claim as a ``stats.json`` record."""
        return {
            "metric": self.metric,
            "role": "secondary",
            "scope": self.scope,
            "a": self.a,
            "b": self.b,
            "p_holm": self.p_holm,
            "p_metrics": self.p_metrics,
            "significant": self.significant,
            "winner": self.winner,
        }


@dataclass(frozen=True, eq=False)
class MetricsAnalysis:
    """The analyses of every listed metric: ``primary`` first, then ``secondary`` in spec order, and
    the secondary claims with their across-metric adjustment."""

    primary: Analysis
    secondary: tuple[Analysis, ...]
    claims: tuple[MetricClaim, ...]

    @property
    def analyses(self) -> tuple[Analysis, ...]:
        """Every metric's analysis, the primary first."""
        return (self.primary, *self.secondary)

    def significant_claims(self) -> tuple[MetricClaim, ...]:
        """The secondary claims that stand after the correction across metrics."""
        return tuple(c for c in self.claims if c.significant)

    def to_dict(self) -> dict[str, Any]:
        """The primary's ``stats.json`` document; with secondary metrics, also ``metrics`` (name, goal,
        role) and ``secondary_metrics`` (each metric's analysis, labelled secondary, and its claims)."""
        doc = self.primary.to_dict()
        if not self.secondary:
            return doc
        doc["metrics"] = [
            {"name": a.metric, "goal": a.goal, "role": "primary" if i == 0 else "secondary"}
            for i, a in enumerate(self.analyses)
        ]
        doc["secondary_metrics"] = [
            {
                "role": "secondary",
                "holm_across_metrics": [c.to_dict() for c in self.claims if c.metric == a.metric],
                **{k: v for k, v in a.to_dict().items() if k not in ("conventions", "references", "schema")},
            }
            for a in self.secondary
        ]
        return doc

    def summary_lines(self) -> list[str]:
        """The primary's summary, then one block per secondary metric: its verdict and the claims that
        stand after the correction across metrics."""
        lines = self.primary.summary_lines()
        if not self.secondary:
            return lines
        names = ", ".join(a.metric for a in self.secondary)
        lines += ["", f"Secondary metrics ({names}; claims Holm-corrected across the secondary metrics):"]
        for a in self.secondary:
            lines.append(f"  [secondary] {a.metric} ({a.goal}): {a.across.verdict}")
            for c in (c for c in self.claims if c.metric == a.metric and c.significant):
                other = c.b if c.winner == c.a else c.a
                where = "across datasets" if c.scope == ACROSS else f"on {c.scope}"
                lines.append(f"    {c.winner} better than {other} {where} (Holm across metrics: p = {_p(c.p_metrics)})")
        return lines


def analyze_metrics(
    metrics: Sequence[tuple[str, Goal]], run: Callable[[str, Goal], Analysis], *, alpha: float
) -> MetricsAnalysis:
    """Analyse each of ``metrics`` (name, goal; the first primary) with ``run(name, goal)`` — the
    single-metric analysis — and adjust the secondary claims across metrics."""
    if not metrics:
        raise InputError("no metric to analyse: list at least one")
    analyses = [run(name, goal) for name, goal in metrics]
    return MetricsAnalysis(analyses[0], tuple(analyses[1:]), _claims(analyses[1:], alpha))


def _claims(secondary: Sequence[Analysis], alpha: float) -> tuple[MetricClaim, ...]:
    """Every comparison on every secondary metric, with Holm across the secondary metrics per comparison."""
    raw: list[tuple[str, str, str, str, float | None, bool, str | None]] = []
    for an in secondary:
        for pair in an.across.pairs:
            if pair.in_family:
                raw.append((an.metric, ACROSS, pair.a, pair.b, _finite(pair.p_holm), pair.significant, pair.winner))
        for r in an.pairwise.itertuples(index=False):
            winner = r.winner if isinstance(r.winner, str) else None
            raw.append((an.metric, str(r.dataset), str(r.a), str(r.b), _finite(r.p_holm), bool(r.significant), winner))
    families: dict[tuple[str, str, str], list[int]] = {}
    for i, (_, scope, a, b, *_rest) in enumerate(raw):
        first, second = sorted((a, b))
        families.setdefault((scope, first, second), []).append(i)
    adjusted: list[float | None] = [None] * len(raw)
    for members in families.values():
        values = holm([float("nan") if (v := raw[i][4]) is None else v for i in members])
        for i, v in zip(members, values):
            adjusted[i] = None if not np.isfinite(v) else float(v)
    claims = []
    for (m, scope, a, b, p_holm, sig, winner), q in zip(raw, adjusted):
        stands = bool(sig and q is not None and q < alpha)
        claims.append(MetricClaim(m, scope, a, b, p_holm, q, stands, winner if stands else None))
    return tuple(claims)


def _finite(value: Any) -> float | None:
    """A p-value as a float, or None when there is none (None, NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"

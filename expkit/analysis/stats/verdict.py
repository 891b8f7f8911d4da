"""The across-dataset verdict in one sentence a reader can paste into a paper, the procedure named, e.g.
"Over 14 datasets the algorithms differ (Friedman test, exact p = 0.0021): A is better than B on 11 of 14
datasets (Wilcoxon signed-rank over datasets, Holm, p = 0.003) and than C on 12 of 14 (p = 0.001); A is
not significantly different from D (p = 0.41)."

:func:`verdict_sentence` builds it from an :class:`~expkit.analysis.stats.results.AcrossDatasets`; more
evidence about a pair (e.g. a Bayesian signed-rank test) joins that pair's parentheses through
``pair_clauses``, and whole clauses through ``extra``. What the sentence claims is what the tests allow:
with three or more algorithms nothing is claimed unless the omnibus test rejects at alpha; a pair is
claimed when its Holm-adjusted Wilcoxon p-value is below alpha too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from expkit.analysis.stats.common import _name_list
from expkit.analysis.stats.results import AcrossDatasets, AcrossPair, BlockTestResult
from expkit.core.fmt import format_p_value

WILCOXON = "Wilcoxon signed-rank over datasets"
#: At most this many winners, and losers per winner, are named; the rest are counted.
_MAX_WINNERS, _MAX_LOSERS = 3, 4


def verdict_sentence(
    across: AcrossDatasets,
    *,
    alpha: float | None = None,
    pair_clauses: Mapping[tuple[str, str], str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The verdict of ``across`` in one sentence (ending with a full stop). ``pair_clauses`` maps a pair
    of algorithms, in either order, to a clause added inside that pair's parentheses after its p-value;
    ``extra`` clauses are appended before the full stop. ``alpha`` defaults to the block's."""
    level = across.alpha if alpha is None else float(alpha)
    if not across.pairs:
        return across.verdict
    clauses = dict(pair_clauses or {})
    if len(across.algorithms) == 2:
        text = _two_algorithms(across.pairs[0], level, clauses)
    else:
        text = _several_algorithms(across, level, clauses)
    for clause in extra:
        text += f"; {clause}"
    return text + "."


def skipped_verdict(algorithms: Sequence[str], has_value: np.ndarray) -> str:
    """Why there is no across-dataset comparison when no dataset has a value of every algorithm."""
    seen = np.any(np.asarray(has_value, dtype=bool).reshape(-1, len(algorithms)), axis=0, keepdims=True)[0]
    never = [a for j, a in enumerate(algorithms) if not bool(seen[j])]
    if never:
        return (
            "no complete dataset, and no test for incomplete datasets applies ("
            f"{_name_list(never)} {'has' if len(never) == 1 else 'have'} no valid run on any dataset): no "
            "across-dataset comparison"
        )
    return "no complete dataset, and the datasets do not connect every pair of algorithms: no across-dataset comparison"


def _p(value: float | None) -> str:
    """'p = 0.0123', or 'p < 1e-300' for an underflow (never 'p = 0')."""
    if value is not None and float(value) == 0.0:
        return "p < 1e-300"
    return f"p = {format_p_value(value)}"


def _clause(clauses: Mapping[tuple[str, str], str], a: str, b: str) -> str:
    text = clauses.get((a, b)) or clauses.get((b, a))
    return f"; {text}" if text else ""


def _two_algorithms(pair: AcrossPair, alpha: float, clauses: Mapping[tuple[str, str], str]) -> str:
    if pair.p is None:
        return f"{pair.a} and {pair.b} cannot be compared over datasets ({pair.note or 'no shared dataset'})"
    extra = _clause(clauses, pair.a, pair.b)
    if pair.significant and pair.winner:
        loser = pair.b if pair.winner == pair.a else pair.a
        won = pair.better_a if pair.winner == pair.a else pair.better_b
        return f"{pair.winner} is better than {loser} on {won} of {pair.n} datasets ({WILCOXON}, {_p(pair.p)}{extra})"
    bound = f" ≥ α = {alpha:g}" if pair.p >= alpha else ""
    floor = min(1.0, 2.0 ** (1 - pair.n))
    few = f"; {pair.n} datasets cannot give p < {alpha:g}" if floor >= alpha else ""
    return (
        f"{pair.a} and {pair.b} are not significantly different over {pair.n} datasets "
        f"({WILCOXON}, {_p(pair.p)}{bound}{few}{extra})"
    )


def _omnibus_label(o: BlockTestResult) -> str:
    """'Friedman test, exact p = 0.0021', 'Skillings-Mack test, Monte-Carlo p = 0.0013 (SE 0.00036)'."""
    name = "Skillings-Mack test" if o.test == "skillings_mack" else "Friedman test"
    if o.method == "exact":
        return f"{name}, exact {_p(o.p)}"
    if o.method == "monte-carlo":
        return f"{name}, Monte-Carlo {_p(o.p)} (SE {o.mc_se:.2g})"
    how = "chi-square" if o.test == "skillings_mack" else "Iman-Davenport"
    return f"{name}, {how} {_p(o.p)}"


def _several_algorithms(across: AcrossDatasets, alpha: float, clauses: Mapping[tuple[str, str], str]) -> str:
    k = len(across.algorithms)
    o = across.omnibus
    if o is None:
        return f"The {k} algorithms could not be compared over datasets: the omnibus test could not be computed"
    label = _omnibus_label(o)
    if o.p >= alpha:
        few = ""
        if o.p_min is not None and o.p_min >= alpha:
            smallest = format_p_value(o.p_min)
            few = f"; {o.n_blocks} datasets cannot give p < {alpha:g}, the smallest possible p is {smallest}"
        return (
            f"No significant difference among the {k} algorithms over {o.n_blocks} datasets "
            f"({label} ≥ α = {alpha:g}{few}); no pairwise claim is made"
        )
    head = f"Over {o.n_blocks} datasets the algorithms differ ({label})"
    procedure = f"{WILCOXON}, Holm" + (
        f" over {sum(p.in_family for p in across.pairs)} comparisons with {across.control}" if across.control else ""
    )
    claimed = [p for p in across.pairs if p.significant and p.winner]
    if not claimed and across.control:
        return f"{head}, but no algorithm is significantly different from {across.control} ({procedure})"
    if not claimed:
        return f"{head}, but no pair is significantly different ({procedure})"
    parts = (
        _control_claims(across, claimed, procedure, clauses)
        if across.control
        else _all_claims(across, claimed, procedure, clauses)
    )
    return f"{head}: " + "; ".join(parts)


def _order(across: AcrossDatasets) -> dict[str, float]:
    """Sort key of each algorithm: its average rank, or its display position without complete datasets."""
    if across.average_ranks is not None:
        return dict(zip(across.algorithms, across.average_ranks))
    return {a: float(i) for i, a in enumerate(across.algorithms)}


def _claim(p: AcrossPair, subject: str, first: bool, procedure: str, clauses: Mapping[tuple[str, str], str]) -> str:
    """'than B on 9 of 10 datasets (procedure, p = ...)' (the first claim) or 'than C on 10 of 10 (p = ...)',
    said of ``subject``; the count is the datasets where the pair's winner is better."""
    other = p.b if p.a == subject else p.a
    count = p.better_a if p.winner == p.a else p.better_b
    inside = f"{procedure}, {_p(p.p_holm)}" if first else _p(p.p_holm)
    return f"than {other} on {count} of {p.n}{' datasets' if first else ''} ({inside}{_clause(clauses, p.a, p.b)})"


def _all_claims(
    across: AcrossDatasets, claimed: list[AcrossPair], procedure: str, clauses: Mapping[tuple[str, str], str]
) -> list[str]:
    rank = _order(across)
    winners = sorted({p.winner for p in claimed if p.winner}, key=lambda a: (rank[a], across.algorithms.index(a)))
    parts: list[str] = []
    shown = 0
    for w in winners[:_MAX_WINNERS]:
        mine = sorted((p for p in claimed if p.winner == w), key=lambda p: rank[p.b if p.a == w else p.a])[:_MAX_LOSERS]
        texts = [_claim(p, w, not parts and i == 0, procedure, clauses) for i, p in enumerate(mine)]
        parts.append(f"{w} is better " + " and ".join(texts))
        shown += len(mine)
    top = min(across.algorithms, key=lambda a: (rank[a], across.algorithms.index(a)))
    same = [p for p in across.pairs if top in (p.a, p.b) and p.in_family and p.p is not None and not p.significant]
    if same:
        parts.append(_not_different(top, same, clauses))
    if len(claimed) > shown:
        parts.append(f"{len(claimed) - shown} more significant pair(s) are listed in stats.json")
    return parts


def _control_claims(
    across: AcrossDatasets, claimed: list[AcrossPair], procedure: str, clauses: Mapping[tuple[str, str], str]
) -> list[str]:
    c = across.control or ""
    rank = _order(across)
    parts: list[str] = []
    for better, word in ((True, "better"), (False, "worse")):
        mine = sorted((p for p in claimed if (p.winner == c) == better), key=lambda p: rank[p.b if p.a == c else p.a])
        if mine:
            texts = [_claim(p, c, not parts and i == 0, procedure, clauses) for i, p in enumerate(mine)]
            parts.append(f"{c} is {word} " + " and ".join(texts))
    same = [p for p in across.pairs if p.in_family and p.p is not None and not p.significant]
    if same:
        parts.append(_not_different(c, same, clauses))
    return parts


def _not_different(name: str, pairs: list[AcrossPair], clauses: Mapping[tuple[str, str], str]) -> str:
    """'A is not significantly different from D (p = 0.41) or E (p = 0.2)'."""
    texts = [f"{p.b if p.a == name else p.a} ({_p(p.p_holm)}{_clause(clauses, p.a, p.b)})" for p in pairs[:_MAX_LOSERS]]
    more = f" and {len(pairs) - _MAX_LOSERS} more" if len(pairs) > _MAX_LOSERS else ""
    return f"{name} is not significantly different from " + " or ".join(texts) + more

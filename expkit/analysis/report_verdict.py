"""The report's across-dataset parts: the verdict sentence in LaTeX, the groups the critical-difference
diagram joins (from the primary procedure, the pairwise Wilcoxon tests with Holm), and the check of
``--control``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from expkit.analysis.plots.cd_diagram import significance_cliques
from expkit.analysis.stats import AcrossDatasets
from expkit.core.errors import InputError
from expkit.core.fmt import format_p_value

#: Unicode in the verdict sentence and what it becomes in LaTeX (math mode where it is maths).
_LATEX_SYMBOLS = {"≥": r"$\geq$", "≤": r"$\leq$", "α": r"$\alpha$", "χ²": r"$\chi^2$", "–": "--"}
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_P_VALUE = re.compile(r"\bp ([=<]) ([0-9.]+(?:e[+-]?[0-9]+)?)")


def latex_verdict(sentence: str) -> str:
    """The verdict sentence for a LaTeX caption: specials escaped, 'p = 0.003' as ``$p = 0.003$``,
    1e-300 as ``10^{-300}``, and α, ≥, ≤ in math mode (no Unicode that pdflatex rejects)."""
    text = "".join(LATEX_SPECIALS.get(ch, ch) for ch in sentence)

    def p_value(m: re.Match[str]) -> str:
        number = m.group(2)
        if "e" in number:
            mant, exp = number.split("e")
            number = (f"{mant}\\times" if mant != "1" else "") + f"10^{{{int(exp)}}}"
        return f"$p {m.group(1)} {number}$"

    text = _P_VALUE.sub(p_value, text)
    for symbol, latex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def cd_groups(across: AcrossDatasets) -> dict[str, Any]:
    """The bars of the critical-difference diagram and their label, as keyword arguments of
    :func:`~expkit.analysis.plots.plot_cd_diagram` (``groups``, ``groups_label``): the maximal groups
    of algorithms, consecutive in average rank, with no pair claimed different by the primary
    procedure; with a control, one bar per algorithm not significantly different from the control."""
    ranks = dict(zip(across.algorithms, across.average_ranks or ()))
    claimed = {frozenset((p.a, p.b)) for p in across.pairs if p.significant}
    if across.control is None:
        label = "Wilcoxon signed-rank, Holm" if len(across.algorithms) > 2 else "Wilcoxon signed-rank"
        groups = significance_cliques(ranks, lambda a, b: frozenset((a, b)) in claimed)
        return {"groups": groups, "groups_label": label}
    c = across.control
    same = [p.b if p.a == c else p.a for p in across.pairs if p.in_family and not p.significant]
    pairs = [tuple(sorted((c, other), key=lambda a: ranks[a])) for other in sorted(same, key=lambda a: ranks[a])]
    return {"groups": pairs, "groups_label": f"not different from the control {c} (Wilcoxon, Holm)"}


def check_run_control(control: str | None, algorithms: Sequence[str], run_id: str) -> str | None:
    """``--control`` when it names an algorithm of the run; InputError (exit 2) otherwise."""
    if control is not None and control not in algorithms:
        raise InputError(f"--control {control!r}: not an algorithm of run {run_id}; use one of {', '.join(algorithms)}")
    return control


def p_text(value: float | None) -> str:
    """A p-value with its relation for running text: 'p = 0.0123', or 'p < 1e-300' for an underflow
    (never 'p = 0'); 'p = n/a' when there is none."""
    if value is not None and float(value) == 0.0:
        return "p < 1e-300"
    return f"p = {format_p_value(value)}"


def across_context(across: AcrossDatasets) -> dict[str, Any]:
    """What the report templates show under "Across datasets" besides the verdict: the pairs the
    primary procedure claims, its family, and which datasets were incomplete or left out."""
    claimed = [
        f"{p.winner} > {p.b if p.winner == p.a else p.a} ({p_text(p.p_holm)})"
        for p in across.pairs
        if p.significant and p.winner
    ]
    partial = {d for d, _ in across.incomplete}
    return {
        "across_family": f"the {sum(p.in_family for p in across.pairs)} comparisons with {across.control}"
        if across.control
        else "all pairs",
        "across_claims": claimed,
        "across_incomplete": [f"{d} (no value of {', '.join(m)})" for d, m in across.incomplete]
        if across.pairs
        else [],
        "across_left_out": [d for d in across.excluded if d not in partial or not across.pairs],
    }

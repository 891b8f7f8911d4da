"""The ``{placeholders}`` of a spec's command lines: finding them, filling them in, and checking that every
one of them can be filled for every cell (``{{``/``}}`` are literal braces)."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from expkit.spec.model import Experiment, ExperimentSpec, Loc, LocatedValueError

#: Placeholders a cell's command and args may contain, besides ``{params.NAME}``.
CELL_PLACEHOLDERS = ("algorithm", "dataset", "seed", "replicate", "output_dir")

_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PARAMS_PREFIX = "params."


def placeholders(template: str) -> list[str]:
    """Names of the ``{placeholders}`` in ``template``. Raises ValueError on a stray brace."""
    names = []
    for m in _TOKEN_RE.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise ValueError(f"stray {tok!r} in {template!r}: write '{tok}{tok}' for a literal brace")
        names.append(m.group(1).strip())
    return names


def substitute(template: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` with ``values[name]`` (``{{``/``}}`` are literal braces).

    Strings are inserted as they are; other values as JSON (``true``, ``0.1``, ``[1, 2]``).
    """

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        value = values[m.group(1).strip()]
        return value if isinstance(value, str) else json.dumps(value)

    return _TOKEN_RE.sub(repl, template)


def check_placeholders(exp: Experiment) -> None:
    """Check that every placeholder of the command lines can be filled in.

    Raises :class:`~expkit.spec.model.LocatedValueError` for the first one that cannot (a stray brace, an
    unknown name, a parameter not defined for every cell), located at the command-line item.
    """
    spec = exp.spec
    for field, items, per_cell in _command_lines(spec):
        for i, item in enumerate(items):
            loc: Loc = ("spec", *field.split("."), i)
            try:
                names = placeholders(item)
            except ValueError as err:
                raise LocatedValueError(loc, str(err)) from None
            for name in names:
                problem = _placeholder_problem(spec, name, per_cell)
                if problem is not None:
                    raise LocatedValueError(loc, problem)


def _command_lines(spec: ExperimentSpec) -> Iterator[tuple[str, Sequence[str], bool]]:
    """``(field, items, per_cell)`` of each command line: a cell's, and the prepare step's (run once)."""
    yield "command", spec.command, True
    yield "args", spec.args, True
    if spec.prepare:
        yield "prepare.command", spec.prepare.command, False
        yield "prepare.args", spec.prepare.args, False


def _placeholder_problem(spec: ExperimentSpec, name: str, per_cell: bool) -> str | None:
    """What is wrong with placeholder ``name`` in a command line, or None when it can be filled."""
    if name.startswith(_PARAMS_PREFIX):
        pname = name[len(_PARAMS_PREFIX) :]
        if _resolvable(spec, pname) if per_cell else pname in spec.params:
            return None
        scope = (
            "in spec.params, or in the params of every algorithm or dataset"
            if per_cell
            else "in spec.params (prepare runs once, outside any cell)"
        )
        return f"placeholder {{{name}}} names a parameter that is not defined: define {pname!r} {scope}"
    if per_cell and name in CELL_PLACEHOLDERS:
        return None
    allowed = (", ".join("{" + n + "}" for n in CELL_PLACEHOLDERS) + ", {params.NAME}") if per_cell else "{params.NAME}"
    close = difflib.get_close_matches(name, list(CELL_PLACEHOLDERS), n=1) if per_cell else []
    hint = f"did you mean {{{close[0]}}}? " if close else ""
    return f"unknown placeholder {{{name}}}: {hint}allowed here: {allowed} (write '{{{{' for a literal brace)"


def _resolvable(spec: ExperimentSpec, name: str) -> bool:
    """Whether ``{params.NAME}`` resolves for every cell.

    It must be defined globally, or for each (algorithm, dataset) pair in the algorithm's or the dataset's
    params. No pair lacks it exactly when every algorithm or every dataset has it (else an algorithm
    without it meets a dataset without it).
    """
    return (
        name in spec.params
        or all(name in a.params for a in spec.algorithms)
        or all(name in d.params for d in spec.datasets)
    )

"""``-p key=value`` parameter overrides: parsing them, and setting them wherever the spec defines the parameter."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from expkit.core.errors import InputError
from expkit.spec.model import PARAM_NAME_RE, Algorithm, Dataset, Experiment


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings. Values are read as JSON when they parse (``10``, ``true``,
    ``[1,2]``), as plain strings otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"-p {item!r}: write parameter overrides as key=value, e.g. -p budget=200")
        if not PARAM_NAME_RE.match(key):
            raise InputError(f"-p {item!r}: {key!r} is not a parameter name (letters, digits, '_' and '-')")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return out


def apply_overrides(exp: Experiment, overrides: Mapping[str, Any], where: str = "<spec>") -> Experiment:
    """Return the experiment with each override set wherever the parameter is defined.

    An override wins over the global, dataset and algorithm values alike, so the resolved spec is
    self-contained: running it without overrides gives the same cells.
    """
    if not overrides:
        return exp
    spec = exp.spec
    _check_defined(exp, overrides, where)

    def patched(params: Mapping[str, Any], add: bool) -> dict[str, Any]:
        out = dict(params)
        for k, v in overrides.items():
            if add or k in out:
                out[k] = v
        return out

    new_spec = spec.model_copy(
        update={
            "params": patched(spec.params, add=True),
            "algorithms": [a.model_copy(update={"params": patched(a.params, add=False)}) for a in spec.algorithms],
            "datasets": [d.model_copy(update={"params": patched(d.params, add=False)}) for d in spec.datasets],
        }
    )
    return exp.model_copy(update={"spec": new_spec})


def _check_defined(exp: Experiment, overrides: Mapping[str, Any], where: str) -> None:
    """Raise :class:`InputError` for an override of a parameter the spec does not define anywhere."""
    spec = exp.spec
    entries: list[Algorithm | Dataset] = [*spec.algorithms, *spec.datasets]
    defined = set(spec.params)
    for entry in entries:
        defined |= set(entry.params)
    unknown = sorted(set(overrides) - defined)
    if unknown:
        known = ", ".join(sorted(defined)) or "none"
        close = difflib.get_close_matches(unknown[0], sorted(defined), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"-p {unknown[0]}: {where} defines no parameter {unknown[0]!r}{hint}; parameters in the spec: {known}"
        )

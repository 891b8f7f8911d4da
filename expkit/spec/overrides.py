"""``-p key=value`` parameter overrides: parsing them, and setting them wherever the spec defines the parameter."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from expkit.core.errors import InputError
from expkit.core.safejson import JSONLimitError, parse_json
from expkit.spec.model import PARAM_NAME_RE, Algorithm, Dataset, Experiment, non_finite_number


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings. Values are read as JSON when they parse (``10``, ``true``,
    ``[1,2]``), as plain strings otherwise. JSON over the limits of
    :func:`~expkit.core.safejson.parse_json` (nesting, integer digits) or holding NaN or infinity is
    an :class:`InputError`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"-p {item!r}: write parameter overrides as key=value, e.g. -p budget=200")
        if not PARAM_NAME_RE.match(key):
            raise InputError(f"-p {item!r}: {key!r} is not a parameter name (letters, digits, '_' and '-')")
        out[key] = _override_value(key, raw)
    return out


def _override_value(key: str, raw: str) -> Any:
    """The value of ``-p key=raw``: JSON when it parses, else the text itself."""
    try:
        value: Any = parse_json(raw)
    except JSONLimitError as err:
        raise InputError(
            f"-p {key}: the value {err}: give a smaller value, or put it in a file the runs read"
        ) from None
    except ValueError:
        return raw
    loc = non_finite_number(value)
    if loc is not None:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        raise InputError(
            f"-p {key}{at}: must be a finite number (JSON has no NaN or infinity): write a number, "
            f"or quote it to pass the text, e.g. -p '{key}=\"NaN\"'"
        )
    return value


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

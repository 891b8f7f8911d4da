"""Small helpers shared by the statistics modules: silencing scipy on degenerate slices, the best
algorithms of a row, and the wording of notes (lists of names, ranges of sizes)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def _best_names(row: np.ndarray, algs: tuple[str, ...], goal: str) -> tuple[str, ...]:
    """The algorithms whose value in ``row`` is best for ``goal`` (several on a tie; none without values)."""
    if row.size == 0 or np.all(np.isnan(row)):
        return ()
    best = np.nanmax(row) if goal == "maximize" else np.nanmin(row)
    return tuple(a for a, v in zip(algs, row) if v == best)


def _sizes_text(sizes: np.ndarray) -> str:
    """Sample sizes as '5' or as a range '3-5'."""
    uniq = sorted({int(s) for s in sizes})
    return str(uniq[0]) if len(uniq) == 1 else f"{uniq[0]}-{uniq[-1]}"


def _name_list(names: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` names, comma-separated, then how many more."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _opt(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns on degenerate slices; those cases are reported in words, so silence the warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield

"""How expkit prints numbers in text meant for people (terminal summaries, reports, verdicts).

One rule everywhere: ``digits`` significant digits in Python's ``g`` format (``0.0123``, ``12.3``,
``1.23e+04``), and a marker instead of a number when there is none (``None``, NaN or infinity).
p-values have one extra rule, in their own function: a p-value of exactly 0 is a floating-point
underflow, not a certainty, so it reads ``<1e-300``.

Machine-readable outputs (``stats.json``, CSV) keep full precision and never go through here.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

#: What stands in for a number that is missing or not finite, in running text.
MISSING = "n/a"
#: How a p-value of exactly 0 reads: smaller than the smallest double scipy can return before underflowing.
P_UNDERFLOW = "<1e-300"


def format_number(value: SupportsFloat | None, digits: int = 3, *, missing: str = MISSING) -> str:
    """``value`` with ``digits`` significant digits (``f"{value:.{digits}g}"``), or ``missing`` when
    it is None, NaN or infinite. Tables pass their own ``missing`` marker (the report uses "–")."""
    if value is None or not math.isfinite(float(value)):
        return missing
    return f"{value:.{digits}g}"


def format_p_value(value: SupportsFloat | None, digits: int = 3, *, missing: str = MISSING) -> str:
    """A p-value like :func:`format_number`, except that exactly 0 (underflow) reads ``<1e-300``."""
    if value is not None and float(value) == 0:
        return P_UNDERFLOW
    return format_number(value, digits, missing=missing)

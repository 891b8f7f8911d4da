"""Bounded JSON parsing for input expkit does not control.

Objects read back from a store or a bundle (``manifest.json``, ``run.json``, ``result.json``) and
values given on the command line (``-p key=value``) may come from anyone. :func:`load_json` parses
them with limits: at most ``max_bytes`` (checked before parsing), nesting at most ``max_depth``
levels deep, and integers of at most :data:`MAX_INT_DIGITS` digits (Python's own limit on
converting a string to an int). Anything over a limit, or not JSON, is one
:class:`~expkit.core.errors.ExpkitError` (the caller's class) naming what was read, the problem and
the caller's fix — never a ``RecursionError``, a ``MemoryError`` or an unbounded parse.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from expkit.core.errors import ArtifactError, ExpkitError

#: The default size limit of one JSON document (the same as ``result.json``'s cap).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: The default nesting limit: lists and objects inside each other at most this deep.
MAX_JSON_DEPTH = 100
#: The most digits an integer may have (Python refuses to convert longer digit strings).
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300


class JSONLimitError(ValueError):
    """JSON over a limit of :func:`parse_json`; ``str(err)`` is the problem as a predicate
    (``is nested more than 100 levels deep``), to follow the name of the input."""


def parse_json(data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``data`` parsed as JSON within the limits. Raises :class:`JSONLimitError` for a limit, and
    :class:`ValueError` (``json.JSONDecodeError``, ``UnicodeDecodeError``) when it is not JSON."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise JSONLimitError(f"is {size} bytes, over the {max_bytes}-byte limit")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise JSONLimitError(f"is nested more than {max_depth} levels deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # the only other ValueError: an integer literal over Python's digit limit
        raise JSONLimitError(f"has an integer with more than {MAX_INT_DIGITS} digits") from None
    if _opening_brackets(data) > max_depth and depth_exceeds(doc, max_depth):
        raise JSONLimitError(f"is nested more than {max_depth} levels deep")
    return doc


def load_json(
    data: bytes | str,
    *,
    what: str,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[ExpkitError] = ArtifactError,
    fix: str = "",
) -> Any:
    """``data`` parsed as JSON within the limits (see :func:`parse_json`); otherwise
    ``error(f"{what} <problem>[: {fix}]")``, one line.

    ``what`` names the input (``run-x/manifest.json in ./expkit-runs``); ``fix`` says what to do
    about it. Memory stays proportional to ``max_bytes``.
    """
    tail = f": {fix}" if fix else ""
    try:
        return parse_json(data, max_bytes=max_bytes, max_depth=max_depth)
    except JSONLimitError as err:
        raise error(f"{what} {err}{tail}") from None
    except UnicodeDecodeError as err:
        raise error(f"{what} is not UTF-8 text ({err.reason} at byte {err.start}){tail}") from None
    except ValueError as err:
        raise error(f"{what} is not valid JSON ({err}){tail}") from None


def _opening_brackets(data: bytes | str) -> int:
    """How many ``[`` and ``{`` ``data`` holds (an upper bound of its nesting depth)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def depth_exceeds(doc: Any, max_depth: int) -> bool:
    """Whether lists and dicts in the parsed JSON ``doc`` (a tree) are nested more than ``max_depth``
    levels deep. Iterative, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(doc, 1)] if isinstance(doc, (list, dict)) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (list, dict)):
                stack.append((child, depth + 1))
    return False

"""Encoding values for the Argo workflow template (``templates/argo/workflow.yaml.j2``): every value is
written as one-line JSON (YAML flow), and text Argo carries is kept free of Argo template tags."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jinja2

_SURROGATE_PAIR_RE = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


class _Encoded(str):
    """Text already encoded for the YAML template."""


def yaml_value(value: Any) -> str:
    """``value`` as one-line YAML flow: JSON, except that characters outside the Basic Multilingual
    Plane use YAML's ``\\UXXXXXXXX`` escape (YAML parsers do not join JSON's surrogate pairs)."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)

    def join(m: re.Match[str]) -> str:
        code = 0x10000 + ((int(m.group(2), 16) - 0xD800) << 10) + (int(m.group(3), 16) - 0xDC00)
        return f"{m.group(1)}\\U{code:08x}"

    return _SURROGATE_PAIR_RE.sub(join, text)


def _j(value: Any) -> _Encoded:
    return value if isinstance(value, _Encoded) else _Encoded(yaml_value(value))


def argo_json(value: Any) -> str:
    """JSON for a value that Argo carries as text: keys sorted, ``{`` and ``}`` inside strings
    written as ``\\u007b``/``\\u007d`` so the text can never contain an Argo template tag
    (structural braces never form ``{{``: an object opens after ``[``, ``: ``, ``, `` or the start)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=True)
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            elif ch in "{}":
                out.append("\\u007b" if ch == "{" else "\\u007d")
                continue
        elif ch == '"':
            in_string = True
        out.append(ch)
    return "".join(out)


def raw_value(value: Any) -> str:
    """How a parameter value appears in a command line (as :func:`expkit.spec.substitute` inserts it)."""
    return value if isinstance(value, str) else json.dumps(value)


@lru_cache(maxsize=4)
def template_environment(directory: str) -> jinja2.Environment:
    """The jinja2 environment of the workflow template: ``[[ ]]`` delimiters, every value JSON-encoded."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_j,  # every [[ ... ]] is encoded, even without "| j"
    )
    env.filters["j"] = _j
    return env


__all__ = ["argo_json", "raw_value", "template_environment", "yaml_value"]

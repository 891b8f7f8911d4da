"""The HTML report's summary as headings, tables and wrapped paragraphs instead of preformatted text.

The terminal summary (``header_lines`` + ``Analysis.summary_lines``) is plain text: a line at the left
margin starts a block, indented lines below it belong to it. The HTML report shows the same lines so
that they wrap at any window width: a block whose first line ends with ``:`` becomes a heading, any other
first line a paragraph; its indented lines become a two-column table when each reads ``label: text``
(per dataset, across datasets) and a list otherwise (``- `` notes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: An indented line ``label: text`` with a short label (a dataset name, "average ranks (1 = best)").
_LABELLED = re.compile(r"^(?P<label>[^:]{1,80}):\s+(?P<text>.+)$")


def summary_blocks(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The summary ``lines`` grouped for the HTML template: each block has ``kind`` ("heading" or
    "paragraph") and ``text``, and, when indented lines follow it, ``rows`` (``(label, text)`` pairs)
    or ``bullets`` (strings)."""
    blocks: list[dict[str, Any]] = []
    children: list[list[str]] = []
    for line in lines:
        if line.startswith(" ") and blocks:
            children[-1].append(line.strip())
            continue
        text = line.strip()
        heading = text.endswith(":")
        blocks.append({"kind": "heading" if heading else "paragraph", "text": text.rstrip(":") if heading else text})
        children.append([])
    for block, kids in zip(blocks, children):
        block["rows"], block["bullets"] = _rows_or_items(kids)
    return blocks


def _rows_or_items(lines: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """A table's rows when every line is ``label: text``, otherwise list items (``- `` stripped)."""
    if not lines:
        return [], []
    matches = [_LABELLED.match(line) for line in lines]
    if all(m is not None and not line.startswith("- ") for m, line in zip(matches, lines)):
        return [(m.group("label"), m.group("text")) for m in matches if m is not None], []
    return [], [line[2:] if line.startswith("- ") else line for line in lines]

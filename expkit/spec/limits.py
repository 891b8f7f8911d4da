"""Limits on a spec's YAML, checked before anything is built from it.

YAML aliases let a few hundred bytes stand for billions of values (ten levels of nine aliases each
expand to 3.5e9), and brackets may nest as deep as the file is long; Python objects built from
either take unbounded memory or overflow the stack. So before a spec is constructed, one pass over
the parser's events (:func:`check_yaml_limits`, linear in the text, no objects built) refuses:

* more than :data:`MAX_SPEC_NODES` values once every alias is expanded (what validation, hashing
  and writing the resolved spec would otherwise walk);
* lists and mappings nested more than :data:`MAX_SPEC_DEPTH` levels deep, aliases included;
* an alias inside the value its anchor names (a value containing itself).

Files are read at most :data:`MAX_SPEC_BYTES`, and integers of more than
:data:`~expkit.core.safejson.MAX_INT_DIGITS` digits are refused where they are constructed
(:func:`construct_int`). Each is a :class:`~expkit.core.errors.SpecError` naming the file, the line
and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from expkit.core.errors import SpecError
from expkit.core.safejson import MAX_INT_DIGITS

#: The largest spec file (or stored spec) expkit reads. Specs are a few KB; thousands of datasets fit.
MAX_SPEC_BYTES = 4 * 1024 * 1024
#: Lists and mappings nested in each other at most this deep (the spec itself needs 4 or 5 levels).
MAX_SPEC_DEPTH = 100
#: Values (scalars, lists, mappings) in a spec once its aliases are expanded.
MAX_SPEC_NODES = 200_000


class NumberTooLong(yaml.constructor.ConstructorError):
    """An integer literal with more digits than Python converts; ``problem_mark`` is where it starts."""


def construct_int(loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.ScalarNode) -> int:
    """PyYAML's integer constructor, refusing more than :data:`MAX_INT_DIGITS` digits with a located error."""
    text = str(node.value)
    if len(text) > MAX_INT_DIGITS:
        digits = sum(ch.isdigit() for ch in text)
        if digits > MAX_INT_DIGITS:
            raise NumberTooLong(
                None,
                None,
                f"the integer has {digits} digits, more than {MAX_INT_DIGITS}: use a smaller number, "
                "or quote it to make it a string",
                node.start_mark,
            )
    value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    return value


@dataclass(slots=True)
class _Open:
    """A list or mapping whose events are being read."""

    anchor: str | None
    start: int  # the value count when it started (itself included)
    mapping: bool
    height: int = 0  # levels of lists and mappings below it
    index: int = 0  # a list: the position of the next item
    key: str | int | None = None  # a mapping: the key of the value being read
    at_key: bool = True  # a mapping: the next value read is a key


class _LimitCheck:
    """One pass over the events of a YAML document, counting expanded values and nesting."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.open: list[_Open] = []
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded values, height)
        self.values = 0
        self.aliases = False

    def feed(self, event: yaml.Event) -> None:
        """Account for one event; raise :class:`SpecError` when a limit is passed."""
        if type(event) is yaml.ScalarEvent:  # the most frequent event first
            self.values += 1
            if event.anchor is not None:
                self.anchors[event.anchor] = (1, 0)
            self._child(0, event.value)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(self.open) >= MAX_SPEC_DEPTH:
                self._fail(event, f"is nested more than {MAX_SPEC_DEPTH} levels deep: flatten it")
            self.values += 1
            self.open.append(_Open(event.anchor, self.values, isinstance(event, yaml.MappingStartEvent)))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = self.open.pop()
            if done.anchor is not None:
                self.anchors[done.anchor] = (self.values - done.start + 1, done.height + 1)
            self._child(done.height + 1, None)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)
        if self.values > MAX_SPEC_NODES:
            what = "aliases expand it to" if self.aliases else "it has"
            self._fail(
                event,
                f"{what} more than {MAX_SPEC_NODES:,} values: write the values out without nesting "
                "aliases in aliases, or make the spec smaller",
            )

    def _alias(self, event: yaml.AliasEvent) -> None:
        self.aliases = True
        name = str(event.anchor)
        if any(o.anchor == name for o in self.open):
            self._fail(event, f"the alias *{name} is inside the value &{name} names: a value cannot contain itself")
        size, height = self.anchors.get(name, (1, 0))  # an unknown alias: the parser reports it
        if len(self.open) + height > MAX_SPEC_DEPTH:
            self._fail(event, f"the alias *{name} nests values more than {MAX_SPEC_DEPTH} levels deep: flatten it")
        self.values += size
        self._child(height, None)

    def _child(self, height: int, scalar: str | None) -> None:
        """A value of the innermost open list or mapping is complete."""
        if not self.open:
            return
        parent = self.open[-1]
        if height > parent.height:
            parent.height = height
        if not parent.mapping:
            parent.index += 1
        elif parent.at_key:
            parent.key, parent.at_key = (scalar if scalar is not None else "?"), False
        else:
            parent.at_key = True

    def _fail(self, event: yaml.Event, problem: str) -> None:
        loc: list[str | int] = []
        for o in self.open:
            if o.mapping and o.at_key:
                break  # inside a key: stop at the mapping
            loc.append(o.index if not o.mapping else (o.key if o.key is not None else "?"))
        keys = [i for i, part in enumerate(loc) if isinstance(part, str)]
        loc = loc[: min(keys[-1] + 1 if keys else len(loc), 8)]
        field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        mark = event.start_mark
        raise SpecError(problem, path=self.where, field=field or None, line=mark.line + 1 if mark else None)


def check_yaml_limits(text: str, where: str, *, fast: bool) -> None:
    """Refuse a YAML document over the limits (see the module docstring) with one located
    :class:`SpecError`. YAML syntax errors are left to the parser that builds the document.
    ``fast`` reads the events with libyaml."""
    check = _LimitCheck(where)
    loader = yaml.CSafeLoader if fast else yaml.SafeLoader
    try:
        for event in yaml.parse(text, Loader=loader):
            check.feed(event)
    except yaml.YAMLError:
        if not fast:
            return
        # libyaml stops at its own limits (1,000 levels of brackets) before this check's: go over
        # the events again with PyYAML's parser (iterative too), which reads as far as it can.
        check_yaml_limits(text, where, fast=False)

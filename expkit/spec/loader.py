"""Stage 1: loading the experiment spec (``apiVersion: expkit/v1``, ``kind: Experiment``) from YAML.

Loading is strict: unknown fields, wrong types, duplicate keys and names, bad names and unknown
placeholders are rejected with a :class:`~expkit.core.errors.SpecError` whose message names the file,
the line where known, the field path and the fix. Nothing here prints; warnings are returned on
:class:`LoadedSpec`. Hostile YAML is refused before anything is built from it: files over
:data:`~expkit.spec.limits.MAX_SPEC_BYTES`, alias bombs, deep nesting and overlong integers (see
:mod:`expkit.spec.limits`).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from expkit.core.errors import SpecError
from expkit.spec.limits import MAX_SPEC_BYTES, NumberTooLong, check_yaml_limits, construct_int
from expkit.spec.model import Experiment, Loc, LocatedValueError, dump_experiment, env_warnings, is_pinned, spec_sha256
from expkit.spec.overrides import apply_overrides, parse_overrides
from expkit.spec.placeholders import check_placeholders


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, with overrides applied, and what loading it noticed."""

    experiment: Experiment
    path: Path | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        """The directory runs execute in (the spec file's directory)."""
        return (self.path.parent if self.path else Path.cwd()).resolve()

    @property
    def name(self) -> str:
        """The experiment's name (``metadata.name``)."""
        return self.experiment.metadata.name

    def to_yaml(self) -> str:
        """The resolved spec as YAML: overrides applied, defaults written out."""
        return dump_experiment(self.experiment)

    @property
    def sha256(self) -> str:
        """sha256 of the resolved spec (see :func:`~expkit.spec.model.spec_sha256`)."""
        return spec_sha256(self.experiment)


def load_spec(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> LoadedSpec:
    """Read, parse and validate a spec file, then apply ``-p key=value`` overrides.

    Raises :class:`SpecError` (exit code 2) for anything wrong with the file or the overrides.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)  # never more: the path may name a device or a huge file
        _check_size(len(raw), str(path))
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError("file not found: check the path", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(
            f"cannot read the file ({err.__class__.__name__}): check it is a readable UTF-8 text file", path=str(path)
        ) from err
    return load_spec_text(text, path=p, overrides=overrides)


def _check_size(size: int, where: str) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"the spec is larger than {MAX_SPEC_BYTES} bytes, the limit of a spec file: keep large data in "
            "files the runs read, not in the spec",
            path=where,
        )


def load_spec_text(
    text: str, *, path: Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> LoadedSpec:
    """Like :func:`load_spec` for spec text already in memory (``path`` is only used in messages)."""
    where = str(path) if path else "<spec>"
    if len(text) > MAX_SPEC_BYTES // 4:
        _check_size(len(text.encode("utf-8", "surrogatepass")), where)
    check_yaml_limits(text, where, fast=_FastUniqueKeyLoader is not None)
    data, node = _parse_document(text, where)
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as err:
        raise _spec_error_from_validation(err, data, node, where) from None
    try:
        check_placeholders(experiment)
    except LocatedValueError as err:
        raise SpecError(str(err), path=where, field=_format_loc(err.loc), line=_line_of(node, err.loc)) from None
    parsed = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    experiment = apply_overrides(experiment, parsed, where)
    warnings: list[str] = []
    if not is_pinned(experiment.spec.image):
        warnings.append(
            f"{where}: spec.image: {experiment.spec.image!r} is not pinned by digest; local runs go ahead, "
            "but 'expkit submit' will refuse it (run 'expkit pin' or write 'repo:tag@sha256:<digest>')"
        )
    warnings.extend(env_warnings(experiment, where))
    return LoadedSpec(experiment=experiment, path=path, overrides=parsed, warnings=tuple(warnings))


# ---------------------------------------------------------------------------------------------
# YAML parsing: duplicate keys are errors, libyaml when PyYAML has it
# ---------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key; ``problem_mark`` is the repeated key's position."""


def _construct_mapping(
    loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Hashable, Any]:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKeyError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].line + 1}): keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", construct_int)

#: The same loader on libyaml's C parser (ten times faster on a spec with thousands of datasets), or None
#: when PyYAML was built without libyaml.
_FastUniqueKeyLoader: type[yaml.CSafeLoader] | None = None

if getattr(yaml, "__with_libyaml__", False):

    class _CUniqueKeyLoader(yaml.CSafeLoader):
        """CSafeLoader that rejects duplicate mapping keys instead of keeping the last one."""

    _CUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _CUniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    _FastUniqueKeyLoader = _CUniqueKeyLoader


class _Loader(Protocol):
    """What :func:`_load_with` needs of a PyYAML loader (Python or libyaml)."""

    def get_single_node(self) -> yaml.Node | None: ...

    def construct_document(self, node: yaml.Node) -> Any: ...

    def dispose(self) -> None: ...


def _load_with(make_loader: Callable[[str], _Loader], text: str) -> tuple[Any, yaml.Node | None]:
    loader = make_loader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    """``(data, node)`` of a YAML document, parsed once: with libyaml when PyYAML has it, else in
    Python. Any error is raised by the Python parser, so that messages do not depend on libyaml."""
    if _FastUniqueKeyLoader is not None:
        with contextlib.suppress(yaml.YAMLError):  # parsed again below, for the Python parser's message
            return _load_with(_FastUniqueKeyLoader, text)
    return _load_with(_UniqueKeyLoader, text)


def _parse_document(text: str, where: str) -> tuple[dict[Any, Any], yaml.Node | None]:
    """``(data, node)`` of the spec text, which must be one YAML mapping; a :class:`SpecError` otherwise."""
    try:
        data, node = _parse(text)
    except _DuplicateKeyError as err:
        mark = err.problem_mark
        loc = _loc_of_key(yaml.compose(text, Loader=yaml.SafeLoader), mark) if mark else None
        raise SpecError(
            str(err.problem), path=where, field=_format_loc(loc) if loc else None, line=mark.line + 1 if mark else None
        ) from None
    except NumberTooLong as err:
        mark = err.problem_mark
        loc = _loc_of_scalar(yaml.compose(text, Loader=yaml.SafeLoader), mark) if mark else None
        raise SpecError(
            str(err.problem), path=where, field=_format_loc(loc) if loc else None, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as err:
        raise _spec_error_from_yaml(err, where) from None
    if data is None:
        raise SpecError(
            "the file is empty: write apiVersion, kind, metadata and spec (run 'expkit init' for a working example)",
            path=where,
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"the file must be a YAML mapping with apiVersion, kind, metadata and spec, not a "
            f"{type(data).__name__}: run 'expkit init' for a working example",
            path=where,
            line=1,
        )
    return data, node


def _spec_error_from_yaml(err: yaml.YAMLError, where: str) -> SpecError:
    """The one-line :class:`SpecError` of a YAML syntax error, at the line the parser stopped."""
    mark = getattr(err, "problem_mark", None)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and cmark is not None and (mark is None or cmark.line != mark.line):
        problem += f" ({context} that starts at line {cmark.line + 1})"
    return SpecError(
        f"not valid YAML: {problem}; check the indentation, brackets and quoting",
        path=where,
        line=mark.line + 1 if mark else None,
    )


# ---------------------------------------------------------------------------------------------
# file:line errors: validation errors located in the YAML
# ---------------------------------------------------------------------------------------------


def _spec_error_from_validation(err: ValidationError, data: Any, node: yaml.Node | None, where: str) -> SpecError:
    lines = []
    for e in err.errors(include_url=False):
        loc: Loc = tuple(e["loc"])
        ctx = e.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, LocatedValueError):
            loc = loc + inner.loc
        loc = _clean_loc(loc, data)
        lines.append((loc, _friendly(e, loc)))
    loc, message = lines[0]
    first = SpecError(message, path=where, field=_format_loc(loc), line=_line_of(node, loc))
    first.others = [
        str(SpecError(m, path=where, field=_format_loc(lc), line=_line_of(node, lc))) for lc, m in lines[1:]
    ]
    return first


def _clean_loc(loc: Loc, data: Any) -> Loc:
    """Drop pydantic's union/validator tags from a location, keeping only keys present in the data."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif (
            isinstance(part, str)
            and (cur is None or isinstance(cur, dict))
            and not part.startswith(("function-", "list[", "dict["))
            and part not in {"str", "int", "float", "bool", "Dataset", "Algorithm", "none", "constrained-str"}
        ):
            out.append(part)  # a missing or extra key
            cur = None
        # else: a pydantic tag (union member, validator) with no counterpart in the data
    return tuple(out)


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _loc_of_key(node: yaml.Node | None, mark: yaml.Mark, loc: Loc = ()) -> Loc | None:
    """The location (field path) of the mapping key that starts at ``mark``, if any."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            here = (*loc, getattr(k, "value", "?"))
            if k.start_mark.index == mark.index:
                return here
            found = _loc_of_key(v, mark, here)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _loc_of_key(v, mark, (*loc, i))
            if found:
                return found
    return None


def _loc_of_scalar(node: yaml.Node | None, mark: yaml.Mark, loc: Loc = ()) -> Loc | None:
    """The location (field path) of the scalar key or value that starts at ``mark``, if any."""
    if isinstance(node, yaml.ScalarNode):
        return loc if node.start_mark.index == mark.index else None
    children: list[tuple[Loc, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            here = (*loc, getattr(k, "value", "?"))
            children += [(here, k), (here, v)]
    elif isinstance(node, yaml.SequenceNode):
        children = [((*loc, i), v) for i, v in enumerate(node.value)]
    for here, child in children:
        found = _loc_of_scalar(child, mark, here)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in loc:
        nxt = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def _known_fields(loc: Loc) -> list[str]:
    model: Any = Experiment
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        ann = info.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            for c in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
    return list(getattr(model, "model_fields", {}).keys()) if isinstance(model, type) else []


_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
_EXPECTED_TYPES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}


def _friendly(e: ErrorDetails, loc: Loc) -> str:
    """A pydantic error as the message of a :class:`SpecError`: what is wrong and how to fix it."""
    kind = e["type"]
    got = e.get("input")
    ctx = e.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_field(loc)
    if kind == "missing":
        return "required field is missing: add it (see 'expkit schema' or 'expkit init' for an example)"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')}, got {got!r}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or e["msg"])
    if kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        return f"must be {word} {ctx.get(key)}, got {_short(got)}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"must not be empty, got {_short(got)}: give at least {n} entr{'y' if n == 1 else 'ies'}"
    if kind == "too_long":
        return f"has too many entries (at most {ctx.get('max_length')}): remove some"
    if kind == "list_type" and isinstance(got, str):
        return f"must be a list, got the string {_short(got)}: write a YAML list, [a, b] or one '- item' per line"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        for k, v in _EXPECTED_TYPES.items():
            if kind.startswith(k):
                return f"must be {v}, got {_short(got)}"
    return f"{e['msg'][0].lower()}{e['msg'][1:]}, got {_short(got)}"


def _unknown_field(loc: Loc) -> str:
    key = loc[-1] if loc else "?"
    known = _known_fields(loc)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else (f"known fields: {', '.join(known)}" if known else "remove it")
    return f"unknown field {key!r}: {hint} (or remove it)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""``expkit pin``: pin the image tags in a spec to manifest digests, rewriting the spec in place.

:func:`pin_spec_file` finds every image field of a spec (:data:`IMAGE_FIELDS`; today ``spec.image``),
resolves each tag to its manifest digest through the registry HTTP API v2
(:class:`~expkit.reproduce.registry.RegistryClient`) and rewrites each value as
``repo:tag@sha256:<digest>`` in place: only the characters of those scalars change, so comments, key
order, quoting, blank lines and line endings stay byte for byte. A multi-arch tag (OCI image index or
Docker manifest list) is pinned at the index digest. References that already carry a digest are left
alone (``refresh=True`` re-resolves those that also name a tag). :func:`check_spec_file` lists the
unpinned images without any network access, for ``expkit pin --check`` in a paper's CI.

Authentication, credentials and transport: see :mod:`expkit.reproduce.registry` and
:mod:`expkit.reproduce.credentials`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from expkit.core.errors import ExpkitError, InputError, SpecError
from expkit.reproduce.credentials import Credentials
from expkit.reproduce.image_ref import parse_image_reference
from expkit.reproduce.registry import INDEX_MEDIA_TYPES, RegistryClient, Resolved

log = logging.getLogger(__name__)

#: Where images live in a spec, as key paths from the document root; ``"*"`` matches every item of a
#: sequence (e.g. ``("spec", "algorithms", "*", "image")`` once algorithms may bring their own image).
IMAGE_FIELDS: tuple[tuple[str, ...], ...] = (("spec", "image"),)


class SpecWriteError(ExpkitError):
    """The pinned spec could not be written back."""


# -- spec files -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageField:
    """One image value in a spec file: its field path, 1-based line, value and whether it is pinned."""

    field: str
    line: int
    value: str
    pinned: bool
    start: int = dataclasses.field(repr=False, compare=False, default=0)  # character offsets of the value (no quotes)
    end: int = dataclasses.field(repr=False, compare=False, default=0)

    def describe(self) -> str:
        """One line for ``expkit pin --check``: ``spec.image (line 9): python:3.12 is not pinned by digest``."""
        return f"{self.field} (line {self.line}): {self.value} is not pinned by digest"


@dataclass(frozen=True)
class PinnedImage:
    """The outcome for one image field: ``action`` is 'pinned', 'refreshed', 'unchanged' or 'already-pinned'."""

    field: str
    line: int
    before: str
    after: str
    action: str
    media_type: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the value was rewritten."""
        return self.before != self.after

    @property
    def is_index(self) -> bool:
        """Whether the digest is of a multi-arch index."""
        return self.media_type in INDEX_MEDIA_TYPES

    def describe(self) -> str:
        """One line for the CLI: ``spec.image (line 9): a:1 -> a:1@sha256:... (multi-arch index)``."""
        if self.action == "already-pinned":
            return f"{self.field} (line {self.line}): {self.before} (already pinned, left alone)"
        kind = " (multi-arch index)" if self.is_index else ""
        if self.action == "unchanged":
            return f"{self.field} (line {self.line}): {self.before} (digest unchanged){kind}"
        return f"{self.field} (line {self.line}): {self.before} -> {self.after}{kind}"


@dataclass(frozen=True)
class PinResult:
    """What :func:`pin_spec_file` did: one entry per image field, whether the file was written, notes."""

    path: Path
    images: tuple[PinnedImage, ...]
    written: bool
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether any image was rewritten."""
        return any(img.changed for img in self.images)


def _read_spec(path: Path) -> tuple[bytes, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file: check the path to the spec") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the spec ({err.strerror or type(err).__name__})") from None
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"not UTF-8 text (byte {err.start}): save the spec as UTF-8", path=str(path)) from None


def _walk(node: yaml.Node, pattern: Sequence[str], loc: str) -> list[tuple[str, yaml.Node]]:
    if not pattern:
        return [(loc, node)]
    head, rest = pattern[0], pattern[1:]
    found: list[tuple[str, yaml.Node]] = []
    if head == "*" and isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(_walk(item, rest, f"{loc}[{i}]"))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == head:
                found.extend(_walk(value, rest, f"{loc}.{head}" if loc else head))
    return found


def find_images(text: str, *, path: str | Path = "<spec>") -> list[ImageField]:
    """The image fields of spec ``text`` (see :data:`IMAGE_FIELDS`) with their exact positions.

    Raises :class:`~expkit.core.errors.SpecError` for YAML that does not parse, a missing ``spec.image``,
    an image that is not a one-line plain or quoted string, or an invalid image reference.
    """
    where = str(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise SpecError(
            f"not valid YAML: {problem}; fix it first (expkit validate shows details)",
            path=where,
            line=mark.line + 1 if mark else None,
        ) from None
    if root is None:
        raise SpecError("the file is empty: write a spec with spec.image", path=where)
    fields: list[ImageField] = []
    seen: set[int] = set()
    for pattern in IMAGE_FIELDS:
        for loc, node in _walk(root, pattern, ""):
            line = node.start_mark.line + 1
            if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
                raise SpecError(
                    "the image must be a string such as 'python:3.12-slim'", path=where, field=loc, line=line
                )
            if id(node) in seen:  # an alias of an image already found
                continue
            seen.add(id(node))
            fields.append(_locate(text, node, loc, where))
    if not fields and IMAGE_FIELDS and not _walk(root, IMAGE_FIELDS[0], ""):
        raise SpecError(
            "missing: write the container image, e.g. 'python:3.12-slim'",
            path=where,
            field=".".join(IMAGE_FIELDS[0]),
            line=1,
        )
    return fields


def _locate(text: str, node: yaml.ScalarNode, loc: str, where: str) -> ImageField:
    value = node.value
    line = node.start_mark.line + 1
    end = node.end_mark.index
    quote = {"'": "'", '"': '"'}.get(node.style or "", "")
    start = end - len(quote) - len(value)
    if (
        node.style not in (None, "'", '"')
        or text[start - len(quote) : end] != f"{quote}{value}{quote}"
        or "\n" in value
        or "\r" in value
    ):
        raise SpecError(
            "write the image on one line as a plain or quoted string (no block scalar, no escapes)",
            path=where,
            field=loc,
            line=line,
        )
    try:
        ref = parse_image_reference(value)
    except InputError as err:
        raise SpecError(str(err), path=where, field=loc, line=line) from None
    return ImageField(field=loc, line=line, value=value, pinned=ref.pinned, start=start, end=start + len(value))


def check_spec_file(path: str | Path) -> list[ImageField]:
    """The image fields of the spec at ``path`` that are not pinned by digest (no network access).

    Empty means every image is pinned; ``expkit pin --check`` exits 1 otherwise.
    """
    path = Path(path)
    _, text = _read_spec(path)
    return [f for f in find_images(text, path=path) if not f.pinned]


def pin_spec_file(
    path: str | Path,
    *,
    insecure: bool = False,
    refresh: bool = False,
    dry_run: bool = False,
    client: RegistryClient | None = None,
    environ: Mapping[str, str] | None = None,
) -> PinResult:
    """Resolve every image tag in the spec at ``path`` to its manifest digest and rewrite the file in place.

    Each unpinned ``name[:tag]`` becomes ``name:tag@sha256:<digest>`` (``:latest`` when no tag was
    written); only those characters change. References with a digest are left alone unless
    ``refresh`` re-resolves their tag. All images are resolved before anything is written, and the
    file is replaced atomically (temporary file + rename), so an error leaves it untouched.
    ``dry_run`` resolves without writing. ``client`` overrides the registry client (``insecure`` and
    ``environ`` -- for credentials -- are used only to build the default one).
    """
    path = Path(path)
    raw, text = _read_spec(path)
    fields = find_images(text, path=path)
    if client is None:
        client = RegistryClient(insecure=insecure, credentials=Credentials(environ))
    refs = [parse_image_reference(f.value) for f in fields]
    todo = [i for i, ref in enumerate(refs) if not ref.pinned or (refresh and ref.tag is not None)]
    resolved: dict[str, Resolved] = {}
    for i in todo:
        if fields[i].value not in resolved:
            resolved[fields[i].value] = client.resolve(refs[i])
            log.info("%s: %s -> %s", fields[i].field, fields[i].value, resolved[fields[i].value].digest)
    images: list[PinnedImage] = []
    new_text = text
    for i in sorted(range(len(fields)), key=lambda k: fields[k].start, reverse=True):
        f = fields[i]
        if i in todo:
            res = resolved[f.value]
            after = refs[i].with_digest(res.digest)
            action = ("pinned" if not f.pinned else "refreshed") if after != f.value else "unchanged"
            new_text = new_text[: f.start] + after + new_text[f.end :]
            images.append(PinnedImage(f.field, f.line, f.value, after, action, res.media_type))
        else:
            images.append(PinnedImage(f.field, f.line, f.value, f.value, "already-pinned"))
    images.sort(key=lambda img: img.line)
    notes = tuple(dict.fromkeys([*client.credentials.notes, *client.notes]))
    if new_text == text or dry_run:
        return PinResult(path=path, images=tuple(images), written=False, notes=notes)
    check = {f.field: f.value for f in find_images(new_text, path=path)}
    expected = {img.field: img.after for img in images}
    if check != expected:  # pragma: no cover - a bug guard: never write a file that reads back differently
        raise SpecWriteError(f"{path}: internal error rewriting the image fields; the file was left unchanged")
    _write_atomic(path, raw, new_text.encode("utf-8"))
    return PinResult(path=path, images=tuple(images), written=True, notes=notes)


def _write_atomic(path: Path, original: bytes, data: bytes) -> None:
    """Replace the file ``path`` resolves to with ``data`` (same directory temp file, fsync, rename)."""
    target = Path(os.path.realpath(path))
    try:
        if target.read_bytes() != original:
            raise SpecWriteError(f"{path} changed while its images were being resolved; run expkit pin again")
        mode = stat.S_IMODE(target.stat().st_mode)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".pin")
    except OSError as err:
        raise SpecWriteError(
            f"cannot write {path} ({err.strerror or type(err).__name__}): check the directory's permissions"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SpecWriteError(
            f"cannot write {path} ({err.strerror or type(err).__name__}): the file was left unchanged"
        ) from None

"""Container image references (``[host[:port]/]path[:tag][@sha256:<hex>]``), parsed the way docker does.

The grammar is that of distribution/reference (what docker and containerd accept). Docker Hub names
are normalised: ``python`` is the repository ``library/python`` at ``docker.io``, spoken to at
``registry-1.docker.io``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from expkit.core.errors import InputError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
#: Names of Docker Hub, all meaning :data:`DOCKER_HUB`.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})

# The reference grammar of distribution/reference (what docker and containerd accept).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
#: A sha256 manifest digest, the only kind a pinned reference may carry.
SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ANY_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference.

    ``domain`` is the registry as written (``docker.io`` when omitted), ``registry`` the host[:port]
    spoken to (``registry-1.docker.io`` for Docker Hub), ``repository`` the full repository path
    (``library/python`` for the official image ``python``), ``tag`` and ``digest`` as written
    (``tag`` is None when the reference has none; it then means ``latest``).
    """

    original: str
    domain: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        """Whether the reference names a sha256 manifest digest."""
        return self.digest is not None and bool(SHA256_RE.match(self.digest))

    @property
    def effective_tag(self) -> str:
        """The tag, ``latest`` when the reference names none."""
        return self.tag or "latest"

    @property
    def name(self) -> str:
        """The reference without tag and digest, as written (``python``, ``ghcr.io/org/x``)."""
        base = self.original.split("@", 1)[0]
        slash = base.rfind("/")
        colon = base.rfind(":")
        return base[:colon] if colon > slash else base

    def with_digest(self, digest: str) -> str:
        """The output form ``name:tag@digest``, keeping the name as written; ``:latest`` when no tag was given."""
        return f"{self.name}:{self.effective_tag}@{digest}"

    def display(self) -> str:
        """``repository:tag at registry domain``, for messages."""
        return f"{self.repository}:{self.effective_tag} at registry {self.domain}"


def parse_image_reference(reference: str) -> ImageRef:
    """Parse ``[host[:port]/]path[:tag][@sha256:<hex>]`` the way docker does.

    Raises :class:`~expkit.core.errors.InputError` when ``reference`` is not a valid image reference.
    """
    if not isinstance(reference, str) or not reference or reference != reference.strip():
        raise InputError(f"{reference!r} is not an image reference: write [registry/]repository[:tag]")
    remainder, at, digest = reference.partition("@")
    if at and not _ANY_DIGEST_RE.match(digest):
        raise InputError(f"{reference!r} has a malformed digest {digest!r}: write @sha256:<64 lowercase hex digits>")
    if at and not SHA256_RE.match(digest):
        raise InputError(f"{reference!r}: only sha256 digests are supported: write @sha256:<64 lowercase hex digits>")
    first, slash, rest = remainder.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not _DOMAIN_RE.match(domain):
            raise InputError(f"{reference!r}: {domain!r} is not a registry host[:port]")
    else:
        domain, path = DOCKER_HUB, remainder
    tag: str | None = None
    colon = path.rfind(":")
    if colon != -1:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InputError(
                f"{reference!r}: {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; "
                "at most 128 characters, not starting with '.' or '-')"
            )
    if not _PATH_RE.match(path):
        raise InputError(
            f"{reference!r}: repository {path!r} is not valid: use lowercase letters, digits and "
            "separators ('.', '_', '-', '/')"
        )
    if len(path) + len(domain) > 255:
        raise InputError(f"{reference!r}: the repository name is longer than 255 characters")
    if domain.lower() in DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB
        registry = DOCKER_HUB_API
        if "/" not in path:
            path = f"library/{path}"
    else:
        registry = domain
    return ImageRef(
        original=reference, domain=domain, registry=registry, repository=path, tag=tag, digest=digest if at else None
    )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (``name``, ``name:port``, ``[v6]:port``) is ``localhost`` or a loopback address."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    else:
        name = host
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

"""``expkit pin``: resolve image tags in a spec to manifest digests through the registry HTTP API v2.

:func:`pin_spec_file` finds every image field of a spec (:data:`IMAGE_FIELDS`; today ``spec.image``),
asks the image's registry for the manifest digest of its tag (``HEAD /v2/<repo>/manifests/<tag>``,
``GET`` when HEAD gives no digest) and rewrites each value as ``repo:tag@sha256:<digest>`` in place:
only the characters of those scalars change, so comments, key order, quoting, blank lines and line
endings stay byte for byte. A multi-arch tag (OCI image index or Docker manifest list) is pinned at
the index digest. References that already carry a digest are left alone (``refresh=True``
re-resolves those that also name a tag). :func:`check_spec_file` lists the unpinned images without
any network access, for ``expkit pin --check`` in a paper's CI.

Authentication: anonymous first; on a 401 the registry's ``WWW-Authenticate`` challenge is answered,
``Bearer`` (token from the realm, with Basic credentials when known) or ``Basic``. Credentials come
from ``EXPKIT_REGISTRY_USERNAME``/``EXPKIT_REGISTRY_PASSWORD`` (every registry, or only the one named
by ``EXPKIT_REGISTRY``) or from the Docker config file's ``auths`` (``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``); credential helpers are not run. Secrets never appear in messages or logs.

Transport: HTTPS with certificate verification. Plain HTTP (and unverified TLS with ``insecure``)
is used only for registries on loopback (``localhost``, 127.0.0.0/8, ``::1``) or with
``insecure=True``: those are tried over HTTPS first and over HTTP when the server does not speak TLS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from expkit import __version__
from expkit.core.errors import ExpkitError, InputError, SpecError

log = logging.getLogger(__name__)

#: Where images live in a spec, as key paths from the document root; ``"*"`` matches every item of a
#: sequence (e.g. ``("spec", "algorithms", "*", "image")`` once algorithms may bring their own image).
IMAGE_FIELDS: tuple[tuple[str, ...], ...] = (("spec", "image"),)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
#: The manifest media types asked for, in order of preference (an index first: multi-arch tags).
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
ENV_USERNAME = "EXPKIT_REGISTRY_USERNAME"
ENV_PASSWORD = "EXPKIT_REGISTRY_PASSWORD"
ENV_REGISTRY = "EXPKIT_REGISTRY"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution registry's own limit
_MAX_REDIRECTS = 5

# The reference grammar of distribution/reference (what docker and containerd accept).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ANY_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


# -- errors ---------------------------------------------------------------------------------------------
class RegistryError(ExpkitError):
    """A registry could not tell the digest of an image (base class of the pin errors)."""


class TagNotFound(RegistryError):
    """The repository exists but has no such tag (HTTP 404 on the manifest)."""


class RepositoryNotFound(RegistryError):
    """The registry does not know the repository."""


class RegistryUnreachable(RegistryError):
    """No HTTP answer: the host name does not resolve, the port is closed, or the connection timed out."""


class RegistryAuthError(RegistryError):
    """The registry (or its token server) refused access: missing or rejected credentials."""


class RegistryTLSError(RegistryError):
    """The TLS handshake failed: an untrusted certificate or a server that does not speak TLS as expected."""


class RegistryProtocolError(RegistryError):
    """The server answered, but not like a registry: no digest, an unexpected status or media type."""


class SpecWriteError(ExpkitError):
    """The pinned spec could not be written back."""


# -- image references -----------------------------------------------------------------------------------
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
        return self.digest is not None and bool(_SHA256_RE.match(self.digest))

    @property
    def effective_tag(self) -> str:
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
    if at and not _SHA256_RE.match(digest):
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
    if domain.lower() in _DOCKER_HUB_ALIASES:
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


# -- credentials ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credential:
    """A username and password for one registry, and where they came from (never the secret)."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _registry_key(value: str) -> str:
    """Normalise an ``auths`` key or a registry host: no scheme, no path, lowercase, Docker Hub aliases merged."""
    value = value.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].lower()
    return DOCKER_HUB if value in _DOCKER_HUB_ALIASES else value


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


class Credentials:
    """Registry credentials from the environment and the Docker config file.

    Precedence per registry: ``EXPKIT_REGISTRY_USERNAME``/``EXPKIT_REGISTRY_PASSWORD`` (for every
    registry, or only for ``EXPKIT_REGISTRY`` when that is set), then the Docker config's
    ``auths.<registry>`` (``auth`` = base64 ``user:password``, or ``username`` + ``password``).
    ``credsStore``/``credHelpers`` and ``identitytoken`` entries are not used; :meth:`note_for`
    explains that when it matters. Problems with the file become :attr:`notes`, not errors.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, config_path: Path | None = None) -> None:
        env = os.environ if environ is None else environ
        self.config_path = config_path if config_path is not None else docker_config_path(env)
        self.notes: list[str] = []
        self._env: Credential | None = None
        self._env_registry: str | None = None
        user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
        if bool(user) != bool(password):
            missing = ENV_PASSWORD if user else ENV_USERNAME
            raise InputError(
                f"{missing} is not set but {ENV_PASSWORD if user else ENV_USERNAME} is: "
                "set both registry credential variables or neither"
            )
        if user and password:
            self._env = Credential(user, password, f"environment variables {ENV_USERNAME}/{ENV_PASSWORD}")
            if env.get(ENV_REGISTRY):
                self._env_registry = _registry_key(env[ENV_REGISTRY])
        self._auths: dict[str, Credential] = {}
        self._helpers: dict[str, str] = {}
        self._store: str | None = None
        self._unsupported: dict[str, str] = {}
        self._read_config()

    def _read_config(self) -> None:
        path = self.config_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            self.notes.append(
                f"cannot read the Docker config {path} ({type(err).__name__}); its credentials are not used"
            )
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            self.notes.append(f"the Docker config {path} is not valid JSON; its credentials are not used")
            return
        if not isinstance(data, dict):
            self.notes.append(f"the Docker config {path} is not a JSON object; its credentials are not used")
            return
        if isinstance(data.get("credsStore"), str) and data["credsStore"]:
            self._store = data["credsStore"]
        helpers = data.get("credHelpers")
        if isinstance(helpers, dict):
            self._helpers = {_registry_key(k): str(v) for k, v in helpers.items()}
        auths = data.get("auths")
        if not isinstance(auths, dict):
            return
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                continue
            reg = _registry_key(str(key))
            where = f'{path} (auths."{key}")'
            cred = self._parse_entry(entry, where)
            if cred is not None:
                self._auths.setdefault(reg, cred)
            elif entry.get("identitytoken"):
                self._unsupported[reg] = (
                    f"{where} holds an identity token, which expkit does not use: set {ENV_USERNAME}/{ENV_PASSWORD}"
                )

    def _parse_entry(self, entry: dict[str, Any], where: str) -> Credential | None:
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, sep, password = base64.b64decode(auth, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep, user, password = "", "", ""
            if not sep or not user:
                self.notes.append(f"{where}: 'auth' is not base64 of user:password; ignored")
                return None
            return Credential(user, password, where)
        user, password = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(password, str) and user and password:
            return Credential(user, password, where)
        return None

    def for_registry(self, registry: str) -> Credential | None:
        """The credentials to offer ``registry`` (a domain such as ``ghcr.io``, ``docker.io`` or ``host:5000``)."""
        key = _registry_key(registry)
        if self._env is not None and self._env_registry in (None, key):
            return self._env
        return self._auths.get(key)

    def note_for(self, registry: str) -> str | None:
        """Why no credentials were found for ``registry`` although the config mentions it, if so."""
        key = _registry_key(registry)
        if key in self._unsupported:
            return self._unsupported[key]
        helper = self._helpers.get(key)
        if helper:
            return (
                f"{self.config_path} names credential helper 'docker-credential-{helper}' for {registry}, which "
                f"expkit does not run: set {ENV_USERNAME}/{ENV_PASSWORD}"
            )
        if self._store:
            return (
                f"{self.config_path} keeps credentials in 'docker-credential-{self._store}', which expkit does "
                f"not run: set {ENV_USERNAME}/{ENV_PASSWORD}"
            )
        return None

    def sources(self, registry: str) -> str:
        """Where credentials for ``registry`` were looked for, for error messages."""
        env = f"{ENV_USERNAME}/{ENV_PASSWORD}"
        if self._env is not None and self._env_registry not in (None, _registry_key(registry)):
            env += f" (set for {self._env_registry} only)"
        return f"{env} and {self.config_path}"


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from ``environ`` (default: ``os.environ``) and the Docker config file it points to."""
    return Credentials(environ)


# -- registry client ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """What the registry said about a tag: the manifest digest and its media type."""

    digest: str
    media_type: str | None

    @property
    def is_index(self) -> bool:
        """Whether the digest is of a multi-arch index (OCI image index or Docker manifest list)."""
        return self.media_type in INDEX_MEDIA_TYPES


@dataclass
class _Response:
    status: int
    headers: Message
    body: bytes
    url: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by :class:`RegistryClient` itself (to control where Authorization goes)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class _Failure(Exception):
    """A request that got no HTTP answer; ``kind`` is 'tls-verify', 'tls', 'refused', 'dns', 'timeout' or 'io'."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _media_type(headers: Message) -> str | None:
    value = headers.get("Content-Type")
    return value.split(";", 1)[0].strip().lower() if value else None


def _registry_errors(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _error_summary(resp: _Response) -> str:
    errors = _registry_errors(resp.body)
    if errors:
        e = errors[0]
        text = " ".join(str(x) for x in (e.get("code"), e.get("message")) if x)
        return " ".join(text.split())[:200]
    return " ".join(resp.headers.get("Content-Type", "no body").split())[:100]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` -> ``("bearer", {...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for key, value in _CHALLENGE_PARAM_RE.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return scheme.lower(), params


class RegistryClient:
    """Resolves image tags to manifest digests over the registry HTTP API v2 (standard library only).

    One client keeps the transport chosen for each registry, and tokens per repository, for its
    lifetime. ``insecure`` allows plain HTTP and unverified TLS for every registry (loopback
    registries may always use plain HTTP); ``timeout`` is per request, in seconds.
    """

    def __init__(
        self, *, insecure: bool = False, credentials: Credentials | None = None, timeout: float = 30.0
    ) -> None:
        self.insecure = insecure
        self.credentials = credentials if credentials is not None else Credentials()
        self.timeout = timeout
        self._scheme: dict[str, str] = {}
        self._auth: dict[tuple[str, str], tuple[str, str]] = {}  # (registry, repository) -> (header, who)
        self._openers: dict[tuple[bool, bool], urllib.request.OpenerDirector] = {}
        self.notes: list[str] = []

    # transport -----------------------------------------------------------------------------------------
    def _plain_allowed(self, host: str) -> bool:
        return self.insecure or is_loopback_host(host)

    def _opener(self, *, verify: bool, proxy: bool) -> urllib.request.OpenerDirector:
        key = (verify, proxy)
        if key not in self._openers:
            ctx = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            proxies = urllib.request.ProxyHandler() if proxy else urllib.request.ProxyHandler({})
            self._openers[key] = urllib.request.build_opener(
                proxies, urllib.request.HTTPSHandler(context=ctx), _NoRedirect()
            )
        return self._openers[key]

    def _fetch(self, method: str, url: str, headers: Mapping[str, str]) -> _Response:
        """One HTTP request; any HTTP status is returned, a missing answer raises :class:`_Failure`."""
        host = _host_of(url)
        req = urllib.request.Request(url, method=method, headers={"User-Agent": f"expkit/{__version__}", **headers})
        opener = self._opener(verify=not self.insecure, proxy=not is_loopback_host(host))
        try:
            try:
                resp = opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                resp = err
            with resp:
                body = resp.read(MAX_MANIFEST_BYTES + 1) if method != "HEAD" and resp.fp is not None else b""
                return _Response(status=resp.status, headers=resp.headers, body=body, url=url)
        except urllib.error.URLError as err:
            raise self._classify(err.reason if isinstance(err.reason, BaseException) else err) from None
        except (OSError, http.client.HTTPException) as err:
            raise self._classify(err) from None

    @staticmethod
    def _classify(err: BaseException) -> _Failure:
        if isinstance(err, ssl.SSLCertVerificationError):
            return _Failure("tls-verify", err.verify_message or str(err.reason or "certificate not trusted"))
        if isinstance(err, ssl.SSLError):
            return _Failure("tls", str(err.reason or err).lower().replace("_", " "))
        if isinstance(err, socket.gaierror):
            return _Failure("dns", "the host name does not resolve")
        if isinstance(err, ConnectionRefusedError):
            return _Failure("refused", "connection refused")
        if isinstance(err, TimeoutError):
            return _Failure("timeout", "no answer in time")
        if isinstance(err, http.client.HTTPException):
            return _Failure("io", f"not an HTTP answer ({type(err).__name__})")
        if isinstance(err, ConnectionError):
            return _Failure("io", "the connection was closed")
        return _Failure("io", getattr(err, "strerror", None) or type(err).__name__)

    def _fail(self, failure: _Failure, host: str, what: str) -> RegistryError:
        if failure.kind == "tls-verify":
            return RegistryTLSError(
                f"TLS certificate of {what} {host} is not trusted ({failure.detail}): add its CA certificate to "
                "the file SSL_CERT_FILE names, or pass --insecure if you trust this registry"
            )
        if failure.kind == "tls":
            return RegistryTLSError(
                f"TLS handshake with {what} {host} failed ({failure.detail}): check that it "
                "serves HTTPS on that port (--insecure allows plain HTTP)"
            )
        if failure.kind == "timeout":
            return RegistryUnreachable(
                f"{what} {host} did not answer within {self.timeout:g}s: check the host and your network"
            )
        return RegistryUnreachable(
            f"cannot reach {what} {host}: {failure.detail}; check the registry "
            "host and port in the image reference and your network"
        )

    def _registry_fetch(self, registry: str, method: str, path: str, headers: Mapping[str, str]) -> _Response:
        """A request to ``registry`` over HTTPS, or over HTTP where allowed and HTTPS is not spoken there."""
        schemes = (
            [self._scheme[registry]]
            if registry in self._scheme
            else (["https", "http"] if self._plain_allowed(registry) else ["https"])
        )
        failure: _Failure | None = None
        for scheme in schemes:
            try:
                resp = self._fetch(method, f"{scheme}://{registry}{path}", headers)
            except _Failure as err:
                if err.kind in ("tls", "refused", "io") and scheme == "https" and len(schemes) > 1:
                    log.debug("registry %s: HTTPS failed (%s), trying plain HTTP", registry, err.detail)
                    failure = failure or err
                    continue
                if failure is not None and failure.kind == "tls" and err.kind != "refused":
                    raise self._fail(failure, registry, "registry") from None
                raise self._fail(err, registry, "registry") from None
            self._scheme[registry] = scheme
            return resp
        raise self._fail(failure or _Failure("io", "no transport"), registry, "registry")  # pragma: no cover

    def _follow(self, ref: ImageRef, method: str, path: str, headers: dict[str, str]) -> _Response:
        """A registry request, following redirects; Authorization goes only to the registry itself."""
        resp = self._registry_fetch(ref.registry, method, path, headers)
        origin = resp.url
        for _ in range(_MAX_REDIRECTS):
            if resp.status not in (301, 302, 303, 307, 308) or not resp.headers.get("Location"):
                return resp
            target = urllib.parse.urljoin(resp.url, resp.headers["Location"])
            parts = urllib.parse.urlsplit(target)
            if parts.scheme not in ("http", "https"):
                raise RegistryProtocolError(f"registry {ref.registry} redirected to a {parts.scheme!r} URL")
            if parts.scheme == "http" and not self._plain_allowed(parts.netloc):
                raise RegistryProtocolError(
                    f"registry {ref.registry} redirected to plain HTTP on {parts.netloc}; "
                    "pass --insecure if you trust it"
                )
            same = urllib.parse.urlsplit(origin)[:2] == parts[:2]
            hop = headers if same else {k: v for k, v in headers.items() if k.lower() != "authorization"}
            try:
                resp = self._fetch(method, target, hop)
            except _Failure as err:
                raise self._fail(err, parts.netloc, "registry redirect target") from None
        raise RegistryProtocolError(f"registry {ref.registry} redirected more than {_MAX_REDIRECTS} times")

    # auth ----------------------------------------------------------------------------------------------
    def _request(self, ref: ImageRef, method: str, path: str, headers: Mapping[str, str]) -> _Response:
        """A registry request with authentication: anonymous first, then answering the 401 challenge."""
        key = (ref.registry, ref.repository)
        cached = self._auth.get(key)
        hdrs = dict(headers)
        if cached:
            hdrs["Authorization"] = cached[0]
        resp = self._follow(ref, method, path, hdrs)
        if resp.status == 401 and resp.headers.get("WWW-Authenticate"):
            self._auth[key] = self._authenticate(ref, resp.headers["WWW-Authenticate"])
            hdrs["Authorization"] = self._auth[key][0]
            resp = self._follow(ref, method, path, hdrs)
        if resp.status in (401, 403):
            raise self._denied(ref, resp, self._auth.get(key, (None, None))[1])
        return resp

    def _authenticate(self, ref: ImageRef, challenge: str) -> tuple[str, str]:
        """The Authorization header answering ``challenge``, and who it speaks for (for messages)."""
        scheme, params = parse_challenge(challenge)
        cred = self.credentials.for_registry(ref.domain)
        if scheme == "basic":
            if cred is None:
                raise self._no_credentials(ref)
            return cred.basic_header(), cred.source
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryAuthError(
                f"registry {ref.domain} asks for {scheme or 'unknown'} authentication, which "
                "expkit does not support (Basic and Bearer tokens are)"
            )
        realm = params["realm"]
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryProtocolError(f"registry {ref.domain} names a token server that is not an HTTP URL")
        if parts.scheme == "http" and not self._plain_allowed(parts.netloc):
            raise RegistryAuthError(
                f"registry {ref.domain} points to a token server on plain HTTP "
                f"({parts.netloc}); pass --insecure if you trust it"
            )
        scopes = [f"repository:{ref.repository}:pull"]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.extend(s for s in params["scope"].split(" ") if s and s not in scopes)
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.extend(("scope", s) for s in scopes)
        headers = {"Accept": "application/json"}
        if cred is not None:
            query.append(("account", cred.username))
            headers["Authorization"] = cred.basic_header()
        url = urllib.parse.urlunsplit(
            (
                parts.scheme,
                parts.netloc,
                parts.path or "/",
                "&".join(p for p in (parts.query, urllib.parse.urlencode(query)) if p),
                "",
            )
        )
        try:
            resp = self._fetch("GET", url, headers)
        except _Failure as err:
            raise self._fail(err, f"{parts.netloc} (for registry {ref.domain})", "token server") from None
        who = cred.source if cred is not None else "anonymous"
        if cred is None and self.credentials.note_for(ref.domain):
            self.notes.append(f"{ref.domain}: anonymous token used; {self.credentials.note_for(ref.domain)}")
        if resp.status in (401, 403):
            if cred is None:
                raise self._no_credentials(ref, token_server=parts.netloc)
            raise RegistryAuthError(
                f"token server {parts.netloc} of registry {ref.domain} rejected the credentials "
                f"from {cred.source} (HTTP {resp.status}): check the username and password"
            )
        if resp.status != 200:
            raise RegistryProtocolError(
                f"token server {parts.netloc} of registry {ref.domain} answered HTTP "
                f"{resp.status} for repository {ref.repository}"
            )
        try:
            data = json.loads(resp.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, UnicodeDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(
                f"token server {parts.netloc} of registry {ref.domain} answered without a token"
            )
        return f"Bearer {token}", who

    def _no_credentials(self, ref: ImageRef, token_server: str | None = None) -> RegistryAuthError:
        via = f" (token server {token_server})" if token_server else ""
        note = self.credentials.note_for(ref.domain)
        return RegistryAuthError(
            f"registry {ref.domain}{via} requires credentials for repository {ref.repository} "
            f"and none were found in {self.credentials.sources(ref.domain)}" + (f"; {note}" if note else "")
        )

    def _denied(self, ref: ImageRef, resp: _Response, who: str | None) -> RegistryAuthError:
        summary = _error_summary(resp)
        if who in (None, "anonymous"):
            cred = self.credentials.for_registry(ref.domain)
            if cred is not None:
                found = f"the credentials from {cred.source} were not asked for (no challenge)"
            else:
                note = self.credentials.note_for(ref.domain)
                found = f"none were found in {self.credentials.sources(ref.domain)}" + (f"; {note}" if note else "")
            return RegistryAuthError(
                f"registry {ref.domain} denied anonymous access to repository {ref.repository} (HTTP {resp.status}"
                f"{': ' + summary if resp.body else ''}): it does not exist or needs credentials; {found}"
            )
        return RegistryAuthError(
            f"registry {ref.domain} denied access to repository {ref.repository} with the credentials from {who} "
            f"(HTTP {resp.status}{': ' + summary if resp.body else ''}): check them and that the account may "
            "pull this repository"
        )

    # resolution ----------------------------------------------------------------------------------------
    def resolve(self, ref: ImageRef | str) -> Resolved:
        """The manifest digest ``ref``'s tag points to (an index digest for a multi-arch tag)."""
        if isinstance(ref, str):
            ref = parse_image_reference(ref)
        path = f"/v2/{ref.repository}/manifests/{urllib.parse.quote(ref.effective_tag, safe='')}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        head = self._request(ref, "HEAD", path, headers)
        if head.status == 200:
            digest = head.headers.get("Docker-Content-Digest", "").strip()
            media_type = _media_type(head.headers)
            if _SHA256_RE.match(digest) and (media_type is None or media_type in MANIFEST_MEDIA_TYPES):
                return Resolved(digest=digest, media_type=media_type)
            log.debug("registry %s: HEAD %s gave no usable digest; trying GET", ref.registry, path)
        get = self._request(ref, "GET", path, headers)
        if get.status == 200:
            return self._digest_from_body(ref, get)
        if get.status == 404:
            raise self._not_found(ref, get)
        if get.status == 429:
            raise RegistryProtocolError(
                f"registry {ref.domain} is rate-limiting requests (HTTP 429) for "
                f"{ref.repository}: wait, or log in for a higher limit"
            )
        raise RegistryProtocolError(
            f"registry {ref.domain} answered HTTP {get.status} for {ref.display()} ({_error_summary(get)})"
        )

    def _digest_from_body(self, ref: ImageRef, resp: _Response) -> Resolved:
        media_type = _media_type(resp.headers)
        if len(resp.body) > MAX_MANIFEST_BYTES:
            raise RegistryProtocolError(
                f"registry {ref.domain} sent more than {MAX_MANIFEST_BYTES} bytes for the "
                f"manifest of {ref.display()}; is this a registry?"
            )
        try:
            manifest = json.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
            if isinstance(manifest, dict) and manifest.get("schemaVersion") == 1:
                raise RegistryProtocolError(
                    f"registry {ref.domain} serves only a schema 1 manifest for "
                    f"{ref.display()}; push the image again with a current client"
                )
            raise RegistryProtocolError(
                f"{ref.registry} answered for {ref.display()} without a digest and with a body that is not an "
                f"image manifest ({media_type or 'no content type'}): is this a container registry?"
            )
        body_type = manifest.get("mediaType") if isinstance(manifest.get("mediaType"), str) else None
        media_type = media_type if media_type in MANIFEST_MEDIA_TYPES else (body_type or media_type)
        if media_type not in MANIFEST_MEDIA_TYPES and "manifests" in manifest:
            media_type = OCI_INDEX
        computed = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        header = resp.headers.get("Docker-Content-Digest", "").strip()
        if _SHA256_RE.match(header) and header != computed:
            raise RegistryProtocolError(
                f"registry {ref.domain} reports digest {header} for {ref.display()} but "
                f"sent a manifest whose sha256 is {computed}"
            )
        return Resolved(digest=computed, media_type=media_type)

    def _not_found(self, ref: ImageRef, resp: _Response) -> RegistryError:
        codes = {str(e.get("code", "")).upper() for e in _registry_errors(resp.body)}
        if "NAME_UNKNOWN" not in codes:
            try:
                tags = self._request(ref, "GET", f"/v2/{ref.repository}/tags/list?n=1", {"Accept": "application/json"})
            except RegistryError:
                tags = None
            if (
                tags is not None
                and tags.status == 404
                and any(str(e.get("code", "")).upper() == "NAME_UNKNOWN" for e in _registry_errors(tags.body))
            ):
                codes.add("NAME_UNKNOWN")
        if "NAME_UNKNOWN" in codes:
            hint = " (official Docker Hub images are library/<name>)" if ref.domain == DOCKER_HUB else ""
            return RepositoryNotFound(
                f"repository {ref.repository} not found at registry {ref.domain}: check the image name{hint}"
            )
        return TagNotFound(
            f"tag {ref.effective_tag} not found in repository {ref.repository} at registry "
            f"{ref.domain}: check the tag, or push it first"
        )


def resolve_digest(reference: str, *, insecure: bool = False, client: RegistryClient | None = None) -> str:
    """The manifest digest (``sha256:...``) that ``reference``'s tag points to now."""
    return (client or RegistryClient(insecure=insecure)).resolve(parse_image_reference(reference)).digest


# -- spec files -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageField:
    """One image value in a spec file: its field path, 1-based line, value and whether it is pinned."""

    field: str
    line: int
    value: str
    pinned: bool
    start: int = field(repr=False, compare=False, default=0)  # character offsets of the value (no quotes)
    end: int = field(repr=False, compare=False, default=0)

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
        return self.before != self.after

    @property
    def is_index(self) -> bool:
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

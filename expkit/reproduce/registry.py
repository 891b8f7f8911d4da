"""A registry HTTP API v2 client that resolves image tags to manifest digests (standard library only).

:meth:`RegistryClient.resolve` asks the image's registry for the manifest digest of its tag
(``HEAD /v2/<repo>/manifests/<tag>``, ``GET`` when HEAD gives no digest). A multi-arch tag (OCI image
index or Docker manifest list) resolves to the index digest.

Authentication: anonymous first; on a 401 the registry's ``WWW-Authenticate`` challenge is answered,
``Bearer`` (token from the realm, with Basic credentials when known) or ``Basic``, with the
credentials of :mod:`expkit.reproduce.credentials`. Secrets never appear in messages or logs.

Transport: HTTPS with certificate verification. Plain HTTP (and unverified TLS with ``insecure``)
is used only for registries on loopback (``localhost``, 127.0.0.0/8, ``::1``) or with
``insecure=True``: those are tried over HTTPS first and over HTTP when the server does not speak TLS.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any

from expkit import __version__
from expkit.core.errors import ExpkitError
from expkit.reproduce.credentials import Credential, Credentials
from expkit.reproduce.image_ref import DOCKER_HUB, SHA256_RE, ImageRef, is_loopback_host, parse_image_reference

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
#: The manifest media types asked for, in order of preference (an index first: multi-arch tags).
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution registry's own limit
_MAX_REDIRECTS = 5
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

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        """Never redirect here: the 3xx answer goes back to the caller."""
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


def _token_request(
    ref: ImageRef, parts: urllib.parse.SplitResult, params: Mapping[str, str], cred: Credential | None
) -> tuple[str, dict[str, str]]:
    """The URL and headers asking the token server ``parts`` for a pull token of ``ref``'s repository
    (with the scopes the challenge ``params`` names, and Basic credentials when known)."""
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
    return url, headers


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
        parts = self._token_server(ref, params["realm"])
        url, headers = _token_request(ref, parts, params, cred)
        try:
            resp = self._fetch("GET", url, headers)
        except _Failure as err:
            raise self._fail(err, f"{parts.netloc} (for registry {ref.domain})", "token server") from None
        who = cred.source if cred is not None else "anonymous"
        if cred is None and self.credentials.note_for(ref.domain):
            self.notes.append(f"{ref.domain}: anonymous token used; {self.credentials.note_for(ref.domain)}")
        return f"Bearer {self._token(ref, parts.netloc, resp, cred)}", who

    def _token_server(self, ref: ImageRef, realm: str) -> urllib.parse.SplitResult:
        """The token server URL of a Bearer challenge, refused unless it is HTTPS (or plain HTTP where allowed)."""
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryProtocolError(f"registry {ref.domain} names a token server that is not an HTTP URL")
        if parts.scheme == "http" and not self._plain_allowed(parts.netloc):
            raise RegistryAuthError(
                f"registry {ref.domain} points to a token server on plain HTTP "
                f"({parts.netloc}); pass --insecure if you trust it"
            )
        return parts

    def _token(self, ref: ImageRef, server: str, resp: _Response, cred: Credential | None) -> str:
        """The token in the token server's answer ``resp``."""
        if resp.status in (401, 403):
            if cred is None:
                raise self._no_credentials(ref, token_server=server)
            raise RegistryAuthError(
                f"token server {server} of registry {ref.domain} rejected the credentials "
                f"from {cred.source} (HTTP {resp.status}): check the username and password"
            )
        if resp.status != 200:
            raise RegistryProtocolError(
                f"token server {server} of registry {ref.domain} answered HTTP "
                f"{resp.status} for repository {ref.repository}"
            )
        try:
            data = json.loads(resp.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, UnicodeDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(f"token server {server} of registry {ref.domain} answered without a token")
        return token

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
            if SHA256_RE.match(digest) and (media_type is None or media_type in MANIFEST_MEDIA_TYPES):
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
        if SHA256_RE.match(header) and header != computed:
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

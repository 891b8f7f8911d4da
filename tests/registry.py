"""Real container registries on loopback for the ``expkit pin`` tests.

:class:`RegistryServer` runs the CNCF distribution registry (Debian package ``docker-registry``,
binary ``/usr/bin/docker-registry``) with a generated config: filesystem storage in a temporary
directory, ``http.addr`` on 127.0.0.1 and a free port, and one of

- no auth (``auth="none"``),
- ``auth: htpasswd`` with a bcrypt htpasswd file (``auth="htpasswd"``; made with ``htpasswd -B`` from
  apache2-utils, or with Python's ``crypt`` when the C library does bcrypt),
- ``auth: token`` (``auth="token"``): the registry itself verifies RS256 JSON web tokens against a
  self-signed certificate; :class:`TokenServer` is a small token endpoint written here that issues
  such tokens (signed with the ``openssl`` command). The registry and its bearer challenge are real;
  the token endpoint is a minimal test implementation of the distribution token protocol,
- optionally TLS (``tls=True``) with a throw-away self-signed certificate for 127.0.0.1.

The push helpers speak the registry HTTP API v2 directly (blob upload by POST + PUT, manifest PUT),
so tests can build tiny images whose manifest bytes, and so digests, they know.

:class:`NotARegistry` is a plain web server answering 200 with an HTML page to every request, a
stand-in for a wrong registry address (a web server that is not a registry); :class:`DigestStrippingProxy`
forwards to a real registry and drops the ``Docker-Content-Digest`` header, like registry fronts
that do not pass it on. Both are test doubles and say so.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REGISTRY_BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TOKEN_SERVICE = "expkit-test-registry"
TOKEN_ISSUER = "expkit-test-token-server"


def find_registry() -> str | None:
    """The distribution registry binary: ``$EXPKIT_TEST_REGISTRY_BIN``, Debian's path, or ``registry`` on PATH."""
    for candidate in (os.environ.get("EXPKIT_TEST_REGISTRY_BIN"), REGISTRY_BINARY):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("docker-registry") or shutil.which("registry")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def self_signed(cert: Path, key: Path, *, cn: str = "127.0.0.1") -> None:
    """A throw-away RSA certificate for 127.0.0.1 and localhost (``openssl`` must be on PATH)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("no 'openssl' command to make a test certificate")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )


def bcrypt_htpasswd_line(user: str, password: str) -> str | None:
    """``user:$2y$...`` via ``htpasswd -B`` or the C library's crypt; None when neither can do bcrypt."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        out = subprocess.run([htpasswd, "-nbB", user, password], check=True, capture_output=True, text=True)
        return out.stdout.strip()
    try:
        import crypt  # deprecated module (gone in 3.13): an optional fallback
    except ImportError:
        return None
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return f"{user}:{hashed}" if hashed and hashed.startswith("$2") else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadedServer:
    """An ``http.server`` on 127.0.0.1 in a daemon thread."""

    handler: type[http.server.BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _TokenHandler(_QuietHandler):
    def do_GET(self) -> None:
        server: TokenServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        server.requests.append(
            {"path": url.path, "query": query, "authorization": self.headers.get("Authorization", "").split(" ")[0]}
        )
        user = ""
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if scheme != "Basic" or (user, password) != (server.username, server.password):
                self._send(401, {"details": "incorrect username or password"})
                return
        access = []
        if user:  # anonymous callers get a token without access, as public registries do for private repos
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = server.token(user, query.get("service", [""])[0], access)
        self._send(200, {"token": token, "access_token": token, "expires_in": 300})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TokenServer(_ThreadedServer):
    """A minimal token endpoint of the distribution token protocol (a test implementation).

    ``GET /token?service=...&scope=repository:NAME:ACTIONS`` with Basic credentials matching
    ``username``/``password`` returns a JWT granting the requested scopes; without credentials it
    returns a token granting nothing (Docker Hub's behaviour for private or missing repositories);
    with wrong credentials it answers 401. Tokens are RS256-signed with a self-signed certificate
    that the registry's ``auth.token.rootcertbundle`` trusts (``x5c`` header).
    """

    handler = _TokenHandler

    def __init__(self, base_dir: Path) -> None:
        self.cert, self.key = base_dir / "token-cert.pem", base_dir / "token-key.pem"
        self_signed(self.cert, self.key, cn="expkit test token signer")
        pem = self.cert.read_text().strip().splitlines()
        self._x5c = "".join(line for line in pem if not line.startswith("-----"))
        self.username = "tokenuser"
        self.password = "tok-" + secrets.token_urlsafe(12)
        self.requests: list[dict] = []
        super().__init__()
        self.realm = f"http://{self.host}/token"

    def token(self, subject: str, audience: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": audience,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            [shutil.which("openssl") or "openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"


@dataclass(frozen=True)
class PushedManifest:
    """A manifest pushed by a test: its exact bytes, media type and digest (sha256 of the bytes)."""

    body: bytes
    media_type: str
    digest: str


class RegistryServer:
    """One ``docker-registry`` process on ``127.0.0.1:<free port>`` (see the module docstring)."""

    def __init__(
        self,
        base_dir: str | Path,
        *,
        auth: str = "none",
        tls: bool = False,
        binary: str | None = None,
        token_realm: str | None = None,
    ) -> None:
        binary = binary or find_registry()
        if binary is None:
            raise FileNotFoundError("no registry binary: apt-get install docker-registry")
        self.binary = binary
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.tls = tls
        self.token_realm = token_realm  # auth="token": announce this realm instead of the test token server
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.username: str | None = None
        self.password: str | None = None
        self.ca_file: Path | None = None
        self.token_server: TokenServer | None = None
        self.proc: subprocess.Popen | None = None
        self._tokens: dict[str, str] = {}
        self.config_path = self.base_dir / "config.yml"
        self.config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> dict[str, Any]:
        http_cfg: dict[str, Any] = {"addr": self.host, "secret": secrets.token_hex(16)}
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.base_dir / "data")}},
            "http": http_cfg,
        }
        if self.tls:
            cert, key = self.base_dir / "tls-cert.pem", self.base_dir / "tls-key.pem"
            self_signed(cert, key)
            http_cfg["tls"] = {"certificate": str(cert), "key": str(key)}
            self.ca_file = cert
        if self.auth == "htpasswd":
            self.username, self.password = "pinuser", "pw-" + secrets.token_urlsafe(12)
            line = bcrypt_htpasswd_line(self.username, self.password)
            if line is None:
                raise FileNotFoundError("no bcrypt: apt-get install apache2-utils (htpasswd)")
            (self.base_dir / "htpasswd").write_text(line + "\n")
            cfg["auth"] = {"htpasswd": {"realm": "expkit-test", "path": str(self.base_dir / "htpasswd")}}
        elif self.auth == "token":
            self.token_server = TokenServer(self.base_dir)
            self.username, self.password = self.token_server.username, self.token_server.password
            cfg["auth"] = {
                "token": {
                    "realm": self.token_realm or self.token_server.realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(self.token_server.cert),
                }
            }
        elif self.auth != "none":
            raise ValueError(f"unknown auth {self.auth!r}")
        return cfg

    def start(self, timeout: float = 30.0) -> None:
        """Start the registry and wait until ``/v2/`` answers."""
        log = open(self.base_dir / "registry.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", str(self.config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"registry exited with {self.proc.returncode}: "
                    f"{(self.base_dir / 'registry.log').read_text()[-2000:]}"
                )
            try:
                status, _, _ = self._raw("GET", "/v2/")
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"registry on {self.host} not ready after {timeout:g}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        if self.token_server is not None:
            self.token_server.stop()

    # -- registry API v2, as a pushing client --------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self.tls:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _raw(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def _auth_header(self, repo: str) -> dict[str, str]:
        if self.auth == "htpasswd":
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        if self.auth == "token" and self.token_server is not None:
            if repo not in self._tokens:
                query = urllib.parse.urlencode({"service": TOKEN_SERVICE, "scope": f"repository:{repo}:pull,push"})
                basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
                conn = http.client.HTTPConnection("127.0.0.1", self.token_server.port, timeout=30)
                try:
                    conn.request("GET", f"/token?{query}", headers={"Authorization": f"Basic {basic}"})
                    self._tokens[repo] = json.loads(conn.getresponse().read())["token"]
                finally:
                    conn.close()
            return {"Authorization": f"Bearer {self._tokens[repo]}"}
        return {}

    def _api(
        self,
        method: str,
        path: str,
        repo: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 201,
    ) -> http.client.HTTPMessage:
        status, resp_headers, data = self._raw(method, path, body, {**(headers or {}), **self._auth_header(repo)})
        if status != expect:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:500]!r}")
        return resp_headers

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob (POST an upload session, PUT the bytes with their digest); returns the digest."""
        digest = sha256_digest(data)
        headers = self._api("POST", f"/v2/{repo}/blobs/uploads/", repo, b"", {"Content-Length": "0"}, expect=202)
        location = urllib.parse.urlsplit(headers["Location"])
        sep = "&" if location.query else "?"
        put_path = f"{location.path}?{location.query}{sep}digest={urllib.parse.quote(digest)}".replace("?&", "?")
        self._api(
            "PUT", put_path, repo, data, {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        )
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> PushedManifest:
        """PUT a manifest under a tag or its digest; returns what was pushed (digest from the bytes)."""
        headers = self._api(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            repo,
            body,
            {"Content-Type": media_type, "Content-Length": str(len(body))},
        )
        pushed = PushedManifest(body=body, media_type=media_type, digest=sha256_digest(body))
        if headers.get("Docker-Content-Digest") != pushed.digest:
            raise RuntimeError(
                f"registry stored {reference} as {headers.get('Docker-Content-Digest')}, not {pushed.digest}"
            )
        return pushed

    def push_image(self, repo: str, tag: str | None, *, arch: str = "amd64", note: str = "") -> PushedManifest:
        """A tiny OCI image (config blob, one layer blob, OCI image manifest), tagged ``tag`` if given."""
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Labels": {"note": note}},
                "rootfs": {"type": "layers", "diff_ids": []},
            },
            sort_keys=True,
        ).encode()
        layer = f"layer of {repo} {arch} {note} {uuid.uuid4()}".encode()
        config_digest = self.push_blob(repo, config)
        layer_digest = self.push_blob(repo, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
        body = json.dumps(manifest, indent=3).encode()  # unusual indent: the digest is of these exact bytes
        return self.push_manifest(repo, tag or sha256_digest(body), body, OCI_MANIFEST)

    def push_index(self, repo: str, tag: str, manifests: list[tuple[PushedManifest, str]]) -> PushedManifest:
        """An OCI image index over already pushed manifests, each with its architecture, tagged ``tag``."""
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": m.media_type,
                    "digest": m.digest,
                    "size": len(m.body),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for m, arch in manifests
            ],
        }
        return self.push_manifest(repo, tag, json.dumps(index).encode(), OCI_INDEX)


class _NotARegistryHandler(_QuietHandler):
    PAGE = b"<html><body><h1>Welcome</h1>This is a web server, not a registry.</body></html>\n"

    def do_HEAD(self) -> None:
        self._reply(send_body=False)

    def do_GET(self) -> None:
        self._reply(send_body=True)

    def _reply(self, send_body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.PAGE)))
        self.end_headers()
        if send_body:
            self.wfile.write(self.PAGE)


class NotARegistry(_ThreadedServer):
    """Test double: a web server answering 200 with an HTML page to anything (a wrong registry address)."""

    handler = _NotARegistryHandler


class _StrippingHandler(_QuietHandler):
    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def do_GET(self) -> None:
        self._forward("GET")

    def _forward(self, method: str) -> None:
        proxy: DigestStrippingProxy = self.server.owner  # type: ignore[attr-defined]
        proxy.methods.append(method)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
        status, resp_headers, body = proxy.upstream._raw(method, self.path, None, headers)
        self.send_response(status)
        for key, value in resp_headers.items():
            if key.lower() not in ("docker-content-digest", "content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", resp_headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


class DigestStrippingProxy(_ThreadedServer):
    """Test double: forwards HEAD/GET to a real registry and drops ``Docker-Content-Digest`` from answers."""

    handler = _StrippingHandler

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.methods: list[str] = []
        super().__init__()


# -- fixtures (imported by tests/test_pin.py) -------------------------------------------------------------
def _need_registry() -> str:
    binary = find_registry()
    if binary is None:
        pytest.skip(f"no container registry binary ({REGISTRY_BINARY}): apt-get install docker-registry")
    return binary


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> Iterator[RegistryServer]:
    binary = _need_registry()
    if (kwargs.get("tls") or kwargs.get("auth") == "token") and shutil.which("openssl") is None:
        pytest.skip("no 'openssl' command to make test certificates")
    if kwargs.get("auth") == "htpasswd" and bcrypt_htpasswd_line("u", "p") is None:
        pytest.skip("no bcrypt for the htpasswd file: apt-get install apache2-utils")
    server = RegistryServer(tmp_path_factory.mktemp(name), binary=binary, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A real registry on loopback, plain HTTP, no auth."""
    yield from _serve(tmp_path_factory, "registry")


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A real registry on loopback with ``auth: htpasswd`` (HTTP Basic)."""
    yield from _serve(tmp_path_factory, "registry-basic", auth="htpasswd")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A real registry on loopback with ``auth: token`` and the test token endpoint."""
    yield from _serve(tmp_path_factory, "registry-token", auth="token")


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A real registry on loopback serving HTTPS with a self-signed certificate (``.ca_file``)."""
    yield from _serve(tmp_path_factory, "registry-tls", tls=True)

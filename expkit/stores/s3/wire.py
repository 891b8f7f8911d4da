"""Lean S3 GETs for bulk reads: HTTP/1.1 keep-alive on a plain socket, signed with AWS Signature V4.

Collecting a run reads thousands of objects of a few hundred bytes. Through the ``minio`` SDK
(and urllib3 and ``http.client`` below it) one such GET costs about 0.7 ms of client CPU; the
work the request needs — sign, send, read a status line, a few headers and the body — costs
about 0.1 ms. Python threads share one CPU for that work (the GIL), so on a busy machine the
client's CPU per object bounds how fast a collection can go (``bench/collect.py``).

:class:`GetConnection` does only that work, for the one request :meth:`S3Store.read_many
<expkit.stores.s3.store.S3Store.read_many>` makes in bulk: ``GET /<bucket>/<object>`` on a path-style
endpoint, optionally with ``If-None-Match``. It answers 200 (body and ETag) and 304 itself; any
other status (404, 403, 5xx, a redirect, ...) is reported as :class:`Unhandled` so that the
caller repeats the request through the SDK, which turns it into the same classified errors as
every other call. Network failures surface as :class:`ConnectionError`, :class:`TimeoutError`,
:class:`ssl.SSLError` or :class:`http.client.HTTPException` for the caller's retry policy.

:class:`Signer` computes the ``Authorization`` header as AWS specifies Signature V4 for S3
(``x-amz-content-sha256`` of the empty body; the signing key cached per day); a test checks it
against the SDK's signer. Credentials live only in the signer; nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote

from expkit.stores.s3.retry import attempt_timeout

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Response header lines and their total count are bounded like http.client bounds them.
_MAX_LINE = 65536
_MAX_HEADERS = 100


class Unhandled(Exception):
    """A response other than 200/304: the caller repeats the request through the SDK."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class Signer:
    """AWS Signature V4 for unsigned-payload-free GETs (the payload is empty)."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str
    session_token: str | None = field(default=None, repr=False)
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = hmac.new(("AWS4" + self.secret_key).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys.clear()  # one day at a time
            self._keys[day] = key
        return key

    def headers(self, method: str, host: str, path: str, extra: dict[str, str], amz_date: str) -> dict[str, str]:
        """The headers of a signed request: ``extra`` plus host, x-amz-date, x-amz-content-sha256,
        the session token when there is one, and ``Authorization``. ``path`` is already encoded;
        ``amz_date`` is ``YYYYMMDDTHHMMSSZ``."""
        signed = {k.lower(): " ".join(v.split()) for k, v in extra.items()}
        signed.update({"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date})
        if self.session_token:
            signed["x-amz-security-token"] = self.session_token
        names = sorted(signed)
        canonical = "\n".join(
            (method, path, "", *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), EMPTY_SHA256)
        )
        day = amz_date[:8]
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return signed


def amz_date(now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` for ``now`` (default: the current time), in UTC."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def object_path(bucket: str, name: str) -> str:
    """The path-style request path of object ``name``, encoded as S3 canonicalises it."""
    return "/" + bucket + "/" + quote(name, safe="/~")


def _network(err: OSError) -> OSError:
    """A socket error as the retry policy knows it: TLS errors, timeouts and connection errors as
    they are; anything else (no route, name not resolved, ...) as a :class:`ConnectionError`."""
    if isinstance(err, (ssl.SSLError, ssl.CertificateError, ConnectionError, TimeoutError)):
        return err
    if isinstance(err, socket.gaierror):
        return ConnectionError(f"[Errno {err.errno}] {err.strerror or 'name not resolved'}")
    return ConnectionError(err.errno, err.strerror or str(err))


class GetConnection:
    """One keep-alive connection to ``scheme://host[:port]`` making signed GETs; not thread-safe
    (each worker thread owns one). ``signer=None`` makes anonymous requests."""

    def __init__(
        self,
        endpoint: str,
        signer: Signer | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        scheme, _, netloc = endpoint.partition("://")
        tls = scheme == "https"
        if tls and ssl_context is None:
            raise ValueError("an https endpoint needs an SSL context")
        self._ctx = ssl_context if tls else None  # None: plain http
        self.netloc = netloc
        host, sep, port = netloc.rpartition(":")
        if not sep or "]" in port:  # no port, or an IPv6 literal without one
            host, port = netloc, "443" if tls else "80"
        self._addr = (host.strip("[]"), int(port))
        self._signer = signer
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._sock: socket.socket | None = None
        self._rfile: io.BufferedReader | None = None
        #: Responses read, and connections opened (a stale keep-alive connection — the server
        #: closed it while idle — is replaced once per request without counting as a failure).
        self.requests = 0
        self.connections = 0

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._rfile is not None:
            self._rfile.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._rfile = None

    def _timeout(self, configured: float) -> float:
        """``configured``, cut to what is left of the retry deadline (:func:`.retry.attempt_timeout`)."""
        cap = attempt_timeout()
        return configured if cap is None else min(configured, cap)

    def _connect(self) -> tuple[socket.socket, io.BufferedReader]:
        sock = socket.create_connection(self._addr, timeout=self._timeout(self._connect_timeout))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ctx is not None:
                sock = self._ctx.wrap_socket(sock, server_hostname=self._addr[0])
            sock.settimeout(self._timeout(self._read_timeout))
        except BaseException:
            sock.close()
            raise
        rfile = sock.makefile("rb")
        self._sock, self._rfile = sock, rfile
        self.connections += 1
        return sock, rfile

    def get(self, bucket: str, name: str, if_none_match: str | None = None) -> tuple[bytes, str] | None:
        """GET object ``name``: ``(body, etag)`` on 200, ``None`` on 304 (``if_none_match`` matched).
        Raises :class:`Unhandled` for any other status, network errors as they come."""
        request = self._request(bucket, name, if_none_match)
        try:
            return self._exchange(request)
        except ValueError as err:  # a malformed number in the response
            self.close()
            raise http.client.HTTPException(f"malformed response from the S3 endpoint ({err})") from None
        except OSError as err:
            self.close()
            raise _network(err) from err
        except BaseException:
            self.close()  # the connection's state is unknown: never reuse it
            raise

    def _request(self, bucket: str, name: str, if_none_match: str | None) -> bytes:
        """The bytes of a signed (or anonymous) GET request for object ``name``."""
        path = object_path(bucket, name)
        extra = {"If-None-Match": f'"{if_none_match}"'} if if_none_match else {}
        if self._signer is not None:
            headers = self._signer.headers("GET", self.netloc, path, extra, amz_date())
        else:
            headers = {"host": self.netloc, **extra}
        return (f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()

    def _exchange(self, request: bytes) -> tuple[bytes, str] | None:
        """Send ``request`` and read the answer, on the kept-alive connection or a new one."""
        if self._sock is not None and self._rfile is not None:
            sock, rfile, reused = self._sock, self._rfile, True
            sock.settimeout(self._timeout(self._read_timeout))
        else:
            (sock, rfile), reused = self._connect(), False
        try:
            sock.sendall(request)
            status_line = rfile.readline(_MAX_LINE + 1)
            if not status_line and reused:
                raise ConnectionResetError("keep-alive connection closed by the server")
        except (ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # The server closed an idle keep-alive connection: one fresh try, as browsers do.
            self.close()
            sock, rfile = self._connect()
            sock.sendall(request)
            status_line = rfile.readline(_MAX_LINE + 1)
        self.requests += 1
        return self._response(rfile, status_line)

    def _response(self, rfile: io.BufferedReader, status_line: bytes) -> tuple[bytes, str] | None:
        if not status_line:
            raise http.client.RemoteDisconnected("the server closed the connection without a response")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise http.client.BadStatusLine(status_line[:80].decode("latin-1").strip())
        status = int(parts[1])
        head = _read_head(rfile)
        close = head.close
        if head.chunked:
            body = _read_chunked(rfile)
        elif head.length is not None:
            body = _read_exactly(rfile, head.length)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # the body runs to the end of the connection
            body = rfile.read()
            close = True
        if close:
            self.close()
        if status == 200:
            return body, head.etag
        if status == 304:
            return None
        raise Unhandled(status)


class _Head(NamedTuple):
    """The response headers a GET needs."""

    length: int | None
    etag: str
    chunked: bool
    close: bool


def _read_head(rfile: io.BufferedReader) -> _Head:
    """Read the header lines up to the empty line; keep Content-Length, ETag, chunked and close."""
    length: int | None = None
    chunked = close = False
    etag = ""
    for _ in range(_MAX_HEADERS + 1):
        line = rfile.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return _Head(length, etag, chunked, close)
        if not line or len(line) > _MAX_LINE:
            raise http.client.IncompleteRead(b"", None) if not line else http.client.LineTooLong("header line")
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"etag":
            etag = value.strip().strip(b'"').decode("latin-1")
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    raise http.client.HTTPException(f"more than {_MAX_HEADERS} response headers")


def _read_exactly(rfile: io.BufferedReader, n: int) -> bytes:
    data = rfile.read(n)
    if len(data) != n:
        raise http.client.IncompleteRead(data, n - len(data))
    return data


def _read_chunked(rfile: io.BufferedReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if not line:
            raise http.client.IncompleteRead(b"".join(chunks))
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        chunks.append(_read_exactly(rfile, size))
        _read_exactly(rfile, 2)  # CRLF after the chunk

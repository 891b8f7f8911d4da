"""The lean GET path of bulk reads (expkit/stores/s3/wire.py): its Signature V4 against the minio
SDK's signer, its reads against the real S3 server (SeaweedFS, or EXPKIT_TEST_S3_ENDPOINT) next to
the SDK's, conditional GETs, every non-200/304 answer handed to the SDK's error handling, TLS, a
server restart under a kept-alive connection. HTTP framing the test server never produces
(chunked bodies, ``Connection: close``, garbage) is exercised against a scripted HTTP peer on a
loopback socket."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from minio.credentials import Credentials
from minio.signer import sign_v4_s3
from s3server import S3Endpoint, new_bucket_name

from expkit.stores.base import cell_prefix
from expkit.stores.s3 import wire as s3wire
from expkit.stores.s3.store import (
    LIST_THRESHOLD,
    BucketNotFound,
    S3AuthError,
    S3Store,
    S3TLSError,
    S3UnreachableError,
)

ODD_NAMES = [
    "plain.json",
    "with space.json",
    "plus+equals=amp&.json",
    "tilde~star*(paren).json",
    "ünïcödé-名前.json",
    "percent%20literal.json",
    "semi;colon,comma'quote.json",
]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "EXPKIT_S3_LEAN_READS",
        "SSL_CERT_FILE",
        "EXPKIT_S3_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "EXPKIT_S3_CA_BUNDLE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "expkit-cache-env"))


class CountingStore(S3Store):
    """Keeps the lean connections its bulk reads open, to count what went over them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conns: list[s3wire.GetConnection] = []
        self.sdk_fetches = 0  # GETs made through the SDK (the SDK path, or a lean answer asked again)
        sdk_get = self._client.get_object

        def get_object(*a, **kw):
            self.sdk_fetches += 1
            return sdk_get(*a, **kw)

        self._client.get_object = get_object

    def _connection(self):
        conn = super()._connection()
        if conn is not None:
            self.conns.append(conn)
        return conn

    @property
    def lean_requests(self) -> int:
        return sum(c.requests for c in self.conns)


def counting(srv: S3Endpoint, bucket: str, prefix: str, tmp_path: Path, **kw) -> CountingStore:
    kw.setdefault("retry", None)
    return CountingStore(
        bucket,
        prefix,
        kw.pop("config", None) or srv.config(),
        cache_dir=tmp_path / "c",
        workers=kw.pop("workers", 4),
        read_timeout=10,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Signature V4: byte-equal to the SDK's signer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//////////token+/="])
@pytest.mark.parametrize("name", ODD_NAMES + ["deep/a/b/c/run.json"])
@pytest.mark.parametrize("etag", [None, "0123456789abcdef0123456789abcdef"])
def test_signature_equals_the_sdk_signature(name: str, token: str | None, etag: str | None) -> None:
    when = datetime.datetime(2026, 11, 28, 6, 30, 5, tzinfo=datetime.timezone.utc)
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    host, bucket, region = "s3.example.org:9000", "my-bucket", "eu-west-3"
    path = s3wire.object_path(bucket, "pre fix/" + name)
    extra = {"If-None-Match": f'"{etag}"'} if etag else {}
    signer = s3wire.Signer("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region, token)
    ours = signer.headers("GET", host, path, extra, amz)
    sdk_headers = {"Host": host, "x-amz-content-sha256": s3wire.EMPTY_SHA256, "x-amz-date": amz, **extra}
    if token:
        sdk_headers["X-Amz-Security-Token"] = token
    sdk = sign_v4_s3(
        method="GET",
        url=urlsplit(f"https://{host}{path}"),
        region=region,
        headers=dict(sdk_headers),
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
        content_sha256=s3wire.EMPTY_SHA256,
        date=when,
    )
    assert ours["authorization"] == sdk["Authorization"]
    assert "wJalrXUtnFEMI" not in repr(signer)


def test_signing_key_is_cached_per_day_and_changes_with_the_day() -> None:
    signer = s3wire.Signer("AK", "SECRET", "us-east-1")
    a = signer.headers("GET", "h", "/b/k", {}, "20261128T000000Z")["authorization"]
    b = signer.headers("GET", "h", "/b/k", {}, "20261129T000000Z")["authorization"]
    assert a != b and list(signer._keys) == ["20261129"]
    assert signer.headers("GET", "h", "/b/k", {}, "20261128T000000Z")["authorization"] == a


# ---------------------------------------------------------------------------------------------
# Against the real S3 server
# ---------------------------------------------------------------------------------------------


def test_lean_reads_return_what_the_sdk_returns(s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path) -> None:
    keys = [f"run-w/runs/a/d/0/{n}" for n in ODD_NAMES] + [f"run-w/runs/a/d/{i}/result.json" for i in range(12)]
    bodies = {k: json.dumps({"key": k, "pad": "x" * (i * 997 % 5000)}).encode() for i, k in enumerate(keys)}
    bodies[keys[0]] = b""  # an empty object
    for k, b in bodies.items():
        s3_store.put(k, b)
    lean = counting(s3_server, s3_store.bucket, s3_store.prefix, tmp_path, cache=False)
    sdk = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "s", cache=False, lean_reads=False)
    assert lean.lean_reads and not sdk.lean_reads
    assert lean.read_many(keys) == bodies == sdk.read_many(keys)
    assert lean.lean_requests == len(keys) and lean.sdk_fetches == 0  # every object over the lean path
    assert sum(c.connections for c in lean.conns) == len(lean.conns) <= 4  # kept alive
    for k in keys[:3]:  # the same ETag as the SDK sees
        conn = lean._connection()
        try:
            assert conn.get(lean.bucket, lean._root + k)[1] == sdk._fetch(k, None)[1]
        finally:
            conn.close()


def test_conditional_gets_answer_not_modified_on_the_lean_path(
    s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path
) -> None:
    keys = [cell_prefix("run-n", f"a/d/{i}") + "result.json" for i in range(3)]  # few: no listing, If-None-Match
    for k in keys:
        s3_store.put(k, k.encode())
    first = counting(s3_server, s3_store.bucket, s3_store.prefix, tmp_path)
    assert len(first.read_many(keys)) == 3 and first.stats.downloaded == 3
    s3_store.put(keys[0], b"changed")
    again = counting(s3_server, s3_store.bucket, s3_store.prefix, tmp_path)
    assert len(keys) < LIST_THRESHOLD
    assert again.read_many(keys) == {keys[0]: b"changed", keys[1]: keys[1].encode(), keys[2]: keys[2].encode()}
    assert again.stats.cached == 2 and again.stats.downloaded == 1
    assert again.lean_requests == 3 and again.sdk_fetches == 0


def test_missing_objects_and_errors_go_through_the_sdk(
    s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path
) -> None:
    s3_store.put("run-e/runs/a/d/0/result.json", b"{}")
    store = counting(s3_server, s3_store.bucket, s3_store.prefix, tmp_path, cache=False)
    # A key the listing does not know is not requested; one asked for directly is a 404 -> the SDK -> absent.
    conn = store._connection()
    try:
        with pytest.raises(s3wire.Unhandled) as err:
            conn.get(store.bucket, store._root + "run-e/runs/a/d/9/result.json")
        assert err.value.status == 404
        assert conn.get(store.bucket, store._root + "run-e/runs/a/d/0/result.json")[0] == b"{}"  # still usable
    finally:
        conn.close()
    wrong = counting(
        s3_server,
        s3_store.bucket,
        s3_store.prefix,
        tmp_path,
        cache=False,
        config=s3_server.config(secret_key="Zq9WrongSecretZq9"),
    )
    wrong._list_requests = False
    with pytest.raises(S3AuthError) as auth:
        wrong._get_many([("run-e/runs/a/d/0/result.json", None)], {}, {}, None)
    assert "Zq9WrongSecretZq9" not in str(auth.value) and wrong.sdk_fetches == 1  # the 403 was asked again via SDK
    gone = counting(s3_server, new_bucket_name("gone"), "", tmp_path, cache=False)
    with pytest.raises(BucketNotFound):
        gone._get_many([("k", None)], {}, {}, None)


def test_lean_reads_can_be_turned_off(
    s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPKIT_S3_LEAN_READS", "0")
    store = counting(s3_server, s3_store.bucket, s3_store.prefix, tmp_path, cache=False)
    s3_store.put("run-x/runs/a/d/0/result.json", b"[]")
    assert not store.lean_reads and store._connection() is None
    assert store.read_many(["run-x/runs/a/d/0/result.json"]) == {"run-x/runs/a/d/0/result.json": b"[]"}
    assert store.sdk_fetches == 1
    aws = S3Store(
        "some-bucket",
        "",
        s3_server.config(endpoint="https://s3.amazonaws.com", region=None),
        cache=False,
        lean_reads=True,
    )
    assert not aws.lean_reads  # virtual-host style and the region lookup stay with the SDK


def test_lean_reads_over_tls_check_the_certificate(s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path) -> None:
    if s3_server.https_endpoint is None:
        pytest.skip("the test server has no TLS port (needs the openssl command)")
    key = "run-t/runs/a/d/0/result.json"
    s3_store.put(key, b'{"tls": true}')
    untrusted = counting(
        s3_server,
        s3_store.bucket,
        s3_store.prefix,
        tmp_path,
        cache=False,
        config=s3_server.config(endpoint=s3_server.https_endpoint),
    )
    with pytest.raises(S3TLSError) as err:
        untrusted._get_many([(key, None)], {}, {}, None)
    assert "certificate verify failed" in str(err.value) and untrusted.stats.retries == 0
    trusted = counting(
        s3_server,
        s3_store.bucket,
        s3_store.prefix,
        tmp_path,
        cache=False,
        config=s3_server.config(endpoint=s3_server.https_endpoint, ca_bundle=str(s3_server.ca_file)),
    )
    out: dict[str, bytes] = {}
    trusted._get_many([(key, None)], {}, out, None)
    assert out == {key: b'{"tls": true}'} and trusted.lean_requests == 1


def test_a_restarted_server_under_a_kept_alive_connection(s3_fault_server: S3Endpoint, tmp_path: Path) -> None:
    srv = s3_fault_server
    store = srv.store("lean-restart", cache_dir=tmp_path / "c", create=True, cache=False)
    store.put("k/one", b"1")
    conn = store._connection()
    try:
        assert conn.get(store.bucket, "k/one") == (b"1", conn.get(store.bucket, "k/one")[1])
        srv.stop()
        with pytest.raises(ConnectionError):
            conn.get(store.bucket, "k/one")  # nobody listening: refused, for the retry policy
        srv.start()
        assert conn.get(store.bucket, "k/one")[0] == b"1"
        assert conn.connections >= 2
    finally:
        conn.close()


def test_unreachable_endpoint_is_one_line(s3_server: S3Endpoint, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = counting(
        s3_server,
        "some-bucket",
        "",
        tmp_path,
        cache=False,
        config=s3_server.config(endpoint=f"http://127.0.0.1:{port}"),
    )
    store.retry = type(store.retry)(attempts=2, base_delay=0.01, max_delay=0.02)
    with pytest.raises(S3UnreachableError) as err:
        store._get_many([("a/b", None)], {}, {}, None)
    assert f"127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)
    store = counting(
        s3_server,
        "some-bucket",
        "",
        tmp_path,
        cache=False,
        config=s3_server.config(endpoint="http://no-such-host.invalid:9000"),
    )
    store.retry = type(store.retry)(attempts=2, base_delay=0.01, max_delay=0.02)
    with pytest.raises(S3UnreachableError):
        store._get_many([("a/b", None)], {}, {}, None)


# ---------------------------------------------------------------------------------------------
# HTTP framing against a scripted peer
# ---------------------------------------------------------------------------------------------


class ScriptedPeer:
    """A loopback TCP server answering each request with the next scripted response bytes (None:
    close the connection without answering). Records the request heads it received."""

    def __init__(self, responses: list[bytes | None]) -> None:
        self.responses = list(responses)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.responses:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while self.responses:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    self.requests.append(head)
                    response = self.responses.pop(0)
                    if response is None:
                        break
                    conn.sendall(response)

    def close(self) -> None:
        self.sock.close()


def peer_get(responses: list[bytes | None], n: int = 1) -> tuple[list, ScriptedPeer, s3wire.GetConnection]:
    peer = ScriptedPeer(responses)
    conn = s3wire.GetConnection(
        f"http://127.0.0.1:{peer.port}", s3wire.Signer("AK", "SK", "us-east-1"), connect_timeout=5, read_timeout=3
    )
    out = []
    try:
        for _ in range(n):
            try:
                out.append(conn.get("bkt", "a/b.json"))
            except Exception as err:  # noqa: BLE001 - the test inspects it
                out.append(err)
    finally:
        conn.close()
        peer.close()
    return out, peer, conn


def test_framing_chunked_close_and_reuse() -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: "e1"\r\n\r\n'
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    plain = b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: "e2"\r\n\r\nabc'
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nEtag: e3\r\n\r\nhi"
    out, peer, conn = peer_get([chunked, plain, closing, plain], n=4)
    assert out == [(b"hello world", "e1"), (b"abc", "e2"), (b"hi", "e3"), (b"abc", "e2")]
    assert conn.connections == 2 and conn.requests == 4  # a new connection only after "Connection: close"
    head = peer.requests[0].decode()
    assert head.startswith("GET /bkt/a/b.json HTTP/1.1\r\n") and "authorization: AWS4-HMAC-SHA256" in head
    assert "SK" not in head.split("Signature=")[0].replace("SignedHeaders", "")


def test_framing_errors_are_network_errors_and_stale_connections_are_retried_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    # The peer closes the kept-alive connection instead of answering the second request: a new one is used.
    out, _, conn = peer_get([ok, None, ok], n=2)
    assert out == [(b"ok", ""), (b"ok", "")] and conn.connections == 2
    out, _, _ = peer_get([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])  # then closes
    assert isinstance(out[0], http.client.IncompleteRead)
    out, _, _ = peer_get([b"SSH-2.0-OpenSSH\r\n\r\n"])
    assert isinstance(out[0], http.client.BadStatusLine)
    out, _, _ = peer_get([b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"])
    assert isinstance(out[0], http.client.HTTPException) and "malformed" in str(out[0])
    out, _, _ = peer_get([b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n'])
    assert out == [None]
    out, _, _ = peer_get([b"HTTP/1.1 503 Slow Down\r\nContent-Length: 4\r\n\r\nbusy"])
    assert isinstance(out[0], s3wire.Unhandled) and out[0].status == 503
    out, _, _ = peer_get([None])  # closed before any answer on a fresh connection
    assert isinstance(out[0], http.client.RemoteDisconnected)


def test_an_unreadable_ca_file_is_one_error_before_any_request(
    s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    store = counting(
        s3_server, "some-bucket", "", tmp_path, cache=False, config=s3_server.config(endpoint="https://127.0.0.1:1")
    )
    with pytest.raises(S3TLSError) as err:
        store._get_many([("a/b", None), ("a/c", None)], {}, {}, None)
    text = str(err.value)
    assert "no-such-ca.pem" in text and "EXPKIT_S3_CA_BUNDLE" in text and "\n" not in text
    assert store.conns == [] and store.stats.retries == 0

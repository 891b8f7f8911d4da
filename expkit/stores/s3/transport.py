"""The connections of an S3 store: the minio client over one urllib3 pool for the endpoint, the
TLS settings shared with the lean GETs of :mod:`expkit.stores.s3.wire`, and their request signer.
Every request waits at most what is left of the retry deadline
(:func:`~expkit.stores.s3.retry.attempt_timeout`)."""

from __future__ import annotations

import os
import ssl
from typing import Any

import certifi
import urllib3
from minio import Minio

from expkit.stores.s3 import wire as s3wire
from expkit.stores.s3.config import S3Config
from expkit.stores.s3.errors import S3TLSError
from expkit.stores.s3.retry import attempt_timeout, short_reason


class EndpointPoolManager(urllib3.PoolManager):
    """A PoolManager that hands requests for the store's endpoint (path-style URLs,
    ``scheme://host[:port]/...``) straight to one connection pool, skipping urllib3's per-request
    URL parsing and pool-key lookup (tens of microseconds, a few percent of a small GET's client
    CPU). Any other URL (e.g. AWS virtual-host-style names) and any redirect take the normal path."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = endpoint + "/"
        u = urllib3.util.parse_url(endpoint)
        port = u.port or (443 if u.scheme == "https" else 80)
        self._pool = self._new_pool(u.scheme or "http", u.host or "", port)  # not in self.pools: never evicted

    # urllib3's PoolManager.urlopen narrows RequestMethods.urlopen the same way (and ignores the same error).
    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        """As :meth:`urllib3.PoolManager.urlopen`; the endpoint's own URLs go to its pool directly.
        Connect and read timeouts are cut to what is left of the retry deadline."""
        cap = attempt_timeout()
        if cap is not None and "timeout" not in kw:
            kw["timeout"] = self._capped(cap)
        if not url.startswith(self._base):
            return super().urlopen(method, url, redirect=redirect, **kw)
        kw.setdefault("headers", self.headers)
        response = self._pool.urlopen(method, url[len(self._base) - 1 :], assert_same_host=False, redirect=False, **kw)
        if redirect and response.get_redirect_location():
            response.drain_conn()
            return super().urlopen(method, url, redirect=redirect, **kw)
        return response

    def _capped(self, cap: float) -> urllib3.Timeout:
        """The pool's timeouts, none longer than ``cap`` seconds."""
        default = self.connection_pool_kw.get("timeout")
        connect = default.connect_timeout if isinstance(default, urllib3.Timeout) else None
        read = default.read_timeout if isinstance(default, urllib3.Timeout) else None
        return urllib3.Timeout(
            connect=min(connect, cap) if isinstance(connect, (int, float)) else cap,
            read=min(read, cap) if isinstance(read, (int, float)) else cap,
        )

    def clear(self) -> None:
        """Close every pool, the endpoint's included."""
        super().clear()
        self._pool.close()


def ca_certs(config: S3Config) -> str:
    """The CA bundle both kinds of connection verify against: the configured one, else
    ``$SSL_CERT_FILE``, else certifi's."""
    return config.ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where()


def new_client(config: S3Config, *, workers: int, connect_timeout: float, read_timeout: float, cafile: str) -> Minio:
    """A minio client for ``config`` with a pool of ``workers`` connections and no urllib3 retries."""
    http = EndpointPoolManager(
        config.endpoint,
        num_pools=4,
        maxsize=workers,
        retries=False,  # our retry logic decides, not urllib3's
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        cert_reqs="CERT_REQUIRED",
        ca_certs=cafile,
    )
    return Minio(
        config.netloc,
        access_key=config.access_key,
        secret_key=config.secret_key,
        session_token=config.session_token,
        secure=config.secure,
        region=config.region,
        http_client=http,
    )


def new_signer(config: S3Config) -> s3wire.Signer | None:
    """The lean GETs' request signer (None without credentials: anonymous requests)."""
    if not (config.access_key and config.secret_key):
        return None
    return s3wire.Signer(config.access_key, config.secret_key, str(config.region), config.session_token)


def tls_context(cafile: str) -> ssl.SSLContext:
    """A TLS context verifying certificates against ``cafile``."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as err:
        raise S3TLSError(
            f"cannot load the CA certificates {cafile} ({short_reason(err)}): set "
            "EXPKIT_S3_CA_BUNDLE (or SSL_CERT_FILE) to a PEM file"
        ) from None

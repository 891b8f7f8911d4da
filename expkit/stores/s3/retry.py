"""Retries and error messages of the S3 store.

Transient failures (connection refused or reset, timeouts, HTTP 5xx and 429, SlowDown and other
throttling codes) are retried with exponential backoff (:class:`RetryPolicy`); TLS errors never
are. A final failure becomes a one-line :class:`~expkit.core.errors.StoreError` that names the
endpoint, the bucket and where the configuration came from (:class:`StoreLocation`), never the
credentials.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from expkit.core.errors import StoreError
from expkit.stores.base import ObjectNotFound
from expkit.stores.s3.config import S3Config
from expkit.stores.s3.errors import (
    BucketNotFound,
    S3AuthError,
    S3ConfigError,
    S3TLSError,
    S3TransferError,
    S3UnreachableError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "ServerBusy",
        "Busy",
        "XMinioServerNotInitialized",
        "OperationAborted",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "InvalidClientTokenId",
        "MissingSecurityHeader",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: ``attempts`` tries in all, waiting ``base_delay``
    seconds after the first failure, doubling each time, at most ``max_delay``."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise S3ConfigError(f"invalid retry policy {self}: attempts must be >= 1 and delays >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (with 10% jitter)."""
        base = min(self.base_delay * 2.0 ** (failures - 1), self.max_delay)
        return base * (1 + 0.1 * random.random())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """``EXPKIT_S3_ATTEMPTS`` and ``EXPKIT_S3_BACKOFF`` (first delay in seconds) override the defaults."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        conversions: tuple[tuple[str, str, Callable[[str], float]], ...] = (
            ("EXPKIT_S3_ATTEMPTS", "attempts", int),
            ("EXPKIT_S3_BACKOFF", "base_delay", float),
        )
        for var, name, conv in conversions:
            if env.get(var):
                try:
                    kwargs[name] = conv(env[var])
                except ValueError:
                    raise S3ConfigError(f"{var}={env[var]!r} is not a number") from None
        return cls(**kwargs)


class StoreLocation(Protocol):
    """What the error messages of a store name: its URL, bucket and endpoint, and (from its
    configuration) where the endpoint and the credentials came from, never the credentials."""

    @property
    def url(self) -> str:
        """The store URL (no credentials)."""
        ...

    @property
    def bucket(self) -> str:
        """The bucket name."""
        ...

    @property
    def endpoint(self) -> str:
        """``scheme://host[:port]``."""
        ...

    @property
    def config(self) -> S3Config:
        """The configuration (for where the endpoint and credentials came from)."""
        ...


def translate(err: BaseException, what: str, where: StoreLocation, key: str | None = None) -> StoreError:
    """Turn a non-transient failure into a one-line StoreError (never containing credentials)."""
    if isinstance(err, StoreError):
        return err
    if isinstance(err, S3Error):
        return _translate_s3(err, what, where, key)
    if isinstance(err, InvalidResponseError):
        status = getattr(err, "_code", "?")
        return StoreError(
            f"{where.endpoint} answered {what} with HTTP {status} and no S3 error document: "
            f"is it an S3 endpoint? (from {where.config.endpoint_source})"
        )
    if isinstance(err, ServerError):
        return StoreError(f"{where.endpoint} failed with HTTP {err.status_code} while {what}")
    tls = ssl_error(err)
    if tls is not None:
        reason = short_reason(tls)
        hint = (
            "the server may speak plain http: write http://... in EXPKIT_S3_ENDPOINT"
            if "WRONG_VERSION_NUMBER" in reason or "wrong version" in reason
            else "for a private CA set EXPKIT_S3_CA_BUNDLE to its certificate file"
        )
        return S3TLSError(f"TLS connection to {where.endpoint} failed ({reason}) while {what}: {hint}")
    if isinstance(err, OSError) and not is_network(err):
        return StoreError(f"local file error while {what}: {err.strerror or err}")
    return StoreError(f"{what} failed against {where.endpoint}: {short_reason(err)}")


def _translate_s3(err: S3Error, what: str, where: StoreLocation, key: str | None) -> StoreError:
    """The StoreError for an S3 error document, by its code."""
    code = err.code or "error"
    endpoint, config = where.endpoint, where.config
    if code in ("NoSuchKey", "NotFound") and key is not None:
        return ObjectNotFound(f"{key} not found in {where.url}")
    if code == "NoSuchBucket":
        return BucketNotFound(
            f"bucket {where.bucket} does not exist at {endpoint}: create it or fix "
            f"--store (endpoint from {config.endpoint_source})"
        )
    if code in _CREDENTIAL_CODES:
        return S3AuthError(
            f"{endpoint} rejected the credentials from {config.credentials_source} "
            f"({code}) while {what}: check the access key and secret key"
        )
    if code in _DENIED_CODES:
        return S3AuthError(
            f"access denied to {where.url} at {endpoint} while {what}, with the "
            f"credentials from {config.credentials_source}: they are wrong or lack "
            "permission for this bucket"
        )
    if code in _REGION_CODES:
        return S3ConfigError(
            f"bucket {where.bucket} is in another region or at another endpoint "
            f"({code}): set AWS_REGION or EXPKIT_S3_ENDPOINT"
        )
    message = (err.message or "").splitlines()[0][:200] if err.message else ""
    return StoreError(f"S3 error {code} from {endpoint} while {what}" + (f": {message}" if message else ""))


def give_up(err: BaseException, what: str, attempts: int, where: StoreLocation) -> StoreError:
    """The error for a transient failure that persisted through ``attempts`` tries."""
    reason = short_reason(err)
    if is_connection(err):
        return S3UnreachableError(
            f"cannot reach the S3 endpoint {where.endpoint} ({reason}) after {attempts} "
            f"attempts while {what}: check EXPKIT_S3_ENDPOINT (from "
            f"{where.config.endpoint_source}) and that the server is up",
            reason,
        )
    return S3TransferError(
        f"{what} failed {attempts} times at {where.endpoint} ({reason}): the server is failing; try again later",
        reason,
    )


def call_with_retries(
    what: str,
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    where: StoreLocation,
    on_retry: Callable[[], None],
    key: str | None = None,
    abort: threading.Event | None = None,
) -> T:
    """Run ``fn`` with bounded retries on transient failures (``on_retry`` is called before each
    retry); translate the final failure. When ``abort`` is set (another task gave up), stop retrying."""
    failures = 0
    while True:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified below
            if not is_transient(err):
                raise translate(err, what, where, key) from None
            failures += 1
            if failures >= policy.attempts or (abort is not None and abort.is_set()):
                raise give_up(err, what, failures, where) from None
            delay = policy.delay(failures)
            on_retry()
            log.debug(
                "retrying %s in %.2fs (attempt %d/%d failed: %s)",
                what,
                delay,
                failures,
                policy.attempts,
                short_reason(err),
            )
            if abort is not None:
                abort.wait(delay)
            else:
                time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# Classifying failures
# ---------------------------------------------------------------------------------------------


def ssl_error(err: BaseException) -> BaseException | None:
    """The TLS error behind ``err`` (itself, a urllib3 retry error's reason, or a cause a few
    levels down), or None."""
    seen = 0
    cur: BaseException | None = err
    while cur is not None and seen < 5:
        if isinstance(cur, (urllib3.exceptions.SSLError, ssl.SSLError)):
            return cur
        cur = cur.reason if isinstance(cur, urllib3.exceptions.MaxRetryError) else cur.__context__
        seen += 1
    return None


def is_network(err: BaseException) -> bool:
    """Whether ``err`` is an HTTP or network failure (as opposed to, e.g., a local file error)."""
    return isinstance(err, (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError))


def is_connection(err: BaseException) -> bool:
    """Whether ``err`` says the endpoint could not be reached or the connection broke."""
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    return isinstance(
        err,
        (
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.ReadTimeoutError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ),
    )


def is_transient(err: BaseException) -> bool:
    """Worth retrying: connection failures, timeouts, 5xx/429 and throttling codes; not TLS errors."""
    if ssl_error(err) is not None:
        return False
    if isinstance(err, S3Error):
        status = getattr(getattr(err, "response", None), "status", 0) or 0
        return err.code in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(err, ServerError):
        return err.status_code >= 500 or err.status_code == 429
    if isinstance(err, InvalidResponseError):
        status = getattr(err, "_code", 0)
        return isinstance(status, int) and (status >= 500 or status == 429)
    return is_network(err)


def short_reason(err: BaseException) -> str:
    """A short, credential-free reason: 'connection refused', 'HTTP 503', 'SlowDown', ..."""
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    if isinstance(err, S3Error):
        return err.code or "S3 error"
    if isinstance(err, ServerError):
        return f"HTTP {err.status_code}"
    if isinstance(err, InvalidResponseError):
        return f"HTTP {getattr(err, '_code', '?')}"
    text = str(err)
    m = re.search(r"\[SSL: ([A-Z_]+)\]\s*([^(]*)", text)
    if m:
        return (m.group(2).strip() or m.group(1).lower()).rstrip(" .")
    m = re.search(r"\[Errno -?\d+\] ([^)\]'\"]+)", text)
    if m:
        return m.group(1).strip().lower()
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return "read timed out"
    if isinstance(err, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(err, (urllib3.exceptions.ProtocolError, http.client.HTTPException)):
        return "connection broken"
    return type(err).__name__

"""Retries and error messages of the S3 store.

Transient failures (connection refused or reset, timeouts, HTTP 5xx and 429, SlowDown and other
throttling codes) are retried with exponential backoff (:class:`RetryPolicy`); TLS errors never
are. A final failure becomes a one-line :class:`~expkit.core.errors.StoreError` that names the
endpoint, the bucket and where the configuration came from (:class:`StoreLocation`), never the
credentials.

Retries are bounded in time as well as in number: once a store's requests have been failing for
``RetryPolicy.deadline`` seconds (30 by default, ``EXPKIT_S3_DEADLINE`` or ``deadline`` in the
profile), its calls stop retrying, and every attempt's socket timeouts are cut to the time left
(:func:`attempt_timeout`, read by the connections of :mod:`.transport` and :mod:`.wire`), so a
server that accepts connections but never answers fails a command in about that long, not in
five 60-second read timeouts.
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
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from expkit.core.errors import StoreError
from expkit.stores.base import ObjectNotFound
from expkit.stores.s3.config import DEFAULT_DEADLINE, S3Config, parse_deadline
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


#: However little of the deadline is left, an attempt may wait this long for the server (at most the deadline).
MIN_ATTEMPT_TIMEOUT = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: ``attempts`` tries in all, waiting ``base_delay``
    seconds after the first failure, doubling each time, at most ``max_delay``; and no retry once a
    store's requests have been failing for ``deadline`` seconds (see the module docstring)."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or not self.deadline > 0:
            raise S3ConfigError(f"invalid retry policy {self}: attempts must be >= 1, delays >= 0 and the deadline > 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (with 10% jitter)."""
        base = min(self.base_delay * 2.0 ** (failures - 1), self.max_delay)
        return base * (1 + 0.1 * random.random())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, config: S3Config | None = None) -> RetryPolicy:
        """``EXPKIT_S3_ATTEMPTS`` and ``EXPKIT_S3_BACKOFF`` (first delay in seconds) override the defaults;
        the deadline is ``config.deadline`` when the configuration has one (``EXPKIT_S3_DEADLINE`` or the
        profile's ``deadline``), else ``EXPKIT_S3_DEADLINE``, else 30 seconds."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        if config is not None and config.deadline is not None:
            kwargs["deadline"] = config.deadline
        elif env.get("EXPKIT_S3_DEADLINE"):
            kwargs["deadline"] = parse_deadline(env["EXPKIT_S3_DEADLINE"], "EXPKIT_S3_DEADLINE")
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


def give_up(
    err: BaseException, what: str, attempts: int, where: StoreLocation, deadline: float | None = None
) -> StoreError:
    """The error for a transient failure that persisted through ``attempts`` tries (or, with
    ``deadline``, until the store had been failing for that many seconds)."""
    reason = short_reason(err)
    lead, tail = "", ""
    if deadline is not None:
        lead = f"gave up after {deadline:g} s of retries: "
        tail = "; for a slow endpoint raise EXPKIT_S3_DEADLINE (or 'deadline' in the profile file)"
    if is_connection(err):
        return S3UnreachableError(
            f"{lead}cannot reach the S3 endpoint {where.endpoint} ({reason}) after {attempts} "
            f"attempt{'s' if attempts != 1 else ''} while {what}: check EXPKIT_S3_ENDPOINT (from "
            f"{where.config.endpoint_source}) and that the server is up{tail}",
            reason,
        )
    return S3TransferError(
        f"{lead}{what} failed {attempts} time{'s' if attempts != 1 else ''} at {where.endpoint} ({reason}): "
        "the server is failing; "
        f"try again later{tail}",
        reason,
    )


class _FailingClock:
    """Since when one store's requests have been failing (None: the last one got an answer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def left(self, deadline: float) -> float:
        """Seconds of ``deadline`` left: all of it unless the store's requests are failing."""
        with self._lock:
            return deadline if self._since is None else deadline - (time.monotonic() - self._since)

    def failed(self, began: float) -> float:
        """A request failed in a transient way; its trouble began at ``began``. Returns since when the
        store has been failing."""
        with self._lock:
            self._since = began if self._since is None else min(self._since, began)
            return self._since

    def answered(self) -> None:
        """The endpoint answered a call (success, or an answer that is not a transient failure)."""
        with self._lock:
            self._since = None


_clocks: weakref.WeakKeyDictionary[Any, _FailingClock] = weakref.WeakKeyDictionary()
_clocks_lock = threading.Lock()
_attempt = threading.local()


def _clock_of(where: StoreLocation) -> _FailingClock:
    """The failing clock of the store ``where`` (a fresh one for an object that cannot be weakly keyed)."""
    with _clocks_lock:
        try:
            clock = _clocks.get(where)
            if clock is None:
                clock = _clocks[where] = _FailingClock()
        except TypeError:
            clock = _FailingClock()
    return clock


def attempt_timeout() -> float | None:
    """Seconds the request being made on this thread may wait for the server: what is left of the
    deadline of the :func:`call_with_retries` it runs in (None outside one)."""
    timeout: float | None = getattr(_attempt, "timeout", None)
    return timeout


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
    retry); translate the final failure. When ``abort`` is set (another task gave up), stop retrying.
    Retries also stop when the store has been failing for ``policy.deadline`` seconds, and each
    attempt may wait only for what is left of it (see :func:`attempt_timeout`)."""
    clock = _clock_of(where)
    failures = 0
    while True:
        started = time.monotonic()
        timeout = min(max(clock.left(policy.deadline), MIN_ATTEMPT_TIMEOUT), policy.deadline)
        try:
            result = _attempt_within(fn, timeout)
        except Exception as err:  # noqa: BLE001 - classified below
            if not is_transient(err):
                clock.answered()
                raise translate(err, what, where, key) from None
            now = time.monotonic()
            # a timeout means the server has been silent for that long; any other failure began now
            since = clock.failed(max(started, now - timeout) if is_timeout(err) else now)
            failures += 1
            delay = policy.delay(failures)
            out_of_time = now - since + delay >= policy.deadline
            if failures >= policy.attempts or out_of_time or (abort is not None and abort.is_set()):
                raise give_up(err, what, failures, where, policy.deadline if out_of_time else None) from None
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
        else:
            clock.answered()
            return result


def _attempt_within(fn: Callable[[], T], timeout: float) -> T:
    """``fn()`` with :func:`attempt_timeout` set to ``timeout`` seconds on this thread."""
    previous = getattr(_attempt, "timeout", None)
    _attempt.timeout = timeout
    try:
        return fn()
    finally:
        _attempt.timeout = previous


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


def is_timeout(err: BaseException) -> bool:
    """Whether ``err`` is a connect or read timeout (the server was silent for the whole timeout)."""
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    return isinstance(err, (urllib3.exceptions.TimeoutError, TimeoutError))


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

"""The errors of the S3 store, all :class:`~expkit.core.errors.StoreError` subclasses.

Their messages are one line and never contain credentials: they name the endpoint, the bucket and
where the configuration came from (see :func:`~expkit.stores.s3.retry.translate`).
"""

from __future__ import annotations

from expkit.core.errors import StoreError


class S3ConfigError(StoreError):
    """The S3 configuration (URL, endpoint, profile file, credentials variables) is unusable."""

    exit_code = 2


class BucketNotFound(StoreError):
    """The bucket of the store does not exist at the endpoint."""


class S3AuthError(StoreError):
    """The endpoint rejected the credentials, or they lack permission."""


class S3TLSError(StoreError):
    """The TLS handshake with the endpoint failed (wrong scheme, untrusted certificate)."""


class GaveUp(StoreError):
    """Retries ran out; ``reason`` is the last failure in a few words ('connection refused', 'HTTP 503')."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class S3UnreachableError(GaveUp):
    """The endpoint could not be reached (after the retries)."""


class S3TransferError(GaveUp):
    """Some objects could not be read or written after the retries; the message names them."""

"""Keeping credentials out of paper bundles: find the values of the credentials expkit knows in the
logs a bundle would hold, and refuse the export or replace them (``expkit export --redact``).

The values looked for (:func:`known_secrets`) are those of the credential environment variables in
:data:`CREDENTIAL_VARIABLES`, the S3 credentials of the profile file expkit would use
(``secret_access_key``, ``session_token``) and the registry passwords of the Docker config file.
Values shorter than :data:`MIN_SECRET_LENGTH` characters are ignored (too likely to occur by
chance). Files are read in chunks, so a log of any size is scanned in constant memory. A message
names the file and the variable, never the value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from expkit.core.errors import ExpkitError

log = logging.getLogger(__name__)

#: Environment variables whose values are credentials.
CREDENTIAL_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "EXPKIT_S3_SECRET_ACCESS_KEY",
    "EXPKIT_REGISTRY_PASSWORD",
)
#: Shorter values are not looked for.
MIN_SECRET_LENGTH = 8
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SecretScanner:
    """Finds (and replaces) the values of known credentials in a byte stream, chunk by chunk."""

    names: Mapping[bytes, str]  # value -> the variable (or source) it came from
    pattern: re.Pattern[bytes] | None
    longest: int

    @classmethod
    def of(cls, secrets: Mapping[str, str]) -> SecretScanner:
        """A scanner for ``secrets`` (name -> value); values shorter than :data:`MIN_SECRET_LENGTH` are left out."""
        names: dict[bytes, str] = {}
        for name, value in sorted(secrets.items()):
            if len(value) >= MIN_SECRET_LENGTH:
                names.setdefault(value.encode(), name)
        if not names:
            return cls({}, None, 0)
        ordered = sorted(names, key=len, reverse=True)  # the longest value wins where one contains another
        return cls(names, re.compile(b"|".join(re.escape(v) for v in ordered)), len(ordered[0]))

    def __bool__(self) -> bool:
        return self.pattern is not None

    def scan(self, src: IO[bytes], dst: IO[bytes] | None = None) -> set[str]:
        """The names of the credentials whose values occur in ``src``. With ``dst``, ``src`` is copied to
        it with every value replaced by ``[REDACTED:<NAME>]``. Constant memory whatever the size."""
        found: set[str] = set()
        if self.pattern is None:
            if dst is not None:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            return found
        carry = b""
        while True:
            chunk = src.read(_CHUNK)
            buf = carry + chunk
            # A value starting before ``cut`` lies wholly inside ``buf``; later ones wait for the next chunk.
            cut = len(buf) if not chunk else max(0, len(buf) - (self.longest - 1))
            pos = 0
            parts: list[bytes] = []
            for match in self.pattern.finditer(buf):
                if match.start() >= cut:
                    break
                name = self.names[match.group()]
                found.add(name)
                parts += [buf[pos : match.start()], f"[REDACTED:{name}]".encode()]
                pos = match.end()
            if pos < cut:
                parts.append(buf[pos:cut])
                pos = cut
            if dst is not None:
                dst.write(b"".join(parts))
            carry = buf[pos:]
            if not chunk:
                return found


def known_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The credentials expkit knows of: ``{variable or source: value}`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    found = {name: env[name] for name in CREDENTIAL_VARIABLES if env.get(name)}
    found.update(_s3_profile_secrets(env))
    found.update(_registry_passwords(env))
    return found


def _s3_profile_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The S3 secret key and session token of the profile file expkit reads (``$EXPKIT_CONFIG``, ...)."""
    from expkit.stores.s3.config import S3Config

    # Without the AWS_* variables (which win over the file) the configuration's credentials are the profile's.
    try:
        config = S3Config.from_env({k: v for k, v in env.items() if not k.startswith("AWS_")})
    except ExpkitError as err:  # a broken profile: nothing to look for there
        log.debug("no S3 profile credentials to look for: %s", err)
        return {}
    found = {}
    if config.secret_key:
        found["the S3 profile's secret_access_key"] = config.secret_key
    if config.session_token:
        found["the S3 profile's session_token"] = config.session_token
    return found


def _registry_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """The registry passwords of the Docker config file (``expkit pin`` uses them)."""
    from expkit.reproduce.credentials import Credentials

    try:
        creds = Credentials(env)
    except ExpkitError:
        return {}
    return {f"the Docker config's password for {registry}": p for registry, p in creds.passwords().items()}

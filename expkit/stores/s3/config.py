"""Where the S3 store connects and with which credentials: :class:`S3Config`, the profile file,
endpoint and ``s3://`` URL parsing, and the local cache directory.

Configuration (see ``docs/s3.md``) comes from the environment — ``EXPKIT_S3_ENDPOINT``,
``EXPKIT_S3_INSECURE``, ``EXPKIT_S3_CA_BUNDLE``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``EXPKIT_S3_DEADLINE`` (how long a
command retries a failing endpoint) — or from a TOML profile file
(``$EXPKIT_CONFIG``, default ``~/.config/expkit/config.toml``): an ``[s3]`` table, and named
profiles ``[s3.NAME]`` selected by ``EXPKIT_PROFILE``. Environment variables win over the file.
Credentials never appear in ``repr``, log records or error messages.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from expkit.core.errors import ArtifactError
from expkit.stores.base import check_key
from expkit.stores.s3.errors import S3ConfigError

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
#: A valid bucket name (3-63 lowercase letters, digits, '.' and '-'; no '..', checked separately).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PROFILE_KEYS = (
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "insecure",
    "ca_bundle",
    "deadline",
)
#: Seconds a command retries an endpoint that keeps failing (``EXPKIT_S3_DEADLINE``, ``deadline``).
DEFAULT_DEADLINE = 30.0
#: The longest deadline expkit accepts (a day).
MAX_DEADLINE = 86400.0
#: Spellings of a true and a false environment variable.
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class _Credentials(NamedTuple):
    """Resolved credentials and a description of where they came from (never their values)."""

    access_key: str | None
    secret_key: str | None
    session_token: str | None
    source: str


@dataclass(frozen=True)
class S3Config:
    """Where and how to connect. Credentials are kept out of ``repr``; ``credentials_source`` and
    ``endpoint_source`` say where they came from, for error messages."""

    endpoint: str = DEFAULT_ENDPOINT  # scheme://host[:port], no path, no credentials
    region: str | None = DEFAULT_REGION
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    credentials_source: str = "no credentials (anonymous requests)"
    endpoint_source: str = "the default"
    #: Seconds to keep retrying a failing endpoint (None: the default, see :class:`~.retry.RetryPolicy`).
    deadline: float | None = None

    @property
    def secure(self) -> bool:
        """Whether the endpoint speaks https."""
        return self.endpoint.startswith("https://")

    @property
    def netloc(self) -> str:
        """``host[:port]`` of the endpoint."""
        return self.endpoint.split("://", 1)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Resolve the configuration: environment variables first, then the profile file, then defaults."""
        env = os.environ if environ is None else environ
        profile, where = _load_profile(env)
        insecure = env.get("EXPKIT_S3_INSECURE", "").strip().lower() in TRUE or profile.get("insecure") is True
        if env.get("EXPKIT_S3_ENDPOINT"):
            raw, endpoint_source = env["EXPKIT_S3_ENDPOINT"], "EXPKIT_S3_ENDPOINT"
        elif profile.get("endpoint"):
            raw, endpoint_source = str(profile["endpoint"]), where
        else:
            raw, endpoint_source = DEFAULT_ENDPOINT, "the default (AWS S3; set EXPKIT_S3_ENDPOINT for another)"
        endpoint = parse_endpoint(raw, insecure=insecure, source=endpoint_source)
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or profile.get("region")
        if not region:
            # AWS answers with the bucket's region; other endpoints take the conventional default.
            region = None if is_aws(endpoint) else DEFAULT_REGION
        credentials = _credentials(env, profile, where)
        if env.get("EXPKIT_S3_DEADLINE"):
            deadline: float | None = parse_deadline(env["EXPKIT_S3_DEADLINE"], "EXPKIT_S3_DEADLINE")
        elif "deadline" in profile:
            deadline = parse_deadline(profile["deadline"], f"'deadline' in {where}")
        else:
            deadline = None
        return cls(
            endpoint=endpoint,
            region=region,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.session_token,
            ca_bundle=_ca_bundle(env, profile),
            credentials_source=credentials.source,
            endpoint_source=endpoint_source,
            deadline=deadline,
        )


def parse_deadline(raw: object, source: str) -> float:
    """The retry deadline in seconds from ``raw`` (a string from the environment, a number from the
    profile file): more than 0 and at most :data:`MAX_DEADLINE`; :class:`S3ConfigError` otherwise."""
    value = math.nan
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            pass
    if not (math.isfinite(value) and 0 < value <= MAX_DEADLINE):
        raise S3ConfigError(
            f"{source}={str(raw)[:40]!r} is not a deadline: give the seconds a command may spend retrying a "
            f"failing S3 endpoint, more than 0 and at most {MAX_DEADLINE:g} (default {DEFAULT_DEADLINE:g})"
        )
    return value


def _credentials(env: Mapping[str, str], profile: Mapping[str, Any], where: str) -> _Credentials:
    """The credentials from the ``AWS_*`` variables (both or neither), else the profile, else none."""
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"):
        missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(v)]
        if missing:
            raise S3ConfigError(
                f"{missing[0]} is not set while its partner is: set both, or unset both to use the profile file"
            )
        names = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" + (
            "/AWS_SESSION_TOKEN" if env.get("AWS_SESSION_TOKEN") else ""
        )
        return _Credentials(
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN"),
            f"the environment ({names})",
        )
    if profile.get("access_key_id") or profile.get("secret_access_key"):
        if not (profile.get("access_key_id") and profile.get("secret_access_key")):
            raise S3ConfigError(f"{where} sets only one of access_key_id and secret_access_key: set both")
        token = str(profile["session_token"]) if profile.get("session_token") else None
        return _Credentials(str(profile["access_key_id"]), str(profile["secret_access_key"]), token, where)
    return _Credentials(
        None, None, None, "no credentials (anonymous requests; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    )


def _ca_bundle(env: Mapping[str, str], profile: Mapping[str, Any]) -> str | None:
    """The CA bundle file from ``EXPKIT_S3_CA_BUNDLE`` or the profile (None: the default CAs)."""
    ca_bundle = env.get("EXPKIT_S3_CA_BUNDLE") or profile.get("ca_bundle") or None
    if ca_bundle is None:
        return None
    path = str(Path(str(ca_bundle)).expanduser())
    if not Path(path).is_file():
        raise S3ConfigError(f"CA bundle {path} (EXPKIT_S3_CA_BUNDLE or ca_bundle) is not a file")
    return path


def parse_endpoint(raw: str, *, insecure: bool = False, source: str = "EXPKIT_S3_ENDPOINT") -> str:
    """Normalise an endpoint to ``scheme://host[:port]``. Without a scheme it is https, or http when
    ``insecure`` (``EXPKIT_S3_INSECURE=1``); an explicit scheme always wins."""
    text = raw.strip()
    if "://" not in text:
        text = ("http://" if insecure else "https://") + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise S3ConfigError(
            f"the S3 endpoint from {source} is not a URL: use e.g. https://s3.example.org or http://127.0.0.1:8333"
        ) from None
    if parts.username or parts.password or "@" in parts.netloc:
        raise S3ConfigError(
            f"the S3 endpoint from {source} contains credentials: remove them and use "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile file"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise S3ConfigError(f"the S3 endpoint {raw!r} from {source} must be http(s)://host[:port]")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise S3ConfigError(
            f"the S3 endpoint {raw!r} from {source} has a path: give only scheme://host[:port] "
            "and put the bucket and prefix in s3://bucket/prefix"
        )
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The profile file: ``$EXPKIT_CONFIG``, else ``$XDG_CONFIG_HOME/expkit/config.toml``
    (``~/.config/expkit/config.toml``)."""
    env = os.environ if environ is None else environ
    if env.get("EXPKIT_CONFIG"):
        return Path(env["EXPKIT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "expkit" / "config.toml"


def _load_profile(env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The ``[s3]`` table of the profile file, overlaid with ``[s3.$EXPKIT_PROFILE]``; and a
    description of where it came from (never its values)."""
    path = config_path(env)
    name = env.get("EXPKIT_PROFILE") or None
    if not path.is_file():
        if env.get("EXPKIT_CONFIG") or name:
            what = "EXPKIT_CONFIG" if env.get("EXPKIT_CONFIG") else f"EXPKIT_PROFILE={name}"
            raise S3ConfigError(
                f"the profile file {path} ({what}) does not exist: create it (see docs/s3.md) or unset the variable"
            )
        return {}, ""
    table = _read_toml(path).get("s3", {})
    if not isinstance(table, dict):
        raise S3ConfigError(f"{path}: 's3' must be a table, [s3]")
    merged = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if name is not None:
        prof = table.get(name)
        if not isinstance(prof, dict):
            names = sorted(k for k, v in table.items() if isinstance(v, dict))
            raise S3ConfigError(
                f"{path} has no profile [s3.{name}] (EXPKIT_PROFILE); it has: {', '.join(names) or 'none'}"
            )
        merged.update(prof)
        where = f"profile [s3.{name}] in {path}"
    else:
        where = f"[s3] in {path}"
    _check_profile(merged, where, path)
    return merged, where


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed profile file (``tomllib``, or ``tomli`` on Python 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise S3ConfigError(
                f"reading the profile file {path} needs Python 3.11+ (or 'pip install tomli'); "
                "or use the EXPKIT_S3_ENDPOINT and AWS_* environment variables"
            ) from None
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise S3ConfigError(f"cannot read the profile file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise S3ConfigError(f"{path} is not valid TOML ({err})") from None
    return doc


def _check_profile(merged: Mapping[str, Any], where: str, path: Path) -> None:
    """Reject unknown keys and a non-boolean ``insecure``; warn about a secret readable by others."""
    unknown = sorted(set(merged) - set(_PROFILE_KEYS))
    if unknown:
        raise S3ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(_PROFILE_KEYS)}")
    if "insecure" in merged and not isinstance(merged["insecure"], bool):
        raise S3ConfigError(f"{where}: 'insecure' must be true or false")
    if merged.get("secret_access_key"):
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning("%s holds a secret key but is readable by others: chmod 600 %s", path, path)
        except OSError:
            pass


def is_aws(endpoint: str) -> bool:
    """Whether ``endpoint`` (``scheme://host[:port]``) is AWS S3."""
    host = endpoint.split("://", 1)[1].split(":")[0]
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def valid_bucket(bucket: str) -> bool:
    """Whether ``bucket`` is a valid bucket name (which also makes it a safe file name)."""
    return bool(BUCKET_RE.match(bucket)) and ".." not in bucket


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """expkit's local cache directory: ``$EXPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/expkit``
    (``~/.cache/expkit``)."""
    env = os.environ if environ is None else environ
    if env.get("EXPKIT_CACHE_DIR"):
        return Path(env["EXPKIT_CACHE_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "expkit"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``(bucket, prefix)`` (prefix without slashes at either end)."""
    if not url.startswith("s3://"):
        raise S3ConfigError(f"--store {url!r} is not an s3:// URL: use s3://bucket/prefix")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise S3ConfigError(
            "the s3:// store URL must not contain credentials or a port: use s3://bucket/prefix "
            "and set EXPKIT_S3_ENDPOINT and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if not valid_bucket(bucket):
        raise S3ConfigError(
            f"--store {url!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.' and '-')"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ArtifactError:
            raise S3ConfigError(
                f"--store {url!r}: the prefix must be a plain path without '.', '..' or empty segments"
            ) from None
    return bucket, prefix

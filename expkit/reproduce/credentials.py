"""Registry credentials: from the environment and the Docker config file, never from credential helpers.

Credentials come from ``EXPKIT_REGISTRY_USERNAME``/``EXPKIT_REGISTRY_PASSWORD`` (every registry, or only
the one named by ``EXPKIT_REGISTRY``) or from the Docker config file's ``auths``
(``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``); credential helpers are not run. Secrets
never appear in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit.core.errors import InputError
from expkit.reproduce.image_ref import DOCKER_HUB, DOCKER_HUB_ALIASES

ENV_USERNAME = "EXPKIT_REGISTRY_USERNAME"
ENV_PASSWORD = "EXPKIT_REGISTRY_PASSWORD"
ENV_REGISTRY = "EXPKIT_REGISTRY"


@dataclass(frozen=True)
class Credential:
    """A username and password for one registry, and where they came from (never the secret)."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def basic_header(self) -> str:
        """The ``Authorization`` header value for HTTP Basic authentication."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _registry_key(value: str) -> str:
    """Normalise an ``auths`` key or a registry host: no scheme, no path, lowercase, Docker Hub aliases merged."""
    value = value.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].lower()
    return DOCKER_HUB if value in DOCKER_HUB_ALIASES else value


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


class Credentials:
    """Registry credentials from the environment and the Docker config file.

    Precedence per registry: ``EXPKIT_REGISTRY_USERNAME``/``EXPKIT_REGISTRY_PASSWORD`` (for every
    registry, or only for ``EXPKIT_REGISTRY`` when that is set), then the Docker config's
    ``auths.<registry>`` (``auth`` = base64 ``user:password``, or ``username`` + ``password``).
    ``credsStore``/``credHelpers`` and ``identitytoken`` entries are not used; :meth:`note_for`
    explains that when it matters. Problems with the file become :attr:`notes`, not errors.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, config_path: Path | None = None) -> None:
        env = os.environ if environ is None else environ
        self.config_path = config_path if config_path is not None else docker_config_path(env)
        self.notes: list[str] = []
        self._env: Credential | None = None
        self._env_registry: str | None = None
        user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
        if bool(user) != bool(password):
            missing = ENV_PASSWORD if user else ENV_USERNAME
            raise InputError(
                f"{missing} is not set but {ENV_PASSWORD if user else ENV_USERNAME} is: "
                "set both registry credential variables or neither"
            )
        if user and password:
            self._env = Credential(user, password, f"environment variables {ENV_USERNAME}/{ENV_PASSWORD}")
            if env.get(ENV_REGISTRY):
                self._env_registry = _registry_key(env[ENV_REGISTRY])
        self._auths: dict[str, Credential] = {}
        self._helpers: dict[str, str] = {}
        self._store: str | None = None
        self._unsupported: dict[str, str] = {}
        self._read_config()

    def _read_config(self) -> None:
        path = self.config_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            self.notes.append(
                f"cannot read the Docker config {path} ({type(err).__name__}); its credentials are not used"
            )
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            self.notes.append(f"the Docker config {path} is not valid JSON; its credentials are not used")
            return
        if not isinstance(data, dict):
            self.notes.append(f"the Docker config {path} is not a JSON object; its credentials are not used")
            return
        if isinstance(data.get("credsStore"), str) and data["credsStore"]:
            self._store = data["credsStore"]
        helpers = data.get("credHelpers")
        if isinstance(helpers, dict):
            self._helpers = {_registry_key(k): str(v) for k, v in helpers.items()}
        auths = data.get("auths")
        if not isinstance(auths, dict):
            return
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                continue
            reg = _registry_key(str(key))
            where = f'{path} (auths."{key}")'
            cred = self._parse_entry(entry, where)
            if cred is not None:
                self._auths.setdefault(reg, cred)
            elif entry.get("identitytoken"):
                self._unsupported[reg] = (
                    f"{where} holds an identity token, which expkit does not use: set {ENV_USERNAME}/{ENV_PASSWORD}"
                )

    def _parse_entry(self, entry: dict[str, Any], where: str) -> Credential | None:
        """One ``auths`` entry's credentials: ``auth`` (base64 ``user:password``) or ``username`` + ``password``."""
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, sep, password = base64.b64decode(auth, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep, user, password = "", "", ""
            if not sep or not user:
                self.notes.append(f"{where}: 'auth' is not base64 of user:password; ignored")
                return None
            return Credential(user, password, where)
        username, secret = entry.get("username"), entry.get("password")
        if isinstance(username, str) and isinstance(secret, str) and username and secret:
            return Credential(username, secret, where)
        return None

    def for_registry(self, registry: str) -> Credential | None:
        """The credentials to offer ``registry`` (a domain such as ``ghcr.io``, ``docker.io`` or ``host:5000``)."""
        key = _registry_key(registry)
        if self._env is not None and self._env_registry in (None, key):
            return self._env
        return self._auths.get(key)

    def note_for(self, registry: str) -> str | None:
        """Why no credentials were found for ``registry`` although the config mentions it, if so."""
        key = _registry_key(registry)
        if key in self._unsupported:
            return self._unsupported[key]
        helper = self._helpers.get(key)
        if helper:
            return (
                f"{self.config_path} names credential helper 'docker-credential-{helper}' for {registry}, which "
                f"expkit does not run: set {ENV_USERNAME}/{ENV_PASSWORD}"
            )
        if self._store:
            return (
                f"{self.config_path} keeps credentials in 'docker-credential-{self._store}', which expkit does "
                f"not run: set {ENV_USERNAME}/{ENV_PASSWORD}"
            )
        return None

    def passwords(self) -> dict[str, str]:
        """``{registry: password}`` of the Docker config's ``auths`` (for ``expkit export``'s secret scan)."""
        return {registry: cred.password for registry, cred in self._auths.items() if cred.password}

    def sources(self, registry: str) -> str:
        """Where credentials for ``registry`` were looked for, for error messages."""
        env = f"{ENV_USERNAME}/{ENV_PASSWORD}"
        if self._env is not None and self._env_registry not in (None, _registry_key(registry)):
            env += f" (set for {self._env_registry} only)"
        return f"{env} and {self.config_path}"


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from ``environ`` (default: ``os.environ``) and the Docker config file it points to."""
    return Credentials(environ)

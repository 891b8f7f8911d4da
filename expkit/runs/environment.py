"""The software environment a local run's command actually uses, found by a probe run once per session.

expkit's own interpreter is not what matters: the spec's command is. :func:`probe_environment` looks
at the command the local executor would start (its argv after ``python``/``python3`` became expkit's
interpreter) in the run's working directory and with the run's environment:

* a Python interpreter (``python``, ``python3``, ``python3.12``, a path ending in one of those) is
  started once with a tiny script that prints, as JSON, ``sys.version``, the implementation, the
  platform and every installed distribution with its version (``importlib.metadata``, first on
  ``sys.path`` wins — what ``pip freeze`` shows, what an ``import`` finds);
* any other command is recorded by its resolved path and the sha256 of the executable.

Added to that: the operating system (``platform.platform()``), the C library (``platform.libc_ver()``)
and the expkit version. The ``digest`` (``sha256:`` over the fields that decide what a run computes:
interpreter version and implementation, packages, the executable's hash, the C library) is what each
cell's ``run.json`` records as ``environment_digest``; :func:`environment_diff` says what changed
between two environments (what ``expkit run --resume`` checks). A probe that fails is recorded with
``probe_error`` and never stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit import __version__

log = logging.getLogger(__name__)

#: How long the probe may take.
PROBE_TIMEOUT_S = 60.0
#: The most output of the probe read (a large environment prints a few hundred KB).
MAX_PROBE_OUTPUT = 16 * 1024 * 1024
_MARKER = "EXPKIT-ENVIRONMENT:"
_PYTHON_RE = re.compile(r"^python(\d+(\.\d+)*)?(\.exe)?$")

#: Run by the command's interpreter: one line, the marker and a JSON object. Python >= 3.8.
PROBE_SCRIPT = r"""
import json, platform, re, sys
packages = {}
try:
    from importlib import metadata
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:
            name = None
        if name:
            packages.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
except Exception as err:
    packages = {"<error>": repr(err)[:200]}
libc = platform.libc_ver()
print("MARKER" + json.dumps({
    "version": sys.version.split()[0],
    "version_full": sys.version,
    "implementation": platform.python_implementation(),
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "platform": platform.platform(),
    "libc": (libc[0] + " " + libc[1]).strip() or None,
    "packages": dict(sorted(packages.items())),
}, sort_keys=True))
""".replace("MARKER", _MARKER)


@dataclass(frozen=True)
class EnvironmentDiff:
    """What differs between two environments: interpreter, packages (name → (old, new); None = absent),
    the executable's hash, the C library."""

    python: tuple[str | None, str | None] | None = None
    packages: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    executable: tuple[str | None, str | None] | None = None
    libc: tuple[str | None, str | None] | None = None

    def __bool__(self) -> bool:
        return bool(self.python or self.packages or self.executable or self.libc)

    def lines(self) -> list[str]:
        """One short text per change: ``numpy 1.26.4 → 2.0.0``, ``added rich 13.7.1``, ``Python 3.11.2 → 3.12.1``."""
        named: list[str] = []
        if self.python:
            named.append(f"Python {_or_none(self.python[0])} → {_or_none(self.python[1])}")
        if self.executable:
            named.append(
                f"the command's executable (sha256 {_short(self.executable[0])} → {_short(self.executable[1])})"
            )
        if self.libc:
            named.append(f"C library {_or_none(self.libc[0])} → {_or_none(self.libc[1])}")
        for name, (old, new) in sorted(self.packages.items()):
            if old is None:
                named.append(f"added {name} {new}")
            elif new is None:
                named.append(f"removed {name} {old}")
            else:
                named.append(f"{name} {old} → {new}")
        return named

    def to_dict(self) -> dict[str, Any]:
        """As recorded in the manifest's ``changes``."""
        doc: dict[str, Any] = {"packages": {k: list(v) for k, v in sorted(self.packages.items())}}
        for key in ("python", "executable", "libc"):
            value = getattr(self, key)
            if value:
                doc[key] = list(value)
        return doc


def _or_none(value: str | None) -> str:
    return value if value is not None else "none"


def _short(value: str | None) -> str:
    return value[:12] if value else "none"


def is_python(executable: str) -> bool:
    """Whether ``executable`` (a name or a path) names a Python interpreter."""
    return bool(_PYTHON_RE.match(Path(executable).name))


def resolve_executable(argv0: str, cwd: Path, env: Mapping[str, str]) -> Path | None:
    """The file ``argv0`` starts, as the run would find it: a path relative to ``cwd``, else on ``PATH``.
    Absolute, but symbolic links not resolved: a virtual environment's ``bin/python`` is a link to the
    base interpreter, and only the link finds the environment's packages."""
    if os.sep in argv0 or (os.altsep and os.altsep in argv0):
        path = cwd / argv0
        return Path(os.path.abspath(path)) if path.is_file() else None
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    return Path(os.path.abspath(found)) if found else None


def probe_environment(argv: Sequence[str], cwd: str | Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The environment of the command ``argv`` (as the executor starts it) run in ``cwd`` with ``env``,
    as stored in ``manifest.json``'s ``environment`` (see the module docstring)."""
    cwd = Path(cwd)
    libc = platform.libc_ver()
    doc: dict[str, Any] = {
        "source": "probe",
        "expkit_version": __version__,
        "os": platform.platform(),
        "libc": f"{libc[0]} {libc[1]}".strip() or None,
        "command": None,
        "python": None,
        "packages": None,
    }
    argv0 = argv[0] if argv else ""
    exe = resolve_executable(argv0, cwd, env) if argv0 else None
    doc["command"] = {"argv0": argv0, "executable": str(exe) if exe else None, "sha256": _file_sha256(exe)}
    if exe is None:
        doc["probe_error"] = f"command not found: {argv0!r}"
    elif is_python(argv0) or is_python(exe.name):
        _probe_python(str(exe), cwd, env, doc)
    doc["digest"] = environment_digest(doc)
    return doc


def _probe_python(exe: str, cwd: Path, env: Mapping[str, str], doc: dict[str, Any]) -> None:
    """Run the probe script with the interpreter ``exe``; fill ``doc``'s ``python`` and ``packages``."""
    try:
        proc = subprocess.run(
            [exe, "-c", PROBE_SCRIPT],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        doc["probe_error"] = f"could not run {exe} -c <probe>: {err}"[:300]
        log.warning("environment probe: %s", doc["probe_error"])
        return
    found = _parse_probe(proc.stdout[:MAX_PROBE_OUTPUT])
    if proc.returncode != 0 or found is None:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        doc["probe_error"] = f"{exe} -c <probe> exited {proc.returncode}: {tail[0][:200]}"
        log.warning("environment probe: %s", doc["probe_error"])
        return
    packages = found.pop("packages", None)
    doc["python"] = {k: found.get(k) for k in ("version", "version_full", "implementation", "executable", "prefix")}
    doc["python"]["base_prefix"] = found.get("base_prefix")
    doc["packages"] = packages if isinstance(packages, dict) else None
    doc["os"] = found.get("platform") or doc["os"]
    doc["libc"] = found.get("libc") or doc["libc"]


def image_environment(
    found: Mapping[str, Any] | None, image: str, interpreter: str, error: str | None = None
) -> dict[str, Any]:
    """A cluster run's environment, as the probe reported it from inside ``image`` (``found``: the probe
    script's JSON object, run by ``interpreter``), in the format of :func:`probe_environment`; ``error``
    (or no ``found``) records why there is nothing, e.g. an image without Python."""
    doc: dict[str, Any] = {
        "source": "image",
        "image": image,
        "expkit_version": __version__,
        "os": None,
        "libc": None,
        "command": {"argv0": interpreter, "executable": None, "sha256": None},
        "python": None,
        "packages": None,
    }
    if found is None:
        doc["probe_error"] = (error or "the image reported nothing")[:300]
    else:
        packages = found.get("packages")
        doc["python"] = {k: found.get(k) for k in ("version", "version_full", "implementation", "executable", "prefix")}
        doc["python"]["base_prefix"] = found.get("base_prefix")
        doc["command"]["executable"] = found.get("executable")
        doc["packages"] = packages if isinstance(packages, dict) else None
        doc["os"] = found.get("platform")
        doc["libc"] = found.get("libc")
    doc["digest"] = environment_digest(doc)
    return doc


def _parse_probe(stdout: bytes) -> dict[str, Any] | None:
    """The JSON object on the probe's marker line, or None."""
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(_MARKER):
            try:
                doc = json.loads(line[len(_MARKER) :])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


def _file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _decisive(env: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an environment that decide what a run computes (compared on resume; the digest's input)."""
    python = env.get("python") or {}
    command = env.get("command") or {}
    return {
        "python": python.get("version") if isinstance(python, Mapping) else None,
        "implementation": python.get("implementation") if isinstance(python, Mapping) else None,
        "packages": env.get("packages") if isinstance(env.get("packages"), Mapping) else None,
        # a Python command's executable changes with every venv rebuild; its version and packages say it all
        "executable": None if python else (command.get("sha256") if isinstance(command, Mapping) else None),
        "libc": env.get("libc"),
    }


def environment_digest(env: Mapping[str, Any]) -> str:
    """``sha256:`` over the canonical JSON of the environment's decisive fields."""
    text = json.dumps(_decisive(env), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def environment_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> EnvironmentDiff:
    """What changed from environment ``old`` to ``new``. A side whose probe failed is not compared."""
    if old.get("probe_error") or new.get("probe_error"):
        return EnvironmentDiff()
    a, b = _decisive(old), _decisive(new)

    def pair(key: str) -> tuple[str | None, str | None] | None:
        return (a[key], b[key]) if a[key] != b[key] else None

    python = None
    if (a["python"], a["implementation"]) != (b["python"], b["implementation"]):
        python = (_python_name(a), _python_name(b))
    packages: dict[str, tuple[str | None, str | None]] = {}
    pa, pb = a["packages"] or {}, b["packages"] or {}
    if a["packages"] is not None and b["packages"] is not None:
        for name in set(pa) | set(pb):
            if pa.get(name) != pb.get(name):
                packages[name] = (pa.get(name), pb.get(name))
    return EnvironmentDiff(python=python, packages=packages, executable=pair("executable"), libc=pair("libc"))


def _python_name(decisive: Mapping[str, Any]) -> str | None:
    if decisive["python"] is None:
        return None
    impl = decisive["implementation"]
    return f"{decisive['python']}" + (f" ({impl})" if impl and impl != "CPython" else "")


def requirements_text(env: Mapping[str, Any]) -> str:
    """The environment's packages as a pip requirements file with exact versions (``name==version``)."""
    packages = env.get("packages")
    if not isinstance(packages, Mapping):
        return ""
    return "".join(f"{name}=={version}\n" for name, version in sorted(packages.items()) if not name.startswith("<"))


def describe_environment(env: Mapping[str, Any] | None) -> str:
    """One line about a run's environment: ``Python 3.11.7 (CPython) · 135 packages · glibc 2.36 · Linux-…``."""
    if not isinstance(env, Mapping):
        return "not recorded"
    parts: list[str] = []
    python = env.get("python")
    command = env.get("command")
    if isinstance(python, Mapping):
        parts.append(f"Python {python.get('version')} ({python.get('implementation')})")
    elif isinstance(command, Mapping) and command.get("executable"):
        parts.append(f"{command.get('executable')} (sha256 {_short(command.get('sha256'))})")
    packages = env.get("packages")
    if isinstance(packages, Mapping):
        parts.append(f"{len(packages)} packages")
    parts += [str(env[k]) for k in ("libc", "os") if env.get(k)]
    if env.get("probe_error"):
        parts.append(f"probe failed: {env['probe_error']}")
    return " · ".join(parts) or "not recorded"

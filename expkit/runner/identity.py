"""The code and environment a session runs with, and the check that a resume does not silently mix versions.

A local run records, when it starts, its code identity (:func:`expkit.runs.code.code_identity`) and
its environment (:func:`expkit.runs.environment.probe_environment`) in ``manifest.json`` under
``code`` and ``environment``. ``expkit run --resume`` (and ``--rerun-failed``) finds both again and
compares them with the manifest's (:func:`check_identity`): a change stops the resume with exit 2,
naming the changed files and packages, unless ``--allow-changes`` is given; then the change is
appended to the manifest's ``changes`` (the session, the old and new digests, the files and packages)
and the manifest's ``code`` and ``environment`` become the new ones, so every cell's ``run.json``
(``code_digest``, ``environment_digest``) says which version it ran under. A cluster run's code is
its image (recorded by :func:`expkit.runs.manifest.build_manifest`); nothing is probed here for it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.core.contract import clean_environment
from expkit.core.errors import InputError
from expkit.executors.base import Executor
from expkit.executors.local import local_argv
from expkit.runs.code import (
    after_session,
    code_diff,
    code_identity,
    describe_change,
    describe_list,
    run_exclusions,
)
from expkit.runs.environment import environment_diff, probe_environment
from expkit.runs.matrix import Cell, render_argv
from expkit.runs.provenance import utc_now
from expkit.spec import LoadedSpec
from expkit.stores.base import RunStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """What a local session runs: its code identity and its environment (manifest blocks)."""

    code: dict[str, Any]
    environment: dict[str, Any]
    directory: Path  # the spec's directory: where the code is


def session_identity(
    loaded: LoadedSpec, store: RunStore, executor: Executor, cells: list[Cell], manifest: dict[str, Any] | None = None
) -> Identity | None:
    """The code and environment of a session that runs ``cells`` of ``loaded`` with ``executor`` (None
    for an executor that does not run on this machine: its code is its image). ``manifest``: the run's,
    when it exists — what its sessions generated in the directory is left out."""
    if executor.name != "local":
        return None
    code = code_identity(loaded.directory, exclude=_not_code(loaded.directory, store, manifest))
    spec = loaded.experiment.spec
    argv = render_argv(loaded.experiment, cells[0], "output") if cells else list(spec.command)
    env = clean_environment(os.environ, spec.env or ())
    environment = probe_environment(local_argv(argv), loaded.directory, env)
    return Identity(code, environment, loaded.directory)


def _not_code(spec_dir: Path, store: RunStore, manifest: dict[str, Any] | None) -> list[Path]:
    """What is never the run's code: the store's local directories (a directory store, an S3 store's cache
    and staging, when inside the spec's directory) and the paths the run's earlier sessions generated there."""
    return store.local_dirs() + run_exclusions(spec_dir, (manifest or {}).get("code"))


def settle_session(manifest: dict[str, Any], spec_dir: Path, store: RunStore, executor: Executor) -> None:
    """At the end of a local session: the paths the session added to the spec's directory (outputs of the
    runs or of the prepare step written there) become ``code.generated`` — never the code from now on —
    and a file of the code that changed while the session ran is recorded as a change (``during_session``)
    and warned about. Updates ``manifest`` (not written); never raises."""
    code = manifest.get("code")
    if executor.name != "local" or not isinstance(code, dict) or code.get("source") != "files":
        return
    try:
        added, now = after_session(spec_dir, code, exclude=_not_code(spec_dir, store, manifest))
    except Exception as err:  # noqa: BLE001 - the session's outcome matters more than this record
        log.warning("could not check the run's code after the session: %s", err)
        return
    generated = sorted({*(code.get("generated") or []), *added})
    if now is not None:
        entry = {
            "session": len(manifest.get("sessions") or []) + 1,
            "at": utc_now(),
            "during_session": True,
            "code": {"from": code.get("digest"), "to": now.get("digest"), "files": code_diff(code, now).to_dict()},
        }
        manifest["changes"] = [*(manifest.get("changes") or []), entry]
        log.warning(
            "the run's code changed while the session ran (%s): its cells may have run either version; if the "
            "runs write these files, exclude them in %s/.expkitignore",
            describe_change(entry),
            spec_dir,
        )
        code = manifest["code"] = now
    if generated:
        code["generated"] = generated


def check_identity(manifest: dict[str, Any], identity: Identity | None, run_id: str, *, allow_changes: bool) -> None:
    """Compare the session's ``identity`` with the run's ``manifest``; raise :class:`InputError` (exit 2)
    naming what changed, or — with ``allow_changes`` — record the change in ``manifest`` (not written)."""
    if identity is None:
        return
    old_code, old_env = manifest.get("code"), manifest.get("environment")
    if not isinstance(old_code, dict) or not isinstance(old_env, dict):  # a run from before expkit recorded them
        manifest.setdefault("changes", [])
        if not isinstance(old_code, dict):
            manifest["code"] = identity.code
        if not isinstance(old_env, dict):
            manifest["environment"] = identity.environment
        return
    code_change = _describe_code(old_code, identity.code)
    env_lines = environment_diff(old_env, identity.environment).lines()
    if not code_change and not env_lines:
        return
    if not allow_changes:
        parts = ([f"files: {code_change}"] if code_change else []) + (
            [f"environment: {describe_list(env_lines)}"] if env_lines else []
        )
        what = " and ".join(w for w, changed in (("code", code_change), ("environment", env_lines)) if changed)
        hint = ""
        if code_change and not code_diff(old_code, identity.code).modified:  # only added or removed files
            hint = f"; files the runs wrote there are not code: list them in {identity.directory / '.expkitignore'}"
        raise InputError(
            f"run {run_id}: the {what} changed since its last session ({'; '.join(parts)}); resuming would mix "
            "results of two versions in one run: restore them, start a new run, or resume with --allow-changes "
            f"to record the change{hint}"
        )
    _record_change(manifest, identity, old_code, old_env)


def _describe_code(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two code identities ("" when nothing did)."""
    if old.get("digest") == new.get("digest") and old.get("source") == new.get("source"):
        return ""
    if old.get("source") != new.get("source"):
        return f"its code was {_what(old)}, now {_what(new)}"
    diff = code_diff(old, new)
    return diff.describe() if diff else f"the code digest {old.get('digest')} became {new.get('digest')}"


def _what(code: dict[str, Any]) -> str:
    if code.get("source") == "image":
        return f"the image {code.get('image')}"
    return f"{len(code.get('files') or [])} files (digest {code.get('digest')})"


def _record_change(
    manifest: dict[str, Any], identity: Identity, old_code: dict[str, Any], old_env: dict[str, Any]
) -> None:
    """Append the change to ``manifest['changes']`` and make the session's identity the run's current one."""
    sessions = manifest.get("sessions") or []
    env_diff = environment_diff(old_env, identity.environment)
    entry = {
        "session": len(sessions) + 1,  # the number of the session about to run (1 = the first)
        "at": utc_now(),
        "code": {
            "from": old_code.get("digest"),
            "to": identity.code.get("digest"),
            "files": code_diff(old_code, identity.code).to_dict(),
            "git": identity.code.get("git"),
        },
        "environment": {
            "from": old_env.get("digest"),
            "to": identity.environment.get("digest"),
            **env_diff.to_dict(),
        },
    }
    changes = manifest.get("changes")
    manifest["changes"] = [*changes, entry] if isinstance(changes, list) else [entry]
    generated = old_code.get("generated")
    manifest["code"] = {**identity.code, "generated": generated} if generated else identity.code
    manifest["environment"] = identity.environment
    log.warning("recorded in the run's manifest, with --allow-changes: %s", describe_change(entry))

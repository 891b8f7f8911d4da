"""A run's identity and its provenance manifest (``<run-id>/manifest.json``) and stored spec."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from typing import Any

from expkit import __version__
from expkit.runs.code import image_identity
from expkit.runs.matrix import SEED_SCHEME
from expkit.runs.provenance import host_info, utc_now
from expkit.runs.records import current_user
from expkit.spec import LoadedSpec, is_pinned

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id(name: str, existing: Iterable[str]) -> str:
    """A fresh ``<name>-<5 random [a-z0-9]>`` id not among ``existing`` (the ids already in the store)."""
    taken = set(existing)
    for _ in range(100):
        run_id = f"{name}-{''.join(secrets.choice(_ID_ALPHABET) for _ in range(5))}"
        if run_id not in taken:
            return run_id
    raise RuntimeError("could not find a free run id")  # pragma: no cover - 36**5 ids


def build_manifest(
    loaded: LoadedSpec,
    run_id: str,
    executor: str,
    workers: int,
    n_cells: int,
    *,
    code: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a new run (status ``running``; the runner adds sessions and counts).

    ``code`` and ``environment``: a local run's code identity (:mod:`expkit.runs.code`) and probed
    environment (:mod:`expkit.runs.environment`); without ``code`` the run's code is its image."""
    spec = loaded.experiment.spec
    return {
        "run_id": run_id,
        "experiment": loaded.name,
        "expkit_version": __version__,
        "spec_sha256": loaded.sha256,
        "spec_file": str(loaded.path.resolve()) if loaded.path else None,
        "spec_dir": str(loaded.directory),
        "image": spec.image,
        "image_pinned": is_pinned(spec.image),
        "overrides": dict(loaded.overrides),
        "executor": executor,
        "workers": workers,
        "cells": n_cells,
        "algorithms": [a.name for a in spec.algorithms],
        "datasets": [d.name for d in spec.datasets],
        "replicates": spec.replicates,
        "seed": spec.seed,
        "seed_scheme": SEED_SCHEME,
        "metric": spec.metric.model_dump(),
        "paired": spec.paired,
        "host": host_info(),
        "code": code if code is not None else image_identity(spec.image),
        "environment": environment,
        "changes": [],
        "user": current_user(),  # 'latest' is the newest run of this user
        "started_at": utc_now(),
        "ended_at": None,
        "status": "running",
        "sessions": [],
    }


def spec_file_text(loaded: LoadedSpec) -> str:
    """The resolved spec as stored with the run (``<run-id>/experiment.yml``)."""
    header = "# Resolved by expkit: defaults written out"
    if loaded.overrides:
        header += ", overrides applied (" + ", ".join(f"{k}={v!r}" for k, v in loaded.overrides.items()) + ")"
    return header + ".\n" + loaded.to_yaml()

"""All the workflows of one submission of a run — one, or several shards (see
:mod:`~expkit.executors.argo.shards`) — rendered and validated; pure and offline.

``expkit render`` writes them as one YAML stream (``---`` between workflows); the executor creates them
in order (:meth:`~expkit.executors.argo.executor.ArgoExecutor.submit`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expkit.executors.argo.render import RenderError, render_both
from expkit.executors.argo.shards import Shard, plan_shards
from expkit.runs.matrix import build_matrix
from expkit.spec import Experiment, LoadedSpec

#: Kubernetes object names are DNS-1123 labels of at most this many characters.
MAX_NAME = 63


@dataclass(frozen=True)
class PlannedWorkflow:
    """One workflow of a submission: its YAML text, its object, the cells it runs and its shard (None:
    the submission is this one workflow)."""

    text: str
    doc: dict[str, Any]
    cells: list[str]
    shard: Shard | None


def is_whole_matrix(exp: Experiment, keys: Sequence[str]) -> bool:
    """Whether ``keys`` are every cell of the matrix."""
    spec = exp.spec
    given = set(keys)
    if len(given) != len(spec.algorithms) * len(spec.datasets) * spec.replicates:
        return False
    return given == {c.key for c in build_matrix(exp)}


def render_submission(
    loaded: LoadedSpec,
    run_id: str,
    *,
    namespace: str | None = None,
    expkit_image: str | None = None,
    key_prefix: str = "",
    cells: Sequence[str] | None = None,
    retry: bool = False,
) -> list[PlannedWorkflow]:
    """The workflows running ``cells`` of run ``run_id`` (the whole matrix when None), validated strictly.

    One workflow when they fit in ``kubernetes.maxCellsPerWorkflow``: named after the run id (a first
    submission) or ``<run-id>-retry-XXXXX`` (``retry``: the API server picks the suffix); the whole
    matrix renders compactly, any other cell list explicitly. Otherwise one workflow per shard, each
    running its cells explicitly: ``<run-id>-s<k>`` (or ``<run-id>-retry-XXXXX``), labelled
    ``expkit.io/shard``, ``expkit.io/shards`` and ``expkit.io/submission``. Raises :class:`RenderError`
    when a shard's name would be too long for Kubernetes."""
    exp = loaded.experiment
    whole = cells is None or is_whole_matrix(exp, cells)
    shards = plan_shards(exp, None if whole else list(cells or ()))
    generate_name = f"{run_id}-retry-"[:58] if retry else None
    options: dict[str, Any] = dict(namespace=namespace, expkit_image=expkit_image, key_prefix=key_prefix)
    if len(shards) == 1:
        keys = [k for b in shards[0] for k in b.keys]
        explicit = None if whole and not retry else keys
        text, doc = render_both(loaded, run_id, cells=explicit, generate_name=generate_name, probe=not retry, **options)
        return [PlannedWorkflow(text, doc, keys, None)]
    submission = f"retry-{secrets.token_hex(3)}" if retry else "run"
    out = []
    for i, batches in enumerate(shards, 1):
        shard = Shard(i, len(shards), submission)
        if not retry and len(shard.name(run_id)) > MAX_NAME:
            raise RenderError(
                f"run {run_id} would need {len(shards)} workflows, whose names '{shard.name(run_id)}' are longer "
                f"than Kubernetes allows ({MAX_NAME}): raise kubernetes.maxCellsPerWorkflow or kubernetes.cellsPerPod"
            )
        keys = [k for b in batches for k in b.keys]
        probe = not retry and i == 1  # the image is the same in every shard: probe it once
        text, doc = render_both(
            loaded, run_id, cells=keys, generate_name=generate_name, shard=shard, probe=probe, **options
        )
        out.append(PlannedWorkflow(text, doc, keys, shard))
    return out


def render_stream(planned: Sequence[PlannedWorkflow]) -> str:
    """The workflows as one YAML stream, ``---`` between them."""
    return "---\n".join(p.text for p in planned)


__all__ = ["MAX_NAME", "PlannedWorkflow", "is_whole_matrix", "render_stream", "render_submission"]

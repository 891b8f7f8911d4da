"""The Argo executor: the :class:`~expkit.executors.base.Executor` contract kept by an Argo ``Workflow``.

:class:`ArgoExecutor` renders the cells it is given into one workflow — or several, one per shard of at most
``kubernetes.maxCellsPerWorkflow`` cells (:func:`~expkit.executors.argo.workflows.render_submission`; see
:mod:`~expkit.executors.argo.shards`) — creates them through an
:class:`~expkit.executors.argo.client.ArgoClient` and records it in the run's manifest. With ``wait``
(the default) it then follows the workflow until it finishes and publishes the cells
(:func:`~expkit.executors.argo.sync.watch_run`), so :meth:`ArgoExecutor.execute` behaves like the local
executor's; without it, ``execute`` returns once the workflow exists and the cells are published later
by :func:`~expkit.executors.argo.sync.sync_run`. :meth:`ArgoExecutor.submit` is that asynchronous half
alone: ``expkit submit`` and ``expkit retry`` (:mod:`~expkit.executors.argo.runs`) use it.

**Workflow names.** A run's first workflow is named after the run id, which expkit picks
(``<experiment>-<5 chars>``, not yet in the store; :func:`~expkit.executors.argo.runs.submit_run` retries
on ``409 AlreadyExists`` with a new id) rather than letting the API server pick it with ``generateName``:
the run id must be known *before* the workflow exists, so that the spec and manifest are in the store
before any cell can write there, and so that the workflow's own labels (``expkit.io/run-id``, which Argo
does not template) and the literal artifact keys carry it. Later workflows of a run (retries), which write
into an existing run id, do use ``generateName: <run-id>-retry-``: nothing in them depends on their name.
A sharded run's workflows are ``<run-id>-s<k>``; the first conflicts the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from expkit.core.errors import ExpkitError, InputError, Interrupted
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.shards import Shard
from expkit.executors.argo.sync import RunStatus, watch_run
from expkit.executors.argo.workflows import PlannedWorkflow, render_submission
from expkit.executors.base import CellEvent, CellOutcome, CellStatus, RunContext
from expkit.runs.matrix import Cell
from expkit.spec import LoadedSpec, is_pinned
from expkit.stores.base import MANIFEST_KEY, RunStore, cell_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """A workflow created for a run: the run id, the workflow's name and where it runs."""

    run_id: str
    workflow: str
    namespace: str
    context: str
    server: str
    cells: int
    store_url: str
    retry: bool = False
    #: Every workflow of this submission, in order (several when the run is sharded); ``workflow`` is the first.
    workflows: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the submission's workflows (at least ``workflow``)."""
        return self.workflows or (self.workflow,)


def artifact_key_prefix(store: RunStore) -> str:
    """Artifact keys are relative to the bucket's root: a store under a prefix needs that prefix."""
    if not store.url.startswith("s3://"):
        raise InputError(
            f"--store {store.url}: a cluster run writes its outputs through Argo's artifact repository, "
            "so its store must be that S3 bucket: pass --store s3://BUCKET/PREFIX (or set EXPKIT_STORE)"
        )
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    return f"{prefix}/" if prefix else ""


def check_images(loaded: LoadedSpec, where: str) -> None:
    """Refuse images not pinned by digest (a cluster run must name the exact image it ran)."""
    image = loaded.experiment.spec.image
    if not is_pinned(image):
        raise InputError(
            f"{where}: spec.image {image!r} is not pinned by digest; a cluster run must name the exact "
            f"image: run 'expkit pin {where}' (or write image@sha256:<digest>)"
        )


def _workflow_entry(created: Mapping[str, Any], kind: str, cells: int, shard: Shard | None = None) -> dict[str, Any]:
    meta = created.get("metadata") or {}
    entry = {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "created_at": meta.get("creationTimestamp"),
        "kind": kind,
        "cells": cells,
        "phase": (created.get("status") or {}).get("phase") or "Pending",
    }
    if shard is not None:
        entry.update(shard=shard.index, shards=shard.count, submission=shard.submission)
    return entry


class ArgoExecutor:
    """Runs cells as an Argo workflow on Kubernetes (see :mod:`expkit.executors.base` for the contract).

    ``wait=True`` (the default): :meth:`execute` returns when the workflow has finished and its cells are
    published, with their outcomes — synchronous, like the local executor. ``wait=False``: it returns
    once the workflow exists, with no outcome — asynchronous; :func:`~expkit.executors.argo.sync.sync_run`
    publishes the cells later. ``expkit_image`` (pinned by digest) adds the ``finalize`` exit handler.
    """

    name = "argo"

    def __init__(self, argo: ArgoClient, *, expkit_image: str | None = None, wait: bool = True) -> None:
        self.argo = argo
        self.expkit_image = expkit_image
        self.wait = wait
        self._versions: tuple[str, str | None] | None = None

    def __repr__(self) -> str:
        return f"ArgoExecutor({self.argo!r}, wait={self.wait})"

    def cluster_block(self) -> dict[str, Any]:
        """The manifest's ``cluster`` entry, with no workflow yet: context, server, namespace, and the
        versions of Kubernetes and Argo (asked of the cluster once per executor)."""
        if self._versions is None:
            self._versions = (self.argo.server_version(), self.argo.argo_version())
        server_version, argo_version = self._versions
        return {
            "context": self.argo.target.context,
            "server": self.argo.target.server,
            "namespace": self.argo.namespace,
            "server_version": server_version,
            "argo_version": argo_version,
            "workflows": [],
        }

    # -- the Executor contract ----------------------------------------------------------------------
    def run_prepare(self, ctx: RunContext) -> None:
        """Nothing to do here: the spec's ``prepare`` command is the first task of every workflow this
        executor creates, and no cell task starts before it succeeded."""
        return None

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        """Submit one workflow running exactly ``cells``; with ``wait``, follow it until it finishes, publish
        the cells and return their outcomes, else return ``[]`` at once (see the class docstring)."""
        if not cells:
            return []
        submission = self.submit(ctx, cells)
        if not self.wait:
            return []
        return self._wait(ctx, submission, [c.key for c in cells])

    # -- the asynchronous half ----------------------------------------------------------------------
    def submit(self, ctx: RunContext, cells: Sequence[Cell], *, retry: bool | None = None) -> Submission:
        """Create the workflow running ``cells`` of run ``ctx.run_id`` and record it in the run's manifest
        (``status: submitted``). The run's first workflow is named after the run id (and renders the whole
        matrix when given all of it); a retry — ``retry``, by default whether the run has a workflow already
        (recorded in its manifest, or on the cluster) — is named ``<run-id>-retry-XXXXX``, runs exactly
        ``cells``, and first deletes what earlier attempts of those cells left in the store, so a reader never
        sees an old ``run.json`` next to new files."""
        manifest = ctx.manifest if ctx.manifest is not None else ctx.store.manifest(ctx.run_id)
        if retry is None:
            recorded = (manifest.get("cluster") or {}).get("workflows")
            retry = bool(recorded) or bool(self.argo.run_workflows(ctx.run_id))
        keys = [c.key for c in cells]
        planned = render_submission(
            LoadedSpec(ctx.experiment, None),
            ctx.run_id,
            namespace=self.argo.namespace,
            expkit_image=self.expkit_image,
            key_prefix=artifact_key_prefix(ctx.store),
            cells=keys,
            retry=retry,
        )
        if retry:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="expkit-retry") as pool:
                list(pool.map(lambda k: ctx.store.delete(cell_prefix(ctx.run_id, k)), keys))
        cluster = manifest.get("cluster")
        if not isinstance(cluster, dict):  # a run created without the cluster (by the runner)
            cluster = manifest["cluster"] = self.cluster_block()
        names = self._create_all(planned)
        for p, created in zip(planned, names):
            entry = _workflow_entry(created, "retry" if retry else "run", len(p.cells), p.shard)
            cluster.setdefault("workflows", []).append(entry)
        manifest["status"] = "submitted"
        ctx.store.put_json(f"{ctx.run_id}/{MANIFEST_KEY}", manifest)
        created_names = tuple(str((c.get("metadata") or {}).get("name") or ctx.run_id) for c in names)
        name = created_names[0]
        if retry:
            log.info("retry of %s: workflow %s, %d cells", ctx.run_id, name, len(keys))
        else:
            log.info(
                "submitted %s: %d cells, namespace %s, %s",
                ctx.run_id,
                len(keys),
                self.argo.namespace,
                self.argo.target.describe(),
            )
        target = self.argo.target
        return Submission(
            ctx.run_id,
            name,
            self.argo.namespace,
            target.context,
            target.server,
            len(keys),
            ctx.store.url,
            retry,
            created_names,
        )

    def _create_all(self, planned: Sequence[PlannedWorkflow]) -> list[dict[str, Any]]:
        """Create the workflows in order; when one fails, delete those already created (their cells
        have not run yet, or hardly), so a half-submitted run never keeps running."""
        created: list[dict[str, Any]] = []
        try:
            for p in planned:
                created.append(self.argo.create_workflow(p.doc))
        except BaseException:
            for obj in created:
                name = str((obj.get("metadata") or {}).get("name"))
                try:
                    self.argo.delete_workflow(name)
                except ExpkitError as err:
                    log.warning("could not delete workflow %s of a failed submission: %s", name, err)
            raise
        return created

    # -- the synchronous half -----------------------------------------------------------------------
    def _wait(self, ctx: RunContext, submission: Submission, keys: Sequence[str]) -> list[CellOutcome]:
        """Follow the workflow (a ``started`` event per cell as it leaves ``pending``), sync, then one
        ``finished`` event and outcome per published cell."""
        wanted, started = set(keys), set()

        def update(status: RunStatus) -> None:
            for key, rec in status.records.items():
                if key in wanted and key not in started and rec.get("status") != "pending":
                    started.add(key)
                    ctx.on_event(CellEvent("started", key))

        try:
            watch_run(self.argo, ctx.store, ctx.run_id, submission.names, update)
        except KeyboardInterrupt:
            raise Interrupted(
                f"stopped waiting; workflow {submission.workflow} of run {ctx.run_id} keeps running on the "
                f"cluster: follow it with 'expkit status {ctx.run_id}', stop it with 'expkit stop {ctx.run_id}'"
            ) from None
        records = ctx.store.cell_records(ctx.run_id)
        outcomes = []
        for key in keys:
            rec = records.get(key)
            if rec is None:  # never finished (the workflow was stopped or failed before it): not published
                continue
            status: CellStatus = "succeeded" if rec.get("status") == "succeeded" else "failed"
            reason = None if status == "succeeded" else str(rec.get("reason") or "failed")
            ctx.on_event(CellEvent("finished", key, status, reason, int(rec.get("attempts") or 1)))
            outcomes.append(CellOutcome(key, status, reason))
        return outcomes


__all__ = ["ArgoExecutor", "Submission", "artifact_key_prefix", "check_images"]

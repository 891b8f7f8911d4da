"""How big the Workflow object of a run gets on the cluster — a model of Argo's node status, pure.

Argo keeps the whole workflow — spec and status — as one Kubernetes object (one etcd value: at most
~1.5 MB per request by default; Argo's controller itself refuses objects over 1 MiB, its
``maxWorkflowSize``). ``status.nodes`` holds one entry per node: the workflow's DAG, each dataset's DAG,
each loop's TaskGroup, each pod (and, with ``retryStrategy``, a Retry node above the pod attempts).
Once the object passes the limit, Argo stores the nodes gzipped and base64-encoded as
``status.compressedNodes``; if it is still too large the workflow fails (unless node status offloading
to a database is configured).

:func:`model_nodes` **models** those entries — it does not run a controller: every field Argo writes for
a finished node (``id``, ``name``, ``displayName``, ``type``, ``templateName``, ``templateScope``,
``phase``, ``boundaryID``, ``children``, ``startedAt``/``finishedAt``, ``progress``,
``resourcesDuration``, ``hostNodeName``, ``inputs``, ``outputs`` with the artifacts, the archived log
and the exit code — and a batch pod's ``cells`` output parameter), with realistic values (hashed ids,
timestamps, artifact keys, 30-character names). :func:`workflow_object_bytes` measures the JSON of a
sample of such nodes, uncompressed and gzip+base64 as Argo compresses it, and extrapolates to the run's
size per node (gzip's window is 32 KiB, so its ratio is stable past a few hundred nodes).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from dataclasses import dataclass
from typing import Any

#: Argo's controller refuses a workflow object over this many bytes (``MAX_WORKFLOW_SIZE``, 1 MiB).
ARGO_MAX_WORKFLOW_SIZE = 1024 * 1024
#: Pods measured before extrapolating (enough for a stable gzip ratio).
SAMPLE_PODS = 600


@dataclass(frozen=True)
class SizeEstimate:
    """The size of one Workflow object: its spec (as submitted) and its node status (modelled)."""

    spec_bytes: int
    nodes: int
    status_bytes: int  # status.nodes as JSON
    compressed_status_bytes: int  # status.compressedNodes: gzip + base64 of that JSON

    @property
    def uncompressed(self) -> int:
        """Spec plus uncompressed node status."""
        return self.spec_bytes + self.status_bytes

    @property
    def compressed(self) -> int:
        """Spec plus compressed node status (what Argo stores once the object is large)."""
        return self.spec_bytes + self.compressed_status_bytes


def _node(wf: str, name: str, kind: str, template: str | None, i: int, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": f"{wf}-{(2654435761 * (i + 1)) % 4294967291:010d}",
        "name": name,
        "displayName": name.rsplit(".", 1)[-1],
        "type": kind,
        "phase": "Succeeded",
        "boundaryID": f"{wf}-{(40503 * (i + 7)) % 4294967291:010d}",
        "startedAt": f"2026-12-06T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
        "finishedAt": f"2026-12-06T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{(i + 13) % 60:02d}Z",
        "progress": "1/1",
        "resourcesDuration": {"cpu": 13 + i % 50, "memory": 13 + i % 50},
    }
    if template:
        node.update(templateName=template, templateScope=f"local/{wf}")
    node.update(extra)
    return node


def _pod_node(wf: str, i: int, cells: list[int], dataset: str, algorithm: str, retry: bool) -> dict[str, Any]:
    """A finished cell (or batch) pod, with what the rendered templates give it."""
    batch = len(cells) > 1
    item = json.dumps(cells, separators=(",", ":")) if batch else str(cells[0])
    name = f"{wf}.ds-{dataset}.alg-{algorithm}({i % 1000}:{item})" + ("(0)" if retry else "")
    inputs = [
        {"name": "algorithm", "value": algorithm},
        {"name": "dataset", "value": dataset},
        {"name": "datasetSeed", "value": str(1_000_000_000 + 7919 * i % 1_000_000_000)},
        {"name": "replicates" if batch else "replicate", "value": item},
        {"name": "params", "value": '{"budget": 1000, "lr": 0.01}'},
    ]
    key = f"{wf[:-3]}/runs/{algorithm}/{dataset}" + ("" if batch else f"/{cells[0]}")
    outputs: dict[str, Any] = {
        "artifacts": [
            {"name": "output", "path": "/expkit/output", "s3": {"key": key}},
            {"name": "main-logs", "s3": {"key": f"{wf}/{wf}-cell-{(97 * i) % 4294967291}/main.log"}},
        ],
        "exitCode": "0",
    }
    if batch:
        entries = [
            {"r": r, "x": 0, "m": None, "t0": 1796000000.125 + 7 * r, "t1": 1796000005.5 + 7 * r, "h": [[0, 5.4, None]]}
            for r in cells
        ]
        outputs["parameters"] = [{"name": "cells", "value": json.dumps(entries, separators=(",", ":"))}]
    return _node(
        wf,
        name,
        "Pod",
        "cell",
        i,
        inputs={"parameters": inputs},
        outputs=outputs,
        hostNodeName=f"ip-10-0-{i % 250}-{(i * 7) % 250}.ec2.internal",
    )


def model_nodes(
    workflow: str, cells: int, cells_per_pod: int = 1, *, retries: bool = False, datasets: int = 10, algorithms: int = 5
) -> dict[str, dict[str, Any]]:
    """The ``status.nodes`` Argo would keep for a finished workflow of ``cells`` cells (modelled, see the
    module): the workflow's DAG, a DAG per dataset, a TaskGroup per algorithm task, one Pod per batch of
    ``cells_per_pod`` cells (plus a Retry node each when ``retries``)."""
    nodes: dict[str, dict[str, Any]] = {}
    i = 0

    def add(node: dict[str, Any]) -> None:
        nonlocal i
        nodes[node["id"]] = node
        i += 1

    add(_node(workflow, workflow, "DAG", "main", i))
    per_group = math.ceil(cells / max(1, datasets * algorithms))
    left = cells
    for d in range(datasets):
        add(_node(workflow, f"{workflow}.ds-dataset-{d:03d}", "DAG", "algorithms", i))
        for a in range(algorithms):
            if left <= 0:
                break
            add(_node(workflow, f"{workflow}.ds-dataset-{d:03d}.alg-algorithm-{a:02d}", "TaskGroup", None, i))
            group = min(per_group, left)
            left -= group
            for start in range(0, group, cells_per_pod):
                reps = list(range(start, min(group, start + cells_per_pod)))
                if retries:
                    retry = _pod_node(workflow, i, reps, f"dataset-{d:03d}", f"algorithm-{a:02d}", False)
                    retry.update(type="Retry", children=[f"{workflow}-{i + 1}"])
                    retry.pop("hostNodeName", None)
                    add(retry)
                add(_pod_node(workflow, i, reps, f"dataset-{d:03d}", f"algorithm-{a:02d}", retries))
    return nodes


def _encoded_sizes(nodes: dict[str, dict[str, Any]]) -> tuple[int, int]:
    raw = json.dumps(nodes, separators=(",", ":")).encode()
    return len(raw), len(base64.b64encode(gzip.compress(raw, compresslevel=6)))


def workflow_object_bytes(
    spec_bytes: int, cells: int, cells_per_pod: int = 1, *, retries: bool = False, workflow: str = "my-study-x7k2p-s01"
) -> SizeEstimate:
    """The size of a Workflow object whose spec is ``spec_bytes`` and which ran ``cells`` cells,
    ``cells_per_pod`` per pod: the node status modelled on a sample of at most :data:`SAMPLE_PODS` pods and
    extrapolated per pod (see the module)."""
    pods = math.ceil(cells / cells_per_pod)
    sample_pods = min(pods, SAMPLE_PODS)
    sample = model_nodes(workflow, sample_pods * cells_per_pod, cells_per_pod, retries=retries)
    raw, packed = _encoded_sizes(sample)
    scale = pods / sample_pods
    return SizeEstimate(spec_bytes, round(len(sample) * scale), round(raw * scale), round(packed * scale))


__all__ = ["ARGO_MAX_WORKFLOW_SIZE", "SAMPLE_PODS", "SizeEstimate", "model_nodes", "workflow_object_bytes"]

"""Slurm: a spec's cells as job arrays on an HPC cluster (see docs/slurm.md).

:mod:`.render` writes the batch scripts (pure), :mod:`.client` runs Slurm's commands, :mod:`.executor`
submits, retries and stops runs, :mod:`.status` reads and syncs their state, and :mod:`.task` is what
each array task runs on the nodes. The names below are imported when first used, so that an array task
(``python -m expkit.executors.slurm.task``) starts without the submitting side's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expkit.executors.slurm.client import SlurmClient
    from expkit.executors.slurm.executor import SlurmExecutor, retry_run, stop_run, submit_run
    from expkit.executors.slurm.status import SlurmStatus, collect_status, sync_run, watch_run

_WHERE = {
    "SlurmClient": "client",
    "SlurmExecutor": "executor",
    "retry_run": "executor",
    "stop_run": "executor",
    "submit_run": "executor",
    "SlurmStatus": "status",
    "collect_status": "status",
    "sync_run": "status",
    "watch_run": "status",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module when it is first used."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "SlurmClient",
    "SlurmExecutor",
    "SlurmStatus",
    "collect_status",
    "retry_run",
    "stop_run",
    "submit_run",
    "sync_run",
    "watch_run",
]

"""Executors: local processes (:class:`~expkit.executors.local.LocalExecutor`) or Argo on Kubernetes."""

from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext

__all__ = ["CellEvent", "CellOutcome", "Executor", "RunContext"]

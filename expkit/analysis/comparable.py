"""Whether a run has anything to compare: a run whose finished cells all failed has not, and ``expkit
results`` (and the verdict after ``expkit run``) then say so in one line, with where to look (exit 1)."""

from __future__ import annotations

from expkit.analysis.collect import Collected
from expkit.core.errors import ExecutionError


def check_comparable(collected: Collected) -> None:
    """Raise :class:`~expkit.core.errors.ExecutionError` (exit 1) when cells finished and every one of them
    failed: there is nothing to compare. The line says how many failed or are unfinished, one reason, and
    where to look. A run with no finished cell yet (still going, or not synced from a cluster) is left to
    the partial report."""
    n_ok = collected.total - len(collected.failed) - len(collected.missing)
    if n_ok > 0 or not collected.failed:
        return
    run_id = collected.run_id
    counts = f"{len(collected.failed)} failed, {len(collected.missing)} not finished, of {collected.total}"
    cell, reason = next(iter(collected.failed.items()))
    example = f"e.g. {cell}: {' '.join(str(reason).split())[:300]}"
    raise ExecutionError(
        f"nothing to compare in run {run_id}: no run succeeded ({counts}); {example}; "
        f"see why: 'expkit logs {run_id} --failed'"
    )


__all__ = ["check_comparable"]

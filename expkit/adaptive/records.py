"""What an adaptive run's manifest records (its ``adaptive`` block), read back for ``expkit show``, the report
and the drivers; no statistics here, so reading it imports nothing heavy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The manifest key of an adaptive run's block.
MANIFEST_BLOCK = "adaptive"


def is_adaptive(manifest: Mapping[str, Any]) -> bool:
    """Whether a run's manifest is an adaptive run's (whose design the waves chose)."""
    return isinstance(manifest.get(MANIFEST_BLOCK), dict)


def is_completed(manifest: Mapping[str, Any]) -> bool:
    """Whether an adaptive run was completed to the full design (``--complete``)."""
    block = manifest.get(MANIFEST_BLOCK)
    return isinstance(block, dict) and bool(block.get("completed_at"))


def adaptive_summary(manifest: Mapping[str, Any]) -> list[str]:
    """Lines for ``expkit show`` and the report: runs used against the fixed design, saved, and why each
    dataset stopped (empty for a run that is not adaptive)."""
    block = manifest.get(MANIFEST_BLOCK)
    if not isinstance(block, dict):
        return []
    fixed = int(block.get("fixed_design_runs") or 0)
    used = int(block.get("runs_before_completion") or block.get("runs") or 0)
    saved = fixed - used
    share = f" ({100 * saved / fixed:.0f} %)" if fixed else ""
    cfg = block.get("config") or {}
    lines = [
        (
            f"adaptive: {used} of the fixed design's {fixed} runs used, {saved} saved{share} "
            f"(stop: {cfg.get('stop')}, alpha {cfg.get('alpha')}, rope {cfg.get('rope')})"
        )
    ]
    if block.get("completed_at"):
        lines.append(f"  completed to the full design at {block['completed_at']} ('--complete')")
    for name, state in (block.get("datasets") or {}).items():
        reps = state.get("replicates") or {}
        most = max(reps.values(), default=0)
        why = state.get("reason") or ("running" if not state.get("stopped") else "stopped")
        lines.append(f"  {name}: {most} replicates, {'stopped: ' + why if state.get('stopped') else why}")
    return lines


__all__ = ["MANIFEST_BLOCK", "adaptive_summary", "is_adaptive", "is_completed"]

"""One cell of the run matrix (:class:`Cell`), apart from :mod:`expkit.runs.matrix` so that code running a
single cell (a Slurm array task) needs neither the spec model nor numpy to name it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One run: an algorithm on a dataset, one replicate, with its seed and merged parameters."""

    algorithm: str
    dataset: str
    replicate: int
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Stable id and storage key suffix: ``<algorithm>/<dataset>/<replicate>``."""
        return f"{self.algorithm}/{self.dataset}/{self.replicate}"


__all__ = ["Cell"]

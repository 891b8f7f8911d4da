"""The two sides of a reproduction check: loading a run or a bundle, and the runs each side compares.

A side is a run in a store (its id or ``latest``) or a bundle (:func:`load_side`). Both sides are
restricted to the runs (``alg/ds/rep`` keys) that finished on both (:func:`restriction`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from expkit.analysis.collect import Collected, collect
from expkit.core.errors import InputError
from expkit.reproduce.bundle import Bundle, import_loaded, is_bundle_path, read_bundle
from expkit.stores.base import RunStore
from expkit.stores.filesystem import FileStore

# ---------------------------------------------------------------------------------------------------
# inputs: a run id or a bundle
# ---------------------------------------------------------------------------------------------------


def load_side(ref: str | Path, store: RunStore | None) -> Collected:
    """Collect one side of a comparison: a bundle (an existing ``.zip`` file, read into a temporary
    store) or a run id / ``latest`` in ``store``."""
    text = str(ref)
    if text.lower().endswith(".zip"):
        if not is_bundle_path(text):
            raise InputError(
                f"{text}: no such bundle file; give the path of a .zip written by 'expkit export' or a run id"
            )
        return collect_bundle(read_bundle(text))
    if store is None:
        raise InputError(f"{text!r} is not a bundle path and no store was given to look the run up in")
    return collect(store, text)


def collect_bundle(bundle: Bundle) -> Collected:
    """Collect a bundle's run through a temporary filesystem store (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="expkit-bundle-") as tmp:
        store = FileStore(tmp)
        import_loaded(bundle, store)
        return collect(store, bundle.run_id)


# ---------------------------------------------------------------------------------------------------
# the runs compared
# ---------------------------------------------------------------------------------------------------


def restriction(original: Collected, rerun: Collected, cells: Collection[str] | None) -> set[str]:
    """The run keys (``alg/ds/rep``) finished on both sides, and among ``cells`` when given."""
    done_o = _finished_keys(original)
    done_r = _finished_keys(rerun)
    keys = done_o & done_r
    if cells is not None:
        wanted = set(cells)
        keys &= wanted
    return keys


def _finished_keys(c: Collected) -> set[str]:
    t = c.table
    finished = t[t["status"] != "missing"]
    return {f"{a}/{d}/{r}" for a, d, r in zip(finished["algorithm"], finished["dataset"], finished["replicate"])}


def metric_rows(c: Collected, metric: str, keys: set[str], *, valid_only: bool = True) -> pd.DataFrame:
    """Rows of ``metric`` restricted to ``keys``; with ``valid_only`` only succeeded, finite values."""
    t = c.table
    t = t[t["metric"] == metric]
    key = t["algorithm"].astype(str) + "/" + t["dataset"].astype(str) + "/" + t["replicate"].astype(str)
    t = t[key.isin(keys)]
    if valid_only:
        t = t[(t["status"] == "succeeded") & np.isfinite(t["value"].astype(float))]
    rows: pd.DataFrame = t.reset_index(drop=True)
    return rows


def failures(table: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Failed (or non-finite) runs per (algorithm, dataset)."""
    bad = table[(table["status"] != "succeeded") | ~np.isfinite(table["value"].astype(float))]
    return {k: int(n) for k, n in bad.groupby(["algorithm", "dataset"], sort=False).size().items()}

"""Statistical reproduction check: does a re-run reproduce the original run?

:func:`compare_runs` compares two collected runs cell by cell (algorithm x dataset) and at the level
of the conclusions; :func:`write_comparison` writes ``compare.json`` and a plot of the original versus
re-run distributions; :func:`reproduce` re-runs an experiment (all cells or a seeded sample) and
compares it with the original. Each side can be a run in a store or a bundle (:func:`load_side`).

Per cell (method and conventions in :data:`CONVENTIONS` and docs/reproducibility.md):

* **different?** two-sided Mann-Whitney U and two-sample Kolmogorov-Smirnov tests of the original
  runs against the re-runs, Holm-corrected over all tests of all compared cells;
* **equivalent?** two one-sided tests (TOST, Schuirmann 1987) on the Vargha-Delaney A12 of re-run
  versus original (the Mann-Whitney functional, Wellek 2010 ch. 6): equivalent when the (1 - 2 alpha)
  confidence interval of A12 lies inside 0.5 +/- margin (default 0.14, i.e. below a "medium" effect).
  Runs with the same seed on both sides are paired (Munzel 1999 variance, t with n - 1 df); otherwise
  the samples are independent (Brunner-Munzel 2000 variance, Satterthwaite df);
* **verdict**: *not reproduced* when significantly different; *reproduced* when equivalent and not
  different; *inconclusive* otherwise, with the reason in words (too few runs for the equivalence test
  to be able to conclude — computed explicitly —, or neither different nor equivalent).

Conclusions: the Friedman verdict, the significant per-dataset and across-dataset pairs, the best
average rank and Kendall's tau of the average ranks, computed with :func:`expkit.analysis.stats.analyze` on
both sides. Overall: *reproduced* only when every cell is reproduced and the conclusions agree; *not
reproduced* when a cell is not reproduced or a conclusion flips (a pair significant in both runs with
opposite winners); *inconclusive* otherwise.

The check is split by concern: :mod:`~expkit.reproduce.sides` (loading each side),
:mod:`~expkit.reproduce.equivalence` (the TOST on A12), :mod:`~expkit.reproduce.cells` (per-cell tests
and verdicts), :mod:`~expkit.reproduce.conclusions`, :mod:`~expkit.reproduce.spec_check`,
:mod:`~expkit.reproduce.verdict` (:func:`compare_runs`, the overall verdict),
:mod:`~expkit.reproduce.comparison` (the result types and ``compare.json``),
:mod:`~expkit.reproduce.compare_plots` and :mod:`~expkit.reproduce.rerun` (:func:`reproduce`). This
module writes the output and re-exports their public names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from expkit.analysis.collect import Collected
from expkit.core.errors import InputError
from expkit.reproduce.compare_plots import plot_comparison
from expkit.reproduce.comparison import (
    CONVENTIONS,
    EXIT_CODES,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REFERENCES,
    REPRODUCED,
    SCHEMA,
    VERDICTS,
    CellComparison,
    Comparison,
    ConclusionCheck,
    SpecCheck,
)
from expkit.reproduce.equivalence import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    Equivalence,
    equivalence_test,
    min_replicates,
)
from expkit.reproduce.rerun import ReproduceOutcome, reproduce, sample_cells
from expkit.reproduce.sides import collect_bundle, load_side
from expkit.reproduce.spec_check import COMPATIBLE_FIELDS
from expkit.reproduce.verdict import compare_runs

__all__ = [
    "COMPATIBLE_FIELDS",
    "CONVENTIONS",
    "DEFAULT_ALPHA",
    "DEFAULT_MARGIN",
    "EXIT_CODES",
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REFERENCES",
    "REPRODUCED",
    "SCHEMA",
    "VERDICTS",
    "CellComparison",
    "Comparison",
    "ConclusionCheck",
    "Equivalence",
    "ReproduceOutcome",
    "SpecCheck",
    "collect_bundle",
    "compare_runs",
    "comparison_json",
    "default_out_dir",
    "equivalence_test",
    "load_side",
    "min_replicates",
    "plot_comparison",
    "reproduce",
    "sample_cells",
    "write_comparison",
]


def default_out_dir(comparison: Comparison) -> Path:
    """Where ``expkit compare`` writes by default: ``expkit-results/compare-<original>-<rerun>``."""
    return Path("expkit-results") / f"compare-{comparison.original_run}-{comparison.rerun_run}"


def comparison_json(comparison: Comparison) -> str:
    """``compare.json``: deterministic (fixed order, no timestamps, no NaN)."""
    return json.dumps(comparison.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_comparison(
    comparison: Comparison,
    original: Collected,
    rerun: Collected,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Write ``compare.json`` and ``compare-<metric>.png/pdf`` (original versus re-run distributions,
    one panel per dataset) into ``out_dir``; returns the written paths."""
    target = Path(out_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"-o {target}: cannot create the output directory ({err.strerror})") from err
    path = target / "compare.json"
    tmp = path.with_name(".compare.json.tmp")
    tmp.write_text(comparison_json(comparison), encoding="utf-8", newline="\n")
    tmp.replace(path)
    files = [path]
    files += plot_comparison(comparison, original, rerun, target, formats=formats)
    return files

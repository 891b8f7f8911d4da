"""Stage 6: the report — tables, plots and documents from a run in the store.

:func:`build_report` collects a run, analyses it (:mod:`expkit.analysis.stats`), draws the plots
(:mod:`expkit.analysis.plots`) and writes, into one output directory and nowhere else:

``results.csv`` (tidy, every metric), ``summary.csv`` (per algorithm × dataset: n, median, mean,
std, IQR), ``stats.json`` (every test), ``table.tex`` (booktabs), ``report.md``, ``report.html``
(self-contained, plots embedded) and the plots as PNG and PDF. CSV, JSON and LaTeX are
byte-identical when the run is unchanged: stable ordering, no timestamps.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import jinja2
import pandas as pd

from expkit import __version__
from expkit.analysis.collect import Collected, collect, select_metric
from expkit.analysis.stats import Analysis, Goal, analyze, check_aggregate
from expkit.core.data import data_dir
from expkit.core.errors import ExpkitError, InputError
from expkit.core.fmt import format_number
from expkit.stores.base import RunStore

log = logging.getLogger(__name__)

DEFAULT_RESULTS_DIR = "expkit-results"
PLOT_FORMATS = ("png", "pdf", "svg")
#: What the report shows for a number that is missing or not finite (tables and the ``num`` template filter).
NO_VALUE = "–"


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` produced."""

    run_id: str
    out_dir: Path
    files: tuple[Path, ...]
    analysis: Analysis
    collected: Collected
    summary: tuple[str, ...]
    skipped_plots: tuple[str, ...]


def analyze_collected(
    collected: Collected, *, metric: str | None = None, alpha: float = 0.05, aggregate: str = "mean"
) -> Analysis:
    """Run the statistics on a collected run, in spec order, respecting the spec's goal and pairing."""
    name = select_metric(collected, metric)
    goal = collected.goal if name == collected.metric else _goal_for(collected, name)
    return analyze(
        collected.table,
        metric=name,
        goal=goal,
        paired=collected.experiment.spec.paired,
        alpha=alpha,
        aggregate=check_aggregate(aggregate),
        algorithms=collected.algorithms,
        datasets=collected.datasets,
    )


def _goal_for(collected: Collected, metric: str) -> Goal:
    # Only the spec's metric has a declared direction; others are assumed to follow it and say so.
    log.warning("metric %r has no declared goal; using the spec metric's goal (%s)", metric, collected.goal)
    return collected.goal


def header_lines(collected: Collected) -> list[str]:
    """Run-level lines: what was collected, and whether it is partial (failed or missing cells)."""
    n_ok = collected.total - len(collected.failed) - len(collected.missing)
    lines = [f"Run {collected.run_id} ({collected.experiment.metadata.name}): {n_ok}/{collected.total} runs succeeded"]
    if collected.partial:
        lines[0] += " — PARTIAL RESULTS"
        if collected.failed:
            shown = ", ".join(f"{k} ({v})" for k, v in list(collected.failed.items())[:5])
            more = f" and {len(collected.failed) - 5} more" if len(collected.failed) > 5 else ""
            lines.append(f"  {len(collected.failed)} failed: {shown}{more}")
        if collected.missing:
            shown = ", ".join(collected.missing[:5])
            more = f" and {len(collected.missing) - 5} more" if len(collected.missing) > 5 else ""
            lines.append(f"  {len(collected.missing)} not finished: {shown}{more}")
        lines.append(
            "  Failed and missing runs are left out of the tests; datasets without a value for every "
            "algorithm are left out of the across-dataset comparison."
        )
    return lines


def terminal_summary(
    store: RunStore, run_ref: str, *, metric: str | None = None, alpha: float = 0.05, aggregate: str = "mean"
) -> list[str]:
    """The readable comparison printed after ``expkit run`` and by ``expkit results``."""
    collected = collect(store, run_ref)
    analysis = analyze_collected(collected, metric=metric, alpha=alpha, aggregate=aggregate)
    return header_lines(collected) + analysis.summary_lines()


def default_out_dir(run_id: str) -> Path:
    return Path(DEFAULT_RESULTS_DIR) / run_id


def build_report(
    store: RunStore,
    run_ref: str,
    *,
    out_dir: str | Path | None = None,
    metric: str | None = None,
    alpha: float = 0.05,
    aggregate: str = "mean",
    formats: Sequence[str] = ("png", "pdf"),
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Report:
    """Collect, analyse, plot and write every report file for run ``run_ref`` into ``out_dir``
    (default ``expkit-results/<run-id>``)."""
    if not 0 < alpha < 1:
        raise InputError(f"--alpha {alpha}: give a significance level between 0 and 1, e.g. 0.05")
    unknown = [f for f in formats if f not in PLOT_FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {unknown[0] if unknown else ''!r}: plot formats are {', '.join(PLOT_FORMATS)}")
    collected = collect(store, run_ref, on_progress=on_progress, on_total=on_total)
    analysis = analyze_collected(collected, metric=metric, alpha=alpha, aggregate=aggregate)
    target = Path(out_dir) if out_dir is not None else default_out_dir(collected.run_id)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"-o {target}: cannot create the output directory ({err.strerror})") from err
    files: list[Path] = []
    files.append(_write(target / "results.csv", _csv(collected.table)))
    files.append(_write(target / "summary.csv", _csv(analysis.descriptives)))
    files.append(_write(target / "stats.json", stats_json(collected, analysis)))
    files.append(_write(target / "table.tex", latex_table(collected, analysis)))
    plot_files, skipped = _plots(collected, analysis, target, formats, force)
    files.extend(plot_files)
    summary = header_lines(collected) + analysis.summary_lines()
    context = _context(collected, analysis, summary, plot_files, skipped, target)
    files.append(_write(target / "report.md", _render("report.md.j2", context, autoescape=False)))
    files.append(_write(target / "report.html", _render("report.html.j2", context, autoescape=True)))
    return Report(collected.run_id, target, tuple(files), analysis, collected, tuple(summary), tuple(skipped))


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)
    return path


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.17g")


def stats_json(collected: Collected, analysis: Analysis) -> str:
    """``stats.json``: the run it describes, then every test (deterministic)."""
    doc = {
        "run": {
            "run_id": collected.run_id,
            "experiment": collected.experiment.metadata.name,
            "spec_sha256": collected.manifest.get("spec_sha256"),
            "partial": collected.partial,
            "cells": collected.total,
            "failed": dict(sorted(collected.failed.items())),
            "missing": list(collected.missing),
        },
        "expkit_version": __version__,
        **analysis.to_dict(),
    }
    return json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _num(value: SupportsFloat | None) -> str:
    """A number in the report: :func:`~expkit.core.fmt.format_number` with :data:`NO_VALUE` for none."""
    return format_number(value, missing=NO_VALUE)


def _latex_number(value: float | None) -> str:
    text = _num(value)
    if "e" in text:
        mant, exp = text.split("e")
        return f"${mant}\\times10^{{{int(exp)}}}$"
    return text


def latex_table(collected: Collected, analysis: Analysis) -> str:
    """A booktabs table: datasets × algorithms, cell = mean (std) or median (IQR), best in bold,
    ``\\dagger`` where an algorithm is significantly worse than the best on that dataset."""
    algs = list(analysis.algorithms)
    desc = analysis.descriptives.set_index(["algorithm", "dataset"])
    agg = analysis.aggregated
    spread_col, spread_name = ("std", "standard deviation") if analysis.aggregate == "mean" else ("iqr", "IQR")
    better = "lower" if analysis.goal == "minimize" else "higher"
    pairs = analysis.pairwise
    lines = [
        "% Generated by expkit " + __version__ + f" from run {collected.run_id}; requires \\usepackage{{booktabs}}.",
        "\\begin{table}[t]",
        "\\centering",
        (
            f"\\caption{{{latex_escape(analysis.metric)} ({better} is better): {analysis.aggregate} ({spread_name}) "
            f"over replicates. Best per dataset in bold; $^\\dagger$ significantly worse than the best "
            f"({_test_label(analysis)}, Holm-corrected, $\\alpha={analysis.alpha:g}$).}}"
        ),
        f"\\label{{tab:{latex_escape(collected.experiment.metadata.name)}}}",
        "\\begin{tabular}{l" + "r" * len(algs) + "}",
        "\\toprule",
        "Dataset & " + " & ".join(latex_escape(a) for a in algs) + " \\\\",
        "\\midrule",
    ]
    for ds in analysis.datasets:
        best = set(analysis.best_on(ds))
        cells = []
        for a, value in zip(algs, agg.loc[ds].to_numpy(dtype=float)):
            spread = desc.loc[(a, ds), spread_col] if (a, ds) in desc.index else float("nan")
            text = _latex_number(float(value))
            if text != NO_VALUE:
                text = f"{text} {{\\scriptsize({_latex_number(float(spread))})}}"
            if a in best and text != NO_VALUE:
                text = f"\\textbf{{{text}}}"
            if a not in best and best and _significantly_worse(pairs, ds, a, best):
                text += "$^\\dagger$"
            cells.append(text)
        lines.append(latex_escape(ds) + " & " + " & ".join(cells) + " \\\\")
    ranks = analysis.across.average_ranks
    if ranks is not None:
        lines.append("\\midrule")
        lines.append("Avg.\\ rank & " + " & ".join(f"{r:.2f}" for r in ranks) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _test_label(analysis: Analysis) -> str:
    return "Wilcoxon signed-rank" if analysis.pair_test == "wilcoxon" else "Mann--Whitney U"


def _significantly_worse(pairs: pd.DataFrame, dataset: str, algorithm: str, best: set[str]) -> bool:
    rows = pairs[(pairs["dataset"] == dataset) & (pairs["significant"] == True)]  # noqa: E712
    for _, r in rows.iterrows():
        if algorithm in (r["a"], r["b"]) and r["winner"] in best:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------


def _plots(
    collected: Collected, analysis: Analysis, target: Path, formats: Sequence[str], force: bool
) -> tuple[list[Path], list[str]]:
    """Draw every plot that the data allow; a plot that cannot be drawn is listed with the reason."""
    from expkit.analysis import plots

    files: list[Path] = []
    skipped: list[str] = []
    algs, dss = list(analysis.algorithms), list(analysis.datasets)

    def attempt(what: str, draw: Callable[[], list[Path]]) -> None:
        try:
            files.extend(draw())
        except InputError as err:
            skipped.append(f"{what}: {err}")

    metric, goal = analysis.metric, analysis.goal
    attempt(
        "box plots",
        lambda: plots.plot_boxplots(
            collected.table, metric=metric, goal=goal, out_dir=target, algorithms=algs, datasets=dss, formats=formats
        ),
    )
    traj = collected.trajectories
    if not traj.empty and (traj["metric"] == metric).any():
        attempt(
            "convergence plots",
            lambda: plots.plot_convergence(
                traj, metric=metric, goal=goal, out_dir=target, algorithms=algs, datasets=dss, formats=formats
            ),
        )
    else:
        skipped.append(f"convergence plots: the runs wrote no trajectory of {metric!r}")
    across = analysis.across
    if across.average_ranks is not None and across.nemenyi is not None:
        ranks, cd = dict(zip(across.algorithms, across.average_ranks)), across.nemenyi.cd_alpha
        attempt(
            "critical-difference diagram",
            lambda: plots.plot_cd_diagram(
                ranks,
                cd,
                alpha=analysis.alpha,
                n_datasets=len(across.datasets),
                out_stem=target / "cd-diagram",
                formats=formats,
                force=force,
                algorithms=algs,
            ),
        )
    else:
        skipped.append("critical-difference diagram: no complete dataset to rank the algorithms on")
    if len(algs) >= 2:
        attempt(
            "win/tie/loss overview",
            lambda: plots.plot_rank_overview(
                analysis.win_tie_loss(), out_stem=target / "win-tie-loss", algorithms=algs, formats=formats
            ),
        )
    return files, skipped


# ------------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------------


def _render(name: str, context: dict[str, Any], *, autoescape: bool) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir("templates/report")),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    return env.get_template(name).render(**context)


def _context(
    collected: Collected,
    analysis: Analysis,
    summary: list[str],
    plot_files: list[Path],
    skipped: list[str],
    target: Path,
) -> dict[str, Any]:
    """Everything the report templates show."""
    pairs = analysis.pairwise
    across = analysis.across
    stats_doc = analysis.to_dict()
    return {
        "run_id": collected.run_id,
        "experiment": collected.experiment.metadata,
        "manifest": collected.manifest,
        "partial": collected.partial,
        "failed": sorted(collected.failed.items()),
        "missing": list(collected.missing),
        "total": collected.total,
        "analysis": analysis,
        "algorithms": list(analysis.algorithms),
        "rows": _table_rows(analysis, pairs),
        "significant": _significant_rows(pairs),
        "n_pairs": len(pairs),
        "across": across,
        "ranks": list(zip(across.algorithms, across.average_ranks)) if across.average_ranks is not None else [],
        "summary": summary,
        "images": _images(plot_files),
        "skipped": skipped,
        "conventions": stats_doc["conventions"],
        "references": stats_doc["references"],
        "better": "lower" if analysis.goal == "minimize" else "higher",
        "test_label": _test_label(analysis).replace("--", "–"),
        "version": __version__,
    }


def _table_rows(analysis: Analysis, pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """The results table: per dataset, each algorithm's cell value, whether it is best or significantly worse."""
    algs = list(analysis.algorithms)
    agg = analysis.aggregated
    rows = []
    for ds in analysis.datasets:
        best = set(analysis.best_on(ds))
        rows.append(
            {
                "dataset": ds,
                "cells": [
                    {
                        "value": _num(float(value)),
                        "best": a in best,
                        "worse": a not in best and bool(best) and _significantly_worse(pairs, ds, a, best),
                    }
                    for a, value in zip(algs, agg.loc[ds].to_numpy(dtype=float))
                ],
            }
        )
    return rows


def _significant_rows(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """The significant pairwise differences, winner first (A12 and median difference from its side)."""
    significant = pairs[pairs["significant"] == True]  # noqa: E712
    return [
        {
            "dataset": r["dataset"],
            "winner": r["winner"],
            "loser": r["b"] if r["winner"] == r["a"] else r["a"],
            "p_holm": _num(r["p_holm"]),
            "a12": _num(r["a12"] if r["winner"] == r["a"] else 1 - r["a12"]),
            "magnitude": r["magnitude"],
            "median_diff": _num(abs(r["median_diff"])),
        }
        for _, r in significant.iterrows()
    ]


def _images(plot_files: list[Path]) -> list[dict[str, str]]:
    """The PNG plots, base64-encoded for embedding in the HTML report."""
    return [
        {"name": p.name, "title": _plot_title(p.name), "data": base64.b64encode(p.read_bytes()).decode("ascii")}
        for p in plot_files
        if p.suffix == ".png"
    ]


def _plot_title(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    for prefix, title in (
        ("boxplots", "Per-dataset distributions"),
        ("convergence", "Convergence"),
        ("cd-diagram", "Critical-difference diagram"),
        ("win-tie-loss", "Wins / ties / losses"),
    ):
        if stem.startswith(prefix):
            return title
    return stem


def summary_or_reason(store: RunStore, run_id: str) -> list[str]:
    """The terminal summary, or one line saying why there is none (never raises an expkit error)."""
    try:
        return terminal_summary(store, run_id)
    except ExpkitError as err:
        return [f"(no statistical summary: {err})"]

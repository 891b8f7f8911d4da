"""Stage 6: the report — tables, plots and documents from a run in the store.

:func:`build_report` collects a run, analyses it (:mod:`expkit.analysis.stats`), draws the plots
(:mod:`expkit.analysis.plots`) and writes, into one output directory and nowhere else:

``results.csv`` (tidy, every metric, with each cell's wall time, CPU time and peak memory),
``summary.csv`` (per algorithm × dataset: n, median, mean, std, IQR, and the effect size and
Hodges-Lehmann shift against the dataset's best with their intervals), ``resources.csv`` (per
algorithm: time and memory, :mod:`expkit.analysis.resources`), ``stats.json`` (every test; with
several metrics also the secondary ones), ``table.tex`` (booktabs), ``report.md``, ``report.html``
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
from expkit.analysis.comparable import check_comparable
from expkit.analysis.report_effects import (
    bayes_head,
    effect_label,
    failure_counts,
    latex_interval,
    significant_rows,
    success_rows,
    summary_frame,
)
from expkit.analysis.report_html import summary_blocks
from expkit.analysis.report_verdict import (
    LATEX_SPECIALS,
    across_context,
    cd_groups,
    check_run_control,
    latex_verdict,
    p_text,
)
from expkit.analysis.resources import budget_text, resource_rows, resource_summary
from expkit.analysis.stats import Analysis, Goal, analyze, check_aggregate, check_failures
from expkit.analysis.stats.bayes import BAYES_THRESHOLD, bayes_report_items, plot_posteriors
from expkit.analysis.stats.metrics import ACROSS, MetricsAnalysis, analyze_metrics
from expkit.core.data import data_dir
from expkit.core.diskfull import disk_full_error, is_disk_full
from expkit.core.errors import ExpkitError, InputError
from expkit.core.fmt import format_number
from expkit.runs.code import describe_change, describe_code, describe_list
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
    #: every listed metric's analysis (None: one metric was selected with ``--metric``)
    metrics: MetricsAnalysis | None = None


@dataclass(frozen=True)
class Design:
    """How a run's design changes its analysis, from a layer above (adaptive replicates:
    :func:`expkit.adaptive.results.adaptive_design`): ``collected`` reshapes the collected run (cells the
    design never planned are not "missing"), ``primary`` replaces the primary metric's per-dataset claims
    (the sequential procedure's), ``lines`` go under the report's header and say so."""

    collected: Callable[[Collected], Collected]
    primary: Callable[[Collected, Analysis], Analysis]
    lines: tuple[str, ...] = ()


def analyze_collected(
    collected: Collected,
    *,
    metric: str | None = None,
    alpha: float = 0.05,
    aggregate: str = "mean",
    failures: str | None = None,
    control: str | None = None,
    rope: float | None = None,
    bayes_threshold: float = BAYES_THRESHOLD,
    design: Design | None = None,
) -> Analysis:
    """Run the statistics on a collected run, in spec order, respecting the spec's goal, pairing and
    failure policy (``failures`` overrides the spec's; default 'penalize'); ``control``: compare every
    algorithm with this one across datasets (Holm over k - 1 tests) instead of every pair. ``rope``
    (default: the spec's ``rope``) is the Bayesian test's region of practical equivalence for the
    primary metric; other metrics use ROPE 0 (said in their notes). ``design``: the primary metric's
    per-dataset claims come from it (an adaptive run's sequential procedure)."""
    name = select_metric(collected, metric)
    goal = _goal_for(collected, name)
    analysis = analyze(
        collected.table,
        metric=name,
        goal=goal,
        paired=collected.experiment.spec.paired,
        alpha=alpha,
        aggregate=check_aggregate(aggregate),
        algorithms=collected.algorithms,
        datasets=collected.datasets,
        failures=check_failures(failure_policy(collected, failures)),
        control=check_run_control(control, collected.algorithms, collected.run_id),
        rope=rope_for(collected, name, rope),
        bayes_threshold=bayes_threshold,
    )
    return design.primary(collected, analysis) if design is not None and name == collected.metric else analysis


def rope_for(collected: Collected, metric: str, rope: float | None = None) -> float | None:
    """The ROPE of ``metric``: ``rope`` (``--rope``) or the spec's ``rope`` for the primary metric, None
    (ROPE 0) for the others, whose units differ."""
    if metric != collected.metric:
        return None
    return rope if rope is not None else getattr(collected.experiment.spec, "rope", None)


def analyze_all_metrics(
    collected: Collected,
    *,
    alpha: float = 0.05,
    aggregate: str = "mean",
    failures: str | None = None,
    control: str | None = None,
    rope: float | None = None,
    bayes_threshold: float = BAYES_THRESHOLD,
    design: Design | None = None,
) -> MetricsAnalysis:
    """:func:`analyze_collected` for every metric the spec lists, each with its own goal (the first
    primary), the secondary claims Holm-corrected across metrics (:mod:`expkit.analysis.stats.metrics`)."""
    declared = [(name, goal) for name, goal in collected.declared_metrics if name in collected.metrics]
    if not declared or declared[0][0] != collected.metric:
        declared = [(collected.metric, collected.goal), *declared]
    return analyze_metrics(
        declared,
        lambda name, _goal: analyze_collected(
            collected,
            metric=name,
            alpha=alpha,
            aggregate=aggregate,
            failures=failures,
            control=control,
            rope=rope,
            bayes_threshold=bayes_threshold,
            design=design,
        ),
        alpha=alpha,
    )


def failure_policy(collected: Collected, failures: str | None = None) -> str:
    """The failure policy of an analysis: ``failures`` if given, else the spec's, else 'penalize'."""
    return failures or collected.experiment.spec.failures or "penalize"


def _goal_for(collected: Collected, metric: str) -> Goal:
    """The goal the spec declares for ``metric``; a metric it does not list follows the primary's (logged)."""
    declared = collected.goal_of(metric)
    if declared is not None:
        return declared
    log.warning("metric %r has no declared goal; using the spec metric's goal (%s)", metric, collected.goal)
    return collected.goal


def header_lines(collected: Collected, failures: str | None = None) -> list[str]:
    """Run-level lines: what was collected, and whether it is partial (failed or missing cells);
    ``failures`` is the policy the analysis used (default: the spec's)."""
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
        lines += _missing_metric_lines(collected)
        if failure_policy(collected, failures) == "exclude":
            lines.append(
                "  Failed and missing runs are left out of the tests (failures: exclude); datasets without a "
                "value for every algorithm have no average rank and enter only the Skillings-Mack test and the "
                "pairs whose algorithms both have values there."
            )
        else:
            lines.append(
                "  Failed runs count as worse than every successful run of their dataset (failures: "
                "penalize); unfinished runs are left out of the tests."
            )
    elif collected.missing_metrics:
        lines += _missing_metric_lines(collected)
    return lines


def _missing_metric_lines(collected: Collected) -> list[str]:
    """One line per secondary metric some succeeded runs did not report (left out of its tests only)."""
    return [
        f"  {len(cells)} runs lack the secondary metric {name!r} (left out of its tests only): "
        + ", ".join(cells[:5])
        + (f" and {len(cells) - 5} more" if len(cells) > 5 else "")
        for name, cells in sorted(collected.missing_metrics.items())
    ]


def terminal_summary(
    store: RunStore,
    run_ref: str,
    *,
    metric: str | None = None,
    alpha: float = 0.05,
    aggregate: str = "mean",
    failures: str | None = None,
    control: str | None = None,
    rope: float | None = None,
    bayes_threshold: float = BAYES_THRESHOLD,
) -> list[str]:
    """The readable comparison printed after ``expkit run`` and by ``expkit results``."""
    collected = collect(store, run_ref)
    options: dict[str, Any] = {"alpha": alpha, "aggregate": aggregate, "failures": failures, "control": control}
    options.update(rope=rope, bayes_threshold=bayes_threshold)
    if metric is None:
        metrics = analyze_all_metrics(collected, **options)
        return header_lines(collected, metrics.primary.failures) + metrics.summary_lines()
    analysis = analyze_collected(collected, metric=metric, **options)
    return header_lines(collected, analysis.failures) + analysis.summary_lines()


def default_out_dir(run_id: str) -> Path:
    return Path(DEFAULT_RESULTS_DIR) / run_id


def build_report(  # long: one keyword per option of expkit results; collect, analyse, plot, write in turn
    store: RunStore,
    run_ref: str,
    *,
    out_dir: str | Path | None = None,
    metric: str | None = None,
    alpha: float = 0.05,
    aggregate: str = "mean",
    formats: Sequence[str] = ("png", "pdf"),
    force: bool = False,
    log_scale: str = "auto",
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    failures: str | None = None,
    table_intervals: bool = False,
    control: str | None = None,
    rope: float | None = None,
    bayes_threshold: float = BAYES_THRESHOLD,
    design: Design | None = None,
) -> Report:
    """Collect, analyse, plot and write every report file for run ``run_ref`` into ``out_dir``
    (default ``expkit-results/<run-id>``). ``failures`` overrides the spec's failure policy;
    ``table_intervals`` adds the Hodges-Lehmann interval against the best to table.tex's cells;
    ``control`` makes the across-dataset comparisons those with that algorithm; ``log_scale``: box plots' y axis;
    ``rope`` / ``bayes_threshold``: the Bayesian signed-rank test's ROPE (default: the spec's) and threshold;
    ``design``: an adaptive run's design (:class:`Design`)."""
    if not 0 < alpha < 1:
        raise InputError(f"--alpha {alpha}: give a significance level between 0 and 1, e.g. 0.05")
    unknown = [f for f in formats if f not in PLOT_FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {unknown[0] if unknown else ''!r}: plot formats are {', '.join(PLOT_FORMATS)}")
    collected = collect(store, run_ref, on_progress=on_progress, on_total=on_total)
    if design is not None:
        collected = design.collected(collected)
    check_comparable(collected)  # no successful run: one line and exit 1, not an empty report
    options: dict[str, Any] = {"alpha": alpha, "aggregate": aggregate, "failures": failures, "control": control}
    options.update(rope=rope, bayes_threshold=bayes_threshold, design=design)
    # every listed metric by default (the primary drives the verdict); --metric selects one
    metrics = analyze_all_metrics(collected, **options) if metric is None else None
    analysis = metrics.primary if metrics is not None else analyze_collected(collected, metric=metric, **options)
    target = Path(out_dir) if out_dir is not None else default_out_dir(collected.run_id)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(target) from err
        raise InputError(f"-o {target}: cannot create the output directory ({err.strerror})") from err
    files: list[Path] = []
    files.append(_write(target / "results.csv", _csv(collected.table)))
    files.append(_write(target / "summary.csv", _csv(summary_frame(analysis))))
    files.append(_write(target / "resources.csv", _csv(resource_summary(collected))))
    files.append(_write(target / "stats.json", stats_json(collected, analysis, metrics)))
    files.append(_write(target / "table.tex", latex_table(collected, analysis, intervals=table_intervals)))
    try:
        plot_files, skipped = _plots(collected, analysis, target, formats, force, log_scale)
    except OSError as err:  # the plots remove their own temporary files
        if is_disk_full(err):
            raise disk_full_error(target) from err
        raise
    files.extend(plot_files)
    summary = (
        header_lines(collected, analysis.failures)
        + list(design.lines if design else ())
        + (metrics.summary_lines() if metrics is not None else analysis.summary_lines())
    )
    context = _context(collected, analysis, summary, plot_files, skipped, target)
    context["secondary"] = secondary_context(metrics)
    files.append(_write(target / "report.md", _render("report.md.j2", context, autoescape=False)))
    files.append(_write(target / "report.html", _render("report.html.j2", context, autoescape=True)))
    return Report(collected.run_id, target, tuple(files), analysis, collected, tuple(summary), tuple(skipped), metrics)


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="\n")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, needed=len(text.encode())) from err
        raise
    return path


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.17g")


def stats_json(collected: Collected, analysis: Analysis, metrics: MetricsAnalysis | None = None) -> str:
    """``stats.json``: the run it describes, then every test (deterministic); with ``metrics``, also the
    secondary metrics' analyses and claims (``analysis`` is then its primary)."""
    doc = {
        "run": {
            "run_id": collected.run_id,
            "experiment": collected.experiment.metadata.name,
            "spec_sha256": collected.manifest.get("spec_sha256"),
            "partial": collected.partial,
            "cells": collected.total,
            "failed": dict(sorted(collected.failed.items())),
            "missing": list(collected.missing),
            **(
                {"missing_metrics": dict(sorted(collected.missing_metrics.items()))}
                if collected.missing_metrics
                else {}
            ),
        },
        "expkit_version": __version__,
        **(metrics.to_dict() if metrics is not None else analysis.to_dict()),
    }
    return json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def _num(value: SupportsFloat | None) -> str:
    """A number in the report: :func:`~expkit.core.fmt.format_number` with :data:`NO_VALUE` for none."""
    return format_number(value, missing=NO_VALUE)


def _latex_number(value: float | None) -> str:
    text = _num(value)
    if "e" in text:
        mant, exp = text.split("e")
        return f"${mant}\\times10^{{{int(exp)}}}$"
    return text


def latex_table(collected: Collected, analysis: Analysis, *, intervals: bool = False) -> str:
    """A booktabs table: datasets × algorithms, cell = mean (std) or median (IQR), best in bold,
    ``\\dagger`` where an algorithm is significantly worse than the best on that dataset; with
    ``intervals`` each other cell gets a second line, the Hodges-Lehmann interval of its shift against
    the best (in the metric's units)."""
    algs = list(analysis.algorithms)
    versus = analysis.versus_best() if intervals else None
    ci_text = (
        f" Below each value: the {100 * (1 - analysis.alpha):g}\\% Hodges--Lehmann interval of its "
        f"difference from the best (distribution-free, in the metric's units)."
        if intervals
        else ""
    )
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
            f"({_test_label(analysis)}, Holm-corrected, $\\alpha={analysis.alpha:g}$).{ci_text} Across datasets: "
            f"{latex_verdict(analysis.across.verdict)}}}"
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
            ci = latex_interval(versus, a, ds) if versus is not None and a not in best else ""
            if ci:
                text = f"\\shortstack[r]{{{text}\\\\{{\\scriptsize {ci}}}}}"
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


def _plots(  # long: one attempt per plot, each with its arguments
    collected: Collected, analysis: Analysis, target: Path, formats: Sequence[str], force: bool, log_scale: str
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
            collected.table,
            metric=metric,
            goal=goal,
            out_dir=target,
            algorithms=algs,
            datasets=dss,
            formats=formats,
            log_scale=log_scale,
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
                **cd_groups(across),  # bars from the primary procedure (Wilcoxon, Holm); the CD for reference
            ),
        )
    else:
        skipped.append("critical-difference diagram: no complete dataset to rank the algorithms on")
    if analysis.bayes:
        claimed = [(p.a, p.b) for p in across.pairs if p.significant]
        attempt(
            "Bayesian posterior simplex",
            lambda: plots.plot_posterior_simplex(
                plot_posteriors(analysis.bayes, claimed), out_stem=target / "bayes-simplex", formats=formats
            ),
        )
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
    env.filters["p_text"] = p_text
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
        "significant": significant_rows(analysis),
        "bayes_local_head": bayes_head(analysis),
        "effect_label": effect_label(analysis),
        "success": success_rows(analysis),
        "n_failed_runs": failure_counts(analysis),
        "failures": analysis.failures,
        "power": analysis.power.sentence() if analysis.power is not None else None,
        "bayes_head": bayes_report_items(analysis.bayes, analysis.rope, analysis.bayes_threshold)[0],
        "bayes": bayes_report_items(analysis.bayes, analysis.rope, analysis.bayes_threshold)[1],
        "n_pairs": len(pairs),
        "across": across,
        **across_context(across),
        "ranks": list(zip(across.algorithms, across.average_ranks)) if across.average_ranks is not None else [],
        "summary": summary,
        "summary_blocks": summary_blocks(summary),
        "images": _images(plot_files),
        "skipped": skipped,
        "conventions": stats_doc["conventions"],
        "references": stats_doc["references"],
        "better": "lower" if analysis.goal == "minimize" else "higher",
        "test_label": _test_label(analysis).replace("--", "–"),
        "version": __version__,
        **_code_context(collected),
        "resources": resource_rows(resource_summary(collected)),
        "budget": budget_text(collected),
        "secondary": [],  # build_report fills in the secondary metrics
    }


def secondary_context(metrics: MetricsAnalysis | None) -> list[dict[str, Any]]:
    """The report's secondary-metrics section: per secondary metric its goal, verdict and the claims
    that stand after Holm across the secondary metrics (empty with one metric)."""
    if metrics is None:
        return []
    return [
        {
            "metric": a.metric,
            "goal": a.goal,
            "verdict": a.across.verdict,
            "claims": [
                {
                    "where": "across datasets" if c.scope == ACROSS else c.scope,
                    "winner": c.winner,
                    "other": c.b if c.winner == c.a else c.a,
                    "p_holm": c.p_holm,
                    "p_metrics": c.p_metrics,
                }
                for c in metrics.significant_claims()
                if c.metric == a.metric
            ],
        }
        for a in metrics.secondary
    ]


def _code_context(collected: Collected) -> dict[str, Any]:
    """The run's code identity and, when its cells ran under several code versions (resumed with
    ``--allow-changes``), which cells ran under which digest and what changed."""
    versions = collected.code_versions if len(collected.code_versions) > 1 else {}
    changes = [c for c in collected.manifest.get("changes") or [] if isinstance(c, dict)]
    since: dict[str, str] = {}  # digest -> when it came in, in the order of the sessions
    for change in changes:
        code = change.get("code")
        if isinstance(code, dict):
            since.setdefault(str(code.get("from")), "session 1" if not since else "earlier")
            since.setdefault(str(code.get("to")), f"from session {change.get('session')}")
    order = [d for d in since if d in versions] + [d for d in versions if d not in since]
    return {
        "code": describe_code(collected.manifest.get("code")),
        "code_versions": [
            {"digest": d, "since": since.get(d, "?"), "n": len(versions[d]), "cells": describe_list(versions[d], 6)}
            for d in order
        ],
        "code_changes": [describe_change(c) for c in changes],
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


def run_verdict(store: RunStore, run_id: str) -> list[str]:
    """The verdict ``expkit run`` ends with: the across-dataset verdict sentence, or one line saying why there
    is none (never raises an expkit error: the run's outcome stands either way)."""
    try:
        collected = collect(store, run_id)
        check_comparable(collected)
        verdict = analyze_collected(collected).across.verdict
    except ExpkitError as err:
        return [f"(no verdict: {err})"]
    return [f"Verdict: {verdict}"]


def summary_or_reason(store: RunStore, run_id: str) -> list[str]:
    """The terminal summary, or one line saying why there is none (never raises an expkit error)."""
    try:
        return terminal_summary(store, run_id)
    except ExpkitError as err:
        return [f"(no statistical summary: {err})"]

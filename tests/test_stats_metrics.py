"""Several metrics (issue 14, item 8): a spec lists metrics with their goals, the first primary; each
metric is analysed with its own goal; claims about secondary metrics are Holm-corrected across metrics.

References: the single-metric analysis (itself checked against scipy in tests/test_stats*.py) for every
per-metric number, and Holm's step-down procedure written out below (Holm, S. (1979). A simple
sequentially rejective multiple test procedure. Scandinavian Journal of Statistics 6(2):65-70) for the
adjustment across metrics.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from expkit.analysis.collect import collect
from expkit.analysis.report import analyze_all_metrics, analyze_collected, build_report
from expkit.analysis.stats import analyze
from expkit.analysis.stats.metrics import ACROSS, analyze_metrics
from expkit.cli import app
from expkit.core.contract import parse_result
from expkit.core.errors import ArtifactError
from expkit.runner import start_run
from expkit.spec.loader import load_spec_text
from expkit.spec.model import experiment_dict
from expkit.stores import FileStore

# "fast" is faster (lower time_s) but scores lower (score is maximised); "slow" and "twin" are alike.
# mem is the same for everyone; "slow" never reports it on d1 (a missing secondary metric).
SCRIPT = textwrap.dedent("""
    import json, os, random
    alg, ds = os.environ["EXPKIT_ALGORITHM"], os.environ["EXPKIT_DATASET"]
    rng = random.Random(int(os.environ["EXPKIT_SEED"]) * 31 + len(alg))
    fast = alg == "fast"
    metrics = {"score": rng.gauss(0.5 if fast else 0.8, 0.05), "time_s": rng.gauss(1.0 if fast else 3.0, 0.2)}
    if not (alg == "slow" and ds == "d1"):
        metrics["mem"] = rng.gauss(100.0, 5.0)
    json.dump({"metrics": metrics}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
""")

HEAD = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: NAME}
    spec:
      image: python:3.12-slim@sha256:DIGEST
      command: [python, run.py]
      algorithms: [{name: fast}, {name: slow}, {name: twin}]
      datasets: [d1, d2, d3, d4, d5, d6]
      replicates: 5
""").replace("DIGEST", "c" * 64)


def _head(name: str) -> str:
    return HEAD.replace("NAME", name)


MULTI = _head("metrics-multi") + (
    "  metrics: [{name: score, goal: maximize}, {name: time_s, goal: minimize}, {name: mem, goal: minimize}]\n"
)
SINGLE = _head("metrics-old") + "  metric: {name: score, goal: maximize}\n"


def _run(tmp: Path, spec_text: str) -> tuple[FileStore, str]:
    (tmp / "run.py").write_text(SCRIPT)
    (tmp / "experiment.yml").write_text(spec_text)
    store = FileStore(tmp / "store")
    return store, start_run(tmp / "experiment.yml", store, workers=2).run_id


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStore, str]:
    return _run(tmp_path_factory.mktemp("multi"), MULTI)


# -- the spec ------------------------------------------------------------------------------------


def test_spec_lists_metrics_the_first_primary() -> None:
    spec = load_spec_text(MULTI).experiment.spec
    assert spec.metric.name == "score" and spec.metric.goal == "maximize"
    assert [(m.name, m.goal) for m in spec.all_metrics] == [
        ("score", "maximize"),
        ("time_s", "minimize"),
        ("mem", "minimize"),
    ]


def test_old_spec_keeps_its_sha256_and_dump() -> None:
    """A ``metric:`` spec resolves as before: no new field in its dump, the same sha256 as expkit
    computed before ``metrics`` existed (value recorded from the code before the change)."""
    old = _head("metrics-old").replace(
        "algorithms: [{name: fast}, {name: slow}, {name: twin}]", "algorithms: [{name: fast}, {name: slow}]"
    )
    old = old.replace("datasets: [d1, d2, d3, d4, d5, d6]", "datasets: [d1, d2]").replace(
        "replicates: 5", "replicates: 3"
    )
    loaded = load_spec_text(old + "  metric: {name: score, goal: maximize}\n")
    assert loaded.sha256 == "89bf43bd819e34485d3f21bc912dd4f804eb070562ee721193442fbe37775ce8"
    spec = experiment_dict(loaded.experiment)["spec"]
    assert spec["metric"] == {"name": "score", "goal": "maximize"}
    assert "metrics" not in spec and "metric_entry" not in spec
    # a multi-metric spec round-trips through its own dump
    again = experiment_dict(load_spec_text(MULTI).experiment)
    assert "metric" not in again["spec"] and len(again["spec"]["metrics"]) == 3


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        ("  metric: {name: a, goal: minimize}\n  metrics: [{name: b, goal: minimize}]\n", "not both"),
        ("", "one of them is required"),
        ("  metrics: [{name: a, goal: minimize}, {name: a, goal: maximize}]\n", "duplicate metric 'a'"),
        ("  metrics: []\n", "metrics"),
    ],
)
def test_exactly_one_of_metric_and_metrics(tmp_path: Path, tail: str, words: str) -> None:
    path = tmp_path / "experiment.yml"
    path.write_text(_head("bad") + tail)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_missing_primary_fails_the_cell_missing_secondary_does_not() -> None:
    with pytest.raises(ArtifactError, match="lacks the spec's metric 'score'"):
        parse_result(b'{"metrics": {"time_s": 1.0}}', "score")
    assert parse_result(b'{"metrics": {"score": 1.0}}', "score")["metrics"] == {"score": 1.0}


# -- goal per metric (the defect) -----------------------------------------------------------------


def test_results_metric_uses_the_goal_the_spec_gives_it(multi, tmp_path: Path) -> None:
    """The defect: ``--metric time_s`` on a spec whose primary goal is maximize analysed time_s as if
    higher were better. Here time_s is declared minimize, so the faster algorithm must win."""
    store, run_id = multi
    args = ["results", run_id, "--store", str(store.root), "--metric", "time_s", "--format", "png"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["metric"] == "time_s" and stats["goal"] == "minimize"
    assert "secondary_metrics" not in stats  # --metric selects one metric
    winners = {
        p["winner"] for ds in stats["per_dataset"] for p in ds["pairwise"]["pairs"] if "fast" in (p["a"], p["b"])
    }
    assert winners == {"fast"}
    assert stats["across_datasets"]["average_ranks"]["fast"] == 1.0


# -- the multi-metric analysis equals the single-metric path --------------------------------------


def test_each_metric_alone_equals_the_multi_metric_analysis(multi) -> None:
    """Reference: the single-metric path (``--metric NAME``), checked against scipy elsewhere."""
    store, run_id = multi
    collected = collect(store, run_id)
    both = analyze_all_metrics(collected)
    assert [a.metric for a in both.analyses] == ["score", "time_s", "mem"]
    assert [a.goal for a in both.analyses] == ["maximize", "minimize", "minimize"]
    for a in both.analyses:
        alone = analyze_collected(collected, metric=a.metric)
        assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(alone.to_dict(), sort_keys=True)
    doc = both.to_dict()
    primary_alone = analyze_collected(collected).to_dict()
    assert {k: v for k, v in doc.items() if k not in ("metrics", "secondary_metrics")} == primary_alone
    assert doc["metrics"] == [
        {"name": "score", "goal": "maximize", "role": "primary"},
        {"name": "time_s", "goal": "minimize", "role": "secondary"},
        {"name": "mem", "goal": "minimize", "role": "secondary"},
    ]
    for record, a in zip(doc["secondary_metrics"], both.secondary):
        alone = analyze_collected(collected, metric=a.metric).to_dict()
        assert record["role"] == "secondary"
        assert record["per_dataset"] == alone["per_dataset"]
        assert record["across_datasets"] == alone["across_datasets"]


def test_missing_secondary_metric_is_missing_for_that_metric_only(multi) -> None:
    store, run_id = multi
    collected = collect(store, run_id)
    assert not collected.failed  # the cells without mem did not fail
    assert collected.missing_metrics == {"mem": [f"slow/d1/{r}" for r in range(5)]}
    rows = collected.table[(collected.table["metric"] == "mem") & (collected.table["status"] == "missing")]
    assert len(rows) == 5 and set(rows["algorithm"]) == {"slow"} and set(rows["dataset"]) == {"d1"}
    both = analyze_all_metrics(collected)
    desc = both.primary.descriptives.set_index(["algorithm", "dataset"])
    assert desc.loc[("slow", "d1"), "n"] == 5  # the primary keeps those runs
    mem = both.secondary[1]
    assert "d1" in mem.excluded_datasets  # d1 lacks slow's mem: no average rank there


# -- Holm across metrics ---------------------------------------------------------------------------


def _holm_written_out(p: list[float]) -> list[float]:
    """Holm (1979): sort ascending, adjusted p(i) = max over j <= i of min(1, (m - j + 1) p(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def _table(seed: int, shifts: dict[str, dict[str, float]], n_ds: int = 6, reps: int = 6) -> pd.DataFrame:
    """A results table: every metric normal with the algorithm's shift, independent runs."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric, by_alg in shifts.items():
        for a, shift in by_alg.items():
            for d in range(n_ds):
                for r in range(reps):
                    value = float(rng.normal(shift, 1.0))
                    rows.append((a, f"d{d}", r, r, metric, value, "succeeded"))
    return pd.DataFrame(rows, columns=["algorithm", "dataset", "replicate", "seed", "metric", "value", "status"])


def _analyze_table(table: pd.DataFrame, metrics: list[tuple[str, str]], alpha: float = 0.05):  # type: ignore[no-untyped-def]
    algs = list(dict.fromkeys(table["algorithm"]))
    dss = list(dict.fromkeys(table["dataset"]))

    def run(name: str, goal: str):  # type: ignore[no-untyped-def]
        return analyze(
            table, metric=name, goal=goal, paired=False, alpha=alpha, algorithms=algs, datasets=dss, intervals=False
        )

    return analyze_metrics(metrics, run, alpha=alpha)  # type: ignore[arg-type]


def test_holm_across_metrics_against_written_out_holm() -> None:
    shifts = {
        "m0": {"A": 0.0, "B": 1.0, "C": 0.0},
        "m1": {"A": 0.0, "B": 1.5, "C": 0.3},
        "m2": {"A": 0.0, "B": 0.8, "C": 0.0},
        "m3": {"A": 0.0, "B": 0.0, "C": 0.0},
    }
    metrics = [("m0", "minimize"), ("m1", "minimize"), ("m2", "maximize"), ("m3", "minimize")]
    result = _analyze_table(_table(3, shifts, n_ds=12), metrics)
    assert [a.metric for a in result.secondary] == ["m1", "m2", "m3"]
    # every comparison: its family is its p_holm on the three secondary metrics
    families: dict[tuple[str, str, str], dict[str, float]] = {}
    for a in result.secondary:
        for pair in a.across.pairs:
            families.setdefault((ACROSS, pair.a, pair.b), {})[a.metric] = float(pair.p_holm)  # type: ignore[arg-type]
        for r in a.pairwise.itertuples(index=False):
            families.setdefault((str(r.dataset), str(r.a), str(r.b)), {})[a.metric] = float(r.p_holm)
    claims = {(c.scope, c.a, c.b, c.metric): c for c in result.claims}
    assert len(claims) == sum(len(f) for f in families.values()) and len(families) == 3 + 12 * 3
    for (scope, a, b), by_metric in families.items():
        assert len(by_metric) == 3
        names = sorted(by_metric)
        expected = _holm_written_out([by_metric[n] for n in names])
        for n, e in zip(names, expected):
            claim = claims[(scope, a, b, n)]
            assert claim.p_holm == pytest.approx(by_metric[n], rel=0, abs=0)
            assert claim.p_metrics == pytest.approx(e, rel=1e-12, abs=0)
            assert claim.p_metrics >= claim.p_holm  # type: ignore[operator]
    # a claim stands only when significant within its metric and after the correction across metrics
    for a in result.secondary:
        for pair in a.across.pairs:
            c = claims[(ACROSS, pair.a, pair.b, a.metric)]
            assert c.significant == bool(pair.significant and c.p_metrics is not None and c.p_metrics < 0.05)
    # the known answer: B is worse than A on m1 (minimize) across datasets
    strong = claims[(ACROSS, "A", "B", "m1")]
    assert strong.significant and strong.winner == "A"
    # m2 is maximised: B's higher values make B the winner there, by its own goal
    m2 = claims[(ACROSS, "A", "B", "m2")]
    assert m2.winner in (None, "B")


def test_one_metric_has_no_secondary_section() -> None:
    result = _analyze_table(_table(5, {"m0": {"A": 0.0, "B": 1.0}}), [("m0", "minimize")])
    assert result.secondary == () and result.claims == ()
    assert result.to_dict() == result.primary.to_dict()
    assert result.summary_lines() == result.primary.summary_lines()


def test_null_calibration_of_secondary_claims() -> None:
    """Under the null (every algorithm alike on every metric), the chance of any secondary claim across
    datasets is at most alpha + 3 Monte-Carlo standard errors (fixed seed, 100 simulated studies)."""
    alpha, n_sim = 0.05, 100
    null = {"A": 0.0, "B": 0.0, "C": 0.0}
    metrics = [("p", "minimize"), ("s1", "minimize"), ("s2", "maximize")]
    rejections = 0
    for i in range(n_sim):
        table = _table(1000 + i, {"p": null, "s1": null, "s2": null}, n_ds=6, reps=4)
        result = _analyze_table(table, metrics, alpha)
        rejections += any(c.significant for c in result.claims if c.scope == ACROSS)
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_sim)
    assert rejections / n_sim <= bound, (rejections, n_sim)


# -- report, summary, stats.json -------------------------------------------------------------------


def test_report_labels_secondary_metrics(multi, tmp_path: Path) -> None:
    store, run_id = multi
    report = build_report(store, run_id, out_dir=tmp_path / "out", formats=("png",))
    assert report.analysis.metric == "score" and report.metrics is not None
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["metric"] == "score" and stats["goal"] == "maximize"  # the primary drives the verdict
    assert [m["role"] for m in stats["metrics"]] == ["primary", "secondary", "secondary"]
    time_s = stats["secondary_metrics"][0]
    assert time_s["metric"] == "time_s" and time_s["goal"] == "minimize" and time_s["role"] == "secondary"
    claims = {(c["scope"], c["a"], c["b"]): c for c in time_s["holm_across_metrics"]}
    # 5 runs each: Mann-Whitney exact p = 2/252, Holm over 3 pairs, then over 2 secondary metrics: 0.048
    assert claims[("d2", "fast", "slow")]["winner"] == "fast"
    assert claims[("d2", "fast", "slow")]["p_metrics"] == pytest.approx(2 * 3 * 2 / 252, rel=1e-12)
    # across 6 datasets the Wilcoxon test cannot reach alpha after Holm (smallest p 2/64): no claim
    assert claims[(ACROSS, "fast", "slow")]["significant"] is False
    assert stats["run"]["missing_metrics"] == {"mem": [f"slow/d1/{r}" for r in range(5)]}
    assert "secondary_metrics" in stats["conventions"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Secondary metrics" in md and "**time_s** (secondary, minimize)" in md
    assert "fast better than slow on d2" in md
    assert "Secondary metrics" in (tmp_path / "out" / "report.html").read_text()
    summary = "\n".join(report.summary)
    assert "[secondary] time_s (minimize)" in summary
    assert "runs lack the secondary metric 'mem'" in summary
    # deterministic byte for byte
    build_report(store, run_id, out_dir=tmp_path / "again", formats=("png",))
    assert (tmp_path / "again" / "stats.json").read_bytes() == (tmp_path / "out" / "stats.json").read_bytes()

"""`expkit results`: collection, report files, determinism, partial runs, and the quickstart end to end."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from expkit.analysis.collect import collect
from expkit.analysis.report import build_report
from expkit.cli import app
from expkit.runner import start_run
from expkit.stores import FileStore

REPO = Path(__file__).resolve().parent.parent

# "good" is clearly better than "bad" (lower loss); "twin" draws from the same distribution as "good".
SCRIPT = textwrap.dedent("""
    import json, os, random
    alg, ds = os.environ["EXPKIT_ALGORITHM"], os.environ["EXPKIT_DATASET"]
    rng = random.Random(int(os.environ["EXPKIT_SEED"]) * 31 + len(alg))
    if os.environ.get("CRASH") == alg + "/" + ds:
        raise SystemExit(4)
    shift = {"good": 0.0, "twin": 0.0, "bad": 1.5}[alg]
    loss = rng.gauss(1.0 + shift, 0.3)
    traj = [{"step": s, "loss": loss + 2.0 / s} for s in (1, 2, 4, 8)]
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    json.dump({"metrics": {"loss": loss, "accuracy": 1 - loss / 10}, "trajectory": traj},
              open(os.path.join(out, "result.json"), "w"))
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {{name: synth, description: "Synthetic comparison with a known answer."}}
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [python, run.py]
      algorithms: [{{name: good}}, {{name: twin}}, {{name: bad}}]
      datasets: [d1, d2, d3, d4, d5, d6]
      replicates: 8
      seed: 11
      metric: {{name: loss, goal: {goal}}}
      paired: {paired}
      env: [CRASH]
""")


def make_run(
    tmp_path: Path,
    *,
    goal: str = "minimize",
    paired: bool = False,
    env: dict | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[FileStore, str]:
    (tmp_path / "run.py").write_text(SCRIPT)
    spec = tmp_path / "experiment.yml"
    spec.write_text(SPEC.format(digest="b" * 64, goal=goal, paired=str(paired).lower()))
    if env and monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    store = FileStore(tmp_path / "store")
    outcome = start_run(spec, store, workers=2)
    return store, outcome.run_id


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStore, str]:
    return make_run(tmp_path_factory.mktemp("synth"))


def test_collect_tidy_table(synth) -> None:
    store, run_id = synth
    c = collect(store, run_id)
    assert list(c.table.columns)[:7] == ["algorithm", "dataset", "replicate", "seed", "metric", "value", "status"]
    assert len(c.table) == 3 * 6 * 8 * 2  # cells x metrics
    assert set(c.table["status"]) == {"succeeded"} and not c.partial
    # Spec order, not alphabetical: good, twin, bad.
    assert list(dict.fromkeys(c.table["algorithm"])) == ["good", "twin", "bad"]
    assert set(c.trajectories["axis"]) == {"step"} and len(c.trajectories) == 3 * 6 * 8 * 4  # one trajectory metric


def test_report_files_and_contents(synth, tmp_path: Path) -> None:
    store, run_id = synth
    report = build_report(store, run_id, out_dir=tmp_path / "out")
    names = {p.name for p in report.files}
    for required in (
        "results.csv",
        "summary.csv",
        "stats.json",
        "table.tex",
        "report.md",
        "report.html",
        "boxplots-loss.png",
        "boxplots-loss.pdf",
        "convergence-loss-step.png",
        "cd-diagram.png",
        "win-tie-loss.png",
    ):
        assert required in names, required
    assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in report.files)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["run_id"] == run_id and stats["run"]["partial"] is False
    # The known answer: good beats bad on every dataset; good and twin are not told apart.
    for ds in stats["per_dataset"]:
        pairs = {(p["a"], p["b"]): p for p in ds["pairwise"]["pairs"]}
        assert pairs[("good", "bad")]["winner"] == "good" and pairs[("good", "bad")]["a12"] > 0.9
        assert pairs[("good", "bad")]["test"] == "mannwhitneyu"
    twin_wins = sum(
        1
        for ds in stats["per_dataset"]
        for p in ds["pairwise"]["pairs"]
        if {p["a"], p["b"]} == {"good", "twin"} and p["significant"]
    )
    assert twin_wins <= 1  # same distribution: at most a rare false positive
    ranks = stats["across_datasets"]["average_ranks"]
    assert ranks["bad"] == 3.0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert {"algorithm", "dataset", "n", "median", "mean", "std", "iqr"} <= set(summary.columns)
    assert len(summary) == 18 and (summary["n"] == 8).all()
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex and "$^\\dagger$" in tex
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and 'src="http' not in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert "![Critical-difference diagram](cd-diagram.png)" in md and "PARTIAL" not in md.upper().split("##")[0]


def test_report_is_deterministic(synth, tmp_path: Path) -> None:
    store, run_id = synth
    build_report(store, run_id, out_dir=tmp_path / "a", formats=("png",))
    build_report(store, run_id, out_dir=tmp_path / "b", formats=("png",))
    for name in ("results.csv", "summary.csv", "stats.json", "table.tex", "report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_maximize_flips_the_winner(tmp_path: Path) -> None:
    store, run_id = make_run(tmp_path, goal="maximize")
    report = build_report(store, run_id, out_dir=tmp_path / "out", formats=("png",))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["goal"] == "maximize"
    assert all(ds["best"] == ["bad"] for ds in stats["per_dataset"])
    assert stats["across_datasets"]["average_ranks"]["bad"] == 1.0
    assert "\\textbf{" in (tmp_path / "out" / "table.tex").read_text()
    assert report.analysis.goal == "maximize"


def test_partial_run_is_marked_and_lists_failed_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_id = make_run(tmp_path, env={"CRASH": "bad/d3"}, monkeypatch=monkeypatch)
    # Simulate a cell that has not finished: remove its completion marker.
    (tmp_path / "store" / run_id / "runs" / "good" / "d1" / "0" / "run.json").unlink()
    report = build_report(store, run_id, out_dir=tmp_path / "out", formats=("png",))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["partial"] is True
    assert set(stats["run"]["failed"]) == {f"bad/d3/{r}" for r in range(8)}
    assert all("exit code 4" in reason for reason in stats["run"]["failed"].values())
    assert stats["run"]["missing"] == ["good/d1/0"]
    # Issue 14, item 3: failed runs are no longer dropped. By default (failures: penalize) bad's crashed
    # runs on d3 count as worse than every successful run there, so d3 stays in the across-dataset
    # comparison with bad ranked last on it, and good beats bad on d3.
    assert "d3" not in stats["across_datasets"]["excluded_datasets"] and stats["failures"] == "penalize"
    d3 = next(d for d in stats["per_dataset"] if d["dataset"] == "d3")
    assert next(p for p in d3["pairwise"]["pairs"] if (p["a"], p["b"]) == ("good", "bad"))["winner"] == "good"
    assert d3["success_rates"]["pairs"] and all(p["more_reliable"] != "bad" for p in d3["success_rates"]["pairs"])
    assert any("PARTIAL" in line for line in report.summary)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Partial results" in md and "`bad/d3/0` failed" in md and "`good/d1/0` has not finished" in md
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    failed_rows = table[table["status"] == "failed"]
    assert len(failed_rows) == 8 * 2 and failed_rows["value"].isna().all()
    assert (table["status"] == "missing").sum() == 2


def test_cli_results(synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_id = synth
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["results", run_id, "--store", str(store.root), "--format", "png"])
    assert result.exit_code == 0, result.output
    assert "good" in result.output and (tmp_path / "expkit-results" / run_id / "report.html").is_file()
    as_json = runner.invoke(
        app, ["results", run_id, "--store", str(store.root), "--json", "-o", "j", "--format", "png"]
    )
    assert json.loads(as_json.stdout)["run"]["run_id"] == run_id
    other = runner.invoke(
        app, ["results", run_id, "--store", str(store.root), "--metric", "accuracy", "-o", "acc", "--format", "png"]
    )
    assert other.exit_code == 0 and json.loads((tmp_path / "acc" / "stats.json").read_text())["metric"] == "accuracy"
    bad = runner.invoke(app, ["results", run_id, "--store", str(store.root), "--metric", "nope"])
    assert bad.exit_code == 2 and "accuracy, loss" in bad.output
    assert runner.invoke(app, ["results", run_id, "--store", str(store.root), "--alpha", "2"]).exit_code == 2
    bmp = runner.invoke(app, ["results", run_id, "--store", str(store.root), "--format", "bmp", "-o", "bmp"])
    assert bmp.exit_code == 2 and "png, pdf, svg" in bmp.output and not (tmp_path / "bmp").exists()
    assert runner.invoke(app, ["results", "nope-xxxxx", "--store", str(store.root)]).exit_code == 2


def test_quickstart_run_then_results_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's main job: `expkit run examples/quickstart/experiment.yml && expkit results latest`."""
    example = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", example)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPKIT_STORE", raising=False)
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "quickstart/experiment.yml"])
    assert ran.exit_code == 0, ran.output
    assert "succeeded" in ran.output and "Verdict" in ran.output  # run ends with the comparison
    res = runner.invoke(app, ["results", "latest"])
    assert res.exit_code == 0, res.output
    out = next((tmp_path / "expkit-results").iterdir())
    stats = json.loads((out / "stats.json").read_text())
    sphere = next(d for d in stats["per_dataset"] if d["dataset"] == "sphere")
    es_vs_rs = next(p for p in sphere["pairwise"]["pairs"] if {p["a"], p["b"]} == {"random-search", "one-plus-one-es"})
    assert es_vs_rs["winner"] == "one-plus-one-es" and es_vs_rs["test"] == "wilcoxon"
    assert (out / "report.html").is_file() and (out / "convergence-best-step.png").is_file()

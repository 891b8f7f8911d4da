"""The first hour of a new user (issue 16): a setup mistake stops at the canary cells instead of failing every
cell, an algorithm whose first cells all fail the same way stops being scheduled, the hint after failures
matches the cause, progress without a terminal, ``results`` exits 1 with nothing to compare, ``logs`` for
every store, CLI polish (help without Python types, ``--debug`` anywhere, ``init`` names the experiment
after its directory, a short verdict after ``run``) and the report's path after ``results``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from expkit.cli import app

#: One run: writes result.json with metric 'loss'; behaviour switched by the BREAK variable (a spec env:),
#: so that "fixing" a run changes no code. Every call appends its cell to $CALLS when that is set.
SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    cell = os.environ["EXPKIT_CELL"]
    alg, ds = os.environ["EXPKIT_ALGORITHM"], os.environ["EXPKIT_DATASET"]
    if os.environ.get("CALLS"):
        with open(os.environ["CALLS"], "a") as fh:
            fh.write(cell + "\\n")
    print("hello from " + cell)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    mode = os.environ.get("BREAK", "")
    if mode == "crash-" + alg or mode == "crash-all" or (mode == "crash-d2" and ds == "d2"):
        print("boom: " + cell + " crashed", file=sys.stderr)
        sys.exit(3)
    if mode == "no-result" or (mode == "no-result-" + alg):
        sys.exit(0)
    name = "other" if mode == "metric-d2" and ds == "d2" else "loss"
    seed = int(os.environ["EXPKIT_SEED"])
    value = (seed % 1000) / 1000 + (0.3 if alg == "beta" else 0.0) + (0.6 if alg == "gamma" else 0.0)
    with open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w") as fh:
        json.dump({"metrics": {name: value}}, fh)
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: firsthour
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: {command}
      args: ["{{algorithm}}"]
      algorithms: [{algorithms}]
      datasets: [d1, d2, d3]
      replicates: {replicates}
      seed: 5
      metric: {{name: {metric}, goal: minimize}}
      env: [SLEEP, CALLS, BREAK]
""")


def write_spec(
    tmp_path: Path,
    *,
    command: str = "[python, run.py]",
    metric: str = "loss",
    script: str = SCRIPT,
    algorithms: str = "{name: alpha}, {name: beta}",
    replicates: int = 3,
) -> Path:
    (tmp_path / "run.py").write_text(script)
    spec = tmp_path / "experiment.yml"
    spec.write_text(
        SPEC.format(digest="a" * 64, command=command, metric=metric, algorithms=algorithms, replicates=replicates)
    )
    return spec


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPKIT_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("BREAK", "CALLS", "SLEEP"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def cells_in(store: Path) -> set[str]:
    """The cells with a record (run.json) in the only run of the store at ``store``."""
    return {"/".join(p.parent.parts[-3:]) for p in store.glob("*/runs/*/*/*/run.json")}


def error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


# ------------------------------------------------------------------------------------------------
# 1. canaries, early stop, hints, validate --smoke
# ------------------------------------------------------------------------------------------------

SETUP_MISTAKES = {
    # name: (spec changes, BREAK, words the one line must hold)
    "mistyped command": ({"command": "[pyhton, run.py]"}, "", ["command not found", "'pyhton'", "spec.command"]),
    "missing script": ({"command": "[python, nope.py]"}, "", ["nope.py", "spec.command"]),
    "wrong metric": ({"metric": "los"}, "", ["'los'", "spec.metric.name", "'loss'", "new run"]),
    "no result.json": ({}, "no-result", ["result.json", "run.py", "--rerun-failed"]),
    "import error": (
        {"script": "import numpyy_not_installed\n" + SCRIPT},
        "",
        ["numpyy_not_installed", "--rerun-failed"],
    ),
}


@pytest.mark.parametrize("case", sorted(SETUP_MISTAKES))
def test_a_setup_mistake_stops_at_the_canaries_with_one_line_and_the_fix(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    changes, mode, words = SETUP_MISTAKES[case]
    spec = write_spec(tmp_path, **changes)
    monkeypatch.setenv("BREAK", mode)
    result = cli("run", str(spec), "-j", "2")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "canary" in lines[0]
    # Only the canaries ran — one cell per algorithm, replicate 0 of the first dataset — and they are kept.
    assert cells_in(tmp_path / "expkit-runs") == {"alpha/d1/0", "beta/d1/0"}
    shown = json.loads(cli("show", "latest", "--json").stdout)
    assert shown["counts"]["failed"] == 2 and shown["counts"]["missing"] == 16
    assert shown["manifest"]["status"] == "failed" and "canary" in shown["manifest"]["reason"]


def test_canary_cells_are_real_cells_of_the_run_and_never_run_twice(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("CALLS", str(calls))
    result = cli("run", str(spec), "-j", "2", "--json", "--no-results")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["succeeded"] == doc["total"] == 18
    called = calls.read_text().split()
    assert len(called) == 18 and len(set(called)) == 18
    assert set(called[:2]) == {"alpha/d1/0", "beta/d1/0"}  # the canaries first


def test_an_algorithm_whose_first_cells_all_fail_alike_stops_being_scheduled_and_resume_runs_the_rest(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, replicates=4)
    monkeypatch.setenv("BREAK", "crash-alpha")  # a crash is not a setup mistake: the canary lets the run go on
    result = cli("run", str(spec), "-j", "1", "--no-results")
    assert result.exit_code == 1
    cells = cells_in(tmp_path / "expkit-runs")
    assert {c for c in cells if c.startswith("alpha/")} == {"alpha/d1/0", "alpha/d2/0", "alpha/d3/0"}
    assert len([c for c in cells if c.startswith("beta/")]) == 12
    assert re.search(r"stopped scheduling alpha: its first 3 runs all failed", result.output), result.output
    assert "9 missing" in result.output
    # The stopped algorithm's cells stay missing: after the fix a resume runs them.
    monkeypatch.delenv("BREAK")
    resumed = cli("run", "--resume", "latest", "--rerun-failed", "--json", "--no-results")
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads(resumed.stdout)
    assert doc["succeeded"] == 24 and doc["ran"] == 12


def test_no_canary_runs_everything_but_the_early_stop_still_protects_the_budget(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, command="[pyhton, run.py]")
    result = cli("run", str(spec), "-j", "1", "--no-canary")
    assert result.exit_code == 1
    cells = cells_in(tmp_path / "expkit-runs")
    assert len(cells) == 6  # the first 3 of each algorithm, then it is stopped
    assert "stopped scheduling alpha" in result.output and "stopped scheduling beta" in result.output
    # Every cell failed because of the spec: fix it and start a new run (a resume would keep the old spec).
    hint = result.output[result.output.index("stopped scheduling") :]
    assert "spec.command" in hint and "new run" in hint and "--rerun-failed" not in hint


def test_the_hint_after_failures_matches_the_cause(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, replicates=2)
    # A crash on one dataset: look at the logs, fix the script, rerun the failed cells.
    monkeypatch.setenv("BREAK", "crash-d2")
    crashed = cli("run", str(spec), "--no-results")
    assert crashed.exit_code == 1
    run_id = json.loads(cli("show", "latest", "--json").stdout)["run_id"]
    assert f"expkit logs {run_id} --failed" in crashed.output
    assert f"expkit run --resume {run_id} --rerun-failed" in crashed.output
    # The script writes another metric on d2 (the spec's metric is right: other cells have it): fix the script.
    monkeypatch.setenv("BREAK", "metric-d2")
    script_bug = cli("run", str(spec), "--no-results")
    assert script_bug.exit_code == 1
    assert "fix run.py" in script_bug.output and "--rerun-failed" in script_bug.output
    # The spec names a metric no run writes: fix the spec and start a new run; --rerun-failed cannot help.
    monkeypatch.delenv("BREAK")
    spec_bug = write_spec(tmp_path, metric="los", replicates=2)
    wrong = cli("run", str(spec_bug), "--no-results", "--no-canary")
    assert wrong.exit_code == 1
    assert "spec.metric.name" in wrong.output and "new run" in wrong.output
    assert "--rerun-failed" not in wrong.output


def test_validate_smoke_runs_the_canaries_without_creating_a_run(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, algorithms="{name: alpha}, {name: beta}, {name: gamma}")
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("CALLS", str(calls))
    ok = cli("validate", str(spec), "--smoke")
    assert ok.exit_code == 0, ok.output
    assert sorted(calls.read_text().split()) == ["alpha/d1/0", "beta/d1/0", "gamma/d1/0"]
    for alg in ("alpha", "beta", "gamma"):
        assert re.search(rf"✓ {alg}/d1/0: loss = [0-9.]+", ok.output), ok.output
    assert not (tmp_path / "expkit-runs").exists()
    bad = cli("validate", str(write_spec(tmp_path, metric="los")), "--smoke")
    assert bad.exit_code == 1
    assert "✗ alpha/d1/0" in bad.output and "spec.metric.name" in bad.output
    assert not (tmp_path / "expkit-runs").exists()


# ------------------------------------------------------------------------------------------------
# 2. progress without a terminal, --quiet
# ------------------------------------------------------------------------------------------------

_PROGRESS_LINE = re.compile(r"^progress: \d+/18 done \(\d+ failed\), \d+ running, elapsed \S+, ETA \S+", re.M)


def _expkit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "EXPKIT_STORE": str(cwd / "expkit-runs"), **env},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_plain_progress_lines_when_not_on_a_terminal_and_quiet_silences_them(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    env = {"SLEEP": "0.3", "EXPKIT_PROGRESS_SECONDS": "0.2"}
    ran = _expkit("run", str(spec), "-j", "2", "--no-results", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert _PROGRESS_LINE.search(ran.stderr), ran.stderr
    quiet = _expkit("run", str(spec), "-j", "2", "--no-results", "--quiet", cwd=tmp_path, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert not _PROGRESS_LINE.search(quiet.stderr) and "runs to do" not in quiet.stderr
    assert "18/18 succeeded" in quiet.stdout


def test_following_a_cluster_run_without_a_terminal_prints_plain_progress_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from expkit.cli.cluster import _WatchView
    from expkit.executors.argo.sync import RunStatus

    monkeypatch.setenv("EXPKIT_PROGRESS_SECONDS", "3600")
    counts = {"succeeded": 3, "failed": 1, "running": 2, "pending": 6}
    status = RunStatus("exp-abcde", "Running", [], 12, counts, {"a/d1/0": "exit code 1"})
    with _WatchView("exp-abcde", "exp-abcde") as view:
        view.update(status)
        view.update(status)  # within the interval: no second line
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("progress:")]
    assert lines == ["progress: 4/12 done (1 failed), 2 running, 6 pending, workflow Running"], err


# ------------------------------------------------------------------------------------------------
# 3. results with nothing to compare
# ------------------------------------------------------------------------------------------------


def test_results_exits_1_when_every_cell_failed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path)
    monkeypatch.setenv("BREAK", "crash-all")
    assert cli("run", str(spec), "-j", "2").exit_code == 1
    result = cli("results", "latest", "--format", "png")
    assert result.exit_code == 1, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "nothing to compare" in lines[0] and "no run succeeded" in lines[0], result.output
    assert "--failed" in lines[0]  # where to look


# ------------------------------------------------------------------------------------------------
# 4. logs for every store; show gives the log's path
# ------------------------------------------------------------------------------------------------


def _check_logs(invoke, run_id: str, *store: str) -> None:
    failed = invoke("logs", run_id, "--failed", *store)
    assert failed.exit_code == 0, failed.output
    assert "kubeconfig" not in failed.output
    headers = re.findall(r"^==> (\S+) ", failed.stdout, re.M)
    assert headers == ["alpha/d2/0", "alpha/d2/1", "beta/d2/0", "beta/d2/1"], failed.stdout
    assert "boom: alpha/d2/0 crashed" in failed.stdout
    one = invoke("logs", run_id, "--cell", "beta/d1/1", *store)
    assert one.exit_code == 0, one.output
    assert "hello from beta/d1/1" in one.stdout and "alpha" not in one.stdout
    bad = invoke("logs", run_id, "--cell", "beta/d1", *store)
    assert bad.exit_code == 2 and "ALGORITHM/DATASET/REPLICATE" in bad.output
    unknown = invoke("logs", run_id, "--cell", "zeta/d1/0", *store)
    assert unknown.exit_code == 2 and "zeta/d1/0" in unknown.output


def test_logs_and_show_on_a_local_store(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, replicates=2)
    monkeypatch.setenv("BREAK", "crash-d2")
    assert cli("run", str(spec), "--no-results").exit_code == 1
    run_id = json.loads(cli("show", "latest", "--json").stdout)["run_id"]
    _check_logs(cli, run_id)
    shown = json.loads(cli("show", run_id, "--json").stdout)
    logs = {f["cell"]: f["log"] for f in shown["failures"]}
    assert Path(logs["alpha/d2/0"]).is_file() and "boom" in Path(logs["alpha/d2/0"]).read_text()
    human = cli("show", run_id)
    assert f"log: {logs['alpha/d2/0']}" in human.output


def test_logs_on_an_s3_store(s3_server, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3server import new_bucket_name

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "cache"))
    bucket = new_bucket_name("logs")
    s3_server.store(bucket, cache_dir=tmp_path / "setup-cache", create=True)
    url = f"s3://{bucket}/lab"
    spec = write_spec(tmp_path, replicates=2)
    monkeypatch.setenv("BREAK", "crash-d2")
    assert cli("run", str(spec), "--no-results", "--store", url).exit_code == 1
    shown = json.loads(cli("show", "latest", "--json", "--store", url).stdout)
    _check_logs(cli, shown["run_id"], "--store", url)
    logs = {f["cell"]: f["log"] for f in shown["failures"]}
    assert logs["alpha/d2/0"] == f"{url}/{shown['run_id']}/runs/alpha/d2/0/log.txt"


# ------------------------------------------------------------------------------------------------
# 8. CLI polish
# ------------------------------------------------------------------------------------------------

_COMMANDS = [
    ["init"],
    ["validate"],
    ["schema"],
    ["run"],
    ["list"],
    ["show"],
    ["results"],
    ["export"],
    ["import"],
    ["compare"],
    ["reproduce"],
    ["render"],
    ["pin"],
    ["submit"],
    ["status"],
    ["stop"],
    ["retry"],
    ["logs"],
    ["cluster", "install"],
    ["cluster", "check"],
    ["cluster", "uninstall"],
]


def test_help_shows_no_python_types(cli) -> None:
    for args in [[], ["cluster"], *_COMMANDS]:
        shown = cli(*args, "--help")
        assert shown.exit_code == 0, shown.output
        for python_type in ("<bool>", "<str>", "<int>", "<float>", "<path>", "list[", "<file>", "<dir>"):
            assert python_type not in shown.output, (args, python_type, shown.output)
    run_help = cli("run", "--help").output
    assert re.search(r"--rerun-failed\s+With --resume", run_help), run_help  # a switch: no value shown
    assert re.search(r"--workers\s+-j\s+N\s", run_help), run_help  # a value: one plain word
    assert re.search(r"--format\s+FORMAT\s", cli("results", "--help").output)


def test_debug_is_accepted_after_the_subcommand(cli) -> None:
    result = cli("show", "no-such-run-12345", "--debug")
    assert result.exit_code == 2
    assert "No such option" not in result.output and "Traceback" in result.output
    before = cli("--debug", "show", "no-such-run-12345")
    assert before.exit_code == 2 and "Traceback" in before.output


def test_init_names_the_experiment_after_its_directory(cli, tmp_path: Path) -> None:
    for directory, name in (("my-study", "my-study"), ("My_Study 2", "my-study-2"), ("__", "my-experiment")):
        assert cli("init", directory).exit_code == 0
        doc = yaml.safe_load((tmp_path / directory / "experiment.yml").read_text())
        assert doc["metadata"]["name"] == name
        assert cli("validate", f"{directory}/experiment.yml").exit_code == 0
    here = tmp_path / "Paper.Study"
    here.mkdir()
    os.chdir(here)
    assert cli("init").exit_code == 0
    assert yaml.safe_load((here / "experiment.yml").read_text())["metadata"]["name"] == "paper-study"


def test_run_ends_with_a_short_verdict_and_the_results_command(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = cli("run", str(spec), "-j", "2")
    assert result.exit_code == 0, result.output
    run_id = json.loads(cli("show", "latest", "--json").stdout)["run_id"]
    assert "Verdict:" in result.stdout
    assert f"expkit results {run_id}" in result.stdout
    assert "Per dataset" not in result.stdout and "Notes:" not in result.stdout  # the full summary is results'
    assert len(result.stdout.strip().splitlines()) <= 5, result.stdout


def test_param_help_is_true_for_each_command(cli) -> None:
    assert "manifest" in cli("run", "--help").output
    for command in ("render", "validate", "submit"):
        text = cli(command, "--help").output
        assert "-p" in text
        if command != "submit":
            assert "manifest" not in text, (command, text)


# ------------------------------------------------------------------------------------------------
# 9. where the report is
# ------------------------------------------------------------------------------------------------


def test_results_prints_where_report_html_is_and_how_to_open_it(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert cli("run", str(spec), "--no-results").exit_code == 0
    result = cli("results", "latest", "--format", "png")
    assert result.exit_code == 0, result.output
    report = tmp_path / "expkit-results" / json.loads(cli("show", "latest", "--json").stdout)["run_id"]
    assert f"report: {report / 'report.html'}" in result.stdout
    assert re.search(r"open it in a browser|xdg-open|open ", result.stdout)

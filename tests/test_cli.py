"""The CLI: exit codes (0 ok, 1 failure, 2 bad input, 130 interrupted), one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from expkit.cli import app

RUN_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
    if alg == "crashy" and os.environ["EXPKIT_DATASET"] == "d2":
        print("boom: this algorithm crashes on d2", file=sys.stderr)
        sys.exit(3)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    value = (seed % 1000) / 1000 + (0.5 if alg == "worse" else 0.0)
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump({"metrics": {"loss": value}}, fh)
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: clitest
      license: MIT
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [python, run.py]
      args: ["{{algorithm}}", "{{params.budget}}"]
      params: {{budget: 3}}
      algorithms: [{algorithms}]
      datasets: [d1, d2]
      replicates: {replicates}
      seed: 7
      metric: {{name: loss, goal: minimize}}
      env: [SLEEP]
""")


def write_spec(tmp_path: Path, algorithms: str = "{name: good}, {name: worse}", replicates: int = 3) -> Path:
    (tmp_path / "run.py").write_text(RUN_SCRIPT)
    spec = tmp_path / "experiment.yml"
    spec.write_text(SPEC.format(digest="a" * 64, algorithms=algorithms, replicates=replicates))
    return spec


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPKIT_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def test_help_lists_commands_and_every_command_has_an_example(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    commands = [
        "init",
        "validate",
        "schema",
        "run",
        "list",
        "show",
        "results",
        "export",
        "import",
        "compare",
        "reproduce",
        "render",
        "pin",
        "submit",
        "status",
        "stop",
        "retry",
        "logs",
    ]
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert set(commands) <= registered
    for name in commands:
        assert name in result.output
    for args in [[name] for name in commands] + [
        ["cluster", "install"],
        ["cluster", "check"],
        ["cluster", "uninstall"],
    ]:
        sub = cli(*args, "--help")
        assert sub.exit_code == 0, sub.output
        assert "Example" in sub.output, f"expkit {' '.join(args)} --help has no example"


def test_init_then_validate_then_refuse_overwrite(cli, tmp_path: Path) -> None:
    result = cli("init", "study")
    assert result.exit_code == 0
    assert (tmp_path / "study" / "experiment.yml").is_file()
    assert cli("validate", "study/experiment.yml").exit_code == 0
    again = cli("init", "study")
    assert again.exit_code == 2
    assert "already exists" in again.output and "--force" in again.output
    assert cli("init", "study", "--force").exit_code == 0


def test_validate_bad_spec_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("replicates: 3", "replicats: 3"))
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    # Two problems: the misspelt field and the then-missing required one; each one line naming file and field.
    assert any("spec.replicats" in ln and "did you mean 'replicates'" in ln and str(spec) in ln for ln in lines)
    assert all(ln.startswith("error:") for ln in lines)


def test_validate_json_and_schema(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = cli("validate", str(spec), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["cells"] == 2 * 2 * 3
    schema = json.loads(cli("schema").stdout)
    assert "spec" in schema["properties"]
    assert schema["$defs"]["ExperimentSpec"]["additionalProperties"] is False


def test_run_success_list_show(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    result = cli("run", str(spec), "--json", "--no-results", "-j", "2")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["succeeded"] == doc["total"] == 12 and doc["failed"] == {}
    runs = json.loads(cli("list", "--json").stdout)
    assert [r["run_id"] for r in runs] == [doc["run_id"]]
    assert runs[0]["succeeded"] == 12 and runs[0]["complete"] is True
    shown = json.loads(cli("show", "latest", "--json").stdout)
    assert shown["run_id"] == doc["run_id"]
    assert shown["manifest"]["spec_sha256"] and shown["counts"]["missing"] == 0
    human = cli("show", doc["run_id"])
    assert human.exit_code == 0 and "spec sha256" in human.output


def test_run_with_failures_exits_1_and_names_them(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, algorithms="{name: good}, {name: crashy}", replicates=2)
    result = cli("run", str(spec), "--no-results")
    assert result.exit_code == 1
    assert "crashy/d2/0: exit code 3" in result.output
    assert "boom" in result.output  # the last log line explains why
    shown = json.loads(cli("show", "latest", "--json").stdout)
    assert {f["cell"] for f in shown["failures"]} == {"crashy/d2/0", "crashy/d2/1"}


def test_overrides_are_recorded_and_bad_ones_exit_2(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert cli("run", str(spec), "-p", "budget=5", "--no-results").exit_code == 0
    shown = json.loads(cli("show", "latest", "--json").stdout)
    assert shown["manifest"]["overrides"] == {"budget": 5}
    bad = cli("run", str(spec), "-p", "budgte=5")
    assert bad.exit_code == 2 and "did you mean 'budget'" in bad.output
    assert cli("run", str(spec), "-p", "novalue").exit_code == 2


def test_bad_input_exit_codes(cli, tmp_path: Path) -> None:
    assert cli("run", "nope.yml").exit_code == 2
    assert cli("run").exit_code == 2
    assert cli("show", "no-such-run-12345").exit_code == 2
    assert cli("run", "--resume", "latest").exit_code == 2  # empty store
    assert cli("run", str(write_spec(tmp_path)), "-j", "0").exit_code == 2
    result = cli("run", "--store", "ftp://x/y", str(write_spec(tmp_path)))
    assert result.exit_code == 2 and "s3://" in result.output


def test_resume_of_a_complete_run_runs_nothing(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    first = json.loads(cli("run", str(spec), "--json", "--no-results").stdout)
    again = cli("run", "--resume", first["run_id"], "--json", "--no-results")
    assert again.exit_code == 0
    doc = json.loads(again.stdout)
    assert doc["ran"] == 0 and doc["skipped"] == 12 and doc["succeeded"] == 12


def _expkit(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    proc = _expkit("--version", cwd=tmp_path)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stdout.startswith("expkit ")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_and_resume_completes(tmp_path: Path, sig: int) -> None:
    spec = write_spec(tmp_path, replicates=4)
    proc = _expkit("run", str(spec), "-j", "2", "--no-results", cwd=tmp_path, env={"SLEEP": "0.4"})
    store = tmp_path / "expkit-runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(store.glob("*/runs/*/*/*/run.json")):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr and "Traceback" not in stderr
    run_id = next(store.iterdir()).name
    cells = list(store.glob(f"{run_id}/runs/*/*/*"))
    assert all((c / "run.json").is_file() and (c / "result.json").is_file() for c in cells)
    done_before = len(cells)
    assert 0 < done_before < 16
    resumed = _expkit("run", "--resume", run_id, "--json", "--no-results", cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    doc = json.loads(stdout)
    assert doc["skipped"] == done_before and doc["ran"] == 16 - done_before and doc["succeeded"] == 16


def test_an_interrupt_the_runner_did_not_catch_still_says_how_to_resume(capfd: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that reaches the CLI as a bare KeyboardInterrupt (between the canary cells and the fan-out,
    say) once a run exists: exit 130 and the resume command, as for an interrupt the runner caught."""
    import typer

    from expkit.cli import common

    @common.handle_errors
    def command() -> None:
        common._state["run_id"] = "20261207-000000-abcd"
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exc:
        command()
    assert exc.value.exit_code == 130
    assert "expkit run --resume 20261207-000000-abcd" in capfd.readouterr().err
    assert "run_id" not in common._state  # a later command in the same process does not inherit it


def test_export_import_compare_exit_codes(cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, replicates=6)
    spec.write_text(spec.read_text().replace("seed: 7", "seed: 7\n  paired: true"))
    run_id = json.loads(cli("run", str(spec), "--json", "--no-results").stdout)["run_id"]
    exported = cli("export", run_id, "-o", "bundle.zip", "--no-report")
    assert exported.exit_code == 0, exported.output
    assert cli("export", run_id, "-o", "bundle.txt").exit_code == 2
    imported = cli("import", "bundle.zip", "--store", "other-store")
    assert imported.exit_code == 0 and run_id in imported.output
    # The same runs compared with themselves: reproduced (exit 0); JSON verdict for scripts.
    same = cli("compare", "bundle.zip", run_id, "--json", "-o", "cmp")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["verdict"] == "reproduced"
    assert cli("compare", "missing.zip", run_id).exit_code == 2
    assert cli("import", "nope.zip").exit_code == 2

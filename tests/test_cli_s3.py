"""The CLI on an S3 store (a real SeaweedFS, or EXPKIT_TEST_S3_ENDPOINT): run, list, show, results;
a missing bucket, wrong credentials and an unreachable endpoint are one line each with exit 1."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from s3server import new_bucket_name
from test_cli import write_spec
from typer.testing import CliRunner

from expkit.cli import app


@pytest.fixture
def s3_cli(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPKIT_S3_ATTEMPTS", "2")
    monkeypatch.setenv("EXPKIT_S3_BACKOFF", "0.05")
    bucket = new_bucket_name("cli")
    s3_server.store(bucket, cache_dir=tmp_path / "setup-cache", create=True)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke, f"s3://{bucket}/lab", s3_server


def test_run_list_show_results_on_s3(s3_cli, tmp_path: Path) -> None:
    invoke, url, _ = s3_cli
    spec = write_spec(tmp_path)
    ran = invoke("run", str(spec), "--store", url, "--json", "--no-results")
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.stdout)["run_id"]
    assert not (tmp_path / "expkit-runs").exists()  # nothing went to the default local store
    listed = json.loads(invoke("list", "--store", url, "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id] and listed[0]["succeeded"] == 12
    shown = json.loads(invoke("show", "latest", "--store", url, "--json").stdout)
    assert shown["counts"] == {"total": 12, "succeeded": 12, "failed": 0, "missing": 0}
    res = invoke("results", run_id, "--store", url, "-o", "out", "--format", "png")
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["run_id"] == run_id and stats["run"]["partial"] is False


def test_s3_errors_are_one_line_exit_1(s3_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke, url, server = s3_cli
    missing = invoke("list", "--store", f"s3://{new_bucket_name('gone')}/x")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert len([ln for ln in missing.output.splitlines() if ln.strip()]) == 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    wrong = invoke("list", "--store", url)
    assert wrong.exit_code == 1 and "AWS_ACCESS_KEY_ID" in wrong.output
    assert "not-the-secret-0123456789" not in wrong.output and server.secret_key not in wrong.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EXPKIT_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    down = invoke("list", "--store", url)
    assert down.exit_code == 1 and f"127.0.0.1:{port}" in down.output and "Traceback" not in down.output

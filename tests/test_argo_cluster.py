"""``expkit submit --watch`` -> ``expkit results`` against a REAL Kubernetes cluster with Argo Workflows.

Marked ``cluster`` and skipped unless ``EXPKIT_TEST_KUBECONFIG`` and ``EXPKIT_TEST_STORE`` are set (see
docs/argo.md, "Testing against a real cluster"):

* ``EXPKIT_TEST_KUBECONFIG`` — a kubeconfig for the cluster (``EXPKIT_TEST_CONTEXT`` picks a context,
  ``EXPKIT_TEST_NAMESPACE`` the namespace; defaults: the current context and its namespace);
* ``EXPKIT_TEST_STORE`` — ``s3://BUCKET/PREFIX`` on the bucket the namespace's artifact repository
  (ConfigMap ``artifact-repositories``) writes to, reachable from this machine with
  ``EXPKIT_S3_ENDPOINT`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or the
  ``EXPKIT_TEST_S3_*`` variables of the S3 tests);
* ``EXPKIT_TEST_IMAGE`` — a Python image pinned by digest that the nodes can pull (default: the
  quickstart's ``python:3.12-slim`` digest); ``EXPKIT_TEST_SERVICE_ACCOUNT`` — the workflow pods'
  service account (default: the namespace's default one).

The scenario is the one the test double runs in ``test_argo_submit.py``: 2 algorithms x 2 datasets x 2
replicates, one cell failing on purpose; the checks are the same, from the spec and the local seeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_argo_submit import _rows, run_id_of, write_spec
from typer.testing import CliRunner

from expkit.cli import app
from expkit.runs.matrix import derive_seed
from expkit.stores import open_store
from expkit.stores.base import cell_prefix

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REQUIRED = ("EXPKIT_TEST_KUBECONFIG", "EXPKIT_TEST_STORE")
DEFAULT_IMAGE = "python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea"


@pytest.fixture
def real_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    missing = [v for v in REQUIRED if not os.environ.get(v)]
    if missing:
        pytest.skip(
            f"no real cluster configured: set {', '.join(missing)} (see docs/argo.md, 'Testing against a real cluster')"
        )
    env = {
        "KUBECONFIG": os.environ["EXPKIT_TEST_KUBECONFIG"],
        "EXPKIT_STORE": os.environ["EXPKIT_TEST_STORE"],
        "EXPKIT_CACHE_DIR": str(tmp_path / "cache"),
    }
    for src, dst in (
        ("EXPKIT_TEST_S3_ENDPOINT", "EXPKIT_S3_ENDPOINT"),
        ("EXPKIT_TEST_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        ("EXPKIT_TEST_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        if os.environ.get(src):
            env[dst] = os.environ[src]
    if os.environ.get("EXPKIT_TEST_CONTEXT"):
        env["EXPKIT_KUBE_CONTEXT"] = os.environ["EXPKIT_TEST_CONTEXT"]
    if os.environ.get("EXPKIT_TEST_NAMESPACE"):
        env["EXPKIT_NAMESPACE"] = os.environ["EXPKIT_TEST_NAMESPACE"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_submit_watch_then_results_on_a_real_cluster(real_cluster: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    extra = (
        {"kubernetes": {"serviceAccountName": os.environ["EXPKIT_TEST_SERVICE_ACCOUNT"]}}
        if os.environ.get("EXPKIT_TEST_SERVICE_ACCOUNT")
        else {}
    )
    spec = write_spec(
        tmp_path / "study",
        name="argocluster",
        image=os.environ.get("EXPKIT_TEST_IMAGE", DEFAULT_IMAGE),
        params={"fail": ["worse/d2/1"]},
        **extra,
    )
    submitted = invoke("submit", str(spec), "--watch")
    assert submitted.exit_code == 1, submitted.output  # one cell fails on purpose: the workflow fails
    run_id = run_id_of(submitted.output, "argocluster")
    status = json.loads(invoke("status", run_id, "--json").stdout)
    assert status["phase"] == "Failed" and status["counts"]["succeeded"] == 7 and status["counts"]["failed"] == 1
    result = invoke("results", run_id, "-o", str(tmp_path / "out"), "--format", "png")
    assert result.exit_code == 0, result.output
    rows = {(r["algorithm"], r["dataset"], r["replicate"]): r for r in _rows(tmp_path / "out") if r["metric"] == "loss"}
    assert len(rows) == 8
    failed = rows[("worse", "d2", "1")]
    assert failed["status"] == "failed" and "exit code 3" in failed["reason"] and failed["attempts"] == "2"
    offsets = {"good": 0.0, "worse": 0.5}
    for (alg, ds, rep), row in rows.items():
        assert row["node"]  # the Kubernetes node the cell ran on
        if (alg, ds, rep) == ("worse", "d2", "1"):
            continue
        seed = derive_seed(11, ds, int(rep))
        assert row["status"] == "succeeded" and row["seed"] == str(seed)
        assert float(row["value"]) == pytest.approx(seed % 1000 / 1000 + offsets[alg])
        if alg == "worse":
            assert float(row["duration_s"]) >= 1.0
    store = open_store(real_cluster["EXPKIT_STORE"])
    assert store.get(cell_prefix(run_id, "good/d1/0") + "extra.txt") == b"extra output of good/d1/0"
    logs = invoke("logs", run_id, "-a", "worse", "-d", "d2", "-r", "1")
    assert logs.exit_code == 0 and "boom: cell worse/d2/1 failed on purpose" in logs.stdout

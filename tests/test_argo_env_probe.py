"""A cluster run records what its image reports from inside: the environment probe step (issue 15, item 2).

End to end in the Kubernetes test double (``tests/k8s_double.py``), whose "kubelet" runs each container's
command locally — ``python``/``python3`` being this interpreter, so the expected values come from this
process (``platform``, ``importlib.metadata``), never from the code under test.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_double import K8sDouble
from s3server import S3Endpoint, new_bucket_name
from test_argo_shards import spec_doc, write
from test_argo_submit import Cluster, _cluster

from expkit.executors.argo.workflows import render_submission
from expkit.spec import load_spec_text

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def double(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[K8sDouble, str]]:
    bucket = new_bucket_name("probe")
    root = s3_server.store(bucket, "", cache_dir=tmp_path_factory.mktemp("double-cache"), create=True)
    with K8sDouble(artifacts=root, scratch=tmp_path_factory.mktemp("double")) as dbl:
        yield dbl, bucket
    assert dbl.errors == [], dbl.errors


@pytest.fixture
def cluster(double: tuple[K8sDouble, str], s3_server: S3Endpoint, tmp_path: Path) -> Cluster:
    return _cluster(double, s3_server, tmp_path)


def _templates(doc: dict[str, Any]) -> list[str]:
    return [t["name"] for t in doc["spec"]["templates"]]


def test_the_probe_is_one_step_of_a_first_submission_beside_the_cells() -> None:
    doc = spec_doc("probe", replicates=4, kubernetes={"maxCellsPerWorkflow": 8})
    loaded = load_spec_text(yaml.safe_dump(doc))
    planned = render_submission(loaded, "probe-abcde")
    assert len(planned) == 2  # 16 cells, 8 per workflow
    assert "probe-environment" in _templates(planned[0].doc)
    assert "probe-environment" not in _templates(planned[1].doc)  # the same image: probed once
    main = planned[0].doc["spec"]["templates"][0]["dag"]["tasks"]
    probe = next(t for t in main if t["name"] == "probe-environment")
    assert probe["continueOn"] == {"failed": True} and "dependencies" not in probe  # beside the cells
    assert all("probe-environment" not in (t.get("dependencies") or []) for t in main)
    step = next(t for t in planned[0].doc["spec"]["templates"] if t["name"] == "probe-environment")
    assert step["container"]["command"][:2] == ["python3", "-c"]  # the image's Python (sh cells: python3)
    assert step["outputs"]["artifacts"][0]["s3"]["key"] == "probe-abcde/environment.json"
    retry = render_submission(loaded, "probe-abcde", cells=["a0/d0/1"], retry=True)
    assert "probe-environment" not in _templates(retry[0].doc)  # a retry runs the same image again


def test_a_cluster_run_records_what_its_image_reports(cluster: Cluster) -> None:
    path = write(cluster.tmp / "study", spec_doc("probe", replicates=2))
    result = cluster.invoke("submit", str(path), "--watch", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    store = cluster.store()
    reported = json.loads(store.get(f"{run_id}/environment.json"))  # written by the step, inside the "image"
    assert reported["version"] == platform.python_version()
    env = store.manifest(run_id)["environment"]
    assert env["source"] == "image" and env["image"] == spec_doc()["spec"]["image"]
    assert env["python"]["version"] == platform.python_version()
    assert env["python"]["implementation"] == platform.python_implementation()
    assert env["packages"]["pytest"] == importlib.metadata.version("pytest")
    assert env["libc"] == " ".join(platform.libc_ver()).strip()
    assert env["digest"].startswith("sha256:") and "probe_error" not in env
    shown = cluster.invoke("show", run_id)
    assert shown.exit_code == 0, shown.output
    line = next(ln for ln in shown.stdout.splitlines() if ln.strip().startswith("environment"))
    assert f"Python {platform.python_version()} ({platform.python_implementation()})" in line
    assert f"{len(env['packages'])} packages" in line
    # The probe is no cell: the counts and the cells are those of the matrix.
    assert store.manifest(run_id)["counts"] == {"total": 8, "succeeded": 8, "failed": 0, "missing": 0}


def test_an_image_without_python_is_recorded_and_fails_nothing(cluster: Cluster) -> None:
    doc = spec_doc("probe", replicates=1)
    image = doc["spec"]["image"]
    cluster.double.images_without_python.add(image)
    try:
        path = write(cluster.tmp / "study", doc)
        result = cluster.invoke("submit", str(path), "--watch", "--json")
    finally:
        cluster.double.images_without_python.discard(image)
    assert result.exit_code == 0, result.output  # the cells (sh) succeeded; the failed probe fails nothing
    run_id = json.loads(result.stdout)["run_id"]
    assert json.loads(result.stdout)["phase"] == "Succeeded"
    env = cluster.store().manifest(run_id)["environment"]
    assert env["source"] == "image" and env["python"] is None and env["packages"] is None
    assert "python3" in env["probe_error"] and "could not be run" in env["probe_error"]
    shown = cluster.invoke("show", run_id)
    assert shown.exit_code == 0 and "probe failed: the image's Python (python3) could not be run" in shown.stdout

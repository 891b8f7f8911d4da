"""What every cell used (issue 15, item 3): CPU time and peak memory from the run's rusage, wall time, in
run.json, results.csv, resources.csv and the report; cluster cells' requests, limits and node."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from expkit.analysis.report import build_report
from expkit.executors.argo.render import render_workflow
from expkit.executors.argo.status import cell_records_from_workflow
from expkit.runner import start_run
from expkit.runs.records import cell_record_problem
from expkit.spec import load_spec_text
from expkit.stores import FileStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="rusage is POSIX")

MIB = 2**20
BALLAST = 400 * MIB

# "burn" spins on the CPU for 1 s of its own CPU time; "alloc" touches 200 MiB; "idle" sleeps 0.5 s.
SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    alg = os.environ["EXPKIT_ALGORITHM"]
    if alg == "burn":
        x = 0
        while time.process_time() < 1.0:
            x += 1
    elif alg == "alloc":
        block = bytearray(200 * 2**20)
        for i in range(0, len(block), 4096):  # touch every page: an untouched calloc costs no memory
            block[i] = 1
    else:
        time.sleep(0.5)
    json.dump({"metrics": {"loss": 1.0}}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: res}
    spec:
      image: python:3.12-slim
      command: [python, run.py]
      algorithms: [{name: burn}, {name: alloc}, {name: idle}]
      datasets: [d1]
      replicates: 1
      metric: {name: loss, goal: minimize}
      resources: {cpu: 1, memory: 1Gi}
""")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStore, str, Path]:
    root = tmp_path_factory.mktemp("resources")
    (root / "run.py").write_text(SCRIPT)
    (root / "experiment.yml").write_text(SPEC)
    store = FileStore(root / "store")
    # expkit's own memory must not count as the cells': make this process big while they run.
    ballast = bytearray(BALLAST)
    ballast[::4096] = b"\1" * len(range(0, BALLAST, 4096))
    outcome = start_run(root / "experiment.yml", store, workers=1)
    del ballast
    assert outcome.succeeded == 3, outcome
    return store, outcome.run_id, root


def _record(store: FileStore, run_id: str, alg: str) -> dict:
    record = json.loads(store.get(f"{run_id}/runs/{alg}/d1/0/run.json"))
    assert cell_record_problem(record) is None
    return record


def test_a_cell_burning_one_second_of_cpu_reports_about_one_second(measured) -> None:
    store, run_id, _ = measured
    res = _record(store, run_id, "burn")["resources"]
    assert 0.8 <= res["cpu_s"] <= 1.5, res
    assert res["cpu_s"] == pytest.approx(res["cpu_user_s"] + res["cpu_system_s"], abs=1e-3)
    assert res["wall_s"] >= res["cpu_s"] * 0.9  # one thread: no more CPU than wall time
    idle = _record(store, run_id, "idle")["resources"]
    assert idle["cpu_s"] < 0.5 <= idle["wall_s"], idle  # sleeping costs wall time, not CPU time


def test_a_cell_touching_200_mib_reports_at_least_that_peak_memory(measured) -> None:
    store, run_id, _ = measured
    record = _record(store, run_id, "alloc")
    assert record["resources"]["max_rss_bytes"] >= 200 * MIB, record["resources"]
    assert _record(store, run_id, "idle")["resources"]["max_rss_bytes"] < 200 * MIB
    (attempt,) = record["attempt_history"]  # each attempt has its own figures
    assert attempt["max_rss_bytes"] == record["resources"]["max_rss_bytes"] and attempt["cpu_s"] >= 0


def test_peak_memory_is_the_cells_own_not_that_of_expkit(measured) -> None:
    # Linux counts the image a command is exec'ed from into its ru_maxrss: started straight from expkit
    # (400 MiB of ballast here) a sleeping cell would report more than 400 MiB.
    store, run_id, _ = measured
    idle = _record(store, run_id, "idle")["resources"]["max_rss_bytes"]
    assert idle < 100 * MIB, idle
    alloc = _record(store, run_id, "alloc")["resources"]["max_rss_bytes"]
    assert 200 * MIB <= alloc < BALLAST, alloc


def test_results_csv_resources_csv_and_the_report_show_them(measured, tmp_path: Path) -> None:
    store, run_id, _ = measured
    report = build_report(store, run_id, out_dir=tmp_path / "out", formats=("png",))
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = {r["algorithm"]: r for r in csv.DictReader(fh)}
    assert {"wall_s", "cpu_s", "max_rss_mb"} <= set(rows["burn"])
    assert 0.8 <= float(rows["burn"]["cpu_s"]) <= 1.5
    assert float(rows["alloc"]["max_rss_mb"]) >= 200 * MIB / 1e6
    with open(tmp_path / "out" / "resources.csv", newline="") as fh:
        per_alg = {r["algorithm"]: r for r in csv.DictReader(fh)}
    assert list(per_alg) == ["burn", "alloc", "idle"] and per_alg["burn"]["cells"] == "1"
    assert 0.8 <= float(per_alg["burn"]["cpu_s_median"]) <= 1.5
    assert float(per_alg["alloc"]["max_rss_mb_max"]) >= 200 * MIB / 1e6
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Time and memory" in md and "Every run was given 1 CPU, 1Gi memory" in md
    burn_line = next(line for line in md.splitlines() if line.startswith("| burn |"))
    assert 0.8 <= float(burn_line.split("|")[5]) <= 1.5  # the CPU s (median) column
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Time and memory</h2>" in html and "<td>alloc</td>" in html
    assert tmp_path / "out" / "resources.csv" in report.files


def test_cluster_cells_record_requests_limits_and_node() -> None:
    doc = yaml.safe_load(SPEC)
    doc["spec"]["image"] = "python:3.12-slim@sha256:" + "a" * 64
    doc["spec"]["resources"] = {"cpu": "500m", "memory": "2Gi"}
    wf = render_workflow(load_spec_text(yaml.safe_dump(doc)), "res-abcde")
    cell_template = next(t["name"] for t in wf["spec"]["templates"] if "container" in t and t.get("inputs"))
    pod = {
        "id": "res-abcde-1",
        "name": "res-abcde.ds-d1.alg-burn(0:0)",
        "type": "Pod",
        "phase": "Succeeded",
        "templateName": cell_template,
        "startedAt": "2024-05-01T10:00:00Z",
        "finishedAt": "2024-05-01T10:00:12Z",
        "hostNodeName": "worker-3",
        "outputs": {"exitCode": "0"},
        "inputs": {
            "parameters": [
                {"name": "algorithm", "value": "burn"},
                {"name": "dataset", "value": "d1"},
                {"name": "replicate", "value": "0"},
                {"name": "datasetSeed", "value": "1"},
                {"name": "params", "value": "{}"},
            ]
        },
    }
    wf["status"] = {"phase": "Succeeded", "nodes": {pod["id"]: pod}}
    record = cell_records_from_workflow(wf)["burn/d1/0"]
    res = record["resources"]
    assert res["requested"] == {"cpu": "500m", "memory": "2Gi"} == res["limits"]
    assert res["node"] == "worker-3" and res["wall_s"] == 12.0 and res["cpu_s"] is None
    assert cell_record_problem({**record, "status": "succeeded"}) is None

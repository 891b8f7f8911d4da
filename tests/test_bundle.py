"""Paper bundles: export (deterministic zip, RO-Crate metadata) and import (validation, idempotence)."""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import warnings
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from expkit.cli import app
from expkit.core.errors import InputError
from expkit.reproduce.bundle import DEFAULT_MAX_BYTES, export_run, import_bundle, read_bundle
from expkit.runner import start_run
from expkit.runs.matrix import build_matrix
from expkit.spec import load_spec_text
from expkit.stores import FileStore

SCRIPT = textwrap.dedent("""
    import json, os, random
    alg = os.environ["EXPKIT_ALGORITHM"]
    rng = random.Random(int(os.environ["EXPKIT_SEED"]) * 31 + len(alg))
    loss = rng.gauss({"good": 1.0, "twin": 1.0, "bad": 2.5}[alg], 0.3)
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    json.dump({"metrics": {"loss": loss}, "trajectory": [{"step": 1, "loss": loss + 1}, {"step": 2, "loss": loss}]},
              open(os.path.join(out, "result.json"), "w"))
    open(os.path.join(out, "extra.txt"), "w").write("an extra output\\n")
    print("done", alg)
""")

SPEC = textwrap.dedent(
    """
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: bund
      description: Bundle round trip.
      paper: {title: A paper, doi: 10.1234/abcd}
      license: CC-BY-4.0
    spec:
      image: python:3.12-slim@sha256:"""
    + "c" * 64
    + """
      command: [python, run.py]
      algorithms: [{name: good}, {name: twin}, {name: bad}]
      datasets: [d1, d2, d3]
      replicates: 4
      seed: 5
      metric: {name: loss, goal: minimize}
"""
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStore, str, Path, Path]:
    root = tmp_path_factory.mktemp("bundle")
    (root / "run.py").write_text(SCRIPT)
    (root / "experiment.yml").write_text(SPEC)
    store = FileStore(root / "store")
    run_id = start_run(root / "experiment.yml", store, workers=2).run_id
    first = export_run(store, run_id, root / "first.zip")
    second = export_run(store, run_id, root / "second.zip")
    return store, run_id, first, second


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def test_export_is_byte_identical_and_normalised(exported) -> None:
    _, _, first, second = exported
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and len(names) == len(set(names))
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_bundle_holds_spec_manifest_cells_and_results(exported) -> None:
    store, run_id, first, _ = exported
    entries = _entries(first)
    assert entries["experiment.yml"] == store.get(f"{run_id}/experiment.yml")
    assert entries["manifest.json"] == store.get(f"{run_id}/manifest.json")
    experiment = load_spec_text(entries["experiment.yml"].decode()).experiment
    for cell in build_matrix(experiment):
        for name in ("result.json", "run.json", "log.txt", "extra.txt"):
            key = f"runs/{cell.key}/{name}"
            assert entries[key] == store.get(f"{run_id}/{key}")
    for name in ("stats.json", "results.csv", "summary.csv", "table.tex", "report.md", "boxplots-loss.png"):
        assert f"results/{name}" in entries
    readme = entries["README.md"].decode()
    assert (
        "expkit reproduce bundle.zip" in readme and "expkit import" in readme and f"expkit results {run_id}" in readme
    )
    # The run code (the files the manifest lists, as they were) and the packages with exact versions.
    manifest = json.loads(entries["manifest.json"])
    assert {f"code/{f['path']}" for f in manifest["code"]["files"]} == {n for n in entries if n.startswith("code/")}
    assert entries["code/run.py"] == SCRIPT.encode() and "code/store/manifest.json" not in entries
    requirements = entries["requirements.txt"].decode()
    assert "pytest==" in requirements and "# Python " in requirements and "CITATION.cff" in entries


def test_ro_crate_metadata(exported) -> None:
    _, run_id, first, _ = exported
    entries = _entries(first)
    crate = json.loads(entries["ro-crate-metadata.json"])
    assert crate["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    graph = {e["@id"]: e for e in crate["@graph"]}
    assert len(graph) == len(crate["@graph"])  # ids are unique
    descriptor = graph["ro-crate-metadata.json"]
    assert descriptor["conformsTo"] == {"@id": "https://w3id.org/ro/crate/1.1"} and descriptor["about"] == {"@id": "./"}
    root = graph["./"]
    assert root["@type"] == "Dataset" and root["name"] and root["description"] and len(root["datePublished"]) == 10
    for part in root["hasPart"]:  # every part is described, and exists in the zip (directories as prefixes)
        assert part["@id"] in graph
        assert part["@id"] in entries or any(n.startswith(part["@id"]) for n in entries)
    files = [e for e in crate["@graph"] if "File" in (e["@type"] if isinstance(e["@type"], list) else [e["@type"]])]
    assert len(files) >= 5
    for entity in files:
        data = entries[entity["@id"]]
        assert entity["sha256"] == hashlib.sha256(data).hexdigest()
        assert entity["contentSize"] == str(len(data)) and entity["encodingFormat"]
    assert root["license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
    assert graph["https://spdx.org/licenses/CC-BY-4.0"]["@type"] == "CreativeWork"
    assert root["conformsTo"] == {"@id": "https://w3id.org/ro/wfrun/process/0.5"}
    # One CreateAction per algorithm: the run code on the spec, its runs as the result, in ISO 8601 times.
    program = graph["#program"]  # no metadata.repository: no URL for the program
    assert program["@type"] == "SoftwareApplication" and program["version"].startswith("sha256:")
    for alg in ("good", "twin", "bad"):
        action = graph[f"#run-{run_id}-{alg}"]
        assert action["@type"] == "CreateAction" and action["instrument"] == {"@id": "#program"}
        assert action["object"] == {"@id": "experiment.yml"} and action["result"] == {"@id": f"runs/{alg}/"}
        assert action["actionStatus"] == "http://schema.org/CompletedActionStatus"
        assert action["startTime"].endswith("+00:00") and action["startTime"] <= action["endTime"]
        assert {"@id": f"runs/{alg}/"} in graph["runs/"]["hasPart"]
    organize = graph[f"#run-{run_id}"]
    assert organize["@type"] == "OrganizeAction" and graph[organize["instrument"]["@id"]]["name"] == "expkit"
    assert "#image" not in graph  # a local run did not use the image
    assert root["citation"] == {"@id": "https://doi.org/10.1234/abcd"} and "https://doi.org/10.1234/abcd" in graph


def test_import_then_results_gives_the_same_stats(exported, tmp_path: Path) -> None:
    _, run_id, first, _ = exported
    target = FileStore(tmp_path / "other")
    assert import_bundle(first, target) == run_id
    result = CliRunner().invoke(
        app, ["results", run_id, "--store", str(tmp_path / "other"), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "stats.json").read_bytes() == _entries(first)["results/stats.json"]
    # Re-exporting the imported run gives the very same bundle.
    assert export_run(target, run_id, tmp_path / "again.zip").read_bytes() == first.read_bytes()


def test_import_is_idempotent_and_refuses_different_content(exported, tmp_path: Path) -> None:
    _, run_id, first, _ = exported
    target = FileStore(tmp_path / "s")
    import_bundle(first, target)
    before = {k: target.get(k) for k in target.list(run_id)}
    assert import_bundle(first, target) == run_id
    assert {k: target.get(k) for k in target.list(run_id)} == before
    key = f"{run_id}/runs/good/d1/0/result.json"
    target.put(key, b'{"metrics": {"loss": 0.0}}')
    with pytest.raises(InputError, match="already exists .* different content"):
        import_bundle(first, target)
    assert target.get(key) == b'{"metrics": {"loss": 0.0}}'


def _rebuilt(
    first: Path, tmp_path: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]], *, drop: tuple[str, ...] = ()
) -> Path:
    """The valid bundle plus ``extra`` entries (written as given), minus ``drop``."""
    out = tmp_path / "bad.zip"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in _entries(first).items():
                if name not in drop:
                    zf.writestr(name, data)
            for info, data in extra:
                zf.writestr(info, data)
    out.write_bytes(buf.getvalue())
    return out


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "entry, match",
    [
        ("../evil", "unsafe path"),
        ("/etc/evil", "unsafe path"),
        ("runs/good/d1/0/../../../../../evil", "unsafe path"),
        ("runs\\good\\evil", "unsafe path"),
        ("runs/good/d1/.staging/x", "store-internal"),
        ("manifest.json", "appears twice"),
        ("notes.txt", "unexpected entry"),
        ("runs/nope/d1/0/result.json", "not a file of a cell"),
        ("runs/good/d1/9/result.json", "not a file of a cell"),
    ],
)
def test_unsafe_or_foreign_entries_are_rejected_before_writing(
    exported, tmp_path: Path, entry: str, match: str
) -> None:
    _, _, first, _ = exported
    bad = _rebuilt(first, tmp_path, [(entry, b"x")])
    target = FileStore(tmp_path / "s")
    with pytest.raises(InputError, match=match):
        import_bundle(bad, target)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*"))


def test_symlink_entry_is_rejected(exported, tmp_path: Path) -> None:
    _, _, first, _ = exported
    bad = _rebuilt(first, tmp_path, [(_symlink("runs/good/d1/0/link"), b"/etc/passwd")])
    with pytest.raises(InputError, match="symbolic link"):
        import_bundle(bad, FileStore(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_unfinished_cell_and_missing_manifest_are_rejected(exported, tmp_path: Path) -> None:
    _, _, first, _ = exported
    bad = _rebuilt(first, tmp_path, [], drop=("runs/good/d1/0/run.json",))
    with pytest.raises(InputError, match="cell good/d1/0 has no run.json"):
        import_bundle(bad, FileStore(tmp_path / "s"))
    bad = _rebuilt(first, tmp_path, [], drop=("manifest.json",))
    with pytest.raises(InputError, match="no manifest.json"):
        import_bundle(bad, FileStore(tmp_path / "s"))
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a readable zip"):
        import_bundle(tmp_path / "junk.zip", FileStore(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_size_cap_rejects_oversized_bundles(exported, tmp_path: Path) -> None:
    _, _, first, _ = exported
    total = sum(i.file_size for i in zipfile.ZipFile(first).infolist())
    assert DEFAULT_MAX_BYTES == 2 * 1024**3
    with pytest.raises(InputError, match="more than"):
        import_bundle(first, FileStore(tmp_path / "s"), max_bytes=total - 1)
    # A highly compressible member (a zip bomb in miniature) over the cap is refused from its header.
    bomb = _rebuilt(first, tmp_path, [("runs/good/d1/0/big.bin", b"\0" * 5_000_000)])
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(InputError, match="over the .*limit|more than"):
        import_bundle(bomb, FileStore(tmp_path / "s"), max_bytes=4_000_000)
    assert not (tmp_path / "s").exists()
    assert read_bundle(first, max_bytes=total).run_id  # exactly at the cap is fine


def test_export_refuses_a_bad_destination(exported, tmp_path: Path) -> None:
    store, run_id, _, _ = exported
    with pytest.raises(InputError, match="does not exist"):
        export_run(store, run_id, tmp_path / "missing" / "b.zip")
    with pytest.raises(InputError, match=r"\.zip"):
        export_run(store, run_id, tmp_path / "b.tar")


def test_import_into_s3_and_export_back(exported, s3_store, tmp_path: Path) -> None:
    store, run_id, first, _ = exported
    assert import_bundle(first, s3_store) == run_id
    assert import_bundle(first, s3_store) == run_id  # idempotent on S3 too
    assert s3_store.completed_cells(run_id) == store.completed_cells(run_id)
    from_s3 = export_run(s3_store, run_id, tmp_path / "s3.zip", include_report=False)
    from_fs = export_run(store, run_id, tmp_path / "fs.zip", include_report=False)
    assert from_s3.read_bytes() == from_fs.read_bytes()

"""Self-contained bundles that standard tools accept (issue 15, items 5 and 6).

* ``ro-crate-metadata.json`` passes the RO-Crate validator (``roc-validator``) for the ``ro-crate-1.1``
  and ``process-run-crate-0.5`` profiles with no issue up to RECOMMENDED when the spec has the metadata,
  and with only the issues whose field ``expkit export`` names when it lacks them — validated offline,
  from an HTTP cache seeded with the RO-Crate context the ``rocrate`` package ships (no network);
* ``CITATION.cff`` (the bundle's and expkit's own) is valid Citation File Format 1.2.0;
* the bundle holds the run code and the exact package versions; ``expkit reproduce BUNDLE`` in a fresh
  directory re-runs from the bundle alone, checking the code file by file;
* the spec's ``metadata.license`` (SPDX), ``metadata.authors`` and ``metadata.repository``.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from expkit.core.errors import InputError, SpecError
from expkit.reproduce.bundle import export_run, read_bundle
from expkit.reproduce.bundle_code import materialize_code
from expkit.runner import start_run
from expkit.spec import load_spec_text
from expkit.stores import FileStore

REPO = Path(__file__).resolve().parent.parent
CFF_SCHEMA = json.loads((REPO / "tests" / "cff" / "schema-1.2.0.json").read_text())
RO_CRATE_CONTEXT = "https://w3id.org/ro/crate/1.1/context"

SCRIPT = textwrap.dedent("""
    import json, os
    seed = int(os.environ["EXPKIT_SEED"])
    shift = {"good": 0.0, "bad": 1.0}[os.environ["EXPKIT_ALGORITHM"]]
    with open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w") as fh:
        json.dump({"metrics": {"loss": (seed % 997) / 997 + shift}}, fh)
""")

FULL_METADATA = """
  license: CC-BY-4.0
  repository: https://example.org/lab/crated
  paper: {title: A paper, doi: 10.1234/abcd}
  authors:
    - {name: "Doe, Jane", orcid: 0000-0002-1825-0097, affiliation: {name: Example University, url: https://ror.org/02mhbdp94}}
    - {name: Richard Roe, affiliation: {name: Example University, url: https://ror.org/02mhbdp94}}
"""


def spec_text(metadata: str = FULL_METADATA, replicates: int = 6) -> str:
    return (
        textwrap.dedent("""
        apiVersion: expkit/v1
        kind: Experiment
        metadata:
          name: crated
          description: Two algorithms, one dataset.
        """)
        + metadata.lstrip("\n")
        + textwrap.dedent(f"""
        spec:
          image: python:3.12-slim@sha256:{"c" * 64}
          command: [python, run.py]
          algorithms: [{{name: good}}, {{name: bad}}]
          datasets: [d1]
          replicates: {replicates}
          seed: 11
          metric: {{name: loss, goal: minimize}}
          paired: true
        """)
    )


def make_run(root: Path, metadata: str = FULL_METADATA, executable: str | None = None) -> tuple[FileStore, str]:
    code = root / "code"
    code.mkdir(parents=True)
    (code / "run.py").write_text(SCRIPT)
    if executable is not None:  # a script of the code that must stay executable
        (code / executable).write_text("#!/bin/sh\necho hello\n")
        (code / executable).chmod(0o755)
    (code / "experiment.yml").write_text(spec_text(metadata))
    store = FileStore(root / "store")
    return store, start_run(code / "experiment.yml", store, workers=2).run_id


def expkit(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FileStore, str, Path]:
    """A run of a spec with every metadata field, and its bundle."""
    root = tmp_path_factory.mktemp("crate")
    store, run_id = make_run(root)
    return root, store, run_id, export_run(store, run_id, root / "bundle.zip", include_report=False)


# -- the RO-Crate validator, offline ---------------------------------------------------------------


def seed_validator_cache(cache: Path) -> None:
    """Put the RO-Crate JSON-LD context into the validator's HTTP cache (a requests-cache SQLite file) under
    the URL the crate names, from the copy the ``rocrate`` package ships: the validator then never fetches it."""
    import requests
    import urllib3
    from requests_cache import CachedSession

    context = importlib.resources.files("rocrate").joinpath("data/ro-crate.jsonld").read_bytes()
    assert b'"@context"' in context
    session = CachedSession(cache_name=str(cache), backend="sqlite", expire_after=-1)
    response = requests.Response()
    response.status_code, response.reason, response.url, response.encoding = 200, "OK", RO_CRATE_CONTEXT, "utf-8"
    response._content = context
    response.headers["Content-Type"] = "application/ld+json"
    response.request = requests.Request("GET", RO_CRATE_CONTEXT).prepare()
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(context),
        headers={"Content-Type": "application/ld+json"},
        status=200,
        preload_content=False,
        request_url=RO_CRATE_CONTEXT,
    )
    session.cache.save_response(response)
    session.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to anything but loopback fails: the validator must work from its cache alone."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise OSError(f"test: no network (tried to connect to {address})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def validate(bundle: Path, tmp_path: Path) -> dict[str, list[tuple[str, str, str]]]:
    """``(severity, check, message)`` of every issue up to RECOMMENDED, per profile, validated offline."""
    from rocrate_validator import services
    from rocrate_validator.models import Severity, ValidationSettings

    crate = tmp_path / "unpacked"
    shutil.rmtree(crate, ignore_errors=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(crate)
    cache = tmp_path / "validator-cache"
    seed_validator_cache(cache)
    found = {}
    for profile in ("ro-crate-1.1", "process-run-crate-0.5"):
        settings = ValidationSettings(
            rocrate_uri=str(crate),
            profile_identifier=profile,
            requirement_severity=Severity.RECOMMENDED,
            offline=True,
            cache_path=cache,
        )
        result = services.validate(settings)
        found[profile] = [(i.severity.name, i.check.name, i.message or "") for i in result.get_issues()]
    return found


@pytest.mark.timeout(300)
def test_the_crate_passes_the_ro_crate_validator_offline(full, tmp_path: Path, no_network: None) -> None:
    *_, bundle = full
    issues = validate(bundle, tmp_path)
    assert issues == {"ro-crate-1.1": [], "process-run-crate-0.5": []}


@pytest.mark.timeout(300)
def test_a_cluster_runs_crate_names_its_container_image(full, tmp_path: Path, no_network: None) -> None:
    _, store, run_id, _ = full
    copy = FileStore(tmp_path / "store")
    for key in store.list(run_id):
        copy.put(key, store.get(key))
    manifest = json.loads(copy.get(f"{run_id}/manifest.json"))
    manifest["executor"] = "argo"
    manifest["code"] = {"source": "image", "image": manifest["image"], "digest": "sha256:" + "c" * 64}
    copy.put_json(f"{run_id}/manifest.json", manifest)
    bundle = export_run(copy, run_id, tmp_path / "cluster.zip", include_report=False)
    names = entries(bundle)
    assert not any(n.startswith("code/") for n in names)  # the image is the code
    graph = {e["@id"]: e for e in json.loads(names["ro-crate-metadata.json"])["@graph"]}
    image = graph["#image"]
    assert image["@type"] == "ContainerImage" and image["registry"] == "docker.io" and image["sha256"] == "c" * 64
    assert image["name"] == "python" and image["tag"] == "3.12-slim"
    assert graph[f"#run-{run_id}-good"]["containerImage"] == {"@id": "#image"}
    assert validate(bundle, tmp_path) == {"ro-crate-1.1": [], "process-run-crate-0.5": []}


@pytest.mark.timeout(300)
def test_missing_metadata_leaves_only_recommendations_and_export_names_the_fields(
    tmp_path: Path, no_network: None
) -> None:
    store, run_id = make_run(tmp_path, metadata="  license: MIT\n")
    result = expkit("export", run_id, "-o", "b.zip", "--no-report", "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for field in ("metadata.authors", "metadata.repository"):
        assert field in result.stderr, result.stderr
    issues = validate(tmp_path / "b.zip", tmp_path)
    severities = {sev for found in issues.values() for sev, _, _ in found}
    assert severities == {"RECOMMENDED"}  # nothing REQUIRED is missing
    checks = {check for found in issues.values() for _, check, _ in found}
    assert checks == {
        "Root Data Entity: `author` property",  # metadata.authors
        "Root Data Entity: `publisher` property",  # metadata.authors[].affiliation
        "Action agent",  # metadata.authors
        "Application url",  # metadata.repository
        "SoftwareApplication id",  # metadata.repository
    }, issues


# -- CITATION.cff -----------------------------------------------------------------------------------


def test_the_bundles_citation_cff_is_valid_cff(full) -> None:
    _, _, run_id, bundle = full
    cff = yaml.safe_load(entries(bundle)["CITATION.cff"])
    jsonschema.validate(cff, CFF_SCHEMA)
    assert cff["title"] == f"crated: expkit run {run_id}" and cff["license"] == "CC-BY-4.0"
    assert cff["authors"][0] == {
        "family-names": "Doe",
        "given-names": "Jane",
        "orcid": "https://orcid.org/0000-0002-1825-0097",
        "affiliation": "Example University",
    }
    assert cff["preferred-citation"]["doi"] == "10.1234/abcd"
    assert cff["repository-code"] == "https://example.org/lab/crated"


def test_expkits_own_citation_cff_is_valid_and_the_readme_points_to_it() -> None:
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    jsonschema.validate(cff, CFF_SCHEMA)
    import expkit

    assert cff["version"] == expkit.__version__ and cff["repository-code"] == expkit.EXPKIT_URL
    assert "## Citing expkit" in (REPO / "README.md").read_text()


# -- the license is required; authors, ORCID, affiliation ----------------------------------------


def test_export_needs_a_license_and_says_where_to_put_it(tmp_path: Path) -> None:
    store, run_id = make_run(tmp_path, metadata="")
    with pytest.raises(InputError, match=r"metadata\.license is missing.*--license CC-BY-4\.0"):
        export_run(store, run_id, tmp_path / "b.zip", include_report=False)
    result = expkit("export", run_id, "-o", "b.zip", "--no-report", "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert result.returncode == 2 and "metadata.license" in result.stderr and "Traceback" not in result.stderr
    bad = expkit(
        "export", run_id, "-o", "b.zip", "--no-report", "--license", "MIT License", "--store", "store", cwd=tmp_path
    )
    assert bad.returncode == 2 and "SPDX" in bad.stderr
    ok = expkit(
        "export", run_id, "-o", "b.zip", "--no-report", "--license", "apache-2.0", "--store", "store", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    graph = {e["@id"]: e for e in json.loads(entries(tmp_path / "b.zip")["ro-crate-metadata.json"])["@graph"]}
    assert graph["./"]["license"] == {"@id": "https://spdx.org/licenses/Apache-2.0"}  # canonical spelling


@pytest.mark.parametrize(
    "metadata, problem",
    [
        ("  license: MIT License\n", "not an SPDX license identifier"),
        ("  authors: [{name: Jane, orcid: 0000-0002-1825-0098}]\n", "check digit"),
        ("  authors: [{name: Jane, orcid: '1234-5678'}]\n", "not an ORCID iD"),
        ("  authors: [{name: ''}]\n", "must not be empty"),
        ("  authors: [{name: Jane, email: j@x.org}]\n", "email"),
        ("  repository: github.com/org/repo\n", "not an http(s) URL"),
    ],
)
def test_bad_metadata_is_one_line_naming_the_field(metadata: str, problem: str) -> None:
    with pytest.raises(SpecError, match="metadata") as err:
        load_spec_text(spec_text(metadata))
    assert problem in str(err.value)


def test_metadata_is_normalised() -> None:
    meta = load_spec_text(
        spec_text(
            "  license: cc-by-4.0\n  authors: [{name: 'Doe, Jane', orcid: 0000-0002-1825-0097, affiliation: X Lab}]\n"
        )
    ).experiment.metadata
    assert meta.license == "CC-BY-4.0"
    assert meta.authors is not None and meta.authors[0].orcid == "https://orcid.org/0000-0002-1825-0097"
    assert meta.authors[0].affiliation is not None and meta.authors[0].affiliation.name == "X Lab"


# -- the code and the environment in the bundle; reproducing from the bundle alone --------------


def test_the_bundle_holds_the_run_code_and_exact_package_versions(full) -> None:
    root, store, run_id, bundle = full
    names = entries(bundle)
    manifest = json.loads(names["manifest.json"])
    code = {n.removeprefix("code/"): data for n, data in names.items() if n.startswith("code/")}
    assert set(code) == {f["path"] for f in manifest["code"]["files"]} == {"run.py", "experiment.yml"}
    assert code["run.py"] == (root / "code" / "run.py").read_bytes()
    requirements = names["requirements.txt"].decode()
    versions = dict(line.split("==") for line in requirements.splitlines() if not line.startswith("#"))
    assert versions == manifest["environment"]["packages"] and "numpy" in versions
    readme = names["README.md"].decode()
    assert "pip install -r requirements.txt" in readme and "expkit reproduce bundle.zip --yes" in readme


def test_export_refuses_code_changed_since_the_run(tmp_path: Path) -> None:
    store, run_id = make_run(tmp_path, metadata="  license: MIT\n")
    run_py = tmp_path / "code" / "run.py"
    original = run_py.read_text()
    run_py.write_text(original + "# edited after the run\n")
    with pytest.raises(InputError, match=r"changed since the run \(modified run\.py\).*--code-dir"):
        export_run(store, run_id, tmp_path / "b.zip", include_report=False)
    kept = tmp_path / "as-it-was"
    kept.mkdir()
    (kept / "run.py").write_text(original)
    shutil.copy(tmp_path / "code" / "experiment.yml", kept / "experiment.yml")
    bundle = export_run(store, run_id, tmp_path / "b.zip", include_report=False, code_dir=kept)
    assert entries(bundle)["code/run.py"] == original.encode()
    bare = export_run(store, run_id, tmp_path / "bare.zip", include_report=False, include_code=False)
    assert not any(n.startswith("code/") for n in entries(bare))


def test_executable_code_files_stay_executable_through_the_bundle(tmp_path: Path) -> None:
    store, run_id = make_run(tmp_path, metadata="  license: MIT\n", executable="tool.sh")
    bundle = export_run(store, run_id, tmp_path / "b.zip", include_report=False)
    with zipfile.ZipFile(bundle) as zf:
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert modes["code/tool.sh"] == 0o100755 and modes["code/run.py"] == 0o100644
    target = tmp_path / "unpacked"
    materialize_code(read_bundle(bundle), target)
    assert os.access(target / "tool.sh", os.X_OK) and not os.access(target / "run.py", os.X_OK)


@pytest.mark.timeout(600)
def test_a_fresh_directory_reproduces_from_the_bundle_alone(full, tmp_path: Path) -> None:
    root, _, run_id, bundle = full
    moved = root / "code-moved-away"
    (root / "code").rename(moved)  # the original code is nowhere but in the bundle
    try:
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        shutil.copy(bundle, fresh / "bundle.zip")
        result = expkit("reproduce", "bundle.zip", "--yes", "-j", "2", "--json", cwd=fresh)
    finally:
        moved.rename(root / "code")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unpacked into" in result.stderr  # the plan said where the code goes
    unpacked = fresh / "expkit-reproduce" / run_id
    assert (unpacked / "run.py").read_text() == SCRIPT
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "reproduced", verdict
    rerun_id = verdict["rerun"]
    rerun = json.loads((fresh / "expkit-runs" / rerun_id / "manifest.json").read_text())
    original = json.loads(entries(bundle)["manifest.json"])
    assert rerun["code"]["digest"] == original["code"]["digest"]  # the very code that ran
    assert rerun["spec_dir"] == str(unpacked.resolve())


def test_reproduce_refuses_a_bundle_whose_code_was_tampered_with(full, tmp_path: Path) -> None:
    *_, bundle = full
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "code/run.py":
                data += b"\nimport os  # something else\n"
            dst.writestr(info, data)
    result = expkit("reproduce", "tampered.zip", "--yes", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "modified run.py" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("expkit-runs/*/runs/*"))  # nothing ran

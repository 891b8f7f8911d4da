"""Issue 13, hardening of bundles and run records: an imported bundle never becomes ``latest`` and never
runs its command behind the user's back (items 2 and 8), manifests and run.json records are checked
strictly when read (item 2), bundles are streamed in constant memory and zip bombs are refused
(item 11), and ``expkit export`` never writes a credential's value into a bundle (item 3, export half).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from expkit.cli import app
from expkit.reproduce.bundle import export_run
from expkit.reproduce.bundle_secrets import SecretScanner
from expkit.runner import start_run
from expkit.stores import FileStore

SCRIPT = textwrap.dedent("""
    import json, os, pathlib
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    seed = int(os.environ["EXPKIT_SEED"])
    # Every execution leaves a mark next to the spec: the tests count them to see what ran.
    marks = pathlib.Path("marks"); marks.mkdir(exist_ok=True)
    (marks / f"{os.environ['EXPKIT_RUN_ID']}.{os.environ['EXPKIT_CELL'].replace('/', '.')}").write_text("ran")
    loss = (seed % 100) / 100 + (0.5 if os.environ["EXPKIT_ALGORITHM"] == "b" else 0.0)
    json.dump({"metrics": {"loss": loss}}, open(os.path.join(out, "result.json"), "w"))
    print("cell done", os.environ["EXPKIT_CELL"])
""")

SPEC = textwrap.dedent(
    """
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: hard, license: MIT}
    spec:
      image: python:3.12-slim@sha256:"""
    + "e" * 64
    + """
      command: [python, run.py]
      args: ["--cell", "{algorithm}/{dataset}/{replicate}"]
      algorithms: [{name: a}, {name: b}]
      datasets: [d1]
      replicates: 2
      seed: 3
      metric: {name: loss, goal: minimize}
"""
)


class Setup:
    """A directory with the spec and its script, a store with one run made here, and its bundle."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "run.py").write_text(SCRIPT)
        (root / "experiment.yml").write_text(SPEC)
        # The run's store and bundle live beside the spec here; they are not its code (issue 15's check).
        (root / ".expkitignore").write_text("store/\nbundle.zip\nmarks/\n")
        self.store_dir = root / "store"
        self.store = FileStore(self.store_dir)
        self.run_id = start_run(root / "experiment.yml", self.store, workers=2).run_id
        self.bundle = export_run(self.store, self.run_id, root / "bundle.zip", include_report=False)

    def marks(self) -> set[str]:
        return {p.name for p in (self.root / "marks").iterdir()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("hardening"))


@pytest.fixture
def store_copy(setup: Setup, tmp_path: Path) -> Path:
    """A copy of the setup's store (holding the run made here), for tests that change it."""
    dest = tmp_path / "store"
    shutil.copytree(setup.store_dir, dest)
    return dest


def cli(*args: str, input: str | None = None) -> Any:
    """``expkit ARGS`` in-process; the result has ``exit_code``, ``stdout`` and ``stderr``."""
    return CliRunner().invoke(app, list(args), input=input)


def error_lines(result: Any) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]


def assert_one_line_error(result: Any, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one ``error:`` line naming every needle, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def rebuilt(
    bundle: Path,
    dest: Path,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    *,
    drop: Callable[[str], bool] = lambda name: False,
    extra: tuple[tuple[zipfile.ZipInfo | str, bytes], ...] = (),
) -> Path:
    """A copy of ``bundle`` with its manifest changed by ``manifest``, entries matching ``drop`` left out and
    ``extra`` entries added."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename == "manifest.json" and manifest is not None:
                doc = json.loads(data)
                manifest(doc)
                data = json.dumps(doc, indent=2).encode()
            out.writestr(info.filename, data)
        for entry, content in extra:
            out.writestr(entry, content)
    return dest


def patch_manifest(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def copy_run(store: Path, run_id: str, new_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Put a copy of run ``run_id`` under ``new_id`` in the store directory, its manifest changed."""
    shutil.copytree(store / run_id, store / new_id)

    def renamed(doc: dict[str, Any]) -> None:
        doc["run_id"] = new_id
        change(doc)

    patch_manifest(store / new_id / "manifest.json", renamed)


# ---------------------------------------------------------------------------------------------------
# item 2: an imported bundle never becomes `latest` and never runs its command
# ---------------------------------------------------------------------------------------------------


def test_a_bundle_claiming_a_future_start_does_not_become_latest(setup: Setup, store_copy: Path) -> None:
    def future(doc: dict[str, Any]) -> None:
        doc["run_id"] = "hard-zzzzz"
        doc["started_at"] = "9999-12-31T23:59:59.999Z"

    forged = rebuilt(setup.bundle, store_copy.parent / "future.zip", future)
    assert cli("import", str(forged), "--store", str(store_copy)).exit_code == 0
    marked = json.loads((store_copy / "hard-zzzzz" / "manifest.json").read_text())
    assert marked["imported"]["from"] == "future.zip" and marked["imported"]["at"] < "9999"
    assert marked["started_at"].startswith("9999")  # the bundle's provenance is kept as it was
    shown = cli("show", "latest", "--json", "--store", str(store_copy))
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["run_id"] == setup.run_id
    human = cli("show", "hard-zzzzz", "--store", str(store_copy))
    assert human.exit_code == 0 and "imported" in human.stdout and "future.zip" in human.stdout
    listed = cli("list", "--store", str(store_copy))
    assert listed.exit_code == 0 and "imported from future.zip" in listed.stdout


def test_an_imported_run_is_never_resumed_or_rerun(setup: Setup, store_copy: Path) -> None:
    def renamed(doc: dict[str, Any]) -> None:
        doc["run_id"] = "hard-imprt"

    # A bundle without one cell: resuming it would have work to do, in the spec directory it names.
    partial = rebuilt(setup.bundle, store_copy.parent / "partial.zip", renamed, drop=lambda n: "runs/b/d1/1/" in n)
    assert json.loads(zipfile.ZipFile(partial).read("manifest.json"))["spec_dir"] == str(setup.root)
    assert cli("import", str(partial), "--store", str(store_copy)).exit_code == 0
    before = setup.marks()
    for extra in ([], ["--rerun-failed"]):
        result = cli("run", "--resume", "hard-imprt", *extra, "--store", str(store_copy))
        assert_one_line_error(result, 2, "hard-imprt", "imported", "partial.zip", "expkit reproduce")
        result = cli(
            "run", str(setup.root / "experiment.yml"), "--resume", "hard-imprt", *extra, "--store", str(store_copy)
        )
        assert_one_line_error(result, 2, "imported")
    assert setup.marks() == before  # the bundle's command never ran
    assert not (store_copy / "hard-imprt" / "runs" / "b" / "d1" / "1").exists()


def test_reproduce_shows_a_bundles_command_and_runs_it_only_when_confirmed(setup: Setup, tmp_path: Path) -> None:
    store = tmp_path / "rerun-store"
    before = setup.marks()
    args = ["reproduce", str(setup.bundle), "--spec-dir", str(setup.root), "--store", str(store)]
    refused = cli(*args, "-o", str(tmp_path / "cmp"))
    line = assert_one_line_error(refused, 2, "--yes")
    assert "python run.py --cell '{algorithm}/{dataset}/{replicate}'" in refused.stderr  # shown before asking
    assert "4 times" in refused.stderr and str(setup.root) in refused.stderr
    assert "stdin is not a terminal" in line
    assert setup.marks() == before and not (store.exists() and any(store.iterdir()))
    done = cli(*args, "--yes", "-o", str(tmp_path / "cmp"))
    assert done.exit_code in (0, 3), done.output  # reproduced, or too few runs to tell
    assert len(setup.marks() - before) == 4


def test_latest_is_the_newest_run_of_this_user(setup: Setup, store_copy: Path) -> None:
    def someone_else(doc: dict[str, Any]) -> None:
        doc["user"] = "someone-else"
        doc["started_at"] = "2999-01-01T00:00:00.000Z"

    copy_run(store_copy, setup.run_id, "hard-other", someone_else)
    shown = cli("show", "latest", "--json", "--store", str(store_copy))
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["run_id"] == setup.run_id


# ---------------------------------------------------------------------------------------------------
# item 2: manifests and run.json records are checked strictly; item 8: a bad one is exit 2, one line
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("started_at", 5), ("host", 5), ("cells", "many"), ("metric", {"name": "loss", "goal": "up"})],
)
def test_a_bundle_with_a_bad_manifest_field_is_refused_in_one_line(
    setup: Setup, store_copy: Path, field: str, value: Any
) -> None:
    def bad(doc: dict[str, Any]) -> None:
        doc["run_id"] = "hard-badmf"
        doc[field] = value

    forged = rebuilt(setup.bundle, store_copy.parent / "bad.zip", bad)
    result = cli("import", str(forged), "--store", str(store_copy))
    assert_one_line_error(result, 2, "bad.zip", "manifest.json", field)
    assert not (store_copy / "hard-badmf").exists()
    assert json.loads(cli("show", "latest", "--json", "--store", str(store_copy)).stdout)["run_id"] == setup.run_id


def test_a_bundle_whose_manifest_does_not_describe_its_spec_is_refused(setup: Setup, tmp_path: Path) -> None:
    def other_spec(doc: dict[str, Any]) -> None:
        doc["spec_sha256"] = "0" * 64

    forged = rebuilt(setup.bundle, tmp_path / "mismatch.zip", other_spec)
    assert_one_line_error(cli("import", str(forged), "--store", str(tmp_path / "s")), 2, "spec_sha256")


def test_a_bundle_with_a_bad_run_json_is_refused_naming_the_entry(setup: Setup, tmp_path: Path) -> None:
    with zipfile.ZipFile(setup.bundle) as zf:
        record = json.loads(zf.read("runs/a/d1/0/run.json"))
    record["duration_s"] = "forever"
    forged = rebuilt(
        setup.bundle,
        tmp_path / "badrec.zip",
        drop=lambda n: n == "runs/a/d1/0/run.json",
        extra=(("runs/a/d1/0/run.json", json.dumps(record).encode()),),
    )
    result = cli("import", str(forged), "--store", str(tmp_path / "s"))
    assert_one_line_error(result, 2, "runs/a/d1/0/run.json", "duration_s")


_HUGE = "<a 5001-digit integer>"


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("started_at", 5, "started_at"),
        ("host", 5, "host"),
        ("spec_sha256", None, "spec_sha256: is missing"),
        ("seed", _HUGE, "4300 digits"),
        ("sessions", [{"cells": -1}], "sessions.0.cells"),
        ("run_id", "hard-other", "run_id"),
    ],
)
def test_a_bad_manifest_in_the_store_is_one_line_exit_2_and_never_breaks_latest(
    setup: Setup, store_copy: Path, field: str, value: Any, needle: str
) -> None:
    def bad(doc: dict[str, Any]) -> None:
        doc["started_at"] = "2999-01-01T00:00:00.000Z"  # newer than the good run: 'latest' would pick it
        if value is None:
            del doc[field]
        else:
            doc[field] = value

    copy_run(store_copy, setup.run_id, "hard-broke", lambda doc: None)
    path = store_copy / "hard-broke" / "manifest.json"
    doc = json.loads(path.read_text())
    bad(doc)
    path.write_text(json.dumps(doc).replace(json.dumps(_HUGE), "1" * 5001))
    for command in (["show"], ["results", "-o", str(store_copy.parent / "out")], ["run", "--resume"], ["export"]):
        args = [*command, "hard-broke", "--store", str(store_copy)]
        if command == ["export"]:
            args += ["-o", str(store_copy.parent / "x.zip")]
        assert_one_line_error(cli(*args), 2, "hard-broke/manifest.json", needle)
    latest = cli("show", "latest", "--json", "--store", str(store_copy))
    assert latest.exit_code == 0, latest.output
    assert json.loads(latest.stdout)["run_id"] == setup.run_id
    listed = cli("list", "--json", "--store", str(store_copy))
    assert listed.exit_code == 0, listed.output
    rows = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert rows["hard-broke"]["status"] == "invalid" and needle in rows["hard-broke"]["problem"]


@pytest.mark.parametrize("record", [{"status": 5}, {"status": "succeeded", "duration_s": "long"}, [1, 2], "{"])
def test_a_bad_run_json_makes_only_that_cell_failed_and_rerun_failed_reruns_it(
    setup: Setup, store_copy: Path, record: Any
) -> None:
    cell = store_copy / setup.run_id / "runs" / "a" / "d1" / "0" / "run.json"
    cell.write_text(record if isinstance(record, str) else json.dumps(record))
    shown = cli("show", setup.run_id, "--json", "--store", str(store_copy))
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["counts"] == {"total": 4, "succeeded": 3, "failed": 1, "missing": 0}
    assert doc["failures"][0]["cell"] == "a/d1/0" and "run.json" in doc["failures"][0]["reason"]
    results = cli("results", setup.run_id, "--store", str(store_copy), "-o", str(store_copy.parent / "out"))
    assert results.exit_code == 0, results.output
    again = cli("run", "--resume", setup.run_id, "--rerun-failed", "--store", str(store_copy), "--no-results")
    assert again.exit_code == 0, again.output
    assert json.loads(cell.read_text())["status"] == "succeeded"


# ---------------------------------------------------------------------------------------------------
# item 8: a bundle entry 2,000 directories deep
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2000, 40])
def test_a_deep_bundle_entry_is_exit_2_in_one_line(setup: Setup, tmp_path: Path, depth: int) -> None:
    name = "runs/a/d1/0/" + "d/" * depth + "f.txt"
    forged = rebuilt(setup.bundle, tmp_path / "deep.zip", extra=((name, b"x"),))
    result = cli("import", str(forged), "--store", str(tmp_path / "s"))
    assert_one_line_error(result, 2, "deep.zip", "deeper than 32 directories")
    assert len(error_lines(result)[0]) < 400
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------------
# item 11: constant memory, zip bombs
# ---------------------------------------------------------------------------------------------------

_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys
    p = subprocess.run(sys.argv[1:], capture_output=True, timeout=300)
    print(json.dumps({"rc": p.returncode, "out": p.stdout.decode(), "err": p.stderr.decode(),
                      "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""")


def expkit_measured(*args: str, cwd: Path) -> dict[str, Any]:
    """``python -m expkit ARGS`` in a fresh process: its exit code, output and peak resident memory (MB)."""
    wrapper = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "expkit", *args]
    done = subprocess.run(wrapper, cwd=cwd, capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _big_log(path: Path, megabytes: int) -> int:
    """A log of ``megabytes`` MiB of varied text lines (compresses about 5:1, like a real log)."""
    block = "".join(
        f"step {i} loss {i * 0.000173 % 1:.6f} lr {1 / (i + 1):.8f} note {i * 7919 % 10007}\n" for i in range(20000)
    )
    block_bytes = block.encode()[: 1024 * 1024]
    with open(path, "wb") as fh:
        for i in range(megabytes):
            fh.write(block_bytes[i % 7 :] + block_bytes[: i % 7])
    return path.stat().st_size


def test_export_and_import_of_a_300_mb_log_run_in_constant_memory(setup: Setup, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(setup.store_dir, store)
    log = store / setup.run_id / "runs" / "a" / "d1" / "0" / "log.txt"
    size = _big_log(log, 300)
    exported = expkit_measured(
        "export", setup.run_id, "-o", "big.zip", "--no-report", "--store", str(store), cwd=tmp_path
    )
    assert exported["rc"] == 0, exported["err"]
    assert exported["peak_mb"] < 150, exported["peak_mb"]  # the log is 300 MiB
    assert (tmp_path / "big.zip").stat().st_size < size / 2
    imported = expkit_measured("import", "big.zip", "--store", str(tmp_path / "other"), cwd=tmp_path)
    assert imported["rc"] == 0, imported["err"]
    assert imported["peak_mb"] < 150, imported["peak_mb"]
    copied = tmp_path / "other" / setup.run_id / "runs" / "a" / "d1" / "0" / "log.txt"
    assert copied.stat().st_size == size
    with open(copied, "rb") as a, open(log, "rb") as b:
        while chunk := a.read(1 << 20):
            assert chunk == b.read(1 << 20)


def test_a_zip_bomb_under_the_size_cap_is_refused_at_once_in_one_line(setup: Setup, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    shutil.copy(setup.bundle, bomb)
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("runs/a/d1/0/zeros.bin", "w", force_zip64=True) as fh:
            for _ in range(1024):  # 1 GiB of zeros, about 1 MiB compressed: under the 2 GiB cap
                fh.write(zeros)
    assert bomb.stat().st_size < 3 * 1024 * 1024
    result = expkit_measured("import", "bomb.zip", "--store", str(tmp_path / "s"), cwd=tmp_path)
    assert result["rc"] == 2, result
    lines = [ln for ln in result["err"].splitlines() if ln.strip()]
    assert len(lines) == 1 and "zip bomb" in lines[0] and "zeros.bin" in lines[0], lines
    assert result["peak_mb"] < 150, result["peak_mb"]
    assert not (tmp_path / "s").exists()


def test_an_interrupted_import_leaves_nothing_behind(setup: Setup, tmp_path: Path) -> None:
    """An entry whose data does not match its checksum fails midway: what was written is removed."""
    raw = bytearray(setup.bundle.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo("runs/b/d1/1/log.txt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start] ^= 0xFF  # corrupt the compressed data of a late cell
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    result = cli("import", str(damaged), "--store", str(tmp_path / "s"))
    assert_one_line_error(result, 2, "runs/b/d1/1/log.txt")
    leftovers = [p for p in (tmp_path / "s").rglob("*") if p.is_file()] if (tmp_path / "s").exists() else []
    assert leftovers == []


# ---------------------------------------------------------------------------------------------------
# item 3 (export half): credentials never reach a bundle
# ---------------------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _bundle_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return b"".join(zf.read(i) for i in zf.infolist())


@pytest.mark.parametrize("where", ["runs/b/d1/1/log.txt", "prepare.log"])
def test_export_refuses_a_log_holding_a_credential_value(
    setup: Setup, store_copy: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    log = store_copy / setup.run_id / where
    log.write_text(f"connecting with key {SECRET}\nok\n")
    out = store_copy.parent / "leak.zip"
    result = cli("export", setup.run_id, "-o", str(out), "--no-report", "--store", str(store_copy))
    line = assert_one_line_error(result, 2, where, "AWS_SECRET_ACCESS_KEY", "--redact")
    assert SECRET not in result.output and SECRET not in line
    assert not out.exists() and not list(store_copy.parent.glob(".leak.zip*"))


def test_export_redact_replaces_credential_values_and_says_so(
    setup: Setup, store_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = "FQoGZXIvYXdzEJr//////////wEaDOTESTSESSIONTOKEN"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("EXPKIT_REGISTRY_PASSWORD", "short")  # under 8 characters: not looked for
    profile = tmp_path / "config.toml"
    profile.write_text('[s3]\naccess_key_id = "AKIAPROFILE"\nsecret_access_key = "profile-secret-value-123"\n')
    profile.chmod(0o600)
    monkeypatch.setenv("EXPKIT_CONFIG", str(profile))
    run_dir = store_copy / setup.run_id
    (run_dir / "runs/a/d1/0/log.txt").write_text(f"key={SECRET} token={token} pw=short\n")
    (run_dir / "runs/b/d1/0/log.txt").write_text("profile-secret-value-123 was used\n")
    out = tmp_path / "clean.zip"
    result = cli("export", setup.run_id, "-o", str(out), "--no-report", "--redact", "--store", str(store_copy))
    assert result.exit_code == 0, result.output
    everything = _bundle_bytes(out)
    for value in (SECRET, token, "profile-secret-value-123"):
        assert value.encode() not in everything and value not in result.output
    with zipfile.ZipFile(out) as zf:
        first = zf.read("runs/a/d1/0/log.txt").decode()
        second = zf.read("runs/b/d1/0/log.txt").decode()
        readme = zf.read("README.md").decode()
    assert first == "key=[REDACTED:AWS_SECRET_ACCESS_KEY] token=[REDACTED:AWS_SESSION_TOKEN] pw=short\n"
    assert second.startswith("[REDACTED:the S3 profile's secret_access_key]")
    assert "## Redacted" in readme and "`runs/a/d1/0/log.txt`: AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN" in readme
    # The store is left as it was; only the bundle is redacted.
    assert SECRET in (run_dir / "runs/a/d1/0/log.txt").read_text()


def test_secret_scanner_finds_values_across_chunk_boundaries() -> None:
    scanner = SecretScanner.of({"AWS_SECRET_ACCESS_KEY": SECRET, "TINY": "abc"})
    for offset in (1 << 20) - 5, (1 << 20) - 1, 1 << 20, (2 << 20) - len(SECRET) + 3:
        data = b"x" * offset + SECRET.encode() + b"y" * 100
        out = io.BytesIO()
        assert scanner.scan(io.BytesIO(data), out) == {"AWS_SECRET_ACCESS_KEY"}
        assert out.getvalue() == b"x" * offset + b"[REDACTED:AWS_SECRET_ACCESS_KEY]" + b"y" * 100
    clean = b"abc " * 1000  # a value under 8 characters is never looked for
    out = io.BytesIO()
    assert scanner.scan(io.BytesIO(clean), out) == set() and out.getvalue() == clean

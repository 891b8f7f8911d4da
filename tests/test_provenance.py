"""The code identity and environment of every run, and no silent mixing of versions on resume (issue 15, items 1, 2, 4).

Real things only: real git repositories, a real second virtual environment as the spec's interpreter,
``expkit`` through typer's CliRunner on :data:`expkit.cli.app`, runs of real subprocesses.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from expkit.cli import app
from expkit.runs.code import (
    MAX_FILES,
    CodeTooLarge,
    code_files,
    code_identity,
    digest_of,
    image_identity,
    strip_credentials,
)
from expkit.runs.environment import environment_diff, probe_environment, requirements_text
from expkit.runs.manifest import build_manifest
from expkit.spec import load_spec

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

RUN_SCRIPT = textwrap.dedent("""
    import json, os
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    seed = int(os.environ["EXPKIT_SEED"])
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump({"metrics": {"loss": (seed % 1000) / 1000}}, fh)
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: provtest
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [{command}, run.py]
      algorithms: [{{name: a}}, {{name: b}}]
      datasets: [d1, d2]
      replicates: 2
      seed: 3
      metric: {{name: loss, goal: minimize}}
      paired: true
""")


def write_study(root: Path, command: str = "python") -> Path:
    """An experiment in ``root``: experiment.yml, run.py and a helper module."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.py").write_text(RUN_SCRIPT)
    (root / "helper.py").write_text("X = 1\n")
    spec = root / "experiment.yml"
    spec.write_text(SPEC.format(digest="b" * 64, command=command))
    return spec


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPKIT_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def manifest_of(store: Path) -> dict:
    (path,) = store.glob("*/manifest.json")
    return json.loads(path.read_text())


def run_id_of(store: Path) -> str:
    (path,) = store.glob("*/manifest.json")
    return path.parent.name


def record(store: Path, cell: str) -> dict:
    return json.loads((store / run_id_of(store) / "runs" / cell / "run.json").read_text())


# -- item 1: the code identity -------------------------------------------------------------------------


@needs_git
def test_git_work_tree_files_digest_and_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    study = repo / "study"
    write_study(study)
    (repo / ".gitignore").write_text("*.log\nbig/\n")
    (study / "notes.log").write_text("ignored by .gitignore")
    (study / "big").mkdir()
    (study / "big" / "data.bin").write_bytes(b"x" * 100)
    (study / ".expkitignore").write_text("scratch/\n")
    (study / "scratch").mkdir()
    (study / "scratch" / "tmp.txt").write_text("excluded by .expkitignore")
    (study / "__pycache__").mkdir()
    (study / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"\0")
    (study / "expkit-runs" / "r").mkdir(parents=True)
    (study / "expkit-runs" / "r" / "manifest.json").write_text("{}")
    git(repo, "init", "-q")
    git(repo, "add", ".gitignore", "study/run.py", "study/experiment.yml")
    git(repo, "commit", "-q", "-m", "first")
    (study / "untracked.py").write_text("Y = 2\n")  # untracked, not ignored: part of the code

    files = [p.as_posix() for p in code_files(study)]
    assert files == ["experiment.yml", "helper.py", "run.py", "untracked.py"]  # .expkitignore is never code

    ident = code_identity(study)
    assert ident["source"] == "files"
    by_path = {f["path"]: f for f in ident["files"]}
    assert by_path["run.py"]["sha256"] == hashlib.sha256(RUN_SCRIPT.encode()).hexdigest()
    assert by_path["run.py"]["size"] == len(RUN_SCRIPT.encode())
    lines = "".join(f"{p}\0{by_path[p]['sha256']}\n" for p in sorted(by_path))
    assert ident["digest"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()

    head = git(repo, "rev-parse", "HEAD").strip()
    assert ident["git"]["commit"] == head
    assert ident["git"]["dirty"] is True  # untracked files
    assert ident["git"]["diff_sha256"] is None  # no tracked file differs from HEAD
    (study / "run.py").write_text(RUN_SCRIPT + "# edited\n")
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, capture_output=True, check=True).stdout
    assert code_identity(study)["git"]["diff_sha256"] == hashlib.sha256(diff).hexdigest()


@needs_git
def test_the_digest_is_the_same_with_or_without_git(tmp_path: Path) -> None:
    """A copy of the files (as a bundle unpacks them) has the code digest of the git work tree."""
    repo = tmp_path / "repo"
    write_study(repo)
    (repo / ".gitignore").write_text("*.log\nout/\n!keep.log\n")
    (repo / "x.log").write_text("ignored")
    (repo / "keep.log").write_text("kept by the negation")
    (repo / "out").mkdir()
    (repo / "out" / "o.txt").write_text("ignored")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("Z = 3\n")
    git(repo, "init", "-q")
    in_git = code_identity(repo)
    assert in_git["git"] is not None
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns(".git"))
    plain = code_identity(copy)
    assert plain["git"] is None
    assert [f["path"] for f in plain["files"]] == [f["path"] for f in in_git["files"]]
    assert plain["digest"] == in_git["digest"]
    assert "keep.log" in [f["path"] for f in plain["files"]]


def test_walk_rules_links_virtualenvs_and_the_store(tmp_path: Path) -> None:
    study = tmp_path / "study"
    write_study(study)
    (study / "sub").mkdir()
    (study / "sub" / ".gitignore").write_text("*.csv\n")
    (study / "sub" / "a.csv").write_text("1")
    (study / "a.csv").write_text("2")  # the nested .gitignore does not reach up
    (study / "env").mkdir()
    (study / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (study / "env" / "lib.py").write_text("")
    (study / "mystore" / "run-1").mkdir(parents=True)
    (study / "mystore" / "run-1" / "manifest.json").write_text("{}")
    outside = tmp_path / "shared.py"
    outside.write_text("SHARED = 1\n")
    (study / "shared.py").symlink_to(outside)  # a link to a file counts with its content
    (study / "linked-dir").symlink_to(tmp_path)  # a link to a directory is not followed
    (study / "broken").symlink_to(tmp_path / "nowhere")
    files = [p.as_posix() for p in code_files(study, exclude=[study / "mystore"])]
    assert files == ["a.csv", "experiment.yml", "helper.py", "run.py", "shared.py", "sub/.gitignore"]
    ident = code_identity(study, exclude=[study / "mystore"])
    shared = next(f for f in ident["files"] if f["path"] == "shared.py")
    assert shared["sha256"] == hashlib.sha256(b"SHARED = 1\n").hexdigest()


def test_too_much_code_is_one_line_naming_the_biggest_and_the_fix(tmp_path: Path, cli) -> None:
    study = tmp_path / "study"
    spec = write_study(study)
    (study / "data").mkdir()
    with open(study / "data" / "huge.bin", "wb") as fh:
        fh.truncate(60_000_000)  # sparse: the cap is checked on sizes, before anything is read
    with pytest.raises(CodeTooLarge) as err:
        code_files(study)
    message = str(err.value)
    assert "data/ (1 files, 60.0 MB)" in message and ".expkitignore" in message and "'data/'" in message
    result = cli("run", str(spec), "--store", str(tmp_path / "store"))
    assert result.exit_code == 2
    assert "data/" in result.output and ".expkitignore" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*/manifest.json"))

    (study / ".expkitignore").write_text("data/\n")  # the fix the message gives
    assert "data/huge.bin" not in [p.as_posix() for p in code_files(study)]

    many = tmp_path / "many"
    write_study(many)
    (many / "cache").mkdir()
    for i in range(MAX_FILES + 1):
        (many / "cache" / f"{i}.txt").write_bytes(b"")
    with pytest.raises(CodeTooLarge, match=r"cache/ \(5,001 files"):
        code_files(many)


def test_credentials_never_leave_a_git_remote() -> None:
    assert strip_credentials("https://user:s3cret-token@github.com/org/repo.git") == "https://github.com/org/repo.git"
    assert strip_credentials("https://github.com/org/repo.git") == "https://github.com/org/repo.git"
    assert strip_credentials("git@github.com:org/repo.git") == "git@github.com:org/repo.git"


@needs_git
def test_run_records_code_and_show_displays_it(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    spec = write_study(repo / "study")
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", "https://alice:hunter2-token@git.example.org/lab/study.git")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "study")
    store = tmp_path / "store"
    result = cli("run", str(spec), "--store", str(store), "--no-results")
    assert result.exit_code == 0, result.output
    m = manifest_of(store)
    assert m["code"]["source"] == "files"
    assert [f["path"] for f in m["code"]["files"]] == ["experiment.yml", "helper.py", "run.py"]
    assert m["code"]["digest"] == code_identity(repo / "study")["digest"]
    assert m["code"]["git"]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert m["code"]["git"]["remote"] == "https://git.example.org/lab/study.git"
    assert "hunter2" not in json.dumps(m)
    assert m["changes"] == []
    assert record(store, "a/d1/0")["code_digest"] == m["code"]["digest"]

    shown = cli("show", "latest", "--store", str(store))
    assert shown.exit_code == 0
    commit = m["code"]["git"]["commit"][:12]
    assert f"{m['code']['digest'][:19]}… · 3 files" in shown.output
    assert f"git {commit}" in shown.output
    python = ".".join(str(v) for v in sys.version_info[:3])
    assert f"Python {python}" in shown.output and "packages" in shown.output
    doc = json.loads(cli("show", "latest", "--store", str(store), "--json").output)
    assert doc["manifest"]["code"]["digest"] == m["code"]["digest"]
    assert doc["code_versions"] == {m["code"]["digest"]: 8}


def test_a_cluster_runs_code_is_its_image(tmp_path: Path, cli) -> None:
    spec = write_study(tmp_path / "study")
    loaded = load_spec(spec)
    m = build_manifest(loaded, "provtest-abcde", "argo", 1, 8)
    assert m["code"] == {"source": "image", "image": loaded.experiment.spec.image, "digest": "sha256:" + "b" * 64}
    assert m["environment"] is None
    assert image_identity("python:3.12")["digest"] is None


# -- item 2: the environment -----------------------------------------------------------------------------


def make_venv(where: Path, package_version: str) -> Path:
    """A real virtual environment (no pip) with one installed distribution ``expkit-probe-fixture``."""
    venv.create(where, with_pip=False, system_site_packages=False, symlinks=True)
    (site,) = where.glob("lib/python3*/site-packages")
    set_fixture_version(site, package_version)
    return where / "bin" / "python"


def set_fixture_version(site: Path, version: str) -> None:
    for old in site.glob("expkit_probe_fixture-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"expkit_probe_fixture-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: expkit-probe-fixture\nVersion: {version}\n")


@pytest.mark.skipif(sys.platform != "linux", reason="virtual environment layout of Linux")
def test_probe_reports_the_commands_interpreter_not_expkits(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", "1.2.3")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    found = probe_environment([str(python), "run.py"], tmp_path, env)
    assert found.get("probe_error") is None
    assert found["python"]["prefix"] == str(tmp_path / "venv")
    assert found["python"]["version"] == ".".join(str(v) for v in sys.version_info[:3])
    assert found["packages"]["expkit-probe-fixture"] == "1.2.3"
    assert "pytest" not in found["packages"]  # expkit's environment has it; the command's does not
    assert found["expkit_version"] and found["os"]
    assert found["digest"].startswith("sha256:")
    assert "expkit-probe-fixture==1.2.3\n" in requirements_text(found)

    mine = probe_environment([sys.executable], tmp_path, {"PATH": os.environ.get("PATH", "")})
    assert mine["packages"]["pytest"] == importlib.metadata.version("pytest")
    diff = environment_diff(found, mine)
    assert diff.packages["pytest"] == (None, importlib.metadata.version("pytest"))
    assert diff.packages["expkit-probe-fixture"] == ("1.2.3", None)


def test_probe_of_a_command_that_is_not_python(tmp_path: Path) -> None:
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    found = probe_environment(["./tool.sh"], tmp_path, {"PATH": "/usr/bin:/bin"})
    assert found["command"]["executable"] == str(tool)
    assert found["command"]["sha256"] == hashlib.sha256(tool.read_bytes()).hexdigest()
    assert found["python"] is None and found["packages"] is None
    assert found["libc"] is None or isinstance(found["libc"], str)
    tool.write_text("#!/bin/sh\nexit 1\n")
    again = probe_environment(["./tool.sh"], tmp_path, {"PATH": "/usr/bin:/bin"})
    assert environment_diff(found, again).executable is not None
    missing = probe_environment(["no-such-command-xyz"], tmp_path, {"PATH": "/usr/bin:/bin"})
    assert "command not found" in missing["probe_error"]


# -- item 4: no silent mixing ----------------------------------------------------------------------------


def test_edit_between_run_and_resume_stops_naming_the_file(tmp_path: Path, cli) -> None:
    spec = write_study(tmp_path / "study")
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    run_id = run_id_of(store)
    old = manifest_of(store)
    (store / run_id / "runs" / "b" / "d2" / "1" / "run.json").unlink()  # one cell to do
    (tmp_path / "study" / "run.py").write_text(RUN_SCRIPT + "# tuned\n")
    (tmp_path / "study" / "extra.py").write_text("E = 1\n")
    (tmp_path / "study" / "helper.py").unlink()

    for flags in ((), ("--rerun-failed",)):
        result = cli("run", "--resume", run_id, *flags, "--store", str(store))
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert "modified run.py" in line and "added extra.py" in line and "removed helper.py" in line
        assert "--allow-changes" in line and "Traceback" not in result.output
    assert manifest_of(store)["code"] == old["code"]  # nothing recorded, nothing run
    assert not (store / run_id / "runs" / "b" / "d2" / "1" / "run.json").exists()

    result = cli("run", "--resume", run_id, "--allow-changes", "--store", str(store), "--no-results")
    assert result.exit_code == 0, result.output
    m = manifest_of(store)
    (change,) = m["changes"]
    assert change["session"] == 2
    assert change["code"]["files"] == {"added": ["extra.py"], "removed": ["helper.py"], "modified": ["run.py"]}
    assert change["code"]["from"] == old["code"]["digest"] != change["code"]["to"] == m["code"]["digest"]
    assert record(store, "b/d2/1")["code_digest"] == m["code"]["digest"]
    assert record(store, "a/d1/0")["code_digest"] == old["code"]["digest"]

    # the same code again: a further resume needs no flag
    (store / run_id / "runs" / "a" / "d1" / "1" / "run.json").unlink()
    assert cli("run", "--resume", run_id, "--store", str(store), "--no-results").exit_code == 0

    out = tmp_path / "results"
    assert cli("results", run_id, "--store", str(store), "-o", str(out)).exit_code == 0
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "Mixed code versions" in text, name
        assert old["code"]["digest"] in text and m["code"]["digest"] in text
        assert "b/d2/1" in text and "modified run.py" in text
    shown = cli("show", run_id, "--store", str(store))
    assert "mixed" in shown.output and "session 2" in shown.output


def test_resume_with_unchanged_code_runs_and_ignores_what_runs_leave(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tmp_path / "study"
    write_study(study)
    (study / "run.py").write_text("import helper\n" + RUN_SCRIPT)  # leaves __pycache__/ behind
    monkeypatch.chdir(study)  # the store is inside the spec's directory, under a name of its own
    assert not (study / "__pycache__").exists()
    assert cli("run", "experiment.yml", "-j", "1", "--no-results", "--store", "mystore").exit_code == 0
    assert (study / "__pycache__").is_dir()
    store = study / "mystore"
    run_id = run_id_of(store)
    (store / run_id / "runs" / "a" / "d1" / "0" / "run.json").unlink()
    result = cli("run", "--resume", run_id, "--store", "mystore", "--no-results")
    assert result.exit_code == 0, result.output
    assert manifest_of(store)["changes"] == []


@pytest.mark.skipif(sys.platform != "linux", reason="virtual environment layout of Linux")
def test_a_package_change_stops_the_resume_naming_it(tmp_path: Path, cli) -> None:
    python = make_venv(tmp_path / "venv", "1.0.0")
    spec = write_study(tmp_path / "study", command=json.dumps(str(python)))
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    m = manifest_of(store)
    assert m["environment"]["packages"] == {"expkit-probe-fixture": "1.0.0"}
    assert m["environment"]["python"]["prefix"] == str(tmp_path / "venv")
    run_id = run_id_of(store)
    (store / run_id / "runs" / "a" / "d1" / "0" / "run.json").unlink()
    (site,) = (tmp_path / "venv").glob("lib/python3*/site-packages")
    set_fixture_version(site, "1.1.0")

    result = cli("run", "--resume", run_id, "--store", str(store))
    assert result.exit_code == 2
    assert "expkit-probe-fixture 1.0.0 → 1.1.0" in " ".join(result.output.split())

    assert cli("run", "--resume", run_id, "--allow-changes", "--store", str(store), "--no-results").exit_code == 0
    m = manifest_of(store)
    (change,) = m["changes"]
    assert change["environment"]["packages"] == {"expkit-probe-fixture": ["1.0.0", "1.1.0"]}
    assert change["code"]["files"] == {"added": [], "removed": [], "modified": []}
    assert record(store, "a/d1/0")["environment_digest"] == m["environment"]["digest"]
    assert record(store, "a/d1/1")["environment_digest"] == change["environment"]["from"]


def test_many_changed_files_are_named_up_to_ten(tmp_path: Path, cli) -> None:
    study = tmp_path / "study"
    spec = write_study(study)
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    for i in range(13):
        (study / f"m{i:02d}.py").write_text(str(i))
    result = cli("run", "--resume", "latest", "--store", str(store))
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "added m09.py" in line and "added m10.py" not in line and "and 3 more" in line


def test_allow_changes_needs_resume(tmp_path: Path, cli) -> None:
    spec = write_study(tmp_path / "study")
    result = cli("run", str(spec), "--allow-changes")
    assert result.exit_code == 2
    assert "--allow-changes only makes sense with --resume" in result.output


def test_a_run_from_before_code_was_recorded_resumes_and_records_it(tmp_path: Path, cli) -> None:
    spec = write_study(tmp_path / "study")
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    run_id = run_id_of(store)
    path = store / run_id / "manifest.json"
    m = json.loads(path.read_text())
    for key in ("code", "environment", "changes"):
        del m[key]
    path.write_text(json.dumps(m))
    (store / run_id / "runs" / "a" / "d1" / "0" / "run.json").unlink()
    (tmp_path / "study" / "run.py").write_text(RUN_SCRIPT + "# whatever\n")  # nothing to compare with
    assert cli("run", "--resume", run_id, "--store", str(store), "--no-results").exit_code == 0
    m = manifest_of(store)
    assert m["code"]["digest"] == code_identity(tmp_path / "study")["digest"] and m["changes"] == []


def test_a_tampered_code_block_is_a_clear_manifest_error(tmp_path: Path, cli) -> None:
    spec = write_study(tmp_path / "study")
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    path = store / run_id_of(store) / "manifest.json"
    m = json.loads(path.read_text())
    m["code"]["files"][0]["sha256"] = "not-a-hash"
    path.write_text(json.dumps(m))
    result = cli("show", "latest", "--store", str(store))
    assert result.exit_code == 2
    assert "code.files.0.sha256" in result.output


def test_digest_is_over_sorted_path_and_hash_lines() -> None:
    from expkit.runs.code import CodeFile

    files = [CodeFile("b.py", 1, "2" * 64), CodeFile("a.py", 1, "1" * 64)]
    expected = hashlib.sha256(f"a.py\0{'1' * 64}\nb.py\0{'2' * 64}\n".encode()).hexdigest()
    assert digest_of(files) == "sha256:" + expected


WRITES_INTO_ITS_DIRECTORY = RUN_SCRIPT + textwrap.dedent("""
    with open("runs.log", "a") as fh:  # outside the run contract, and common
        fh.write(os.environ["EXPKIT_CELL"] + "\\n")
    os.makedirs("cache", exist_ok=True)
    open(os.path.join("cache", os.environ["EXPKIT_CELL"].replace("/", "-")), "w").close()
""")


def test_what_the_runs_and_prepare_write_into_their_directory_is_not_code(tmp_path: Path, cli) -> None:
    study = tmp_path / "study"
    spec = write_study(study)
    (study / "run.py").write_text(WRITES_INTO_ITS_DIRECTORY)
    (study / "prep.py").write_text("import os\nos.makedirs('data', exist_ok=True)\nopen('data/x.csv', 'w').close()\n")
    spec.write_text(spec.read_text() + "  prepare: {command: [python, prep.py]}\n")
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    m = manifest_of(store)
    assert m["code"]["generated"] == ["cache", "data", "runs.log"]
    assert [f["path"] for f in m["code"]["files"]] == ["experiment.yml", "helper.py", "prep.py", "run.py"]
    (store / run_id_of(store) / "runs" / "a" / "d1" / "0" / "run.json").unlink()
    result = cli("run", "--resume", "latest", "--store", str(store), "--no-results")
    assert result.exit_code == 0, result.output
    m2 = manifest_of(store)
    assert m2["changes"] == [] and m2["code"]["digest"] == m["code"]["digest"]
    (study / "data" / "new.csv").write_text("generated, so still not code")
    (study / "run.py").write_text(WRITES_INTO_ITS_DIRECTORY + "# edited\n")
    result = cli("run", "--resume", "latest", "--store", str(store))
    assert result.exit_code == 2 and "modified run.py" in result.output and "new.csv" not in result.output


def test_a_leftover_of_a_killed_session_is_named_with_the_fix(tmp_path: Path, cli) -> None:
    """A session killed with SIGKILL cannot note what its runs wrote; the resume names the file and the fix."""
    study = tmp_path / "study"
    spec = write_study(study)
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    (study / "runs.log").write_text("what a killed session's runs left behind")
    result = cli("run", "--resume", "latest", "--store", str(store))
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "added runs.log" in line and ".expkitignore" in line
    (study / ".expkitignore").write_text("runs.log\n")  # .expkitignore itself is never code
    result = cli("run", "--resume", "latest", "--store", str(store), "--no-results")
    assert result.exit_code == 0, result.output
    assert manifest_of(store)["changes"] == []


def test_a_code_file_changed_while_the_session_ran_is_recorded(tmp_path: Path, cli) -> None:
    study = tmp_path / "study"
    spec = write_study(study)
    (study / "run.py").write_text(RUN_SCRIPT + "open('helper.py', 'a').write('# touched by a run\\n')\n")
    store = tmp_path / "store"
    assert cli("run", str(spec), "--store", str(store), "--no-results").exit_code == 0
    m = manifest_of(store)
    (change,) = m["changes"]
    assert change["during_session"] is True and change["session"] == 1
    assert change["code"]["files"]["modified"] == ["helper.py"]
    assert m["code"]["digest"] == change["code"]["to"] != change["code"]["from"]
    assert record(store, "a/d1/0")["code_digest"] == change["code"]["from"]

"""Issue 13, the run side: runs get a clean environment (no credentials), anything a run writes is
untrusted input (one bad cell is failed and the run goes on), symlinks in a cell's output are never
followed, a run's stragglers are killed before its cell is published, and SIGTERM/SIGINT stop
``expkit run`` within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3server import new_bucket_name

from expkit.stores import FileStore

SECRET = "s3cr3t-VALUE-that-must-never-leak-0123456789"
PLAIN = "plain-value-for-the-run-42"

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: {name}
  license: MIT
spec:
  image: python:3.12-slim@sha256:{digest}
  command: [python, run.py]
  algorithms: [{algorithms}]
  datasets: [d1]
  replicates: {replicates}
  metric: {{name: score, goal: minimize}}
{extra}"""

PRELUDE = """\
import json, os, shutil, signal, sys, time
from pathlib import Path
OUT = Path(os.environ["EXPKIT_OUTPUT_DIR"])
ALG = os.environ["EXPKIT_ALGORITHM"]
HERE = Path.cwd()
def result(value=1.0):
    (OUT / "result.json").write_text(json.dumps({"metrics": {"score": value}}))
"""


def make_spec(
    tmp_path: Path,
    script: str,
    *,
    algorithms: list[str] | None = None,
    replicates: int = 1,
    extra: str = "",
    name: str = "hard",
) -> Path:
    """``tmp_path/exp/experiment.yml`` running ``run.py`` (PRELUDE + script); returns the spec path."""
    spec_dir = tmp_path / "exp"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "run.py").write_text(PRELUDE + textwrap.dedent(script))
    algs = ", ".join(f"{{name: {a}}}" for a in (algorithms or ["alpha"]))
    path = spec_dir / "experiment.yml"
    path.write_text(
        SPEC.format(
            name=name,
            digest="a" * 64,
            algorithms=algs,
            replicates=replicates,
            extra=textwrap.indent(textwrap.dedent(extra), "  "),
        )
    )
    return path


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPKIT_", "AWS_"))}
    env.update(extra)
    return env


def expkit(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m expkit ARGS`` as a real subprocess (``run`` without the statistical summary)."""
    if args and args[0] == "run":
        args = (*args, "--no-results")
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args],
        env=env if env is not None else base_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr


def records(store_root: Path, run_id: str) -> dict[str, dict[str, Any]]:
    runs = store_root / run_id / "runs"
    return {"/".join(p.parent.relative_to(runs).parts): json.loads(p.read_text()) for p in runs.glob("*/*/*/run.json")}


def only_run(store_root: Path) -> str:
    [run_id] = FileStore(store_root).list_runs()
    return run_id


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], within: float = 30.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def kill_pids_in(path: Path) -> None:
    """SIGKILL every pid listed in the files matching ``path`` (a glob), so a failing test leaves nothing."""
    for f in path.parent.glob(path.name):
        for word in f.read_text().split():
            if word.isdigit():
                try:
                    os.kill(int(word), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# =============================================================================================
# Item 3: runs get a clean environment
# =============================================================================================

ENV_DUMP = """\
(OUT / "env.json").write_text(json.dumps(dict(os.environ)))
print("ENVIRONMENT", dict(os.environ))
result()
"""


def test_no_credential_reaches_a_run_on_s3(s3_server, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ENV_DUMP)
    bucket = new_bucket_name("env")
    s3_server.store(bucket, cache_dir=tmp_path / "setup-cache", create=True)
    cache = tmp_path / "cache"
    env = base_env(
        **s3_server.env(),
        EXPKIT_CACHE_DIR=str(cache),
        GITHUB_TOKEN=SECRET + "-token",
        EXPKIT_REGISTRY_PASSWORD=SECRET + "-registry",
        UNLISTED_VAR=PLAIN,
    )
    secrets = [s3_server.secret_key, s3_server.access_key, SECRET]
    url = f"s3://{bucket}/lab"
    ran = expkit("run", str(spec), "--store", url, "--json", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    store = s3_server.store(bucket, "lab", cache_dir=tmp_path / "check-cache")
    keys = list(store.list(f"{run_id}/"))
    seen = json.loads(store.get(f"{run_id}/runs/alpha/d1/0/env.json"))
    # The run saw only the clean environment: the basics and the contract's variables.
    assert not [k for k in seen if k.startswith(("AWS_", "EXPKIT_S3", "GITHUB")) or "PASSWORD" in k]
    assert "UNLISTED_VAR" not in seen
    assert {"PATH", "EXPKIT_RUN_ID", "EXPKIT_OUTPUT_DIR", "EXPKIT_SEED"} <= set(seen)
    stored = b"".join(store.get(k) for k in keys)
    assert b"ENVIRONMENT" in store.get(f"{run_id}/runs/alpha/d1/0/log.txt")  # the dump did happen
    cached = all_bytes_under(cache)
    for value in secrets:
        for where, blob in (("the bucket", stored), ("the cache", cached), ("stdout", ran.stdout.encode())):
            assert value.encode() not in blob, f"a credential reached {where}"
    assert PLAIN.encode() not in stored


def test_env_allow_list_passes_named_variables_only(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ENV_DUMP, extra="env: [MY_VAR, UNSET_VAR]\n")
    store_root = tmp_path / "store"
    env = base_env(MY_VAR=PLAIN, OTHER_VAR="other-value", AWS_SECRET_ACCESS_KEY=SECRET, LC_ALL="C.UTF-8", TZ="UTC")
    ran = expkit("run", str(spec), "--store", str(store_root), env=env)
    assert ran.returncode == 0, ran.stderr
    run_id = only_run(store_root)
    cell = store_root / run_id / "runs/alpha/d1/0"
    seen = json.loads((cell / "env.json").read_text())
    assert seen["MY_VAR"] == PLAIN
    assert "UNSET_VAR" not in seen and "OTHER_VAR" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen["LC_ALL"] == "C.UTF-8" and seen["TZ"] == "UTC" and seen["HOME"] == env["HOME"]
    assert SECRET.encode() not in all_bytes_under(store_root)
    assert "credential" not in ran.stderr  # MY_VAR is not one


def test_naming_a_credential_in_env_warns_and_passes_it(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ENV_DUMP, extra="env: [AWS_SECRET_ACCESS_KEY]\n")
    env = base_env(AWS_SECRET_ACCESS_KEY=SECRET)
    checked = expkit("validate", str(spec), env=env)
    assert checked.returncode == 0, checked.stderr
    assert "AWS_SECRET_ACCESS_KEY" in checked.stderr and "credential" in checked.stderr
    assert SECRET not in checked.stderr + checked.stdout
    store_root = tmp_path / "store"
    ran = expkit("run", str(spec), "--store", str(store_root), env=env)
    assert ran.returncode == 0, ran.stderr
    assert "AWS_SECRET_ACCESS_KEY" in ran.stderr and "credential" in ran.stderr
    seen = json.loads((store_root / only_run(store_root) / "runs/alpha/d1/0/env.json").read_text())
    assert seen["AWS_SECRET_ACCESS_KEY"] == SECRET  # asked for by name: passed


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ('["1BAD"]', "not a valid environment variable name"),
        ("[EXPKIT_SEED]", "set by expkit"),
        ("[MY_VAR, MY_VAR]", "duplicate"),
        ("MY_VAR", "list"),
    ],
)
def test_bad_env_entries_are_spec_errors(tmp_path: Path, entry: str, words: str) -> None:
    spec = make_spec(tmp_path, ENV_DUMP, extra=f"env: {entry}\n")
    checked = expkit("validate", str(spec))
    assert checked.returncode == 2, checked.stderr
    one_line_error(checked)
    assert "spec.env" in checked.stderr and words in checked.stderr, checked.stderr


def test_env_is_in_the_schema(tmp_path: Path) -> None:
    schema = json.loads(expkit("schema").stdout)
    prop = schema["$defs"]["ExperimentSpec"]["properties"]["env"]
    assert "environment" in json.dumps(prop)


def test_prepare_gets_the_clean_environment_too(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "result()\n",
        extra="env: [MY_VAR]\nprepare:\n  command: [python, prep.py]\n",
    )
    (spec.parent / "prep.py").write_text("import json, os\nprint('PREPENV', json.dumps(dict(os.environ)))\n")
    store_root = tmp_path / "store"
    env = base_env(MY_VAR=PLAIN, AWS_SECRET_ACCESS_KEY=SECRET)
    ran = expkit("run", str(spec), "--store", str(store_root), env=env)
    assert ran.returncode == 0, ran.stderr
    log = (store_root / only_run(store_root) / "prepare.log").read_text()
    seen = json.loads(log.split("PREPENV", 1)[1])
    assert seen["MY_VAR"] == PLAIN and "EXPKIT_RUN_ID" in seen
    assert "AWS_SECRET_ACCESS_KEY" not in seen and SECRET not in log


def test_argo_workflow_gets_no_local_credentials(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ENV_DUMP, extra="env: [AWS_SECRET_ACCESS_KEY, MY_VAR]\n")
    env = base_env(AWS_SECRET_ACCESS_KEY=SECRET, MY_VAR=PLAIN)
    rendered = expkit("render", str(spec), env=env)
    assert rendered.returncode == 0, rendered.stderr
    assert SECRET not in rendered.stdout and PLAIN not in rendered.stdout
    assert "AWS_SECRET_ACCESS_KEY" not in rendered.stdout


# =============================================================================================
# Items 5 and 6: anything a run writes is untrusted; symlinks are never followed
# =============================================================================================

HOSTILE = """\
outside = HERE / "outside"
outside.mkdir(exist_ok=True)
(outside / "value.json").write_text(json.dumps({"metrics": {"score": 12345.0}}))
(outside / "secret.txt").write_text("OUTSIDE-CONTENT")
if ALG == "good":
    result(0.5)
elif ALG == "bigint":
    (OUT / "result.json").write_text('{"metrics": {"score": ' + "9" * 400 + "}}")
elif ALG == "deepjson":
    (OUT / "result.json").write_text("[" * 200000 + "]" * 200000)
elif ALG == "nonutf8":
    (OUT / "result.json").write_bytes(b'{"metrics": {"score": 1.0, "\\xff\\xfe": 2}}')
elif ALG == "hugekey":
    (OUT / "result.json").write_text(json.dumps({"metrics": {"k" * 100000: "x" * 100000, "score": 1.0}}))
elif ALG == "rundir":
    result()
    (OUT / "run.json").mkdir()
    (OUT / "run.json" / "inner.txt").write_text("x")
elif ALG == "resultdir":
    (OUT / "result.json").mkdir()
elif ALG == "logdir":
    result()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    (OUT / "log.txt").unlink()
    (OUT / "log.txt").mkdir()
elif ALG == "rmout":
    result()
    shutil.rmtree(OUT)
elif ALG == "outlink":
    shutil.rmtree(OUT)
    os.symlink(outside, OUT)
elif ALG == "resultlink":
    os.symlink(outside / "value.json", OUT / "result.json")
elif ALG == "extralinks":
    result(0.25)
    os.symlink(outside / "secret.txt", OUT / "secret-link.txt")
    os.symlink(outside, OUT / "dir-link")
    os.symlink("/nonexistent/target", OUT / "dangling")
    (OUT / "sub").mkdir()
    os.symlink("../../..", OUT / "sub" / "up")
elif ALG == "fifo":
    result(0.75)
    os.mkfifo(OUT / "a-pipe")
elif ALG == "deepdirs":
    result(0.8)
    d = OUT
    for i in range(300):
        d = d / "d"
    d.mkdir(parents=True)
    (d / "leaf.txt").write_text("deep")
elif ALG == "badname":
    result(0.9)
    (OUT / "back\\\\slash.txt").write_text("x")
    (OUT / os.fsdecode(b"bad-\\xff-name.txt")).write_text("x")
"""

BAD_CELLS = {
    "bigint": "not a finite number",
    "deepjson": "nested",
    "nonutf8": "UTF-8",
    "hugekey": "not a finite number",
    "resultdir": "directory",
    "rmout": "output directory",
    "outlink": "output directory",
    "resultlink": "symbolic link",
}
GOOD_WITH_NOTES = {
    "rundir": "run.json",
    "logdir": "log.txt",
    "extralinks": "symbolic link",
    "fifo": "not a regular file",
    "deepdirs": "deep",
    "badname": "name",
}


@pytest.fixture(params=["filesystem", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store URL and the environment that reaches it: a directory, or a bucket on the real S3 server."""
    if request.param == "filesystem":
        return str(tmp_path / "store"), base_env()
    server = request.getfixturevalue("s3_server")
    bucket = new_bucket_name("hostile")
    server.store(bucket, cache_dir=tmp_path / "setup-cache", create=True)
    env = base_env(**server.env(), EXPKIT_CACHE_DIR=str(tmp_path / "cache"), EXPKIT_S3_ATTEMPTS="2")
    return f"s3://{bucket}/lab", env


def test_one_bad_cell_never_stops_the_run(tmp_path: Path, store_url: tuple[str, dict[str, str]]) -> None:
    url, env = store_url
    algorithms = ["good", *BAD_CELLS, *GOOD_WITH_NOTES]
    spec = make_spec(tmp_path, HOSTILE, algorithms=algorithms)
    ran = expkit("run", str(spec), "--store", url, "--json", "-j", "2", env=env, cwd=tmp_path, timeout=180)
    assert "Traceback" not in ran.stderr and "internal error" not in ran.stderr, ran.stderr
    assert ran.returncode == 1, ran.stderr  # some cells failed; the run itself went through
    doc = json.loads(ran.stdout)
    run_id = doc["run_id"]
    shown = json.loads(expkit("show", run_id, "--store", url, "--json", env=env, cwd=tmp_path).stdout)
    assert shown["counts"]["missing"] == 0 and shown["counts"]["total"] == len(algorithms), shown["counts"]
    failed = doc["failed"]
    assert set(failed) == {f"{a}/d1/0" for a in BAD_CELLS}, failed
    for alg, words in BAD_CELLS.items():
        reason = failed[f"{alg}/d1/0"]
        assert words in reason and len(reason) < 600, (alg, reason)
        assert "internal error" not in reason
    # The outside file's value never became a result.
    assert (tmp_path / "exp/outside/value.json").read_text() == json.dumps({"metrics": {"score": 12345.0}})
    for alg in GOOD_WITH_NOTES:
        assert f"{alg}/d1/0" not in failed
    # --resume has nothing to do and does not crash; --rerun-failed reruns the bad cells, again cleanly.
    resumed = expkit("run", "--resume", run_id, "--store", url, "--json", env=env, cwd=tmp_path, timeout=180)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr, resumed.stderr
    assert json.loads(resumed.stdout)["ran"] == 0
    rerun = expkit(
        "run", "--resume", run_id, "--rerun-failed", "--store", url, "--json", env=env, cwd=tmp_path, timeout=180
    )
    assert rerun.returncode == 1 and "Traceback" not in rerun.stderr, rerun.stderr
    assert json.loads(rerun.stdout)["ran"] == len(BAD_CELLS)


def test_hostile_outputs_leave_only_plain_files_in_the_store(tmp_path: Path) -> None:
    algorithms = ["good", *BAD_CELLS, *GOOD_WITH_NOTES]
    spec = make_spec(tmp_path, HOSTILE, algorithms=algorithms)
    store_root = tmp_path / "store"
    ran = expkit("run", str(spec), "--store", str(store_root), "-j", "2", timeout=180)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    run_id = only_run(store_root)
    recs = records(store_root, run_id)
    assert len(recs) == len(algorithms)
    for path in (store_root / run_id).rglob("*"):
        assert not path.is_symlink(), f"a symbolic link reached the store: {path}"
        assert path.is_dir() or path.is_file(), f"not a regular file in the store: {path}"
    assert not any(store_root.rglob(".tmp-*"))
    for alg, words in GOOD_WITH_NOTES.items():
        rec = recs[f"{alg}/d1/0"]
        assert rec["status"] == "succeeded", (alg, rec)
        notes = " ".join(rec.get("output_notes") or [])
        assert words in notes, (alg, rec)
    assert (store_root / run_id / "runs/rundir/d1/0/run.json").is_file()
    assert not (store_root / run_id / "runs/rundir/d1/0/run.json/inner.txt").exists()
    assert "secret.txt" in " ".join(recs["extralinks/d1/0"]["output_notes"])  # a note names the link's target
    ext = store_root / run_id / "runs/extralinks/d1/0"
    assert sorted(p.name for p in ext.iterdir()) == ["log.txt", "result.json", "run.json", "sub"]
    assert b"OUTSIDE-CONTENT" not in all_bytes_under(store_root)
    assert recs["resultlink/d1/0"]["status"] == "failed"
    assert "value.json" in recs["resultlink/d1/0"]["reason"]  # names the link's target
    # results and export work on the run, bad cells and all.
    out_dir = tmp_path / "results"
    res = expkit("results", run_id, "--store", str(store_root), "-o", str(out_dir), "--format", "png")
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr and "error:" not in res.stderr, res.stderr
    stats = json.loads((out_dir / "stats.json").read_text())
    assert stats["run"]["run_id"] == run_id
    bundle = tmp_path / "bundle.zip"
    exp = expkit("export", run_id, "--store", str(store_root), "-o", str(bundle), "--no-report")
    assert exp.returncode == 0, exp.stderr
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        assert any(n.endswith("extralinks/d1/0/result.json") for n in names)
        assert not any("secret-link" in n or "dir-link" in n for n in names)
        # (code/run.py is the run's own source, which holds the text it writes outside)
        assert all(b"OUTSIDE-CONTENT" not in zf.read(n) for n in names if not n.startswith("code/"))


def test_parse_result_turns_hostile_json_into_artifact_errors() -> None:
    from expkit.core.contract import parse_result
    from expkit.core.errors import ArtifactError

    hostile = [
        b'{"metrics": {"score": ' + b"9" * 400 + b"}}",
        b'{"metrics": {"score": -' + b"9" * 400 + b"}}",
        b'{"metrics": {"score": 1' + b"0" * 5000 + b"}}",
        b"[" * 200_000 + b"]" * 200_000,
        b'{"metrics": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
        b'{"metrics": {"score": 1}, "trajectory": [{"step": ' + b"9" * 400 + b"}]}",
        b'{"metrics": {"score": 1}, "trajectory": [{"step": 1, "x": ' + b"9" * 400 + b"}]}",
        b'\xff\xfe{"metrics": {}}',
        b'{"metrics": {"score": NaN}}',
        b'{"metrics": {"score": Infinity}}',
        b"\x00" * 64,
        json.dumps({"metrics": {"x" * 1_000_000: 1.0}}).encode(),
    ]
    for data in hostile:
        with pytest.raises(ArtifactError) as info:
            parse_result(data, "score")
        assert len(str(info.value)) < 600, str(info.value)[:200]
    # Large integers that fit a float are numbers.
    assert parse_result(b'{"metrics": {"score": ' + b"9" * 300 + b"}}", "score")["metrics"]["score"] > 1e299


# =============================================================================================
# Item 10: a run's stragglers are killed before its cell is published
# =============================================================================================

DAEMON = """\
mode = ALG
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    if mode == "setsid":
        os.setsid()
    elif mode == "setpgid":
        os.setpgid(0, 0)
    if os.fork() != 0:
        os._exit(0)
    os.write(w, str(os.getpid()).encode())
    os.close(w)
    time.sleep(2.0)
    print("LATE LINE FROM A DAEMON", flush=True)
    (OUT / "late.txt").write_text("late")
    time.sleep(60)
    os._exit(0)
os.close(w)
pid = os.read(r, 32).decode()
with open(HERE / f"daemon-{ALG}.pid", "w") as fh:
    fh.write(pid)
print("main process done", flush=True)
result()
"""


def test_stragglers_are_killed_before_the_cell_is_published(tmp_path: Path) -> None:
    modes = ["setsid", "setpgid", "plain"]
    spec = make_spec(tmp_path, DAEMON, algorithms=modes)
    store_root = tmp_path / "store"
    try:
        ran = expkit("run", str(spec), "--store", str(store_root), "-j", "3")
        assert ran.returncode == 0, ran.stderr
        run_id = only_run(store_root)
        pids = {m: int((spec.parent / f"daemon-{m}.pid").read_text()) for m in modes}
        for mode, pid in pids.items():
            assert not pid_alive(pid), f"the {mode} daemon of the run outlived its cell"
        logs = {m: (store_root / run_id / f"runs/{m}/d1/0/log.txt").read_bytes() for m in modes}
        time.sleep(2.5)  # past the daemons' sleep: nothing appears later
        for mode in modes:
            cell = store_root / run_id / f"runs/{mode}/d1/0"
            assert (cell / "log.txt").read_bytes() == logs[mode]
            assert b"LATE LINE" not in logs[mode] and not (cell / "late.txt").exists()
    finally:
        kill_pids_in(spec.parent / "daemon-*.pid")


# =============================================================================================
# Item 4: SIGTERM / SIGINT stop `expkit run` within seconds
# =============================================================================================

STUBBORN = """\
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(HERE / "pids", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
if (HERE / "fast").exists():
    result()
    sys.exit(0)
time.sleep(600)
"""

STUBBORN_PREPARE = """\
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open("pids", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
if not Path("fast").exists():
    time.sleep(600)
"""


def start_expkit(args: list[str], env: dict[str, str], *, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "expkit", *args, "--no-results"]
    if ignore_sigint:  # what a non-interactive shell does to a background job: SIGINT inherited as ignored
        argv = [
            sys.executable,
            "-c",
            "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])",
            *argv,
        ]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_and_wait(proc: subprocess.Popen[str], sig: int, pids_file: Path, n_pids: int) -> tuple[int, str]:
    """Once ``n_pids`` processes are listed in ``pids_file``, send ``sig``; the exit code and stderr
    (the process must end within 15 s)."""
    try:
        assert wait_until(
            lambda: pids_file.exists() and len(pids_file.read_text().split()) >= n_pids or proc.poll() is not None
        )
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_run_whose_cells_ignore_sigterm(tmp_path: Path, sig: int) -> None:
    spec = make_spec(tmp_path, STUBBORN, replicates=2)
    store_root = tmp_path / "store"
    pids_file = spec.parent / "pids"
    proc = start_expkit(["run", str(spec), "--store", str(store_root), "-j", "2"], base_env(), ignore_sigint=True)
    try:
        code, err = stop_and_wait(proc, sig, pids_file, 2)
        assert code == 130, err
        assert "Traceback" not in err and "resume" in err, err
        pids = [int(p) for p in pids_file.read_text().split()]
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), within=5)
    finally:
        kill_pids_in(pids_file)
    run_id = only_run(store_root)
    assert json.loads((store_root / run_id / "manifest.json").read_text())["status"] == "interrupted"
    (spec.parent / "fast").write_text("")  # changes what the runs do: a change of the code, recorded
    resumed = expkit("run", "--resume", run_id, "--allow-changes", "--store", str(store_root), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["succeeded"] == 2


def test_sigterm_during_a_stubborn_prepare_stops_it_and_records_interrupted(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "result()\n", extra="prepare:\n  command: [python, prep.py]\n")
    (spec.parent / "prep.py").write_text(STUBBORN_PREPARE)
    store_root = tmp_path / "store"
    pids_file = spec.parent / "pids"
    proc = start_expkit(["run", str(spec), "--store", str(store_root)], base_env())
    try:
        code, err = stop_and_wait(proc, signal.SIGTERM, pids_file, 1)
        assert code == 130, err
        assert "Traceback" not in err, err
        [pid] = [int(p) for p in pids_file.read_text().split()]
        assert wait_until(lambda: not pid_alive(pid), within=5), "the prepare step outlived expkit"
    finally:
        kill_pids_in(pids_file)
    run_id = only_run(store_root)
    assert json.loads((store_root / run_id / "manifest.json").read_text())["status"] == "interrupted"
    (spec.parent / "fast").write_text("")  # changes what the prepare step does: a change of the code, recorded
    resumed = expkit("run", "--resume", run_id, "--allow-changes", "--store", str(store_root))
    assert resumed.returncode == 0, resumed.stderr


HANGING_STORE = """\
import sys, time
from expkit.stores.filesystem import FileStore
real = FileStore.publish_cell
def publish_cell(self, run_id, cell_key, src):
    time.sleep(600)  # a store that never answers
    return real(self, run_id, cell_key, src)
FileStore.publish_cell = publish_cell
from expkit.cli import main
sys.argv = ["expkit", *sys.argv[1:]]
main()
"""


def test_sigterm_stops_a_run_stuck_on_its_store(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "with open(HERE / 'pids', 'a') as fh:\n    fh.write(f'{os.getpid()}\\n')\nresult()\n")
    store_root = tmp_path / "store"
    pids_file = spec.parent / "pids"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_STORE, "run", str(spec), "--store", str(store_root), "--no-results"],
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, err = stop_and_wait(proc, signal.SIGTERM, pids_file, 1)
    assert code == 130, err
    assert "interrupted" in err and "stopped at once" in err and "Traceback" not in err, err


def test_a_command_run_in_process_puts_the_signal_handlers_back(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from expkit.cli import app

    spec = make_spec(tmp_path, "result()\n")
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    ran = CliRunner().invoke(app, ["run", str(spec), "--store", str(tmp_path / "store"), "--no-results"])
    assert ran.exit_code == 0, ran.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

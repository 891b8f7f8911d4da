"""Issue 13, hostile input: alias bombs and size/depth limits on YAML and JSON (item 4), malformed
spec fields and ``-p`` values (item 8), extreme metric values in statistics, tables and plots
(item 7), and a frozen S3 server bounded by a retry deadline (item 10)."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from expkit.analysis.stats import analyze, describe
from expkit.cli import app
from expkit.core.errors import ArtifactError, InputError, SpecError
from expkit.core.safejson import load_json
from expkit.runner import start_run
from expkit.spec import load_spec, load_spec_text
from expkit.stores import FileStore

SPEC = textwrap.dedent("""\
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: hostile, license: MIT}
    spec:
      image: python:3.12-slim@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
      command: [python, run.py]
      params: {budget: 10}
      algorithms: [{name: a}]
      datasets: [d1]
      replicates: 2
      metric: {name: loss, goal: minimize}
""")

#: 9 aliases per level, 10 levels: 3.5e9 values once expanded, in under 1 KB of YAML.
BOMB = "\n".join(
    ["    bomb:", "      a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 11)]
)

#: A child of a test gets at most this much address space: a regression fails, it does not swap the machine.
CHILD_ADDRESS_SPACE = 2 << 30
#: Memory a refused input may take (the Python interpreter with expkit's imports is about 100 MB).
BOUNDED_RSS = 300 << 20


@dataclass
class Finished:
    """A child process that ran to its end (or was killed at its deadline)."""

    returncode: int
    stdout: str
    stderr: str
    max_rss: int  # bytes
    killed: bool


#: Runs argv[2:] and writes the child's peak RSS (bytes) into the file argv[1]. Measuring through this small
#: launcher matters: Linux carries a process's peak RSS across fork and exec, so a child forked straight from a
#: big pytest process would report pytest's own memory as its peak.
_LAUNCHER = (
    "import os, resource, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss * 1024))\n"
    "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"
)


def run_measured(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float) -> Finished:
    """Run ``args`` with a capped address space; its own peak memory comes from ``wait4`` in a small launcher."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(peak_file), *args]
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=env, stdout=out, stderr=err, preexec_fn=cap, start_new_session=True
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and what it started

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
        return Finished(
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            peak,
            killed.is_set(),
        )


def expkit(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Finished:
    return run_measured([sys.executable, "-m", "expkit", *args], cwd=cwd, env=env, timeout=timeout)


def one_error_line(result: Finished) -> str:
    """The one line a refused input prints (no traceback)."""
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def spec_with(tmp_path: Path, old: str, new: str, name: str = "experiment.yml") -> Path:
    assert old in SPEC
    path = tmp_path / name
    path.write_text(SPEC.replace(old, new), encoding="utf-8")
    return path


def bomb_spec(tmp_path: Path) -> Path:
    return spec_with(tmp_path, "  params: {budget: 10}\n", "  params:\n    budget: 10\n" + BOMB + "\n")


# ---------------------------------------------------------------------------------------------
# Item 4: alias bombs, size and depth limits
# ---------------------------------------------------------------------------------------------


def test_alias_bomb_is_refused_in_seconds_and_bounded_memory(tmp_path: Path) -> None:
    spec = bomb_spec(tmp_path)
    assert spec.stat().st_size < 3000
    result = expkit("validate", str(spec), cwd=tmp_path, timeout=30)
    assert not result.killed, "validate of an alias bomb did not finish within 30 s"
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "experiment.yml:" in line and "spec.params.bomb" in line and "alias" in line
    assert result.max_rss < BOUNDED_RSS, f"validate took {result.max_rss >> 20} MB"


def test_alias_bomb_in_an_imported_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run.py").write_text(
        "import json, os\n"
        "out = os.path.join(os.environ['EXPKIT_OUTPUT_DIR'], 'result.json')\n"
        "json.dump({'metrics': {'loss': 1.0}}, open(out, 'w'))\n"
    )
    good = spec_with(tmp_path, "replicates: 2", "replicates: 1")
    store = FileStore(tmp_path / "store")
    run_id = start_run(good, store, workers=1).run_id
    assert expkit("export", run_id, "-o", "good.zip", "--store", str(tmp_path / "store"), cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(tmp_path / "good.zip") as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "experiment.yml":
                text = data.decode()
                data = text.replace("  params:\n", "  params:\n" + BOMB + "\n", 1).encode()
                assert data != text.encode()
            dst.writestr(info, data)
    result = expkit("import", str(bad), "--store", str(tmp_path / "other"), cwd=tmp_path, timeout=30)
    assert not result.killed, "import of a bundle with an alias bomb did not finish within 30 s"
    assert result.returncode == 2, result.stderr
    assert "alias" in one_error_line(result)
    assert result.max_rss < BOUNDED_RSS
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    spec = spec_with(
        tmp_path,
        "  params: {budget: 10}\n  algorithms: [{name: a}]\n",
        "  params: &common {budget: 10, layers: &layers [8, 8]}\n"
        "  algorithms: [{name: a, params: *common}, {name: b, params: {budget: 20, layers: *layers}}]\n",
    )
    loaded = load_spec(spec)
    assert loaded.experiment.spec.algorithms[1].params == {"budget": 20, "layers": [8, 8]}


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "params: {budget: 10}", "params: {budget: 10, loop: &loop [1, *loop]}")
    with pytest.raises(SpecError, match=r"experiment.yml:7: spec.params.loop.*alias"):
        load_spec(spec)


def test_deeply_nested_param_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    spec = spec_with(tmp_path, "params: {budget: 10}", "params: {budget: 10, deep: " + deep + "}")
    result = expkit("validate", str(spec), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "experiment.yml:7: spec.params.deep" in line and "100 levels" in line


def test_oversized_spec_is_refused_before_parsing(tmp_path: Path) -> None:
    filler = "# " + "x" * 1000 + "\n"
    spec = spec_with(tmp_path, "kind: Experiment\n", "kind: Experiment\n" + filler * 5000)
    result = expkit("validate", str(spec), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "experiment.yml" in line and "bytes" in line
    with pytest.raises(SpecError, match="larger than 4194304 bytes"):
        load_spec_text(spec.read_text())


def test_a_device_as_spec_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    result = expkit("validate", "/dev/zero", cwd=tmp_path, timeout=30)
    assert not result.killed
    assert result.returncode == 2
    assert "/dev/zero" in one_error_line(result)
    assert result.max_rss < BOUNDED_RSS


def test_stored_spec_that_is_not_utf8_is_an_artifact_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.put("hostile-abcde/experiment.yml", b"\xff\xfe\x00not utf-8")
    with pytest.raises(ArtifactError, match="not UTF-8"):
        store.spec_text("hostile-abcde")


@pytest.mark.parametrize(
    "payload, problem",
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested more than 100 levels"),
        (b'{"a": ' + b"9" * 5001 + b"}", "more than 4300 digits"),
        (b"{" * 50 + b"", "not valid JSON"),
        (b'"\xff"', "not UTF-8"),
        (b" " * (16 * 1024 * 1024 + 1), "over the"),
    ],
)
def test_store_json_reads_are_bounded(tmp_path: Path, payload: bytes, problem: str) -> None:
    store = FileStore(tmp_path / "store")
    store.put("run-abcde/some.json", payload)
    with pytest.raises(ArtifactError, match=problem):
        store.get_json("run-abcde/some.json")
    with pytest.raises(InputError, match=f"-p x .*{problem}"):
        load_json(payload, what="-p x", error=InputError)


# ---------------------------------------------------------------------------------------------
# Item 8: malformed fields and -p values are exit 2 with one line, never "internal error"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("replicates: 2", "replicates: 2\n  seed: " + "7" * 5001, "experiment.yml:11: spec.seed"),
        ("replicates: 2", "replicates: 2\n  timeout: .inf", "experiment.yml:11: spec.timeout"),
        ("replicates: 2", "replicates: 2\n  timeout: .nan", "experiment.yml:11: spec.timeout"),
        ("replicates: 2", "replicates: 2\n  timeout: 1.0e+308", "experiment.yml:11: spec.timeout"),
        ("replicates: 2", "replicates: 2\n  timeout: '" + "9" * 400 + "h'", "experiment.yml:11: spec.timeout"),
        ("replicates: 2", "replicates: 2\n  timeout: " + "9" * 400, "experiment.yml:11: spec.timeout"),
        (
            "replicates: 2",
            "replicates: 2\n  resources: {cpu: " + "9" * 400 + "}",
            "experiment.yml:11: spec.resources.cpu",
        ),
        (
            "replicates: 2",
            "replicates: 2\n  prepare: {command: [python, x.py], timeout: .inf}",
            "experiment.yml:11: spec.prepare.timeout",
        ),
        ("replicates: 2", "replicates: 2\n  resources: {cpu: .inf}", "experiment.yml:11: spec.resources.cpu"),
        ("replicates: 2", "replicates: 2\n  resources: {cpu: .nan}", "experiment.yml:11: spec.resources.cpu"),
        ("replicates: 2", "replicates: 2\n  resources: {cpu: '1e400m'}", "experiment.yml:11: spec.resources.cpu"),
        ("params: {budget: 10}", "params: {budget: .inf}", "experiment.yml:7: spec.params.budget"),
        ("params: {budget: 10}", "params: {budget: [1, {x: 1.0e+999}]}", "experiment.yml:7: spec.params.budget[1].x"),
        ("params: {budget: 10}", "params: {budget: " + "9" * 5000 + "}", "experiment.yml:7: spec.params.budget"),
    ],
)
def test_malformed_field_is_exit_2_naming_file_and_field(tmp_path: Path, old: str, new: str, where: str) -> None:
    spec = spec_with(tmp_path, old, new)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert where in result.output, result.output


@pytest.mark.parametrize(
    "value, problem",
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 100 levels"),
        ("9" * 5001, "more than 4300 digits"),
        ("Infinity", "finite"),
        ("[1, NaN]", "finite"),
        ("1e999", "finite"),
    ],
)
def test_malformed_override_is_exit_2_naming_the_flag(tmp_path: Path, value: str, problem: str) -> None:
    spec = spec_with(tmp_path, "", "")
    result = CliRunner().invoke(app, ["validate", str(spec), "-p", f"budget={value}"])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "-p budget" in result.output and problem in result.output, result.output


def test_an_ordinary_override_still_parses_as_json_or_text(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "", "")
    params = load_spec(spec, ['budget=[1, {"a": 2}]']).experiment.spec.params
    assert params["budget"] == [1, {"a": 2}]
    assert load_spec(spec, ["budget=abc"]).experiment.spec.params["budget"] == "abc"


# ---------------------------------------------------------------------------------------------
# Item 7: extreme metric values in the statistics, the tables, the plots and the report
# ---------------------------------------------------------------------------------------------

VALUES_SCRIPT = textwrap.dedent("""\
    import json, os
    alg, ds, rep = os.environ["EXPKIT_ALGORITHM"], os.environ["EXPKIT_DATASET"], int(os.environ["EXPKIT_REPLICATE"])
    v = json.load(open("values.json"))[alg][ds][rep]
    traj = [{"step": 1, "loss": v}, {"step": 10.0 ** 300, "loss": v / 2}, {"step": 1.7e308, "loss": -v}]
    out = os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json")
    json.dump({"metrics": {"loss": v}, "trajectory": traj}, open(out, "w"))
""")

EXTREME_SPEC = textwrap.dedent("""\
    apiVersion: expkit/v1
    kind: Experiment
    metadata: {name: extreme}
    spec:
      image: python:3.12-slim@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
      command: [python, run.py]
      algorithms: [{name: a}, {name: b}, {name: c}]
      datasets: [d1, d2, d3, d4, d5]
      replicates: 4
      metric: {name: loss, goal: minimize}
""")

HUGE = (1.7e308, -1.7e308, 1e308, -1e308, 5e307, -5e307, 1.2e308, 3.3e307)


def extreme_run(tmp_path: Path, values: dict[str, dict[str, list[float]]]) -> tuple[FileStore, str]:
    (tmp_path / "run.py").write_text(VALUES_SCRIPT)
    (tmp_path / "values.json").write_text(json.dumps(values))
    (tmp_path / "experiment.yml").write_text(EXTREME_SPEC)
    store = FileStore(tmp_path / "store")
    outcome = start_run(tmp_path / "experiment.yml", store, workers=2)
    return store, outcome.run_id


def exact_mean_std(values: Sequence[float]) -> tuple[Fraction, float]:
    """The exact mean, and the sample std (ddof=1) rounded once (inf when it overflows a float)."""
    xs = [Fraction(v) for v in values]
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    # sqrt of a Fraction: scale to an integer square root with 60 extra bits, then to float
    num, den = var.numerator, var.denominator
    root = Fraction(math.isqrt(num * den * 4**60), den * 2**60)
    try:
        return mean, float(root)
    except OverflowError:
        return mean, math.inf


def test_results_with_metrics_near_the_float_limits(tmp_path: Path) -> None:
    values = {
        alg: {f"d{d}": [HUGE[(a * 3 + d + r) % len(HUGE)] for r in range(4)] for d in range(1, 6)}
        for a, alg in enumerate(("a", "b", "c"))
    }
    store, run_id = extreme_run(tmp_path, values)
    result = expkit("results", run_id, "--store", str(store.root), "-o", "out", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr and "internal error" not in result.stderr
    out = tmp_path / "out"
    summary = pd.read_csv(out / "summary.csv")
    assert "inf" not in (out / "summary.csv").read_text().lower()
    for row in summary.itertuples():
        mean, std = exact_mean_std(values[row.algorithm][row.dataset])
        assert row.mean == pytest.approx(float(mean), rel=1e-12)
        if math.isfinite(std):
            assert row.std == pytest.approx(std, rel=1e-12)
        else:
            assert math.isnan(row.std)  # beyond the float range: missing, and a note says why
    stats = json.loads((out / "stats.json").read_text())
    notes = " ".join(stats["notes"])
    assert "float range" in notes
    beyond = [r for r in stats["descriptives"] if r["std"] is None or r["iqr"] is None]
    assert beyond and all("float range" in r["note"] for r in beyond)
    assert "float range" in (out / "report.md").read_text()
    assert (out / "boxplots-loss.png").stat().st_size > 0
    assert (out / "convergence-loss-step.png").stat().st_size > 0


def tidy(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    rows = [
        {"algorithm": a, "dataset": d, "replicate": r, "seed": r, "metric": "loss", "value": v, "status": "succeeded"}
        for a, per in values.items()
        for d, vs in per.items()
        for r, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def test_std_of_values_between_1e200_and_1e300_is_finite_and_accurate() -> None:
    values = {
        "a": {"d1": [1e200, 3e250, 7e299, 1e300, 2.5e280], "d2": [1e300, 9e299, 8e299, 7e299, 6e299]},
        "b": {"d1": [-1e300, 1e300, -1e299, 1e299, 0.0], "d2": [1e-300, 1e300, 5e-324, 2e300, 3e300]},
    }
    desc = describe(tidy(values), metric="loss")
    for row in desc.itertuples():
        mean, std = exact_mean_std(values[row.algorithm][row.dataset])
        assert math.isfinite(row.std) and row.std == pytest.approx(std, rel=1e-12)
        assert row.mean == pytest.approx(float(mean), rel=1e-12)


def test_ordinary_values_give_the_same_descriptives_as_numpy() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    values = {a: {d: list(rng.normal(5.0, 2.0, size=7)) for d in ("d1", "d2")} for a in ("a", "b")}
    desc = describe(tidy(values), metric="loss")
    for row in desc.itertuples():
        xs = np.array(values[row.algorithm][row.dataset])
        assert row.mean == xs.sum() / len(xs)  # bit for bit: reports of ordinary runs do not change
        assert row.std == np.sqrt(((xs - xs.mean()) ** 2).sum() / (len(xs) - 1))


def test_values_that_differ_below_float_precision_get_a_note() -> None:
    ulp = math.ulp(1e300)
    values = {
        "a": {f"d{i}": [1e300 + k * ulp for k in (0, 1, 2, 1)] for i in range(3)},
        "b": {f"d{i}": [1e300 + k * ulp for k in (1, 3, 2, 2)] for i in range(3)},
    }
    analysis = analyze(tidy(values), metric="loss", goal="minimize", paired=False)
    assert any("float precision" in n for n in analysis.notes), analysis.notes
    ordinary = analyze(
        tidy({"a": {"d1": [1.0, 2.0, 3.0]}, "b": {"d1": [2.0, 3.0, 4.0]}}), metric="loss", goal="minimize", paired=False
    )
    assert not any("float" in n for n in ordinary.notes)


@pytest.mark.parametrize(
    "values",
    [
        [5e-324, 1e-320, 2e-310, 1e-308, 3e-315],  # subnormal
        [1.7e308, -1.7e308, 0.0, 1e308, -5e307],  # the whole float range
        [1e300, 1e300, 1e300, 1e300, 1e300],  # identical huge values
    ],
)
def test_plots_draw_any_finite_values(tmp_path: Path, values: list[float]) -> None:
    from expkit.analysis.plots import plot_boxplots, plot_convergence

    table = tidy({"a": {"d1": values}, "b": {"d1": [v / 2 for v in values]}})
    assert plot_boxplots(table, metric="loss", goal="minimize", out_dir=tmp_path, formats=("png",))
    traj = pd.DataFrame(
        [
            {"algorithm": a, "dataset": "d1", "replicate": r, "axis": axis, "x": x, "metric": "loss", "value": v}
            for a in ("a", "b")
            for r, v in enumerate(values)
            for axis, xs in (("step", (1.0, 1e300, 1.7e308)), ("time", (5e-324, 1.0, 1e308)))
            for x in xs
        ]
    )
    for axis in ("step", "time"):
        written = plot_convergence(traj, metric="loss", goal="minimize", out_dir=tmp_path, axis=axis, formats=("png",))
        assert written and all(p.stat().st_size > 0 for p in written)


# ---------------------------------------------------------------------------------------------
# Item 10: a frozen S3 server (accepts connections, never answers) fails within the retry deadline
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def frozen_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def s3_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPKIT_", "AWS_"))}
    env.update(
        EXPKIT_S3_ENDPOINT=endpoint,
        AWS_ACCESS_KEY_ID="AKIDFROZEN",
        AWS_SECRET_ACCESS_KEY="frozen-secret-never-shown",
        EXPKIT_CACHE_DIR=str(tmp_path / "cache"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),  # no profile file unless EXPKIT_CONFIG names one
    )
    env.update(extra)
    return env


def test_frozen_s3_endpoint_fails_within_the_deadline(tmp_path: Path, frozen_endpoint: str) -> None:
    env = s3_env(tmp_path, frozen_endpoint, EXPKIT_S3_DEADLINE="3")
    started = time.monotonic()
    result = expkit("list", "--store", "s3://frozen-bucket/runs", cwd=tmp_path, env=env, timeout=45)
    took = time.monotonic() - started
    assert not result.killed, "expkit list against a frozen endpoint ran past 45 s"
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "gave up after 3 s of retries" in line and "EXPKIT_S3_DEADLINE" in line, line
    assert "frozen-secret-never-shown" not in result.stderr + result.stdout
    assert took < 30


def test_deadline_from_the_profile_file(tmp_path: Path, frozen_endpoint: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[s3]\ndeadline = 2\n")
    config.chmod(0o600)
    env = s3_env(tmp_path, frozen_endpoint, EXPKIT_CONFIG=str(config))
    result = expkit("list", "--store", "s3://frozen-bucket/runs", cwd=tmp_path, env=env, timeout=45)
    assert not result.killed and result.returncode == 1, result.stderr
    assert "gave up after 2 s of retries" in one_error_line(result)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e9"])
def test_bad_deadline_is_one_line_with_exit_2(tmp_path: Path, value: str) -> None:
    env = s3_env(tmp_path, "http://127.0.0.1:9", EXPKIT_S3_DEADLINE=value)
    result = expkit("list", "--store", "s3://some-bucket/runs", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "EXPKIT_S3_DEADLINE" in one_error_line(result)


def test_default_deadline_is_30_seconds() -> None:
    from expkit.stores.s3.retry import RetryPolicy

    assert RetryPolicy().deadline == 30.0
    assert RetryPolicy.from_env({}).deadline == 30.0
    assert RetryPolicy.from_env({"EXPKIT_S3_DEADLINE": "7.5"}).deadline == 7.5


def test_bulk_reads_from_a_stopped_server_are_bounded_then_recover(s3_fault_server, tmp_path: Path) -> None:
    from expkit.stores.s3.errors import GaveUp
    from expkit.stores.s3.retry import RetryPolicy

    store = s3_fault_server.store(
        "frozen-bulk",
        "runs",
        cache_dir=tmp_path / "cache",
        create=True,
        cache=False,
        read_timeout=60.0,
        retry=RetryPolicy(attempts=5, base_delay=0.05, max_delay=0.2, deadline=2.0),
    )
    keys = [f"run-abcde/runs/a/d/{i}/result.json" for i in range(40)]
    for key in keys:
        store.put(key, b'{"metrics": {"loss": 1.0}}')
    proc = s3_fault_server.server.proc
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: the kernel still accepts connections
    try:
        started = time.monotonic()
        with pytest.raises(GaveUp, match="gave up after 2 s of retries"):
            store.read_many(keys)
        assert time.monotonic() - started < 15
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert len(store.read_many(keys)) == len(keys)  # the server is back: the same store reads everything

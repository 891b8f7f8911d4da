"""Benchmark: what the local executor adds on top of launching the runs' processes.

N trivial runs go through
``expkit.runner.start_run`` into a temporary FileStore, with 1 and 2 workers. The same processes —
same argv, same environment, same working directory, same output files — are also launched by a
bare loop in this process (sequential for 1 worker, a 2-thread pool for 2 workers). Everything is
measured in this one process run, so the figures are ratios, not absolute promises.

Printed:

* overhead per run (ms)       = (expkit_1w - bare_1w) / N                     target <= 20 ms
* parallel efficiency (expkit) = (expkit_1w / expkit_2w) / 2                   target >= 0.85
* efficiency vs the bare loop  = bare_2w / expkit_2w (1.0 = as fast as the bare 2-thread loop)
* the bare loop's own efficiency (bare_1w / bare_2w) / 2, for reference: it is the machine's ceiling

Two kinds of trivial run (``--run``): ``python`` (default) is a Python one-liner that writes a valid
``result.json`` — the smallest run a researcher's Python script can be (~15–25 ms, interpreter
start-up); ``sh`` is a ``/bin/sh`` one-liner (~1 ms), a stress case where expkit's own per-run
Python work, serialised by the GIL, is of the same size as the run itself.

Usage: ``python bench/local_overhead.py [--run python|sh] [--runs 500] [--repeat 3]`` (each figure: the fastest
repeat). Exit status 0 always; the figures and whether each target is met are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from expkit.core.contract import run_environment
from expkit.runner import start_run
from expkit.stores import FileStore

SH_SCRIPT = 'printf \'{"metrics": {"value": %s}}\\n\' "$EXPKIT_REPLICATE" > "$EXPKIT_OUTPUT_DIR/result.json"'
PY_SCRIPT = (
    'import os; open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w")'
    '.write(\'{"metrics": {"value": %s}}\' % os.environ["EXPKIT_REPLICATE"])'
)
RUNS = {  # name -> (argv in the spec, argv the bare loop launches)
    "python": (["python", "-c", PY_SCRIPT], [sys.executable, "-c", PY_SCRIPT]),
    "sh": (["/bin/sh", "-c", SH_SCRIPT], ["/bin/sh", "-c", SH_SCRIPT]),
}
ARGV: list[str] = RUNS["python"][1]

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: bench
spec:
  image: busybox:1.36
  command: {command}
  algorithms: [{{name: trivial}}]
  datasets: [none]
  replicates: {runs}
  metric: {{name: value, goal: minimize}}
"""


def bare_run(workdir: Path, outroot: Path, replicate: int) -> None:
    """Launch one run's process the way the executor does, without expkit around it."""
    out = outroot / f"r{replicate}"
    out.mkdir()
    env = {
        **os.environ,
        **run_environment(
            run_id="bench-bare0",
            algorithm="trivial",
            dataset="none",
            replicate=replicate,
            seed=replicate,
            params={},
            output_dir=str(out),
        ),
    }
    with open(out / "log.txt", "wb") as log_fh:
        proc = subprocess.Popen(
            ARGV,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if proc.wait() != 0:
        raise SystemExit(f"bare run {replicate} failed")
    json.loads((out / "result.json").read_bytes())  # the executor reads it too


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bare(workdir: Path, runs: int, workers: int) -> float:
    outroot = Path(tempfile.mkdtemp(dir=workdir, prefix="bare-"))
    t0 = time.perf_counter()
    if workers == 1:
        for r in range(runs):
            bare_run(workdir, outroot, r)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda r: bare_run(workdir, outroot, r), range(runs)))
    elapsed = time.perf_counter() - t0
    shutil.rmtree(outroot)
    return elapsed


def expkit(workdir: Path, spec: Path, workers: int) -> float:
    store_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="store-"))
    t0 = time.perf_counter()
    outcome = start_run(spec, FileStore(store_dir), workers=workers)
    elapsed = time.perf_counter() - t0
    if not outcome.ok:
        raise SystemExit(f"expkit run failed: {dict(list(outcome.failed.items())[:3])}")
    shutil.rmtree(store_dir)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=sorted(RUNS), default="python", help="the kind of trivial run")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3, help="repeat each measurement, keep the fastest")
    args = ap.parse_args()
    global ARGV
    spec_argv, ARGV = RUNS[args.run]
    n = args.runs
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="expkit-bench-") as tmp:
        workdir = Path(tmp)
        spec = workdir / "experiment.yml"
        # In the spec, literal braces are doubled (single braces are placeholders).
        command = [part.replace("{", "{{").replace("}", "}}") for part in spec_argv]
        spec.write_text(SPEC.format(command=json.dumps(command), runs=n))
        # Warm up (imports, page cache) so neither side pays first-call costs.
        bare(workdir, 10, 1)
        times: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.repeat):
            # Interleave the two sides so drifting machine load affects both alike.
            for key, fn in (
                ("bare_1", lambda: bare(workdir, n, 1)),
                ("expkit_1", lambda: expkit(workdir, spec, 1)),
                ("bare_2", lambda: bare(workdir, n, 2)),
                ("expkit_2", lambda: expkit(workdir, spec, 2)),
            ):
                c0 = cpu_seconds()
                t = fn()
                if t < times.get(key, float("inf")):
                    times[key], cpu[key] = t, cpu_seconds() - c0

    def ms(key: str, table: dict[str, float]) -> float:
        return table[key] / n * 1000

    overhead_ms = ms("expkit_1", times) - ms("bare_1", times)
    eff = times["expkit_1"] / times["expkit_2"] / 2
    ok = {True: "OK", False: "MISSED"}
    print(
        f"expkit local executor overhead: {n} trivial runs ({args.run} writing result.json), "
        f"python {sys.version.split()[0]}, fastest of {args.repeat}"
    )
    print(
        f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f} "
        "(other work on the machine skews the 2-worker figures)"
    )
    for key in ("bare_1", "expkit_1", "bare_2", "expkit_2"):
        print(
            f"  {key:9s} {times[key]:7.2f} s  {ms(key, times):6.2f} ms/run wall  "
            f"{ms(key, cpu):6.2f} ms/run CPU (this process + the runs)"
        )
    print(f"overhead per run, 1 worker            : {overhead_ms:6.2f} ms  (target <= 20 ms: {ok[overhead_ms <= 20]})")
    print(f"CPU overhead per run                  : {ms('expkit_1', cpu) - ms('bare_1', cpu):6.2f} ms")
    print(
        f"overhead per run, 2 workers           : {ms('expkit_2', times) - ms('bare_2', times):6.2f} ms  "
        "(wall, vs the bare 2-thread loop)"
    )
    print(f"parallel efficiency expkit_1/expkit_2/2: {eff:6.2f}     (target >= 0.85: {ok[eff >= 0.85]})")
    print(f"efficiency vs bare loop bare_2/expkit_2: {times['bare_2'] / times['expkit_2']:6.2f}")
    print(
        f"bare loop's own efficiency bare_1/bare_2/2: {times['bare_1'] / times['bare_2'] / 2:6.2f}  "
        "(what this machine allows right now)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

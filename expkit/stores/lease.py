"""One writer per run: the run's lease, ``<run-id>/lease.json``.

A session that writes a run (``expkit run``, ``expkit run --resume``) first takes the run's lease: an
object naming the holder — a random owner id per session, the host, the pid, when it started, its
last heartbeat and when the lease expires — created with the store's conditional write
(:meth:`~expkit.stores.base.RunStore.put_if_absent`: a hard link or ``O_EXCL`` in a directory,
``If-None-Match: *`` on S3), so of two sessions exactly one creates it. The holder renews the heartbeat
from a background thread (every ``ttl / 6`` seconds) and deletes the lease when it ends, also on Ctrl-C
or an error. Readers (``results``, ``show``, ``list``, ``export``) never take it.

Another session is refused (:class:`LeaseHeld`: one line naming the holder) unless the lease is stale:
its heartbeat is older than its expiry, or its process is gone on this very machine (same host name,
boot and pid namespace; a recycled pid is told apart by its start time). A stale lease is taken over
through a claim object, ``lease.json.takeover-<holder's owner id>``, created with the same conditional
write: of several sessions taking over at once exactly one creates the claim; it checks that the lease
is still the stale one, replaces it, and removes the claim. A session that creates the claim later
re-reads the lease first and finds the new holder, so a late claim never replaces a live lease. A
claim whose creator died in between is itself taken over the same way.

The lease's expiry compares wall-clock times of different machines: their clocks must agree to well
within the time to live (``EXPKIT_LEASE_TTL``, default 120 s). Renewal reads the lease and rewrites it
(not one atomic step): a holder that was stopped for longer than the time to live and then resumes may
overlap with the session that took over until its next heartbeat notices (:class:`LeaseLost`), which
stops it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from expkit.core.errors import ExpkitError, InputError, StoreError
from expkit.stores.base import LEASE_KEY, ObjectNotFound, RunStore

log = logging.getLogger(__name__)

#: Seconds a lease lives without a heartbeat (``EXPKIT_LEASE_TTL`` overrides it).
LEASE_TTL = 120.0
ENV_TTL = "EXPKIT_LEASE_TTL"
_TAKEOVER = ".takeover-"
_ATTEMPTS = 6  # looks at the lease before giving up on a takeover that other sessions keep winning
_MAX_CLAIM_DEPTH = 3  # claims of claims (each left by a session that died mid-takeover)
_RELEASE_WAIT = 10.0
#: Owner ids of the leases this process holds now: a lease naming this process but none of them was left
#: by an earlier session of this process (one whose release could not reach the store) and is stale.
_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


class LeaseHeld(StoreError):
    """Another live session holds the run's lease: this one must not write the run."""


class LeaseLost(StoreError):
    """Another session took the run's lease while this one held it (this one was stale)."""


def lease_ttl() -> float:
    """The lease's time to live in seconds: ``EXPKIT_LEASE_TTL``, else :data:`LEASE_TTL`."""
    raw = os.environ.get(ENV_TTL, "").strip()
    if not raw:
        return LEASE_TTL
    try:
        ttl = float(raw)
    except ValueError:
        ttl = float("nan")
    if not 1 <= ttl <= 86400:
        raise InputError(f"{ENV_TTL}={raw!r}: give the lease's time to live in seconds, from 1 to 86400")
    return ttl


def lease_key(run_id: str) -> str:
    """The key of run ``run_id``'s lease."""
    return f"{run_id}/{LEASE_KEY}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _pid_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``): tells a recycled pid apart."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def _boot_id() -> str | None:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_gone(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` (of this machine and pid namespace) no longer runs."""
    if pid <= 0:
        return True
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        if os.path.isdir("/proc/self"):
            return True  # Linux: no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return True  # a zombie: dead, not yet reaped
    return started is not None and _pid_start(pid) not in (None, started)


@dataclass(frozen=True)
class Holder:
    """What a lease says about the session holding it."""

    owner: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    expires_at: str
    command: str = ""
    boot_id: str | None = None
    pid_ns: str | None = None
    pid_start: str | None = None

    @classmethod
    def this_session(cls, ttl: float, command: str) -> Holder:
        """A new holder for this process, with a fresh random owner id."""
        now = _now()
        pid = os.getpid()
        return cls(
            owner=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=pid,
            started_at=_iso(now),
            heartbeat_at=_iso(now),
            expires_at=_iso(now + timedelta(seconds=ttl)),
            command=command,
            boot_id=_boot_id(),
            pid_ns=_pid_namespace(),
            pid_start=_pid_start(pid),
        )

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder a lease object names; None when it is not a readable lease."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        required = ("owner", "host", "started_at", "heartbeat_at", "expires_at")
        if not all(isinstance(doc.get(k), str) for k in required) or type(doc.get("pid")) is not int:
            return None

        def text(name: str) -> str | None:
            value = doc.get(name)
            return value if isinstance(value, str) else None

        return cls(
            owner=doc["owner"],
            host=doc["host"],
            pid=doc["pid"],
            started_at=doc["started_at"],
            heartbeat_at=doc["heartbeat_at"],
            expires_at=doc["expires_at"],
            command=text("command") or "",
            boot_id=text("boot_id"),
            pid_ns=text("pid_ns"),
            pid_start=text("pid_start"),
        )

    def to_bytes(self) -> bytes:
        """The lease object's content."""
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    def renewed(self, ttl: float) -> Holder:
        """The same holder with a heartbeat now."""
        now = _now()
        return replace(self, heartbeat_at=_iso(now), expires_at=_iso(now + timedelta(seconds=ttl)))

    def describe(self) -> str:
        """``pid 123 on host h ('expkit run --resume'), since <time>, last heartbeat <time>``."""
        what = f" ({self.command!r})" if self.command else ""
        return f"pid {self.pid} on host {self.host}{what}, since {self.started_at}, last heartbeat {self.heartbeat_at}"

    def _on_this_machine(self) -> bool:
        """Same host name, boot and pid namespace as this process: its pid means a process here."""
        return (self.host, self.boot_id, self.pid_ns) == (socket.gethostname(), _boot_id(), _pid_namespace())

    def stale_reason(self) -> str | None:
        """Why this lease may be taken over (its process is gone, its heartbeat expired); None: it is live."""
        if self._on_this_machine():
            if _process_gone(self.pid, self.pid_start):
                return f"its process {self.pid} on this host is gone"
            if self.pid == os.getpid():
                with _HELD_LOCK:
                    if self.owner not in _HELD:
                        return "an earlier session of this process left it"
        expires = _parse_time(self.expires_at)
        if expires is None:
            return f"its expiry {self.expires_at!r} is not a time"
        if _now() > expires:
            return f"its heartbeat stopped ({self.heartbeat_at}; expired {self.expires_at})"
        return None


class Lease:
    """A held lease: :meth:`renew` it (or :meth:`start_heartbeat`), :meth:`release` it when done."""

    def __init__(self, store: RunStore, run_id: str, holder: Holder, ttl: float) -> None:
        self.store = store
        self.run_id = run_id
        self.holder = holder
        self.ttl = ttl
        #: Set when a heartbeat found that another session took the lease.
        self.lost: LeaseLost | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    @property
    def key(self) -> str:
        return lease_key(self.run_id)

    def _current(self) -> Holder | None:
        try:
            return Holder.parse(self.store.get(self.key))
        except ObjectNotFound:
            return None

    def renew(self) -> None:
        """Write a new heartbeat; :class:`LeaseLost` when the lease is no longer this session's."""
        with self._lock:
            if self._released:
                return
            current = self._current()
            if current is None or current.owner != self.holder.owner:
                who = current.describe() if current is not None else "nobody (it was deleted)"
                raise LeaseLost(
                    f"run {self.run_id} in {self.store.url}: this session lost its lease to {who} while it was "
                    "running (its heartbeat was late): stopped; the cells it published are kept"
                )
            holder = self.holder.renewed(self.ttl)
            self.store.put(self.key, holder.to_bytes())
            self.holder = holder

    def start_heartbeat(self, on_lost: Callable[[LeaseLost], None], every: float | None = None) -> None:
        """Renew the lease every ``every`` seconds (default ``ttl / 6``) from a background thread; when
        it is lost, set :attr:`lost` and call ``on_lost`` (from that thread) once."""
        interval = every if every is not None else self.ttl / 6

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except LeaseLost as err:
                    self.lost = err
                    try:
                        on_lost(err)
                    except Exception as cb_err:  # noqa: BLE001 - a background thread: log, never a traceback
                        log.warning("stopping run %s after losing its lease failed: %s", self.run_id, cb_err)
                    return
                except Exception as err:  # noqa: BLE001 - store trouble: try again at the next beat
                    log.warning("could not renew the lease of run %s: %s", self.run_id, err)

        self._thread = threading.Thread(target=beat, name=f"expkit-lease-{self.run_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease, if it is still this session's. Never raises: a lease
        that cannot be deleted expires (or, on this machine, is taken over once this process is gone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_RELEASE_WAIT)
        if not self._lock.acquire(timeout=_RELEASE_WAIT):
            log.warning("could not release the lease of run %s: its heartbeat is stuck", self.run_id)
            return
        try:
            if self._released:
                return
            self._released = True
            with _HELD_LOCK:
                _HELD.discard(self.holder.owner)
            current = self._current()
            if current is not None and current.owner == self.holder.owner:
                self.store.delete(self.key)
        except ExpkitError as err:
            log.warning("could not release the lease of run %s: %s (it expires by itself)", self.run_id, err)
        finally:
            self._lock.release()


def acquire_lease(store: RunStore, run_id: str, *, ttl: float | None = None, command: str = "expkit run") -> Lease:
    """Take run ``run_id``'s lease in ``store`` (see the module docstring): :class:`LeaseHeld` naming the
    holder when another live session has it; a stale lease is taken over (and logged)."""
    ttl = lease_ttl() if ttl is None else ttl
    mine = Holder.this_session(ttl, command)
    with _HELD_LOCK:
        _HELD.add(mine.owner)  # before anything is written: what it writes is live from the start
    try:
        previous = _claim(store, run_id, lease_key(run_id), mine, 0)
    except BaseException:
        with _HELD_LOCK:
            _HELD.discard(mine.owner)
        raise
    if previous is not None:
        log.warning("took over the lease of run %s from %s", run_id, previous)
    return Lease(store, run_id, mine, ttl)


def _get_or_none(store: RunStore, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ObjectNotFound:
        return None


def _claim(store: RunStore, run_id: str, key: str, mine: Holder, depth: int) -> str | None:
    """Create ``key`` holding ``mine``, taking a stale one over: None when it was free, else a description
    of the stale holder replaced. :class:`LeaseHeld` when a live session holds it."""
    seen_unreadable: bytes | None = None
    for attempt in range(_ATTEMPTS):
        if store.put_if_absent(key, mine.to_bytes()):
            return None
        data = _get_or_none(store, key)
        if data is None:
            continue  # released meanwhile: try to create it again
        current = Holder.parse(data)
        if current is not None and current.owner == mine.owner:
            return None  # our own create, answered as a conflict after a retried request
        if current is None and data != seen_unreadable:
            seen_unreadable = data  # maybe being written (O_EXCL): look again before calling it damaged
            time.sleep(0.5)
            continue
        why = current.stale_reason() if current is not None else "it is not a readable lease"
        if why is None and current is not None:
            raise LeaseHeld(_held_message(store, run_id, current))
        if depth >= _MAX_CLAIM_DEPTH:
            raise LeaseHeld(
                f"run {run_id} in {store.url}: {depth} takeovers of its lease were abandoned half-way; "
                f"delete {key} and its takeover claims if no expkit session writes the run"
            )
        claim = f"{key}{_TAKEOVER}{_claim_id(current, data)}"
        try:
            _claim(store, run_id, claim, mine, depth + 1)
        except LeaseHeld:
            if depth:
                raise
            time.sleep(0.1 * (attempt + 1))  # another session is taking it over: look at the winner
            continue
        try:
            if _get_or_none(store, key) != data:
                continue  # renewed, released or replaced since we looked: look again
            store.put(key, mine.to_bytes())
            return f"{current.describe()}: {why}" if current is not None else f"a damaged lease ({why})"
        finally:
            _delete_quietly(store, claim)
    current = Holder.parse(_get_or_none(store, key) or b"")
    if current is None:
        raise LeaseHeld(f"run {run_id} in {store.url}: other sessions keep taking its lease; try again")
    raise LeaseHeld(_held_message(store, run_id, current))


def _claim_id(current: Holder | None, data: bytes) -> str:
    """What a takeover claim is named after: the stale holder's owner id (or a damaged lease's hash)."""
    if current is not None and current.owner.isascii() and current.owner.isalnum() and len(current.owner) <= 64:
        return current.owner
    return hashlib.sha256(data).hexdigest()[:32]


def _delete_quietly(store: RunStore, key: str) -> None:
    try:
        store.delete(key)
    except ExpkitError as err:
        log.warning("could not remove the lease claim %s: %s", key, err)


def _held_message(store: RunStore, run_id: str, holder: Holder) -> str:
    return (
        f"run {run_id} in {store.url} is being written by another expkit session: {holder.describe()}, "
        f"lease expires {holder.expires_at}. Wait for it to finish; if that session is gone, run this again: "
        "a lease whose process is gone on this host is taken over at once, any other once it expires"
    )

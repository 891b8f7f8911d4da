"""The processes of one run: everything a run started is found and killed when the run ends.

Each run is started as the leader of a new session (and process group). When it ends — it exited,
timed out, or the run was interrupted — nothing it started may live on: a daemon left behind could
still write into the cell's outputs or its ``log.txt`` after the cell was published. A run's
processes are (:func:`run_processes`) those in its session or process group, those whose environment
carries the run's marker (its ``EXPKIT_OUTPUT_DIR``, inherited by everything it starts unless that
clears its environment), and every descendant of those. On Linux, expkit also makes itself a *child
subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``) while runs execute, so a daemon that escaped with a
double fork and ``setsid`` is reparented to expkit rather than to init; the ones killed here are
reaped here. Where ``/proc`` does not exist, only the process group is killed.

What a run used (:class:`Usage`: CPU time in user and system mode, peak resident memory — of its main
process and every descendant that process waited for) comes from ``wait4`` in a small launcher the
command is started under (:data:`LAUNCHER`, :func:`launched`, :func:`read_report`).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
#: Scan-and-kill rounds before giving up on a run that keeps forking.
MAX_ROUNDS = 20


@dataclass(frozen=True)
class ProcInfo:
    """One line of ``/proc/<pid>/stat``: the fields expkit needs."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int  # clock ticks after boot


@dataclass(frozen=True)
class Usage:
    """What a finished process used, with the descendants it waited for (``os.wait4``'s rusage)."""

    cpu_user_s: float
    cpu_system_s: float
    max_rss_bytes: int

    @property
    def cpu_s(self) -> float:
        """CPU time, user plus system, in seconds."""
        return self.cpu_user_s + self.cpu_system_s

    def to_dict(self) -> dict[str, float | int]:
        """As recorded in a cell's ``run.json`` (``resources``) and its ``attempt_history``."""
        return {
            "cpu_s": round(self.cpu_s, 4),
            "cpu_user_s": round(self.cpu_user_s, 4),
            "cpu_system_s": round(self.cpu_system_s, 4),
            "max_rss_bytes": self.max_rss_bytes,
        }


#: ``ru_maxrss`` is in kibibytes on Linux and the BSDs, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024

#: What a run's command is started under (``python -I -S -c LAUNCHER FD ARGV...``): it forks and execs the
#: command, ignores SIGTERM/SIGINT/SIGHUP itself (the command decides), waits for the command with
#: ``wait4``, writes ``<user s> <system s> <ru_maxrss> <exec errno or ->`` to FD and ends as the command
#: did (same exit code, or the same signal). It exists for the peak memory: Linux counts the memory of
#: the process image a command is exec'ed from into its ``ru_maxrss``, so a command forked straight from
#: expkit (hundreds of MB with numpy and pandas loaded) would report at least that much; forked from this
#: small interpreter it reports its own peak plus a few MB.
LAUNCHER = r"""
import os, signal, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
err_r, err_w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(fd)
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(err_w, str(e.errno).encode())
    os._exit(127)
os.close(err_w)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
failed = os.read(err_r, 32).decode() or "-"
_, status, ru = os.wait4(pid, 0)
os.write(fd, ("%r %r %d %s" % (ru.ru_utime, ru.ru_stime, ru.ru_maxrss, failed)).encode())
os.close(fd)
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
"""


def launched(argv: list[str], report_fd: int) -> list[str]:
    """The argv that starts ``argv`` under :data:`LAUNCHER`, which reports on ``report_fd`` (pass it to the
    child); ``argv`` itself where there is no interpreter to launch with."""
    if not sys.executable or not hasattr(os, "fork"):
        return argv
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report_fd), *argv]


@dataclass(frozen=True)
class Report:
    """What :data:`LAUNCHER` said about the command: what it used, or why it could not be started."""

    usage: Usage | None
    exec_errno: int | None


def read_report(fd: int) -> Report:
    """Read (and close) the launcher's report pipe once the launcher has ended; an empty :class:`Report`
    when it said nothing (it was killed, or the command ran without it). Never blocks: what the launcher
    wrote before it ended is in the pipe."""
    chunks = []
    try:
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 4096:
                break
    except OSError:
        pass
    finally:
        os.close(fd)
    fields = b"".join(chunks).decode("ascii", "replace").split()
    try:
        utime, stime, maxrss, failed = float(fields[0]), float(fields[1]), int(fields[2]), fields[3]
    except (IndexError, ValueError):
        return Report(None, None)
    if failed != "-":
        return Report(None, int(failed) if failed.isdigit() else 0)
    return Report(Usage(utime, stime, maxrss * _MAXRSS_UNIT), None)


def _stat(pid: int) -> ProcInfo | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    try:
        return ProcInfo(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _snapshot() -> dict[int, ProcInfo]:
    out: dict[int, ProcInfo] = {}
    try:
        names = os.listdir(PROC)
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            info = _stat(int(name))
            if info is not None:
                out[info.pid] = info
    return out


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        env = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, a zombie, or another user's process
        return False
    return env.startswith(marker) or b"\0" + marker in env


def has_proc() -> bool:
    """Whether this system has a Linux-style ``/proc`` to find processes in."""
    return (PROC / "self" / "stat").exists()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None when it is gone or unknown."""
    info = _stat(pid)
    return info.start if info else None


def run_processes(leader: int, marker: str | None, since: int | None) -> set[int]:
    """Pids of the live processes of the run whose leader is ``leader`` (the leader too while it lives).

    ``marker`` is ``NAME=value`` from the run's environment; ``since`` the leader's start time (only
    processes started after it are checked for the marker). Never this process.
    """
    snap = _snapshot()
    me = os.getpid()
    found = {p for p, i in snap.items() if i.session == leader or i.pgrp == leader}
    if marker is not None:
        needle = marker.encode("utf-8", "surrogateescape") + b"\0"
        found |= {
            p
            for p, i in snap.items()
            if p not in found and (since is None or i.start >= since) and _has_marker(p, needle)
        }
    children: dict[int, list[int]] = defaultdict(list)
    for p, i in snap.items():
        children[i.ppid].append(p)
    stack = list(found)
    while stack:
        for child in children[stack.pop()]:
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(me)
    # Zombies are dead; only those adopted by this process are kept, to be reaped (the leader's Popen reaps it).
    return {p for p in found if snap[p].state != "Z" or (snap[p].ppid == me and p != leader)}


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_or_gone(pids: set[int], leader: int) -> set[int]:
    """Reap the ones that are expkit's children (adopted as subreaper); the pids still alive. The leader is
    never reaped here: its ``Popen`` does that (and needs its exit status)."""
    me = os.getpid()
    alive = set()
    for pid in pids:
        info = _stat(pid)
        if info is None:
            continue
        if info.ppid == me and pid != leader:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                continue
        elif info.state == "Z":
            continue
        alive.add(pid)
    return alive


def kill_run(leader: int, marker: str | None, since: int | None, grace: float) -> int:
    """Stop every process of a run (see :func:`run_processes`): SIGTERM, SIGKILL after ``grace`` seconds
    for those still alive, and wait until they are gone. Returns how many processes were found."""
    if not has_proc():
        _killpg(leader, signal.SIGKILL)
        return 0
    seen: set[int] = set()
    term_sent = grace <= 0
    deadline = time.monotonic() + grace
    for _ in range(MAX_ROUNDS):
        pids = run_processes(leader, marker, since)
        if not pids:
            break
        seen |= pids
        if not term_sent:
            _signal(pids, signal.SIGTERM)
            term_sent = True
            while time.monotonic() < deadline:
                pids = _reap_or_gone(pids, leader)
                if not pids:
                    break
                time.sleep(0.02)
            continue
        _signal(pids, signal.SIGKILL)
        stop_waiting = time.monotonic() + 5.0
        while pids and time.monotonic() < stop_waiting:
            pids = _reap_or_gone(pids, leader)
            if pids:
                time.sleep(0.01)
    else:
        log.warning("processes of the run led by pid %d kept appearing; some may be left", leader)
    return len(seen)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- subreaper ---------------------------------------------------------------------------------
_reaper_lock = threading.Lock()
_reaper_users = 0
_reaper_before = 0


def _prctl(option: int, value: int) -> int | None:
    """``prctl(option, value)`` through libc; None where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if option == PR_GET_CHILD_SUBREAPER:
            out = ctypes.c_int(0)
            rc = libc.prctl(option, ctypes.byref(out), 0, 0, 0)
            return int(out.value) if rc == 0 else None
        rc = libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        return None
    if rc != 0:
        log.debug("prctl(%d) failed: %s", option, os.strerror(ctypes.get_errno() or errno.EINVAL))
        return None
    return 0


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """While inside, orphaned descendants are reparented to this process (Linux), not to init."""
    global _reaper_users, _reaper_before
    with _reaper_lock:
        if _reaper_users == 0:
            _reaper_before = _prctl(PR_GET_CHILD_SUBREAPER, 0) or 0
            if not _reaper_before:
                _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _reaper_users += 1
    try:
        yield
    finally:
        with _reaper_lock:
            _reaper_users -= 1
            if _reaper_users == 0 and not _reaper_before:
                _prctl(PR_SET_CHILD_SUBREAPER, 0)

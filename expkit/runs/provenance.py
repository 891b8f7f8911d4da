"""Provenance of a run: when, where and on what it ran (recorded in manifest.json and every run.json)."""

from __future__ import annotations

import os
import platform
import socket
import sys
from datetime import datetime, timezone
from typing import Any


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cpu_model() -> str | None:
    """The CPU model of this machine, recorded with every cell (provenance)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def host_info() -> dict[str, Any]:
    """The machine expkit runs on: hostname, platform, Python, CPUs."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "cpu_count": available_cpus(),
        "cpu_model": cpu_model(),
    }

"""Shared fixtures. Helpers' fixture modules add theirs below; keep this file append-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO


# -- S3: a real SeaweedFS server (or EXPKIT_TEST_S3_ENDPOINT); see tests/s3server.py ---------------
# -- container registries: real CNCF distribution registries on loopback; see tests/registry.py ------
from registry import basic_registry, registry, tls_registry, token_registry  # noqa: E402,F401 - fixtures
from s3server import s3_fault_server, s3_server, s3_store  # noqa: E402,F401 - fixtures

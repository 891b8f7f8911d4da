"""`pip install .` (a real wheel, not an editable install) carries the templates, manifests and scaffold."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stderr[-3000:]}")
    wheels = list(out.glob("expkit-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_carries_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "expkit/cli/__init__.py" in names
    for data in (
        "templates/scaffold/experiment.yml",
        "templates/scaffold/run.py",
        "templates/report/report.html.j2",
        "templates/argo/workflow.schema.json",
    ):
        assert f"expkit/_data/{data}" in names, data
    for top in ("templates", "manifests"):
        shipped = {n for n in names if n.startswith(f"expkit/_data/{top}/")}
        in_repo = {
            f"expkit/_data/{p.relative_to(REPO).as_posix()}"
            for p in (REPO / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert in_repo and in_repo <= shipped, f"{top}/ files missing from the wheel: {sorted(in_repo - shipped)}"


def test_entry_point_declared(wheel: Path) -> None:
    zf = zipfile.ZipFile(wheel)
    entry = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
    assert "expkit = expkit.cli:main" in zf.read(entry).decode()

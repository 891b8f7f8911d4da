"""``expkit init``: write a small working experiment (a spec and the script it runs)."""

from __future__ import annotations

from pathlib import Path

from expkit.core.data import data_dir
from expkit.core.errors import InputError

FILES = ("experiment.yml", "run.py")


def scaffold(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Create ``experiment.yml`` and ``run.py`` in ``directory``; refuse to overwrite unless ``force``."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory: choose another place")
    existing = [target / f for f in FILES if (target / f).exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} already exists: choose an empty directory or pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    source = data_dir("templates/scaffold")
    written = []
    for name in FILES:
        path = target / name
        path.write_text(source.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
        written.append(path)
    return written

"""``expkit init``: write a small working experiment (a spec and the script it runs), the experiment named
after its directory."""

from __future__ import annotations

import re
from pathlib import Path

from expkit.core.data import data_dir
from expkit.core.errors import InputError

FILES = ("experiment.yml", "run.py")
#: The template's experiment name, replaced by the directory's; kept when the directory gives no usable name.
TEMPLATE_NAME = "my-experiment"
_MAX_NAME = 50  # run ids are '<name>-<5 chars>' and must stay a DNS-1123 label


def experiment_name(directory: str | Path) -> str:
    """The experiment name for ``directory``: its name as a DNS-1123 label of at most 50 characters
    (lowercase; every run of other characters becomes '-'), or ``my-experiment`` when nothing is left."""
    raw = Path(directory).resolve().name.lower()
    name = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")[:_MAX_NAME].rstrip("-")
    return name or TEMPLATE_NAME


def scaffold(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Create ``experiment.yml`` (the experiment named after ``directory``, see :func:`experiment_name`) and
    ``run.py`` in ``directory``; refuse to overwrite unless ``force``."""
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
        text = source.joinpath(name).read_text(encoding="utf-8")
        if name == "experiment.yml":
            text = text.replace(f"  name: {TEMPLATE_NAME}\n", f"  name: {experiment_name(target)}\n", 1)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written

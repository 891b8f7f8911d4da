"""Files expkit ships besides its code, all in one place: Argo and report templates, the ``expkit init``
scaffold, the Argo workflow schema, and Kubernetes manifests.

In a wheel they live in ``expkit/_data/`` (``pyproject.toml`` maps the repository's top-level
``templates/`` and ``manifests/`` there); in a source checkout or an editable install they are read
from the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

from expkit.core.errors import ExpkitError

_PACKAGE = Path(__file__).resolve().parent.parent  # the expkit package


def data_dir(name: str) -> Path:
    """The directory ``templates`` or ``manifests`` (or a subdirectory such as ``templates/argo``)."""
    for base in (_PACKAGE / "_data", _PACKAGE.parent):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    raise ExpkitError(
        f"expkit's data directory {name!r} is missing from this installation: reinstall expkit "
        "(pip install --force-reinstall expkit)"
    )

"""Kubernetes resource quantities (``512Mi``, ``2Gi``, ``4G``, ``1.5``): the one parser every layer uses —
the spec's ``resources.memory`` check, Slurm's ``--mem`` and the MinIO claim's size."""

from __future__ import annotations

import re

#: Binary and decimal suffixes and what they multiply by.
UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def quantity_bytes(text: str) -> float:
    """The number a quantity stands for (bytes, for memory); ``ValueError`` when ``text`` is not one."""
    m = QUANTITY_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a quantity: write e.g. '512Mi', '2Gi' or '4G'")
    return float(m.group(1)) * UNITS[m.group(2) or ""]

"""Is the re-run the same experiment? Compare the two runs' resolved specs field by field.

Fields of :data:`COMPATIBLE_FIELDS` may differ without making the re-run another experiment (they
change how many runs there are, which seeds they get or how they are scheduled); any other difference
makes the re-run a different experiment, which cannot reproduce this one.
"""

from __future__ import annotations

from typing import Any

from expkit.analysis.collect import Collected
from expkit.reproduce.comparison import SpecCheck
from expkit.spec import experiment_dict

#: Spec fields that may differ between original and re-run without making it another experiment:
#: they change how many runs there are, which seeds they get, or how they are scheduled — not what one
#: run computes. Anything else (command, args, params, algorithms, datasets, metric, image, pairing,
#: prepare) makes the re-run a different experiment.
COMPATIBLE_FIELDS = (
    "metadata.name",
    "metadata.description",
    "metadata.paper",
    "spec.replicates",
    "spec.seed",
    "spec.parallelism",
    "spec.resources",
    "spec.timeout",
    "spec.retries",
    "spec.kubernetes",
    "spec.algorithms[*].description",
    "spec.algorithms[*].kubernetes",
)

_MISSING = object()


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            out[path] = {}
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        out[path + "[]"] = [v["name"] for v in value]  # membership and order
        for v in value:
            _flatten(v, f"{path}[{v['name']}]", out)
    else:
        out[path] = value


def _compatible(path: str) -> bool:
    for pattern in COMPATIBLE_FIELDS:
        if "[*]" in pattern:
            head, tail = pattern.split("[*]", 1)
            if path.startswith(head + "[") and "]" in path[len(head) :]:
                rest = path[path.index("]", len(head)) + 1 :]
                if rest == tail or rest.startswith(tail + "."):
                    return True
        elif path == pattern or path.startswith(pattern + "."):
            return True
    return False


def spec_check(original: Collected, rerun: Collected) -> SpecCheck:
    """Compare the resolved specs of ``original`` and ``rerun``: identical, compatible or different."""
    sha_o = original.manifest.get("spec_sha256")
    sha_r = rerun.manifest.get("spec_sha256")
    fo: dict[str, Any] = {}
    fr: dict[str, Any] = {}
    _flatten(experiment_dict(original.experiment), "", fo)
    _flatten(experiment_dict(rerun.experiment), "", fr)
    diffs = tuple(sorted(k for k in set(fo) | set(fr) if fo.get(k, _MISSING) != fr.get(k, _MISSING)))
    if not diffs:
        return SpecCheck(sha_o, sha_r, "identical", (), (), None)
    material = tuple(d for d in diffs if not _compatible(d))
    if material:
        msg = (
            f"the re-run's spec differs from the original's in {', '.join(material[:8])}"
            + (" and more" if len(material) > 8 else "")
            + ": it is a different experiment, so the overall "
            "verdict cannot be 'reproduced'"
        )
        return SpecCheck(sha_o, sha_r, "different", diffs, material, msg)
    msg = f"the specs differ only in {', '.join(diffs[:8])}, which do not change what a run computes"
    if any(d == "spec.seed" for d in diffs):
        msg += "; the seeds differ, so runs are compared as independent samples"
    return SpecCheck(sha_o, sha_r, "compatible", diffs, (), msg)

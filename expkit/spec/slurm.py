"""The ``spec.slurm`` block: what only Slurm has (``expkit submit --to slurm``; ignored elsewhere).

Every value here ends up in a batch script, so each is checked against a narrow pattern (names,
module names, a node-feature expression, absolute paths) and extra sbatch options against an
allow-list; the script quotes what it interpolates on top of that (:mod:`expkit.executors.slurm.render`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

#: Slurm names (partition, account, qos): letters, digits, '_', '.', '-' (a partition may be a
#: comma-separated list).
_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_SLURM_PARTITIONS_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}(,[A-Za-z0-9_.\-]{1,64}){0,15}$")
#: A node feature expression (``--constraint``): features joined by '&', '|', ',', brackets and counts.
_SLURM_CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.\-&|,\[\]()*!:]{1,200}$")
_MODULE_RE = re.compile(r"^[A-Za-z0-9_.+\-/]{1,120}$")
#: ``slurm.extra``: the sbatch options a spec may add (expkit sets the array, output, resources and
#: time itself), each ``--name`` or ``--name=value`` with a value of these characters only.
SLURM_EXTRA_OPTIONS = frozenset(
    {
        "begin",
        "comment",
        "exclude",
        "exclusive",
        "gpus-per-task",
        "gres-flags",
        "hint",
        "licenses",
        "mail-type",
        "mail-user",
        "mem-per-gpu",
        "nice",
        "no-requeue",
        "nodelist",
        "priority",
        "requeue",
        "reservation",
        "signal",
        "tmp",
        "wckey",
    }
)
_SLURM_EXTRA_RE = re.compile(r"^--([a-z][a-z\-]*)(?:=([A-Za-z0-9_.,:@%+=/\-\[\]]{1,200}))?$")


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _slurm_check(pattern: re.Pattern[str], what: str, example: str) -> Any:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{_cut(value)} is not a Slurm {what}: write e.g. {example!r} (no spaces or quotes)")
        return value

    return AfterValidator(check)


def _check_extra(line: str) -> str:
    m = _SLURM_EXTRA_RE.match(line)
    if not m:
        raise ValueError(
            f"{_cut(line)} is not an sbatch option: write '--name' or '--name=value' "
            "(value of letters, digits and _.,:@%+=/-[]; no spaces or quotes)"
        )
    if m.group(1) not in SLURM_EXTRA_OPTIONS:
        raise ValueError(
            f"--{m.group(1)} is not allowed here (expkit sets the array, output, resources and time itself): "
            f"use one of {', '.join('--' + o for o in sorted(SLURM_EXTRA_OPTIONS))}"
        )
    return line


def _check_cells_per_task(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000):
        return value
    raise ValueError(f"{_cut(value)} is not a number of cells: write 'auto' (the default) or a whole number 1-1000")


def _check_abs_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{_cut(value)} must be an absolute path on the cluster's nodes, e.g. '/home/me/venv'")
    return value


class SlurmSettings(BaseModel):
    """Settings only Slurm has, for ``expkit submit --to slurm`` (ignored elsewhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    partition: Annotated[str, _slurm_check(_SLURM_PARTITIONS_RE, "partition", "gpu")] | None = None
    account: Annotated[str, _slurm_check(_SLURM_NAME_RE, "account", "lab-smith")] | None = None
    qos: Annotated[str, _slurm_check(_SLURM_NAME_RE, "QOS", "normal")] | None = None
    constraint: Annotated[str, _slurm_check(_SLURM_CONSTRAINT_RE, "constraint", "skylake|icelake")] | None = Field(
        default=None, description="node features a run's node must have (sbatch --constraint)"
    )
    container: Literal["apptainer"] | None = Field(
        default=None, description="'apptainer': run the command in spec.image (apptainer exec docker://...)"
    )
    modules: list[Annotated[str, _slurm_check(_MODULE_RE, "module name", "python/3.11")]] | None = Field(
        default=None, description="environment modules each task loads first (module load NAME)"
    )
    venv: Annotated[str, AfterValidator(_check_abs_path)] | None = Field(
        default=None, description="a virtual environment on the nodes, activated by each task (with expkit in it)"
    )
    python: Annotated[str, AfterValidator(_check_abs_path)] | None = Field(
        default=None,
        description="the Python with expkit on the nodes (default: python3 of the venv/modules, "
        "else the interpreter expkit was submitted with)",
    )
    cells_per_task: Annotated[int | Literal["auto"], BeforeValidator(_check_cells_per_task)] = Field(
        default="auto",
        description="cells one array task runs, one after another; 'auto' packs replicates of one "
        "algorithm x dataset into at most ~4 tasks per slot, up to 20 cells a task (docs/slurm.md)",
    )
    extra: list[Annotated[str, AfterValidator(_check_extra)]] | None = Field(
        default=None, description="more sbatch options from an allow-list, e.g. ['--exclusive', '--mail-type=END']"
    )


__all__ = ["SLURM_EXTRA_OPTIONS", "SlurmSettings"]

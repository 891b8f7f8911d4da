"""The batch scripts a Slurm run submits: pure functions from the spec, the run id and the cells to text.

One job array per resource profile (the cells that ask Slurm for the same CPUs, memory, GPUs and time),
never one job per cell. Array task ``i`` runs the cells in row ``i`` of the array's cell table, a JSON
file kept in the run (``<run-id>/slurm/<array>.cells.json``) that the task reads from the store by
``SLURM_ARRAY_TASK_ID`` — no cell name, parameter or path is written into shell code. Every value
the script holds comes either from a validated field (``spec.slurm``: names, module names and options
checked against allow-lists) or through :func:`shlex.quote`.

Packing (``spec.slurm.cells_per_task``, default ``auto``; :func:`cells_per_task`): an integer packs that
many cells into each task, in the order given (replicate-major); ``auto`` packs replicates of one
algorithm × dataset, so that an array has at most about :data:`AUTO_TASKS_PER_SLOT` × the effective
parallelism tasks (``spec.parallelism``, else what the cluster's CPUs hold of this profile), no task runs
more than :data:`AUTO_MAX_CELLS` cells, and no task's time limit covers more than :data:`AUTO_MAX_TASK_S`
seconds of timeouts.

Resources: ``cpu`` → ``--cpus-per-task`` (rounded up to whole CPUs), ``memory`` → ``--mem`` (in MiB,
rounded up), ``gpu`` → ``--gres=gpu:N``, ``timeout`` → ``--time`` in whole minutes, rounded up, covering
every attempt of every cell of the task (``(retries + 1) × cells_per_task`` times the timeout) plus
:data:`TIME_MARGIN_S` for starting and publishing: the task enforces the spec's timeout itself and
publishes the cell failed; Slurm's limit is the backstop.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from expkit import __version__
from expkit.core.quantity import quantity_bytes
from expkit.runs.matrix import Cell, render_argv
from expkit.spec import Experiment

#: Seconds added to the time limit of a task for starting Python, reading the spec and publishing.
TIME_MARGIN_S = 30
#: The most tasks one array holds here (Slurm's default ``MaxArraySize`` is 1001: indices 0-1000).
MAX_ARRAY_TASKS = 1000
#: ``cells_per_task: auto``: at most about this many tasks per slot of effective parallelism, so the last
#: tasks to start leave slots idle for at most about a quarter of the run.
AUTO_TASKS_PER_SLOT = 4
#: ``cells_per_task: auto``: the most cells one task runs.
AUTO_MAX_CELLS = 20
#: ``cells_per_task: auto``: the most seconds of timeouts (every attempt of every cell) one task may pack.
AUTO_MAX_TASK_S = 4 * 3600
#: ``cells_per_task: auto``: the slots assumed when neither ``spec.parallelism`` nor the cluster's CPUs are known.
DEFAULT_SLOTS = 64


@dataclass(frozen=True)
class Profile:
    """What one array asks Slurm for per task: CPUs, memory (MiB), GPUs, time limit (minutes)."""

    cpus: int
    mem_mb: int | None
    gpus: int
    minutes: int | None

    @property
    def name(self) -> str:
        """A short name for file names: ``c1``, ``c2-m2048-g1-t5``."""
        parts = [f"c{self.cpus}"]
        if self.mem_mb is not None:
            parts.append(f"m{self.mem_mb}")
        if self.gpus:
            parts.append(f"g{self.gpus}")
        if self.minutes is not None:
            parts.append(f"t{self.minutes}")
        return "-".join(parts)

    def sbatch_options(self) -> list[str]:
        """The resource options of this profile."""
        opts = [f"--cpus-per-task={self.cpus}"]
        if self.mem_mb is not None:
            opts.append(f"--mem={self.mem_mb}M")
        if self.gpus:
            opts.append(f"--gres=gpu:{self.gpus}")
        if self.minutes is not None:
            opts.append(f"--time={self.minutes}")
        return opts


@dataclass(frozen=True)
class ArrayPlan:
    """One job array: its name (file names in the run), profile and cell table (a row of cell keys per task)."""

    name: str
    profile: Profile
    rows: tuple[tuple[str, ...], ...]

    @property
    def cells(self) -> int:
        """How many cells the array runs."""
        return sum(len(r) for r in self.rows)


def memory_mib(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2Gi``, ``4G``) in whole MiB, rounded up."""
    return max(1, math.ceil(quantity_bytes(quantity) / 2**20))


def time_minutes(timeout: float | None, retries: int, cells: int = 1) -> int | None:
    """The ``--time`` of a task running ``cells`` cells (whole minutes, rounded up): every attempt's
    timeout of every cell, plus the margin."""
    if timeout is None:
        return None
    return max(1, math.ceil((timeout * (retries + 1) * cells + TIME_MARGIN_S) / 60))


def cell_profile(exp: Experiment, cell: Cell) -> Profile:
    """The resources one cell asks for (the spec's, or its algorithm's where it sets its own); the time
    limit of a task running this cell alone (:func:`plan_arrays` sizes it for the cells it packs)."""
    spec = exp.spec
    resources = spec.resources
    for algo in spec.algorithms:
        own = getattr(algo, "resources", None)
        if algo.name == cell.algorithm and own is not None:
            resources = own
    return Profile(
        cpus=max(1, math.ceil(resources.cpu - 1e-9)),
        mem_mb=memory_mib(resources.memory) if resources.memory else None,
        gpus=resources.gpu,
        minutes=time_minutes(spec.timeout, spec.retries),
    )


def auto_cells_per_task(cells: int, slots: int, timeout: float | None, retries: int) -> int:
    """``cells_per_task: auto`` for an array of ``cells`` cells with ``slots`` tasks running at once:
    ``ceil(cells / (AUTO_TASKS_PER_SLOT × slots))``, at most :data:`AUTO_MAX_CELLS`, and at most as many
    cells as fit :data:`AUTO_MAX_TASK_S` seconds of timeouts (every attempt); at least 1."""
    n = min(math.ceil(cells / (AUTO_TASKS_PER_SLOT * max(1, slots))), AUTO_MAX_CELLS)
    if timeout is not None and timeout > 0:
        n = min(n, int(AUTO_MAX_TASK_S // (timeout * (retries + 1))))
    return max(1, n)


def effective_slots(exp: Experiment, profile: Profile, cluster_cpus: int | None) -> int:
    """How many tasks of ``profile`` run at once: ``spec.parallelism``, at most what ``cluster_cpus`` hold
    of the profile's CPUs; :data:`DEFAULT_SLOTS` when neither is known."""
    fits = max(1, cluster_cpus // profile.cpus) if cluster_cpus else None
    wanted = exp.spec.parallelism
    if wanted and fits:
        return min(wanted, fits)
    return wanted or fits or DEFAULT_SLOTS


def _pack(cells: Sequence[Cell], per_task: int, by_pair: bool) -> list[tuple[str, ...]]:
    """Rows of at most ``per_task`` cell keys: in the order given, or (``by_pair``) replicates of one
    algorithm × dataset together (pairs in the order they first appear)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        groups.setdefault((cell.algorithm, cell.dataset) if by_pair else ("", ""), []).append(cell.key)
    return [tuple(keys[i : i + per_task]) for keys in groups.values() for i in range(0, len(keys), per_task)]


def plan_arrays(
    exp: Experiment, cells: Sequence[Cell], *, prefix: str = "array", cluster_cpus: int | None = None
) -> list[ArrayPlan]:
    """Group ``cells`` by profile into arrays of at most :data:`MAX_ARRAY_TASKS` tasks, each task running
    ``spec.slurm.cells_per_task`` cells (``auto``: :func:`auto_cells_per_task`, replicates of one algorithm
    × dataset together, with ``cluster_cpus`` the CPUs the cluster offers, when known), with a time limit
    covering them all."""
    spec = exp.spec
    setting = spec.slurm.cells_per_task if spec.slurm else "auto"
    groups: dict[Profile, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell_profile(exp, cell), []).append(cell)
    plans: list[ArrayPlan] = []
    for base, members in groups.items():
        if setting == "auto":
            slots = effective_slots(exp, base, cluster_cpus)
            per_task = auto_cells_per_task(len(members), slots, spec.timeout, spec.retries)
        else:
            per_task = int(setting)
        profile = replace(base, minutes=time_minutes(spec.timeout, spec.retries, per_task))
        rows = _pack(members, per_task, by_pair=setting == "auto")
        for part, start in enumerate(range(0, len(rows), MAX_ARRAY_TASKS)):
            suffix = f"-{part}" if len(rows) > MAX_ARRAY_TASKS else ""
            chunk = tuple(rows[start : start + MAX_ARRAY_TASKS])
            plans.append(ArrayPlan(f"{prefix}-{profile.name}{suffix}", profile, chunk))
    return plans


def cell_table(
    exp: Experiment, plan: ArrayPlan, cells: Mapping[str, Cell], *, manifest: Mapping[str, Any], output_dir: str
) -> dict[str, Any]:
    """The array's cell table (``<run-id>/slurm/<array>.cells.json``): everything a task needs to run its
    row without loading the spec — each cell's seed, parameters and argv (rendered with ``output_dir``, a
    token the task replaces by the attempt's directory), the spec's timeout, retries, metric and ``env``
    names, and the part of the run's manifest a cell's ``run.json`` records (code and environment
    digests, the Slurm version)."""
    spec = exp.spec
    keys = [k for row in plan.rows for k in row]
    code, environment = manifest.get("code"), manifest.get("environment")
    slurm = manifest.get("slurm")
    return {
        "rows": [list(r) for r in plan.rows],
        "seeds": {k: cells[k].seed for k in keys},
        "cells": {k: {"params": dict(cells[k].params), "argv": render_argv(exp, cells[k], output_dir)} for k in keys},
        "output_dir": output_dir,
        "rules": {"timeout": spec.timeout, "retries": spec.retries, "metric": spec.metric.name},
        "env": list(spec.env or ()),
        "manifest": {
            "code": {"digest": code.get("digest")} if isinstance(code, dict) else None,
            "environment": {"digest": environment.get("digest")} if isinstance(environment, dict) else None,
            "slurm": {"version": slurm.get("version")} if isinstance(slurm, dict) else None,
        },
    }


def interpreter(exp: Experiment, default: str) -> str:
    """The Python each task runs expkit with: ``slurm.python``; ``python3`` when ``slurm.venv`` or
    ``slurm.modules`` set up the environment; else ``default`` (the submitting interpreter)."""
    slurm = exp.spec.slurm
    if slurm and slurm.python:
        return slurm.python
    if slurm and (slurm.venv or slurm.modules):
        return "python3"
    return default


def _header(exp: Experiment, run_id: str, what: str, options: Sequence[str]) -> list[str]:
    slurm = exp.spec.slurm
    opts = [f"--job-name=expkit-{run_id}", *options]
    if slurm:
        opts += [f"--{k}={v}" for k, v in (("partition", slurm.partition), ("account", slurm.account)) if v]
        opts += [f"--{k}={v}" for k, v in (("qos", slurm.qos), ("constraint", slurm.constraint)) if v]
        opts += list(slurm.extra or ())
    return [
        "#!/bin/bash",
        f"# expkit {__version__}: {what} of run {run_id}. Written by 'expkit submit --to slurm'; kept in the run.",
        *(f"#SBATCH {o}" for o in opts),
        "set -eu",
    ]


def _environment_lines(exp: Experiment) -> list[str]:
    slurm = exp.spec.slurm
    lines: list[str] = []
    if slurm and slurm.modules:
        lines += [f"module load {shlex.quote(m)}" for m in slurm.modules]
    if slurm and slurm.venv:
        lines.append(f". {shlex.quote(slurm.venv.rstrip('/') + '/bin/activate')}")
    return lines


def render_array_script(
    exp: Experiment,
    run_id: str,
    plan: ArrayPlan,
    *,
    store_url: str,
    spec_dir: str,
    python: str,
    parallelism: int | None,
) -> str:
    """The batch script of one job array: ``#SBATCH`` lines, the environment setup, then the task entry
    (:mod:`expkit.executors.slurm.task`) reading its cells from ``<run-id>/slurm/<plan.name>.cells.json``."""
    n = len(plan.rows)
    array = f"--array=0-{n - 1}" + (f"%{parallelism}" if parallelism else "")
    argv = [
        python,
        "-m",
        "expkit.executors.slurm.task",
        "cells",
        "--store",
        store_url,
        "--run",
        run_id,
        "--table",
        f"slurm/{plan.name}.cells.json",
        "--spec-dir",
        spec_dir,
    ]
    if exp.spec.slurm and exp.spec.slurm.container == "apptainer":
        argv += ["--", "apptainer", "exec", f"docker://{exp.spec.image}"]
    lines = _header(exp, run_id, f"job array {plan.name} ({plan.cells} cells)", [array, *plan.profile.sbatch_options()])
    lines += _environment_lines(exp)
    lines.append('echo "expkit task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID:-?} on $(hostname)"')
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def render_prepare_script(exp: Experiment, run_id: str, *, store_url: str, spec_dir: str, python: str) -> str:
    """The batch script of the ``prepare`` job the arrays depend on (``--dependency=afterok``)."""
    prep = exp.spec.prepare
    minutes = time_minutes(prep.timeout, 0) if prep else None
    options = ["--cpus-per-task=1", *([f"--time={minutes}"] if minutes else [])]
    argv = [python, "-m", "expkit.executors.slurm.task", "prepare", "--store", store_url, "--run", run_id]
    argv += ["--spec-dir", spec_dir]
    lines = _header(exp, run_id, "the prepare step", options)
    lines += _environment_lines(exp)
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


__all__ = [
    "AUTO_MAX_CELLS",
    "AUTO_MAX_TASK_S",
    "AUTO_TASKS_PER_SLOT",
    "DEFAULT_SLOTS",
    "MAX_ARRAY_TASKS",
    "TIME_MARGIN_S",
    "ArrayPlan",
    "Profile",
    "auto_cells_per_task",
    "cell_profile",
    "cell_table",
    "effective_slots",
    "interpreter",
    "memory_mib",
    "plan_arrays",
    "render_array_script",
    "render_prepare_script",
    "time_minutes",
]

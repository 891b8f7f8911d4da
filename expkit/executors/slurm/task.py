"""What one Slurm array task runs: ``python -m expkit.executors.slurm.task cells|prepare ...``.

``cells``: read row ``$SLURM_ARRAY_TASK_ID`` of the array's cell table from the run store, and run
those cells one after another through the local executor's per-cell code
(:class:`~expkit.executors.local.LocalExecutor`): the same run contract (``EXPKIT_*`` variables, a
clean environment, the timeout, retries, outputs checked as untrusted input) and the same publishing
(``run.json`` last) into the same store — a shared directory or S3. A cell that already has its
``run.json`` (a requeued task) is not run again. Each ``run.json`` also records the job, the array
task, the node, the partition and the Slurm version. After ``--``, a command prefix wraps each cell's
argv (``apptainer exec docker://repo@sha256:…``); the staging directory is then bound into the
container (``APPTAINER_BIND``).

The cell table holds everything a task needs (:func:`expkit.executors.slurm.render.cell_table`: each
cell's argv, seed and parameters, the timeout, retries, metric and ``env`` names, the digests a
``run.json`` records), so a task neither loads nor validates the spec again: it imports no pydantic,
YAML, numpy or anything of the submitting side (``tests/test_slurm.py`` checks), which is most of
what starting a task costs.

``prepare``: run the spec's prepare step once and store its log; exit 1 when it fails (the arrays
depend on this job with ``afterok``, so Slurm then never starts them).

Exit codes: 0 when every cell succeeded, 1 when one failed or the prepare step failed, 2 for a bad
invocation or a run that cannot be read, 143 when Slurm cancelled the task (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from expkit.core.contract import RUN_FILE, clean_environment
from expkit.core.errors import ExpkitError, InputError, Interrupted
from expkit.executors.base import RunContext
from expkit.executors.local import CellRules, LocalExecutor, local_argv
from expkit.runs.cell import Cell
from expkit.stores.base import cell_prefix

if TYPE_CHECKING:
    from expkit.spec import Experiment

log = logging.getLogger("expkit.slurm.task")


def slurm_facts(environ: dict[str, str] | os._Environ[str], version: str | None) -> dict[str, Any]:
    """The ``slurm`` entry of a cell's ``run.json``: job, array task, node, partition, cluster, version."""
    return {
        "job_id": environ.get("SLURM_JOB_ID"),
        "array_job_id": environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": environ.get("SLURM_ARRAY_TASK_ID"),
        "node": environ.get("SLURMD_NODENAME"),
        "partition": environ.get("SLURM_JOB_PARTITION"),
        "cluster": environ.get("SLURM_CLUSTER_NAME"),
        "version": version,
    }


class CellTable:
    """An array's cell table as a task reads it (see :func:`expkit.executors.slurm.render.cell_table`)."""

    def __init__(self, doc: Any, where: str) -> None:
        fix = "it was written by 'expkit submit --to slurm'; submit the cells again with 'expkit retry'"
        keys = ("rows", "cells", "seeds", "output_dir", "rules", "env", "manifest")
        if not isinstance(doc, dict) or any(k not in doc for k in keys):
            raise InputError(f"{where}: not a cell table of this expkit version (no {keys!r}): {fix}")
        try:
            rules = doc["rules"]
            self.rules = CellRules(rules["timeout"], int(rules["retries"]), str(rules["metric"]))
            self.rows: list[list[str]] = [[str(k) for k in row] for row in doc["rows"]]
            self.cells: dict[str, Any] = dict(doc["cells"])
            self.seeds = {str(k): int(v) for k, v in doc["seeds"].items()}
            self.output_dir = str(doc["output_dir"])
            self.env = [str(e) for e in doc["env"]]
            self.manifest: dict[str, Any] = dict(doc["manifest"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{where}: a damaged cell table ({type(err).__name__}: {err}): {fix}") from err
        for key in (k for row in self.rows for k in row):
            parts = key.split("/")
            described = isinstance(self.cells.get(key), dict) and {"argv", "params"} <= set(self.cells[key])
            if len(parts) != 3 or not parts[2].isdigit() or not described or key not in self.seeds:
                raise InputError(f"{where}: cell {key!r} of a row is not described in the cell table: {fix}")

    def cell(self, key: str) -> Cell:
        """The cell ``algorithm/dataset/replicate`` of this table."""
        algorithm, dataset, replicate = key.split("/")
        return Cell(algorithm, dataset, int(replicate), self.seeds[key], dict(self.cells[key]["params"]))

    def argv(self, key: str, output_dir: str) -> list[str]:
        """The cell's argv with the output directory of this attempt filled in."""
        return [str(a).replace(self.output_dir, output_dir) for a in self.cells[key]["argv"]]


class SlurmTaskExecutor(LocalExecutor):
    """The local executor inside an array task: runs the cells of a :class:`CellTable` (no spec needed),
    records the Slurm facts, optionally wraps the argv."""

    name = "slurm"

    def __init__(self, facts: dict[str, Any], table: CellTable, prefix: Sequence[str] = ()) -> None:
        super().__init__()
        self.facts = facts
        self.table = table
        self.prefix = list(prefix)
        if facts.get("node"):
            self._host = str(facts["node"])

    def cell_argv(self, ctx: RunContext, cell: Cell, output_dir: str) -> list[str]:
        """The cell's argv from the table; with a prefix (a container), the command as it is, inside it."""
        argv = self.table.argv(cell.key, output_dir)
        return [*self.prefix, *argv] if self.prefix else local_argv(argv)

    def rules(self, ctx: RunContext) -> CellRules:
        """The timeout, retries and metric from the table."""
        return self.table.rules

    def environment(self, ctx: RunContext) -> dict[str, str]:  # type: ignore[override]
        """The run's clean environment; in a container, the staging directory bound into it."""
        env = clean_environment(os.environ, self.table.env)
        if self.prefix:
            env["APPTAINER_BIND"] = str(ctx.store.staging_dir(ctx.run_id))
        return env

    def _publish(self, ctx: RunContext, cell: Cell, stage: Path, record: dict[str, Any]) -> dict[str, Any]:
        return super()._publish(ctx, cell, stage, {**record, "slurm": self.facts})


def _task_index(environ: Mapping[str, str]) -> int:
    index = environ.get("SLURM_ARRAY_TASK_ID", "")
    if not index.isdigit():
        raise InputError("SLURM_ARRAY_TASK_ID is not set: this entry runs inside a Slurm array task")
    return int(index)


def run_cells(args: argparse.Namespace) -> int:
    """Run this task's row of cells; 0 when all succeeded (or were done already), else 1."""
    from expkit.stores import open_store

    index = _task_index(os.environ)
    store = open_store(args.store)
    where = f"{args.run}/{args.table}"
    try:
        doc = json.loads(store.get(where))
    except ValueError as err:
        raise InputError(f"{where}: not JSON ({err}): submit the cells again with 'expkit retry'") from err
    table = CellTable(doc, where)
    if index >= len(table.rows):
        raise InputError(f"{where}: no row {index} in the cell table")
    cells = [table.cell(k) for k in table.rows[index] if not store.exists(cell_prefix(args.run, k) + RUN_FILE)]
    version = (table.manifest.get("slurm") or {}).get("version")
    executor = SlurmTaskExecutor(slurm_facts(os.environ, version), table, args.prefix)
    # The executor takes everything of the spec from the table: no Experiment is loaded here.
    experiment = cast("Experiment", None)
    ctx = RunContext(args.run, experiment, Path(args.spec_dir), store, workers=1, manifest=table.manifest)
    _on_sigterm(executor)
    outcomes = executor.execute(ctx, cells)
    for o in outcomes:
        log.info("%s: %s%s", o.cell, o.status, f" ({o.reason})" if o.reason else "")
    return 0 if all(o.status == "succeeded" for o in outcomes) else 1


def run_prepare(args: argparse.Namespace) -> int:
    """Run the spec's prepare step once (its log goes to the store): this one loads the spec."""
    from expkit.spec import load_spec_text
    from expkit.stores import open_store

    store = open_store(args.store)
    manifest = store.manifest(args.run)
    loaded = load_spec_text(store.spec_text(args.run), path=Path(f"{args.run}/experiment.yml"))
    ctx = RunContext(args.run, loaded.experiment, Path(args.spec_dir), store, workers=1, manifest=manifest)
    executor = LocalExecutor()
    _on_sigterm(executor)
    executor.run_prepare(ctx)
    return 0


def _on_sigterm(executor: LocalExecutor) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=executor.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m expkit.executors.slurm.task")
    parser.add_argument("what", choices=("cells", "prepare"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--table")
    parser.add_argument("--spec-dir", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments (everything after ``--`` is the command prefix) and run; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prefix: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, prefix = argv[:cut], argv[cut + 1 :]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    args.prefix = prefix
    if args.what == "cells" and not args.table:
        log.error("cells needs --table")
        return 2
    try:
        return run_cells(args) if args.what == "cells" else run_prepare(args)
    except Interrupted as err:
        log.error("%s", err)
        return 143
    except ExpkitError as err:
        log.error("%s", err)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

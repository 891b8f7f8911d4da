"""Stage 2: the run matrix — every algorithm x dataset x replicate, each with a stable id and seed.

Seeds: replicate ``r`` on dataset ``d`` gets ``seed = (S_d + r * G) mod (2**31 - 1)`` where
``S_d`` is the first 32-bit word of ``numpy.random.SeedSequence(entropy=spec.seed,
spawn_key=(crc32(d),))`` reduced mod ``2**31 - 1`` and ``G = 1640531527`` (a Weyl stride). So
``0 <= seed < 2**31 - 1``, every replicate of a dataset gets a distinct seed (the map is injective
for ``r < 2**31 - 1`` because the modulus is prime), and the seed can be computed from
``(S_d, r)`` with integer arithmetic alone — which is how an Argo workflow computes it in the
cluster, so local and cluster runs get the same seeds. The seed does not depend on the algorithm, so
every algorithm sees the same seeds on the same (dataset, replicate): pairing by seed is meaningful.
Nor does it depend on the order or number of datasets or replicates: adding a dataset or more
replicates leaves existing seeds unchanged.

Order: cells are listed replicate-major (replicate 0 of every algorithm on every dataset, then
replicate 1, ...), so a run stopped early still has balanced samples across algorithms.
"""

from __future__ import annotations

import zlib
from typing import Any

from expkit.runs.cell import Cell as Cell  # re-exported: the matrix module names cells too
from expkit.spec import Experiment, substitute

SEED_MODULUS = 2**31 - 1
SEED_STRIDE = 1640531527
SEED_SCHEME = (
    "seed = (S_d + replicate * 1640531527) mod (2**31 - 1), S_d = numpy.random.SeedSequence(entropy=spec.seed, "
    "spawn_key=(crc32(dataset),)).generate_state(1)[0] mod (2**31 - 1)"
)


def dataset_seed(base_seed: int, dataset: str) -> int:
    """``S_d``: the per-dataset seed offset (see the module docstring)."""
    import numpy as np  # here, not at the top: a Slurm array task starts faster without it until needed

    ss = np.random.SeedSequence(entropy=base_seed, spawn_key=(zlib.crc32(dataset.encode()),))
    return int(ss.generate_state(1, dtype=np.uint32)[0]) % SEED_MODULUS


def derive_seed(base_seed: int, dataset: str, replicate: int) -> int:
    """The seed of ``replicate`` on ``dataset`` (see the module docstring)."""
    return (dataset_seed(base_seed, dataset) + replicate * SEED_STRIDE) % SEED_MODULUS


def cell_params(exp: Experiment, algorithm: str, dataset: str) -> dict[str, Any]:
    """Parameters of a cell: global, then the dataset's, then the algorithm's (later wins)."""
    spec = exp.spec
    alg = next(a for a in spec.algorithms if a.name == algorithm)
    ds = next(d for d in spec.datasets if d.name == dataset)
    return {**spec.params, **ds.params, **alg.params}


def build_matrix(exp: Experiment) -> list[Cell]:
    """All cells of the experiment, replicate-major."""
    spec = exp.spec
    params = {(a.name, d.name): {**spec.params, **d.params, **a.params} for a in spec.algorithms for d in spec.datasets}
    offsets = {d.name: dataset_seed(spec.seed, d.name) for d in spec.datasets}
    seeds = {
        (d.name, r): (offsets[d.name] + r * SEED_STRIDE) % SEED_MODULUS
        for d in spec.datasets
        for r in range(spec.replicates)
    }
    return [
        Cell(a.name, d.name, r, seeds[d.name, r], params[a.name, d.name])
        for r in range(spec.replicates)
        for d in spec.datasets
        for a in spec.algorithms
    ]


def placeholder_values(cell: Cell, output_dir: str) -> dict[str, Any]:
    """What each placeholder of a cell's command line stands for."""
    values: dict[str, Any] = {
        "algorithm": cell.algorithm,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "replicate": cell.replicate,
        "output_dir": output_dir,
    }
    values.update({f"params.{k}": v for k, v in cell.params.items()})
    return values


def render_argv(exp: Experiment, cell: Cell, output_dir: str) -> list[str]:
    """The cell's argv (``spec.command`` + ``spec.args``) with placeholders filled in. No shell."""
    values = placeholder_values(cell, output_dir)
    return [substitute(part, values) for part in (*exp.spec.command, *exp.spec.args)]

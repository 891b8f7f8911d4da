"""Stage 2, the run matrix: cells, their order, seeds, parameters and rendered command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from expkit.runner import start_run
from expkit.runs.matrix import build_matrix, cell_params, derive_seed, placeholder_values, render_argv
from expkit.spec import Experiment, load_spec, load_spec_text
from expkit.stores import FileStore

SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: matrix
spec:
  image: python:3.12-slim
  command: [python, run.py]
  args: ["--seed={{seed}}"]
  params: {{lr: 0.1, budget: 100}}
  algorithms:
    - {{name: alpha, params: {{lr: 0.3}}}}
    - name: beta
    - name: gamma
  datasets: {datasets}
  replicates: {replicates}
  seed: {seed}
  metric: {{name: score, goal: minimize}}
"""


def experiment(
    datasets: str = "[{name: d1, params: {lr: 0.2, budget: 5}}, d2]", replicates: int = 4, seed: int = 0
) -> Experiment:
    return load_spec_text(SPEC.format(datasets=datasets, replicates=replicates, seed=seed)).experiment


def seeds_of(exp: Experiment) -> dict[tuple[str, str, int], int]:
    return {(c.algorithm, c.dataset, c.replicate): c.seed for c in build_matrix(exp)}


# ---------------------------------------------------------------------------------------------
# Cells and order
# ---------------------------------------------------------------------------------------------


def test_one_cell_per_algorithm_dataset_replicate() -> None:
    cells = build_matrix(experiment())
    assert len(cells) == 3 * 2 * 4
    assert len({c.key for c in cells}) == len(cells)


def test_replicate_major_order() -> None:
    cells = build_matrix(experiment())
    expected = [(a, d, r) for r in range(4) for d in ("d1", "d2") for a in ("alpha", "beta", "gamma")]
    assert [(c.algorithm, c.dataset, c.replicate) for c in cells] == expected
    # A run stopped after any whole number of replicates has equal samples per algorithm.
    first = cells[:12]
    assert {a: sum(c.algorithm == a for c in first) for a in ("alpha", "beta", "gamma")} == {
        "alpha": 4,
        "beta": 4,
        "gamma": 4,
    }


def test_cell_keys() -> None:
    cells = build_matrix(experiment())
    assert cells[0].key == "alpha/d1/0"
    assert cells[-1].key == "gamma/d2/3"
    for c in cells:
        assert c.key == f"{c.algorithm}/{c.dataset}/{c.replicate}"


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def test_seeds_in_31_bit_range() -> None:
    exp = experiment(replicates=50, seed=2**62)
    for c in build_matrix(exp):
        assert 0 <= c.seed < 2**31
        assert isinstance(c.seed, int)


def test_seed_follows_documented_scheme() -> None:
    # Documented (and recorded in every manifest): seed = (S_d + r * 1640531527) mod (2**31 - 1), with
    # S_d = SeedSequence(entropy=spec.seed, spawn_key=(crc32(dataset),)).generate_state(1)[0] mod (2**31 - 1).
    # Recomputed here independently so a change of scheme (which changes every stored run's seeds) is noticed.
    p = 2**31 - 1
    for base, ds, rep in ((0, "d1", 0), (7, "sphere", 3), (2**40 + 1, "x-y", 99), (5, "d", 2**20)):
        ss = np.random.SeedSequence(entropy=base, spawn_key=(zlib.crc32(ds.encode()),))
        s_d = int(ss.generate_state(1, dtype=np.uint32)[0]) % p
        assert derive_seed(base, ds, rep) == (s_d + rep * 1640531527) % p
    exp = experiment(seed=9)
    for c in build_matrix(exp):
        assert c.seed == derive_seed(9, c.dataset, c.replicate)


def test_same_spec_same_seeds() -> None:
    assert seeds_of(experiment()) == seeds_of(experiment())


def test_seeds_identical_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yml"
    path.write_text(SPEC.format(datasets="[d1, d2, d3]", replicates=5, seed=42))
    code = (
        "import json, sys\nfrom expkit.spec import load_spec\nfrom expkit.runs.matrix import build_matrix\n"
        "print(json.dumps([[c.key, c.seed] for c in build_matrix(load_spec(sys.argv[1]).experiment)]))"
    )
    outs = []
    for hashseed in ("1", "12345"):  # str hashing must not leak into seeds
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True, timeout=60
        )
        outs.append({k: s for k, s in json.loads(out.stdout)})
    here = {c.key: c.seed for c in build_matrix(load_spec(path).experiment)}
    assert outs[0] == outs[1] == here
    assert len(here) == 3 * 3 * 5


def test_same_dataset_and_replicate_same_seed_for_every_algorithm() -> None:
    seeds = seeds_of(experiment())
    for ds in ("d1", "d2"):
        for r in range(4):
            assert len({seeds[a, ds, r] for a in ("alpha", "beta", "gamma")}) == 1


def test_seeds_differ_across_replicates_and_datasets() -> None:
    seeds = seeds_of(experiment(datasets="[d1, d2, d3, d4]", replicates=30))
    per_pair = {(ds, r): s for (_, ds, r), s in seeds.items()}
    assert len(per_pair) == 4 * 30
    assert len(set(per_pair.values())) == len(per_pair)


def test_base_seed_changes_every_seed() -> None:
    a, b = seeds_of(experiment(seed=0)), seeds_of(experiment(seed=1))
    assert all(a[k] != b[k] for k in a)


def test_adding_datasets_or_replicates_keeps_existing_seeds() -> None:
    base = seeds_of(experiment(datasets="[d1, d2]", replicates=4))
    more_reps = seeds_of(experiment(datasets="[d1, d2]", replicates=9))
    more_ds = seeds_of(experiment(datasets="[d0, d1, d2, d3]", replicates=4))
    reordered = seeds_of(experiment(datasets="[d2, d1]", replicates=4))
    for bigger in (more_reps, more_ds, reordered):
        assert {k: bigger[k] for k in base} == base
    assert len(more_reps) > len(base) and len(more_ds) > len(base)


def test_dataset_params_do_not_change_seeds() -> None:
    plain = seeds_of(experiment(datasets="[d1, d2]"))
    with_params = seeds_of(experiment(datasets="[{name: d1, params: {x: 1}}, d2]"))
    assert plain == with_params


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def test_params_precedence_global_dataset_algorithm() -> None:
    exp = experiment()
    by_key = {c.key: c.params for c in build_matrix(exp)}
    assert by_key["alpha/d1/0"] == {"lr": 0.3, "budget": 5}  # algorithm beats dataset beats global
    assert by_key["beta/d1/0"] == {"lr": 0.2, "budget": 5}  # dataset beats global
    assert by_key["beta/d2/0"] == {"lr": 0.1, "budget": 100}  # global
    assert by_key["alpha/d2/2"] == {"lr": 0.3, "budget": 100}
    assert cell_params(exp, "gamma", "d1") == by_key["gamma/d1/1"]


# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------

ARGV_SPEC = """\
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: argv
spec:
  image: python:3.12-slim
  command: [python, show.py]
  args:
    - "--alg={algorithm}"
    - "{dataset}"
    - "--seed={seed}"
    - "--rep={replicate}"
    - "--out={output_dir}"
    - "{params.f}"
    - "{params.b}"
    - "{params.l}"
    - "{params.m}"
    - "{params.s}"
    - "{params.n}"
    - "{{literal}} {{{seed}}}"
    - "{params.evil}"
  params:
    f: 0.1
    b: true
    l: [1, 2]
    m: {a: 1}
    s: "two words"
    n: null
    evil: "x; rm -rf VICTIM; $(touch PWNED) `touch PWNED2` && echo hi > PWNED3"
  algorithms: [{name: alpha}]
  datasets: [d1]
  replicates: 1
  metric: {name: score, goal: minimize}
"""


def test_render_argv_values() -> None:
    exp = load_spec_text(ARGV_SPEC).experiment
    cell = build_matrix(exp)[0]
    argv = render_argv(exp, cell, "/out dir")
    assert argv[:7] == ["python", "show.py", "--alg=alpha", "d1", f"--seed={cell.seed}", "--rep=0", "--out=/out dir"]
    assert argv[7:13] == ["0.1", "true", "[1, 2]", '{"a": 1}', "two words", "null"]
    assert argv[13] == "{literal} {" + str(cell.seed) + "}"
    values = placeholder_values(cell, "/o")
    assert values["seed"] == cell.seed and values["params.f"] == 0.1 and values["output_dir"] == "/o"


def test_arguments_reach_the_run_literally_without_a_shell(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    spec_dir = tmp_path / "exp"
    spec_dir.mkdir()
    text = ARGV_SPEC.replace("VICTIM", str(victim)).replace("PWNED", str(tmp_path / "pwned"))
    (spec_dir / "experiment.yml").write_text(text)
    (spec_dir / "show.py").write_text(
        "import json, os, sys\n"
        "out = os.environ['EXPKIT_OUTPUT_DIR']\n"
        "json.dump({'out': out, 'argv': sys.argv[1:]}, open(os.path.join(out, 'argv.json'), 'w'))\n"
        "json.dump({'metrics': {'score': 1.0}}, open(os.path.join(out, 'result.json'), 'w'))\n"
    )
    store = FileStore(tmp_path / "store")
    outcome = start_run(spec_dir / "experiment.yml", store, workers=1)
    assert outcome.ok, outcome.failed
    seen = json.loads(store.get(f"{outcome.run_id}/runs/alpha/d1/0/argv.json"))
    got = seen["argv"]
    evil = (
        f"x; rm -rf {victim}; $(touch {tmp_path / 'pwned'}) `touch {tmp_path / 'pwned2'}` && echo hi > "
        f"{tmp_path / 'pwned3'}"
    )
    assert got[-1] == evil
    assert got[-2] == "{literal} {" + str(build_matrix(load_spec(spec_dir / "experiment.yml").experiment)[0].seed) + "}"
    assert got[5:11] == ["0.1", "true", "[1, 2]", '{"a": 1}', "two words", "null"]
    assert (victim / "keep.txt").read_text() == "still here"
    assert not any((tmp_path / n).exists() for n in ("pwned", "pwned2", "pwned3"))
    assert got[4] == "--out=" + seen["out"]  # {output_dir} is the EXPKIT_OUTPUT_DIR the run sees

"""`expkit compare` / `expkit reproduce`: the statistical reproduction check, end to end and unit by unit."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from expkit.analysis.collect import collect
from expkit.core.errors import InputError
from expkit.reproduce.bundle import export_run
from expkit.reproduce.compare import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    compare_runs,
    comparison_json,
    equivalence_test,
    load_side,
    min_replicates,
    reproduce,
    sample_cells,
    write_comparison,
)
from expkit.runner import start_run
from expkit.spec import apply_overrides, load_spec
from expkit.stores import FileStore

REPO = Path(__file__).resolve().parent.parent
BUDGET = ["budget=300"]


def _small_quickstart(target: Path) -> Path:
    """The quickstart with two functions and six replicates (paired by seed: enough for equivalence)."""
    shutil.copytree(REPO / "examples" / "quickstart", target)
    spec = target / "experiment.yml"
    text = spec.read_text()
    for name in ("ellipsoid", "rosenbrock", "ackley", "griewank", "levy"):
        drop = f"    - {{name: {name}, params: {{dim: 5}}}}\n"
        assert drop in text
        text = text.replace(drop, "")
    assert "  replicates: 8\n" in text
    spec.write_text(text.replace("  replicates: 8\n", "  replicates: 6\n"))
    return spec


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory):
    """An original run of the small quickstart and its exact re-run through ``reproduce``."""
    root = tmp_path_factory.mktemp("quick")
    spec = _small_quickstart(root / "qs")
    store = FileStore(root / "store")
    original = start_run(spec, store, overrides=BUDGET, workers=2)
    outcome = reproduce(spec, store, overrides=BUDGET, workers=2)
    return root, spec, store, original.run_id, outcome


def test_exact_rerun_of_the_quickstart_is_reproduced(quick) -> None:
    _, _, store, original_id, outcome = quick
    comparison = outcome.comparison
    assert comparison.original_run == original_id and comparison.rerun_run == outcome.run.run_id != original_id
    assert outcome.run.ok and outcome.run.succeeded == 3 * 2 * 6
    # Same seeds, deterministic code: identical values, cell by cell.
    a = outcome.original.table.sort_values(["algorithm", "dataset", "replicate", "metric"])["value"].to_numpy()
    b = outcome.rerun.table.sort_values(["algorithm", "dataset", "replicate", "metric"])["value"].to_numpy()
    assert np.array_equal(a, b)
    assert comparison.verdict == REPRODUCED and comparison.exit_code == 0
    assert len(comparison.cells) == 6 and all(c.verdict == REPRODUCED for c in comparison.cells)
    assert all(c.paired and c.equivalence.a12 == 0.5 and not c.different for c in comparison.cells)
    assert comparison.spec.status == "identical"
    assert comparison.conclusions.agree and comparison.conclusions.kendall_tau == 1.0
    assert comparison.conclusions.pairs_original == comparison.conclusions.pairs_rerun
    manifest = store.manifest(outcome.run.run_id)
    assert manifest["reproduction"]["original"] == original_id


def test_a_degraded_algorithm_is_not_reproduced_on_exactly_its_cells(quick, tmp_path: Path) -> None:
    root, _, _, original_id, outcome = quick
    copy = tmp_path / "store"
    shutil.copytree(root / "store", copy)
    tampered = {("simulated-annealing", "sphere"), ("random-search", "rastrigin")}
    rerun_id = outcome.run.run_id
    for alg, ds in tampered:  # much worse values: a broken re-implementation
        for rep in range(6):
            path = copy / rerun_id / "runs" / alg / ds / str(rep) / "result.json"
            doc = json.loads(path.read_text())
            doc["metrics"]["best"] = doc["metrics"]["best"] * 10 + 100
            path.write_text(json.dumps(doc))
    store = FileStore(copy)
    comparison = compare_runs(collect(store, original_id), collect(store, rerun_id))
    assert comparison.verdict == NOT_REPRODUCED and comparison.exit_code == 1
    bad = {(c.algorithm, c.dataset) for c in comparison.cells_with(NOT_REPRODUCED)}
    assert bad == tampered
    assert {c.verdict for c in comparison.cells if (c.algorithm, c.dataset) not in tampered} == {REPRODUCED}
    for cell in comparison.cells_with(NOT_REPRODUCED):
        assert "significantly different" in cell.reason and "the re-run is worse" in cell.reason
        assert cell.equivalence.a12 == 0.0 and "large" in cell.reason
    text = "\n".join(comparison.summary_lines())
    assert "NOT REPRODUCED" in text
    for alg, ds in tampered:
        assert f"{alg}/{ds}" in comparison.reasons[0] and f"{alg}/{ds}: not reproduced" in text


def test_a_different_spec_cannot_be_reproduced(quick) -> None:
    _, _, _, _, outcome = quick
    changed = apply_overrides(outcome.rerun.experiment, {"budget": 999})
    rerun = dataclasses.replace(outcome.rerun, experiment=changed)
    comparison = compare_runs(outcome.original, rerun)
    assert comparison.spec.status == "different" and "spec.params.budget" in comparison.spec.material
    assert comparison.verdict == INCONCLUSIVE
    assert any("different experiment" in r for r in comparison.reasons)


def test_compare_json_is_deterministic_and_the_plot_is_written(quick, tmp_path: Path) -> None:
    _, _, _, _, outcome = quick
    first = write_comparison(outcome.comparison, outcome.original, outcome.rerun, tmp_path / "a")
    again = compare_runs(outcome.original, outcome.rerun)
    second = write_comparison(again, outcome.original, outcome.rerun, tmp_path / "b")
    assert [p.name for p in first] == ["compare.json", "compare-best.png", "compare-best.pdf"]
    assert (tmp_path / "a" / "compare.json").read_bytes() == (tmp_path / "b" / "compare.json").read_bytes()
    assert comparison_json(again) == (tmp_path / "a" / "compare.json").read_text()

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in compare.json")

    doc = json.loads((tmp_path / "a" / "compare.json").read_text(), parse_constant=no_constants)
    assert doc["verdict"] == REPRODUCED and doc["counts"] == {REPRODUCED: 6, NOT_REPRODUCED: 0, INCONCLUSIVE: 0}
    assert doc["equivalence_range"] == [0.5 - 0.14, 0.5 + 0.14]
    for p in second[1:]:
        assert p.stat().st_size > 1000
    assert (tmp_path / "a" / "compare-best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bundle_as_original_and_a_seeded_sample(quick, tmp_path: Path) -> None:
    root, spec, _, original_id, _ = quick
    bundle = export_run(FileStore(root / "store"), original_id, tmp_path / "paper.zip", include_report=False)
    side = load_side(bundle, None)
    assert side.run_id == original_id and len(side.table) == len(collect(FileStore(root / "store"), original_id).table)
    store = FileStore(tmp_path / "store")
    outcome = reproduce(bundle, store, spec_dir=spec.parent, sample=12, seed=7, workers=2)
    assert outcome.sample == tuple(sorted(sample_cells(side.experiment, 12, seed=7)))
    assert len(outcome.sample) == 12 and outcome.run.succeeded == 12 and outcome.run.missing == 36 - 12
    comparison = outcome.comparison
    assert comparison.restricted == 12 and comparison.original_run == original_id
    # Two paired runs per cell: nothing can be shown equivalent, and the words say why.
    assert comparison.verdict == INCONCLUSIVE and comparison.cells
    for cell in comparison.cells:
        assert cell.verdict == INCONCLUSIVE and cell.n_original == cell.n_rerun == 2
        assert "too few runs" in cell.reason and "at least 5" in cell.reason
    assert any("--sample 30" in w for w in outcome.warnings)
    manifest = store.manifest(outcome.run.run_id)
    assert manifest["spec_dir"] == str(spec.parent.resolve()) and manifest["reproduction"]["sample"] == 12
    # The bundle holds the code: a --spec-dir with other code is refused, naming the file, before anything runs.
    other = tmp_path / "other"
    other.mkdir()
    (other / "optimizers.py").write_text("# not the bundle's code\n")
    with pytest.raises(InputError, match="modified optimizers.py"):
        reproduce(bundle, store, spec_dir=other)
    # A bundle without the code needs a checkout of it.
    no_code = export_run(FileStore(root / "store"), original_id, tmp_path / "nocode.zip", include_code=False)
    with pytest.raises(InputError, match="spec-dir"):
        reproduce(no_code, store, spec_dir=tmp_path / "nowhere")
    with pytest.raises(InputError, match="is the original itself"):
        reproduce(bundle, store, original=original_id)


def test_sample_is_seeded_and_keeps_algorithms_together() -> None:
    experiment = load_spec(REPO / "examples" / "quickstart" / "experiment.yml").experiment
    a = sample_cells(experiment, 30, seed=1)
    assert a == sample_cells(experiment, 30, seed=1) and a != sample_cells(experiment, 30, seed=2)
    assert len(a) == 30
    blocks = {tuple(k.split("/")[1:]) for k in a}
    assert len(blocks) == 10
    for ds, rep in blocks:  # every algorithm on a sampled (dataset, replicate): comparable by seed
        assert {k.split("/")[0] for k in a if k.endswith(f"/{ds}/{rep}")} == {
            "random-search",
            "one-plus-one-es",
            "simulated-annealing",
        }
    names = [d.name for d in experiment.spec.datasets]
    per_dataset = [sum(1 for d, _ in blocks if d == name) for name in names]
    assert len(names) == 7 and sorted(per_dataset) == [1, 1, 1, 1, 2, 2, 2]  # spread over the datasets
    assert len(sample_cells(experiment, 10_000)) == 168
    with pytest.raises(InputError):
        sample_cells(experiment, 0)


# -- fast synthetic experiments ---------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, os, random
    alg = os.environ["EXPKIT_ALGORITHM"]
    rng = random.Random(int(os.environ["EXPKIT_SEED"]) * 31 + len(alg))
    loss = rng.gauss({"good": 1.0, "twin": 1.0, "bad": 2.0}[alg], 0.3)
    json.dump({"metrics": {"loss": loss}}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
""")


def _synthetic(root: Path, *, replicates: int, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.py").write_text(SCRIPT)
    spec = root / "experiment.yml"
    spec.write_text(
        textwrap.dedent(f"""
        apiVersion: expkit/v1
        kind: Experiment
        metadata: {{name: synth}}
        spec:
          image: python:3.12-slim@sha256:{"d" * 64}
          command: [python, run.py]
          algorithms: [{{name: good}}, {{name: twin}}, {{name: bad}}]
          datasets: [d1, d2, d3]
          replicates: {replicates}
          seed: {seed}
          metric: {{name: loss, goal: minimize}}
    """)
    )
    return spec


def test_three_replicates_are_inconclusive_and_say_why(tmp_path: Path) -> None:
    spec = _synthetic(tmp_path / "exp", replicates=3, seed=4)
    store = FileStore(tmp_path / "store")
    start_run(spec, store, workers=2)
    outcome = reproduce(spec, store, workers=2)
    comparison = outcome.comparison
    assert comparison.verdict == INCONCLUSIVE and comparison.exit_code == 3
    assert len(comparison.cells) == 9
    for cell in comparison.cells:
        assert cell.verdict == INCONCLUSIVE and not cell.different and cell.paired
        assert cell.equivalence.a12 == 0.5 and not cell.equivalence.feasible
        assert "too few runs to show equivalence" in cell.reason
        assert "2^-3 = 0.125" in cell.reason and "at least 5 replicates" in cell.reason
    assert any("9 cell(s) inconclusive" in r for r in comparison.reasons)


def test_different_seeds_are_never_not_reproduced(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    first = start_run(_synthetic(tmp_path / "a", replicates=10, seed=11), store, workers=2).run_id
    second = start_run(_synthetic(tmp_path / "b", replicates=10, seed=12), store, workers=2).run_id
    comparison = compare_runs(collect(store, first), collect(store, second))
    assert comparison.spec.status == "compatible" and comparison.spec.differences == ("spec.seed",)
    assert "seeds differ" in comparison.spec.message
    assert comparison.verdict in (REPRODUCED, INCONCLUSIVE)
    assert not comparison.cells_with(NOT_REPRODUCED) and not comparison.conclusions.flips
    for cell in comparison.cells:
        assert not cell.paired
        # Ten independent runs per side cannot show equivalence within ±0.14, and the reason says so.
        assert cell.verdict == INCONCLUSIVE and "independent runs" in cell.reason and "25 runs per side" in cell.reason


# -- the equivalence test itself --------------------------------------------------------------------


def test_unpaired_interval_is_the_brunner_munzel_statistic() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(0.4, 2.0, size=9)
    eq = equivalence_test(x, y, goal="maximize", paired=False)
    bm = sps.brunnermunzel(x, y)
    assert eq.se > 0
    assert math.isclose((eq.a12 - 0.5) / eq.se, bm.statistic, rel_tol=1e-9)
    assert math.isclose(2 * sps.t.sf(abs(bm.statistic), eq.df), bm.pvalue, rel_tol=1e-9)
    u = sps.mannwhitneyu(y, x).statistic  # U of the re-run = its A12 * n1 * n2
    assert math.isclose(eq.a12, u / (len(x) * len(y)), rel_tol=1e-12)
    flipped = equivalence_test(x, y, goal="minimize", paired=False)
    assert math.isclose(flipped.a12, 1 - eq.a12, rel_tol=1e-12)


def test_equivalence_decisions() -> None:
    rng = np.random.default_rng(8)
    same_a, same_b = rng.normal(size=400), rng.normal(size=400)
    assert equivalence_test(same_a, same_b, goal="minimize").equivalent
    shifted = equivalence_test(same_a, same_b + 1.0, goal="minimize")
    assert not shifted.equivalent and shifted.a12 < 0.36 and shifted.ci_high < 0.5
    x = rng.normal(size=10)
    assert equivalence_test(x, x.copy(), goal="minimize", paired=True).equivalent
    unpaired = equivalence_test(x, x.copy(), goal="minimize", paired=False)
    assert unpaired.a12 == 0.5 and not unpaired.feasible and not unpaired.equivalent
    noisy = equivalence_test(x, x + rng.normal(0, 0.01, size=10), goal="minimize", paired=True)
    assert noisy.equivalent and noisy.ci_low > 0.36 and noisy.ci_high < 0.64


def test_minimum_replicates() -> None:
    # Paired: the smallest n with 2^-n < alpha.
    for alpha in (0.01, 0.05, 0.1):
        n = min_replicates(alpha=alpha, paired=True)
        assert 2.0**-n < alpha <= 2.0 ** -(n - 1)
    # Independent: n runs per side is the first size at which two identical samples pass the TOST.
    n = min_replicates(paired=False)
    base = np.arange(n, dtype=float)
    assert equivalence_test(base, base.copy(), goal="minimize").equivalent
    smaller = np.arange(n - 1, dtype=float)
    assert not equivalence_test(smaller, smaller.copy(), goal="minimize").equivalent
    assert min_replicates(paired=False, margin=0.2) < n < min_replicates(paired=False, alpha=0.01)
    with pytest.raises(InputError):
        min_replicates(paired=False, margin=0.7)

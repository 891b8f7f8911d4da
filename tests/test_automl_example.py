"""examples/automl-smac: the smoke study end to end (`expkit run` then `expkit results`), and the
example's files agreeing with each other.

The end-to-end tests need the `smac` extra (`pip install ".[smac]"`) and are skipped without it.
What they assert about SMAC against random search is what the smoke budget (10 trials, 3-fold CV,
3 replicates) supports: measured over 30 seeds per dataset, the two are statistically
indistinguishable at 10 trials, and SMAC's median test error is at most random search's on at
least 3 of the 4 datasets in every group of 3 seeds tried. See examples/automl-smac/README.md.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from expkit.cli import app
from expkit.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "automl-smac"
ALGORITHMS = ("smac", "random-search", "default")
DATASETS = ("iris", "wine", "breast-cancer", "digits")


# ------------------------------------------------------------------------------ static, always run


def test_smoke_is_the_study_at_a_smaller_budget() -> None:
    full, smoke = (load_spec(EXAMPLE / name, []).experiment for name in ("experiment.yml", "smoke.yml"))
    for field in ("image", "command", "args", "algorithms", "datasets", "seed", "metric", "paired", "resources"):
        assert getattr(smoke.spec, field) == getattr(full.spec, field), (
            f"smoke.yml differs from experiment.yml in {field}"
        )
    assert [a.name for a in full.spec.algorithms] == list(ALGORITHMS)
    assert [d.name for d in full.spec.datasets] == list(DATASETS)
    assert set(smoke.spec.params) == set(full.spec.params)
    assert smoke.spec.params["trials"] < full.spec.params["trials"]
    assert smoke.spec.replicates < full.spec.replicates
    assert smoke.metadata.name != full.metadata.name


def _pins(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_smac_extra_matches_the_image_pins() -> None:
    """pyproject.toml's `smac` extra pins the same versions as the image's requirements.txt."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    if "smac" not in extras:
        pytest.skip("pyproject.toml has no 'smac' extra yet")
    image = _pins(EXAMPLE / "requirements.txt")
    assert {"smac", "scikit-learn", "configspace", "numpy"} <= set(image)
    for dep in extras["smac"]:
        req = Requirement(dep)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        assert pinned, f"the smac extra's {dep!r} is not an exact pin"
        assert image.get(canonicalize_name(req.name)) == pinned[0], (
            f"the smac extra pins {dep!r} but examples/automl-smac/requirements.txt has "
            f"{image.get(canonicalize_name(req.name))!r}"
        )


# ------------------------------------------------------------------------------ the smoke study


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`expkit run smoke.yml` then `expkit results latest` on a copy of the example."""
    pytest.importorskip("smac", reason="the automl-smac example needs the smac extra: pip install '.[smac]'")
    pytest.importorskip("sklearn", reason="the automl-smac example needs the smac extra: pip install '.[smac]'")
    root = tmp_path_factory.mktemp("automl")
    example = root / "automl-smac"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("*.png", "__pycache__", "expkit-*"))
    store, out = root / "store", root / "results"
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("EXPKIT_STORE", raising=False)
        ran = runner.invoke(app, ["run", str(example / "smoke.yml"), "--store", str(store), "-j", "2"])
        res = runner.invoke(app, ["results", "latest", "--store", str(store), "-o", str(out), "--format", "png"])
    assert ran.exit_code == 0, f"expkit run smoke.yml failed:\n{ran.output}"
    assert res.exit_code == 0, f"expkit results latest failed:\n{res.output}"
    run_dir = next(p for p in store.iterdir() if p.is_dir() and p.name.startswith("automl-smac-smoke-"))
    return {"ran": ran, "res": res, "run_dir": run_dir, "out": out}


def _table(smoke: dict[str, Any]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(metric, algorithm, dataset) -> {replicate: value} from results.csv."""
    table: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    with (smoke["out"] / "results.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["value"] != "":
                table[(row["metric"], row["algorithm"], row["dataset"])][int(row["replicate"])] = float(row["value"])
    return table


def _result(smoke: dict[str, Any], algorithm: str, dataset: str, replicate: int) -> dict[str, Any]:
    return json.loads((smoke["run_dir"] / "runs" / algorithm / dataset / str(replicate) / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)  # the smoke study: about 1.5 minutes on 2 cores, more on a busy machine
def test_smoke_runs_and_reports(smoke: dict[str, Any]) -> None:
    assert "36/36 succeeded" in smoke["ran"].output
    table = _table(smoke)
    for alg in ALGORITHMS:
        for ds in DATASETS:
            assert sorted(table[("error", alg, ds)]) == [0, 1, 2], f"{alg}/{ds}: missing or failed replicates"
            assert all(0.0 <= v <= 1.0 for v in table[("error", alg, ds)].values())
    assert (smoke["out"] / "convergence-error-step.png").stat().st_size > 10_000
    assert (smoke["out"] / "report.html").is_file()
    stats = json.loads((smoke["out"] / "stats.json").read_text())
    assert stats["metric"] == "error"
    assert {d["dataset"] for d in stats["per_dataset"]} == set(DATASETS)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the smoke study: about 1.5 minutes on 2 cores, more on a busy machine
def test_trajectories_are_incumbent_curves(smoke: dict[str, Any]) -> None:
    """Steps 1..trials; the incumbent's CV error never increases, ends at the reported cv_error and is
    the minimum of the trials' errors."""
    for alg, trials in (("smac", 10), ("random-search", 10), ("default", 1)):
        for ds in DATASETS:
            for rep in range(3):
                doc = _result(smoke, alg, ds, rep)
                traj = doc["trajectory"]
                assert [r["step"] for r in traj] == list(range(1, trials + 1))
                errors = [r["error"] for r in traj]
                assert all(b <= a for a, b in zip(errors, errors[1:])), f"{alg}/{ds}/{rep}: incumbent got worse"
                assert errors[-1] == doc["metrics"]["cv_error"] == min(r["trial_error"] for r in traj)
                times = [r["time"] for r in traj]
                assert times == sorted(times)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the smoke study: about 1.5 minutes on 2 cores, more on a busy machine
def test_same_seed_same_split_and_folds_for_every_algorithm(smoke: dict[str, Any]) -> None:
    """Random search evaluates scikit-learn's default first: on the same (dataset, replicate) its
    first trial's CV error equals the 'default' run's exactly, which holds only if both used the
    same split and folds. And both tuners end at or below the default's CV error (SMAC's initial
    design contains the default too)."""
    table = _table(smoke)
    for ds in DATASETS:
        for rep in range(3):
            default_cv = table[("cv_error", "default", ds)][rep]
            assert _result(smoke, "random-search", ds, rep)["trajectory"][0]["trial_error"] == default_cv
            smac_trials = [r["trial_error"] for r in _result(smoke, "smac", ds, rep)["trajectory"]]
            assert default_cv in smac_trials, f"smac/{ds}/{rep}: the default configuration was not evaluated"
            for alg in ("smac", "random-search"):
                assert table[("cv_error", alg, ds)][rep] <= default_cv


@pytest.mark.slow
@pytest.mark.timeout(900)  # the smoke study: about 1.5 minutes on 2 cores, more on a busy machine
def test_smac_is_not_worse_than_random_search_at_the_smoke_budget(smoke: dict[str, Any]) -> None:
    """At 10 trials SMAC's median test error is at most random search's on at least 3 of the 4
    datasets (true for every group of 3 seeds measured; a claim that SMAC is *better* is not
    supported at this budget, see the README)."""
    table = _table(smoke)
    not_worse = [
        ds
        for ds in DATASETS
        if statistics.median(table[("error", "smac", ds)].values())
        <= statistics.median(table[("error", "random-search", ds)].values())
    ]
    assert len(not_worse) >= 3, f"SMAC's median test error is at most random search's only on {not_worse}"

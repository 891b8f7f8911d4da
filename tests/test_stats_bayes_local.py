"""The Bayesian signed-rank test per dataset over the paired replicates (issue 14, item 5, the per-dataset
part): expkit.analysis.stats.bayes_local.

References: Benavoli, Corani, Demsar & Zaffalon, "Time for a change: a tutorial for comparing multiple
classifiers through Bayesian analysis", JMLR 18(77), 2017, sec. 5; baycomp 1.0.3
``baycomp.multiple.SignedRankTest`` (the reference implementation by the same authors), applied to one
dataset's paired replicate values. The theta computation is checked against
:func:`expkit.analysis.stats.bayes.posterior_thetas`, which tests/test_stats_bayes.py checks against
baycomp's O(n^2) double sum to 1e-12.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from expkit.analysis.stats import analyze
from expkit.analysis.stats.bayes import posterior_thetas
from expkit.analysis.stats.bayes_local import (
    LOCAL_SAMPLES,
    _cuts,
    _products,
    _thetas,
    shared_weights,
    signed_rank_batch,
    size_seed,
)
from expkit.core.errors import InputError

baycomp = pytest.importorskip("baycomp")


def _table(effects: dict[str, float], *, datasets: int = 3, replicates: int = 30, seed: int = 0) -> pd.DataFrame:
    """A paired tidy table: per dataset and seed a shared seed effect, plus each algorithm's shift and noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(datasets):
        base = rng.normal(0.0, 0.5, replicates)
        for alg, eff in effects.items():
            values = 0.8 + 0.05 * d + base + eff + rng.normal(0.0, 0.03, replicates)
            for r in range(replicates):
                rows.append(
                    {
                        "algorithm": alg,
                        "dataset": f"d{d}",
                        "replicate": r,
                        "seed": 100 + r,
                        "metric": "acc",
                        "value": float(values[r]),
                        "status": "succeeded",
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("rope", "infinite"), [(0.0, False), (1 / 128, False), (1 / 32, False), (1 / 32, True), (0.0, True)]
)
def test_shared_weight_thetas_equal_the_validated_computation(rope: float, infinite: bool) -> None:
    """For the same posterior weights, the sparse-table thetas equal posterior_thetas (itself equal to
    baycomp's double sum), with zero differences, ties with 2r on a 1/64 grid and +-inf (failed runs)."""
    rng = np.random.default_rng(7)
    z = np.round(rng.normal(0.01, 0.03, 17) * 64) / 64
    z[:3] = 0.0
    if infinite:
        z[3], z[4] = np.inf, -np.inf
    zs = np.sort(z)
    exp, gam = shared_weights(zs.size, 60)
    table, inv = _products(exp, gam)
    theta_a, theta_b = _thetas(table, inv, _cuts(zs[None, :], rope), rope)
    # column 0: the pseudo-observation's weight; column k: the weight of the k-th smallest observation
    ref = posterior_thetas(zs, np.column_stack([gam, exp]), rope)
    np.testing.assert_allclose(theta_a[0], ref[:, 0], atol=1e-12)
    np.testing.assert_allclose(theta_b[0], ref[:, 2], atol=1e-12)


@pytest.mark.parametrize("rope", [0.005, 0.015])
def test_agrees_with_baycomp_per_dataset_within_monte_carlo_error(rope: float) -> None:
    """Every dataset-pair of a paired analysis: P(a better), P(equivalent), P(b better) agree with
    baycomp.SignedRankTest.probs on that dataset's paired replicate values (50,000 samples) within 4
    Monte-Carlo standard errors of the difference (2,000 samples here). With ROPE 0.015 (half the noise)
    P(equivalent) ranges over 0.04-0.79, with 0.005 the directions over 0.005-0.995."""
    table = _table({"A": 0.012, "B": 0.0, "C": 0.004}, datasets=3, replicates=25, seed=3)
    an = analyze(table, metric="acc", goal="maximize", paired=True, rope=rope)
    doc = an.to_dict()
    checked = 0
    for d, block in enumerate(doc["per_dataset"]):
        for pair in block["pairwise"]["pairs"]:
            rec = pair["bayesian"]
            sub = table[table["dataset"] == block["dataset"]].sort_values("seed")
            x = sub[sub["algorithm"] == pair["a"]]["value"].to_numpy()
            y = sub[sub["algorithm"] == pair["b"]]["value"].to_numpy()
            # baycomp: differences y - x, 'right' = y better; x = b, y = a gives (P(b), P(rope), P(a))
            ref_b, ref_rope, ref_a = baycomp.SignedRankTest.probs(y, x, rope=rope, nsamples=50_000, random_state=d)
            for mine, theirs in (
                (rec["p_a_better"], ref_a),
                (rec["p_equivalent"], ref_rope),
                (rec["p_b_better"], ref_b),
            ):
                var = max(theirs * (1 - theirs), 1e-4)
                assert abs(mine - theirs) <= 4 * np.sqrt(var / LOCAL_SAMPLES + var / 50_000) + 1e-12, (
                    pair,
                    mine,
                    theirs,
                )
            checked += 1
    assert checked == 9


def test_agrees_with_baycomp_without_rope_and_for_minimize() -> None:
    """ROPE 0 (baycomp returns two probabilities) and goal 'minimize' (smaller is better: the differences
    are oriented, so P(a better) is baycomp's P(x better) for x = a)."""
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 1.0, 20)
    b = a + 0.15 + rng.normal(0.0, 0.5, 20)
    res = signed_rank_batch((a - b)[None, :] * -1.0, rope=0.0)  # minimize: z = b - a > 0 means a better
    left, right = baycomp.SignedRankTest.probs(a, b, rope=0.0, nsamples=50_000, random_state=1)
    # baycomp: right = P(b - a > 0) = P(b larger) = P(a better) when smaller is better
    var = max(right * (1 - right), 1e-4)
    assert abs(res.p_a[0] - right) <= 4 * np.sqrt(var / LOCAL_SAMPLES + var / 50_000)
    assert res.p_rope[0] == 0.0 and abs(res.p_b[0] - left) <= 4 * np.sqrt(var / LOCAL_SAMPLES + var / 50_000)


def test_analytic_limits() -> None:
    """Identical samples: every difference 0, so theta_rope = 1 in every sample for a ROPE > 0 ->
    P(equivalent) = 1, 'equivalent'; with ROPE 0 theta_a = theta_b = 1/2, shared: 1/2 each, undecided.
    A shift of 100 beyond the ROPE on every seed: only the pseudo-observation can fall short ->
    P(better) = 1 in the goal's direction."""
    table = _table({"A": 0.0, "B": 0.0}, datasets=2, replicates=30)
    twin = table[table["algorithm"] == "A"].assign(algorithm="T")
    far = table[table["algorithm"] == "A"].assign(algorithm="Z", value=lambda f: f["value"] + 100.0)
    both = pd.concat([table, twin, far], ignore_index=True)
    an = analyze(both, metric="acc", goal="minimize", paired=True, rope=0.001)
    pairs = {
        (p["a"], p["b"], d["dataset"]): p["bayesian"]
        for d in an.to_dict()["per_dataset"]
        for p in d["pairwise"]["pairs"]
    }
    for ds in ("d0", "d1"):
        assert pairs["A", "T", ds]["p_equivalent"] == 1.0 and pairs["A", "T", ds]["decision"] == "equivalent"
        assert pairs["A", "Z", ds]["p_a_better"] == 1.0 and pairs["A", "Z", ds]["decision"] == "A better"
        assert pairs["T", "Z", ds]["decision"] == "T better"
    x = np.zeros((1, 25))
    zero = signed_rank_batch(x, rope=0.0)
    assert (zero.p_a[0], zero.p_rope[0], zero.p_b[0], zero.decision[0]) == (0.5, 0.0, 0.5, "undecided")


def test_byte_identical_and_independent_of_the_other_pairs() -> None:
    """stats.json is byte-identical across two runs and any row order; a pair's numbers do not depend on
    which other algorithms or datasets are analysed (common random numbers per replicate count, seeded
    by SHA-256 of 'expkit-bayes-signed-rank-per-dataset\\0<n>')."""
    table = _table({"A": 0.01, "B": 0.0, "C": 0.02}, datasets=3, replicates=12, seed=9)
    one = analyze(table, metric="acc", goal="maximize", paired=True, rope=0.005)
    two = analyze(table.sample(frac=1.0, random_state=2), metric="acc", goal="maximize", paired=True, rope=0.005)
    assert json.dumps(one.to_dict(), sort_keys=True) == json.dumps(two.to_dict(), sort_keys=True)
    sub = table[(table["algorithm"] != "C") & (table["dataset"] == "d1")]
    alone = analyze(sub, metric="acc", goal="maximize", paired=True, rope=0.005)
    full_ab = next(p for p in one.to_dict()["per_dataset"][1]["pairwise"]["pairs"] if (p["a"], p["b"]) == ("A", "B"))
    assert alone.to_dict()["per_dataset"][0]["pairwise"]["pairs"][0]["bayesian"] == full_ab["bayesian"]
    digest = hashlib.sha256(b"expkit-bayes-signed-rank-per-dataset\x0012").digest()
    assert size_seed(12) == int.from_bytes(digest[:8], "little")
    assert one.to_dict()["bayesian_per_dataset"]["seeds"] == {"12": size_seed(12)}


def test_unpaired_designs_do_not_get_it(tmp_path: Path) -> None:
    """Independent runs have no pairing by seed: no per-dataset Bayesian test, no 'bayesian' entry in the
    pair records, 'bayesian_per_dataset' null, no Bayesian columns in summary.csv (the test over datasets
    still runs)."""
    from expkit.analysis.report_effects import BAYES_SUMMARY_COLUMNS, bayes_head, summary_frame

    table = _table({"A": 0.01, "B": 0.0}, datasets=2, replicates=10)
    an = analyze(table, metric="acc", goal="maximize", paired=False, rope=0.005)
    doc = an.to_dict()
    assert an.bayes_local is None and doc["bayesian_per_dataset"] is None and doc["bayesian"] is not None
    assert all("bayesian" not in p for d in doc["per_dataset"] for p in d["pairwise"]["pairs"])
    assert not set(BAYES_SUMMARY_COLUMNS) & set(summary_frame(an).columns) and bayes_head(an) == ""
    paired = analyze(table, metric="acc", goal="maximize", paired=True, rope=0.005)
    assert set(BAYES_SUMMARY_COLUMNS) <= set(summary_frame(paired).columns)
    off = analyze(table, metric="acc", goal="maximize", paired=True, rope=0.005, bayes=False)
    assert off.bayes_local is None


def test_null_calibration_of_each_directional_decision() -> None:
    """Under the null (paired differences symmetric about 0, ROPE 0, 30 replicates) the decision 'a better'
    at P >= 0.95 is taken for at most 5% of 2,000 simulated pairs + 3 Monte-Carlo standard errors, and the
    same for 'b better'. (Measured: 5.6% and 4.9%; with 3 replicates about 13%, which the notes say.)"""
    rng = np.random.default_rng(11)
    res = signed_rank_batch(rng.normal(size=(2000, 30)), rope=0.0)
    bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)
    assert np.mean(res.decision == "a") <= bound and np.mean(res.decision == "b") <= bound


def test_family_summary_csv_report_and_notes(tmp_path: Path) -> None:
    """With more than five algorithms only the pairs with each dataset's best are tested (summary.csv's
    comparisons); summary.csv reads them from the algorithm's side; the report's per-dataset effects
    table has the Bayesian column; the notes say how many replicates are too few for calibration."""
    from expkit.analysis.report_effects import bayes_head, significant_rows, summary_frame

    effects = {f"a{i}": 0.02 * i for i in range(7)}
    an = analyze(_table(effects, datasets=2, replicates=15), metric="acc", goal="maximize", paired=True, rope=0.002)
    doc = an.to_dict()
    for block in doc["per_dataset"]:
        best = block["best"][0]
        for p in block["pairwise"]["pairs"]:
            assert (p["bayesian"] is not None) == (best in (p["a"], p["b"]))
    assert doc["bayesian_per_dataset"]["decisions"]["tested"] == 12
    assert "each dataset's best" in doc["bayesian_per_dataset"]["pairs_tested"]
    summary = summary_frame(an)
    row = summary[(summary["algorithm"] == "a0") & (summary["dataset"] == "d0")].iloc[0]
    assert row["vs_best"] == "a6" and row["bayes_p_best_better"] > 0.95 and row["bayes_decision"] == "a6 better"
    assert np.isnan(summary[summary["algorithm"] == summary["vs_best"]]["bayes_p_better"]).all()
    rows = significant_rows(an)
    shown = [r for r in rows if r["winner"] == "a6" and r["loser"] == "a0"]
    assert shown and shown[0]["bayes"].startswith("1.000 / 0.000 / 0.000, a6 better")
    assert "Bayesian signed-rank test per dataset over the paired replicates" in bayes_head(an)
    assert any("fewer than 20 paired replicates" in n for n in an.notes)
    assert any("Bayesian signed-rank per dataset" in line for line in an.summary_lines())


def test_control_adds_its_pairs_to_the_family() -> None:
    """With --control and more than five algorithms, each dataset's pairs with the control are tested too
    (the comparisons a paper proposing one algorithm needs), next to those with the dataset's best."""
    effects = {f"a{i}": 0.02 * i for i in range(7)}
    an = analyze(_table(effects, datasets=2, replicates=15), metric="acc", goal="maximize", paired=True, control="a2")
    doc = an.to_dict()
    for block in doc["per_dataset"]:
        best = block["best"][0]
        for p in block["pairwise"]["pairs"]:
            assert (p["bayesian"] is not None) == bool({best, "a2"} & {p["a"], p["b"]})
    assert "control a2" in doc["bayesian_per_dataset"]["pairs_tested"]
    assert doc["bayesian_per_dataset"]["decisions"]["tested"] == 2 * (6 + 5)


def test_bad_options_raise_input_error() -> None:
    with pytest.raises(InputError):
        signed_rank_batch(np.zeros((1, 3)), rope=-1.0)
    with pytest.raises(InputError):
        signed_rank_batch(np.zeros((1, 3)), threshold=0.5)
    with pytest.raises(InputError):
        signed_rank_batch(np.zeros((1, 3)), n_samples=0)
    empty = signed_rank_batch(np.full((1, 3), np.nan))
    assert empty.decision[0] is None and np.isnan(empty.p_a[0])


_RUN_SCRIPT = """
import json, os, random
alg, seed = os.environ["EXPKIT_ALGORITHM"], int(os.environ["EXPKIT_SEED"])
loss = random.Random(seed).gauss(0.0, 1.0) + (3.0 if alg == "slow" else 0.0)
json.dump({"metrics": {"loss": loss}}, open(os.path.join(os.environ["EXPKIT_OUTPUT_DIR"], "result.json"), "w"))
"""

_SPEC = """
apiVersion: expkit/v1
kind: Experiment
metadata: {name: bayes-local}
spec:
  image: python:3.12-slim@sha256:%s
  command: [python, run.py]
  algorithms: [{name: fast}, {name: slow}]
  datasets: [d1, d2]
  replicates: 8
  seed: 5
  paired: true
  rope: 0.1
  metric: {name: loss, goal: minimize}
"""


def test_results_cli_writes_it_to_stats_summary_and_report(tmp_path: Path) -> None:
    """`expkit results` on a paired run: stats.json's per-dataset pairs carry the Bayesian block,
    summary.csv its columns, report.md and report.html the column and the sentence."""
    from typer.testing import CliRunner

    from expkit.cli import app
    from expkit.runner import start_run
    from expkit.stores import FileStore

    (tmp_path / "run.py").write_text(_RUN_SCRIPT)
    (tmp_path / "experiment.yml").write_text(_SPEC % ("c" * 64))
    store = FileStore(tmp_path / "store")
    run_id = start_run(tmp_path / "experiment.yml", store, workers=2).run_id
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["results", run_id, "--store", str(store.root), "--format", "png", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "stats.json").read_text())
    rec = doc["per_dataset"][0]["pairwise"]["pairs"][0]["bayesian"]
    assert rec["decision"] == "fast better" and rec["p_a_better"] == 1.0 and rec["n"] == 8
    assert doc["bayesian_per_dataset"]["rope"] == 0.1 and doc["bayesian_per_dataset"]["n_samples"] == LOCAL_SAMPLES
    summary = pd.read_csv(out / "summary.csv")
    assert summary[summary["algorithm"] == "slow"]["bayes_decision"].tolist() == ["fast better"] * 2
    md = (out / "report.md").read_text()
    assert "Bayesian P(better / equiv. / worse)" in md and "1.000 / 0.000 / 0.000, fast better" in md
    assert "Bayesian signed-rank test per dataset over the paired replicates" in md
    assert "Bayesian P(better / equiv. / worse)" in (out / "report.html").read_text()

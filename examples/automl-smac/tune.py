"""Tune an RBF support-vector classifier with SMAC3 or random search: one run of the automl-smac study.

One invocation is one run (one cell of the experiment). The dataset, one of scikit-learn's bundled
ones (nothing is downloaded), is split into a training part and a held-out test part, stratified and
seeded by the run's seed. The optimizer minimises the ``cv_folds``-fold cross-validation error of
the classifier on the training part over ``trials`` trials; the incumbent (the configuration with
the lowest cross-validation error, the first one found on ties) is then refitted on the whole
training part and scored on the test part. ``result.json`` follows expkit's run contract::

    {"metrics": {"error": <test error of the incumbent>, "cv_error": <its CV error>,
                 "trials": <trials evaluated>, "search_seconds": <wall time of the search>},
     "trajectory": [{"step": 1, "time": 0.21, "error": <incumbent CV error after trial 1>,
                     "trial_error": <CV error of trial 1>}, ...]}

The trajectory's ``error`` is the incumbent's cross-validation error (what the optimizer sees, and
never increases); the metric ``error`` is the final *test* error. ``incumbent.json`` records the
chosen hyperparameters. SMAC writes its own files (run history, scenario) under ``smac3/``.

Algorithms:

* ``smac``: SMAC3's ``HyperparameterOptimizationFacade`` (random-forest surrogate, expected
  improvement, Sobol initial design plus the default configuration);
* ``random-search``: SMAC3's ``RandomFacade`` (the default configuration, then uniform samples);
* ``default``: scikit-learn's defaults (``C=1``, ``gamma="scale"``), no tuning: one trial.

The search space: ``C`` log-uniform on [2^-5, 2^15] and ``gamma = gamma_factor * g0`` with
``gamma_factor`` log-uniform on [2^-10, 2^10], where ``g0 = 1 / (n_features * X.var())`` is what
scikit-learn's ``gamma="scale"`` picks, so that the space's default (1, 1) is exactly scikit-learn's
default classifier and the space means the same thing on every dataset. Features are standardised.

Usage (expkit fills the placeholders; by hand, every flag has a default or an EXPKIT_* fallback)::

    python tune.py --algorithm smac --dataset wine --trials 20 --seed 42 --output-dir out/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# Every run is single-threaded: keep BLAS/OpenMP from starting a thread pool per process.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 - after the thread settings above

# scikit-learn, ConfigSpace and SMAC are imported where they are used: `main` may restart the
# interpreter first (see `pin_hash_seed`), and the 'default' baseline never needs SMAC.

#: dataset name (as in the spec) -> scikit-learn loader of a bundled dataset (nothing is downloaded)
DATASETS: dict[str, str] = {
    "iris": "load_iris",
    "wine": "load_wine",
    "breast-cancer": "load_breast_cancer",
    "digits": "load_digits",
}
ALGORITHMS = ("smac", "random-search", "default")

C_RANGE = (2.0**-5, 2.0**15)
GAMMA_FACTOR_RANGE = (2.0**-10, 2.0**10)
DEFAULT_CONFIG = {"C": 1.0, "gamma_factor": 1.0}  # = scikit-learn's SVC() defaults


def load(dataset: str, seed: int, test_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The dataset split into training and test parts, stratified, seeded by ``seed``."""
    from sklearn import datasets as skdatasets
    from sklearn.model_selection import train_test_split

    X, y = getattr(skdatasets, DATASETS[dataset])(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(float), y, test_size=test_size, stratify=y, random_state=seed % 2**32
    )
    return X_train, X_test, y_train, y_test


def fit_predict(config: dict[str, float], X_fit: np.ndarray, y_fit: np.ndarray, X_eval: np.ndarray) -> np.ndarray:
    """Standardise on ``X_fit``, fit the SVC of ``config`` and predict ``X_eval``."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(X_fit)
    Z_fit = scaler.transform(X_fit)
    var = float(Z_fit.var())
    g0 = 1.0 / (Z_fit.shape[1] * var) if var > 0 else 1.0  # scikit-learn's gamma="scale"
    model = SVC(C=float(config["C"]), gamma=float(config["gamma_factor"]) * g0)
    model.fit(Z_fit, y_fit)
    return model.predict(scaler.transform(X_eval))


class CrossValidation:
    """The objective: ``folds``-fold stratified cross-validation error on the training part, with
    folds fixed by the run's seed (so every algorithm sees the same folds on the same seed)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> None:
        from sklearn.model_selection import StratifiedKFold

        self.X, self.y = X, y
        self.splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32).split(X, y))

    def __call__(self, config: dict[str, float]) -> float:
        wrong = 0
        for fit_idx, eval_idx in self.splits:
            pred = fit_predict(config, self.X[fit_idx], self.y[fit_idx], self.X[eval_idx])
            wrong += int(np.sum(pred != self.y[eval_idx]))
        return wrong / len(self.y)


def configspace(seed: int) -> Any:
    """The ConfigSpace search space (seeded for its own sampling)."""
    from ConfigSpace import ConfigurationSpace, Float

    cs = ConfigurationSpace(seed=seed % 2**32)
    cs.add(
        [
            Float("C", C_RANGE, default=DEFAULT_CONFIG["C"], log=True),
            Float("gamma_factor", GAMMA_FACTOR_RANGE, default=DEFAULT_CONFIG["gamma_factor"], log=True),
        ]
    )
    return cs


def search(
    algorithm: str, objective: CrossValidation, trials: int, seed: int, smac_dir: Path, name: str
) -> list[tuple[dict[str, float], float, float]]:
    """Run ``trials`` trials of SMAC or random search (ask and tell); return
    ``(config, cv_error, seconds since the search started)`` per trial, in order."""
    from smac import HyperparameterOptimizationFacade, RandomFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    scenario = Scenario(
        configspace(seed),
        name=name,
        output_directory=smac_dir,
        deterministic=True,
        n_trials=trials,
        seed=seed % 2**31,
        use_default_config=True,
    )
    facade_cls = HyperparameterOptimizationFacade if algorithm == "smac" else RandomFacade

    def target(config: Any, seed: int = 0) -> float:
        # The facade wants a target function; with ask and tell it is never called by SMAC itself.
        return objective(dict(config))

    facade = facade_cls(scenario, target, overwrite=True, logging_level=logging.WARNING)
    history: list[tuple[dict[str, float], float, float]] = []
    start = time.perf_counter()
    for _ in range(trials):
        info = facade.ask()
        t0 = time.perf_counter()
        config = {k: float(v) for k, v in dict(info.config).items()}
        cost = objective(config)
        t1 = time.perf_counter()
        facade.tell(info, TrialValue(cost=cost, time=t1 - t0), save=False)
        history.append((config, cost, t1 - start))
    facade.optimizer.save()
    return history


def run(
    algorithm: str,
    dataset: str,
    trials: int,
    seed: int,
    output_dir: Path,
    *,
    cv_folds: int = 5,
    test_size: float = 0.25,
) -> dict[str, Any]:
    """One run; writes ``incumbent.json`` (and SMAC's files) into ``output_dir`` and returns the
    result.json document."""
    X_train, X_test, y_train, y_test = load(dataset, seed, test_size)
    objective = CrossValidation(X_train, y_train, cv_folds, seed)
    start = time.perf_counter()
    if algorithm == "default":
        cost = objective(DEFAULT_CONFIG)
        history = [(dict(DEFAULT_CONFIG), cost, time.perf_counter() - start)]
    else:
        history = search(algorithm, objective, trials, seed, output_dir / "smac3", f"{algorithm}-{dataset}")
    search_seconds = time.perf_counter() - start

    trajectory: list[dict[str, float]] = []
    best_config, best_cost = history[0][0], float("inf")
    for step, (config, cost, seconds) in enumerate(history, start=1):
        if cost < best_cost:
            best_config, best_cost = config, cost
        trajectory.append({"step": step, "time": round(seconds, 4), "error": best_cost, "trial_error": cost})

    pred = fit_predict(best_config, X_train, y_train, X_test)
    test_error = float(np.mean(pred != y_test))
    (output_dir / "incumbent.json").write_text(
        json.dumps(
            {
                "config": best_config,
                "cv_error": best_cost,
                "test_error": test_error,
                "n_train": int(len(y_train)),
                "n_test": int(len(y_test)),
            },
            indent=2,
        )
        + "\n"
    )
    return {
        "metrics": {
            "error": test_error,
            "cv_error": best_cost,
            "trials": len(history),
            "search_seconds": round(search_seconds, 4),
        },
        "trajectory": trajectory,
    }


def pin_hash_seed(seed: int) -> None:
    """Restart this script with ``PYTHONHASHSEED`` derived from the run's seed, unless it already is.

    SMAC3's choices depend on the iteration order of Python sets, which follows string hashing,
    which Python randomises per process: without this two runs with the same seed can differ.
    The variable only takes effect at interpreter start, hence the restart, done before scikit-learn
    and SMAC are imported. Same process id and file descriptors, so expkit's log and timeout still apply.
    """
    wanted = str(seed % 2**32)
    if os.environ.get("PYTHONHASHSEED") != wanted:
        os.environ["PYTHONHASHSEED"] = wanted
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithm", default=env.get("EXPKIT_ALGORITHM"), choices=ALGORITHMS)
    ap.add_argument("--dataset", default=env.get("EXPKIT_DATASET"), choices=sorted(DATASETS))
    ap.add_argument("--trials", type=int, default=100, help="configurations evaluated (ignored by 'default')")
    ap.add_argument("--cv-folds", type=int, default=5)
    ap.add_argument("--test-size", type=float, default=0.25, help="held-out fraction")
    ap.add_argument("--seed", type=int, default=int(env.get("EXPKIT_SEED", "0")))
    ap.add_argument("--output-dir", default=env.get("EXPKIT_OUTPUT_DIR", "."))
    args = ap.parse_args(argv)
    if args.algorithm is None or args.dataset is None:
        ap.error("give --algorithm and --dataset (or run it through expkit)")
    if args.trials < 1 or args.cv_folds < 2 or not 0.0 < args.test_size < 1.0:
        ap.error("need --trials >= 1, --cv-folds >= 2 and 0 < --test-size < 1")
    if argv is None:
        pin_hash_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = run(
        args.algorithm, args.dataset, args.trials, args.seed, out, cv_folds=args.cv_folds, test_size=args.test_size
    )
    (out / "result.json").write_text(json.dumps(doc) + "\n")
    m = doc["metrics"]
    print(
        f"{args.algorithm} on {args.dataset} (seed {args.seed}, {m['trials']} trials): "
        f"cv error {m['cv_error']:.4f}, test error {m['error']:.4f}, search {m['search_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

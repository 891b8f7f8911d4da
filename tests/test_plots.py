"""Tests for expkit.analysis.plots: files, formats, determinism, colours, convergence bands, CD cliques, refusals."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from expkit.analysis import plots
from expkit.core.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALGS = ["alpha", "beta", "gamma"]


# ----------------------------------------------------------------------------------- fixtures


def results_table(
    *, datasets: int = 3, replicates: int = 6, algorithms=ALGS, seed: int = 0, metric: str = "error"
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(datasets):
        for i, alg in enumerate(algorithms):
            for r in range(replicates):
                rows.append(
                    {
                        "algorithm": alg,
                        "dataset": f"ds{d}",
                        "replicate": r,
                        "seed": 1000 + r,
                        "metric": metric,
                        "value": float(rng.normal(i, 0.3)),
                        "status": "succeeded",
                    }
                )
    return pd.DataFrame(rows)


def trajectories_table(
    *, axis: str = "step", datasets=("ds0", "ds1"), algorithms=ALGS, replicates: int = 4, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for ds in datasets:
        for i, alg in enumerate(algorithms):
            for r in range(replicates):
                n = int(rng.integers(5, 15))
                xs = np.sort(rng.uniform(0.01, 50.0, n)) if axis == "time" else np.arange(1, n + 1) * (r + 1)
                for x in xs:
                    rows.append(
                        {
                            "algorithm": alg,
                            "dataset": ds,
                            "replicate": r,
                            "axis": axis,
                            "x": float(x),
                            "metric": "error",
                            "value": float(rng.uniform(0, 1) + i),
                        }
                    )
    return pd.DataFrame(rows)


def wtl_table(algorithms, seed: int = 0, n_datasets: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for a, o in itertools.permutations(algorithms, 2):
        w = int(rng.integers(0, n_datasets // 2))
        lo = int(rng.integers(0, n_datasets // 2))
        rows.append({"algorithm": a, "opponent": o, "wins": w, "ties": n_datasets - w - lo, "losses": lo})
    return pd.DataFrame(rows)


def assert_png(path: Path, min_px: int = 200, max_px: int = 6000) -> np.ndarray:
    assert path.suffix == ".png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert min_px <= h <= max_px and min_px <= w <= max_px, (h, w)
    return img


def assert_pdf(path: Path) -> None:
    assert path.suffix == ".pdf"
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]


def color_pixels(img: np.ndarray, hex_color: str, tol: float = 0.03) -> int:
    """How many pixels of ``img`` have (nearly) exactly ``hex_color``."""
    rgb = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(img[..., :3] - rgb) <= tol, axis=-1)))


# ----------------------------------------------------------------------------------- colours


def test_algorithm_colors_are_okabe_ito_in_spec_order_and_stable():
    colors = plots.algorithm_colors(["b", "a", "c"])
    assert list(colors) == ["b", "a", "c"]
    assert all(c in plots.OKABE_ITO for c in colors.values())
    assert len(set(colors.values())) == 3
    # depends on position only: same list -> same mapping; duplicates ignored
    assert plots.algorithm_colors(["b", "a", "c", "a"]) == colors
    assert plots.algorithm_colors(["b", "a"]) == {"b": colors["b"], "a": colors["a"]}


def test_more_algorithms_than_colours_cycle_with_distinct_styles():
    names = [f"alg{i}" for i in range(20)]
    colors = plots.algorithm_colors(names)
    assert colors["alg0"] == colors["alg8"] == colors["alg16"]
    styles = plots.algorithm_styles(names)
    looks = {(s.color, s.marker, s.hatch, s.linestyle) for s in styles.values()}
    assert len(looks) == 20
    assert styles["alg0"].marker != styles["alg8"].marker


def test_same_algorithm_same_colour_in_boxplot_and_convergence(tmp_path):
    # only "beta" has data; with the spec list [alpha, beta] it must be drawn in beta's colour everywhere
    spec = ["alpha", "beta"]
    colors = plots.algorithm_colors(spec)
    table = results_table(algorithms=["beta"], datasets=1)
    traj = trajectories_table(algorithms=["beta"], datasets=("ds0",))
    box = plots.plot_boxplots(
        table, metric="error", goal="minimize", out_dir=tmp_path, algorithms=spec, formats=["png"]
    )
    conv = plots.plot_convergence(
        traj, metric="error", goal="minimize", out_dir=tmp_path, algorithms=spec, formats=["png"]
    )
    for path in box + conv:
        img = assert_png(path)
        assert color_pixels(img, colors["beta"]) > 20, path
        assert color_pixels(img, colors["alpha"]) == 0, path
    # swapping the spec order swaps the colour
    swapped = plots.plot_boxplots(
        table, metric="error", goal="minimize", out_dir=tmp_path / "s", algorithms=["beta", "alpha"], formats=["png"]
    )
    img = mpimg.imread(swapped[0])
    assert color_pixels(img, colors["alpha"]) > 20
    assert color_pixels(img, colors["beta"]) == 0


# ----------------------------------------------------------------------------------- box plots


def test_boxplots_write_valid_png_and_pdf(tmp_path):
    out = tmp_path / "figs" / "nested"
    paths = plots.plot_boxplots(results_table(), metric="error", goal="minimize", out_dir=out)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.parent == out and p.is_file() for p in paths)
    assert_png(paths[0], min_px=300)
    assert_pdf(paths[1])
    assert sorted(f.name for f in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_boxplots_are_byte_identical_on_rerender(tmp_path):
    table = results_table()
    first = plots.plot_boxplots(
        table, metric="error", goal="maximize", out_dir=tmp_path / "a", formats=("png", "pdf", "svg")
    )
    second = plots.plot_boxplots(
        table, metric="error", goal="maximize", out_dir=tmp_path / "b", formats=("png", "pdf", "svg")
    )
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert first[2].read_bytes().lstrip().startswith((b"<?xml", b"<svg"))


def test_boxplots_paginate_many_datasets(tmp_path):
    table = results_table(datasets=13, replicates=3)
    paths = plots.plot_boxplots(table, metric="error", goal="minimize", out_dir=tmp_path, formats=["png"])
    assert [p.name for p in paths] == ["boxplots-error-1.png", "boxplots-error-2.png"]
    for p in paths:
        assert_png(p)
    # explicit dataset selection keeps a single page
    one = plots.plot_boxplots(
        table, metric="error", goal="minimize", out_dir=tmp_path / "one", datasets=["ds3", "ds1"], formats=["png"]
    )
    assert [p.name for p in one] == ["boxplots-error.png"]


def test_boxplots_degenerate_inputs_do_not_crash(tmp_path):
    table = results_table(replicates=1)
    table.loc[table["algorithm"] == "beta", "value"] = 1.0  # all identical
    table.loc[(table["algorithm"] == "gamma") & (table["dataset"] == "ds0"), "value"] = np.nan
    failed = (table["algorithm"] == "alpha") & (table["dataset"] == "ds1")
    table.loc[failed, "status"] = "failed"
    table.loc[failed, "value"] = np.nan
    paths = plots.plot_boxplots(table, metric="error", goal="minimize", out_dir=tmp_path)
    assert_png(paths[0])
    assert_pdf(paths[1])


def test_boxplots_reject_input_without_succeeded_rows(tmp_path):
    table = results_table()
    with pytest.raises(InputError, match="no succeeded runs"):
        plots.plot_boxplots(table, metric="accuracy", goal="minimize", out_dir=tmp_path)
    failed = table.assign(status="failed")
    with pytest.raises(InputError) as err:
        plots.plot_boxplots(failed, metric="error", goal="minimize", out_dir=tmp_path)
    assert err.value.exit_code == 2
    with pytest.raises(InputError, match="lacks column"):
        plots.plot_boxplots(table.drop(columns=["value"]), metric="error", goal="minimize", out_dir=tmp_path)
    with pytest.raises(InputError, match="goal"):
        plots.plot_boxplots(table, metric="error", goal="lowest", out_dir=tmp_path)
    with pytest.raises(InputError, match="format"):
        plots.plot_boxplots(table, metric="error", goal="minimize", out_dir=tmp_path, formats=["jpg"])
    assert list(tmp_path.iterdir()) == []


def test_file_names_are_sanitised_and_stay_inside_out_dir(tmp_path):
    out = tmp_path / "out"
    metric = "../../escape/me"
    table = results_table(metric=metric)
    table["dataset"] = table["dataset"].map({"ds0": "../../etc", "ds1": "/abs/path", "ds2": "a\\b"})
    traj = trajectories_table().assign(metric=metric, dataset=lambda d: "../" + d["dataset"])
    paths = plots.plot_boxplots(table, metric=metric, goal="minimize", out_dir=out, formats=["png", "svg"])
    paths += plots.plot_convergence(traj, metric=metric, goal="minimize", out_dir=out, formats=["png"])
    assert len(paths) == 3
    for p in paths:
        assert p.parent == out and p.resolve().parent == out.resolve()
        assert ".." not in p.name and "/" not in p.name and not p.name.startswith(".")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]
    # distinct names never collide after sanitising
    assert plots.safe_filename("a/b") != plots.safe_filename("a_b")


def test_plots_leave_no_pyplot_figures(tmp_path):
    before = plt.get_fignums()
    plots.plot_boxplots(results_table(), metric="error", goal="minimize", out_dir=tmp_path, formats=["png"])
    plots.plot_cd_diagram(
        {"a": 1.2, "b": 2.5, "c": 2.3}, 1.0, alpha=0.05, n_datasets=8, out_stem=tmp_path / "cd", formats=["png"]
    )
    assert plt.get_fignums() == before


# ----------------------------------------------------------------------------------- convergence


def _hand_trajectories() -> pd.DataFrame:
    # three replicates on different x grids, rows deliberately out of order
    recs = [(0, 3, 2.0), (0, 1, 5.0), (1, 2, 4.0), (1, 4, 6.0), (2, 4, 1.0), (2, 1, 3.0)]
    rows = [
        {"algorithm": "A", "dataset": "d", "replicate": r, "axis": "step", "x": x, "metric": "error", "value": v}
        for r, x, v in recs
    ]
    rows.append(
        {"algorithm": "A", "dataset": "d", "replicate": 0, "axis": "step", "x": 2, "metric": "other", "value": -100.0}
    )  # another metric: ignored
    return pd.DataFrame(rows)


def test_convergence_bands_minimize_hand_example():
    bands = plots.convergence_bands(_hand_trajectories(), metric="error", goal="minimize")
    # best-so-far: r0 = 5 from x=1, 2 from x=3; r1 = 4 from x=2 (6 is worse); r2 = 3 from x=1, 1 from x=4
    assert bands["x"].tolist() == [1, 2, 3, 4]
    assert bands["n"].tolist() == [2, 3, 3, 3]  # r1 is undefined before its first record
    assert bands["median"].tolist() == [4.0, 4.0, 3.0, 2.0]  # (5,3) (5,4,3) (2,4,3) (2,4,1)
    assert bands["q25"].tolist() == [3.5, 3.5, 2.5, 1.5]
    assert bands["q75"].tolist() == [4.5, 4.5, 3.5, 3.0]
    assert set(bands["axis"]) == {"step"}


def test_convergence_bands_maximize_hand_example():
    bands = plots.convergence_bands(_hand_trajectories(), metric="error", goal="maximize")
    # running max: r0 = 5 throughout; r1 = 4 from x=2, 6 from x=4; r2 = 3 throughout
    assert bands["median"].tolist() == [4.0, 4.0, 4.0, 5.0]  # (5,3) (5,4,3) (5,4,3) (5,6,3)
    assert bands["q25"].tolist() == [3.5, 3.5, 3.5, 4.0]
    assert bands["q75"].tolist() == [4.5, 4.5, 4.5, 5.5]


def test_convergence_bands_axis_choice_and_grid_limit():
    step = _hand_trajectories()
    budget = step.assign(axis="budget", x=step["x"] * 10)
    both = pd.concat([budget, step], ignore_index=True)
    assert set(plots.convergence_bands(both, metric="error", goal="minimize")["axis"]) == {"step"}
    b = plots.convergence_bands(both, metric="error", goal="minimize", axis="budget")
    assert b["x"].tolist() == [10, 20, 30, 40]
    with pytest.raises(InputError, match="no 'time' axis"):
        plots.convergence_bands(both, metric="error", goal="minimize", axis="time")

    # 3 replicates x 500 distinct times over 4 decades -> <= 200 log-spaced grid points
    rng = np.random.default_rng(3)
    rows = []
    for r in range(3):
        xs = np.sort(10 ** rng.uniform(-2, 2, 500))
        for x in xs:
            rows.append(
                {
                    "algorithm": "A",
                    "dataset": "d",
                    "replicate": r,
                    "axis": "time",
                    "x": x,
                    "metric": "error",
                    "value": 1.0 / x,
                }
            )
    bands = plots.convergence_bands(pd.DataFrame(rows), metric="error", goal="minimize")
    x = bands["x"].to_numpy()
    assert len(x) <= 200
    ratios = x[1:] / x[:-1]
    assert np.allclose(ratios, ratios[0])
    # value 1/x is decreasing, so every replicate's best-so-far at grid point g is 1/(last record <= g)
    assert np.all(bands["median"].to_numpy() >= 1.0 / x - 1e-12)
    assert np.all(np.diff(bands["median"].to_numpy()[bands["n"].to_numpy() == 3]) <= 0)


def test_convergence_bands_single_replicate_and_constant_values():
    df = pd.DataFrame(
        {
            "algorithm": "A",
            "dataset": "d",
            "replicate": 0,
            "axis": "budget",
            "x": [5.0, 1.0, 3.0],
            "metric": "error",
            "value": [7.0, 7.0, np.nan],
        }
    )
    bands = plots.convergence_bands(df, metric="error", goal="minimize")
    assert bands["x"].tolist() == [1.0, 5.0]
    assert bands["median"].tolist() == [7.0, 7.0]
    assert bands["q25"].tolist() == bands["q75"].tolist() == [7.0, 7.0]


def test_plot_convergence_files_time_axis_and_determinism(tmp_path):
    traj = trajectories_table(axis="time", datasets=("ds0", "ds1", "ds2"))
    traj.loc[traj["replicate"] == 0, "x"] *= 1e-3  # spans > 2 decades -> log axis
    first = plots.plot_convergence(traj, metric="error", goal="maximize", out_dir=tmp_path / "a")
    second = plots.plot_convergence(traj, metric="error", goal="maximize", out_dir=tmp_path / "b", formats=["png"])
    assert [p.name for p in first] == ["convergence-error-time.png", "convergence-error-time.pdf"]
    assert_png(first[0], min_px=300)
    assert_pdf(first[1])
    assert first[0].read_bytes() == second[0].read_bytes()


def test_plot_convergence_rejects_missing_metric(tmp_path):
    with pytest.raises(InputError, match="no records of metric"):
        plots.plot_convergence(trajectories_table(), metric="loss", goal="minimize", out_dir=tmp_path)
    with pytest.raises(InputError, match="lacks column"):
        plots.plot_convergence(
            trajectories_table().drop(columns=["axis"]), metric="error", goal="minimize", out_dir=tmp_path
        )


# ----------------------------------------------------------------------------------- CD diagram


def test_cd_cliques_hand_examples():
    ranks = {"E": 4.5, "C": 2.4, "A": 1.0, "D": 3.0, "B": 1.5}  # mapping order must not matter
    assert plots.cd_cliques(ranks, 1.0) == [("A", "B"), ("B", "C"), ("C", "D")]
    # a group contained in a larger one is dropped
    assert plots.cd_cliques({"A": 1.0, "B": 1.2, "C": 1.4, "D": 3.0}, 1.0) == [("A", "B", "C")]
    # a difference of exactly cd is significant: no group
    assert plots.cd_cliques({"A": 1.0, "B": 2.0}, 1.0) == []
    assert plots.cd_cliques({"A": 1.0, "B": 2.0, "C": 3.0}, 5.0) == [("A", "B", "C")]


def test_cd_cliques_match_brute_force_maximal_cliques():
    rng = np.random.default_rng(11)
    for _ in range(60):
        k = int(rng.integers(2, 8))
        ranks = {f"a{i}": float(np.round(rng.uniform(1, k), 1)) for i in range(k)}
        cd = float(rng.uniform(0.2, 2.5))
        names = list(ranks)
        groups = [
            set(s)
            for size in range(2, k + 1)
            for s in itertools.combinations(names, size)
            if all(abs(ranks[a] - ranks[b]) < cd for a, b in itertools.combinations(s, 2))
        ]
        maximal = {frozenset(g) for g in groups if not any(g < h for h in groups)}
        got = plots.cd_cliques(ranks, cd)
        assert {frozenset(c) for c in got} == maximal, (ranks, cd)
        assert len(got) == len(maximal)
        for c in got:  # each group is listed best-first
            assert [ranks[a] for a in c] == sorted(ranks[a] for a in c)


def test_cd_diagram_refuses_misleading_input_unless_forced(tmp_path):
    ranks = {"a": 1.3, "b": 2.1, "c": 2.6}
    with pytest.raises(InputError) as err:
        plots.plot_cd_diagram(ranks, 1.2, alpha=0.05, n_datasets=4, out_stem=tmp_path / "cd")
    assert err.value.exit_code == 2
    assert "force" in str(err.value) and "4 dataset" in str(err.value)
    with pytest.raises(InputError, match="fewer than 2 algorithms"):
        plots.plot_cd_diagram({"a": 1.0}, 1.2, alpha=0.05, n_datasets=10, out_stem=tmp_path / "cd")
    assert list(tmp_path.iterdir()) == []

    forced = plots.plot_cd_diagram(ranks, 1.2, alpha=0.05, n_datasets=4, out_stem=tmp_path / "cd", force=True)
    assert [p.name for p in forced] == ["cd.png", "cd.pdf"]
    assert_png(forced[0])
    assert_pdf(forced[1])
    single = plots.plot_cd_diagram(
        {"a": 1.0}, 0.5, alpha=0.05, n_datasets=10, out_stem=tmp_path / "one", force=True, formats=["png"]
    )
    assert_png(single[0], min_px=100)


def test_cd_diagram_rejects_bad_numbers_even_with_force(tmp_path):
    with pytest.raises(InputError):
        plots.plot_cd_diagram({}, 1.0, alpha=0.05, n_datasets=10, out_stem=tmp_path / "cd", force=True)
    with pytest.raises(InputError, match="finite"):
        plots.plot_cd_diagram(
            {"a": 1.0, "b": math.nan}, 1.0, alpha=0.05, n_datasets=10, out_stem=tmp_path / "cd", force=True
        )
    with pytest.raises(InputError, match="critical difference"):
        plots.plot_cd_diagram(
            {"a": 1.0, "b": 2.0}, math.nan, alpha=0.05, n_datasets=10, out_stem=tmp_path / "cd", force=True
        )


def test_cd_diagram_is_deterministic_and_sized_for_many_algorithms(tmp_path):
    rng = np.random.default_rng(5)
    ranks = {f"algorithm_{i:02d}": float(r) for i, r in enumerate(rng.uniform(1, 14, 14))}
    a = plots.plot_cd_diagram(ranks, 3.1, alpha=0.05, n_datasets=30, out_stem=tmp_path / "a" / "cd")
    b = plots.plot_cd_diagram(ranks, 3.1, alpha=0.05, n_datasets=30, out_stem=tmp_path / "b" / "cd")
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()
    img = assert_png(a[0])
    assert img.shape[1] > img.shape[0]  # wide, not tall


# ----------------------------------------------------------------------------------- W/T/L overview


def test_rank_overview_files_and_scaling(tmp_path):
    small = plots.plot_rank_overview(wtl_table(ALGS), out_stem=tmp_path / "wtl3")
    assert_png(small[0])
    assert_pdf(small[1])
    names = [f"algorithm-{i}" for i in range(20)]
    big = plots.plot_rank_overview(wtl_table(names), out_stem=tmp_path / "wtl20", algorithms=names, formats=["png"])
    h_small, w_small = mpimg.imread(small[0]).shape[:2]
    h_big, w_big = assert_png(big[0], max_px=4000).shape[:2]
    assert w_big > 3 * w_small and h_big > 3 * h_small  # cells keep their size: grows with the count


def test_rank_overview_rejects_bad_tables(tmp_path):
    good = wtl_table(ALGS)
    with pytest.raises(InputError, match="lacks column"):
        plots.plot_rank_overview(good.drop(columns=["ties"]), out_stem=tmp_path / "w")
    with pytest.raises(InputError, match="more than once"):
        plots.plot_rank_overview(pd.concat([good, good.iloc[:1]]), out_stem=tmp_path / "w")
    with pytest.raises(InputError, match="non-negative"):
        plots.plot_rank_overview(good.assign(wins=-1), out_stem=tmp_path / "w")
    with pytest.raises(InputError, match="empty"):
        plots.plot_rank_overview(good.iloc[:0], out_stem=tmp_path / "w")
    # missing pairs are allowed (drawn grey)
    partial = plots.plot_rank_overview(good.iloc[:2], out_stem=tmp_path / "w", formats=["png"])
    assert_png(partial[0])


# ----------------------------------------------------------------------------------- no clipped text (issue 16.6)

LONG_NAMES = [
    "simulated-annealing-with-restarts-x-0001",
    "one-plus-one-evolution-strategy-xxxx-002",
    "random-search-uniform-over-domain-xx-003",
]


def _capture_figures(monkeypatch, clipped: list) -> list:
    """Check every figure the plot modules save: every drawn text lies inside the figure; the texts
    that do not are added to ``clipped``. Returns the names of the checked figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    import expkit.analysis.plots.boxplots as boxplots_mod
    import expkit.analysis.plots.cd_diagram as cd_mod
    import expkit.analysis.plots.convergence as conv_mod
    import expkit.analysis.plots.win_tie_loss as wtl_mod

    checked: list = []
    real_save = plots._save

    def checking_save(fig, stem, formats, **kw):
        written = real_save(fig, stem, formats, **kw)
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        undrawn = set()  # tick labels outside the view limits exist but are not drawn
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                shown = ax.get_visible() and ax.axison and axis.get_visible()
                drawn = {id(t) for t in axis._update_ticks()} if shown else set()
                for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                    if id(tick) not in drawn:
                        undrawn.update({id(tick.label1), id(tick.label2)})
                if not shown:
                    undrawn.add(id(axis.label))
        for text in fig.findobj(Text):
            if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
                continue
            ext = text.get_window_extent(renderer)
            inside = ext.x0 >= box.x0 - 0.5 and ext.y0 >= box.y0 - 0.5
            inside = inside and ext.x1 <= box.x1 + 0.5 and ext.y1 <= box.y1 + 0.5
            if not inside:
                clipped.append(f"{stem.name}: {text.get_text()!r} at {tuple(round(v) for v in ext.bounds)}")
        checked.append((stem.name, {t.get_text() for t in fig.findobj(Text) if id(t) not in undrawn}))
        return written

    for mod in (boxplots_mod, cd_mod, conv_mod, wtl_mod):
        monkeypatch.setattr(mod, "_save", checking_save)
    return checked


def test_no_text_is_clipped_with_40_character_names(tmp_path, monkeypatch):
    """The win/tie/loss map cut "mulated-annealing" and its caption: every text of every plot must fit."""
    assert all(len(n) == 40 for n in LONG_NAMES)
    clipped: list[str] = []
    checked = _capture_figures(monkeypatch, clipped)
    long_ds = ["sphere", "a-dataset-name-that-is-forty-chars-long-"]
    table = results_table(datasets=2, algorithms=LONG_NAMES).replace(
        {"dataset": {"ds0": long_ds[0], "ds1": long_ds[1]}}
    )
    plots.plot_boxplots(table, metric="error", goal="minimize", out_dir=tmp_path / "box", formats=["png"])
    traj = trajectories_table(datasets=long_ds, algorithms=LONG_NAMES)
    plots.plot_convergence(traj, metric="error", goal="minimize", out_dir=tmp_path / "conv", formats=["png"])
    ranks = {n: 1.0 + i * 0.7 for i, n in enumerate(LONG_NAMES)}
    plots.plot_cd_diagram(ranks, 1.2, alpha=0.05, n_datasets=6, out_stem=tmp_path / "cd", formats=["png"])
    for k in (2, 3):
        plots.plot_rank_overview(wtl_table(LONG_NAMES[:k]), out_stem=tmp_path / f"wtl{k}", formats=["png"])
    assert len(checked) >= 5, [name for name, _ in checked]
    for name, texts in checked:  # names of 40 characters are written in full, not cut with an ellipsis
        if name.startswith(("wtl", "boxplots")):
            assert set(LONG_NAMES[:2]) <= texts, (name, texts)
    assert not clipped, "text outside the figure:\n" + "\n".join(clipped)


def test_cd_refusal_names_the_cli_flag_without_python():
    with pytest.raises(InputError) as err:
        plots.plot_cd_diagram({"a": 1.3, "b": 2.1}, 1.2, alpha=0.05, n_datasets=4, out_stem=Path("unused"))
    assert "--force" in str(err.value) and "force=True" not in str(err.value)
    with pytest.raises(InputError) as err:
        plots.plot_cd_diagram({"a": 1.0}, 1.2, alpha=0.05, n_datasets=10, out_stem=Path("unused"))
    assert "force=True" not in str(err.value)


# ----------------------------------------------------------------------------------- log scale (issue 16.6)


def _decades_table(values_by_alg: dict[str, list[float]], dataset: str = "sphere") -> pd.DataFrame:
    rows = [
        {"algorithm": a, "dataset": dataset, "replicate": r, "metric": "best", "value": v, "status": "succeeded"}
        for a, vs in values_by_alg.items()
        for r, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def _yscales(monkeypatch, draw) -> list[str]:
    import expkit.analysis.plots.boxplots as boxplots_mod

    scales: list[str] = []
    real_save = plots._save

    def spy(fig, stem, formats, **kw):
        scales.extend(ax.get_yscale() for ax in fig.axes if ax.get_visible())
        return real_save(fig, stem, formats, **kw)

    monkeypatch.setattr(boxplots_mod, "_save", spy)
    draw()
    return scales


def test_boxplots_choose_a_log_scale_when_values_span_more_than_three_decades(tmp_path, monkeypatch):
    wide = _decades_table({"es": [1e-25, 3e-25, 2e-24], "sa": [6e-5, 1e-4, 2e-4], "rs": [1.5, 2.0, 2.5]})
    narrow = _decades_table({"es": [1.0, 1.2, 1.1], "sa": [3.0, 3.2, 2.9]})

    def draw(table, **kw):
        return lambda: plots.plot_boxplots(
            table, metric="best", goal="minimize", out_dir=tmp_path / "o", formats=["png"], **kw
        )

    assert _yscales(monkeypatch, draw(wide)) == ["log"]
    assert _yscales(monkeypatch, draw(narrow)) == ["linear"]
    assert _yscales(monkeypatch, draw(wide, log_scale="off")) == ["linear"]
    assert _yscales(monkeypatch, draw(narrow, log_scale="on")) == ["log"]
    # zero or negative values: no log axis; symlog when they span decades, linear otherwise
    signed = _decades_table({"es": [0.0, 1e-6, 2e-6], "sa": [10.0, 20.0, 30.0]})
    assert _yscales(monkeypatch, draw(signed)) == ["symlog"]
    with pytest.raises(InputError, match="log-scale"):
        draw(wide, log_scale="sometimes")()


def test_boxplots_log_scale_is_deterministic(tmp_path):
    wide = _decades_table({"es": [1e-25, 3e-25, 2e-24], "sa": [6e-5, 1e-4, 2e-4], "rs": [1.5, 2.0, 2.5]})
    a = plots.plot_boxplots(wide, metric="best", goal="minimize", out_dir=tmp_path / "a")
    b = plots.plot_boxplots(wide, metric="best", goal="minimize", out_dir=tmp_path / "b")
    assert [x.read_bytes() for x in a] == [y.read_bytes() for y in b]

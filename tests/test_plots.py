"""Paper-style figures on small hand-made tables: the drawn values equal the ones computed by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tasktransfer_utils import plots

CLASSES = {"A1": "CR", "A2": "CR", "B1": "QA", "B2": "QA", "C1": "SL", "C2": "SL"}
TASKS = list(CLASSES)


def _gains(seed=0):
    """source x target relative gains: in-class +0.05, out-of-class -0.02, plus a source-specific offset."""
    rows = []
    for s in TASKS:
        for t in TASKS:
            if s != t:
                g = (0.05 if CLASSES[s] == CLASSES[t] else -0.02) + 0.001 * TASKS.index(s)
                rows.append({"source": s, "target": t, "gain": g, "regime": "LIMITED→LIMITED"})
    return pd.DataFrame(rows)


def _results():
    """Two seeds per pair; baseline rows have source ''."""
    rows = []
    for t_i, t in enumerate(TASKS):
        base = 0.5 + 0.05 * t_i
        for seed in (0, 1):
            rows.append({"source": "", "target": t, "regime": "FULL→LIMITED", "seed": seed,
                         "score": base + (0.01 if seed else -0.01)})
            for s in TASKS:
                if s != t:
                    bump = 0.03 if CLASSES[s] == CLASSES[t] else -0.02
                    rows.append({"source": s, "target": t, "regime": "FULL→LIMITED", "seed": seed,
                                 "score": base + bump + (0.002 if seed else -0.002)})
    return pd.DataFrame(rows)


def _vectors():
    rng = np.random.default_rng(0)
    centres = {"CR": np.eye(8)[0], "QA": np.eye(8)[1], "SL": np.eye(8)[2]}
    return {t: 5 * centres[c] + 0.3 * rng.normal(size=8) for t, c in CLASSES.items()}


def _heatmap_array(fig: Figure) -> np.ndarray:
    return np.ma.filled(fig.axes[0].images[0].get_array().astype(float), np.nan)


def test_gain_heatmap_cells_are_mean_gains_in_percent(tmp_path):
    gains = _gains()
    dup = gains.copy()
    dup["gain"] = dup["gain"] + 0.02  # a second seed: the cell must show the mean
    fig = plots.transfer_gain_heatmap(pd.concat([gains, dup]), task_classes=CLASSES, regime="LIMITED→LIMITED")
    arr = _heatmap_array(fig)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert rows == cols == TASKS  # ordered by class CR, QA, SL
    for i, s in enumerate(rows):
        for j, t in enumerate(cols):
            if s == t:
                assert np.isnan(arr[i, j])
            else:
                expected = 100 * ((0.05 if CLASSES[s] == CLASSES[t] else -0.02) + 0.001 * TASKS.index(s) + 0.01)
                assert arr[i, j] == pytest.approx(expected)
    assert "LIMITED→LIMITED" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    path = plots.save_figure(fig, "gain_heatmap", tmp_path)
    assert path == tmp_path / "gain_heatmap.png" and path.stat().st_size > 5000


def test_violins_draw_baseline_at_mean_no_transfer_score():
    res = _results()
    fig = plots.target_score_violins(res, task_classes=CLASSES)
    ax = fig.axes[0]
    # the no-transfer bars are the LineCollections drawn with hlines at the baseline means
    levels = sorted(seg[0][1] for coll in ax.collections if coll.get_linewidth()[0] == pytest.approx(2.2)
                    for seg in coll.get_segments())
    expected = sorted(0.5 + 0.05 * i for i in range(len(TASKS)))  # seeds ±0.01 average out
    assert levels == pytest.approx(expected)
    # one dot per (source, target) pair, scores averaged over seeds
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())
                              and c.get_offsets().shape[1] == 2 and type(c).__name__ == "PathCollection"])
    assert len(offsets) == len(TASKS) * (len(TASKS) - 1)
    assert "FULL→LIMITED" in ax.get_title()
    assert ax.get_ylabel().startswith("target score")


def test_violins_of_a_partial_regime_count_each_targets_measured_sources():
    """Sources A1 and B1 only are measured: each target's tick reads (measured/expected), the panel title counts
    the pairs, and tick colours still follow the target's class; a complete regime keeps plain ticks."""
    res = _results()
    partial = res[res["source"].isin(["", "A1", "B1"])]
    expected = {t: len(TASKS) - 1 for t in TASKS}
    ax = plots.target_score_violins(partial, task_classes=CLASSES, expected_sources=expected).axes[0]
    measured = {t: sum(s in ("A1", "B1") and s != t for s in TASKS) for t in TASKS}  # 1 for A1, B1; else 2
    ticks = [lab.get_text() for lab in ax.get_xticklabels()]
    assert ticks == [f"{t} ({measured[t]}/5)" for t in TASKS]
    assert f"{sum(measured.values())} of {5 * len(TASKS)} pairs measured so far" in ax.get_title()
    colours = [lab.get_color() for lab in ax.get_xticklabels()]
    assert colours == [plots.CLASS_COLORS[CLASSES[t]] for t in TASKS]
    whole = plots.target_score_violins(res, task_classes=CLASSES, expected_sources=expected).axes[0]
    assert [lab.get_text() for lab in whole.get_xticklabels()] == TASKS
    assert whole.get_title() == "regime FULL→LIMITED"


def test_violins_one_panel_per_regime():
    res = _results()
    res2 = res.assign(regime="LIMITED→LIMITED")
    fig = plots.target_score_violins(pd.concat([res, res2]), task_classes=CLASSES)
    assert len(fig.axes) == 2


def _dots(ax):
    return np.concatenate([c.get_offsets() for c in ax.collections if type(c).__name__ == "PathCollection"
                           and len(c.get_offsets())])


def test_violins_one_regime_best_and_choice_marked_and_seeded_jitter():
    res = pd.concat([_results(), _results().assign(regime="LIMITED→LIMITED")])
    choices = {"A1": "B1", ("FULL→LIMITED", "B2"): "B1", "C1": "not-a-source"}
    fig = plots.target_score_violins(res, task_classes=CLASSES, regime="FULL→LIMITED", choices=choices,
                                     choice_label="TaskEmb's choice", seed=3)
    assert len(fig.axes) == 1 and "FULL→LIMITED" in fig.axes[0].get_title()
    ax = fig.axes[0]
    dots = _dots(ax)
    assert len(dots) == len(TASKS) * (len(TASKS) - 1)
    targets = [t.get_text() for t in ax.get_xticklabels()]
    assert targets == TASKS
    # jitter: within ±0.12 of the target's slot, the same for the same seed, different for another
    assert np.all(np.abs(dots[:, 0] - np.round(dots[:, 0])) <= 0.12 + 1e-12)
    again = _dots(plots.target_score_violins(res, task_classes=CLASSES, regime="FULL→LIMITED", seed=3).axes[0])
    assert np.array_equal(np.sort(dots, axis=0), np.sort(again, axis=0))
    other = _dots(plots.target_score_violins(res, task_classes=CLASSES, regime="FULL→LIMITED", seed=4).axes[0])
    assert not np.array_equal(np.sort(dots, axis=0), np.sort(other, axis=0))
    marks = {ln.get_marker(): ln for ln in ax.lines if ln.get_label() in ("_best", "_choice")}
    # best source of each target: in-class sources score base + 0.03 (seed-mean); one ring per target
    best_y = marks["o"].get_ydata()
    assert len(best_y) == len(TASKS)
    assert sorted(best_y) == pytest.approx(sorted(0.5 + 0.05 * i + 0.03 for i in range(len(TASKS))))
    # choices: A1 <- B1 (out-of-class, base - 0.02), B2 <- B1 (in-class, + 0.03); C1's choice is unknown
    choice = marks["D"]
    got = sorted(zip(np.round(choice.get_xdata()).astype(int), choice.get_ydata()))
    assert got == [(0, pytest.approx(0.5 - 0.02)), (3, pytest.approx(0.5 + 0.05 * 3 + 0.03))]
    # ring and diamond sit on dots
    for x, y in zip(choice.get_xdata(), choice.get_ydata()):
        assert np.any(np.isclose(dots[:, 0], x) & np.isclose(dots[:, 1], y))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best source" in labels and "TaskEmb's choice" in labels and "no transfer (target alone)" in labels
    with pytest.raises(ValueError, match="no rows of regime"):
        plots.target_score_violins(res, regime="FULL→FULL")


def test_violins_ring_an_exact_tie_on_the_first_source_name_whatever_the_row_order():
    """Two sources with the same score (a small dev set gives different models the same accuracy): the ring
    sits on the first name in alphabetical order, as ``study.transfer_analysis.best_sources`` chooses."""
    classes = {"T": "CR", "Zeta": "SL", "Alpha": "QA"}
    rows = [{"source": "Zeta", "target": "T", "regime": "FULL→LIMITED", "score": 0.7},
            {"source": "Alpha", "target": "T", "regime": "FULL→LIMITED", "score": 0.7},
            {"source": "", "target": "T", "regime": "FULL→LIMITED", "score": 0.6}]
    for order in (rows, rows[::-1]):
        ax = plots.target_score_violins(pd.DataFrame(order), task_classes=classes).axes[0]
        alpha = [c.get_offsets()[0] for c in ax.collections if type(c).__name__ == "PathCollection"
                 and len(c.get_offsets()) and np.allclose(c.get_facecolor()[0][:3],
                                                           matplotlib.colors.to_rgb(plots.CLASS_COLORS["QA"]))]
        ring = next(ln for ln in ax.lines if ln.get_label() == "_best")
        assert len(alpha) == 1 and len(ring.get_xdata()) == 1
        assert (ring.get_xdata()[0], ring.get_ydata()[0]) == pytest.approx(tuple(alpha[0]))


def test_regime_gains_side_by_side_uses_pairs_measured_in_both():
    a = _gains().assign(regime="LIMITED→LIMITED")
    b = _gains().assign(regime="FULL→LIMITED", gain=lambda d: d["gain"] * 2)
    b = b[~((b["source"] == "A2") & (b["target"] == "A1"))]  # not measured in FULL→LIMITED yet
    extra = pd.DataFrame([{"source": "Z", "target": "A1", "gain": 5.0, "regime": "LIMITED→LIMITED"}])
    fig = plots.regime_gains_side_by_side(pd.concat([a, b, extra]), task_classes={**CLASSES, "Z": "CR"})
    mean_ax, best_ax = fig.axes[:2]
    labels = [t.get_text() for t in mean_ax.get_xticklabels()]
    assert labels[0] == "A1 (4)" and labels[1] == "A2 (5)"  # A1: A2 and Z left out
    lines = {ln.get_label(): ln for ln in mean_ax.lines}
    common = a[~((a["source"] == "A2") & (a["target"] == "A1"))]
    exp_a1 = 100 * common[common["target"] == "A1"]["gain"].mean()
    assert lines["LIMITED→LIMITED"].get_ydata()[0] == pytest.approx(exp_a1)
    assert lines["FULL→LIMITED"].get_ydata()[0] == pytest.approx(2 * exp_a1)
    best = {ln.get_label(): ln for ln in best_ax.lines}
    exp_best_a2 = 100 * a[a["target"] == "A2"]["gain"].max()
    assert best["LIMITED→LIMITED"].get_ydata()[1] == pytest.approx(exp_best_a2)
    assert best["FULL→LIMITED"].get_ydata()[1] == pytest.approx(2 * exp_best_a2)
    assert "measured in both" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="no gains of regime"):
        plots.regime_gains_side_by_side(a)


def test_class_transfer_matrix_matches_hand_computation():
    gains = _gains()
    fig = plots.class_transfer_matrix(gains, task_classes=CLASSES)
    arr = _heatmap_array(fig)
    # CR -> CR: pairs (A1,A2) gain 0.05 + 0.000 and (A2,A1) 0.05 + 0.001 -> mean 5.05 %
    assert arr[0, 0] == pytest.approx(5.05)
    # QA -> CR: sources B1 (idx 2), B2 (idx 3), each to 2 targets: -0.02 + 0.0025 mean -> -1.75 %
    assert arr[1, 0] == pytest.approx(-1.75)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("100% help" in t and "n=2" in t for t in texts)
    assert any("0% help" in t and "n=4" in t for t in texts)


def test_in_vs_out_of_class_shares():
    gains = _gains()
    fig = plots.in_vs_out_of_class(gains, task_classes=CLASSES)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("100% > 0\n(n=2)") == 3  # in-class pairs per target class
    assert texts.count("0% > 0\n(n=8)") == 3
    assert fig.axes[0].get_ylabel() == "relative gain over no transfer (%)"
    # the jitter is seeded: the same dots every time, and numpy's global generator is left as it was
    state = np.random.get_state()[1].copy()
    again = plots.in_vs_out_of_class(gains, task_classes=CLASSES)
    assert np.array_equal(np.random.get_state()[1], state)
    assert np.array_equal(_dots(fig.axes[0]), _dots(again.axes[0]))
    assert not np.array_equal(_dots(fig.axes[0]), _dots(plots.in_vs_out_of_class(gains, task_classes=CLASSES,
                                                                                   seed=1).axes[0]))


def test_gain_vs_source_size_title_has_spearman():
    from scipy.stats import spearmanr

    gains = _gains()
    sizes = {t: 1000 * (i + 1) for i, t in enumerate(TASKS)}
    fig = plots.gain_vs_source_size(gains, sizes, task_classes=CLASSES)
    per_source = gains.groupby("source")["gain"].mean()
    rho = spearmanr([sizes[s] for s in per_source.index], per_source.values).statistic
    assert f"{rho:+.2f}" in fig.axes[0].get_title()
    with pytest.raises(KeyError, match="source_sizes lacks"):
        plots.gain_vs_source_size(gains, {"A1": 10}, task_classes=CLASSES)


def test_similarity_heatmap_orders_by_class_and_masks_diagonal():
    v = _vectors()
    X = np.stack([v[t] / np.linalg.norm(v[t]) for t in TASKS])
    order = ["C1", "A2", "B1", "A1", "C2", "B2"]
    idx = [TASKS.index(t) for t in order]
    sim = pd.DataFrame((X @ X.T)[np.ix_(idx, idx)], index=order, columns=order)
    fig = plots.similarity_heatmap(sim, task_classes=CLASSES)
    arr = _heatmap_array(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == TASKS
    assert np.isnan(np.diag(arr)).all()
    assert arr[0, 1] == pytest.approx(float(X[0] @ X[1]))


@pytest.mark.parametrize("method", ["pca", "mds", "tsne"])
def test_task_space_coordinates_separate_classes(method):
    coords = plots.task_space_coordinates(_vectors(), method=method, seed=0)
    assert list(coords.columns) == ["task", "x", "y"] and len(coords) == len(TASKS)
    xy = coords[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same = np.array([[CLASSES[a] == CLASSES[b] for b in TASKS] for a in TASKS]) & ~np.eye(len(TASKS), dtype=bool)
    diff = ~same & ~np.eye(len(TASKS), dtype=bool)
    assert d[same].max() < d[diff].min()


def test_task_space_pca_matches_numpy_svd():
    v = _vectors()
    coords = plots.task_space_coordinates(v, method="pca")
    X = np.stack([v[t] / np.linalg.norm(v[t]) for t in TASKS])
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ vt[:2].T
    got = coords[["x", "y"]].to_numpy()
    for k in range(2):  # equal up to the sign of each component
        assert min(np.abs(got[:, k] - ref[:, k]).max(), np.abs(got[:, k] + ref[:, k]).max()) < 1e-8


def test_task_space_errors():
    with pytest.raises(ValueError, match="all zeros"):
        plots.task_space_coordinates({"a": np.zeros(3), "b": np.ones(3)}, method="pca")
    with pytest.raises(ValueError, match="expected 'tsne'"):
        plots.task_space_coordinates(_vectors(), method="umap")


def test_task_space_map_labels_every_task():
    fig = plots.task_space_map(_vectors(), task_classes=CLASSES, method="pca")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(TASKS)
    assert "PCA" in fig.axes[0].get_xlabel()


def test_similarity_agreement_spearman_in_title():
    v = _vectors()
    X = np.stack([v[t] / np.linalg.norm(v[t]) for t in TASKS])
    a = pd.DataFrame(X @ X.T, index=TASKS, columns=TASKS)
    fig = plots.similarity_agreement(a, a * 0.5, label_a="paper", label_b="empirical", task_classes=CLASSES)
    assert "+1.00" in fig.axes[0].get_title()  # a monotone transform keeps the order
    n_points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert n_points == len(TASKS) * (len(TASKS) - 1) // 2


def test_selection_bars_heights_are_the_table_values():
    table = pd.DataFrame({"method": ["TextEmb", "TaskEmb", "TextEmb", "TaskEmb"],
                          "target_class": ["CR", "CR", "SL", "SL"],
                          "rho": [1.5, 2.0, 3.0, 1.0], "ndcg": [80.0, 70.0, 60.0, 90.0]})
    fig = plots.selection_metric_bars(table, ["rho", "ndcg"])
    heights = [round(p.get_height(), 6) for p in fig.axes[0].patches]
    assert sorted(heights) == sorted([1.5, 2.0, 3.0, 1.0])
    assert "lower is better" in fig.axes[0].get_ylabel() and "higher is better" in fig.axes[1].get_ylabel()
    with pytest.raises(KeyError, match="regret@1"):
        plots.selection_metric_bars(table, ["regret@1"])


def test_source_ranking_order_and_truth_panel():
    ranking = pd.DataFrame({"source": ["A1", "B1", "C1"], "score": [0.2, 0.9, 0.5], "rank": [3, 1, 2],
                            "method": "TextEmb"})
    fig = plots.source_ranking(ranking, target="A2", task_classes=CLASSES, truth={"A1": 0.05, "B1": -0.01, "C1": 0.0})
    ax = fig.axes[0]
    by_height = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
    assert [lab for _, lab in by_height] == ["1. B1", "2. C1", "3. A1"]  # rank 1 at the top
    assert sorted(p.get_width() for p in fig.axes[1].patches) == pytest.approx([-1.0, 0.0, 5.0])
    dots = fig.axes[0].collections[-1].get_offsets()
    assert sorted(map(tuple, np.asarray(dots))) == [(0.2, 0.0), (0.5, 1.0), (0.9, 2.0)]  # rank 1 on top
    assert "TextEmb" in fig._suptitle.get_text() and "A2" in fig._suptitle.get_text()


def test_task_sizes_and_epoch_curves():
    table = pd.DataFrame({"task": TASKS, "task_class": [CLASSES[t] for t in TASKS],
                          "train_examples": [100, 2000, 30000, 400, 5000, 60000]})
    fig = plots.task_sizes(table)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    widths = {lab.get_text(): p.get_width() for lab, p in zip(ax.get_yticklabels(), ax.patches)}
    assert widths == dict(zip(TASKS, table["train_examples"]))
    scores = pd.DataFrame({"run": ["x", "x", "y", "y"], "epoch": [1, 2, 1, 2], "score": [0.1, 0.2, 0.3, 0.4]})
    losses = pd.DataFrame({"run": ["x", "x"], "epoch": [0.5, 1.0], "loss": [1.0, 0.5]})
    fig = plots.epoch_curves(scores, losses)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 1


def test_missing_columns_and_bad_names_are_reported(tmp_path):
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['gain'\]"):
        plots.transfer_gain_heatmap(pd.DataFrame({"source": ["a"], "target": ["b"]}))
    fig = plots.task_space_map(_vectors(), task_classes=CLASSES, method="pca")
    with pytest.raises(ValueError, match="plain file stem"):
        plots.save_figure(fig, "../escape", tmp_path)


def test_class_of_prefers_mapping_then_unknown():
    got = plots.class_of(["A1", "not-a-task-xyz"], {"A1": "CR"})
    assert got == {"A1": "CR", "not-a-task-xyz": "?"}


def test_gains_from_selection_metrics_table_and_regime_check():
    gains = _gains().rename(columns={"gain": "rel_gain"})
    fig = plots.transfer_gain_heatmap(gains, task_classes=CLASSES)
    assert _heatmap_array(fig)[0, 1] == pytest.approx(5.0)
    mixed = pd.concat([gains, gains.assign(regime="FULL→FULL")])
    with pytest.raises(ValueError, match="mixes regimes"):
        plots.class_transfer_matrix(mixed, task_classes=CLASSES)


def test_selection_bars_accept_long_summary():
    long = pd.DataFrame({"method": ["TextEmb", "TextEmb", "TaskEmb", "TaskEmb"],
                         "target_class": ["CR", "CR", "CR", "CR"],
                         "metric": ["rho", "ndcg", "rho", "ndcg"], "value": [2.0, 0.7, 1.0, 0.9]})
    fig = plots.selection_metric_bars(long, ["rho", "ndcg"])
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [1.0, 2.0]
    with pytest.raises(ValueError, match="one regime and candidate set"):
        plots.selection_metric_bars(pd.concat([long, long]), ["rho"])


def _tsne_map():
    return plots.task_space_map(_vectors(), task_classes=CLASSES, method="tsne", seed=0)


RENDERS = {
    "violins": lambda: plots.target_score_violins(_results(), task_classes=CLASSES),  # jittered dots
    "in_vs_out_of_class": lambda: plots.in_vs_out_of_class(_gains(), task_classes=CLASSES),  # jittered dots
    "task_space_tsne": _tsne_map,
    "gain_heatmap": lambda: plots.transfer_gain_heatmap(_gains(), task_classes=CLASSES),
}


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_two_renders_give_byte_identical_pngs(tmp_path, name):
    """Same inputs, same PNG bytes (seeded jitter and t-SNE, no version or date in the file), whatever
    the global numpy random state, which a render neither reads nor changes."""
    np.random.seed(1)
    before = np.random.get_state()
    first = plots.save_figure(RENDERS[name](), name, tmp_path / "a").read_bytes()
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]  # the caller's random stream is untouched
    np.random.seed(2)
    second = plots.save_figure(RENDERS[name](), name, tmp_path / "b").read_bytes()
    assert first == second
    assert b"Software" not in first and b"matplotlib" not in first.lower()  # no tEXt chunk naming the writer

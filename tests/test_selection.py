"""Rankers: cosine similarity, reciprocal-rank fusion, DataSize, CurveGrad and Random, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.selection import rankers as sel
from tasktransfer_utils.embeddings.store import TaskEmbedding
from tasktransfer_utils.data.regimes import FULL_TO_FULL, FULL_TO_LIMITED, LIMITED_TO_LIMITED, Regime


def test_ranking_frame_ties_and_order():
    frame = sel.ranking_frame({"b": 0.5, "a": 0.9, "c": 0.5, "d": 0.1}, "m")
    assert frame.columns.tolist() == ["source", "score", "rank", "method"]
    assert frame["source"].tolist() == ["a", "b", "c", "d"]
    assert frame["rank"].tolist() == [1.0, 2.5, 2.5, 4.0]
    with pytest.raises(ValueError, match="no candidates"):
        sel.ranking_frame({}, "m")
    with pytest.raises(ValueError, match="non-finite"):
        sel.ranking_frame({"a": float("nan")}, "m")


def test_cosine_ranker_by_hand():
    vecs = {"T": np.array([1.0, 0.0]), "A": np.array([3.0, 4.0]), "B": np.array([0.0, 2.0]), "C": np.array([-1.0, 1.0])}
    ranked = sel.CosineRanker(vecs, method="TextEmb").rank("T", ["B", "C", "A"])
    assert ranked["source"].tolist() == ["A", "B", "C"]
    np.testing.assert_allclose(ranked["score"], [0.6, 0.0, -1 / np.sqrt(2)])
    assert ranked["rank"].tolist() == [1, 2, 3] and set(ranked["method"]) == {"TextEmb"}
    with pytest.raises(KeyError, match="no embedding for target 'X'"):
        sel.CosineRanker(vecs).rank("X", ["A"])
    with pytest.raises(KeyError, match=r"sources \['Z'\]"):
        sel.CosineRanker(vecs).rank("T", ["A", "Z"])
    with pytest.raises(ValueError, match="zero vector"):
        sel.cosine_similarity(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="duplicates"):
        sel.CosineRanker(vecs).rank("T", ["A", "A"])


def test_separate_target_vectors():
    src = {"A": np.array([1.0, 0.0]), "B": np.array([0.0, 1.0])}
    tgt = {"T": np.array([0.1, 1.0])}
    assert sel.CosineRanker(src, tgt).rank("T", ["A", "B"])["source"].tolist() == ["B", "A"]


def test_reciprocal_rank_fusion_by_hand():
    r1 = sel.ranking_frame({"A": 3, "B": 2, "C": 1}, "r1")  # A, B, C
    r2 = sel.ranking_frame({"A": 1, "B": 3, "C": 2}, "r2")  # B, C, A
    fused = sel.reciprocal_rank_fusion([r1, r2], k=60)
    assert fused["A"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["B"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["C"] == pytest.approx(1 / 63 + 1 / 62)
    # B > A > C
    with pytest.raises(ValueError, match="different candidate sets"):
        sel.reciprocal_rank_fusion([r1, sel.ranking_frame({"A": 1, "B": 2}, "r3")])


def _emb(task, method, component, vector, **meta):
    return TaskEmbedding(np.asarray(vector, dtype=np.float32), dict(task=task, method=method, component=component, **meta))


def _library():
    rng = np.random.default_rng(0)
    out = []
    for task in ("T", "A", "B", "C"):
        out.append(_emb(task, "TextEmb", "avg_sequence_output", rng.normal(size=4), regime="FULL"))
        for comp in ("cls_output", "layer_0"):
            out.append(_emb(task, "TaskEmb", comp, rng.normal(size=3), regime="FULL", estimator="paper"))
    return out


def test_embedding_rankers_from_task_embeddings():
    lib = _library()
    rankers = sel.embedding_rankers(lib)
    assert set(rankers) == {"TextEmb", "TaskEmb[cls_output]", "TaskEmb[layer_0]", "TaskEmb", "TextEmb+TaskEmb"}
    cands = ["A", "B", "C"]
    # TextEmb by hand
    vec = {e.task: e.vector.astype(float) for e in lib if e.method == "TextEmb"}
    manual = {c: vec["T"] @ vec[c] / np.linalg.norm(vec["T"]) / np.linalg.norm(vec[c]) for c in cands}
    got = rankers["TextEmb"].rank("T", cands).set_index("source")["score"]
    for c in cands:
        assert got[c] == pytest.approx(manual[c], rel=1e-6)
    # TaskEmb = RRF of the two components
    comps = [rankers["TaskEmb[cls_output]"].rank("T", cands), rankers["TaskEmb[layer_0]"].rank("T", cands)]
    expected = {c: sum(1 / (60 + r.set_index("source").loc[c, "rank"]) for r in comps) for c in cands}
    fused = rankers["TaskEmb"].rank("T", cands).set_index("source")["score"]
    for c in cands:
        assert fused[c] == pytest.approx(expected[c])
    both = rankers["TextEmb+TaskEmb"].rank("T", cands).set_index("source")["score"]
    text_r = rankers["TextEmb"].rank("T", cands).set_index("source")["rank"]
    task_r = rankers["TaskEmb"].rank("T", cands).set_index("source")["rank"]
    for c in cands:
        assert both[c] == pytest.approx(1 / (60 + text_r[c]) + 1 / (60 + task_r[c]))


def test_noise_only_components_rank_nothing():
    """A component flagged as rounding noise in one task leaves the fusion and the per-component rankers,
    and asking for it by name is an error."""
    lib = _library()
    noisy = next(e for e in lib if e.task == "B" and e.component == "layer_0")
    noisy.meta["noise_only"] = True
    rankers = sel.embedding_rankers(lib)
    assert set(rankers) == {"TextEmb", "TaskEmb[cls_output]", "TaskEmb", "TextEmb+TaskEmb"}
    assert [r.method for r in rankers["TaskEmb"].rankers] == ["TaskEmb[cls_output]"]
    assert set(sel.embedding_rankers(lib, components=["cls_output", "layer_0"])) == set(rankers)
    with pytest.raises(ValueError, match="rounding noise"):
        sel.CosineRanker.from_embeddings(lib, embedding_method="TaskEmb", component="layer_0", regime="FULL")


def test_from_embeddings_filters_and_reports_ambiguity():
    lib = _library() + [_emb("A", "TextEmb", "avg_sequence_output", [1, 0, 0, 0], regime="LIMITED")]
    with pytest.raises(ValueError, match="two embeddings of task 'A'"):
        sel.CosineRanker.from_embeddings(lib, embedding_method="TextEmb")
    r = sel.CosineRanker.from_embeddings(lib, embedding_method="TextEmb", regime="FULL")
    assert r.method == "TextEmb" and set(r.source_vectors) == {"T", "A", "B", "C"}
    r = sel.CosineRanker.from_embeddings(lib, embedding_method="TaskEmb", component="layer_*", regime="FULL")
    assert r.method == "TaskEmb[layer_*]" and len(r.source_vectors) == 4
    with pytest.raises(ValueError, match="no source embeddings"):
        sel.CosineRanker.from_embeddings(lib, embedding_method="TaskEmb", component="nope")


def test_datasize_ranker():
    r = sel.DataSizeRanker({"A": 100, "B": 5000, "C": 1000})
    assert r.rank("T", ["A", "B", "C"])["source"].tolist() == ["B", "C", "A"]
    with pytest.raises(KeyError, match="size"):
        r.rank("T", ["A", "Z"])


def test_datasize_from_real_data(data_dir):
    from tasktransfer_utils.data.loaders import task_size

    r = sel.DataSizeRanker.from_tasks(["RTE", "WNLI", "STS-B"], data_dir=data_dir)
    assert r.sizes == {"RTE": 2490, "WNLI": 635, "STS-B": 5749}
    assert r.sizes["RTE"] == task_size("RTE", data_dir=data_dir)
    assert r.rank("X", ["RTE", "WNLI", "STS-B"])["source"].tolist() == ["STS-B", "RTE", "WNLI"]
    limited = sel.DataSizeRanker.from_tasks(["RTE", "WNLI", "STS-B"], data_dir=data_dir, regime="LIMITED→LIMITED")
    assert limited.sizes == {"RTE": 1000, "WNLI": 635, "STS-B": 1000}


LIMITED_SOURCE_SPELLINGS = ["LIMITED→LIMITED", "LIMITED->LIMITED", "limited->limited", "LIMITED_TO_LIMITED",
                            "limited_to_limited", "LIMITED → LIMITED", "Limited -> Limited", "LIMITED", "limited",
                            " LIMITED ", Regime.LIMITED, LIMITED_TO_LIMITED]
FULL_SOURCE_SPELLINGS = ["FULL→LIMITED", "FULL->LIMITED", "full_to_limited", "FULL→FULL", "full->full", "FULL",
                         "full", Regime.FULL, FULL_TO_LIMITED, FULL_TO_FULL]


@pytest.mark.parametrize("regime", LIMITED_SOURCE_SPELLINGS + FULL_SOURCE_SPELLINGS, ids=str)
def test_datasize_caps_every_spelling_of_a_limited_source_regime(regime, data_dir):
    # "LIMITED->LIMITED" used to leave the sizes uncapped: only "→" was split on
    r = sel.DataSizeRanker.from_tasks(["RTE", "WNLI", "STS-B"], data_dir=data_dir, regime=regime)
    full = {"RTE": 2490, "WNLI": 635, "STS-B": 5749}
    assert r.sizes == ({k: min(v, 1000) for k, v in full.items()} if regime in LIMITED_SOURCE_SPELLINGS else full)


def test_datasize_rejects_an_unknown_regime(data_dir):
    with pytest.raises(ValueError, match="Unknown regime 'LIMITED->FULL'"):
        sel.DataSizeRanker.from_tasks(["RTE"], data_dir=data_dir, regime="LIMITED->FULL")


def _curve(fn, steps=100):
    return [{"step": s, "epoch": 3 * s / steps, "fraction": s / steps, "loss": fn(s / steps), "learning_rate": 1e-5}
            for s in range(1, steps + 1)]


def test_loss_curve_slope_by_hand():
    lin = _curve(lambda x: 2.0 - 1.5 * x)
    for p in sel.CURVEGRAD_POINTS:
        assert sel.loss_curve_slope(lin, p) == pytest.approx(-1.5)
    quad = _curve(lambda x: (1 - x) ** 2)  # derivative −2(1 − x); a symmetric window is exact for a parabola
    assert sel.loss_curve_slope(quad, 0.3) == pytest.approx(-1.4, abs=1e-9)
    # tuples (step, epoch, loss) normalised by the last step: slope per whole run
    tup = [(s, s / 50, 1.0 - 0.01 * s) for s in range(10, 210, 10)]
    assert sel.loss_curve_slope(tup, 0.5) == pytest.approx(-2.0)
    sparse = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    assert sel.loss_curve_slope(sparse, 0.1) == pytest.approx(-1.0)  # 2 points: the line through them
    with pytest.raises(ValueError, match="at least 2"):
        sel.loss_curve_slope([{"step": 1, "loss": 1.0}], 0.5)
    with pytest.raises(ValueError, match="no 'loss'"):
        sel.loss_curve_slope([{"step": 1}, {"step": 2}], 0.5)


def test_curvegrad_ranker_by_hand():
    curves = {
        "plateau": _curve(lambda x: 0.2 + np.exp(-30 * x)),     # falls fast, then flat
        "steady": _curve(lambda x: 1.2 - 0.8 * x),               # slope −0.8 throughout
        "slow": _curve(lambda x: 1.0 - 0.1 * x),                 # slope −0.1
    }
    r = sel.CurveGradRanker(curves)
    # per point: −slope; plateau: 30·e^{−30x} = 1.49 at 10 %, 0.074 at 20 %, ~0 later
    per_point = {p: {s: -r.slopes[s][p] for s in curves} for p in r.points}
    xs = np.arange(5, 16) / 100  # the points within ±5 % of 10 %
    ys = 0.2 + np.exp(-30 * xs)
    ls_slope = np.sum((xs - xs.mean()) * (ys - ys.mean())) / np.sum((xs - xs.mean()) ** 2)
    assert per_point[0.1]["plateau"] == pytest.approx(-ls_slope, rel=1e-9)
    assert per_point[0.1]["plateau"] > 30 * np.exp(-3)  # the chord of a convex decay is steeper than its midpoint
    rankings = r.point_rankings(list(curves))
    assert rankings[0]["source"].tolist() == ["plateau", "steady", "slow"]
    for later in rankings[1:]:
        assert later["source"].tolist() == ["steady", "slow", "plateau"]
    fused = r.rank("T", list(curves)).set_index("source")["score"]
    assert fused["steady"] == pytest.approx(1 / 62 + 4 / 61)
    assert fused["plateau"] == pytest.approx(1 / 61 + 4 / 63)
    assert fused["slow"] == pytest.approx(1 / 63 + 4 / 62)
    assert r.rank("T", list(curves))["source"].tolist() == ["steady", "slow", "plateau"]
    with pytest.raises(KeyError, match="no loss curve"):
        r.rank("T", ["steady", "nope"])
    with pytest.raises(ValueError, match="source 'bad'"):
        sel.CurveGradRanker({"bad": [{"step": 1, "loss": 1.0}]})


def test_curvegrad_from_run_results(tmp_path):
    from tasktransfer_utils.training.fine_tuning import RunResult

    paths = []
    for task, slope in (("A", -0.2), ("B", -0.9)):
        rr = RunResult(task=task, task_class="CR", regime="FULL", seed=0, encoder="x", init_from=None, settings={},
                       epoch_metrics=[], final_metrics={}, score=0.5, loss_curve=_curve(lambda x, s=slope: 1 + s * x),
                       train_examples=10, wall_time_s=1.0, train_examples_per_s=1.0, model_dir=str(tmp_path))
        run_dir = tmp_path / task
        run_dir.mkdir()
        rr.to_json(run_dir / "result.json")
        paths.append(run_dir)
    r = sel.CurveGradRanker.from_run_results(paths)
    assert r.rank("T", ["A", "B"])["source"].tolist() == ["B", "A"]


def test_random_ranker_expected_and_sampled():
    exp = sel.RandomRanker(expected=True)
    assert exp.method == "Random"
    assert exp.rank("T", ["A", "B", "C"])["rank"].tolist() == [2.0, 2.0, 2.0]
    sampled = sel.RandomRanker(seed=1)
    first_positions = pd.Series([sel.RandomRanker(seed=s).rank("T", ["A", "B", "C"])["source"].iloc[0]
                                 for s in range(600)]).value_counts()
    assert set(first_positions.index) == {"A", "B", "C"}
    assert first_positions.min() > 150  # each ~200 of 600
    assert sampled.rank("T", ["A", "B", "C"]).equals(sel.RandomRanker(seed=1).rank("T", ["C", "B", "A"]))

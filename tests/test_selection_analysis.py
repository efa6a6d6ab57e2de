"""selection_analysis: the views of notebook 6 on the committed offline study's evaluation tables
(``results/offline_study``), each checked against a direct pandas computation or the raw CSV rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.study import selection_analysis as sa
from tasktransfer_utils.selection import evaluation as sm
from tasktransfer_utils.paths import RESULTS_DIR
from tasktransfer_utils.selection.rankers import CosineRanker

STUDY = RESULTS_DIR / "offline_study"
EVAL = STUDY / "evaluation"


@pytest.fixture(scope="module")
def per_target():
    return pd.read_csv(EVAL / "per_target.csv")


@pytest.fixture(scope="module")
def summary():
    return pd.read_csv(EVAL / "summary.csv")


def test_evaluated_targets(per_target):
    got = sa.evaluated_targets(per_target, ["LIMITED→LIMITED", "FULL→LIMITED", "nothing"])
    for regime, targets in got.items():
        assert targets == sorted(set(per_target.loc[per_target["regime"] == regime, "target"]))
    assert got["nothing"] == [] and len(got["LIMITED→LIMITED"]) > 0


def test_example_ranking_truth_is_the_relative_gain_by_hand():
    results = pd.DataFrame([
        {"source": None, "target": "RTE", "regime": "LIMITED→LIMITED", "seed": 0, "score": 0.5},
        {"source": "MRPC", "target": "RTE", "regime": "LIMITED→LIMITED", "seed": 0, "score": 0.6},
        {"source": "SST-2", "target": "RTE", "regime": "LIMITED→LIMITED", "seed": 0, "score": 0.45},
        {"source": "MRPC", "target": "RTE", "regime": "FULL→LIMITED", "seed": 0, "score": 0.7},
    ])
    vectors = {"RTE": np.array([1.0, 0.0]), "MRPC": np.array([0.0, 1.0]), "SST-2": np.array([1.0, 0.1])}
    rankers = {"LIMITED→LIMITED": {"TextEmb": CosineRanker(vectors, method="TextEmb")}}
    ex = sa.example_ranking(results, rankers, "LIMITED→LIMITED", "RTE", "TaskEmb")
    assert ex.method == "TextEmb"  # no TaskEmb ranker: the fallback
    assert ex.truth.to_dict() == pytest.approx({"MRPC": (0.6 - 0.5) / 0.5, "SST-2": (0.45 - 0.5) / 0.5})
    assert list(ex.ranking.sort_values("rank")["source"]) == ["SST-2", "MRPC"]  # cosine 0.995 against 0
    assert (ex.regime, ex.target) == ("LIMITED→LIMITED", "RTE")


def test_metric_tables(summary):
    tables = sa.metric_tables(summary, ["ndcg", "not-a-metric", "rho"])
    assert list(tables) == ["ndcg", "rho"]
    assert tables["rho"].equals(sm.selection_table(summary, "rho"))


def test_headline_comparisons(per_target):
    from tasktransfer_utils.study.report import HEADLINE_METHODS

    view = sa.headline_comparisons(per_target, metrics=("rho",))
    assert set(view["target_class"]) == {"all"} and set(view["method"]) <= set(HEADLINE_METHODS)
    assert set(view["baseline"]) == {"Random", "DataSize"}
    # one row by hand: TextEmb against Random on ρ, mean over the seed-averaged targets
    row = view[(view["method"] == "TextEmb") & (view["baseline"] == "Random")
               & (view["regime"] == "LIMITED→LIMITED") & (view["candidate_set"] == "all-class")].iloc[0]
    pt = per_target[per_target["seed"].isna() & (per_target["regime"] == "LIMITED→LIMITED")
                    & (per_target["candidate_set"] == "all-class")]
    a = pt[pt["method"] == "TextEmb"].set_index("target")["rho"]
    b = pt[pt["method"] == "Random"].set_index("target")["rho"]
    assert row["mean_diff"] == pytest.approx((a - b.reindex(a.index)).mean())


def test_inseparable_by_candidate_set(per_target):
    spread = pd.read_csv(EVAL / "target_spread.csv")
    got = sa.inseparable_by_candidate_set(per_target, spread, 2.0)
    assert list(got["candidate_set"]) == list(dict.fromkeys(spread.loc[spread["se_bound"].notna(), "candidate_set"]))
    for row in got.itertuples():
        rows = spread[(spread["candidate_set"] == row.candidate_set) & spread["se_bound"].notna()]
        assert row.n_bounded == len(rows)
        assert row.close_targets == list(rows.loc[rows["spread_in_se"] < 2.0, "target"])
        assert row.n_close == len(row.close_targets)
    assert sa.inseparable_by_candidate_set(per_target, spread, 0.0)["n_close"].sum() == 0


def test_component_table(summary):
    table = sa.component_table(summary, ["rho", "ndcg"])
    assert all(m.startswith("TaskEmb") for m in table.index)
    assert list(dict.fromkeys(table.columns.get_level_values("metric"))) == ["rho", "ndcg"]
    sel = summary[(summary["method"] == "TaskEmb") & (summary["target_class"] == "all") & (summary["metric"] == "rho")]
    for r in sel.itertuples():
        assert table.loc["TaskEmb", (r.regime, r.candidate_set, "rho")] == pytest.approx(r.value)


def test_loto_choice_counts():
    choices = pd.read_csv(EVAL / "loto_choices.csv")
    counts = sa.loto_choice_counts(choices, ["rho"])
    assert set(counts["metric"]) == {"rho"}
    avg = choices[choices["seed"].isna() & (choices["metric"] == "rho")]
    for (regime, cset), grp in counts.groupby(["regime", "candidate_set"]):
        mine = avg[(avg["regime"] == regime) & (avg["candidate_set"] == cset)]
        assert grp["targets"].sum() == len(mine)  # every held-out target chose one component
        assert dict(zip(grp["chosen"], grp["targets"])) == mine["chosen"].value_counts().to_dict()


def test_random_check(per_target):
    sampled = per_target[per_target["method"] == "Random"].drop(columns="method").assign(rho_se=0.1)
    sampled = sampled[sampled["seed"].isna()].drop(columns="seed")
    check = sa.random_check(per_target, sampled)
    exact = per_target[(per_target["method"] == "Random") & per_target["seed"].isna()]
    assert len(check) == len(exact)
    assert np.allclose(check["rho_exact"], check["rho_sampled"]) and set(check["rho_se"]) == {0.1}


def test_taskemb_variant_table_keeps_fused_variants_only():
    summary = pd.DataFrame([
        {"method": m, "regime": "L→L", "candidate_set": "all-class", "target_class": c, "metric": k, "value": v}
        for m, v in (("TaskEmb", 1.0), ("TaskEmb (empirical, gold)", 2.0), ("TaskEmb (authors QA loss)", 3.0),
                     ("TaskEmb (one component, chosen leave-one-target-out)", 4.0), ("TextEmb", 5.0),
                     ("TaskEmb[cls_output]", 6.0))
        for c in ("all", "QA", "CR") for k in ("rho", "ndcg")])
    table = sa.taskemb_variant_table(summary, metrics=("rho", "ndcg"))
    assert sorted(set(table["method"])) == ["TaskEmb", "TaskEmb (authors QA loss)", "TaskEmb (empirical, gold)"]
    assert sorted(set(table["target_class"])) == ["QA", "all"] and list(table.columns[-2:]) == ["rho", "ndcg"]
    got = table.set_index(["method", "target_class"])["rho"].to_dict()
    assert got[("TaskEmb (empirical, gold)", "QA")] == 2.0 and got[("TaskEmb", "all")] == 1.0


def test_interim_view_keeps_the_headline_methods_over_all_targets():
    rows = []
    for method, base in (("Random", 2.5), ("TaskEmb[layer_1]", 1.0), ("DataSize", 3.0), ("TextEmb", 2.0)):
        for tclass, shift in (("all", 0.0), ("CR", 0.5)):
            for metric, value in (("rho", base), ("ndcg", base / 10), ("spearman", 0.1)):
                rows.append({"method": method, "regime": "FULL→LIMITED", "candidate_set": "all-class",
                             "target_class": tclass, "metric": metric, "value": value + shift})
    summary = pd.DataFrame(rows)
    paired = pd.DataFrame([{"method": m, "baseline": "Random", "target_class": c, "metric": "rho", "mean_diff": d}
                           for m, c, d in (("TextEmb", "all", -0.5), ("TextEmb", "CR", -0.1),
                                           ("TaskEmb[layer_1]", "all", -1.5))])
    table, comparisons = sa.interim_view(summary, paired)
    assert [m for _, m in table.index] == ["TextEmb", "DataSize", "Random"]  # HEADLINE_METHODS order, then Random
    assert list(table.columns) == ["rho", "ndcg"]
    assert table.loc[("FULL→LIMITED", "DataSize"), "rho"] == 3.0
    assert table.loc[("FULL→LIMITED", "TextEmb"), "ndcg"] == 0.2
    assert comparisons[["method", "mean_diff"]].values.tolist() == [["TextEmb", -0.5]]

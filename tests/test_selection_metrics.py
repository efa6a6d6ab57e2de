"""Selection metrics on small tables whose answers are worked out by hand."""

from __future__ import annotations

from math import log2

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.selection import evaluation as sm
from tasktransfer_utils.selection.rankers import RandomRanker, Ranker


class FixedRanker(Ranker):
    """Hand-given scores per (target, source)."""

    def __init__(self, table: dict[str, dict[str, float]], method: str = "fixed"):
        self.table = table
        self.method = method

    def scores(self, target, candidates):
        return {c: self.table[target][c] for c in candidates}


# ---------------------------------------------------------------- per-target metrics by hand

TRUE4 = pd.Series({"A": 0.80, "B": 0.70, "C": 0.60, "D": 0.50})
PRED4 = pd.Series({"B": 0.9, "A": 0.8, "D": 0.7, "C": 0.6})  # order B, A, D, C


def test_four_candidates_by_hand():
    m = sm.ranking_metrics(PRED4, TRUE4, ks=(1, 3, 5))
    assert m["rho"] == 2.0  # A, the best, is second
    # min-max relevance A=1, B=2/3, C=1/3, D=0; predicted order B, A, D, C
    dcg = (2 / 3) / log2(2) + 1 / log2(3) + 0 / log2(4) + (1 / 3) / log2(5)
    idcg = 1 / log2(2) + (2 / 3) / log2(3) + (1 / 3) / log2(4) + 0 / log2(5)
    assert m["ndcg"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert m["ndcg"] == pytest.approx(0.907937, abs=1e-6)
    assert m["regret@1"] == pytest.approx(100 * (0.8 - 0.7) / 0.8)  # 12.5 %
    assert m["regret@3"] == 0.0 and m["regret@5"] == 0.0
    # rank differences all 1 -> 1 - 6*4/(4*15); Kendall: 4 concordant, 2 discordant pairs
    assert m["spearman"] == pytest.approx(0.6)
    assert m["kendall"] == pytest.approx(1 / 3)
    assert m["n_candidates"] == 4


def test_perfect_and_reversed_orders():
    perfect = sm.ranking_metrics(TRUE4, TRUE4)
    assert perfect["rho"] == 1 and perfect["ndcg"] == pytest.approx(1.0)
    assert perfect["regret@1"] == 0 and perfect["spearman"] == pytest.approx(1) and perfect["kendall"] == pytest.approx(1)
    rev = sm.ranking_metrics(-TRUE4, TRUE4)
    assert rev["rho"] == 4 and rev["spearman"] == pytest.approx(-1) and rev["kendall"] == pytest.approx(-1)
    assert rev["regret@1"] == pytest.approx(100 * 0.3 / 0.8)
    assert rev["regret@3"] == pytest.approx(100 * 0.1 / 0.8)


def test_fully_tied_prediction_is_the_expectation_over_orders():
    true = np.array([0.9, 0.5, 0.4])
    m = sm.ranking_metrics(np.zeros(3), true, ks=(1, 2))
    assert m["rho"] == pytest.approx(2.0)  # (n + 1) / 2
    rel = np.array([1.0, 0.2, 0.0])
    expected_dcg = rel.mean() * (1 + 1 / log2(3) + 1 / log2(4))
    idcg = 1 + 0.2 / log2(3)
    assert m["ndcg"] == pytest.approx(expected_dcg / idcg)
    assert m["regret@1"] == pytest.approx(100 * (0.9 - 0.6) / 0.9)  # E[top-1] = mean = 0.6
    # random 2-subsets {A,B}->0.9, {A,C}->0.9, {B,C}->0.5
    assert m["regret@2"] == pytest.approx(100 * (0.9 - (0.9 + 0.9 + 0.5) / 3) / 0.9)
    assert m["spearman"] == 0.0 and m["kendall"] == 0.0


def test_partial_tie_in_prediction():
    true = np.array([0.9, 0.5, 0.4])  # A, B, C
    pred = np.array([1.0, 1.0, 2.0])  # C first, then A and B tied
    m = sm.ranking_metrics(pred, true, ks=(1, 2))
    assert m["rho"] == pytest.approx(2.5)  # orders C,A,B (2) and C,B,A (3)
    assert m["regret@1"] == pytest.approx(100 * 0.5 / 0.9)
    assert m["regret@2"] == pytest.approx(100 * (0.9 - 0.5 * (0.9 + 0.5)) / 0.9)
    # NDCG: mean over the two orders of the tied pair
    rel = np.array([1.0, 0.2, 0.0])
    d = [1 / log2(i + 1) for i in (1, 2, 3)]
    dcg = 0.5 * ((rel[2] * d[0] + rel[0] * d[1] + rel[1] * d[2]) + (rel[2] * d[0] + rel[1] * d[1] + rel[0] * d[2]))
    idcg = rel[0] * d[0] + rel[1] * d[1]
    assert m["ndcg"] == pytest.approx(dcg / idcg)


def test_tie_in_truth_counts_first_best_source():
    true = np.array([0.8, 0.8, 0.5])  # A and B both best
    assert sm.expected_rank_of_best(np.array([1.0, 2.0, 3.0]), true) == 2  # C, B, A: B at 2
    assert sm.expected_rank_of_best(np.zeros(3), true) == pytest.approx(4 / 3)  # (n+1)/(m+1)
    m = sm.ranking_metrics(np.array([1.0, 2.0, 3.0]), true)
    assert m["regret@1"] == pytest.approx(100 * 0.3 / 0.8)


def test_single_candidate():
    m = sm.ranking_metrics([0.3], [0.7])
    assert m["rho"] == 1 and m["ndcg"] == 1.0 and m["regret@1"] == 0 and m["regret@5"] == 0
    assert np.isnan(m["spearman"]) and np.isnan(m["kendall"]) and m["n_candidates"] == 1


def test_every_source_hurts_relevance_choices():
    # baseline 0.70; all transfers lower
    true = np.array([0.60, 0.50, 0.65])
    pred = np.array([0.2, 0.1, 0.3])  # perfect order C, A, B
    mm = sm.ranking_metrics(pred, true, relevance="minmax", baseline=0.70)
    assert mm["ndcg"] == pytest.approx(1.0) and mm["rho"] == 1
    pg = sm.ranking_metrics(pred, true, relevance="positive_gain", baseline=0.70)
    assert np.isnan(pg["ndcg"])  # no source helps: nothing relevant
    bad = sm.ranking_metrics(np.array([0.3, 0.2, 0.1]), true, relevance="minmax")
    # relevance A=0.6667, B=0, C=1; order A, B, C
    dcg = (2 / 3) + 0 / log2(3) + 1 / log2(4)
    idcg = 1 + (2 / 3) / log2(3)
    assert bad["ndcg"] == pytest.approx(dcg / idcg)


def test_positive_gain_relevance_by_hand():
    true = np.array([0.88, 0.80, 0.84])  # baseline 0.80: gains 0.1, 0, 0.05
    pred = np.array([0.0, 2.0, 1.0])  # order B, C, A
    m = sm.ranking_metrics(pred, true, relevance="positive_gain", baseline=0.80)
    dcg = 0 + 0.05 / log2(3) + 0.1 / log2(4)
    idcg = 0.1 + 0.05 / log2(3)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    with pytest.raises(ValueError, match="baseline"):
        sm.ranking_metrics(pred, true, relevance="positive_gain")


def test_score_relevance_and_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        sm.ranking_metrics([1.0, 2.0], [-0.1, 0.3], relevance="score")
    with pytest.raises(ValueError, match="relevance must be"):
        sm.ranking_metrics([1.0, 2.0], [0.1, 0.3], relevance="exp")
    with pytest.raises(ValueError, match="same non-zero length"):
        sm.ranking_metrics([1.0], [0.1, 0.3])
    with pytest.raises(ValueError, match="finite"):
        sm.ranking_metrics([1.0, np.nan], [0.1, 0.3])
    with pytest.raises(KeyError, match="lack candidates"):
        sm.ranking_metrics(pd.Series({"A": 1.0}), pd.Series({"A": 0.1, "B": 0.3}))
    m = sm.ranking_metrics([0.0, 2.0, 1.0], [0.5, 0.1, 0.4], relevance="score")
    d = [1 / log2(i + 1) for i in (1, 2, 3)]
    assert m["ndcg"] == pytest.approx((0.1 * d[0] + 0.4 * d[1] + 0.5 * d[2]) / (0.5 * d[0] + 0.4 * d[1] + 0.1 * d[2]))


def test_constant_truth_gives_nan_correlations_and_ndcg_one():
    m = sm.ranking_metrics([0.1, 0.5, 0.3], [0.6, 0.6, 0.6])
    assert m["ndcg"] == 1.0 and m["rho"] == 1 and m["regret@1"] == 0
    assert np.isnan(m["spearman"]) and np.isnan(m["kendall"])


# ---------------------------------------------------------------- Random: exact vs simulated


@pytest.mark.parametrize("true", [
    np.array([0.81, 0.74, 0.74, 0.60, 0.55, 0.52, 0.40]),
    np.array([0.5, 0.5, 0.3, 0.2, 0.9, 0.9, 0.9, 0.1]),  # three-way tie for best
])
def test_random_expectation_matches_simulation(true):
    exact = sm.ranking_metrics(np.zeros(true.size), true, ks=(1, 3, 5))
    n, m_best = true.size, int(np.sum(true == true.max()))
    assert exact["rho"] == pytest.approx((n + 1) / (m_best + 1))
    sim = sm.sampled_random_metrics(true, n_draws=4000, seed=1, ks=(1, 3, 5))
    for metric in ("rho", "ndcg", "regret@1", "regret@3", "regret@5", "spearman", "kendall"):
        mean, se = sim.loc[metric, "mean"], sim.loc[metric, "se"]
        assert abs(mean - exact[metric]) < 4 * se + 1e-12, (metric, mean, exact[metric], se)
    # an independent simulation with plain numpy permutations (rank of the first best source)
    rng = np.random.default_rng(7)
    ranks = []
    for _ in range(4000):
        order = rng.permutation(n)  # order[i] = candidate at position i + 1
        ranks.append(1 + int(np.flatnonzero(true[order] == true.max())[0]))
    ranks = np.array(ranks)
    assert abs(ranks.mean() - exact["rho"]) < 4 * ranks.std(ddof=1) / np.sqrt(ranks.size)


def test_vectorised_permutation_metrics_agree_with_ranking_metrics():
    true = np.array([0.5, 0.5, 0.3, 0.2, 0.9, 0.7, 0.9, 0.1])
    rng = np.random.default_rng(0)
    orders = np.argsort(rng.random((25, true.size)), axis=1)
    fast = sm.permutation_metrics(true, orders, ks=(1, 3, 5))
    for d in range(25):
        pred = np.empty(true.size)
        pred[orders[d]] = np.arange(true.size, 0, -1)
        slow = sm.ranking_metrics(pred, true, ks=(1, 3, 5))
        for metric in fast.columns:
            assert fast.loc[d, metric] == pytest.approx(slow[metric], abs=1e-12), metric


def test_random_ranker_expected_is_all_tied_and_sampled_is_a_permutation():
    cands = ["A", "B", "C", "D"]
    exp = RandomRanker(expected=True).rank("T", cands)
    assert set(exp["rank"]) == {2.5}
    r1 = RandomRanker(seed=3).rank("T", cands)
    r2 = RandomRanker(seed=3).rank("T", list(reversed(cands)))
    assert sorted(r1["rank"]) == [1, 2, 3, 4]
    assert r1["source"].tolist() == r2["source"].tolist()  # reproducible, order-independent
    orders = {tuple(RandomRanker(seed=s).rank("T", cands)["source"]) for s in range(30)}
    assert len(orders) > 5


# ---------------------------------------------------------------- tables

def _results_table():
    """Two CR targets and one SL target, two seeds each. Scores chosen so every answer is simple."""
    rows = []

    def add(source, target, seed, score, sc, tc, regime="FULL→LIMITED"):
        rows.append(dict(source=source, target=target, regime=regime, seed=seed, score=score,
                         source_class=sc, target_class=tc))

    # target RTE (CR): baseline 0.60/0.62; sources MNLI (CR), SST-2 (CR), POS (SL)
    for seed, base in ((0, 0.60), (1, 0.62)):
        add(None, "RTE", seed, base, None, "CR")
    add("MNLI", "RTE", 0, 0.70, "CR", "CR"); add("MNLI", "RTE", 1, 0.72, "CR", "CR")
    add("SST-2", "RTE", 0, 0.58, "CR", "CR"); add("SST-2", "RTE", 1, 0.64, "CR", "CR")
    add("POS", "RTE", 0, 0.66, "SL", "CR"); add("POS", "RTE", 1, 0.60, "SL", "CR")
    # target CoLA (CR): every source hurts; baseline 0.50
    for seed in (0, 1):
        add(None, "CoLA", seed, 0.50, None, "CR")
    add("MNLI", "CoLA", 0, 0.40, "CR", "CR"); add("MNLI", "CoLA", 1, 0.42, "CR", "CR")
    add("SST-2", "CoLA", 0, 0.45, "CR", "CR"); add("SST-2", "CoLA", 1, 0.47, "CR", "CR")
    add("POS", "CoLA", 0, 0.30, "SL", "CR"); add("POS", "CoLA", 1, 0.36, "SL", "CR")
    # target NER (SL): a single in-class candidate POS; self-transfer row must be ignored
    for seed in (0, 1):
        add("", "NER", seed, 0.80, None, "SL")
    add("POS", "NER", 0, 0.84, "SL", "SL"); add("POS", "NER", 1, 0.86, "SL", "SL")
    add("MNLI", "NER", 0, 0.78, "CR", "SL"); add("MNLI", "NER", 1, 0.80, "CR", "SL")
    add("NER", "NER", 0, 0.99, "SL", "SL")
    return pd.DataFrame(rows)


PRED = {
    "RTE": {"MNLI": 0.9, "SST-2": 0.8, "POS": 0.1},   # truth (mean): MNLI .71, POS .63, SST-2 .61
    "CoLA": {"MNLI": 0.2, "SST-2": 0.9, "POS": 0.5},  # truth: SST-2 .46, MNLI .41, POS .33
    "NER": {"POS": 0.3, "MNLI": 0.7},                 # truth: POS .85, MNLI .79
}


def test_transfer_gains_and_means_by_hand():
    gains = sm.transfer_gains(_results_table())
    row = gains[(gains.target == "RTE") & (gains.source == "MNLI") & (gains.seed == 1)].iloc[0]
    assert row.baseline_score == pytest.approx(0.62)
    assert row.abs_gain == pytest.approx(0.10) and row.rel_gain == pytest.approx(0.10 / 0.62)
    means = sm.mean_transfer(_results_table())
    m = means[(means.target == "RTE") & (means.source == "SST-2")].iloc[0]
    assert m.score == pytest.approx(0.61) and m.baseline_score == pytest.approx(0.61)
    assert m.abs_gain == pytest.approx(0.0, abs=1e-12) and m.n_seeds == 2
    assert m.score_std == pytest.approx(np.std([0.58, 0.64], ddof=1))
    assert m.rel_gain_std == pytest.approx(np.std([-0.02 / 0.60, 0.02 / 0.62], ddof=1))
    cola = means[means.target == "CoLA"]
    assert (cola.rel_gain < 0).all()  # every source hurts
    assert cola.set_index("source").loc["POS", "rel_gain"] == pytest.approx((0.33 - 0.5) / 0.5)


def test_missing_baseline_and_bad_table_are_reported():
    table = _results_table()
    with pytest.raises(ValueError, match="lacks columns"):
        sm.transfer_gains(table.drop(columns="seed"))
    no_base = table[~((table.target == "RTE") & table.source.isna())]
    with pytest.raises(ValueError, match="no no-transfer baseline.*RTE"):
        sm.transfer_gains(no_base)
    bad = table.copy()
    bad.loc[3, "score"] = np.nan
    with pytest.raises(ValueError, match="row 3: field 'score'"):
        sm.transfer_gains(bad)


def test_candidate_sets():
    res = sm.add_task_classes(sm.check_results(_results_table()))
    assert sm.candidate_sources(res, "RTE", "FULL→LIMITED", "in-class") == ["MNLI", "SST-2"]
    assert sm.candidate_sources(res, "RTE", "FULL→LIMITED", "all-class") == ["MNLI", "POS", "SST-2"]
    assert sm.candidate_sources(res, "NER", "FULL→LIMITED", "in-class") == ["POS"]  # NER itself excluded
    with pytest.raises(ValueError, match="candidate_set"):
        sm.candidate_sources(res, "RTE", "FULL→LIMITED", "cross")


def test_evaluate_rankers_table_by_hand():
    per = sm.evaluate_rankers(_results_table(), {"fixed": FixedRanker(PRED)}, ks=(1, 3, 5))
    mean_rows = per[per.seed.isna()].set_index(["candidate_set", "target"])
    # all-class, seed-mean truth
    assert mean_rows.loc[("all-class", "RTE"), "rho"] == 1
    assert mean_rows.loc[("all-class", "CoLA"), "rho"] == 1
    assert mean_rows.loc[("all-class", "NER"), "rho"] == 2
    assert mean_rows.loc[("all-class", "NER"), "regret@1"] == pytest.approx(100 * 0.06 / 0.85)
    # RTE all-class: order MNLI, SST-2, POS; relevance MNLI 1, POS 0.2, SST-2 0
    dcg = 1 + 0 / log2(3) + 0.2 / log2(4)
    idcg = 1 + 0.2 / log2(3)
    assert mean_rows.loc[("all-class", "RTE"), "ndcg"] == pytest.approx(dcg / idcg)
    # in-class NER has one candidate
    assert mean_rows.loc[("in-class", "NER"), "n_candidates"] == 1
    assert mean_rows.loc[("in-class", "NER"), "ndcg"] == 1.0
    # per seed: RTE seed 0 truth MNLI .70, POS .66, SST-2 .58 -> best ranked first; seed 1: MNLI .72 first too
    seed_rows = per[per.seed.notna() & (per.candidate_set == "all-class")].set_index(["target", "seed"])
    assert seed_rows.loc[("RTE", 0), "rho"] == 1 and seed_rows.loc[("RTE", 1), "rho"] == 1
    assert seed_rows.loc[("RTE", 0), "spearman"] == pytest.approx(0.5)  # ranks pred (1,2,3) vs true (1,3,2)
    assert set(per.target_class) == {"CR", "SL"}

    summary = sm.summarize_selection(per)
    cell = summary[(summary.candidate_set == "all-class") & (summary.target_class == "all") & (summary.metric == "rho")]
    assert cell.value.item() == pytest.approx((1 + 1 + 2) / 3)
    assert cell.n_targets.item() == 3 and cell.n_seeds.item() == 2
    # seed std of the per-seed target averages of regret@1 (CR targets only)
    cr = summary[(summary.candidate_set == "all-class") & (summary.target_class == "CR") & (summary.metric == "regret@1")]
    s0 = np.mean([0.0, 0.0])  # RTE seed 0: MNLI best; CoLA seed 0: SST-2 .45 best, predicted first
    s1 = np.mean([0.0, 0.0])
    assert cr.value.item() == 0.0 and cr.seed_std.item() == pytest.approx(np.std([s0, s1], ddof=1))
    ner = per[(per.target == "NER") & (per.candidate_set == "all-class") & per.seed.notna()].set_index("seed")
    sl = summary[(summary.candidate_set == "all-class") & (summary.target_class == "SL") & (summary.metric == "regret@1")]
    assert sl.seed_std.item() == pytest.approx(np.std(ner["regret@1"].to_numpy(), ddof=1))
    assert ner.loc[0, "regret@1"] == pytest.approx(100 * 0.06 / 0.84)
    assert ner.loc[1, "regret@1"] == pytest.approx(100 * 0.06 / 0.86)
    wide = sm.selection_table(summary, "rho")
    assert wide.loc["fixed", ("FULL→LIMITED", "all", "all-class")] == pytest.approx(4 / 3)


def test_random_expected_vs_sampled_on_a_table():
    table = _results_table()
    exact = sm.evaluate_rankers(table, {"Random": RandomRanker(expected=True)}, per_seed=False)
    sampled = sm.evaluate_random_sampled(table, n_draws=3000, seed=0)
    merged = exact.merge(sampled, on=["regime", "candidate_set", "target"], suffixes=("", "_sim"))
    assert len(merged) == len(exact) == 6
    for metric in ("rho", "ndcg", "regret@1"):
        diff = (merged[metric] - merged[f"{metric}_sim"]).abs()
        assert (diff <= 4 * merged[f"{metric}_se"] + 1e-12).all(), metric
    rte = exact[(exact.target == "RTE") & (exact.candidate_set == "all-class")].iloc[0]
    assert rte.rho == pytest.approx(2.0)


def test_baseline_rows_serve_both_limited_regimes():
    table = _results_table()
    ll = table[table.source.notna() & (table.source != "")].assign(regime="LIMITED→LIMITED")
    both = pd.concat([table, ll], ignore_index=True)
    gains = sm.transfer_gains(both)
    a = gains[(gains.regime == "LIMITED→LIMITED") & (gains.target == "RTE") & (gains.source == "MNLI") & (gains.seed == 0)]
    assert a.baseline_score.item() == pytest.approx(0.60)


@pytest.mark.parametrize("spelling", ["LIMITED->LIMITED", "limited_to_limited", "Limited -> Limited"])
def test_baseline_rows_serve_every_spelling_of_a_regime(spelling):
    table = _results_table()
    ll = table[table.source.notna() & (table.source != "")].assign(regime=spelling)
    gains = sm.transfer_gains(pd.concat([table, ll], ignore_index=True))
    a = gains[(gains.regime == spelling) & (gains.target == "RTE") & (gains.source == "MNLI") & (gains.seed == 0)]
    assert a.baseline_score.item() == pytest.approx(0.60)
    assert sm.target_regime(spelling) == "LIMITED" and sm.target_regime("full_to_full") == "FULL"
    assert sm.target_regime("mine→L") == "L"   # a label of the table's own keeps its part after the arrow


# ---------------------------------------------------------------- paired comparison over targets


def test_bootstrap_interval_by_hand_and_against_scipy():
    # two values: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    lo, hi = sm.bootstrap_mean_ci([0.0, 1.0], n_boot=20000, level=0.95)
    assert (lo, hi) == (0.0, 1.0)
    lo, hi = sm.bootstrap_mean_ci([0.0, 1.0], n_boot=20000, level=0.40)  # 30th and 70th percentiles
    assert (lo, hi) == (0.5, 0.5)
    assert sm.bootstrap_mean_ci([2.5] * 7) == (2.5, 2.5)
    assert all(np.isnan(sm.bootstrap_mean_ci([])))
    from scipy.stats import bootstrap

    v = np.random.default_rng(3).normal(size=9)
    ours = sm.bootstrap_mean_ci(v, n_boot=40000, seed=1)
    ref = bootstrap((v,), np.mean, n_resamples=40000, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.03)


def _per_target(rows):
    return pd.DataFrame([{"regime": "LIMITED→LIMITED", "candidate_set": "all-class", "seed": np.nan, **r}
                         for r in rows])


def test_paired_comparison_by_hand():
    per = _per_target([
        # method A: rho 1, 2, 3 vs Random 3, 3, 3 -> differences -2, -1, 0 (2 wins, 1 tie)
        {"method": "A", "target": "t1", "target_class": "CR", "rho": 1.0, "ndcg": 0.9},
        {"method": "A", "target": "t2", "target_class": "CR", "rho": 2.0, "ndcg": 0.7},
        {"method": "A", "target": "t3", "target_class": "SL", "rho": 3.0, "ndcg": 0.5},
        {"method": "Random", "target": "t1", "target_class": "CR", "rho": 3.0, "ndcg": 0.8},
        {"method": "Random", "target": "t2", "target_class": "CR", "rho": 3.0, "ndcg": 0.8},
        {"method": "Random", "target": "t3", "target_class": "SL", "rho": 3.0, "ndcg": 0.8},
    ])
    # a per-seed row must not enter the comparison
    per = pd.concat([per, per.assign(seed=0.0, rho=100.0)], ignore_index=True)
    out = sm.paired_comparison(per, baselines=("Random",), metrics=("rho", "ndcg"), n_boot=2000)
    cell = out[(out.target_class == "all") & (out.metric == "rho")].iloc[0]
    assert (cell.method, cell.baseline, cell.n_targets) == ("A", "Random", 3)
    assert cell.mean_diff == pytest.approx(-1.0)
    assert (cell.wins, cell.ties, cell.losses) == (2, 1, 0)
    assert cell.ci_low >= -2.0 and cell.ci_high <= 0.0 and cell.ci_low < cell.mean_diff < cell.ci_high
    from scipy.stats import wilcoxon

    assert cell.p_wilcoxon == pytest.approx(wilcoxon([-2.0, -1.0, 0.0], zero_method="zsplit").pvalue)
    # ndcg: higher is better -> differences .1, -.1, -.3: 1 win, 2 losses
    nd = out[(out.target_class == "all") & (out.metric == "ndcg")].iloc[0]
    assert (nd.wins, nd.ties, nd.losses) == (1, 0, 2) and nd.mean_diff == pytest.approx(-0.1)
    # per class: CR holds t1, t2 only
    cr = out[(out.target_class == "CR") & (out.metric == "rho")].iloc[0]
    assert cr.n_targets == 2 and cr.mean_diff == pytest.approx(-1.5)
    # identical methods: every difference 0, no test
    same = sm.paired_comparison(_per_target([
        {"method": m, "target": "t1", "target_class": "CR", "rho": 2.0, "ndcg": 0.5} for m in ("B", "Random")]),
        baselines=("Random",), metrics=("rho",)).query("target_class == 'all'")
    assert same.ties.item() == 1 and np.isnan(same.p_wilcoxon.item()) and same.mean_diff.item() == 0.0


def test_standard_error_bound_is_the_binomial_se_and_bounds_any_unit_interval_scores():
    rng = np.random.default_rng(0)
    for n, k in ((872, 700), (90, 61), (1, 1)):
        correct = np.r_[np.ones(k), np.zeros(n - k)]  # accuracy-like 0/1 scores: exactly the binomial SE
        assert sm.standard_error_bound(k / n, n) == pytest.approx(correct.std(ddof=0) / np.sqrt(n), rel=1e-12)
    for _ in range(200):  # per-question F1 values anywhere in [0, 1]: their SE never exceeds the bound
        n = int(rng.integers(2, 300))
        values = np.clip(rng.beta(0.3, 0.4, n) + rng.choice([0.0, 1.0], n, p=[0.7, 0.3]), 0, 1)
        assert values.std(ddof=0) / np.sqrt(n) <= sm.standard_error_bound(values.mean(), n) + 1e-12
    np.testing.assert_allclose(sm.standard_error_bound([0.5, 0.9], [100, 400]), [0.05, 0.015])
    with pytest.raises(ValueError, match="outside"):
        sm.standard_error_bound(1.2, 10)
    with pytest.raises(ValueError, match=">= 1"):
        sm.standard_error_bound(0.5, 0)


def test_target_spread_by_hand():
    rows = [  # target A: 2 seeds; B: one seed, no eval size known for one row. Classes: A, B are X; C is Y
        (None, "A", "L", 0, 0.50, 400), (None, "A", "L", 1, 0.54, 400),
        ("B", "A", "L", 0, 0.60, 400), ("B", "A", "L", 1, 0.64, 400),
        ("C", "A", "L", 0, 0.51, 400), ("C", "A", "L", 1, 0.51, 400),
        (None, "B", "L", 0, 0.30, 50), ("A", "B", "L", 0, 0.20, 50), ("C", "B", "L", 0, 0.25, np.nan),
    ]
    res = pd.DataFrame(rows, columns=["source", "target", "regime", "seed", "score", "eval_examples"])
    cls = {"A": "X", "B": "X", "C": "Y"}
    res["source_class"], res["target_class"] = res["source"].map(cls), res["target"].map(cls)
    out = sm.target_spread(res, per_example_targets=["A"]).set_index(["target", "candidate_set"])
    a = out.loc[("A", "all-class")]
    assert (a.n_sources, a.best_source, a.eval_examples) == (2, "B", 400)
    assert a.baseline_score == pytest.approx(0.52) and a.best_score == pytest.approx(0.62)
    assert a.worst_score == pytest.approx(0.51) and a.spread == pytest.approx(0.11)
    assert a.best_gain == pytest.approx(0.10)
    assert a.se_bound == pytest.approx((0.62 * 0.38 / 400) ** 0.5) and a.spread_in_se == pytest.approx(0.11 / a.se_bound)
    b = out.loc[("B", "all-class")]  # not a per-example target: no SE; every source below the baseline
    assert (b.best_source, b.eval_examples) == ("C", 50) and b.best_gain == pytest.approx(-0.05)
    assert np.isnan(b.se_bound) and np.isnan(b.spread_in_se) and b.spread == pytest.approx(0.05)
    # in-class: A chooses only among X sources (B), B only among A — one source each, spread 0
    a_in, b_in = out.loc[("A", "in-class")], out.loc[("B", "in-class")]
    assert (a_in.n_sources, a_in.best_source, a_in.spread, a_in.spread_in_se) == (1, "B", 0.0, 0.0)
    assert a_in.best_score == pytest.approx(0.62) and a_in.se_bound == pytest.approx(a.se_bound)
    assert (b_in.n_sources, b_in.best_source) == (1, "A") and b_in.best_gain == pytest.approx(-0.10)
    assert len(out) == 4
    assert (a.near_best, a_in.near_best) == (0, 0) and np.isnan(b.near_best)  # C is 4.5 SE below; B: no bound
    both = sm.target_spread(res, per_example_targets=["A", "B"]).set_index(["target", "candidate_set"])
    b2 = both.loc[("B", "all-class")]  # best C 0.25 over 50 examples: SE bound 0.0612; A (0.20) is within it
    assert b2.se_bound == pytest.approx((0.25 * 0.75 / 50) ** 0.5) and b2.near_best == 1
    only_all = sm.target_spread(res.drop(columns=["source_class", "target_class"]), candidate_sets=["all-class"])
    assert list(only_all["candidate_set"]) == ["all-class"] * 2
    np.testing.assert_allclose(only_all["spread"], [0.11, 0.05])
    with pytest.raises(ValueError, match="source_class"):
        sm.target_spread(res.drop(columns=["source_class", "target_class"]))
    with pytest.raises(ValueError, match="candidate_set"):
        sm.target_spread(res, candidate_sets=["same-class"])



def test_drop_inseparable_judges_each_candidate_set_apart():
    per_target = pd.DataFrame([(t, c, m) for t in "AB" for c in ("all-class", "in-class") for m in ("TextEmb", "Random")],
                              columns=["target", "candidate_set", "method"]).assign(regime="L")
    spread = pd.DataFrame({"regime": "L", "target": ["A", "A", "B", "B"],
                           "candidate_set": ["all-class", "in-class"] * 2,
                           "spread_in_se": [3.0, 1.0, np.nan, 2.0]})
    kept, noisy = sm.drop_inseparable(per_target, spread, 2.0)
    # A in-class (1 SE) goes; A all-class (3 SE), B (no bound; exactly 2 SE is not below 2) stay
    assert list(noisy["target"] + "/" + noisy["candidate_set"]) == ["A/in-class"]
    assert sorted(set(kept["target"] + "/" + kept["candidate_set"])) == ["A/all-class", "B/all-class", "B/in-class"]
    assert len(kept) == 6
    assert len(sm.drop_inseparable(per_target, spread, 0.0)[0]) == 8


def test_wilcoxon_p_equals_scipy_with_ties_zeros_and_without():
    """The enumerated exact test gives scipy.stats.wilcoxon(zero_method="zsplit")'s p-value: random paired
    differences with ties and zeros (scipy's permutation test), distinct ones (its exact distribution) and
    more than 13 (its normal approximation)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    cases = [np.array([0.0, 0.0, 1.0]), np.array([2.0, -2.0]), np.array([0.5]), np.array([-1.0, -1.0, -1.0]),
             np.array([1 / 3, 2 / 3, -1 / 3, 0.1 + 0.2, -0.3])]  # sums equal only up to rounding
    for _ in range(90):  # scipy's permutation test takes up to ~0.8 s a case
        n = int(rng.integers(1, 17))
        kind = rng.integers(3)
        if kind == 0:  # ranks, rho-like differences: many ties and zeros
            d = rng.integers(-4, 5, n).astype(float) / 2
        elif kind == 1:  # continuous: no ties
            d = rng.normal(size=n)
        else:  # a few repeated magnitudes with random signs
            d = rng.choice([0.0, 0.25, 0.5, 1.0], n) * rng.choice([-1.0, 1.0], n)
        cases.append(d)
    checked = 0
    for d in cases:
        if not np.any(d != 0):
            assert np.isnan(sm.wilcoxon_p(d))
            continue
        expected = stats.wilcoxon(d, zero_method="zsplit").pvalue
        assert sm.wilcoxon_p(d) == pytest.approx(expected, rel=1e-12, abs=1e-15), d
        checked += 1
    assert checked > 70
    assert np.isnan(sm.wilcoxon_p([]))


def test_leave_one_target_out_by_hand():
    """3 targets x 3 components. rho (lower better):   t1 t2 t3     ndcg (higher better): t1  t2  t3
                                                  A    1  5  3                       A    .9  .5  .7
                                                  B    2  2  4                       B    .6  .8  .8
                                                  C    6  1  1                       C    .75 .7  .6
    rho: held-out t1 -> means on t2,t3: A 4, B 3, C 1 -> C, scores 6; t2 -> A 2, B 3, C 3.5 -> A, 5;
    t3 -> A 3, B 2, C 3.5 -> B, 4. Mean 5, where the post-hoc best (B or C, 2.67) looks far better.
    ndcg: t1 -> A .6, B .8, C .65 -> B, .6; t2 -> A .8, B .7, C .675 -> A, .5; t3 -> A .7, B .7, C .725
    -> C, .6. A second candidate set, with one target, has nothing to choose on."""
    rho = {"A": [1, 5, 3], "B": [2, 2, 4], "C": [6, 1, 1]}
    nd = {"A": [.9, .5, .7], "B": [.6, .8, .8], "C": [.75, .7, .6]}
    rows = [{"method": m, "regime": "L→L", "candidate_set": "all-class", "target_class": "CR", "target": t,
             "seed": np.nan, "rho": rho[m][i], "ndcg": nd[m][i], "n_candidates": 7}
            for m in "ABC" for i, t in enumerate(["t1", "t2", "t3"])]
    rows += [{"method": m, "regime": "L→L", "candidate_set": "in-class", "target_class": "CR", "target": "t1",
              "seed": np.nan, "rho": 1, "ndcg": 1.0, "n_candidates": 2} for m in "ABC"]
    per_target = pd.DataFrame(rows)
    loto, choices = sm.leave_one_target_out(per_target, ["A", "B", "C"], method="LOTO")
    assert list(loto.columns) == list(per_target.columns)
    got = loto.set_index("target")
    assert got["rho"].to_dict() == {"t1": 6, "t2": 5, "t3": 4}
    assert got["ndcg"].to_dict() == pytest.approx({"t1": .6, "t2": .5, "t3": .6})
    assert set(loto["method"]) == {"LOTO"} and set(loto["candidate_set"]) == {"all-class"}
    assert (loto["n_candidates"] == 7).all()
    picked = choices.set_index(["metric", "target"])["chosen"].to_dict()
    assert picked == {("rho", "t1"): "C", ("rho", "t2"): "A", ("rho", "t3"): "B",
                      ("ndcg", "t1"): "B", ("ndcg", "t2"): "A", ("ndcg", "t3"): "C"}
    summary = sm.summarize_selection(loto)
    cell = summary[(summary["metric"] == "rho") & (summary["target_class"] == "all")]["value"]
    assert float(cell.iloc[0]) == pytest.approx(5.0)
    # ties go to the earlier method: with B listed first, held-out t3 under ndcg still picks C (.725 > .7)
    # and held-out t1 under rho (A 4, B 3, C 1) still C
    loto2, _ = sm.leave_one_target_out(per_target, ["B", "A", "C"], metrics=["rho"])
    assert loto2.set_index("target")["rho"].to_dict() == {"t1": 6, "t2": 5, "t3": 4}
    tied = per_target.assign(rho=1.0)
    _, ch = sm.leave_one_target_out(tied, ["B", "A", "C"], metrics=["rho"])
    assert set(ch["chosen"]) == {"B"}


# ------------------------------------------------------------------------------ training-noise floor


def test_training_noise_floor_against_statistics_stdev():
    import statistics

    runs = pd.DataFrame({"target": ["A", "A", "A", "B", "B", "C"], "target_class": ["CR"] * 3 + ["SL"] * 2 + ["QA"],
                         "train_seed": [2, 0, 1, 0, 1, 0], "score": [0.70, 0.80, 0.75, 0.5, 0.5, 0.9]})
    floor = sm.training_noise_floor(runs).set_index("target")
    assert floor.loc["A", "sd"] == pytest.approx(statistics.stdev([0.80, 0.75, 0.70]), rel=1e-12)
    assert floor.loc["A", "mean"] == pytest.approx(0.75) and floor.loc["A", "n_runs"] == 3
    assert floor.loc["A", "train_seeds"] == "0;1;2" and floor.loc["A", "scores"] == "0.8;0.75;0.7"  # by seed
    assert floor.loc["B", "sd"] == 0.0 and np.isnan(floor.loc["C", "sd"])  # one run: no sd
    assert floor.loc["B", "target_class"] == "SL"


def test_noise_separation_by_hand():
    # target T: sources a 0.80, b 0.78, c 0.70, d 0.60 (d another class); training sd 0.02 -> diff sd 0.0283;
    # within 2 * 0.0283 = 0.0566 of the best: b (0.02 below) only; spread 0.20 / 0.0283 = 7.07
    rows = [{"source": s, "target": "T", "regime": "LIMITED→LIMITED", "seed": 0, "score": v,
             "source_class": c, "target_class": "CR"}
            for s, v, c in (("a", 0.80, "CR"), ("b", 0.78, "CR"), ("c", 0.70, "CR"), ("d", 0.60, "SL"))]
    rows.append({"source": None, "target": "T", "regime": "LIMITED→LIMITED", "seed": 0, "score": 0.75,
                 "source_class": None, "target_class": "CR"})
    results = pd.DataFrame(rows)
    noise = pd.DataFrame({"target": ["T"], "sd": [0.02]})
    sep = sm.noise_separation(results, noise).set_index("candidate_set")
    diff_sd = 0.02 * np.sqrt(2)
    assert sep.loc["all-class", "diff_sd"] == pytest.approx(diff_sd)
    assert sep.loc["all-class", "spread_in_noise"] == pytest.approx(0.20 / diff_sd)
    assert sep.loc["all-class", "within_noise"] == 1 and sep.loc["all-class", "within_noise_sources"] == "b"
    assert sep.loc["in-class", "spread_in_noise"] == pytest.approx(0.10 / diff_sd)  # a, b, c
    # a wider noise floor puts c within it too (0.10 < 2 * 0.05 * sqrt 2 = 0.141), d not (0.20)
    wide = sm.noise_separation(results, pd.DataFrame({"target": ["T"], "sd": [0.05]}), candidate_sets=["all-class"])
    assert wide.iloc[0]["within_noise_sources"] == "b;c"
    # targets without a measured floor get no row
    assert sm.noise_separation(results, pd.DataFrame({"target": ["T"], "sd": [np.nan]})).empty
    # drop_inseparable by the noise column, sd 0.05: all-class 0.20/0.0707 = 2.83 kept, in-class 1.41 < 2 dropped
    per_target = pd.DataFrame({"regime": ["LIMITED→LIMITED"] * 2, "target": ["T", "T"],
                               "candidate_set": ["all-class", "in-class"], "method": ["X", "X"],
                               "metric": ["rho", "rho"], "value": [1.0, 2.0]})
    both = sm.noise_separation(results, pd.DataFrame({"target": ["T"], "sd": [0.05]}))  # 2.83 all, 1.41 in
    kept, dropped = sm.drop_inseparable(per_target, both, 2.0, column="spread_in_noise")
    assert list(kept["candidate_set"]) == ["all-class"] and list(dropped["candidate_set"]) == ["in-class"]

"""The paper's claims on small hand-made tables: every statistic against a value computed another way
(closed forms, math.comb sums, hand ranks) and every verdict rule on both sides of its threshold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.study import claims as cl

R = "FULL→LIMITED"
CLASSES = {"A1": "CR", "A2": "CR", "A3": "CR", "B1": "QA", "B2": "QA", "B3": "QA"}


def _results(gain_of, base=0.5, n_eval=100, regime=R):
    """Baselines ``base`` for every task; transfer score base + gain_of(source, target)."""
    rows = []
    for t, tc in CLASSES.items():
        rows.append({"source": None, "target": t, "regime": regime, "seed": 0, "score": base, "source_class": None,
                     "target_class": tc, "eval_examples": n_eval})
        for s, sc in CLASSES.items():
            if s != t:
                rows.append({"source": s, "target": t, "regime": regime, "seed": 0, "score": base + gain_of(s, t),
                             "source_class": sc, "target_class": tc, "eval_examples": n_eval})
    return pd.DataFrame(rows)


def test_noise_pass_rate_is_normal_tail_at_threshold_over_sqrt2():
    # 1 − Φ(2/√2) = erfc(1) / 2
    assert cl.noise_pass_rate(2.0) == pytest.approx(0.5 * math.erfc(1.0), abs=1e-12)
    assert cl.noise_pass_rate(0.0) == pytest.approx(0.5)


def test_share_interval_is_clopper_pearson():
    from scipy.stats import beta

    lo, hi = cl.share_interval(7, 20)
    assert lo == pytest.approx(beta.ppf(0.025, 7, 14), abs=1e-9)
    assert hi == pytest.approx(beta.ppf(0.975, 8, 13), abs=1e-9)
    lo, hi = cl.share_interval(0, 10)  # closed form when k = 0: [0, 1 − (α/2)^(1/n)]
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    assert all(math.isnan(v) for v in cl.share_interval(0, 0))


@pytest.mark.parametrize("low,high,verdict", [(0.3, 0.6, "reproduced"), (0.05, 0.2, "not reproduced"),
                                              (0.2, 0.4, "inconclusive")])
def test_interval_verdict_sides_of_the_threshold(low, high, verdict):
    assert cl.interval_verdict(low, high, 0.25, "share").startswith(verdict)


def test_transfer_pairs_noise_bound_and_beyond_noise():
    # baseline 0.5 over 100 examples: se = sqrt(0.25 / 100) = 0.05, threshold 2 se = 0.1
    gains = {("A1", "A2"): 0.12, ("A3", "A2"): 0.09, ("B1", "A2"): -0.05}
    res = _results(lambda s, t: gains.get((s, t), 0.0))
    pairs = cl.transfer_pairs(res, per_example_targets=["A2"], source_sizes={R: {"A1": 800}},
                              source_task_sizes={"A1": 9000})
    a2 = pairs[pairs["target"] == "A2"].set_index("source")
    assert a2["se_bound"].tolist() == pytest.approx([0.05] * 5)
    assert a2.loc["A1", "beyond_noise"] is True or a2.loc["A1", "beyond_noise"] == True  # noqa: E712
    assert not a2.loc["A3", "beyond_noise"] and not a2.loc["B1", "beyond_noise"]
    assert a2.loc["A1", "rel_gain"] == pytest.approx(0.12 / 0.5)
    assert a2.loc["A1", "in_class"] and not a2.loc["B1", "in_class"]
    assert a2.loc["A1", "source_size"] == 800 and math.isnan(a2.loc["A3", "source_size"])
    assert a2.loc["A1", "source_task_size"] == 9000
    other = pairs[pairs["target"] != "A2"]
    assert other["se_bound"].isna().all() and other["beyond_noise"].isna().all()


def test_transfer_summary_counts_by_hand():
    # B targets (per-example): in-class sources +0.2 (beyond noise), out-of-class -0.1; A targets: +0.01 all
    def gain(s, t):
        if t.startswith("B"):
            return 0.2 if s.startswith("B") else -0.1
        return 0.01

    pairs = cl.transfer_pairs(_results(gain), per_example_targets=["B1", "B2", "B3"])
    summ = cl.transfer_summary(pairs).set_index("pairs")
    allp = summ.loc["all"]
    assert allp["n_pairs"] == 30 and allp["n_targets"] == 6
    # positive: A targets 15 pairs (+0.01) + B targets' in-class 6 pairs = 21
    assert allp["n_positive"] == 21 and allp["share_positive"] == pytest.approx(21 / 30)
    assert allp["n_bounded"] == 15 and allp["n_beyond_noise"] == 6
    assert allp["targets_with_gain_beyond_noise"] == 3 and allp["n_bounded_targets"] == 3
    mean = (15 * 0.01 + 6 * 0.2 + 9 * -0.1) / 30 / 0.5
    assert allp["mean_rel_gain"] == pytest.approx(mean)
    assert allp["best_mean_rel_gain"] == pytest.approx((3 * 0.01 + 3 * 0.2) / 6 / 0.5)
    out = summ.loc["out-of-class"]
    assert out["n_pairs"] == 18 and out["n_beyond_noise"] == 0 and out["n_positive"] == 9
    assert (out["share_positive_low"], out["share_positive_high"]) == pytest.approx(cl.share_interval(9, 18))
    in_class_only = cl.transfer_summary(pairs[pairs["in_class"]])
    assert list(in_class_only["pairs"]) == ["all", "in-class"]  # no empty out-of-class row


def test_claims_a_and_c_rules():
    bounded = list(CLASSES)
    # every pair +0.2 (> 2 se = 0.1): 30 of 30 beyond noise -> CP lower bound 0.884 > 0.25
    pairs = cl.transfer_pairs(_results(lambda s, t: 0.2), per_example_targets=bounded)
    row = cl.claim_many_settings(pairs, R)
    assert row["verdict"] == "reproduced" and row["estimate"] == 1.0 and row["n"] == 30
    assert row["ci_low"] == pytest.approx(0.025 ** (1 / 30), abs=1e-9)  # CP lower bound for k = n
    # no pair beyond noise: upper bound 1 − 0.025^(1/30) = 0.116 < 0.25
    pairs = cl.transfer_pairs(_results(lambda s, t: 0.05), per_example_targets=bounded)
    assert cl.claim_many_settings(pairs, R)["verdict"] == "not reproduced"
    # only out-of-class pairs gain: (a) 18 of 30, (c) 18 of 18
    pairs = cl.transfer_pairs(_results(lambda s, t: 0.2 if s[0] != t[0] else 0.0), per_example_targets=bounded)
    c = cl.claim_out_of_class(pairs, R)
    assert c["verdict"] == "reproduced" and c["n"] == 18 and c["estimate"] == 1.0
    # two bounded targets, 2 of 10 pairs beyond noise: CP [0.025, 0.556] straddles 0.25
    pairs = cl.transfer_pairs(_results(lambda s, t: 0.2 if (s, t) in {("A1", "A2"), ("B1", "A2")} else 0.0),
                              per_example_targets=["A2", "B2"])
    a = cl.claim_many_settings(pairs, R)
    assert a["n"] == 10 and a["verdict"].startswith("inconclusive") and "contains 0.25" in a["verdict"]


def _binom_sf(k, n, p):
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_claim_b_binomial_test_by_hand():
    bounded = list(CLASSES)
    sizes = {R: {s: (1000 if s in ("A1", "B1") else 50000) for s in CLASSES}}
    # small sources A1, B1: 10 pairs; 3 of them beyond noise
    wins = {("A1", "A2"), ("A1", "B3"), ("B1", "A3")}
    pairs = cl.transfer_pairs(_results(lambda s, t: 0.2 if (s, t) in wins else 0.0), per_example_targets=bounded,
                              source_sizes=sizes)
    row = cl.claim_small_source(pairs, R)
    p = _binom_sf(3, 10, cl.noise_pass_rate())
    assert row["n"] == 10 and row["estimate"] == pytest.approx(0.3)
    assert f"binomial p = {p:.3g}" in row["evidence"]
    assert row["verdict"] == ("reproduced" if p < 0.05 else "not reproduced") == "reproduced"  # p = 0.036
    one = cl.transfer_pairs(_results(lambda s, t: 0.2 if (s, t) == ("A1", "A2") else 0.0),
                            per_example_targets=bounded, source_sizes=sizes)
    assert _binom_sf(1, 10, cl.noise_pass_rate()) > 0.05
    assert cl.claim_small_source(one, R)["verdict"] == "not reproduced"
    big = cl.transfer_pairs(_results(lambda s, t: 0.2), per_example_targets=bounded,
                            source_sizes={R: {s: 50000 for s in CLASSES}})
    assert cl.claim_small_source(big, R)["verdict"].startswith("inconclusive: no source trained on at most")


def _spearman_by_hand(x, y):
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def test_per_target_spearman_and_claim_d():
    sources = list(CLASSES)
    sim = {s: i / 10 for i, s in enumerate(sources)}
    size = {s: 1000 * (len(sources) - i) for i, s in enumerate(sources)}
    # gain increases with similarity except one swap; size is the reverse order of similarity
    order = {s: i for i, s in enumerate(sources)}

    def gain(s, t):
        return 0.01 * order[s] + (0.025 if (s, t) == ("A1", "B3") else 0.0)

    pairs = cl.transfer_pairs(_results(gain), source_task_sizes=size)
    pairs["similarity"] = [sim[s] for s in pairs["source"]]
    rho = cl.per_target_spearman(pairs, "similarity")
    for t, grp in pairs.groupby("target"):
        assert rho[t] == pytest.approx(_spearman_by_hand(grp["rel_gain"], grp["similarity"]))
    assert rho["A1"] == pytest.approx(1.0) and rho["B3"] < 1.0
    row = cl.claim_similarity_over_size(pairs, R, n_boot=2000)
    d = rho - cl.per_target_spearman(pairs, "source_task_size")
    assert row["estimate"] == pytest.approx(d.mean()) and row["n"] == 6
    assert row["verdict"] == "reproduced" and row["ci_low"] > 0
    # the other way round: size helps, similarity hurts
    pairs["similarity"] = [-sim[s] for s in pairs["source"]]
    pairs["source_task_size"] = [-size[s] for s in pairs["source"]]
    assert cl.claim_similarity_over_size(pairs, R, n_boot=2000)["verdict"] == "not reproduced"
    # constant sizes: nothing to compare
    pairs["source_task_size"] = 1000.0
    row = cl.claim_similarity_over_size(pairs, R, n_boot=200)
    assert row["verdict"] == "inconclusive: source sizes do not vary within any target"


def _per_target(task_rho, base_rho, task_ndcg, base_ndcg, targets=("A1", "A2", "B1", "B2", "B3")):
    rows = []
    for cset in ("all-class", "in-class"):
        for i, t in enumerate(targets):
            for method, rho, ndcg in (("TaskEmb", task_rho, task_ndcg), ("DataSize", base_rho, base_ndcg),
                                      ("CurveGrad", base_rho, base_ndcg)):
                rows.append({"method": method, "regime": R, "candidate_set": cset, "target": t,
                             "target_class": CLASSES[t], "seed": np.nan, "rho": rho + 0.1 * (i % 2),
                             "ndcg": ndcg - 0.01 * (i % 3)})
    return pd.DataFrame(rows)


def test_claim_e_rules():
    good = cl.claim_taskemb_beats_baselines(_per_target(1.0, 3.0, 0.9, 0.7), R, n_boot=500)
    assert good["verdict"] == "reproduced" and good["estimate"] == 1.0 and good["n"] == 5
    assert "8 of 8 intervals exclude 0 in TaskEmb's favour" in good["evidence"]
    bad = cl.claim_taskemb_beats_baselines(_per_target(3.0, 1.0, 0.9, 0.7), R, n_boot=500)
    assert bad["verdict"] == "not reproduced"  # rho intervals favour the baselines
    pt = _per_target(1.0, 1.0, 0.8, 0.8)
    mixed = cl.claim_taskemb_beats_baselines(pt, R, n_boot=500)
    assert mixed["verdict"] == "inconclusive: 8 of 8 intervals contain 0 (5 targets)"
    missing = cl.claim_taskemb_beats_baselines(pt[pt["method"] != "CurveGrad"], R)
    assert missing["verdict"] == "inconclusive: no selection evaluation of CurveGrad in this regime"
    # the DataSize ranker can be another name (LIMITED sources: full-set sizes)
    renamed = pt.replace({"method": {"DataSize": "DataSize (full-set sizes)"}})
    row = cl.claim_taskemb_beats_baselines(renamed, R, baselines={"DataSize": "DataSize (full-set sizes)",
                                                                  "CurveGrad": "CurveGrad"}, n_boot=200)
    assert "vs DataSize (DataSize (full-set sizes))" in row["evidence"]


def test_evaluate_claims_partial_regime_and_markdown():
    res = _results(lambda s, t: 0.2)
    other = "LIMITED→LIMITED"
    base_only = _results(lambda s, t: 0.0, regime=other)
    base_only = base_only[base_only["source"].isna()]  # a regime with baselines, no transfer yet
    claims, summary = cl.evaluate_claims(pd.concat([base_only, res], ignore_index=True),
                                         _per_target(1.0, 3.0, 0.9, 0.7), regimes=[other, R],
                                         per_example_targets=list(CLASSES), targets_expected=6,
                                         source_sizes={R: {s: 1000 for s in CLASSES}}, n_boot=200)
    assert list(claims["claim"]) == ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    assert list(claims["regime"]) == [other, R] * 5
    empty = claims[claims["regime"] == other]
    assert (empty["verdict"] == "inconclusive: no target of this regime has all its candidate sources "
                                "measured yet (0 of 6)").all()
    full = claims[claims["regime"] == R].set_index("claim")
    assert full.loc["a", "verdict"] == "reproduced" and full.loc["e", "verdict"] == "reproduced"
    assert full.loc["d", "verdict"].startswith("inconclusive: no source–target similarity")
    assert (full["targets"] == 6).all() and (full["targets_expected"] == 6).all()
    assert list(summary["regime"]) == [R] * 3
    md = "\n".join(cl.claims_markdown(claims, summary))
    assert "## The paper's claims, tested" in md and "**reproduced**" in md and "0 of 6" in md
    # the same regime with 6 of 12 targets complete: the evidence stays, no claim gets a verdict
    part, _ = cl.evaluate_claims(res, _per_target(1.0, 3.0, 0.9, 0.7), regimes=[R], per_example_targets=list(CLASSES),
                                 targets_expected=12, source_sizes={R: {s: 1000 for s in CLASSES}}, n_boot=200)
    part = part.set_index("claim")
    assert (part["verdict"] == "inconclusive: only 6 of 12 targets of this regime have all their candidate sources "
                               "measured so far").all()
    assert part.loc["a", "evidence"] == full.loc["a", "evidence"] and part.loc["a", "estimate"] == full.loc["a", "estimate"]
    # no transfer anywhere: every row inconclusive, empty summary
    claims, summary = cl.evaluate_claims(base_only, None, regimes=[other])
    assert len(claims) == 5 and claims["verdict"].str.startswith("inconclusive").all() and summary.empty


def _findings_frames():
    ts = pd.DataFrame([
        {"regime": "R1", "pairs": "all", "n_pairs": 4, "n_targets": 2, "mean_rel_gain": 0.125, "n_positive": 3,
         "share_positive": 0.75, "n_bounded": 2, "n_beyond_noise": 1},
        {"regime": "R1", "pairs": "out-of-class", "n_pairs": 2, "n_targets": 2, "mean_rel_gain": -0.05,
         "n_positive": 1, "share_positive": 0.5, "n_bounded": 1, "n_beyond_noise": 0},
        {"regime": "R2", "pairs": "all", "n_pairs": 1, "n_targets": 1, "mean_rel_gain": 0.0, "n_positive": 0,
         "share_positive": 0.0, "n_bounded": 0, "n_beyond_noise": 0},
    ])
    cell = lambda regime, method, metric, value, tclass="all", cset="all-class": {
        "regime": regime, "method": method, "metric": metric, "value": value, "target_class": tclass,
        "candidate_set": cset}
    summary = pd.DataFrame([cell("R1", "TextEmb", "rho", 1.5), cell("R1", "Random", "rho", 2.0),
                            cell("R1", "DataSize", "rho", 1.0), cell("R1", "LogME", "ndcg", 0.9),
                            cell("R1", "Random", "ndcg", 0.8), cell("R1", "TextEmb", "rho", 9.0, tclass="CR"),
                            cell("R1", "TextEmb", "rho", 7.0, cset="in-class"),
                            cell("R2", "TextEmb", "rho", 1.0), cell("R2", "Random", "rho", 3.0)])
    comp = lambda regime, method, base, metric, d, lo, hi, n=2: {
        "regime": regime, "method": method, "baseline": base, "metric": metric, "mean_diff": d, "ci_low": lo,
        "ci_high": hi, "n_targets": n, "target_class": "all", "candidate_set": "all-class"}
    paired = pd.DataFrame([comp("R1", "TextEmb", "Random", "rho", -0.5, -0.75, -0.25),
                           comp("R1", "TextEmb", "DataSize", "rho", 0.5, -0.5, 1.5),
                           comp("R1", "LogME", "Random", "ndcg", 0.1, 0.05, 0.15),
                           comp("R2", "TextEmb", "Random", "rho", -2.0, -2.0, -2.0, n=1)])
    return ts, summary, paired


def test_regime_findings_states_each_number_and_verdict():
    got = cl.regime_findings(*_findings_frames(), targets_expected=2)
    assert list(got) == ["R1", "R2"]
    r1 = got["R1"]
    assert r1.startswith("R1: 2 targets: mean relative gain +12.5% over 4 pairs, 3 of them positive (75%), "
                         "1 of the 2 with a noise bound beyond it; out-of-class: mean relative gain -5.0% over 2 pairs")
    # rho: lower is better, so an interval below 0 is "better"; one that contains 0 is "not separated"
    assert ("TextEmb rho 1.50 against DataSize 1.00 (difference +0.50, 95% [-0.50, +1.50], not separated) and "
            "Random 2.00 (difference -0.50, 95% [-0.75, -0.25], better)") in r1
    assert "LogME ndcg 0.900 against Random 0.800 (difference +0.100, 95% [+0.050, +0.150], better)" in r1
    assert "9.00" not in r1 and "7.00" not in r1  # another target class, another candidate set
    assert "TaskEmb" not in r1 and "partial view" not in r1
    r2 = got["R2"]
    assert "TextEmb rho 1.00 against Random 3.00 (difference -2.00, one target)" in r2
    assert "out-of-class" not in r2
    assert r2.endswith("Only 1 of 2 targets have all their candidate sources so far: a partial view, not the "
                       "regime's result.")


def test_regime_findings_worse_and_nothing_compared():
    ts, summary, paired = _findings_frames()
    paired.loc[paired["method"] == "LogME", ["mean_diff", "ci_low", "ci_high"]] = [-0.1, -0.15, -0.05]
    got = cl.regime_findings(ts, summary, paired)
    assert "difference -0.100, 95% [-0.150, -0.050], worse" in got["R1"]
    empty = cl.regime_findings(ts, summary.iloc[0:0], paired)
    assert "no target has all its candidate sources yet" in empty["R1"] and "TextEmb" not in empty["R1"]


def test_regime_findings_on_the_committed_study_matches_its_tables():
    from tasktransfer_utils.paths import RESULTS_DIR

    evaluation = RESULTS_DIR / "offline_study" / "evaluation"
    summary = pd.read_csv(evaluation / "summary.csv")
    ts = pd.read_csv(evaluation / "transfer_summary.csv")
    paired = pd.read_csv(evaluation / "paired_comparison.csv")
    got = cl.regime_findings(ts, summary, paired)
    row = ts[(ts["regime"] == "LIMITED→LIMITED") & (ts["pairs"] == "all")].iloc[0]
    text = got["LIMITED→LIMITED"]
    assert f"mean relative gain {row['mean_rel_gain']:+.1%} over {row['n_pairs']} pairs" in text
    value = summary[(summary["regime"] == "LIMITED→LIMITED") & (summary["method"] == "TaskEmb")
                    & (summary["candidate_set"] == "all-class") & (summary["target_class"] == "all")
                    & (summary["metric"] == "ndcg")]["value"].item()
    assert f"TaskEmb ndcg {value:.3f} against" in text


def test_readme_claims_table_carries_the_committed_verdicts():
    """The README's table of the paper's claims (one row per claim, one column per regime) says what the
    committed ``claims.csv`` says: each cell ends with that claim's verdict in that regime."""
    from tasktransfer_utils.paths import REPO_ROOT, RESULTS_DIR

    claims = pd.read_csv(RESULTS_DIR / "offline_study" / "evaluation" / "claims.csv")
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| claim of the paper |"))
    regimes = [cell.strip() for cell in lines[header].strip("|").split("|")][1:]
    rows = [line for line in lines[header + 2:header + 2 + len(cl.CLAIMS)]]
    assert sorted(regimes) == sorted(claims["regime"].unique()) and len(rows) == len(cl.CLAIMS)
    for claim, row in zip(cl.CLAIMS, rows):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[0] == f"({claim}) {cl.CLAIMS[claim]}"
        for regime, cell in zip(regimes, cells[1:]):
            verdict = claims[(claims["claim"] == claim) & (claims["regime"] == regime)]["verdict"].item()
            assert cell.endswith(f"**{verdict}**"), (claim, regime)

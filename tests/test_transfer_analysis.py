"""transfer_analysis: the summaries of notebook 3 on a hand-made gains table and on the committed offline
study's results, each checked against a naive loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.study import transfer_analysis as ta
from tasktransfer_utils.paths import RESULTS_DIR
from tasktransfer_utils.selection.rankers import CosineRanker
from tasktransfer_utils.selection.evaluation import mean_transfer

LL, FL = "LIMITED→LIMITED", "FULL→LIMITED"


@pytest.fixture
def gains():
    rows = [(LL, "RTE", "MRPC", "CR", "CR", 0.10), (LL, "RTE", "POS-PTB", "SL", "CR", -0.05),
            (LL, "RTE", "SQuAD-1", "QA", "CR", 0.20), (LL, "NER", "POS-PTB", "SL", "SL", -0.01),
            (LL, "NER", "RTE", "CR", "SL", -0.02), (FL, "RTE", "MRPC", "CR", "CR", 0.15),
            (FL, "RTE", "SQuAD-1", "QA", "CR", -0.10)]
    return pd.DataFrame(rows, columns=["regime", "target", "source", "source_class", "target_class", "rel_gain"])


def test_best_sources(gains):
    best = ta.best_sources(gains).set_index(["regime", "target"])
    assert best.loc[(LL, "RTE"), "source"] == "SQuAD-1" and not best.loc[(LL, "RTE"), "in_class"]
    assert best.loc[(LL, "NER"), "source"] == "POS-PTB" and best.loc[(LL, "NER"), "in_class"]
    assert best.loc[(FL, "RTE"), "source"] == "MRPC" and best.loc[(FL, "RTE"), "in_class"]
    assert len(best) == 3


def test_best_sources_ties_go_to_the_first_name_whatever_the_row_order(gains):
    tie = pd.DataFrame([(LL, "NER", "Chunk", "SL", "SL", -0.01)], columns=gains.columns)  # ties POS-PTB's -0.01
    for table in (pd.concat([gains, tie]), pd.concat([tie, gains]), pd.concat([gains, tie])[::-1]):
        best = ta.best_sources(table.reset_index(drop=True)).set_index(["regime", "target"])
        assert best.loc[(LL, "NER"), "source"] == "Chunk" and best.loc[(LL, "RTE"), "source"] == "SQuAD-1"
        assert len(best) == 3


def test_helpful_share_against_a_loop(gains):
    share = ta.helpful_share(gains)
    for (regime, tclass, in_class), value in share.items():
        rows = [r for r in gains.itertuples() if r.regime == regime and r.target_class == tclass
                and (r.source_class == r.target_class) == in_class]
        assert value == pytest.approx(sum(r.rel_gain > 0 for r in rows) / len(rows))
    assert share[(LL, "CR", False)] == pytest.approx(0.5) and share[(LL, "SL", True)] == 0.0


def test_paired_regime_gains(gains):
    wide = ta.paired_regime_gains(gains)
    assert list(wide.index) == [("MRPC", "RTE"), ("SQuAD-1", "RTE")]  # the pairs measured in both regimes
    assert wide.loc[("MRPC", "RTE"), FL] - wide.loc[("MRPC", "RTE"), LL] == pytest.approx(0.05)


def test_taskemb_choices(gains):
    vec = {"RTE": np.array([1.0, 0.0, 0.0]), "MRPC": np.array([0.9, 0.1, 0.0]), "POS-PTB": np.array([0.0, 1.0, 0.0]),
           "SQuAD-1": np.array([0.5, 0.5, 0.0]), "NER": np.array([0.0, 1.0, 0.1])}
    rankers = {LL: {"TaskEmb": CosineRanker(vec, method="TaskEmb")}}
    choices, without = ta.taskemb_choices(gains, rankers, [LL, FL])
    assert without == [FL]
    assert choices == {(LL, "RTE"): "MRPC", (LL, "NER"): "POS-PTB"}  # the most similar measured source


def test_on_the_committed_study():
    gains = mean_transfer(pd.read_csv(RESULTS_DIR / "offline_study" / "transfer_results.csv"))
    best = ta.best_sources(gains)
    for (regime, target), grp in gains.groupby(["regime", "target"]):
        row = best[(best["regime"] == regime) & (best["target"] == target)].iloc[0]
        assert row["rel_gain"] == grp["rel_gain"].max()
    share = ta.helpful_share(gains)
    total = sum(share[k] * len(g) for k, g in gains.assign(
        in_class=gains["source_class"] == gains["target_class"]).groupby(["regime", "target_class", "in_class"]))
    assert total == pytest.approx((gains["rel_gain"] > 0).sum())

"""Task metrics against hand-computed values and naive float64 re-computations."""

import math

import numpy as np
import pytest

from tasktransfer_utils.training.metrics import (classification_metrics, exact_score, f1_score_tokens,
                                                 normalize_answer, qa_metrics, sequence_labeling_metrics,
                                                 squad_v1_scores, squad_v2_scores, task_score)


def test_classification_metrics_match_naive_formulas():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    m = classification_metrics(("accuracy", "f1", "matthews_corrcoef"), p, y)
    tp = float(np.sum((p == 1) & (y == 1)))
    tn = float(np.sum((p == 0) & (y == 0)))
    fp = float(np.sum((p == 1) & (y == 0)))
    fn = float(np.sum((p == 0) & (y == 1)))
    assert m["accuracy"] == pytest.approx((tp + tn) / 200)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["matthews_corrcoef"] == pytest.approx(mcc)


def test_hand_made_classification_case():
    # gold 1 1 0 0, pred 1 0 0 0: acc 3/4, precision 1, recall 1/2 -> F1 2/3
    m = classification_metrics(("accuracy", "f1"), [1, 0, 0, 0], [1, 1, 0, 0])
    assert m == pytest.approx({"accuracy": 0.75, "f1": 2 / 3})


def test_correlations_match_numpy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.5, size=50)
    m = classification_metrics(("pearson", "spearman"), p, y)
    assert m["pearson"] == pytest.approx(np.corrcoef(p, y)[0, 1])
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # no ties in continuous draws
    assert m["spearman"] == pytest.approx(np.corrcoef(rank(p), rank(y))[0, 1])
    assert classification_metrics(("pearson",), np.ones(5), y[:5])["pearson"] == 0.0


def test_classification_input_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        classification_metrics(("exact_match",), [1], [1])
    with pytest.raises(ValueError, match="equal 1-D"):
        classification_metrics(("accuracy",), [1, 0], [1])


def test_squad_normalisation_follows_the_official_script():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert exact_score("the Eiffel Tower.", "eiffel tower") == 1
    # gold [big, red, dog], pred [red, dog, barked]: 2 common -> P = R = 2/3 -> F1 = 2/3
    assert f1_score_tokens("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert f1_score_tokens("", "") == 1.0
    assert f1_score_tokens("", "something") == 0.0
    assert f1_score_tokens("something", "") == 0.0


def test_squad_v2_scores_hand_made():
    refs = {
        "a": ["Denver Broncos", "the Denver Broncos"],  # answerable, several golds
        "b": [],  # unanswerable
        "c": [],  # unanswerable, model answers anyway
        "d": ["in 1990"],  # partial overlap
        "e": ["the"],  # gold normalises to "": treated as unanswerable, as the official script does
    }
    preds = {"a": "Broncos", "b": "", "c": "Paris", "d": "1990", "e": ""}
    s = squad_v2_scores(preds, refs)
    # EM: a 0, b 1, c 0, d 0, e 1 -> 2/5 ; F1: a 2/3 (P 1, R 1/2), b 1, c 0, d 2/3, e 1 -> (10/3)/5
    assert s["exact_match"] == pytest.approx(2 / 5)
    assert s["f1"] == pytest.approx((2 / 3 + 1 + 0 + 2 / 3 + 1) / 5)
    got = qa_metrics(("exact_match",), preds, refs, version_2_with_negative=True)
    assert got == {"exact_match": pytest.approx(0.4)}
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2_scores({"a": "x"}, refs)


def test_squad_v1_scores_hand_made():
    # the v1.1 script keeps every gold answer, even one that normalises to "", and scores an empty
    # prediction 0 F1 against any gold
    refs = {"a": ["Denver Broncos", "the Denver Broncos"], "d": ["in 1990"], "e": ["the", "1990"], "f": ["Paris"]}
    preds = {"a": "Broncos", "d": "1990", "e": "", "f": ""}
    # EM: a 0, d 0, e 1 ("" == normalised "the"), f 0 -> 1/4; F1: a 2/3, d 2/3, e 0, f 0 -> (4/3)/4
    s = squad_v1_scores(preds, refs)
    assert s["exact_match"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx((2 / 3 + 2 / 3) / 4)
    # v2 rules on the same answers: e's gold "the" is dropped, "1990" stays -> EM 0 F1 0; f scores 0
    assert squad_v2_scores(preds, refs) == {"exact_match": 0.0, "f1": pytest.approx((2 / 3 + 2 / 3) / 4)}
    assert qa_metrics(("f1",), preds, refs, version_2_with_negative=False) == {"f1": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="question 'b' has no gold answer; SQuAD v1.1 rules"):
        squad_v1_scores({**preds, "b": ""}, {**refs, "b": []})
    with pytest.raises(ValueError, match="no prediction"):
        squad_v1_scores({"a": "x"}, refs)


def test_v1_and_v2_rules_agree_on_answerable_questions_with_real_golds(data_dir):
    # SQuAD-1, BoolQ and FAQ-TR dev golds never normalise to "": there the two scripts give the same numbers
    from tasktransfer_utils.data.loaders import load_task

    for task in ("SQuAD-1", "BoolQ", "FAQ-TR"):
        dev = load_task(task, data_dir=data_dir).splits["validation"]
        refs = {q: list(a["text"]) for q, a in zip(dev["id"], dev["answers"])}
        for preds in ({q: g[0] for q, g in refs.items()}, {q: "" for q in refs},
                      {q: g[0].split()[0] + " x" for q, g in refs.items()}):
            assert squad_v1_scores(preds, refs) == squad_v2_scores(preds, refs)


def test_sequence_labeling_metrics_hand_made():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    y_pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG"]]
    # spans: gold PER, LOC, ORG; predicted PER, ORG both right -> P 1, R 2/3 -> F1 0.8; words 5/6 right
    m = sequence_labeling_metrics(("seqeval_f1", "token_accuracy"), y_true, y_pred)
    assert m["seqeval_f1"] == pytest.approx(0.8)
    assert m["token_accuracy"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="same sentences"):
        sequence_labeling_metrics(("token_accuracy",), y_true, [["O"], ["O"]])


def test_task_score_is_the_mean_of_the_task_metrics():
    assert task_score({"accuracy": 0.8, "f1": 0.6, "other": 0.0}, ("accuracy", "f1")) == pytest.approx(0.7)
    with pytest.raises(KeyError, match="absent"):
        task_score({"accuracy": 0.8}, ("accuracy", "f1"))


def test_which_task_scores_are_per_example_means():
    from tasktransfer_utils.training.metrics import score_is_per_example_mean
    from tasktransfer_utils.data.tasks import get_task

    got = {t: score_is_per_example_mean(get_task(t).metrics, get_task(t).task_class)
           for t in ("SST-2", "RTE", "MRPC", "STS-B", "SQuAD-1", "SQuAD-2", "POS-PTB", "NER")}
    # accuracy and SQuAD EM/F1 average a [0, 1] value per example; MRPC's binary F1, STS-B's correlations,
    # seqeval's F1 and per-word accuracy do not
    assert got == {"SST-2": True, "RTE": True, "MRPC": False, "STS-B": False, "SQuAD-1": True, "SQuAD-2": True,
                   "POS-PTB": False, "NER": False}
    assert score_is_per_example_mean(("f1",), "CR") is False and score_is_per_example_mean((), "QA") is False

"""Offsets-based answer extraction on hand-made windows whose answers are known."""

import numpy as np
import pytest

from tasktransfer_utils.training.metrics import squad_v2_scores
from tasktransfer_utils.training.qa_postprocess import postprocess_qa_predictions

CONTEXT = "Normans came from Normandy in northern France in the tenth century"
WORDS = CONTEXT.split()


def word_offsets():
    out, pos = [], 0
    for w in WORDS:
        start = CONTEXT.index(w, pos)
        out.append([start, start + len(w)])
        pos = start + len(w)
    return out


def window(example_id, first_word, last_word, n_question=2):
    """A window: [CLS] + question tokens (offset None) + words first..last (one token per word) + [SEP].
    Returns the feature and a function mapping a word index to its token position in the window."""
    offs = word_offsets()
    mapping = [None] * (1 + n_question + 1) + offs[first_word : last_word + 1] + [None]
    pos = lambda w: 1 + n_question + 1 + (w - first_word)  # noqa: E731
    return {"example_id": example_id, "offset_mapping": mapping}, pos


def logits_for(feature, peaks, base=-5.0):
    """Start/end logits with given (position, value) peaks; CLS gets `null` when listed as position 0."""
    n = len(feature["offset_mapping"])
    s, e = np.full(n, base), np.full(n, base)
    for kind, p, v in peaks:
        (s if kind == "s" else e)[p] = v
    return s, e


def run(examples, feats, logits, **kw):
    return postprocess_qa_predictions(examples, feats, [s for s, _ in logits], [e for _, e in logits], **kw)


def test_single_window_span_uses_character_offsets():
    f, pos = window("q", 0, len(WORDS) - 1)
    lg = logits_for(f, [("s", pos(3), 5.0), ("e", pos(5), 5.0)])
    assert run([{"id": "q", "context": CONTEXT}], [f], [lg]) == {"q": "Normandy in northern"}


def test_answer_across_a_window_boundary_comes_from_the_window_that_holds_it_whole():
    # window 1 holds words 0..5, window 2 words 4..10; the answer "northern France" = words 5..6
    f1, p1 = window("q", 0, 5)
    f2, p2 = window("q", 4, 10)
    # window 1 believes strongly in start at word 5 but its end (word 6) is outside: only weak pairs remain
    lg1 = logits_for(f1, [("s", p1(5), 9.0), ("e", 0, 9.0)])
    lg2 = logits_for(f2, [("s", p2(5), 4.0), ("e", p2(6), 4.0)])
    pred = run([{"id": "q", "context": CONTEXT}], [f1, f2], [lg1, lg2])
    assert pred == {"q": "northern France"}
    # the best pair inside window 1 alone would be start word 5, end word 5 ("northern", score 9 - 5 = 4 < 8)
    assert run([{"id": "q", "context": CONTEXT}], [f1], [lg1]) == {"q": "northern"}


def test_unanswerable_question_null_score_vs_best_span():
    f, pos = window("q", 0, len(WORDS) - 1)
    ex = [{"id": "q", "context": CONTEXT}]
    null_wins = logits_for(f, [("s", 0, 6.0), ("e", 0, 6.0), ("s", pos(0), 5.0), ("e", pos(0), 5.0)])
    assert run(ex, [f], [null_wins], version_2_with_negative=True) == {"q": ""}
    # SQuAD-1 style (no unanswerable questions): the best span is always given
    assert run(ex, [f], [null_wins], version_2_with_negative=False) == {"q": "Normans"}
    # a threshold shifts the decision: null 12 > span 10 but not > 10 + 3
    assert run(ex, [f], [null_wins], version_2_with_negative=True, null_score_diff_threshold=3.0) == {"q": "Normans"}


def test_several_windows_use_the_minimum_null_score_and_the_best_span_overall():
    fa, pa = window("q", 0, 6)
    fb, pb = window("q", 4, 10)
    ex = [{"id": "q", "context": CONTEXT}]
    # window a: null 14, best span 6 ; window b: null 8, best span "tenth century" 9 -> min null 8 < 9 -> answer
    la = logits_for(fa, [("s", 0, 7.0), ("e", 0, 7.0), ("s", pa(0), 3.0), ("e", pa(0), 3.0)])
    lb = logits_for(fb, [("s", 0, 4.0), ("e", 0, 4.0), ("s", pb(9), 4.5), ("e", pb(10), 4.5)])
    pred = run(ex, [fa, fb], [la, lb], version_2_with_negative=True)
    assert pred == {"q": "tenth century"}
    # if window b's null rises above the span score the question is unanswerable
    lb2 = logits_for(fb, [("s", 0, 5.0), ("e", 0, 5.0), ("s", pb(9), 4.5), ("e", pb(10), 4.5)])
    assert run(ex, [fa, fb], [la, lb2], version_2_with_negative=True) == {"q": ""}


def test_span_length_limit_and_order():
    f, pos = window("q", 0, len(WORDS) - 1)
    ex = [{"id": "q", "context": CONTEXT}]
    # best pair spans words 0..10 (11 tokens, score 12); with max_answer_length 5 the best allowed pair is
    # start word 0 (6) + end word 2 (3) = 9, ahead of words 1..2 (3 + 3 = 6)
    lg = logits_for(f, [("s", pos(0), 6.0), ("e", pos(10), 6.0), ("s", pos(1), 3.0), ("e", pos(2), 3.0)])
    assert run(ex, [f], [lg], max_answer_length=30) == {"q": CONTEXT}
    assert run(ex, [f], [lg], max_answer_length=5) == {"q": "Normans came from"}
    # end before start is never paired
    lg = logits_for(f, [("s", pos(5), 6.0), ("e", pos(2), 6.0), ("e", pos(6), 1.0)])
    assert run(ex, [f], [lg]) == {"q": "northern France"}


def test_end_to_end_scores_of_hand_made_predictions():
    fa, pa = window("a", 0, len(WORDS) - 1)
    fb, _ = window("b", 0, len(WORDS) - 1)
    ex = [{"id": "a", "context": CONTEXT}, {"id": "b", "context": CONTEXT}]
    la = logits_for(fa, [("s", pa(3), 5.0), ("e", pa(3), 5.0)])
    lb = logits_for(fb, [("s", 0, 9.0), ("e", 0, 9.0)])
    pred = run(ex, [fa, fb], [la, lb], version_2_with_negative=True)
    s = squad_v2_scores(pred, {"a": ["Normandy"], "b": []})
    assert s == {"exact_match": 1.0, "f1": 1.0}


def test_mismatched_inputs_are_errors():
    f, _ = window("q", 0, 3)
    with pytest.raises(ValueError, match="features but"):
        postprocess_qa_predictions([{"id": "q", "context": CONTEXT}], [f], [], [])
    with pytest.raises(ValueError, match="unknown example ids"):
        postprocess_qa_predictions([{"id": "x", "context": CONTEXT}], [f], [np.zeros(8)], [np.zeros(8)])


# ---------------------------------------------------------------- the SQuAD version is the task's


def _scripted_logits(plan):
    """A stand-in for ``fine_tuning.predict_logits``: per window, CLS (the null answer) gets start = end =
    ``null``; the window that holds the first gold answer whole gets start = end = ``span`` on its first and
    last tokens; every other position -5. ``plan``: question id -> (null, span)."""
    def predict(model, features, collator, batch_size, device, mixed_precision):
        out = []
        for f in features:
            null, span = plan[f["example_id"]]
            offs = f["offset_mapping"]
            s, e = np.full(len(offs), -5.0), np.full(len(offs), -5.0)
            s[0] = e[0] = null
            gold = predict.answers[f["example_id"]]
            if gold is not None:
                a, b = gold
                first = [i for i, o in enumerate(offs) if o is not None and o[0] == a]
                last = [i for i, o in enumerate(offs) if o is not None and o[1] == b]
                if first and last:
                    s[first[0]], e[last[0]] = span, span
            out.append((s, e))
        return out
    return predict


def _evaluate(task, rows, plan, tokenizer, monkeypatch, data_dir):
    import dataclasses

    from datasets import DatasetDict

    from tasktransfer_utils.training import fine_tuning
    from tasktransfer_utils.data.loaders import load_task

    td = load_task(task, data_dir=data_dir)
    dev = td.splits["validation"].select(rows)
    td = dataclasses.replace(td, splits=DatasetDict(train=td.splits["train"], validation=dev))
    predict = _scripted_logits(plan)
    predict.answers = {r["id"]: (r["answers"]["answer_start"][0], r["answers"]["answer_start"][0]
                                 + len(r["answers"]["text"][0])) if r["answers"]["text"] else None for r in dev}
    monkeypatch.setattr(fine_tuning, "predict_logits", predict)
    return fine_tuning.evaluate_model(None, tokenizer, td, dev, fine_tuning.preset("QA", max_seq_length=384),
                                   device="cpu")


def _word_aligned(dev_rows, tokenizer, answerable, k):
    """The first ``k`` rows (answerable or not) whose first gold answer starts and ends on token boundaries."""
    out = []
    for i, r in enumerate(dev_rows):
        if bool(r["answers"]["text"]) != answerable:
            continue
        if answerable:
            a = r["answers"]["answer_start"][0]
            b = a + len(r["answers"]["text"][0])
            offs = tokenizer(r["context"], return_offsets_mapping=True)["offset_mapping"]
            if not (any(o[0] == a for o in offs) and any(o[1] == b for o in offs)):
                continue
        out.append(i)
        if len(out) == k:
            return out
    raise AssertionError("not enough rows")


def test_an_all_answerable_squad2_sample_is_scored_with_v2_rules(tiny_encoder_dir, data_dir, monkeypatch):
    from transformers import AutoTokenizer

    from tasktransfer_utils.data.loaders import load_task

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    dev = load_task("SQuAD-2", data_dir=data_dir).splits["validation"]
    rows = _word_aligned(dev.select(range(60)), tok, True, 3)
    ids = dev.select(rows)["id"]
    # q0: null 2 x 5 = 10 beats its gold span 2 x 4 = 8; q1, q2: gold span 12 beats null 10. SQuAD v2 rules
    # (the task's): q0 answers "" and scores 0, q1 and q2 score 1 -> EM = F1 = 2/3. The sample has no
    # unanswerable question; inferring the version from it (v1: never abstain) gave q0 its span: 3/3.
    plan = {ids[0]: (5.0, 4.0), ids[1]: (5.0, 6.0), ids[2]: (5.0, 6.0)}
    got = _evaluate("SQuAD-2", rows, plan, tok, monkeypatch, data_dir)
    assert got == {"exact_match": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3)}
    # a model that always abstains gets credit only on unanswerable questions: 2 of 4 in a mixed sample
    mixed = rows[:2] + _word_aligned(dev, tok, False, 2)
    always_null = {i: (5.0, 4.0) for i in dev.select(mixed)["id"]}
    got = _evaluate("SQuAD-2", mixed, always_null, tok, monkeypatch, data_dir)
    assert got == {"exact_match": pytest.approx(0.5), "f1": pytest.approx(0.5)}
    # and none on the all-answerable sample
    got = _evaluate("SQuAD-2", rows, {i: (5.0, 4.0) for i in ids}, tok, monkeypatch, data_dir)
    assert got == {"exact_match": 0.0, "f1": 0.0}


def test_a_v1_task_never_abstains(tiny_encoder_dir, data_dir, monkeypatch):
    from transformers import AutoTokenizer

    from tasktransfer_utils.data.loaders import load_task

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    dev = load_task("SQuAD-1", data_dir=data_dir).splits["validation"]
    rows = _word_aligned(dev.select(range(60)), tok, True, 2)
    # null (10) beats the gold span (8) everywhere, but SQuAD v1.1 rules take the best span: both right
    plan = {i: (5.0, 4.0) for i in dev.select(rows)["id"]}
    assert _evaluate("SQuAD-1", rows, plan, tok, monkeypatch, data_dir) == {"exact_match": 1.0, "f1": 1.0}


def test_the_squad_version_is_a_property_of_the_task():
    from tasktransfer_utils.data.tasks import list_tasks

    v2 = [t.name for t in list_tasks("QA") if t.version_2_with_negative]
    assert v2 == ["SQuAD-2", "DuoRC-p", "DuoRC-s"]
    assert not any(t.version_2_with_negative for t in list_tasks() if t.task_class.value != "QA")

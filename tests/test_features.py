"""Tokenisation per class on real examples: CR pairs, QA doc-stride windows, SL first word piece."""

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from tasktransfer_utils.training.features import IGNORE_INDEX, collator_for_class, model_inputs, tokenize_for_class
from tasktransfer_utils.data.loaders import load_task
from tasktransfer_utils.training.metrics import normalize_answer
from tasktransfer_utils.training.settings import preset


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def few(task, n=24, split="train", data_dir=None):
    td = load_task(task, data_dir)
    return td, td.splits[split].select(range(n))


def test_cr_pair_and_single_sentence(tok, data_dir):
    td, ds = few("RTE", data_dir=data_dir)
    f = tokenize_for_class(td, ds, tok, preset("CR", max_seq_length=64), for_training=True)
    assert set(f.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert f["labels"] == ds["label"]
    for ids, tt in zip(f["input_ids"], f["token_type_ids"]):
        assert len(ids) <= 64 and ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
        assert 0 < sum(tt) < len(tt)  # second sentence marked with segment 1
    td, ds = few("SST-2", data_dir=data_dir)
    f = tokenize_for_class(td, ds, tok, preset("CR"), for_training=True)
    assert all(sum(tt) == 0 for tt in f["token_type_ids"])
    assert tok.decode(f["input_ids"][0], skip_special_tokens=True) == tok.decode(
        tok(ds["text_a"][0])["input_ids"], skip_special_tokens=True)


def test_cr_regression_labels_are_floats(tok, data_dir):
    td, ds = few("STS-B", data_dir=data_dir)
    f = tokenize_for_class(td, ds, tok, preset("CR"), for_training=True)
    assert np.allclose(f["labels"], ds["label"]) and isinstance(f["labels"][0], float)


def test_cr_missing_or_bad_labels_are_errors(tok, data_dir):
    td, ds = few("RTE", data_dir=data_dir)
    unlabelled = ds.remove_columns("label")
    with pytest.raises(ValueError, match="target labels missing"):
        tokenize_for_class(td, unlabelled, tok, preset("CR"), for_training=True)
    f = tokenize_for_class(td, unlabelled, tok, preset("CR"), for_training=False)  # embeddings need no labels
    assert "labels" not in f.column_names and len(f) == len(ds)
    bad = ds.map(lambda r, i: {"label": 5 if i == 3 else r["label"]}, with_indices=True)
    with pytest.raises(ValueError, match="row 3 is not a class index"):
        tokenize_for_class(td, bad, tok, preset("CR"), for_training=True)
    with pytest.raises(ValueError, match="label_names is None"):
        tokenize_for_class(td.spec, ds, tok, preset("CR"), label_names=None, for_training=True)


def _full_context_token_starts(tok, context):
    enc = tok(context, add_special_tokens=False, return_offsets_mapping=True)
    return {o[0]: i for i, o in enumerate(enc["offset_mapping"])}


def test_qa_windows_stride_and_answer_positions(tok, data_dir):
    td, ds = few("SQuAD-1", n=12, data_dir=data_dir)
    s = preset("QA", max_seq_length=96, doc_stride=32, max_query_length=16)
    train = tokenize_for_class(td, ds, tok, s, for_training=True)
    ev = tokenize_for_class(td, ds, tok, s, for_training=False)
    assert len(train) == len(ev) > len(ds)  # long contexts give several windows
    assert train["input_ids"] == ev["input_ids"]
    by_id = {ex["id"]: ex for ex in ds}
    windows_of: dict = {}
    labelled = 0
    for i in range(len(ev)):
        ex = by_id[ev["example_id"][i]]
        offs = ev["offset_mapping"][i]
        ids = ev["input_ids"][i]
        assert len(ids) <= 96
        n_question = ev["token_type_ids"][i].index(1) - 2 if 1 in ev["token_type_ids"][i] else None
        assert n_question is not None and n_question <= 16
        assert all(o is None for o in offs[: n_question + 2]) and offs[-1] is None
        ctx = [o for o in offs if o is not None]
        windows_of.setdefault(ex["id"], []).append(ctx[0][0])
        a_start = ex["answers"]["answer_start"][0]
        a_end = a_start + len(ex["answers"]["text"][0])
        st, en = train["start_positions"][i], train["end_positions"][i]
        if ctx[0][0] <= a_start and ctx[-1][1] >= a_end:  # answer wholly inside this window
            labelled += 1
            span = ex["context"][offs[st][0] : offs[en][1]]
            assert normalize_answer(span) == normalize_answer(ex["answers"]["text"][0])
        else:
            assert st == en == 0  # [CLS]
    assert labelled >= len(ds)
    # consecutive windows start doc_stride context word pieces apart (authors' semantics)
    for qid, starts in windows_of.items():
        first_token = _full_context_token_starts(tok, by_id[qid]["context"])
        idx = [first_token[c] for c in starts]
        assert all(b - a == 32 for a, b in zip(idx, idx[1:])), (qid, idx)


def test_qa_unanswerable_and_long_question(tok, data_dir):
    td, ds = few("SQuAD-2", n=40, data_dir=data_dir)
    unans = ds.filter(lambda r: len(r["answers"]["text"]) == 0)
    assert len(unans) > 0
    f = tokenize_for_class(td, unans, tok, preset("QA"), for_training=True)
    assert set(f["start_positions"]) == {0} and set(f["end_positions"]) == {0}
    long_q = Dataset.from_dict({
        "id": ["x"], "question": ["why " * 100 + "?"], "context": ["Because."],
        "answers": [{"text": ["Because"], "answer_start": [0]}]})
    f = tokenize_for_class("QA", long_q, tok, preset("QA", max_query_length=10), for_training=True)
    assert f["token_type_ids"][0].index(1) == 1 + 10 + 1  # [CLS] + 10 question pieces + [SEP]
    assert tok.decode(f["input_ids"][0][f["start_positions"][0] : f["end_positions"][0] + 1]) == "because"


def test_sl_label_on_first_word_piece(tok, data_dir):
    td, ds = few("NER", n=30, data_dir=data_dir)
    names = td.label_names
    f = tokenize_for_class(td, ds, tok, preset("SL"), for_training=False)
    for k in range(len(ds)):
        words, tags = ds["tokens"][k], ds["tags"][k]
        labels, word_index = f["labels"][k], f["word_index"][k]
        firsts = [p for p, w in enumerate(word_index) if w >= 0]
        assert [word_index[p] for p in firsts] == list(range(len(words)))
        assert [names[labels[p]] for p in firsts] == list(tags)
        assert all(labels[p] == IGNORE_INDEX for p in range(len(labels)) if word_index[p] < 0)
        # the first piece of word w starts the word's own tokenisation
        for p in firsts[:3]:
            assert f["input_ids"][k][p] == tok(words[word_index[p]], add_special_tokens=False)["input_ids"][0]
    # truncation keeps the labels of the words that fit
    f16 = tokenize_for_class(td, ds, tok, preset("SL", max_seq_length=16), for_training=True)
    assert max(len(x) for x in f16["input_ids"]) == 16 and "word_index" not in f16.column_names


def test_sl_unknown_tags_and_missing_tags(tok, data_dir):
    td, ds = few("NER", n=8, data_dir=data_dir)
    bad = ds.map(lambda r, i: {"tags": ["B-XYZ"] + r["tags"][1:] if i == 2 else r["tags"]}, with_indices=True)
    with pytest.raises(ValueError, match="'B-XYZ' in row 2, word 0 is not in the tag set"):
        tokenize_for_class(td, bad, tok, preset("SL"), for_training=True)
    f = tokenize_for_class(td, bad, tok, preset("SL"), for_training=False)  # gold tag kept for scoring
    assert f["labels"][2][1] == IGNORE_INDEX and f["word_index"][2][1] == 0
    with pytest.raises(ValueError, match="target labels missing"):
        tokenize_for_class(td, ds.remove_columns("tags"), tok, preset("SL"), for_training=True)
    with pytest.raises(ValueError, match="lacks column"):
        tokenize_for_class(td, ds.remove_columns("tokens"), tok, preset("SL"), for_training=True)


def test_collators_pad_dynamically_or_to_max_length(tok, data_dir):
    td, ds = few("NER", n=8, data_dir=data_dir)
    f = model_inputs(tokenize_for_class(td, ds, tok, preset("SL"), for_training=False))
    rows = [f[i] for i in range(8)]
    longest = max(len(r["input_ids"]) for r in rows)
    b = collator_for_class("SL", tok)(rows)
    assert b["input_ids"].shape == (8, longest) and b["labels"].shape == (8, longest)
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()
    b = collator_for_class("SL", tok, pad_to_length=128)(rows)
    assert b["input_ids"].shape == (8, 128)
    td, ds = few("RTE", n=8, data_dir=data_dir)
    rows = list(tokenize_for_class(td, ds, tok, preset("CR"), for_training=True))
    b = collator_for_class("CR", tok)(rows)
    assert b["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows) and b["labels"].shape == (8,)
    assert collator_for_class("CR", tok, pad_to_length=128)(rows)["input_ids"].shape == (8, 128)

"""TextEmb against hand computations: per example, the mean of the final-layer vectors over its real
tokens; then the mean over examples (QA: windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer, BertModel

from tasktransfer_utils.training.features import tokenize_for_class
from tasktransfer_utils.data.loaders import TaskData, load_task
from tasktransfer_utils.training.settings import preset
from tasktransfer_utils.data.tasks import get_task
from tasktransfer_utils.embeddings.textemb import compute_textemb, mean_pool


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The models here are tiny: one intra-op thread is faster, and much faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_task(name: str, train: dict, label_names=None) -> TaskData:
    spec = get_task(name)
    return TaskData(spec, DatasetDict(train=Dataset.from_dict(train)), label_names, "local", {})


def hand_mean_vector(encoder_dir: str, encodings: list[list[int]], token_types: list[list[int]] | None = None) -> np.ndarray:
    """Run every example alone (no padding), average its token vectors with an explicit loop, then
    average the example vectors."""
    model = BertModel.from_pretrained(encoder_dir).eval()
    vectors = []
    with torch.no_grad():
        for k, ids in enumerate(encodings):
            tt = torch.tensor([token_types[k]]) if token_types else None
            h = model(input_ids=torch.tensor([ids]), token_type_ids=tt).last_hidden_state[0].double().numpy()
            acc = np.zeros(h.shape[1])
            for t in range(len(ids)):
                acc += h[t]
            vectors.append(acc / len(ids))
    return np.mean(vectors, axis=0)


def test_mean_pool_excludes_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(mean_pool(hidden, mask).numpy(), [[2.0, 3.0], [7.0, 8.0]])
    with pytest.raises(ValueError, match="no real tokens"):
        mean_pool(hidden, torch.tensor([[0, 0, 0], [1, 1, 1]]))


def test_textemb_of_two_short_examples_by_hand(tiny_encoder_dir):
    texts = ["a cat sat.", "the quick brown dog jumped over the lazy fox"]
    td = make_task("SST-2", {"text_a": texts, "text_b": [None, None], "label": [0, 1]}, ("negative", "positive"))
    emb = compute_textemb(td, encoder=tiny_encoder_dir, batch_size=2)  # one batch: the short example is padded
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    encs = [tok(t)["input_ids"] for t in texts]
    assert len(encs[0]) < len(encs[1])
    want = hand_mean_vector(tiny_encoder_dir, encs)
    np.testing.assert_allclose(emb.vector, want, rtol=1e-5, atol=1e-6)
    assert emb.vector.dtype == np.float32 and emb.vector.shape == (32,)
    m = emb.meta
    assert (m["task"], m["method"], m["component"], m["num_examples"]) == ("SST-2", "TextEmb", "avg_sequence_output", 2)
    assert m["encoder_id"] == tiny_encoder_dir.rstrip("/").split("/")[-1] and m["estimator"] is None
    assert "torch" in m["versions"]
    # padding does not leak in: batches of one give the same vector
    np.testing.assert_allclose(compute_textemb(td, encoder=tiny_encoder_dir, batch_size=1).vector, emb.vector, rtol=1e-5, atol=1e-6)


def test_textemb_sentence_pairs_use_token_types(tiny_encoder_dir):
    td = make_task("RTE", {"text_a": ["a man is here.", "it rains"], "text_b": ["someone is here.", "the street is wet and cold"],
                           "label": [0, 1]}, ("entailment", "not_entailment"))
    emb = compute_textemb(td, encoder=tiny_encoder_dir, batch_size=2)
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    encs = [tok(a, b) for a, b in zip(td.train["text_a"], td.train["text_b"])]
    want = hand_mean_vector(tiny_encoder_dir, [e["input_ids"] for e in encs], [e["token_type_ids"] for e in encs])
    np.testing.assert_allclose(emb.vector, want, rtol=1e-5, atol=1e-6)


def test_qa_windows_count_as_examples(tiny_encoder_dir):
    context = " ".join(f"word{i} is here." for i in range(40))
    td = make_task("SQuAD-2", {
        "id": ["q1", "q2"], "question": ["where is word3?", "what?"], "context": [context, "short context here."],
        "answers": [{"text": ["word3"], "answer_start": [context.index("word3")]}, {"text": [], "answer_start": []}],
    })
    settings = preset("QA", max_seq_length=48, doc_stride=16, max_query_length=8)
    emb = compute_textemb(td, encoder=tiny_encoder_dir, settings=settings, batch_size=3)
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    feats = tokenize_for_class(td, td.train, tok, settings, for_training=False)
    assert len(feats) > 3  # the long context is split into several windows
    assert emb.meta["num_examples"] == len(feats) and emb.meta["num_source_rows"] == 2
    want = hand_mean_vector(tiny_encoder_dir, feats["input_ids"], feats["token_type_ids"])
    np.testing.assert_allclose(emb.vector, want, rtol=1e-5, atol=1e-6)


def test_sl_textemb_by_hand(tiny_encoder_dir):
    td = make_task("POS-PTB", {"tokens": [["Stocks", "rallied", "."], ["Unbelievably", "long", "words", "here"]],
                               "tags": [["NNS", "VBD", "."], ["RB", "JJ", "NNS", "RB"]]}, ("NNS", "VBD", ".", "RB", "JJ"))
    emb = compute_textemb(td, encoder=tiny_encoder_dir, batch_size=2)
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    encs = [tok(t, is_split_into_words=True)["input_ids"] for t in td.train["tokens"]]
    np.testing.assert_allclose(emb.vector, hand_mean_vector(tiny_encoder_dir, encs), rtol=1e-5, atol=1e-6)


def test_regime_and_max_examples_on_real_data(tiny_encoder_dir, data_dir):
    td = load_task("RTE", data_dir)
    a = compute_textemb(td, encoder=tiny_encoder_dir, max_examples=12, seed=1)
    b = compute_textemb(td, encoder=tiny_encoder_dir, max_examples=12, seed=1)
    c = compute_textemb(td, encoder=tiny_encoder_dir, max_examples=12, seed=2)
    assert a.meta["num_examples"] == 12 and a.meta["regime"] == "FULL"
    np.testing.assert_array_equal(a.vector, b.vector)
    assert not np.allclose(a.vector, c.vector)
    lim = compute_textemb(td, encoder=tiny_encoder_dir, regime="LIMITED", max_examples=8)
    assert lim.meta["regime"] == "LIMITED" and lim.meta["num_examples"] == 8
    with pytest.raises(KeyError, match="no split 'test'"):
        compute_textemb(td, encoder=tiny_encoder_dir, split="test")

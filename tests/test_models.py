"""Heads per class and encoder-only transfer between checkpoints."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from tasktransfer_utils.training.models import build_model, encoder_state_dict, load_state_dict, resolve_model_dir


def perturbed_source(path, encoder_dir, task_class="CR", **kw):
    """A 'fine-tuned' source: build_model, add a constant to every weight, save."""
    torch.manual_seed(123)
    m = build_model(task_class, encoder_dir, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.5)
    m.save_pretrained(path)
    return m


def test_heads_per_class(tiny_encoder_dir):
    cr = build_model("CR", tiny_encoder_dir, num_labels=3)
    assert type(cr).__name__ == "BertForSequenceClassification" and cr.config.num_labels == 3
    reg = build_model("CR", tiny_encoder_dir, is_regression=True)
    assert reg.config.num_labels == 1 and reg.config.problem_type == "regression"
    qa = build_model("QA", tiny_encoder_dir)
    assert type(qa).__name__ == "BertForQuestionAnswering" and qa.qa_outputs.out_features == 2
    sl = build_model("SL", tiny_encoder_dir, label_names=("O", "B-X", "I-X"))
    assert sl.classifier.out_features == 3 and sl.config.id2label[1] == "B-X"
    # the pretrained encoder weights are loaded
    enc = load_state_dict(tiny_encoder_dir)
    for k, v in sl.base_model.state_dict().items():
        if k in enc:
            assert torch.equal(v, enc[k]), k


def test_missing_label_count_is_an_error(tiny_encoder_dir):
    with pytest.raises(ValueError, match="num_labels must be >= 2"):
        build_model("CR", tiny_encoder_dir)
    with pytest.raises(ValueError, match="tag count"):
        build_model("SL", tiny_encoder_dir)


@pytest.mark.parametrize("source_class,target_class", [("CR", "CR"), ("QA", "QA"), ("SL", "SL"), ("CR", "QA"), ("SL", "CR")])
def test_transfer_copies_the_encoder_and_drops_the_head(tmp_path, tiny_encoder_dir, source_class, target_class):
    src = perturbed_source(tmp_path / "src", tiny_encoder_dir, source_class,
                           num_labels=None if source_class == "QA" else 2)
    tgt = build_model(target_class, tiny_encoder_dir, num_labels=None if target_class == "QA" else 2,
                      init_from=tmp_path / "src")
    src_enc = src.base_model.state_dict()
    for k, v in tgt.base_model.state_dict().items():
        if k in src_enc:
            assert torch.equal(v, src_enc[k]), k
        else:  # only the pooler, absent from QA/SL checkpoints, keeps its pretrained value
            assert k.startswith("pooler."), k
    # the head is fresh: not the source's (perturbed by +0.5) even when shapes agree
    fresh = build_model(target_class, tiny_encoder_dir, num_labels=None if target_class == "QA" else 2)
    src_head = {k: v for k, v in src.state_dict().items() if not k.startswith("bert.")}
    for k, v in tgt.state_dict().items():
        if not k.startswith("bert."):
            assert v.shape == fresh.state_dict()[k].shape
            if k in src_head:
                assert not torch.equal(v, src_head[k]), k
    rep = tgt.transfer_report
    assert rep["copied"] == sum(k in src_enc for k in tgt.base_model.state_dict())
    assert rep["discarded_source_head"] == sorted(src_head)


def test_transfer_from_a_run_directory_and_a_bare_encoder(tmp_path, tiny_encoder_dir):
    perturbed_source(tmp_path / "run" / "model", tiny_encoder_dir, "SL", num_labels=4)
    assert resolve_model_dir(tmp_path / "run") == tmp_path / "run" / "model"
    tgt = build_model("CR", tiny_encoder_dir, num_labels=2, init_from=tmp_path / "run")
    assert tgt.transfer_report["kept_from_pretrained"] == ["pooler.dense.bias", "pooler.dense.weight"]
    bare = build_model("SL", tiny_encoder_dir, num_labels=2, init_from=tiny_encoder_dir)
    assert bare.transfer_report["discarded_source_head"] == []
    sd = load_state_dict(tmp_path / "run" / "model")
    assert set(encoder_state_dict(sd, "bert")) <= set(tgt.base_model.state_dict())


def test_source_of_another_size_or_architecture_is_refused(tmp_path, tiny_encoder_dir):
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    wide = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37)
    BertModel(wide).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="hidden_size: source 64 vs target 32"):
        build_model("CR", tiny_encoder_dir, num_labels=2, init_from=tmp_path / "wide")
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="model_type: source 'gpt2' vs target 'bert'"):
        build_model("SL", tiny_encoder_dir, num_labels=2, init_from=tmp_path / "gpt2")
    with pytest.raises(FileNotFoundError, match="neither"):
        build_model("SL", tiny_encoder_dir, num_labels=2, init_from=tmp_path / "nothing")


def test_source_without_encoder_weights_is_refused(tmp_path, tiny_encoder_dir):
    """Same config, but the weights file holds only a head: an explicit error, not a silent no-op."""
    from safetensors.torch import save_file

    (tmp_path / "headonly").mkdir()
    cfg = json.loads((resolve_model_dir(tiny_encoder_dir) / "config.json").read_text())
    (tmp_path / "headonly" / "config.json").write_text(json.dumps(cfg))
    save_file({"classifier.weight": torch.zeros(2, 32), "classifier.bias": torch.zeros(2)},
              str(tmp_path / "headonly" / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks encoder weights"):
        build_model("CR", tiny_encoder_dir, num_labels=2, init_from=tmp_path / "headonly")

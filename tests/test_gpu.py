"""The CUDA path: fine-tuning and transfer with mixed precision, evaluation, TaskEmb, TextEmb and LogME
features on a GPU, each checked against the same computation on the CPU.

Skipped where torch sees no CUDA device (CI has none); run with ``pytest -m gpu`` on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import load_file

from tasktransfer_utils.training.features import collator_for_class, tokenize_for_class
from tasktransfer_utils.selection.logme import encoder_features, logme_score
from tasktransfer_utils.embeddings.taskemb import compute_taskemb, load_finetuned
from tasktransfer_utils.embeddings.textemb import compute_textemb
from tasktransfer_utils.training.fine_tuning import evaluate_model, fine_tune, predict_logits

from run_helpers import small, tiny_settings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TASKS = {"CR": "RTE", "QA": "SQuAD-2", "SL": "NER"}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def gpu_runs(tmp_path_factory, tiny_encoder_dir, data_dir):
    """One source run per class fine-tuned on the GPU (default device when CUDA is present)."""
    root = tmp_path_factory.mktemp("gpu_runs")
    return {cls: fine_tune(small(task, data_dir, 48, 24), root / cls, encoder=tiny_encoder_dir,
                           settings=tiny_settings(cls), seed=0)
            for cls, task in TASKS.items()}


@pytest.mark.parametrize("cls", list(TASKS))
def test_fine_tune_runs_on_the_gpu_in_mixed_precision(gpu_runs, cls):
    r = gpu_runs[cls]
    assert r.device.startswith("cuda")
    assert r.mixed_precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    losses = [p["loss"] for p in r.loss_curve]
    assert len(losses) == r.num_train_steps and all(math.isfinite(x) for x in losses)
    assert math.isfinite(r.score)
    # Mixed precision keeps float32 master weights: the saved model is float32.
    weights = load_file(f"{r.model_dir}/model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_gpu_training_in_mixed_precision_learns_the_training_set(tmp_path, tiny_encoder_dir, data_dir):
    """As on the CPU (test_training): scored on its own 32 training sentences, the tiny model memorises
    SST-2 far beyond the majority class."""
    td = small("SST-2", data_dir, n_train=32)
    td = dataclasses.replace(td, splits=DatasetDict(train=td.splits["train"], validation=td.splits["train"]))
    majority = max(Counter(td.splits["train"]["label"]).values()) / 32
    r = fine_tune(td, tmp_path / "fit", encoder=tiny_encoder_dir, seed=0,
                  settings=tiny_settings("CR", batch_size=4, num_epochs=10, learning_rate=3e-3, eval_every_epoch=False))
    assert r.device.startswith("cuda") and r.mixed_precision is not None
    assert r.final_metrics["accuracy"] >= 0.9 > majority + 0.2
    assert sum(p["loss"] for p in r.loss_curve[-8:]) < sum(p["loss"] for p in r.loss_curve[:8])


@pytest.mark.parametrize("cls", ["CR", "QA"])
def test_gpu_fine_tuning_is_reproducible_bit_for_bit(gpu_runs, tmp_path, tiny_encoder_dir, data_dir, cls):
    """A rerun with the same seed (a study job rerun after a crash) gives the same losses, metrics and
    weights as the first run (training.fine_tuning.deterministic_cuda)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = fine_tune(small(TASKS[cls], data_dir, 48, 24), tmp_path / "again", encoder=tiny_encoder_dir,
                          settings=tiny_settings(cls), seed=0)
    # no kernel on the way warned that it is nondeterministic (torch warns in deterministic mode)
    assert not [str(w.message) for w in caught if "determinis" in str(w.message)]
    first = gpu_runs[cls]
    assert [p["loss"] for p in again.loss_curve] == [p["loss"] for p in first.loss_curve]
    assert again.final_metrics == first.final_metrics
    w1, w2 = load_file(f"{first.model_dir}/model.safetensors"), load_file(f"{again.model_dir}/model.safetensors")
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("source_cls,target_cls", [("CR", "SL"), ("SL", "QA"), ("QA", "CR")])
def test_transfer_across_classes_on_the_gpu(gpu_runs, tmp_path, tiny_encoder_dir, data_dir, source_cls, target_cls):
    src = gpu_runs[source_cls]
    r = fine_tune(small(TASKS[target_cls], data_dir, 48, 24), tmp_path / "t", encoder=tiny_encoder_dir,
                  init_from=src.model_dir.rsplit("/", 1)[0], settings=tiny_settings(target_cls), seed=0)
    assert r.device.startswith("cuda") and math.isfinite(r.score)
    assert r.transfer_report["copied"] > 0


@pytest.mark.parametrize("cls", list(TASKS))
def test_gpu_logits_and_metrics_match_the_cpu(gpu_runs, data_dir, cls):
    """The same fine-tuned model scored on the CPU (float32), on the GPU in float32 and on the GPU under
    bf16/fp16 autocast (what fine-tuning's per-epoch evaluation uses there)."""
    r = gpu_runs[cls]
    td = small(TASKS[cls], data_dir, 48, 24)
    settings = tiny_settings(cls)
    model, tok, _, _ = load_finetuned(r.model_dir.rsplit("/", 1)[0], cls, "cpu")  # encoder and trained head
    model.eval()
    label_names = getattr(td, "label_names", None) or td.spec.labels
    feats = tokenize_for_class(td, td.splits["validation"], tok, settings, label_names, for_training=False)
    collate = collator_for_class(cls, tok)

    def flat(out):
        return np.concatenate([np.concatenate([np.ravel(p) for p in o]) if isinstance(o, tuple) else np.ravel(o)
                               for o in out])

    cpu = flat(predict_logits(model.to("cpu"), feats, collate, 8, "cpu"))
    gpu32 = flat(predict_logits(model.to("cuda"), feats, collate, 8, "cuda"))
    gpu16 = flat(predict_logits(model, feats, collate, 8, "cuda", r.mixed_precision))
    assert rel_err(gpu32, cpu) < 1e-4
    assert rel_err(gpu16, cpu) < 5e-2
    m_cpu = evaluate_model(model.to("cpu"), tok, td, td.splits["validation"], settings, features=feats, device="cpu")
    m_gpu = evaluate_model(model.to("cuda"), tok, td, td.splits["validation"], settings, features=feats, device="cuda")
    for k in m_cpu:
        assert m_gpu[k] == pytest.approx(m_cpu[k], abs=1.0 / 24 + 1e-9), k  # at most one dev example flips


@pytest.mark.parametrize("cls", list(TASKS))
@pytest.mark.parametrize("estimator", ["paper", "empirical"])
def test_taskemb_on_the_gpu_matches_the_cpu(gpu_runs, data_dir, cls, estimator):
    r = gpu_runs[cls]
    td = small(TASKS[cls], data_dir, 48, 24)
    run_dir = r.model_dir.rsplit("/", 1)[0]
    kw = dict(estimator=estimator, batch_size=8, max_examples=32, seed=0)
    on_cpu = compute_taskemb(td, run_dir, device="cpu", **kw)
    on_gpu = compute_taskemb(td, run_dir, device="cuda", **kw)
    assert on_cpu.keys() == on_gpu.keys() and len(on_cpu) > 0
    # Some Fisher components are zero in exact arithmetic and only rounding noise in floating point (the
    # attention key bias: softmax ignores a logit shift shared by all keys); compare those against the scale
    # of the whole embedding instead.
    scale = max(float(np.abs(e.vector).max()) for e in on_cpu.values())
    off = {}
    for name in on_cpu:
        a, b = on_gpu[name].vector, on_cpu[name].vector
        if np.abs(b).max() < 1e-9 * scale:
            if np.abs(a).max() >= 1e-6 * scale:
                off[name] = f"GPU {np.abs(a).max():.3g} where the CPU has rounding noise"
        elif rel_err(a, b) >= 1e-3:
            off[name] = f"relative error {rel_err(a, b):.3g}"
    assert not off, off


@pytest.mark.parametrize("cls", ["CR", "QA"])
def test_gpu_taskemb_is_reproducible_bit_for_bit(gpu_runs, data_dir, cls):
    """TaskEmb runs under deterministic_cuda as fine-tuning does: a study's TaskEmb job rerun after a crash
    writes the same Fisher values as the first run, and torch warns of no nondeterministic kernel on the way."""
    r = gpu_runs[cls]
    td = small(TASKS[cls], data_dir, 48, 24)
    run_dir = r.model_dir.rsplit("/", 1)[0]
    kw = dict(estimator="paper", batch_size=8, max_examples=32, seed=0, device="cuda")
    first = compute_taskemb(td, run_dir, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = compute_taskemb(td, run_dir, **kw)
    assert not [str(w.message) for w in caught if "determinis" in str(w.message)]
    assert first.keys() == again.keys() and len(first) > 0
    assert all(np.array_equal(first[k].vector, again[k].vector) for k in first)


@pytest.mark.parametrize("cls", list(TASKS))
def test_textemb_on_the_gpu_matches_the_cpu(tiny_encoder_dir, data_dir, cls):
    td = small(TASKS[cls], data_dir, 48, 24)
    a = compute_textemb(td, encoder=tiny_encoder_dir, batch_size=16, device="cpu")
    b = compute_textemb(td, encoder=tiny_encoder_dir, batch_size=16, device="cuda")
    assert rel_err(b.vector, a.vector) < 1e-5


@pytest.mark.parametrize("cls", list(TASKS))
def test_logme_features_on_the_gpu_match_the_cpu(gpu_runs, data_dir, cls):
    r = gpu_runs[cls]
    td = small(TASKS[cls], data_dir, 48, 24)
    xc, yc, reg = encoder_features(r.model_dir, td, max_examples=48, device="cpu")
    xg, yg, _ = encoder_features(r.model_dir, td, max_examples=48, device="cuda")
    np.testing.assert_array_equal(yg, yc)
    assert rel_err(xg, xc) < 1e-4
    assert logme_score(xg, yg, regression=reg) == pytest.approx(logme_score(xc, yc, regression=reg), rel=1e-3, abs=1e-4)

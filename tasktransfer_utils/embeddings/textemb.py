"""TextEmb (Vu et al. 2020, §3.1): the mean final-layer token vector of the *pretrained* encoder over a
task's training set.

For each example (a QA doc-stride window counts as one example), average the final-layer vectors over
its real tokens ([CLS] and [SEP] included, padding excluded); the task embedding is the mean of those
example vectors: a ``hidden_size`` vector, not normalised. Eval mode, no gradients, dynamic padding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .store import TaskEmbedding, base_meta

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean of ``hidden`` [B, T, H] over positions where ``attention_mask`` [B, T] is 1 -> [B, H]."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    counts = m.sum(dim=1)
    if (counts == 0).any():
        raise ValueError("mean_pool: an example has no real tokens (attention_mask all zero)")
    return (hidden * m).sum(dim=1) / counts


@torch.no_grad()
def textemb_from_batches(encoder: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                         on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Sum over examples of the mean-pooled final-layer vectors, and the number of examples.

    ``encoder``: a transformers base model (e.g. BertModel) returning ``last_hidden_state``;
    ``batches``: dicts with input_ids / attention_mask (/ token_type_ids) [B, T]. The sum is in float64.
    ``on_batch``: called with the number of examples embedded so far after every batch (progress).
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    total, n = None, 0
    try:
        for batch in batches:
            inputs = {k: batch[k].to(device) for k in MODEL_INPUT_KEYS if k in batch}
            hidden = encoder(**inputs).last_hidden_state
            pooled = mean_pool(hidden, inputs["attention_mask"]).sum(dim=0).double()
            total = pooled if total is None else total + pooled
            n += inputs["input_ids"].shape[0]
            if on_batch is not None:
                on_batch(n)
    finally:
        encoder.train(was_training)
    if n == 0:
        raise ValueError("textemb_from_batches: no examples")
    return total.cpu().numpy(), n


def length_sorted_batches(features, collate, batch_size: int) -> list[dict]:
    """Collated batches of ``features`` (rows with input_ids etc.) in order of length, so that dynamic
    padding wastes little. The mean over examples does not depend on the order."""
    lengths = [len(x) for x in features["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    rows = [{k: features[int(i)][k] for k in MODEL_INPUT_KEYS if k in features.column_names} for i in order]
    return [collate(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)]


def training_rows(task_data, split: str = "train", regime: Any = "FULL", seed: int = 0, max_examples: int | None = None):
    """The rows of ``split`` an embedding is computed over: the regime's sample (LIMITED: the same seeded
    1,000 rows fine-tuning uses), then at most ``max_examples`` rows (a seeded sample). Returns (dataset, notes)."""
    from ..data.regimes import Regime, apply_regime

    if split not in task_data.splits:
        raise KeyError(f"{task_data.spec.name}: no split {split!r} (have {list(task_data.splits)})")
    ds = task_data.splits[split]
    regime = Regime(getattr(regime, "value", regime))
    ds = apply_regime(ds, regime, seed)
    if max_examples is not None and max_examples < len(ds):
        ds = apply_regime(ds, Regime.LIMITED, seed, n=max_examples)
    return ds, regime.value


def compute_textemb(
    task_data,
    encoder: str | os.PathLike | None = None,
    split: str = "train",
    regime: Any = "FULL",
    seed: int = 0,
    batch_size: int = 64,
    max_examples: int | None = None,
    settings=None,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> TaskEmbedding:
    """TextEmb of a task (a ``data.loaders.TaskData``) from a pretrained ``encoder`` (default: the offline
    MiniLM). Tokenisation is the fine-tuning one (``training.features.tokenize_for_class`` with the class preset,
    or ``settings``), so QA windows are the training windows. Returns one TaskEmbedding with component
    ``"avg_sequence_output"``. ``progress``: called with a line of text at each stage and about every 10 % of
    the examples (the command line prints them on stderr)."""
    from transformers import AutoModel, AutoTokenizer

    from ..training.features import collator_for_class, tokenize_for_class
    from ..paths import default_encoder
    from ..training.settings import class_name, preset

    t0 = time.perf_counter()
    encoder = str(encoder) if encoder is not None else default_encoder()
    spec = task_data.spec
    cls = class_name(spec.task_class)
    settings = settings or preset(cls)
    rows, regime_name = training_rows(task_data, split, regime, seed, max_examples)

    say = progress or (lambda _msg: None)
    say(f"tokenizing {len(rows)} rows with the tokenizer of {encoder}")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    feats = tokenize_for_class(task_data, rows, tokenizer, settings, for_training=False)
    feats = feats.remove_columns([c for c in feats.column_names if c not in MODEL_INPUT_KEYS])
    device = torch.device(device) if device is not None else default_device()
    say(f"loading the encoder {encoder} on {device}")
    model = AutoModel.from_pretrained(encoder).to(device)
    batches = length_sorted_batches(feats, collator_for_class(cls, tokenizer), batch_size)
    n_feats, step = len(feats), max(1, len(feats) // 10)
    shown = [0]

    def on_batch(done: int) -> None:
        if done - shown[0] >= step or done == n_feats:
            shown[0] = done
            say(f"  embedded {done}/{n_feats} sequences")

    say(f"embedding {n_feats} sequences ({len(rows)} rows) in batches of {batch_size}")
    total, n = textemb_from_batches(model, batches, on_batch=on_batch if progress else None)

    meta = base_meta(
        task=spec.name,
        task_class=cls,
        method="TextEmb",
        component="avg_sequence_output",
        estimator=None,
        label_source=None,
        encoder=encoder,
        split=split,
        regime=regime_name,
        seed=seed,
        num_examples=n,
        num_source_rows=len(rows),
        max_examples=max_examples,
        max_seq_length=settings.max_seq_length,
        doc_stride=settings.doc_stride if cls == "QA" else None,
        batch_size=batch_size,
        wall_time_s=round(time.perf_counter() - t0, 3),
    )
    return TaskEmbedding(total / n, meta)

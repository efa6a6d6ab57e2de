"""Task heads per class and intermediate-task transfer of encoder weights (Vu et al. 2020, §2).

CR: ``AutoModelForSequenceClassification`` (``num_labels=1`` + MSE for regression); QA:
``AutoModelForQuestionAnswering`` (start/end logits); SL: ``AutoModelForTokenClassification``.
Transfer: the target model is built from the pretrained encoder, then every encoder (base-model)
weight is overwritten with the source's; the source head is discarded and the target head stays freshly
initialised. Encoder weights the source lacks (the BERT pooler when the source was a QA/SL model, whose
heads do not use it) keep their pretrained values; ``model.transfer_report`` lists them.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .settings import class_name

# config fields that must agree between source and target encoders
ARCH_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _auto_class(task_class: Any):
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    return {
        "CR": AutoModelForSequenceClassification,
        "QA": AutoModelForQuestionAnswering,
        "SL": AutoModelForTokenClassification,
    }[class_name(task_class)]


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A run directory (holding ``model/``) or a transformers folder -> the folder with config + weights."""
    p = Path(path)
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if (p / "config.json").is_file():
        return p
    raise FileNotFoundError(
        f"init_from={str(path)!r}: neither {p / 'model' / 'config.json'} (a finished run directory) nor "
        f"{p / 'config.json'} (a transformers model folder) exists"
    )


def load_state_dict(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder (safetensors or PyTorch, single file or sharded)."""
    d = Path(model_dir)
    for fname in WEIGHT_FILES:
        f = d / fname
        if not f.is_file():
            continue
        if fname.endswith(".index.json"):
            shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
            state = {}
            for s in shards:
                state.update(_load_file(d / s))
            return state
        return _load_file(f)
    raise FileNotFoundError(f"{d}: no weights file (looked for {', '.join(WEIGHT_FILES)})")


def _load_file(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(f))
    return torch.load(str(f), map_location="cpu", weights_only=True)


def encoder_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The encoder part of a checkpoint: keys under ``prefix.`` (task model) with the prefix stripped,
    or every key when the checkpoint is a bare encoder (no key under the prefix)."""
    p = prefix + "."
    if any(k.startswith(p) for k in state):
        return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    return dict(state)


def check_same_architecture(source_config: Any, target_config: Any, source_name: str) -> None:
    """ValueError naming each differing config field when the source is not an encoder of the target's
    architecture and size."""
    diffs = []
    for f in ARCH_FIELDS:
        a, b = getattr(source_config, f, None), getattr(target_config, f, None)
        if a != b:
            diffs.append(f"{f}: source {a!r} vs target {b!r}")
    if diffs:
        raise ValueError(
            f"init_from={source_name}: the source checkpoint is not an encoder of the target's architecture/size "
            f"({'; '.join(diffs)}). Transfer needs a source fine-tuned from the same encoder."
        )


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def build_model(
    task_class: Any,
    encoder_name_or_path: str,
    num_labels: int | None = None,
    is_regression: bool = False,
    init_from: str | os.PathLike | None = None,
    label_names: tuple[str, ...] | list[str] | None = None,
):
    """A model with a fresh head for ``task_class`` on the pretrained encoder ``encoder_name_or_path``
    (hub id or folder). ``num_labels``: classes (CR classification) or tags (SL); defaults to
    ``len(label_names)``; ignored for QA; 1 for regression. ``init_from``: a finished run directory (or a
    transformers folder) whose ENCODER weights replace the pretrained ones; its head is discarded.
    """
    from transformers import AutoConfig

    cls = class_name(task_class)
    if num_labels is None and label_names is not None:
        num_labels = len(label_names)
    kwargs: dict[str, Any] = {}
    if cls == "CR":
        if is_regression:
            kwargs.update(num_labels=1, problem_type="regression")
        else:
            if not num_labels or num_labels < 2:
                raise ValueError(f"build_model(CR): num_labels must be >= 2 for classification, got {num_labels!r}")
            kwargs.update(num_labels=num_labels, problem_type="single_label_classification")
    elif cls == "SL":
        if not num_labels or num_labels < 1:
            raise ValueError(f"build_model(SL): num_labels (tag count) must be >= 1, got {num_labels!r}")
        kwargs["num_labels"] = num_labels
    if label_names is not None and cls != "QA" and not is_regression:
        kwargs["id2label"] = {i: str(n) for i, n in enumerate(label_names)}
        kwargs["label2id"] = {str(n): i for i, n in enumerate(label_names)}

    config = AutoConfig.from_pretrained(encoder_name_or_path, **kwargs)
    with _quiet_transformers():  # the head is new by design; its "MISSING weights" load report is noise
        model = _auto_class(cls).from_pretrained(encoder_name_or_path, config=config)
    if init_from is not None:
        report = transfer_encoder(model, init_from)
        model.transfer_report = report
    return model


def transfer_encoder(model: Any, init_from: str | os.PathLike) -> dict[str, Any]:
    """Copy the encoder weights of ``init_from`` into ``model.base_model`` in place (head untouched).

    Returns a report: source folder, number of tensors copied, encoder tensors the source lacked (kept),
    source tensors outside the encoder (its head, discarded)."""
    from transformers import AutoConfig

    src_dir = resolve_model_dir(init_from)
    src_config = AutoConfig.from_pretrained(str(src_dir))
    check_same_architecture(src_config, model.config, str(init_from))
    prefix = model.base_model_prefix
    state = load_state_dict(src_dir)
    enc_state = encoder_state_dict(state, prefix)
    head_keys = sorted(k for k in state if not k.startswith(prefix + ".")) if len(enc_state) < len(state) else []
    target = model.base_model.state_dict()
    copied, shape_err = {}, []
    for k, v in enc_state.items():
        if k in target:
            if tuple(v.shape) != tuple(target[k].shape):
                shape_err.append(f"{k}: source {tuple(v.shape)} vs target {tuple(target[k].shape)}")
            else:
                copied[k] = v
    if shape_err:
        raise ValueError(f"init_from={init_from}: encoder tensor shapes differ: {'; '.join(shape_err[:5])}")
    not_in_source = sorted(k for k in target if k not in copied)
    # only the pooler (unused by QA/SL heads, absent from their checkpoints) and buffers may be missing
    essential = [k for k in not_in_source if not k.startswith("pooler.") and not k.endswith("position_ids")]
    if essential:
        raise ValueError(
            f"init_from={init_from}: the source checkpoint lacks encoder weights {essential[:5]}"
            f"{' ...' if len(essential) > 5 else ''} ({len(essential)} in all) under prefix {prefix!r}; "
            "is it an encoder of the same architecture?"
        )
    model.base_model.load_state_dict(copied, strict=False)
    return {
        "source": str(src_dir),
        "copied": len(copied),
        "kept_from_pretrained": not_in_source,
        "discarded_source_head": head_keys,
    }

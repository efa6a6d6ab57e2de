"""Fine-tuning settings: the authors' per-class presets (Vu et al. 2020, §3 and their released code).

BERT-base, AdamW (eps 1e-8), no weight decay, linear decay, no warm-up, gradient-norm clip 1.0;
CR lr 2e-5, 3 epochs, batch 32, max length 128; QA lr 3e-5, 3 epochs, batch 12, max length 384,
doc stride 128, max query 64; SL lr 5e-5, 6 epochs, batch 32, max length 128. Each stage of a transfer
uses the settings of its own task's class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TASK_CLASSES = ("CR", "QA", "SL")
LR_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")


def class_name(task_class: Any) -> str:
    """``"CR"``/``"QA"``/``"SL"`` for a ``TaskClass`` member or its string value; ValueError otherwise."""
    value = getattr(task_class, "value", task_class)
    if not isinstance(value, str) or value.upper() not in TASK_CLASSES:
        raise ValueError(f"task_class must be one of {TASK_CLASSES} (or a TaskClass member), got {task_class!r}")
    return value.upper()


@dataclass
class FineTuneSettings:
    """Hyper-parameters of one fine-tuning stage. Lengths are in word pieces; ``batch_size`` is per step."""

    learning_rate: float
    num_epochs: float
    batch_size: int
    max_seq_length: int
    doc_stride: int = 128
    max_query_length: int = 64
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    lr_scheduler: str = "linear"
    eval_every_epoch: bool = True
    group_by_length: bool = True
    max_eval_examples: int | None = None
    eval_batch_size: int | None = None  # defaults to 2 x batch_size
    logging_steps: int = 1  # loss-curve granularity in optimiser steps (CurveGrad reads this curve)
    max_answer_length: int = 30  # QA post-processing, in word pieces
    n_best_size: int = 20  # QA post-processing: start/end candidates per window

    def __post_init__(self) -> None:
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("num_epochs", self.num_epochs > 0, "> 0"),
            ("batch_size", int(self.batch_size) == self.batch_size and self.batch_size >= 1, "an integer >= 1"),
            ("max_seq_length", 8 <= self.max_seq_length <= 4096, "in [8, 4096]"),
            ("doc_stride", self.doc_stride >= 1, ">= 1"),
            ("max_query_length", self.max_query_length >= 1, ">= 1"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("lr_scheduler", self.lr_scheduler in LR_SCHEDULERS, f"one of {LR_SCHEDULERS}"),
            ("max_eval_examples", self.max_eval_examples is None or self.max_eval_examples >= 1, "None or >= 1"),
            ("eval_batch_size", self.eval_batch_size is None or self.eval_batch_size >= 1, "None or >= 1"),
            ("logging_steps", self.logging_steps >= 1, ">= 1"),
            ("max_answer_length", self.max_answer_length >= 1, ">= 1"),
            ("n_best_size", self.n_best_size >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"FineTuneSettings.{name} must be {expected}, got {getattr(self, name)!r}")
        self.batch_size = int(self.batch_size)

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def replace(self, **overrides: Any) -> "FineTuneSettings":
        """A copy with some fields changed (unknown field names raise TypeError)."""
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FineTuneSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FineTuneSettings: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, FineTuneSettings] = {
    "CR": FineTuneSettings(learning_rate=2e-5, num_epochs=3, batch_size=32, max_seq_length=128),
    "QA": FineTuneSettings(
        learning_rate=3e-5, num_epochs=3, batch_size=12, max_seq_length=384, doc_stride=128, max_query_length=64
    ),
    "SL": FineTuneSettings(learning_rate=5e-5, num_epochs=6, batch_size=32, max_seq_length=128),
}


def preset(task_class: Any, **overrides: Any) -> FineTuneSettings:
    """The authors' settings for a task class (``TaskClass`` or ``"CR"``/``"QA"``/``"SL"``), with optional
    overrides, e.g. ``preset("CR", num_epochs=1)``. Returns a fresh copy."""
    return PRESETS[class_name(task_class)].replace(**overrides)

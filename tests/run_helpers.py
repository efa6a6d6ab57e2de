"""Small real training runs for the tests: a few dozen examples of a task and tiny fine-tuning settings."""

from __future__ import annotations

import dataclasses

from datasets import DatasetDict

from tasktransfer_utils.data.loaders import load_task
from tasktransfer_utils.training.settings import preset


def small(name, data_dir, n_train=32, n_dev=16):
    """The task with its first ``n_train`` training and ``n_dev`` validation examples."""
    td = load_task(name, data_dir)
    splits = DatasetDict(train=td.splits["train"].select(range(n_train)),
                         validation=td.splits["validation"].select(range(n_dev)))
    return dataclasses.replace(td, splits=splits)


def tiny_settings(task_class, **kw):
    """The class preset with a small batch, 2 epochs, a high learning rate and short sequences."""
    base = {"batch_size": 8, "num_epochs": 2, "learning_rate": 1e-3, "max_seq_length": 64}
    if task_class == "QA":
        base.update(max_seq_length=96, doc_stride=48, max_query_length=24)
    return preset(task_class, **{**base, **kw})

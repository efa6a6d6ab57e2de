"""An overview of the tasks and of the data regimes (notebook 1).

- :func:`paper_tasks_table`: the paper's 33 tasks with class, metrics and where they load from;
- :func:`task_sizes_table`: the training and validation sizes of loaded tasks;
- :func:`limited_sample_check`: what a LIMITED sample's seed controls — the same seed gives the same rows,
  the next seed other rows — with the label shares of each sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from .regimes import Regime, apply_regime


def paper_tasks_table() -> pd.DataFrame:
    """The paper's tasks (:func:`tasks.list_tasks` with ``paper_only``): ``task``, ``class``, ``metrics``
    (comma-separated), ``pair input``, ``local`` (in the offline bundle), ``hub`` (loadable from the hub),
    ``description``."""
    from .tasks import list_tasks

    return pd.DataFrame([{"task": t.name, "class": t.task_class.value, "metrics": ", ".join(t.metrics),
                          "pair input": t.is_pair, "local": t.has_local, "hub": t.has_hub,
                          "description": t.description} for t in list_tasks(paper_only=True)])


def task_sizes_table(data: Mapping[str, Any]) -> pd.DataFrame:
    """Per loaded task (``data``: name → ``TaskData``): ``task_class``, ``paper task``, ``train_examples``,
    ``validation_examples``, ``labels`` (number of label names; missing for QA and regression) and ``derived
    validation`` (the validation split was carved out of another split)."""
    return pd.DataFrame([{"task": name, "task_class": d.spec.task_class.value, "paper task": d.spec.paper_task,
                          "train_examples": len(d.train), "validation_examples": len(d.validation),
                          "labels": len(d.label_names) if d.label_names else None,
                          "derived validation": bool(d.provenance.get("derived_split"))}
                         for name, d in data.items()]).astype({"labels": "Int64"})


@dataclass
class LimitedSampleCheck:
    """A training set in FULL and as LIMITED samples of ``seed`` (``limited``) and ``seed + 1``
    (``next_seed``); ``same_seed_identical``: drawing with ``seed`` again gives the same rows in the same
    order; ``overlap_with_next_seed``: the share of ``limited``'s rows (compared by their first text
    column) also in ``next_seed``."""

    task: str
    seed: int
    full: Any
    limited: Any
    next_seed: Any
    same_seed_identical: bool
    overlap_with_next_seed: float

    def label_shares(self, label_names) -> pd.DataFrame | None:
        """The share of each label in FULL and in the two LIMITED samples (rows named by ``label_names``);
        None when the rows have no ``label`` column or there are no label names (QA, SL, regression)."""
        if "label" not in self.full.column_names or not label_names:
            return None
        dist = pd.DataFrame({"FULL": pd.Series(self.full["label"]).value_counts(normalize=True),
                             f"LIMITED (seed {self.seed})": pd.Series(self.limited["label"]).value_counts(normalize=True),
                             f"LIMITED (seed {self.seed + 1})": pd.Series(self.next_seed["label"]).value_counts(normalize=True)})
        dist.index = [label_names[i] for i in dist.index]
        return dist

    def key_numbers(self) -> dict[str, Any]:
        return {"task": self.task, "seed": self.seed, "full_size": len(self.full), "limited_size": len(self.limited),
                "same_seed_identical": self.same_seed_identical, "overlap_with_next_seed": self.overlap_with_next_seed}


def limited_sample_check(task: str, train, seed: int, n: int) -> LimitedSampleCheck:
    """Draw ``train`` (a ``datasets.Dataset``) in FULL and as LIMITED samples of ``n`` rows with ``seed`` (twice)
    and ``seed + 1`` (:func:`regimes.apply_regime`), and compare the samples by their first text column
    (``text_a``, ``question`` or ``tokens``)."""
    full = apply_regime(train, Regime.FULL, seed)
    limited = apply_regime(train, Regime.LIMITED, seed, n=n)
    again = apply_regime(train, Regime.LIMITED, seed, n=n)
    other = apply_regime(train, Regime.LIMITED, seed + 1, n=n)
    key = "text_a" if "text_a" in train.column_names else ("question" if "question" in train.column_names else "tokens")
    limited_rows, again_rows, other_rows = ([str(x) for x in ds[key]] for ds in (limited, again, other))
    overlap = len(set(limited_rows) & set(other_rows)) / max(len(limited_rows), 1)
    return LimitedSampleCheck(task=task, seed=seed, full=full, limited=limited, next_seed=other,
                              same_seed_identical=limited_rows == again_rows, overlap_with_next_seed=overlap)

"""One target's transfer runs, read from a study's records or fine-tuned here (notebook 2).

For a target, a transfer regime, a seed and a few sources, the runs that tell whether a source helped are
the target fine-tuned alone, each source fine-tuned in the source regime, and each source → target
transfer. A study (``study.py``) already runs all of them as jobs and keeps one record per finished job,
``<results>/records/<job id>.json``; this module finds those records by the study's job ids
(:func:`study.finetune_id`, :func:`study.transfer_id`) and fine-tunes with :func:`training.fine_tuning.fine_tune`
only what the records lack, in resumable run folders.

- :func:`transfer_job_ids`: the study's job ids of the runs, keyed ``"alone"``, ``<source>`` and
  ``<source>→<target>``;
- :func:`read_stored_runs`: the records among them that exist and were made with the same encoder;
- :func:`transfer_runs`: every run, read or trained, as one :class:`TransferRuns`, which also gives the
  tidy results table, the gains and the per-epoch curves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .jobs import finetune_id, transfer_id
from ..training.fine_tuning import RunResult, fine_tune

ALONE = "alone"


def _transfer_key(source: str, target: str) -> str:
    return f"{source}→{target}"


def transfer_job_ids(target: str, sources: Sequence[str], regime, seed: int) -> dict[str, str]:
    """The study's job ids of a target's runs in ``regime`` (a ``TransferRegime``): ``"alone"`` (the target
    fine-tuned from the pretrained encoder in the target regime), then per source ``<source>`` (its fine-tune
    in the source regime) and ``<source>→<target>`` (the transfer)."""
    ids = {ALONE: finetune_id(target, regime.target.value, seed)}
    for source in sources:
        ids[source] = finetune_id(source, regime.source.value, seed)
        ids[_transfer_key(source, target)] = transfer_id(source, target, regime.name, seed)
    return ids


def read_stored_runs(records_dir: str | os.PathLike, job_ids: Mapping[str, str], encoder: str) -> dict[str, RunResult]:
    """The runs of ``job_ids`` whose record ``<records_dir>/<job id>.json`` exists and was made with
    ``encoder`` (compared by :func:`embeddings.store.encoder_id`), keyed as in ``job_ids``. A record of
    another encoder is left out: that run is not the one asked for."""
    from ..embeddings.store import encoder_id

    wanted = encoder_id(encoder)
    stored = {}
    for key, job_id in job_ids.items():
        path = Path(records_dir) / f"{job_id}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if record["result"]["encoder"] == wanted:
                stored[key] = RunResult(**record["result"])
    return stored


@dataclass
class TransferRuns:
    """A target's runs in one transfer regime and seed: ``baseline`` (the target alone), ``source_runs``
    (each source's own fine-tune; None where the transfer was read from a record and the source's record
    is missing) and ``transfers`` (source → target), with ``from_records``, the keys of
    :func:`transfer_job_ids` that were read rather than trained."""

    target: str
    regime: Any  # TransferRegime
    seed: int
    baseline: RunResult
    source_runs: dict[str, RunResult | None]
    transfers: dict[str, RunResult]
    from_records: list[str] = field(default_factory=list)

    @property
    def target_metrics(self) -> tuple[str, ...]:
        from ..data.tasks import get_task

        return tuple(get_task(self.target).metrics)

    def kind(self, source: str) -> str:
        """"in-class" when the source's task class is the target's, else "out-of-class"."""
        from ..data.tasks import get_task

        same = get_task(source).task_class == get_task(self.target).task_class
        return "in-class" if same else "out-of-class"

    def labels(self) -> dict[str | None, str]:
        """A readable name per target-side run: None (the baseline) → "<target> alone", a source →
        "<source> → <target> (in-class)" or "(out-of-class)"."""
        return {None: f"{self.target} alone",
                **{s: f"{s} → {self.target} ({self.kind(s)})" for s in self.transfers}}

    def target_side_runs(self) -> dict[str | None, RunResult]:
        """The runs that end on the target: None → the baseline, then each source → its transfer."""
        return {None: self.baseline, **self.transfers}

    def results_table(self) -> pd.DataFrame:
        """The project's tidy transfer-results table (``source, target, regime, seed, score``; the baseline's
        source is None), as :func:`selection.evaluation.mean_transfer` reads it."""
        return pd.DataFrame([{"source": s, "target": self.target, "regime": self.regime.name, "seed": self.seed,
                              "score": r.score} for s, r in self.target_side_runs().items()])

    def gains(self) -> pd.DataFrame:
        """:func:`selection.evaluation.mean_transfer` of :meth:`results_table` plus ``kind`` (in-class or
        out-of-class), one row per source."""
        from ..selection.evaluation import mean_transfer

        gains = mean_transfer(self.results_table())
        gains["kind"] = gains["source"].map(self.kind)
        return gains

    def epoch_scores(self) -> pd.DataFrame:
        """Per target-side run and epoch, the dev score (:func:`training.metrics.task_score` of the epoch's metrics):
        columns ``run`` (its label), ``epoch``, ``score``."""
        from ..training.metrics import task_score

        label = self.labels()
        return pd.DataFrame([{"run": label[s], "epoch": rec["epoch"], "score": task_score(rec, self.target_metrics)}
                             for s, r in self.target_side_runs().items() for rec in r.epoch_metrics])

    def losses(self) -> pd.DataFrame:
        """Per target-side run, its training-loss curve: columns ``run`` (its label), ``epoch``, ``loss``."""
        label = self.labels()
        return pd.DataFrame([{"run": label[s], "epoch": p["epoch"], "loss": p["loss"]}
                             for s, r in self.target_side_runs().items() for p in r.loss_curve])


def transfer_runs(target: str, sources: Sequence[str], regime, *, encoder: str, seed: int = 0,
                  stored: Mapping[str, RunResult] | None = None, runs_dir: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None, max_train_examples: int | None = None,
                  max_eval_examples: int | None = None, num_epochs: int | None = None) -> TransferRuns:
    """Every run of a target and its ``sources`` in ``regime`` (a ``TransferRegime``): those in ``stored``
    (:func:`read_stored_runs`) as read, the rest fine-tuned with :func:`training.fine_tuning.fine_tune` into resumable
    folders under ``runs_dir`` — ``<target>.<target regime>.seed<k>``, ``<source>.<source regime>.seed<k>``,
    ``<source>_to_<target>.<SOURCE-TARGET>.seed<k>``.

    A transfer starts from its source run's weights (``init_from``), so a transfer that is not stored
    fine-tunes its source here too; a stored transfer keeps the stored source run, or None. Settings are
    the class presets (:func:`training.settings.preset`) with ``max_eval_examples`` and, when given, ``num_epochs``;
    ``max_train_examples`` caps every training set by a seeded LIMITED sample before the regime applies."""
    from ..data.loaders import load_task
    from ..data.regimes import Regime, apply_regime
    from ..training.settings import preset
    from ..data.tasks import get_task

    stored = dict(stored or {})
    runs_dir = Path(runs_dir)
    data: dict[str, Any] = {}

    def task_data(name: str):
        if name not in data:
            data[name] = load_task(name, data_dir=data_dir)
            if max_train_examples:
                data[name].splits["train"] = apply_regime(data[name].train, Regime.LIMITED, seed, n=max_train_examples)
        return data[name]

    def settings(name: str):
        return preset(get_task(name).task_class, max_eval_examples=max_eval_examples,
                      **({"num_epochs": num_epochs} if num_epochs else {}))

    baseline = stored.get(ALONE) or fine_tune(
        task_data(target), runs_dir / f"{target}.{regime.target.value}.seed{seed}", encoder=encoder,
        regime=regime.target, seed=seed, settings=settings(target))
    source_runs, transfers = {}, {}
    for source in sources:
        key = _transfer_key(source, target)
        if key in stored:
            transfers[source] = stored[key]
            source_runs[source] = stored.get(source)
            continue
        source_dir = runs_dir / f"{source}.{regime.source.value}.seed{seed}"
        source_runs[source] = fine_tune(task_data(source), source_dir, encoder=encoder, regime=regime.source,
                                        seed=seed, settings=settings(source))
        transfers[source] = fine_tune(
            task_data(target), runs_dir / f"{source}_to_{target}.{regime.name.replace('→', '-')}.seed{seed}",
            encoder=encoder, init_from=source_dir, regime=regime.target, seed=seed, settings=settings(target))
    return TransferRuns(target=target, regime=regime, seed=seed, baseline=baseline, source_runs=source_runs,
                        transfers=transfers, from_records=sorted(stored))

"""The key numbers each notebook saves with :func:`notebook_runner.save_key_numbers`
(``figures/<notebook>_key_numbers.json``), assembled from the objects the notebook computed.

One function per notebook whose dictionary is built from computed objects:

- :func:`finetune_and_transfer` (notebook 2): one target's runs (a :class:`study_runs.TransferRuns`);
- :func:`compute_taskemb` (notebook 5): TaskEmb per task and estimator, their similarities and the
  per-component comparison;
- :func:`evaluate_source_selection` (notebook 6): the study's evaluation tables.

Every value is plain JSON (str, int, float, bool, None, list, dict); the key order is the file's.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd


def finetune_and_transfer(runs, *, encoder: str, figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 2: the baseline score, each source's own score, transfer score and relative gain
    (:meth:`study_runs.TransferRuns.gains`), training-set sizes, and per target-side run (keyed by its
    label) the number of epochs, the per-epoch dev scores and the wall time."""
    from .metrics import task_score

    gains = runs.gains().set_index("source")
    label = runs.labels()
    target_side = runs.target_side_runs()
    return {
        "encoder": encoder,
        "regime": runs.regime.name,
        "seed": runs.seed,
        "target": runs.target,
        "target_metrics": list(runs.target_metrics),
        "from_study_records": list(runs.from_records),
        "baseline_score": runs.baseline.score,
        "sources": {s: {"kind": runs.kind(s),
                        "source_score": runs.source_runs[s].score if runs.source_runs[s] else None,
                        "transfer_score": r.score,
                        "rel_gain": float(gains.loc[s, "rel_gain"])}
                    for s, r in runs.transfers.items()},
        "train_examples": {"target": runs.baseline.train_examples,
                           **{s: r.train_examples for s, r in runs.source_runs.items() if r}},
        "epochs": {label[s]: len(r.epoch_metrics) for s, r in target_side.items()},
        "epoch_scores": {label[s]: [task_score(rec, runs.target_metrics) for rec in r.epoch_metrics]
                         for s, r in target_side.items()},
        "wall_time_s": {label[s]: r.wall_time_s for s, r in target_side.items()},
        "figures": list(figures),
    }


def compute_taskemb(taskemb, *, encoder: str, regime: str, labels: str, qa_loss: str, estimators: Sequence[str],
                    task_names: Sequence[str], map_component: str, shared: Sequence[str], noise: Sequence[str],
                    similarity: Mapping[str, pd.DataFrame], per_component: pd.DataFrame, embeddings_dir,
                    figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 5: the settings, the first task's component dimensions (first estimator), the shared and
    noise-only components, per estimator the similarity of every task pair on ``map_component`` (nested
    ``{a: {b: cosine}}``), the per-component table as records, and each task's Fisher-pass row count."""
    from .embedding_store import encoder_id

    first = taskemb[task_names[0], estimators[0]]
    return {
        "encoder": encoder,
        "encoder_id": encoder_id(encoder),
        "regime": regime,
        "labels": labels,
        "qa_loss": qa_loss,
        "estimators": list(estimators),
        "tasks": list(task_names),
        "map_component": map_component,
        "component_dims": {c: int(first[c].vector.shape[0]) for c in first},
        "shared_components": list(shared),
        "noise_components": list(noise),
        "similarity": {est: {a: {b: float(similarity[est].loc[a, b]) for b in task_names} for a in task_names}
                       for est in estimators},
        "per_component": per_component.to_dict(orient="records"),
        "num_examples": {n: taskemb[n, estimators[0]][map_component].meta["num_examples"] for n in task_names},
        "embeddings_dir": str(embeddings_dir),
        "figures": list(figures),
    }


def evaluate_source_selection(cfg, *, regimes: Sequence[str], targets: Sequence[str],
                              targets_by_regime: Mapping[str, Sequence[str]], claims: pd.DataFrame,
                              transfer_summary: pd.DataFrame, methods: Sequence[str], metrics: Sequence[str],
                              summary: pd.DataFrame, per_target: pd.DataFrame, random_check: pd.DataFrame,
                              paired: pd.DataFrame, spread: pd.DataFrame, example,
                              figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 6: the study's name (``cfg``, a ``StudyConfig``), the evaluated regimes and targets, the claims
    and transfer summary as records, every summary cell of ``metrics`` keyed
    ``method|regime|candidate_set|target_class|metric``, the seed-averaged per-target ρ, NDCG and candidate
    count keyed ``method|regime|candidate_set|target``, the Random check, the paired comparisons, the target
    spread, and the example ranking (a :class:`selection_analysis.ExampleRanking`)."""
    cells = summary[summary["metric"].isin(list(metrics))]
    seed_averaged = per_target[per_target["seed"].isna()].rename(columns=lambda c: c.replace("@", "_at_"))
    return {
        "study": cfg.name,
        "regimes": list(regimes),
        "targets": list(targets),
        "targets_by_regime": {r: list(ts) for r, ts in targets_by_regime.items()},
        "claims": claims.to_dict(orient="records"),
        "transfer_summary": transfer_summary.to_dict(orient="records"),
        "methods": list(methods),
        "metrics": list(metrics),
        "summary": {f"{r.method}|{r.regime}|{r.candidate_set}|{r.target_class}|{r.metric}": r.value
                    for r in cells.itertuples(index=False)},
        "per_target": {f"{r.method}|{r.regime}|{r.candidate_set}|{r.target}": {m: getattr(r, m.replace("@", "_at_"), None)
                                                                               for m in ("rho", "ndcg", "n_candidates")}
                       for r in seed_averaged.itertuples(index=False)},
        "random_check": random_check[["regime", "candidate_set", "target", "rho_exact", "rho_sampled", "rho_se"]]
        .to_dict(orient="records"),
        "paired": paired.to_dict(orient="records"),
        "target_spread": spread.to_dict(orient="records"),
        "example": {"regime": example.regime, "target": example.target, "method": example.method,
                    "ranking": example.ranking[["source", "score", "rank"]].to_dict(orient="records"),
                    "rel_gain": example.truth.to_dict()},
        "figures": list(figures),
    }

"""The key numbers each notebook saves with :func:`notebook_runner.save_key_numbers`
(``figures/<notebook>_key_numbers.json``), assembled from the objects the notebook computed.

One function per notebook whose dictionary is built from computed objects:

- :func:`explore_tasks` (notebook 1): the paper's tasks, the suite's sizes, the LIMITED sample check;
- :func:`finetune_and_transfer` (notebook 2): one target's runs (a :class:`study.transfer_runs.TransferRuns`);
- :func:`run_transfer_study` (notebook 3): the study's gains, best sources and shares of helpful pairs;
- :func:`compute_textemb` (notebook 4): TextEmb per task, their similarities and nearest tasks;
- :func:`compute_taskemb` (notebook 5): TaskEmb per task and estimator, their similarities and the
  per-component comparison;
- :func:`evaluate_source_selection` (notebook 6): the study's evaluation tables.

Notebooks 7 and 8 save values they hold directly (a ranking, run times) and build their dictionaries in place.

Every value is plain JSON (str, int, float, bool, None, list, dict); the key order is the file's.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd


def finetune_and_transfer(runs, *, encoder: str, figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 2: the baseline score, each source's own score, transfer score and relative gain
    (:meth:`study.transfer_runs.TransferRuns.gains`), training-set sizes, and per target-side run (keyed by its
    label) the number of epochs, the per-epoch dev scores and the wall time."""
    from .training.metrics import task_score

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
                    figures: Sequence[str], qa_loss_moves: pd.DataFrame | None = None,
                    variant_table: pd.DataFrame | None = None) -> dict[str, Any]:
    """Notebook 5: the settings, the first task's component dimensions (first estimator), the shared and
    noise-only components, per estimator the similarity of every task pair on ``map_component`` (nested
    ``{a: {b: cosine}}``), the per-component table as records, and each task's Fisher-pass row count; when
    given and not empty, the QA-loss comparison and the TaskEmb variants' evaluation, as records."""
    from .embeddings.store import encoder_id

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
        **({"qa_loss_moves": qa_loss_moves.to_dict(orient="records")}
           if qa_loss_moves is not None and not qa_loss_moves.empty else {}),
        **({"taskemb_variants": variant_table.to_dict(orient="records")}
           if variant_table is not None and variant_table["method"].nunique() > 1 else {}),
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
    spread, and the example ranking (a :class:`study.selection_analysis.ExampleRanking`)."""
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


def run_transfer_study(cfg, *, results: pd.DataFrame, gains: pd.DataFrame, regimes: Sequence[str],
                       complete_targets: Mapping[str, Sequence[str]], taskemb_choice: Mapping[tuple[str, str], str],
                       source_sizes: Mapping[str, int], figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 3: the study (``cfg``, a ``StudyConfig``: its name and config file name, never a path), the
    run counts of the results table, and per regime of ``regimes`` each target's baseline score, every pair's
    relative gain (``"<source>-><target>"``), each target's best source
    (:func:`study.transfer_analysis.best_sources`), the share of helpful pairs overall and per ``<target
    class>/<in|out>`` (:func:`study.transfer_analysis.helpful_share`), and the mean relative gain; plus the
    complete targets, TaskEmb's choices (``"<regime>|<target>"``) and the sources' training-set sizes."""
    from .study.transfer_analysis import best_sources, helpful_share

    best = best_sources(gains)
    share = helpful_share(gains)
    in_regime = {r: gains[gains["regime"] == r] for r in regimes}
    return {
        "study": cfg.name,
        "config": cfg.config_path.name,  # the file name only: no machine path in the committed numbers
        "regimes": list(regimes),
        "tasks": cfg.tasks,
        "n_runs": len(results),
        "n_baselines": int(results["source"].isna().sum()),
        "n_transfers": int(results["source"].notna().sum()),
        "baseline_score": {r: g.groupby("target")["baseline_score"].first().to_dict() for r, g in in_regime.items()},
        "rel_gain": {r: {f"{s}->{t}": v for s, t, v in g[["source", "target", "rel_gain"]].itertuples(index=False)}
                     for r, g in in_regime.items()},
        "best_source": {r: best[best["regime"] == r].set_index("target")[["source", "rel_gain", "in_class"]]
                        .to_dict(orient="index") for r in regimes},
        "share_positive": {r: float((g["rel_gain"] > 0).mean()) for r, g in in_regime.items()},
        "mean_rel_gain": {r: float(g["rel_gain"].mean()) for r, g in in_regime.items()},
        "complete_targets": complete_targets,
        "taskemb_choice": {f"{r}|{t}": s for (r, t), s in taskemb_choice.items()},
        "share_positive_by_class": {r: {f"{tc}/{'in' if ic else 'out'}": v
                                        for (tc, ic), v in share.xs(r, level="regime").items()} for r in regimes},
        "source_sizes": dict(source_sizes),
        "figures": list(figures),
    }


def compute_textemb(embeddings, *, encoder: str, regime: str, similarity: pd.DataFrame, nearest: pd.DataFrame,
                    embeddings_dir, figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 4: the settings, the tasks (``embeddings``: task → TextEmb, in order), the dimension, each
    task's row count, the similarity of every task pair (nested ``{a: {b: cosine}}``), each task's nearest
    other task (the ``#1`` column of :func:`selection.embedding_analysis.nearest_sources`) and the share of tasks whose
    nearest task shares its class."""
    from .embeddings.store import encoder_id

    tasks = list(embeddings)
    return {
        "encoder": encoder,
        "encoder_id": encoder_id(encoder),
        "regime": regime,
        "tasks": tasks,
        "dim": int(next(iter(embeddings.values())).vector.shape[0]),
        "num_examples": {n: e.meta["num_examples"] for n, e in embeddings.items()},
        "similarity": {a: {b: float(similarity.loc[a, b]) for b in tasks} for a in tasks},
        "nearest": dict(zip(nearest["target"], nearest["#1"].str.split(" ").str[0])),
        "nearest_in_class_share": float(nearest["nearest in-class"].mean()),
        "embeddings_dir": str(embeddings_dir),
        "figures": list(figures),
    }


def explore_tasks(*, paper: pd.DataFrame, suite: str, sizes: pd.DataFrame, limited, figures: Sequence[str]) -> dict[str, Any]:
    """Notebook 1: the paper's task count, per class and readable offline (``paper``:
    :func:`data.overview.paper_tasks_table`), the suite's tasks with their training and validation sizes
    (``sizes``: :func:`data.overview.task_sizes_table`) and the LIMITED sample check (``limited``: a
    :class:`data.overview.LimitedSampleCheck`)."""
    return {
        "n_paper_tasks": len(paper),
        "paper_tasks_per_class": paper.groupby("class").size().to_dict(),
        "n_paper_tasks_local": int(paper["local"].sum()),
        "suite": suite,
        "suite_tasks": list(sizes["task"]),
        "train_examples": dict(zip(sizes["task"], sizes["train_examples"])),
        "validation_examples": dict(zip(sizes["task"], sizes["validation_examples"])),
        "limited": limited.key_numbers(),
        "figures": list(figures),
    }

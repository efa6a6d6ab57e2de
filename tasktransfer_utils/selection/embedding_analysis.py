"""Task embeddings of a set of tasks, read from an embedding library or computed, and compared
(notebooks 4 and 5).

TextEmb (``embeddings.textemb.compute_textemb``) is one vector per task. A TaskEmb (``embeddings.taskemb.compute_taskemb``) is one
embedding per *component* (an activation site or weight matrix) of the model fine-tuned on a task; here
``taskemb`` is a mapping ``(task, estimator) -> {component: TaskEmbedding}``.

- :func:`load_or_compute_textemb`: each task's TextEmb, read from the library or computed;
- :func:`nearest_sources`: per task, its most similar other tasks and whether the nearest shares its class;
- :func:`load_or_compute_taskemb`: the TaskEmb mapping for every task and estimator, read from the library or
  (with ``recompute``) fine-tuned with :func:`training.fine_tuning.fine_tune` and computed;
- :func:`estimators_with_every_task`: the estimators the mapping holds for every task;
- :func:`component_table`: one task's components with their layer, kind, dimension and norm;
- :func:`noise_components`, :func:`noise_notes`: the components flagged as rounding noise in any task;
- :func:`shared_components`, :func:`choose_map_component`: the components every task has and that are not
  noise, and the one a heatmap and map show;
- :func:`similarity_by_estimator`: the tasks' cosine-similarity matrix of one component, per estimator;
- :func:`per_component_table`: per component, the share of tasks whose nearest other task shares its class,
  and the rank correlation between two estimators' similarities;
- :func:`qa_loss_comparison`: per QA task and component, how far the authors' QA loss moves the TaskEmb from
  the masked one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..embeddings.store import TaskEmbedding, encoder_id, is_noise_only
from ..embeddings.taskemb import parse_component

TaskEmbMap = Mapping[tuple[str, str], Mapping[str, TaskEmbedding]]


def load_or_compute_textemb(task_names: Sequence[str], library, *, encoder: str, regime: str, seed: int,
                            max_examples: int | None, recompute: bool, data_dir: str | os.PathLike | None = None,
                            log: Callable[[str], Any] = print) -> dict[str, TaskEmbedding]:
    """Each task's TextEmb: the one ``library`` (an ``EmbeddingLibrary``) holds for this encoder, regime, seed
    and row cap ``max_examples``, or (none stored, or ``recompute``) :func:`embeddings.textemb.compute_textemb` of the
    task's data, added to the library. Logs one line per task: loaded or computed, dimension, rows."""
    from ..data.loaders import load_task
    from ..embeddings.textemb import compute_textemb

    embeddings = {}
    for name in task_names:
        stored = library.load(task=name, method="TextEmb", encoder_id=encoder_id(encoder), regime=regime, seed=seed,
                              max_examples=lambda stored_cap: stored_cap == max_examples)
        if stored and not recompute:
            embeddings[name] = stored[0]
            how = "loaded"
        else:
            embeddings[name] = compute_textemb(load_task(name, data_dir=data_dir), encoder=encoder, regime=regime,
                                               seed=seed, max_examples=max_examples)
            library.add([embeddings[name]])
            how = f"computed in {embeddings[name].meta['wall_time_s']:.1f} s"
        log(f"{name:10s} {how:22s} dim={embeddings[name].vector.shape[0]}  "
            f"examples={embeddings[name].meta['num_examples']}")
    return embeddings


def nearest_sources(vectors: Mapping[str, np.ndarray], k: int = 3, method: str = "TextEmb") -> pd.DataFrame:
    """Per task of ``vectors`` (in their order), its ``k`` most similar other tasks by cosine
    (:class:`selection.CosineRanker`): columns ``target``, ``class``, ``#1`` ... ``#k`` (``"<task> (<cosine>)"``)
    and ``nearest in-class`` (the first shares the target's class)."""
    from .rankers import CosineRanker
    from ..data.tasks import get_task

    names = list(vectors)
    ranker = CosineRanker(dict(vectors), method=method)
    rows = []
    for name in names:
        ranking = ranker.rank(name, [t for t in names if t != name]).head(k)
        rows.append({"target": name, "class": get_task(name).task_class.value,
                     **{f"#{i + 1}": f"{s} ({c:.3f})" for i, (s, c) in enumerate(zip(ranking["source"], ranking["score"]))},
                     "nearest in-class": get_task(ranking["source"].iloc[0]).task_class == get_task(name).task_class})
    return pd.DataFrame(rows)


def load_or_compute_taskemb(task_names: Sequence[str], estimators: Sequence[str], library, *, encoder: str,
                            regime: str, labels: str, seed: int, qa_loss: str, recompute: bool,
                            components: Sequence[str], runs_dir: str | os.PathLike,
                            data_dir: str | os.PathLike | None = None, max_train_examples: int | None = None,
                            max_eval_examples: int | None = None, num_epochs: int | None = None,
                            max_examples: int | None = None, log: Callable[[str], Any] = print
                            ) -> tuple[dict[tuple[str, str], dict[str, TaskEmbedding]], list[tuple[str, str]]]:
    """TaskEmb per (task, estimator): read from ``library`` (an ``EmbeddingLibrary``) when it holds one made
    with this encoder, estimator, label source, regime and seed (and, for a QA task, ``qa_loss``; a stored QA
    TaskEmb without the field counts as "masked"); with ``recompute`` fine-tuned instead
    (:func:`training.fine_tuning.fine_tune` into ``runs_dir/<task>.<regime>.seed<k>``, resumable; ``max_train_examples``
    caps the training set by a seeded sample first) and computed over the run's rows
    (:func:`embeddings.taskemb.compute_taskemb` of ``components`` plus ``cls_output`` for CR and QA), then added to the
    library. Returns the mapping and the (task, estimator) pairs neither stored nor computed."""
    from ..data.loaders import load_task
    from ..data.regimes import Regime, apply_regime
    from ..training.settings import preset
    from ..embeddings.taskemb import compute_taskemb
    from ..data.tasks import TaskClass, get_task
    from ..training.fine_tuning import fine_tune

    taskemb, missing = {}, []
    same_qa_loss = lambda v: (v or "masked") == qa_loss  # noqa: E731  (a stored QA TaskEmb without the field: masked)
    for name in task_names:
        spec = get_task(name)
        for estimator in estimators:
            stored = library.load(task=name, method="TaskEmb", encoder_id=encoder_id(encoder), estimator=estimator,
                                  label_source=labels, regime=regime, seed=seed,
                                  qa_loss=same_qa_loss if spec.task_class is TaskClass.QA else None)
            if stored and not recompute:
                taskemb[name, estimator] = {e.component: e for e in stored}
                continue
            if not recompute:
                missing.append((name, estimator))
                continue
            data = load_task(name, data_dir=data_dir)
            if max_train_examples:
                data.splits["train"] = apply_regime(data.train, Regime.LIMITED, seed, n=max_train_examples)
            run_dir = Path(runs_dir) / f"{name}.{regime}.seed{seed}"
            run = fine_tune(data, run_dir, encoder=encoder, regime=regime, seed=seed,
                            settings=preset(spec.task_class, max_eval_examples=max_eval_examples,
                                            **({"num_epochs": num_epochs} if num_epochs else {})))
            wanted = list(components) + (["cls_output"] if spec.task_class is not TaskClass.SL else [])
            taskemb[name, estimator] = compute_taskemb(data, run_dir, estimator=estimator, labels=labels, seed=seed,
                                                       max_examples=max_examples, components=wanted, qa_loss=qa_loss)
            library.add(taskemb[name, estimator])
            log(f"{name:10s} {estimator:9s} fine-tuned score {run.score:.3f}; "
                f"{len(taskemb[name, estimator])} components in "
                f"{next(iter(taskemb[name, estimator].values())).meta['wall_time_s']:.1f} s")
    return taskemb, missing


def estimators_with_every_task(taskemb: TaskEmbMap, task_names: Sequence[str], estimators: Sequence[str],
                               where: Any = "the library") -> list[str]:
    """The ``estimators`` (in their order) for which ``taskemb`` holds every task; raises FileNotFoundError
    naming ``where`` when none does."""
    complete = [est for est in estimators if all((n, est) in taskemb for n in task_names)]
    if not complete:
        raise FileNotFoundError(f"no estimator has a stored TaskEmb for every task in {where}; "
                                "set recompute = True, or run the study (notebook 3)")
    return complete


def component_table(embeddings: Mapping[str, TaskEmbedding]) -> pd.DataFrame:
    """One task's components: ``component``, the fields of :func:`embeddings.taskemb.parse_component` (layer, kind, ...),
    ``dim`` (the vector's length) and ``norm`` (its Euclidean norm)."""
    return pd.DataFrame([{"component": c, **parse_component(c), "dim": e.vector.shape[0],
                          "norm": float(np.linalg.norm(e.vector))} for c, e in embeddings.items()])


def noise_components(taskemb: TaskEmbMap) -> list[str]:
    """The components flagged as rounding noise (:func:`embeddings.store.is_noise_only`) in any task and
    estimator, sorted: zero in exact arithmetic, so no coordinate of the task space."""
    return sorted({c for d in taskemb.values() for c, e in d.items() if is_noise_only(e)})


def noise_notes(taskemb: TaskEmbMap) -> list[str]:
    """One line per noise-only (task, component, estimator): the reasons, the norm relative to the median
    component and the rule that flagged it."""
    return [f"left out: {name} {c} ({est}): {'+'.join(e.meta['noise_reasons'])}, norm "
            f"{e.meta['relative_norm']:.1e} x the median; {e.meta.get('noise_rule')}"
            for (name, est), d in taskemb.items() for c, e in d.items() if is_noise_only(e)]


def shared_components(taskemb: TaskEmbMap) -> list[str]:
    """The components every (task, estimator) has, less :func:`noise_components`, sorted."""
    return sorted(set.intersection(*(set(d) for d in taskemb.values())) - set(noise_components(taskemb)))


def choose_map_component(shared: Sequence[str], noise: Iterable[str], map_component: str | None = None) -> str:
    """The component to draw: ``map_component`` when given (ValueError when it is noise in some task); else the
    deepest ``layer_output`` among ``shared`` (the deepest shared component when there is none)."""
    if map_component is None:
        outputs = [c for c in shared if parse_component(c)["kind"] == "layer_output"]
        return max(outputs or shared, key=lambda c: (parse_component(c)["layer"] or -1, c))
    if map_component in set(noise):
        raise ValueError(f"map_component {map_component!r} holds only rounding noise in some task; "
                         f"choose one of {list(shared)}")
    return map_component


def similarity_by_estimator(taskemb: TaskEmbMap, task_names: Sequence[str], estimators: Sequence[str],
                            component: str) -> dict[str, pd.DataFrame]:
    """Per estimator, :func:`embeddings.similarity.cosine_similarity_matrix` of the tasks' ``component`` (rows and
    columns in ``task_names`` order)."""
    from ..embeddings.similarity import cosine_similarity_matrix

    return {est: cosine_similarity_matrix([taskemb[n, est][component] for n in task_names]) for est in estimators}


def per_component_table(taskemb: TaskEmbMap, task_names: Sequence[str], estimators: Sequence[str],
                        components: Sequence[str]) -> pd.DataFrame:
    """Per component (and the fields of :func:`embeddings.taskemb.parse_component`): for each estimator, the share of
    tasks whose most similar other task (:class:`selection.CosineRanker`'s first source) is of the same
    class, column ``nearest in-class (<estimator>)``; with exactly two estimators, Spearman's correlation of
    their similarities over all ordered task pairs, column ``spearman(<a>, <b>)``."""
    from .rankers import CosineRanker
    from ..embeddings.similarity import cosine_similarity_matrix
    from ..data.tasks import get_task

    pair_mask = ~np.eye(len(task_names), dtype=bool)
    rows = []
    for comp in components:
        row = {"component": comp, **parse_component(comp)}
        sims = {}
        for est in estimators:
            ranker = CosineRanker({n: taskemb[n, est][comp].vector for n in task_names}, method=f"TaskEmb[{comp}]")
            top = [ranker.rank(n, [t for t in task_names if t != n])["source"].iloc[0] for n in task_names]
            row[f"nearest in-class ({est})"] = float(np.mean([get_task(a).task_class == get_task(b).task_class
                                                              for a, b in zip(task_names, top)]))
            sims[est] = cosine_similarity_matrix([taskemb[n, est][comp] for n in task_names]).to_numpy()[pair_mask]
        if len(estimators) == 2:
            a, b = estimators
            row[f"spearman({a}, {b})"] = pd.Series(sims[a]).corr(pd.Series(sims[b]), method="spearman")
        rows.append(row)
    return pd.DataFrame(rows)


def qa_loss_comparison(library, task_names: Sequence[str], *, encoder: str, regime: str, seed: int,
                       estimator: str = "paper", labels: str = "gold") -> pd.DataFrame:
    """How much the QA loss moves a QA task's TaskEmb: for every QA task of ``task_names`` whose TaskEmb
    ``library`` holds under both losses (the masked one, also a stored QA TaskEmb without the field, and the
    authors'), one row per component both hold: ``cosine`` between the two vectors, ``rel_diff``
    (‖authors − masked‖ / ‖masked‖, float64) and whether each is flagged as rounding noise. Empty (with
    these columns) when no task has both."""
    from ..data.tasks import TaskClass, get_task

    columns = ["task", "component", "cosine", "rel_diff", "noise_masked", "noise_authors"]
    rows = []
    for name in task_names:
        if get_task(name).task_class is not TaskClass.QA:
            continue
        by_loss: dict[str, dict[str, TaskEmbedding]] = {}
        for e in library.load(task=name, method="TaskEmb", encoder_id=encoder_id(encoder), estimator=estimator,
                              label_source=labels, regime=regime, seed=seed):
            by_loss.setdefault(e.meta.get("qa_loss") or "masked", {})[e.component] = e
        masked, authors = by_loss.get("masked", {}), by_loss.get("authors", {})
        order = lambda c: (parse_component(c)["layer"] is None, parse_component(c)["layer"] or 0, c)  # noqa: E731
        for comp in sorted(set(masked) & set(authors), key=order):
            m = masked[comp].vector.astype(np.float64)
            a = authors[comp].vector.astype(np.float64)
            norm_m, norm_a = np.linalg.norm(m), np.linalg.norm(a)
            rows.append({"task": name, "component": comp,
                         "cosine": float(m @ a / (norm_m * norm_a)) if norm_m and norm_a else float("nan"),
                         "rel_diff": float(np.linalg.norm(a - m) / norm_m) if norm_m else float("inf"),
                         "noise_masked": is_noise_only(masked[comp]), "noise_authors": is_noise_only(authors[comp])})
    return pd.DataFrame(rows, columns=columns)

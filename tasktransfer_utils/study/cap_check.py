"""Does capping the FULL sources' embedding passes change the rankings? (``embeddings.full_max_examples``)

A study may embed its FULL-regime sources from a seeded sample of at most ``full_max_examples`` training rows
instead of the whole training set (the offline study: 10,000 rows, which only SST-2 and NER exceed). That is
a fine shortcut only if it does not change which sources a target is given. :func:`check_embedding_cap`
measures it:

1. for every source of a FULL→… regime whose FULL training set exceeds the cap, the embedding over *every*
   training row, computed exactly as the study's job computes the capped one (TextEmb: the pretrained
   encoder; TaskEmb: the study's first TaskEmb variant on the source's FULL model, which must be on disk:
   ``tasktransfer study rebuild-models CONFIG --regime FULL``), stored in ``<results_dir>/cap_check/``
   (resumable: an embedding already there is read, not recomputed);
2. per capped source and component, the cosine between the capped and the uncapped embedding;
3. per FULL→… regime, method and target, the ranking of the regime's sources by the study's (capped)
   embeddings and by the same embeddings with the capped sources' replaced by the uncapped ones: Spearman's
   correlation between the two rankings' scores, whether the first choice is the same, and each capped
   source's rank in both.

Written to ``<results_dir>/evaluation/embedding_cap_cosines.csv`` and ``embedding_cap_check.csv``; a run limited to
one method (``--method``) keeps the rows an earlier run wrote for the other. Rankings
use every source whose FULL embedding the study holds so far (``n_sources`` says how many) and every target
with its embedding; TaskEmb is the fused ranking (RRF of the components that are not rounding noise), as in
the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..data.regimes import get_transfer_regime
from ..embeddings.store import EmbeddingLibrary, TaskEmbedding, of_taskemb_variant
from ..errors import UsageError
from .config import StudyConfig

METHODS = ("TextEmb", "TaskEmb")
CAP_DIR = "cap_check"


def capped_sources(cfg: StudyConfig, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """The FULL-regime sources whose training set exceeds ``full_max_examples``: {task: training rows}.
    ``sizes`` (task -> FULL training rows) is counted on the data when not given."""
    from ..data.loaders import task_size

    if cfg.full_max_examples is None:
        return {}
    full_sources = sorted({s for name in cfg.regimes if get_transfer_regime(name).source.value == "FULL"
                           for s in cfg.sources})
    out = {}
    for task in full_sources:
        n = sizes[task] if sizes is not None else task_size(task, data_dir=cfg.data_dir, source=cfg.data_source,
                                                             seed=cfg.data_seed)
        if n > cfg.full_max_examples:
            out[task] = int(n)
    return out


def _study_embeddings(cfg: StudyConfig, method: str) -> list[TaskEmbedding]:
    """The study's stored embeddings of ``method`` (TaskEmb: its first variant, the one it ranks with)."""
    lib = EmbeddingLibrary(cfg.results_dir / "embeddings")
    return of_taskemb_variant(lib.load(method=method, seed=cfg.seeds[0]), cfg.taskemb[0])


def _uncapped(cfg: StudyConfig, task: str, method: str, log: Callable[[str], Any]) -> list[TaskEmbedding] | None:
    """The uncapped FULL embedding(s) of ``task``: read from ``<results_dir>/cap_check`` or computed as the
    study's job computes the capped one, without the cap; None for a TaskEmb whose FULL model is not on disk."""
    from .jobs import finetune_id, taskemb_id, textemb_id
    from .plan import plan_for
    from .source_models import model_run_dir

    lib = EmbeddingLibrary(cfg.results_dir / CAP_DIR)
    seed = cfg.seeds[0]
    stored = lib.load(task=task, method=method, regime="FULL", seed=seed)
    stored = of_taskemb_variant(stored, cfg.taskemb[0])  # TaskEmb: the study's first variant
    if stored:
        return stored
    jobs = plan_for(cfg).by_id
    if method == "TextEmb":
        from .job_functions import textemb_for_job

        params = {k: v for k, v in jobs[textemb_id(task, "FULL", seed)].params.items() if k != "max_examples"}
        log(f"{task}: TextEmb over every FULL training row")
        emb = textemb_for_job(params, cfg)
        lib.add([emb])
        return [emb]
    from ..training.fine_tuning import MODEL_SUBDIR
    from .job_functions import taskemb_for_job

    v = cfg.taskemb[0]
    job = jobs[taskemb_id(task, "FULL", seed, v["estimator"], v["labels"],
                          v.get("qa_loss") if jobs[finetune_id(task, "FULL", seed)].params["task_class"] == "QA"
                          else None)]
    params = {k: x for k, x in job.params.items() if k != "max_examples"}
    model_dir = model_run_dir(cfg, finetune_id(task, "FULL", seed))
    if not (model_dir / MODEL_SUBDIR).is_dir():
        log(f"{task}: no FULL model in {model_dir} (tasktransfer study rebuild-models CONFIG --task {task} "
            f"--regime FULL); its uncapped TaskEmb is left out")
        return None
    log(f"{task}: TaskEmb over every FULL training row")
    embs = taskemb_for_job(params, cfg, model_dir)
    lib.add(list(embs.values()))
    return list(embs.values())


def cap_rank_changes(source_embs: Sequence[TaskEmbedding], uncapped: dict[str, list[TaskEmbedding]],
                     target_embs: Sequence[TaskEmbedding], method: str, regime: str) -> pd.DataFrame:
    """Per target of ``target_embs``: the ranking of the sources (every task of ``source_embs`` but the target)
    with the stored embeddings and with ``uncapped`` {task: embeddings} put in place of the stored ones of those
    tasks; columns regime, method, target, n_sources, spearman (of the two rankings' scores), same_first,
    first_capped, first_uncapped, and per capped task ``rank_<task>`` / ``rank_<task>_uncapped``."""
    from scipy.stats import spearmanr

    from ..selection.rankers import embedding_rankers

    replaced = [e for e in source_embs if e.task not in uncapped] + [e for es in uncapped.values() for e in es]
    sources = sorted({e.task for e in source_embs})
    capped_ranker = embedding_rankers(list(source_embs), list(target_embs))[method]  # built once, ranks every target
    uncapped_ranker = embedding_rankers(replaced, list(target_embs))[method]
    rows = []
    for target in sorted({e.task for e in target_embs}):
        candidates = [s for s in sources if s != target]
        a = capped_ranker.rank(target, candidates).set_index("source")
        b = uncapped_ranker.rank(target, candidates).set_index("source")
        rho = spearmanr(a.loc[candidates, "score"], b.loc[candidates, "score"]).statistic
        first_a, first_b = a["rank"].idxmin(), b["rank"].idxmin()
        row = {"regime": regime, "method": method, "target": target, "n_sources": len(candidates),
               "spearman": float(rho), "same_first": bool(first_a == first_b), "first_capped": first_a,
               "first_uncapped": first_b}
        for task in sorted(uncapped):
            if task in candidates:
                row[f"rank_{task}"] = int(a.loc[task, "rank"])
                row[f"rank_{task}_uncapped"] = int(b.loc[task, "rank"])
        rows.append(row)
    return pd.DataFrame(rows)


def cap_cosines(capped: Sequence[TaskEmbedding], uncapped: Sequence[TaskEmbedding]) -> pd.DataFrame:
    """Per (task, component) held both capped and uncapped: the cosine of the two vectors (float64) and the
    rows each pass used."""
    by_key = {(e.task, e.component): e for e in capped}
    rows = []
    for e in uncapped:
        c = by_key.get((e.task, e.component))
        if c is None:
            continue
        x, y = c.vector.astype(np.float64), e.vector.astype(np.float64)
        rows.append({"task": e.task, "method": e.method, "component": e.component,
                     "cosine": float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))),
                     "rows_capped": c.meta.get("num_examples"), "rows_uncapped": e.meta.get("num_examples")})
    return pd.DataFrame(rows, columns=["task", "method", "component", "cosine", "rows_capped", "rows_uncapped"])


def _with_other_methods(path: Path, table: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``table`` (this run's rows, of ``methods``) after the rows of ``path`` (an earlier run's file, if any) whose
    method is not among ``methods``, in :data:`METHODS` order."""
    if not path.is_file():
        return table
    try:
        earlier = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):  # an empty or unreadable file: nothing to keep
        return table
    if "method" not in earlier.columns:
        return table
    kept = earlier[~earlier["method"].isin(list(methods))]
    if kept.empty:
        return table
    both = pd.concat([kept, table], ignore_index=True) if not table.empty else kept.reset_index(drop=True)
    order = {m: i for i, m in enumerate(METHODS)}
    return both.sort_values("method", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)


def check_embedding_cap(cfg: StudyConfig, methods: Sequence[str] = METHODS, *,
                        log: Callable[[str], Any] = print) -> dict[str, Path]:
    """The cap check of the module docstring; returns {"cosines": path, "rankings": path}."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--method {', '.join(unknown)}: expected one of {', '.join(METHODS)}")
    if cfg.full_max_examples is None:
        raise UsageError(f"{cfg.config_path}: embeddings.full_max_examples is not set, so nothing is capped")
    capped = capped_sources(cfg)
    log(f"capped FULL sources (more than {cfg.full_max_examples} training rows): "
        + (", ".join(f"{t} ({n})" for t, n in capped.items()) or "none"))
    cos_tables, rank_tables = [], []
    for method in methods:
        study = _study_embeddings(cfg, method)
        uncapped = {}
        for task in capped:
            if not [e for e in study if e.task == task and e.meta.get("regime") == "FULL"]:
                log(f"{task}: the study has no FULL {method} yet; left out")
                continue
            embs = _uncapped(cfg, task, method, log)
            if embs:
                uncapped[task] = embs
        if not uncapped:
            continue
        cos_tables.append(cap_cosines([e for e in study if e.meta.get("regime") == "FULL"],
                                      [e for es in uncapped.values() for e in es]))
        for name in cfg.regimes:
            regime = get_transfer_regime(name)
            if regime.source.value != "FULL":
                continue
            sources = [e for e in study if e.meta.get("regime") == "FULL" and e.task in cfg.sources]
            targets = [e for e in study if e.meta.get("regime") == regime.target.value and e.task in cfg.targets]
            if method == "TaskEmb":  # the components every source and target holds
                common = set.intersection(*({e.component for e in sources + targets if e.task == t}
                                            for t in {e.task for e in sources + targets}))
                sources = [e for e in sources if e.component in common]
                targets = [e for e in targets if e.component in common]
                uncapped = {t: [e for e in es if e.component in common] for t, es in uncapped.items()}
            rank_tables.append(cap_rank_changes(sources, uncapped, targets, method, regime.name))
    out = cfg.results_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cosines": out / "embedding_cap_cosines.csv", "rankings": out / "embedding_cap_check.csv"}
    cosines = pd.concat(cos_tables, ignore_index=True) if cos_tables else cap_cosines([], [])
    rankings = pd.concat(rank_tables, ignore_index=True) if rank_tables else pd.DataFrame()
    # a run that checks some methods keeps the rows an earlier run wrote for the others
    cosines = _with_other_methods(paths["cosines"], cosines, methods)
    rankings = _with_other_methods(paths["rankings"], rankings, methods)
    cosines.to_csv(paths["cosines"], index=False, float_format="%.6g")
    rankings.to_csv(paths["rankings"], index=False, float_format="%.6g")
    for (regime, method), grp in rankings.groupby(["regime", "method"]) if not rankings.empty else ():
        log(f"{regime} {method}: {len(grp)} targets, first choice unchanged for {int(grp['same_first'].sum())}, "
            f"Spearman of the two rankings min {grp['spearman'].min():.3f}, median {grp['spearman'].median():.3f}")
    return paths

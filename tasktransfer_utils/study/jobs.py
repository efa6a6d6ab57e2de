"""A study's job graph: the job ids, one job per (kind, task, regime, seed, ...) with its params and
dependencies, in the runner's order (every fine-tune, cheapest class first; the embeddings; then target by
target its LogME scores and transfers), and a finished job's one-line outcome."""

from __future__ import annotations

from typing import Mapping

from ..embeddings.store import LEGACY_QA_LOSS
from .config import StudyConfig
from .runner import Job


CLASS_ORDER = ("CR", "SL", "QA")  # cheapest first on a CPU
#: Relative cost of a LIMITED fine-tune per class (used for the ETA until times are measured).
CLASS_COST = {"CR": 1.0, "SL": 2.0, "QA": 4.0}
FULL_COST_FACTOR = 10.0


# --------------------------------------------------------------------------------------------------
# Job graph
# --------------------------------------------------------------------------------------------------


def finetune_id(task: str, regime: str, seed: int) -> str:
    return f"finetune__{task}__{regime}__s{seed}"


def textemb_id(task: str, regime: str, seed: int) -> str:
    return f"textemb__{task}__{regime}__s{seed}"


def taskemb_id(task: str, regime: str, seed: int, estimator: str, labels: str, qa_loss: str | None = None) -> str:
    """A TaskEmb job's id; a QA loss other than the masked one (which the first records were made with, and
    whose ids carry no loss) is part of it, as of the embedding file names."""
    loss = f"-qa-{qa_loss}" if qa_loss not in (None, LEGACY_QA_LOSS) else ""
    return f"taskemb__{task}__{regime}__s{seed}__{estimator}-{labels}{loss}"


def transfer_id(source: str, target: str, regime_name: str, seed: int) -> str:
    src, tgt = _regime_sides(regime_name)
    return f"transfer__{src}-{tgt}__{source}__{target}__s{seed}"


def restart_id(task: str, seed: int, train_seed: int) -> str:
    """A LIMITED no-transfer restart: the sample of ``seed``, trained with ``train_seed``."""
    return f"restart__{task}__LIMITED__s{seed}__train{train_seed}"


def logme_id(source: str, target: str, regime_name: str, seed: int) -> str:
    src, tgt = _regime_sides(regime_name)
    return f"logme__{src}-{tgt}__{source}__{target}__s{seed}"


def _regime_sides(regime_name: str) -> tuple[str, str]:
    """("LIMITED", "LIMITED") for any spelling of a transfer regime ``data.regimes.get_transfer_regime`` accepts."""
    from ..data.regimes import get_transfer_regime

    tr = get_transfer_regime(regime_name)
    return tr.source.value, tr.target.value


def _cost(task_class: str, regime: str) -> float:
    return CLASS_COST[task_class] * (FULL_COST_FACTOR if regime == "FULL" else 1.0)


def study_pairs(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(source, target) pairs of the study: every source ≠ target (same class only with pairs: in-class)."""
    out = []
    for t in cfg.targets:
        for s in cfg.sources:
            if s == t:
                continue
            if cfg.pairs == "in-class" and cfg.task_class(s) != cfg.task_class(t):
                continue
            out.append((s, t))
    return out


def build_jobs(cfg: StudyConfig) -> list[Job]:
    """The study's job graph in execution order (module docstring)."""
    from ..data.regimes import LIMITED_SIZE

    enc = cfg.encoder_name()
    data = {"data_source": cfg.data_source, "data_seed": cfg.data_seed}
    if cfg.limited_size != LIMITED_SIZE:
        data["limited_size"] = cfg.limited_size
    cls_rank = {c: i for i, c in enumerate(CLASS_ORDER)}
    regimes = cfg.transfer_regimes()

    # fine-tunes: (task, side regime, seed) needed as a source or as a target baseline
    needed: dict[tuple[str, str, int], None] = {}
    pairs = study_pairs(cfg)
    for seed in cfg.seeds:
        for tr in regimes:
            for s, t in pairs:
                needed[(s, tr.source.value, seed)] = None
                needed[(t, tr.target.value, seed)] = None
    task_order = {t: i for i, t in enumerate(cfg.tasks + [x for x in cfg.sources + cfg.targets if x not in cfg.tasks])}

    def ft_key(k):
        task, regime, seed = k
        return (seed, regime != "LIMITED", cls_rank[cfg.task_class(task)], task_order[task])

    finetunes, textembs, taskembs, transfers = [], [], [], []
    for task, regime, seed in sorted(needed, key=ft_key):
        cls = cfg.task_class(task)
        common = {"task": task, "task_class": cls, "regime": regime, "seed": seed, "encoder": enc, **data}
        fid = finetune_id(task, regime, seed)
        finetunes.append(Job(fid, "finetune", {**common, "settings": cfg.settings_overrides(cls)},
                             group=cls, cost=_cost(cls, regime)))
        # FULL embedding passes may be capped (a seeded sample of the training rows); LIMITED ones never are
        cap = ({"max_examples": cfg.full_max_examples}
               if regime == "FULL" and cfg.full_max_examples is not None else {})
        if cfg.textemb is not None:
            textembs.append(Job(textemb_id(task, regime, seed), "textemb",
                                {**common, "settings": cfg.settings_overrides(cls), **cap, **cfg.textemb},
                                group=cls, cost=0.1 * _cost(cls, regime)))
        for v in cfg.taskemb:
            if regime not in v.get("regimes", (regime,)) or cls not in v.get("classes", (cls,)):
                continue  # a variant scoped to some regimes or classes
            v = _taskemb_job_fields(v, cls)
            taskembs.append(Job(taskemb_id(task, regime, seed, v["estimator"], v["labels"], v.get("qa_loss")), "taskemb",
                                {**common, **cap, **v}, deps=(fid,), group=cls,
                                cost=(0.5 if v["estimator"] == "paper" else 3.0) * _cost(cls, regime)))
    for seed in cfg.seeds:
        for tr in sorted(regimes, key=lambda r: (r.target.value != "LIMITED", r.source.value != "LIMITED")):
            by_target = sorted(cfg.targets, key=lambda t: (cls_rank[cfg.task_class(t)], task_order[t]))
            for t in by_target:
                tcls = cfg.task_class(t)
                for s, tt in pairs:
                    if tt != t:
                        continue
                    params = {"source": s, "target": t, "source_class": cfg.task_class(s), "target_class": tcls,
                              "regime": tr.name, "source_regime": tr.source.value,
                              "target_regime": tr.target.value, "seed": seed, "encoder": enc, **data,
                              "settings": cfg.settings_overrides(tcls)}
                    if cfg.logme is not None:
                        transfers.append(Job(logme_id(s, t, tr.name, seed), "logme", {**params, **cfg.logme},
                                             deps=(finetune_id(s, tr.source.value, seed),), group=tcls,
                                             cost=0.1 * _cost(tcls, tr.target.value)))
                    transfers.append(Job(transfer_id(s, t, tr.name, seed), "transfer", params,
                                         deps=(finetune_id(s, tr.source.value, seed),), group=tcls,
                                         cost=_cost(tcls, tr.target.value)))
    restarts = []
    if cfg.noise_floor_seeds and any(tr.target.value == "LIMITED" for tr in regimes):
        by_target = sorted(cfg.targets, key=lambda t: (cls_rank[cfg.task_class(t)], task_order[t]))
        for train_seed in cfg.noise_floor_seeds:
            for t in by_target:
                cls = cfg.task_class(t)
                restarts.append(Job(restart_id(t, cfg.seeds[0], train_seed), "restart",
                                    {"task": t, "task_class": cls, "regime": "LIMITED", "seed": cfg.seeds[0],
                                     "train_seed": train_seed, "encoder": enc, **data,
                                     "settings": cfg.settings_overrides(cls)},
                                    group=cls, cost=_cost(cls, "LIMITED")))
    return finetunes + textembs + taskembs + transfers + restarts


def _taskemb_job_fields(variant: Mapping, task_class: str) -> dict:
    """A TaskEmb variant's fields as one task's job params: ``qa_loss`` only on QA jobs, and there only when
    it is not the masked loss, which a missing field means (records made before the option existed)."""
    v = {k: x for k, x in variant.items() if k not in ("regimes", "classes")}  # scope, not a computation setting
    qa_loss = v.pop("qa_loss", LEGACY_QA_LOSS)
    if task_class == "QA" and qa_loss != LEGACY_QA_LOSS:
        v["qa_loss"] = qa_loss
    return v


def job_outcome(job: Job, result: Mapping) -> str:
    """A finished study job's outcome for its log line: the task score (fine-tune, transfer), the LogME
    score, or what an embedding job stored."""
    if job.kind in ("finetune", "transfer"):
        metrics = result.get("final_metrics") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
        return f"score {result['score']:.4f}" + (f" ({shown})" if shown else "")
    if job.kind == "logme":
        return f"LogME {result['score']:.4f} over {result['num_rows']} rows"
    if job.kind == "textemb":
        return f"TextEmb of {result.get('num_examples')} examples, dim {result.get('dim')}"
    if job.kind == "taskemb":
        return f"TaskEmb of {result.get('num_examples')} examples, {len(result.get('components') or [])} components"
    return "recorded"

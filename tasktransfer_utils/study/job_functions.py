"""What each study job computes (``finetune``, ``restart``, ``transfer``, ``textemb``, ``taskemb``, ``logme``),
run by the runner with the job's params: :data:`JOB_FUNCTIONS`. Records hold paths relative to ``runs_dir``
and the encoder's id; model weights go to ``<runs_dir>/models``."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

from ..embeddings.store import LEGACY_QA_LOSS
from ..paths import relative_paths
from .config import DEFAULT_TASKEMB_COMPONENTS, LOGME_KEYS, StudyConfig


# --------------------------------------------------------------------------------------------------
# Job functions
# --------------------------------------------------------------------------------------------------


def _cfg(ctx) -> StudyConfig:
    d = dict(ctx.settings["config"])
    for k in ("results_dir", "runs_dir", "config_path"):
        if d.get(k) is not None:
            d[k] = Path(d[k])
    return StudyConfig(**d)


def _load(params: Mapping, cfg: StudyConfig, task_key: str = "task", regime_key: str = "regime"):
    """The task's data; with a ``limited_size`` other than 1,000 the train split of a LIMITED job is first cut to
    the seeded ``limited_size`` sample (``regimes.apply_regime(..., n=limited_size)``), which the LIMITED
    sampling inside fine_tune / TextEmb / TaskEmb then keeps whole and in order."""
    import copy

    from datasets import DatasetDict

    from ..data.loaders import load_task
    from ..data.regimes import apply_regime

    data = load_task(params[task_key], data_dir=cfg.data_dir, source=params["data_source"], seed=params["data_seed"])
    n = params.get("limited_size")
    if n is None or params[regime_key] != "LIMITED":
        return data
    splits = dict(data.splits)
    splits["train"] = apply_regime(splits["train"], "LIMITED", params["seed"], n=n)
    prov = copy.deepcopy(data.provenance)
    prov["limited_size"] = n
    return dataclasses.replace(data, splits=DatasetDict(splits), provenance=prov)


def _check_encoder(params: Mapping, cfg: StudyConfig) -> str:
    path = cfg.encoder_path()
    from ..embeddings.store import encoder_id

    if encoder_id(path) != params["encoder"]:
        raise RuntimeError(f"job encoder {params['encoder']!r} but this machine resolves the study encoder to "
                           f"{path!r}; set 'encoder' in the study config (or $TASKTRANSFER_ENCODER)")
    return path


def model_run_dir(cfg: StudyConfig, job_id: str) -> Path:
    """Run directory (fine_tune output_dir) of a finetune/transfer job: ``<runs_dir>/models/<job id>``."""
    return cfg.runs_dir / "models" / job_id


def _shown(path: Path | str | None) -> str:
    """``path`` relative to the working directory when it lies below it (as a user would type it)."""
    if path is None:
        return "CONFIG"
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def rebuild_command(cfg: StudyConfig, tasks: Sequence[str] = (), regimes: Sequence[str] = (),
                    seed: int | None = None) -> str:
    """The ``tasktransfer study rebuild-models`` invocation that rebuilds these tasks' fine-tunes (all
    tasks when they are all of the study's, every regime unless there is one)."""
    words = ["tasktransfer", "study", "rebuild-models", _shown(cfg.config_path)]
    all_tasks = list(dict.fromkeys(cfg.sources + cfg.targets))
    if tasks and set(tasks) != set(all_tasks):
        for t in tasks:
            words += ["--task", t]
    if len(set(regimes)) == 1:
        words += ["--regime", next(iter(regimes))]
    if seed is not None and len(cfg.seeds) > 1:
        words += ["--seed", str(seed)]
    return " ".join(shlex.quote(w) for w in words)


#: default relative tolerance of ``rebuild-models``' check. A CPU fine-tune rerun in another process
#: reproduces its dev metrics but its logged losses only to float32 rounding: the offline study's LIMITED
#: fine-tunes rebuilt from their records, SST-2: 21 of 96 losses bit-identical, the largest relative
#: difference 2.7e-6; FAQ-TR: 17 of 111, 2.2e-5 (scattered, not growing with the steps); every dev metric
#: identical. Anything that changes the training (data, seed, settings) moves the losses by far more and a
#: metric by at least one example (>= 1e-3 of an evaluation of at most 1,000 examples).
#: result fields of a fine-tune that describe the machine or the clock, not what was computed


def _portable_run(result, cfg: StudyConfig) -> dict:
    """RunResult as a dict with machine-independent paths: every path under runs_dir made relative to
    it (model_dir, init_from, transfer_report.source, ...), the encoder named by its id."""
    from ..embeddings.store import encoder_id

    d = relative_paths(dataclasses.asdict(result), cfg.runs_dir)
    d["encoder"] = encoder_id(d["encoder"])
    return d


def _settings_for(params: Mapping):
    from ..training.settings import preset

    return preset(params["task_class"] if "task_class" in params else params["target_class"], **params["settings"])


def run_finetune(params: dict, ctx) -> dict:
    """Fine-tune a task from the pretrained encoder (a source model and its no-transfer baseline). A ``restart``
    job's params add ``train_seed``: the same LIMITED examples (sample of ``seed``), another training seed."""
    from ..training.fine_tuning import fine_tune

    cfg = _cfg(ctx)
    encoder = _check_encoder(params, cfg)
    task_data = _load(params, cfg)
    restart = "train_seed" in params
    result = fine_tune(task_data, model_run_dir(cfg, ctx.job.id), encoder=encoder, regime=params["regime"],
                       seed=params["train_seed"] if restart else params["seed"],
                       sample_seed=params["seed"] if restart else None, settings=_settings_for(params))
    return _portable_run(result, cfg)


def _without_weights(out: dict, cfg: StudyConfig, ctx) -> dict:
    """Delete a run's model weights once recorded (``outputs.keep_models: sources``, the default)."""
    from ..training.fine_tuning import MODEL_SUBDIR

    if cfg.keep_models != "all":
        shutil.rmtree(model_run_dir(cfg, ctx.job.id) / MODEL_SUBDIR, ignore_errors=True)
        out["model_dir"] = None  # weights not kept
    return out


def run_restart(params: dict, ctx) -> dict:
    """A target's no-transfer fine-tune again on the same LIMITED examples (sample of ``seed``) with another
    training seed (``train_seed``): one point of the training-noise floor. Its weights are not kept."""
    return _without_weights(run_finetune(params, ctx), _cfg(ctx), ctx)


def _source_run_dir(cfg: StudyConfig, ctx) -> Path:
    """The run directory of the job's source fine-tune (its first dependency), whose model must be on disk."""
    from ..training.fine_tuning import MODEL_SUBDIR

    source_job = ctx.job.deps[0]
    source_dir = model_run_dir(cfg, source_job)
    if not (source_dir / MODEL_SUBDIR).is_dir():
        p = ctx.job.params
        raise FileNotFoundError(
            f"source model {source_dir / MODEL_SUBDIR} is missing although {source_job} has a record "
            f"({ctx.job.id} needs it); rebuild it from its record with "
            f"`{rebuild_command(cfg, [p['source']], [p['source_regime']], p['seed'])}`")
    return source_dir


def run_transfer(params: dict, ctx) -> dict:
    """Intermediate-task transfer: fine-tune the target starting from the source's fine-tuned encoder."""
    from ..training.fine_tuning import fine_tune

    cfg = _cfg(ctx)
    encoder = _check_encoder(params, cfg)
    source_dir = _source_run_dir(cfg, ctx)
    task_data = _load(params, cfg, "target", "target_regime")
    run_dir = model_run_dir(cfg, ctx.job.id)
    result = fine_tune(task_data, run_dir, encoder=encoder, init_from=source_dir, regime=params["target_regime"],
                       seed=params["seed"], settings=_settings_for(params))
    return _without_weights(_portable_run(result, cfg), cfg, ctx)


def _library(cfg: StudyConfig):
    from ..embeddings.store import EmbeddingLibrary

    return EmbeddingLibrary(cfg.results_dir / "embeddings")


def job_device() -> str:
    """The device a job computes on, as fine-tuning chooses it: "cuda" when a GPU is visible, else "cpu"
    (the embedding and LogME jobs pass it on and record it, as a fine-tune's result does)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def textemb_for_job(params: Mapping, cfg: StudyConfig, device: str | None = None):
    """The TextEmb a ``textemb`` job with these params computes: the task's training rows (same regime/seed
    rows as its fine-tune) through the study's pretrained encoder."""
    from ..embeddings.textemb import compute_textemb

    encoder = _check_encoder(params, cfg)
    return compute_textemb(_load(params, cfg), encoder, split="train", regime=params["regime"], seed=params["seed"],
                           batch_size=params.get("batch_size", 64), max_examples=params.get("max_examples"),
                           settings=_settings_for(params), device=device)


def run_textemb(params: dict, ctx) -> dict:
    """TextEmb of a task's training rows (same regime/seed rows as its fine-tune) from the pretrained encoder."""
    cfg = _cfg(ctx)
    device = job_device()
    emb = textemb_for_job(params, cfg, device=device)
    lib = _library(cfg)
    path = lib.add([emb])
    return {"file": str(path.relative_to(cfg.results_dir)), "dim": int(emb.vector.shape[0]),
            "num_examples": emb.meta.get("num_examples"), "components": [emb.meta.get("component")],
            "device": device}


def taskemb_for_job(params: Mapping, cfg: StudyConfig, model_dir: Path, device: str | None = None) -> dict:
    """The TaskEmb components {name: embedding} a ``taskemb`` job with these params computes from the model
    fine-tuned in ``model_dir``, with every path of their metadata relative to ``runs_dir`` (portable)."""
    from ..embeddings.taskemb import compute_taskemb

    encoder = _check_encoder(params, cfg)
    comps = list(params.get("components") or DEFAULT_TASKEMB_COMPONENTS)
    if params["task_class"] == "SL":  # SL models have no [CLS] component (taskemb module docstring)
        comps = [c for c in comps if c != "cls_output"]
    qa_loss = params.get("qa_loss", LEGACY_QA_LOSS) if params["task_class"] == "QA" else "authors"
    embs = compute_taskemb(_load(params, cfg), model_dir, estimator=params["estimator"], labels=params["labels"],
                           qa_loss=qa_loss, seed=params["seed"], batch_size=params.get("batch_size", 32),
                           max_examples=params.get("max_examples"),
                           num_label_samples=params.get("num_label_samples", 100), components=comps,
                           encoder=encoder, device=device)
    for e in embs.values():
        e.meta.update(relative_paths(dict(e.meta), cfg.runs_dir))
    return embs


def run_taskemb(params: dict, ctx) -> dict:
    """TaskEmb (diagonal Fisher) of a task from the model fine-tuned on it (the ``finetune`` dependency)."""
    cfg = _cfg(ctx)
    device = job_device()
    embs = taskemb_for_job(params, cfg, model_run_dir(cfg, ctx.job.deps[0]), device=device)
    lib = _library(cfg)
    path = lib.add(list(embs.values()))
    first = next(iter(embs.values()))
    return {"file": str(path.relative_to(cfg.results_dir)), "components": sorted(embs),
            "num_examples": first.meta.get("num_examples"), "wall_time_s": first.meta.get("wall_time_s"),
            "device": device}


def run_logme(params: dict, ctx) -> dict:
    """LogME of the source's fine-tuned encoder (the ``finetune`` dependency; its head is ignored) on the
    target's training rows in the target regime (the rows its fine-tune uses), as :mod:`selection.logme` defines it."""
    from ..selection.logme import encoder_features, logme_score
    from ..training.fine_tuning import MODEL_SUBDIR

    cfg = _cfg(ctx)
    _check_encoder(params, cfg)
    model_dir = _source_run_dir(cfg, ctx) / MODEL_SUBDIR
    task_data = _load(params, cfg, "target", "target_regime")
    start = time.perf_counter()
    device = job_device()
    x, y, regression = encoder_features(model_dir, task_data, regime=params["target_regime"], seed=params["seed"],
                                        settings=_settings_for(params), device=device,
                                        **{k: params[k] for k in LOGME_KEYS if k in params})
    t_features = time.perf_counter() - start
    score = logme_score(x, y, regression=regression)
    return {"score": float(score), "num_rows": int(x.shape[0]), "dim": int(x.shape[1]),
            "is_regression": bool(regression), "feature_time_s": t_features,
            "fit_time_s": time.perf_counter() - start - t_features, "device": device}


JOB_FUNCTIONS = {"finetune": run_finetune, "transfer": run_transfer, "restart": run_restart, "textemb": run_textemb,
                 "taskemb": run_taskemb, "logme": run_logme}

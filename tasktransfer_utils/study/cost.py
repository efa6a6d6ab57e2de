"""What a study will cost before it runs: job counts per kind and class and an estimate of GPU-hours,
from the config alone (no dataset is loaded, nothing is downloaded).

The estimate multiplies each job's examples by a per-example cost measured on a GPU:

- **measured**: training throughput of ``training.fine_tuning.fine_tune`` as shipped (bf16, deterministic kernels) on
  an NVIDIA H200 with MiniLM's shape (6 layers, hidden 384), the authors' presets (CR: SST-2, 128 tokens,
  batch 32; SL: NER, 128 tokens, batch 32; QA: SQuAD-1, 384 tokens, batch 12), 1,000 training examples:
  ``benchmarks/results/bench_gpu_determinism_h200.txt``, the best of two runs on the slower of the two
  machines measured (the other, ``..._h200_run2.txt``, was 1.4-1.6x faster);
- **scaled** to the study's encoder by the ratio of its per-token matrix-multiply FLOPs to MiniLM's:
  layers × hidden² (the 12·hidden² weights of each layer's attention and feed-forward blocks), e.g.
  (12 / 6) · (768 / 384)² = 8 for BERT-base. Attention-score FLOPs grow only with layers × hidden (×4),
  a few per cent of the total at 128-384 tokens, and a small encoder uses a GPU less efficiently than a
  large one, so 8 errs on the high side;
- **per job**: training examples × epochs at the training rate, plus the dev evaluation after every epoch
  and the embedding / LogME passes at ``FORWARD_COST`` (a forward pass is about a third of a forward +
  backward pass). Examples: the hub split sizes registered in ``data.tasks.HUB_SPLIT_ROWS`` (the config's
  LIMITED size for LIMITED sides, capped by the split), evaluation capped by ``max_eval_examples``.

Not counted: job start-up (loading and tokenising data, loading weights: minutes per job on a cluster,
more than the training itself for a LIMITED job), queueing, failed attempts, and QA questions whose
context needs more than one 384-token window (long-context sets such as NewsQA, WikiHop, DuoRC and
HotpotQA have several per question, so their cost is underestimated).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: training examples per second, MiniLM's shape on an NVIDIA H200 (module docstring)
MEASURED_TRAIN_EXAMPLES_PER_S = {"CR": 549.0, "SL": 557.0, "QA": 213.0}
MEASURED_WHERE = ("benchmarks/results/bench_gpu_determinism_h200.txt (NVIDIA H200, MiniLM's shape, bf16, "
                  "deterministic kernels, the authors' presets; CR SST-2 549, SL NER 557, QA SQuAD-1 213 training "
                  "examples/s)")
REFERENCE_SHAPE = (6, 384)  # layers, hidden size of the measured encoder
#: cost of a forward-only example (evaluation, TextEmb, LogME features) relative to a training example
FORWARD_COST = 1.0 / 3.0
#: TaskEmb with the per-example ("empirical") Fisher against the paper's estimator, measured on a CPU
#: (benchmarks/results/bench_embeddings_cpu.txt: 2.77x)
EMPIRICAL_FISHER_COST = 2.77
KNOWN_ENCODER_SHAPES = {
    "bert-base-uncased": (12, 768), "bert-base-cased": (12, 768), "google-bert/bert-base-uncased": (12, 768),
    "google-bert/bert-base-cased": (12, 768), "bert-large-uncased": (24, 1024), "bert-large-cased": (24, 1024),
    "roberta-base": (12, 768), "FacebookAI/roberta-base": (12, 768), "roberta-large": (24, 1024),
    "sentence-transformers/all-MiniLM-L6-v2": (6, 384), "all-MiniLM-L6-v2": (6, 384),
}


def encoder_shape(encoder: str) -> tuple[int, int] | None:
    """(layers, hidden size) of an encoder: from a local folder's config.json, else the known hub ids
    (:data:`KNOWN_ENCODER_SHAPES`); None when unknown (nothing is downloaded)."""
    path = Path(str(encoder)) / "config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        if "num_hidden_layers" in cfg and "hidden_size" in cfg:
            return int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
    name = str(encoder)
    if name in KNOWN_ENCODER_SHAPES:
        return KNOWN_ENCODER_SHAPES[name]
    tail = name.rstrip("/").split("/")[-1]
    return KNOWN_ENCODER_SHAPES.get(tail)


def encoder_scale(shape: tuple[int, int], reference: tuple[int, int] = REFERENCE_SHAPE) -> float:
    """Per-token matrix-multiply FLOPs of ``shape`` over ``reference``: (layers / layers_ref) ·
    (hidden / hidden_ref)²."""
    return (shape[0] / reference[0]) * (shape[1] / reference[1]) ** 2


@dataclass
class StudyCost:
    """Jobs and estimated GPU seconds per (kind, class); ``unknown`` counts jobs without a size."""

    name: str
    encoder: str
    scale: float | None
    shape: tuple[int, int] | None
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    gpu_s: dict[tuple[str, str], float] = field(default_factory=dict)
    longest_s: dict[str, tuple[float, str]] = field(default_factory=dict)  # class -> (seconds, job id)
    unknown: dict[tuple[str, str], int] = field(default_factory=dict)
    timeouts_min: dict[str, float] = field(default_factory=dict)
    seeds: int = 1
    data_source: str = "hub"

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())

    @property
    def total_gpu_hours(self) -> float:
        return sum(self.gpu_s.values()) / 3600.0


def _split_rows(task: str, split: str) -> int | None:
    from ..data.tasks import get_task, hub_split_rows

    spec = get_task(task)
    if spec.hub is None:
        return None
    try:
        return hub_split_rows(spec, split)
    except KeyError:
        return None


def job_example_passes(cfg, job) -> tuple[float, float] | None:
    """(training-equivalent example passes, forward-only example passes) of one study job, or None when a
    size it needs is not registered. ``cfg``: a ``study.config.StudyConfig``; ``job``: a ``runner.Job``."""
    p = job.params
    kind = job.kind
    task = p.get("task") or p.get("target")
    regime = p.get("regime") if kind in ("finetune", "textemb", "taskemb") else p.get("target_regime")
    cls = job.group
    settings = cfg.finetune_settings(cls)
    train = _split_rows(task, "train")
    if train is None:
        return None
    n = min(train, cfg.limited_size) if regime == "LIMITED" else train
    if kind in ("finetune", "transfer"):
        dev = _split_rows(task, "validation")
        if dev is None:
            return None
        if settings.max_eval_examples is not None:
            dev = min(dev, settings.max_eval_examples)
        return n * settings.num_epochs, dev * settings.num_epochs
    if kind in ("textemb", "taskemb"):
        if p.get("max_examples") is not None:
            n = min(n, int(p["max_examples"]))
        if kind == "textemb":
            return 0.0, float(n)
        return n * (EMPIRICAL_FISHER_COST if p.get("estimator") == "empirical" else 1.0), 0.0
    if kind == "logme":
        return 0.0, float(min(n, int(p.get("max_examples") or n)))
    return None


def estimate_study_cost(cfg, jobs: Sequence | None = None) -> StudyCost:
    """Job counts per (kind, class) and estimated GPU seconds for ``jobs`` (default: the whole study) of
    a ``study.config.StudyConfig``, from the config alone (module docstring)."""
    from .jobs import build_jobs

    jobs = build_jobs(cfg) if jobs is None else list(jobs)
    encoder = cfg.encoder_name()
    shape = encoder_shape(encoder)
    scale = encoder_scale(shape) if shape else None
    resources = (cfg.engine or {}).get("resources") or {}
    timeouts = {}
    for cls in ("CR", "QA", "SL"):
        t = {**(resources.get("default") or {}), **(resources.get(cls) or {})}.get("timeout_min")
        if t is not None:
            timeouts[cls] = float(t)
    cost = StudyCost(name=cfg.name, encoder=encoder, scale=scale, shape=shape, timeouts_min=timeouts,
                     seeds=len(cfg.seeds), data_source=cfg.data_source)
    jobs_n, gpu_s, unknown = defaultdict(int), defaultdict(float), defaultdict(int)
    for job in jobs:
        key = (job.kind, job.group)
        jobs_n[key] += 1
        passes = job_example_passes(cfg, job)
        if passes is None or scale is None:
            unknown[key] += 1
            continue
        train, forward = passes
        seconds = (train + FORWARD_COST * forward) / MEASURED_TRAIN_EXAMPLES_PER_S[job.group] * scale
        gpu_s[key] += seconds
        if seconds > cost.longest_s.get(job.group, (-1.0, ""))[0]:
            cost.longest_s[job.group] = (seconds, job.id)
    cost.jobs, cost.gpu_s, cost.unknown = dict(jobs_n), dict(gpu_s), dict(unknown)
    return cost


def format_study_cost(cost: StudyCost) -> str:
    """The dry run's summary: a table per (kind, class), the total, the longest job per class against the
    engine's ``timeout_min``, and where the per-example figure comes from."""
    from .jobs import CLASS_ORDER

    kinds = ("finetune", "textemb", "taskemb", "transfer", "logme")
    lines = [f"Plan of study {cost.name}: {cost.total_jobs} jobs (a dry run: nothing runs, no data is loaded)",
             f"{'kind':<9} {'class':<5} {'jobs':>6} {'GPU-hours (est.)':>17}"]
    keys = sorted(cost.jobs, key=lambda k: (kinds.index(k[0]) if k[0] in kinds else 99, CLASS_ORDER.index(k[1])
                                            if k[1] in CLASS_ORDER else 99))
    for key in keys:
        hours = cost.gpu_s.get(key, 0.0) / 3600.0
        note = f"  ({cost.unknown[key]} without a registered size)" if cost.unknown.get(key) else ""
        lines.append(f"{key[0]:<9} {key[1]:<5} {cost.jobs[key]:>6} {hours:>17.1f}{note}")
    lines.append(f"{'total':<15} {cost.total_jobs:>6} {cost.total_gpu_hours:>17.1f}")
    if cost.scale is None:
        lines.append(f"No GPU-hour estimate for encoder {cost.encoder!r}: its shape is unknown without downloading "
                     "it (give a local folder with a config.json, or a known hub id).")
        return "\n".join(lines)
    for cls in CLASS_ORDER:
        if cls in cost.longest_s:
            s, jid = cost.longest_s[cls]
            t = cost.timeouts_min.get(cls)
            warn = ""
            if t is not None:
                warn = f"; engine timeout_min {t:g}" + ("  << below the estimate" if s / 60 > t else "")
            lines.append(f"longest {cls} job: {jid}, {s / 3600:.2f} GPU-hours (est.){warn}")
    layers, hidden = cost.shape
    ref_l, ref_h = REFERENCE_SHAPE
    lines.append(
        f"Estimate: per-example training cost measured in {MEASURED_WHERE}, scaled by {cost.scale:g} for "
        f"{cost.encoder} ({layers} layers, hidden {hidden}; per-token matrix-multiply FLOPs ∝ layers × hidden²: "
        f"({layers}/{ref_l})·({hidden}/{ref_h})² = {cost.scale:g}), times examples × epochs per job (hub split "
        f"sizes, tasks.HUB_SPLIT_ROWS) plus dev evaluation and embedding/LogME passes at {FORWARD_COST:.2g} of a "
        "training example. Not counted: job start-up, queueing, retries, extra QA windows of long contexts "
        "(see tasktransfer_utils/study/cost.py).")
    if cost.data_source != "hub":
        lines.append("The study reads local data: the hub split sizes stand in for the local copies' sizes, which "
                     "may differ (`tasktransfer tasks --sizes` counts them).")
    if cost.seeds > 1:
        lines.append(f"{cost.seeds} seeds: every fine-tune and transfer runs once per seed.")
    return "\n".join(lines)


__all__ = ["EMPIRICAL_FISHER_COST", "FORWARD_COST", "KNOWN_ENCODER_SHAPES", "MEASURED_TRAIN_EXAMPLES_PER_S",
           "REFERENCE_SHAPE", "StudyCost", "encoder_scale", "encoder_shape", "estimate_study_cost",
           "format_study_cost", "job_example_passes"]

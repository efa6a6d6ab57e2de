"""Fine-tuning runs with resumable run directories (Vu et al. 2020, §2-3).

One run = fine-tune an encoder (optionally initialised from a source run's encoder: intermediate-task
transfer) on one task's training split in one data regime with one seed, evaluating on the dev split after
every epoch. Built on Hugging Face ``Trainer`` (AdamW, linear decay, grad-norm clipping per
:mod:`settings`), dynamic padding and length-grouped batches. Evaluation runs in a callback with its
own sequential loop (QA post-processing needs the windows in order).

Run directory::

    <run_dir>/config.json    what was asked: task, class, regime, seed, encoder, init_from, settings, versions
    <run_dir>/model/         final model + tokenizer (save_pretrained); the encoder a later transfer reads
    <run_dir>/result.json    RunResult: per-epoch dev metrics, loss curve, timings; written last, atomically

A directory with ``result.json`` is a finished run and is loaded, never redone (its config must match the
request). A directory with ``config.json`` but no ``result.json`` is an interrupted run: it is deleted and
the run restarts from scratch, unless it left a checkpoint.

Checkpoints: a run longer than ``checkpoint_every_s`` (default 10 minutes, ``$TASKTRANSFER_CHECKPOINT_EVERY_S``;
0 turns them off) saves the Trainer's state (weights, optimiser, scheduler, random-number generators, log)
into ``<run_dir>/trainer/checkpoint-<step>/`` at the next logging step inside an epoch, with what the Trainer
does not keep: the dev metrics of the epochs done, the time spent, and the random-number state at the start
of the epoch (the length-grouped sampler draws each epoch's batch order from the global generator, so the
resumed epoch must draw it from the same state). ``tasktransfer_resume.json``, written last, marks a complete
checkpoint; the newest one is kept. An interrupted run of the same identity with a complete checkpoint
resumes from it and ends with the same result as an uninterrupted run (the tests compare loss curves, dev
metrics and weights); ``RunResult.resumed_from_steps`` says where it resumed, its times add up every attempt.
The checkpoints are deleted when the run finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainerCallback

from .features import collator_for_class, model_inputs, tokenize_for_class
from .metrics import classification_metrics, qa_metrics, sequence_labeling_metrics, task_score
from ..errors import UsageError
from .models import build_model
from .qa_postprocess import postprocess_qa_predictions
from .settings import FineTuneSettings, class_name, preset

logger = logging.getLogger(__name__)

RUN_KIND = "tasktransfer-run"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
MODEL_SUBDIR = "model"
NUM_THREADS_ENV = "TASKTRANSFER_NUM_THREADS"
CHECKPOINT_EVERY_ENV = "TASKTRANSFER_CHECKPOINT_EVERY_S"
#: default seconds between two checkpoints of a run (see the module docstring)
CHECKPOINT_EVERY_S = 600.0
#: written last into a checkpoint folder: marks it complete, holds what the Trainer does not keep
RESUME_FILE = "tasktransfer_resume.json"
EPOCH_RNG_FILE = "epoch_rng_state.pth"
CUDA_DETERMINISTIC_ENV = "TASKTRANSFER_CUDA_DETERMINISTIC"
#: training precision on a GPU: auto (bf16, fp16 where bf16 is missing), no (float32, as on a CPU), bf16, fp16
MIXED_PRECISION_ENV = "TASKTRANSFER_MIXED_PRECISION"
# config fields that must agree for a finished run to be reused
_IDENTITY_FIELDS = ("task", "task_class", "regime", "seed", "sample_seed", "encoder", "init_from", "settings",
                    "train_split", "eval_split")


@dataclass
class RunResult:
    """Outcome of one fine-tuning run. Metrics are in [0, 1] units; ``score`` is the mean of the task's
    metrics after the last epoch. ``loss_curve``: one dict per logged optimiser step with ``step``,
    ``epoch`` (epochs done, float), ``fraction`` (of all training steps, in (0, 1]), ``loss`` and
    ``learning_rate``. Times in seconds; ``train_examples_per_s`` counts training examples (not QA windows)
    processed per second of optimisation, evaluation excluded."""

    task: str
    task_class: str
    regime: str
    seed: int
    encoder: str
    init_from: str | None
    settings: dict
    epoch_metrics: list[dict]
    final_metrics: dict
    score: float
    loss_curve: list[dict]
    train_examples: int
    wall_time_s: float
    train_examples_per_s: float
    model_dir: str
    train_features: int = 0
    eval_examples: int = 0
    num_train_steps: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    device: str = "cpu"
    mixed_precision: str | None = None
    cpu_threads: int = 0
    transfer_report: dict | None = None
    #: seed of the LIMITED sample when it differs from ``seed`` (a restart on the same examples); None: ``seed``
    sample_seed: int | None = None
    versions: dict = field(default_factory=dict)
    #: optimiser steps at which an interrupted run resumed from its checkpoint (None: never interrupted)
    resumed_from_steps: list[int] | None = None

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text; with ``path`` also written there atomically (temporary file + rename)."""
        text = json.dumps(dataclasses.asdict(self), indent=1, ensure_ascii=False)
        if path is not None:
            _atomic_write(Path(path), text)
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "RunResult":
        """Read a ``result.json``; ``model_dir`` is re-pointed at ``<its folder>/model`` when that exists
        (run directories can be moved)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        known = {f.name for f in dataclasses.fields(cls)}
        r = cls(**{k: v for k, v in d.items() if k in known})
        local = path.parent / MODEL_SUBDIR
        if local.is_dir():
            r.model_dir = str(local.resolve())
        return r


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_device(device: str | None = None) -> tuple[str, str | None]:
    """(device, mixed precision): CUDA with bf16 (fp16 on GPUs without bf16) when available, else CPU
    (float32; torch's default intra-op thread count = all physical cores, recorded as ``cpu_threads``).

    ``$TASKTRANSFER_MIXED_PRECISION`` chooses the GPU's precision: ``auto`` (the default above), ``no`` (float32,
    the computation a CPU does: for GPU runs whose scores are compared with CPU runs, such as transfers
    measured against no-transfer baselines trained on a CPU), ``bf16`` or ``fp16``. A CPU always trains in
    float32. Each run records its precision (``mixed_precision``; None is float32)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    raw = os.environ.get(MIXED_PRECISION_ENV, "auto").strip().lower() or "auto"
    if raw not in ("auto", "no", "bf16", "fp16"):
        raise UsageError(f"${MIXED_PRECISION_ENV}={raw!r}: expected auto, no, bf16 or fp16")
    if not device.startswith("cuda"):
        if raw in ("bf16", "fp16"):
            raise UsageError(f"${MIXED_PRECISION_ENV}={raw}: mixed precision needs a GPU, and this run is on "
                             f"{device}; expected auto or no")
        return device, None
    if raw == "no":
        return device, None
    if raw == "auto":
        raw = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return device, raw


@contextlib.contextmanager
def deterministic_cuda(device: str):
    """On CUDA: torch's deterministic algorithms (warn-only for the few ops that have none) and cuDNN's
    deterministic, non-benchmarking mode for the duration, then the previous state again; elsewhere nothing
    (CPU kernels are deterministic already). Without it two CUDA runs with one seed differ in the last bits
    (atomic-add reductions, e.g. in the fused attention kernels' backward pass), so a study job rerun after a crash would not
    reproduce the record an uninterrupted run writes. cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it first
    starts; the package sets it on import when it is unset. ``$TASKTRANSFER_CUDA_DETERMINISTIC=0`` turns this
    off, for speed (QA training 1.35-1.7x faster on an H200: benchmarks/bench_gpu_determinism.py) at the
    price of runs that a rerun does not reproduce exactly."""
    if not str(device).startswith("cuda") or os.environ.get(CUDA_DETERMINISTIC_ENV, "1") == "0":
        yield
        return
    b = torch.backends
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (b.cudnn.deterministic, b.cudnn.benchmark)
    sdp = (b.cuda.flash_sdp_enabled(), b.cuda.mem_efficient_sdp_enabled(), b.cuda.cudnn_sdp_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    b.cudnn.deterministic, b.cudnn.benchmark = True, False
    # The fused attention kernels' backward passes accumulate with atomics (torch warns); the plain "math"
    # attention is matrix products and a softmax, deterministic; whole training steps measured 1.2-1.7x slower.
    b.cuda.enable_flash_sdp(False), b.cuda.enable_mem_efficient_sdp(False), b.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        b.cudnn.deterministic, b.cudnn.benchmark = cudnn
        b.cuda.enable_flash_sdp(sdp[0]), b.cuda.enable_mem_efficient_sdp(sdp[1]), b.cuda.enable_cudnn_sdp(sdp[2])


def _versions() -> dict[str, str]:
    import datasets
    import transformers

    from .. import __version__

    return {"tasktransfer": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__}


def _label_names(task_data: Any) -> tuple[str, ...] | None:
    spec = task_data.spec
    names = getattr(task_data, "label_names", None)
    if names is None:
        names = spec.labels
    cls = class_name(spec.task_class)
    if names is None and (cls == "SL" or (cls == "CR" and not spec.is_regression)):
        raise ValueError(
            f"{spec.name}: target labels missing: TaskData.label_names and TaskSpec.labels are both None for a "
            f"{'classification' if cls == 'CR' else 'sequence-labeling'} task"
        )
    return tuple(names) if names is not None else None


def eval_subset(dataset: Dataset, max_examples: int | None) -> Dataset:
    """The first ``max_examples`` of a fixed (seed 0) shuffle, in original order: every run on a task is
    scored on the same dev examples."""
    if max_examples is None or len(dataset) <= max_examples:
        return dataset
    idx = np.sort(np.random.default_rng(0).choice(len(dataset), size=max_examples, replace=False))
    return dataset.select(idx.tolist())


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(model, features: Dataset, collator, batch_size: int, device: str,
                   mixed_precision: str | None = None) -> list[Any]:
    """Forward every feature (sorted by length for tight padding, results in original order).
    Returns per feature: CR a logits vector [num_labels]; SL logits [seq_len, num_labels];
    QA a (start [seq_len], end [seq_len]) pair. Float32 numpy, padding removed."""
    inputs = model_inputs(features)
    drop = [c for c in ("labels", "start_positions", "end_positions") if c in inputs.column_names]
    inputs = inputs.remove_columns(drop) if drop else inputs
    lengths = [len(x) for x in inputs["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out: list[Any] = [None] * len(inputs)
    was_training = model.training
    model.eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision or "")
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size].tolist()
            batch = collator([inputs[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                res = model(**batch)
            for j, i in enumerate(idx):
                n = lengths[i]
                if hasattr(res, "start_logits"):
                    out[i] = (res.start_logits[j, :n].float().cpu().numpy(), res.end_logits[j, :n].float().cpu().numpy())
                elif res.logits.dim() == 3:
                    out[i] = res.logits[j, :n].float().cpu().numpy()
                else:
                    out[i] = res.logits[j].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def evaluate_model(model, tokenizer, task_data: Any, dataset: Dataset, settings: FineTuneSettings | None = None,
                   features: Dataset | None = None, device: str | None = None,
                   mixed_precision: str | None = None) -> dict[str, float]:
    """The task's metrics (``spec.metrics``) of ``model`` on ``dataset`` (a labelled split in the loaders'
    schema). ``features``: its tokenisation for evaluation, computed when not given."""
    spec = task_data.spec
    cls = class_name(spec.task_class)
    settings = settings or preset(cls)
    label_names = _label_names(task_data)
    if device is None:
        device = str(next(model.parameters()).device)
    if features is None:
        features = tokenize_for_class(task_data, dataset, tokenizer, settings, label_names, for_training=False)
    collator = collator_for_class(cls, tokenizer)
    logits = predict_logits(model, features, collator, settings.effective_eval_batch_size, device, mixed_precision)
    if cls == "CR":
        if spec.is_regression:
            preds = np.array([float(x[0]) for x in logits])
        else:
            preds = np.array([int(np.argmax(x)) for x in logits])
        return classification_metrics(spec.metrics, preds, np.asarray(dataset["label"]))
    if cls == "QA":
        answers = dataset["answers"]
        # the SQuAD version is the task's, not the sample's: an all-answerable SQuAD-2 sample keeps v2 rules
        preds = postprocess_qa_predictions(
            dataset, features, [s for s, _ in logits], [e for _, e in logits],
            n_best_size=settings.n_best_size, max_answer_length=settings.max_answer_length,
            version_2_with_negative=spec.version_2_with_negative,
        )
        refs = {qid: list(a["text"]) for qid, a in zip(dataset["id"], answers)}
        return qa_metrics(spec.metrics, preds, refs, version_2_with_negative=spec.version_2_with_negative)
    # SL: one feature per sentence; the prediction of a word is that of its first word piece.
    fallback = "O" if "O" in label_names else None  # words cut off by max_seq_length
    y_true, y_pred = [], []
    for tags, word_index, lg in zip(dataset["tags"], features["word_index"], logits):
        pred = [fallback] * len(tags)
        for pos, w in enumerate(word_index):
            if w >= 0:
                pred[w] = label_names[int(np.argmax(lg[pos]))]
        y_true.append(list(tags))
        y_pred.append([p if p is not None else "<none>" for p in pred])
    return sequence_labeling_metrics(spec.metrics, y_true, y_pred)


def majority_baseline(task_data: Any, regime: Any = "FULL", seed: int = 0, train_split: str = "train",
                      eval_split: str = "validation", max_eval_examples: int | None = None) -> dict[str, float]:
    """The task's metrics on the dev split for a constant prediction learnt from the (regime-sampled)
    training split: CR the most frequent class (regression: the mean score), SL the most frequent tag for
    every word, QA the empty answer. A floor that fine-tuning must clear."""
    from collections import Counter

    from ..data.regimes import apply_regime

    spec = task_data.spec
    cls = class_name(spec.task_class)
    train = apply_regime(task_data.splits[train_split], regime, seed)
    dev = eval_subset(task_data.splits[eval_split], max_eval_examples)
    if cls == "CR":
        if spec.is_regression:
            preds = np.full(len(dev), float(np.mean(train["label"])))
        else:
            preds = np.full(len(dev), Counter(train["label"]).most_common(1)[0][0])
        return classification_metrics(spec.metrics, preds, np.asarray(dev["label"]))
    if cls == "SL":
        tag = Counter(t for tags in train["tags"] for t in tags).most_common(1)[0][0]
        return sequence_labeling_metrics(spec.metrics, dev["tags"], [[tag] * len(t) for t in dev["tags"]])
    refs = {qid: list(a["text"]) for qid, a in zip(dev["id"], dev["answers"])}
    return qa_metrics(spec.metrics, {qid: "" for qid in refs}, refs,
                      version_2_with_negative=spec.version_2_with_negative)


def untrained_baseline(task_data: Any, encoder: str | os.PathLike | None = None, settings: FineTuneSettings | None = None,
                       seed: int = 0, eval_split: str = "validation", max_eval_examples: int | None = None,
                       device: str | None = None) -> dict[str, float]:
    """The task's metrics on the dev split for the pretrained encoder with a fresh head (initialised with
    ``seed``, as fine-tuning initialises it) and no training: the no-training floor (QA's answer-span
    extraction needs a trained head; this is what fine-tuning starts from)."""
    from transformers import AutoTokenizer, set_seed

    from ..paths import default_encoder

    spec = task_data.spec
    cls = class_name(spec.task_class)
    settings = settings or preset(cls)
    encoder = str(encoder or default_encoder())
    label_names = _label_names(task_data)
    dev = eval_subset(task_data.splits[eval_split], max_eval_examples or settings.max_eval_examples)
    set_seed(seed)
    model = build_model(cls, encoder, num_labels=None if label_names is None else len(label_names),
                        is_regression=spec.is_regression, label_names=label_names)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return evaluate_model(model, AutoTokenizer.from_pretrained(encoder), task_data, dev, settings, device=device)


# ----------------------------------------------------------------------------- fine-tuning


def _run_config(task_data, encoder, init_from, regime, seed, settings, train_split, eval_split,
                sample_seed=None) -> dict:
    return {
        "kind": RUN_KIND,
        "task": task_data.spec.name,
        "task_class": class_name(task_data.spec.task_class),
        "regime": getattr(regime, "value", str(regime)),
        "seed": int(seed),
        # only a restart on another seed's sample carries it, so every earlier run keeps its identity
        **({} if sample_seed is None else {"sample_seed": int(sample_seed)}),
        "encoder": str(encoder),
        "init_from": None if init_from is None else str(Path(init_from).resolve()) if Path(init_from).exists() else str(init_from),
        "settings": settings.to_dict(),
        "train_split": train_split,
        "eval_split": eval_split,
        "data_source": getattr(task_data, "source", None),
        "versions": _versions(),
    }


def prepare_run_dir(run_dir: Path, config: dict) -> RunResult | None:
    """Return the stored RunResult of a finished run with the same identity; clean an interrupted run;
    refuse a non-empty directory that is not a run directory or a finished run of another configuration
    (``errors.UsageError``, a ValueError)."""
    result_path, config_path = run_dir / RESULT_FILE, run_dir / CONFIG_FILE
    if result_path.is_file():
        try:
            stored = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"{config_path}: finished run without a readable config ({e})") from e
        diffs = [f for f in _IDENTITY_FIELDS if stored.get(f) != config.get(f)]
        if diffs:
            detail = "; ".join(f"{f}: stored {stored.get(f)!r} vs requested {config.get(f)!r}" for f in diffs)
            raise UsageError(f"{run_dir}: holds a finished run of another configuration ({detail}); use another directory")
        return RunResult.from_json(result_path)
    if run_dir.exists() and any(run_dir.iterdir()):
        try:
            stored = json.loads(config_path.read_text())
            is_run = stored.get("kind") == RUN_KIND
        except (OSError, json.JSONDecodeError):
            is_run = False
        if not is_run:
            raise UsageError(
                f"{run_dir}: exists, is not empty and has no {CONFIG_FILE} of a tasktransfer run; refusing to delete it"
            )
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None and all(stored.get(f) == config.get(f) for f in _IDENTITY_FIELDS):
            logger.info("%s: interrupted run found; resuming from %s", run_dir, checkpoint.name)
            return None
        logger.info("%s: interrupted run found (no %s); restarting from scratch", run_dir, RESULT_FILE)
        shutil.rmtree(run_dir)
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory (one whose :data:`RESUME_FILE` was written), or None."""
    scratch = Path(run_dir) / "trainer"
    if not scratch.is_dir():
        return None
    done = [p for p in scratch.glob("checkpoint-*") if (p / RESUME_FILE).is_file() and p.name[11:].isdigit()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def _rng_state() -> dict:
    import random

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(state["cuda"])


class _Checkpoints(TrainerCallback):
    """Saves a resumable checkpoint about every ``every_s`` seconds (see the module docstring) and, in a resumed
    run, gives the resumed epoch's sampler the random-number state its epoch started with.

    A checkpoint is taken only at a logging step that does not end an epoch: at a logging step the Trainer has
    just logged and reset its running loss, so the resumed log equals the uninterrupted one, and an epoch's last
    step is followed by its dev evaluation (``_EpochEvaluator.on_epoch_end``), which a checkpoint taken before it
    would miss. Must come after the evaluator in the callback list."""

    def __init__(self, every_s: float, evaluator: "_EpochEvaluator", resume: Path | None, timing: dict):
        self.every_s, self.evaluator, self.timing = every_s, evaluator, timing
        self.last_save = time.monotonic()
        self.epoch_rng: dict | None = None
        self.resume_epoch_rng = (torch.load(resume / EPOCH_RNG_FILE, weights_only=False)
                                 if resume is not None else None)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.resume_epoch_rng is not None:  # resumed inside this epoch: draw its batch order as it was drawn
            _set_rng_state(self.resume_epoch_rng)
            self.resume_epoch_rng = None
        self.epoch_rng = _rng_state()

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_s <= 0 or time.monotonic() - self.last_save < self.every_s:
            return
        loader = kwargs.get("train_dataloader")
        per_epoch = (max(len(loader) // args.gradient_accumulation_steps, 1) if loader is not None
                     else max(state.max_steps // max(int(args.num_train_epochs), 1), 1))
        step = state.global_step
        if step % args.logging_steps == 0 and step % per_epoch != 0 and step < state.max_steps:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        torch.save(self.epoch_rng, folder / EPOCH_RNG_FILE)
        ev = self.evaluator
        info = {"step": int(state.global_step), "epoch_metrics": ev.epoch_metrics, "eval_time_s": ev.eval_time_s,
                "elapsed_wall_s": self.timing["wall_before_s"] + time.perf_counter() - self.timing["t_start"],
                "elapsed_train_s": self.timing["train_before_s"] + time.perf_counter() - self.timing["t_train"]
                - (ev.eval_time_s - self.timing["eval_before_s"]),
                "resumed_from_steps": self.timing["resumed_from_steps"]}
        _atomic_write(folder / RESUME_FILE, json.dumps(info))
        for old in folder.parent.glob("checkpoint-*"):  # keep the newest complete checkpoint only
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        self.last_save = time.monotonic()


def fine_tune(
    task_data: Any,
    output_dir: str | os.PathLike,
    *,
    encoder: str | None = None,
    init_from: str | os.PathLike | None = None,
    regime: Any = "FULL",
    seed: int = 0,
    settings: FineTuneSettings | None = None,
    train_split: str = "train",
    eval_split: str = "validation",
    device: str | None = None,
    callbacks: list | None = None,
    pad_to_max_length: bool = False,
    num_threads: int | None = None,
    sample_seed: int | None = None,
    checkpoint_every_s: float | None = None,
) -> RunResult:
    """Fine-tune ``encoder`` (default :func:`paths.default_encoder`) on ``task_data`` and return the
    RunResult stored in ``output_dir`` (see module docstring for its layout and resume rules).

    ``init_from``: a finished source run directory (or transformers folder): its encoder weights start the
    target model, its head is discarded (intermediate-task transfer). ``regime``: FULL or LIMITED (seeded
    1,000-example sample of ``train_split``). ``settings`` default to the task class preset.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects. ``pad_to_max_length`` pads every batch
    to ``max_seq_length`` as the authors' code did (for benchmarks; off by default). ``num_threads``: torch
    CPU threads for this run (default: ``$TASKTRANSFER_NUM_THREADS`` if set, else torch's, every physical
    core; on a machine busy with other jobs 1 thread can be several times faster). Neither changes what is
    computed, so neither is part of the run's identity. ``sample_seed``: draw the LIMITED sample with this
    seed instead of ``seed``, which then seeds only the training (head initialisation, batch order, dropout):
    restarts on the same examples, as the study's training-noise floor needs; None (default) uses ``seed``
    for both. ``checkpoint_every_s``: seconds between two resumable checkpoints (default
    ``$TASKTRANSFER_CHECKPOINT_EVERY_S`` if set, else :data:`CHECKPOINT_EVERY_S`; 0: none); an interrupted run
    resumes from its newest one with the same result (module docstring). Not part of the run's identity either.
    """
    if checkpoint_every_s is None:
        raw = os.environ.get(CHECKPOINT_EVERY_ENV)
        try:
            checkpoint_every_s = float(raw) if raw else CHECKPOINT_EVERY_S
        except ValueError:
            checkpoint_every_s = -1.0
        if not 0 <= checkpoint_every_s < float("inf"):
            raise UsageError(f"${CHECKPOINT_EVERY_ENV}={raw!r}: expected a number of seconds >= 0 (0: no checkpoints)")
    if num_threads is None and os.environ.get(NUM_THREADS_ENV):
        num_threads = int(os.environ[NUM_THREADS_ENV])
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _fine_tune(task_data, output_dir, encoder=encoder, init_from=init_from, regime=regime, seed=seed,
                          settings=settings, train_split=train_split, eval_split=eval_split, device=device,
                          callbacks=callbacks, pad_to_max_length=pad_to_max_length, sample_seed=sample_seed,
                          checkpoint_every_s=checkpoint_every_s)
    finally:
        torch.set_num_threads(previous)


def _fine_tune(task_data, output_dir, *, encoder, init_from, regime, seed, settings, train_split, eval_split,
               device, callbacks, pad_to_max_length, sample_seed=None, checkpoint_every_s=0.0) -> RunResult:
    from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..paths import default_encoder
    from ..data.regimes import apply_regime

    t_start = time.perf_counter()
    spec = task_data.spec
    cls = class_name(spec.task_class)
    settings = settings or preset(cls)
    encoder = str(encoder or default_encoder())
    run_dir = Path(output_dir)
    config = _run_config(task_data, encoder, init_from, regime, seed, settings, train_split, eval_split, sample_seed)
    done = prepare_run_dir(run_dir, config)
    if done is not None:
        logger.info("%s: finished run found, loading it", run_dir)
        return done

    for split in (train_split, eval_split):
        if split not in task_data.splits:
            raise ValueError(f"{spec.name}: no {split!r} split (have {list(task_data.splits)})")
    label_names = _label_names(task_data)
    train = apply_regime(task_data.splits[train_split], regime, seed if sample_seed is None else sample_seed)
    dev = eval_subset(task_data.splits[eval_split], settings.max_eval_examples)

    device, mixed_precision = resolve_device(device)  # on CPU torch already uses every physical core
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    train_features = tokenize_for_class(task_data, train, tokenizer, settings, label_names, for_training=True)
    if len(train_features) < settings.batch_size:
        raise ValueError(
            f"{spec.name}: the {getattr(regime, 'value', regime)} training set has {len(train)} examples "
            f"({len(train_features)} features), smaller than one batch (batch_size={settings.batch_size})"
        )
    dev_features = tokenize_for_class(task_data, dev, tokenizer, settings, label_names, for_training=False)
    model = build_model(cls, encoder, num_labels=None if label_names is None else len(label_names),
                        is_regression=spec.is_regression, init_from=init_from, label_names=label_names)

    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / CONFIG_FILE, json.dumps(config, indent=1, ensure_ascii=False))
    scratch = run_dir / "trainer"

    evaluator = _EpochEvaluator(model=model, tokenizer=tokenizer, task_data=task_data, dev=dev,
                                dev_features=dev_features, settings=settings, device=device,
                                mixed_precision=mixed_precision)
    resume = latest_checkpoint(run_dir)
    timing = {"t_start": t_start, "t_train": t_start, "wall_before_s": 0.0, "train_before_s": 0.0,
              "eval_before_s": 0.0, "resumed_from_steps": None}
    if resume is not None:  # what the Trainer's checkpoint does not hold
        info = json.loads((resume / RESUME_FILE).read_text())
        evaluator.epoch_metrics, evaluator.eval_time_s = info["epoch_metrics"], info["eval_time_s"]
        evaluator.step = info["step"]
        timing.update(wall_before_s=info["elapsed_wall_s"], train_before_s=info["elapsed_train_s"],
                      eval_before_s=info["eval_time_s"],
                      resumed_from_steps=[*(info.get("resumed_from_steps") or []), info["step"]])
    checkpoints = _Checkpoints(checkpoint_every_s or 0.0, evaluator, resume, timing)
    args = TrainingArguments(
        output_dir=str(scratch),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.effective_eval_batch_size,
        num_train_epochs=settings.num_epochs,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        adam_epsilon=settings.adam_epsilon,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float < 1 is a fraction of all steps
        logging_strategy="steps",
        logging_steps=settings.logging_steps,
        eval_strategy="no",  # evaluation runs in _EpochEvaluator
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        use_cpu=device == "cpu",
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    collator = collator_for_class(cls, tokenizer, pad_to_length=settings.max_seq_length if pad_to_max_length else None)
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=model_inputs(train_features),
                      processing_class=tokenizer, callbacks=[evaluator, checkpoints, *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t_train = timing["t_train"] = time.perf_counter()
    with deterministic_cuda(device):
        trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        # optimisation only, over every attempt
        train_time_s = (timing["train_before_s"] + time.perf_counter() - t_train
                        - (evaluator.eval_time_s - timing["eval_before_s"]))
        if not evaluator.epoch_metrics:  # eval_every_epoch=False: score once, at the end
            evaluator.evaluate_now(epoch=float(settings.num_epochs))

    model_dir = run_dir / MODEL_SUBDIR
    trainer.model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    shutil.rmtree(scratch, ignore_errors=True)

    final = {k: v for k, v in evaluator.epoch_metrics[-1].items() if k not in ("epoch", "step", "eval_time_s")}
    result = RunResult(
        task=spec.name,
        task_class=cls,
        regime=config["regime"],
        seed=int(seed),
        sample_seed=None if sample_seed is None else int(sample_seed),
        encoder=encoder,
        init_from=config["init_from"],
        settings=settings.to_dict(),
        epoch_metrics=evaluator.epoch_metrics,
        final_metrics=final,
        score=task_score(final, spec.metrics),
        loss_curve=_loss_curve(trainer.state.log_history, trainer.state.max_steps),
        train_examples=len(train),
        wall_time_s=timing["wall_before_s"] + time.perf_counter() - t_start,
        train_examples_per_s=len(train) * settings.num_epochs / train_time_s,
        model_dir=str(model_dir.resolve()),
        train_features=len(train_features),
        eval_examples=len(dev),
        num_train_steps=int(trainer.state.max_steps),
        train_time_s=train_time_s,
        eval_time_s=evaluator.eval_time_s,
        device=device,
        mixed_precision=mixed_precision,
        cpu_threads=torch.get_num_threads(),
        transfer_report=getattr(model, "transfer_report", None),
        versions=config["versions"],
        resumed_from_steps=timing["resumed_from_steps"],
    )
    result.to_json(run_dir / RESULT_FILE)  # last: its presence marks the run finished
    return result


def _loss_curve(log_history: list[dict], max_steps: int) -> list[dict]:
    curve = []
    for rec in log_history:
        if "loss" in rec and "step" in rec:
            curve.append({
                "step": int(rec["step"]),
                "epoch": float(rec.get("epoch", 0.0)),
                "fraction": int(rec["step"]) / max(max_steps, 1),
                "loss": float(rec["loss"]),
                "learning_rate": float(rec.get("learning_rate", float("nan"))),
            })
    return curve


class _ProgressLines(TrainerCallback):
    """A line per epoch and about every 5 % of the steps (step, epoch, last training loss) through ``say``
    (``tasktransfer finetune`` prints them on stderr)."""

    def __init__(self, say):
        self.say = say
        self.every = 1

    def on_train_begin(self, args, state, control, **kwargs):
        self.every = max(1, state.max_steps // 20)
        self.say(f"training: {args.num_train_epochs:g} epoch(s), {state.max_steps} steps of "
                 f"{args.per_device_train_batch_size} examples")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            losses = [r["loss"] for r in state.log_history if "loss" in r]
            loss = f", loss {losses[-1]:.4f}" if losses else ""
            self.say(f"  step {state.global_step}/{state.max_steps}, epoch {state.epoch or 0:.2f}{loss}")

    def on_epoch_end(self, args, state, control, **kwargs):
        self.say(f"epoch {round(state.epoch or 0)}/{args.num_train_epochs:g} done (step {state.global_step}, "
                 "dev split scored)")


class _EpochEvaluator(TrainerCallback):
    """Scores the dev split at the end of every epoch (when ``settings.eval_every_epoch``)."""

    def __init__(self, *, model, tokenizer, task_data, dev, dev_features, settings, device, mixed_precision):
        self.model, self.tokenizer, self.task_data = model, tokenizer, task_data
        self.dev, self.dev_features, self.settings = dev, dev_features, settings
        self.device, self.mixed_precision = device, mixed_precision
        self.epoch_metrics: list[dict] = []
        self.eval_time_s = 0.0
        self.step = 0

    def evaluate_now(self, epoch: float) -> dict:
        t = time.perf_counter()
        device = str(next(self.model.parameters()).device)
        m = evaluate_model(self.model, self.tokenizer, self.task_data, self.dev, self.settings,
                           features=self.dev_features, device=device, mixed_precision=self.mixed_precision)
        dt = time.perf_counter() - t
        self.eval_time_s += dt
        rec = {"epoch": round(float(epoch), 4), "step": int(self.step), **m, "eval_time_s": dt}
        self.epoch_metrics.append(rec)
        logger.info("%s epoch %.2f: %s", self.task_data.spec.name, epoch, m)
        return rec

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        if self.settings.eval_every_epoch:
            self.evaluate_now(epoch=state.epoch or 0.0)


# ----------------------------------------------------------------------------- command line


def _cmd_baselines(args) -> int:
    """``tasktransfer baselines`` (the parser is in ``cli``): the floor scores as JSON on stdout."""
    from ..paths import check_encoder
    from ..data.commands import load_task_data
    from ..errors import progress

    encoder = check_encoder(args.encoder)
    if args.max_seq_length is not None:
        from transformers import AutoConfig

        from ..paths import default_encoder

        name = encoder or default_encoder()
        limit = getattr(AutoConfig.from_pretrained(name), "max_position_embeddings", None)
        if limit and args.max_seq_length > limit:
            raise UsageError(f"--max-seq-length {args.max_seq_length}: the encoder {name} has {limit} positions; "
                             f"expected at most {limit}")
    if args.threads:
        torch.set_num_threads(args.threads)
    td = load_task_data(args.task, source=args.source, data_dir=args.data_dir)
    progress(f"loaded {td!r}")
    overrides = {k: v for k, v in (("max_eval_examples", args.max_eval_examples),
                                   ("max_seq_length", args.max_seq_length)) if v is not None}
    settings = preset(td.spec.task_class, **overrides)
    progress(f"majority baseline on {td.spec.name} ({args.regime}, seed {args.seed})")
    majority = majority_baseline(td, regime=args.regime, seed=args.seed, max_eval_examples=settings.max_eval_examples)
    progress("untrained baseline: the pretrained encoder with a fresh head")
    untrained = untrained_baseline(td, encoder, settings, seed=args.seed)
    print(json.dumps({"task": td.spec.name, "regime": args.regime, "seed": args.seed,
                      "eval_examples": len(eval_subset(td.splits["validation"], settings.max_eval_examples)),
                      "majority": {**majority, "score": task_score(majority, td.spec.metrics)},
                      "untrained": {**untrained, "score": task_score(untrained, td.spec.metrics)}}, indent=1))
    return 0


def _cmd_finetune(args) -> int:
    """``tasktransfer finetune`` (the parser is in ``cli``): one run; progress on stderr, the result JSON on
    stdout."""
    from ..paths import check_encoder
    from ..data.commands import load_task_data
    from ..errors import progress

    encoder = check_encoder(args.encoder)
    if args.init_from is not None and not (Path(args.init_from) / "model").is_dir() \
            and not (Path(args.init_from) / "config.json").is_file():
        from ..errors import MissingFileError

        raise MissingFileError(f"--init-from {args.init_from}: no finished source run there; expected a run directory "
                               "written by `tasktransfer finetune` (with model/) or a model folder")
    td = load_task_data(args.task, source=args.source, data_dir=args.data_dir)
    from ..data.regimes import LIMITED_SIZE

    n_train = len(td.splits["train"]) if args.regime == "FULL" else min(LIMITED_SIZE, len(td.splits["train"]))
    if args.batch_size is not None and args.batch_size > n_train:
        raise UsageError(f"--batch-size {args.batch_size}: larger than the {args.regime} training set of {td.spec.name} "
                         f"({n_train} examples); expected at most {n_train}")
    out = Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file()):
        raise UsageError(f"--out {out}: exists and is not a run directory (no {CONFIG_FILE}); expected a new or empty "
                         "folder, or a run directory written by `tasktransfer finetune` (refusing to delete it)")
    progress(f"loaded {td!r}; fine-tuning into {args.out}")
    overrides = {k: v for k, v in (("num_epochs", args.epochs), ("learning_rate", args.lr),
                                   ("batch_size", args.batch_size), ("max_eval_examples", args.max_eval_examples))
                 if v is not None}
    r = fine_tune(td, args.out, encoder=encoder, init_from=args.init_from, regime=args.regime, seed=args.seed,
                  settings=preset(td.spec.task_class, **overrides), num_threads=args.threads,
                  callbacks=[_ProgressLines(progress)], checkpoint_every_s=args.checkpoint_every)
    print(json.dumps({"task": r.task, "regime": r.regime, "seed": r.seed, "score": r.score,
                      "final_metrics": r.final_metrics, "train_examples": r.train_examples,
                      "train_examples_per_s": round(r.train_examples_per_s, 2), "wall_time_s": round(r.wall_time_s, 1),
                      "model_dir": r.model_dir}, indent=1))
    return 0

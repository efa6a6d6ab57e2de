"""TaskEmb (Vu et al. 2020, §3.2): the diagonal Fisher information of a model fine-tuned on the task,
after Task2Vec, computed as in the authors' code (``run_taskemb_{CR,QA,SL}.py``) with eval mode everywhere.

One pass over the training set. Per batch the model's own mean loss is back-propagated once and every
*component* is accumulated:

- every parameter (encoder and head): grad² (elementwise), same shape as the parameter;
- ``encoder.layer.{i}.multihead_output`` (self-attention output, heads concatenated, before the output
  projection) and ``encoder.layer.{i}.layer_output`` (layer output after its LayerNorm): the gradient
  w.r.t. the activation [B, T, H], masked to real tokens, summed over batch and tokens, squared, divided
  by the batch's real-token count -> [H];
- ``cls_output``: the gradient w.r.t. the [CLS] representation the head reads, summed over the batch,
  squared, divided by the batch's real-token count -> [H]. CR: the pooled output (BERT pooler, dense +
  tanh), as in the authors' code. QA: the head reads every position and the model has no pooler, so the
  component is the gradient w.r.t. the final-layer hidden state at position 0 (the [CLS] token, which is
  also the no-answer position) — what a pooler would take as input. SL: no ``cls_output`` component: the
  [CLS] position carries no label and the tagging head is applied per position, so that gradient is
  identically zero. (The authors' QA/SL models computed an unused pooler whose gradient was None, so
  their QA and SL runs had no such component at all.)

Every sum is divided by the number of examples at the end (QA: doc-stride windows).

QA loss (``qa_loss=``, recorded in every QA embedding's meta):

- ``"authors"`` (default): the authors' computation. Every doc-stride window is padded to
  ``max_seq_length`` (their features were) and the start/end softmaxes run over all of its positions,
  padding included (transformers' ``BertForQuestionAnswering`` loss, which their code called). The
  padding positions' logits are those of real hidden states (padding queries attend to the real
  tokens), so the Fisher values depend on ``max_seq_length``: that is the paper's estimator.
- ``"masked"``: padding positions left out of both softmaxes, so an example's loss does not depend on
  how far its batch is padded (batches padded dynamically). A different estimator: its components differ
  from the authors' wherever windows carry padding. The offline study's QA TaskEmbs were computed with it
  (a stored QA embedding without a ``qa_loss`` field was made with it).

We default to the authors' loss because TaskEmb is defined by their computation, and nothing argues
strongly against it: with every window padded to ``max_seq_length`` an example's loss does not depend on
its batch either, so the masked loss only saves the work on padding positions. It is kept for the
embeddings made with it (comparing a QA source with a QA target needs one loss for both).

Components that only hold rounding noise (zero in exact arithmetic) — :func:`noise_only_components`:

- every layer's attention key bias ``encoder.layer.{i}.attention.self.key.bias``: a bias added to every
  key adds the same ``q·b`` to every attention score of a query, which the softmax cancels;
- QA: the span head's bias and the last layer's output LayerNorm bias: their gradients are sums over
  the positions of the start/end softmax gradients ``p - y``, which sum to zero (both losses: under the
  masked loss padding positions get no gradient at all);
- QA with the masked loss: the last layer's ``layer_output`` component (its masked token sum is the same
  zero sum). Not under the authors' loss: the sum over real tokens then misses the padding positions'
  share of the softmax, ``-Σ_pad p``, and is a real quantity.

They are found by these rules and by a measured test (norm below ``NOISE_RELATIVE_THRESHOLD`` times the
median component norm of the same computation), flagged in the meta (``noise_only``, ``noise_reasons``)
and left out of fusion, maps and rankings.

Estimators (``estimator=``, recorded in every embedding's meta):

- ``"paper"`` (default): as above — the square of the gradient of the *batch-mean* loss.
- ``"empirical"``: the textbook empirical Fisher, the mean over examples of the squared *per-example*
  gradient. Defined as the paper's estimator with batches of one example (per-example loss, squared
  gradient, activation sums normalised by the example's own real-token count); computed with
  ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) in chunks of examples. Activation gradients come
  from zero "probe" tensors added to the activations by forward hooks. BERT embedding tables are not
  differentiated inside ``vmap`` (a dense vocabulary-sized gradient per example): their per-example
  gradients are rebuilt exactly from the gradient at the embedding sum (the input of the embedding
  LayerNorm), one row per distinct token id.

Labels (``labels=``): ``"gold"``, or ``"sampled"`` from the model's predictive distribution with
``num_label_samples`` draws (authors: 100) per prediction, seeded: classes / start and end positions /
tags by multinomial draws (the loss is the mean negative log-likelihood of the draws); regression
``y ~ Normal(prediction, regression_std)`` kept inside ``regression_range`` (the gold labels' range by
default) by redrawing values outside it — the same distribution as the authors' whole-batch rejection —
with loss ``(y - prediction)² / (2 regression_std²)``. SL draws are made at the labelled positions (first
word pieces), where the model was trained; the authors also drew at [CLS], [SEP] and continuation pieces.

Losses per class: CR classification cross-entropy; CR regression squared error; QA the mean of the start
and end cross-entropies (softmax over every position of the window, or over its real tokens: ``qa_loss``);
SL cross-entropy averaged over the labelled word pieces of the
batch (transformers' token-classification loss; per example: over the example's labelled pieces).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .store import LEGACY_QA_LOSS, QA_LOSSES, TaskEmbedding, base_meta, is_noise_only

ESTIMATORS = ("paper", "empirical")
# A component whose norm is below this fraction of the median component norm of its computation holds
# only rounding noise. Measured: in the offline study (float32 MiniLM, activation components) the QA last
# layer's masked layer_output sits at 1e-23 absolute, 2.5e-16 to 6.6e-11 of its task's median, every other
# component at >= 1.3e-14 absolute (FAQ-TR's tiny gradients) and >= 6.4e-4 of the median; on the tests'
# tiny float64 BERT the zero components sit below 1e-26 of the median and the smallest real ones, the
# attention query biases, at 5.8e-8. 1e-9 lies between the largest noise and the smallest real value seen.
NOISE_RELATIVE_THRESHOLD = 1e-9
LABEL_SOURCES = ("gold", "sampled")
CLS_COMPONENT = "cls_output"
HEAD_PREFIX = "head."
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
TARGET_KEYS = ("labels", "start_positions", "end_positions")
_EMB_SITE = "_embedding_sum"  # probe at the embedding LayerNorm input (empirical estimator only)
_SPARSE_EMBEDDING_TYPES = ("bert",)
_SPARSE_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def multihead_component(layer: int) -> str:
    """Name of layer ``layer``'s self-attention-output component."""
    return f"encoder.layer.{layer}.multihead_output"


def layer_output_component(layer: int) -> str:
    """Name of layer ``layer``'s output (after LayerNorm) component."""
    return f"encoder.layer.{layer}.layer_output"


def parse_component(name: str) -> dict:
    """What a component is: ``{"kind", "layer"}`` with kind one of "parameter", "head", "multihead_output",
    "layer_output", "cls_output" and layer the encoder layer index (None outside the layers)."""
    m = re.match(r"encoder\.layer\.(\d+)\.", name)
    layer = int(m.group(1)) if m else None
    if name == CLS_COMPONENT:
        kind = "cls_output"
    elif name.startswith(HEAD_PREFIX):
        kind = "head"
    elif name.endswith(".multihead_output"):
        kind = "multihead_output"
    elif name.endswith(".layer_output"):
        kind = "layer_output"
    else:
        kind = "parameter"
    return {"kind": kind, "layer": layer}


# ------------------------------------------------------------------------------------ model anatomy


def _class_name(task_class: Any) -> str:
    from ..training.settings import class_name

    return class_name(task_class)


@dataclass
class _Anatomy:
    model: torch.nn.Module
    task_class: str
    kind: str  # "class" | "regression" | "span" | "token"
    base: torch.nn.Module
    prefix: str
    layers: Sequence[torch.nn.Module]
    pooler: torch.nn.Module | None
    params: dict[str, tuple[str, torch.nn.Parameter]]  # component -> (full parameter name, parameter)
    num_labels: int
    qa_loss: str = "authors"  # span loss: softmax over every position ("authors") or real tokens ("masked")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def activation_components(self) -> list[str]:
        names = []
        for i in range(len(self.layers)):
            names += [multihead_component(i), layer_output_component(i)]
        return names + ([] if self.kind == "token" else [CLS_COMPONENT])

    def component_names(self) -> list[str]:
        return list(self.params) + self.activation_components()

    def sparse_tables(self) -> dict[str, torch.nn.Embedding]:
        """Embedding tables whose per-example gradients can be rebuilt from the embedding-sum gradient."""
        if getattr(self.model.config, "model_type", None) not in _SPARSE_EMBEDDING_TYPES:
            return {}
        emb = getattr(self.base, "embeddings", None)
        if emb is None or not isinstance(getattr(emb, "LayerNorm", None), torch.nn.LayerNorm):
            return {}
        tables = {}
        for t in _SPARSE_TABLES:
            mod = getattr(emb, t, None)
            if not isinstance(mod, torch.nn.Embedding):
                return {}
            tables[f"embeddings.{t}.weight"] = mod
        return tables


def _anatomy(model: torch.nn.Module, task_class: Any) -> _Anatomy:
    cls = _class_name(task_class)
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if base is None or layers is None or not all(
        hasattr(l, "attention") and hasattr(l.attention, "self") and hasattr(l, "output") for l in layers
    ):
        raise TypeError(
            f"TaskEmb needs a BERT-style model (model.{prefix or '<base>'}.encoder.layer[i].attention.self and "
            f".output), got {type(model).__name__}"
        )
    num_labels = int(getattr(model.config, "num_labels", 0))
    if cls == "CR":
        regression = getattr(model.config, "problem_type", None) == "regression" or num_labels == 1
        kind = "regression" if regression else "class"
    elif cls == "QA":
        kind = "span"
    else:
        kind = "token"
    params: dict[str, tuple[str, torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for full, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        comp = full[len(prefix) + 1 :] if full.startswith(prefix + ".") else HEAD_PREFIX + full
        params[comp] = (full, p)
    return _Anatomy(
        model=model,
        task_class=cls,
        kind=kind,
        base=base,
        prefix=prefix,
        layers=layers,
        pooler=getattr(base, "pooler", None),
        params=params,
        num_labels=num_labels,
    )


def component_names(model: torch.nn.Module, task_class: Any) -> list[str]:
    """Every TaskEmb component of a model: parameters (encoder ones without the base-model prefix, e.g.
    ``embeddings.word_embeddings.weight``, ``encoder.layer.3.attention.self.query.weight``; head ones as
    ``head.classifier.weight``), then per layer ``multihead_output`` and ``layer_output``, then ``cls_output``
    (CR and QA; not SL, see the module docstring)."""
    return _anatomy(model, task_class).component_names()


def _select(names: Sequence[str], patterns: Sequence[str] | str | None) -> list[str]:
    if patterns is None:
        return list(names)
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ValueError(
            f"components: pattern(s) {unmatched} match no component; components look like "
            f"{names[:2]} ... {names[-3:]}"
        )
    return chosen


# ------------------------------------------------------------------------------------ probes


class _Probes:
    """Forward hooks that add zero tensors ("probes") to activations, so that the gradient w.r.t. a probe
    is the gradient w.r.t. that activation. Inactive (identity) unless ``values`` is set."""

    def __init__(self, anat: _Anatomy, sites: Iterable[str]):
        self.sites = list(sites)
        self.values: Mapping[str, torch.Tensor] | None = None
        self._handles = []
        for i, layer in enumerate(anat.layers):
            if multihead_component(i) in self.sites:
                self._handles.append(layer.attention.self.register_forward_hook(self._output_hook(multihead_component(i))))
            if layer_output_component(i) in self.sites:
                self._handles.append(layer.output.register_forward_hook(self._output_hook(layer_output_component(i))))
        if CLS_COMPONENT in self.sites:
            if anat.pooler is None:
                raise ValueError(f"{anat.task_class} model has no pooler; cls_output comes from the last layer")
            self._handles.append(anat.pooler.register_forward_hook(self._output_hook(CLS_COMPONENT)))
        if _EMB_SITE in self.sites:
            ln = anat.base.embeddings.LayerNorm
            self._handles.append(ln.register_forward_pre_hook(self._input_hook(_EMB_SITE)))

    def _output_hook(self, name: str):
        def hook(module, args, out):
            if self.values is None:
                return None
            if isinstance(out, tuple):
                return (out[0] + self.values[name],) + tuple(out[1:])
            return out + self.values[name]

        return hook

    def _input_hook(self, name: str):
        def hook(module, args):
            if self.values is None:
                return None
            return (args[0] + self.values[name],) + tuple(args[1:])

        return hook

    @contextlib.contextmanager
    def active(self, values: Mapping[str, torch.Tensor]):
        self.values = values
        try:
            yield
        finally:
            self.values = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _probe_shapes(anat: _Anatomy, sites: Sequence[str], B: int, T: int) -> dict[str, tuple[int, ...]]:
    H = anat.model.config.hidden_size
    shapes = {}
    for s in sites:
        if s.endswith(".multihead_output"):
            layer = anat.layers[parse_component(s)["layer"]]
            shapes[s] = (B, T, int(getattr(layer.attention.self, "all_head_size", H)))
        elif s == CLS_COMPONENT:
            shapes[s] = (B, H)
        else:
            shapes[s] = (B, T, H)
    return shapes


# ------------------------------------------------------------------------------------ losses and labels


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log_softmax over positions where mask is 1 (last dim); 0 at masked positions."""
    m = mask.bool()
    filled = torch.where(m, logits, torch.finfo(logits.dtype).min)
    return torch.where(m, torch.log_softmax(filled, dim=-1), torch.zeros((), dtype=logits.dtype, device=logits.device))


def _token_ce(out, tg) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(out.logits, dim=-1)  # [B, T, C]
    ce = -(tg["soft"] * logp).sum(-1)  # [B, T]
    return ce, tg["valid"]


def _span_softmax_mask(mask: torch.Tensor, qa_loss: str) -> torch.Tensor:
    """Positions inside the start/end softmax: every position ("authors") or the real tokens ("masked")."""
    if qa_loss not in QA_LOSSES:
        raise ValueError(f"qa_loss must be one of {QA_LOSSES}, got {qa_loss!r}")
    return torch.ones_like(mask) if qa_loss == "authors" else mask


def per_example_losses(kind: str, out, tg: Mapping[str, torch.Tensor], mask: torch.Tensor, weight: float = 1.0,
                       qa_loss: str = "authors") -> torch.Tensor:
    """Loss of each example [B] (see the module docstring) from model outputs and soft targets."""
    if kind == "class":
        return -(tg["soft"] * torch.log_softmax(out.logits, dim=-1)).sum(-1)
    if kind == "regression":
        pred = out.logits[..., 0]
        return weight * ((pred[:, None] - tg["draws"]) ** 2).mean(-1)
    if kind == "span":
        sm = _span_softmax_mask(mask, qa_loss)
        ls = _masked_log_softmax(out.start_logits, sm)
        le = _masked_log_softmax(out.end_logits, sm)
        return (-(tg["start"] * ls).sum(-1) - (tg["end"] * le).sum(-1)) / 2
    if kind == "token":
        ce, valid = _token_ce(out, tg)
        return (ce * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    raise ValueError(f"unknown loss kind {kind!r}")


def batch_loss(kind: str, out, tg: Mapping[str, torch.Tensor], mask: torch.Tensor, weight: float = 1.0,
               qa_loss: str = "authors") -> torch.Tensor:
    """The model's own mean loss of a batch: the mean of the per-example losses, except SL (token mean
    over every labelled word piece of the batch, as transformers' token-classification loss)."""
    if kind == "token":
        ce, valid = _token_ce(out, tg)
        return (ce * valid).sum() / valid.sum().clamp(min=1)
    return per_example_losses(kind, out, tg, mask, weight, qa_loss).mean()


def gold_targets(kind: str, batch: Mapping[str, torch.Tensor], num_labels: int, T: int, dtype) -> dict:
    """Soft targets (one-hot) from gold labels: class [B, C]; regression draws [B, 1]; span start/end
    [B, T]; token soft [B, T, C] + valid [B, T] (labels != -100)."""
    if kind in ("class", "regression", "token") and "labels" not in batch:
        raise KeyError(f"gold labels: batch has no 'labels' (keys: {sorted(batch)})")
    if kind == "class":
        return {"soft": F.one_hot(batch["labels"].long(), num_labels).to(dtype)}
    if kind == "regression":
        return {"draws": batch["labels"].to(dtype).reshape(-1, 1)}
    if kind == "span":
        out = {}
        for key, name in (("start", "start_positions"), ("end", "end_positions")):
            if name not in batch:
                raise KeyError(f"gold labels: QA batch has no {name!r} (keys: {sorted(batch)})")
            pos = batch[name].long().reshape(-1)
            if (pos < 0).any() or (pos >= T).any():
                raise ValueError(f"gold labels: {name} {pos.tolist()} outside the window [0, {T})")
            out[key] = F.one_hot(pos, T).to(dtype)
        return out
    labels = batch["labels"].long()
    valid = labels != -100
    soft = F.one_hot(labels.clamp(min=0), num_labels).to(dtype) * valid[..., None].to(dtype)
    return {"soft": soft, "valid": valid.to(dtype)}


def _draw_counts(probs: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Empirical distribution of ``k`` draws from each row of ``probs`` [N, C] -> [N, C]."""
    idx = torch.multinomial(probs, k, replacement=True, generator=gen)
    return F.one_hot(idx, probs.shape[-1]).sum(1).to(torch.float64) / k


def _truncated_normal(mean: torch.Tensor, std: float, k: int, lo: float | None, hi: float | None, gen: torch.Generator) -> torch.Tensor:
    """[N, k] draws of Normal(mean, std) kept in [lo, hi] by redrawing values outside (clipped after 1,000 rounds)."""
    draws = mean[:, None] + std * torch.randn(mean.shape[0], k, generator=gen, dtype=torch.float64)
    if lo is None and hi is None:
        return draws
    lo_ = -math.inf if lo is None else lo
    hi_ = math.inf if hi is None else hi
    for _ in range(1000):
        bad = (draws < lo_) | (draws > hi_)
        if not bad.any():
            break
        fresh = mean[:, None] + std * torch.randn(mean.shape[0], k, generator=gen, dtype=torch.float64)
        draws = torch.where(bad, fresh, draws)
    return draws.clamp(lo_, hi_)


@torch.no_grad()
def sampled_targets(
    kind: str,
    out,
    batch: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    *,
    num_samples: int,
    gen: torch.Generator,
    dtype,
    regression_std: float = 0.25,
    regression_range: tuple[float, float] | None = None,
    qa_loss: str = "authors",
) -> dict:
    """Soft targets from ``num_samples`` draws of the model's predictive distribution (drawn on the CPU
    with ``gen`` so that a seed gives the same labels on any device). QA: start/end positions drawn from
    the loss's softmax (``qa_loss``)."""
    dev = mask.device
    if kind == "class":
        probs = torch.softmax(out.logits.detach().double().cpu(), dim=-1)
        return {"soft": _draw_counts(probs, num_samples, gen).to(dev, dtype)}
    if kind == "regression":
        pred = out.logits.detach().double().cpu()[:, 0]
        lo, hi = regression_range if regression_range is not None else (None, None)
        return {"draws": _truncated_normal(pred, regression_std, num_samples, lo, hi, gen).to(dev, dtype)}
    if kind == "span":
        m = _span_softmax_mask(mask, qa_loss).cpu()
        res = {}
        for key, logits in (("start", out.start_logits), ("end", out.end_logits)):
            probs = _masked_log_softmax(logits.detach().double().cpu(), m).exp() * m
            res[key] = _draw_counts(probs, num_samples, gen).to(dev, dtype)
        return res
    labels = batch["labels"].cpu()
    valid = labels != -100
    probs = torch.softmax(out.logits.detach().double().cpu(), dim=-1)[valid]  # [M, C]
    soft = torch.zeros(*labels.shape, probs.shape[-1], dtype=torch.float64)
    if probs.shape[0]:
        soft[valid] = _draw_counts(probs, num_samples, gen)
    return {"soft": soft.to(dev, dtype), "valid": valid.to(dev, dtype)}


# ------------------------------------------------------------------------------------ Fisher accumulation


@dataclass
class FisherResult:
    """Fisher components (numpy, each divided by ``num_examples``): parameters in their own shape and in
    the accumulation dtype, activation components [H] in float64."""

    components: dict[str, np.ndarray]
    num_examples: int
    num_batches: int
    num_tokens: int
    estimator: str
    label_source: str
    options: dict = field(default_factory=dict)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextlib.contextmanager
def _attn_implementation(model: torch.nn.Module, impl: str):
    """Temporarily switch the attention implementation (vmap needs plain matmul attention)."""
    cfg = model.config
    old = getattr(cfg, "_attn_implementation", None)
    if old == impl:
        yield
        return
    try:
        cfg._attn_implementation = impl
        yield
    finally:
        cfg._attn_implementation = old


@contextlib.contextmanager
def _requires_grad_only(anat: _Anatomy, comps: Iterable[str]):
    """Only the chosen parameters require grad (saves their weight-gradient work otherwise)."""
    keep = set(comps)
    old = {c: p.requires_grad for c, (_, p) in anat.params.items()}
    try:
        for c, (_, p) in anat.params.items():
            p.requires_grad_(c in keep)
        yield
    finally:
        for c, (_, p) in anat.params.items():
            p.requires_grad_(old[c])


def _auto_chunk(n_values: int, itemsize: int, budget_mb: float) -> int:
    return max(1, int(budget_mb * 2**20 // max(1, n_values * itemsize)))


def fisher_from_batches(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    task_class: Any,
    *,
    estimator: str = "paper",
    labels: str = "gold",
    seed: int = 0,
    num_label_samples: int = 100,
    regression_std: float = 0.25,
    regression_range: tuple[float, float] | None = None,
    components: Sequence[str] | str | None = None,
    per_example_chunk: int | None = None,
    per_example_memory_mb: float = 1024.0,
    sparse_embedding_grads: bool = True,
    accumulate_dtype: torch.dtype | None = None,
    qa_loss: str = "authors",
) -> FisherResult:
    """Diagonal-Fisher components of ``model`` (a transformers BERT-style model with a CR/QA/SL head) over
    ``batches`` (dicts of padded tensors: input_ids, attention_mask, token_type_ids and the gold labels:
    ``labels`` [B] / [B, T], or ``start_positions``/``end_positions`` [B]). ``components``: glob patterns
    over :func:`component_names` (default: all). See the module docstring for the definitions.

    Parameter sums accumulate in ``accumulate_dtype`` (default: the parameters' dtype, so a float32 model
    adds grad² in place without copies; pass ``torch.float64`` for very long passes); activation
    components always in float64. ``per_example_chunk`` examples go through ``vmap`` at once (default:
    as many as fit ``per_example_memory_mb`` of per-example gradients). ``qa_loss`` (QA only): "authors"
    takes the start/end softmax over every position of the batches as given (pad every window to
    ``max_seq_length`` first, as :func:`compute_taskemb` does, for the authors' computation); "masked" over
    the real tokens."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    if num_label_samples < 1:
        raise ValueError(f"num_label_samples must be >= 1, got {num_label_samples}")
    if qa_loss not in QA_LOSSES:
        raise ValueError(f"qa_loss must be one of {QA_LOSSES}, got {qa_loss!r}")
    anat = _anatomy(model, task_class)
    anat.qa_loss = qa_loss
    chosen = _select(anat.component_names(), components)
    chosen_set = set(chosen)
    param_comps = [c for c in anat.params if c in chosen_set]
    act_comps = [c for c in anat.activation_components() if c in chosen_set]

    # probe sites: the chosen activations; cls_output from the pooler (CR) or the last layer (QA/SL)
    sites = [c for c in act_comps if c != CLS_COMPONENT]
    last = layer_output_component(len(anat.layers) - 1)
    cls_from_last = CLS_COMPONENT in chosen_set and anat.kind == "span"
    if CLS_COMPONENT in chosen_set:
        if cls_from_last:
            sites = sites if last in sites else sites + [last]
        else:
            sites.append(CLS_COMPONENT)
    sparse = {}
    if estimator == "empirical" and sparse_embedding_grads:
        sparse = {c: m for c, m in anat.sparse_tables().items() if c in chosen_set}
        if sparse:
            sites.append(_EMB_SITE)

    acc: dict[str, torch.Tensor] = {}
    dev = anat.device
    for c in param_comps:
        acc[c] = torch.zeros(anat.params[c][1].shape, dtype=accumulate_dtype or anat.params[c][1].dtype, device=dev)
    for c in act_comps:
        acc[c] = None  # sized at the first batch
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    probes = _Probes(anat, sites)
    n_examples = n_batches = n_tokens = 0
    weight = 1.0 / (2 * regression_std**2) if (labels == "sampled" and anat.kind == "regression") else 1.0
    sample_kw = dict(num_samples=num_label_samples, gen=gen, dtype=anat.dtype,
                     regression_std=regression_std, regression_range=regression_range, qa_loss=qa_loss)

    def add(name: str, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64)
        acc[name] = value if acc[name] is None else acc[name] + value

    try:
        with _eval_mode(model):
            for batch in batches:
                batch = {k: v.to(dev) for k, v in batch.items() if torch.is_tensor(v)}
                inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
                mask = inputs["attention_mask"]
                B, T = mask.shape
                step = _paper_step if estimator == "paper" else _empirical_step
                step(anat, probes, sites, batch, inputs, mask, labels, sample_kw, weight, param_comps,
                     act_comps, cls_from_last, sparse, acc, add, per_example_chunk, per_example_memory_mb)
                n_examples += B
                n_batches += 1
                n_tokens += int(mask.sum())
    finally:
        probes.remove()
    if n_examples == 0:
        raise ValueError("fisher_from_batches: no examples")
    result = {c: acc[c].div_(n_examples).cpu().numpy() for c in chosen if acc.get(c) is not None}
    options = dict(num_label_samples=num_label_samples if labels == "sampled" else None,
                   regression_std=regression_std if labels == "sampled" and anat.kind == "regression" else None,
                   regression_range=list(regression_range) if regression_range is not None and labels == "sampled" else None,
                   loss_kind=anat.kind, qa_loss=qa_loss if anat.kind == "span" else None)
    return FisherResult(result, n_examples, n_batches, n_tokens, estimator, labels, options)


def _targets(anat, labels, out, batch, mask, sample_kw):
    T = mask.shape[1]
    if labels == "gold":
        return gold_targets(anat.kind, batch, anat.num_labels, T, anat.dtype)
    return sampled_targets(anat.kind, out, batch, mask, **sample_kw)


def _paper_step(anat, probes, sites, batch, inputs, mask, labels, sample_kw, weight, param_comps, act_comps,
                cls_from_last, sparse, acc, add, chunk, budget):
    B, T = mask.shape
    shapes = _probe_shapes(anat, sites, B, T)
    pv = {s: torch.zeros(shapes[s], dtype=anat.dtype, device=mask.device, requires_grad=True) for s in sites}
    with _requires_grad_only(anat, param_comps):
        with probes.active(pv):
            out = anat.model(**inputs)
        tg = _targets(anat, labels, out, batch, mask, sample_kw)
        loss = batch_loss(anat.kind, out, tg, mask, weight, anat.qa_loss)
        wrt = [anat.params[c][1] for c in param_comps] + [pv[s] for s in sites]
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    for c, g in zip(param_comps, grads[: len(param_comps)]):
        if g is not None:
            g = g.detach()
            if g.dtype == acc[c].dtype:
                acc[c].addcmul_(g, g)
            else:
                acc[c].add_(g.to(acc[c].dtype).square())
    g_sites = dict(zip(sites, grads[len(param_comps):]))
    ntok = mask.sum().to(torch.float64)
    m = mask.to(anat.dtype)[..., None]
    for c in act_comps:
        if c == CLS_COMPONENT:
            g = g_sites[layer_output_component(len(anat.layers) - 1)][:, 0, :] if cls_from_last else g_sites[c]
            s = g.sum(0) if g is not None else None
        else:
            g = g_sites[c]
            s = (g * m).sum((0, 1)) if g is not None else None
        if s is None:
            s = torch.zeros(_probe_shapes(anat, [c], 1, 1)[c][-1], dtype=torch.float64, device=mask.device)
        add(c, s.to(torch.float64).square() / ntok)


def _add_segment_square_sums(acc: torch.Tensor, idx: torch.Tensor, g: torch.Tensor, valid: torch.Tensor) -> None:
    """acc[v] += Σ_i (Σ_{t: idx[i,t]=v} g[i,t])² for every table row v: the squared per-example gradient of
    an embedding table from the gradient g [b, T, H] at its lookups idx [b, T] (valid [b, T] real tokens)."""
    rows = acc.shape[0]
    b = idx.shape[0]
    keys = (torch.arange(b, device=idx.device)[:, None] * rows + idx)[valid]
    vals = g[valid].to(torch.float64)
    uniq, inv = torch.unique(keys, return_inverse=True)
    sums = torch.zeros(uniq.shape[0], g.shape[-1], dtype=torch.float64, device=g.device).index_add_(0, inv, vals)
    acc.index_add_(0, uniq % rows, sums.square().to(acc.dtype))


def _empirical_step(anat, probes, sites, batch, inputs, mask, labels, sample_kw, weight, param_comps, act_comps,
                    cls_from_last, sparse, acc, add, chunk, budget):
    from torch.func import functional_call, grad, vmap

    B, T = mask.shape
    model = anat.model
    if labels == "sampled":
        with torch.no_grad():
            out = model(**inputs)
        tg = _targets(anat, labels, out, batch, mask, sample_kw)
    else:
        tg = _targets(anat, labels, None, batch, mask, sample_kw)
    diff_comps = [c for c in param_comps if c not in sparse]
    diff = {anat.params[c][0]: anat.params[c][1].detach() for c in diff_comps}
    frozen = {full: p.detach() for c, (full, p) in anat.params.items() if c not in diff_comps}
    buffers = dict(model.named_buffers())
    shapes = _probe_shapes(anat, sites, B, T)
    pv = {s: torch.zeros(shapes[s], dtype=anat.dtype, device=mask.device) for s in sites}
    kind, dtype, fmin, qa_loss = anat.kind, anat.dtype, torch.finfo(anat.dtype).min, anat.qa_loss

    def loss_one(diff_params, probe_i, inputs_i, tg_i):
        x = {k: v[None] for k, v in inputs_i.items()}
        m2 = x["attention_mask"]
        x["attention_mask"] = ((1.0 - m2.to(dtype)) * fmin)[:, None, None, :]  # additive 4D mask: no data-dependent checks
        with probes.active(probe_i):
            out = functional_call(model, (diff_params, frozen, buffers), args=(), kwargs=x)
        return per_example_losses(kind, out, {k: v[None] for k, v in tg_i.items()}, m2, weight, qa_loss)[0]

    per_example_grad = vmap(grad(loss_one, argnums=(0, 1)), in_dims=(None, 0, 0, 0))
    n_values = sum(p.numel() for p in diff.values()) + sum(math.prod(s[1:]) for s in shapes.values())
    chunk = chunk or _auto_chunk(n_values, torch.finfo(dtype).bits // 8, budget)
    tables_idx = {}
    if sparse:
        emb = anat.base.embeddings
        pos = getattr(emb, "position_ids", None)
        pos = pos[:, :T].expand(B, T) if pos is not None else torch.arange(T, device=mask.device).expand(B, T)
        tt = inputs.get("token_type_ids", torch.zeros_like(inputs["input_ids"]))
        tables_idx = {"embeddings.word_embeddings.weight": inputs["input_ids"],
                      "embeddings.position_embeddings.weight": pos,
                      "embeddings.token_type_embeddings.weight": tt}
    last = layer_output_component(len(anat.layers) - 1)
    with _attn_implementation(model, "eager"):
        for s in range(0, B, chunk):
            sl = slice(s, min(B, s + chunk))
            g_params, g_sites = per_example_grad(
                diff, {k: v[sl] for k, v in pv.items()}, {k: v[sl] for k, v in inputs.items()},
                {k: v[sl] for k, v in tg.items()},
            )
            for c in diff_comps:
                g = g_params[anat.params[c][0]]
                acc[c].add_(g.square().sum(0).to(acc[c].dtype))
            del g_params
            mk = mask[sl].to(dtype)
            ntok = mk.sum(1).to(torch.float64)  # real tokens per example
            for c in act_comps:
                if c == CLS_COMPONENT:
                    g = g_sites[last][:, 0, :] if cls_from_last else g_sites[c]
                    sq = g.to(torch.float64).square()
                else:
                    sq = (g_sites[c] * mk[..., None]).sum(1).to(torch.float64).square()
                add(c, (sq / ntok[:, None]).sum(0))
            # lookups that receive gradient: the real tokens, and under the authors' QA loss the padding too
            looked_up = (torch.ones_like(mask[sl], dtype=torch.bool) if kind == "span" and qa_loss == "authors"
                         else mask[sl].bool())
            for c, table in sparse.items():
                idx = tables_idx[c][sl]
                rows = looked_up if table.padding_idx is None else looked_up & (idx != table.padding_idx)
                _add_segment_square_sums(acc[c], idx, g_sites[_EMB_SITE], rows)  # padding_idx rows get no gradient


# ------------------------------------------------------------------------------------ noise-only components

_KEY_BIAS = re.compile(r"encoder\.layer\.\d+\.attention\.self\.key\.bias$")


def noise_only_components(names: Iterable[str], task_class: Any, num_layers: int | None,
                          qa_loss: str | None = None) -> dict[str, str]:
    """The components among ``names`` that are zero in exact arithmetic, with the reason (module
    docstring): every attention key bias; QA: the span head's biases and the last layer's output LayerNorm
    bias, and under the masked loss (``qa_loss`` None on a QA embedding means :data:`LEGACY_QA_LOSS`) the
    last layer's ``layer_output``. ``num_layers``: encoder layers (None: the last layer is not known and its
    rules are skipped)."""
    cls = _class_name(task_class)
    qa_loss = qa_loss or LEGACY_QA_LOSS
    last = None if num_layers is None else int(num_layers) - 1
    out = {}
    for n in names:
        if _KEY_BIAS.search(n):
            out[n] = "attention key bias: the softmax over keys cancels a bias added to every key"
        elif cls != "QA":
            continue
        elif n.startswith(HEAD_PREFIX) and n.endswith(".bias"):
            out[n] = "span head bias: the start/end softmax gradients sum to zero over the softmax's positions"
        elif last is not None and n == f"encoder.layer.{last}.output.LayerNorm.bias":
            out[n] = ("last layer's output LayerNorm bias: its gradient is the span head's weights times the "
                      "start/end softmax gradients summed over the softmax's positions, zero")
        elif last is not None and n == layer_output_component(last) and qa_loss == "masked":
            out[n] = ("last layer's layer_output under the masked QA loss: the start/end softmax gradients summed "
                      "over the real tokens, zero")
    return out


def mark_noise_components(embeddings: Mapping[str, TaskEmbedding], *, num_layers: int | None = None,
                          threshold: float = NOISE_RELATIVE_THRESHOLD) -> dict[str, list[str]]:
    """Flag, in place, the components of ONE TaskEmb computation (component name -> TaskEmbedding, one task)
    that hold only rounding noise, by rule (:func:`noise_only_components`) and by measure (norm below
    ``threshold`` x the median component norm). Every embedding's meta gets ``noise_only`` (bool),
    ``noise_reasons`` (subset of ["rule", "magnitude"]), ``noise_rule`` (the rule's reason or None),
    ``relative_norm`` (its norm / the median), and the computation's ``noise_components`` and
    ``noise_threshold``. ``num_layers`` defaults to the meta's. Returns {flagged component: reasons}."""
    if not embeddings:
        return {}
    metas = [e.meta for e in embeddings.values()]
    tasks = {m.get("task") for m in metas}
    if len(tasks) != 1:
        raise ValueError(f"mark_noise_components: one computation of one task expected, got tasks {sorted(map(str, tasks))}")
    m0 = metas[0]
    num_layers = num_layers if num_layers is not None else m0.get("num_layers")
    qa_loss = m0.get("qa_loss") or (LEGACY_QA_LOSS if _class_name(m0["task_class"]) == "QA" else None)
    rules = noise_only_components(embeddings, m0["task_class"], num_layers, qa_loss)
    norms = {c: float(np.linalg.norm(e.vector.astype(np.float64))) for c, e in embeddings.items()}
    median = float(np.median(list(norms.values())))
    flagged: dict[str, list[str]] = {}
    for c, e in embeddings.items():
        rel = norms[c] / median if median > 0 else float("nan")
        reasons = (["rule"] if c in rules else []) + (["magnitude"] if rel < threshold else [])
        e.meta.update(noise_only=bool(reasons), noise_reasons=reasons, noise_rule=rules.get(c),
                      relative_norm=rel)
        if reasons:
            flagged[c] = reasons
    for e in embeddings.values():
        e.meta.update(noise_components=sorted(flagged), noise_threshold=threshold)
        if num_layers is not None:
            e.meta.setdefault("num_layers", int(num_layers))
    return flagged


# ------------------------------------------------------------------------------------ task-level API


def _read_run_info(model_dir: Path) -> dict:
    """config.json + result.json of the fine-tuning run whose ``model/`` folder is ``model_dir`` (empty
    dict for a bare transformers folder)."""
    info: dict = {}
    run_dir = model_dir.parent
    if model_dir.name != "model":
        return info
    for name in ("config.json", "result.json"):
        f = run_dir / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                info.update(data)
    return info


def load_finetuned(model_dir: str | os.PathLike, task_class: Any, device: str | torch.device | None = None):
    """(model, tokenizer, model folder, run info) from a fine-tuning run directory or a transformers folder."""
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from ..training.models import resolve_model_dir

    folder = resolve_model_dir(model_dir)
    auto = {"CR": AutoModelForSequenceClassification, "QA": AutoModelForQuestionAnswering,
            "SL": AutoModelForTokenClassification}[_class_name(task_class)]
    model = auto.from_pretrained(folder)
    if device is not None:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer, folder, _read_run_info(folder)


def compute_taskemb(
    task_data,
    model_dir: str | os.PathLike,
    *,
    estimator: str = "paper",
    labels: str = "gold",
    seed: int = 0,
    split: str | None = None,
    regime: Any = None,
    data_seed: int | None = None,
    batch_size: int = 32,
    max_examples: int | None = None,
    num_label_samples: int = 100,
    regression_std: float = 0.25,
    regression_range: tuple[float, float] | None = None,
    components: Sequence[str] | str | None = None,
    shuffle: bool = True,
    settings=None,
    encoder: str | None = None,
    device: str | torch.device | None = None,
    per_example_chunk: int | None = None,
    qa_loss: str = "authors",
) -> dict[str, TaskEmbedding]:
    """TaskEmb of a task from the model fine-tuned on it (``model_dir``: a fine-tuning run directory
    holding ``model/``, or a transformers folder). Returns component name -> TaskEmbedding (the Fisher
    values flattened to float32; ``meta["shape"]`` keeps the parameter's shape).

    ``estimator``: "paper" (square of the batch-mean gradient) or "empirical" (mean of squared
    per-example gradients); ``labels``: "gold" or "sampled" (``num_label_samples`` draws, seeded by
    ``seed``; regression draws kept in ``regression_range``, default the gold labels' range);
    ``components``: glob patterns over :func:`component_names` (default all; e.g.
    ``["encoder.layer.*.layer_output", "cls_output"]`` skips the large per-parameter vectors).
    The training rows are those the run was fine-tuned on: ``split``, ``regime`` and ``data_seed`` default
    to the run's (its ``config.json`` / ``result.json``), else "train", FULL and ``seed``. Batches of
    ``batch_size`` (authors: 32) in a random order drawn with ``seed`` (the authors' RandomSampler;
    ``shuffle=False`` keeps the data order). Tokenisation: ``training.features.tokenize_for_class`` with the run's
    settings (or the class preset). ``max_examples`` caps the rows (seeded sample) for quick runs.
    ``qa_loss`` (QA): "authors" (default; windows padded to ``max_seq_length``, padding inside the start/end
    softmax, as the authors' code) or "masked" (dynamic padding, padding outside the softmax); see the
    module docstring. Components that hold only rounding noise are flagged in their meta
    (:func:`mark_noise_components`).
    """
    from ..training.features import collator_for_class, model_inputs, tokenize_for_class
    from ..training.settings import FineTuneSettings, preset
    from .textemb import default_device, training_rows

    t0 = time.perf_counter()
    spec = task_data.spec
    cls = _class_name(spec.task_class)
    if qa_loss not in QA_LOSSES:
        raise ValueError(f"qa_loss must be one of {QA_LOSSES}, got {qa_loss!r}")
    device = torch.device(device) if device is not None else default_device()
    model, tokenizer, folder, run = load_finetuned(model_dir, cls, device)
    if settings is None:
        s = run.get("settings")
        settings = FineTuneSettings.from_dict(s) if isinstance(s, dict) else preset(cls)
    if run.get("task") not in (None, spec.name):
        raise ValueError(
            f"compute_taskemb: {model_dir} was fine-tuned on {run['task']!r} (its config.json), not on "
            f"{spec.name!r}; TaskEmb needs the model fine-tuned on the task itself"
        )
    split = split or run.get("train_split", "train")
    regime = regime if regime is not None else run.get("regime", "FULL")
    data_seed = data_seed if data_seed is not None else int(run.get("seed", seed))
    rows, regime_name = training_rows(task_data, split, regime, data_seed, max_examples)

    label_names = getattr(task_data, "label_names", None)
    is_reg = bool(getattr(spec, "is_regression", False))
    if cls in ("CR", "SL") and not is_reg and label_names is not None and model.config.num_labels != len(label_names):
        raise ValueError(
            f"{spec.name}: model at {folder} has num_labels={model.config.num_labels} but the task has "
            f"{len(label_names)} labels {list(label_names)[:10]}; is it the model fine-tuned on this task?"
        )
    if cls == "CR" and is_reg and labels == "sampled" and regression_range is None:
        ys = np.asarray(rows["label"], dtype=np.float64)
        regression_range = (float(ys.min()), float(ys.max()))

    feats = model_inputs(tokenize_for_class(task_data, rows, tokenizer, settings, label_names, for_training=True))
    # the authors' QA loss: every window padded to max_seq_length, as their features were
    pad_to = settings.max_seq_length if cls == "QA" and qa_loss == "authors" else None
    collate = collator_for_class(cls, tokenizer, pad_to_length=pad_to)
    order = np.random.default_rng(seed).permutation(len(feats)) if shuffle else np.arange(len(feats))

    def batches():
        for s in range(0, len(order), batch_size):
            yield collate([feats[int(i)] for i in order[s : s + batch_size]])

    from ..training.fine_tuning import deterministic_cuda

    with deterministic_cuda(str(device)):  # a rerun on a GPU gives the same Fisher values bit for bit
        res = fisher_from_batches(
            model, batches(), cls, estimator=estimator, labels=labels, seed=seed,
            num_label_samples=num_label_samples, regression_std=regression_std,
            regression_range=regression_range, components=components, per_example_chunk=per_example_chunk,
            qa_loss=qa_loss,
        )
    enc = encoder or run.get("encoder") or getattr(model.config, "_name_or_path", None) or str(folder)
    common = dict(
        task=spec.name, task_class=cls, method="TaskEmb", estimator=estimator, label_source=labels,
        encoder=str(enc), model_dir=str(folder), split=split, regime=regime_name, seed=seed,
        data_seed=data_seed, num_examples=res.num_examples, num_source_rows=len(rows), num_batches=res.num_batches,
        num_tokens=res.num_tokens, batch_size=batch_size, shuffle=shuffle, max_examples=max_examples,
        max_seq_length=settings.max_seq_length, doc_stride=settings.doc_stride if cls == "QA" else None,
        num_layers=len(_anatomy(model, cls).layers), **res.options,
        # how the model was fine-tuned (its run's config.json), so that a target is fine-tuned the same way
        **({"finetune_settings": run["settings"]} if run.get("settings") else {}),
        # how well it learned the task (its run's result.json): a TaskEmb of a model that learned nothing
        # (e.g. at the majority class) describes the pretrained encoder more than the task
        **({"finetune_score": run["score"], "finetune_metrics": run.get("final_metrics")}
           if isinstance(run.get("score"), (int, float)) else {}),
    )
    meta0 = base_meta(**common)
    wall = round(time.perf_counter() - t0, 3)
    out = {}
    for name, arr in res.components.items():
        meta = dict(meta0, component=name, component_kind=parse_component(name)["kind"],
                    layer=parse_component(name)["layer"], shape=list(arr.shape), wall_time_s=wall)
        out[name] = TaskEmbedding(arr.reshape(-1), meta)
    mark_noise_components(out)
    return out

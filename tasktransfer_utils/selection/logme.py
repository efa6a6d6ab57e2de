"""LogME (You et al., ICML 2021): the log marginal evidence of a linear model on frozen features.

Beyond Vu et al. (2020): a source-selection score that needs no target fine-tuning. For each source,
run the *source-fine-tuned* encoder over the target's training data; the better a Bayesian linear
head on those features explains the target labels, the higher the source ranks.

Model (You et al. §4.2): for one target column y ∈ R^n and features F ∈ R^{n×D},
w ~ N(0, α⁻¹ I_D), y | F, w ~ N(F w, β⁻¹ I_n). The evidence, with A = α I + β FᵀF and
m = β A⁻¹ Fᵀ y, is

    log p(y | F, α, β) = n/2 log β + D/2 log α − n/2 log 2π − β/2 ‖F m − y‖² − α/2 mᵀm − 1/2 log|A|.

α and β are set by MacKay's fixed-point iteration (You et al. Algorithm 1):
γ = Σ_i β σ_i² / (α + β σ_i²),  α ← γ / mᵀm,  β ← (n − γ) / ‖F m − y‖²,
where σ_i are the singular values of F; one SVD makes every iteration O(min(n, D)).
LogME = evidence / n, averaged over label columns (one-hot classes for classification, one column
per output for regression).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasktransfer_utils.selection.rankers import Ranker

_TINY = 1e-300


@dataclass
class LogMEFit:
    """Result of the fixed-point iteration for one label column. ``evidence`` is per example (÷ n)."""

    evidence: float
    alpha: float
    beta: float
    gamma: float
    iterations: int
    converged: bool


class _SVD:
    """Thin SVD of the feature matrix, shared by all label columns."""

    def __init__(self, features: np.ndarray):
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
            raise ValueError(f"LogME features must be a non-empty 2-D array (n, D), got shape {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("LogME features contain NaN or inf")
        self.n, self.d = f.shape
        self.u, s, _ = np.linalg.svd(f, full_matrices=False)
        self.s2 = s**2  # eigenvalues of FᵀF (the other D − r are zero)


def _evidence_terms(svd: _SVD, z: np.ndarray, yy: float, alpha: float, beta: float):
    """(mᵀm, ‖Fm − y‖², γ, log|A|) for projections z = Uᵀy and ‖y‖² = yy."""
    denom = alpha + beta * svd.s2
    mm = float(np.sum((beta * np.sqrt(svd.s2) * z / denom) ** 2))
    res = float(max(yy - np.sum(z**2), 0.0) + np.sum((alpha * z / denom) ** 2))
    gamma = float(np.sum(beta * svd.s2 / denom))
    logdet = float(np.sum(np.log(denom)) + (svd.d - svd.s2.size) * np.log(alpha))
    return mm, res, gamma, logdet


def _evidence(svd: _SVD, z: np.ndarray, yy: float, alpha: float, beta: float) -> float:
    mm, res, _, logdet = _evidence_terms(svd, z, yy, alpha, beta)
    n, d = svd.n, svd.d
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res - alpha / 2 * mm - logdet / 2)


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Total log evidence log p(y | F, α, β) (not divided by n) at given α, β; shapes (n, D), (n,)."""
    svd = _SVD(features)
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size != svd.n:
        raise ValueError(f"labels have {y.size} rows, features {svd.n}")
    return float(_evidence(svd, svd.u.T @ y, float(y @ y), float(alpha), float(beta)))


def _fit_column(svd: _SVD, y: np.ndarray, tol: float, max_iter: int) -> LogMEFit:
    z = svd.u.T @ y
    yy = float(y @ y)
    alpha, beta = 1.0, 1.0
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        mm, res, gamma, _ = _evidence_terms(svd, z, yy, alpha, beta)
        new_alpha = gamma / max(mm, _TINY)
        new_beta = max(svd.n - gamma, _TINY) / max(res, _TINY)
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if change < tol:
            converged = True
            break
    _, _, gamma, _ = _evidence_terms(svd, z, yy, alpha, beta)
    return LogMEFit(evidence=float(_evidence(svd, z, yy, alpha, beta)) / svd.n, alpha=alpha, beta=beta,
                    gamma=gamma, iterations=it, converged=converged)


def label_matrix(labels: np.ndarray, regression: bool = False, num_classes: int | None = None) -> np.ndarray:
    """Targets as columns (n, K): one-hot for integer class labels, the values themselves for regression."""
    labels = np.asarray(labels)
    if regression:
        y = labels.astype(np.float64)
        return y[:, None] if y.ndim == 1 else y
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"classification labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError("classification labels must be >= 0 (drop ignored positions such as -100 first)")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    present = np.unique(labels)
    y = np.zeros((labels.size, k))
    y[np.arange(labels.size), labels] = 1.0
    return y[:, present]  # classes absent from the sample carry no evidence


def logme_fits(features: np.ndarray, labels: np.ndarray, regression: bool = False,
               tol: float = 1e-10, max_iter: int = 1000) -> list[LogMEFit]:
    """One :class:`LogMEFit` per label column (see :func:`label_matrix`)."""
    svd = _SVD(features)
    y = label_matrix(labels, regression)
    if y.shape[0] != svd.n:
        raise ValueError(f"labels have {y.shape[0]} rows, features {svd.n}")
    return [_fit_column(svd, y[:, k], tol, max_iter) for k in range(y.shape[1])]


def logme_score(features: np.ndarray, labels: np.ndarray, regression: bool = False,
                tol: float = 1e-10, max_iter: int = 1000) -> float:
    """LogME of features (n, D) for labels (n,) int classes, or (n,)/(n, K) real targets with
    ``regression=True``: the mean over label columns of the maximised log evidence per example."""
    return float(np.mean([f.evidence for f in logme_fits(features, labels, regression, tol, max_iter)]))


# ----------------------------------------------------------------------------------------------
# Features of a fine-tuned encoder over a target task
# ----------------------------------------------------------------------------------------------


def encoder_features(
    model_dir: str | os.PathLike,
    task_data: Any,
    *,
    regime: Any = "FULL",
    max_examples: int | None = 1000,
    max_tokens: int = 20000,
    seed: int = 0,
    batch_size: int = 32,
    settings: Any = None,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Final-layer features of the encoder in ``model_dir`` (a fine-tuned run's ``model/`` or any
    transformers folder; a task head there is ignored) over the target's training data.

    Returns (features (n, H) float64, labels, is_regression):
    CR: the [CLS] vector per example, the class index or the regression value;
    SL: the first word piece of each word, its tag index;
    QA: every real token of each doc-stride window, label 1 = answer start, 2 = answer end, 0 otherwise
    (the extractive head is a per-token linear start/end classifier; an adaptation, not in You et al.).
    The rows: the ``regime``'s sample of the training split (LIMITED: the seeded 1,000 rows fine-tuning
    uses), then at most ``max_examples`` of them (seeded sample), and at most ``max_tokens`` token rows (SL/QA).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tasktransfer_utils.training.features import collator_for_class, tokenize_for_class
    from tasktransfer_utils.training.settings import class_name, preset
    from tasktransfer_utils.embeddings.textemb import training_rows

    spec = task_data.spec
    cls = class_name(spec.task_class)
    settings = settings or preset(cls)
    rows, _ = training_rows(task_data, "train", regime, seed, max_examples)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    feats = tokenize_for_class(task_data, rows, tokenizer, settings, for_training=True)
    keep = ["input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions"]
    feats = feats.remove_columns([c for c in feats.column_names if c not in keep])
    collate = collator_for_class(cls, tokenizer)
    model = AutoModel.from_pretrained(str(model_dir))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    # Batches of similar length (longest first) waste little on padding; rows go back to data order after.
    lengths = np.array([len(ids) for ids in feats["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    per_feature: list = [None] * len(feats)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = [int(i) for i in order[start:start + batch_size]]
            batch = collate([feats[i] for i in idx])
            inputs = {k: batch[k].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            hidden = model(**inputs).last_hidden_state.double().cpu().numpy()
            for row, i in enumerate(idx):
                h = hidden[row]
                if cls == "CR":
                    per_feature[i] = (h[:1], batch["labels"].numpy()[row:row + 1])
                elif cls == "SL":
                    lab = batch["labels"].numpy()[row]
                    mask = lab != -100
                    per_feature[i] = (h[mask], lab[mask])
                else:
                    mask = batch["attention_mask"].numpy()[row].astype(bool)
                    lab = np.zeros(mask.shape, dtype=np.int64)
                    lab[int(batch["end_positions"][row])] = 2
                    lab[int(batch["start_positions"][row])] = 1
                    per_feature[i] = (h[mask], lab[mask])
    xs = [f[0] for f in per_feature]
    ys = [f[1] for f in per_feature]
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    regression = bool(getattr(spec, "is_regression", False)) and cls == "CR"
    if cls != "CR" and x.shape[0] > max_tokens:
        pick = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_tokens, replace=False))
        x, y = x[pick], y[pick]
    if not regression:
        y = y.astype(np.int64)
    return x, y, regression


class LogMERanker(Ranker):
    """Rank sources by LogME of their fine-tuned encoder's features on the target (You et al. 2021).

    ``feature_fn(source, target) -> (features (n, D), labels, is_regression)``; scores are cached per
    (source, target). :meth:`from_model_dirs` builds the usual one from run directories.
    """

    method = "LogME"

    def __init__(self, feature_fn: Callable[[str, str], tuple[np.ndarray, np.ndarray, bool]], method: str = "LogME"):
        self.feature_fn = feature_fn
        self.method = method
        self._cache: dict[tuple[str, str], float] = {}

    @classmethod
    def from_model_dirs(
        cls,
        source_model_dirs: Mapping[str, str | os.PathLike],
        target_data: Mapping[str, Any] | Callable[[str], Any],
        **feature_kwargs: Any,
    ) -> "LogMERanker":
        """``source_model_dirs``: {source: fine-tuned model folder (a run's ``model/``)};
        ``target_data``: {target: loaders.TaskData} or a function target -> TaskData.
        ``feature_kwargs`` go to :func:`encoder_features` (max_examples, seed, ...)."""
        def features(source: str, target: str):
            if source not in source_model_dirs:
                raise KeyError(f"LogME: no fine-tuned model for source {source!r} (have {sorted(source_model_dirs)})")
            data = target_data(target) if callable(target_data) else target_data[target]
            return encoder_features(source_model_dirs[source], data, **feature_kwargs)

        return cls(features)

    @classmethod
    def from_scores(cls, scores: Mapping[tuple[str, str], float], method: str = "LogME") -> "LogMERanker":
        """A ranker over LogME scores computed before, ``{(source, target): score}`` (e.g. a study's records)."""
        def missing(source: str, target: str):
            raise KeyError(f"{method}: no score for source {source!r} on target {target!r}")

        ranker = cls(missing, method=method)
        ranker._cache.update({(s, t): float(v) for (s, t), v in scores.items()})
        return ranker

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        out = {}
        for source in candidates:
            key = (source, target)
            if key not in self._cache:
                x, y, regression = self.feature_fn(source, target)
                self._cache[key] = logme_score(x, y, regression=regression)
            out[source] = self._cache[key]
        return out

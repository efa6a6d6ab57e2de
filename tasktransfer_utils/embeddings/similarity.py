"""Cosine similarity between task embeddings (Vu et al. 2020, §3: sources are ranked by the cosine
similarity of their embedding to the target's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .store import COMPARABILITY_FIELDS, TaskEmbedding, check_comparable


def _as_matrix(embeddings, labels=None, check=True) -> tuple[np.ndarray, list[str]]:
    if isinstance(embeddings, Mapping):
        names = [str(k) for k in embeddings]
        vectors = [np.asarray(v, dtype=np.float64).ravel() for v in embeddings.values()]
    else:
        embeddings = list(embeddings)
        if embeddings and not all(isinstance(e, TaskEmbedding) for e in embeddings):
            raise TypeError(
                "cosine_similarity_matrix: pass a sequence of TaskEmbedding or a mapping name -> vector, "
                f"got a sequence of {type(embeddings[0]).__name__}"
            )
        if check:
            check_comparable(embeddings, COMPARABILITY_FIELDS)
        names = [str(e.task) for e in embeddings]
        vectors = [e.vector.astype(np.float64) for e in embeddings]
    if labels is not None:
        names = [str(x) for x in labels]
        if len(names) != len(vectors):
            raise ValueError(f"cosine_similarity_matrix: {len(names)} labels for {len(vectors)} embeddings")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"cosine_similarity_matrix: duplicate task names {dup}; pass labels=[...] to tell them apart"
        )
    sizes = {v.shape[0] for v in vectors}
    if len(sizes) > 1:
        raise ValueError(f"cosine_similarity_matrix: vectors differ in length {sorted(sizes)} ({names})")
    X = np.stack(vectors) if vectors else np.zeros((0, 0))
    return X, names


def cosine_similarity_matrix(
    embeddings: Sequence[TaskEmbedding] | Mapping[str, np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    check: bool = True,
) -> pd.DataFrame:
    """Tasks x tasks cosine similarities (float64) as a DataFrame indexed by task name.

    ``embeddings``: TaskEmbeddings (checked comparable: same encoder, method, component, estimator,
    label source) or a mapping name -> vector. A zero vector has similarity 0 with everything, itself
    included (as ``sklearn.metrics.pairwise.cosine_similarity``).
    """
    X, names = _as_matrix(embeddings, labels, check)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = X / np.where(norms == 0, 1.0, norms)
    S = Xn @ Xn.T
    np.clip(S, -1.0, 1.0, out=S)
    return pd.DataFrame(S, index=pd.Index(names, name="task"), columns=pd.Index(names, name="task"))


def cosine_similarity(a: np.ndarray | TaskEmbedding, b: np.ndarray | TaskEmbedding) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    if isinstance(a, TaskEmbedding) and isinstance(b, TaskEmbedding):
        check_comparable([a, b])
    va = np.asarray(getattr(a, "vector", a), dtype=np.float64).ravel()
    vb = np.asarray(getattr(b, "vector", b), dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"cosine_similarity: lengths differ ({va.shape[0]} vs {vb.shape[0]})")
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(va @ vb / (na * nb), -1.0, 1.0))

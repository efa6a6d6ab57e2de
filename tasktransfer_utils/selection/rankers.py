"""Source-task rankers (Vu et al. 2020, §5): embedding similarity, rank fusion and baselines.

Every ranker answers ``rank(target, candidates) -> pandas.DataFrame`` with columns
``source, score, rank, method``: one row per candidate, higher score = better, ``rank`` 1 = best
(tied scores share the average of their positions), rows sorted by rank then source name.

* :class:`CosineRanker` — cosine similarity between the target's task embedding and each source's
  (TextEmb, or one TaskEmb component).
* :class:`FusionRanker` — reciprocal-rank fusion (Cormack et al. 2009): score(s) = Σ_r 1/(k + rank_r(s)),
  k = 60, over the member rankings computed on the same candidate set.
* :class:`DataSizeRanker` — largest source training set first.
* :class:`CurveGradRanker` — Bingel & Søgaard (2017): the slope of each source's fine-tuning loss curve
  at 10/20/30/50/70 % of training, one ranking per point (steepest decrease first), fused by RRF.
* :class:`RandomRanker` — a seeded random order, or (``expected=True``) all candidates tied, which the
  tie-aware metrics of :mod:`selection.evaluation` turn into Random's exact expectation.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

RRF_K = 60
CURVEGRAD_POINTS = (0.1, 0.2, 0.3, 0.5, 0.7)


def ranking_frame(scores: Mapping[str, float], method: str) -> pd.DataFrame:
    """Turn ``{source: score}`` (higher = better) into the ranking table (source, score, rank, method).
    Ties share the average position; rows are ordered by rank, then source name."""
    if not scores:
        raise ValueError(f"{method}: no candidates to rank")
    frame = pd.DataFrame({"source": list(scores), "score": [float(v) for v in scores.values()]})
    if not np.all(np.isfinite(frame["score"])):
        bad = frame.loc[~np.isfinite(frame["score"]), "source"].tolist()
        raise ValueError(f"{method}: non-finite scores for sources {bad}")
    frame["rank"] = frame["score"].rank(ascending=False, method="average")
    frame["method"] = method
    return frame.sort_values(["rank", "source"], kind="mergesort").reset_index(drop=True)


class Ranker:
    """Base class: subclasses implement ``scores(target, candidates) -> {source: score}``."""

    method: str = "ranker"

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError

    def rank(self, target: str, candidates: Sequence[str]) -> pd.DataFrame:
        """Ranking of ``candidates`` for ``target``: DataFrame source, score, rank (1 = best), method."""
        candidates = list(candidates)
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"{self.method}: candidate list has duplicates: {candidates}")
        return ranking_frame(self.scores(target, candidates), self.method)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"


# ----------------------------------------------------------------------------------------------
# Embedding similarity
# ----------------------------------------------------------------------------------------------


def cosine_similarity(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine of two 1-D vectors in float64; ValueError for a zero vector or a shape mismatch."""
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    if u.shape != v.shape:
        raise ValueError(f"cosine of vectors with different lengths {u.size} and {v.size}")
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        raise ValueError("cosine similarity of a zero vector is undefined")
    return float(u @ v / (nu * nv))


def _vectors_from(embeddings: Any, **filters: Any) -> dict[str, np.ndarray]:
    """``{task: vector}`` from a mapping task -> vector or an iterable of TaskEmbeddings kept when their
    meta matches ``filters`` (``embeddings.store.select``: value, list, glob or predicate; None = any)."""
    if isinstance(embeddings, Mapping):
        return {str(k): np.asarray(getattr(v, "vector", v), dtype=np.float64) for k, v in embeddings.items()}
    from tasktransfer_utils.embeddings.store import select

    out: dict[str, np.ndarray] = {}
    active = {k: _meta_value(v) for k, v in filters.items() if v is not None}
    for emb in select(embeddings, **active):
        meta = emb.meta
        task = meta.get("task")
        if task is None:
            raise ValueError(f"task embedding without meta['task']: {meta}")
        if task in out:
            raise ValueError(
                f"two embeddings of task {task!r} match {active}; filter further (e.g. regime=, seed=, "
                "estimator=, component=)"
            )
        out[task] = np.asarray(emb.vector, dtype=np.float64)
    return out


def _meta_value(value: Any) -> Any:
    return getattr(value, "value", value)


class CosineRanker(Ranker):
    """Rank sources by cosine similarity between task embeddings (Vu et al. §5).

    ``source_vectors``: {task: 1-D vector}; ``target_vectors`` defaults to the same mapping (pass a
    separate one when targets are embedded under another regime, e.g. LIMITED targets vs FULL sources).
    """

    def __init__(
        self,
        source_vectors: Mapping[str, np.ndarray],
        target_vectors: Mapping[str, np.ndarray] | None = None,
        method: str = "TextEmb",
    ):
        self.source_vectors = {k: np.asarray(v, dtype=np.float64) for k, v in source_vectors.items()}
        self.target_vectors = (
            self.source_vectors if target_vectors is None
            else {k: np.asarray(v, dtype=np.float64) for k, v in target_vectors.items()}
        )
        self.method = method

    @classmethod
    def from_embeddings(
        cls,
        source_embeddings: Any,
        target_embeddings: Any | None = None,
        *,
        method: str | None = None,
        embedding_method: str | None = None,
        component: str | None = None,
        **meta_filters: Any,
    ) -> "CosineRanker":
        """Build from TaskEmbedding lists (or libraries iterating over them), keeping those whose meta
        matches ``embedding_method`` ("TextEmb"/"TaskEmb"), ``component`` and ``meta_filters``.
        ``method`` names the ranking (default "TextEmb", or "TaskEmb[<component>]")."""
        as_list = lambda x: x if x is None or isinstance(x, Mapping) else list(x)
        source_embeddings, target_embeddings = as_list(source_embeddings), as_list(target_embeddings)
        for side in (source_embeddings, target_embeddings):
            if side is not None and not isinstance(side, Mapping):
                noisy = noise_only_components_of(side, method=embedding_method, component=component, **meta_filters)
                if noisy:
                    raise ValueError(f"component(s) {sorted(noisy)} hold only rounding noise in some task (meta "
                                     "'noise_only'; zero in exact arithmetic) and rank nothing; choose another")
        src = _vectors_from(source_embeddings, method=embedding_method, component=component, **meta_filters)
        tgt = None
        if target_embeddings is not None:
            tgt = _vectors_from(target_embeddings, method=embedding_method, component=component, **meta_filters)
        if method is None:
            method = f"{embedding_method or 'TextEmb'}" + (f"[{component}]" if component else "")
        if not src:
            raise ValueError(f"no source embeddings match method={embedding_method!r} component={component!r} "
                             f"{meta_filters}")
        return cls(src, tgt, method=method)

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        if target not in self.target_vectors:
            raise KeyError(f"{self.method}: no embedding for target {target!r} (have {sorted(self.target_vectors)})")
        missing = [c for c in candidates if c not in self.source_vectors]
        if missing:
            raise KeyError(f"{self.method}: no embedding for sources {missing} (have {sorted(self.source_vectors)})")
        t = self.target_vectors[target]
        return {c: cosine_similarity(t, self.source_vectors[c]) for c in candidates}


# ----------------------------------------------------------------------------------------------
# Reciprocal-rank fusion
# ----------------------------------------------------------------------------------------------


def reciprocal_rank_fusion(rankings: Iterable[pd.DataFrame], k: int = RRF_K) -> dict[str, float]:
    """RRF score per source: Σ over rankings of 1 / (k + rank). Each ranking: columns source, rank.
    Every ranking must cover the same sources."""
    total: dict[str, float] = {}
    sources: set[str] | None = None
    for ranking in rankings:
        these = set(ranking["source"])
        if sources is None:
            sources = these
        elif these != sources:
            raise ValueError(f"RRF over rankings of different candidate sets: {sorted(sources ^ these)}")
        for source, rank in zip(ranking["source"], ranking["rank"]):
            total[source] = total.get(source, 0.0) + 1.0 / (k + float(rank))
    if sources is None:
        raise ValueError("RRF needs at least one ranking")
    return total


class FusionRanker(Ranker):
    """Reciprocal-rank fusion of member rankers (Vu et al. §5: TaskEmb components, TextEmb+TaskEmb)."""

    def __init__(self, rankers: Sequence[Ranker], k: int = RRF_K, method: str | None = None):
        if not rankers:
            raise ValueError("FusionRanker needs at least one member ranker")
        self.rankers = list(rankers)
        self.k = k
        self.method = method or "+".join(r.method for r in self.rankers)

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        return reciprocal_rank_fusion((r.rank(target, candidates) for r in self.rankers), k=self.k)


def noise_only_components_of(embeddings: Iterable[Any], **meta_filters: Any) -> set[str]:
    """TaskEmb components flagged as rounding noise (``meta["noise_only"]``) in any of ``embeddings`` that
    match ``meta_filters``."""
    from tasktransfer_utils.embeddings.store import is_noise_only, select

    active = {k: _meta_value(v) for k, v in meta_filters.items() if v is not None}
    return {e.meta.get("component") for e in select(embeddings, **active)
            if _meta_value(e.meta.get("method")) == "TaskEmb" and is_noise_only(e)}


def embedding_rankers(
    source_embeddings: Any,
    target_embeddings: Any | None = None,
    *,
    components: Sequence[str] | None = None,
    k: int = RRF_K,
    **meta_filters: Any,
) -> dict[str, Ranker]:
    """The paper's embedding-based rankers from stored task embeddings (TaskEmbedding iterables).

    Returns ``{"TextEmb", "TaskEmb[<component>]" for each component, "TaskEmb" (RRF of all components),
    "TextEmb+TaskEmb" (RRF of the TextEmb and the fused TaskEmb rankings)}``, each present when the
    embeddings needed exist. ``meta_filters`` (e.g. regime=, estimator=) select among stored variants.
    A component flagged as rounding noise (``meta["noise_only"]``, see ``embeddings.taskemb.mark_noise_components``)
    in any of the embeddings is left out, given in ``components`` or not: it ranks nothing.
    """
    source_embeddings = list(source_embeddings)
    target_embeddings = None if target_embeddings is None else list(target_embeddings)
    out: dict[str, Ranker] = {}
    has_text = any(_meta_value(e.meta.get("method")) == "TextEmb" for e in source_embeddings)
    if has_text:
        out["TextEmb"] = CosineRanker.from_embeddings(
            source_embeddings, target_embeddings, embedding_method="TextEmb", method="TextEmb", **meta_filters)
    if components is None:
        components = sorted({e.meta.get("component") for e in source_embeddings
                             if _meta_value(e.meta.get("method")) == "TaskEmb" and e.meta.get("component")})
    noisy = noise_only_components_of(source_embeddings + (target_embeddings or []), **meta_filters)
    components = [c for c in components if c not in noisy]
    comp_rankers = [
        CosineRanker.from_embeddings(source_embeddings, target_embeddings, embedding_method="TaskEmb",
                                     component=c, method=f"TaskEmb[{c}]", **meta_filters)
        for c in components
    ]
    for r in comp_rankers:
        out[r.method] = r
    if comp_rankers:
        out["TaskEmb"] = FusionRanker(comp_rankers, k=k, method="TaskEmb")
        if has_text:
            out["TextEmb+TaskEmb"] = FusionRanker([out["TextEmb"], out["TaskEmb"]], k=k, method="TextEmb+TaskEmb")
    return out


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------


class DataSizeRanker(Ranker):
    """Largest source first (Vu et al. §5 DataSize). ``sizes``: {source: number of training examples}.
    Under a LIMITED source regime every size is capped at 1,000, so all tie (= Random)."""

    method = "DataSize"

    def __init__(self, sizes: Mapping[str, int], method: str = "DataSize"):
        self.sizes = {k: int(v) for k, v in sizes.items()}
        self.method = method

    @classmethod
    def from_tasks(cls, names: Iterable[str], *, data_dir=None, regime: Any = "FULL", **kwargs: Any) -> "DataSizeRanker":
        """Sizes from the real data: ``loaders.task_size(name, data_dir=...)`` for each task; a LIMITED
        source regime caps them at ``data.regimes.LIMITED_SIZE``. ``regime``: a data regime or a transfer regime
        (its source side), in any spelling ``data.regimes.data_regime`` accepts."""
        from tasktransfer_utils.data import loaders
        from tasktransfer_utils.data.regimes import LIMITED_SIZE, Regime, data_regime

        source_regime = data_regime(_meta_value(regime), "source")
        sizes = {name: int(loaders.task_size(name, data_dir=data_dir, **kwargs)) for name in names}
        if source_regime is Regime.LIMITED:
            sizes = {k: min(v, LIMITED_SIZE) for k, v in sizes.items()}
        return cls(sizes)

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        missing = [c for c in candidates if c not in self.sizes]
        if missing:
            raise KeyError(f"DataSize: no training-set size for sources {missing}")
        return {c: float(self.sizes[c]) for c in candidates}


def _curve_points(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """(progress in [0, 1], loss) arrays from a loss curve: a list of dicts with ``loss`` and either
    ``fraction`` (of all training steps, as ``RunResult.loss_curve`` stores it) or ``step``/``epoch``
    (normalised by the last point), or of (step, [epoch,] loss) tuples."""
    xs, ys = [], []
    has_fraction = True
    for i, point in enumerate(curve):
        if isinstance(point, Mapping):
            if "loss" not in point:
                raise ValueError(f"loss curve point {i} has no 'loss': {point}")
            x = point.get("fraction")
            if x is None:
                has_fraction = False
                x = point.get("step", point.get("epoch_fraction", point.get("epoch")))
            if x is None:
                raise ValueError(f"loss curve point {i} has none of 'fraction', 'step', 'epoch': {point}")
            xs.append(float(x))
            ys.append(float(point["loss"]))
        else:
            has_fraction = False
            values = list(point)
            if len(values) < 2:
                raise ValueError(f"loss curve point {i} must be (step, [epoch,] loss), got {point}")
            xs.append(float(values[0]))
            ys.append(float(values[-1]))
    x = np.asarray(xs)
    y = np.asarray(ys)
    if x.size < 2:
        raise ValueError(f"a loss curve needs at least 2 points, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("loss curve has non-finite steps or losses")
    order = np.argsort(x, kind="mergesort")
    x, y = x[order], y[order]
    if x[-1] <= 0:
        raise ValueError("loss curve steps must be positive")
    return (x if has_fraction else x / x[-1]), y


def loss_curve_slope(curve: Any, at: float, window: float = 0.1) -> float:
    """Slope d(loss)/d(progress) of a loss curve at training progress ``at`` ∈ (0, 1): least-squares
    line through the points with progress within ``window``/2 of ``at`` (the 3 nearest points when
    fewer than 3 fall inside). Units: loss per whole fine-tuning run (negative = decreasing)."""
    x, y = _curve_points(curve)
    inside = np.abs(x - at) <= window / 2
    if inside.sum() < 3:
        nearest = np.argsort(np.abs(x - at), kind="mergesort")[: min(3, x.size)]
        inside = np.zeros_like(inside)
        inside[nearest] = True
    xs, ys = x[inside], y[inside]
    if np.ptp(xs) == 0:
        raise ValueError(f"loss curve has no spread in progress around {at}")
    slope = np.polyfit(xs, ys, 1)[0]
    return float(slope)


class CurveGradRanker(Ranker):
    """CurveGrad baseline (Bingel & Søgaard 2017, as used by Vu et al. §5).

    For each source, the slope of its recorded fine-tuning loss curve at 10/20/30/50/70 % of training
    (:func:`loss_curve_slope`). Bingel & Søgaard find multi-task gains most likely with auxiliary tasks
    whose loss is still falling (non-plateauing), so at each point the source with the most negative
    slope (steepest decrease) ranks first; the five rankings are fused by RRF (k = 60).
    ``loss_curves``: {source: loss curve as stored in ``RunResult.loss_curve``}.
    """

    method = "CurveGrad"

    def __init__(self, loss_curves: Mapping[str, Any], points: Sequence[float] = CURVEGRAD_POINTS,
                 window: float = 0.1, k: int = RRF_K, method: str = "CurveGrad"):
        self.points = tuple(points)
        self.window = window
        self.k = k
        self.method = method
        self.slopes: dict[str, dict[float, float]] = {}
        for source, curve in loss_curves.items():
            try:
                self.slopes[source] = {p: loss_curve_slope(curve, p, window) for p in self.points}
            except ValueError as exc:
                raise ValueError(f"CurveGrad: loss curve of source {source!r}: {exc}") from exc

    @classmethod
    def from_run_results(cls, results: Iterable[Any], **kwargs: Any) -> "CurveGradRanker":
        """From ``training.fine_tuning.RunResult`` objects (or run directories holding result.json), keyed by task."""
        curves = {}
        for item in results:
            if not hasattr(item, "loss_curve"):
                from pathlib import Path

                from tasktransfer_utils.training.fine_tuning import RunResult

                path = Path(item)
                item = RunResult.from_json(path / "result.json" if path.is_dir() else path)
            curves[item.task] = item.loss_curve
        return cls(curves, **kwargs)

    def point_rankings(self, candidates: Sequence[str]) -> list[pd.DataFrame]:
        """One ranking per curve point (score = −slope)."""
        missing = [c for c in candidates if c not in self.slopes]
        if missing:
            raise KeyError(f"CurveGrad: no loss curve for sources {missing}")
        return [ranking_frame({c: -self.slopes[c][p] for c in candidates}, f"CurveGrad@{int(round(p * 100))}%")
                for p in self.points]

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        return reciprocal_rank_fusion(self.point_rankings(candidates), k=self.k)


class RandomRanker(Ranker):
    """Random baseline. ``expected=False``: a random order drawn from ``seed``, the target name and the
    candidate set (reproducible). ``expected=True``: every candidate gets the same score, so the
    tie-aware metrics give Random's exact expectation."""

    def __init__(self, seed: int = 0, expected: bool = False, method: str | None = None):
        self.seed = int(seed)
        self.expected = expected
        self.method = method or ("Random" if expected else "Random (sampled)")

    def scores(self, target: str, candidates: Sequence[str]) -> dict[str, float]:
        if self.expected:
            return {c: 0.0 for c in candidates}
        key = zlib.crc32(("\x1f".join([target, *sorted(candidates)])).encode("utf-8"))
        rng = np.random.default_rng([self.seed, key])
        values = rng.permutation(len(candidates)).astype(float)
        return dict(zip(sorted(candidates), values))

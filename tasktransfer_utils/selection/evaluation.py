"""Evaluating source selection against measured transfer results (Vu et al. 2020, §5.1).

Input is the tidy transfer-results table, one row per fine-tuning run::

    source  target  regime           seed  score   [source_class  target_class]
    MNLI    RTE     FULL→LIMITED     0     0.712
    None    RTE     FULL→LIMITED     0     0.650   <- no-transfer baseline (source None / "" / NaN)

``score`` is the target's task score (mean of its metrics, as ``RunResult.score``). A baseline row
serves every transfer regime with the same *target* regime (the part after "→"), so one LIMITED
baseline serves FULL→LIMITED and LIMITED→LIMITED.

Definitions (per target, over one candidate set of sources; the ground truth of a source is its
transfer score, averaged over seeds unless a single seed is evaluated):

* relative gain g = (p_s→t − p_t) / p_t, absolute gain p_s→t − p_t (fractions, not %).
* ρ (rho): position (1 = top) of the truly best source in the predicted order. When several sources
  share the best measured score, the first of them counts. Ties in the predicted scores are broken
  uniformly at random and ρ is the *expected* position: with ``a`` candidates predicted strictly
  above, ``g`` candidates tied at that predicted score of which ``m`` are truly best,
  ρ = a + (g + 1) / (m + 1).
* NDCG over the full candidate list, ``sklearn.metrics.ndcg_score`` (linear gain, discount
  1/log2(position + 1), ties in the prediction averaged = expectation over random tie-breaking).
  Relevance (``relevance=``):

  - ``"minmax"`` (default): rel_s = (p_s − min) / (max − min) over the candidate set, so the best
    source has relevance 1 and the worst 0. Relevance depends only on the order and relative spacing
    of the measured scores, so NDCG is the same whether one thinks in scores, absolute or relative
    gains, and negative gains need no special case: a target where every source hurts still has a
    least harmful source. When all candidates score the same (or there is one candidate) every
    order is ideal and NDCG = 1.
  - ``"positive_gain"``: rel_s = max(g_s, 0): negative transfer counts as irrelevant. NDCG is NaN for
    a target where no source helps (nothing to rank); such targets drop out of the means.
  - ``"score"``: rel_s = p_s, the raw transfer score (must be ≥ 0).

* regret@k (%): 100 · (p_best − E[max score among the top k]) / |p_best| (Poth et al. 2021 style),
  expected over random tie-breaking; 0 when the top k contain a truly best source.
* Spearman and Kendall (tau-b) between predicted scores and measured scores (``scipy.stats``).
  NaN with fewer than two candidates or constant measured scores; 0 for a constant prediction
  (its expectation over random tie-breaking).

Random's exact expectation is obtained by giving every candidate the same predicted score
(``selection.rankers.RandomRanker(expected=True)``): the tie rules above then give E[ρ] = (n + 1)/(m + 1),
E[NDCG] = mean(rel)·Σ discounts / IDCG and the exact expected regret@k.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import comb
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import ndcg_score

REQUIRED_COLUMNS = ("source", "target", "regime", "seed", "score")
METRICS_ORDER = ("rho", "ndcg", "regret@1", "regret@3", "regret@5", "spearman", "kendall")
CANDIDATE_SETS = ("in-class", "all-class")
#: the candidate sets in the order reports show them: all-class first, the paper's headline
CANDIDATE_SETS_REPORT_ORDER = ("all-class", "in-class")
RELEVANCE_KINDS = ("minmax", "positive_gain", "score")
ALL_CLASSES = "all"


# ----------------------------------------------------------------------------------------------
# Per-target metrics on aligned arrays
# ----------------------------------------------------------------------------------------------


def expected_rank_of_best(predicted: np.ndarray, true: np.ndarray) -> float:
    """ρ for one target: expected position (1 = top) of the first truly best source in the order of
    ``predicted`` (shape (n,), higher = better) with ties broken uniformly at random."""
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    best = true == true.max()
    s_star = predicted[best].max()
    above = int(np.sum(predicted > s_star))
    group = predicted == s_star
    g = int(group.sum())
    m = int(np.sum(group & best))
    return above + (g + 1) / (m + 1)


def relevance_scores(true: np.ndarray, relevance: str = "minmax", baseline: float | None = None) -> np.ndarray:
    """Graded relevance of each candidate (shape (n,)) for NDCG; see the module docstring."""
    true = np.asarray(true, dtype=np.float64)
    if relevance == "minmax":
        lo, hi = true.min(), true.max()
        if hi == lo:
            return np.ones_like(true)
        return (true - lo) / (hi - lo)
    if relevance == "positive_gain":
        if baseline is None or not np.isfinite(baseline):
            raise ValueError("relevance='positive_gain' needs the target's no-transfer baseline score")
        if baseline == 0:
            raise ValueError("relevance='positive_gain': the no-transfer baseline score is 0, relative gain undefined")
        return np.maximum((true - baseline) / abs(baseline), 0.0)
    if relevance == "score":
        if np.any(true < 0):
            raise ValueError(
                f"relevance='score' needs non-negative transfer scores, got min {true.min():.4g}; "
                "use relevance='minmax'"
            )
        return true.copy()
    raise ValueError(f"relevance must be one of {RELEVANCE_KINDS}, got {relevance!r}")


def ndcg(predicted: np.ndarray, true: np.ndarray, relevance: str = "minmax", baseline: float | None = None) -> float:
    """NDCG over the full candidate list (``sklearn.metrics.ndcg_score``, ties averaged)."""
    rel = relevance_scores(true, relevance, baseline)
    if rel.max() <= 0:
        return float("nan")
    if rel.size == 1:
        return 1.0
    return float(ndcg_score(rel[None, :], np.asarray(predicted, dtype=np.float64)[None, :], ignore_ties=False))


def expected_best_in_top_k(predicted: np.ndarray, true: np.ndarray, k: int) -> float:
    """E[max measured score among the k top-predicted candidates], ties in ``predicted`` broken
    uniformly at random (the boundary tie group contributes a random subset)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    n = predicted.size
    if k >= n:
        return float(true.max())
    best_above = -np.inf
    taken = 0
    for value in np.unique(predicted)[::-1]:
        members = np.sort(true[predicted == value])[::-1]
        g = members.size
        if taken + g <= k:
            best_above = max(best_above, members[0])
            taken += g
            if taken == k:
                return float(best_above)
            continue
        r = k - taken  # draw r of the g tied members
        total = comb(g, r)
        expectation = 0.0
        for j in range(1, g - r + 2):  # the j-th largest is the subset max
            p = comb(g - j, r - 1) / total
            expectation += p * max(best_above, members[j - 1])
        return float(expectation)
    return float(best_above)


def regret_at_k(predicted: np.ndarray, true: np.ndarray, k: int) -> float:
    """regret@k in %: 100·(best − E[best of top k]) / |best|; NaN when the best score is 0."""
    best = float(np.max(true))
    top = expected_best_in_top_k(predicted, true, k)
    if best == 0:
        return 0.0 if top == best else float("nan")
    return 100.0 * (best - top) / abs(best)


def _correlation(predicted: np.ndarray, true: np.ndarray, kind: str) -> float:
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.size < 2 or np.all(true == true[0]):
        return float("nan")
    if np.all(predicted == predicted[0]):
        return 0.0
    if kind == "spearman":
        return float(stats.spearmanr(predicted, true).statistic)
    return float(stats.kendalltau(predicted, true).statistic)


def ranking_metrics(
    predicted: Sequence[float] | np.ndarray | pd.Series,
    true: Sequence[float] | np.ndarray | pd.Series,
    *,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    baseline: float | None = None,
) -> dict[str, float]:
    """All selection metrics for one target.

    ``predicted``: method scores (higher = ranked higher); ``true``: measured transfer scores.
    Two ``pandas.Series`` are aligned on their index (source names); arrays must be aligned already.
    ``baseline`` (the no-transfer score) is only needed for ``relevance='positive_gain'``.
    Returns rho, ndcg, regret@k for each k, spearman, kendall, n_candidates.
    """
    if isinstance(predicted, pd.Series) and isinstance(true, pd.Series):
        missing = sorted(set(true.index) - set(predicted.index))
        if missing:
            raise KeyError(f"predicted scores lack candidates {missing}")
        predicted = predicted.loc[true.index]
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predicted and true must be 1-D of the same non-zero length, got {p.shape} and {t.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("predicted and true scores must be finite (NaN/inf found)")
    out = {
        "rho": expected_rank_of_best(p, t),
        "ndcg": ndcg(p, t, relevance, baseline),
    }
    for k in ks:
        out[f"regret@{k}"] = regret_at_k(p, t, k)
    out["spearman"] = _correlation(p, t, "spearman")
    out["kendall"] = _correlation(p, t, "kendall")
    out["n_candidates"] = int(p.size)
    return out


def permutation_metrics(
    true: Sequence[float] | np.ndarray,
    orders: np.ndarray,
    *,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    baseline: float | None = None,
) -> pd.DataFrame:
    """Metrics of many strict orders at once (vectorised; used to simulate Random).

    ``orders``: int array (draws, n); ``orders[d, i]`` is the candidate placed at position i + 1.
    Gives the same values as :func:`ranking_metrics` on an untied prediction (tested), one row per draw.
    """
    t = np.asarray(true, dtype=np.float64)
    orders = np.asarray(orders)
    draws, n = orders.shape
    if n != t.size:
        raise ValueError(f"orders have {n} candidates, true has {t.size}")
    ordered = t[orders]  # (draws, n) measured score at each position
    out: dict[str, np.ndarray] = {}
    out["rho"] = 1.0 + np.argmax(ordered == t.max(), axis=1)
    rel = relevance_scores(t, relevance, baseline)
    disc = 1.0 / np.log2(np.arange(2, n + 2))
    idcg = float(np.sort(rel)[::-1] @ disc)
    if idcg <= 0:
        out["ndcg"] = np.full(draws, np.nan)
    else:
        out["ndcg"] = (rel[orders] @ disc) / idcg
    best = t.max()
    for k in ks:
        top = np.max(ordered[:, : min(k, n)], axis=1)
        out[f"regret@{k}"] = (100.0 * (best - top) / abs(best)) if best != 0 else np.where(top == best, 0.0, np.nan)
    if n < 2 or np.all(t == t[0]):
        out["spearman"] = np.full(draws, np.nan)
        out["kendall"] = np.full(draws, np.nan)
    else:
        pred = np.empty((draws, n))
        np.put_along_axis(pred, orders, np.arange(n, 0, -1, dtype=np.float64)[None, :].repeat(draws, 0), axis=1)
        true_rank = stats.rankdata(t)
        pr = pred - pred.mean(axis=1, keepdims=True)
        tr = true_rank - true_rank.mean()
        out["spearman"] = (pr @ tr) / (np.linalg.norm(pr, axis=1) * np.linalg.norm(tr))
        st = np.sign(t[:, None] - t[None, :])
        sp = np.sign(pred[:, :, None] - pred[:, None, :])
        n0 = n * (n - 1) / 2
        tied_true = (np.sum(st == 0) - n) / 2
        out["kendall"] = (sp * st).sum(axis=(1, 2)) / 2 / np.sqrt(n0 * (n0 - tied_true))
    return pd.DataFrame(out)


def sampled_random_metrics(
    true: Sequence[float] | np.ndarray,
    *,
    n_draws: int = 1000,
    seed: int = 0,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    baseline: float | None = None,
) -> pd.DataFrame:
    """The Random baseline by simulation for one target: metrics of ``n_draws`` uniformly random
    orders. Returns one row per metric with columns mean, std, se (standard error of the mean)."""
    t = np.asarray(true, dtype=np.float64)
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((n_draws, t.size)), axis=1)
    frame = permutation_metrics(t, orders, ks=ks, relevance=relevance, baseline=baseline)
    std = frame.std(ddof=1)
    return pd.DataFrame({"mean": frame.mean(), "std": std, "se": std / np.sqrt(n_draws)}).rename_axis("metric")


# ----------------------------------------------------------------------------------------------
# Transfer-results tables
# ----------------------------------------------------------------------------------------------


def _is_baseline(source: pd.Series) -> pd.Series:
    return source.isna() | (source.astype(str).str.strip().isin(["", "None", "none", "nan"]))


def target_regime(regime: str) -> str:
    """The target part of a transfer regime name: "FULL→LIMITED" -> "LIMITED" (every spelling
    ``data.regimes.get_transfer_regime`` accepts: "FULL->LIMITED", "full_to_limited"); a label of the table's
    own that names no transfer regime gives its part after the last arrow."""
    from ..data.regimes import data_regime

    try:
        return data_regime(regime, "target").value
    except ValueError:
        return str(regime).replace("->", "→").split("→")[-1].strip()


def check_results(results: pd.DataFrame) -> pd.DataFrame:
    """Validate a transfer-results table; returns a copy with ``source`` None for baseline rows."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"transfer results must be a pandas.DataFrame, got {type(results).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"transfer-results table lacks columns {missing}; expected columns {list(REQUIRED_COLUMNS)} "
            f"(+ optional source_class, target_class), got {list(results.columns)}"
        )
    out = results.copy()
    base = _is_baseline(out["source"])
    out["source"] = out["source"].astype(object).where(~base, None)
    bad = out["score"].isna() | ~np.isfinite(pd.to_numeric(out["score"], errors="coerce"))
    if bad.any():
        row = out.index[bad][0]
        raise ValueError(f"transfer-results row {row}: field 'score' must be a finite number, got {out.loc[row, 'score']!r}")
    out["score"] = out["score"].astype(float)
    return out


def _class_of(name: str) -> str:
    from tasktransfer_utils.data.tasks import get_task

    return get_task(name).task_class.value


def add_task_classes(results: pd.DataFrame) -> pd.DataFrame:
    """Fill ``source_class`` / ``target_class`` (CR/QA/SL) from ``data.tasks.get_task`` where absent."""
    out = results.copy()
    for col, name_col in (("source_class", "source"), ("target_class", "target")):
        if col not in out.columns:
            out[col] = None
        need = out[col].isna() & out[name_col].notna()
        if need.any():
            cache: dict[str, str] = {}
            for name in out.loc[need, name_col].unique():
                try:
                    cache[name] = _class_of(name)
                except Exception as exc:  # unknown task names: say what to add
                    raise ValueError(
                        f"task class of {name_col} {name!r} unknown ({exc}); add a '{col}' column (CR/QA/SL) "
                        "to the transfer-results table"
                    ) from exc
            out.loc[need, col] = out.loc[need, name_col].map(cache)
        out[col] = out[col].map(lambda v: getattr(v, "value", v))
    return out


def transfer_gains(results: pd.DataFrame) -> pd.DataFrame:
    """Per transfer run: score, the target's no-transfer ``baseline_score`` and the gains.

    The baseline of a run is the no-transfer run of the same target, target regime and seed; when
    that seed has none, the mean over the target's baseline seeds. Returns columns regime, target,
    source, seed, score, baseline_score, abs_gain, rel_gain (+ class columns when present).
    Raises ValueError naming the target/regime when a target has no baseline at all.
    """
    res = check_results(results)
    base_mask = res["source"].isna()
    base = res[base_mask].copy()
    runs = res[~base_mask].copy()
    base["target_regime"] = base["regime"].map(target_regime)
    runs["target_regime"] = runs["regime"].map(target_regime)
    by_seed = base.groupby(["target_regime", "target", "seed"])["score"].mean().rename("baseline_seed")
    by_target = base.groupby(["target_regime", "target"])["score"].mean().rename("baseline_mean")
    runs = runs.join(by_seed, on=["target_regime", "target", "seed"]).join(by_target, on=["target_regime", "target"])
    lacking = runs["baseline_mean"].isna()
    if lacking.any():
        pairs = sorted(set(zip(runs.loc[lacking, "target"], runs.loc[lacking, "regime"])))
        raise ValueError(f"no no-transfer baseline (row with empty source) for target/regime {pairs[:5]}")
    runs["baseline_score"] = runs["baseline_seed"].fillna(runs["baseline_mean"])
    runs["abs_gain"] = runs["score"] - runs["baseline_score"]
    runs["rel_gain"] = runs["abs_gain"] / runs["baseline_score"].abs()
    cols = ["regime", "target", "source", "seed", "score", "baseline_score", "abs_gain", "rel_gain"]
    cols += [c for c in ("source_class", "target_class") if c in runs.columns]
    return runs[cols].reset_index(drop=True)


def mean_transfer(results: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged transfer results, one row per (regime, target, source).

    Columns: score (mean over seeds), score_std (ddof=1; NaN for one seed), n_seeds,
    baseline_score (mean over baseline seeds), abs_gain and rel_gain computed from the means
    (the paper's g = (p̄_s→t − p̄_t) / p̄_t), rel_gain_std (spread of per-seed relative gains).
    """
    runs = transfer_gains(results)
    keys = ["regime", "target", "source"] + [c for c in ("source_class", "target_class") if c in runs.columns]
    grouped = runs.groupby(keys, dropna=False)
    out = grouped.agg(
        score=("score", "mean"),
        score_std=("score", "std"),
        n_seeds=("seed", "nunique"),
        rel_gain_std=("rel_gain", "std"),
    ).reset_index()
    res = check_results(results)
    base = res[res["source"].isna()].copy()
    base["target_regime"] = base["regime"].map(target_regime)
    baseline = base.groupby(["target_regime", "target"])["score"].mean().rename("baseline_score")
    out["target_regime"] = out["regime"].map(target_regime)
    out = out.join(baseline, on=["target_regime", "target"]).drop(columns="target_regime")
    out["abs_gain"] = out["score"] - out["baseline_score"]
    out["rel_gain"] = out["abs_gain"] / out["baseline_score"].abs()
    order = keys[:3] + ["score", "score_std", "n_seeds", "baseline_score", "abs_gain", "rel_gain", "rel_gain_std"] + keys[3:]
    return out[order]


def standard_error_bound(p: float | np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """Upper bound on the standard error of a mean of ``n`` per-example scores in [0, 1] whose mean is ``p``:
    sqrt(p (1 − p) / n). A variable in [0, 1] with mean μ has variance at most μ (1 − μ) (Bhatia–Davis);
    for 0/1 scores (accuracy, exact match) it is the binomial standard error itself."""
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"standard_error_bound: mean score(s) {p[(p < 0) | (p > 1)][:3]} outside [0, 1]")
    if np.any(n < 1):
        raise ValueError(f"standard_error_bound: number of examples must be >= 1, got {n[n < 1][:3]}")
    return np.sqrt(p * (1.0 - p) / n)


def target_spread(
    results: pd.DataFrame, per_example_targets: Iterable[str] = (), candidate_sets: Iterable[str] = CANDIDATE_SETS
) -> pd.DataFrame:
    """How far apart the sources of each target are, against the measurement's noise.

    One row per (regime, target, candidate_set): the sources a selection method chooses among there (every
    other task for ``"all-class"``, the target's class for ``"in-class"``, as :func:`candidate_sources`;
    in-class needs the ``source_class``/``target_class`` columns), ``n_sources``, the no-transfer
    ``baseline_score``, the ``best_source`` with ``best_score``, ``worst_score``, ``spread`` = best − worst
    and ``best_gain`` = best − baseline (seed means, as :func:`mean_transfer`), ``eval_examples`` (the
    target's evaluation set, when the table has that column) and, for ``per_example_targets`` (whose score
    is a mean of per-example values in [0, 1], e.g. accuracy or SQuAD EM/F1), ``se_bound``:
    :func:`standard_error_bound` of one evaluation at the best score, and ``spread_in_se`` = spread /
    se_bound, and ``near_best``: how many other sources score within one se_bound of the best (NaN where
    there is no bound). A spread of a few standard errors or less means a single evaluation cannot tell the
    sources apart: the "truly best" source of such a target is partly chance, and so is every selection
    metric computed on it; many sources near the best make the rank of the best (rho, regret@1) chance even
    where an outlier widens the spread. A candidate set with no source gets no row."""
    candidate_sets = tuple(candidate_sets)
    for cset in candidate_sets:
        if cset not in CANDIDATE_SETS:
            raise ValueError(f"candidate_set must be one of {CANDIDATE_SETS}, got {cset!r}")
    means = mean_transfer(results)
    if "in-class" in candidate_sets and not {"source_class", "target_class"} <= set(means.columns):
        raise ValueError("in-class spread needs the source_class and target_class columns")
    eval_sizes = {}
    if "eval_examples" in results.columns:
        sizes = results.assign(eval_examples=pd.to_numeric(results["eval_examples"], errors="coerce"))
        eval_sizes = sizes.groupby(["regime", "target"])["eval_examples"].max().to_dict()
    wanted = set(per_example_targets)
    rows = []
    for regime, target, cset, cands in _ranked_candidates(means, candidate_sets):
        n_eval = float(eval_sizes.get((regime, target), np.nan))
        best, worst = cands.iloc[0], cands.iloc[-1]
        se = np.nan
        if target in wanted and n_eval == n_eval and 0 <= best["score"] <= 1:
            se = float(standard_error_bound(best["score"], n_eval))
        spread = float(best["score"] - worst["score"])
        near = float((best["score"] - cands["score"].iloc[1:] < se).sum()) if se == se else np.nan
        rows.append({"regime": regime, "target": target, "candidate_set": cset, "n_sources": len(cands),
                     "baseline_score": float(best["baseline_score"]), "best_source": best["source"],
                     "best_score": float(best["score"]), "worst_score": float(worst["score"]),
                     "spread": spread, "best_gain": float(best["score"] - best["baseline_score"]),
                     "eval_examples": n_eval, "se_bound": se,
                     "spread_in_se": spread / se if se and se == se else np.nan, "near_best": near})
    return pd.DataFrame(rows, columns=["regime", "target", "candidate_set", "n_sources", "baseline_score",
                                       "best_source", "best_score", "worst_score", "spread", "best_gain",
                                       "eval_examples", "se_bound", "spread_in_se", "near_best"])


#: a difference between two single runs counts as within the training noise when it is below this many
#: standard deviations of a difference (sqrt(2) x the seed-to-seed sd of one run): ~95% two-sided
NOISE_Z = 2.0


def training_noise_floor(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed-to-seed spread of each target's no-transfer fine-tune: restarts on the same training examples
    that differ only in the training seed (head initialisation, batch order, dropout).

    ``runs``: one row per run with columns ``target``, ``train_seed``, ``score`` (``target_class`` kept when
    present). One row per target: ``n_runs``, ``mean``, ``sd`` (sample standard deviation, ddof = 1; NaN
    with one run), ``min``, ``max``, ``train_seeds`` and ``scores`` (";"-joined, by seed)."""
    rows = []
    for target, grp in runs.groupby("target", sort=False):
        grp = grp.sort_values("train_seed")
        scores = grp["score"].to_numpy(dtype=np.float64)
        row = {"target": target}
        if "target_class" in grp.columns:
            row["target_class"] = grp["target_class"].iloc[0]
        row.update({"n_runs": len(scores), "mean": float(scores.mean()),
                    "sd": float(scores.std(ddof=1)) if len(scores) > 1 else np.nan,
                    "min": float(scores.min()), "max": float(scores.max()),
                    "train_seeds": ";".join(str(int(x)) for x in grp["train_seed"]),
                    "scores": ";".join(f"{x:.6g}" for x in scores)})
        rows.append(row)
    cols = ["target"] + (["target_class"] if "target_class" in runs.columns else []) + [
        "n_runs", "mean", "sd", "min", "max", "train_seeds", "scores"]
    return pd.DataFrame(rows, columns=cols)


def noise_separation(
    results: pd.DataFrame, noise: pd.DataFrame, candidate_sets: Iterable[str] = CANDIDATE_SETS,
    z: float = NOISE_Z,
) -> pd.DataFrame:
    """Which source differences of each target lie within its training noise.

    ``noise``: :func:`training_noise_floor` (the ``sd`` of one run of the target). The difference of two
    single-run scores has standard deviation ``diff_sd`` = sqrt(2) · sd (independent runs, the target's
    no-transfer sd standing in for every run on it). One row per (regime, target, candidate_set) with a
    noise floor: ``n_sources``, ``best_source``, ``best_score``, ``spread`` (best − worst), ``noise_sd``,
    ``diff_sd``, ``spread_in_noise`` = spread / diff_sd, ``within_noise``: how many other sources score
    less than ``z`` · diff_sd below the best, and their names (``within_noise_sources``, ";"-joined): the
    sources another seed could have made the best. Targets without a noise floor get no row."""
    sd = dict(zip(noise["target"], noise["sd"]))
    means = mean_transfer(results)
    rows = []
    for regime, target, cset, cands in _ranked_candidates(means, candidate_sets):
        noise_sd = float(sd.get(target, np.nan))
        if noise_sd != noise_sd:  # no measured floor for this target
            continue
        best = cands.iloc[0]
        spread = float(best["score"] - cands["score"].iloc[-1])
        diff_sd = float(np.sqrt(2.0) * noise_sd)
        close = cands.iloc[1:][best["score"] - cands["score"].iloc[1:] < z * diff_sd]
        rows.append({"regime": regime, "target": target, "candidate_set": cset, "n_sources": len(cands),
                     "best_source": best["source"], "best_score": float(best["score"]), "spread": spread,
                     "noise_sd": noise_sd, "diff_sd": diff_sd,
                     "spread_in_noise": spread / diff_sd if diff_sd > 0 else np.inf,
                     "within_noise": len(close), "within_noise_sources": ";".join(close["source"])})
    return pd.DataFrame(rows, columns=["regime", "target", "candidate_set", "n_sources", "best_source",
                                       "best_score", "spread", "noise_sd", "diff_sd", "spread_in_noise",
                                       "within_noise", "within_noise_sources"])


def drop_inseparable(
    per_target: pd.DataFrame, spread: pd.DataFrame, min_spread_in_se: float, column: str = "spread_in_se"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``per_target`` (:func:`evaluate_rankers`) without the rows of the (regime, target, candidate_set)
    whose sources :func:`target_spread` finds closer than ``min_spread_in_se`` standard errors; targets
    without a bound (NaN) are kept. ``column``: ``"spread_in_noise"`` with :func:`noise_separation`'s table
    judges by the training noise instead. Returns the kept rows and the spread rows that were left out."""
    noisy = spread[spread[column] < min_spread_in_se]
    keys = set(zip(noisy["regime"], noisy["target"], noisy["candidate_set"]))
    keep = [k not in keys for k in zip(per_target["regime"], per_target["target"], per_target["candidate_set"])]
    return per_target[keep], noisy


def candidate_sources(
    results: pd.DataFrame, target: str, regime: str, candidate_set: str = "all-class"
) -> list[str]:
    """Sources with a measured transfer to ``target`` in ``regime``: all of them except the target
    itself (``"all-class"``) or only those of the target's class (``"in-class"``). Sorted by name."""
    rows = results[(results["target"] == target) & (results["regime"] == regime) & results["source"].notna()]
    return sorted(_candidate_rows(rows, target, candidate_set)["source"].unique())


def _ranked_candidates(means: pd.DataFrame, candidate_sets: Iterable[str]):
    """Per (regime, target, candidate set) of :func:`mean_transfer`'s table: the candidate sources' rows, best
    score first (ties by name); sets without a source are skipped. Yields (regime, target, set, rows)."""
    for (regime, target), grp in means.groupby(["regime", "target"], sort=False):
        for cset in candidate_sets:
            cands = _candidate_rows(grp, target, cset)
            if not cands.empty:
                yield regime, target, cset, cands.sort_values(["score", "source"], ascending=[False, True])


def _candidate_rows(rows: pd.DataFrame, target: str, candidate_set: str) -> pd.DataFrame:
    """The rows of ``rows`` (one target's sources) that ``candidate_set`` lets a method choose among:
    every source but the target itself, and for ``"in-class"`` only those of the target's class."""
    if candidate_set not in CANDIDATE_SETS:
        raise ValueError(f"candidate_set must be one of {CANDIDATE_SETS}, got {candidate_set!r}")
    rows = rows[rows["source"] != target]
    if candidate_set == "in-class":
        rows = rows[rows["source_class"] == rows["target_class"]]
    return rows


# ----------------------------------------------------------------------------------------------
# Rankers -> predictions -> per-target metrics -> summaries
# ----------------------------------------------------------------------------------------------


def _ranker_for(rankers: Mapping[str, Any], method: str, regime: str):
    ranker = rankers[method]
    if isinstance(ranker, Mapping):
        if regime not in ranker:
            raise KeyError(f"ranker {method!r} has no entry for regime {regime!r} (has {sorted(ranker)})")
        return ranker[regime]
    return ranker


def rank_candidates(
    results: pd.DataFrame,
    rankers: Mapping[str, Any],
    *,
    candidate_sets: Iterable[str] = CANDIDATE_SETS,
    regimes: Iterable[str] | None = None,
    targets: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Run every ranker on every (regime, target, candidate set) of the results table.

    ``rankers``: method name -> object with ``rank(target, candidates) -> DataFrame`` (columns
    source, score, rank), or method name -> {regime name -> such object}.
    Returns a predictions table: method, regime, candidate_set, target, source, score, rank.
    """
    res = add_task_classes(check_results(results))
    regimes = sorted(res["regime"].unique()) if regimes is None else list(regimes)
    frames = []
    for regime in regimes:
        in_regime = res[res["regime"] == regime]
        regime_targets = sorted(in_regime["target"].unique()) if targets is None else list(targets)
        for target in regime_targets:
            for cset in candidate_sets:
                cands = candidate_sources(in_regime, target, regime, cset)
                if not cands:
                    continue
                for method in rankers:
                    ranked = _ranker_for(rankers, method, regime).rank(target, cands)
                    frames.append(
                        ranked[["source", "score", "rank"]].assign(
                            method=method, regime=regime, candidate_set=cset, target=target
                        )
                    )
    cols = ["method", "regime", "candidate_set", "target", "source", "score", "rank"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def evaluate_predictions(
    results: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    per_seed: bool = True,
) -> pd.DataFrame:
    """Per-target selection metrics, one row per (method, regime, candidate_set, target, seed).

    ``predictions``: as returned by :func:`rank_candidates` (method, regime, candidate_set, target,
    source, score). Ground truth: rows with ``seed`` <NA> use the seed-averaged transfer scores
    (the paper's numbers); with ``per_seed`` also one row per seed using that seed's runs only
    (for the spread over seeds). Columns: method, regime, candidate_set, target_class, target, seed,
    rho, ndcg, regret@k..., spearman, kendall, n_candidates.
    """
    ks = tuple(ks)
    need = {"method", "regime", "candidate_set", "target", "source", "score"}
    if not need <= set(predictions.columns):
        raise ValueError(f"predictions lack columns {sorted(need - set(predictions.columns))}")
    runs = add_task_classes(transfer_gains(results))
    truth: dict[tuple, dict] = {}
    for (regime, target), sub in runs.groupby(["regime", "target"], sort=False):
        by_seed = {seed: (g.groupby("source")["score"].mean(), float(g["baseline_score"].iloc[0]))
                   for seed, g in sub.groupby("seed", sort=True)}
        truth[(regime, target)] = {
            "mean": sub.groupby("source")["score"].mean(),
            "baseline": float(sub["baseline_score"].mean()),
            "seeds": by_seed,
            "class": sub["target_class"].iloc[0],
        }
    rows = []
    for (method, regime, cset, target), pred in predictions.groupby(
        ["method", "regime", "candidate_set", "target"], sort=True
    ):
        pred_scores = pred.set_index("source")["score"].astype(float)
        if pred_scores.index.duplicated().any():
            raise ValueError(f"predictions for {method}/{regime}/{cset}/{target} list a source twice")
        if (regime, target) not in truth:
            raise KeyError(f"no measured transfer to target {target!r} in regime {regime!r}")
        tt = truth[(regime, target)]
        head = {"method": method, "regime": regime, "candidate_set": cset, "target_class": tt["class"],
                "target": target}
        missing = [s for s in pred_scores.index if s not in tt["mean"].index]
        if missing:
            raise KeyError(f"no measured transfer from sources {missing} to {target} in {regime}")
        metrics = ranking_metrics(pred_scores.to_numpy(), tt["mean"].loc[pred_scores.index].to_numpy(), ks=ks,
                                  relevance=relevance, baseline=tt["baseline"])
        rows.append({**head, "seed": pd.NA, **metrics})
        if not per_seed:
            continue
        for seed, (scores, baseline) in tt["seeds"].items():
            common = [s for s in pred_scores.index if s in scores.index]
            if not common:
                continue
            metrics = ranking_metrics(pred_scores.loc[common].to_numpy(), scores.loc[common].to_numpy(), ks=ks,
                                      relevance=relevance, baseline=baseline)
            rows.append({**head, "seed": seed, **metrics})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["seed"] = out["seed"].astype("Int64") if pd.api.types.is_integer_dtype(runs["seed"]) else out["seed"]
    return out


def evaluate_rankers(
    results: pd.DataFrame,
    rankers: Mapping[str, Any],
    *,
    candidate_sets: Iterable[str] = CANDIDATE_SETS,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    per_seed: bool = True,
) -> pd.DataFrame:
    """:func:`rank_candidates` then :func:`evaluate_predictions` (per-target metrics)."""
    predictions = rank_candidates(results, rankers, candidate_sets=candidate_sets)
    return evaluate_predictions(results, predictions, ks=ks, relevance=relevance, per_seed=per_seed)


def evaluate_random_sampled(
    results: pd.DataFrame,
    *,
    n_draws: int = 200,
    seed: int = 0,
    candidate_sets: Iterable[str] = CANDIDATE_SETS,
    ks: Iterable[int] = (1, 3, 5),
    relevance: str = "minmax",
    method: str = "Random (sampled)",
) -> pd.DataFrame:
    """The Random baseline by simulation: per target (seed-averaged truth), each metric averaged over
    ``n_draws`` uniformly random orders, with its standard error in ``<metric>_se`` columns."""
    res = add_task_classes(check_results(results))
    means = mean_transfer(res)
    rows = []
    for regime in sorted(means["regime"].unique()):
        for target in sorted(means.loc[means["regime"] == regime, "target"].unique()):
            for cset in candidate_sets:
                cands = candidate_sources(res[res["regime"] == regime], target, regime, cset)
                if not cands:
                    continue
                sub = means[(means["regime"] == regime) & (means["target"] == target)].set_index("source")
                sim = sampled_random_metrics(sub.loc[cands, "score"].to_numpy(), n_draws=n_draws, seed=seed, ks=ks,
                                             relevance=relevance, baseline=float(sub["baseline_score"].iloc[0]))
                row = {"method": method, "regime": regime, "candidate_set": cset,
                       "target_class": sub["target_class"].iloc[0], "target": target, "seed": pd.NA}
                row.update(sim["mean"].to_dict())
                row.update({f"{m}_se": v for m, v in sim["se"].items()})
                row["n_candidates"] = len(cands)
                rows.append(row)
    return pd.DataFrame(rows)


def summarize_selection(per_target: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Average per-target metrics into the paper's table cells, in long (tidy) form.

    Groups: method × regime × candidate_set × target_class (each class and ``"all"``). Columns:
    metric, value (mean over targets, seed-averaged truth; NaN targets skipped), seed_mean and
    seed_std (mean and ddof=1 std over seeds of the per-seed target averages; NaN with < 2 seeds),
    n_targets (targets with a finite value), n_seeds.
    """
    if per_target.empty:
        return pd.DataFrame(columns=["method", "regime", "candidate_set", "target_class", "metric", "value",
                                     "seed_mean", "seed_std", "n_targets", "n_seeds"])
    if metrics is None:
        metrics = [c for c in per_target.columns if c in METRICS_ORDER or c.startswith("regret@")]
        metrics = sorted(set(metrics), key=lambda m: (METRICS_ORDER.index(m) if m in METRICS_ORDER else 99, m))
    frames = [per_target, per_target.assign(target_class=ALL_CLASSES)]
    data = pd.concat(frames, ignore_index=True)
    keys = ["method", "regime", "candidate_set", "target_class"]
    rows = []
    for key, group in data.groupby(keys, sort=True):
        mean_rows = group[group["seed"].isna()]
        seed_rows = group[group["seed"].notna()]
        for metric in metrics:
            values = mean_rows[metric].astype(float)
            per_seed = seed_rows.groupby("seed")[metric].mean() if not seed_rows.empty else pd.Series(dtype=float)
            rows.append({
                **dict(zip(keys, key)),
                "metric": metric,
                "value": float(np.nanmean(values)) if values.notna().any() else float("nan"),
                "seed_mean": float(per_seed.mean()) if per_seed.notna().any() else float("nan"),
                "seed_std": float(per_seed.std(ddof=1)) if per_seed.notna().sum() >= 2 else float("nan"),
                "n_targets": int(values.notna().sum()),
                "n_seeds": int(per_seed.size),
            })
    return pd.DataFrame(rows)


LOTO_COMPONENT_METHOD = "TaskEmb (one component, chosen leave-one-target-out)"


def leave_one_target_out(
    per_target: pd.DataFrame,
    methods: Sequence[str],
    *,
    metrics: Sequence[str] | None = None,
    method: str = LOTO_COMPONENT_METHOD,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Choose one of ``methods`` (e.g. the TaskEmb components) without looking at the target it is scored
    on: for each held-out target, the method with the best mean ``metric`` over the OTHER targets of the
    same regime, candidate set and seed row (lower is better for rho and regret@k, higher otherwise;
    ties go to the earlier method in ``methods``), scored on the held-out target. Each metric chooses
    for itself. ``per_target``: :func:`evaluate_predictions` rows.

    Returns (rows in ``per_target``'s columns under ``method``, one per regime x candidate set x seed
    row x target, to summarise like any method; choices: regime, candidate_set, seed, target, metric,
    chosen, mean_on_others)."""
    methods = list(methods)
    if metrics is None:
        metrics = [c for c in per_target.columns if c in METRICS_ORDER or c.startswith("regret@")]
    sub = per_target[per_target["method"].isin(methods)]
    rows, choices = [], []
    if sub.empty:
        return per_target.iloc[0:0].copy(), pd.DataFrame(columns=["regime", "candidate_set", "seed", "target",
                                                                   "metric", "chosen", "mean_on_others"])
    seed_key = sub["seed"].astype(object).where(sub["seed"].notna(), "mean")
    for (regime, cset, skey), group in sub.groupby([sub["regime"], sub["candidate_set"], seed_key], sort=True):
        targets = list(dict.fromkeys(group["target"]))
        if len(targets) < 2:
            continue  # nothing to choose on
        for target in targets:
            held = group[group["target"] == target]
            first = held.iloc[0]
            row = {c: first[c] for c in per_target.columns if c not in metrics}
            row["method"] = method
            for metric in metrics:
                others = group[group["target"] != target].pivot_table(index="target", columns="method",
                                                                      values=metric, aggfunc="first")
                means = others.mean(axis=0, skipna=True).reindex(methods)
                means = means[means.notna()]
                if means.empty:
                    row[metric] = float("nan")
                    continue
                best = means.min() if lower_is_better(metric) else means.max()
                chosen = next(m for m in means.index if means[m] == best)
                value = held.loc[held["method"] == chosen, metric]
                row[metric] = float(value.iloc[0]) if len(value) else float("nan")
                choices.append({"regime": regime, "candidate_set": cset, "seed": first["seed"], "target": target,
                                "metric": metric, "chosen": chosen, "mean_on_others": float(best)})
            rows.append(row)
    return pd.DataFrame(rows, columns=per_target.columns), pd.DataFrame(choices)


def selection_table(summary: pd.DataFrame, metric: str = "rho", value: str = "value") -> pd.DataFrame:
    """Wide table like the paper's Table 3: rows = method, columns = (regime, target_class,
    candidate_set), cells = ``value`` of ``metric``."""
    sub = summary[summary["metric"] == metric]
    if sub.empty:
        raise ValueError(f"metric {metric!r} not in summary (has {sorted(summary['metric'].unique())})")
    return sub.pivot_table(index="method", columns=["regime", "target_class", "candidate_set"], values=value,
                           aggfunc="first")


# ----------------------------------------------------------------------------------------------
# Paired comparison of two methods over targets
# ----------------------------------------------------------------------------------------------

def lower_is_better(metric: str) -> bool:
    return metric == "rho" or metric.startswith("regret@")


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 10000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement, ``n_boot``
    times, numpy generator seeded with ``seed``). Vectorised: one (n_boot, n) index draw."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


#: largest sample for which scipy.stats.wilcoxon (method "auto") runs an exact permutation test when the
#: differences hold ties or zeros (2**13 sign patterns fit its 9,999 resamples)
_WILCOXON_PERMUTATION_MAX_N = 13


def wilcoxon_p(d: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of the paired differences ``d`` with zero
    differences split between the signs: the value ``scipy.stats.wilcoxon(d, zero_method="zsplit").pvalue``
    gives, computed faster where scipy runs its exact permutation test (ties or zeros among at most 13
    differences: every study with a dozen targets). There the null distribution of the signed-rank sum over
    all 2**n sign patterns is one (2**n, n) matrix product here, where scipy evaluates its statistic once per
    pattern in Python (about 0.8 s per call for n = 12, 450 calls per study report). Elsewhere scipy is
    called as it is. NaN when every difference is 0."""
    d = np.asarray(d, dtype=np.float64).ravel()
    n = d.size
    if n == 0 or not np.any(d != 0):
        return float("nan")
    a = np.abs(d)
    zero = d == 0
    ties = np.unique(a).size < n
    if n > _WILCOXON_PERMUTATION_MAX_N or not (ties or zero.any()):
        return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    r = stats.rankdata(a)  # average ranks of |d|, zeros included (zsplit)
    split = r[zero].sum() / 2  # each zero adds half its rank to the positive sum, whatever its sign
    observed = r[d > 0].sum() + split
    signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every sign pattern; a zero stays zero
    null = signs @ np.where(zero, 0.0, r) + split
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)  # scipy's tolerance for equal sums
    less = np.count_nonzero(null <= observed + gamma) / null.size
    greater = np.count_nonzero(null >= observed - gamma) / null.size
    return float(min(1.0, 2 * min(less, greater)))


def paired_differences(
    per_target: pd.DataFrame,
    baselines: Sequence[str] = ("Random", "DataSize"),
    metrics: Sequence[str] = ("rho", "ndcg", "regret@1"),
    methods: Sequence[str] | None = None,
):
    """The paired per-target differences (method − baseline) that :func:`paired_comparison` summarises:
    yields ``(method, baseline, regime, candidate_set, target_class, metric, d)`` with ``d`` the differences
    on the targets where both are finite, per regime × candidate set × target class (each class and
    ``"all"``), from the seed-averaged rows of :func:`evaluate_rankers`' per-target table."""
    rows = per_target[per_target["seed"].isna()] if "seed" in per_target else per_target
    if rows.empty:
        return
    data = pd.concat([rows, rows.assign(target_class=ALL_CLASSES)], ignore_index=True)
    methods = list(methods) if methods is not None else sorted(data["method"].unique())
    for (regime, cset, tclass), group in data.groupby(["regime", "candidate_set", "target_class"], sort=True):
        wide = {m: g.set_index("target") for m, g in group.groupby("method")}
        for base in baselines:
            if base not in wide:
                continue
            for method in methods:
                if method == base or method not in wide:
                    continue
                for metric in metrics:
                    a = wide[method][metric].astype(float)
                    b = wide[base][metric].astype(float).reindex(a.index)
                    ok = a.notna() & b.notna()
                    yield method, base, regime, cset, tclass, metric, (a[ok] - b[ok]).to_numpy()


def paired_comparison(
    per_target: pd.DataFrame,
    baselines: Sequence[str] = ("Random", "DataSize"),
    metrics: Sequence[str] = ("rho", "ndcg", "regret@1"),
    methods: Sequence[str] | None = None,
    n_boot: int = 10000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Each method against each baseline on the same targets (the seed-averaged rows of
    :func:`evaluate_rankers`' per-target table), per regime × candidate set × target class (each class
    and ``"all"``; the differences of :func:`paired_differences`).

    Columns: method, baseline, regime, candidate_set, target_class, metric, n_targets (targets where
    both are finite), mean_diff (method − baseline, mean over targets), ci_low / ci_high (percentile
    bootstrap over targets, :func:`bootstrap_mean_ci`), wins / ties / losses (targets where the method
    is better / equal / worse, "better" being lower for rho and regret@k), p_wilcoxon (two-sided
    Wilcoxon signed-rank test of the differences, :func:`wilcoxon_p`: ``scipy.stats.wilcoxon``'s value
    with zero differences split between the signs; NaN when every difference is 0). With a handful of
    targets the intervals are wide: they say how much the evidence separates two methods, not which one
    is better in general.
    """
    cols = ["method", "baseline", "regime", "candidate_set", "target_class", "metric", "n_targets",
            "mean_diff", "ci_low", "ci_high", "wins", "ties", "losses", "p_wilcoxon"]
    out = []
    for method, base, regime, cset, tclass, metric, d in paired_differences(per_target, baselines, metrics, methods):
        better = -d if lower_is_better(metric) else d
        lo, hi = bootstrap_mean_ci(d, n_boot, level, seed)
        out.append({"method": method, "baseline": base, "regime": regime, "candidate_set": cset,
                    "target_class": tclass, "metric": metric, "n_targets": int(d.size),
                    "mean_diff": float(d.mean()) if d.size else float("nan"),
                    "ci_low": lo, "ci_high": hi, "wins": int((better > 0).sum()),
                    "ties": int((better == 0).sum()), "losses": int((better < 0).sum()),
                    "p_wilcoxon": wilcoxon_p(d)})
    return pd.DataFrame(out, columns=cols)

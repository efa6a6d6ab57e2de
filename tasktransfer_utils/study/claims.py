"""The paper's claims, tested on a study's results: one row per claim and regime, with the evidence
(numbers, the statistic, its interval) and a verdict decided by an explicit rule.

Vu et al. (2020) summarise their findings as (a) positive transfer occurs in many settings; (b) gains
are possible even when the source task is small; (c) out-of-class transfer often succeeds; (d) in
low-data regimes, source–target similarity matters more than source size; (e) the task embeddings
(TaskEmb) beat the DataSize and CurveGrad baselines across settings. :func:`evaluate_claims` reads the
study's transfer-results table (``study.tables.results_table`` / ``transfer_results.csv``) and the per-target
selection evaluation (``selection.evaluation.evaluate_rankers``) and decides each claim per regime:

- **"reproduced"**: the interval of the claim's statistic lies entirely on the claimed side;
- **"not reproduced"**: it lies entirely on the other side (evidence against the claim);
- **"inconclusive: <why>"**: it straddles the threshold, or there is nothing to test.

Noise. A target's score is one evaluation on a finite dev set. For scores that are a mean of per-example
values in [0, 1] (accuracy, SQuAD EM/F1; ``training.metrics.score_is_per_example_mean``) one evaluation's standard
error is at most ``se = sqrt(p (1 − p) / n)`` (``selection.evaluation.standard_error_bound``, at the
no-transfer score p over the target's n evaluation examples). A gain is **beyond noise** when
``score − baseline > NOISE_SE · se`` (2 standard errors, the report's ``min_spread_in_se`` default).
Without any true gain, the difference of two independent evaluations has a standard error of at most
``√2 · se``, so noise alone passes that threshold with probability at most
``1 − Φ(NOISE_SE / √2)`` ≈ 0.079 (:func:`noise_pass_rate`; two evaluations on the same dev set are
positively correlated, which only lowers it). Targets without such a bound (correlations, F1 over
spans, per-word accuracy) enter the plain "positive gain" counts, not the beyond-noise ones.

Rules, per regime, on the targets whose every candidate source is measured (the caller filters; the
table says how many):

(a) *many settings*: share of pairs with a gain beyond noise, 95% Clopper–Pearson interval; reproduced
    when its lower end is above ``MANY_SHARE`` (a quarter of the pairs), not reproduced when its upper
    end is below it.
(b) *small sources*: pairs whose source trained on at most ``SMALL_SOURCE`` examples; one-sided exact
    binomial test of their count beyond noise against :func:`noise_pass_rate`; reproduced when p < 0.05
    (more small-source gains than noise gives), not reproduced otherwise; inconclusive without
    small-source pairs on targets with a noise bound.
(c) *out-of-class transfer often succeeds*: rule (a) on the out-of-class pairs.
(d) *similarity over size*: per target, Spearman's ρ between the sources' relative gains and (i) their
    TextEmb cosine similarity to the target, (ii) their training-set size; the mean over targets of
    ρ_sim − ρ_size with a 95% percentile bootstrap over targets; reproduced when the interval is above 0,
    not reproduced when below.
(e) *TaskEmb beats DataSize and CurveGrad*: the paired comparisons of ``selection.evaluation.paired_comparison``
    (all targets, ρ and NDCG, in-class and all-class candidates; 95% bootstrap over targets); reproduced
    when every interval excludes 0 in TaskEmb's favour, not reproduced when any excludes 0 in the
    baseline's favour, inconclusive otherwise.

:func:`regime_findings` says per regime, in words, what transfer gave and how TextEmb, TaskEmb and LogME compare
with DataSize and Random (no verdict: the numbers and their intervals).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..selection.evaluation import (add_task_classes, bootstrap_mean_ci, check_results, lower_is_better, mean_transfer,
                                    paired_comparison, standard_error_bound)

#: a gain is beyond noise when it exceeds this many standard-error bounds of one evaluation
NOISE_SE = 2.0
#: "many" / "often": at least this share of the pairs
MANY_SHARE = 0.25
#: a "small" source trained on at most this many examples
SMALL_SOURCE = 5000
#: confidence level of every interval; significance level of the binomial test is 1 − LEVEL
LEVEL = 0.95
N_BOOT = 10000

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"

CLAIMS = {
    "a": "Positive transfer occurs in many settings",
    "b": "Gains are possible even when the source is small",
    "c": "Out-of-class transfer often succeeds",
    "d": "In low-data regimes, source–target similarity matters more than source size",
    "e": "The task embeddings (TaskEmb) beat DataSize and CurveGrad across settings",
}
CLAIM_COLUMNS = ["claim", "regime", "statement", "statistic", "estimate", "ci_low", "ci_high", "n", "evidence",
                 "verdict", "rule", "targets", "targets_expected"]
SUMMARY_COLUMNS = ["regime", "pairs", "n_pairs", "n_targets", "mean_rel_gain", "median_rel_gain", "n_positive",
                   "share_positive", "share_positive_low", "share_positive_high", "n_bounded", "n_beyond_noise",
                   "share_beyond_noise", "share_beyond_noise_low", "share_beyond_noise_high",
                   "targets_with_gain_beyond_noise", "n_bounded_targets", "best_mean_rel_gain"]


def inconclusive(why: str) -> str:
    return f"inconclusive: {why}"


def noise_pass_rate(noise_se: float = NOISE_SE) -> float:
    """Largest probability that a pair with no true gain shows a gain beyond ``noise_se`` standard-error
    bounds: 1 − Φ(noise_se / √2) (the difference of two independent evaluations)."""
    return float(stats.norm.sf(noise_se / np.sqrt(2.0)))


def share_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper–Pearson (exact binomial) interval of a share k / n; (nan, nan) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def interval_side(metric: str, ci_low: float, ci_high: float) -> int:
    """Where the interval of a paired difference (method − baseline) of ``metric`` lies: +1 entirely in the
    method's favour (lower is better for rho and regret), -1 entirely in the baseline's, 0 when it contains 0."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    lo, hi = sorted((sign * ci_low, sign * ci_high))
    return 1 if lo > 0 else -1 if hi < 0 else 0


def interval_verdict(low: float, high: float, threshold: float, what: str) -> str:
    """Reproduced when [low, high] lies above ``threshold``, not reproduced when below, else inconclusive."""
    if not (low == low and high == high):
        return inconclusive(f"no {what} to measure")
    if low > threshold:
        return REPRODUCED
    if high < threshold:
        return NOT_REPRODUCED
    return inconclusive(f"the {LEVEL:.0%} interval [{low:.3g}, {high:.3g}] of the {what} contains {threshold:g}")


# --------------------------------------------------------------------------------------------------
# pairs and their gains
# --------------------------------------------------------------------------------------------------
def transfer_pairs(results: pd.DataFrame, *, per_example_targets: Iterable[str] = (),
                   source_sizes: Mapping[str, Mapping[str, float] | float] | None = None,
                   source_task_sizes: Mapping[str, float] | None = None, noise_se: float = NOISE_SE) -> pd.DataFrame:
    """One row per (regime, source, target) with its seed-mean score, the no-transfer ``baseline_score``,
    ``abs_gain``, ``rel_gain`` (``selection.evaluation.mean_transfer``), ``in_class``, ``eval_examples``,
    ``se_bound`` (one evaluation's standard-error bound at the baseline score, for ``per_example_targets``;
    NaN elsewhere), ``beyond_noise`` (abs_gain > noise_se · se_bound; NaN without a bound) and
    ``source_size`` (the examples the source trained on: ``source_sizes[regime][source]`` or
    ``source_sizes[source]``) and ``source_task_size`` (the source task's whole training set,
    ``source_task_sizes[source]``); NaN where unknown."""
    res = add_task_classes(check_results(results))
    pairs = mean_transfer(res)
    pairs["in_class"] = pairs["source_class"] == pairs["target_class"]
    if "eval_examples" in res.columns:
        sizes = pd.to_numeric(res["eval_examples"], errors="coerce")
        n_eval = res.assign(eval_examples=sizes).groupby(["regime", "target"])["eval_examples"].max()
        pairs = pairs.join(n_eval, on=["regime", "target"])
    else:
        pairs["eval_examples"] = np.nan
    bounded = pairs["target"].isin(set(per_example_targets)) & pairs["eval_examples"].notna() \
        & pairs["baseline_score"].between(0, 1)
    se = np.full(len(pairs), np.nan)
    if bounded.any():
        se[bounded.to_numpy()] = standard_error_bound(pairs.loc[bounded, "baseline_score"].to_numpy(),
                                                      pairs.loc[bounded, "eval_examples"].to_numpy())
    pairs["se_bound"] = se
    beyond = (pairs["abs_gain"] > noise_se * pairs["se_bound"]).astype(object)
    pairs["beyond_noise"] = beyond.where(pairs["se_bound"].notna(), np.nan)

    def size_of(regime, source):
        if source_sizes is None:
            return np.nan
        by_regime = source_sizes.get(regime)
        if isinstance(by_regime, Mapping):
            return float(by_regime.get(source, np.nan))
        return float(source_sizes.get(source, np.nan))

    pairs["source_size"] = [size_of(r, s) for r, s in zip(pairs["regime"], pairs["source"])]
    pairs["source_task_size"] = [float((source_task_sizes or {}).get(s, np.nan)) for s in pairs["source"]]
    return pairs.reset_index(drop=True)


def _bounded(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs[pairs["se_bound"].notna()]


def transfer_summary(pairs: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per regime and pair kind (all / in-class / out-of-class, where there are such pairs): how many pairs, mean and median relative
    gain, the share with a positive gain and the share with a gain beyond noise (each with its
    Clopper–Pearson interval), how many targets have a source beyond noise, and the mean over targets of
    the best source's relative gain. ``pairs``: :func:`transfer_pairs`."""
    rows = []
    for regime in dict.fromkeys(pairs["regime"]):
        of_regime = pairs[pairs["regime"] == regime]
        for kind, sel in (("all", of_regime), ("in-class", of_regime[of_regime["in_class"]]),
                          ("out-of-class", of_regime[~of_regime["in_class"]])):
            if sel.empty:  # e.g. an in-class-only study has no out-of-class pairs
                continue
            k_pos = int((sel["rel_gain"] > 0).sum())
            b = _bounded(sel)
            k_noise = int(b["beyond_noise"].astype(bool).sum())
            pos_lo, pos_hi = share_interval(k_pos, len(sel), level)
            noi_lo, noi_hi = share_interval(k_noise, len(b), level)
            helped = b[b["beyond_noise"].astype(bool)]["target"].nunique()
            rows.append({"regime": regime, "pairs": kind, "n_pairs": len(sel), "n_targets": sel["target"].nunique(),
                         "mean_rel_gain": float(sel["rel_gain"].mean()) if len(sel) else np.nan,
                         "median_rel_gain": float(sel["rel_gain"].median()) if len(sel) else np.nan,
                         "n_positive": k_pos, "share_positive": k_pos / len(sel) if len(sel) else np.nan,
                         "share_positive_low": pos_lo, "share_positive_high": pos_hi,
                         "n_bounded": len(b), "n_beyond_noise": k_noise,
                         "share_beyond_noise": k_noise / len(b) if len(b) else np.nan,
                         "share_beyond_noise_low": noi_lo, "share_beyond_noise_high": noi_hi,
                         "targets_with_gain_beyond_noise": int(helped), "n_bounded_targets": b["target"].nunique(),
                         "best_mean_rel_gain": float(sel.groupby("target")["rel_gain"].max().mean())
                         if len(sel) else np.nan})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------------------------------
# the claims
# --------------------------------------------------------------------------------------------------
def _share_claim(claim: str, regime: str, sel: pd.DataFrame, what: str, level: float) -> dict:
    b = _bounded(sel)
    k, n = int(b["beyond_noise"].astype(bool).sum()), len(b)
    lo, hi = share_interval(k, n, level)
    k_pos = int((sel["rel_gain"] > 0).sum())
    evidence = (f"{k} of {n} {what} on targets with a noise bound gain beyond {NOISE_SE:g} SE "
                f"(share {k / n:.3f}, {level:.0%} Clopper–Pearson [{lo:.3f}, {hi:.3f}]); "
                if n else f"no {what} on a target with a noise bound; ")
    evidence += (f"{k_pos} of {len(sel)} {what} have a positive gain, mean relative gain "
                 f"{sel['rel_gain'].mean():+.2%}" if len(sel) else f"no {what}")
    verdict = interval_verdict(lo, hi, MANY_SHARE, f"share of {what} beyond noise")
    return {"claim": claim, "regime": regime, "statistic": "share of pairs with a gain beyond noise",
            "estimate": k / n if n else np.nan, "ci_low": lo, "ci_high": hi, "n": n, "evidence": evidence,
            "verdict": verdict,
            "rule": f"Clopper–Pearson {level:.0%} interval of the share above {MANY_SHARE:g}: reproduced; "
                    f"below: not reproduced"}


def claim_many_settings(pairs: pd.DataFrame, regime: str, level: float = LEVEL) -> dict:
    """Claim (a): :func:`_share_claim` over every pair of ``regime``."""
    return _share_claim("a", regime, pairs[pairs["regime"] == regime], "pairs", level)


def claim_out_of_class(pairs: pd.DataFrame, regime: str, level: float = LEVEL) -> dict:
    """Claim (c): :func:`_share_claim` over the out-of-class pairs of ``regime``."""
    sel = pairs[(pairs["regime"] == regime) & ~pairs["in_class"].astype(bool)]
    return _share_claim("c", regime, sel, "out-of-class pairs", level)


def claim_small_source(pairs: pd.DataFrame, regime: str, small: float = SMALL_SOURCE, level: float = LEVEL) -> dict:
    """Claim (b): among the pairs of ``regime`` whose source trained on at most ``small`` examples (on
    targets with a noise bound), a one-sided exact binomial test of the count beyond noise against
    :func:`noise_pass_rate`."""
    sel = pairs[(pairs["regime"] == regime) & (pairs["source_size"] <= small)]
    b = _bounded(sel)
    k, n = int(b["beyond_noise"].astype(bool).sum()), len(b)
    rate = noise_pass_rate()
    row = {"claim": "b", "regime": regime, "statistic": "small-source pairs beyond noise vs noise alone "
                                                        "(one-sided exact binomial test)",
           "n": n, "ci_low": np.nan, "ci_high": np.nan,
           "rule": f"source trained on <= {small:,.0f} examples; p < {1 - level:.2g} against the noise pass rate "
                   f"{rate:.3f}: reproduced; otherwise not reproduced"}
    if n == 0:
        why = ("no source trained on at most {:,.0f} examples".format(small) if sel.empty else
               "no small-source pair on a target with a noise bound")
        return {**row, "estimate": np.nan, "evidence": why, "verdict": inconclusive(why)}
    test = stats.binomtest(k, n, rate, alternative="greater")
    lo, hi = share_interval(k, n, level)
    best = b.loc[b["rel_gain"].idxmax()]
    evidence = (f"{k} of {n} pairs with a source of <= {small:,.0f} examples gain beyond {NOISE_SE:g} SE "
                f"(share {k / n:.3f}, {level:.0%} Clopper–Pearson [{lo:.3f}, {hi:.3f}]; noise alone: at most "
                f"{rate:.3f}; binomial p = {test.pvalue:.3g}); largest: {best['source']} → {best['target']} "
                f"{best['rel_gain']:+.2%} ({best['source_size']:,.0f} source examples)")
    verdict = REPRODUCED if test.pvalue < 1 - level else NOT_REPRODUCED
    return {**row, "estimate": k / n, "ci_low": lo, "ci_high": hi, "evidence": evidence, "verdict": verdict,
            "p_value": float(test.pvalue)}


def per_target_spearman(pairs: pd.DataFrame, column: str) -> pd.Series:
    """Per target: Spearman's ρ between the sources' ``rel_gain`` and ``column`` (NaN where either is
    constant or fewer than 3 sources have both)."""
    out = {}
    for target, grp in pairs.groupby("target", sort=True):
        g = grp[["rel_gain", column]].dropna()
        if len(g) < 3 or g["rel_gain"].nunique() < 2 or g[column].nunique() < 2:
            out[target] = np.nan
            continue
        out[target] = float(stats.spearmanr(g["rel_gain"], g[column]).statistic)
    return pd.Series(out, dtype=float)


def claim_similarity_over_size(pairs: pd.DataFrame, regime: str, level: float = LEVEL, n_boot: int = N_BOOT,
                               seed: int = 0) -> dict:
    """Claim (d): per target, Spearman ρ(gain, TextEmb similarity) − ρ(gain, source size); mean over the
    targets where both are defined, percentile bootstrap over targets (:func:`bootstrap_mean_ci`).
    ``pairs`` needs a ``similarity`` column (source–target cosine) and ``source_task_size`` (the size of the
    source task's whole training set: in LIMITED→LIMITED every source trains on 1,000 of them, so the
    trained size cannot vary, and the claim asks whether data-rich tasks make better sources)."""
    sel = pairs[pairs["regime"] == regime]
    row = {"claim": "d", "regime": regime, "statistic": "mean over targets of Spearman ρ(gain, similarity) − "
                                                        "ρ(gain, source size)",
           "rule": f"{level:.0%} percentile bootstrap over targets above 0: reproduced; below 0: not reproduced"}
    if "similarity" not in sel.columns or sel["similarity"].isna().all():
        why = "no source–target similarity (TextEmb) for this regime"
        return {**row, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0, "evidence": why,
                "verdict": inconclusive(why)}
    r_sim = per_target_spearman(sel, "similarity")
    r_size = per_target_spearman(sel, "source_task_size")
    both = r_sim.notna() & r_size.notna()
    d = (r_sim - r_size)[both]
    if d.empty:
        why = ("source sizes do not vary within any target" if r_size.isna().all()
               else "no target with both correlations defined")
        return {**row, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0,
                "evidence": f"{why}; mean ρ(gain, similarity) {r_sim.mean():+.3f} over {int(r_sim.notna().sum())} "
                            "targets", "verdict": inconclusive(why)}
    lo, hi = bootstrap_mean_ci(d.to_numpy(), n_boot, level, seed)
    s_lo, s_hi = bootstrap_mean_ci(r_sim[both].to_numpy(), n_boot, level, seed)
    z_lo, z_hi = bootstrap_mean_ci(r_size[both].to_numpy(), n_boot, level, seed)
    evidence = (f"over {int(both.sum())} targets: mean Spearman ρ(gain, TextEmb similarity) "
                f"{r_sim[both].mean():+.3f} [{s_lo:+.3f}, {s_hi:+.3f}], ρ(gain, source task's training-set size) "
                f"{r_size[both].mean():+.3f} [{z_lo:+.3f}, {z_hi:+.3f}], difference {d.mean():+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}] ({level:.0%} bootstrap over targets); similarity ahead on "
                f"{int((d > 0).sum())} of {len(d)} targets")
    verdict = interval_verdict(lo, hi, 0.0, "difference of correlations")
    return {**row, "estimate": float(d.mean()), "ci_low": lo, "ci_high": hi, "n": int(both.sum()),
            "evidence": evidence, "verdict": verdict}


def claim_taskemb_beats_baselines(per_target: pd.DataFrame | None, regime: str, *, method: str = "TaskEmb",
                                  baselines: Mapping[str, str] | None = None,
                                  metrics: Sequence[str] = ("rho", "ndcg"),
                                  candidate_sets: Sequence[str] = ("all-class", "in-class"),
                                  level: float = LEVEL, n_boot: int = N_BOOT) -> dict:
    """Claim (e): ``method`` against each baseline (name -> ranker name in ``per_target``, default
    DataSize and CurveGrad) by ``selection.evaluation.paired_comparison`` over every target of ``regime``,
    for each metric and candidate set."""
    baselines = dict(baselines or {"DataSize": "DataSize", "CurveGrad": "CurveGrad"})
    row = {"claim": "e", "regime": regime, "statistic": f"paired {method} − baseline over targets "
                                                        f"({', '.join(metrics)}; {', '.join(candidate_sets)})",
           "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "rule": f"every {level:.0%} bootstrap interval excludes 0 in {method}'s favour: reproduced; any in a "
                   "baseline's favour: not reproduced"}
    sub = per_target[per_target["regime"] == regime] if per_target is not None and len(per_target) else None
    present = set(sub["method"]) if sub is not None else set()
    missing = [m for m in [method, *baselines.values()] if m not in present]
    if missing:
        why = f"no selection evaluation of {', '.join(missing)} in this regime"
        return {**row, "n": 0, "evidence": why, "verdict": inconclusive(why)}
    paired = paired_comparison(sub, baselines=tuple(baselines.values()), metrics=metrics, methods=[method],
                               n_boot=n_boot, level=level)
    paired = paired[(paired["target_class"] == "all") & paired["candidate_set"].isin(candidate_sets)]
    parts, favour, against = [], 0, 0
    label = {v: k for k, v in baselines.items()}
    for r in paired.itertuples():
        side = interval_side(r.metric, r.ci_low, r.ci_high)
        favour += side > 0
        against += side < 0
        parts.append(f"vs {label.get(r.baseline, r.baseline)} ({r.baseline}) {r.metric} {r.candidate_set}: "
                     f"{r.mean_diff:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], {r.wins}/{r.ties}/{r.losses}")
    n_cmp = len(paired)
    n_targets = int(paired["n_targets"].max()) if n_cmp else 0
    evidence = (f"{favour} of {n_cmp} intervals exclude 0 in {method}'s favour, {against} in the baseline's "
                f"(targets: {n_targets}; differences are {method} − baseline, lower is better for rho; "
                "wins/ties/losses): " + "; ".join(parts))
    if n_cmp == 0:
        verdict = inconclusive("no paired comparison")
    elif against:
        verdict = NOT_REPRODUCED
    elif favour == n_cmp:
        verdict = REPRODUCED
    else:
        verdict = inconclusive(f"{n_cmp - favour} of {n_cmp} intervals contain 0 ({n_targets} targets)")
    return {**row, "estimate": favour / n_cmp if n_cmp else np.nan, "n": n_targets, "evidence": evidence,
            "verdict": verdict}


def evaluate_claims(results: pd.DataFrame, per_target: pd.DataFrame | None = None, *,
                    regimes: Sequence[str] | None = None, per_example_targets: Iterable[str] = (),
                    source_sizes: Mapping | None = None, source_task_sizes: Mapping[str, float] | None = None,
                    similarity: pd.DataFrame | None = None,
                    datasize_method: Mapping[str, str] | None = None, targets_expected: int | None = None,
                    level: float = LEVEL, n_boot: int = N_BOOT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test claims (a)–(e) per regime. Returns (claims, summary): ``claims`` has one row per claim and
    regime (:data:`CLAIM_COLUMNS`); ``summary`` is :func:`transfer_summary`.

    ``results``: the transfer-results table restricted to the targets to judge (a regime whose targets
    are all missing gets "inconclusive" rows); ``per_target``: ``selection.evaluation.evaluate_rankers``'
    output on the same targets (claim e); ``regimes``: the regimes to report (default: those in
    ``results``); ``per_example_targets``: targets whose score is a mean of per-example values in [0, 1]
    (noise bound); ``source_sizes``: {regime: {source: examples trained on}} or {source: examples} (claim b);
    ``source_task_sizes``: {source: the task's whole training set} (claim d);
    ``similarity``: columns regime, source, target, similarity (claim d); ``datasize_method``: {regime:
    name of the DataSize ranker in ``per_target``} (default "DataSize"); ``targets_expected``: the study's
    target count: a regime with fewer targets keeps its evidence but gets no verdict ("inconclusive: only k of
    N targets ..."), since the targets completed first are not a sample of the study's and a bootstrap over a
    handful of targets is degenerate."""
    regimes = list(regimes) if regimes is not None else list(dict.fromkeys(results["regime"]))
    res = results[results["regime"].isin(regimes)]
    pairs = transfer_pairs(res, per_example_targets=per_example_targets, source_sizes=source_sizes,
                           source_task_sizes=source_task_sizes) \
        if (res["source"].notna() & ~res["source"].astype(str).isin(["", "nan", "None"])).any() else None
    if pairs is not None and similarity is not None and len(similarity):
        pairs = pairs.merge(similarity[["regime", "source", "target", "similarity"]], how="left",
                            on=["regime", "source", "target"])
    rows = []
    for regime in regimes:
        of_regime = pairs[pairs["regime"] == regime] if pairs is not None else pd.DataFrame()
        n_t = of_regime["target"].nunique() if len(of_regime) else 0
        common = {"targets": n_t, "targets_expected": targets_expected if targets_expected is not None else n_t}
        if n_t == 0:
            why = "no target of this regime has all its candidate sources measured yet"
            if targets_expected:
                why += f" (0 of {targets_expected})"
            for c in CLAIMS:
                rows.append({"claim": c, "regime": regime, "statement": CLAIMS[c], "n": 0, "evidence": why,
                             "verdict": inconclusive(why), **common})
            continue
        found = [claim_many_settings(of_regime, regime, level), claim_small_source(of_regime, regime, level=level),
                 claim_out_of_class(of_regime, regime, level), claim_similarity_over_size(of_regime, regime, level,
                                                                                          n_boot)]
        ds = (datasize_method or {}).get(regime, "DataSize")
        found.append(claim_taskemb_beats_baselines(per_target, regime,
                                                   baselines={"DataSize": ds, "CurveGrad": "CurveGrad"},
                                                   level=level, n_boot=n_boot))
        partial = targets_expected is not None and n_t < targets_expected
        for row in found:
            row.pop("p_value", None)
            if partial:  # the targets completed first are not a sample of the study's: evidence, no verdict
                row["verdict"] = inconclusive(f"only {n_t} of {targets_expected} targets of this regime have all "
                                              "their candidate sources measured so far")
            rows.append({**row, "statement": CLAIMS[row["claim"]], **common})
    claims = pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)
    claims["_c"] = claims["claim"].map(list(CLAIMS).index)
    claims["_r"] = claims["regime"].map(regimes.index)
    claims = claims.sort_values(["_c", "_r"]).drop(columns=["_c", "_r"]).reset_index(drop=True)
    summary = transfer_summary(pairs, level) if pairs is not None else pd.DataFrame(columns=SUMMARY_COLUMNS)
    return claims, summary


def claims_markdown(claims: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The report's section: per-regime transfer numbers, then one row per claim and regime."""
    md = ["## The paper's claims, tested", "",
          "Per regime, over the targets whose every candidate source is measured. Rules: `study/claims.py` "
          f"(a gain is beyond noise when it exceeds {NOISE_SE:g} standard-error bounds of one evaluation, "
          f"at most {noise_pass_rate():.3f} of no-gain pairs pass by chance; \"many\"/\"often\" = a share of at "
          f"least {MANY_SHARE:g}; a small source trained on at most {SMALL_SOURCE:,} examples). "
          "`claims.csv`, `transfer_summary.csv`.", ""]
    if len(summary):
        md += ["| regime | pairs | n | targets | mean rel. gain | best source's gain (mean over targets) "
               "| positive gain | beyond noise (bounded pairs) | targets with a source beyond noise |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in summary.itertuples():
            noise = (f"{r.n_beyond_noise}/{r.n_bounded} = {r.share_beyond_noise:.2f} "
                     f"[{r.share_beyond_noise_low:.2f}, {r.share_beyond_noise_high:.2f}]" if r.n_bounded else "—")
            md.append(f"| {r.regime} | {r.pairs} | {r.n_pairs} | {r.n_targets} | {r.mean_rel_gain:+.2%} | "
                      f"{r.best_mean_rel_gain:+.2%} | {r.n_positive}/{r.n_pairs} = {r.share_positive:.2f} "
                      f"[{r.share_positive_low:.2f}, {r.share_positive_high:.2f}] | {noise} | "
                      f"{r.targets_with_gain_beyond_noise} of {r.n_bounded_targets} |")
        md.append("")
    md += ["| claim | regime | targets | verdict | evidence |", "|---|---|---|---|---|"]
    for r in claims.itertuples():
        md.append(f"| ({r.claim}) {r.statement} | {r.regime} | {r.targets} of {r.targets_expected} | "
                  f"**{r.verdict}** | {r.evidence} |")
    md.append("")
    return md


def _mean_gain_sentence(row: Mapping[str, Any], what: str) -> str:
    return (f"{what}: mean relative gain {row['mean_rel_gain']:+.1%} over {int(row['n_pairs'])} pairs, "
            f"{int(row['n_positive'])} of them positive ({row['share_positive']:.0%}), "
            f"{int(row['n_beyond_noise'])} of the {int(row['n_bounded'])} with a noise bound beyond it")


def _against(base: str, value: float, c: Mapping[str, Any], metric: str, fmt: str) -> str:
    """"<baseline> <value> (difference d, 95% [lo, hi], better|worse|not separated)" for one paired row ``c``;
    one target: no interval, and no verdict."""
    if c["n_targets"] < 2:
        return f"{base} {value:{fmt}} (difference {c['mean_diff']:+{fmt}}, one target)"
    verdict = {1: "better", -1: "worse", 0: "not separated"}[interval_side(metric, c["ci_low"], c["ci_high"])]
    return (f"{base} {value:{fmt}} (difference {c['mean_diff']:+{fmt}}, 95% [{c['ci_low']:+{fmt}}, "
            f"{c['ci_high']:+{fmt}}], {verdict})")


def regime_findings(transfer_summary: pd.DataFrame, summary: pd.DataFrame, paired: pd.DataFrame,
                    methods: Sequence[str] = ("TextEmb", "TaskEmb", "LogME"),
                    baselines: Sequence[str] = ("DataSize", "Random"), metrics: Sequence[str] = ("rho", "ndcg"),
                    candidate_set: str = "all-class", targets_expected: int | None = None) -> dict[str, str]:
    """Per regime of ``transfer_summary`` (``transfer_summary.csv``), one paragraph: the mean relative gain and
    the positive pairs, all and out-of-class; then, for each method of ``methods`` that the regime's ``summary``
    (``summary.csv``) holds, its mean of each metric of ``metrics`` over all targets next to each baseline's, with
    the paired comparison's (``paired_comparison.csv``) mean difference and 95% interval: "better" or "worse"
    when the interval excludes 0 (:func:`interval_side`), "not separated" when it contains it, "one target" (and
    no interval) when one target is compared. Only ``candidate_set`` candidates. A regime with fewer evaluated
    targets than ``targets_expected`` is said to be a partial view; one with none compares nothing."""
    out = {}
    for regime, rows in transfer_summary.groupby("regime", sort=False):
        by_pairs = rows.set_index("pairs")
        n_targets = int(by_pairs.loc["all", "n_targets"])
        parts = [_mean_gain_sentence(by_pairs.loc["all"], f"{n_targets} target{'s' * (n_targets != 1)}")]
        if "out-of-class" in by_pairs.index:
            parts.append(_mean_gain_sentence(by_pairs.loc["out-of-class"], "out-of-class"))
        cells = summary[(summary["regime"] == regime) & (summary["candidate_set"] == candidate_set)
                        & (summary["target_class"] == "all")].set_index(["method", "metric"])["value"]
        comparisons = paired[(paired["regime"] == regime) & (paired["candidate_set"] == candidate_set)
                             & (paired["target_class"] == "all")].set_index(["method", "baseline", "metric"])
        if cells.empty:
            parts.append("no target has all its candidate sources yet, so no method is compared")
        for method, metric in ((m, k) for m in methods for k in metrics if (m, k) in cells.index):
            fmt = ".3f" if metric == "ndcg" else ".2f"
            said = [_against(base, cells[(base, metric)], comparisons.loc[(method, base, metric)], metric, fmt)
                    for base in baselines
                    if (base, metric) in cells.index and (method, base, metric) in comparisons.index]
            parts.append(f"{method} {metric} {cells[(method, metric)]:{fmt}}"
                         + (" against " + " and ".join(said) if said else ""))
        text = f"{regime}: " + "; ".join(parts) + "."
        if targets_expected is not None and n_targets < targets_expected:
            text += (f" Only {n_targets} of {targets_expected} targets have all their candidate sources so far: "
                     "a partial view, not the regime's result.")
        out[regime] = text
    return out

__all__ = ["CLAIMS", "LEVEL", "MANY_SHARE", "NOISE_SE", "SMALL_SOURCE", "claim_many_settings", "claim_out_of_class",
           "claim_similarity_over_size", "claim_small_source", "claim_taskemb_beats_baselines", "claims_markdown",
           "evaluate_claims", "interval_side", "interval_verdict", "noise_pass_rate", "per_target_spearman",
           "regime_findings", "share_interval", "transfer_pairs", "transfer_summary"]

"""Views of a study's source-selection evaluation (notebook 6), read from the tables ``study.report.report`` writes
(``evaluation/per_target.csv``, ``summary.csv``, ``target_spread.csv``, ``loto_choices.csv``).

- :func:`evaluated_targets`: per regime, the targets the evaluation scored;
- :func:`example_ranking`: one method's ranking of one target's sources next to their measured gains;
- :func:`metric_tables`: the paper's tables, one per metric;
- :func:`headline_comparisons`: the headline methods against Random and DataSize, over all targets;
- :func:`inseparable_by_candidate_set`: how many targets have their candidate sources within noise;
- :func:`component_table`, :func:`loto_choice_counts`: TaskEmb per component, and the components chosen
  leave-one-target-out;
- :func:`random_check`: the exact Random expectation next to a simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..selection import evaluation as sm


def evaluated_targets(per_target: pd.DataFrame, regimes: Iterable[str]) -> dict[str, list[str]]:
    """Per regime of ``regimes``, the sorted targets with at least one row in ``per_target`` (empty list:
    none evaluated yet)."""
    return {r: sorted(per_target.loc[per_target["regime"] == r, "target"].unique()) for r in regimes}


@dataclass
class ExampleRanking:
    """One method's ranking of a target's sources (``ranking``: source, score, rank, ...) and the measured
    seed-averaged relative gain of each source (``truth``, indexed by source)."""

    regime: str
    target: str
    method: str
    ranking: pd.DataFrame
    truth: pd.Series


def example_ranking(results: pd.DataFrame, rankers: Mapping[str, Mapping[str, Any]], regime: str, target: str,
                    method: str, fallback: str = "TextEmb") -> ExampleRanking:
    """Rank ``target``'s measured sources in ``regime`` by ``method`` (``fallback`` when ``rankers[regime]``
    has no such method), next to their relative gains (:func:`selection.evaluation.mean_transfer` of ``results``,
    the transfer-results table)."""
    method = method if method in rankers[regime] else fallback
    gains = sm.mean_transfer(results)
    truth = gains[(gains["regime"] == regime) & (gains["target"] == target)].set_index("source")["rel_gain"]
    ranking = rankers[regime][method].rank(target, sorted(truth.index))
    return ExampleRanking(regime=regime, target=target, method=method, ranking=ranking, truth=truth)


def metric_tables(summary: pd.DataFrame, metrics: Sequence[str]) -> dict[str, pd.DataFrame]:
    """:func:`selection.evaluation.selection_table` per metric of ``metrics`` that ``summary`` holds, in that order."""
    present = set(summary["metric"])
    return {m: sm.selection_table(summary, m) for m in metrics if m in present}


def headline_comparisons(per_target: pd.DataFrame, baselines: Sequence[str] = ("Random", "DataSize"),
                         metrics: Sequence[str] = ("rho", "ndcg", "regret@1")) -> pd.DataFrame:
    """:func:`selection.evaluation.paired_comparison` against ``baselines``, restricted to all targets together
    (``target_class == "all"``) and the methods of ``study.HEADLINE_METHODS``."""
    from .report import HEADLINE_METHODS

    paired = sm.paired_comparison(per_target, baselines=baselines, metrics=metrics)
    return paired[(paired["target_class"] == "all") & paired["method"].isin(HEADLINE_METHODS)]


def interim_view(summary: pd.DataFrame, paired: pd.DataFrame,
                 metrics: Sequence[str] = ("rho", "ndcg", "regret@1")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables of :func:`study.report.interim_selection` (``interim_selection.csv``,
    ``interim_paired_comparison.csv``) as a notebook shows them: the headline methods and Random, one row per
    (regime, method), ``metrics`` as columns (means over all targets), and the paired comparisons of the headline
    methods with Random and DataSize over all targets."""
    from .report import HEADLINE_METHODS

    order = list(HEADLINE_METHODS) + ["Random"]
    cells = summary[(summary["target_class"] == "all") & summary["method"].isin(order)
                    & summary["metric"].isin(list(metrics))]
    table = cells.pivot_table(index=["regime", "method"], columns="metric", values="value", sort=False)
    table = table[[m for m in metrics if m in table.columns]]
    table = table.sort_index(key=lambda idx: idx.map(order.index) if idx.name == "method" else idx)
    comparisons = paired[(paired["target_class"] == "all") & paired["method"].isin(HEADLINE_METHODS)
                         & paired["metric"].isin(list(metrics))]
    return table, comparisons.reset_index(drop=True)


def inseparable_by_candidate_set(per_target: pd.DataFrame, spread: pd.DataFrame, min_spread_in_se: float) -> pd.DataFrame:
    """Per candidate set (in the order of ``spread``), among the targets with a standard-error bound
    (``se_bound`` not NaN), how many have their candidate sources within ``min_spread_in_se`` standard errors
    of each other (:func:`selection.evaluation.drop_inseparable`): columns ``candidate_set``, ``n_bounded``,
    ``n_close``, ``close_targets`` (a list)."""
    bounded = spread[spread["se_bound"].notna()]
    _, noisy = sm.drop_inseparable(per_target, spread, min_spread_in_se)
    rows = []
    for cset, group in bounded.groupby("candidate_set", sort=False):
        close = noisy[noisy["candidate_set"] == cset]
        rows.append({"candidate_set": cset, "n_bounded": len(group), "n_close": len(close),
                     "close_targets": list(close["target"])})
    return pd.DataFrame(rows, columns=["candidate_set", "n_bounded", "n_close", "close_targets"])


def component_table(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Every TaskEmb row of ``summary`` over all targets, one row per method (TaskEmb, each component, the
    fusions, the leave-one-target-out choice), columns (regime, candidate set, metric) for ``metrics``."""
    rows = summary[summary["method"].str.startswith("TaskEmb") & (summary["target_class"] == "all")
                   & summary["metric"].isin(list(metrics))]
    return (rows.pivot_table(index="method", columns=["regime", "candidate_set", "metric"], values="value")
            .reindex(columns=list(metrics), level="metric"))


def loto_choice_counts(choices: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """From ``loto_choices.csv`` (seed-averaged rows only), how many targets each component was chosen for,
    per regime, candidate set and metric: columns regime, candidate_set, metric, chosen, targets."""
    choices = choices[choices["seed"].isna() & choices["metric"].isin(list(metrics))]
    return (choices.groupby(["regime", "candidate_set", "metric"])["chosen"].value_counts().rename("targets")
            .reset_index())


def random_check(per_target: pd.DataFrame, sampled: pd.DataFrame) -> pd.DataFrame:
    """The exact Random rows of ``per_target`` (seed-averaged) merged per (regime, candidate set, target)
    with :func:`selection.evaluation.evaluate_random_sampled`'s simulation: metric columns get the suffixes
    ``_exact`` and ``_sampled``; the simulation's ``<metric>_se`` columns are kept."""
    exact = per_target[(per_target["method"] == "Random") & per_target["seed"].isna()]
    return exact.merge(sampled, on=["regime", "candidate_set", "target"], suffixes=("_exact", "_sampled"))


def taskemb_variant_table(summary: pd.DataFrame, metrics: Sequence[str] = ("rho", "ndcg", "regret@1"),
                          target_classes: Sequence[str] = ("all", "QA")) -> pd.DataFrame:
    """The fused TaskEmb of each stored variant side by side (the report's ``summary.csv``): "TaskEmb" (the
    paper's estimator, the study's QA loss) and every "TaskEmb (...)" variant (another estimator, another QA
    loss), one row per method, regime, candidate set and target class of ``target_classes``, one column per
    metric of ``metrics``. The leave-one-target-out component pick is not a variant and is left out."""
    fused = summary["method"].eq("TaskEmb") | (summary["method"].str.startswith("TaskEmb (")
                                                & ~summary["method"].str.startswith("TaskEmb (one component"))
    rows = summary[fused & summary["target_class"].isin(target_classes) & summary["metric"].isin(metrics)]
    table = rows.pivot_table(index=["regime", "candidate_set", "target_class", "method"], columns="metric",
                             values="value", aggfunc="first")
    return table.reindex(columns=[m for m in metrics if m in table.columns]).reset_index()

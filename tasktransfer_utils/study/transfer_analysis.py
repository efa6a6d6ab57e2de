"""Summaries of a transfer study's gains (notebook 3), from the seed-averaged table of
:func:`selection.evaluation.mean_transfer` (one row per regime, target and source, with ``rel_gain`` and the
source's and target's classes):

- :func:`taskemb_choices`: per regime and target, the measured source TaskEmb ranks first;
- :func:`paired_regime_gains`: the pairs measured in two regimes, their relative gains side by side;
- :func:`best_sources`: each target's best source, and whether it shares the target's class;
- :func:`helpful_share`: the share of pairs that help, per regime, target class and in/out of class.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd


def taskemb_choices(gains: pd.DataFrame, rankers: Mapping[str, Mapping[str, Any]], regimes: Iterable[str]
                    ) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Per (regime, target), the source that ``rankers[regime]["TaskEmb"]`` (``study.report.selection_rankers``) ranks
    first among the target's measured sources in ``gains``. Returns the choices and the regimes without a
    TaskEmb ranker (embeddings missing), which get no choice."""
    choices, without = {}, []
    for regime in regimes:
        ranker = rankers.get(regime, {}).get("TaskEmb")
        if ranker is None:
            without.append(regime)
            continue
        for target, grp in gains[gains["regime"] == regime].groupby("target"):
            ranking = ranker.rank(target, sorted(grp["source"]))
            choices[(regime, target)] = ranking.sort_values("rank").iloc[0]["source"]
    return choices, without


def paired_regime_gains(gains: pd.DataFrame) -> pd.DataFrame:
    """The relative gains with one column per regime, one row per (source, target) pair measured in every
    regime of ``gains`` (pairs missing from one are dropped)."""
    return gains.pivot_table(index=["source", "target"], columns="regime", values="rel_gain").dropna()


def best_sources(gains: pd.DataFrame) -> pd.DataFrame:
    """The row of ``gains`` with the largest relative gain per (regime, target), plus ``in_class`` (the best
    source's class is the target's). Sources whose transfers score exactly alike (a dev set of 872 sentences
    gives the same accuracy to different models) tie; the tie goes to the first source name in alphabetical
    order, so the choice does not depend on the order of the rows."""
    ordered = gains.sort_values(["regime", "target", "rel_gain", "source"], ascending=[True, True, False, True],
                                kind="mergesort")
    best = ordered.groupby(["regime", "target"], sort=True).head(1)
    return best.assign(in_class=best["source_class"] == best["target_class"])


def helpful_share(gains: pd.DataFrame) -> pd.Series:
    """The share of pairs with a positive relative gain, indexed by (regime, target_class, in_class), where
    ``in_class`` is whether the source's class is the target's."""
    helps = gains.assign(helps=gains["rel_gain"] > 0, in_class=gains["source_class"] == gains["target_class"])
    return helps.groupby(["regime", "target_class", "in_class"])["helps"].mean()

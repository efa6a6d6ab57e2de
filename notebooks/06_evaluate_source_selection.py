# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Evaluate source selection: how well do task embeddings pick the source?
#
# Given a target, a method ranks the candidate sources; the transfer study (notebook 3) measured what
# each source really gives. The paper (§5, Tables 2–3) scores a ranking by
#
# * **ρ** — the position of the truly best source in the method's ranking, averaged over targets
#   (1 = the best source is always ranked first; lower is better);
# * **NDCG** — the whole ranking against the measured results (higher is better). Here relevance is
#   min-max scaled per target: the best source has relevance 1 and the worst 0, so negative gains need
#   no special case (see `tasktransfer_utils.selection.evaluation`);
# * **regret@k** — how far (in %) the best of the top-k sources falls below the truly best source;
# * Spearman / Kendall correlations between predicted and measured orders.
#
# Methods: **TextEmb**, **TaskEmb** per component and fused over components (reciprocal-rank fusion,
# k = 60; components that hold only rounding noise left out), **TaskEmb with one component chosen
# leave-one-target-out** (for each target, the component with the best mean metric over the other targets,
# scored on the held-out one), **TextEmb+TaskEmb**, and the baselines **DataSize** (largest source first), **CurveGrad**
# (slopes of the source's loss curve), **LogME** (You et al., 2021: the evidence of a linear model on
# the source's fine-tuned encoder's features of the target's training rows; a method beyond the paper, shown
# where the study recorded it) and **Random** (exact expectation). Candidates are either the
# sources of the target's class (**in-class**) or every other task (**all-class**).
#
# The evaluation reads the offline study's records and embeddings (`results/offline_study`); it takes
# seconds. Each regime (LIMITED→LIMITED, FULL→LIMITED) is evaluated on its own targets whose every candidate
# transfer has finished; a regime still being computed has fewer. The last sections test the paper's claims
# one by one.

# %% tags=["parameters"]
study_config = None          # study YAML; None: configs/offline_study.yaml
recompute = False            # True: run the study's missing jobs first (resumable)
metrics = ["rho", "ndcg", "regret@1", "regret@3"]
example_target = None        # target shown in detail; None: the first evaluated target
example_method = "TextEmb+TaskEmb"
random_draws = 1000          # draws of the simulated Random baseline (checks the exact expectation)
output_dir = None

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.study import selection_analysis as sa
from tasktransfer_utils.selection import evaluation as sm
from tasktransfer_utils.study.engines import make_engine
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR
from tasktransfer_utils.study.claims import regime_findings
from tasktransfer_utils.study.config import load_study_config
from tasktransfer_utils.study.plan import plan_ref
from tasktransfer_utils.study.report import MIN_INTERIM_SOURCES, min_spread_in_se, report, selection_rankers

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
cfg = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
plan = plan_ref(cfg).load()
if recompute:
    make_engine(cfg.engine, default_folder=cfg.runs_dir / "submitit", kind="local").run(plan, log=print)

# %% [markdown]
# ## Evaluate every method on every finished target
#
# `study.report.report` writes the results tables and the evaluation (`evaluation/per_target.csv`,
# `summary.csv`, one table per metric) — the same as `tasktransfer study report`.

# %%
paths = report(cfg, figures=False, log=print)
if "per_target" not in paths:
    raise FileNotFoundError(f"no finished target in {cfg.results_dir}: run the study first "
                            f"(tasktransfer study run {cfg.config_path}) or set recompute = True")
results = pd.read_csv(paths["transfer_results"])
per_target = pd.read_csv(paths["per_target"])
summary = pd.read_csv(paths["summary"])
targets = sorted(per_target["target"].unique())
methods = list(dict.fromkeys(per_target["method"]))
regimes = sorted(per_target["regime"].unique())
targets_by_regime = sa.evaluated_targets(per_target, cfg.regimes)
for r, ts in targets_by_regime.items():
    print(f"{r}: {len(ts)} of {len(cfg.targets)} targets evaluated: {ts}")
print("methods:", methods)

# %% [markdown]
# ## One target in detail
#
# What a ranking looks like next to the measured gains: dots are the method's scores (best at the top),
# bars what transfer from that source really gave. `study.report.selection_rankers` builds every method's ranker
# from the study's embeddings and records; `study.selection_analysis.example_ranking` ranks the target's sources
# with one of them (TextEmb when the method has no ranker here) next to the measured gains.

# %%
evaluated = results[results["target"].isin(targets)]
rankers = selection_rankers(plan, evaluated)
example = sa.example_ranking(evaluated, rankers, regimes[0], example_target or targets[0], example_method)
fig = plots.source_ranking(example.ranking, target=example.target, truth=example.truth.to_dict(), top_k=None,
                           score_label="ranking score (cosine or fusion)",
                           title=f"{example.regime}, target {example.target}: sources ranked by {example.method} "
                                 "vs measured gain")
plots.save_figure(fig, "selection_example_ranking", out_dir)
fig

# %% [markdown]
# ## The paper's tables: ρ and NDCG per method, target class and candidate set
#
# Means over targets (seed-averaged ground truth). `all` is the mean over every target
# (`study.selection_analysis.metric_tables`: `selection.evaluation.selection_table` per metric).

# %%
tables = sa.metric_tables(summary, metrics)
for m, table in tables.items():
    print(f"--- {m} ---")
    display(table.round(3))

# %%
figure_names = []
main_methods = [m for m in methods if not m.startswith("TaskEmb[")]
for regime in regimes:
    for cset in sm.CANDIDATE_SETS:
        sub = summary[(summary["regime"] == regime) & (summary["candidate_set"] == cset)
                      & summary["method"].isin(main_methods) & summary["metric"].isin(list(tables))]
        if sub.empty:
            continue
        fig = plots.selection_metric_bars(sub, list(tables),
                                          title=f"Source selection, {regime}, {cset} candidates: which method ranks best?")
        name = f"selection_metrics_{regime.replace('→', '-')}_{cset}"
        plots.save_figure(fig, name, out_dir)
        figure_names.append(name + ".png")
        display(fig)

# %% [markdown]
# ## Is a method really better than Random or DataSize here?
#
# The tables average over a handful of targets. A paired comparison asks, target by target, whether a
# method beat the baseline, and how far the mean difference could move if the targets had come out
# differently: a 95% percentile-bootstrap interval over targets. An interval that contains 0 means these
# targets do not separate the two methods; `p_wilcoxon` is the two-sided signed-rank test of the same
# differences (`study.selection_analysis.headline_comparisons`: `selection.evaluation.paired_comparison` of the
# headline methods, over all targets).

# %%
view = sa.headline_comparisons(per_target, baselines=("Random", "DataSize"), metrics=("rho", "ndcg", "regret@1"))
display(view.drop(columns=["target_class"]).round(3).reset_index(drop=True))
separated = view[(view["ci_low"] > 0) | (view["ci_high"] < 0)]
print(f"{len(separated)} of {len(view)} comparisons have an interval that excludes 0")

# %% [markdown]
# ## A regime still being measured: selection among its whole rows
#
# A regime whose targets do not all have every source yet (a study computed one source row at a time, as the
# offline study's FULL→LIMITED was) is evaluated above on its complete targets only, which are not a sample of
# its targets, and its claims below get no verdict. Meanwhile `study.report.interim_selection` gives an
# interim view: for every target, the methods rank only the sources whose rows are whole (the target itself left
# out; all-class candidates). It is a smaller pool than the study's and not a random one — the rows measured
# first are the cheapest sources, those with the smallest full training sets — so it is not the regime's result
# (`evaluation/interim_selection.csv`, `interim_paired_comparison.csv`; `study.selection_analysis.interim_view`
# shapes them).

# %%
if "interim_selection" in paths:
    interim_summary = pd.read_csv(paths["interim_selection"])
    for regime, pool in interim_summary.groupby("regime")["sources"].first().items():
        print(f"{regime}: candidates are the whole rows of {pool}")
    interim_table, interim_paired = sa.interim_view(interim_summary, pd.read_csv(paths["interim_paired_comparison"]))
    display(interim_table.round(3))
    display(interim_paired[["method", "baseline", "regime", "metric", "n_targets", "mean_diff", "ci_low", "ci_high",
                            "wins", "ties", "losses"]].round(3))
else:
    print("no interim view: every regime with transfers has all its targets complete, or has fewer than "
          f"{MIN_INTERIM_SOURCES} whole source rows")

# %% [markdown]
# ## Can one evaluation tell the sources apart?
#
# Every target's "truly best source" is itself a measurement: one fine-tuning run per pair here (the paper
# averaged 20 restarts), scored on a dev set of a few hundred to a thousand examples. Where a target's
# sources all land within a few standard errors of each other, which one comes out best is partly chance,
# and the selection metrics on that target inherit it. For scores that average a per-example value in
# [0, 1] (accuracy, SQuAD EM/F1), one evaluation's standard error is at most sqrt(p(1−p)/n). The report
# repeats the evaluation without the targets below `report.min_spread_in_se` standard errors (default 2;
# `summary_separable.csv`, and a table in `selection_tables.md`), judging each candidate set apart: a target
# whose 11 sources spread widely may still have its 3 in-class sources within noise of each other.
# `study.selection_analysis.inseparable_by_candidate_set` counts them (what the sensitivity table leaves out).

# %%
spread = pd.read_csv(paths["target_spread"])
display(spread.round(3))
for row in sa.inseparable_by_candidate_set(per_target, spread, min_spread_in_se(cfg)).itertuples():
    print(f"{row.candidate_set}: {row.n_close} of {row.n_bounded} targets with a standard-error bound have their "
          f"candidate sources within {min_spread_in_se(cfg):g} standard errors of each other: {row.close_targets}")

# %% [markdown]
# ## The paper's claims, tested
#
# The report (`study.report.report`, `study/claims.py`) checks each claim of the paper's summary per regime, on the
# evaluated targets: (a) positive transfer occurs in many settings; (b) gains are possible even when the
# source is small; (c) out-of-class transfer often succeeds; (d) in low-data regimes, source–target
# similarity matters more than source size; (e) TaskEmb beats DataSize and CurveGrad across settings. Each
# row gives the statistic, its interval and a verdict by a fixed rule: "reproduced" when the interval lies
# on the claimed side, "not reproduced" when it lies on the other, "inconclusive: <why>" otherwise. A gain
# counts as real only beyond two standard-error bounds of one evaluation (targets scored by a mean of
# per-example values; see `study/claims.py` for every rule).

# %%
claims = pd.read_csv(paths["claims"])
transfer_summary = pd.read_csv(paths["transfer_summary"])
display(transfer_summary[["regime", "pairs", "n_pairs", "n_targets", "mean_rel_gain", "best_mean_rel_gain",
                          "share_positive", "n_bounded", "n_beyond_noise", "share_beyond_noise",
                          "targets_with_gain_beyond_noise"]].round(3))
with pd.option_context("display.max_colwidth", None):
    display(claims[["claim", "regime", "statement", "targets", "targets_expected", "verdict", "evidence"]])

# %% [markdown]
# Each regime in words: what transfer gave (mean relative gain, positive pairs, all and out-of-class), and how
# TextEmb, TaskEmb and LogME rank the sources next to DataSize and Random over all targets with all-class
# candidates, with the paired comparison's 95% interval from above (`study.claims.regime_findings`,
# read from the same tables).

# %%
paired_all = pd.read_csv(paths["paired_comparison"])
for text in regime_findings(transfer_summary, summary, paired_all, targets_expected=len(cfg.targets)).values():
    print(text, end="\n\n")

# %% [markdown]
# ## TaskEmb per component
#
# Each TaskEmb component ranks sources on its own; the paper fuses them. Which layers carry the
# signal? Reading the best row off this table is a choice made on the very targets it is then scored on,
# so its numbers flatter it. The row "TaskEmb (one component, chosen leave-one-target-out)" makes that
# choice honestly: for each target, the component with the best mean over the *other* targets (each
# metric chooses for itself), scored on the held-out target. The second table counts its choices
# (`study.selection_analysis.component_table` and `loto_choice_counts`).

# %%
display(sa.component_table(summary, list(tables)).round(3))
display(sa.loto_choice_counts(pd.read_csv(paths["loto_choices"]), list(tables)))

# %% [markdown]
# ## Random: exact expectation versus simulation
#
# Random is scored exactly (every candidate tied; the tie rules give the expectation). A simulation
# with many random orders must agree within its standard error — a check of the metric code
# (`selection.evaluation.evaluate_random_sampled` simulates, `study.selection_analysis.random_check` sets the two side by side).

# %%
sampled = sm.evaluate_random_sampled(evaluated, n_draws=random_draws, seed=0)
check = sa.random_check(per_target, sampled)
display(check[["regime", "candidate_set", "target", "rho_exact", "rho_sampled", "rho_se",
               "ndcg_exact", "ndcg_sampled", "ndcg_se"]].round(3))

# %% [markdown]
# The key numbers of this run (`key_numbers.evaluate_source_selection`: the claims, the tables' cells, the
# per-target scores, the checks and the example) go to `06_evaluate_source_selection_key_numbers.json`.

# %%
numbers = key_numbers.evaluate_source_selection(
    cfg, regimes=regimes, targets=targets, targets_by_regime=targets_by_regime, claims=claims,
    transfer_summary=transfer_summary, methods=methods, metrics=list(tables), summary=summary,
    per_target=per_target, random_check=check, paired=view, spread=spread, example=example,
    figures=["selection_example_ranking.png"] + figure_names)
print(save_key_numbers(numbers, out_dir, "06_evaluate_source_selection"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `example_target = "STS-B"`: the target with the widest spread of gains (from −89% to +20%). Its best
#    source is SQuAD-1 (+20%, a QA source for a CR target); look where TextEmb+TaskEmb puts it in the
#    figure (ρ = 9.5 of 11 in `per_target.csv`). Then add `example_method = "LogME"`: LogME, which scores
#    each source's fine-tuned encoder on STS-B's own rows, ranks SQuAD-1 first (ρ = 1).
# 2. `example_method = "DataSize (full-set sizes)"`: sources in the order of their whole training sets
#    (SST-2, 67,349 examples, first). Plain `"DataSize"` orders by what each source trained on — 1,000
#    examples each in LIMITED→LIMITED, FAQ-TR 433 — so it ties almost every source. Compare the bars with
#    TextEmb+TaskEmb's for the default target BoolQ, and the two DataSize rows of the ρ table.
# 3. `random_draws = 100`: the simulated Random baseline's standard error (`rho_se`) grows about √10 ≈ 3
#    times, and `rho_sampled` still lies within a few of them of `rho_exact` — the check that the exact
#    expectation is computed right does not depend on the number of draws.

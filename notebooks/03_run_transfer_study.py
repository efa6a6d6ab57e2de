# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The transfer study: when does intermediate training help?
#
# The paper fine-tunes every source on every target (33 × 33 pairs, three regimes, many restarts) and
# asks how often transfer helps, between which classes, and what makes a good source (§4). This
# notebook reads the results of the project's **offline study** — a CPU-sized version of the same
# experiment described by `configs/offline_study.yaml` (12 tasks, 4 per class, every ordered pair,
# LIMITED→LIMITED and FULL→LIMITED, MiniLM) — and draws the paper's summaries, per regime:
#
# * per target, the score after transfer from every source against the no-transfer baseline, with the
#   best source and TaskEmb's choice marked (the paper's **Figure 2**, drawn there in FULL→LIMITED);
# * the two regimes side by side: does a source trained on its whole training set help more than the same
#   source trained on 1,000 examples?
# * the source × target matrix of relative gains, g = (p<sub>s→t</sub> − p<sub>t</sub>) / p<sub>t</sub>;
# * in-class versus out-of-class transfer, and the class-to-class summary;
# * the role of the source's training-set size.
#
# The study is run by `tasktransfer study run configs/offline_study.yaml` (resumable; every job writes
# one record under `results/offline_study/records`). With `recompute = True` the notebook runs the
# study's missing jobs itself — hours on a CPU for the full config. A regime still being computed is
# drawn with the pairs it has; the notebook says how many of its targets have every source measured.

# %% tags=["parameters"]
study_config = None          # study YAML; None: configs/offline_study.yaml
recompute = False            # True: run the study's missing jobs first (resumable)
workers = 1                  # local worker processes when recomputing
output_dir = None            # figures and key numbers; None: figures/

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.study import transfer_analysis as ta
from tasktransfer_utils.study.engines import make_engine
from tasktransfer_utils.data.loaders import task_size
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR
from tasktransfer_utils.selection.evaluation import mean_transfer
from tasktransfer_utils.study.runner import progress
from tasktransfer_utils.study.config import load_study_config
from tasktransfer_utils.study.plan import plan_ref
from tasktransfer_utils.study.report import complete_targets_by_regime, expected_sources, selection_rankers
from tasktransfer_utils.study.tables import write_tables

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
cfg = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
print(f"study {cfg.name}: {cfg.description}")
print(f"tasks {cfg.tasks}\nregimes {cfg.regimes}, seeds {cfg.seeds}, encoder {cfg.encoder_name()}, "
      f"LIMITED size {cfg.limited_size}\nresults in {cfg.results_dir}")

# %% [markdown]
# ## Run (only with `recompute = True`) and load
#
# Jobs run in a fixed order: every single-task fine-tune (each is both a source model and, in
# LIMITED→LIMITED, its task's no-transfer baseline), the task embeddings, then the transfers grouped by
# target. The results table has one row per fine-tuning run; baseline rows have no source.

# %%
plan = plan_ref(cfg).load()
if recompute:
    engine = make_engine(cfg.engine, default_folder=cfg.runs_dir / "submitit", workers=workers, kind="local")
    engine.run(plan, log=print)
    write_tables(plan)
print(progress(plan).line())
results_csv = cfg.results_dir / "transfer_results.csv"
if not results_csv.is_file():
    raise FileNotFoundError(f"{results_csv} does not exist: run the study (tasktransfer study run {cfg.config_path}) "
                            "or set recompute = True")
results = pd.read_csv(results_csv)
display(results.head())
print(f"{len(results)} runs: {results['source'].isna().sum()} baselines, {results['source'].notna().sum()} transfers")

# %% [markdown]
# ## Gains
#
# `selection.evaluation.mean_transfer` averages each pair over seeds and computes the paper's relative
# gain against the mean no-transfer score of the target.

# %%
gains = mean_transfer(results)
regimes = list(dict.fromkeys(gains["regime"]))  # the regimes with at least one measured transfer
complete = complete_targets_by_regime(cfg, results)
for regime in cfg.regimes:
    n_pairs = int((gains["regime"] == regime).sum())
    print(f"{regime}: {n_pairs} pairs measured; {len(complete.get(regime, []))} of {len(cfg.targets)} targets "
          "have every candidate source measured")
display(gains.sort_values(["regime", "target", "rel_gain"], ascending=[True, True, False])
        [["regime", "source", "target", "source_class", "target_class", "score", "baseline_score", "rel_gain"]]
        .round(4).head(20))

# %% [markdown]
# ## Figure 2: every source on every target
#
# Each dot is one source; the black bar is the target trained alone. Dots above the bar are sources
# that help; the ring marks the best source, the diamond the source TaskEmb ranks first (all-class
# candidates; where the regime has TaskEmb embeddings of every source and target). The paper finds that
# most targets have some source that helps, that the spread is wide (the choice of source matters), and
# that gains are largest when the target has little data. One figure per regime; the paper's is FULL→LIMITED.
# While a regime is still being measured, a target's label reads `target (n/N)`: n of its N sources measured
# so far, and the ring and diamond are the best and the chosen among those n.
# `study.report.selection_rankers` builds the study's rankers; `study.transfer_analysis.taskemb_choices` asks TaskEmb's for
# each target's first choice among its measured sources.

# %%
slug = {r: r.replace("→", "-") for r in regimes}
rankers = selection_rankers(plan_ref(cfg).load(), results[results["regime"].isin(regimes)])
taskemb_choice, no_taskemb = ta.taskemb_choices(gains, rankers, regimes)
for regime in no_taskemb:
    print(f"{regime}: no TaskEmb ranker (embeddings missing), no choice marked")
fig2_names = []
for regime in regimes:
    fig = plots.target_score_violins(results, regime=regime, choices=taskemb_choice, choice_label="TaskEmb's choice",
                                     expected_sources=expected_sources(cfg))
    plots.save_figure(fig, f"fig2_target_scores_{slug[regime]}", out_dir)
    fig2_names.append(f"fig2_target_scores_{slug[regime]}.png")
    display(fig)

# %% [markdown]
# ## The two regimes side by side
#
# The paper's headline is that transfer helps most when the target is small, and that a source trained on
# more data helps more. Here each target's mean and best relative gain over its sources, in each regime,
# over only the (source, target) pairs measured in both regimes (the number in brackets), so that a regime
# still being computed is compared on the same pairs (`study.transfer_analysis.paired_regime_gains`).

# %%
pair_regimes = [r for r in ("LIMITED→LIMITED", "FULL→LIMITED") if r in regimes]
side_by_side = []
if len(pair_regimes) == 2:
    fig = plots.regime_gains_side_by_side(gains, tuple(pair_regimes))
    plots.save_figure(fig, "regime_gains_LIMITED-LIMITED_vs_FULL-LIMITED", out_dir)
    side_by_side = ["regime_gains_LIMITED-LIMITED_vs_FULL-LIMITED.png"]
    display(fig)
    wide = ta.paired_regime_gains(gains)
    print(f"{len(wide)} pairs in both regimes; FULL→LIMITED − LIMITED→LIMITED relative gain, mean over them: "
          f"{(wide['FULL→LIMITED'] - wide['LIMITED→LIMITED']).mean():+.2%}")
else:
    print(f"only {regimes} measured: nothing to set side by side yet")

# %%
for regime in regimes:
    g = gains[gains["regime"] == regime]
    fig = plots.transfer_gain_heatmap(g, regime=regime)
    plots.save_figure(fig, f"transfer_gains_{slug[regime]}", out_dir)
    display(fig)

# %% [markdown]
# ## In-class versus out-of-class
#
# Transfer within a class (CR→CR, QA→QA, SL→SL) is the intuitive case; the paper also finds useful
# out-of-class transfer (for instance QA sources for CR targets) and cases where an out-of-class
# source hurts.

# %%
for regime in regimes:
    g = gains[gains["regime"] == regime]
    fig = plots.in_vs_out_of_class(g, title=f"{regime}: do in-class sources help more often than out-of-class ones?")
    plots.save_figure(fig, f"in_vs_out_of_class_{slug[regime]}", out_dir)
    display(fig)
    fig = plots.class_transfer_matrix(g, title=f"{regime}: mean gain and share of helpful pairs, by class")
    plots.save_figure(fig, f"class_transfer_{slug[regime]}", out_dir)
    display(fig)

# %% [markdown]
# ## The best source of each target
#
# How much would an oracle that always picks the best source gain, and how often is that source of the
# target's own class? These are the numbers source selection (notebook 6) tries to approach.
# `study.transfer_analysis.best_sources` picks each target's best source; `helpful_share` gives the share of pairs
# that help, in and out of class.

# %%
best = ta.best_sources(gains)
display(best[["regime", "target", "target_class", "source", "source_class", "in_class", "baseline_score", "score", "rel_gain"]].round(4))
share = ta.helpful_share(gains).unstack("in_class")
display(share.rename(columns={True: "in-class pairs that help", False: "out-of-class pairs that help"}).round(3))

# %% [markdown]
# ## The role of source data size
#
# The paper finds that source data size matters — a large source helps more — but that small sources
# can still help when they are similar to the target. In the LIMITED→LIMITED regime every source is
# trained on the same number of examples, so here the x axis is the size of the source's *full*
# training set: whether tasks that come with a lot of data make better sources even when only a
# sample is used. In FULL→LIMITED that is the set the source trained on.

# %%
sizes = {s: task_size(s, data_dir=cfg.data_dir) for s in sorted(gains["source"].unique())}
for regime in regimes:
    fig = plots.gain_vs_source_size(gains[gains["regime"] == regime], sizes)
    plots.save_figure(fig, f"gain_vs_source_size_{slug[regime]}", out_dir)
    display(fig)

# %% [markdown]
# The key numbers of this run (`key_numbers.run_transfer_study`: run counts, baselines, every pair's gain, the
# best sources, shares of helpful pairs, TaskEmb's choices, source sizes) go to `03_run_transfer_study_key_numbers.json`.

# %%
numbers = key_numbers.run_transfer_study(
    cfg, results=results, gains=gains, regimes=regimes, complete_targets=complete, taskemb_choice=taskemb_choice,
    source_sizes=sizes,
    figures=fig2_names + side_by_side + [f"{kind}_{slug[r]}.png" for r in regimes for kind in
                                         ("transfer_gains", "in_vs_out_of_class", "class_transfer", "gain_vs_source_size")])
print(save_key_numbers(numbers, out_dir, "03_run_transfer_study"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `recompute = True` (and `workers = 2` if two cores are free): runs the study's jobs not yet recorded
#    first — the FULL→LIMITED regime among them, whose sources train on their whole training sets (a day
#    or more on a CPU; resumable: stop and rerun any time, finished jobs are kept). Once both regimes are measured, the
#    "two regimes side by side" figure appears and its printed line gives the mean difference FULL→LIMITED −
#    LIMITED→LIMITED: positive if a source trained on all its data helps more, as the paper finds.
# 2. `study_config = "configs/paper_study.yaml"`: the paper's setting (BERT-base, the paper's 23 tasks that
#    load from the Hugging Face hub, three regimes). The progress line counts its jobs — thousands, against
#    the offline study's 640 — and the notebook stops at loading the results with an error naming the
#    command that runs the study; `tasktransfer study run configs/paper_study.yaml --dry-run` gives its job
#    counts and a GPU-hour estimate.

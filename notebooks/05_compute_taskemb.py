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

import numpy as np
import pandas as pd
from IPython.display import display

from tasktransfer_utils import plots
from tasktransfer_utils.embeddings.store import EmbeddingLibrary, encoder_id, is_noise_only
from tasktransfer_utils.data.loaders import load_task
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, REPO_ROOT, RESULTS_DIR, default_encoder
from tasktransfer_utils.data.regimes import Regime, apply_regime
from tasktransfer_utils.selection.rankers import CosineRanker
from tasktransfer_utils.training.settings import preset
from tasktransfer_utils.embeddings.similarity import cosine_similarity_matrix
from tasktransfer_utils.embeddings.taskemb import compute_taskemb, parse_component
from tasktransfer_utils.data.tasks import SUITES, TaskClass, get_task
from tasktransfer_utils.training.fine_tuning import fine_tune

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

# %%
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

# %% [markdown]
# ## The components of one task
#
# Each component is a separate embedding: one vector per activation site (hidden size) or per weight
# matrix (its number of entries).

# %%
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

# %% [markdown]
# ## Similarity and the task space (Figure 3b)
#
# In the paper TaskEmb separates the three classes more cleanly than TextEmb: what a task asks of the
# encoder is closer to its type than the text it is written in.

# %%
similarity = {est: cosine_similarity_matrix([taskemb[n, est][map_component] for n in task_names]) for est in estimators}
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
# over all task pairs.

# %%
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

# %%
if len(estimators) == 2:
    fig = plots.similarity_agreement(similarity[estimators[0]], similarity[estimators[1]],
                                     label_a=f"{estimators[0]} estimator", label_b=f"{estimators[1]} estimator")
    plots.save_figure(fig, "taskemb_estimators_agreement", out_dir)
    display(fig)

# %%
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

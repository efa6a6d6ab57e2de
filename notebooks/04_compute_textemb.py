# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. TextEmb: what the text of a task looks like to the encoder
#
# **TextEmb** (Vu et al. 2020, §3.1) embeds a task by the text it contains. Run the *pretrained*
# encoder (not fine-tuned; eval mode, no gradients) over the task's training set; for each example,
# average the final-layer token vectors over its real tokens ([CLS] and [SEP] included, padding
# excluded); the task embedding is the mean of those example vectors — a hidden-size vector, not
# normalised. For QA every doc-stride window counts as one example.
#
# Sources are then ranked for a target by the **cosine similarity** of their TextEmb to the target's.
# This notebook computes (or loads) TextEmb for a set of tasks, shows the similarity matrix and a 2-D
# map of the task space (the paper's Figure 3a).
#
# Embeddings are kept in an `EmbeddingLibrary` folder — by default the offline study's, which holds
# TextEmb over each task's LIMITED sample: with `recompute = False` stored embeddings are loaded and
# only missing ones are computed (minutes on a CPU).

# %% tags=["parameters"]
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

# %%
from pathlib import Path

from IPython.display import display

from tasktransfer_utils.selection import embedding_analysis as ea
from tasktransfer_utils import key_numbers, plots
from tasktransfer_utils.embeddings.store import EmbeddingLibrary, encoder_id
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import FIGURES_DIR, RESULTS_DIR, default_encoder
from tasktransfer_utils.embeddings.similarity import cosine_similarity_matrix
from tasktransfer_utils.data.tasks import SUITES, get_task

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
library = EmbeddingLibrary(embeddings_dir or RESULTS_DIR / "offline_study" / "embeddings")
encoder = encoder or default_encoder()
task_names = [get_task(t).name for t in (tasks or SUITES["offline-small"])]
print(f"encoder {encoder_id(encoder)}, {len(task_names)} tasks, regime {regime}; library: {library}")

# %% [markdown]
# ## Compute or load
#
# One forward pass per example over the training set; on a CPU MiniLM embeds roughly a few hundred
# short sentences per second (QA windows of 384 word pieces are slower). `selection.embedding_analysis.load_or_compute_textemb`
# reads each task's TextEmb of this encoder, regime, seed and row cap from the library, or computes it
# (`embeddings.textemb.compute_textemb`) and adds it there.

# %%
embeddings = ea.load_or_compute_textemb(task_names, library, encoder=encoder, regime=regime, seed=seed,
                                        max_examples=max_examples, recompute=recompute, data_dir=data_dir)

# %% [markdown]
# ## Similarity between tasks
#
# All TextEmb vectors share a large common component (every text activates the encoder's frequent
# directions), so raw cosines sit close to 1; what matters for selection is their **order**. The
# heatmap's colour range covers the off-diagonal values only.

# %%
similarity = cosine_similarity_matrix(list(embeddings.values()))
fig = plots.similarity_heatmap(similarity, title=f"TextEmb cosine similarity ({encoder_id(encoder)}, {regime}): "
                                                 "do tasks of a class resemble each other?")
plots.save_figure(fig, "textemb_similarity", out_dir)
fig

# %% [markdown]
# ## The task space (Figure 3a)
#
# A t-SNE map of the embeddings (cosine distance). In the paper, TextEmb groups tasks mostly by
# domain and text type: QA tasks cluster, while CR and SL tasks built on similar text sit together.

# %%
coords = plots.task_space_coordinates({n: e.vector for n, e in embeddings.items()}, method=map_method, seed=seed)
fig = plots.task_space_map(None, coordinates=coords, method=map_method,
                           title=f"Task space by TextEmb ({encoder_id(encoder)}): do tasks of a class cluster?")
plots.save_figure(fig, "fig3a_textemb_task_space", out_dir)
fig

# %% [markdown]
# ## Nearest sources
#
# For each task, the three most similar other tasks — what TextEmb would recommend as source tasks.
# The share of tasks whose nearest neighbour is of the same class summarises how much TextEmb knows
# about task type (`selection.embedding_analysis.nearest_sources`: cosine ranking of the other tasks).

# %%
nearest = ea.nearest_sources({n: embeddings[n].vector for n in task_names}, k=3)
display(nearest)
print(f"nearest neighbour of the same class for {nearest['nearest in-class'].mean():.0%} of tasks")

# %% [markdown]
# The key numbers of this run (`key_numbers.compute_textemb`: settings, dimensions, similarities, nearest
# sources) go to `04_compute_textemb_key_numbers.json`.

# %%
numbers = key_numbers.compute_textemb(embeddings, encoder=encoder, regime=regime, similarity=similarity,
                                      nearest=nearest, embeddings_dir=library.root,
                                      figures=["textemb_similarity.png", "fig3a_textemb_task_space.png"])
print(save_key_numbers(numbers, out_dir, "04_compute_textemb"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults). Figures and key numbers go to `figures/` unless you set `output_dir` to a
# folder of your own; `git checkout figures` restores the committed ones.
#
# 1. `map_method = "pca"`: only the 2-D map changes (a linear projection instead of t-SNE); the similarity
#    heatmap and the nearest-source table are the same cosines. Look whether the groups of the t-SNE map
#    (SQuAD-1 next to SQuAD-2, POS-PTB on top of Parent) are still there.
# 2. `max_examples = 100` with `embeddings_dir = "../runs/try_it_textemb"` (a new, git-ignored library, so the
#    study's stays as committed): TextEmb over 100 rows per task, computed here in a minute or two. Compare the `#1` column of
#    the nearest-source table and the share of in-class nearest neighbours (58% with the defaults): how many
#    rows does the mean of the encoder's token vectors need before the order of the sources settles?
#
# Note in the default run: POS-PTB and Parent have similarity 1.000 — both are labellings of the same Penn
# Treebank sentences, and TextEmb sees only the text.

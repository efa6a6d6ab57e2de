# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8. Make all figures
#
# Regenerates every file in `figures/` by running notebooks 1–7 headless (papermill) with their
# default parameters, which read the stored results: the offline study's records, tables and embedding
# library under `results/offline_study/`. Nothing is trained when those are complete, so the whole run
# takes minutes on a CPU (notebook 1 loads every offline task; notebook 7 embeds one file).
#
# With the defaults (`ci = False`, `output_dir = None`) each run is written back as the committed
# notebook (`notebook_runner.execute_and_write_back`: the cells of its paired `.py`, the outputs without
# machine paths or timings), which is what `make demo` does; otherwise executed copies go to
# `notebooks/_executed/` (not committed). With `ci = True` each notebook runs with the small CI parameters
# instead (`notebook_runner.CI_PARAMETERS`), as the tests do. This notebook's own committed copy carries no
# outputs (its run would only repeat 1–7 with timings): the committed notebooks 1–7 show every figure.
#
# | notebook | figures | paper |
# |---|---|---|
# | 1 explore tasks | `tab1_task_sizes` | Table 1 (tasks, sizes) |
# | 2 fine-tune and transfer | `fig_transfer_epoch_curves` | §2 (transfer set-up) |
# | 3 transfer study | `fig2_target_scores_*`, `regime_gains_*`, `transfer_gains_*`, `in_vs_out_of_class_*`, `class_transfer_*`, `gain_vs_source_size_*` | Figure 2, §4 |
# | 4 TextEmb | `textemb_similarity`, `fig3a_textemb_task_space` | Figure 3 (TextEmb) |
# | 5 TaskEmb | `taskemb_similarity`, `fig3b_taskemb_task_space`, `taskemb_estimators_agreement` | Figure 3 (TaskEmb) |
# | 6 source selection | `selection_metrics_*`, `selection_example_ranking` | Tables 2–3, §5 |
# | 7 your task | `rank_sources_for_your_task` | Figure 1 (the practitioner's use) |

# %% tags=["parameters"]
notebooks = None        # notebook names to run, e.g. ["03_run_transfer_study"]; None: 01 to 07
ci = False              # True: the small CI parameters of notebook_runner.CI_PARAMETERS
encoder = None          # with ci: the encoder of the CI runs (None: each notebook's default)
timeout_s = 3600        # per cell
output_dir = None       # where every figure goes; None: figures/
work_dir = None         # executed copies (and CI scratch); None: notebooks/_executed

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from tasktransfer_utils.notebook_runner import (NOTEBOOKS_DIR, ci_parameters, execute_and_write_back, execute_notebook,
                                                list_notebooks, load_key_numbers, save_key_numbers)
from tasktransfer_utils.paths import FIGURES_DIR

out_dir = Path(output_dir) if output_dir else FIGURES_DIR
executed_dir = Path(work_dir) if work_dir else NOTEBOOKS_DIR / "_executed"
stems = notebooks or [p.stem for p in list_notebooks() if p.stem != "08_make_all_figures"]
write_back = not ci and output_dir is None  # the default runs become the committed notebooks
print("running:", stems, "| figures to", out_dir, "| CI parameters" if ci else "| default parameters",
      "| written back to notebooks/" if write_back else "")

# %%
runs = []
for stem in stems:
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    started = pd.Timestamp.now()
    if write_back:
        execute_and_write_back(path, output_path=executed_dir / path.name, timeout_s=timeout_s)
    else:
        params = (ci_parameters(path, executed_dir / f"ci_{stem}", encoder=encoder, output_dir=str(out_dir))
                  if ci else {"output_dir": str(out_dir)})
        execute_notebook(path, params, output_path=executed_dir / path.name, timeout_s=timeout_s)
    seconds = (pd.Timestamp.now() - started).total_seconds()
    made = load_key_numbers(out_dir, stem)["figures"]
    runs.append({"notebook": stem, "seconds": round(seconds, 1), "figures": made})
    print(f"{stem}: {seconds:.0f} s, {len(made)} figure(s)")
runs = pd.DataFrame(runs)
display(runs)

# %% [markdown]
# ## The figures

# %%
for row in runs.itertuples():
    for name in row.figures:
        print(f"{row.notebook}: {name}")
        display(Image(filename=str(out_dir / name), width=700))

# %%
numbers = {
    "notebooks": list(runs["notebook"]),
    "ci": ci,
    "seconds": dict(zip(runs["notebook"], runs["seconds"])),
    "figures": [name for names in runs["figures"] for name in names],
    "figures_by_notebook": dict(zip(runs["notebook"], runs["figures"])),
}
print(save_key_numbers(numbers, out_dir, "08_make_all_figures"))

# %% [markdown]
# ## Try it
#
# Change one value in the parameters cell, run all cells and compare with the outputs above (the
# committed run of the defaults).
#
# 1. `notebooks = ["04_compute_textemb"]`: only notebook 4 runs (and, with the defaults, is written back);
#    the gallery shows its two figures and the table its time.
# 2. `ci = True` with `notebooks = ["01_explore_tasks", "04_compute_textemb"]` and
#    `output_dir = "../runs/try_it_figures"`: the two notebooks with the small CI parameters the tests use (the
#    offline-small suite; TextEmb of five tasks over 16 rows each, into a scratch library); nothing committed
#    is touched. Compare the gallery's TextEmb map with notebook 4's: what do 16 rows per task keep?

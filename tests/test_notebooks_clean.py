"""Committed notebooks: each ``NN_name.ipynb`` is paired with its percent script ``NN_name.py`` (same cells),
has exactly one `parameters` cell, imports only from the package, and carries the outputs of its default run
(notebooks 01-07) as ``notebook_runner.write_back`` writes them: no machine paths, timings or execution
metadata, with the key numbers that run saved, equal to the committed ``figures/*_key_numbers.json``."""

from __future__ import annotations

import base64
import json

import jupytext
import nbformat
import pytest

from tasktransfer_utils.notebook_runner import (CI_PARAMETERS, KEY_NUMBERS_METADATA, NOTEBOOKS_DIR, PAIRED_FORMATS,
                                                check_notebook, clean_executed, key_numbers_path, list_notebooks,
                                                machine_paths, pair_problems, paired_script, parameters_of,
                                                portable_text, source_notebook, strip_outputs)
from tasktransfer_utils.paths import FIGURES_DIR, REPO_ROOT

NOTEBOOKS = list_notebooks()
# notebook 08 reruns 01-07 (minutes, timings in its output): committed without outputs; its figures are
# shown by the committed runs of 01-07.
WITH_OUTPUTS = [p for p in NOTEBOOKS if p.stem != "08_make_all_figures"]


def test_notebooks_exist_and_are_numbered_in_order():
    assert NOTEBOOKS, f"no notebooks under {NOTEBOOKS_DIR}"
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
    assert check_notebook(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_ci_parameters_it_accepts(path):
    known = parameters_of(path)
    assert path.stem in CI_PARAMETERS, f"{path.name} has no entry in notebook_runner.CI_PARAMETERS"
    assert set(CI_PARAMETERS[path.stem]) <= set(known)
    assert "output_dir" in known


def test_folder_pairs_every_notebook_with_a_percent_script():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    found = find_jupytext_configuration_file(str(NOTEBOOKS_DIR))  # what jupytext finds for these notebooks
    assert found == str(NOTEBOOKS_DIR / "jupytext.toml")
    config = load_jupytext_configuration_file(found)
    assert PAIRED_FORMATS == "ipynb,py:percent"
    assert config.default_formats(str(NOTEBOOKS[0])) == PAIRED_FORMATS
    assert sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py")) == [p.stem for p in NOTEBOOKS]
    assert not (NOTEBOOKS_DIR / "build_notebooks.py").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_script_have_the_same_cells(path):
    """What `jupytext --sync` keeps equal: cell types, sources and tags (the parameters tag included)."""
    committed = nbformat.read(path, as_version=4)
    script = jupytext.read(paired_script(path))
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in committed.cells] == \
           [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in script.cells], \
           f"{path.name} and {paired_script(path).name} differ; run `jupytext --sync notebooks/{paired_script(path).name}`"
    assert committed.metadata["jupytext"]["formats"] == PAIRED_FORMATS
    assert "# %% tags=[\"parameters\"]" in paired_script(path).read_text()
    assert pair_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_ends_with_try_it_exercises(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Try it")
    exercises = [line for line in last.source.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert 2 <= len(exercises) <= 3, last.source
    known = parameters_of(path)
    for line in exercises:  # each exercise names a parameter of this notebook
        assert any(f"`{name} = " in line or f"`{name}=" in line for name in known), line


@pytest.mark.parametrize("path", WITH_OUTPUTS, ids=lambda p: p.stem)
def test_committed_outputs_are_the_run_that_saved_the_key_numbers(path):
    """The committed outputs come from the run that wrote the committed key numbers: the notebook stores
    the key numbers of its run, which equal figures/<stem>_key_numbers.json, and its last cell printed
    where they went (relative to the repository)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not a complete run"
    stored = nb.metadata.get(KEY_NUMBERS_METADATA, {}).get("key_numbers")
    assert stored is not None, f"{path.name} carries no key numbers; write it back with `make demo`"
    committed = json.loads(key_numbers_path(FIGURES_DIR, path.stem).read_text())
    assert stored == committed, (f"{path.name} and figures/{path.stem}_key_numbers.json come from different runs; "
                                 "rerun `make demo` and commit both")
    printed = "".join(o.get("text", "") for o in code[-1].outputs if o.get("output_type") == "stream")
    assert printed.strip().endswith(f"figures/{path.stem}_key_numbers.json")
    pngs = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 1 and all(name.endswith(".png") and (FIGURES_DIR / name).is_file()
                                  for name in committed["figures"])
    # no execution metadata or kernel messages left behind (images' base64 left out: it can spell anything)
    for c in nb.cells:
        for o in c.get("outputs", []):
            o.get("data", {}).pop("image/png", None)
    text = nbformat.writes(nb)
    assert "papermill" not in text and "iopub" not in text


def test_make_all_figures_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOKS_DIR / "08_make_all_figures.ipynb", as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


# --------------------------------------------------------------------------------------------------
# write-back on a small notebook
# --------------------------------------------------------------------------------------------------
SMALL_SCRIPT = '''# %% [markdown]
# # A small notebook

# %% tags=["parameters"]
out_dir = "{out_dir}"
label = "y"

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from tasktransfer_utils import plots
from tasktransfer_utils.notebook_runner import save_key_numbers
from tasktransfer_utils.paths import REPO_ROOT, resolve_data_dir

print("a file:", REPO_ROOT / "figures" / "tab1_task_sizes.png")
print("data:", resolve_data_dir() / "glue")
np.log(np.array([-1.0]))  # a RuntimeWarning on stderr, naming the kernel's temporary file
display(pd.DataFrame({{"path": [str(REPO_ROOT / "configs")]}}))

# %%
fig = Figure(figsize=(3, 2))
fig.add_subplot().plot([0, 1, 2], [1, 3, 2], label=label)
fig

# %%
for i in range(3):
    print(i)
save_key_numbers({{"n": 3, "where": str(REPO_ROOT / "figures")}}, out_dir, "09_small_check")
'''


def _small_pair(folder, out_dir):
    script = folder / "09_small_check.py"
    script.write_text(SMALL_SCRIPT.format(out_dir=out_dir))
    return script


@pytest.mark.notebook
def test_write_back_is_deterministic_portable_and_keeps_the_scripts_cells(tmp_path):
    from matplotlib.figure import Figure

    from tasktransfer_utils import plots
    from tasktransfer_utils.notebook_runner import execute_and_write_back, load_key_numbers

    folder = tmp_path / "nb"
    folder.mkdir()
    script = _small_pair(folder, "figs")  # relative to the notebook's folder, where it runs
    out_dir = folder / "figs"
    ipynb = folder / "09_small_check.ipynb"
    kwargs = {"key_numbers_dir": out_dir, "output_path": tmp_path / "executed.ipynb", "timeout_s": 120}
    assert execute_and_write_back(script, **kwargs) == ipynb
    first = ipynb.read_bytes()
    assert execute_and_write_back(ipynb, **kwargs) == ipynb  # the pair now exists: either file names it
    assert ipynb.read_bytes() == first, "two runs gave different notebooks"
    text = first.decode()
    assert str(REPO_ROOT) not in text and str(tmp_path) not in text and machine_paths(text) == []
    assert check_notebook(ipynb) == [] and pair_problems(ipynb) == []
    nb = nbformat.reads(text, as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in jupytext.read(script).cells]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3, 4]
    outs = code[1].outputs
    assert [o.output_type for o in outs] == ["stream", "display_data"]  # the warning (stderr) is dropped
    assert outs[0].text == "a file: figures/tab1_task_sizes.png\ndata: $TASKTRANSFER_DATA_DIR/glue\n"
    assert "configs" in outs[1].data["text/plain"] and str(REPO_ROOT) not in outs[1].data["text/html"]
    assert code[3].outputs[0].text == "0\n1\n2\n"  # one stream, however the kernel split it
    result = code[2].outputs[0]
    assert result.output_type == "execute_result" and result.execution_count == 3
    fig = Figure(figsize=(3, 2))  # the same figure drawn here gives the embedded PNG byte for byte
    fig.add_subplot().plot([0, 1, 2], [1, 3, 2], label="y")
    assert base64.b64decode(result.data["image/png"]) == plots.figure_png(fig)
    assert nb.metadata[KEY_NUMBERS_METADATA]["key_numbers"] == load_key_numbers(out_dir, "09_small_check") \
        == {"n": 3, "where": "figures"}
    assert set(nb.metadata) == {"jupytext", "kernelspec", "language_info", KEY_NUMBERS_METADATA}
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells)


def _executed_copy(tmp_path, outputs_by_cell, extra_cell=None):
    script = _small_pair(tmp_path, "figs")
    nb = source_notebook(script)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell, outputs in zip(code, outputs_by_cell):
        cell.outputs = outputs
        cell.execution_count = 40
        cell.metadata["papermill"] = {"start_time": "2026-01-01T00:00:00", "duration": 1.5}
    if extra_cell is not None:
        nb.cells.insert(2, extra_cell)
    nb.metadata["papermill"] = {"duration": 3.0}
    return nb, source_notebook(script)


def test_clean_executed_drops_stderr_merges_stdout_and_hides_paths(tmp_path):
    new = nbformat.v4.new_output
    outputs = [[], [new("stream", name="stdout", text=f"in {REPO_ROOT}/results/x.csv\n"),
                    new("stream", name="stderr", text="100%|####| 3/3 [00:01<00:00]\n"),
                    new("stream", name="stdout", text="<Thing at 0x7f3a2b1c0d90>\n")],
               [new("execute_result", data={"text/plain": f"PosixPath('{REPO_ROOT}')"}, execution_count=41),
                new("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "ab12"},
                                          "text/plain": "Loading:   0%|          | 0/103"})]]
    executed, source = _executed_copy(tmp_path, outputs)
    nb = clean_executed(executed, source, key_numbers={"a": 1})
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3, 4]
    assert code[1].outputs == [new("stream", name="stdout", text="in results/x.csv\n<Thing at 0x...>\n")]
    assert code[2].outputs[0].data["text/plain"] == "PosixPath('.')" and code[2].outputs[0].execution_count == 3
    assert len(code[2].outputs) == 1  # the progress-bar widget is dropped
    assert "papermill" not in nb.metadata and all("papermill" not in c.metadata for c in nb.cells)
    assert nb.metadata[KEY_NUMBERS_METADATA] == {"key_numbers": {"a": 1}}
    assert portable_text(f"{REPO_ROOT}/figures/a.png and {REPO_ROOT}") == "figures/a.png and ."
    assert portable_text(f"{REPO_ROOT}-copy/x") == f"{REPO_ROOT}-copy/x"  # another folder: left alone


def test_clean_executed_refuses_failed_runs_parameters_and_other_cells(tmp_path):
    new = nbformat.v4.new_output
    failed, source = _executed_copy(tmp_path, [[], [new("error", ename="KeyError", evalue="'x'", traceback=[])]])
    with pytest.raises(ValueError, match="the run failed \\(KeyError"):
        clean_executed(failed, source)
    injected = nbformat.v4.new_code_cell("label = 'z'", metadata={"tags": ["injected-parameters"]})
    with_params, source = _executed_copy(tmp_path, [], extra_cell=injected)
    with pytest.raises(ValueError, match="only a run with the default parameters"):
        clean_executed(with_params, source)
    other, source = _executed_copy(tmp_path, [])
    other.cells[-1].source += "\nprint('edited')"
    with pytest.raises(ValueError, match="differ from the notebook's source"):
        clean_executed(other, source)


def test_a_pair_out_of_sync_is_refused_before_running(tmp_path):
    from tasktransfer_utils.notebook_runner import _main, execute_notebook

    for suffix in (".ipynb", ".py"):
        (tmp_path / f"01_explore_tasks{suffix}").write_bytes((NOTEBOOKS_DIR / f"01_explore_tasks{suffix}").read_bytes())
    script = tmp_path / "01_explore_tasks.py"
    script.write_text(script.read_text().replace("examples_per_task = 2 ", "examples_per_task = 5 "))
    with pytest.raises(ValueError, match="01_explore_tasks.ipynb and 01_explore_tasks.py differ .*jupytext --sync"):
        execute_notebook(tmp_path / "01_explore_tasks.ipynb", output_path=tmp_path / "x.ipynb")
    assert any("differ" in p for p in check_notebook(tmp_path / "01_explore_tasks.ipynb"))
    assert _main(["run", str(tmp_path / "01_explore_tasks.ipynb")]) == 2
    assert _main(["run", "--write-back", "--ci", str(tmp_path)]) == 2


def _dirty_copy(tmp_path):
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"read {REPO_ROOT}/configs/a.yaml\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning\n")]
    code.execution_count = 3
    nb.cells.append(nbformat.v4.new_code_cell("import os\ndef helper():\n    pass"))
    path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(nb, path)
    return path


def test_check_catches_paths_stderr_counts_imports_and_definitions(tmp_path):
    path = _dirty_copy(tmp_path)
    problems = "\n".join(check_notebook(path))
    assert "machine paths" in problems and "has stderr output" in problems and "execution_count 3" in problems
    assert "imports ['os']" in problems and "defines ['helper']" in problems


def test_strip_outputs_removes_them(tmp_path):
    path = _dirty_copy(tmp_path)
    assert strip_outputs(path) is True
    nb = json.loads(path.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")
    assert strip_outputs(path) is False


def test_two_parameters_cells_are_reported(tmp_path):
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    extra = nbformat.v4.new_code_cell("seed = 1")
    extra.metadata["tags"] = ["parameters"]
    nb.cells.append(extra)
    path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(nb, path)
    assert any("2 cells tagged 'parameters'" in p for p in check_notebook(path))


def test_key_numbers_round_trip_with_numpy_and_nan(tmp_path):
    import numpy as np

    from tasktransfer_utils.notebook_runner import load_key_numbers, save_key_numbers

    path = save_key_numbers({"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": {1: np.int64(2)}},
                            tmp_path, "09_try_things")
    assert path.name == "09_try_things_key_numbers.json"
    assert load_key_numbers(tmp_path, "09_try_things") == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": {"1": 2}}
    with pytest.raises(FileNotFoundError, match="did not write them"):
        load_key_numbers(tmp_path, "01_explore_tasks")


def test_ci_parameters_fill_tmp_and_encoder(tmp_path):
    from tasktransfer_utils.notebook_runner import ci_parameters

    p = ci_parameters(NOTEBOOKS_DIR / "04_compute_textemb.ipynb", tmp_path, encoder="/x/tiny")
    assert p["embeddings_dir"] == f"{tmp_path}/embeddings" and p["encoder"] == "/x/tiny"
    assert p["output_dir"] == str(tmp_path / "figures") and p["recompute"] is True
    p = ci_parameters(NOTEBOOKS_DIR / "01_explore_tasks.ipynb", tmp_path, encoder="/x/tiny")
    assert "encoder" not in p and "work_dir" not in p  # notebook 01 has neither parameter
    p = ci_parameters(NOTEBOOKS_DIR / "03_run_transfer_study.ipynb", tmp_path, encoder="/x/tiny")
    assert (tmp_path / "ci_study.yaml").is_file() and p["study_config"] == str(tmp_path / "ci_study.yaml")
    assert "encoder: /x/tiny" in (tmp_path / "ci_study.yaml").read_text()


def test_execute_rejects_unknown_parameters(tmp_path):
    from tasktransfer_utils.notebook_runner import execute_notebook

    with pytest.raises(KeyError, match="unknown parameters \\['epochz'\\]"):
        execute_notebook(NOTEBOOKS_DIR / "01_explore_tasks.ipynb", {"epochz": 1}, output_path=tmp_path / "x.ipynb")


def test_demo_writes_back_notebooks_01_to_07_in_order(monkeypatch):
    """`make demo`'s last step: every notebook but 08 (which runs the others) through execute_and_write_back."""
    from tasktransfer_utils import demo, notebook_runner

    calls = []
    monkeypatch.setattr(notebook_runner, "execute_and_write_back", lambda nb: calls.append(nb.stem) or nb)
    lines = []
    written = demo.write_back_notebooks(log=lines.append)
    assert calls == [p.stem for p in NOTEBOOKS if p.stem != "08_make_all_figures"] and len(calls) == 7
    assert [p.stem for p in written] == calls and lines[0].startswith("  notebooks/01_explore_tasks.ipynb: ")

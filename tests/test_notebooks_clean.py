"""Committed notebooks are output-free, have exactly one `parameters` cell, import only from the package,
and match what notebooks/build_notebooks.py generates."""

from __future__ import annotations

import importlib.util
import json

import nbformat
import pytest

from tasktransfer_utils.notebook_runner import (CI_PARAMETERS, NOTEBOOKS_DIR, check_notebook, list_notebooks,
                                                parameters_of, strip_outputs)

NOTEBOOKS = list_notebooks()


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


def test_notebooks_match_their_generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        committed = nbformat.read(path, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in module.NOTEBOOKS[path.stem]], (
            f"{path.name} differs from notebooks/build_notebooks.py; run it and commit both")


def _dirty_copy(tmp_path):
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.execution_count = 3
    nb.cells.append(nbformat.v4.new_code_cell("import os\ndef helper():\n    pass"))
    path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(nb, path)
    return path


def test_check_catches_outputs_imports_and_definitions(tmp_path):
    path = _dirty_copy(tmp_path)
    problems = "\n".join(check_notebook(path))
    assert "has outputs" in problems and "execution_count 3" in problems
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

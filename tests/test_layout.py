"""The package layout shows the pipeline: every module belongs to a stage, and a module imports only modules of
its own or an earlier stage, with no import cycle between modules. Imports inside functions count too (a lazy
import is still a dependency), relative and absolute alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tasktransfer_utils"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: The stages in pipeline order; a module of one stage may import its own and the earlier stages only.
#: A name is a sub-package (all its modules) or a single module.
STAGES = (
    ("foundation", (PACKAGE, f"{PACKAGE}.errors", f"{PACKAGE}.paths")),
    ("data", (f"{PACKAGE}.data",)),
    ("training", (f"{PACKAGE}.training",)),
    ("embeddings", (f"{PACKAGE}.embeddings",)),
    ("selection", (f"{PACKAGE}.selection",)),
    ("plots", (f"{PACKAGE}.plots",)),
    ("study", (f"{PACKAGE}.study",)),
    ("practitioner", (f"{PACKAGE}.practitioner",)),
    ("top", (f"{PACKAGE}.notebook_runner", f"{PACKAGE}.key_numbers", f"{PACKAGE}.demo", f"{PACKAGE}.cli")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def stage_of(module: str) -> int:
    """The index of the stage ``module`` belongs to (the longest matching name wins)."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(STAGES):
        for name in names:
            inside = module == name or (name != PACKAGE and module.startswith(name + "."))  # the root: itself only
            if inside and len(name) > best_len:
                best, best_len = i, len(name)
    if best is None:
        raise AssertionError(f"module {module} belongs to no stage; add it to STAGES in {Path(__file__).name}")
    return best


def top_level_names(source: str) -> set[str]:
    """The names a module binds at its top level (what ``from module import name`` can take besides modules)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def imported_modules(source: str, module: str, is_package: bool, known: set[str],
                     bound: dict[str, set[str]] | None = None) -> set[str]:
    """The package modules that ``source`` (the text of ``module``) imports anywhere: at the top, inside
    functions and classes, under ``if`` / ``try``; relative and absolute. ``from package import name``, where
    ``name`` is neither a module nor bound in the package's ``__init__`` (``bound``), yields ``package.name``:
    a module that does not exist."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            found.add(target)
            target_is_package = any(k.startswith(target + ".") for k in known)
            for alias in node.names:  # `from pkg import module` imports the module
                if f"{target}.{alias.name}" in known or (target_is_package and bound is not None
                                                         and alias.name not in bound.get(target, ())):
                    found.add(f"{target}.{alias.name}")
    # importing a.b.c runs a/__init__ and a/b/__init__ too: only the named module counts as the dependency
    return found - {module}


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """{module: package modules it imports} for {module: source text}, package ``__init__`` files included.
    An import of a package module that does not exist is an error (it would hide a dependency)."""
    known = set(modules)
    bound = {name: top_level_names(source) for name, source in modules.items()}
    graph = {}
    for name, source in modules.items():
        is_package = any(other.startswith(name + ".") for other in known) or name == PACKAGE
        imported = imported_modules(source, name, is_package, known, bound)
        unknown = sorted(imported - known)
        assert not unknown, f"{name} imports {', '.join(unknown)}: no such module in the package"
        graph[name] = imported
    return graph


def back_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a later stage, as 'importer (stage) imports imported (later stage)'."""
    out = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported):
            if stage_of(target) > stage_of(importer):
                out.append(f"{importer} ({STAGES[stage_of(importer)][0]}) imports {target} "
                           f"({STAGES[stage_of(target)][0]}, a later stage)")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles between modules (one path per strongly connected component of two or more modules,
    or a module importing itself), found by Tarjan's algorithm."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph() -> dict[str, set[str]]:
    return import_graph({name: path.read_text(encoding="utf-8") for name, path in package_modules().items()})


def test_every_module_belongs_to_a_stage():
    modules = package_modules()
    assert f"{PACKAGE}.data.tasks" in modules and f"{PACKAGE}.study.config" in modules
    for name in modules:
        stage_of(name)


def test_no_stage_imports_a_later_stage():
    graph = package_graph()
    assert sum(len(v) for v in graph.values()) > 100  # the walk sees the package's imports, lazy ones too
    problems = back_imports(graph)
    assert not problems, "imports of a later stage:\n" + "\n".join(problems)


def test_no_import_cycle_between_modules():
    found = cycles(package_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_lazy_relative_imports_are_seen():
    """A function-level relative import counts, resolved against the importing module's package."""
    known = {PACKAGE, f"{PACKAGE}.study.report", f"{PACKAGE}.plots", f"{PACKAGE}.study", f"{PACKAGE}.selection",
             f"{PACKAGE}.selection.evaluation", f"{PACKAGE}.cli"}
    source = ("def f():\n    from .. import plots\n    from ..selection import evaluation as sm\n"
              "    import tasktransfer_utils.cli\n")
    assert imported_modules(source, f"{PACKAGE}.study.report", False, known) == {
        f"{PACKAGE}", f"{PACKAGE}.plots", f"{PACKAGE}.selection", f"{PACKAGE}.selection.evaluation",
        f"{PACKAGE}.cli"}


def test_the_checks_catch_a_back_import_and_a_cycle():
    """Not vacuous: a data module importing the study inside a function, and two modules importing each other,
    are both reported."""
    modules = {
        PACKAGE: "", f"{PACKAGE}.data": "", f"{PACKAGE}.study": "",
        f"{PACKAGE}.data.tasks": "def f():\n    from ..study.config import load_study_config\n",
        f"{PACKAGE}.study.config": "from ..data.tasks import get_task\n",
        f"{PACKAGE}.study.jobs": "from .report import x\n",
        f"{PACKAGE}.study.report": "def g():\n    from tasktransfer_utils.study import jobs\n",
    }
    graph = import_graph(modules)
    assert back_imports(graph) == [f"{PACKAGE}.data.tasks (data) imports {PACKAGE}.study.config (study, a later stage)"]
    assert cycles(graph) == [[f"{PACKAGE}.data.tasks", f"{PACKAGE}.study.config"],
                             [f"{PACKAGE}.study.jobs", f"{PACKAGE}.study.report"]]


def test_an_import_of_a_missing_module_is_an_error():
    """A relative import that resolves to no module (e.g. one left behind by a move) is reported, not skipped."""
    with pytest.raises(AssertionError, match="study.plots: no such module"):
        import_graph({PACKAGE: "", f"{PACKAGE}.study": "", f"{PACKAGE}.plots": "",
                      f"{PACKAGE}.study.report": "def f():\n    from . import plots\n"})


@pytest.mark.parametrize("module", [f"{PACKAGE}.nowhere", f"{PACKAGE}.studies.x"])
def test_a_module_outside_the_stages_is_named(module):
    with pytest.raises(AssertionError, match="belongs to no stage"):
        stage_of(module)

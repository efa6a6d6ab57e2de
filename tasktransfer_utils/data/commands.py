"""What the commands need from the data stage: a checked data directory, a task loaded for a command (its
failures named by the flags), and ``tasktransfer tasks`` (its parser is in :mod:`tasktransfer_utils.cli`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingFileError, UsageError, UserInputError
from .tasks import TaskSpec, get_suite, list_tasks


def check_data_dir(data_dir: str | None) -> Path:
    """The local data directory (``--data-dir``, else ``$TASKTRANSFER_DATA_DIR``, else the default), or a
    MissingFileError when it does not exist or is empty."""
    from ..paths import resolve_data_dir

    root = resolve_data_dir(data_dir)
    if not any(root.iterdir()):
        raise MissingFileError(f"--data-dir {root}: the folder is empty; expected the raw task files laid out "
                               "as shared/data/MANIFEST.md (e.g. glue/SST-2/train.tsv)")
    return root


def load_task_data(task: str, source: str = "local", data_dir: str | None = None, seed: int = 0):
    """``loaders.load_task`` for a command: what keeps a task from loading is a UserInputError naming the
    flags (``--source``, ``--data-dir``), including a hub that cannot be reached."""
    from .tasks import get_task

    spec = get_task(task)
    if source == "local":
        if spec.local is None:
            raise UsageError(f"task {spec.name} has no local data files ({spec.notes or 'none registered'}); "
                             + ("it loads from the hub only: pass --source hub (needs internet)" if spec.hub
                                else "it cannot be loaded here"))
        check_data_dir(data_dir)
    elif spec.hub is None:
        raise UsageError(f"--source hub: task {spec.name} has no hub copy; expected --source local with its files "
                         "in --data-dir")
    from .loaders import load_task

    try:
        return load_task(spec, data_dir=data_dir, source=source, seed=seed)
    except UserInputError:
        raise
    except OSError as err:  # ConnectionError, the hub's and datasets' not-found errors, an offline hub
        if source != "hub":
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--source hub: task {spec.name}: cannot load {spec.hub.dataset_id} from the hub "
                         f"({type(err).__name__}: {first[:200]}); expected internet access (is $HF_HUB_OFFLINE set?) "
                         "or --source local with the task's files in --data-dir") from err



def describe_tasks(specs: list[TaskSpec], sizes: bool = False, data_dir=None) -> list[dict]:
    """One row per task (name, class, metrics, paper task, local reader, hub id), plus the real split sizes
    of local tasks when ``sizes`` (loads them)."""
    rows = []
    for t in specs:
        row = {"task": t.name, "class": t.task_class.value, "metrics": ",".join(t.metrics),
               "paper": t.paper_task, "local": t.local.reader if t.local else "",
               "hub": (t.hub.dataset_id + (f"/{t.hub.config}" if t.hub.config else "")) if t.hub else ""}
        if sizes:
            from .loaders import load_task

            td = load_task(t, data_dir=data_dir) if t.local else None
            for split in ("train", "validation", "test"):
                row[split] = len(td.splits[split]) if td is not None and split in td.splits else None
            row["derived_split"] = bool(td and td.provenance.get("derived_split"))
        rows.append(row)
    return rows


def _run_tasks_command(args) -> int:
    """``tasktransfer tasks`` (the parser is in ``cli``): the registered tasks as a table on stdout."""
    if args.sizes:
        check_data_dir(args.data_dir)
    specs = get_suite(args.suite) if args.suite else list_tasks()
    if args.task_class:
        specs = [t for t in specs if t.task_class.value == args.task_class]
    rows = describe_tasks(specs, sizes=args.sizes, data_dir=args.data_dir)
    if not rows:
        print("no tasks")
        return 0
    cols = list(rows[0])
    widths = {c: max(len(c), *(len("" if r[c] is None else str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(("" if r[c] is None else str(r[c])).ljust(widths[c]) for c in cols))
    return 0


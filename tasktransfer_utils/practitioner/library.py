"""Source libraries for ``tasktransfer rank``: which stored task embeddings a practitioner's file is ranked
against, and how to add more sources.

A *library* is a folder of task-embedding files (``embeddings.store.EmbeddingLibrary``). ``rank`` reads two by
default (:data:`DEFAULT_LIBRARIES`):

* the study's library (``results/offline_study/embeddings``): TextEmb and TaskEmb (LIMITED) of the 12 tasks
  whose transfers the offline study measured (``results/offline_study/transfer_results.csv``);
* the extended library (``results/source_library``): the LIMITED TextEmb and TaskEmb of every other task of
  the ``offline`` and ``offline-extra`` suites, computed exactly as the study's ``textemb`` jobs and its sources'
  TaskEmbs are (:func:`build_library`; ``tasktransfer library build --taskemb``), with the records of the
  fine-tunes the TaskEmbs come from (``finetunes/``). These sources have embeddings only: no transfer of theirs
  was measured.

A team adds its own candidate sources to a library of its own (:func:`add_source`; ``tasktransfer library
add MY_LIB FILE --name NAME`` or ``--hub DATASET_ID``) and ranks against it with ``tasktransfer rank FILE
--library MY_LIB``. Sources are embedded with the same encoder and the same per-class settings as the
study's (TextEmb by default; ``--taskemb`` fine-tunes a LIMITED model on the file first and adds its TaskEmb
with the study's estimator, labels, components and QA loss), and :func:`load_libraries` refuses libraries
whose embeddings are not comparable (``embeddings.store.check_comparable``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..embeddings.store import (EmbeddingLibrary, TaskEmbedding, check_comparable, load_embeddings,
                                ranked_variant, read_header)
from ..errors import UsageError
from ..paths import CONFIGS_DIR, RESULTS_DIR, RUNS_DIR, relative_paths

STUDY_LIBRARY = RESULTS_DIR / "offline_study" / "embeddings"
EXTENDED_LIBRARY = RESULTS_DIR / "source_library"
DEFAULT_LIBRARIES = (STUDY_LIBRARY, EXTENDED_LIBRARY)
DEFAULT_CONFIG = CONFIGS_DIR / "offline_study.yaml"
DEFAULT_SUITES = ("offline", "offline-extra")
#: metadata fields a stored TextEmb must match to count as "already built with the same settings"
TEXTEMB_SETTINGS = ("encoder_id", "split", "regime", "seed", "max_examples", "max_seq_length", "doc_stride",
                    "batch_size")
MEASURED = "measured (study)"
EMBEDDINGS_ONLY = "embeddings only"


class LibraryError(UsageError):
    """A library cannot be built, extended or read as asked; the message says what and what was expected."""


# ----------------------------------------------------------------------------------------------
# Reading libraries
# ----------------------------------------------------------------------------------------------


def _label(path: Path) -> str:
    """How a library is named in messages and output: relative to the repository's results when it is there."""
    try:
        return str(path.resolve().relative_to(RESULTS_DIR.parent))
    except ValueError:
        return str(path)


def _load_one(path: Path) -> list[TaskEmbedding]:
    if path.is_file():
        return load_embeddings(path)
    if not path.is_dir():
        raise LibraryError(f"embedding library {path} does not exist; expected a folder of .safetensors embedding "
                           "files (tasktransfer library add/build) or one such file")
    return ranked_variant(EmbeddingLibrary(path).load(), path)



def measured_sources(library: str | os.PathLike) -> set[str]:
    """Sources whose transfers were measured: the non-empty ``source`` values of the ``transfer_results.csv``
    beside a study's embeddings folder (``<results_dir>/embeddings``); empty for any other library."""
    table = Path(library).parent / "transfer_results.csv"
    if Path(library).name != "embeddings" or not table.is_file():
        return set()
    sources = pd.read_csv(table, usecols=["source"], dtype=str, keep_default_na=False)["source"]
    return {s for s in sources if s}


def load_libraries(libraries: Sequence[str | os.PathLike]) -> list[TaskEmbedding]:
    """The embeddings of several libraries (folders or files), each tagged in memory with ``meta["library"]``
    (where it was read) and ``meta["transfers"]`` (:data:`MEASURED` or :data:`EMBEDDINGS_ONLY`).

    LibraryError when a library is missing or empty, when one source task is in two libraries, or when the
    libraries' embeddings of one method and component are not comparable (encoder, estimator, label
    source, QA loss, length: ``embeddings.store.check_comparable``)."""
    out: list[TaskEmbedding] = []
    owner: dict[str, str] = {}
    for given in libraries:
        path = Path(given)
        label = _label(path)
        embs = _load_one(path)
        if not embs:
            raise LibraryError(f"embedding library {label} holds no embeddings; add sources with "
                               "`tasktransfer library add` or leave it out")
        measured = measured_sources(path)
        for task in sorted({e.task for e in embs}):
            if task in owner and owner[task] != label:
                raise LibraryError(f"source {task!r} is in two libraries, {owner[task]} and {label}; rename one "
                                   "(library add --name) or rank with one of them")
            owner[task] = label
        for e in embs:
            e.meta["library"] = label
            e.meta["transfers"] = MEASURED if e.task in measured else EMBEDDINGS_ONLY
        out.extend(embs)
    groups: dict[tuple, list[TaskEmbedding]] = {}
    for e in out:
        groups.setdefault((e.meta.get("method"), e.meta.get("component")), []).append(e)
    for group in groups.values():
        try:
            check_comparable(group)
        except ValueError as exc:
            raise LibraryError(f"libraries {', '.join(_label(Path(p)) for p in libraries)}: {exc}") from None
    return out


def rank_libraries(libraries: Sequence[str] | None, no_default: bool = False) -> list[TaskEmbedding]:
    """The embeddings ``tasktransfer rank`` ranks against: the default libraries (unless ``no_default``) that
    exist, then each of ``libraries`` (a path, or several joined by ``os.pathsep``)."""
    paths: list[Path] = [] if no_default else [p for p in DEFAULT_LIBRARIES if p.exists()]
    for item in libraries or []:
        paths += [Path(p) for p in str(item).split(os.pathsep) if p]
    if not paths:
        raise LibraryError("no source library to rank against: give --library FOLDER (or drop "
                           "--no-default-library)")
    seen, unique = set(), []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return load_libraries(unique)


def annotate_ranking(ranked: pd.DataFrame, embeddings: Iterable[TaskEmbedding]) -> pd.DataFrame:
    """The ranking with a ``transfers`` column (whether the source's transfers were measured by the study or
    it has embeddings only) and ``.attrs["sources_note"]`` counting both kinds."""
    kind = {e.task: e.meta.get("transfers", EMBEDDINGS_ONLY) for e in embeddings}
    out = ranked.copy()
    out["transfers"] = out["source"].map(lambda s: kind.get(s, EMBEDDINGS_ONLY))
    out.attrs = dict(ranked.attrs)
    n_measured = int((out["transfers"] == MEASURED).sum())
    out.attrs["sources_note"] = (
        f"{len(out)} sources ranked: {n_measured} with measured transfers (the offline study, "
        f"results/offline_study), {len(out) - n_measured} with embeddings only (no transfer measured)")
    return out


# ----------------------------------------------------------------------------------------------
# Computing sources with the study's settings
# ----------------------------------------------------------------------------------------------


def _first_variant(cfg) -> dict:
    """The study's first TaskEmb variant (estimator, labels, components, QA loss): what its sources' TaskEmbs are."""
    return dict((cfg.taskemb or [{"estimator": "paper", "labels": "gold"}])[0])


def _study_config(config: str | os.PathLike | None, encoder: str | None):
    import dataclasses

    from ..study.config import StudyConfigError, load_study_config

    path = Path(config) if config is not None else DEFAULT_CONFIG
    try:
        cfg = load_study_config(path)
    except (StudyConfigError, FileNotFoundError) as exc:
        raise LibraryError(f"study config {path}: {exc}") from None
    return dataclasses.replace(cfg, encoder=encoder) if encoder is not None else cfg


def textemb_job_params(task: str, task_class: str, cfg, *, seed: int = 0, regime: str = "LIMITED",
                       max_examples: int | None = None) -> dict:
    """The params of the study's ``textemb`` job for ``task`` (``study.jobs.build_jobs``), so that
    ``study.job_functions.textemb_for_job`` computes the TextEmb exactly as the study does."""
    from ..data.regimes import LIMITED_SIZE

    params = {"task": task, "task_class": task_class, "regime": regime, "seed": seed,
              "encoder": cfg.encoder_name(), "data_source": cfg.data_source, "data_seed": cfg.data_seed,
              "settings": cfg.settings_overrides(task_class), **(cfg.textemb or {})}
    if cfg.limited_size != LIMITED_SIZE:
        params["limited_size"] = cfg.limited_size
    if max_examples is not None:
        params["max_examples"] = max_examples
    return params


def _expected_textemb_meta(params: dict) -> dict:
    from ..study.job_functions import _settings_for

    s = _settings_for(params)
    return {"encoder_id": params["encoder"], "split": "train", "regime": params["regime"], "seed": params["seed"],
            "max_examples": params.get("max_examples"), "max_seq_length": s.max_seq_length,
            "doc_stride": s.doc_stride if params["task_class"] == "QA" else None,
            "batch_size": params.get("batch_size", 64)}


def _stored_textemb(lib: EmbeddingLibrary, task: str) -> list[dict]:
    return [m for f in lib.files() for m in read_header(f) if m.get("task") == task and m.get("method") == "TextEmb"]


def _same_settings(meta: dict, expected: dict) -> bool:
    return all(meta.get(k) == v for k, v in expected.items())


def _check_library_encoder(lib: EmbeddingLibrary, enc_id: str) -> None:
    have = {m.get("encoder_id") for f in lib.files() for m in read_header(f)}
    if have and have != {enc_id}:
        raise LibraryError(f"library {_label(lib.root)} holds embeddings of encoder {sorted(map(str, have))}, not "
                           f"{enc_id!r}; embeddings of different encoders are not comparable: use the library's "
                           "encoder (--encoder) or another library folder")


def build_library(
    out: str | os.PathLike = EXTENDED_LIBRARY,
    *,
    suites: Sequence[str] = DEFAULT_SUITES,
    tasks: Sequence[str] | None = None,
    skip_libraries: Sequence[str | os.PathLike] = (STUDY_LIBRARY,),
    config: str | os.PathLike | None = None,
    encoder: str | None = None,
    seed: int = 0,
    max_examples: int | None = None,
    taskemb: bool = False,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Store the LIMITED TextEmb of every task of ``suites`` (or of ``tasks``) in the library ``out``, computed
    by ``study.job_functions.textemb_for_job`` with the study config's settings (default ``configs/offline_study.yaml``:
    the offline MiniLM, 1,000 seeded training rows, batch 64, QA windows of 256 tokens), and with ``taskemb`` its
    LIMITED TaskEmb as the study computes its sources' (:func:`source_taskemb`: the study's class settings and
    first TaskEmb variant; fine-tunes in ``work_dir``, default ``runs/source_library``, which an interrupted build
    resumes). Resumable: an embedding already stored in ``out`` with the same settings, or held by one of
    ``skip_libraries`` (the study's library), is skipped. Returns one row per task: task, class, status
    (computed / stored / in <library>), and the file and seconds for computed ones; with ``taskemb`` also
    taskemb_status and taskemb_seconds."""
    import time

    from ..study.job_functions import _load, textemb_for_job
    from ..data.tasks import get_suite, get_task

    cfg = _study_config(config, encoder)
    names = list(dict.fromkeys(tasks if tasks else [t.name for s in suites for t in get_suite(s)]))
    lib = EmbeddingLibrary(out)
    enc_id = cfg.encoder_name()
    _check_library_encoder(lib, enc_id)
    variant = _first_variant(cfg)
    want_variant = (variant.get("estimator", "paper"), variant.get("labels", "gold"))

    def taskemb_of_variant(meta) -> bool:
        return (meta.get("method") == "TaskEmb" and meta.get("regime") == "LIMITED" and meta.get("seed") == seed
                and (meta.get("estimator"), meta.get("label_source")) == want_variant)

    skip: dict[str, str] = {}
    skip_taskemb: dict[str, str] = {}
    for other in skip_libraries:
        other = Path(other)
        if other.resolve() == Path(out).resolve() or not other.exists():
            continue
        for e in _load_one(other):
            if (e.meta.get("method") == "TextEmb" and e.meta.get("encoder_id") == enc_id
                    and e.meta.get("regime") == "LIMITED" and e.meta.get("seed") == seed):
                skip.setdefault(e.task, _label(other))
            if taskemb and taskemb_of_variant(e.meta):
                skip_taskemb.setdefault(e.task, _label(other))
    stored_taskemb = ({m["task"] for f in lib.files() for m in read_header(f)
                       if taskemb_of_variant(m)} if taskemb else set())
    work = Path(work_dir) if work_dir is not None else RUNS_DIR / "source_library"
    rows = []
    for name in names:
        spec = get_task(name)
        cls = spec.task_class.value
        params = textemb_job_params(spec.name, cls, cfg, seed=seed, max_examples=max_examples)
        row = {"task": spec.name, "class": cls}
        if spec.name in skip:
            row["status"] = f"in {skip[spec.name]}"
        elif any(_same_settings(m, _expected_textemb_meta(params)) for m in _stored_textemb(lib, spec.name)):
            row["status"] = "stored"
        else:
            t0 = time.perf_counter()
            emb = textemb_for_job(params, cfg)
            emb.meta["library_origin"] = f"task {spec.name} (tasktransfer registry, {cfg.data_source} data)"
            path = lib.add([emb])
            row.update(status="computed", file=path.name, seconds=round(time.perf_counter() - t0, 1))
        if taskemb:
            if spec.name in skip_taskemb:
                row["taskemb_status"] = f"in {skip_taskemb[spec.name]}"
            elif spec.name in stored_taskemb:
                row["taskemb_status"] = "stored"
            else:
                t0 = time.perf_counter()
                embs = source_taskemb(_load(params, cfg), cfg, encoder=cfg.encoder_path(), seed=seed, work_dir=work,
                                      regime="LIMITED", keep_model=False)  # the library keeps the embedding
                for e in embs.values():
                    e.meta["library_origin"] = f"task {spec.name} (tasktransfer registry, {cfg.data_source} data)"
                lib.add(list(embs.values()))
                keep_finetune_record(finetune_run_dir(work, spec.name, "LIMITED", seed), lib.root)
                row.update(taskemb_status="computed", taskemb_seconds=round(time.perf_counter() - t0, 1))
        log(f"{row['task']:<12} {row['class']:<3} TextEmb {row['status']}"
            + (f" ({row['seconds']} s)" if "seconds" in row else "")
            + (f", TaskEmb {row['taskemb_status']}" if taskemb else "")
            + (f" ({row['taskemb_seconds']} s)" if "taskemb_seconds" in row else ""))
        rows.append(row)
    return rows


#: where a library keeps the records of the fine-tunes its TaskEmbs were computed from
FINETUNES_FOLDER = "finetunes"


def finetune_run_dir(work_dir: str | os.PathLike, task: str, regime: str, seed: int) -> Path:
    """The run folder :func:`source_taskemb` fine-tunes ``task`` in under ``work_dir``."""
    return Path(work_dir) / f"{task}-{regime}-seed{seed}"


def keep_finetune_record(run_dir: str | os.PathLike, library_root: str | os.PathLike) -> Path | None:
    """Copy a fine-tune's ``result.json`` (settings, per-epoch dev metrics, score, loss curve, times) into
    ``<library>/finetunes/<task>__<regime>__seed<seed>.json``, paths made relative to the run's folder and the
    encoder named by its id, so that the library says how well each TaskEmb's model learned its task after the
    weights are gone. None when the run left no result."""
    import json

    from ..embeddings.store import encoder_id

    run_dir = Path(run_dir)
    result = run_dir / "result.json"
    if not result.is_file():
        return None
    record = relative_paths(json.loads(result.read_text()), run_dir.parent)
    record["encoder"] = encoder_id(record.get("encoder"))
    out = Path(library_root) / FINETUNES_FOLDER / f"{record['task']}__{record['regime']}__seed{record['seed']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return out


def source_taskemb(task_data, cfg, *, encoder: str, seed: int = 0, work_dir: str | os.PathLike | None = None,
                   device: str | None = None, epochs: float | None = None,
                   regime: str | None = None, keep_model: bool = True) -> dict[str, TaskEmbedding]:
    """TaskEmb of a user's source task as the study computes its sources' (``study.job_functions.run_finetune`` then
    ``run_taskemb``): fine-tune the encoder on at most 1,000 seeded rows (LIMITED; a smaller file: all its
    rows, FULL, unless ``regime`` says LIMITED, as the study does for a task under 1,000 rows) with the study's
    class settings, then the diagonal-Fisher embedding with the study's first TaskEmb variant (estimator,
    labels, components, QA loss). The fine-tune's run folder is ``work_dir/<task>-<regime>-seed<seed>``, so an
    interrupted call resumes it (``training.fine_tuning``); without ``keep_model`` its weights are deleted once
    the TaskEmb is made."""
    from ..embeddings.store import LEGACY_QA_LOSS
    from ..data.regimes import LIMITED_SIZE
    from ..study.config import DEFAULT_TASKEMB_COMPONENTS
    from ..embeddings.taskemb import compute_taskemb
    from ..training.fine_tuning import fine_tune

    if not task_data.provenance.get("labelled", True):
        raise LibraryError(f"{task_data.spec.name}: TaskEmb needs labels (a model is fine-tuned on the source), but "
                           "the file has none; add it without --taskemb (TextEmb only)")
    cls = task_data.spec.task_class.value
    variant = _first_variant(cfg)
    settings = cfg.finetune_settings(cls)
    if epochs is not None:
        settings = settings.replace(num_epochs=epochs)
    n_train = len(task_data.splits["train"])
    regime = regime or ("LIMITED" if n_train > LIMITED_SIZE else "FULL")
    if n_train < settings.batch_size:
        settings = settings.replace(batch_size=n_train)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="tasktransfer-library-"))
    run = fine_tune(task_data, finetune_run_dir(work, task_data.spec.name, regime, seed), encoder=encoder,
                    regime=regime, seed=seed, settings=settings, device=device)
    comps = list(variant.get("components") or DEFAULT_TASKEMB_COMPONENTS)
    if cls == "SL":
        comps = [c for c in comps if c != "cls_output"]
    qa_loss = variant.get("qa_loss", LEGACY_QA_LOSS) if cls == "QA" else "authors"
    embs = compute_taskemb(task_data, run.model_dir, estimator=variant.get("estimator", "paper"),
                           labels=variant.get("labels", "gold"), qa_loss=qa_loss, seed=seed,
                           batch_size=variant.get("batch_size", 32), components=comps, encoder=encoder,
                           device=device)
    for e in embs.values():
        e.meta = relative_paths(dict(e.meta), work)
    if not keep_model:
        shutil.rmtree(run.model_dir, ignore_errors=True)
    return embs


# ----------------------------------------------------------------------------------------------
# A user's own sources
# ----------------------------------------------------------------------------------------------


def hub_to_file(dataset_id: str, out_dir: str | os.PathLike, *, config: str | None = None,
                split: str = "train", max_rows: int | None = None) -> Path:
    """Download a hub dataset's split (``datasets.load_dataset``) and write it as JSON lines under ``out_dir``,
    for the readers ``rank`` uses. LibraryError (one line) when the hub is off (``HF_HUB_OFFLINE=1``,
    ``HF_DATASETS_OFFLINE=1``) or unreachable, or the dataset, config or split does not exist."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise LibraryError(f"hub dataset {dataset_id!r}: the hub is switched off here ({var}=1); unset it on a "
                               "machine with internet, or export the dataset to a file and add the file")
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - network, missing dataset/config/split: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LibraryError(f"hub dataset {dataset_id!r}" + (f" config {config!r}" if config else "")
                           + f" split {split!r} cannot be loaded ({type(exc).__name__}: {first[:200]}); check the "
                           "id and your connection, or export it to a file and add the file") from None
    if max_rows is not None and len(ds) > max_rows:
        ds = ds.shuffle(seed=0).select(range(max_rows))
    out = Path(out_dir) / (dataset_id.replace("/", "__") + (f"__{config}" if config else "") + f"__{split}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_json(str(out), lines=True, force_ascii=False)
    return out


def add_source(
    library: str | os.PathLike,
    task_data,
    *,
    origin: str,
    taskemb: bool = False,
    config: str | os.PathLike | None = None,
    encoder: str | None = None,
    seed: int = 0,
    max_examples: int | None = None,
    work_dir: str | os.PathLike | None = None,
    device: str | None = None,
    epochs: float | None = None,
    replace: bool = False,
) -> list[Path]:
    """Add a user's source task (a ``data.loaders.TaskData``, e.g. from ``practitioner.rank.read_target_file``) to the
    library folder ``library``: its TextEmb over at most 1,000 seeded rows (``max_examples``; a smaller file:
    every row), with the study config's encoder and class settings (as :func:`build_library` and the study's
    own sources), and with ``taskemb`` its TaskEmb (:func:`source_taskemb`). ``origin`` (a file name or a hub
    id) is recorded in the metadata. LibraryError when the library holds another encoder's embeddings, or
    already holds a source of that name (unless ``replace``)."""
    from ..data.regimes import LIMITED_SIZE
    from ..study.job_functions import _settings_for
    from ..embeddings.textemb import compute_textemb

    cfg = _study_config(config, encoder)
    lib = EmbeddingLibrary(library)
    if Path(library).exists() and not Path(library).is_dir():
        raise LibraryError(f"library {library} is a file; expected a folder (it is created when missing)")
    enc_path, enc_id = cfg.encoder_path(), cfg.encoder_name()
    _check_library_encoder(lib, enc_id)
    name = task_data.spec.name
    existing = [f for f in lib.files() if any(m.get("task") == name for m in read_header(f))]
    if existing and not replace:
        raise LibraryError(f"library {_label(lib.root)} already has a source named {name!r}; choose another --name "
                           "or pass --replace")
    cls = task_data.spec.task_class.value
    n = len(task_data.splits["train"])
    regime = "LIMITED" if n > LIMITED_SIZE else "FULL"  # LIMITED: the seeded 1,000 rows; FULL: all (fewer) rows
    params = textemb_job_params(name, cls, cfg, seed=seed, regime=regime)
    embs = [compute_textemb(task_data, enc_path, split="train", regime=regime, seed=seed,
                            batch_size=params.get("batch_size", 64), max_examples=max_examples,
                            settings=_settings_for(params), device=device)]
    if taskemb:
        embs += list(source_taskemb(task_data, cfg, encoder=enc_path, seed=seed, work_dir=work_dir, device=device,
                                    epochs=epochs).values())
    for f in existing:
        f.unlink()
    written = []
    for group in ([embs[0]], embs[1:]):
        if not group:
            continue
        for e in group:
            e.meta["library_origin"] = origin
        written.append(lib.add(group))
    return written


# ----------------------------------------------------------------------------------------------
# Command line: tasktransfer library build | add | list
# ----------------------------------------------------------------------------------------------

def _run_library(args: argparse.Namespace) -> int:
    from .rank import TargetFileError, _quiet_libraries

    _quiet_libraries()
    try:
        if args.library_command == "build":
            return _cmd_build(args)
        if args.library_command == "add":
            return _cmd_add(args)
        return _cmd_list(args)
    except (LibraryError, TargetFileError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"tasktransfer library {args.library_command}: error: {msg}", file=sys.stderr)
        return 2


def _cmd_build(args) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    rows = build_library(args.out, suites=args.suite or DEFAULT_SUITES, tasks=tasks,
                         skip_libraries=args.skip_library if args.skip_library is not None else (STUDY_LIBRARY,),
                         config=args.config, encoder=args.encoder, seed=args.seed, max_examples=args.max_examples,
                         taskemb=args.taskemb, work_dir=args.work_dir)
    done = sum(r["status"] == "computed" for r in rows)
    line = f"{_label(Path(args.out))}: TextEmb {done} computed, {len(rows) - done} already stored"
    if args.taskemb:
        done_t = sum(r["taskemb_status"] == "computed" for r in rows)
        line += f"; TaskEmb {done_t} computed, {len(rows) - done_t} already stored"
    print(line)
    return 0


def _cmd_add(args) -> int:
    from .rank import read_target_file

    if (args.file is None) == (args.hub is None):
        raise LibraryError("give either a FILE or --hub DATASET_ID (exactly one)")
    if args.hub is not None and not args.name:
        raise LibraryError("--hub needs --name NAME (the source's name in rankings)")
    with tempfile.TemporaryDirectory(prefix="tasktransfer-hub-") as tmp:
        if args.hub is not None:
            path = hub_to_file(args.hub, tmp, config=args.hub_config, split=args.split)
            origin = f"hub {args.hub}" + (f"/{args.hub_config}" if args.hub_config else "") + f" split {args.split}"
        else:
            path, origin = Path(args.file), f"file {Path(args.file).name}"
        text_columns = [c.strip() for c in args.text_columns.split(",")] if args.text_columns else None
        data = read_target_file(path, file_format=args.file_format, name=args.name, text_columns=text_columns,
                                label_column=args.label_column, regression=True if args.regression else None,
                                header=False if args.no_header else None, tag_column=args.tag_column, seed=args.seed)
        written = add_source(args.library, data, origin=origin, taskemb=args.taskemb, config=args.config,
                             encoder=args.encoder, seed=args.seed, max_examples=args.max_examples,
                             work_dir=args.work_dir, device=args.device, epochs=args.epochs, replace=args.replace)
    kinds = "TextEmb + TaskEmb" if args.taskemb else "TextEmb"
    print(f"added {data.spec.name} ({data.spec.task_class.value}, {len(data.splits['train'])} rows, {kinds}) to "
          f"{args.library}: {', '.join(p.name for p in written)}")
    return 0


def library_table(libraries: Sequence[str | os.PathLike] | None = None, *,
                  embeddings: Sequence[TaskEmbedding] | None = None) -> pd.DataFrame:
    """One row per source task of the libraries (or of ``embeddings`` already read by :func:`load_libraries` or
    :func:`rank_libraries`): task, class, transfers, methods, library, and
    finetune_score: the dev score of the LIMITED fine-tune its TaskEmb was computed from (the mean of the task's
    metrics, as ``fine_tuning.RunResult.score``; empty without a TaskEmb or where the embedding does not record
    it). A score at chance (CoLA's Matthews correlation 0, say) means the TaskEmb describes a model that did not
    learn the task."""
    if embeddings is not None:
        embs = list(embeddings)
    else:
        embs = load_libraries(list(libraries) if libraries else [p for p in DEFAULT_LIBRARIES if p.exists()])
    rows: dict[str, dict] = {}
    for e in embs:
        r = rows.setdefault(e.task, {"task": e.task, "class": e.meta.get("task_class"),
                                     "transfers": e.meta["transfers"], "methods": set(),
                                     "library": e.meta["library"], "finetune_score": None})
        r["methods"].add(e.meta.get("method"))
        if (e.meta.get("method") == "TaskEmb" and e.meta.get("regime") == "LIMITED"
                and isinstance(e.meta.get("finetune_score"), (int, float))):
            r["finetune_score"] = round(float(e.meta["finetune_score"]), 4)
    table = pd.DataFrame([{**r, "methods": "+".join(sorted(r["methods"], key=lambda m: m != "TextEmb"))}
                          for r in rows.values()])
    order = {"CR": 0, "QA": 1, "SL": 2}
    return table.sort_values(["transfers", "class", "task"], key=lambda c: c.map(order) if c.name == "class" else c,
                             ascending=[False, True, True]).reset_index(drop=True)


def _cmd_list(args) -> int:
    table = library_table(args.libraries or None)
    print(table.to_string(index=False, na_rep="-", formatters={"finetune_score": "{:.4f}".format}))
    print(f"{len(table)} sources: {int((table['transfers'] == MEASURED).sum())} with measured transfers, "
          f"{int((table['transfers'] == EMBEDDINGS_ONLY).sum())} with embeddings only")
    return 0

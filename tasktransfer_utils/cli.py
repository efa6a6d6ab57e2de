"""The ``tasktransfer`` command line: every subcommand's parser, and the one place errors are reported.

Parsing needs nothing heavier than the standard library and the task registry, so ``--help`` answers at
once; a command's own module (and torch, transformers, datasets, pandas with it) is imported only when the
command runs (``run`` below names it as ``"module:function"``).

Errors: bad input (an unknown task, a file that cannot be read, an option out of range, a config field, ...)
raises ``errors.UserInputError``; :func:`main` prints it as ONE line on stderr,
``tasktransfer COMMAND: error: ...``, and returns 2. Anything else is a bug and keeps its traceback.
``--debug`` (or ``TASKTRANSFER_DEBUG=1``) shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any

from .errors import UserInputError, suggest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEBUG_ENV = "TASKTRANSFER_DEBUG"
RANK_METHODS = ("TextEmb", "TaskEmb", "TextEmb+TaskEmb", "LogME")  # = practitioner.rank.METHODS
RANK_FORMATS = ("csv", "tsv", "jsonl", "conll", "conllu", "squad")  # = practitioner.rank.FORMATS
DEFAULT_MAX_EXAMPLES = 1000  # = practitioner.rank.DEFAULT_MAX_EXAMPLES
REGIMES = ("FULL", "LIMITED")
REBUILD_RTOL = 1e-4  # = study.source_models.REBUILD_RTOL


class _ArgumentError(Exception):
    """An option argparse rejected; :func:`main` prints it as one line and returns 2."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming it (and where to read more), not the usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise _ArgumentError(self.prog, message)


# ----------------------------------------------------------------------------------------- option types
def int_range(lo: int | None = None, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (either bound may be open)."""
    what = ("an integer" + (f" >= {lo}" if lo is not None and hi is None else "")
            + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else ""))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float | None = None, *, lo_open: bool = True, hi_open: bool = False):
    """An argparse type: a finite number in (lo, hi] by default (``lo_open``/``hi_open`` choose the ends)."""
    left, right = "(" if lo_open else "[", ")" if hi_open or hi is None else "]"
    what = f"a number in {left}{lo}, {'inf' if hi is None else hi}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = value == value and abs(value) != float("inf")
        ok = ok and (value > lo if lo_open else value >= lo)
        if hi is not None:
            ok = ok and (value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def duration(text: str) -> float:
    """An argparse type: a positive duration in seconds from ``90m``, ``2h``, ``1h30m``, ``45s`` or ``1.5h``."""
    import re

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*",
                         text.lower())
    seconds = None
    if parts and any(parts.groups()):
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = h * 3600 + m * 60 + sec
    if not seconds:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90m, 2h or 1h30m, got {text!r}")
    return seconds


def task_name(text: str) -> str:
    """An argparse type: a registered task name (case, '-' and '_' ignored), returned as registered."""
    from .data.tasks import get_task

    try:
        return get_task(text).name
    except UserInputError as err:
        raise argparse.ArgumentTypeError(_short_unknown_task(text)) from err


def task_names(text: str) -> list[str]:
    """An argparse type: comma-separated registered task names (an empty string is no task)."""
    return [task_name(part.strip()) for part in text.split(",") if part.strip()]


def _short_unknown_task(name: str) -> str:
    from .data.tasks import list_tasks

    known = [t.name for t in list_tasks()]
    hint = suggest(name, known)
    return (f"unknown task {name!r}{hint}; expected one of the registered tasks "
            f"(`tasktransfer tasks` lists them): {', '.join(known)}")


def device_name(text: str) -> str:
    """An argparse type: a torch device string such as cpu, cuda, cuda:1, mps."""
    if not re.fullmatch(r"(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# ----------------------------------------------------------------------------------------- checks used by commands


# ----------------------------------------------------------------------------------------- parsers
RANK_DESCRIPTION = """\
Rank source tasks for YOUR dataset: which task should you fine-tune on first (intermediate-task
transfer, Vu et al. 2020)? The file is embedded with the same encoder as a library of stored source
task embeddings, and sources are listed from most to least similar (cosine similarity).

Supported files (format taken from the file name, or --format):
  .csv / .tsv   a header row naming a text column (sentence, text, sentence1+sentence2, question+sentence,
                ...) and optionally a label column (label, score, ...)          -> classification/regression
  .jsonl        {"text": ..., "label": ...} | {"question", "context", "answers"} | {"question", "passage",
                "answer": true/false} | {"tokens": [...], "tags": [...]}       -> CR / QA / SL
  .json         SQuAD v1.1/v2.0 layout                                           -> question answering
  .conll/.txt   one token per line, tag in the last column, blank line between sentences -> sequence labeling
  .conllu       CoNLL-U (UPOS tags)                                              -> sequence labeling
"""

RANK_EPILOG = """\
examples:
  tasktransfer rank my_reviews.csv
  tasktransfer rank data/glue/RTE/dev.tsv --top 5
  tasktransfer rank ner_dev.conll --candidates in-class
  tasktransfer rank reviews.tsv --text-columns 1 --label-column 0 --no-header
  tasktransfer rank qa.json --method TaskEmb --work-dir runs/my_target   (fine-tunes first: slower)
  tasktransfer rank my_reviews.csv --method LogME --models configs/offline_study.yaml
                (the study's fine-tuned source models must be on disk: run the study first)

TextEmb needs no labels and no training: a CPU embeds 1,000 examples in about a minute.
Progress goes to stderr, the ranking to stdout. A bad file or option is one line on stderr, exit status 2
(--debug or TASKTRANSFER_DEBUG=1 shows the traceback).
"""

DEMO_DESCRIPTION = """\
The main job on the offline defaults, from the committed study (what `make demo` runs); no model is retrained:

1. recompute the TextEmb of one study task per class from the pretrained encoder and compare it with the
   stored vector;
2. rank the candidate sources of every target with every method and evaluate the rankings against the
   measured transfer results (as `tasktransfer study report`);
3. rank the stored sources for a raw data file (default: the RTE dev TSV of the local data directory), as
   `tasktransfer rank` does;
4. regenerate the figures under figures/ by running notebooks 01-07 headless.
"""


def _add_rank_parser(subparsers) -> None:
    from .paths import RESULTS_DIR

    p = subparsers.add_parser(
        "rank", help="rank source tasks for your own dataset file (which task to fine-tune on first)",
        description=RANK_DESCRIPTION, epilog=RANK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="your target dataset file (see supported files above)")
    p.add_argument("--library", action="append", default=None,
                   help="a folder (or .safetensors file) of source task embeddings, e.g. one made with `tasktransfer "
                        "library add`; repeatable; ranked together with the default libraries "
                        f"({RESULTS_DIR.name}/offline_study/embeddings and {RESULTS_DIR.name}/source_library)")
    p.add_argument("--no-default-library", action="store_true",
                   help="rank only against the --library folders, not the default libraries")
    p.add_argument("--method", choices=RANK_METHODS, default="TextEmb",
                   help="TextEmb (default; fast, no labels needed), TaskEmb (fine-tunes on your data first), "
                        "both fused, or LogME (needs --models)")
    p.add_argument("--models", default=None,
                   help="LogME: a study config whose fine-tuned source models are on disk (e.g. "
                        "configs/offline_study.yaml after `tasktransfer study run`)")
    p.add_argument("--candidates", choices=("all-class", "in-class"), default="all-class",
                   help="rank every source (default) or only sources of your task's class")
    p.add_argument("--top", type=int_range(1), default=None, metavar="N", help="show only the N best sources")
    p.add_argument("--exclude", type=task_names, default=[], metavar="TASK[,TASK...]",
                   help="comma-separated source tasks to leave out (registered task names)")
    p.add_argument("--format", dest="file_format", choices=RANK_FORMATS, default=None,
                   help="file format when the file name does not tell it")
    p.add_argument("--name", default=None, help="a name for your task (default: from the file name)")
    p.add_argument("--text-columns", default=None,
                   help="CSV/TSV/JSONL: text column(s), NAME or NAME1,NAME2 (0-based numbers also accepted)")
    p.add_argument("--label-column", default=None, help="CSV/TSV/JSONL: the label column (name or number)")
    p.add_argument("--no-header", action="store_true", help="CSV/TSV: the file has no header row")
    p.add_argument("--regression", action="store_true", help="treat numeric labels as a regression target")
    p.add_argument("--tag-column", type=int_range(0), default=None, metavar="N",
                   help="CoNLL: 0-based column of the tag (default: the last; CoNLL-U: UPOS)")
    p.add_argument("--encoder", default=None,
                   help="path or hub id of the library's encoder, if its stored path is not available here")
    p.add_argument("--source-regime", default=None, choices=REGIMES,
                   help="which stored source embeddings to use, FULL or LIMITED (default: all the library has)")
    p.add_argument("--max-examples", type=int_range(1), default=DEFAULT_MAX_EXAMPLES, metavar="N",
                   help="embed at most N examples of your file, a seeded sample (default: %(default)s)")
    p.add_argument("--work-dir", default=None, help="TaskEmb: where the fine-tuning run is written")
    p.add_argument("--epochs", type=float_range(0, 1000), default=None,
                   help="TaskEmb: fine-tuning epochs, > 0 (default: class preset)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0,
                   help="seed for sampling and fine-tuning (default: 0)")
    p.add_argument("--device", type=device_name, default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--output", default=None, help="also write the ranking to this .csv or .json file")
    p.add_argument("--verbose", action="store_true", help="show library progress bars and warnings")
    p.set_defaults(run="tasktransfer_utils.practitioner.commands:run_rank")


def _add_tasks_parser(subparsers) -> None:
    from .data.tasks import SUITES, TaskClass

    p = subparsers.add_parser("tasks", help="list the registered tasks, suites and (with --sizes) split sizes",
                              description="List the registered tasks (the paper's 33 and the offline extras), "
                                          "optionally one suite or class, with the real split sizes (--sizes).")
    p.add_argument("--suite", choices=sorted(SUITES), help="only the tasks of this suite")
    p.add_argument("--class", dest="task_class", choices=[c.value for c in TaskClass], help="only this class")
    p.add_argument("--sizes", action="store_true", help="load local tasks and print their split sizes")
    p.add_argument("--data-dir", default=None, help="local data directory (default: $TASKTRANSFER_DATA_DIR)")
    p.set_defaults(run="tasktransfer_utils.data.commands:_run_tasks_command")


def _add_task_run_arguments(p, default_regime: str) -> None:
    """The options `finetune` and `baselines` share: encoder, regime, seed, where the data comes from."""
    p.add_argument("--encoder", default=None, help="hub id or folder (default: the offline MiniLM)")
    p.add_argument("--regime", default=default_regime, choices=REGIMES)
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("--data-dir", default=None, help="local data directory (default $TASKTRANSFER_DATA_DIR)")
    p.add_argument("--source", default="local", choices=["local", "hub"],
                   help="local files (default) or the Hugging Face hub (needs internet)")
    p.add_argument("--max-eval-examples", type=int_range(1), default=None, metavar="N",
                   help="evaluate on at most N dev examples (default: the class preset)")
    p.add_argument("--threads", type=int_range(1, 1024), default=None, help="torch CPU threads")


def _add_finetune_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune an encoder on one task, optionally starting from a source run's encoder",
        description="Fine-tune on one task with the class preset (overridable) and write a run directory "
                    "(config.json, model/, result.json). A finished run directory is loaded, not redone; an "
                    "interrupted one resumes from its newest checkpoint with the same result. "
                    "Progress (epochs, steps, dev scores) goes to stderr, the result JSON to stdout.",
    )
    p.add_argument("task", type=task_name, help="task name, e.g. SST-2, POS-PTB, SQuAD-1 (see `tasktransfer tasks`)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--init-from", default=None, help="source run directory: intermediate-task transfer")
    _add_task_run_arguments(p, default_regime="FULL")
    p.add_argument("--epochs", type=float_range(0, 1000), default=None, help="epochs, > 0 (default: the class preset)")
    p.add_argument("--lr", type=float_range(0, 1), default=None, help="learning rate in (0, 1] (default: the class preset)")
    p.add_argument("--batch-size", type=int_range(1, 65536), default=None)
    p.add_argument("--checkpoint-every", type=float_range(0, None, lo_open=False), default=None, metavar="SECONDS",
                   help="seconds between two resumable checkpoints, 0: none (default: "
                        "$TASKTRANSFER_CHECKPOINT_EVERY_S, else 600)")
    p.set_defaults(run="tasktransfer_utils.training.fine_tuning:_cmd_finetune")


def _add_baselines_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "baselines", help="a task's floor scores: majority class / constant prediction, and no training",
        description="Dev-split scores of the majority-class (regression: mean; SL: most frequent tag; QA: empty "
                    "answer) prediction learnt from the regime's training rows, and of the pretrained encoder "
                    "with a fresh seeded head and no training.")
    p.add_argument("task", type=task_name, help="task name (see `tasktransfer tasks`)")
    _add_task_run_arguments(p, default_regime="LIMITED")
    p.add_argument("--max-seq-length", type=int_range(8, 8192), default=None, metavar="N",
                   help="tokens per sequence, 8..8192 and at most the encoder's (default: the class preset)")
    p.set_defaults(run="tasktransfer_utils.training.fine_tuning:_cmd_baselines")


def _add_study_parser(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a transfer study from a config file (resumable)",
                              description="Transfer studies: fine-tunes, transfers and task embeddings from a "
                                          "YAML config. Every job writes one record; run again to resume.")
    sub = p.add_subparsers(dest="study_command", metavar="ACTION")
    run = sub.add_parser("run", help="run (or resume) the study's jobs",
                         description="Run (or resume) the study's jobs; finished jobs are not redone.")
    run.add_argument("config", help="study YAML, e.g. configs/offline_study.yaml")
    run.add_argument("--engine", choices=("local", "slurm", "submitit-local"), default=None,
                     help="override the config's engine.kind")
    run.add_argument("--workers", type=int_range(1, 1024), default=None, help="local worker processes (engine local)")
    run.add_argument("--max-jobs", type=int_range(1), default=None, help="stop after this many jobs (per worker)")
    run.add_argument("--time-limit", type=duration, default=None, metavar="DURATION",
                     help="start only jobs expected to end within this time from now (e.g. 2h, 90m; by the longest "
                          "measured job of their kind and class), then stop; running jobs are never cut (engine "
                          "local)")
    run.add_argument("--retry-failed", action="store_true", help="forget earlier failures and try them again")
    run.add_argument("--only", action="append", default=[], metavar="GLOB",
                     help="run only the jobs whose id matches this shell pattern (and their dependencies); "
                          "repeatable, e.g. --only 'textemb__*'")
    run.add_argument("--target", action="append", type=task_name, default=[], metavar="TASK",
                     help="run only what evaluating this target needs: its fine-tune, the transfers and "
                          "LogME jobs into it (and their source fine-tunes); repeatable")
    run.add_argument("--source", action="append", type=task_name, default=[], metavar="TASK",
                     help="run only this source's row: the transfers and LogME jobs out of it, its fine-tunes and "
                          "embeddings (rebuild-models puts a recorded fine-tune's weights back first); repeatable")
    run.add_argument("--dry-run", action="store_true", help="list the jobs in order and exit")
    run.set_defaults(run="tasktransfer_utils.study.commands:_cmd_run")
    st = sub.add_parser("status", help="done / running / failed / left jobs and the estimated time left",
                        description="Done / running / failed / left jobs of a study and the estimated time left.")
    st.add_argument("config", help="study YAML")
    st.add_argument("--workers", type=int_range(1, 1024), default=None,
                    help="workers assumed for the ETA (default: the jobs running now, at least 1)")
    st.add_argument("--pairs", action="store_true",
                    help="also a source x target grid per transfer regime: which pairs have their transfer and "
                         "LogME done, which source rows are whole")
    st.set_defaults(run="tasktransfer_utils.study.commands:_cmd_status")
    rp = sub.add_parser("report", help="results tables and the source-selection evaluation of finished targets",
                        description="Results tables, the source-selection evaluation of the finished targets, "
                                    "and the figures.")
    rp.add_argument("config", help="study YAML")
    rp.add_argument("--no-figures", action="store_true", help="skip the figures")
    rp.set_defaults(run="tasktransfer_utils.study.commands:_cmd_report")
    rb = sub.add_parser("rebuild-models", help="fine-tune the recorded source models again (their weights are not "
                                               "committed) and check each against its record",
                        description="Fine-tune the recorded fine-tunes whose weights are missing again (same data, "
                                    "seeds and settings) into the study's runs_dir, without writing records, and check "
                                    "every run against its record.")
    rb.add_argument("config", help="study YAML")
    rb.add_argument("--task", action="append", type=task_name, default=[], metavar="TASK",
                    help="only this task's fine-tunes; repeatable")
    rb.add_argument("--regime", default=None, choices=REGIMES, help="only the fine-tunes of this data regime")
    rb.add_argument("--seed", type=int_range(0), action="append", default=[], help="only this seed; repeatable")
    rb.add_argument("--rtol", type=float_range(0, 1, lo_open=False), default=REBUILD_RTOL,
                    help=f"relative difference from the record accepted in every number (default {REBUILD_RTOL:g}: "
                         "float32 rounding; dev metrics may also differ by one dev example's share); 0: exactly "
                         "equal")
    rb.set_defaults(run="tasktransfer_utils.study.commands:_cmd_rebuild_models")
    cc = sub.add_parser("check-cap", help="measure whether capping the FULL sources' embedding passes "
                                          "(embeddings.full_max_examples) changes the rankings",
                        description="For every FULL source over embeddings.full_max_examples training rows: its "
                                    "embedding over every row (stored in <results_dir>/cap_check), the cosine with "
                                    "the capped one, and each target's ranking with either "
                                    "(evaluation/embedding_cap_check.csv).")
    cc.add_argument("config", help="study YAML")
    cc.add_argument("--method", action="append", choices=("TextEmb", "TaskEmb"), default=[],
                    help="only this embedding method (default both; TaskEmb needs the FULL models on disk); "
                         "repeatable")
    cc.set_defaults(run="tasktransfer_utils.study.commands:_cmd_check_cap")
    p.set_defaults(run=None, help_parser=p)


def _add_demo_parser(subparsers) -> None:
    from .paths import CONFIGS_DIR

    p = subparsers.add_parser("demo", help="the main job on the offline defaults (what `make demo` runs)",
                              description=DEMO_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS_DIR / "offline_study.yaml"),
                   help="study config (default: %(default)s)")
    p.add_argument("--file", default=None, help="a data file to rank sources for (default: the local RTE dev TSV)")
    p.add_argument("--data-dir", default=None, help="local data directory (default: $TASKTRANSFER_DATA_DIR)")
    p.add_argument("--no-figures", action="store_true", help="skip regenerating the notebook figures")
    p.add_argument("--check-tasks", type=task_names, default=None, metavar="TASK[,TASK...]",
                   help="comma-separated tasks whose stored TextEmb is recomputed (default: first task per class)")
    p.set_defaults(run="tasktransfer_utils.demo:run_demo_command")


LIBRARY_DESCRIPTION = """Source libraries for `tasktransfer rank`: which stored task embeddings a file is ranked against, and how to
add your own candidate sources (a file `rank` reads, or a hub dataset), embedded like the study's."""

LIBRARY_EPILOG = """\
examples:
  tasktransfer library list                          the default libraries: which sources, which have transfers
  tasktransfer library build                         (re)build results/source_library (resumable)
  tasktransfer library build --taskemb               ... with each source's TaskEmb too (fine-tunes: slower)
  tasktransfer library add my_lib tickets.csv --name Tickets
  tasktransfer library add my_lib ner_internal.conll --name InternalNER --taskemb   (fine-tunes first: slower)
  tasktransfer library add my_lib --hub imdb --name IMDB --split train              (needs internet)
  tasktransfer rank my_data.csv --library my_lib                   my_lib with the default libraries
  tasktransfer rank my_data.csv --library my_lib --no-default-library
"""


def _add_library_parser(subparsers) -> None:
    from .paths import CONFIGS_DIR, RESULTS_DIR

    study_library, default_config = "results/offline_study/embeddings", "configs/offline_study.yaml"
    extended = RESULTS_DIR / "source_library"

    p = subparsers.add_parser("library", help="source libraries for `rank`: build the extended one, add your own "
                              "sources", description=LIBRARY_DESCRIPTION, epilog=LIBRARY_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="library_command", metavar="SUBCOMMAND", required=True)

    b = sub.add_parser("build", help="store the LIMITED TextEmb (and with --taskemb the TaskEmb) of every task of "
                       "the offline suites not in the study's library (resumable)")
    b.add_argument("--out", default=str(extended), help="library folder (default: %(default)s)")
    b.add_argument("--suite", action="append", default=None,
                   help=f"suite(s) to embed, repeatable (default: offline offline-extra)")
    b.add_argument("--tasks", default=None, help="comma-separated tasks instead of suites")
    b.add_argument("--skip-library", action="append", default=None,
                   help=f"tasks this library already holds are skipped (default: {study_library})")
    b.add_argument("--config", default=None, help=f"study config whose settings are used (default: "
                   f"{default_config})")
    b.add_argument("--encoder", default=None, help="encoder path or hub id (default: the config's)")
    b.add_argument("--max-examples", type=int_range(1), default=None, metavar="N", help="embed at most N of the 1,000 rows (tests)")
    b.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    b.add_argument("--taskemb", action="store_true",
                   help="also each task's LIMITED TaskEmb, as the study computes its sources' (fine-tunes each task "
                        "first: minutes per task on a CPU; resumable)")
    b.add_argument("--work-dir", default=None, help="folder of those fine-tunes (default: runs/source_library)")
    b.set_defaults(run="tasktransfer_utils.practitioner.library:_run_library")

    a = sub.add_parser("add", help="add your own candidate source (a file or a hub dataset) to a library folder")
    a.add_argument("library", help="library folder (created when missing)")
    a.add_argument("file", nargs="?", default=None, help="the source's dataset file (formats as for `rank`)")
    a.add_argument("--hub", default=None, metavar="DATASET_ID", help="a hub dataset instead of a file (internet)")
    a.add_argument("--hub-config", default=None, help="the hub dataset's config (subset)")
    a.add_argument("--split", default="train", help="the hub split (default: %(default)s)")
    a.add_argument("--name", default=None, help="the source's name in rankings (default: from the file name)")
    a.add_argument("--format", dest="file_format", choices=RANK_FORMATS, default=None)
    a.add_argument("--text-columns", default=None, help="text column(s), NAME or NAME1,NAME2 (as for `rank`)")
    a.add_argument("--label-column", default=None)
    a.add_argument("--no-header", action="store_true")
    a.add_argument("--regression", action="store_true")
    a.add_argument("--tag-column", type=int_range(0), default=None, metavar="N")
    a.add_argument("--taskemb", action="store_true",
                   help="also fine-tune a LIMITED model on the source and store its TaskEmb (slower)")
    a.add_argument("--config", default=None, help=f"study config whose settings are used (default: "
                   f"{default_config})")
    a.add_argument("--encoder", default=None, help="encoder path or hub id (default: the config's, the offline "
                   "MiniLM: comparable with the default libraries)")
    a.add_argument("--max-examples", type=int_range(1), default=None, metavar="N", help="embed at most N rows (default: 1,000)")
    a.add_argument("--epochs", type=float_range(0, 1000), default=None, help="--taskemb: fine-tuning epochs (default: preset)")
    a.add_argument("--work-dir", default=None, help="--taskemb: where the fine-tuning run is written")
    a.add_argument("--replace", action="store_true", help="replace a source of the same name")
    a.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    a.add_argument("--device", type=device_name, default=None)
    a.set_defaults(run="tasktransfer_utils.practitioner.library:_run_library")

    ls = sub.add_parser("list", help="the sources of libraries and whether their transfers were measured")
    ls.add_argument("libraries", nargs="*", help="library folders (default: the default libraries)")
    ls.set_defaults(run="tasktransfer_utils.practitioner.library:_run_library")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered (imports no command module)."""
    parser = _Parser(
        prog="tasktransfer",
        description="Explore and predict transferability across NLP tasks (Vu et al., EMNLP 2020): "
                    "fine-tune, compute task embeddings, and choose a source task for your data.",
        epilog="A bad input or option is reported as one line on stderr with exit status 2; --debug (or "
               f"{DEBUG_ENV}=1) shows the traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors in your input too")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_rank_parser(subparsers)
    _add_library_parser(subparsers)
    _add_tasks_parser(subparsers)
    _add_study_parser(subparsers)
    _add_demo_parser(subparsers)
    _add_finetune_parser(subparsers)
    _add_baselines_parser(subparsers)
    return parser


def _command_function(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tasktransfer`` console script; returns the exit status (2: bad input or option,
    reported as one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv[:1]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as err:
        print(f"{err.prog}: error: {_one_line(err)} (see {err.prog} --help)", file=sys.stderr)
        return 2
    debug = debug or args.debug
    if not getattr(args, "run", None):
        (getattr(args, "help_parser", None) or parser).print_help()
        return 2
    prog = " ".join(("tasktransfer", args.command, *([args.study_command] if args.command == "study" else [])))
    try:
        return int(_command_function(args.run)(args) or 0)
    except UserInputError as err:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())

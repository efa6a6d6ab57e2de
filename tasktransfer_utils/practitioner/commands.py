"""``tasktransfer rank``: rank the stored source tasks for a user's data file (its parser is in
:mod:`tasktransfer_utils.cli`); progress on stderr, the ranking on stdout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasktransfer_utils.errors import MissingFileError, UsageError, UserInputError
from tasktransfer_utils.practitioner.rank import (_as_embeddings, _one_per_task, _quiet_libraries, _regime_filter,
                                                  _resolve_encoder, format_ranking, rank_sources, read_target_file)

def _task_class_or_none(name: str) -> str | None:
    from tasktransfer_utils.data.tasks import get_task

    try:
        return get_task(name).task_class.value
    except UserInputError:  # a source the registry does not know
        return None


def _sources_for_command(args: Any, task_data: Any, encoder: str | None) -> tuple[Any, Any]:
    """``rank``'s sources, checked before any progress line: the library's embeddings (TextEmb/TaskEmb) or the
    study's fine-tuned source models (LogME), the encoder against the library's, and at least one candidate
    left after ``--candidates`` and ``--exclude``. Returns (library, source models)."""
    library, models = args.library, args.models
    tclass = task_data.spec.task_class.value
    if args.method != "LogME":
        from tasktransfer_utils.practitioner.library import rank_libraries

        library = _regime_filter(_as_embeddings(rank_libraries(args.library, no_default=args.no_default_library)),
                                 args.source_regime or None)
        method = "TaskEmb" if args.method == "TaskEmb" else "TextEmb"
        stored = _one_per_task([e for e in library if e.meta.get("method") == method])
        if encoder is not None:  # an --encoder that is not the library's
            _resolve_encoder(encoder, stored)
        classes = {e.meta.get("task"): e.meta.get("task_class") for e in stored}
    else:
        from tasktransfer_utils.study.config import load_study_config
        from tasktransfer_utils.study.source_models import source_model_dirs

        try:
            models = source_model_dirs(load_study_config(args.models), regime=args.source_regime or None)
        except FileNotFoundError as err:  # no fine-tuned source model on disk
            if isinstance(err, UserInputError):
                raise
            raise MissingFileError(f"--models: {err}") from None
        classes = {s: _task_class_or_none(s) for s in models}
    candidates = {s for s, c in classes.items() if args.candidates == "all-class" or c == tclass}
    if not candidates - set(args.exclude) - {task_data.spec.name}:
        raise UsageError(f"no candidate sources left for {task_data.spec.name} ({args.candidates}: "
                         f"{', '.join(sorted(candidates)) or 'none'}; --exclude {', '.join(args.exclude) or 'nothing'}); "
                         "expected at least one source to rank")
    return library, models


def run_rank(args: Any) -> int:
    """``tasktransfer rank`` with parsed arguments (the parser is in ``cli``): progress on stderr, the ranking
    on stdout. What keeps the file, the library or an option from being used raises a ``UserInputError``
    before the first progress line (``cli`` reports it as one line)."""
    from tasktransfer_utils.paths import check_encoder
    from tasktransfer_utils.errors import progress

    encoder = check_encoder(args.encoder)
    if args.method == "LogME" and args.models is None:
        raise UsageError("--method LogME needs --models, a study config whose fine-tuned source models are on disk "
                         "(e.g. configs/offline_study.yaml after `tasktransfer study run`)")
    for given in (args.library or []) if args.method != "LogME" else []:
        for part in [p for p in str(given).split(os.pathsep) if p]:
            if not Path(part).exists():
                raise MissingFileError(f"--library {part}: no such folder or file; expected a folder (or .safetensors "
                                       "file) of stored source task embeddings, e.g. one made with `tasktransfer "
                                       "library add`")
    text_columns = [c.strip() for c in args.text_columns.split(",")] if args.text_columns else None
    if text_columns is not None and (not 1 <= len(text_columns) <= 2 or "" in text_columns):
        raise UsageError(f"--text-columns {args.text_columns!r}: expected one column or two (a sentence pair), "
                         "by name or 0-based number, e.g. --text-columns sentence1,sentence2")
    task_data = read_target_file(args.file, file_format=args.file_format, name=args.name, text_columns=text_columns,
                                 label_column=args.label_column, regression=True if args.regression else None,
                                 header=False if args.no_header else None, tag_column=args.tag_column, seed=args.seed)
    if args.method != "TextEmb" and not task_data.provenance.get("labelled", True):
        raise UsageError(f"{args.file}: --method {args.method} needs labels, but the file has none; expected a label "
                         "column (or tag column), or --method TextEmb")
    library, models = _sources_for_command(args, task_data, encoder)
    progress(f"read {args.file}: {len(task_data.splits['train'])} examples, a {task_data.spec.task_class.value} task "
             f"({task_data.provenance.get('format')}); ranking with {args.method}")
    if not args.verbose:
        progress("loading torch and transformers")
        _quiet_libraries()
    ranked = rank_sources(task_data, library, method=args.method, encoder=encoder,
                          candidate_set=args.candidates, exclude=args.exclude,
                          source_regime=args.source_regime or None, max_examples=args.max_examples, seed=args.seed,
                          work_dir=args.work_dir, finetune_epochs=args.epochs, device=args.device,
                          source_models=models, progress=progress)
    if args.method != "LogME":
        from tasktransfer_utils.practitioner.library import annotate_ranking

        ranked = annotate_ranking(ranked, library)
        print(format_ranking(ranked, args.top) + "\n" + ranked.attrs["sources_note"], flush=True)
    else:
        print(format_ranking(ranked, args.top), flush=True)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(ranked.to_json(orient="records", indent=1))
        else:
            ranked.to_csv(out, index=False)
        progress(f"wrote {out}")
    return 0


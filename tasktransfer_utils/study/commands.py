"""``tasktransfer study run|status|report|rebuild-models|check-cap CONFIG``: the command bodies (the parsers are in
:mod:`tasktransfer_utils.cli`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import MissingFileError, UsageError, UserInputError
from .config import load_study_config, StudyConfigError
from .plan import plan_for, plan_ref, select_study_jobs
from .report import report
from .runner import progress, quiet_library_output
from .source_models import rebuild_models, saved_checkpoints
from .tables import write_tables


# --------------------------------------------------------------------------------------------------
# Command line: tasktransfer study run|status|report|rebuild-models CONFIG (the parsers are in cli.py)
# --------------------------------------------------------------------------------------------------


def _stamp(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


def _cmd_run(args) -> int:
    """``tasktransfer study run`` (the parser is in ``cli``; its errors are reported there)."""
    from .engines import make_engine

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_library_output()  # one log line per job start and finish, no per-batch bars or loading reports
    cfg = load_study_config(args.config)
    plan = plan_ref(cfg).load()
    try:
        selected = select_study_jobs(cfg, plan, only=args.only, targets=args.target, sources=args.source)
    except UserInputError:
        raise
    except ValueError as err:  # a --only pattern that matches no job (runner.select_jobs)
        raise StudyConfigError(f"--only: {err}") from None
    jobs = plan.jobs if selected is None else [plan.by_id[i] for i in selected]
    if args.dry_run:
        done = plan.store.done_ids()
        for j in jobs:
            print(f"{j.id}  deps={','.join(j.deps) or '-'}" + ("  [done]" if j.id in done else ""))
        print(f"{len(jobs)} jobs" + ("" if selected is None else f" selected of {len(plan.jobs)}"))
        from .cost import estimate_study_cost, format_study_cost

        print(format_study_cost(estimate_study_cost(cfg, jobs)))
        return 0
    engine = make_engine(cfg.engine, default_folder=cfg.runs_dir / "submitit", workers=args.workers,
                         kind=args.engine)
    deadline = None
    if args.time_limit is not None:
        from .engines import LocalEngine

        if not isinstance(engine, LocalEngine):
            raise UsageError(f"--time-limit works with the local engine, not {type(engine).__name__}; on a cluster "
                             "give the jobs' time through engine.resources (timeout_min)")
        deadline = time.time() + args.time_limit
    what = f"{len(plan.jobs)} jobs" if selected is None else f"{len(selected)} of {len(plan.jobs)} jobs selected"
    _stamp(f"study {cfg.name}: {what}; records in {plan.records_dir}; engine {type(engine).__name__}")
    run_kwargs = {} if deadline is None else {"deadline": deadline}
    summary = engine.run(plan, retry_failed=args.retry_failed, max_jobs=args.max_jobs, job_ids=selected,
                         log=_stamp, **run_kwargs)
    write_tables(plan)
    p = progress(plan)
    _stamp(f"ran {len(summary.ran)} job(s), {len(summary.failed)} failed attempt(s); {p.line()}")
    return 0 if p.failed == 0 else 1


def _cmd_status(args) -> int:
    cfg = load_study_config(args.config)
    plan = plan_for(cfg)
    print(f"study {cfg.name} ({cfg.config_path})")
    workers = args.workers or max(1, progress(plan).running)
    now = progress(plan, workers=workers)
    print(now.table())
    for c in saved_checkpoints(cfg):
        print(f"  checkpoint {c['job']}: step {c['step']} of {c['steps']}, saved {c['saved_utc']} UTC "
              "(the job resumes there)")
    if args.workers is None:
        print(f"(ETA assumes {workers} worker(s), as many as jobs running now)")
    if args.pairs:
        from .plan import format_pair_grid, pair_grid

        print()
        print(format_pair_grid(pair_grid(plan, now)))
    return 0


def _cmd_rebuild_models(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = load_study_config(args.config)
    quiet_library_output()  # one line per model, no per-batch bars or loading reports
    try:
        status = rebuild_models(cfg, tasks=args.task, regime=args.regime, seeds=args.seed, rtol=args.rtol,
                                log=_stamp)
    except FileNotFoundError as e:  # nothing recorded to rebuild, a data file missing: one line (cli.main)
        if isinstance(e, UserInputError):
            raise
        raise MissingFileError(str(e)) from None
    n = sum(v == "rebuilt" for v in status.values())
    _stamp(f"{n} model(s) rebuilt, {len(status) - n} already on disk; all {len(status)} equal to their records")
    return 0


def _cmd_check_cap(args) -> int:
    from .cap_check import METHODS, check_embedding_cap

    logging.basicConfig(level=logging.WARNING)
    cfg = load_study_config(args.config)
    quiet_library_output()
    paths = check_embedding_cap(cfg, methods=args.method or METHODS, log=_stamp)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_report(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = load_study_config(args.config)
    paths = report(cfg, figures=not args.no_figures)
    for name, path in paths.items():
        print(f"{name}: {path}")
    summary = paths.get("selection_tables")
    if summary:
        print(Path(summary).read_text())
    return 0

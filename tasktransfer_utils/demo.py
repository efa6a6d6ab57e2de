"""``make demo`` / ``tasktransfer demo``: the main job on the offline defaults, from the committed study.

Steps (each prints what it did; none retrains a model):

1. **Reproduce stored embeddings.** Recompute the TextEmb of one study task per class (the config's first
   CR, SL and QA task) from the pretrained encoder and compare each with the vector the study stored
   (cosine similarity, largest absolute difference).
2. **Rank sources for every target** of the offline study with every method the study's embeddings and
   records allow (TextEmb, TaskEmb per component and fused, TextEmb+TaskEmb, DataSize, CurveGrad, LogME,
   Random) and **evaluate** the rankings against the measured transfer results (``study report``: rho,
   NDCG, regret@k, Spearman/Kendall per class, in-class and all-class) on the targets the study has
   finished.
3. **Choose a source for a user's file**: rank the stored sources for a raw data file (default: the RTE
   dev TSV of the local data directory), as ``tasktransfer rank`` does.
4. **Regenerate the figures** under ``figures/`` by running notebooks 01-07 headless with their default
   parameters (notebook 08's job), and write each run back as the committed ``notebooks/NN_name.ipynb``
   (same cells as the paired ``NN_name.py``, outputs without machine paths or timings).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .paths import CONFIGS_DIR, FIGURES_DIR, REPO_ROOT, resolve_data_dir

DEFAULT_CONFIG = CONFIGS_DIR / "offline_study.yaml"
DEFAULT_USER_FILE = Path("glue") / "RTE" / "dev.tsv"


def check_stored_textemb(cfg: Any, task: str, *, jobs: dict | None = None,
                         log: Callable[[str], None] = print) -> dict:
    """Recompute ``task``'s TextEmb exactly as the study's ``textemb`` job did (same rows, regime sample,
    seed and settings) and compare it with the stored vector. Returns cosine similarity and max |difference|
    (float64). ``jobs``: the study's jobs by id (built from ``cfg`` when not given)."""
    from .embeddings.store import EmbeddingLibrary
    from .study.jobs import build_jobs, textemb_id
    from .study.job_functions import textemb_for_job

    library = EmbeddingLibrary(cfg.results_dir / "embeddings")
    regime = cfg.transfer_regimes()[0].source.value
    seed = cfg.seeds[0]
    jobs = jobs if jobs is not None else {j.id: j for j in build_jobs(cfg)}
    job = jobs.get(textemb_id(task, regime, seed))
    stored = [e for e in library.load(method="TextEmb", task=task) if e.meta.get("regime") == regime
              and e.meta.get("seed") == seed]
    if job is None or not stored:
        log(f"  no stored TextEmb of {task} ({regime}, seed {seed}) in {library.root}: nothing to compare")
        return {}
    start = time.perf_counter()
    fresh = textemb_for_job(job.params, cfg)
    a = np.asarray(stored[0].vector, dtype=np.float64)
    b = np.asarray(fresh.vector, dtype=np.float64)
    out = {"task": task, "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
           "max_abs_diff": float(np.max(np.abs(a - b))), "seconds": time.perf_counter() - start,
           "num_examples": fresh.meta.get("num_examples")}
    log(f"  {task}: TextEmb of {out['num_examples']} examples recomputed in {out['seconds']:.0f} s; "
        f"cosine with the stored vector {out['cosine']:.6f}, max |diff| {out['max_abs_diff']:.2e}")
    return out


def rank_user_file(cfg: Any, path: Path, *, log: Callable[[str], None] = print, top: int = 5):
    """Rank the study's stored sources for a raw data file with TextEmb (no labels needed)."""
    from .practitioner.rank import format_ranking, read_target_file, rank_sources

    target = read_target_file(path)
    library = cfg.results_dir / "embeddings"
    ranking = rank_sources(target, library, method="TextEmb", encoder=cfg.encoder_path(), source_regime=None)
    log(format_ranking(ranking, top=top))
    return ranking


def write_back_notebooks(*, log: Callable[[str], None] = print) -> list[Path]:
    """Run notebooks 01-07 with their default parameters, one after the other, and write each run back as
    the committed ``notebooks/NN_name.ipynb`` (``notebook_runner.execute_and_write_back``). Notebook 08 is
    left out: it runs the others. Returns the notebooks written."""
    from .notebook_runner import execute_and_write_back, list_notebooks

    written = []
    for nb in list_notebooks():
        if nb.stem.startswith("08"):
            continue
        t = time.perf_counter()
        written.append(execute_and_write_back(nb))
        log(f"  {written[-1].relative_to(REPO_ROOT)}: {time.perf_counter() - t:.0f} s")
    return written


def run_demo(config: str | Path = DEFAULT_CONFIG, *, user_file: str | Path | None = None, figures: bool = True,
             data_dir: str | Path | None = None, check_tasks: list[str] | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo's four steps on a study config (default: the committed offline study).
    ``check_tasks``: tasks whose stored TextEmb is recomputed (default: the first task of each class)."""
    from .study.runner import progress
    from .study.config import load_study_config
    from .study.plan import plan_for
    from .study.report import report

    start = time.perf_counter()
    cfg = load_study_config(config)
    plan = plan_for(cfg)
    log(f"Study {cfg.name}: {progress(plan).line()}")
    out: dict[str, Any] = {}

    log("\n[1/4] Reproduce stored task embeddings")
    if check_tasks is None:
        firsts: dict[str, str] = {}
        for task in cfg.tasks:
            firsts.setdefault(cfg.task_class(task), task)
        check_tasks = list(firsts.values())
    jobs = {j.id: j for j in plan.jobs}
    out["textemb_check"] = [check_stored_textemb(cfg, task, jobs=jobs, log=log) for task in check_tasks]

    log("\n[2/4] Rank sources for every target and evaluate against the measured transfers")
    paths = report(cfg, figures=True, log=lambda m: log("  " + m))
    out["report"] = {k: str(v) for k, v in paths.items()}
    tables = paths.get("selection_tables")
    if tables:
        log(Path(tables).read_text())

    log("[3/4] Choose a source for a user's file")
    user_file = Path(user_file) if user_file else resolve_data_dir(data_dir) / DEFAULT_USER_FILE
    if (cfg.results_dir / "embeddings").is_dir():
        out["user_ranking"] = rank_user_file(cfg, user_file, log=log)
    else:
        log("  the study has stored no source embeddings yet: run `tasktransfer study run "
            f"{config}` first")

    if figures:
        log(f"\n[4/4] Regenerate the figures in {FIGURES_DIR.relative_to(REPO_ROOT)}/ (notebooks 01-07, "
            "written back with their outputs)")
        out["notebooks"] = write_back_notebooks(log=log)
    log(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")
    return out


def run_demo_command(args) -> int:
    """``tasktransfer demo`` (the parser is in ``cli``). The config, ``--check-tasks`` and the user file are
    checked before the first step, so that a typo is not found minutes in."""
    from .errors import MissingFileError, UsageError
    from .study.config import load_study_config

    cfg = load_study_config(args.config)
    stray = [t for t in (args.check_tasks or []) if t not in cfg.tasks]
    if stray:
        raise UsageError(f"--check-tasks {', '.join(stray)}: not a task of study {cfg.name} ({args.config}); expected "
                         f"some of {', '.join(cfg.tasks)}")
    user_file = Path(args.file) if args.file else resolve_data_dir(args.data_dir) / DEFAULT_USER_FILE
    if not user_file.is_file():
        raise MissingFileError(f"{'--file' if args.file else '--data-dir'}: no such file {user_file}; expected a "
                               "data file to rank sources for (see `tasktransfer rank --help`)")
    run_demo(args.config, user_file=user_file, figures=not args.no_figures, check_tasks=args.check_tasks or None,
             data_dir=args.data_dir)
    return 0

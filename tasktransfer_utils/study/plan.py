"""A study as a runner plan: its jobs, the job functions, where records and state go, and the results
tables as the after-job hook; the plan reference worker processes rebuild it from; ``--only``/``--target``
selection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .config import load_study_config, StudyConfig, StudyConfigError
from .job_functions import JOB_FUNCTIONS
from .jobs import build_jobs, finetune_id, job_outcome
from .runner import Plan, PlanRef, select_jobs, with_dependencies
from .tables import write_tables


PLAN_FACTORY = "tasktransfer_utils.study.plan:study_plan"


def plan_for(cfg: StudyConfig) -> Plan:
    """The runner plan of a study (records under results_dir, state under runs_dir)."""
    return Plan(jobs=build_jobs(cfg), functions=JOB_FUNCTIONS, records_dir=cfg.results_dir / "records",
                state_dir=cfg.runs_dir / "state", artifacts_dir=cfg.results_dir, name=cfg.name,
                max_attempts=cfg.max_attempts, settings={"config": cfg.to_dict()},
                after_job=lambda plan, job: write_tables(plan), outcome=job_outcome)


def study_plan(config_path: str) -> Plan:
    """PlanRef factory: the plan of the study config at ``config_path`` (worker processes call this)."""
    plan = plan_for(load_study_config(config_path))
    return plan


def plan_ref(cfg_or_path: StudyConfig | str | os.PathLike) -> PlanRef:
    path = cfg_or_path.config_path if isinstance(cfg_or_path, StudyConfig) else Path(cfg_or_path).resolve()
    if path is None:
        raise ValueError("a StudyConfig built from a dict has no file; save it (save_study_config) to run workers")
    return PlanRef(PLAN_FACTORY, (str(path),))


def select_study_jobs(cfg: StudyConfig, plan: Plan, only: Sequence[str] = (),
                      targets: Sequence[str] = (), sources: Sequence[str] = ()) -> list[str] | None:
    """The job ids a ``study run --only/--target/--source`` restricts to (None: the whole plan), dependencies
    included; the union of what each asks for. ``only``: shell-style patterns on job ids; ``targets``: the
    transfers and LogME jobs into these targets and the targets' own fine-tunes (their no-transfer
    baselines), i.e. what the report needs to evaluate source selection for them; ``sources``: the transfers
    and LogME jobs out of these sources (every source regime), their fine-tunes and embeddings: a source's
    row, which needs its fine-tuned model on disk only while it runs (for a machine that cannot keep the
    models from one run to the next)."""
    if not only and not targets and not sources:
        return None
    for flag, given, known in (("--target", targets, cfg.targets), ("--source", sources, cfg.sources)):
        unknown = [t for t in given if t not in known]
        if unknown:
            kind = flag.lstrip("-")
            raise StudyConfigError(f"{cfg.config_path}: {flag} {', '.join(unknown)}: not a {kind} of study "
                                   f"{cfg.name} ({kind}s: {', '.join(known)})")
    ids = set(select_jobs(plan, only)) if only else set()
    wanted, rows = set(targets), set(sources)
    for j in plan.jobs:
        if j.kind in ("transfer", "logme") and j.params["target"] in wanted:
            ids.add(j.id)
            ids.add(finetune_id(j.params["target"], j.params["target_regime"], j.params["seed"]))
        if j.kind in ("transfer", "logme") and j.params["source"] in rows:
            ids.add(j.id)
        if j.kind in ("textemb", "taskemb") and j.params.get("task") in rows:
            ids.add(j.id)
    return with_dependencies(plan, ids)

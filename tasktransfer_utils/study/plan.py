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


#: marks of :func:`pair_grid`, in the order the legend lists them
PAIR_MARKS = {"#": "transfer and LogME done", "t": "transfer done, LogME not", "l": "LogME done, transfer not",
              "r": "running", "x": "failed", ".": "to do", " ": "no job (a task with itself)"}


def pair_grid(plan: Plan, progress_now=None) -> dict[str, list[list[str]]]:
    """Per transfer regime (``"FULL-LIMITED"``, ...), a grid of the source x target pairs as text rows: a header
    row of targets, then one row per source with one :data:`PAIR_MARKS` mark per target and the row's count
    of done pairs. For working a study row by row (``study run --source``): which rows are whole.
    ``progress_now``: the plan's :class:`runner.Progress` when the caller has it (else it is read again)."""
    from .runner import progress

    done = plan.store.done_ids() & set(plan.by_id)
    p = progress_now if progress_now is not None else progress(plan)
    failed, running = set(p.failed_jobs), set(p.running_jobs)
    cells: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
    sources: dict[str, list[str]] = {}
    targets: dict[str, list[str]] = {}
    for j in plan.jobs:
        if j.kind not in ("transfer", "logme"):
            continue
        regime = j.id.split("__")[1]
        src, tgt = j.params["source"], j.params["target"]
        sources.setdefault(regime, [])
        targets.setdefault(regime, [])
        if src not in sources[regime]:
            sources[regime].append(src)
        if tgt not in targets[regime]:
            targets[regime].append(tgt)
        state = "done" if j.id in done else "running" if j.id in running else "failed" if j.id in failed else "left"
        cells.setdefault(regime, {}).setdefault((src, tgt), {})[j.kind] = state
    out = {}
    for regime, pairs in cells.items():
        rows = [["source \\ target", *targets[regime], "done"]]
        order = {t: i for i, t in enumerate(targets[regime])}  # rows in the targets' order where they are targets
        for src in sorted(sources[regime], key=lambda s: (order.get(s, len(order)), sources[regime].index(s))):
            marks, n = [], 0
            for tgt in targets[regime]:
                kinds = pairs.get((src, tgt))
                if kinds is None:
                    marks.append(" ")
                    continue
                states = set(kinds.values())
                if kinds.get("transfer") == "done" and kinds.get("logme", "done") == "done":
                    mark = "#"
                    n += 1
                elif "running" in states:
                    mark = "r"
                elif "failed" in states:
                    mark = "x"
                elif kinds.get("transfer") == "done":
                    mark = "t"
                elif kinds.get("logme") == "done":
                    mark = "l"
                else:
                    mark = "."
                marks.append(mark)
            rows.append([src, *marks, f"{n}/{sum(1 for t in targets[regime] if (src, t) in pairs)}"])
        out[regime] = rows
    return out


def format_pair_grid(grids: dict[str, list[list[str]]]) -> str:
    """The grids of :func:`pair_grid` as aligned text, with the legend."""
    blocks = []
    for regime, rows in grids.items():
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.center(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
                 for r in rows]
        whole = sum(1 for r in rows[1:] if r[-1].split("/")[0] == r[-1].split("/")[1])
        blocks.append(f"{regime}: {whole} of {len(rows) - 1} source rows whole\n" + "\n".join(lines))
    legend = "; ".join(f"'{m}' {what}" for m, what in PAIR_MARKS.items())
    return "\n\n".join(blocks) + f"\n({legend})"

"""The study's fine-tuned source models on disk: where they are (for LogME and ``tasktransfer rank
--models``), and ``tasktransfer study rebuild-models``, which fine-tunes the recorded ones again (their weights
are not committed) and checks every run against its record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserInputError
from .config import StudyConfig, StudyConfigError
from .job_functions import _portable_run, _shown, model_run_dir, rebuild_command, run_finetune
from .jobs import finetune_id
from .plan import plan_for
from .runner import canonical_json, load_results


def source_model_dirs(cfg: StudyConfig, regime: str | None = None, seed: int | None = None) -> dict[str, Path]:
    """{task: fine-tuned model folder} of the study's finished fine-tunes (``runs_dir``; the weights are not
    committed with the records). ``regime``: "FULL" or "LIMITED" (a transfer regime stands for its source
    side); None takes a task's FULL fine-tune where there is a record of one, else its LIMITED one. ``seed``:
    default the config's first. A recorded fine-tune whose weights are not on disk (a fresh clone) is an
    error naming the ``tasktransfer study rebuild-models`` command that rebuilds them."""
    from ..data.regimes import data_regime
    from ..training.fine_tuning import MODEL_SUBDIR

    seed = cfg.seeds[0] if seed is None else seed
    regime = data_regime(regime).value if regime else None
    records = load_results(plan_for(cfg))
    out, missing = {}, []
    for task in dict.fromkeys(cfg.sources + cfg.targets):
        recorded = [r for r in ((regime,) if regime else ("FULL", "LIMITED")) if finetune_id(task, r, seed) in records]
        if not recorded:
            continue
        model = model_run_dir(cfg, finetune_id(task, recorded[0], seed)) / MODEL_SUBDIR
        if model.is_dir():
            out[task] = model
        else:
            missing.append((task, recorded[0]))
    if missing:
        regimes = sorted({r for _, r in missing})
        tasks = [t for t, _ in missing]
        raise FileNotFoundError(
            f"{_shown(cfg.config_path)}: the weights of {len(missing)} recorded {'/'.join(regimes)} fine-tune(s) "
            f"({', '.join(tasks)}) are not on disk under {_shown(cfg.runs_dir / 'models')} (they are not committed "
            f"with the records); rebuild them from the records (same seeds and settings; models on disk are only "
            f"checked) with `{rebuild_command(cfg, (), regimes, seed)}`")
    if not out:
        raise FileNotFoundError(f"{_shown(cfg.config_path)}: no finished {regime or 'FULL or LIMITED'} fine-tune "
                                f"(seed {seed}) in {_shown(cfg.results_dir / 'records')}; run "
                                f"`tasktransfer study run {_shown(cfg.config_path)}` first")
    return out


class RebuildMismatchError(UserInputError):
    """A rebuilt fine-tune does not reproduce its record (the message names the first differing field)."""


REBUILD_RTOL = 1e-4


REBUILD_IGNORED_FIELDS = frozenset({"wall_time_s", "train_time_s", "eval_time_s", "train_examples_per_s",
                                    "device", "mixed_precision", "cpu_threads", "versions", "resumed_from_steps"})


def saved_checkpoints(cfg: StudyConfig) -> list[dict]:
    """The unfinished training jobs (fine-tunes, transfers, restarts) whose run folder holds a resumable checkpoint
    (``training.fine_tuning``): job, step, steps (of the whole run), saved_utc. A job started again resumes there."""
    import datetime

    from ..training.fine_tuning import latest_checkpoint

    plan = plan_for(cfg)
    done = set(load_results(plan))
    out = []
    for job in plan.jobs:
        if job.kind not in ("finetune", "transfer", "restart") or job.id in done:
            continue
        ckpt = latest_checkpoint(model_run_dir(cfg, job.id))
        if ckpt is None:
            continue
        state = json.loads((ckpt / "trainer_state.json").read_text())
        saved = datetime.datetime.fromtimestamp(ckpt.stat().st_mtime, datetime.timezone.utc)
        out.append({"job": job.id, "step": int(state["global_step"]), "steps": int(state["max_steps"]),
                    "saved_utc": saved.strftime("%Y-%m-%d %H:%M:%S")})
    return out


#: result fields holding dev metrics: a rerun may move them by one dev example (see :func:`_first_difference`)
METRIC_FIELDS = frozenset({"epoch_metrics", "final_metrics", "score"})


#: with a relative tolerance r, one logged loss may differ by LOSS_DRIFT_FACTOR * r (their median by r)
LOSS_DRIFT_FACTOR = 100


def _loss_curve_difference(recorded: Any, rebuilt: Any, where: str, rtol: float) -> str | None:
    """Two loss curves as a rerun reproduces them: every field but the loss equal (steps, epochs, learning
    rates: within ``rtol``); the first loss within ``rtol`` (same data, same initialisation); the median relative
    difference of the losses within ``rtol``; and each loss within :data:`LOSS_DRIFT_FACTOR` × ``rtol``. Float32
    rounding that differs between two processes drifts over hundreds of steps: BoolQ's LIMITED rebuild (270
    steps, every dev metric identical) had a median relative difference of 1.1e-5 and one step at 1.3e-3. Another
    seed or data moves the first loss, another learning rate every later one, by far more."""
    import math
    import statistics

    if not (isinstance(recorded, list) and isinstance(rebuilt, list)) or len(recorded) != len(rebuilt) or not all(
            isinstance(x, dict) and "loss" in x for x in recorded + rebuilt):
        return _first_difference(recorded, rebuilt, where, rtol)
    rest = _first_difference([{k: v for k, v in x.items() if k != "loss"} for x in recorded],
                             [{k: v for k, v in x.items() if k != "loss"} for x in rebuilt], where, rtol)
    if rest:
        return rest
    rel = []
    for a, b in zip((float(x["loss"]) for x in recorded), (float(x["loss"]) for x in rebuilt)):
        same = a == b or (math.isnan(a) and math.isnan(b))
        rel.append(0.0 if same else math.inf if math.isnan(a) or math.isnan(b) else abs(a - b) / max(abs(a), abs(b)))
    if not rel:
        return None
    shown = lambda i: f"{where}[{i}].loss is {rebuilt[i]['loss']!r}, recorded {recorded[i]['loss']!r}"  # noqa: E731
    if rel[0] > rtol:
        return shown(0)
    worst = max(range(len(rel)), key=rel.__getitem__)
    if rel[worst] > LOSS_DRIFT_FACTOR * rtol:
        return shown(worst) + f" (more than {LOSS_DRIFT_FACTOR} x the relative tolerance)"
    median = statistics.median(rel)
    if median > rtol:
        return f"{where}: the losses differ by a median {median:.2g} relative (largest: {shown(worst)})"
    return None


def _first_difference(recorded: Any, rebuilt: Any, where: str, rtol: float, metric_atol: float = 0.0,
                      _in_metric: bool = False) -> str | None:
    """Where two JSON values first differ (None: equal). Numbers: exactly equal with ``rtol`` 0, else
    |a - b| <= rtol * max(|a|, |b|); NaN equals NaN. Dict keys in :data:`REBUILD_IGNORED_FIELDS` are skipped.
    Numbers under a key of :data:`METRIC_FIELDS` may also differ by ``metric_atol`` (absolute): a rerun whose
    losses agree to float32 rounding can still flip one borderline prediction, which moves a dev metric by one
    example's share (Chunk's LIMITED rebuild: every logged loss within 6.1e-7 relative, epoch 6's seqeval F1
    0.90494 against 0.90478 recorded)."""
    import math

    if isinstance(recorded, dict) and isinstance(rebuilt, dict):
        for k in sorted(set(recorded) | set(rebuilt)):
            if k in REBUILD_IGNORED_FIELDS:
                continue
            if k not in recorded and rebuilt[k] is None:
                continue  # a result field added after the record was made, at its default
            if k not in recorded or k not in rebuilt:
                return f"{where}.{k} is {'absent' if k not in rebuilt else repr(rebuilt[k])}, recorded " \
                       f"{'absent' if k not in recorded else repr(recorded[k])}"
            if k == "loss_curve" and rtol > 0:
                diff = _loss_curve_difference(recorded[k], rebuilt[k], f"{where}.{k}", rtol)
            else:
                diff = _first_difference(recorded[k], rebuilt[k], f"{where}.{k}", rtol, metric_atol,
                                         _in_metric or k in METRIC_FIELDS)
            if diff:
                return diff
        return None
    if isinstance(recorded, list) and isinstance(rebuilt, list):
        if len(recorded) != len(rebuilt):
            return f"{where} has {len(rebuilt)} entries, recorded {len(recorded)}"
        for i, (a, b) in enumerate(zip(recorded, rebuilt)):
            diff = _first_difference(a, b, f"{where}[{i}]", rtol, metric_atol, _in_metric)
            if diff:
                return diff
        return None
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (recorded, rebuilt))
    if numbers:
        a, b = float(recorded), float(rebuilt)
        same = ((math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
                or (_in_metric and abs(a - b) <= metric_atol))
    else:
        same = recorded == rebuilt
    return None if same else f"{where} is {rebuilt!r}, recorded {recorded!r}"


def rebuild_models(cfg: StudyConfig, tasks: Sequence[str] = (), regime: str | None = None,
                   seeds: Sequence[int] = (), rtol: float = REBUILD_RTOL,
                   log: Any = None) -> dict[str, str]:
    """Rebuild the fine-tuned models of a study's fine-tune records (their weights live under ``runs_dir``,
    which is not committed): every recorded fine-tune job (of ``tasks``, data ``regime`` and ``seeds`` when
    given) whose model folder is missing is run again with its recorded params (same data, seed and settings)
    into its run folder; the records are never written. Each rebuilt run, and each run already on disk, is
    then checked against its record: every result field but timings and the machine description (device,
    threads, library versions) must be equal, numbers within a relative ``rtol`` (default
    :data:`REBUILD_RTOL`: float32 rounding of the logged losses, which a CPU rerun on another machine or in
    another process does not reproduce bit for bit), dev metrics also within one dev example's share
    (1 / the record's ``eval_examples``: a borderline prediction flipped by that rounding), and the loss curve as
    :func:`_loss_curve_difference` says (that rounding drifts over hundreds of steps); ``rtol`` 0 asks for exact
    equality everywhere, which a rerun in the same environment gives. A mismatch raises :class:`RebuildMismatchError` (one line) and renames the
    rebuilt run folder to ``<folder>.mismatch`` so that nothing uses it. Returns {job id: "present" |
    "rebuilt"}."""
    from ..data.regimes import data_regime
    from .runner import JobContext
    from ..training.fine_tuning import MODEL_SUBDIR, RESULT_FILE, RunResult, latest_checkpoint

    log = log or (lambda msg: None)
    regime = data_regime(regime).value if regime else None
    known = set(dict.fromkeys(cfg.sources + cfg.targets))
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise StudyConfigError(f"{_shown(cfg.config_path)}: --task {', '.join(unknown)}: not a task of study "
                               f"{cfg.name} (tasks: {', '.join(sorted(known))})")
    if rtol < 0 or rtol != rtol:
        raise StudyConfigError(f"rtol must be a number >= 0, got {rtol}")
    plan = plan_for(cfg)
    records = load_results(plan)
    jobs = [j for j in plan.jobs if j.kind == "finetune" and (not tasks or j.params["task"] in tasks)
            and (regime is None or j.params["regime"] == regime) and (not seeds or j.params["seed"] in seeds)]
    recorded = [j for j in jobs if j.id in records]
    if not recorded:
        raise StudyConfigError(f"{_shown(cfg.config_path)}: no fine-tune record to rebuild "
                               f"({len(jobs)} fine-tune job(s) selected, none recorded in "
                               f"{_shown(plan.records_dir)}); run `tasktransfer study run "
                               f"{_shown(cfg.config_path)}` first")
    from .engines import _set_torch_threads

    _set_torch_threads(cfg.engine.get("torch_threads"))  # train as the study's workers do
    status: dict[str, str] = {}
    for n, job in enumerate(recorded, 1):
        record = records[job.id]
        run_dir = model_run_dir(cfg, job.id)
        if (run_dir / MODEL_SUBDIR).is_dir() and (run_dir / RESULT_FILE).is_file():
            result = _portable_run(RunResult.from_json(run_dir / RESULT_FILE), cfg)
            status[job.id] = "present"
        else:
            claim = plan.store.try_claim(job.id)
            if claim is None:
                raise RebuildMismatchError(f"{job.id}: another process holds its lock "
                                           f"({plan.store.lock_path(job.id)}); try again when it has finished")
            try:
                resume = latest_checkpoint(run_dir)
                if run_dir.exists() and resume is None:
                    shutil.rmtree(run_dir)  # an incomplete run folder (no weights): scratch, not a record
                log(f"[{n}/{len(recorded)}] {job.id}: fine-tuning again from its record"
                    + ("" if resume is None else f" (resuming from its {resume.name})"))
                work_dir = plan.store.work_root / job.id
                work_dir.mkdir(parents=True, exist_ok=True)
                ctx = JobContext(job=job, work_dir=work_dir, artifacts_dir=Path(plan.artifacts_dir),
                                 dep_results={}, settings=dict(plan.settings))
                result = run_finetune(dict(job.params), ctx)
            finally:
                claim.release()
            status[job.id] = "rebuilt"
        result = json.loads(canonical_json(result))  # as the runner stores it
        n_dev = record["result"].get("eval_examples") or 0
        metric_atol = 1.0 / n_dev if rtol > 0 and n_dev else 0.0  # one dev example's share
        diff = _first_difference(record["result"], result, "result", rtol, metric_atol)
        if diff:
            if status[job.id] == "rebuilt":
                aside = run_dir.with_name(run_dir.name + ".mismatch")
                shutil.rmtree(aside, ignore_errors=True)
                run_dir.rename(aside)
                kept = f"the rebuilt run is kept in {_shown(aside)} and not used"
            else:
                kept = f"the run on disk in {_shown(run_dir)} is not the recorded one"
            env = lambda r: (f"{r.get('device')}, {r.get('cpu_threads')} thread(s), "  # noqa: E731
                             + ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())))
            where = (f"recorded on {env(record['result'])}, now on {env(result)}"
                     if env(record["result"]) != env(result) else "same device, threads and library versions")
            raise RebuildMismatchError(
                f"{job.id}: {diff} ({_shown(plan.store.record_path(job.id))}; {where}); {kept}"
                + f"; --rtol sets the relative difference accepted (now {rtol:g}; dev metrics may also differ "
                f"by one dev example, {metric_atol:.2g}, unless --rtol is 0)")
        log(f"[{n}/{len(recorded)}] {job.id}: {status[job.id]}, equal to its record"
            + (f" (relative tolerance {rtol:g}, dev metrics within one of {n_dev} dev examples)" if rtol
               else " (exactly)"))
    return status


"""Engines that execute a plan (see :mod:`tasktransfer_utils.study.runner`).

- :class:`LocalEngine` — in this process (``workers=1``) or ``workers`` spawned worker processes
  sharing the plan's lock files (each process rebuilds the plan from its :class:`PlanRef`). The worker
  processes die with the engine's process (:func:`die_with_parent`), killed or not, so no orphan keeps
  running a job that a restart will run again.
- :class:`SubmititEngine` — through `submitit <https://github.com/facebookincubator/submitit>`_:
  ``cluster="slurm"`` submits job arrays to SLURM, ``cluster="local"`` runs the same submissions as
  local subprocesses (submitit's LocalExecutor). Every ready job becomes one array task, one array per
  resource group (``Job.group``, e.g. the task class) with that group's resources; jobs whose
  dependencies finish later are submitted in later arrays. A job that fails (Python error, or its
  SLURM task ends without a record: out of memory, node failure) is submitted again until it has
  failed ``plan.max_attempts`` times; a task that hits its time limit or is preempted is requeued by
  submitit (``Checkpointable``) up to ``max_num_timeout`` times.

Whatever the engine, a job runs under the runner's lock and writes the runner's atomic record, so a
killed driver can be restarted (with any engine) and finishes the same study.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .runner import Plan, PlanRef, WorkerSummary, _worker_entry, dead_jobs, format_duration, progress, run_worker

logger = logging.getLogger("tasktransfer.engines")


def _log_default(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# Local
# --------------------------------------------------------------------------------------------------


@dataclass
class LocalEngine:
    """Run the plan on this machine: sequentially in this process (``workers=1``) or with
    ``workers`` processes (``multiprocessing`` spawn), each claiming jobs until none is left.
    ``recycle_after``: replace a worker process by a fresh one after that many jobs (bounds the memory a
    long study's worker accumulates; implies worker processes even with ``workers=1``)."""

    workers: int = 1
    poll_s: float = 5.0
    torch_threads: int | None = None
    recycle_after: int | None = None

    def run(self, plan: Plan, *, retry_failed: bool = False, max_jobs: int | None = None,
            job_ids: list[str] | None = None, log: Callable[[str], None] = _log_default,
            deadline: float | None = None) -> WorkerSummary:
        """Run the plan's jobs (``job_ids``: only those; see :func:`runner.select_jobs`); with ``deadline`` (a
        ``time.time()`` value) start only jobs expected to end before it (:func:`runner.run_worker`)."""
        if self.workers < 1:
            raise ValueError(f"LocalEngine.workers = {self.workers}: expected >= 1")
        if self.recycle_after is not None and self.recycle_after < 1:
            raise ValueError(f"LocalEngine.recycle_after = {self.recycle_after}: expected None or >= 1")
        if retry_failed:
            plan.store.reset_failures(job_ids)
        if self.workers == 1 and not self.recycle_after:
            _set_torch_threads(self.torch_threads)
            return run_worker(plan, poll_s=self.poll_s, max_jobs=max_jobs, job_ids=job_ids, log=log, deadline=deadline)
        if plan.ref is None:
            raise ValueError("LocalEngine with worker processes needs a plan built through PlanRef.load() "
                             "(each worker process rebuilds the plan)")
        ctx = multiprocessing.get_context("spawn")
        total = WorkerSummary()
        budget = max_jobs
        # Each worker is a process of its own that runs one worker loop (at most ``recycle_after`` jobs) and
        # sends its summary back through a pipe. multiprocessing.Pool is not used: with maxtasksperchild its
        # terminate() can deadlock when a replacement worker starts while the pool shuts down (it waits for a
        # queue lock that the new, idle worker holds), and it never notices a worker killed mid-job.

        def start() -> tuple[Any, Any, int | None]:
            per_task = self.recycle_after
            if budget is not None:
                per_task = budget if per_task is None else min(per_task, budget)
            kwargs = {"poll_s": self.poll_s, "max_jobs": per_task, "parent_pid": os.getpid(), "job_ids": job_ids,
                      "deadline": deadline}
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_process, args=(plan.ref, kwargs, self.torch_threads, os.getpid(), writer),
                               daemon=True, name="tasktransfer-worker")
            proc.start()
            writer.close()  # the child holds the only writing end: EOF on the reader means it is gone
            return proc, reader, per_task

        running = [start() for _ in range(self.workers)]
        replacements = max(1, plan.max_attempts) * self.workers  # for workers killed mid-job (bounded: no loop)
        last = 0.0
        try:
            while running:
                still = []
                for proc, reader, per_task in running:
                    summary = _summary_if_done(proc, reader)
                    if summary is None:
                        still.append((proc, reader, per_task))
                        continue
                    proc.join()
                    reader.close()
                    if summary is _LOST:
                        replace = replacements > 0 and (budget is None or budget > 0)
                        log(f"worker process {proc.pid} ended (exit code {proc.exitcode}) without a summary; the job "
                            "it was running is run again by the next worker that claims it"
                            + ("; starting a fresh worker" if replace else ""))
                        if replace:
                            replacements -= 1
                            still.append(start())
                        continue
                    total.ran += summary["ran"]
                    total.failed += summary["failed"]
                    total.lost += summary["lost"]
                    n = len(summary["ran"]) + len(summary["failed"])
                    if budget is not None:
                        budget -= n
                    # a worker that used its whole quota may have left work: start a fresh one
                    if self.recycle_after and per_task is not None and n >= per_task and (budget is None or budget > 0):
                        still.append(start())
                running = still
                if time.time() - last > 60:
                    log(f"[{progress(plan, self.workers).line()}]")
                    last = time.time()
                time.sleep(0.2)
        finally:  # interrupted (Ctrl-C, an error): stop the workers still running; their locks become stale
            for proc, reader, _ in running:
                if proc.is_alive():
                    proc.kill()
                proc.join()
                reader.close()
        return total


#: what :func:`_summary_if_done` returns for a worker process that ended without sending its summary
_LOST = object()


def _summary_if_done(proc, reader) -> Any:
    """The summary a worker process sent, ``_LOST`` if it ended without one (killed, crashed), or None while it
    runs."""
    try:
        if reader.poll():
            return reader.recv()
    except (EOFError, OSError):
        return _LOST
    if not proc.is_alive():
        try:  # it may have sent its summary between the poll and the liveness check
            return reader.recv() if reader.poll() else _LOST
        except (EOFError, OSError):
            return _LOST
    return None


def _worker_process(ref: PlanRef, kwargs: dict, torch_threads: int | None, parent_pid: int, conn) -> None:
    """Body of a local worker process: die with the engine process, run one worker loop, send its summary."""
    _init_worker(torch_threads, parent_pid)
    try:
        conn.send(_worker_entry(ref, kwargs))
    finally:
        conn.close()


def _set_torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _init_worker(torch_threads: int | None, parent_pid: int) -> None:
    """Set-up of a local worker process: it dies with the engine process (:func:`die_with_parent`)."""
    die_with_parent(parent_pid)
    _set_torch_threads(torch_threads)


#: ``prctl`` option asking Linux to send a signal to this process when its parent exits (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, *, method: str = "auto", poll_s: float = 1.0) -> str:
    """Make this process die (SIGKILL) as soon as ``parent_pid``, its parent, exits, however it exits
    (SIGKILL included), so that killing ``study run`` stops its worker processes and the job each was running:
    a restarted run breaks their locks as stale and runs those jobs again (a fine-tune from its last checkpoint,
    ``training.fine_tuning``).

    ``method="auto"``: on Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere, or if
    ``prctl`` fails, a daemon thread polls ``os.getppid()`` every ``poll_s`` seconds (``"watchdog"``).
    Returns the method used. A parent already gone when this is called kills this process at once."""
    if method not in ("auto", "watchdog"):
        raise ValueError(f"die_with_parent: method {method!r}; expected 'auto' or 'watchdog'")
    if os.getppid() != parent_pid:
        _die()
    if method == "auto" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent exited before the request took effect
                    _die()
                return "prctl"
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: fall back to polling
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                _die()
            time.sleep(poll_s)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
    return "watchdog"


def _die() -> None:
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)  # pragma: no cover - platforms without SIGKILL


# --------------------------------------------------------------------------------------------------
# submitit (SLURM, or submitit's local executor)
# --------------------------------------------------------------------------------------------------


try:  # the callable must be importable where the job runs: define it at module level
    import submitit
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency
    submitit = None
    _Checkpointable = object


class PlanJobTask(_Checkpointable):
    """What one array task runs: rebuild the plan and make one attempt at each given job (no waiting;
    failed attempts are resubmitted by the engine).
    Checkpointable: on time-out or preemption submitit requeues the same call."""

    def __call__(self, ref: PlanRef, job_ids: list[str]) -> dict:
        return _worker_entry(ref, {"job_ids": job_ids, "wait": False, "max_jobs": len(job_ids)})


#: submitit's generic resource names (AutoExecutor), usable in every group's resources.
GENERIC_RESOURCES = ("timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node", "nodes", "tasks_per_node",
                     "slurm_partition", "slurm_array_parallelism", "slurm_additional_parameters",
                     "slurm_setup", "slurm_constraint", "slurm_account", "slurm_qos", "slurm_exclude")


@dataclass
class SubmititEngine:
    """Submit ready jobs as submitit job arrays (one array per resource group) and resubmit failures.

    ``resources`` maps a group name (``Job.group``) or ``"default"`` to submitit AutoExecutor
    parameters (``timeout_min``, ``cpus_per_task``, ``mem_gb``, ``gpus_per_node``, ``slurm_partition``,
    ...); a group's dict is laid over ``"default"``. ``cluster`` is ``"slurm"``, ``"local"`` or
    ``"debug"`` (in-process, for debugging)."""

    folder: str | Path
    cluster: str = "slurm"
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_num_timeout: int = 3
    poll_s: float = 10.0
    #: how long a SLURM task may be absent from squeue without a result before it counts as lost (s)
    lost_after_s: float = 120.0

    def parameters(self, group: str) -> dict[str, Any]:
        """The AutoExecutor parameters of a resource group: its dict laid over ``"default"``, plus a job
        name and (SLURM) the signal delay that lets a timed-out job be requeued."""
        params = dict(self.resources.get("default", {}))
        params.update(self.resources.get(group, {}))
        params.setdefault("name", f"tasktransfer-{group}")
        if self.cluster == "slurm":
            params.setdefault("slurm_signal_delay_s", 60)
        return params

    def executor(self, group: str):
        """A submitit executor for a resource group (with ``cluster="slurm"`` this needs SLURM's ``srun``)."""
        if submitit is None:  # pragma: no cover
            raise ImportError("SubmititEngine needs the `submitit` package (pip install submitit)")
        ex = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster,
                                   slurm_max_num_timeout=self.max_num_timeout)
        ex.update_parameters(**self.parameters(group))
        return ex

    def run(self, plan: Plan, *, retry_failed: bool = False, max_jobs: int | None = None,
            job_ids: list[str] | None = None, log: Callable[[str], None] = _log_default) -> WorkerSummary:
        """Submit the plan's jobs (``job_ids``: only those) until every one is done or dead."""
        if plan.ref is None:
            raise ValueError("SubmititEngine needs a plan built through PlanRef.load() (each array task "
                             "rebuilds the plan)")
        store = plan.store
        if retry_failed:
            store.reset_failures(job_ids)
        selected = set(job_ids) if job_ids is not None else None
        in_flight: dict[str, tuple[Any, int]] = {}  # plan job id -> (submitit job, attempts before)
        absent_since: dict[str, float] = {}
        summary = WorkerSummary()
        submitted = 0
        last_log = 0.0
        while True:
            done = store.done_ids()
            # collect finished submissions
            for jid, (sjob, attempts_before) in list(in_flight.items()):
                if jid in done:
                    del in_flight[jid]
                    summary.ran.append(jid)
                    continue
                if not self._finished(sjob, jid, absent_since):
                    continue
                del in_flight[jid]
                if store.is_done(jid):  # finished between the listing above and now
                    summary.ran.append(jid)
                    continue
                lock = store.lock_info(jid)
                if lock is not None and not store.is_stale(lock):
                    continue  # another worker holds the job: not a failure of this submission
                if store.attempts(jid) <= attempts_before:
                    # ended without writing its own failure: killed, out of memory, node failure, ...
                    err = self._error_of(sjob)
                    store.record_failure(plan.by_id[jid], err or f"submitit job {sjob.job_id} ended (state "
                                         f"{self._state(sjob)}) without a record", attempts_before + 1)
                summary.failed.append(jid)
                log(f"FAILED {jid} (submitit job {sjob.job_id}, state {self._state(sjob)}); "
                    f"attempt {store.attempts(jid)}/{plan.max_attempts}")
            done = store.done_ids()
            running = store.running()
            dead = dead_jobs(plan, done)
            remaining = [j for j in plan.jobs if j.id not in done and j.id not in dead
                         and (selected is None or j.id in selected)]
            if not remaining:
                break
            ready = [j for j in remaining
                     if j.id not in in_flight and j.id not in running and all(d in done for d in j.deps)]
            if max_jobs is not None:
                ready = ready[: max(0, max_jobs - submitted)]
            if ready:
                by_group: dict[str, list] = {}
                for j in ready:
                    by_group.setdefault(j.group, []).append(j)
                for group, jobs in by_group.items():
                    ex = self.executor(group)
                    with ex.batch():
                        futures = [ex.submit(PlanJobTask(), plan.ref, [j.id]) for j in jobs]
                    for j, f in zip(jobs, futures):
                        in_flight[j.id] = (f, store.attempts(j.id))
                    submitted += len(jobs)
                    log(f"submitted {len(jobs)} {group} job(s) as array {futures[0].job_id.split('_')[0]} "
                        f"({self.cluster})")
            if not in_flight and not ready:
                if not running:
                    break  # nothing can run any more (blocked by failures), nothing is running
            if max_jobs is not None and submitted >= max_jobs and not in_flight:
                break
            if time.time() - last_log > 60:
                log(f"[{progress(plan).line()}] {len(in_flight)} submitted job(s) in flight")
                last_log = time.time()
            time.sleep(self.poll_s)
        return summary

    # helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _state(sjob) -> str:
        try:
            return sjob.state
        except Exception:  # noqa: BLE001
            return "UNKNOWN"

    @staticmethod
    def _error_of(sjob) -> str | None:
        if not sjob.paths.result_pickle.exists():
            # killed before submitit could write an outcome: the end of its stderr says why
            try:
                tail = (sjob.stderr() or "").strip().splitlines()[-5:]
            except Exception:  # noqa: BLE001
                tail = []
            return None if not tail else "no result; stderr ends with: " + " | ".join(tail)
        try:
            exc = sjob.exception()
        except Exception as err:  # noqa: BLE001 - no result file at all
            return f"{type(err).__name__}: {err}"
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    def _finished(self, sjob, jid: str, absent_since: dict[str, float]) -> bool:
        if sjob.done():
            return True
        if self.cluster != "slurm":
            return False
        # Without accounting (no sacct) submitit cannot tell a task that died without a result:
        # ask squeue whether it is still known.
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", sjob.job_id], capture_output=True,
                                 text=True, timeout=60)
            present = out.returncode == 0 and out.stdout.strip() != ""
        except (OSError, subprocess.TimeoutExpired):
            present = True
        if present:
            absent_since.pop(jid, None)
            return False
        first = absent_since.setdefault(jid, time.time())
        return time.time() - first > self.lost_after_s


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


ENGINE_KINDS = ("local", "slurm", "submitit-local")


def make_engine(spec: Mapping[str, Any] | None, *, default_folder: Path, workers: int | None = None,
                kind: str | None = None):
    """Engine from a config mapping ``{"kind": "local"|"slurm"|"submitit-local", ...}``; ``workers`` and
    ``kind`` (command-line flags) override the config."""
    spec = dict(spec or {})
    config_kind = spec.pop("kind", "local")
    if kind is not None and kind != config_kind:
        # another engine than the config's: its fields do not apply (poll_s and workers may)
        spec = {k: v for k, v in spec.items() if k in ("poll_s", "workers")}
    kind = kind or config_kind
    if kind == "local":
        allowed = {"workers", "poll_s", "torch_threads", "recycle_after"}
        _check_keys(spec, allowed, "engine (local)")
        if workers is not None:
            spec["workers"] = workers
        return LocalEngine(**{k: v for k, v in spec.items() if k in allowed})
    if kind in ("slurm", "submitit-local"):
        allowed = {"folder", "resources", "max_num_timeout", "poll_s", "lost_after_s"}
        spec.pop("workers", None)
        _check_keys(spec, allowed, f"engine ({kind})")
        spec.setdefault("folder", default_folder)
        return SubmititEngine(cluster="slurm" if kind == "slurm" else "local", **spec)
    raise ValueError(f"engine kind {kind!r}: expected one of {ENGINE_KINDS}")


def _check_keys(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    bad = set(spec) - allowed
    if bad:
        raise ValueError(f"{where}: unknown field(s) {sorted(bad)}; expected some of {sorted(allowed)}")


__all__ = ["LocalEngine", "SubmititEngine", "PlanJobTask", "make_engine", "ENGINE_KINDS", "format_duration",
           "die_with_parent"]

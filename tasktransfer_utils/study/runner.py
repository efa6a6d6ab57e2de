"""Resumable, multi-worker execution of a job graph (the study runner).

A *plan* is an ordered list of :class:`Job` records (id, kind, params, deps) plus a registry that maps
each job kind to a function ``fn(params: dict, ctx: JobContext) -> dict`` (JSON-serialisable result).
Guarantees, whatever the number of workers or how often they are killed:

- a job runs only after all its dependencies have a record;
- each finished job has exactly one record file ``<records>/<job id>.json``, written atomically
  (temporary file + fsync + ``os.replace``), so a half-written record is never read as done;
- a job is claimed with a lock file created with ``O_CREAT | O_EXCL``; two live workers never run the
  same job. The lock names its owner (host, pid, process start time) and is kept fresh by a heartbeat;
  a lock whose owner died (same host: the process is gone; any host: no heartbeat for
  ``stale_after_s``) is broken under a :mod:`filelock` guard and the job is run again (its job function decides
  what of the dead run it reuses: a fine-tune resumes from its last checkpoint);
- a worker writes its record only while it still owns the lock.

Workers on other processes or machines rebuild the same plan from a :class:`PlanRef`
(``"module:function"`` plus arguments), so the registry never has to be pickled.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import filelock

logger = logging.getLogger("tasktransfer.runner")

JobFunction = Callable[[dict, "JobContext"], dict]

#: Default heartbeat period of a running job's lock (seconds).
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this is stale, whatever host wrote it (seconds).
STALE_AFTER_S = 600.0


# --------------------------------------------------------------------------------------------------
# Jobs and plans
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One unit of work. ``id`` is unique and file-name safe; ``params`` is JSON-serialisable and,
    with the dependencies' results, fully determines the result; ``group`` names the resource class
    (e.g. the task class) used for per-job resources and timing estimates; ``cost`` is a relative
    cost guess used for the ETA until durations have been measured."""

    id: str
    kind: str
    params: Mapping[str, Any]
    deps: tuple[str, ...] = ()
    group: str = "default"
    cost: float = 1.0

    def __post_init__(self):
        bad = set(self.id) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+=@,")
        if not self.id or bad or self.id.startswith("."):
            raise ValueError(f"Job id {self.id!r}: expected a non-empty file-name-safe string "
                             f"(letters, digits, '-_.+=@,'; not starting with '.'), found {sorted(bad)}")
        object.__setattr__(self, "deps", tuple(self.deps))

    def params_key(self) -> str:
        """Canonical JSON of ``params`` (what a stored record must match)."""
        return canonical_json(self.params)


@dataclass
class JobContext:
    """What a job function gets besides its params: a private work directory, the results of its
    dependencies (``dep_results[job_id] = result dict``), the plan's shared settings and a
    ``heartbeat()`` callable that long jobs may call (the runner also beats on its own)."""

    job: Job
    work_dir: Path
    artifacts_dir: Path
    dep_results: dict[str, dict]
    settings: dict = field(default_factory=dict)
    attempt: int = 1


@dataclass(frozen=True)
class PlanRef:
    """How any process rebuilds a plan: ``factory`` is ``"module:function"``, called with ``args``."""

    factory: str
    args: tuple = ()

    def load(self) -> "Plan":
        module_name, _, attr = self.factory.partition(":")
        if not module_name or not attr:
            raise ValueError(f"PlanRef.factory {self.factory!r}: expected 'package.module:function'")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        plan = obj(*self.args)
        if not isinstance(plan, Plan):
            raise TypeError(f"PlanRef {self.factory}{self.args!r} returned {type(plan).__name__}, expected Plan")
        plan.ref = self
        return plan


@dataclass
class Plan:
    """An ordered job list (the runner takes the first ready job in this order), the registry of job
    functions, where records go (``records_dir``, committed as results) and where scratch state goes
    (``state_dir``: locks, failures, job work directories; not committed)."""

    jobs: list[Job]
    functions: Mapping[str, JobFunction]
    records_dir: Path
    state_dir: Path
    artifacts_dir: Path | None = None
    settings: dict = field(default_factory=dict)
    max_attempts: int = 2
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    ref: PlanRef | None = None
    name: str = "study"
    #: called after each record is written (e.g. to refresh summary tables); errors are logged, not raised
    after_job: Callable[["Plan", Job], None] | None = None
    #: a job's outcome in a few words for its "done" log line (default: its ``score`` when it has one)
    outcome: Callable[[Job, dict], str] | None = None

    def __post_init__(self):
        self.records_dir = Path(self.records_dir)
        self.state_dir = Path(self.state_dir)
        self.artifacts_dir = Path(self.artifacts_dir) if self.artifacts_dir else self.records_dir.parent
        ids = Counter(j.id for j in self.jobs)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise ValueError(f"Plan {self.name}: duplicate job ids {dup[:5]}")
        self.by_id = {j.id: j for j in self.jobs}
        for j in self.jobs:
            missing = [d for d in j.deps if d not in self.by_id]
            if missing:
                raise ValueError(f"Job {j.id}: dependencies {missing} are not jobs of plan {self.name}")
            if j.kind not in self.functions:
                raise ValueError(f"Job {j.id}: kind {j.kind!r} has no function (known: {sorted(self.functions)})")
        _check_acyclic(self.jobs)
        self.store = JobStore(self.records_dir, self.state_dir, self.heartbeat_s, self.stale_after_s)


def _check_acyclic(jobs: Sequence[Job]) -> None:
    state: dict[str, int] = {}
    by_id = {j.id: j for j in jobs}
    for root in jobs:
        stack = [(root.id, iter(by_id[root.id].deps))]
        if state.get(root.id) == 2:
            continue
        state[root.id] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise ValueError(f"Job graph has a cycle through {nxt!r}")
            elif state.get(nxt) is None:
                state[nxt] = 1
                stack.append((nxt, iter(by_id[nxt].deps)))


# --------------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and isinstance(getattr(obj, "value"), str):  # str Enums
        return obj.value
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``.
    A reader sees the old file, or no file, or the whole new file; never part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False,
                                       default=_json_default) + "\n")


# --------------------------------------------------------------------------------------------------
# Process identity and locks
# --------------------------------------------------------------------------------------------------


def _process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start_time: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start_time is not None:
        now = _process_start_time(pid)
        if now is not None and now != start_time:
            return False  # the pid was reused by another process
        try:  # a zombie has exited: its work is over
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except (OSError, IndexError):
            pass
    return True


def _owner() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start_time(pid),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT")}


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Claim:
    """A held job lock. ``beat()`` refreshes the heartbeat (mtime); ``owned()`` says whether the lock
    file is still this claim's; ``release()`` removes it. A background thread beats every
    ``heartbeat_s`` seconds until release."""

    def __init__(self, path: Path, token: str, heartbeat_s: float):
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(heartbeat_s,), daemon=True,
                                        name=f"heartbeat-{path.stem}")
        self._thread.start()

    def _loop(self, period: float) -> None:
        while not self._stop.wait(period):
            self.beat()

    def beat(self) -> None:
        if self.owned():
            try:
                os.utime(self.path)
            except OSError:
                pass

    def owned(self) -> bool:
        info = read_lock(self.path)
        return info is not None and info.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.owned():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def read_lock(path: Path) -> dict | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = {"corrupt": True}
    try:
        info["heartbeat"] = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return info


class JobStore:
    """Files of one plan: records (``records_dir/<id>.json``), locks, failures and job work folders
    (under ``state_dir``)."""

    def __init__(self, records_dir: Path, state_dir: Path, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.records_dir = Path(records_dir)
        self.state_dir = Path(state_dir)
        self.locks_dir = self.state_dir / "locks"
        self.failures_dir = self.state_dir / "failures"
        self.work_root = self.state_dir / "jobs"
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        # no folder is made here: reading a plan's state (status, dry runs) writes nothing; records,
        # failures and job folders are made when first written, the locks folder at the first claim
        self._guard = filelock.FileLock(str(self.locks_dir / ".guard"))

    # records ---------------------------------------------------------------------------------
    def record_path(self, job_id: str) -> Path:
        return self.records_dir / f"{job_id}.json"

    def is_done(self, job_id: str) -> bool:
        return self.record_path(job_id).is_file()

    def read_record(self, job_id: str) -> dict:
        path = self.record_path(job_id)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); records are written atomically, so this "
                             "file was edited or copied by hand. Delete it to rerun the job.") from None

    def done_ids(self) -> set[str]:
        return {p.stem for p in self.records_dir.glob("*.json") if not p.name.startswith(".")}

    def write_record(self, record: dict) -> None:
        atomic_write_json(self.record_path(record["job_id"]), record)

    # failures --------------------------------------------------------------------------------
    def failure_path(self, job_id: str) -> Path:
        return self.failures_dir / f"{job_id}.json"

    def read_failure(self, job_id: str) -> dict | None:
        try:
            return json.loads(self.failure_path(job_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def attempts(self, job_id: str) -> int:
        failure = self.read_failure(job_id)
        return int(failure["attempts"]) if failure else 0

    def record_failure(self, job: Job, error: str, attempt: int) -> None:
        atomic_write_json(self.failure_path(job.id), {
            "job_id": job.id, "kind": job.kind, "params": job.params, "attempts": attempt,
            "error": error, "failed_at": _now_iso(), "worker": _owner()})

    def clear_failure(self, job_id: str) -> None:
        try:
            self.failure_path(job_id).unlink()
        except FileNotFoundError:
            pass

    def reset_failures(self, job_ids: Iterable[str] | None = None) -> int:
        paths = ([self.failure_path(i) for i in job_ids] if job_ids is not None
                 else list(self.failures_dir.glob("*.json")))
        n = 0
        for p in paths:
            if p.exists():
                p.unlink()
                n += 1
        return n

    # locks -----------------------------------------------------------------------------------
    def lock_path(self, job_id: str) -> Path:
        return self.locks_dir / f"{job_id}.lock"

    def lock_info(self, job_id: str) -> dict | None:
        return read_lock(self.lock_path(job_id))

    def is_stale(self, info: dict | None, now: float | None = None) -> bool:
        """A lock is stale when its owner process is gone (same host) or its heartbeat is older than
        ``stale_after_s`` (any host)."""
        if info is None:
            return False
        now = time.time() if now is None else now
        if info.get("corrupt"):
            return now - info["heartbeat"] > max(60.0, 2 * self.heartbeat_s)
        slurm_job = os.environ.get("SLURM_JOB_ID")
        if slurm_job and info.get("slurm_job_id") == slurm_job:
            # a requeued SLURM job: its earlier run (lower restart count) was killed before the requeue
            if int(info.get("slurm_restart_count") or 0) < int(os.environ.get("SLURM_RESTART_COUNT") or 0):
                return True
        if info.get("host") == socket.gethostname() and info.get("pid") is not None:
            if not _pid_alive(int(info["pid"]), info.get("pid_start")):
                return True
        return now - info["heartbeat"] > self.stale_after_s

    def try_claim(self, job_id: str) -> Claim | None:
        """Claim ``job_id`` (O_CREAT|O_EXCL lock file). Returns None when another live worker holds it.
        A stale lock is broken (under the guard, after checking it is still the same stale lock)."""
        path = self.lock_path(job_id)
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            token = uuid.uuid4().hex
            payload = json.dumps({"token": token, "job_id": job_id, "claimed_at": _now_iso(), **_owner()})
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = read_lock(path)
                if info is None:
                    continue  # released meanwhile: try again
                if not self.is_stale(info):
                    return None
                with self._guard:
                    again = read_lock(path)
                    if again is None or (again.get("token") == info.get("token") and self.is_stale(again)):
                        logger.warning("Breaking stale lock of %s (owner %s pid %s, heartbeat %.0f s ago)",
                                       job_id, info.get("host"), info.get("pid"),
                                       time.time() - info["heartbeat"])
                        try:
                            path.unlink()
                        except FileNotFoundError:
                            pass
                        continue
                return None
            try:
                os.write(fd, payload.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return Claim(path, token, self.heartbeat_s)
        return None

    def running(self) -> dict[str, dict]:
        """Live (non-stale) locks: job id -> lock info."""
        out = {}
        for p in self.locks_dir.glob("*.lock"):
            info = read_lock(p)
            if info is not None and not self.is_stale(info):
                out[p.stem] = info
        return out

    def clean_tmp_files(self) -> int:
        """Remove temporary files left by dead processes of this host (killed mid-write)."""
        n = 0
        host = socket.gethostname()
        for d in (self.records_dir, self.failures_dir):
            for p in d.glob(".*.tmp"):
                parts = p.name.split(".")
                # .<name>.json.<host>.<pid>.<rand>.tmp -> host may contain dots: pid is parts[-3]
                try:
                    pid = int(parts[-3])
                except (ValueError, IndexError):
                    continue
                if host in p.name and not _pid_alive(pid, None):
                    p.unlink(missing_ok=True)
                    n += 1
        return n


# --------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Snapshot of a plan: counts per state, per (kind, group), and the estimated time left (s)."""

    total: int
    done: int
    running: int
    failed: int
    blocked: int
    left: int
    eta_s: float | None
    by_group: dict[str, dict[str, int]]
    running_jobs: dict[str, dict]
    failed_jobs: dict[str, str]
    mean_wall_s: dict[str, float]

    def line(self) -> str:
        eta = "?" if self.eta_s is None else format_duration(self.eta_s)
        parts = [f"{self.done}/{self.total} done", f"{self.running} running", f"{self.left} left"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.blocked:
            parts.append(f"{self.blocked} blocked")
        return ", ".join(parts) + f", ETA {eta}"

    def table(self) -> str:
        rows = [("kind/group", "done", "running", "left", "failed", "mean s/job")]
        for key in sorted(self.by_group):
            c = self.by_group[key]
            mean = self.mean_wall_s.get(key)
            rows.append((key, str(c["done"]), str(c["running"]), str(c["left"]), str(c["failed"]),
                         "-" if mean is None else f"{mean:.0f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in rows]
        out = "\n".join(lines) + "\n" + self.line()
        now = time.time()
        for jid, info in sorted(self.running_jobs.items()):
            out += (f"\n  running {jid}: {info.get('host')} pid {info.get('pid')}, since {info.get('claimed_at')}, "
                    f"heartbeat {now - info['heartbeat']:.0f} s ago")
        for jid, err in sorted(self.failed_jobs.items()):
            out += f"\n  failed {jid}: {err}"
        return out


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def job_wall_time_s(record: Mapping[str, Any]) -> float | None:
    """The wall time (s) a finished job took, from its record. The record's ``wall_time_s`` covers the attempt
    that finished it; a fine-tune resumed from a checkpoint (``result.resumed_from_steps``) ran in several
    attempts, and its result's ``wall_time_s`` adds the training and evaluation time of every attempt, so the
    larger of the two is taken there (the earlier attempts' model loading is not counted). None when the
    record has no wall time."""
    wall = record.get("wall_time_s")
    result = record.get("result") or {}
    if isinstance(result, Mapping) and result.get("resumed_from_steps") and result.get("wall_time_s") is not None:
        return max(float(result["wall_time_s"]), float(wall or 0.0))
    return None if wall is None else float(wall)


@dataclass
class JobTimeEstimate:
    """Wall-time estimates of a plan's jobs from its finished records: per (kind, group) the mean and the
    longest measured wall time; for a (kind, group) not yet measured, the group's (else the plan-wide) seconds
    per cost unit times the job's cost; None when nothing is measured."""

    mean_wall_s: dict[str, float]
    max_wall_s: dict[str, float]
    group_s_per_cost: dict[str, float]
    s_per_cost: float | None

    @classmethod
    def from_records(cls, plan: Plan, done: set[str] | None = None) -> "JobTimeEstimate":
        store = plan.store
        done = (store.done_ids() & set(plan.by_id)) if done is None else done
        walls: dict[str, list[float]] = defaultdict(list)
        group_cost: dict[str, float] = defaultdict(float)
        group_wall: dict[str, float] = defaultdict(float)
        for jid in done:
            try:
                rec = store.read_record(jid)
            except (ValueError, OSError):
                continue
            w = job_wall_time_s(rec)
            if w is None:
                continue
            j = plan.by_id[jid]
            walls[f"{j.kind}/{j.group}"].append(float(w))
            group_cost[j.group] += j.cost
            group_wall[j.group] += float(w)
        cost_done, wall_done = sum(group_cost.values()), sum(group_wall.values())
        return cls(mean_wall_s={k: sum(v) / len(v) for k, v in walls.items()},
                   max_wall_s={k: max(v) for k, v in walls.items()},
                   group_s_per_cost={g: group_wall[g] / c for g, c in group_cost.items() if c > 0},
                   s_per_cost=wall_done / cost_done if cost_done > 0 else None)

    def _by_cost(self, job) -> float | None:
        rate = self.group_s_per_cost.get(job.group, self.s_per_cost)
        return None if rate is None else rate * job.cost

    def mean(self, job) -> float | None:
        """The job's expected wall time (s)."""
        est = self.mean_wall_s.get(f"{job.kind}/{job.group}")
        return est if est is not None else self._by_cost(job)

    def longest(self, job) -> float | None:
        """A cautious wall time (s): the longest measured of its kind and group (else :meth:`mean`)."""
        est = self.max_wall_s.get(f"{job.kind}/{job.group}")
        return est if est is not None else self._by_cost(job)


def progress(plan: Plan, workers: int | None = None) -> Progress:
    """Count done / running / failed / blocked / left jobs and estimate the time left: mean measured
    wall time per (kind, group), else the group's (then the plan-wide) seconds per cost unit times the
    job's cost, divided over ``workers`` (default: as many as jobs running now, at least 1)."""
    store = plan.store
    done = store.done_ids() & set(plan.by_id)
    running = {k: v for k, v in store.running().items() if k in plan.by_id and k not in done}
    failed = {}
    for j in plan.jobs:
        if j.id in done or j.id in running:
            continue
        f = store.read_failure(j.id)
        if f and f["attempts"] >= plan.max_attempts:
            failed[j.id] = f["error"].strip().splitlines()[-1][:200] if f.get("error") else "failed"
    blocked = set()
    changed = True
    while changed:
        changed = False
        for j in plan.jobs:
            if j.id in done or j.id in blocked or j.id in failed:
                continue
            if any(d in failed or d in blocked for d in j.deps):
                blocked.add(j.id)
                changed = True
    estimate = JobTimeEstimate.from_records(plan, done)
    mean_wall = estimate.mean_wall_s
    by_group: dict[str, dict[str, int]] = defaultdict(lambda: {"done": 0, "running": 0, "left": 0, "failed": 0})
    eta = 0.0
    unknown = False
    for j in plan.jobs:
        key = f"{j.kind}/{j.group}"
        if j.id in done:
            by_group[key]["done"] += 1
            continue
        if j.id in failed or j.id in blocked:
            by_group[key]["failed"] += 1
            continue
        by_group[key]["running" if j.id in running else "left"] += 1
        est = estimate.mean(j)
        if est is None:
            unknown = True
        else:
            if j.id in running:
                est = est / 2  # a running job is half done on average
            eta += est
    left = sum(1 for j in plan.jobs if j.id not in done and j.id not in running
               and j.id not in failed and j.id not in blocked)
    return Progress(total=len(plan.jobs), done=len(done), running=len(running), failed=len(failed),
                    blocked=len(blocked), left=left,
                    eta_s=None if unknown else eta / max(1, workers if workers is not None else len(running)),
                    by_group=dict(by_group), running_jobs=running, failed_jobs=failed, mean_wall_s=mean_wall)


# --------------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------------


class ParamsMismatchError(RuntimeError):
    pass


def check_records(plan: Plan) -> None:
    """Every stored record must belong to a job with the same params (else the config changed under
    existing results). Raises ParamsMismatchError naming the files."""
    bad = []
    for jid in sorted(plan.store.done_ids() & set(plan.by_id)):
        rec = plan.store.read_record(jid)
        if canonical_json(rec.get("params")) != plan.by_id[jid].params_key():
            bad.append(str(plan.store.record_path(jid)))
    if bad:
        raise ParamsMismatchError(
            f"{len(bad)} stored record(s) were made with other params than the plan now gives, e.g. "
            f"{bad[:3]}: field 'params' differs. The configuration changed under existing results: "
            "use a new results folder, or delete these records to recompute them.")


@dataclass
class WorkerSummary:
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # lock broken by another worker: result discarded


def _ready(job: Job, done: set[str]) -> bool:
    return all(d in done for d in job.deps)


def dead_jobs(plan: Plan, done: set[str]) -> set[str]:
    """Jobs that can never run: failed ``plan.max_attempts`` times, or depending on such a job."""
    dead = {j.id for j in plan.jobs if j.id not in done and plan.store.attempts(j.id) >= plan.max_attempts}
    changed = True
    while changed:
        changed = False
        for j in plan.jobs:
            if j.id not in dead and j.id not in done and any(d in dead for d in j.deps):
                dead.add(j.id)
                changed = True
    return dead


def with_dependencies(plan: Plan, job_ids: Iterable[str]) -> list[str]:
    """``job_ids`` and every job they depend on (transitively), in plan order."""
    keep: set[str] = set()
    stack = list(job_ids)
    while stack:
        jid = stack.pop()
        if jid in keep:
            continue
        if jid not in plan.by_id:
            raise KeyError(f"Job {jid!r} is not in plan {plan.name}")
        keep.add(jid)
        stack.extend(plan.by_id[jid].deps)
    return [j.id for j in plan.jobs if j.id in keep]


def select_jobs(plan: Plan, patterns: Iterable[str]) -> list[str]:
    """The jobs whose id matches one of the shell-style ``patterns`` (``fnmatch``, case-sensitive), with
    their dependencies, in plan order. A pattern that matches no job is an error (naming it)."""
    patterns = list(patterns)
    matched = []
    for pat in patterns:
        hits = [j.id for j in plan.jobs if fnmatch.fnmatchcase(j.id, pat)]
        if not hits:
            raise ValueError(f"Pattern {pat!r} matches no job of plan {plan.name} "
                             f"(job ids look like {plan.jobs[0].id!r}; list them with --dry-run)"
                             if plan.jobs else f"Plan {plan.name} has no jobs")
        matched.extend(hits)
    return with_dependencies(plan, matched)


def run_job(plan: Plan, job: Job, claim: Claim) -> bool:
    """Run one claimed job and write its record (only if the claim is still ours). True on success."""
    store = plan.store
    attempt = store.attempts(job.id) + 1
    dep_results = {d: store.read_record(d)["result"] for d in job.deps}
    work_dir = store.work_root / job.id
    ctx = JobContext(job=job, work_dir=work_dir, artifacts_dir=Path(plan.artifacts_dir),
                     dep_results=dep_results, settings=dict(plan.settings), attempt=attempt)
    started = time.time()
    started_iso = _now_iso()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        result = plan.functions[job.kind](dict(job.params), ctx)
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            raise TypeError(f"job function for kind {job.kind!r} returned {type(result).__name__}, expected dict")
        result = json.loads(canonical_json(result))
    except Exception as err:  # noqa: BLE001 - recorded as a failed attempt
        if not claim.owned():
            return False
        store.record_failure(job, traceback.format_exc(), attempt)
        logger.debug("Job %s failed (attempt %d/%d): %s", job.id, attempt, plan.max_attempts, err)
        return False
    wall = time.time() - started
    record = {
        "job_id": job.id, "kind": job.kind, "group": job.group, "params": job.params, "deps": list(job.deps),
        "result": result, "attempt": attempt, "started_at": started_iso, "finished_at": _now_iso(),
        "wall_time_s": round(wall, 3), "worker": {k: v for k, v in _owner().items() if k != "pid_start"},
    }
    if not claim.owned():
        logger.debug("Job %s: lock was broken by another worker while it ran; result discarded", job.id)
        return False
    store.write_record(record)
    store.clear_failure(job.id)
    if plan.after_job is not None:
        try:
            plan.after_job(plan, job)
        except Exception as err:  # noqa: BLE001 - the record is safe; a summary can be rebuilt later
            logger.warning("after_job hook failed after %s: %s", job.id, err)
    return True


def run_worker(plan: Plan, *, job_ids: Iterable[str] | None = None, max_jobs: int | None = None,
               poll_s: float = 5.0, wait: bool = True, retry_failed: bool = False,
               log: Callable[[str], None] | None = None,
               should_stop: Callable[[], bool] | None = None, deadline: float | None = None) -> WorkerSummary:
    """Claim and run ready jobs in plan order until none is left (or ``max_jobs`` ran).

    ``job_ids`` restricts the worker to those jobs (their dependencies must be done or done by others).
    With ``wait``, a worker that finds only jobs held by others or waiting on running dependencies
    polls every ``poll_s`` seconds; without, it returns. Failed jobs are retried up to
    ``plan.max_attempts`` (``retry_failed`` forgets earlier failures first). ``should_stop`` is asked before
    each claim; True ends the worker (a local worker process whose engine died). With ``deadline`` (a ``time.time()``
    value) the worker starts only jobs expected to end before it, by the longest measured wall time of their
    kind and group (:meth:`JobTimeEstimate.longest`: cost-based for a kind never measured; a job of a plan with
    nothing measured yet starts), and ends once none fits: a running job is never cut, so nothing computed is
    lost."""
    store = plan.store
    log = log or (lambda msg: logger.info(msg))
    worker = f"{socket.gethostname()}/{os.getpid()}"
    check_records(plan)
    store.clean_tmp_files()
    allowed = set(job_ids) if job_ids is not None else None
    if allowed is not None:
        unknown = allowed - set(plan.by_id)
        if unknown:
            raise KeyError(f"Jobs {sorted(unknown)[:5]} are not in plan {plan.name}")
    if retry_failed:
        store.reset_failures(allowed)
    summary = WorkerSummary()
    estimate, estimated_for = None, None  # with a deadline: wall-time estimates and the done jobs they come from
    while max_jobs is None or len(summary.ran) + len(summary.failed) < max_jobs:
        if should_stop is not None and should_stop():
            log("stopping: asked to (parent process gone)")
            break
        done = store.done_ids()
        pending = [j for j in plan.jobs if j.id not in done and (allowed is None or j.id in allowed)]
        if not pending:
            break
        dead = dead_jobs(plan, done)
        claimed = None
        waiting = False
        too_long: list[tuple[str, float]] = []
        if deadline is not None and done != estimated_for:  # records read again only when one was added
            estimate, estimated_for = JobTimeEstimate.from_records(plan, done), set(done)
        for job in pending:
            if job.id in dead:
                continue
            if not _ready(job, done):
                waiting = True
                continue
            if estimate is not None:
                need = estimate.longest(job) or 0.0
                if time.time() + need > deadline:
                    too_long.append((job.id, need))
                    continue
            claim = store.try_claim(job.id)
            if claim is None:
                waiting = True
                continue
            if store.is_done(job.id):  # finished by another worker between listing and claiming
                claim.release()
                continue
            claimed = (job, claim)
            break
        if claimed is None:
            if deadline is not None and time.time() >= deadline:
                log("stopping: the time limit is reached")
                break
            # with a time limit, wait for other workers only while some job is running: else what waits
            # depends on jobs that do not fit
            if waiting and wait and not (too_long and not store.running()):
                time.sleep(poll_s)
                continue
            if too_long:
                first, need = too_long[0]
                log(f"stopping: {len(too_long)} ready job(s) would not end within the time limit "
                    f"({format_duration(max(0.0, deadline - time.time()))} left; {first} may take "
                    f"{format_duration(need)})")
            break
        job, claim = claimed
        try:
            log(f"[{progress(plan).line()}] start {job.id} on {worker}")
            t0 = time.time()
            ok = run_job(plan, job, claim)
            took = format_duration(time.time() - t0)
            if ok:
                summary.ran.append(job.id)
                log(f"done {job.id} on {worker} in {took}: {job_outcome(plan, job)}")
            elif claim.owned():
                summary.failed.append(job.id)
                failure = store.read_failure(job.id) or {}
                log(f"FAILED {job.id} on {worker} after {took} (attempt {failure.get('attempts', '?')}/"
                    f"{plan.max_attempts}): {failure_reason(failure)} [traceback: {store.failure_path(job.id)}]")
            else:
                summary.lost.append(job.id)
                log(f"LOST {job.id} on {worker} after {took}: another worker broke its lock; result discarded")
        finally:
            claim.release()
    return summary


def failure_reason(failure: Mapping | None) -> str:
    """The one-line reason of a failure record: the last line of its traceback (the exception)."""
    lines = str((failure or {}).get("error") or "").strip().splitlines()
    return lines[-1][:300] if lines else "failed (no error recorded)"


def job_outcome(plan: Plan, job: Job) -> str:
    """A finished job's outcome in a few words (``plan.outcome``, else its result's ``score``)."""
    try:
        result = plan.store.read_record(job.id).get("result") or {}
    except (OSError, ValueError) as err:
        return f"record unreadable ({err})"
    if plan.outcome is not None:
        try:
            return plan.outcome(job, result)
        except Exception as err:  # noqa: BLE001 - a log line must not fail a finished job
            return f"recorded (outcome not summarised: {type(err).__name__}: {err})"
    score = result.get("score")
    return f"score {score:.4f}" if isinstance(score, (int, float)) else "recorded"


def quiet_library_output() -> None:
    """Silence per-batch progress bars (datasets' ``Map``, huggingface_hub, transformers' tqdm) and
    transformers' weight-loading reports in this process and the processes it starts, so that a study's log
    holds one line per job start and finish. Only what is printed changes, never a computed value."""
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _worker_entry(ref: PlanRef, kwargs: dict) -> dict:
    """Entry point of a worker process (local pool, submitit): rebuild the plan and run. The worker logs
    one line per job start and finish (stdout, time-stamped like ``study run``'s own lines); library
    progress bars and loading reports are silenced (:func:`quiet_library_output`)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        stream=sys.stdout)
    logging.getLogger("tasktransfer").setLevel(logging.INFO)
    quiet_library_output()
    kwargs = dict(kwargs)
    parent = kwargs.pop("parent_pid", None)
    if parent is not None:  # a local worker process stops claiming jobs once the process that started it is gone
        kwargs["should_stop"] = lambda: os.getppid() != parent
    plan = ref.load()
    summary = run_worker(plan, **kwargs)
    return dataclasses.asdict(summary)


def load_results(plan: Plan) -> dict[str, dict]:
    """job id -> stored record, for every finished job of the plan."""
    return {jid: plan.store.read_record(jid) for jid in sorted(plan.store.done_ids() & set(plan.by_id))}

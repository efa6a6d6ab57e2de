"""A cheap, deterministic job graph for testing the runner and the engines (imported by tests and by
worker processes through ``PlanRef("study_toy_plan:toy_plan", ...)``, with this folder on PYTHONPATH).

Graph for ``n``: ``gen-i`` (i < n) draws a seeded number; ``mix-i`` (i < n-1) depends on gen-i and
gen-(i+1) and adds their values to its own draw; ``total`` depends on every mix job. Every start and
end is appended to ``<root>/events.log`` (one O_APPEND write per line) so tests can count executions.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tasktransfer_utils.study.runner import Job, Plan

TESTS_DIR = str(Path(__file__).resolve().parent)


def _event(root: Path, what: str, job_id: str) -> None:
    line = f"{what} {job_id} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(root / "events.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _behave(params: dict, ctx) -> None:
    root = Path(params["root"])
    _event(root, "start", ctx.job.id)
    mode = params.get("mode", "")
    if mode == "fail":
        raise RuntimeError(f"job {ctx.job.id} fails on purpose")
    if mode == "fail_once":
        marker = root / f"failed-once-{ctx.job.id}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"job {ctx.job.id} fails on its first attempt")
    if mode == "die_once":  # the process dies without any chance to write a failure
        marker = root / f"died-once-{ctx.job.id}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    if mode == "slow_once":  # the first attempt outlives a short time limit (SLURM requeue test)
        marker = root / f"slow-once-{ctx.job.id}"
        if not marker.exists():
            marker.touch()
            time.sleep(600)
    time.sleep(float(params.get("sleep_s", 0.0)))


def gen(params: dict, ctx) -> dict:
    _behave(params, ctx)
    value = random.Random(params["seed"] * 1000 + params["i"]).random()
    (ctx.work_dir / "scratch.txt").write_text(str(value))
    _event(Path(params["root"]), "end", ctx.job.id)
    return {"value": value, "i": params["i"]}


def mix(params: dict, ctx) -> dict:
    _behave(params, ctx)
    own = random.Random(params["seed"] * 7919 + params["i"]).random()
    value = own + sum(r["value"] for r in ctx.dep_results.values())
    _event(Path(params["root"]), "end", ctx.job.id)
    return {"value": value, "own": own}


def total(params: dict, ctx) -> dict:
    _behave(params, ctx)
    value = sum(r["value"] for r in ctx.dep_results.values())
    _event(Path(params["root"]), "end", ctx.job.id)
    return {"value": value, "n_deps": len(ctx.dep_results)}


def toy_plan(root: str, n: int = 6, sleep_s: float = 0.0, seed: int = 0, modes: dict | None = None,
             max_attempts: int = 2, stale_after_s: float = 600.0, heartbeat_s: float = 30.0) -> Plan:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    modes = modes or {}

    def params(i=None, **extra):
        p = {"root": str(root), "seed": seed, "sleep_s": sleep_s, **extra}
        if i is not None:
            p["i"] = i
        return p

    jobs = []
    for i in range(n):
        jid = f"gen-{i}"
        jobs.append(Job(jid, "gen", {**params(i), "mode": modes.get(jid, "")}, group="A", cost=1.0))
    for i in range(n - 1):
        jid = f"mix-{i}"
        jobs.append(Job(jid, "mix", {**params(i), "mode": modes.get(jid, "")}, deps=(f"gen-{i}", f"gen-{i + 1}"),
                        group="B", cost=2.0))
    jobs.append(Job("total", "total", {**params(), "mode": modes.get("total", "")},
                    deps=tuple(f"mix-{i}" for i in range(n - 1)), group="B", cost=1.0))
    return Plan(jobs=jobs, functions={"gen": gen, "mix": mix, "total": total},
                records_dir=root / "records", state_dir=root / "state", name="toy",
                max_attempts=max_attempts, stale_after_s=stale_after_s, heartbeat_s=heartbeat_s)


def read_events(root) -> list[tuple[str, str, int]]:
    path = Path(root) / "events.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, jid, pid, _ = line.split()
        out.append((what, jid, int(pid)))
    return out

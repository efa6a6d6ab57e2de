"""The runner's guarantees on a cheap job graph: dependency order, atomic records, resume after
SIGKILL with identical results, one execution per job across concurrent workers, stale-lock recovery."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from study_toy_plan import TESTS_DIR, read_events, toy_plan
from tasktransfer_utils.study.runner import (Job, JobTimeEstimate, Plan, PlanRef, ParamsMismatchError, atomic_write_json,
                                             job_wall_time_s, load_results, progress, run_worker, select_jobs,
                                             with_dependencies)

REPO = Path(__file__).resolve().parent.parent


def _results(plan) -> dict:
    return {jid: rec["result"] for jid, rec in load_results(plan).items()}


def _worker_cmd(root, **kw) -> list[str]:
    """A worker process that rebuilds the toy plan through a PlanRef and runs it."""
    args = (str(root),) + tuple(kw.get(k) for k in ("n", "sleep_s") if k in kw)
    code = (
        "from tasktransfer_utils.study.runner import PlanRef, run_worker\n"
        f"run_worker(PlanRef('study_toy_plan:toy_plan', {args!r}).load(), poll_s=0.05)\n"
    )
    return [sys.executable, "-c", code]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR, str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_sequential_run_respects_dependencies_and_values(tmp_path):
    plan = toy_plan(tmp_path, n=4)
    summary = run_worker(plan, wait=False)
    assert sorted(summary.ran) == sorted(j.id for j in plan.jobs)
    events = [e for e in read_events(tmp_path) if e[0] == "start"]
    order = [jid for _, jid, _ in events]
    for job in plan.jobs:  # every dependency started (and ended) before its dependent
        for dep in job.deps:
            assert order.index(dep) < order.index(job.id)
    res = _results(plan)
    # values computed another way: by hand from the same seeded draws
    import random

    gen = [random.Random(i).random() for i in range(4)]
    mix = [random.Random(7919 * 0 + i).random() + gen[i] + gen[i + 1] for i in range(3)]
    assert res["gen-2"]["value"] == pytest.approx(gen[2], abs=0)
    assert res["mix-1"]["value"] == pytest.approx(mix[1], rel=1e-15)
    assert res["total"]["value"] == pytest.approx(sum(mix), rel=1e-14)
    rec = json.loads((tmp_path / "records" / "total.json").read_text())
    assert rec["job_id"] == "total" and rec["deps"] == ["mix-0", "mix-1", "mix-2"] and rec["wall_time_s"] >= 0
    # a second run skips everything
    assert run_worker(toy_plan(tmp_path, n=4), wait=False).ran == []
    assert len([e for e in read_events(tmp_path) if e[0] == "start"]) == len(plan.jobs)
    p = progress(plan)
    assert (p.done, p.left, p.running, p.failed) == (len(plan.jobs), 0, 0, 0)
    assert p.eta_s == 0


def test_plan_validation_names_the_problem(tmp_path):
    f = {"k": lambda p, c: {}}
    with pytest.raises(ValueError, match="dependencies"):
        Plan([Job("a", "k", {}, deps=("b",))], f, tmp_path / "r", tmp_path / "s")
    with pytest.raises(ValueError, match="cycle"):
        Plan([Job("a", "k", {}, deps=("b",)), Job("b", "k", {}, deps=("a",))], f, tmp_path / "r", tmp_path / "s")
    with pytest.raises(ValueError, match="duplicate"):
        Plan([Job("a", "k", {}), Job("a", "k", {})], f, tmp_path / "r", tmp_path / "s")
    with pytest.raises(ValueError, match="no function"):
        Plan([Job("a", "other", {})], f, tmp_path / "r", tmp_path / "s")
    with pytest.raises(ValueError, match="file-name-safe"):
        Job("a/b", "k", {})


def test_changed_params_under_existing_records_are_refused(tmp_path):
    run_worker(toy_plan(tmp_path, n=2), wait=False)
    changed = toy_plan(tmp_path, n=2, seed=1)
    with pytest.raises(ParamsMismatchError, match="params"):
        run_worker(changed, wait=False)


def test_atomic_write_never_leaves_a_partial_record(tmp_path):
    """A process killed between writing the temporary file and renaming it leaves no record
    (the job is not done) and only a temporary file, which a later run removes."""
    plan = toy_plan(tmp_path, n=2)
    code = (
        "import os, signal\n"
        "import tasktransfer_utils.study.runner as r\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"r.atomic_write_json({str(tmp_path / 'records' / 'gen-0.json')!r}, {{'job_id': 'gen-0', 'x': 'y' * 100000}})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env())
    assert proc.returncode == -signal.SIGKILL
    assert not plan.store.is_done("gen-0")
    leftovers = list((tmp_path / "records").glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 100000
    assert plan.store.clean_tmp_files() == 1
    assert list((tmp_path / "records").iterdir()) == []
    # and the normal path leaves exactly the record
    atomic_write_json(tmp_path / "records" / "x.json", {"a": 1})
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["x.json"]


def test_sigkill_mid_study_then_restart_gives_identical_results(tmp_path):
    ref_plan = toy_plan(tmp_path / "reference", n=6)
    run_worker(ref_plan, wait=False)
    reference = _results(ref_plan)

    root = tmp_path / "killed"
    proc = subprocess.Popen(_worker_cmd(root, n=6, sleep_s=0.4), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plan = toy_plan(root, n=6, sleep_s=0.4)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill while a job runs, after a few finished
        started = [e for e in read_events(root) if e[0] == "start"]
        if len(plan.store.done_ids()) >= 3 and len(started) > len(plan.store.done_ids()):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = plan.store.done_ids()
    assert 3 <= len(done_before) < len(plan.jobs)
    orphan_locks = [p.stem for p in (root / "state" / "locks").glob("*.lock")]
    assert len(orphan_locks) == 1 and orphan_locks[0] not in done_before  # killed mid-job, lock left
    assert progress(plan).running == 0  # the dead owner's lock is recognised as stale

    summary = run_worker(toy_plan(root, n=6, sleep_s=0.4), wait=False)
    assert sorted(summary.ran) == sorted(set(j.id for j in plan.jobs) - done_before)
    records = sorted(p.name for p in (root / "records").iterdir())
    assert records == sorted(f"{j.id}.json" for j in plan.jobs)  # each exactly once, no temporaries
    assert _results(plan) == reference
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    ends = Counter(jid for what, jid, _ in read_events(root) if what == "end")
    assert ends == Counter({j.id: 1 for j in plan.jobs})
    assert starts[orphan_locks[0]] == 2 and sum(starts.values()) == len(plan.jobs) + 1
    assert list((root / "state" / "locks").glob("*.lock")) == []


def test_concurrent_workers_never_run_the_same_job(tmp_path):
    procs = [subprocess.Popen(_worker_cmd(tmp_path, n=8, sleep_s=0.05), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    plan = toy_plan(tmp_path, n=8)
    events = read_events(tmp_path)
    starts = Counter(jid for what, jid, _ in events if what == "start")
    assert starts == Counter({j.id: 1 for j in plan.jobs})
    assert len({pid for _, _, pid in events}) >= 2  # the work really was shared
    ref = toy_plan(tmp_path / "ref", n=8)
    run_worker(ref, wait=False)
    assert _results(plan) == _results(ref)


def test_claims_are_exclusive_and_stale_locks_are_broken(tmp_path):
    plan = toy_plan(tmp_path, n=2, stale_after_s=5.0)
    store = plan.store
    first = store.try_claim("gen-0")
    assert first is not None and first.owned()
    assert store.try_claim("gen-0") is None  # held by a live process (this one)
    first.release()
    assert store.lock_info("gen-0") is None
    again = store.try_claim("gen-0")
    assert again is not None
    again.release()

    lock = store.lock_path("gen-1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"token": "t", "host": socket.gethostname(), "pid": dead.pid, "pid_start": "1"}))
    assert store.is_stale(store.lock_info("gen-1"))  # owner gone on this host
    claim = store.try_claim("gen-1")
    assert claim is not None and claim.owned()
    claim.release()

    lock.write_text(json.dumps({"token": "t", "host": "another-node", "pid": 1}))
    assert store.try_claim("gen-1") is None  # other host, fresh heartbeat: must be trusted
    old = time.time() - 10
    os.utime(lock, (old, old))
    assert store.is_stale(store.lock_info("gen-1"))  # heartbeat older than stale_after_s
    claim = store.try_claim("gen-1")
    assert claim is not None
    claim.release()


def test_heartbeat_keeps_a_long_job_alive_and_a_broken_lock_discards_the_result(tmp_path):
    plan = toy_plan(tmp_path, n=2, heartbeat_s=0.05, stale_after_s=0.5)
    claim = plan.store.try_claim("gen-0")
    path = plan.store.lock_path("gen-0")
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.stat(path).st_mtime < 0.3  # the heartbeat thread refreshed it
    # another worker breaks the lock (e.g. this one was suspended): our result must not be stored
    path.unlink()
    thief = plan.store.try_claim("gen-0")
    from tasktransfer_utils.study.runner import run_job

    assert run_job(plan, plan.by_id["gen-0"], claim) is False
    assert not plan.store.is_done("gen-0")
    claim.release()
    assert thief.owned()  # releasing the lost claim did not remove the new owner's lock
    thief.release()


def test_failures_are_retried_then_block_dependents(tmp_path):
    plan = toy_plan(tmp_path, n=3, modes={"gen-0": "fail_once", "gen-2": "fail"}, max_attempts=2)
    summary = run_worker(plan, wait=False)
    assert "gen-0" in summary.ran and summary.failed.count("gen-0") == 1  # failed once, then succeeded
    assert summary.failed.count("gen-2") == 2  # failed on both attempts
    assert plan.store.attempts("gen-2") == 2
    failure = plan.store.read_failure("gen-2")
    assert "fails on purpose" in failure["error"]
    done = plan.store.done_ids()
    assert {"gen-0", "gen-1", "mix-0"} <= done and not {"gen-2", "mix-1", "total"} & done
    p = progress(plan)
    assert p.failed == 1 and p.blocked == 2 and p.left == 0
    assert "gen-2" in p.table()
    # retry_failed forgets the failures; the job still fails, dependents stay blocked
    summary = run_worker(plan, wait=False, retry_failed=True)
    assert summary.failed == ["gen-2", "gen-2"]


def test_progress_eta_uses_measured_times(tmp_path):
    plan = toy_plan(tmp_path, n=3, sleep_s=0.1)
    run_worker(plan, wait=False, max_jobs=2)  # gen-0, gen-1 (group A)
    p = progress(plan)
    assert p.done == 2 and p.left == len(plan.jobs) - 2
    walls = [json.loads((tmp_path / "records" / f"gen-{i}.json").read_text())["wall_time_s"] for i in range(2)]
    mean_a = sum(walls) / 2
    # one gen job left at the measured mean; mix/total (group B) at seconds-per-cost-unit x cost
    per_cost = sum(walls) / 2.0
    expected = mean_a + per_cost * (2.0 + 2.0 + 1.0)
    assert p.eta_s == pytest.approx(expected, rel=1e-9)
    assert p.by_group["gen/A"] == {"done": 2, "running": 0, "left": 1, "failed": 0}
    assert "ETA" in p.line()


def test_progress_eta_falls_back_to_the_groups_seconds_per_cost(tmp_path):
    """An unmeasured kind is estimated from its own group's seconds per cost unit (a study's QA transfers
    from its QA fine-tunes), not the plan-wide rate; workers default to the jobs running now (>= 1)."""
    plan = toy_plan(tmp_path, n=3, sleep_s=0.1)
    run_worker(plan, wait=False, max_jobs=4)  # gen-0..2 (group A, cost 1), mix-0 (group B, cost 2)
    wall = {j: json.loads((tmp_path / "records" / f"{j}.json").read_text())["wall_time_s"]
            for j in ("gen-0", "gen-1", "gen-2", "mix-0")}
    p = progress(plan)
    assert p.done == 4 and p.running == 0
    # left: mix-1 at mix's measured mean; total (kind unmeasured, group B) at group B's seconds per cost x 1
    expected = wall["mix-0"] + wall["mix-0"] / 2.0 * 1.0
    assert p.eta_s == pytest.approx(expected, rel=1e-9)
    assert progress(plan, workers=2).eta_s == pytest.approx(expected / 2, rel=1e-9)


def test_job_time_estimate_from_records_by_hand(tmp_path):
    """Mean and longest wall time per kind and group, and the cost-based fallback, against the records' own
    (rewritten) wall times."""
    plan = toy_plan(tmp_path, n=3)
    run_worker(plan, wait=False, max_jobs=4)  # gen-0..2 (group A, cost 1), mix-0 (group B, cost 2)
    walls = {"gen-0": 10.0, "gen-1": 40.0, "gen-2": 25.0, "mix-0": 300.0}
    for jid, w in walls.items():
        path = tmp_path / "records" / f"{jid}.json"
        rec = json.loads(path.read_text())
        rec["wall_time_s"] = w
        path.write_text(json.dumps(rec))
    est = JobTimeEstimate.from_records(plan)
    by_id = plan.by_id
    assert est.mean(by_id["gen-2"]) == pytest.approx(25.0) and est.longest(by_id["gen-2"]) == 40.0
    assert est.mean(by_id["mix-1"]) == est.longest(by_id["mix-1"]) == 300.0
    # total: kind never measured, group B: group B's seconds per cost unit (300 / 2) x its cost (1)
    assert by_id["total"].group == "B" and by_id["total"].cost == 1.0
    assert est.mean(by_id["total"]) == est.longest(by_id["total"]) == pytest.approx(150.0)
    assert progress(plan).eta_s == pytest.approx(300.0 + 150.0)


def test_a_resumed_job_counts_every_attempt(tmp_path):
    """A fine-tune resumed from a checkpoint: its record's wall time covers the last attempt only (SST-2's FULL
    fine-tune: 674 s for its last 902 of 6,315 steps), its result's adds every attempt (3,687 s); the estimates
    take the latter. Other records keep their own wall time."""
    resumed = {"wall_time_s": 674.0, "result": {"wall_time_s": 3687.0, "resumed_from_steps": [4418, 5413]}}
    assert job_wall_time_s(resumed) == 3687.0
    not_resumed = {"wall_time_s": 120.0, "result": {"wall_time_s": 100.0, "resumed_from_steps": None}}
    assert job_wall_time_s(not_resumed) == 120.0
    assert job_wall_time_s({"wall_time_s": 50.0, "result": {"wall_time_s": 900.0}}) == 50.0  # not resumed
    assert job_wall_time_s({"result": {}}) is None
    plan = toy_plan(tmp_path, n=3)
    run_worker(plan, wait=False, max_jobs=4)
    for jid, w in {"gen-0": 10.0, "gen-1": 40.0, "gen-2": 25.0}.items():
        path = tmp_path / "records" / f"{jid}.json"
        rec = json.loads(path.read_text())
        rec["wall_time_s"] = w
        if jid == "gen-0":
            rec["result"] = {**(rec["result"] or {}), "wall_time_s": 70.0, "resumed_from_steps": [3]}
        path.write_text(json.dumps(rec))
    est = JobTimeEstimate.from_records(plan)
    assert est.longest(plan.by_id["gen-2"]) == 70.0 and est.mean(plan.by_id["gen-2"]) == pytest.approx(45.0)


def test_time_limit_starts_only_jobs_that_fit_and_stops(tmp_path, monkeypatch):
    """With a deadline a worker skips jobs whose cautious estimate does not fit, runs those that do, and ends
    (without waiting) once nothing fits; a deadline already past runs nothing."""
    plan = toy_plan(tmp_path, n=4)
    need = {"gen": 1.0, "mix": 1000.0, "total": 1.0}
    monkeypatch.setattr(JobTimeEstimate, "longest", lambda self, job: need[job.kind])
    lines: list[str] = []
    summary = run_worker(plan, deadline=time.time() + 100, poll_s=0.01, log=lines.append)
    assert summary.ran == ["gen-0", "gen-1", "gen-2", "gen-3"] and summary.failed == []
    assert "3 ready job(s) would not end within the time limit" in lines[-1] and "mix-0 may take 16m40s" in lines[-1]
    assert plan.store.done_ids() == {"gen-0", "gen-1", "gen-2", "gen-3"}  # nothing lost, the rest resumable
    lines.clear()
    assert run_worker(plan, deadline=time.time() - 1, log=lines.append).ran == []
    assert lines[-1] == "stopping: the time limit is reached"
    need["mix"] = 1.0
    assert sorted(run_worker(plan, deadline=time.time() + 100, poll_s=0.01).ran) == [
        "mix-0", "mix-1", "mix-2", "total"]


def test_planref_rebuilds_the_plan(tmp_path):
    plan = PlanRef("study_toy_plan:toy_plan", (str(tmp_path), 3)).load()
    assert [j.id for j in plan.jobs][:3] == ["gen-0", "gen-1", "gen-2"] and plan.ref is not None
    with pytest.raises(ValueError, match="module:function"):
        PlanRef("no_colon").load()


def test_after_job_hook_runs_after_each_record_and_cannot_lose_it(tmp_path):
    plan = toy_plan(tmp_path, n=2)
    seen = []

    def hook(p, job):
        seen.append((job.id, p.store.is_done(job.id)))
        if job.id == "gen-1":
            raise RuntimeError("summary failed")

    plan.after_job = hook
    summary = run_worker(plan, wait=False)
    assert sorted(summary.ran) == sorted(j.id for j in plan.jobs) and summary.failed == []
    assert sorted(seen) == sorted((j.id, True) for j in plan.jobs)  # after the record, every job


def test_select_jobs_adds_dependencies_in_plan_order(tmp_path):
    plan = toy_plan(tmp_path, n=4)  # gen-0..3, mix-0..2 (mix-i needs gen-i, gen-i+1), total
    assert select_jobs(plan, ["mix-1"]) == ["gen-1", "gen-2", "mix-1"]
    assert select_jobs(plan, ["mix-2", "gen-0"]) == ["gen-0", "gen-2", "gen-3", "mix-2"]
    assert select_jobs(plan, ["gen-[13]"]) == ["gen-1", "gen-3"]
    assert select_jobs(plan, ["total"]) == [j.id for j in plan.jobs]
    assert with_dependencies(plan, ["mix-0", "mix-0"]) == ["gen-0", "gen-1", "mix-0"]
    with pytest.raises(ValueError, match="'mix-9'.*matches no job"):
        select_jobs(plan, ["mix-1", "mix-9"])
    with pytest.raises(KeyError, match="nope"):
        with_dependencies(plan, ["nope"])


def test_worker_restricted_to_selected_jobs_runs_only_those(tmp_path):
    plan = toy_plan(tmp_path, n=4)
    summary = run_worker(plan, job_ids=select_jobs(plan, ["mix-1"]), wait=False)
    assert sorted(summary.ran) == ["gen-1", "gen-2", "mix-1"]
    assert set(load_results(plan)) == {"gen-1", "gen-2", "mix-1"}
    # the rest of the study afterwards: every job exactly once, same values as one uninterrupted run
    run_worker(plan, wait=False)
    starts = Counter(jid for what, jid, _ in read_events(tmp_path) if what == "start")
    assert starts == Counter({j.id: 1 for j in plan.jobs})
    ref = toy_plan(tmp_path / "ref", n=4)
    run_worker(ref, wait=False)
    assert _results(plan) == _results(ref)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: relative path -> (size, mtime in ns); folders size -1."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (-1 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def test_reading_a_plans_state_writes_nothing(tmp_path):
    """Building a plan and asking its progress, records, locks and failures creates no folder or file
    (what `study status` and `study run --dry-run` do); the first claim and record make them."""
    from tasktransfer_utils.study.runner import check_records, dead_jobs

    plan = toy_plan(tmp_path / "toy", n=3)
    before = _tree(tmp_path)
    assert before == {"toy": before["toy"]}  # the toy plan's own root only
    p = progress(plan, workers=2)
    assert (p.done, p.running, p.left) == (0, 0, len(plan.jobs)) and p.table()
    check_records(plan)
    assert plan.store.done_ids() == set() and plan.store.running() == {} and dead_jobs(plan, set()) == set()
    assert plan.store.attempts("gen-0") == 0 and plan.store.clean_tmp_files() == 0
    assert _tree(tmp_path) == before
    run_worker(plan, wait=False, log=lambda m: None)
    assert len(plan.store.done_ids()) == len(plan.jobs) and list(plan.store.locks_dir.glob("*.lock")) == []


def test_worker_logs_one_line_per_job_start_and_finish(tmp_path):
    """One line when a job starts (with the progress/ETA line) and one when it ends: worker, wall time and
    outcome (the plan's summary of the result), or the failure's one-line reason."""
    plan = toy_plan(tmp_path / "toy", n=2, modes={"mix-0": "fail"}, max_attempts=1)
    plan.outcome = lambda job, result: f"value {result['value']:.3f}"
    lines: list[str] = []
    summary = run_worker(plan, wait=False, log=lines.append)
    assert summary.ran == ["gen-0", "gen-1"] and summary.failed == ["mix-0"]
    worker = f"{socket.gethostname()}/{os.getpid()}"
    assert len(lines) == 6, lines  # total is blocked by the failure: never started
    for line, jid in zip(lines[0::2], ["gen-0", "gen-1", "mix-0"]):
        assert line.startswith("[") and "ETA" in line and line.endswith(f"] start {jid} on {worker}")
    value = load_results(plan)["gen-0"]["result"]["value"]
    assert lines[1].startswith(f"done gen-0 on {worker} in ") and lines[1].endswith(f": value {value:.3f}")
    failed = lines[5]
    assert failed.startswith(f"FAILED mix-0 on {worker} after ") and "(attempt 1/1)" in failed
    assert "RuntimeError: job mix-0 fails on purpose" in failed and str(plan.store.failure_path("mix-0")) in failed
    assert all("\n" not in line for line in lines)
    plan.outcome = None  # default: the result's score when it has one, else "recorded"
    lines.clear()
    run_worker(toy_plan(tmp_path / "again", n=1), wait=False, log=lines.append)
    assert lines[1].endswith(": recorded")

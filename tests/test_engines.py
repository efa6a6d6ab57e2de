"""Engines: local worker processes and submitit's local executor run the same plan to the same results,
each job once; failed and killed jobs are submitted again up to the attempt limit."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from study_toy_plan import TESTS_DIR, read_events, toy_plan
from tasktransfer_utils.study.engines import LocalEngine, SubmititEngine, make_engine
from tasktransfer_utils.study.runner import PlanRef, load_results, run_worker, select_jobs


@pytest.fixture(autouse=True)
def _toy_importable(monkeypatch):
    """Worker processes import the toy plan's module: put the tests folder on their PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    if TESTS_DIR not in sys.path:
        monkeypatch.syspath_prepend(TESTS_DIR)


def _reference(tmp_path, n):
    ref = toy_plan(tmp_path / "reference", n=n)
    run_worker(ref, wait=False)
    return {j: r["result"] for j, r in load_results(ref).items()}


def _results(plan):
    return {j: r["result"] for j, r in load_results(plan).items()}


def test_local_engine_with_two_worker_processes(tmp_path):
    root = tmp_path / "pool"
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 6, 0.05)).load()
    summary = LocalEngine(workers=2, poll_s=0.05).run(plan, log=lambda m: None)
    assert sorted(summary.ran) == sorted(j.id for j in plan.jobs)
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    assert starts == Counter({j.id: 1 for j in plan.jobs})
    assert len({pid for _, _, pid in read_events(root)}) == 2
    assert _results(plan) == _reference(tmp_path, 6)


def test_local_engine_passes_the_time_limit_to_its_worker_processes(tmp_path):
    """A deadline already past: neither worker process starts a job (the toy jobs take milliseconds, so only
    the deadline can stop them); the same plan then runs to the end without one."""
    plan = PlanRef("study_toy_plan:toy_plan", (str(tmp_path / "pool"), 3)).load()
    assert LocalEngine(workers=2, poll_s=0.05).run(plan, log=lambda m: None, deadline=time.time() - 1).ran == []
    assert plan.store.done_ids() == set()
    assert sorted(LocalEngine(workers=2, poll_s=0.05).run(plan, log=lambda m: None).ran) == sorted(plan.by_id)


def test_local_engine_needs_a_planref_for_several_workers(tmp_path):
    with pytest.raises(ValueError, match="PlanRef"):
        LocalEngine(workers=2).run(toy_plan(tmp_path, n=2))


def test_submitit_local_executor_runs_arrays_in_dependency_waves(tmp_path):
    root = tmp_path / "submitit"
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 4)).load()
    logs = []
    engine = SubmititEngine(folder=tmp_path / "submitit_logs", cluster="local", poll_s=0.2,
                            resources={"default": {"timeout_min": 5}, "B": {"timeout_min": 4}})
    summary = engine.run(plan, log=logs.append)
    assert sorted(summary.ran) == sorted(j.id for j in plan.jobs)
    assert _results(plan) == _reference(tmp_path, 4)
    submitted = [m for m in logs if m.startswith("submitted")]
    # first array: the four gen jobs (group A); then B arrays as their dependencies finish
    assert submitted[0].startswith("submitted 4 A job(s)")
    later = [m.split()[1:3] for m in submitted[1:]]
    assert all(group == "B" for _, group in later) and sum(int(n) for n, _ in later) == 4
    records = load_results(plan)
    assert len({r["worker"]["pid"] for r in records.values()}) == len(plan.jobs)  # one process per task


def test_submitit_engine_resubmits_failed_and_killed_jobs(tmp_path):
    root = tmp_path / "requeue"
    modes = {"gen-0": "fail_once", "gen-1": "die_once", "gen-2": "fail"}
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 3, 0.0, 0, modes)).load()
    logs = []
    engine = SubmititEngine(folder=tmp_path / "logs", cluster="local", poll_s=0.2)
    summary = engine.run(plan, log=logs.append)
    done = plan.store.done_ids()
    assert {"gen-0", "gen-1"} <= done  # each failed once (exception / SIGKILL) and was resubmitted
    assert "gen-2" not in done and plan.store.attempts("gen-2") == plan.max_attempts
    assert not {"mix-1", "total"} & done and "mix-0" in done
    assert Counter(summary.failed) == Counter({"gen-0": 1, "gen-1": 1, "gen-2": 2})
    failure = plan.store.read_failure("gen-2")
    assert "fails on purpose" in failure["error"]
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    assert starts["gen-0"] == 2 and starts["gen-1"] == 2 and starts["gen-2"] == 2
    assert any("FAILED gen-1" in m for m in logs)


def test_make_engine_reads_config_and_flags(tmp_path):
    e = make_engine({"kind": "local", "workers": 3}, default_folder=tmp_path)
    assert isinstance(e, LocalEngine) and e.workers == 3
    assert make_engine({"kind": "local", "workers": 3}, default_folder=tmp_path, workers=1).workers == 1
    s = make_engine({"kind": "slurm", "resources": {"QA": {"mem_gb": 32}}}, default_folder=tmp_path)
    assert isinstance(s, SubmititEngine) and s.cluster == "slurm" and s.folder == tmp_path
    s = make_engine(None, default_folder=tmp_path, kind="submitit-local")
    assert s.cluster == "local"
    # a command-line engine other than the config's ignores the config's engine-specific fields
    e = make_engine({"kind": "slurm", "resources": {"default": {"mem_gb": 4}}, "poll_s": 2}, default_folder=tmp_path,
                    kind="local")
    assert isinstance(e, LocalEngine) and e.poll_s == 2
    with pytest.raises(ValueError, match="unknown field"):
        make_engine({"kind": "local", "gpus": 1}, default_folder=tmp_path)
    with pytest.raises(ValueError, match="engine kind"):
        make_engine({"kind": "kubernetes"}, default_folder=tmp_path)


def test_submitit_group_resources_lay_over_default(tmp_path):
    """Per-group resources: the group's dict over "default", a job name, SLURM's requeue signal delay
    (no SLURM needed; test_slurm.py checks what a real SLURM executor makes of them)."""
    engine = SubmititEngine(folder=tmp_path, cluster="slurm",
                            resources={"default": {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 8},
                                       "QA": {"timeout_min": 240, "mem_gb": 32, "gpus_per_node": 1}})
    assert engine.parameters("QA") == {"timeout_min": 240, "cpus_per_task": 4, "mem_gb": 32, "gpus_per_node": 1,
                                       "name": "tasktransfer-QA", "slurm_signal_delay_s": 60}
    assert engine.parameters("CR") == {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 8,
                                       "name": "tasktransfer-CR", "slurm_signal_delay_s": 60}
    local = SubmititEngine(folder=tmp_path, cluster="local", resources={"default": {"timeout_min": 5}})
    assert local.parameters("SL") == {"timeout_min": 5, "name": "tasktransfer-SL"}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is still running (a zombie has exited: its new parent reaps it later)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> set[int]:
    """The pids of the processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_worker_processes_die_with_their_engine(tmp_path):
    """SIGKILL of the engine process kills its worker processes at once, with the jobs in their hands (no
    orphan keeps using the machine); a restarted run breaks their locks as stale and runs those jobs again,
    giving the results of an uninterrupted run."""
    import signal
    import subprocess
    import time

    root = tmp_path / "orphans"
    code = ("from tasktransfer_utils.study.runner import PlanRef\n"
            "from tasktransfer_utils.study.engines import LocalEngine\n"
            f"plan = PlanRef('study_toy_plan:toy_plan', ({str(root)!r}, 8, 3.0)).load()\n"
            "LocalEngine(workers=2, poll_s=0.05).run(plan, log=lambda m: None)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    plan = toy_plan(root, n=8, sleep_s=3.0)
    deadline = time.time() + 60
    while time.time() < deadline and len({j for what, j, _ in read_events(root) if what == "start"}) < 2:
        time.sleep(0.05)
    time.sleep(0.2)
    workers = _children(proc.pid)
    held = {jid: info["pid"] for jid, info in plan.store.running().items()}
    assert len(held) == 2 and set(held.values()) <= workers, (held, workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # far less than the 3 s each job sleeps
    assert [pid for pid in workers if _alive(pid)] == []
    assert plan.store.done_ids() == set()  # killed with their jobs in hand: nothing recorded
    assert plan.store.running() == {}  # their locks are stale at once (same host, owner gone)

    fast = toy_plan(root, n=8, sleep_s=0.0)
    summary = run_worker(fast, wait=False)  # the restart breaks the stale locks and redoes the jobs
    assert set(held) <= set(summary.ran) and summary.failed == [] and summary.lost == []
    assert _results(fast) == _reference(tmp_path, 8)
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    assert {jid for jid, n in starts.items() if n == 2} == set(held)  # only the interrupted jobs ran twice
    assert list(plan.store.locks_dir.glob("*.lock")) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method", ["auto", "watchdog"])
def test_die_with_parent(tmp_path, method):
    """A process that called die_with_parent (prctl on Linux, or the portable watchdog thread) is gone within
    a poll period of its parent's SIGKILL."""
    import signal
    import subprocess
    import time

    child = ("import time\n"
             "from tasktransfer_utils.study.engines import die_with_parent\n"
             "import os, sys\n"
             f"used = die_with_parent(os.getppid(), method={method!r}, poll_s=0.1)\n"
             "print(used, flush=True)\n"
             "time.sleep(60)\n")
    parent = ("import subprocess, sys\n"
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=sys.stdout)\n"
              "print(c.pid, flush=True)\n"
              "c.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    used = proc.stdout.readline().strip()
    assert used == ("prctl" if method == "auto" else "watchdog")
    assert _alive(child_pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and _alive(child_pid):
        time.sleep(0.05)
    assert not _alive(child_pid)
    with pytest.raises(ValueError, match="method"):
        from tasktransfer_utils.study.engines import die_with_parent

        die_with_parent(os.getppid(), method="signal")


def test_local_engine_recycles_worker_processes(tmp_path):
    root = tmp_path / "recycle"
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 4)).load()
    summary = LocalEngine(workers=1, poll_s=0.05, recycle_after=3).run(plan, log=lambda m: None)
    assert sorted(summary.ran) == sorted(j.id for j in plan.jobs)  # 8 jobs
    pids = [pid for what, _, pid in read_events(root) if what == "start"]
    assert len(set(pids)) == 3 and all(c <= 3 for c in Counter(pids).values())  # 3 + 3 + 2 jobs
    assert pids.index(pids[-1]) == 6 and os.getpid() not in pids
    assert _results(plan) == _reference(tmp_path, 4)
    with pytest.raises(ValueError, match="recycle_after"):
        LocalEngine(recycle_after=0).run(plan)


@pytest.mark.parametrize("workers,recycle_after", [(1, 2), (2, None)])
def test_local_engine_replaces_a_worker_killed_mid_job(tmp_path, workers, recycle_after):
    root = tmp_path / "killed"
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 3, 0.0, 0, {"gen-1": "die_once"})).load()
    logs = []
    summary = LocalEngine(workers=workers, poll_s=0.05, recycle_after=recycle_after).run(plan, log=logs.append)
    assert set(plan.store.done_ids()) == {j.id for j in plan.jobs}  # the killed job ran again, then the rest
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    assert starts["gen-1"] == 2 and all(n == 1 for jid, n in starts.items() if jid != "gen-1")
    assert "gen-1" in summary.ran and any("without a summary; the job it was running" in m for m in logs)
    assert _results(plan) == _reference(tmp_path, 3)


@pytest.mark.parametrize("engine", ["local", "submitit-local"])
def test_engines_run_only_the_selected_jobs(tmp_path, engine):
    root = tmp_path / engine
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 4)).load()
    if engine == "local":
        eng = LocalEngine(workers=2, poll_s=0.05)
    else:
        eng = SubmititEngine(folder=tmp_path / "submitit_logs", cluster="local", poll_s=0.2,
                             resources={"default": {"timeout_min": 5}})
    selected = select_jobs(plan, ["mix-0"])
    summary = eng.run(plan, job_ids=selected, log=lambda m: None)
    assert sorted(summary.ran) == ["gen-0", "gen-1", "mix-0"]
    assert set(load_results(plan)) == {"gen-0", "gen-1", "mix-0"}
    reference = _reference(tmp_path, 4)
    assert _results(plan) == {k: reference[k] for k in selected}

"""The SLURM engine for real: job arrays through submitit's SlurmExecutor on a running cluster
(``.ci/setup_slurm.sh`` starts a single-node one). Skipped where ``sinfo`` is absent or no node is up."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import pytest

from study_toy_plan import TESTS_DIR, read_events, toy_plan
from tasktransfer_utils.study.engines import SubmititEngine
from tasktransfer_utils.study.runner import PlanRef, load_results, run_worker

pytestmark = pytest.mark.slurm


def _slurm_up() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not found (run .ci/setup_slurm.sh as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no SLURM node up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def _require_slurm():
    reason = _slurm_up()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """SLURM tasks run as other processes (maybe other users): keep files readable, toy plan importable."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    os.chmod(tmp_path, 0o777)
    return tmp_path


def test_slurm_job_arrays_run_the_plan_with_requeue(shared_tmp):
    root = shared_tmp / "study"
    modes = {"gen-1": "die_once"}  # the task is SIGKILLed: the engine must notice and resubmit it
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 3, 0.0, 0, modes)).load()
    logs = []
    engine = SubmititEngine(folder=shared_tmp / "slurm_logs", cluster="slurm", poll_s=1.0, lost_after_s=5.0,
                            resources={"default": {"timeout_min": 5, "cpus_per_task": 1, "mem_gb": 1},
                                       "B": {"timeout_min": 3}})
    summary = engine.run(plan, log=logs.append)
    assert sorted(set(summary.ran)) == sorted(j.id for j in plan.jobs), logs
    assert summary.failed == ["gen-1"]
    records = load_results(plan)
    assert all(r["worker"]["slurm_job_id"] for r in records.values())  # really ran under SLURM
    starts = Counter(jid for what, jid, _ in read_events(root) if what == "start")
    assert starts["gen-1"] == 2 and sum(starts.values()) == len(plan.jobs) + 1
    ref = toy_plan(shared_tmp / "reference", n=3)
    run_worker(ref, wait=False)
    assert {j: r["result"] for j, r in records.items()} == {j: r["result"] for j, r in load_results(ref).items()}
    # the array tasks asked for the group's resources
    arrays = [m.split("array ")[1].split()[0] for m in logs if m.startswith("submitted")]
    out = subprocess.run(["scontrol", "show", "job", arrays[0]], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout:  # finished jobs leave scontrol after MinJobAge
        assert "TimeLimit=00:05:00" in out.stdout


@pytest.mark.skipif(shutil.which("sacct") is None, reason="sacct not installed")
def test_sacct_reports_finished_array_tasks(shared_tmp):
    """submitit reads job states from sacct: check the cluster's accounting answers."""
    out = subprocess.run(["sacct", "-n", "-X", "-o", "JobID,State", "--parsable2"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"accounting disabled on this cluster: {out.stderr.strip()}")
    assert out.stdout.strip()


def test_tiny_study_through_slurm_cli(shared_tmp, tiny_encoder_dir):
    """`tasktransfer study run CONFIG --engine slurm`: a real (tiny) study's fine-tunes and transfers as SLURM
    array tasks, with the same results as a local run."""
    import yaml

    from tasktransfer_utils.cli import main
    from tasktransfer_utils.study.config import load_study_config
    from tasktransfer_utils.study.plan import plan_for
    from tasktransfer_utils.study.tables import results_table

    def config(name):
        raw = {"name": "slurm_tiny", "tasks": {"CR": ["RTE"], "SL": ["Chunk"]}, "regimes": ["LIMITED→LIMITED"],
               "seeds": [0], "limited_size": 32, "encoder": tiny_encoder_dir, "embeddings": None,
               "settings": {"all": {"num_epochs": 1, "batch_size": 16, "max_seq_length": 32, "max_eval_examples": 16}},
               "outputs": {"results_dir": f"{name}/results", "runs_dir": f"{name}/runs"},
               "engine": {"kind": "slurm", "poll_s": 1.0,
                          "resources": {"default": {"timeout_min": 10, "cpus_per_task": 1, "mem_gb": 2}}}}
        path = shared_tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        return path

    on_slurm, local = config("on_slurm"), config("local")
    assert main(["study", "run", str(on_slurm)]) == 0
    assert main(["study", "run", str(local), "--engine", "local"]) == 0
    plan = plan_for(load_study_config(on_slurm))
    records = load_results(plan)
    assert len(records) == 4 and all(r["worker"]["slurm_job_id"] for r in records.values())
    ref = load_results(plan_for(load_study_config(local)))
    assert all(r["worker"]["slurm_job_id"] is None for r in ref.values())
    for jid, rec in records.items():
        assert rec["result"]["score"] == ref[jid]["result"]["score"]
        assert rec["result"]["loss_curve"] == ref[jid]["result"]["loss_curve"]
    assert len(results_table(plan)) == 4


@pytest.mark.slow  # waits for a 1-minute SLURM time limit
def test_timed_out_task_is_requeued_by_submitit_and_reclaims_its_lock(shared_tmp):
    """A task that reaches its time limit gets submitit's signal and is requeued (same SLURM job id, higher
    SLURM_RESTART_COUNT); the requeued run takes over the job's lock at once and finishes it."""
    root = shared_tmp / "timeout"
    plan = PlanRef("study_toy_plan:toy_plan", (str(root), 1, 0.0, 0, {"gen-0": "slow_once"})).load()
    logs = []
    engine = SubmititEngine(folder=shared_tmp / "timeout_logs", cluster="slurm", poll_s=1.0, max_num_timeout=2,
                            resources={"default": {"timeout_min": 1, "cpus_per_task": 1, "mem_gb": 1,
                                                   "slurm_signal_delay_s": 30}})
    summary = engine.run(plan, log=logs.append)
    assert summary.failed == [] and "gen-0" in summary.ran, logs
    rec = load_results(plan)["gen-0"]
    assert rec["worker"]["slurm_restart_count"] not in (None, "0")  # finished by the requeued run
    starts = [e for e in read_events(root) if e[0] == "start" and e[1] == "gen-0"]
    assert len(starts) == 2


def test_submitit_executor_gets_group_resources(tmp_path):
    """What a real SLURM executor makes of a group's resources (submitit needs ``srun`` to build one)."""
    engine = SubmititEngine(folder=tmp_path, cluster="slurm",
                            resources={"default": {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 8},
                                       "QA": {"timeout_min": 240, "mem_gb": 32, "gpus_per_node": 1}})
    p = engine.executor("QA")._executor.parameters
    assert p["time"] == 240 and p["mem"] == "32GB" and p["cpus_per_task"] == 4 and p["gpus_per_node"] == 1
    assert p["job_name"] == "tasktransfer-QA"
    p = engine.executor("CR")._executor.parameters
    assert p["time"] == 60 and p["mem"] == "8GB" and "gpus_per_node" not in p

"""The dry run's plan and GPU-hour estimate, from configs alone: counts and costs against values worked out
by hand, and the paper-scale config planned with every data loader disabled (nothing may load data)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tasktransfer_utils.study import cost as sc
from tasktransfer_utils.paths import CONFIGS_DIR
from tasktransfer_utils.study.jobs import build_jobs
from tasktransfer_utils.study.config import study_config_from_dict
from tasktransfer_utils.data.tasks import HUB_SPLIT_ROWS, hub_split_rows, list_tasks


def test_encoder_scale_and_shapes(tmp_path):
    assert sc.encoder_scale((12, 768)) == pytest.approx(2 * 4)  # (12/6) * (768/384)^2
    assert sc.encoder_scale((24, 1024)) == pytest.approx(4 * (1024 / 384) ** 2)
    assert sc.encoder_shape("bert-base-uncased") == (12, 768)
    assert sc.encoder_shape("google-bert/bert-base-uncased") == (12, 768)
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 256}))
    assert sc.encoder_shape(str(tmp_path)) == (4, 256)
    assert sc.encoder_shape("someone/unknown-model") is None


def test_hub_split_rows_cover_every_paper_hub_task():
    hub_tasks = [t.name for t in list_tasks(paper_only=True) if t.has_hub]
    assert sorted(HUB_SPLIT_ROWS) == sorted(hub_tasks) and len(hub_tasks) == 23
    assert hub_split_rows("MNLI", "validation") == 9815  # validation_matched
    assert hub_split_rows("Chunk", "validation") == 2013  # CoNLL-2000's test split
    with pytest.raises(KeyError, match="no hub copy"):
        hub_split_rows("POS-PTB")
    with pytest.raises(KeyError, match="no registered size"):
        hub_split_rows("RTE", "test")


def _cfg(tmp_path, **extra):
    raw = {"name": "cost", "tasks": {"CR": ["RTE"], "SL": ["NER"]}, "regimes": ["FULL→LIMITED"], "seeds": [0],
           "encoder": "bert-base-uncased", "data": {"source": "hub"},
           "embeddings": {"full_max_examples": 5000, "textemb": {},
                          "taskemb": [{"estimator": "paper", "labels": "gold"}]},
           "outputs": {"results_dir": "r", "runs_dir": "w"}, **extra}
    return study_config_from_dict(raw, base_dir=tmp_path)


def test_job_costs_by_hand(tmp_path):
    cfg = _cfg(tmp_path, engine={"kind": "slurm", "resources": {"default": {"timeout_min": 30},
                                                                "SL": {"timeout_min": 5}}})
    jobs = {j.id: j for j in build_jobs(cfg)}
    # RTE FULL fine-tune: 2,490 training examples x 3 epochs; 277 dev examples evaluated after each epoch
    assert sc.job_example_passes(cfg, jobs["finetune__RTE__FULL__s0"]) == (2490 * 3, 277 * 3)
    assert sc.job_example_passes(cfg, jobs["finetune__NER__LIMITED__s0"]) == (1000 * 6, 3250 * 6)
    assert sc.job_example_passes(cfg, jobs["textemb__NER__FULL__s0"]) == (0.0, 5000)  # full_max_examples
    assert sc.job_example_passes(cfg, jobs["taskemb__RTE__FULL__s0__paper-gold"]) == (2490, 0.0)
    # transfer into RTE (LIMITED target): the target's LIMITED training and evaluation
    assert sc.job_example_passes(cfg, jobs["transfer__FULL-LIMITED__NER__RTE__s0"]) == (1000 * 3, 277 * 3)
    cost = sc.estimate_study_cost(cfg)
    assert cost.scale == 8 and cost.total_jobs == len(jobs)
    assert cost.jobs[("finetune", "CR")] == 2 and cost.jobs[("transfer", "SL")] == 1
    by_hand = (1000 * 6 + 3250 * 6 / 3) / 557.0 * 8  # the transfer into NER, SL throughput
    assert cost.gpu_s[("transfer", "SL")] == pytest.approx(by_hand)
    ner_full = (14041 * 6 + 3250 * 6 / 3) / 557.0 * 8
    assert cost.longest_s["SL"] == (pytest.approx(ner_full), "finetune__NER__FULL__s0")
    text = sc.format_study_cost(cost)
    assert "longest SL job: finetune__NER__FULL__s0" in text and "below the estimate" in text  # 5 min < ~25 min
    assert "bench_gpu_determinism_h200.txt" in text and "scaled by 8" in text
    unknown = sc.estimate_study_cost(_cfg(tmp_path, encoder="someone/unknown-model"))
    assert "No GPU-hour estimate for encoder 'someone/unknown-model'" in sc.format_study_cost(unknown)


def test_paper_study_dry_run_loads_nothing(tmp_path, monkeypatch, capsys):
    import datasets

    from tasktransfer_utils import cli
    from tasktransfer_utils.data import loaders

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run loaded data")

    monkeypatch.setattr(loaders, "load_task", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "paper_study.yaml"
    shutil.copy(CONFIGS_DIR / "paper_study.yaml", config)  # its outputs resolve under tmp_path
    raw = yaml.safe_load(config.read_text())
    assert raw["encoder"] == "bert-base-uncased" and raw["seeds"] == [0, 1, 2] and "settings" not in raw
    assert raw["engine"]["kind"] == "slurm" and set(raw["engine"]["resources"]) == {"default", "CR", "QA", "SL"}
    assert cli.main(["study", "run", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    n_tasks = {"CR": 11, "QA": 9, "SL": 3}
    n = sum(n_tasks.values())
    regimes, seeds = 3, 3
    for cls, k in n_tasks.items():  # transfers into each class: k targets x (n - 1) sources
        assert f"transfer  {cls:<5} {regimes * seeds * k * (n - 1):>6}" in out
        # fine-tunes: each task FULL and LIMITED, per seed
        assert f"finetune  {cls:<5} {2 * seeds * k:>6}" in out
    total = seeds * (3 * 2 * n + 2 * regimes * n * (n - 1))  # finetune, textemb, taskemb; transfer, logme
    assert f"{total} jobs (a dry run" in out
    assert "GPU-hours" in out and "without a registered size" not in out
    assert "below the estimate" not in out  # the config's timeouts cover its longest jobs

"""Study configs, the job graph, and a tiny real study (tiny random BERT, a few dozen real examples):
results table, report, and SIGKILL-then-restart giving the same results as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from datasets import DatasetDict

from tasktransfer_utils.paths import CONFIGS_DIR
from tasktransfer_utils.study.runner import load_results, progress, run_worker
from tasktransfer_utils.study.config import (DEFAULT_TASKEMB_COMPONENTS, StudyConfigError, load_study_config,
                                             study_config_from_dict)
from tasktransfer_utils.study.jobs import build_jobs, finetune_id, transfer_id
from tasktransfer_utils.study.plan import plan_for, plan_ref, select_study_jobs
from tasktransfer_utils.study.report import report
from tasktransfer_utils.study.tables import results_table

REPO = Path(__file__).resolve().parent.parent
L2L = "LIMITED→LIMITED"
F2L = "FULL→LIMITED"


# ------------------------------------------------------------------------------------------ config


def test_offline_study_config_and_job_graph():
    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    classes = {c: [t for t in cfg.tasks if cfg.task_class(t) == c] for c in ("CR", "SL", "QA")}
    assert classes == {"CR": ["SST-2", "MRPC", "RTE", "STS-B"], "SL": ["POS-PTB", "Parent", "Chunk", "NER"],
                       "QA": ["SQuAD-1", "SQuAD-2", "BoolQ", "FAQ-TR"]}
    assert cfg.regimes == [L2L, F2L] and cfg.seeds == [0] and cfg.limited_size == 1000
    assert cfg.full_max_examples == 10000
    assert cfg.results_dir == REPO / "results" / "offline_study" and cfg.runs_dir == REPO / "runs" / "offline_study"
    qa = cfg.finetune_settings("QA")
    assert (qa.max_seq_length, qa.doc_stride, qa.max_eval_examples, qa.learning_rate) == (256, 128, 1000, 1e-4)
    assert (qa.batch_size, qa.num_epochs, cfg.finetune_settings("SL").num_epochs) == (12, 3, 6)  # presets kept
    assert cfg.finetune_settings("CR").max_seq_length == 128

    jobs = build_jobs(cfg)
    kinds = [j.kind for j in jobs]
    n = len(cfg.tasks)
    # every task fine-tuned LIMITED (source of LIMITED→LIMITED, baseline of both regimes) and FULL (source of
    # FULL→LIMITED), each embedded; every ordered pair transferred in both regimes
    assert kinds.count("finetune") == 2 * n and kinds.count("textemb") == 2 * n
    # the paper's estimator for every fine-tune, the empirical one (scoped to LIMITED) for the LIMITED ones,
    # the authors' QA loss for the 4 LIMITED QA tasks
    taskembs = [j.id for j in jobs if j.kind == "taskemb"]
    assert len(taskembs) == 3 * n + 4
    assert sorted(i for i in taskembs if i.endswith("empirical-gold")) == sorted(
        f"taskemb__{t}__LIMITED__s0__empirical-gold" for t in cfg.tasks)
    assert kinds.count("transfer") == 2 * n * (n - 1) == 264 and kinds.count("logme") == 264
    assert kinds.count("restart") == 2 * n and set(kinds[-2 * n:]) == {"restart"}  # noise floor: 2 seeds, last
    # order: fine-tunes (LIMITED, then FULL; CR, SL, QA), embeddings, then transfers grouped by regime and target
    first = {k: kinds.index(k) for k in ("finetune", "textemb", "taskemb", "transfer")}
    last = {k: len(kinds) - 1 - kinds[::-1].index(k) for k in first}
    assert last["finetune"] < first["textemb"] and last["taskemb"] < first["transfer"]
    fts = [j for j in jobs if j.kind == "finetune"]
    assert [j.params["regime"] for j in fts] == ["LIMITED"] * n + ["FULL"] * n
    assert [j.group for j in fts] == (["CR"] * 4 + ["SL"] * 4 + ["QA"] * 4) * 2
    transfers = [j for j in jobs if j.kind == "transfer"]
    assert [j.params["regime"] for j in transfers] == [L2L] * 132 + [F2L] * 132
    by_id = {j.id: j for j in jobs}
    for regime, side in ((L2L, "LIMITED"), (F2L, "FULL")):
        block = [j for j in transfers if j.params["regime"] == regime]
        target_seq = [j.params["target"] for j in block]
        blocks = [t for i, t in enumerate(target_seq) if i == 0 or target_seq[i - 1] != t]
        assert blocks == classes["CR"] + classes["SL"] + classes["QA"]  # each target's transfers contiguous
        for j in block:  # the source's fine-tune in the regime's source side; the target's LIMITED baseline
            assert j.deps == (finetune_id(j.params["source"], side, 0),)
            assert j.params["target_regime"] == "LIMITED" and finetune_id(j.params["target"], "LIMITED", 0) in by_id
            assert j.params["source"] != j.params["target"]
        pairs = {(j.params["source"], j.params["target"]) for j in block}
        assert ("SST-2", "SQuAD-1") in pairs and ("NER", "Chunk") in pairs and len(pairs) == 132
    for j in jobs:
        if j.kind in ("textemb", "taskemb"):
            # FULL embedding passes are capped at 10,000 seeded rows; LIMITED ones keep their 1,000 rows and the
            # params their committed records were made with (no max_examples)
            assert j.params.get("max_examples") == (10000 if j.params["regime"] == "FULL" else None)
        if j.kind == "taskemb":
            assert j.deps == (finetune_id(j.params["task"], j.params["regime"], 0),)


def test_full_max_examples_is_validated(tmp_path):
    base = {"name": "t", "tasks": {"CR": ["RTE", "MRPC"]}, "regimes": ["FULL->LIMITED"]}
    for bad in (0, -5, "10k", True, 2.5):
        with pytest.raises(StudyConfigError, match="embeddings.full_max_examples"):
            study_config_from_dict({**base, "embeddings": {"full_max_examples": bad, "textemb": {}}}, base_dir=tmp_path)
    cfg = study_config_from_dict({**base, "embeddings": {"full_max_examples": 500, "textemb": {"max_examples": 50}}},
                                 base_dir=tmp_path)
    caps = {(j.kind, j.params["regime"]): j.params.get("max_examples") for j in build_jobs(cfg) if j.kind == "textemb"}
    assert caps == {("textemb", "FULL"): 50, ("textemb", "LIMITED"): 50}  # a variant's own max_examples wins
    cfg = study_config_from_dict({**base, "embeddings": {"full_max_examples": 500, "textemb": {}}}, base_dir=tmp_path)
    caps = {j.params["regime"]: j.params.get("max_examples") for j in build_jobs(cfg) if j.kind == "textemb"}
    assert caps == {"FULL": 500, "LIMITED": None}


def test_run_one_target_selects_what_its_evaluation_needs(capsys):
    from tasktransfer_utils.cli import main

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    plan = plan_ref(cfg).load()
    selected = select_study_jobs(cfg, plan, targets=["FAQ-TR"])
    others = [t for t in cfg.tasks if t != "FAQ-TR"]
    expected = ({finetune_id(t, "LIMITED", 0) for t in cfg.tasks}  # 11 LIMITED source models + FAQ-TR's baseline
                | {finetune_id(t, "FULL", 0) for t in others}  # 11 FULL source models
                | {transfer_id(s, "FAQ-TR", r, 0) for s in others for r in (L2L, F2L)}
                | {f"logme__{r}__{s}__FAQ-TR__s0" for s in others for r in ("LIMITED-LIMITED", "FULL-LIMITED")})
    assert set(selected) == expected and len(selected) == 12 + 11 + 2 * (11 + 11)
    assert selected == [j.id for j in plan.jobs if j.id in expected]  # plan order kept
    assert select_study_jobs(cfg, plan) is None
    both = select_study_jobs(cfg, plan, only=["textemb__RTE__*"], targets=["FAQ-TR"])
    assert set(both) == expected | {"textemb__RTE__LIMITED__s0", "textemb__RTE__FULL__s0"}
    with pytest.raises(StudyConfigError, match="Nope: not a target"):
        select_study_jobs(cfg, plan, targets=["Nope"])
    path = str(CONFIGS_DIR / "offline_study.yaml")
    assert main(["study", "run", path, "--target", "FAQ-TR", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"67 jobs selected of {len(plan.jobs)}" in out and "transfer__LIMITED-LIMITED__SST-2__FAQ-TR__s0" in out
    assert main(["study", "run", path, "--only", "nothing*", "--dry-run"]) == 2
    assert "'nothing*' matches no job" in capsys.readouterr().err


def test_run_one_source_selects_its_row(capsys):
    """`--source RTE`: every transfer and LogME job out of RTE (both regimes), RTE's own fine-tunes and
    embeddings, and what those need (the targets' baselines are not needed by a transfer: its record is
    compared with the baseline's only by the report)."""
    from tasktransfer_utils.cli import main

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    plan = plan_ref(cfg).load()
    selected = select_study_jobs(cfg, plan, sources=["RTE"])
    others = [t for t in cfg.tasks if t != "RTE"]
    row = ({transfer_id("RTE", t, r, 0) for t in others for r in (L2L, F2L)}
           | {f"logme__{r}__RTE__{t}__s0" for t in others for r in ("LIMITED-LIMITED", "FULL-LIMITED")})
    own = {j.id for j in plan.jobs if j.kind in ("finetune", "textemb", "taskemb") and j.params.get("task") == "RTE"}
    assert {finetune_id("RTE", "FULL", 0), finetune_id("RTE", "LIMITED", 0), "textemb__RTE__FULL__s0"} <= own
    deps = {d for i in row | own for d in plan.by_id[i].deps}
    assert set(selected) == row | own | deps and row <= set(selected)
    assert not any(plan.by_id[i].kind in ("transfer", "logme") and plan.by_id[i].params["source"] != "RTE"
                   for i in selected)
    assert selected == [j.id for j in plan.jobs if j.id in set(selected)]  # plan order kept
    # a union with --target, as with --only
    both = select_study_jobs(cfg, plan, sources=["RTE"], targets=["FAQ-TR"])
    assert set(both) == set(selected) | set(select_study_jobs(cfg, plan, targets=["FAQ-TR"]))
    with pytest.raises(StudyConfigError, match="--source Nope: not a source"):
        select_study_jobs(cfg, plan, sources=["Nope"])
    path = str(CONFIGS_DIR / "offline_study.yaml")
    assert main(["study", "run", path, "--source", "RTE", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(selected)} jobs selected of {len(plan.jobs)}" in out
    assert "transfer__FULL-LIMITED__RTE__SQuAD-1__s0" in out and "transfer__FULL-LIMITED__SST-2__RTE__s0" not in out


def test_pair_grid_marks_each_pair_as_its_records_say(tmp_path, capsys):
    """`study status --pairs`: every cell of the committed study's grids against the record files themselves,
    then a copy of the records with one LogME and one transfer record taken away."""
    import shutil

    from tasktransfer_utils.cli import main
    from tasktransfer_utils.study.plan import pair_grid

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")

    def grids_and_files(cfg):
        have = {p.stem for p in (cfg.results_dir / "records").glob("*.json")}
        return pair_grid(plan_for(cfg)), have

    def check(grids, have):
        assert set(grids) == {"LIMITED-LIMITED", "FULL-LIMITED"}
        for regime, rows in grids.items():
            targets = rows[0][1:-1]
            assert targets == cfg.targets and [r[0] for r in rows[1:]] == cfg.targets
            for row in rows[1:]:
                src, marks, n = row[0], row[1:-1], row[-1]
                for tgt, mark in zip(targets, marks):
                    if src == tgt:
                        assert mark == " "
                        continue
                    t = f"transfer__{regime}__{src}__{tgt}__s0" in have
                    lm = f"logme__{regime}__{src}__{tgt}__s0" in have
                    assert mark == {(True, True): "#", (True, False): "t", (False, True): "l", (False, False): "."}[t, lm]
                assert n == f"{marks.count('#')}/11"

    grids, have = grids_and_files(cfg)
    check(grids, have)
    assert all(r[-1] == "11/11" for r in grids["LIMITED-LIMITED"][1:])
    assert {r[0] for r in grids["FULL-LIMITED"][1:] if r[-1] == "11/11"} >= {"RTE", "FAQ-TR"}
    copy = dataclasses.replace(cfg, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    shutil.copytree(cfg.results_dir / "records", copy.results_dir / "records")
    (copy.results_dir / "records" / "logme__FULL-LIMITED__RTE__NER__s0.json").unlink()
    (copy.results_dir / "records" / "transfer__FULL-LIMITED__RTE__Chunk__s0.json").unlink()
    grids, have = grids_and_files(copy)
    check(grids, have)
    rte = next(r for r in grids["FULL-LIMITED"] if r[0] == "RTE")
    assert rte[1 + cfg.targets.index("NER")] == "t" and rte[1 + cfg.targets.index("Chunk")] == "l" and rte[-1] == "9/11"
    assert main(["study", "status", str(CONFIGS_DIR / "offline_study.yaml"), "--pairs"]) == 0
    out = capsys.readouterr().out
    assert "LIMITED-LIMITED: 12 of 12 source rows whole" in out and "'#' transfer and LogME done" in out


def test_taskemb_qa_loss_in_job_params_only_where_it_changes_the_computation(tmp_path):
    """qa_loss reaches QA TaskEmb jobs only as "authors" (the default): a job without it means the masked
    loss, so the offline study's records, made before the option, keep their params."""
    from tasktransfer_utils.study.runner import check_records

    def taskemb_params(variant):
        cfg = study_config_from_dict({"name": "t", "tasks": {"CR": ["RTE"], "QA": ["SQuAD-1"]},
                                      "embeddings": {"taskemb": [variant]}}, base_dir=tmp_path)
        return {j.params["task"]: j.params for j in build_jobs(cfg) if j.kind == "taskemb"}

    default = taskemb_params({})
    assert default["SQuAD-1"]["qa_loss"] == "authors" and "qa_loss" not in default["RTE"]
    masked = taskemb_params({"qa_loss": "masked"})
    assert "qa_loss" not in masked["SQuAD-1"] and "qa_loss" not in masked["RTE"]
    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    assert cfg.taskemb[0]["qa_loss"] == "masked"
    plan = plan_for(cfg)
    check_records(plan)  # every committed record still matches the params the config gives
    assert any(j.kind == "taskemb" and j.params["task_class"] == "QA" and j.id in plan.store.done_ids()
               for j in plan.jobs)


def test_complete_targets_are_judged_per_regime():
    """The offline study lists FULL→LIMITED before all of its records exist: LIMITED→LIMITED is still
    evaluated on its 12 complete targets, whatever FULL→LIMITED has."""
    from tasktransfer_utils.study.report import _complete_targets

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    results = results_table(plan_for(cfg))
    l2l, f2l = _complete_targets(cfg, results, L2L), _complete_targets(cfg, results, "FULL→LIMITED")
    assert l2l == cfg.targets
    assert _complete_targets(cfg, results) == [t for t in l2l if t in f2l]  # every regime at once


def test_precision_mismatches_flag_transfers_trained_unlike_their_baseline():
    """A hand-made table: only the bf16 transfer into RTE differs from its float32 baseline (a float32 GPU run
    and a transfer without a baseline are not flagged); the committed study ran everything on the CPU."""
    from tasktransfer_utils.study.tables import precision_mismatches, run_precision

    assert run_precision({"device": "cuda:0", "mixed_precision": "bf16"}) == "cuda bf16"
    assert run_precision({"device": "cpu", "mixed_precision": None}) == run_precision({}) == "cpu fp32"
    rows = [(None, "RTE", "cpu fp32"), ("MRPC", "RTE", "cpu fp32"), ("SST-2", "RTE", "cuda bf16"),
            ("STS-B", "RTE", "cuda fp32"), ("MRPC", "CoLA", "cuda bf16")]
    table = pd.DataFrame([{"regime": "FULL→LIMITED", "source": s, "target": t, "seed": 0, "precision": p}
                          for s, t, p in rows])
    got = precision_mismatches(table)
    assert got.to_dict("records") == [{"regime": "FULL→LIMITED", "target": "RTE", "seed": 0, "source": "SST-2",
                                       "precision": "cuda bf16", "baseline_precision": "cpu fp32"}]
    results = results_table(plan_for(load_study_config(CONFIGS_DIR / "offline_study.yaml")))
    assert set(results["precision"]) == {"cpu fp32"} and precision_mismatches(results).empty


def test_expected_sources_count_each_targets_sources(tmp_path):
    from tasktransfer_utils.study.report import expected_sources

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    assert expected_sources(cfg) == {t: 11 for t in cfg.targets}  # every other task, in and across classes
    in_class = study_config_from_dict({"name": "t", "tasks": {"CR": ["RTE", "MRPC", "SST-2"], "SL": ["Chunk", "NER"]},
                                       "pairs": "in-class"}, base_dir=tmp_path)
    assert expected_sources(in_class) == {"RTE": 2, "MRPC": 2, "SST-2": 2, "Chunk": 1, "NER": 1}


def test_full_to_limited_graph_shares_jobs_across_regimes_and_seeds(tmp_path):
    cfg = study_config_from_dict({
        "name": "t", "tasks": {"CR": ["RTE", "MRPC"], "SL": ["Chunk"]}, "pairs": "in-class",
        "regimes": ["FULL->LIMITED", "limited_to_limited"], "seeds": [0, 1], "embeddings": None,
    }, base_dir=tmp_path)
    jobs = build_jobs(cfg)
    ft = sorted(j.id for j in jobs if j.kind == "finetune")
    # in-class pairs: RTE<->MRPC only. FULL sources RTE, MRPC; LIMITED fine-tunes of both (sources of
    # LIMITED→LIMITED and baselines of both regimes); Chunk has no in-class partner, so no job at all
    expected = sorted(finetune_id(t, r, s) for t in ("RTE", "MRPC") for r in ("FULL", "LIMITED") for s in (0, 1))
    assert ft == expected
    tr = [j for j in jobs if j.kind == "transfer"]
    assert len(tr) == 2 * 2 * 2  # pairs x regimes x seeds
    j = next(j for j in tr if j.id == transfer_id("RTE", "MRPC", "FULL→LIMITED", 1))
    assert j.deps == (finetune_id("RTE", "FULL", 1),) and j.params["target_regime"] == "LIMITED"
    assert [j.kind for j in jobs].index("transfer") > max(i for i, j in enumerate(jobs) if j.kind == "finetune")
    assert not any(j.kind in ("textemb", "taskemb") for j in jobs)
    assert cfg.results_dir == REPO / "results" / "t" and cfg.runs_dir == REPO / "runs" / "t"  # defaults


@pytest.mark.parametrize("patch, message", [
    ({"colour": 1}, "unknown field"),
    ({"tasks": {"CR": ["NER"]}}, "CR tasks"),
    ({"tasks": ["SST2x"]}, "SST-2"),
    ({"regimes": ["FULL→NONE"]}, "regimes"),
    ({"seeds": [-1]}, "seeds"),
    ({"settings": {"QA": {"max_seq_len": 256}}}, "settings.QA"),
    ({"embeddings": {"taskemb": [{"estimator": "fisher"}]}}, "estimator"),
    ({"embeddings": {"taskemb": [{"qa_loss": "padded"}]}}, "embeddings.taskemb[0].qa_loss"),
    ({"embeddings": {"taskemb": [{"regimes": ["HALF"]}]}}, "embeddings.taskemb[0].regimes"),
    ({"embeddings": {"taskemb": [{"classes": []}]}}, "embeddings.taskemb[0].classes"),
    ({"limited_size": 5000}, "limited_size"),
    ({"suite": "offline"}, "exactly one of"),
    ({"report": {"min_spread_in_se": -1}}, "report.min_spread_in_se"),
])
def test_config_errors_name_the_field(tmp_path, patch, message):
    raw = {"name": "bad", "tasks": ["RTE", "MRPC"]}
    raw.update(patch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(StudyConfigError) as err:
        load_study_config(path)
    assert message in str(err.value) and str(path) in str(err.value)



@pytest.mark.parametrize("patch, message", [
    ({"embeddings": {"taskemb": [{"labels": "gold"}, {"estimatr": "paper"}]}},
     "field 'embeddings.taskemb[1]': unknown field(s) ['estimatr'] (did you mean estimator?); known: ['batch_size', "),
    ({"data": {"sourc": "hub"}}, "field 'data': unknown field(s) ['sourc'] (did you mean source?)"),
    ({"settings": {"Q": {}}}, "field 'settings': unknown field(s) ['Q'] (did you mean QA?); known: ['CR', 'QA', 'SL', 'all']"),
    ({"seeds": [0, "1"]}, "field 'seeds[1]': expected an integer, got '1'"),
    ({"embeddings": {"textemb": {"batch_size": 0}}}, "field 'embeddings.textemb.batch_size': expected an integer >= 1, got 0"),
    ({"outputs": {"keep_models": "none"}}, "field 'outputs.keep_models': expected 'sources' or 'all', got 'none'"),
    ({"report": {"relevance": "rank"}}, "field 'report.relevance': expected one of ('minmax', 'positive_gain', 'score')"),
    ({"pairs": "some", "max_attempts": 0}, "field 'pairs': expected 'all' or 'in-class', got 'some' (+1 more)"),
])
def test_config_schema_errors_are_one_line_with_the_field_path(patch, message):
    """The schema (study.config.StudyConfigFile) reports the first problem as one line: the file, the field path
    with list indices, what was expected and what was found, close names for a typo, how many more problems."""
    with pytest.raises(StudyConfigError) as err:
        study_config_from_dict({"name": "bad", "tasks": ["RTE", "MRPC"], **patch}, where="bad.yaml")
    assert str(err.value).startswith("bad.yaml: " + message) and "\n" not in str(err.value)


def test_config_schema_defaults_are_the_study_defaults(tmp_path):
    """What a config leaves out: one TextEmb and the paper's TaskEmb with every default filled in, as the job
    params of the committed records have them; an empty embeddings section means no embedding jobs."""
    cfg = study_config_from_dict({"name": "t", "tasks": ["RTE"], "seeds": 3, "regimes": "FULL->LIMITED"},
                                 base_dir=tmp_path)
    assert (cfg.seeds, cfg.regimes, cfg.textemb, cfg.logme, cfg.limited_size) == ([3], ["FULL→LIMITED"], {}, None, 1000)
    assert cfg.taskemb == [{"estimator": "paper", "labels": "gold", "qa_loss": "authors",
                            "components": list(DEFAULT_TASKEMB_COMPONENTS)}]
    empty = study_config_from_dict({"name": "t", "tasks": ["RTE"], "embeddings": None, "logme": True})
    assert (empty.textemb, empty.taskemb, empty.logme) == (None, [], {})


# ------------------------------------------------------------------------------------ tiny real study


def _tiny_config(tmp_path: Path, encoder: str, name: str, embeddings=True) -> Path:
    raw = {
        "name": name,
        "tasks": {"CR": ["RTE"], "SL": ["Chunk"]},
        "regimes": [L2L], "seeds": [0], "limited_size": 48, "encoder": encoder,
        "settings": {"all": {"num_epochs": 1, "batch_size": 16, "max_seq_length": 32, "max_eval_examples": 24}},
        "embeddings": ({"textemb": {"batch_size": 16},
                        "taskemb": [{"estimator": "paper", "labels": "gold", "batch_size": 16}]}
                       if embeddings else None),
        **({"logme": {"max_examples": 40, "max_tokens": 300, "batch_size": 16}} if embeddings else {}),
        "outputs": {"results_dir": f"{name}/results", "runs_dir": f"{name}/runs"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


TIMING_KEYS = {"wall_time_s", "train_time_s", "eval_time_s", "train_examples_per_s", "created_utc"}


def _comparable(obj):
    """A record's result without timings (which differ between runs)."""
    if isinstance(obj, dict):
        return {k: _comparable(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_comparable(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("tiny_study")
    path = _tiny_config(root, tiny_encoder_dir, "ref")
    plan = plan_ref(path).load()
    summary = run_worker(plan, wait=False, log=lambda m: None)
    assert summary.failed == [], [plan.store.read_failure(j) for j in summary.failed]
    return root, path, plan


def test_tiny_study_records_and_results_table(tiny_study):
    root, path, plan = tiny_study
    records = load_results(plan)
    assert set(records) == {j.id for j in plan.jobs} and len(plan.jobs) == 2 + 2 + 2 + 2 + 2
    ft = records[finetune_id("RTE", "LIMITED", 0)]["result"]
    assert ft["train_examples"] == 48 and ft["eval_examples"] == 24 and ft["task"] == "RTE"
    assert ft["model_dir"] == f"models/{finetune_id('RTE', 'LIMITED', 0)}/model"  # relative to runs_dir
    assert not os.path.isabs(ft["encoder"])
    tr = records[transfer_id("Chunk", "RTE", L2L, 0)]["result"]
    assert tr["init_from"] == f"models/{finetune_id('Chunk', 'LIMITED', 0)}" and tr["model_dir"] is None
    assert not (Path(load_study_config(path).runs_dir) / "models" / transfer_id("Chunk", "RTE", L2L, 0) / "model").exists()

    table = results_table(plan)
    assert list(table.columns[:7]) == ["source", "target", "regime", "seed", "score", "source_class", "target_class"]
    assert len(table) == 4  # two baselines + two transfers
    base = table[table["source"].isna()].set_index("target")
    assert base.loc["RTE", "score"] == pytest.approx(ft["score"]) and base.loc["RTE", "job_id"] == finetune_id("RTE", "LIMITED", 0)
    row = table[(table["source"] == "RTE") & (table["target"] == "Chunk")].iloc[0]
    assert (row["regime"], row["source_class"], row["target_class"]) == (L2L, "CR", "SL")
    assert row["score"] == pytest.approx(records[transfer_id("RTE", "Chunk", L2L, 0)]["result"]["score"])
    # the RTE baseline's score is the mean of its metrics (accuracy) as fine_tune reports it
    assert ft["score"] == pytest.approx(ft["final_metrics"]["accuracy"])

    written = pd.read_csv(plan.artifacts_dir / "transfer_results.csv")  # refreshed after every job
    assert len(written) == 4 and set(written["job_id"]) == set(table["job_id"])
    emb = records["textemb__RTE__LIMITED__s0"]["result"]
    assert emb["num_examples"] == 48 and (plan.artifacts_dir / emb["file"]).is_file()
    comps = records["taskemb__Chunk__LIMITED__s0__paper-gold"]["result"]["components"]
    assert "cls_output" not in comps and "encoder.layer.1.layer_output" in comps  # SL: no [CLS] component


def test_job_times_per_kind_class_regime_and_device(tiny_study):
    """job_times.csv against the records by hand: every job records its device (here the CPU), and each row's
    count, mean and jobs per hour are those of its records."""
    from tasktransfer_utils.study.tables import job_times

    _, _, plan = tiny_study
    records = load_results(plan)
    assert {r["result"]["device"] for r in records.values()} == {"cpu"}  # fine-tunes, embeddings and LogME alike
    table = job_times(plan)
    assert list(table.columns) == ["kind", "class", "regime", "device", "n", "mean_s", "min_s", "max_s",
                                   "jobs_per_hour"]
    assert table["n"].sum() == len(records)
    for row in table.itertuples():
        times = [r["wall_time_s"] for r in records.values() if r["kind"] == row.kind and r["group"] == row._2
                 and r["params"]["regime"] == row.regime]
        assert row.n == len(times) and row.mean_s == pytest.approx(sum(times) / len(times))
        assert row.jobs_per_hour == pytest.approx(3600 * len(times) / sum(times))


def test_cli_status_and_report(tiny_study, capsys):
    from tasktransfer_utils.cli import main

    root, path, plan = tiny_study
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "10/10 done" in out and "finetune/CR" in out and "logme/SL" in out
    paths = report(load_study_config(path), figures=False, log=lambda m: None)
    summary = pd.read_csv(paths["summary"])
    # 2 targets, each with one candidate in all-class and none in-class
    assert set(summary["metric"]) >= {"rho", "ndcg", "regret@1"}
    assert {"TextEmb", "TaskEmb", "Random", "CurveGrad", "DataSize", "LogME"} <= set(summary["method"])
    rho = summary[(summary["metric"] == "rho") & (summary["target_class"] == "all")]
    assert (rho["value"] == 1.0).all()  # one candidate: always ranked first
    assert Path(paths["transfer_results"]).is_file() and "rho" in Path(paths["selection_tables"]).read_text()
    # one candidate per target: every method ties with Random and DataSize on every target
    paired = pd.read_csv(paths["paired_comparison"])
    assert {"Random", "DataSize"} == set(paired["baseline"]) and (paired["mean_diff"] == 0).all()
    assert (paired.loc[paired["target_class"] == "all", "ties"] == 2).all()
    assert "## Paired comparison with Random and DataSize" in Path(paths["selection_tables"]).read_text()
    # per target, the spread of its sources against one evaluation's standard error (RTE: accuracy)
    spread = pd.read_csv(paths["target_spread"])
    assert set(spread["candidate_set"]) == {"all-class"}  # no target has a source of its own class
    spread = spread.set_index("target")
    table = results_table(plan)
    assert set(spread.index) == set(table["target"])
    for target, row in spread.iterrows():
        rows = table[table["target"] == target]
        best = rows["score"][rows["source"].notna()].max()
        assert row["best_score"] == pytest.approx(best) and row["spread"] == 0  # one candidate each
        assert row["best_gain"] == pytest.approx(best - rows["score"][rows["source"].isna()].iloc[0])
        assert row["eval_examples"] == rows["eval_examples"].max()
    n = spread.loc["RTE", "eval_examples"]
    p = spread.loc["RTE", "best_score"]
    assert spread.loc["RTE", "se_bound"] == pytest.approx((p * (1 - p) / n) ** 0.5, rel=1e-5)  # 6 digits in the csv
    assert pd.isna(spread.loc["Chunk", "se_bound"])  # seqeval F1: no per-example bound
    assert "## How far apart are the sources?" in Path(paths["selection_tables"]).read_text()
    # sensitivity: RTE (one source, spread 0 standard errors) is left out, Chunk (no bound) kept
    from tasktransfer_utils.selection.evaluation import summarize_selection

    per_target = pd.read_csv(paths["per_target"])
    expected = summarize_selection(per_target[per_target["target"] != "RTE"])
    got = pd.read_csv(paths["summary_separable"])
    key = ["method", "regime", "candidate_set", "target_class", "metric"]
    merged = got.merge(expected, on=key, suffixes=("", "_expected"))
    assert len(merged) == len(expected) == len(got) and set(got["target_class"]) == {"SL", "all"}
    assert (merged["value"].isna() == merged["value_expected"].isna()).all()
    assert ((merged["value"] - merged["value_expected"]).abs().fillna(0) < 1e-5).all()
    md = Path(paths["selection_tables"]).read_text()
    assert "Left out: targets whose candidate sources' spread is below 2 standard errors" in md
    assert "all-class: RTE (0.00 SE); in-class: none" in md
    # the paper's claims: one row per claim (a-e) for the study's one regime, judged on both targets
    claims = pd.read_csv(paths["claims"])
    assert list(claims["claim"]) == list("abcde") and set(claims["regime"]) == {L2L}
    assert (claims["targets"] == 2).all() and (claims["targets_expected"] == 2).all()
    assert claims["verdict"].str.match(r"^(reproduced|not reproduced|inconclusive: .+)$").all()
    assert "## The paper's claims, tested" in md
    # all and out-of-class pairs (RTE and Chunk have no source of their own class)
    assert list(pd.read_csv(paths["transfer_summary"])["pairs"]) == ["all", "out-of-class"]
    # each regime in words, from the same tables: both targets evaluated, so no "partial view"
    words = md.split("## Each regime in words", 1)[1]
    assert words.count(f"{L2L}: 2 targets: mean relative gain") == 1 and "partial view" not in words
    assert "TextEmb rho 1.00 against DataSize 1.00 (difference +0.00, 95% [+0.00, +0.00], not separated)" in words
    # what the claims are computed from: TextEmb cosine of the stored vectors, source sizes, noise-bound targets
    import numpy as np

    from tasktransfer_utils.embeddings.store import EmbeddingLibrary
    from tasktransfer_utils.study.report import claim_inputs, selection_rankers

    cfg = load_study_config(path)
    inputs = claim_inputs(cfg, selection_rankers(plan, table), table)
    vec = {e.meta["task"]: e.vector.astype(np.float64)
           for e in EmbeddingLibrary(cfg.results_dir / "embeddings").load(method="TextEmb")}
    sims = inputs["similarity"]
    assert len(sims) == 2
    for r in sims.itertuples():
        a, b = vec[r.source], vec[r.target]
        assert r.similarity == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)
    assert inputs["source_sizes"] == {L2L: {"RTE": 48, "Chunk": 48}}  # the tiny study's LIMITED size
    assert inputs["source_task_sizes"]["RTE"] == 2490  # GLUE RTE's training set
    assert inputs["per_example_targets"] == ["RTE"] and inputs["datasize_method"][L2L] == "DataSize (full-set sizes)"


def test_complete_targets_by_regime_handles_a_partial_regime():
    from tasktransfer_utils.study.report import complete_targets_by_regime
    from tasktransfer_utils.study.jobs import study_pairs

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    assert cfg.regimes == [L2L, "FULL→LIMITED"]
    rows = []
    for regime in cfg.regimes:
        for t in cfg.targets:
            rows.append({"source": None, "target": t, "regime": regime, "seed": 0})
    for s, t in study_pairs(cfg):
        rows.append({"source": s, "target": t, "regime": L2L, "seed": 0})
        if t == "RTE" or (t == "NER" and s != "SST-2"):  # RTE complete, NER one source short
            rows.append({"source": s, "target": t, "regime": "FULL→LIMITED", "seed": 0})
    results = pd.DataFrame(rows)
    got = complete_targets_by_regime(cfg, results)
    assert got == {L2L: cfg.targets, "FULL→LIMITED": ["RTE"]}


def test_interim_selection_ranks_the_whole_rows_of_a_partial_regime(monkeypatch):
    from tasktransfer_utils.selection.rankers import RandomRanker, Ranker
    from tasktransfer_utils.study import report
    from tasktransfer_utils.study.jobs import study_pairs

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    pool = ["MRPC", "RTE", "STS-B", "FAQ-TR"]
    truth = {(s, t): 0.5 + 0.01 * ((3 * i + len(t)) % 7) for i, s in enumerate(pool) for t in cfg.targets}
    rows = [{"source": None, "target": t, "regime": r, "seed": 0, "score": 0.5} for r in cfg.regimes
            for t in cfg.targets]
    rows += [{"source": s, "target": t, "regime": L2L, "seed": 0, "score": 0.5} for s, t in study_pairs(cfg)]
    rows += [{"source": s, "target": t, "regime": F2L, "seed": 0, "score": truth[s, t]}
             for s, t in study_pairs(cfg) if s in pool]
    rows += [{"source": "SST-2", "target": "RTE", "regime": F2L, "seed": 0, "score": 0.9}]  # a row not whole
    results = pd.DataFrame(rows)
    assert report.whole_source_rows(cfg, results) == {L2L: cfg.targets, F2L: pool}

    class Oracle(Ranker):
        method = "Oracle"

        def scores(self, target, candidates):
            return {c: truth[c, target] for c in candidates}

    seen = []

    def rankers(plan, sub):
        seen.append(sub)
        return {F2L: {"Oracle": Oracle(), "Random": RandomRanker(expected=True)}}

    monkeypatch.setattr(report, "selection_rankers", rankers)
    frames, md = report.interim_selection(cfg, None, results, evaluated={L2L})
    assert set(seen[0]["source"].dropna()) == set(pool) and set(seen[0]["regime"]) == {F2L}
    cells = frames["interim_selection"].query("target_class == 'all'").set_index(["method", "metric"])["value"]
    assert cells["Oracle", "rho"] == 1 and cells["Oracle", "regret@1"] == 0 and cells["Oracle", "ndcg"] == 1
    # Random's expected rank of the best: (n+1)/2 with n = 3 candidates for the 4 pool tasks, 4 for the 8 others
    assert cells["Random", "rho"] == pytest.approx((4 * 2 + 8 * 2.5) / 12)
    assert "among the 4 sources with whole rows" in " ".join(md)
    assert report.interim_selection(cfg, None, results, evaluated={L2L, F2L}) == ({}, [])  # evaluated in full
    short = results[~((results["source"] == "FAQ-TR") & (results["target"] == "RTE") & (results["regime"] == F2L))]
    assert report.interim_selection(cfg, None, short, evaluated={L2L}) == ({}, [])  # 3 whole rows: too few


# `tasktransfer study run` whose first transfer stops itself (SIGSTOP) after its first optimisation step: the
# job's lock is taken, its run directory half written, its record absent. The test then SIGKILLs it there,
# on a slow CPU or a fast GPU alike.
STOP_IN_FIRST_TRANSFER = """
import os, signal, sys
from transformers import TrainerCallback
from tasktransfer_utils import cli
from tasktransfer_utils.training import fine_tuning

class StopAfterFirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ.get("STOP_AT_STEP", "1")):
            os.kill(os.getpid(), signal.SIGSTOP)

real_fine_tune = fine_tuning.fine_tune

def fine_tune(*args, **kwargs):
    if kwargs.get("init_from") is not None:  # a transfer
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), StopAfterFirstStep()]
    return real_fine_tune(*args, **kwargs)

fine_tuning.fine_tune = fine_tune
sys.exit(cli.main(sys.argv[1:]))
"""


def _interrupted_run_setup(tiny_study, encoder: str, tmp_path: Path, script_name: str, script_text: str):
    """For the tests that interrupt `study run`: the uninterrupted tiny study's results, a config with the same
    job params (no embeddings), the script that runs the CLI with a hook, and the environment it needs."""
    _, _, ref_plan = tiny_study
    reference = {j: _comparable(r["result"]) for j, r in load_results(ref_plan).items()
                 if r["kind"] in ("finetune", "transfer")}
    path = _tiny_config(tmp_path, encoder, "ref", embeddings=False)
    script = tmp_path / script_name
    script.write_text(script_text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return reference, path, script, env


@pytest.mark.parametrize("checkpointed", [False, True], ids=["from-scratch", "from-checkpoint"])
def test_tiny_study_sigkill_then_restart_matches_uninterrupted_run(tiny_study, tiny_encoder_dir, tmp_path,
                                                                   checkpointed):
    """Killed in its first transfer, at step 1 before any checkpoint (the transfer runs again from scratch) or
    at step 2 after the checkpoint of step 1 (it resumes from there): the records equal the uninterrupted
    study's, and the resumed transfer's record says where it resumed."""
    reference, path, script, env = _interrupted_run_setup(tiny_study, tiny_encoder_dir, tmp_path,
                                                          "stop_in_first_transfer.py", STOP_IN_FIRST_TRANSFER)
    if checkpointed:
        env.update(STOP_AT_STEP="2", TASKTRANSFER_CHECKPOINT_EVERY_S="1e-9")
    proc = subprocess.Popen([sys.executable, str(script), "study", "run", str(path)], env=env, cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once the worker has stopped itself (or ended)
    assert os.WIFSTOPPED(status), f"the study ended (wait status {status}) before its first transfer stopped"
    plan = plan_ref(path).load()
    done = plan.store.done_ids()
    busy = [p.stem for p in plan.store.locks_dir.glob("*.lock") if p.stem not in done]
    assert len(busy) == 1 and busy[0].startswith("transfer") and len(done) >= 2, (busy, done)
    killed_in = busy[0]
    half_written = tmp_path / "ref" / "runs" / "models" / killed_in
    assert (half_written / "config.json").is_file() and not (half_written / "result.json").exists()
    checkpoints = sorted(p.name for p in (half_written / "trainer").glob("checkpoint-*"))
    assert checkpoints == (["checkpoint-1"] if checkpointed else [])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not plan.store.is_done(killed_in)
    assert progress(plan).running == 0  # the dead worker's lock is stale at once (same host, pid gone)

    if checkpointed:  # `study status` names the checkpoint the killed transfer resumes from
        from tasktransfer_utils.study.source_models import saved_checkpoints

        assert [(c["job"], c["step"], c["steps"]) for c in saved_checkpoints(load_study_config(path))] == \
            [(killed_in, 1, 3)]
    summary = run_worker(plan_ref(path).load(), wait=False, log=lambda m: None)
    assert killed_in in summary.ran and summary.failed == []
    records = load_results(plan)
    assert sorted(p.name for p in plan.records_dir.iterdir()) == sorted(f"{j.id}.json" for j in plan.jobs)
    assert records[killed_in]["result"]["resumed_from_steps"] == ([1] if checkpointed else None)
    records[killed_in]["result"]["resumed_from_steps"] = None
    assert {j: _comparable(r["result"]) for j, r in records.items()} == reference
    assert list(plan.store.locks_dir.glob("*.lock")) == []


# `tasktransfer study run` whose fine-tunes first sleep (here and in the spawned workers, which run this file
# as __mp_main__), so that the test can SIGKILL it while both workers hold a job.
SLOW_FINE_TUNES = """
import os, sys, time
from tasktransfer_utils import cli
from tasktransfer_utils.training import fine_tuning

real_fine_tune = fine_tuning.fine_tune

def fine_tune(*args, **kwargs):
    time.sleep(float(os.environ.get("TEST_SLEEP_BEFORE_FINE_TUNE_S", "0")))
    return real_fine_tune(*args, **kwargs)

fine_tuning.fine_tune = fine_tune
if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_study_run_kills_its_workers_and_a_restart_redoes_their_jobs(tiny_study, tiny_encoder_dir,
                                                                                 tmp_path):
    """SIGKILL of `study run --workers 2` (the parent only) leaves no worker running; `study run` again breaks
    the dead workers' locks, reruns their jobs, matches an uninterrupted run, and logs one line per job start
    and one per job end, without progress bars or weight-loading reports."""
    import time

    reference, path, script, env = _interrupted_run_setup(tiny_study, tiny_encoder_dir, tmp_path,
                                                          "slow_fine_tunes.py", SLOW_FINE_TUNES)
    proc = subprocess.Popen([sys.executable, str(script), "study", "run", str(path), "--workers", "2"],
                            env={**env, "TEST_SLEEP_BEFORE_FINE_TUNE_S": "300"}, cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plan = plan_ref(path).load()
    deadline = time.time() + 180
    while time.time() < deadline and len(plan.store.running()) < 2 and proc.poll() is None:
        time.sleep(0.1)
    held = plan.store.running()
    assert len(held) == 2 and all(j.startswith("finetune") for j in held), held
    workers = {int(info["pid"]) for info in held.values()}
    assert proc.pid not in workers and all(_alive(pid) for pid in workers)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must die with it
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert [pid for pid in workers if _alive(pid)] == []
    assert plan.store.done_ids() == set() and progress(plan).running == 0  # locks stale at once

    out = subprocess.run([sys.executable, "-m", "tasktransfer_utils.cli", "study", "run", str(path), "--workers", "2"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    records = load_results(plan)
    assert {j: _comparable(r["result"]) for j, r in records.items()} == reference
    assert list(plan.store.locks_dir.glob("*.lock")) == []
    lines = log.splitlines()
    for job in plan.jobs:
        starts = [x for x in lines if f"] start {job.id} on " in x]
        ends = [x for x in lines if f"done {job.id} on " in x]
        score = records[job.id]["result"]["score"]
        assert len(starts) == 1 and len(ends) == 1 and f"score {score:.4f}" in ends[0], (job.id, log)
    assert not any(bad in log for bad in ("Map", "LOAD REPORT", "it/s]", "\x1b[", "%|")), log
    # 2 header/summary lines, a stale-lock line per killed job, one start and one end line per job; Python's own
    # multiprocessing resource tracker may warn at exit about a semaphore of the killed pool (not our log)
    ours = [x for x in lines if not x.startswith(" ") and "resource_tracker" not in x]
    assert len(ours) <= 2 + len(held) + 2 * len(plan.jobs) + 2, log


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: relative path -> (size, mtime in ns); folders size -1."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_report_flags_a_transfer_trained_in_another_precision(tiny_study, tmp_path):
    """One transfer record of a copy of the tiny study says it trained in bf16 on a GPU: the report warns, lists
    it in precision_mismatches.csv and in selection_tables.md; with the record put back, the file is gone."""
    import shutil

    root, path, plan = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    rec_path = next((copy / "ref" / "results" / "records").glob("transfer__*Chunk__RTE*.json"))
    original = rec_path.read_text()
    rec = json.loads(original)
    rec["result"].update(device="cuda", mixed_precision="bf16")
    rec_path.write_text(json.dumps(rec))
    lines = []
    paths = report(load_study_config(copy / path.name), figures=False, log=lines.append)
    flagged = pd.read_csv(paths["precision_mismatches"])
    assert flagged[["source", "target", "precision", "baseline_precision"]].values.tolist() == [
        ["Chunk", "RTE", "cuda bf16", "cpu fp32"]]
    assert any(line.startswith("warning: 1 transfer(s) trained in another precision") for line in lines)
    assert "## Precision" in Path(paths["selection_tables"]).read_text()
    rec_path.write_text(original)
    paths = report(load_study_config(copy / path.name), figures=False, log=lambda m: None)
    assert "precision_mismatches" not in paths and not (copy / "ref" / "results" / "evaluation" /
                                                         "precision_mismatches.csv").exists()


def test_read_only_commands_write_nothing(tiny_study, tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    """`study status`, `study run --dry-run` and `tasks` create, change or delete no file, on a finished
    study and on one nothing has run of yet (whose results and runs folders must not appear)."""
    import shutil

    from tasktransfer_utils.cli import main

    root, path, _ = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    fresh = _tiny_config(copy, tiny_encoder_dir, "fresh")
    monkeypatch.chdir(copy)
    before = _tree(tmp_path)
    for config in (copy / path.name, fresh):
        assert main(["study", "status", str(config)]) == 0
        assert main(["study", "run", str(config), "--dry-run"]) == 0
        assert main(["study", "run", str(config), "--dry-run", "--target", "RTE"]) == 0
    assert main(["tasks", "--class", "CR", "--sizes"]) == 0
    out = capsys.readouterr().out
    assert "10/10 done" in out and "0/10 done" in out and "SST-2" in out
    assert _tree(tmp_path) == before
    assert not (copy / "fresh").exists()


def test_demo_on_a_finished_tiny_study(tiny_study, data_dir):
    """`tasktransfer demo`'s steps 1-3 on a finished study: the stored TextEmb is recomputed exactly, the
    report's tables are written, and a raw data file gets a ranking of the study's sources."""
    from tasktransfer_utils.demo import run_demo

    _, path, plan = tiny_study
    lines = []
    out = run_demo(path, user_file=data_dir / "glue" / "RTE" / "dev.tsv", figures=False, log=lines.append)
    checks = out["textemb_check"]
    assert [c["task"] for c in checks] == ["RTE", "Chunk"]  # the first task of each class
    for check in checks:
        assert check["num_examples"] == 48
        assert check["cosine"] == pytest.approx(1.0, abs=1e-6) and check["max_abs_diff"] < 1e-5
    assert Path(out["report"]["selection_tables"]).is_file()
    ranking = out["user_ranking"]
    assert sorted(ranking["source"]) == ["Chunk", "RTE"] and list(ranking["rank"]) == [1, 2]
    assert ranking["score"].between(-1, 1).all()
    assert any("Demo finished" in ln for ln in lines)


def test_logme_records_match_a_direct_computation(tiny_study, data_dir):
    """A study's LogME record is LogME (logme.logme_score) of the source fine-tune's encoder features on the
    target's LIMITED training rows: recomputed here outside the study, and the rows are the study's."""
    from tasktransfer_utils.selection.logme import encoder_features, logme_score
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.data.regimes import apply_regime
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.study.jobs import logme_id

    _, path, plan = tiny_study
    cfg = load_study_config(path)
    records = load_results(plan)
    for source, target, cls in (("RTE", "Chunk", "SL"), ("Chunk", "RTE", "CR")):
        rec = records[logme_id(source, target, L2L, 0)]
        assert rec["kind"] == "logme" and rec["deps"] == [finetune_id(source, "LIMITED", 0)]
        td = load_task(target, data_dir)
        td = dataclasses.replace(td, splits=DatasetDict(dict(td.splits, train=apply_regime(
            td.splits["train"], "LIMITED", 0, n=48))))
        model = cfg.runs_dir / "models" / finetune_id(source, "LIMITED", 0) / "model"
        x, y, regression = encoder_features(model, td, regime="LIMITED", seed=0, max_examples=40, max_tokens=300,
                                            settings=preset(cls, **cfg.settings_overrides(cls)))
        assert rec["result"]["num_rows"] == x.shape[0] and rec["result"]["dim"] == x.shape[1] == 32
        assert rec["result"]["score"] == pytest.approx(logme_score(x, y, regression=regression), rel=1e-9)
        if cls == "CR":
            assert x.shape[0] == 40  # one [CLS] row per example
        else:
            assert 40 < x.shape[0] <= 300  # one row per word (first word piece), capped


def test_logme_config_errors(tmp_path):
    raw = {"name": "t", "tasks": {"CR": ["RTE", "MRPC"]}, "logme": {"max_rows": 10}}
    with pytest.raises(StudyConfigError, match="logme"):
        study_config_from_dict(raw)
    raw["logme"] = {"max_examples": 0}
    with pytest.raises(StudyConfigError, match="logme.max_examples"):
        study_config_from_dict(raw)
    raw["logme"] = True
    cfg = study_config_from_dict(raw)
    kinds = [j.kind for j in build_jobs(cfg)]
    assert kinds.count("logme") == kinds.count("transfer") == 2
    # per target: its LogME jobs come right before its transfers
    assert kinds[-4:] == ["logme", "transfer", "logme", "transfer"]


def test_rank_a_users_file_with_logme_from_a_studys_models(tiny_study, data_dir, capsys):
    """`tasktransfer rank FILE --method LogME --models CONFIG`: the study's fine-tuned source models scored on
    the file's labelled rows; the scores are LogME of each model's features (computed here directly)."""
    from tasktransfer_utils.cli import main
    from tasktransfer_utils.selection.logme import encoder_features, logme_score
    from tasktransfer_utils.practitioner.rank import rank_sources, read_target_file
    from tasktransfer_utils.study.source_models import source_model_dirs

    _, path, _ = tiny_study
    models = source_model_dirs(load_study_config(path))
    assert sorted(models) == ["Chunk", "RTE"] and all(p.is_dir() for p in models.values())
    file = data_dir / "glue" / "RTE" / "dev.tsv"
    target = read_target_file(file)
    ranked = rank_sources(target, None, method="LogME", source_models=path, max_examples=40,
                          source_regime="LIMITED")
    assert sorted(ranked["source"]) == ["Chunk", "RTE"] and set(ranked["source_class"]) == {"CR", "SL"}
    for _, row in ranked.iterrows():
        x, y, regression = encoder_features(models[row["source"]], target, max_examples=40)
        assert row["score"] == pytest.approx(logme_score(x, y, regression=regression), rel=1e-9)
    in_class = rank_sources(target, None, method="LogME", source_models=models, max_examples=40,
                            candidate_set="in-class")
    assert list(in_class["source"]) == ["RTE"]

    assert main(["rank", str(file), "--method", "LogME", "--models", str(path), "--max-examples", "40"]) == 0
    assert "Chunk" in capsys.readouterr().out
    assert main(["rank", str(file), "--method", "LogME"]) == 2  # no --models: a clear one-line error
    assert "--method LogME needs --models" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- training-noise floor


def test_noise_floor_seeds_add_restarts_of_limited_targets_last(tmp_path):
    from tasktransfer_utils.study.jobs import restart_id

    base = {"name": "t", "tasks": {"CR": ["RTE", "MRPC"], "SL": ["Chunk"]}, "regimes": [L2L, F2L], "seeds": [0],
            "embeddings": None}
    cfg = study_config_from_dict({**base, "noise_floor_seeds": [1, 2]}, base_dir=tmp_path)
    jobs = build_jobs(cfg)
    restarts = [j for j in jobs if j.kind == "restart"]
    assert [j.id for j in restarts] == [restart_id(t, 0, s) for s in (1, 2) for t in ("RTE", "MRPC", "Chunk")]
    assert jobs[-len(restarts):] == restarts  # after every transfer: the study's results come first
    p = restarts[0].params
    assert (p["regime"], p["seed"], p["train_seed"], restarts[0].deps) == ("LIMITED", 0, 1, ())
    assert study_config_from_dict(base, base_dir=tmp_path).noise_floor_seeds == []
    for bad in ([0, 1], [1, 1], [-1], "1,2", [1.5], [True]):
        with pytest.raises(StudyConfigError, match="noise_floor_seeds"):
            study_config_from_dict({**base, "noise_floor_seeds": bad}, base_dir=tmp_path)


def test_tiny_noise_floor_restarts_reuse_the_sample_and_enter_the_report(tmp_path, tiny_encoder_dir, monkeypatch):
    """Restarts train on the seed-0 sample with another training seed; the report's noise floor is the sample sd
    of the target's no-transfer scores over training seeds, and the sources within it are listed."""
    import statistics

    from tasktransfer_utils.data import regimes
    from tasktransfer_utils.study.tables import noise_floor_runs
    from tasktransfer_utils.study.jobs import restart_id

    path = _tiny_config(tmp_path, tiny_encoder_dir, "noisy", embeddings=False)
    raw = yaml.safe_load(path.read_text())
    raw["tasks"] = {"CR": ["RTE", "MRPC"]}
    raw["noise_floor_seeds"] = [1]
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    sample_seeds = []
    original = regimes.apply_regime
    monkeypatch.setattr(regimes, "apply_regime", lambda ds, regime, seed, n=regimes.LIMITED_SIZE:
                        sample_seeds.append(seed) or original(ds, regime, seed, n))
    plan = plan_ref(path).load()
    summary = run_worker(plan, wait=False, log=lambda m: None)
    assert summary.failed == [] and len(plan.jobs) == 2 + 2 + 2
    assert set(sample_seeds) == {0}  # every LIMITED sample, restarts included, is the seed-0 sample
    records = load_results(plan)
    rec = records[restart_id("RTE", 0, 1)]["result"]
    assert (rec["seed"], rec["sample_seed"], rec["train_examples"], rec["model_dir"]) == (1, 0, 48, None)
    runs = noise_floor_runs(plan)
    assert list(runs["train_seed"]) == [0, 1, 0, 1] and set(runs["target"]) == {"RTE", "MRPC"}
    paths = report(load_study_config(path), figures=False, log=lambda m: None)
    floor = pd.read_csv(paths["noise_floor"]).set_index("target")
    rte = [records[finetune_id("RTE", "LIMITED", 0)]["result"]["score"], rec["score"]]
    assert floor.loc["RTE", "sd"] == pytest.approx(statistics.stdev(rte), rel=1e-5, abs=1e-9)
    noise = pd.read_csv(paths["target_noise"])
    assert set(noise["target"]) == {"RTE", "MRPC"} and (noise["n_sources"] == 1).all()
    assert "## Training-noise floor" in Path(paths["selection_tables"]).read_text()
    assert (plan.artifacts_dir / "noise_floor_runs.csv").is_file()


def test_measured_so_far_summarises_a_regime_still_being_measured():
    from tasktransfer_utils.study import report
    from tasktransfer_utils.study.jobs import study_pairs
    from tasktransfer_utils.study.report import measured_so_far

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    rows = [{"source": None, "target": t, "regime": r, "seed": 0, "score": 0.5, "eval_examples": 100}
            for r in cfg.regimes for t in cfg.targets]
    # FULL→LIMITED: RTE ← MRPC +0.12 (beyond 2 SE = 2 sqrt(.25/100) = 0.10), RTE ← SST-2 −0.05, NER ← MRPC +0.01
    rows += [{"source": s, "target": t, "regime": F2L, "seed": 0, "score": v, "eval_examples": 100}
             for s, t, v in (("MRPC", "RTE", 0.62), ("SST-2", "RTE", 0.45), ("MRPC", "NER", 0.51))]
    results = pd.DataFrame(rows)
    evaluated = results[results["regime"] == L2L]  # the complete regime (its transfers do not matter here)
    table, md = measured_so_far(cfg, evaluated, results)
    row = table.set_index("pairs").loc["all"]
    assert (row["regime"], row["n_pairs"], row["n_targets"], row["n_positive"]) == (F2L, 3, 2, 2)
    assert row["mean_rel_gain"] == pytest.approx((0.24 - 0.1 + 0.02) / 3)
    assert (row["n_bounded"], row["n_beyond_noise"]) == (2, 1)  # RTE (accuracy) is bounded, NER (span F1) is not
    assert table.set_index("pairs").loc["in-class", "n_pairs"] == 2 and "of 132 per regime" in " ".join(md)
    # one target complete (every source into RTE) is not a complete regime: all pairs still summarised
    into_rte = [{"source": s, "target": "RTE", "regime": F2L, "seed": 0, "score": 0.5, "eval_examples": 100}
                for s, t in study_pairs(cfg) if t == "RTE" and s not in ("MRPC", "SST-2")]
    one = pd.concat([results, pd.DataFrame(into_rte)], ignore_index=True)
    assert report.complete_targets_by_regime(cfg, one)[F2L] == ["RTE"] and report.complete_regimes(cfg, one) == set()  # L2L: baselines only here
    table, _ = measured_so_far(cfg, evaluated, one)
    assert table.set_index("pairs").loc["all", "n_pairs"] == 3 + len(into_rte)
    whole = pd.concat([results[results["source"].isna()]]
                      + [pd.DataFrame([{"source": s, "target": t, "regime": r, "seed": 0, "score": 0.5,
                                        "eval_examples": 100} for s, t in study_pairs(cfg)]) for r in cfg.regimes],
                      ignore_index=True)
    assert report.complete_regimes(cfg, whole) == set(cfg.regimes)
    assert measured_so_far(cfg, whole, whole) == (None, [])  # every regime complete: nothing to add




def test_rebuild_models_from_the_records(tmp_path, tiny_encoder_dir, data_dir, capsys):
    """A fresh clone has the records but not the weights: `study rebuild-models` fine-tunes the recorded jobs
    again into runs_dir, leaves the records alone, gives the same weights, and checks each run against its
    record; a record that the rebuilt run does not reproduce is a one-line error."""
    import re
    import shutil

    import torch
    from safetensors.torch import load_file

    from tasktransfer_utils.cli import main
    from tasktransfer_utils.study.job_functions import rebuild_command
    from tasktransfer_utils.study.source_models import source_model_dirs

    path = _tiny_config(tmp_path, tiny_encoder_dir, "rb", embeddings=False)
    plan = plan_ref(path).load()
    assert run_worker(plan, wait=False, log=lambda m: None).failed == []
    cfg = load_study_config(path)
    models = source_model_dirs(cfg)
    original = {t: load_file(d / "model.safetensors") for t, d in models.items()}
    records = {p.name: p.read_bytes() for p in plan.records_dir.iterdir()}
    shutil.rmtree(cfg.runs_dir / "models")

    command = rebuild_command(cfg, ["RTE", "Chunk"], ["LIMITED"])
    assert command == f"tasktransfer study rebuild-models {path} --regime LIMITED"
    with pytest.raises(FileNotFoundError, match=re.escape(f"`{command}`")):
        source_model_dirs(cfg, regime="LIMITED->LIMITED")
    file = data_dir / "glue" / "RTE" / "dev.tsv"
    assert main(["rank", str(file), "--method", "LogME", "--models", str(path)]) == 2  # one line, names the command
    assert f"`{command}`" in capsys.readouterr().err

    assert main(["study", "rebuild-models", str(path), "--rtol", "0"]) == 0  # same environment: bit for bit
    out = capsys.readouterr().out
    assert "2 model(s) rebuilt, 0 already on disk; all 2 equal to their records" in out and "(exactly)" in out
    rebuilt = source_model_dirs(cfg)
    for task, weights in original.items():
        again = load_file(rebuilt[task] / "model.safetensors")
        assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)
    assert {p.name: p.read_bytes() for p in plan.records_dir.iterdir()} == records  # records untouched
    assert main(["study", "rebuild-models", str(path), "--regime", "LIMITED"]) == 0  # verified, not retrained
    assert "0 model(s) rebuilt, 2 already on disk" in capsys.readouterr().out

    # a record the rebuilt run does not reproduce
    rte = plan.records_dir / f"{finetune_id('RTE', 'LIMITED', 0)}.json"
    rec = json.loads(rte.read_text())
    recorded_loss = rec["result"]["loss_curve"][0]["loss"]
    rec["result"]["loss_curve"][0]["loss"] = recorded_loss * (1 + 1e-3)
    rte.write_text(json.dumps(rec))
    assert main(["study", "rebuild-models", str(path), "--task", "RTE"]) == 2  # the run on disk is checked too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "result.loss_curve[0].loss is " in err and "recorded" in err
    shutil.rmtree(cfg.runs_dir / "models" / finetune_id("RTE", "LIMITED", 0))
    assert main(["study", "rebuild-models", str(path), "--task", "RTE"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"result.loss_curve[0].loss is {recorded_loss!r}" in err
    assert (cfg.runs_dir / "models" / (finetune_id("RTE", "LIMITED", 0) + ".mismatch") / "model").is_dir()
    with pytest.raises(FileNotFoundError, match=r"1 recorded LIMITED fine-tune\(s\) \(RTE\)"):
        source_model_dirs(cfg)  # the mismatching run is not used
    one = rebuild_command(cfg, ["RTE"], ["LIMITED"])
    assert one == f"tasktransfer study rebuild-models {path} --task RTE --regime LIMITED"
    assert main(["study", "rebuild-models", str(path), "--task", "RTE", "--rtol", "1e-2"]) == 0
    assert "1 model(s) rebuilt, 0 already on disk" in capsys.readouterr().out
    assert main(["study", "rebuild-models", str(path), "--task", "Nope"]) == 2  # not a registered task: the parser
    assert "argument --task: unknown task 'Nope'" in capsys.readouterr().err
    assert main(["study", "rebuild-models", str(path), "--task", "SST-2"]) == 2  # registered, not in the study
    assert "--task SST-2: not a task of study rb" in capsys.readouterr().err


def test_rebuild_check_compares_numbers_within_a_relative_tolerance():
    from tasktransfer_utils.study.source_models import _first_difference

    rec = {"score": 0.5, "loss_curve": [{"loss": 2.0}, {"loss": float("nan")}], "wall_time_s": 10.0,
           "versions": {"torch": "a"}, "train_examples": 1000}
    same = {"score": 0.5, "loss_curve": [{"loss": 2.0}, {"loss": float("nan")}], "wall_time_s": 99.0,
            "versions": {"torch": "b"}, "train_examples": 1000.0}
    assert _first_difference(rec, same, "result", 0.0) is None  # timings and versions are not compared
    off = {**same, "loss_curve": [{"loss": 2.0 * (1 + 1e-6)}, {"loss": float("nan")}]}
    expected = f"result.loss_curve[0].loss is {2.0 * (1 + 1e-6)!r}, recorded 2.0"
    assert _first_difference(rec, off, "result", 0.0) == expected
    assert _first_difference(rec, off, "result", 1e-6) is None and _first_difference(rec, off, "result", 9e-7)
    assert _first_difference(rec, {**same, "loss_curve": [{"loss": 2.0}]}, "r", 1.0) == \
        "r.loss_curve has 1 entries, recorded 2"
    assert _first_difference(rec, {**same, "extra": 1}, "r", 0.0) == "r.extra is 1, recorded absent"
    # a field added to results after the record was made, at its default (None), is not a difference
    assert _first_difference(rec, {**same, "sample_seed": None}, "r", 0.0) is None
    assert _first_difference({"a": "x"}, {"a": "y"}, "r", 1.0) == "r.a is 'y', recorded 'x'"


def test_rebuild_check_accepts_float_drift_of_the_losses_but_not_another_run():
    """A loss curve as a rerun reproduces it (BoolQ's LIMITED rebuild: median relative difference 1.1e-5, one step
    at 1.3e-3) passes at the default 1e-4; another seed (first loss), another learning rate (every later loss) or
    one loss off by more than 100 x the tolerance does not. Numbers by hand."""
    from tasktransfer_utils.study.source_models import _first_difference

    def curve(losses):
        return {"loss_curve": [{"step": i + 1, "learning_rate": 1e-4, "loss": x} for i, x in enumerate(losses)]}

    rec = [1.0 + 0.01 * i for i in range(9)]
    drift = [rec[0]] + [x * (1 + 1e-5) for x in rec[1:]]
    drift[5] = rec[5] * (1 + 1.3e-3)
    assert _first_difference(curve(rec), curve(drift), "r", 1e-4) is None
    assert _first_difference(curve(rec), curve(drift), "r", 0.0) == f"r.loss_curve[1].loss is {drift[1]!r}, recorded {rec[1]!r}"
    seed = [rec[0] * 1.01] + rec[1:]
    assert _first_difference(curve(rec), curve(seed), "r", 1e-4) == f"r.loss_curve[0].loss is {seed[0]!r}, recorded 1.0"
    spike = list(rec)
    spike[3] = rec[3] * (1 + 2e-2)
    assert _first_difference(curve(rec), curve(spike), "r", 1e-4) == \
        f"r.loss_curve[3].loss is {spike[3]!r}, recorded {rec[3]!r} (more than 100 x the relative tolerance)"
    lr = [rec[0]] + [x * (1 + 5e-4) for x in rec[1:]]
    msg = _first_difference(curve(rec), curve(lr), "r", 1e-4)
    assert msg.startswith("r.loss_curve: the losses differ by a median 0.0005 relative (largest: r.loss_curve[")
    steps = curve(rec)
    steps["loss_curve"][2]["step"] = 4
    assert _first_difference(curve(rec), steps, "r", 1e-4) == "r.loss_curve[2].step is 4, recorded 3"


def test_rebuild_check_lets_a_dev_metric_move_by_one_dev_example():
    """Within epoch_metrics, final_metrics and score a number may differ by metric_atol (one dev example's
    share); anywhere else (losses, sizes) only by the relative tolerance."""
    from tasktransfer_utils.study.source_models import _first_difference

    rec = {"score": 0.90478, "final_metrics": {"f1": 0.90478}, "epoch_metrics": [{"epoch": 6.0, "f1": 0.90478}],
           "loss_curve": [{"loss": 0.5}], "train_examples": 1000}
    flip = {"score": 0.90494, "final_metrics": {"f1": 0.90494}, "epoch_metrics": [{"epoch": 6.0, "f1": 0.90494}],
            "loss_curve": [{"loss": 0.5}], "train_examples": 1000}
    assert _first_difference(rec, flip, "r", 1e-4) == "r.epoch_metrics[0].f1 is 0.90494, recorded 0.90478"
    assert _first_difference(rec, flip, "r", 1e-4, metric_atol=1 / 1000) is None
    assert _first_difference(rec, flip, "r", 1e-4, metric_atol=1 / 10000) is not None  # 1.6e-4 > one of 10,000
    loss = {**rec, "loss_curve": [{"loss": 0.5 + 5e-4}]}
    assert _first_difference(rec, loss, "r", 1e-4, metric_atol=1e-3) == "r.loss_curve[0].loss is 0.5005, recorded 0.5"
    size = {**rec, "train_examples": 1001}
    assert _first_difference(rec, size, "r", 1e-4, metric_atol=1e-2) == "r.train_examples is 1001, recorded 1000"


def test_a_variant_ranks_a_regime_only_with_each_side_s_own_embeddings():
    """variant_components by hand: a variant stored for LIMITED only ranks nothing in FULL→LIMITED although the
    same tasks have it as LIMITED targets; with both sides stored, the components every task shares."""
    import numpy as np

    from tasktransfer_utils.embeddings.store import TaskEmbedding
    from tasktransfer_utils.study.report import variant_components

    def emb(task, regime, comp, estimator="empirical"):
        return TaskEmbedding(np.ones(2, dtype=np.float32), {
            "task": task, "task_class": "CR", "method": "TaskEmb", "regime": regime, "component": comp,
            "estimator": estimator, "label_source": "gold"})

    tasks = ["A", "B"]
    limited = [emb(t, "LIMITED", c) for t in tasks for c in ("c1", "c2")]
    full_paper = [emb(t, "FULL", c, "paper") for t in tasks for c in ("c1", "c2")]
    variant = ("empirical", "gold", None)
    assert variant_components(full_paper, limited, tasks, tasks, variant) == []  # no FULL empirical TaskEmb
    assert variant_components(limited, limited, tasks, tasks, variant) == ["c1", "c2"]
    full = [emb(t, "FULL", c) for t in tasks for c in ("c1", "c3")]
    assert variant_components(full, limited, tasks, tasks, variant) == ["c1"]
    assert variant_components(full[:2], limited, tasks, tasks, variant) == []  # source B lacks it


def test_taskemb_variants_scoped_to_regimes_and_classes_and_a_second_qa_loss(tmp_path):
    """The offline study's three TaskEmb variants: the paper's estimator (masked QA loss) everywhere, the
    empirical estimator for the LIMITED tasks, the authors' QA loss for the LIMITED QA tasks; a second QA
    loss of one estimator is only valid for QA tasks; the report names each variant's rankers."""
    import numpy as np

    from tasktransfer_utils.embeddings.store import TaskEmbedding
    from tasktransfer_utils.study.jobs import taskemb_id
    from tasktransfer_utils.study.report import _of_variant, _taskemb_variants

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    ids = {j.id for j in build_jobs(cfg) if j.kind == "taskemb"}
    assert "taskemb__SQuAD-1__LIMITED__s0__paper-gold-qa-authors" in ids
    assert "taskemb__RTE__LIMITED__s0__paper-gold-qa-authors" not in ids  # classes: [QA]
    assert "taskemb__SQuAD-1__FULL__s0__paper-gold-qa-authors" not in ids  # regimes: [LIMITED]
    assert "taskemb__SQuAD-1__FULL__s0__empirical-gold" not in ids and "taskemb__RTE__LIMITED__s0__empirical-gold" in ids
    assert len(ids) == 12 * 2 + 12 + 4
    assert taskemb_id("A", "LIMITED", 0, "paper", "gold", "masked") == taskemb_id("A", "LIMITED", 0, "paper", "gold")
    base = {"name": "t", "tasks": {"CR": ["RTE"], "QA": ["SQuAD-1"]}}
    for second, ok in (({"qa_loss": "authors", "classes": ["QA"]}, True), ({"qa_loss": "authors"}, False),
                       ({"qa_loss": "masked", "classes": ["QA"]}, False)):
        raw = {**base, "embeddings": {"taskemb": [{"qa_loss": "masked"}, second]}}
        if ok:
            jobs = [j.id for j in build_jobs(study_config_from_dict(raw, base_dir=tmp_path)) if j.kind == "taskemb"]
            assert sorted(jobs) == ["taskemb__RTE__LIMITED__s0__paper-gold", "taskemb__SQuAD-1__LIMITED__s0__paper-gold",
                                    "taskemb__SQuAD-1__LIMITED__s0__paper-gold-qa-authors"]
        else:
            with pytest.raises(StudyConfigError, match=r"embeddings\.taskemb\[1\]"):
                study_config_from_dict(raw, base_dir=tmp_path)

    def emb(task, cls, estimator, qa_loss=None):
        meta = {"task": task, "task_class": cls, "method": "TaskEmb", "component": "c", "estimator": estimator,
                "label_source": "gold", **({"qa_loss": qa_loss} if qa_loss else {})}
        return TaskEmbedding(np.ones(2, dtype=np.float32), meta)

    embs = [emb("RTE", "CR", "paper"), emb("SQuAD-1", "QA", "paper"), emb("SQuAD-1", "QA", "paper", "authors"),
            emb("RTE", "CR", "empirical"), emb("SQuAD-1", "QA", "empirical")]
    variants = _taskemb_variants(embs, cfg.taskemb)
    assert variants == [(("empirical", "gold", "masked"), " (empirical, gold)"),
                        (("paper", "gold", "masked"), ""), (("paper", "gold", "authors"), " (authors QA loss)")]
    held = lambda v: sorted((e.task, e.meta["estimator"], e.meta.get("qa_loss")) for e in _of_variant(embs, v))  # noqa: E731
    assert held(("paper", "gold", "authors")) == [("RTE", "paper", None), ("SQuAD-1", "paper", "authors")]
    assert held(("paper", "gold", "masked")) == [("RTE", "paper", None), ("SQuAD-1", "paper", None)]
    # a study whose only QA loss is the authors' (a new study's default) names it plainly
    assert _taskemb_variants([emb("SQuAD-1", "QA", "paper", "authors")], [{"qa_loss": "authors"}]) == [
        (("paper", "gold", "authors"), "")]

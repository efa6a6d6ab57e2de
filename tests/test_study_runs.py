"""study_runs: a target's runs read from the committed offline study's records (checked against the record
files read by hand) or fine-tuned with a tiny random encoder (a few dozen examples, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasktransfer_utils.paths import CONFIGS_DIR, default_encoder
from tasktransfer_utils.data.regimes import get_transfer_regime
from tasktransfer_utils.study.config import load_study_config
from tasktransfer_utils.study.transfer_runs import TransferRuns, read_stored_runs, transfer_job_ids, transfer_runs
from tasktransfer_utils.training.fine_tuning import RunResult

REGIME = get_transfer_regime("LIMITED→LIMITED")
SOURCES = ["MRPC", "POS-PTB"]


@pytest.fixture(scope="module")
def records_dir():
    return load_study_config(CONFIGS_DIR / "offline_study.yaml").results_dir / "records"


def _record(records_dir, job_id):
    return json.loads((records_dir / f"{job_id}.json").read_text())["result"]


def test_job_ids_are_the_study_s():
    ids = transfer_job_ids("RTE", SOURCES, REGIME, 0)
    assert ids == {"alone": "finetune__RTE__LIMITED__s0",
                   "MRPC": "finetune__MRPC__LIMITED__s0",
                   "MRPC→RTE": "transfer__LIMITED-LIMITED__MRPC__RTE__s0",
                   "POS-PTB": "finetune__POS-PTB__LIMITED__s0",
                   "POS-PTB→RTE": "transfer__LIMITED-LIMITED__POS-PTB__RTE__s0"}
    full = transfer_job_ids("RTE", ["MRPC"], get_transfer_regime("FULL→LIMITED"), 3)
    assert full == {"alone": "finetune__RTE__LIMITED__s3", "MRPC": "finetune__MRPC__FULL__s3",
                    "MRPC→RTE": "transfer__FULL-LIMITED__MRPC__RTE__s3"}


def test_read_stored_runs_matches_the_record_files(records_dir):
    ids = transfer_job_ids("RTE", SOURCES, REGIME, 0)
    stored = read_stored_runs(records_dir, ids, default_encoder())
    assert sorted(stored) == sorted(ids)  # the offline study has all five
    for key, job_id in ids.items():
        by_hand = _record(records_dir, job_id)
        assert isinstance(stored[key], RunResult)
        assert stored[key].score == by_hand["score"]
        assert stored[key].epoch_metrics == by_hand["epoch_metrics"]
        assert stored[key].task == by_hand["task"]


def test_read_stored_runs_skips_other_encoders_and_missing_records(records_dir, tmp_path, tiny_encoder_dir):
    ids = transfer_job_ids("RTE", SOURCES, REGIME, 0)
    assert read_stored_runs(records_dir, ids, tiny_encoder_dir) == {}  # made with MiniLM, not this encoder
    assert read_stored_runs(tmp_path, ids, default_encoder()) == {}  # no records there
    only = {"alone": ids["alone"], "none": "finetune__RTE__LIMITED__s99"}
    assert list(read_stored_runs(records_dir, only, default_encoder())) == ["alone"]


def test_transfer_runs_from_records_trains_nothing(records_dir, tmp_path):
    ids = transfer_job_ids("RTE", SOURCES, REGIME, 0)
    stored = read_stored_runs(records_dir, ids, default_encoder())
    runs = transfer_runs("RTE", SOURCES, REGIME, encoder=default_encoder(), stored=stored, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert runs.from_records == sorted(ids)
    assert runs.baseline.score == _record(records_dir, ids["alone"])["score"]
    for s in SOURCES:
        assert runs.transfers[s].score == _record(records_dir, ids[f"{s}→RTE"])["score"]
        assert runs.source_runs[s].score == _record(records_dir, ids[s])["score"]
    assert runs.kind("MRPC") == "in-class" and runs.kind("POS-PTB") == "out-of-class"
    assert runs.labels() == {None: "RTE alone", "MRPC": "MRPC → RTE (in-class)",
                             "POS-PTB": "POS-PTB → RTE (out-of-class)"}

    # gains: the paper's (p_s→t − p_t) / |p_t| by hand
    gains = runs.gains().set_index("source")
    base = runs.baseline.score
    for s in SOURCES:
        assert gains.loc[s, "rel_gain"] == pytest.approx((runs.transfers[s].score - base) / abs(base), rel=1e-12)
        assert gains.loc[s, "kind"] == runs.kind(s)
    table = runs.results_table()
    assert table["source"].isna().tolist() == [True, False, False] and list(table["source"].iloc[1:]) == SOURCES
    assert set(table["regime"]) == {"LIMITED→LIMITED"} and list(table["score"]) == [base, *(runs.transfers[s].score
                                                                                       for s in SOURCES)]

    # per-epoch scores: RTE's one metric (accuracy) per epoch, read by hand from the record
    scores = runs.epoch_scores()
    by_hand = [e["accuracy"] for e in _record(records_dir, ids["MRPC→RTE"])["epoch_metrics"]]
    assert list(scores.loc[scores["run"] == "MRPC → RTE (in-class)", "score"]) == by_hand
    losses = runs.losses()
    curve = _record(records_dir, ids["alone"])["loss_curve"]
    assert np.allclose(losses.loc[losses["run"] == "RTE alone", "loss"], [p["loss"] for p in curve])


def test_transfer_runs_keeps_a_stored_transfer_without_its_source(records_dir, tmp_path):
    ids = transfer_job_ids("RTE", ["MRPC"], REGIME, 0)
    stored = read_stored_runs(records_dir, ids, default_encoder())
    del stored["MRPC"]
    runs = transfer_runs("RTE", ["MRPC"], REGIME, encoder=default_encoder(), stored=stored, runs_dir=tmp_path)
    assert runs.source_runs == {"MRPC": None} and runs.transfers["MRPC"].score == stored["MRPC→RTE"].score
    assert runs.from_records == ["MRPC→RTE", "alone"]


def test_transfer_runs_trains_what_is_missing(records_dir, tmp_path, tiny_encoder_dir):
    """The target alone is 'stored' (a run made here first); the transfer is missing, so the source and the
    transfer are fine-tuned, the transfer starting from the source's run folder."""
    kw = dict(encoder=tiny_encoder_dir, runs_dir=tmp_path, max_train_examples=32, max_eval_examples=8, num_epochs=1)
    first = transfer_runs("RTE", [], REGIME, **kw)
    assert isinstance(first, TransferRuns) and first.transfers == {}
    assert first.baseline.train_examples == 32 and len(first.baseline.epoch_metrics) == 1
    runs = transfer_runs("RTE", ["MRPC"], REGIME, stored={"alone": first.baseline}, **kw)
    assert runs.from_records == ["alone"] and runs.baseline is first.baseline
    source_dir = tmp_path / "MRPC.LIMITED.seed0"
    assert RunResult.from_json(source_dir / "result.json").score == runs.source_runs["MRPC"].score
    transfer = RunResult.from_json(tmp_path / "MRPC_to_RTE.LIMITED-LIMITED.seed0" / "result.json")
    assert transfer.score == runs.transfers["MRPC"].score
    assert transfer.init_from == str(source_dir)
    assert runs.source_runs["MRPC"].train_examples == 32 and runs.transfers["MRPC"].eval_examples == 8

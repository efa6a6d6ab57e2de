"""The cap check (study/cap_check.py): which FULL sources are capped, the cosines of capped vs uncapped
embeddings, and how the rankings move when the uncapped ones stand in, against numpy by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tasktransfer_utils.cli import main
from tasktransfer_utils.embeddings.store import TaskEmbedding
from tasktransfer_utils.paths import CONFIGS_DIR
from tasktransfer_utils.study.cap_check import cap_cosines, cap_rank_changes, capped_sources
from tasktransfer_utils.study.config import load_study_config


def _textemb(task, vector, regime, rows=10):
    return TaskEmbedding(np.asarray(vector, dtype=np.float32),
                         {"task": task, "method": "TextEmb", "component": "text", "regime": regime,
                          "encoder_id": "enc", "seed": 0, "num_examples": rows})


def test_capped_sources_are_the_full_sources_over_the_cap():
    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    sizes = {t: 5000 for t in cfg.sources} | {"SST-2": 67349, "NER": 14041, "RTE": 10000}
    assert capped_sources(cfg, sizes) == {"NER": 14041, "SST-2": 67349}  # RTE: exactly the cap, not over it


def test_cap_cosines_and_rank_changes_by_hand():
    sources = [_textemb("S1", [1, 0, 0], "FULL", 10), _textemb("S2", [0.8, 0.6, 0], "FULL"),
               _textemb("S3", [0, 1, 0], "FULL")]
    uncapped = {"S1": [_textemb("S1", [0, 0.2, 1], "FULL", 99)]}
    targets = [_textemb("T", [1, 0.1, 0], "LIMITED"), _textemb("U", [0, 1, 0.1], "LIMITED")]

    cos = cap_cosines(sources, uncapped["S1"])
    assert list(cos["task"]) == ["S1"] and cos.loc[0, "rows_capped"] == 10 and cos.loc[0, "rows_uncapped"] == 99
    assert cos.loc[0, "cosine"] == pytest.approx(0.0)  # [1,0,0] · [0,0.2,1] = 0

    table = cap_rank_changes(sources, uncapped, targets, "TextEmb", "FULL→LIMITED").set_index("target")

    def ranks(vectors, t):
        cosine = {s: float(np.dot(v, t) / np.linalg.norm(v) / np.linalg.norm(t)) for s, v in vectors.items()}
        order = sorted(cosine, key=lambda s: -cosine[s])
        return cosine, {s: order.index(s) + 1 for s in order}

    before = {"S1": [1, 0, 0], "S2": [0.8, 0.6, 0], "S3": [0, 1, 0]}
    after = {**before, "S1": [0, 0.2, 1]}
    for target, t in (("T", [1, 0.1, 0]), ("U", [0, 1, 0.1])):
        cos_a, rank_a = ranks(before, t)
        cos_b, rank_b = ranks(after, t)
        row = table.loc[target]
        assert row["n_sources"] == 3 and row["rank_S1"] == rank_a["S1"] and row["rank_S1_uncapped"] == rank_b["S1"]
        assert row["first_capped"] == min(rank_a, key=rank_a.get) and row["first_uncapped"] == min(rank_b, key=rank_b.get)
        assert row["same_first"] == (row["first_capped"] == row["first_uncapped"])
        # Spearman = Pearson of the ranks (no ties here)
        ra = [rank_a[s] for s in sorted(before)]
        rb = [rank_b[s] for s in sorted(before)]
        assert row["spearman"] == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert table.loc["T", "rank_S1"] == 1 and table.loc["T", "rank_S1_uncapped"] == 3  # the cap mattered here


def test_check_cap_without_a_cap_is_one_line(tmp_path, capsys):
    path = tmp_path / "nocap.yaml"
    path.write_text("name: nocap\ntasks: [RTE, MRPC]\nregimes: [FULL→LIMITED]\n")
    assert main(["study", "check-cap", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "embeddings.full_max_examples is not set" in err


def test_uncapped_taskemb_is_stored_with_portable_paths(tmp_path, monkeypatch):
    """The uncapped TaskEmb written to <results_dir>/cap_check names its model folder relative to runs_dir, as
    the study's own TaskEmb job does: the file is committed, and it must not hold a path of the machine."""
    import dataclasses
    import json
    import struct

    import tasktransfer_utils.embeddings.taskemb as taskemb
    import tasktransfer_utils.study.job_functions as job_functions
    from tasktransfer_utils.study.cap_check import CAP_DIR, _uncapped
    from tasktransfer_utils.study.jobs import finetune_id
    from tasktransfer_utils.study.source_models import model_run_dir

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    cfg = dataclasses.replace(cfg, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    model_dir = model_run_dir(cfg, finetune_id("NER", "FULL", cfg.seeds[0])) / "model"
    model_dir.mkdir(parents=True)

    def fake_taskemb(task_data, run_dir, **kw):
        meta = {"task": "NER", "method": "TaskEmb", "estimator": "paper", "label_source": "gold",
                "encoder_id": "sentence-transformers/all-MiniLM-L6-v2", "regime": "FULL", "seed": 0,
                "model_dir": str(model_dir.resolve()), "component": "encoder.layer.0.multihead_output"}
        return {meta["component"]: TaskEmbedding(np.ones(4, dtype=np.float32), meta)}

    monkeypatch.setattr(taskemb, "compute_taskemb", fake_taskemb)
    monkeypatch.setattr(job_functions, "_load", lambda params, cfg: None)
    monkeypatch.setattr(job_functions, "_check_encoder", lambda params, cfg: "enc")
    embs = _uncapped(cfg, "NER", "TaskEmb", log=lambda line: None)
    assert len(embs) == 1 and embs[0].meta["model_dir"] == str(model_dir.relative_to(tmp_path / "runs"))
    (stored,) = (tmp_path / "results" / CAP_DIR).glob("*.safetensors")
    raw = stored.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert str(tmp_path) not in json.dumps(header)
    assert json.loads(header["__metadata__"]["tasktransfer"])["embeddings"][0]["model_dir"] == str(
        model_dir.relative_to(tmp_path / "runs"))


def test_a_run_for_one_method_keeps_the_other_methods_rows(tmp_path, monkeypatch):
    """check-cap --method TextEmb rewrites the TextEmb rows of embedding_cap_check.csv and
    embedding_cap_cosines.csv and keeps the TaskEmb rows an earlier run wrote (a run for one method had
    dropped the other's)."""
    import dataclasses

    import pandas as pd

    import tasktransfer_utils.study.cap_check as cap_check

    cfg = load_study_config(CONFIGS_DIR / "offline_study.yaml")
    cfg = dataclasses.replace(cfg, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    out = tmp_path / "results" / "evaluation"
    out.mkdir(parents=True)
    old_rank = pd.DataFrame([{"regime": "FULL→LIMITED", "method": m, "target": "RTE", "n_sources": 2,
                              "spearman": 0.5, "same_first": False} for m in ("TaskEmb", "TextEmb")])
    old_rank.to_csv(out / "embedding_cap_check.csv", index=False)
    old_cos = pd.DataFrame([{"task": "NER", "method": m, "component": c, "cosine": 0.5, "rows_capped": 1,
                             "rows_uncapped": 2} for m, c in (("TaskEmb", "encoder.layer.0.layer_output"),
                                                              ("TextEmb", "text"))])
    old_cos.to_csv(out / "embedding_cap_cosines.csv", index=False)
    study = [_textemb("NER", [1, 0, 0], "FULL"), _textemb("MRPC", [0, 1, 0], "FULL"),
             _textemb("RTE", [1, 0.1, 0], "LIMITED")]
    monkeypatch.setattr(cap_check, "capped_sources", lambda cfg: {"NER": 14041})
    monkeypatch.setattr(cap_check, "_study_embeddings", lambda cfg, method: study)
    monkeypatch.setattr(cap_check, "_uncapped",
                        lambda cfg, task, method, log: [_textemb("NER", [0, 0, 1], "FULL", 99)])
    paths = cap_check.check_embedding_cap(cfg, ["TextEmb"], log=lambda line: None)
    rank = pd.read_csv(paths["rankings"])
    assert list(rank["method"]) == ["TextEmb", "TaskEmb"]  # this run's row, then the one kept, in METHODS order
    kept = rank[rank["method"] == "TaskEmb"]
    assert len(kept) == 1 and kept["spearman"].item() == 0.5  # the earlier TaskEmb row, as it was
    new = rank[(rank["method"] == "TextEmb") & (rank["target"] == "RTE")]
    assert len(new) == 1 and new["spearman"].item() != 0.5 and new["first_capped"].item() == "NER"
    cos = pd.read_csv(paths["cosines"])
    assert cos[cos["method"] == "TaskEmb"]["cosine"].tolist() == [0.5]
    assert cos[cos["method"] == "TextEmb"]["cosine"].item() == pytest.approx(0.0)  # [1,0,0] · [0,0,1]

"""Embedding store: safetensors round trip with metadata, filtering, comparability checks, library folder."""

from __future__ import annotations

import numpy as np
import pytest

from tasktransfer_utils.embeddings.store import (EmbeddingLibrary, TaskEmbedding, check_comparable, encoder_id,
                                                 load_embeddings, read_header, save_embeddings, select,
                                                 update_metadata)


def emb(task, component="cls_output", method="TaskEmb", estimator="paper", encoder="/x/y/all-MiniLM-L6-v2",
        dim=5, seed=0, **extra):
    rng = np.random.default_rng(abs(hash((task, component, seed))) % 2**32)
    meta = dict(task=task, method=method, component=component, estimator=estimator,
                label_source="gold" if method == "TaskEmb" else None, encoder=encoder,
                encoder_id=encoder_id(encoder), regime="FULL", seed=seed, num_examples=10, **extra)
    return TaskEmbedding(rng.normal(size=dim), meta)


def test_round_trip_keeps_vectors_and_metadata(tmp_path):
    embs = [emb("SST-2"), emb("RTE", component="encoder.layer.0.layer_output", shape=[5], nested={"a": [1, 2]}),
            emb("SQuAD-2", method="TextEmb", estimator=None, component="avg_sequence_output", dim=5)]
    path = save_embeddings(embs, tmp_path / "e.safetensors")
    back = load_embeddings(path)
    assert len(back) == 3
    for a, b in zip(embs, back):
        np.testing.assert_array_equal(a.vector, b.vector)
        assert a.meta == b.meta
        assert b.vector.dtype == np.float32
    assert [m["task"] for m in read_header(path)] == ["SST-2", "RTE", "SQuAD-2"]


def test_update_metadata_keeps_vectors_byte_identical(tmp_path):
    from safetensors.numpy import load_file

    embs = [emb("SQuAD-1", component="encoder.layer.1.layer_output"), emb("SQuAD-1", component="cls_output")]
    path = save_embeddings(embs, tmp_path / "e.safetensors")
    before = load_file(str(path))

    def note(es):
        for e in es:
            e.meta["qa_loss"] = "masked"

    update_metadata(path, note)
    after = load_file(str(path))
    assert {k: v.tobytes() for k, v in before.items()} == {k: v.tobytes() for k, v in after.items()}
    assert [m["qa_loss"] for m in read_header(path)] == ["masked", "masked"]

    def change_vector(es):
        es[0].vector = es[0].vector * 2

    with pytest.raises(ValueError, match="changed a vector"):
        update_metadata(path, change_vector)


def test_filters_values_lists_globs_and_predicates(tmp_path):
    embs = [emb(t, component=c) for t in ("SST-2", "RTE") for c in ("cls_output", "encoder.layer.0.layer_output",
                                                                      "encoder.layer.1.layer_output")]
    path = save_embeddings(embs, tmp_path / "e.safetensors")
    assert len(load_embeddings(path, task="RTE")) == 3
    assert len(load_embeddings(path, component="encoder.layer.*.layer_output")) == 4
    assert len(load_embeddings(path, task=["RTE", "SST-2"], component="cls_output")) == 2
    assert len(load_embeddings(path, num_examples=lambda n: n > 5)) == 6
    assert len(select(embs, task="SST-2", component=None)) == 3


def test_comparability_errors_name_the_field_and_tasks(tmp_path):
    a = emb("SST-2")
    check_comparable([a, emb("RTE")])
    cases = {
        "encoder_id": emb("RTE", encoder="bert-base-uncased"),
        "method": emb("RTE", method="TextEmb", estimator="paper"),
        "component": emb("RTE", component="encoder.layer.0.layer_output"),
        "estimator": emb("RTE", estimator="empirical"),
    }
    for field, other in cases.items():
        with pytest.raises(ValueError, match=field) as e:
            check_comparable([a, other])
        assert "SST-2" in str(e.value) and "RTE" in str(e.value)
    with pytest.raises(ValueError, match="length"):
        check_comparable([a, emb("RTE", dim=7)])
    # QA TaskEmbs must share their QA loss (a missing field is the masked loss)
    old, new = emb("SQuAD-1", task_class="QA"), emb("BoolQ", task_class="QA", qa_loss="authors")
    check_comparable([old, emb("BoolQ", task_class="QA", qa_loss="masked"), a])
    with pytest.raises(ValueError, match="different QA losses"):
        check_comparable([old, new])
    lib = EmbeddingLibrary(tmp_path / "lib")
    assert lib.file_name(old.meta) == lib.file_name(emb("SQuAD-1", task_class="QA", qa_loss="masked").meta)
    assert "__qa-authors__" in lib.file_name(new.meta)
    path = save_embeddings([a, cases["estimator"]], tmp_path / "mixed.safetensors")
    assert len(load_embeddings(path)) == 2
    with pytest.raises(ValueError, match="estimator"):
        load_embeddings(path, check=True)


def test_library_folder(tmp_path):
    lib = EmbeddingLibrary(tmp_path / "lib")
    assert len(lib) == 0 and lib.files() == []
    p1 = lib.add([emb("SST-2"), emb("SST-2", component="encoder.layer.0.layer_output")])
    p2 = lib.add({"cls_output": emb("RTE")})
    assert p1.name == "SST-2__TaskEmb__all-MiniLM-L6-v2__paper__gold__FULL__seed0.safetensors"
    assert p1 != p2 and len(lib) == 3
    idx = lib.index()
    assert set(idx["task"]) == {"SST-2", "RTE"} and "file" in idx.columns
    got = lib.get(task="RTE", component="cls_output")
    assert got.task == "RTE"
    assert len(lib.load(component="cls_output", check=True)) == 2
    with pytest.raises(ValueError, match="exactly one"):
        lib.get(task="SST-2")


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        TaskEmbedding(np.zeros((2, 3)), {"task": "X", "component": "c"})
    with pytest.raises(ValueError, match=".safetensors"):
        save_embeddings([emb("X")], tmp_path / "e.npz")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(3, dtype=np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a task-embedding file"):
        load_embeddings(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "missing.safetensors")


def test_encoder_id():
    assert encoder_id("/a/b/all-MiniLM-L6-v2/") == "all-MiniLM-L6-v2"
    assert encoder_id("bert-base-uncased") == "bert-base-uncased"
    assert encoder_id("google/bert_uncased_L-2_H-128_A-2") == "google/bert_uncased_L-2_H-128_A-2"
    assert encoder_id(None) is None


def test_the_study_s_taskembs_record_the_settings_of_the_fine_tune_they_were_computed_from():
    """Every committed TaskEmb of the offline study says how its model was fine-tuned (``finetune_settings``),
    and that is what the model's fine-tune record says (``tasktransfer rank`` fine-tunes a target that way)."""
    import json
    from pathlib import Path

    from tasktransfer_utils.embeddings.store import read_header

    study = Path(__file__).resolve().parents[1] / "results" / "offline_study"
    files = sorted((study / "embeddings").glob("*__TaskEmb__*.safetensors"))
    assert len(files) >= 18
    for f in files:
        for meta in read_header(f):
            job = Path(meta["model_dir"]).parent.name
            record = json.loads((study / "records" / f"{job}.json").read_text())
            assert meta["finetune_settings"] == record["result"]["settings"], (f.name, meta["component"])
            # and how well that model learned its task (the record's dev score and final metrics)
            assert meta["finetune_score"] == record["result"]["score"], (f.name, meta["component"])
            assert meta["finetune_metrics"] == record["result"]["final_metrics"], (f.name, meta["component"])

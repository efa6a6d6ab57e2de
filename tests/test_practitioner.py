"""Reading users' dataset files and ranking stored sources for them (tiny encoder, real data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasktransfer_utils.practitioner import rank as pr
from tasktransfer_utils.embeddings.store import EmbeddingLibrary

SOURCES = ("WNLI", "RTE", "STS-B", "Chunk")


@pytest.fixture(scope="module")
def textemb_library(tmp_path_factory, data_dir, tiny_encoder_dir):
    """TextEmb of a few real source tasks (32 examples each) from the tiny encoder."""
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    lib = EmbeddingLibrary(tmp_path_factory.mktemp("library"))
    for task in SOURCES:
        lib.add([compute_textemb(load_task(task, data_dir=data_dir), encoder=tiny_encoder_dir, max_examples=32,
                                 device="cpu")])
    return lib


# ---------------------------------------------------------------- reading real files


def test_read_glue_tsv_files(data_dir):
    rte = pr.read_target_file(data_dir / "glue/RTE/dev.tsv")
    assert rte.spec.name == "RTE-dev" and rte.spec.task_class.value == "CR" and rte.spec.is_pair
    assert rte.label_names == ("entailment", "not_entailment") and len(rte.splits["train"]) == 277
    assert rte.provenance["text_a"] == "sentence1" and rte.provenance["text_b"] == "sentence2"
    first = rte.splits["train"][0]
    assert first["text_a"].startswith("Dana Reeve") and rte.label_names[first["label"]] == "not_entailment"
    stsb = pr.read_target_file(data_dir / "glue/STS-B/dev.tsv")
    assert stsb.spec.is_regression and stsb.label_names is None and stsb.splits["train"][0]["label"] == 5.0
    assert stsb.spec.metrics == ("pearson", "spearman")
    qnli = pr.read_target_file(data_dir / "glue/QNLI/dev.tsv")
    assert (qnli.provenance["text_a"], qnli.provenance["text_b"]) == ("question", "sentence")
    sst = pr.read_target_file(data_dir / "glue/SST-2/dev.tsv")
    assert not sst.spec.is_pair and sst.label_names == ("0", "1") and len(sst.splits["train"]) == 872
    assert len(sst.splits["validation"]) == 87  # seeded 10 % sample for monitoring


def test_read_headerless_tsv_by_column_numbers(data_dir):
    with pytest.raises(pr.TargetFileError, match="line 1: no header row"):
        pr.read_target_file(data_dir / "glue/CoLA/dev.tsv")
    cola = pr.read_target_file(data_dir / "glue/CoLA/dev.tsv", text_columns=[3], label_column=1, header=False)
    assert len(cola.splits["train"]) == 1043 and cola.label_names == ("0", "1")
    assert cola.splits["train"][0]["text_a"] == "The sailors rode the breeze clear of the rocks."


def test_read_conll_conllu_squad_boolq_mrqa(data_dir):
    ner = pr.read_target_file(data_dir / "conll2003/eng.testa")
    assert ner.spec.task_class.value == "SL" and ner.spec.metrics == ("seqeval_f1",)
    assert len(ner.splits["train"]) == 3250 and "B-PER" in ner.label_names
    ewt = pr.read_target_file(data_dir / "ud_english_ewt/en_ewt-ud-dev.conllu")
    assert len(ewt.splits["train"]) == 2001 and "NOUN" in ewt.label_names and ewt.spec.metrics == ("token_accuracy",)
    assert sum(len(t) for t in ewt.splits["train"]["tokens"]) == 25147  # syntactic words (MANIFEST)
    sq2 = pr.read_target_file(data_dir / "squad/v2.0_cs224n_dev/dev-v2.0.json")
    assert sq2.spec.task_class.value == "QA" and len(sq2.splits["train"]) == 6078
    assert sum(len(a["text"]) == 0 for a in sq2.splits["train"]["answers"]) == 3168  # unanswerable
    boolq = pr.read_target_file(data_dir / "boolq/dev.jsonl")
    assert len(boolq.splits["train"]) == 3270 and boolq.provenance["layout"] == "BoolQ"
    assert boolq.splits["train"][0]["context"].startswith("yes. no. ")
    with pytest.warns(UserWarning, match="dropped"):
        faq = pr.read_target_file(data_dir / "pnrsvc_dataqa/dev-v1.1.json")
    assert len(faq.splits["train"]) + len(faq.provenance["dropped"]) == 557
    # a file with unanswerable questions is scored by SQuAD v2.0 rules, whatever sample is evaluated
    assert sq2.spec.version_2_with_negative and not faq.spec.version_2_with_negative
    assert not boolq.spec.version_2_with_negative


# ---------------------------------------------------------------- reading hand-made files


def test_read_csv_with_quotes_and_string_labels(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text('id,review,sentiment\n1,"Great, really great",pos\n2,"Bad ""acting""",neg\n3,Fine,pos\n')
    d = pr.read_target_file(f, label_column="sentiment")
    assert d.spec.name == "reviews" and d.label_names == ("neg", "pos")
    assert d.splits["train"]["text_a"] == ["Great, really great", 'Bad "acting"', "Fine"]
    assert d.splits["train"]["label"] == [1, 0, 1]
    unlabelled = tmp_path / "texts.csv"
    unlabelled.write_text("text\nfirst sentence\nsecond one\n")
    u = pr.read_target_file(unlabelled)
    assert u.provenance["labelled"] is False and len(u.splits["train"]) == 2


def test_read_jsonl_layouts(tmp_path):
    cr = tmp_path / "cr.jsonl"
    cr.write_text("\n".join(json.dumps(r) for r in [{"text": "a b", "label": 0.5}, {"text": "c", "label": 1.25}]))
    d = pr.read_target_file(cr)
    assert d.spec.is_regression and d.splits["train"]["label"] == [0.5, 1.25]
    sl = tmp_path / "sl.jsonl"
    sl.write_text(json.dumps({"tokens": ["John", "runs"], "tags": ["B-PER", "O"]}) + "\n"
                  + json.dumps({"tokens": ["Hi"], "tags": ["O"]}) + "\n")
    d = pr.read_target_file(sl)
    assert d.spec.task_class.value == "SL" and d.label_names == ("B-PER", "O")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "1", "question": "Who?", "context": "Ann met Bob.",
                              "answers": [{"text": "Bob", "answer_start": 8}]}) + "\n")
    d = pr.read_target_file(qa)
    assert d.splits["train"][0]["answers"] == {"text": ["Bob"], "answer_start": [8]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": 1}\n{"text": oops}\n')
    with pytest.raises(pr.TargetFileError, match="line 2: not valid JSON"):
        pr.read_target_file(bad)


def test_read_conll_unlabelled_and_errors(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("The\ncat\n\nsat\n")
    d = pr.read_target_file(f)
    assert d.provenance["labelled"] is False and d.splits["train"]["tokens"] == [["The", "cat"], ["sat"]]
    tagged = tmp_path / "pos.conll"
    tagged.write_text("-DOCSTART- -X- O\n\nThe DT B-NP\ncat NN I-NP\n\n")
    d = pr.read_target_file(tagged, tag_column=1)
    assert d.splits["train"]["tags"] == [["DT", "NN"]] and d.spec.metrics == ("token_accuracy",)
    with pytest.raises(pr.TargetFileError, match="read as a SL task"):
        pr.read_target_file(tagged, task_class="CR")
    empty_label = tmp_path / "e.tsv"
    empty_label.write_text("sentence\tlabel\nfine\t1\nbroken\t\n")
    with pytest.raises(pr.TargetFileError, match="row 2: label column 'label' is empty"):
        pr.read_target_file(empty_label)
    no_text = tmp_path / "n.tsv"
    no_text.write_text("foo\tlabel\nx\t1\n")
    with pytest.raises(pr.TargetFileError, match="no text column"):
        pr.read_target_file(no_text)
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(pr.TargetFileError, match="cannot tell the format"):
        pr.read_target_file(tmp_path / "x.xlsx")
    with pytest.raises(FileNotFoundError):
        pr.read_target_file(tmp_path / "missing.csv")


# ---------------------------------------------------------------- ranking


def test_rank_sources_textemb_matches_cosine_by_hand(data_dir, textemb_library, tiny_encoder_dir):
    from tasktransfer_utils.embeddings.textemb import compute_textemb

    target = pr.read_target_file(data_dir / "glue/RTE/dev.tsv")
    ranked = pr.rank_sources(target, textemb_library, max_examples=24)
    assert ranked.columns.tolist() == ["rank", "source", "source_class", "score", "method"]
    assert set(ranked["source"]) == set(SOURCES) and (ranked["method"] == "TextEmb").all()
    assert ranked.attrs["score_kind"] == "cosine similarity"
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    # the same target embedding computed directly, cosine by hand in float64
    t = compute_textemb(target, encoder=tiny_encoder_dir, max_examples=24, device="cpu").vector.astype(float)
    stored = {e.task: e.vector.astype(float) for e in textemb_library.load(method="TextEmb")}
    cos = {s: t @ v / np.linalg.norm(t) / np.linalg.norm(v) for s, v in stored.items()}
    assert ranked["source"].tolist() == sorted(cos, key=cos.get, reverse=True)
    np.testing.assert_allclose(ranked.set_index("source")["score"], pd.Series(cos)[ranked["source"]], rtol=1e-5)
    assert ranked.set_index("source").loc["Chunk", "source_class"] == "SL"

    inclass = pr.rank_sources(target, textemb_library, max_examples=24, candidate_set="in-class", exclude=["WNLI"])
    assert set(inclass["source"]) == {"RTE", "STS-B"}
    text = pr.format_ranking(inclass)
    assert "RTE-dev (CR, 277 examples)" in text and "in-class" in text


def test_rank_sources_errors(data_dir, textemb_library, tmp_path):
    target = pr.read_target_file(data_dir / "glue/RTE/dev.tsv")
    with pytest.raises(ValueError, match="regime 'LIMITED'"):
        pr.rank_sources(target, textemb_library, source_regime="LIMITED")
    with pytest.raises(ValueError, match="regime 'LIMITED'"):  # any spelling of a regime: its source side
        pr.rank_sources(target, textemb_library, source_regime="limited->limited")
    with pytest.raises(ValueError, match="differs from the library's encoder"):
        pr.rank_sources(target, textemb_library, encoder="bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pr.rank_sources(target, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no TaskEmb source embeddings"):
        pr.rank_sources(target, textemb_library, method="TaskEmb")
    with pytest.raises(ValueError, match="method must be"):
        pr.rank_sources(target, textemb_library, method="Cosine")


def test_rank_sources_taskemb_end_to_end(data_dir, tiny_encoder_dir, tmp_path):
    """Fine-tune the tiny encoder on two small sources and on the target; TaskEmb = RRF over the
    components every task shares (the classifier heads differ in shape and are left out)."""
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.data.regimes import apply_regime
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.embeddings.taskemb import compute_taskemb
    from tasktransfer_utils.training.fine_tuning import fine_tune

    lib = EmbeddingLibrary(tmp_path / "lib")
    for task in ("WNLI", "Chunk"):
        d = load_task(task, data_dir=data_dir)
        d.splits["train"] = apply_regime(d.splits["train"], "LIMITED", 0, n=16)
        d.splits["validation"] = apply_regime(d.splits["validation"], "LIMITED", 0, n=8)
        run = fine_tune(d, tmp_path / "runs" / task, encoder=tiny_encoder_dir, device="cpu",
                        settings=preset(d.spec.task_class, num_epochs=1, batch_size=8, learning_rate=3e-4))
        embs = compute_taskemb(d, run.model_dir, device="cpu")
        assert all(e.meta["finetune_settings"] == run.settings for e in embs.values())
        assert all(e.meta["finetune_score"] == run.score and e.meta["finetune_metrics"] == run.final_metrics
                   for e in embs.values())  # how well the model it comes from learned its task
        lib.add(embs.values())
    target_file = tmp_path / "target.tsv"
    rows = pd.read_csv(data_dir / "glue/RTE/dev.tsv", sep="\t").head(20)
    rows[["sentence1", "sentence2", "label"]].to_csv(target_file, sep="\t", index=False)
    said = []
    ranked = pr.rank_sources(target_file, lib, method="TaskEmb", work_dir=tmp_path / "work", finetune_epochs=1,
                             device="cpu", progress=said.append)
    assert set(ranked["source"]) == {"WNLI", "Chunk"} and (ranked["method"] == "TaskEmb").all()
    assert ranked.attrs["score_kind"].startswith("reciprocal-rank-fusion")
    # RRF scores: one ranking per shared component, each contributing 1/(60+1) or 1/(60+2)
    total = ranked["score"].sum()
    n_components = round(total / (1 / 61 + 1 / 62))
    assert n_components >= 10 and total == pytest.approx(n_components * (1 / 61 + 1 / 62))
    # the target (CR) was fine-tuned as the library's CR source was: its learning rate, not the preset's
    (target_run,) = (tmp_path / "work").iterdir()
    used = json.loads((target_run / "config.json").read_text())["settings"]
    assert used == {**preset("CR", num_epochs=1, batch_size=8, learning_rate=3e-4).to_dict()}
    # and the user is told how well the target's model learned (its run's score)
    score = json.loads((target_run / "result.json").read_text())["score"]
    assert [line for line in said if line.startswith(f"TaskEmb: fine-tuned, score {score:.4f} on the monitoring")]


def test_a_target_is_fine_tuned_with_the_settings_of_the_library_s_sources_of_its_class():
    from tasktransfer_utils.embeddings.store import TaskEmbedding
    from tasktransfer_utils.training.settings import preset

    def emb(task, cls, **settings):
        meta = {"task": task, "task_class": cls, "method": "TaskEmb"}
        if settings:
            meta["finetune_settings"] = preset(cls, **settings).to_dict()
        return TaskEmbedding(np.ones(3, dtype=np.float32), meta)

    lib = [emb("A", "CR", learning_rate=1e-4), emb("B", "CR", learning_rate=1e-4), emb("C", "QA", max_seq_length=256)]
    s, why = pr.library_finetune_settings(lib, "CR")
    assert s == preset("CR", learning_rate=1e-4) and why == "as the library's CR sources were fine-tuned"
    assert pr.library_finetune_settings(lib, "QA")[0] == preset("QA", max_seq_length=256)
    s, why = pr.library_finetune_settings(lib, "SL")
    assert s == preset("SL") and why == "the SL preset (the library has no SL sources)"
    for odd in (emb("D", "CR", learning_rate=2e-5), emb("D", "CR")):  # sources trained two ways; one unrecorded
        s, why = pr.library_finetune_settings([*lib, odd], "CR")
        assert s == preset("CR") and why == "the CR preset (the library's CR sources record no single fine-tuning setting)"


def test_a_library_with_two_regimes_ranks_with_one():
    """Sources embedded in FULL and LIMITED (a study with FULL→LIMITED): without --source-regime the ranking uses
    the LIMITED embeddings of every source, never a mix."""
    import numpy as np

    from tasktransfer_utils.embeddings.store import TaskEmbedding
    from tasktransfer_utils.practitioner.rank import _regime_filter

    def emb(task, regime):
        return TaskEmbedding(np.ones(3, dtype=np.float32), {"task": task, "method": "TextEmb", "regime": regime})

    embs = [emb("A", "LIMITED"), emb("B", "LIMITED"), emb("A", "FULL")]
    assert [(e.meta["task"], e.meta["regime"]) for e in _regime_filter(embs, None)] == [("A", "LIMITED"), ("B", "LIMITED")]
    assert [e.meta["task"] for e in _regime_filter(embs, "FULL")] == ["A"]
    assert _regime_filter(embs[:2], None) == embs[:2]  # one regime: unchanged

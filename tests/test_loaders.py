"""Local loading of every offline-suite task from the real data bundle: counts, label sets, known examples,
derived splits, and the PTB ancestor tasks checked against an nltk ParentedTree computation (Liu et al. 2019)."""

from __future__ import annotations

import re
import zipfile
from collections import Counter

import numpy as np
import pytest

from tasktransfer_utils.data.raw_examples import BOOLQ_PREFIX, RawExample
from tasktransfer_utils.data.loaders import (TaskData, derive_validation, features_for, load_task, split_groups,
                                             task_size)
from tasktransfer_utils.data.tasks import SUITES, TaskClass, get_task

# (train, validation, test) examples per task, seed 0. Where the validation split is derived the sum is the
# manifest's count of the one local file (QNLI 5,463; SQuAD-1 10,507; SQuAD-2 6,078; BoolQ 3,270; PTB 3,914).
SIZES = {
    "SST-2": (67349, 872, None), "CoLA": (8551, 1043, None), "MRPC": (3668, 408, None),
    "STS-B": (5749, 1500, None), "RTE": (2490, 277, None), "QNLI": (4396, 1067, None), "WNLI": (635, 71, None),
    "SQuAD-1": (8443, 2064, None), "SQuAD-2": (4870, 1208, None), "BoolQ": (2617, 653, None),
    "FAQ-TR": (433, 90, None),
    "POS-PTB": (3122, 792, None), "Parent": (3122, 792, None), "GParent": (3122, 792, None),
    "GGParent": (3122, 792, None), "POS-EWT": (12544, 2001, 2077), "Chunk": (8936, 2012, None),
    "NER": (14041, 3250, 3453),
    "MR": (8530, 2132, None), "SUBJ": (8000, 2000, None), "TREC": (5452, 500, None),
    "PPAttach": (20801, 4039, 3097), "RTE-PASCAL": (1767, 2400, None), "NPS-Chat-DA": (8454, 2113, None),
    "POS-MASC": (27833, 6699, None), "POS-Brown": (45725, 11615, None),
    "NER-ES": (8323, 1915, 1517), "NER-NL": (15806, 2895, 5195),
}
MANIFEST_TOTALS = {"QNLI": 5463, "SQuAD-1": 10507, "SQuAD-2": 6078, "BoolQ": 3270, "POS-PTB": 3914,
                   "MR": 10662, "SUBJ": 10000, "NPS-Chat-DA": 10567, "FAQ-TR": 557 - 34}
OFFLINE = list(SUITES["offline"])
EXTRA_FAST = ["MR", "SUBJ", "TREC", "PPAttach", "RTE-PASCAL", "NPS-Chat-DA", "NER-ES", "NER-NL"]


def _by(ds, key, value):
    rows = [r for r in _rows(ds) if r[key] == value]
    assert rows, f"no row with {key} = {value!r}"
    return rows[0]


def _rows(ds):
    return ds.data.to_pylist()


def _col(ds, name):
    return ds.data.column(name).to_pylist()


def _all(td: TaskData):
    return [r for split in td.splits.values() for r in _rows(split)]


@pytest.mark.parametrize("name", OFFLINE + EXTRA_FAST)
def test_split_sizes_schema_and_labels(name, data_dir):
    td = load_task(name, data_dir=data_dir)
    spec = get_task(name)
    train, val, test = SIZES[name]
    assert len(td.splits["train"]) == train and len(td.splits["validation"]) == val
    assert (len(td.splits["test"]) if "test" in td.splits else None) == test
    if name in MANIFEST_TOTALS:
        assert train + val == MANIFEST_TOTALS[name]
        assert td.provenance["derived_split"]["derived"] is True
    for split in td.splits.values():
        assert split.features == features_for(spec)
    assert td.source == "local" and td.provenance["files"]
    if spec.task_class is TaskClass.CR:
        if spec.is_regression:
            assert td.label_names is None
        else:
            assert td.label_names == spec.labels
            used = {label for split in td.splits.values() for label in _col(split, "label")}
            assert used == set(range(len(spec.labels))), "every class occurs"
        assert all((b is None) != spec.is_pair for b in _col(td.splits["train"], "text_b"))
    elif spec.task_class is TaskClass.SL:
        tags = {t for split in td.splits.values() for seq in _col(split, "tags") for t in seq}
        assert tags <= set(td.label_names)
        for split in td.splits.values():
            assert all(len(a) == len(b) for a, b in zip(_col(split, "tokens"), _col(split, "tags")))
    else:
        assert td.label_names is None
        for r in _all(td):
            for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
                assert r["context"][start:start + len(text)] == text


def test_glue_known_examples(data_dir):
    sst = load_task("SST-2", data_dir=data_dir)
    assert sst.splits["train"][0] == {"text_a": "hide new secretions from the parental units ", "text_b": None,
                                      "label": 0}
    assert sst.label_names[sst.splits["validation"][0]["label"]] == "positive"
    cola = load_task("CoLA", data_dir=data_dir)  # no header line: the first row is data
    first = "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola.splits["train"][0]["text_a"] == first
    assert cola.splits["train"][0]["label"] == 1
    assert Counter(_col(cola.splits["validation"], "label")) == {1: 721, 0: 322}
    rte = load_task("RTE", data_dir=data_dir)
    assert rte.splits["train"][0]["text_b"] == "Weapons of Mass Destruction Found in Iraq."
    assert rte.label_names[rte.splits["train"][0]["label"]] == "not_entailment"
    stsb = load_task("STS-B", data_dir=data_dir)
    assert stsb.splits["train"][0]["text_a"] == "A plane is taking off." and stsb.splits["train"][0]["label"] == 5.0
    assert stsb.splits["train"][1]["label"] == pytest.approx(3.8)
    assert 0.0 <= min(_col(stsb.splits["train"], "label")) and max(_col(stsb.splits["train"], "label")) <= 5.0
    wnli = load_task("WNLI", data_dir=data_dir)
    assert wnli.label_names[wnli.splits["train"][0]["label"]] == "entailment"


def test_mrpc_train_is_glue_split_rebuilt_from_msr_file(data_dir):
    mrpc = load_task("MRPC", data_dir=data_dir)
    train = mrpc.splits["train"]
    first = train[0]
    assert first["text_a"].startswith("Amrozi accused his brother") and first["label"] == 1  # BOM stripped
    pairs = set(zip(train["text_a"], train["text_b"]))
    # the pair missing from the bundled train.tsv is there
    assert ('Officials at Brandeis said this was an " extremely heartrending " time for the campus .',
            '" This is an extremely heartrending time for the entire Brandeis University community .') in pairs
    # every row of the bundled GLUE train.tsv is in the rebuilt split, with its label
    lines = (data_dir / "glue/MRPC/train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    labelled = {(p[3], p[4]): int(p[0]) for p in (l.split("\t") for l in lines)}
    assert len(labelled) == 3667
    got = {(a, b): y for a, b, y in zip(train["text_a"], train["text_b"], train["label"])}
    assert all(got[k] == y for k, y in labelled.items())
    dev = set(zip(_col(mrpc.splits["validation"], "text_a"), _col(mrpc.splits["validation"], "text_b")))
    assert not pairs & dev


def test_qnli_derived_split_shares_no_question_and_no_sentence(data_dir):
    # one sentence serves several questions: grouping by question alone put 413 sentences on both sides
    td = load_task("QNLI", data_dir=data_dir)
    train, val = td.splits["train"], td.splits["validation"]
    assert not set(_col(train, "text_a")) & set(_col(val, "text_a"))
    assert not set(_col(train, "text_b")) & set(_col(val, "text_b"))
    ds = td.provenance["derived_split"]
    assert ds["seed"] == 0 and ds["validation_fraction"] == 0.2 and ds["group_by"] == ["text_a", "text_b"]
    assert ds["num_groups"] == 2684 and ds["validation_groups"] == 537   # components, not the 4,100 questions
    assert 0.18 < len(val) / (len(train) + len(val)) < 0.22
    other = load_task("QNLI", data_dir=data_dir, seed=1)
    assert set(_col(other.splits["validation"], "text_b")) != set(_col(val, "text_b"))
    assert not set(_col(other.splits["train"], "text_b")) & set(_col(other.splits["validation"], "text_b"))


def test_split_groups_are_connected_components_of_shared_keys():
    # questions q1..q4, sentences s1..s4: q1-s1, q2-s1, q2-s2 link rows 0-2; q3-s3 and q4-s4 stand alone; a
    # question text equal to a sentence text ("x") links nothing (keys are compared per tuple position)
    rows = [("q1", "s1"), ("q2", "s1"), ("q2", "s2"), ("q3", "s3"), ("x", "s4"), ("q5", "x"), ("q1", "s5")]
    examples = [RawExample(f"row {i}", {}, g) for i, g in enumerate(rows)]
    assert split_groups(examples) == [0, 0, 0, 1, 2, 3, 0]
    assert split_groups([RawExample("a", {}, "c1"), RawExample("b", {}, None), RawExample("c", {}, "c1"),
                         RawExample("d", {}, None)]) == [0, 1, 0, 2]
    for seed in range(20):
        train, val, rec = derive_validation(examples, 0.5, seed)
        assert rec["num_groups"] == 4 and rec["validation_groups"] == 2
        for pos in (0, 1):
            assert not {ex.group[pos] for ex in train} & {ex.group[pos] for ex in val}
        assert sorted(ex.where for ex in train + val) == sorted(ex.where for ex in examples)


def test_single_key_split_is_unchanged_by_component_grouping(data_dir):
    # the grouping by one key (contexts, files) is the old one, group for group: derive the split the
    # old way (groups in order of first appearance, a seeded permutation of them) and compare
    from tasktransfer_utils.data.loaders import read_local_raw
    from tasktransfer_utils.paths import resolve_data_dir
    raw = read_local_raw(get_task("SQuAD-2"), resolve_data_dir(data_dir))[0]["train"]
    groups = list(dict.fromkeys(ex.group for ex in raw))
    held = {groups[i] for i in np.random.default_rng(0).permutation(len(groups))[:round(0.2 * len(groups))]}
    expected = [ex.data["id"] for ex in raw if ex.group in held]
    assert _col(load_task("SQuAD-2", data_dir=data_dir).splits["validation"], "id") == expected


@pytest.mark.parametrize("name", ["SQuAD-1", "SQuAD-2", "BoolQ", "FAQ-TR"])
def test_qa_derived_split_has_no_context_in_both(name, data_dir):
    td = load_task(name, data_dir=data_dir)
    assert not set(_col(td.splits["train"], "context")) & set(_col(td.splits["validation"], "context"))
    assert td.provenance["derived_split"]["group_by"] == "context"
    ids = [r["id"] for r in _all(td)]
    assert len(ids) == len(set(ids))


def test_derived_split_is_seeded(data_dir):
    a = load_task("SQuAD-2", data_dir=data_dir, seed=0)
    b = load_task("SQuAD-2", data_dir=data_dir, seed=0)
    c = load_task("SQuAD-2", data_dir=data_dir, seed=1)
    assert _col(a.splits["validation"], "id") == _col(b.splits["validation"], "id")
    assert set(_col(a.splits["validation"], "id")) != set(_col(c.splits["validation"], "id"))
    assert c.provenance["derived_split"]["seed"] == 1
    assert sorted(_col(a.splits["train"], "id") + _col(a.splits["validation"], "id")) == \
        sorted(_col(c.splits["train"], "id") + _col(c.splits["validation"], "id"))


def test_squad1_from_mrqa_file(data_dir):
    td = load_task("SQuAD-1", data_dir=data_dir)
    rows = _all(td)
    assert len({r["context"] for r in rows}) == 2067
    r = next(r for r in rows if r["id"] == "56be4db0acb8001400a502ec")
    assert r["question"] == "Which NFL team represented the AFC at Super Bowl 50?"
    assert r["answers"] == {"text": ["Denver Broncos"] * 3, "answer_start": [177] * 3}
    assert all(r["answers"]["text"] for r in rows), "SQuAD v1.1 has no unanswerable question"


def test_squad2_unanswerable_questions(data_dir):
    rows = _all(load_task("SQuAD-2", data_dir=data_dir))
    assert sum(not r["answers"]["text"] for r in rows) == 3168
    assert sum(bool(r["answers"]["text"]) for r in rows) == 2910
    r = next(r for r in rows if r["question"] == "In what country is Normandy located?")
    assert r["answers"]["text"][0] == "France" and r["answers"]["answer_start"][0] == 159


def test_boolq_extractive_framing(data_dir):
    rows = _all(load_task("BoolQ", data_dir=data_dir))
    assert Counter(r["answers"]["text"][0] for r in rows) == {"yes": 2033, "no": 1237}
    assert all(r["context"].startswith(BOOLQ_PREFIX) for r in rows)
    first = next(r for r in rows if r["question"] == "does ethanol take more energy make that produces")
    assert first["answers"] == {"text": ["no"], "answer_start": [5]}
    assert first["context"][len(BOOLQ_PREFIX):].startswith("All biomass goes through at least some of these steps")


def test_faq_tr_drops_questions_whose_answer_is_not_in_the_paragraph(data_dir):
    td = load_task("FAQ-TR", data_dir=data_dir)
    dropped = td.provenance["dropped"]
    assert len(dropped) == 34 and {d["id"] for d in dropped} >= {"430", "463"}
    assert "430" not in set(_col(td.splits["train"], "id")) | set(_col(td.splits["validation"], "id"))


PIERRE = ["Pierre", "Vinken", ",", "61", "years", "old", ",", "will", "join", "the", "board", "as", "a",
          "nonexecutive", "director", "Nov.", "29", "."]


@pytest.mark.parametrize("name,tags", [
    ("POS-PTB", ["NNP", "NNP", ",", "CD", "NNS", "JJ", ",", "MD", "VB", "DT", "NN", "IN", "DT", "JJ", "NN", "NNP",
                 "CD", "."]),
    # read off the tree of wsj_0001 by hand: (S (NP-SBJ (NP Pierre Vinken) , (ADJP (NP 61 years) old) ,)
    #   (VP will (VP join (NP the board) (PP-CLR as (NP a nonexecutive director)) (NP-TMP Nov. 29))) .)
    ("Parent", ["NP", "NP", "NP", "NP", "NP", "ADJP", "NP", "VP", "VP", "NP", "NP", "PP", "NP", "NP", "NP",
                "NP", "NP", "S"]),
    ("GParent", ["NP", "NP", "S", "ADJP", "ADJP", "NP", "S", "S", "VP", "VP", "VP", "VP", "PP", "PP", "PP",
                 "VP", "VP", "None"]),
    ("GGParent", ["S", "S", "None", "NP", "NP", "S", "None", "None", "S", "VP", "VP", "VP", "VP", "VP", "VP",
                  "VP", "VP", "None"]),
])
def test_ptb_tasks_on_the_first_wsj_sentence(name, tags, data_dir):
    row = _by(load_task(name, data_dir=data_dir).splits["validation"], "tokens", PIERRE)
    assert row["tags"] == tags


def _liu_reference(tree_str: str, levels: int):
    """Liu et al. (2019) contexteval ancestor labels with nltk.ParentedTree, function tags stripped and
    -NONE- leaves skipped; POS tags for levels == 0."""
    from nltk.tree import ParentedTree

    tree = ParentedTree.fromstring(tree_str)
    if tree.label() == "" and len(tree) == 1:
        tree = tree[0]
        tree._parent = None
    out = []
    for sub in tree.subtrees(lambda t: t.height() == 2):
        if sub.label() == "-NONE-":
            continue
        if levels == 0:
            out.append(sub.label())
            continue
        node = sub
        for _ in range(levels):
            node = node.parent()
            if node is None:
                break
        out.append("None" if node is None else re.split(r"[-=]", node.label())[0])
    return out


def test_ptb_ancestors_match_an_nltk_parented_tree_computation(data_dir):
    from tasktransfer_utils.data.loaders import split_bracketed_trees

    with zipfile.ZipFile(data_dir / "nltk/treebank.zip") as zf:
        texts = [zf.read(f"treebank/combined/wsj_{i:04d}.mrg").decode() for i in range(1, 200, 17)]
    trees = [t for text in texts for _, t in split_bracketed_trees(text, "wsj")]
    assert len(trees) > 150
    by_tokens = {}
    for name in ("POS-PTB", "Parent", "GParent", "GGParent"):
        td = load_task(name, data_dir=data_dir)
        by_tokens[name] = {tuple(r["tokens"]): r["tags"] for r in _all(td)}
    for t in trees:
        from nltk.tree import Tree
        leaves = [w for w, p in Tree.fromstring(t).pos() if p != "-NONE-"]
        leaves = [{"-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}"}.get(w, w) for w in leaves]
        for name, levels in (("POS-PTB", 0), ("Parent", 1), ("GParent", 2), ("GGParent", 3)):
            assert by_tokens[name][tuple(leaves)] == _liu_reference(t, levels)


def test_ptb_totals(data_dir):
    td = load_task("POS-PTB", data_dir=data_dir)
    assert sum(len(t) for split in td.splits.values() for t in split["tokens"]) == 94084
    assert "-NONE-" not in td.label_names and len(td.label_names) == 45
    files = td.provenance["derived_split"]
    assert files["num_groups"] == 199 and files["validation_groups"] == 40


def test_conll_and_conllu_totals_match_the_manifest(data_dir):
    ewt = load_task("POS-EWT", data_dir=data_dir)
    words = [sum(map(len, _col(ewt.splits[s], "tokens"))) for s in ("train", "validation", "test")]
    assert words == [204577, 25147, 25094]
    assert ewt.splits["train"][0]["tokens"][:3] == ["Al", "-", "Zaman"]
    assert ewt.splits["train"][0]["tags"][:4] == ["NNP", "HYPH", "NNP", ":"]
    assert "_" not in ewt.label_names and "NN" in ewt.label_names
    chunk = load_task("Chunk", data_dir=data_dir)
    assert [sum(map(len, _col(chunk.splits[s], "tokens"))) for s in ("train", "validation")] == [211727, 47377]
    assert chunk.splits["train"][0]["tokens"][:3] == ["Confidence", "in", "the"]
    assert chunk.splits["train"][0]["tags"][:3] == ["B-NP", "B-PP", "B-NP"]
    ner = load_task("NER", data_dir=data_dir)
    entities = [sum(t.startswith("B-") for seq in _col(ner.splits[s], "tags") for t in seq)
                for s in ("train", "validation", "test")]
    assert entities == [23499, 5942, 5648]
    assert ner.splits["train"][0] == {"tokens": ["EU", "rejects", "German", "call", "to", "boycott", "British",
                                                 "lamb", "."],
                                      "tags": ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]}


def test_extras_known_examples(data_dir):
    trec = load_task("TREC", data_dir=data_dir)
    assert trec.splits["train"][0]["text_a"] == "How did serfdom develop in and then leave Russia ?"
    assert trec.label_names[trec.splits["train"][0]["label"]] == "DESC"
    pp = load_task("PPAttach", data_dir=data_dir)
    assert pp.splits["train"][0] == {"text_a": "join board as director", "text_b": None, "label": 1}
    mr = load_task("MR", data_dir=data_dir)
    assert Counter(_col(mr.splits["train"], "label") + _col(mr.splits["validation"], "label")) == {0: 5331, 1: 5331}


def test_task_size_counts_the_full_training_split(data_dir):
    assert task_size("SST-2", data_dir=data_dir) == 67349
    assert task_size("QNLI", data_dir=data_dir) == 4396
    assert task_size("NER", data_dir=data_dir) == len(load_task("NER", data_dir=data_dir).splits["train"])


def test_returned_splits_are_not_the_cache(data_dir):
    td = load_task("RTE", data_dir=data_dir)
    td.splits["train"] = td.splits["train"].select(range(3))
    td.provenance["files"].append("x")
    again = load_task("RTE", data_dir=data_dir)
    assert len(again.splits["train"]) == 2490 and "x" not in again.provenance["files"]


def test_unanswerable_question_in_a_v1_task_is_a_data_error():
    from tasktransfer_utils.data.raw_examples import DataFormatError
    from tasktransfer_utils.data.loaders import finalize_splits

    def q(i, texts):
        return RawExample(f"file line {i}", {"id": f"q{i}", "question": "Who?", "context": "Ann came.",
                                             "answers": {"text": texts, "answer_start": [0] * len(texts)}})

    splits, _, _ = finalize_splits(get_task("SQuAD-2"), {"train": [q(1, [])], "validation": [q(2, ["Ann"])]})
    assert splits["train"][0]["answers"]["text"] == []
    with pytest.raises(DataFormatError, match="file line 1: question without an answer; SQuAD-1 has answerable"):
        finalize_splits(get_task("SQuAD-1"), {"train": [q(1, [])], "validation": [q(2, ["Ann"])]})

"""The hub path: ``datasets.load_dataset`` is replaced by in-memory records laid out as the hub serves each
dataset (same columns and features), so the column mappings run without network. Where a local copy exists,
hub-layout records built from the real local files must give exactly the local result (one code path)."""

from __future__ import annotations

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from tasktransfer_utils.data.raw_examples import DataFormatError, MissingDataError
from tasktransfer_utils.data.loaders import clear_cache, load_task
from tasktransfer_utils.data.tasks import CONLL2000_CHUNK_TAGS, CONLL2003_NER_TAGS, get_task

NLI3 = ["entailment", "neutral", "contradiction"]
CONLL_POS = ['"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
             "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP", "PRP$", "RB", "RBR",
             "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB"]
UD_UPOS = ["NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET", "CCONJ", "PROPN", "PRON", "X", "_",
           "ADV", "INTJ", "VERB", "AUX"]


class FakeHub:
    """Stands in for ``datasets.load_dataset``: returns the registered DatasetDict and records the call."""

    def __init__(self):
        self.served: dict[tuple, DatasetDict] = {}
        self.calls: list[tuple] = []

    def add(self, dataset_id, config, splits: dict[str, Dataset]):
        self.served[(dataset_id, config)] = DatasetDict(splits)

    def __call__(self, path, name=None, revision=None, **kwargs):
        self.calls.append((path, name))
        if (path, name) not in self.served:
            raise FileNotFoundError(f"no fake hub dataset {path}/{name}")
        return self.served[(path, name)]


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    clear_cache("hub")
    yield fake
    clear_cache("hub")


def _ds(rows: list[dict], features: Features) -> Dataset:
    return Dataset.from_list(rows, features=features)


def _rows(ds):
    return ds.data.to_pylist()


def glue_single(names):
    return Features({"sentence": Value("string"), "label": ClassLabel(names=names), "idx": Value("int32")})


def glue_pair(names=None):
    label = ClassLabel(names=names) if names else Value("float32")
    return Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": label,
                     "idx": Value("int32")})


def test_glue_sst2_rows_map_to_the_cr_schema(hub):
    f = glue_single(["negative", "positive"])
    hub.add("nyu-mll/glue", "sst2", {
        "train": _ds([{"sentence": "a gorgeous film ", "label": 1, "idx": 0},
                      {"sentence": "dull and flat ", "label": 0, "idx": 1}], f),
        "validation": _ds([{"sentence": "it works ", "label": 1, "idx": 0}], f),
        "test": _ds([{"sentence": "unlabelled ", "label": -1, "idx": 0}], f),
    })
    td = load_task("SST-2", source="hub")
    assert hub.calls == [("nyu-mll/glue", "sst2")]
    assert _rows(td.splits["train"]) == [{"text_a": "a gorgeous film ", "text_b": None, "label": 1},
                                         {"text_a": "dull and flat ", "text_b": None, "label": 0}]
    assert list(td.splits) == ["train", "validation"]  # the unlabelled GLUE test split is not taken
    assert td.source == "hub" and td.provenance["dataset_id"] == "nyu-mll/glue"
    assert td.label_names == ("negative", "positive")


def test_glue_pair_regression_and_mnli_matched(hub):
    hub.add("nyu-mll/glue", "stsb", {s: _ds([{"sentence1": "A man sings.", "sentence2": "A man is singing.",
                                              "label": 4.25, "idx": 0}], glue_pair()) for s in ("train", "validation")})
    td = load_task("STS-B", source="hub")
    assert _rows(td.splits["validation"]) == [{"text_a": "A man sings.", "text_b": "A man is singing.", "label": 4.25}]
    f = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": ClassLabel(names=NLI3),
                  "idx": Value("int32")})
    hub.add("nyu-mll/glue", "mnli", {
        "train": _ds([{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}], f),
        "validation_matched": _ds([{"premise": "pm", "hypothesis": "hm", "label": 1, "idx": 0}], f),
        "validation_mismatched": _ds([{"premise": "px", "hypothesis": "hx", "label": 0, "idx": 0}], f),
    })
    td = load_task("MNLI", source="hub")
    assert _rows(td.splits["validation"]) == [{"text_a": "pm", "text_b": "hm", "label": 1}]
    assert td.label_names[_rows(td.splits["train"])[0]["label"]] == "contradiction"


def test_snli_drops_rows_without_gold_label(hub):
    f = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": ClassLabel(names=NLI3)})
    rows = [{"premise": "a", "hypothesis": "b", "label": 0}, {"premise": "c", "hypothesis": "d", "label": -1},
            {"premise": "e", "hypothesis": "f", "label": 2}]
    hub.add("stanfordnlp/snli", None, {s: _ds(rows, f) for s in ("train", "validation", "test")})
    td = load_task("SNLI", source="hub")
    assert [r["label"] for r in _rows(td.splits["train"])] == [0, 2]
    assert "1 rows with label -1" in str(td.provenance["dropped"])


def test_label_names_are_matched_by_name_not_position(hub):
    # rotten_tomatoes serves ClassLabel names 'neg'/'pos'; the task calls them negative/positive
    f = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    hub.add("cornell-movie-review-data/rotten_tomatoes", None,
            {s: _ds([{"text": "fine", "label": 1}, {"text": "bad", "label": 0}], f) for s in ("train", "validation")})
    td = load_task("MR", source="hub")
    assert [r["label"] for r in _rows(td.splits["train"])] == [1, 0]
    # a hub ClassLabel whose names differ from the task's labels is refused, naming the row
    g = Features({"sentence": Value("string"), "label": ClassLabel(names=["bad", "good"]), "idx": Value("int32")})
    hub.add("nyu-mll/glue", "cola", {s: _ds([{"sentence": "x", "label": 1, "idx": 0}], g)
                                     for s in ("train", "validation")})
    with pytest.raises(DataFormatError, match=r"nyu-mll/glue/cola split train row 0: label 'good' is not in"):
        load_task("CoLA", source="hub")


def test_trec_coarse_labels(hub):
    f = Features({"text": Value("string"),
                  "coarse_label": ClassLabel(names=["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]),
                  "fine_label": ClassLabel(num_classes=50)})  # 50 fine classes; not used by the mapping
    hub.add("CogComp/trec", None, {s: _ds([{"text": "Who wrote Hamlet ?", "coarse_label": 3, "fine_label": 29}], f)
                                   for s in ("train", "test")})
    td = load_task("TREC", source="hub")
    assert td.label_names[_rows(td.splits["validation"])[0]["label"]] == "HUM"


SQUAD_FEATURES = Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                           "question": Value("string"),
                           "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})


def test_squad_v1_and_v2(hub):
    ctx = "The Normans gave their name to Normandy, a region in France."
    rows = [{"id": "q1", "title": "Normans", "context": ctx, "question": "Where is Normandy?",
             "answers": {"text": ["France", "France"], "answer_start": [53, 53]}}]
    hub.add("rajpurkar/squad", None, {s: _ds(rows, SQUAD_FEATURES) for s in ("train", "validation")})
    td = load_task("SQuAD-1", source="hub")
    assert _rows(td.splits["train"]) == [{"id": "q1", "question": "Where is Normandy?", "context": ctx,
                                          "answers": {"text": ["France", "France"], "answer_start": [53, 53]}}]
    rows2 = rows + [{"id": "q2", "title": "Normans", "context": ctx, "question": "Who ruled Mars?",
                     "answers": {"text": [], "answer_start": []}}]
    hub.add("rajpurkar/squad_v2", None, {s: _ds(rows2, SQUAD_FEATURES) for s in ("train", "validation")})
    td = load_task("SQuAD-2", source="hub")
    assert _rows(td.splits["validation"])[1]["answers"] == {"text": [], "answer_start": []}
    bad = [dict(rows[0], answers={"text": ["France"], "answer_start": [50]})]
    hub.add("rajpurkar/squad", None, {s: _ds(bad, SQUAD_FEATURES) for s in ("train", "validation")})
    clear_cache("hub")
    with pytest.raises(DataFormatError, match=r"rajpurkar/squad split train row 0 \(id q1\): answer 'France' at "
                                              r"character 50 does not match"):
        load_task("SQuAD-1", source="hub")


MRQA_FEATURES = Features({
    "subset": Value("string"), "context": Value("string"),
    "context_tokens": Sequence({"tokens": Value("string"), "offsets": Value("int32")}),
    "qid": Value("string"), "question": Value("string"),
    "question_tokens": Sequence({"tokens": Value("string"), "offsets": Value("int32")}),
    "detected_answers": Sequence({"text": Value("string"),
                                  "char_spans": Sequence({"start": Value("int32"), "end": Value("int32")}),
                                  "token_spans": Sequence({"start": Value("int32"), "end": Value("int32")})}),
    "answers": Sequence(Value("string")),
})


def test_mrqa_subset_filter_and_inclusive_spans(hub):
    ctx = "Reuters reported that the mayor of Springfield resigned on Monday."
    def row(subset, qid, spans):
        return {"subset": subset, "context": ctx, "context_tokens": {"tokens": ["Reuters"], "offsets": [0]},
                "qid": qid, "question": "Who resigned?", "question_tokens": {"tokens": ["Who"], "offsets": [0]},
                "detected_answers": {"text": ["the mayor of Springfield"] * len(spans),
                                     "char_spans": [{"start": [s], "end": [e]} for s, e in spans],
                                     "token_spans": [{"start": [3], "end": [6]} for _ in spans]},
                "answers": ["the mayor of Springfield"]}
    rows = [row("NewsQA", "n1", [(22, 45)]), row("SQuAD", "s1", [(22, 45)]), row("NewsQA", "n2", [(26, 45), (22, 45)])]
    hub.add("mrqa-workshop/mrqa", None, {s: _ds(rows, MRQA_FEATURES) for s in ("train", "validation", "test")})
    td = load_task("NewsQA", source="hub")
    got = _rows(td.splits["train"])
    assert [r["id"] for r in got] == ["n1", "n2"]
    assert got[0]["answers"] == {"text": ["the mayor of Springfield"], "answer_start": [22]}
    assert got[1]["answers"] == {"text": ["mayor of Springfield", "the mayor of Springfield"], "answer_start": [26, 22]}


def test_boolq_framing_is_the_same_as_local(hub):
    f = Features({"question": Value("string"), "answer": Value("bool"), "passage": Value("string")})
    rows = [{"question": "is the sky blue", "answer": True, "passage": "The sky is blue."},
            {"question": "is fire cold", "answer": False, "passage": "Fire is hot."}]
    hub.add("google/boolq", None, {s: _ds(rows, f) for s in ("train", "validation")})
    got = _rows(load_task("BoolQ", source="hub").splits["validation"])
    assert got[0]["context"] == "yes. no. The sky is blue."
    assert got[0]["answers"] == {"text": ["yes"], "answer_start": [0]}
    assert got[1]["answers"] == {"text": ["no"], "answer_start": [5]}
    assert got[1]["id"] == "boolq-validation-1"


def test_drop_duorc_wikihop_extractive_framing(hub):
    f = Features({"section_id": Value("string"), "query_id": Value("string"), "passage": Value("string"),
                  "question": Value("string"), "answers_spans": Sequence({"spans": Value("string"),
                                                                          "types": Value("string")})})
    p = "The Bears scored 7 points. Then the Lions scored 3."
    rows = [{"section_id": "s", "query_id": "d1", "passage": p, "question": "Who scored first?",
             "answers_spans": {"spans": ["Bears"], "types": ["span"]}},
            {"section_id": "s", "query_id": "d2", "passage": p, "question": "How many more points?",
             "answers_spans": {"spans": ["4"], "types": ["number"]}}]
    hub.add("ucinlp/drop", None, {s: _ds(rows, f) for s in ("train", "validation")})
    td = load_task("DROP", source="hub")
    assert _rows(td.splits["train"]) == [{"id": "d1", "question": "Who scored first?", "context": p,
                                          "answers": {"text": ["Bears"], "answer_start": [4]}}]
    assert "1 questions without an answer span" in str(td.provenance["dropped"])

    f = Features({"plot_id": Value("string"), "plot": Value("string"), "title": Value("string"),
                  "question_id": Value("string"), "question": Value("string"),
                  "answers": Sequence(Value("string")), "no_answer": Value("bool")})
    plot = "Anna travels to Rome, where she meets Marco."
    rows = [{"plot_id": "p", "plot": plot, "title": "T", "question_id": "a", "question": "Where does Anna go?",
             "answers": ["Rome", "to Rome"], "no_answer": False},
            {"plot_id": "p", "plot": plot, "title": "T", "question_id": "b", "question": "Who is Anna's dog?",
             "answers": [], "no_answer": True},
            {"plot_id": "p", "plot": plot, "title": "T", "question_id": "c", "question": "Whom does Anna meet?",
             "answers": ["her friend"], "no_answer": False}]
    hub.add("ibm/duorc", "SelfRC", {s: _ds(rows, f) for s in ("train", "validation", "test")})
    got = _rows(load_task("DuoRC-s", source="hub").splits["train"])
    assert [r["id"] for r in got] == ["a", "b"]
    assert got[0]["answers"] == {"text": ["Rome", "to Rome"], "answer_start": [16, 13]}
    assert got[1]["answers"] == {"text": [], "answer_start": []}

    f = Features({"query": Value("string"), "supports": Sequence(Value("string")),
                  "candidates": Sequence(Value("string")), "answer": Value("string"), "id": Value("string")})
    rows = [{"query": "country_of_citizenship marco", "supports": ["Marco lives in Rome.", "Rome is in Italy."],
             "candidates": ["italy", "spain"], "answer": "italy", "id": "WH_1"}]
    hub.add("qangaroo", "wikihop", {s: _ds(rows, f) for s in ("train", "validation")})
    got = _rows(load_task("WikiHop", source="hub").splits["train"])[0]
    assert got["question"] == "country of citizenship marco"
    assert got["context"] == "Marco lives in Rome.\n\nRome is in Italy."
    assert got["answers"] == {"text": ["Italy"], "answer_start": [33]}


def _conll2003_features():
    return Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                     "pos_tags": Sequence(ClassLabel(names=CONLL_POS)),
                     "chunk_tags": Sequence(ClassLabel(names=list(CONLL2000_CHUNK_TAGS))),
                     "ner_tags": Sequence(ClassLabel(names=list(CONLL2003_NER_TAGS)))})


def test_conll2003_hub_layout_gives_the_local_result(hub, data_dir):
    """Rebuild the hub's rows from the real local CoNLL-2003 dev file (tag names -> ClassLabel indices)."""
    local = load_task("NER", data_dir=data_dir)
    ner_index = {t: i for i, t in enumerate(CONLL2003_NER_TAGS)}
    splits = {}
    for ours, theirs in (("train", "train"), ("validation", "validation"), ("test", "test")):
        rows = _rows(local.splits[ours].select(range(200)))
        splits[theirs] = _ds([{"id": str(i), "tokens": r["tokens"], "pos_tags": [0] * len(r["tokens"]),
                               "chunk_tags": [0] * len(r["tokens"]), "ner_tags": [ner_index[t] for t in r["tags"]]}
                              for i, r in enumerate(rows)], _conll2003_features())
    hub.add("eriktks/conll2003", None, splits)
    td = load_task("NER", source="hub")
    for s in ("train", "validation", "test"):
        assert _rows(td.splits[s]) == _rows(local.splits[s].select(range(200)))
    assert td.label_names == local.label_names


def test_conll2000_test_split_is_validation(hub):
    f = Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                  "pos_tags": Sequence(ClassLabel(names=CONLL_POS[:44])),
                  "chunk_tags": Sequence(ClassLabel(names=list(CONLL2000_CHUNK_TAGS)))})
    hub.add("eriktks/conll2000", None, {
        "train": _ds([{"id": "0", "tokens": ["He", "ran"], "pos_tags": [0, 0], "chunk_tags": [11, 21]}], f),
        "test": _ds([{"id": "0", "tokens": ["in", "it"], "pos_tags": [0, 0], "chunk_tags": [13, 11]}], f)})
    td = load_task("Chunk", source="hub")
    assert _rows(td.splits["validation"]) == [{"tokens": ["in", "it"], "tags": ["B-PP", "B-NP"]}]


def _ud_rows_from_conllu(path, limit):
    """Hub layout of universal_dependencies/en_ewt: every CoNLL-U line incl. multiword tokens
    (xpos None, upos '_'), built from the raw file."""
    rows, sent = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line:
            if sent:
                rows.append({"idx": str(len(rows)), "text": "", "tokens": [c[1] for c in sent],
                             "lemmas": [c[2] for c in sent], "upos": [UD_UPOS.index(c[3]) for c in sent],
                             "xpos": [None if c[4] == "_" else c[4] for c in sent],
                             "feats": [c[5] for c in sent], "head": [c[6] for c in sent],
                             "deprel": [c[7] for c in sent], "deps": [c[8] for c in sent],
                             "misc": [c[9] for c in sent]})
                sent = []
                if len(rows) == limit:
                    break
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if "." in cols[0]:
            continue  # the hub loader drops empty nodes as well
        sent.append(cols)
    return rows


def test_ud_en_ewt_hub_layout_gives_the_local_result(hub, data_dir):
    f = Features({"idx": Value("string"), "text": Value("string"), "tokens": Sequence(Value("string")),
                  "lemmas": Sequence(Value("string")), "upos": Sequence(ClassLabel(names=UD_UPOS)),
                  "xpos": Sequence(Value("string")), "feats": Sequence(Value("string")),
                  "head": Sequence(Value("string")), "deprel": Sequence(Value("string")),
                  "deps": Sequence(Value("string")), "misc": Sequence(Value("string"))})
    base = data_dir / "ud_english_ewt"
    splits = {s: _ds(_ud_rows_from_conllu(base / f"en_ewt-ud-{f_}.conllu", 300), f)
              for s, f_ in (("train", "train"), ("validation", "dev"), ("test", "test"))}
    assert any(None in r["xpos"] for r in _rows(splits["validation"])), "sample holds multiword tokens"
    hub.add("universal_dependencies", "en_ewt", splits)
    td = load_task("POS-EWT", source="hub")
    local = load_task("POS-EWT", data_dir=data_dir)
    for s in ("train", "validation", "test"):
        assert _rows(td.splits[s]) == _rows(local.splits[s].select(range(300)))


def test_glue_hub_layout_gives_the_local_result(hub, data_dir):
    for task, config, names in (("RTE", "rte", ["entailment", "not_entailment"]),
                                ("MRPC", "mrpc", ["not_equivalent", "equivalent"])):
        local = load_task(task, data_dir=data_dir)
        hub.add("nyu-mll/glue", config, {s: _ds([{"sentence1": r["text_a"], "sentence2": r["text_b"],
                                                   "label": r["label"], "idx": i}
                                                  for i, r in enumerate(_rows(local.splits[s]))], glue_pair(names))
                                         for s in ("train", "validation")})
        td = load_task(task, source="hub")
        for s in ("train", "validation"):
            assert td.splits[s].data.equals(local.splits[s].data)


def test_hub_errors_name_what_is_missing(hub):
    with pytest.raises(MissingDataError, match="CCG has no Hugging Face hub dataset"):
        load_task("CCG", source="hub")
    hub.add("nyu-mll/glue", "wnli", {"train": _ds([{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}],
                                                  glue_pair(["not_entailment", "entailment"]))})
    with pytest.raises(MissingDataError, match="no split 'validation'"):
        load_task("WNLI", source="hub")
    f = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    hub.add("nyu-mll/glue", "sst2", {s: _ds([{"text": "x", "label": 0}], f) for s in ("train", "validation")})
    with pytest.raises(DataFormatError, match="missing column\\(s\\) 'sentence'"):
        load_task("SST-2", source="hub")
    assert get_task("SST-2").hub.mapper == "columns"

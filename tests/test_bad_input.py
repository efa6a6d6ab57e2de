"""Bad input to the data loaders: every case raises an error that names the file (and line where it has one)
and what was expected. Small files are written under tmp_path in the data bundle's layout."""

from __future__ import annotations

import gzip
import json
import re
import zipfile

import pytest

from tasktransfer_utils.data.raw_examples import DataFormatError, MissingDataError
from tasktransfer_utils.data.loaders import load_task

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def _write(root, rel, text, encoding="utf-8"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _rte(root, train_rows, dev_rows=("0\tA cat sat.\tA cat sat down.\tentailment\n",), header=RTE_HEADER):
    train = _write(root, "glue/RTE/train.tsv", header + "".join(train_rows))
    _write(root, "glue/RTE/dev.tsv", header + "".join(dev_rows))
    return train


def _raises(exc, *fragments, call):
    with pytest.raises(exc) as err:
        call()
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_good_tiny_rte_loads(tmp_path):
    _rte(tmp_path, ["0\tA dog ran.\tAn animal ran.\tentailment\n", "1\tIt rained.\tIt was dry.\tnot_entailment\n"])
    td = load_task("RTE", data_dir=tmp_path)
    assert td.splits["train"]["label"][:] == [0, 1] and len(td.splits["validation"]) == 1


def test_malformed_tsv_line(tmp_path):
    train = _rte(tmp_path, ["0\tA dog ran.\tAn animal ran.\tentailment\n", "1\tonly two columns\n"])
    _raises(DataFormatError, f"{train} line 3", "2 tab-separated columns; expected 4",
            "index, sentence1, sentence2, label", call=lambda: load_task("RTE", data_dir=tmp_path))


def test_missing_column(tmp_path):
    train = _rte(tmp_path, ["0\tA dog ran.\tAn animal ran.\tentailment\n"],
                 header="index\tsentence1\tsentence2\tgold\n")
    _raises(DataFormatError, f"{train} line 2", "missing column 'label'",
            call=lambda: load_task("RTE", data_dir=tmp_path))


def test_label_outside_the_label_set(tmp_path):
    train = _rte(tmp_path, ["0\tA dog ran.\tAn animal ran.\tentailment\n", "1\tA.\tB.\tmaybe\n"])
    _raises(DataFormatError, f"{train} line 3", "label 'maybe' is not in the label set",
            "'entailment', 'not_entailment'", call=lambda: load_task("RTE", data_dir=tmp_path))


def test_label_index_out_of_range_and_not_an_integer(tmp_path):
    _write(tmp_path, "glue/SST-2/dev.tsv", "sentence\tlabel\ngood film\t1\n")
    train = _write(tmp_path, "glue/SST-2/train.tsv", "sentence\tlabel\nfine\t0\nodd\t2\n")
    _raises(DataFormatError, f"{train} line 3", "label index 2 outside 0..1",
            call=lambda: load_task("SST-2", data_dir=tmp_path))
    _write(tmp_path, "glue/SST-2/train.tsv", "sentence\tlabel\nfine\tpositive\n")
    _raises(DataFormatError, f"{train} line 2", "'positive'; expected an integer label index",
            call=lambda: load_task("SST-2", data_dir=tmp_path))


def test_regression_score_out_of_range(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "0\tg\tf\ty\t0\tn\tn\tA man sings.\tA man is singing.\t{}\n"
    _write(tmp_path, "glue/STS-B/dev.tsv", header + row.format("4.0"))
    train = _write(tmp_path, "glue/STS-B/train.tsv", header + row.format("3.2") + row.format("7.5"))
    _raises(DataFormatError, f"{train} line 3", "= 7.5; expected a score in [0.0, 5.0]",
            call=lambda: load_task("STS-B", data_dir=tmp_path))
    _write(tmp_path, "glue/STS-B/train.tsv", header + row.format("high"))
    _raises(DataFormatError, f"{train} line 2", "'high'; expected a number",
            call=lambda: load_task("STS-B", data_dir=tmp_path))


def test_empty_file_and_header_only(tmp_path):
    _rte(tmp_path, ["0\tA dog ran.\tAn animal ran.\tentailment\n"])
    dev = _write(tmp_path, "glue/RTE/dev.tsv", "")
    _raises(DataFormatError, str(dev), "the file is empty", call=lambda: load_task("RTE", data_dir=tmp_path))
    _write(tmp_path, "glue/RTE/dev.tsv", RTE_HEADER)
    _raises(DataFormatError, str(dev), "no data rows", call=lambda: load_task("RTE", data_dir=tmp_path))


def test_empty_sentence_in_pair_task(tmp_path):
    train = _rte(tmp_path, ["0\tA dog ran.\t \tentailment\n"])
    _raises(DataFormatError, f"{train} line 2", "sentence-pair task", call=lambda: load_task("RTE", data_dir=tmp_path))


def test_not_utf8(tmp_path):
    path = tmp_path / "glue/CoLA/train.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"gj04\t1\t\tCaf\xe9 is open.\n")
    _write(tmp_path, "glue/CoLA/dev.tsv", "gj04\t1\t\tFine.\n")
    offset = len(b"gj04\t1\t\tCaf")  # where the Latin-1 byte of "Café" is
    _raises(DataFormatError, f"{path} line 1", f"byte {offset} (0xe9)", "not valid utf-8-sig text",
            call=lambda: load_task("CoLA", data_dir=tmp_path))


def test_binary_file(tmp_path):
    path = tmp_path / "glue/CoLA/train.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00")  # a zip archive saved under a .tsv name
    _write(tmp_path, "glue/CoLA/dev.tsv", "gj04\t1\t\tFine.\n")
    _raises(DataFormatError, str(path), "a binary file (a NUL byte at byte 5), not text",
            call=lambda: load_task("CoLA", data_dir=tmp_path))


def _squad_doc(answer_start, is_impossible=False, answers=None):
    ctx = "The Normans gave their name to Normandy, a region in France."
    qa = {"id": "q1", "question": "Where?", "is_impossible": is_impossible,
          "answers": answers if answers is not None else [{"text": "France", "answer_start": answer_start}]}
    other = {"context": "Second paragraph about Rollo.", "qas": [
        {"id": "q2", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 23}], "is_impossible": False}]}
    return json.dumps({"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": ctx, "qas": [qa]},
                                                                                        other]}]})


def test_answer_offset_that_does_not_match_the_context(tmp_path):
    path = _write(tmp_path, "squad/v2.0_cs224n_dev/dev-v2.0.json", _squad_doc(53))
    td = load_task("SQuAD-2", data_dir=tmp_path)
    assert len(td.splits["train"]) + len(td.splits["validation"]) == 2
    _write(tmp_path, "squad/v2.0_cs224n_dev/dev-v2.0.json", _squad_doc(40))
    _raises(DataFormatError, str(path), "article 0 (Normans) paragraph 0 question q1",
            "answer 'France' at character 40 does not match the context",
            call=lambda: load_task("SQuAD-2", data_dir=tmp_path))


def test_squad_json_errors(tmp_path):
    path = _write(tmp_path, "squad/v2.0_cs224n_dev/dev-v2.0.json", '{"version": "v2.0",\n "data": [\n')
    _raises(DataFormatError, f"{path} line 3", "not valid JSON", call=lambda: load_task("SQuAD-2", data_dir=tmp_path))
    _write(tmp_path, "squad/v2.0_cs224n_dev/dev-v2.0.json", _squad_doc(53, is_impossible=True))
    _raises(DataFormatError, str(path), "question q1", "is_impossible is true but 'answers' is not empty",
            call=lambda: load_task("SQuAD-2", data_dir=tmp_path))
    _write(tmp_path, "squad/v2.0_cs224n_dev/dev-v2.0.json", json.dumps({"version": "v2.0", "articles": []}))
    _raises(DataFormatError, str(path), "expected a JSON object with a 'data' list",
            call=lambda: load_task("SQuAD-2", data_dir=tmp_path))


def test_mrqa_bad_json_line_and_span_outside_context(tmp_path):
    path = tmp_path / "squad/v1.1_mrqa_dev/SQuAD.jsonl.gz"
    path.parent.mkdir(parents=True)
    good = {"context": "Denver won.", "qas": [{"id": "a", "question": "Who won?",
                                                 "detected_answers": [{"text": "Denver", "char_spans": [[0, 5]]}]}]}
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"header": {"dataset": "SQuAD", "split": "dev"}}) + "\n" + json.dumps(good) + "\n{oops\n")
    _raises(DataFormatError, f"{path} line 3", "not valid JSON", call=lambda: load_task("SQuAD-1", data_dir=tmp_path))
    bad = dict(good, qas=[dict(good["qas"][0], detected_answers=[{"text": "x", "char_spans": [[5, 40]]}])])
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    _raises(DataFormatError, f"{path} line 2 question a", "answer char span [5, 40] lies outside the context",
            call=lambda: load_task("SQuAD-1", data_dir=tmp_path))


def test_boolq_answer_that_is_not_a_boolean(tmp_path):
    rows = [{"question": "is it", "title": "t", "answer": True, "passage": "It is."},
            {"question": "is it not", "title": "t", "answer": "yes", "passage": "It is not."}]
    path = _write(tmp_path, "boolq/dev.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    _raises(DataFormatError, f"{path} line 2", "'yes'; expected true or false",
            call=lambda: load_task("BoolQ", data_dir=tmp_path))
    _write(tmp_path, "boolq/dev.jsonl", json.dumps({"question": "q", "answer": True}) + "\n")
    _raises(DataFormatError, f"{path} line 1", "missing field(s) 'passage'",
            call=lambda: load_task("BoolQ", data_dir=tmp_path))


def _ner(root, train_text):
    _write(root, "conll2003/eng.testa", "Peter NNP B-NP B-PER\n. . O O\n")
    _write(root, "conll2003/eng.testb", "Rome NNP B-NP B-LOC\n")
    return _write(root, "conll2003/eng.train", train_text)


def test_conll_wrong_number_of_columns(tmp_path):
    path = _ner(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-MISC\n")
    _raises(DataFormatError, f"{path} line 4", "3 columns; expected 4",
            call=lambda: load_task("NER", data_dir=tmp_path))


def test_conll_tag_outside_the_tag_set(tmp_path):
    path = _ner(tmp_path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\nParis NNP B-NP B-CITY\n")
    _raises(DataFormatError, f"{path} line 5", "tag 'B-CITY' is not in the tag set of NER",
            call=lambda: load_task("NER", data_dir=tmp_path))


def test_conllu_errors(tmp_path):
    good = "# sent_id = 1\n1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n1\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n" \
           "2\tn't\tnot\tPART\tRB\t_\t1\tadvmod\t_\t_\n\n"
    for split in ("dev", "test"):
        _write(tmp_path, f"ud_english_ewt/en_ewt-ud-{split}.conllu", good)
    path = _write(tmp_path, "ud_english_ewt/en_ewt-ud-train.conllu", good + "1\tHi\thi\tINTJ\tUH\t_\t0\n\n")
    _raises(DataFormatError, f"{path} line 6", "7 tab-separated columns; expected 10 CoNLL-U columns",
            call=lambda: load_task("POS-EWT", data_dir=tmp_path))
    _write(tmp_path, "ud_english_ewt/en_ewt-ud-train.conllu", good + "x\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n")
    _raises(DataFormatError, f"{path} line 6", "ID 'x'; expected an integer",
            call=lambda: load_task("POS-EWT", data_dir=tmp_path))
    _write(tmp_path, "ud_english_ewt/en_ewt-ud-train.conllu", good)
    first = load_task("POS-EWT", data_dir=tmp_path).splits["train"][0]
    assert first == {"tokens": ["do", "n't"], "tags": ["VBP", "RB"]}  # the multiword line 1-2 is skipped


def _treebank(root, files: dict[str, str]):
    path = root / "nltk/treebank.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_ptb_unbalanced_tree(tmp_path):
    tree = "( (S (NP-SBJ (NNP John)) (VP (VBD ran)) (. .)) )\n"
    path = _treebank(tmp_path, {"treebank/combined/wsj_0001.mrg": tree,
                                "treebank/combined/wsj_0002.mrg": tree + "( (S (NP (NN x)) )\n"})
    _raises(DataFormatError, f"{path}:treebank/combined/wsj_0002.mrg line 2", "tree not closed",
            call=lambda: load_task("Parent", data_dir=tmp_path))
    _treebank(tmp_path, {"treebank/combined/wsj_0001.mrg": tree, "treebank/combined/wsj_0002.mrg": tree + "x (\n"})
    _raises(DataFormatError, "wsj_0002.mrg line 2", "outside a tree; expected '('",
            call=lambda: load_task("Parent", data_dir=tmp_path))


def test_data_directory_without_the_task(tmp_path):
    msg = _raises(MissingDataError, "Task RTE", f"expected the file {tmp_path / 'glue/RTE/train.tsv'}",
                  "TASKTRANSFER_DATA_DIR", call=lambda: load_task("RTE", data_dir=tmp_path))
    assert "source='hub'" in msg
    _treebank(tmp_path, {"treebank/combined/README": "no trees here"})
    _raises(MissingDataError, "Task POS-PTB", "treebank.zip has no member matching 'treebank/combined/'",
            call=lambda: load_task("POS-PTB", data_dir=tmp_path))
    (tmp_path / "nltk/conll2000.zip").write_bytes(b"not a zip")
    _raises(DataFormatError, "conll2000.zip: not a readable zip archive",
            call=lambda: load_task("Chunk", data_dir=tmp_path))


def test_missing_data_directory_and_task_without_local_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_task("RTE", data_dir=tmp_path / "nope")
    _raises(MissingDataError, "MNLI has no local data source", "source='hub'",
            call=lambda: load_task("MNLI", data_dir=tmp_path))
    with pytest.raises(ValueError, match="source must be 'local' or 'hub'"):
        load_task("RTE", data_dir=tmp_path, source="web")


def test_question_classification_line_without_label(tmp_path):
    path = tmp_path / "nltk/qc.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("qc/train.txt", "HUM:ind Who wrote Hamlet ?\nWhat is this ?\n")
        zf.writestr("qc/test.txt", "LOC:city Where is Rome ?\n")
    _raises(DataFormatError, f"{path}:qc/train.txt line 2", "expected 'COARSE:fine question text'",
            call=lambda: load_task("TREC", data_dir=tmp_path))

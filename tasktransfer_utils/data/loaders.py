"""Load any registered task into one in-memory schema per class (Vu et al. 2020, §2: CR, QA, SL).

Schema of every split (a ``datasets.Dataset``):

- CR: ``text_a: str``, ``text_b: str | None``, ``label: int`` (index into ``label_names``) or ``float`` (regression)
- QA: ``id``, ``question``, ``context``, ``answers: {"text": [str], "answer_start": [int]}`` (character offsets
  into ``context``; empty lists = unanswerable)
- SL: ``tokens: [str]``, ``tags: [str]`` (same length)

Two sources share one code path after parsing: local raw files (GLUE TSV, SQuAD / MRQA JSON(L), CoNLL column
files, CoNLL-U, NLTK corpus zips read in place) and the Hugging Face hub (:mod:`tasktransfer_utils.data.hub_loaders`).
Both produce :class:`RawExample` records, which :func:`finalize_splits` validates (labels in the label set,
answer offsets matching the context, tokens/tags of equal length), splits where needed and turns into Datasets.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import re
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import UserInputError, decode_text
from ..paths import resolve_data_dir
from .raw_examples import (DataFormatError, MissingDataError, RawExample, _json_line, _need, boolq_example,
                           mrqa_char_spans, mrqa_example)
from .tasks import TaskClass, TaskSpec, get_task


@dataclass
class TaskData:
    """A loaded task: ``splits`` has "train", "validation" and optionally a labelled "test"."""

    spec: TaskSpec
    splits: DatasetDict
    label_names: tuple[str, ...] | None
    source: str
    provenance: dict = field(default_factory=dict)

    @property
    def train(self) -> Dataset:
        return self.splits["train"]

    @property
    def validation(self) -> Dataset:
        return self.splits["validation"]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"TaskData({self.spec.name!r}, {self.spec.task_class.value}, {self.source}, {sizes})"


# --------------------------------------------------------------------------------------------- features
def features_for(spec: TaskSpec) -> Features:
    """The ``datasets.Features`` of every split of ``spec`` (see module docstring)."""
    if spec.task_class is TaskClass.CR:
        return Features({"text_a": Value("string"), "text_b": Value("string"),
                         "label": Value("float32") if spec.is_regression else Value("int64")})
    if spec.task_class is TaskClass.QA:
        return Features({"id": Value("string"), "question": Value("string"), "context": Value("string"),
                         "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))}})
    return Features({"tokens": List(Value("string")), "tags": List(Value("string"))})


# --------------------------------------------------------------------------------------------- file access
def _split_member(spec_path: str) -> tuple[str, str | None]:
    """'nltk/x.zip:dir/file' -> ('nltk/x.zip', 'dir/file'); plain paths -> (path, None)."""
    if ".zip:" in spec_path:
        archive, member = spec_path.split(".zip:", 1)
        return archive + ".zip", member
    return spec_path, None


def _require(path: Path, spec: TaskSpec) -> Path:
    if not path.is_file():
        raise MissingDataError(
            f"Task {spec.name}: expected the file {path} in the data directory {path_root(path)}; point "
            f"--data-dir (data_dir=) or $TASKTRANSFER_DATA_DIR at a folder laid out as shared/data/MANIFEST.md"
            + (", or load it from the hub with --source hub (source='hub')" if spec.hub else ""))
    return path


def path_root(path: Path) -> str:
    return str(path.parent)


class _Source:
    """An opened text source: a plain file, a gzip file or a zip member; iterates (where, lineno, line)."""

    def __init__(self, label: str, opener: Callable[[], io.BufferedIOBase], encoding: str):
        self.label, self.opener, self.encoding = label, opener, encoding

    def text(self) -> str:
        with self.opener() as fh:
            raw = fh.read()
        try:
            return decode_text(raw, self.label, self.encoding, empty_ok=True)
        except UserInputError as err:
            raise DataFormatError(str(err)) from None

    def lines(self) -> Iterator[tuple[int, str]]:
        text = self.text()
        if not text.strip():
            raise DataFormatError(f"{self.label}: the file is empty; expected data lines")
        for i, line in enumerate(text.splitlines(), start=1):
            yield i, line


def nonblank_lines(spec: TaskSpec, data_dir: Path, spec_path: str, encoding: str = "utf-8"):
    """(lineno, where, line) for every non-blank line of the sources behind ``spec_path``: the 1-based line
    number, and ``where`` naming the file (and zip member) and line, for error messages."""
    for source in open_sources(spec, data_dir, spec_path, encoding=encoding):
        for lineno, line in source.lines():
            if line.strip():
                yield lineno, f"{source.label} line {lineno}", line


def open_sources(spec: TaskSpec, data_dir: Path, spec_path: str, encoding: str = "utf-8",
                 member_pattern: str | None = None) -> list[_Source]:
    """The text sources behind one ``LocalSource.files`` entry. A zip member ending in '/' (or a
    ``member_pattern`` regex) selects every matching member, in name order."""
    rel, member = _split_member(spec_path)
    path = _require(data_dir / rel, spec)
    if member is None:
        opener = (lambda p=path: gzip.open(p, "rb")) if path.suffix == ".gz" else (lambda p=path: open(p, "rb"))
        return [_Source(str(path), opener, encoding)]
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataFormatError(f"{path}: not a readable zip archive ({err})") from None
    names = zf.namelist()
    if member.endswith("/") or member_pattern:
        regex = re.compile(member_pattern) if member_pattern else None
        chosen = sorted(n for n in names if n.startswith(member) and not n.endswith("/")
                        and (regex is None or regex.search(n)))
    else:
        chosen = [member] if member in names else []
    if not chosen:
        raise MissingDataError(f"Task {spec.name}: {path} has no member matching {member!r}"
                               + (f" /{member_pattern}/" if member_pattern else "")
                               + f"; expected the NLTK corpus layout (e.g. {names[1] if len(names) > 1 else 'none'}).")
    return [_Source(f"{path}:{n}", (lambda n=n: zf.open(n)), encoding) for n in chosen]


def _file_group(source: _Source) -> str:
    return source.label.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------- CR readers
def _parse_label(value: str, kind: str, where: str, field_name: str, value_range=None):
    value = value.strip()
    if kind == "name":
        return value
    if kind == "index":
        if not re.fullmatch(r"-?\d+", value):
            raise DataFormatError(f"{where}: field {field_name!r} = {value!r}; expected an integer label index")
        return int(value)
    if kind == "float":
        try:
            x = float(value)
        except ValueError:
            raise DataFormatError(f"{where}: field {field_name!r} = {value!r}; expected a number") from None
        if value_range is not None and not (value_range[0] <= x <= value_range[1]):
            raise DataFormatError(f"{where}: field {field_name!r} = {x}; expected a score in "
                                  f"[{value_range[0]}, {value_range[1]}]")
        return x
    raise ValueError(f"unknown label kind {kind!r}")


def read_tsv_rows(source: _Source, header: bool, column_names: tuple[str, ...] | None = None
                  ) -> Iterator[tuple[str, dict]]:
    """Rows of a tab-separated file as dicts (GLUE TSV: no quoting; a UTF-8 BOM is ignored)."""
    lines = source.lines()
    if header:
        lineno, first = next(lines)
        cols = tuple(c.strip() for c in first.lstrip("\ufeff").split("\t"))
        if column_names is not None and cols != tuple(column_names):
            raise DataFormatError(f"{source.label} line {lineno}: header {cols}; expected {tuple(column_names)}")
    else:
        cols = tuple(column_names or ())
    seen = 0
    for lineno, line in lines:
        if not line.strip():
            continue
        values = line.lstrip("\ufeff").split("\t") if lineno == 1 else line.split("\t")
        where = f"{source.label} line {lineno}"
        if len(values) != len(cols):
            raise DataFormatError(f"{where}: {len(values)} tab-separated columns; expected {len(cols)} "
                                  f"({', '.join(cols)})")
        seen += 1
        yield where, dict(zip(cols, values))
    if seen == 0:
        raise DataFormatError(f"{source.label}: no data rows; expected {'a header and ' if header else ''}"
                              f"tab-separated rows ({', '.join(cols)})")


def _cr_from_row(where: str, row: dict, opts: dict) -> dict:
    for key in ("text_a", "text_b", "label"):
        col = opts.get(key)
        if col is not None and col not in row:
            raise DataFormatError(f"{where}: missing column {col!r}; found {', '.join(row)}")
    text_b = row[opts["text_b"]] if opts.get("text_b") else None
    label = _parse_label(row[opts["label"]], opts["label_kind"], where, opts["label"], opts.get("value_range"))
    return {"text_a": row[opts["text_a"]], "text_b": text_b, "label": label}


def read_glue_tsv(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                  report: dict) -> list[RawExample]:
    out = []
    group_by = spec.local.group_by if spec.local else None
    group = group_by if isinstance(group_by, tuple) else (group_by or opts.get("group_column", "text_a"),)
    for source in open_sources(spec, data_dir, path, encoding="utf-8-sig"):
        names = opts.get("column_names")
        header = opts.get("header", True)
        for where, row in read_tsv_rows(source, header, names if not header else None):
            data = _cr_from_row(where, row, opts)
            out.append(RawExample(where, data, tuple(data[c] for c in group) if len(group) > 1 else data[group[0]]))
    return out


def read_mrpc(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
              report: dict) -> list[RawExample]:
    """MRPC as GLUE builds it: train = msr_paraphrase_train.txt minus the pairs listed in dev_ids.tsv."""
    cols = {"text_a": "#1 String", "text_b": "#2 String", "label": "Quality", "label_kind": "index"}
    exclude: set[tuple[str, str]] = set()
    if split == "train" and path.endswith("msr_paraphrase_train.txt"):
        for source in open_sources(spec, data_dir, opts["dev_ids"], encoding="utf-8-sig"):
            for lineno, line in source.lines():
                if not line.strip():
                    continue
                parts = line.strip().split("\t")
                if len(parts) != 2:
                    raise DataFormatError(f"{source.label} line {lineno}: expected two tab-separated pair IDs")
                exclude.add((parts[0], parts[1]))
    out = []
    for source in open_sources(spec, data_dir, path, encoding="utf-8-sig"):
        for where, row in read_tsv_rows(source, header=True):
            if ("#1 ID" in row and (row["#1 ID"], row["#2 ID"]) in exclude):
                continue
            out.append(RawExample(where, _cr_from_row(where, row, cols)))
    return out


def read_lines_per_label(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                         report: dict) -> list[RawExample]:
    """One text per line, one file per label (NLTK sentence_polarity, subjectivity)."""
    out = []
    for label, member in opts["label_files"]:
        for source in open_sources(spec, data_dir, f"{path}:{member}", encoding=opts.get("encoding", "utf-8")):
            for lineno, line in source.lines():
                if line.strip():
                    out.append(RawExample(f"{source.label} line {lineno}",
                                          {"text_a": line.strip(), "text_b": None, "label": label}))
    return out


def read_qc(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
            report: dict) -> list[RawExample]:
    """TREC question classification lines 'COARSE:fine question text' (NLTK qc, latin-1)."""
    out = []
    for lineno, where, line in nonblank_lines(spec, data_dir, path, encoding="latin-1"):
        m = re.match(r"^([A-Z]+):(\S+)\s+(.+)$", line.strip())
        if not m:
            raise DataFormatError(f"{where}: {line[:60]!r}; expected 'COARSE:fine question text'")
        out.append(RawExample(where, {"text_a": m.group(3), "text_b": None, "label": m.group(1)}))
    return out


def read_ppattach(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                  report: dict) -> list[RawExample]:
    """PP-attachment lines 'id verb noun1 prep noun2 V|N'; text_a = 'verb noun1 prep noun2'."""
    out = []
    for lineno, where, line in nonblank_lines(spec, data_dir, path):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(f"{where}: {len(parts)} fields; expected 6 (id verb noun1 prep noun2 V|N)")
        out.append(RawExample(where, {"text_a": " ".join(parts[1:5]), "text_b": None, "label": parts[5]}))
    return out


_RTE_VALUES = {"TRUE": "entailment", "YES": "entailment", "FALSE": "not_entailment", "NO": "not_entailment"}


def read_rte_xml(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                 report: dict) -> list[RawExample]:
    """PASCAL RTE XML: <pair value|entailment="TRUE|YES|FALSE|NO"><t/><h/></pair>."""
    out = []
    for source in open_sources(spec, data_dir, path):
        try:
            root = ET.fromstring(source.text())
        except ET.ParseError as err:
            raise DataFormatError(f"{source.label}: not well-formed XML ({err})") from None
        for pair in root.iter("pair"):
            where = f"{source.label} pair id={pair.get('id')}"
            value = (pair.get("value") or pair.get("entailment") or "").upper()
            t, h = pair.find("t"), pair.find("h")
            if value not in _RTE_VALUES or t is None or h is None:
                raise DataFormatError(f"{where}: expected <t>, <h> and value/entailment in TRUE/FALSE/YES/NO")
            out.append(RawExample(where, {"text_a": (t.text or "").strip(), "text_b": (h.text or "").strip(),
                                          "label": _RTE_VALUES[value]}))
    return out


def read_nps_chat(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                  report: dict) -> list[RawExample]:
    """NPS Chat XML posts: text = the post, label = its dialogue-act class."""
    out = []
    for source in open_sources(spec, data_dir, path, member_pattern=r"\.xml$"):
        try:
            root = ET.fromstring(source.text())
        except ET.ParseError as err:
            raise DataFormatError(f"{source.label}: not well-formed XML ({err})") from None
        for i, post in enumerate(root.iter("Post"), start=1):
            where = f"{source.label} post {i}"
            text = (post.text or "").strip()
            if not text:
                terms = post.find("terminals")
                text = " ".join(t.get("word", "") for t in terms) if terms is not None else ""
            out.append(RawExample(where, {"text_a": text, "text_b": None, "label": post.get("class")}))
    return out


# --------------------------------------------------------------------------------------------- QA readers


def read_boolq_jsonl(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                     report: dict) -> list[RawExample]:
    out = []
    for lineno, where, line in nonblank_lines(spec, data_dir, path):
        rec = _json_line(line, where)
        _need(rec, ("question", "passage", "answer"), where)
        out.append(boolq_example(where, f"boolq-{lineno}", rec["question"], rec["passage"], rec["answer"]))
    return out


def read_mrqa_jsonl(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                    report: dict) -> list[RawExample]:
    """MRQA 2019 gzipped JSONL: a header line, then one context per line with its ``qas``."""
    out = []
    for lineno, where, line in nonblank_lines(spec, data_dir, path):
        rec = _json_line(line, where)
        if "header" in rec:
            continue
        _need(rec, ("context", "qas"), where)
        for qa in rec["qas"]:
            _need(qa, ("question", "detected_answers"), where)
            qid = qa.get("id") or qa.get("qid")
            q_where = f"{where} question {qid}"
            out.append(mrqa_example(q_where, qid, qa["question"], rec["context"],
                                    mrqa_char_spans(qa["detected_answers"], q_where)))
    return out


def squad_examples(where: str, article: dict) -> Iterator[RawExample]:
    """Questions of one SQuAD JSON article (v1.1 or v2.0 layout)."""
    for p_i, para in enumerate(article.get("paragraphs", [])):
        _need(para, ("context", "qas"), f"{where} paragraph {p_i}")
        context = para["context"]
        for qa in para["qas"]:
            q_where = f"{where} paragraph {p_i} question {qa.get('id')}"
            _need(qa, ("id", "question", "answers"), q_where)
            if qa.get("is_impossible") and qa["answers"]:
                raise DataFormatError(f"{q_where}: is_impossible is true but 'answers' is not empty")
            answers = {"text": [a["text"] for a in qa["answers"]],
                       "answer_start": [a["answer_start"] for a in qa["answers"]]}
            yield RawExample(q_where, {"id": qa["id"], "question": qa["question"], "context": context,
                                       "answers": answers}, context)


def read_squad_json(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                    report: dict) -> list[RawExample]:
    out = []
    for source in open_sources(spec, data_dir, path):
        text = source.text()
        if not text.strip():
            raise DataFormatError(f"{source.label}: the file is empty; expected SQuAD JSON")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{source.label} line {err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise DataFormatError(f"{source.label}: expected a JSON object with a 'data' list of articles")
        for a_i, article in enumerate(doc["data"]):
            for ex in squad_examples(f"{source.label} article {a_i} ({article.get('title', '')})", article):
                if opts.get("drop_unlocatable_answers") and not _answers_match(ex.data):
                    report.setdefault("dropped", []).append(
                        {"id": ex.data["id"], "reason": "answer text does not occur at answer_start in its context"})
                    continue
                out.append(ex)
    return out


def _answers_match(d: dict) -> bool:
    ctx = d["context"]
    return all(isinstance(s, int) and ctx[s:s + len(t)] == t
               for t, s in zip(d["answers"]["text"], d["answers"]["answer_start"]))


# --------------------------------------------------------------------------------------------- SL readers
def read_conll_columns(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                       report: dict) -> list[RawExample]:
    """CoNLL column files: one token per line, whitespace-separated columns, blank line between sentences;
    -DOCSTART- lines skipped."""
    n_cols, tok_c, tag_c = opts["num_columns"], opts["token_column"], opts["tag_column"]
    out = []
    for source in open_sources(spec, data_dir, path, encoding=opts.get("encoding", "utf-8")):
        tokens, tags, start = [], [], None
        for lineno, line in source.lines():
            parts = line.strip(" \t\r\n").split() if line.isascii() else re.split(r"[ \t]+", line.strip(" \t\r\n"))
            parts = [p for p in parts if p]
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    out.append(RawExample(f"{source.label} line {start}", {"tokens": tokens, "tags": tags}))
                tokens, tags, start = [], [], None
                continue
            if len(parts) != n_cols:
                raise DataFormatError(f"{source.label} line {lineno}: {len(parts)} columns; expected {n_cols} "
                                      f"(token in column {tok_c + 1}, tag in column {tag_c + 1})")
            start = start or lineno
            tokens.append(parts[tok_c])
            tags.append(parts[tag_c])
        if tokens:
            out.append(RawExample(f"{source.label} line {start}", {"tokens": tokens, "tags": tags}))
    return out


_CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict,
                report: dict) -> list[RawExample]:
    """CoNLL-U: tokens = FORM of syntactic words, tags = XPOS (or UPOS); multiword-token ranges (1-2) and
    empty nodes (8.1) are skipped."""
    col = _CONLLU_COLUMNS.index(opts.get("column", "xpos"))
    out = []
    for source in open_sources(spec, data_dir, path):
        tokens, tags, start = [], [], None
        for lineno, line in source.lines():
            if not line.strip():
                if tokens:
                    out.append(RawExample(f"{source.label} line {start}", {"tokens": tokens, "tags": tags}))
                tokens, tags, start = [], [], None
                continue
            if line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 10:
                raise DataFormatError(f"{source.label} line {lineno}: {len(parts)} tab-separated columns; "
                                      f"expected 10 CoNLL-U columns ({', '.join(_CONLLU_COLUMNS)})")
            if "-" in parts[0] or "." in parts[0]:
                continue
            if not parts[0].isdigit():
                raise DataFormatError(f"{source.label} line {lineno}: ID {parts[0]!r}; expected an integer, "
                                      f"a range 'i-j' or an empty node 'i.k'")
            start = start or lineno
            tokens.append(parts[1])
            tags.append(parts[col])
        if tokens:
            out.append(RawExample(f"{source.label} line {start}", {"tokens": tokens, "tags": tags}))
    return out


PTB_SPECIAL_TOKENS = {"-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}", "-LSB-": "[", "-RSB-": "]"}
_ANCESTOR_LEVELS = {"parent": 1, "gparent": 2, "ggparent": 3}


def constituent_label(label: str) -> str:
    """Strip PTB function tags and co-indices: 'NP-SBJ-1' -> 'NP', 'S=2' -> 'S'; '-NONE-' stays."""
    if label.startswith("-"):
        return label
    return re.split(r"[-=]", label, maxsplit=1)[0] or label


def split_bracketed_trees(text: str, where: str) -> Iterator[tuple[int, str]]:
    """Top-level bracketed trees of a .mrg file as (line number, tree string)."""
    depth, start, start_line, line = 0, None, 1, 1
    for i, ch in enumerate(text):
        if ch == "\n":
            line += 1
        elif ch == "(":
            if depth == 0:
                start, start_line = i, line
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DataFormatError(f"{where} line {line}: unbalanced ')'; expected bracketed trees")
            if depth == 0:
                yield start_line, text[start:i + 1]
        elif depth == 0 and not ch.isspace():
            raise DataFormatError(f"{where} line {line}: text {ch!r} outside a tree; expected '('")
    if depth != 0:
        raise DataFormatError(f"{where} line {start_line}: tree not closed; expected balanced brackets")


_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_EMPTY_ROOTS = ("", "ROOT", "TOP", "VROOT")


def parse_bracketed(tree_str: str, where: str) -> list:
    """Parse one PTB bracketed tree into nested lists ``[label, child, ...]`` (leaves are str)."""
    stack: list[list] = []
    root = None
    items = _TREE_TOKEN.findall(tree_str)
    i = 0
    while i < len(items):
        tok = items[i]
        if tok == "(":
            label = ""
            if i + 1 < len(items) and items[i + 1] not in ("(", ")"):
                label = items[i + 1]
                i += 1
            node = [label]
            if stack:
                stack[-1].append(node)
            stack.append(node)
        elif tok == ")":
            if not stack:
                raise DataFormatError(f"{where}: unbalanced ')'; expected a bracketed tree")
            root = stack.pop()
        else:
            if not stack:
                raise DataFormatError(f"{where}: word {tok!r} outside brackets")
            stack[-1].append(tok)
        i += 1
    if stack or root is None:
        raise DataFormatError(f"{where}: tree not closed; expected balanced brackets")
    return root


def tree_token_tags(tree: list, where: str) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """Tokens, POS tags and (parent, grandparent, great-grandparent) constituent labels of every word of a
    parsed PTB tree, after Liu et al. (2019): an unlabeled top node is removed, -NONE- traces are dropped,
    function tags stripped, 'None' where the tree has no ancestor at that depth; -LRB- etc. become brackets."""
    while tree[0] in _EMPTY_ROOTS and len(tree) == 2 and isinstance(tree[1], list):
        tree = tree[1]
    tokens, pos, anc = [], [], []

    def walk(node: list, above: list[str]) -> None:
        label, children = node[0], node[1:]
        if len(children) == 1 and isinstance(children[0], str):
            if label == "-NONE-":
                return
            if not label:
                raise DataFormatError(f"{where}: word {children[0]!r} without a POS tag")
            tokens.append(PTB_SPECIAL_TOKENS.get(children[0], children[0]))
            pos.append(label)
            chain = [constituent_label(a) for a in reversed(above[-3:])]
            anc.append(tuple(chain + ["None"] * (3 - len(chain))))
            return
        for child in children:
            if isinstance(child, str):
                raise DataFormatError(f"{where}: word {child!r} next to a constituent inside ({label} ...); "
                                      f"expected every word under its own POS node")
            walk(child, above + [label])

    walk(tree, [])
    return tokens, pos, anc


_PTB_CACHE: dict[tuple, list] = {}


def _ptb_sentences(source: _Source) -> list[tuple[str, list, list, list]]:
    """Parsed sentences of one .mrg source as (where, tokens, pos, ancestors); cached per file."""
    archive = Path(source.label.split(".zip:", 1)[0] + ".zip")
    st = archive.stat()
    key = (source.label, st.st_size, st.st_mtime_ns)
    if key not in _PTB_CACHE:
        sents = []
        for lineno, tree_str in split_bracketed_trees(source.text(), source.label):
            where = f"{source.label} line {lineno}"
            tokens, pos, anc = tree_token_tags(parse_bracketed(tree_str, where), where)
            if tokens:
                sents.append((where, tokens, pos, anc))
        _PTB_CACHE[key] = sents
    return _PTB_CACHE[key]


def read_ptb_trees(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict, report: dict
                   ) -> list[RawExample]:
    """Penn Treebank .mrg files: mode 'pos' (POS tags) or 'parent' / 'gparent' / 'ggparent'
    (constituent label 1/2/3 levels above each word's POS node)."""
    mode = opts["mode"]
    out = []
    for source in open_sources(spec, data_dir, path, member_pattern=r"wsj_\d{4}\.mrg$"):
        for where, tokens, pos, anc in _ptb_sentences(source):
            tags = pos if mode == "pos" else [a[_ANCESTOR_LEVELS[mode] - 1] for a in anc]
            out.append(RawExample(where, {"tokens": list(tokens), "tags": list(tags)}, _file_group(source)))
    return out


def read_word_tag_lines(spec: TaskSpec, data_dir: Path, split: str, path: str, opts: dict, report: dict
                        ) -> list[RawExample]:
    """One sentence per line of 'word<sep>TAG' tokens (MASC 'word_TAG', Brown 'word/tag'). Pieces without a
    tag belong to the next tagged word (MASC words with inner spaces such as 'D. C._NN', or words broken over
    two lines); untagged pieces left at the end of a file are dropped and counted in the report."""
    sep = opts["separator"]
    out = []
    for source in open_sources(spec, data_dir, path, member_pattern=opts.get("member_pattern")):
        pending: list[str] = []
        for lineno, line in source.lines():
            items = line.split()
            if not items:
                continue
            where = f"{source.label} line {lineno}"
            tokens, tags = [], []
            for item in items:
                word, s, tag = item.rpartition(sep)
                if not s or not word or not tag:
                    pending.append(item)
                    continue
                tokens.append(" ".join(pending + [word]))
                tags.append(tag)
                pending = []
            if tokens:
                out.append(RawExample(where, {"tokens": tokens, "tags": tags}, _file_group(source)))
        if pending:
            report.setdefault("dropped_untagged_pieces", []).append({"file": source.label, "pieces": pending})
    if not out:
        raise DataFormatError(f"{path}: no tagged sentences; expected lines of 'word{sep}TAG' tokens")
    return out


LOCAL_READERS: dict[str, Callable[..., list[RawExample]]] = {
    "glue_tsv": read_glue_tsv,
    "mrpc": read_mrpc,
    "lines_per_label": read_lines_per_label,
    "qc": read_qc,
    "ppattach": read_ppattach,
    "rte_xml": read_rte_xml,
    "nps_chat": read_nps_chat,
    "boolq_jsonl": read_boolq_jsonl,
    "mrqa_jsonl": read_mrqa_jsonl,
    "squad_json": read_squad_json,
    "conll_columns": read_conll_columns,
    "conllu": read_conllu,
    "ptb_trees": read_ptb_trees,
    "word_tag_lines": read_word_tag_lines,
}


def read_local_raw(spec: TaskSpec, data_dir: Path) -> tuple[dict[str, list[RawExample]], list[str], dict]:
    """Parse the task's local files: raw examples per split, the files read, and what the reader reports
    (e.g. examples dropped on purpose, by id)."""
    if spec.local is None:
        raise MissingDataError(f"Task {spec.name} has no local data source ({spec.notes or 'none registered'}); "
                               + ("it loads from the hub only: pass --source hub (source='hub'; needs internet)"
                                  if spec.hub else "it cannot be loaded here"))
    reader = LOCAL_READERS[spec.local.reader]
    opts = spec.local.option_dict()
    splits: dict[str, list[RawExample]] = {}
    files = []
    report: dict = {}
    for split, path in spec.local.files:
        splits.setdefault(split, []).extend(reader(spec, data_dir, split, path, opts, report))
        files.append(path)
    return splits, files, report


# --------------------------------------------------------------------------------------------- post-parse
def split_groups(examples: list[RawExample]) -> list[int]:
    """The unit each example is kept whole with when a validation split is derived, as a component index
    numbered by first appearance. ``group`` is one key (a file, a context, ...), a tuple of keys (QNLI: the
    question and the sentence) or None (the example alone); examples that share any key at the same tuple
    position are connected, and a unit is a connected component of that graph, so that no key is on both
    sides of the split (a sentence serving several questions keeps all of them together)."""
    node: dict = {}
    edges: list[tuple[int, int]] = []
    for i, ex in enumerate(examples):
        keys = (ex.group if isinstance(ex.group, tuple) else (ex.group,)) if ex.group is not None else ()
        for j, key in enumerate(keys):
            edges.append((i, len(examples) + node.setdefault((j, key), len(node))))
    size = len(examples) + len(node)
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*edges)) if edges else (np.zeros(0, np.int64),) * 2
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    first: dict[int, int] = {}
    return [first.setdefault(int(c), len(first)) for c in labels[:len(examples)]]


def derive_validation(examples: list[RawExample], fraction: float, seed: int
                      ) -> tuple[list[RawExample], list[RawExample], dict]:
    """Hold out a seeded ``fraction`` of the units of :func:`split_groups` (each example its own unit when
    ``group`` is None) as validation; returns (train, validation, provenance record). Example order is
    preserved."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    keys = split_groups(examples)
    n_groups = len(set(keys))
    if n_groups < 2:
        raise DataFormatError(f"cannot derive a validation split from {n_groups} group(s); "
                              f"expected at least 2 (first example: {examples[0].where if examples else 'none'})")
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(fraction * n_groups)))
    val_groups = set(rng.permutation(n_groups)[:n_val].tolist())
    train = [ex for ex, k in zip(examples, keys) if k not in val_groups]
    val = [ex for ex, k in zip(examples, keys) if k in val_groups]
    record = {"derived": True, "seed": seed, "validation_fraction": fraction,
              "num_groups": n_groups, "validation_groups": n_val}
    return train, val, record


def _check_cr(spec: TaskSpec, ex: RawExample, label_index: dict[str, int]) -> dict:
    d = ex.data
    if not isinstance(d.get("text_a"), str) or not d["text_a"].strip():
        raise DataFormatError(f"{ex.where}: empty or missing first text; expected a sentence")
    if spec.is_pair and (not isinstance(d.get("text_b"), str) or not d["text_b"].strip()):
        raise DataFormatError(f"{ex.where}: empty or missing second text; {spec.name} is a sentence-pair task")
    label = d.get("label")
    if spec.is_regression:
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(float(label)):
            raise DataFormatError(f"{ex.where}: label {label!r}; expected a finite number ({spec.name} is regression)")
        label = float(label)
    elif isinstance(label, str):
        if label not in label_index:
            raise DataFormatError(f"{ex.where}: label {label!r} is not in the label set "
                                  f"{list(label_index)} of {spec.name}")
        label = label_index[label]
    elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= int(label) < len(label_index):
            raise DataFormatError(f"{ex.where}: label index {label} outside 0..{len(label_index) - 1} "
                                  f"(labels {list(label_index)}) of {spec.name}")
        label = int(label)
    else:
        raise DataFormatError(f"{ex.where}: label {label!r}; expected a label name or index of {list(label_index)}")
    return {"text_a": d["text_a"], "text_b": d.get("text_b") if spec.is_pair else None, "label": label}


def _check_qa(spec: TaskSpec, ex: RawExample) -> dict:
    d = ex.data
    for key in ("id", "question", "context"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise DataFormatError(f"{ex.where}: field {key!r} missing or empty; expected a non-empty string")
    ans = d.get("answers")
    if not isinstance(ans, dict) or set(ans) < {"text", "answer_start"} or len(ans["text"]) != len(ans["answer_start"]):
        raise DataFormatError(f"{ex.where}: 'answers' must be {{'text': [...], 'answer_start': [...]}} of equal length")
    if not ans["text"] and not spec.version_2_with_negative:
        raise DataFormatError(f"{ex.where}: question without an answer; {spec.name} has answerable questions only "
                              f"(SQuAD v1.1 rules; a task with unanswerable questions sets version_2_with_negative)")
    ctx = d["context"]
    for text, start in zip(ans["text"], ans["answer_start"]):
        if not isinstance(start, (int, np.integer)) or isinstance(start, bool):
            raise DataFormatError(f"{ex.where}: answer_start {start!r}; expected an integer character offset")
        if not text or start < 0 or ctx[start:start + len(text)] != text:
            raise DataFormatError(f"{ex.where}: answer {text!r} at character {start} does not match the context "
                                  f"(context there: {ctx[max(start, 0):max(start, 0) + len(text)]!r}); expected "
                                  f"answer_start to point at the answer text")
    return {"id": d["id"], "question": d["question"], "context": ctx,
            "answers": {"text": list(ans["text"]), "answer_start": [int(s) for s in ans["answer_start"]]}}


def _check_sl(spec: TaskSpec, ex: RawExample, tagset: set[str] | None) -> dict:
    tokens, tags = ex.data.get("tokens"), ex.data.get("tags")
    if not tokens:
        raise DataFormatError(f"{ex.where}: sentence without tokens")
    if tags is None or len(tokens) != len(tags):
        raise DataFormatError(f"{ex.where}: {len(tokens)} tokens but {0 if tags is None else len(tags)} tags; "
                              f"expected one tag per token")
    if tagset is not None:
        bad = [t for t in tags if t not in tagset]
        if bad:
            raise DataFormatError(f"{ex.where}: tag {bad[0]!r} is not in the tag set of {spec.name} "
                                  f"({', '.join(sorted(tagset))})")
    return {"tokens": list(tokens), "tags": list(tags)}


def finalize_splits(spec: TaskSpec, raw: dict[str, list[RawExample]], seed: int = 0,
                    derive_fraction: float = 0.0) -> tuple[DatasetDict, tuple[str, ...] | None, dict]:
    """The shared post-parse path: derive a validation split where only "train" exists
    (``derive_fraction`` > 0), validate every example against the task, build Datasets.
    Returns (splits, label_names, provenance fragment)."""
    prov: dict = {}
    raw = dict(raw)
    if derive_fraction > 0:
        if "validation" in raw:
            raise ValueError(f"{spec.name}: a validation split exists; nothing to derive")
        train, val, rec = derive_validation(raw.get("train", []), derive_fraction, seed)
        group_by = spec.local.group_by if spec.local else None
        rec["group_by"] = list(group_by) if isinstance(group_by, tuple) else group_by
        raw["train"], raw["validation"] = train, val
        prov["derived_split"] = rec
    for split in ("train", "validation"):
        if not raw.get(split):
            raise DataFormatError(f"{spec.name}: no examples in the {split!r} split")
    label_names: tuple[str, ...] | None
    if spec.task_class is TaskClass.CR:
        label_names = None if spec.is_regression else tuple(spec.labels or ())
        index = {n: i for i, n in enumerate(label_names or ())}
        rows = {s: [_check_cr(spec, ex, index) for ex in exs] for s, exs in raw.items()}
    elif spec.task_class is TaskClass.QA:
        label_names = None
        rows = {s: [_check_qa(spec, ex) for ex in exs] for s, exs in raw.items()}
    else:
        tagset = set(spec.labels) if spec.labels else None
        rows = {s: [_check_sl(spec, ex, tagset) for ex in exs] for s, exs in raw.items()}
        if spec.labels:
            label_names = tuple(spec.labels)
        else:
            label_names = tuple(sorted({t for exs in rows.values() for r in exs for t in r["tags"]}))
    feats = features_for(spec)
    order = [s for s in ("train", "validation", "test") if s in rows] + [s for s in rows if s not in
                                                                         ("train", "validation", "test")]
    splits = DatasetDict({s: Dataset.from_list(rows[s], features=feats) for s in order})
    prov["num_examples"] = {s: len(splits[s]) for s in order}
    return splits, label_names, prov


# --------------------------------------------------------------------------------------------- load_task
_CACHE: dict[tuple, tuple[DatasetDict, tuple[str, ...] | None, dict]] = {}


def _files_stamp(spec: TaskSpec, root: Path) -> tuple:
    """(path, size, mtime) of the task's local files, so that the cache notices edited files."""
    stamp = []
    paths = [p for _, p in spec.local.files] if spec.local else []
    paths += [v for k, v in (spec.local.options if spec.local else ()) if k == "dev_ids"]
    for spec_path in paths:
        path = root / _split_member(spec_path)[0]
        st = path.stat() if path.is_file() else None
        stamp.append((str(path), st.st_size if st else None, st.st_mtime_ns if st else None))
    return tuple(stamp)


def clear_cache(source: str | None = None) -> None:
    """Forget the in-memory cache of loaded tasks (only those of ``source`` "local"/"hub" when given)."""
    for key in [k for k in _CACHE if source is None or k[2] == source]:
        del _CACHE[key]
    if source in (None, "local"):
        _PTB_CACHE.clear()


def load_task(name_or_spec: str | TaskSpec, data_dir=None, source: str = "local", seed: int = 0) -> TaskData:
    """Load a task into the schema (module docstring). ``source``: "local" (raw files under ``data_dir``,
    default ``$TASKTRANSFER_DATA_DIR`` or ../shared/data) or "hub" (``datasets.load_dataset``).
    ``seed`` only affects tasks whose validation split is derived (recorded in ``provenance``); keep it
    fixed across restarts so that every run sees the same split. Results are cached in memory."""
    spec = get_task(name_or_spec)
    if source not in ("local", "hub"):
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    if source == "local":
        root = resolve_data_dir(data_dir)
        key = (spec, str(root), source, seed, _files_stamp(spec, root))
        if key not in _CACHE:
            raw, files, report = read_local_raw(spec, root)
            splits, label_names, prov = finalize_splits(spec, raw, seed, spec.local.derive_validation)
            prov = {"task": spec.name, "source": "local", "data_dir": str(root), "reader": spec.local.reader,
                    "files": files, "derived_split": prov.pop("derived_split", None), **prov,
                    **report, "note": spec.local.note}
            _CACHE[key] = (splits, label_names, prov)
    else:
        from . import hub_loaders

        key = (spec, None, source, seed)
        if key not in _CACHE:
            raw, prov0 = hub_loaders.read_hub_raw(spec)
            splits, label_names, prov = finalize_splits(spec, raw, seed, 0.0)
            prov = {"task": spec.name, "source": "hub", **prov0, "derived_split": None, **prov}
            _CACHE[key] = (splits, label_names, prov)
    splits, label_names, prov = _CACHE[key]
    return TaskData(spec, DatasetDict(dict(splits)), label_names, source, copy.deepcopy(prov))


def task_size(name: str | TaskSpec, data_dir=None, source: str = "local", seed: int = 0) -> int:
    """Number of examples in the task's FULL training split, counted on the real data (DataSize baseline)."""
    return len(load_task(name, data_dir=data_dir, source=source, seed=seed).splits["train"])

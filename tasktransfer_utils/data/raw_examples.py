"""The raw example every reader produces (local files and the hub alike), its errors, and the record
converters the local and hub readers share (BoolQ as extractive QA, MRQA answer spans, JSON lines).

:func:`tasktransfer_utils.data.loaders.finalize_splits` validates :class:`RawExample` records and turns them
into the per-class schema."""

from __future__ import annotations

import json
from typing import Any, Iterable, NamedTuple

from ..errors import MissingFileError, UserInputError


class DataFormatError(UserInputError, ValueError):
    """A data file (or hub record) does not have the expected layout; the message names file, line and field."""


class MissingDataError(MissingFileError):
    """The data directory lacks a file the task needs, or the task has no local / hub source."""


class RawExample(NamedTuple):
    """One parsed example before validation: ``where`` = 'file line N' (or hub split/row) for error messages;
    ``data`` in schema field names (CR label may still be a label name); ``group`` = unit kept whole when a
    validation split is derived (a file, a context, ...; a tuple of keys links the examples that share any of
    them, see :func:`split_groups`)."""

    where: str
    data: dict
    group: str | tuple[str, ...] | None = None


BOOLQ_PREFIX = "yes. no. "


BOOLQ_SPANS = {True: ("yes", 0), False: ("no", 5)}


def boolq_example(where: str, qid: str, question: str, passage: str, answer: Any) -> RawExample:
    """BoolQ as extractive QA: context = 'yes. no. ' + passage; answer span 'yes' at 0 or 'no' at 5."""
    if not isinstance(answer, bool):
        raise DataFormatError(f"{where}: field 'answer' = {answer!r}; expected true or false")
    if not isinstance(passage, str) or not passage.strip():
        raise DataFormatError(f"{where}: field 'passage' is missing or empty; expected the passage text")
    text, start = BOOLQ_SPANS[answer]
    context = BOOLQ_PREFIX + passage
    return RawExample(where, {"id": qid, "question": question, "context": context,
                              "answers": {"text": [text], "answer_start": [start]}}, passage)


def _json_line(line: str, where: str) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _need(rec: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {', '.join(map(repr, missing))}; "
                              f"found {', '.join(map(repr, rec))}")


def mrqa_example(where: str, qid: str, question: str, context: str,
                 spans: Iterable[tuple[int, int]]) -> RawExample:
    """An MRQA 2019 question: ``spans`` are inclusive (start, end) character spans of the detected answers."""
    texts, starts = [], []
    for s, e in spans:
        if not (0 <= s <= e < len(context)):
            raise DataFormatError(f"{where}: answer char span [{s}, {e}] lies outside the context "
                                  f"(length {len(context)}); expected inclusive offsets into the context")
        texts.append(context[s:e + 1])
        starts.append(int(s))
    if not texts:
        raise DataFormatError(f"{where}: question {qid!r} has no detected answer span; MRQA questions are answerable")
    return RawExample(where, {"id": qid, "question": question, "context": context,
                              "answers": {"text": texts, "answer_start": starts}}, context)


def mrqa_char_spans(detected: Any, where: str) -> list[tuple[int, int]]:
    """Inclusive char spans from MRQA ``detected_answers`` as the hub serves it (a dict of lists whose
    ``char_spans`` is one {start: [...], end: [...]} per answer) or as raw JSON (a list of answer dicts)."""
    spans: list[tuple[int, int]] = []
    if isinstance(detected, dict):
        per_answer = detected.get("char_spans", [])
    else:
        per_answer = [d.get("char_spans", []) for d in detected]
    for cs in per_answer:
        if isinstance(cs, dict):
            spans.extend(zip(cs.get("start", []), cs.get("end", [])))
        else:
            spans.extend((s[0], s[1]) if isinstance(s, (list, tuple)) else (s["start"], s["end"]) for s in cs)
    if not spans:
        raise DataFormatError(f"{where}: no char_spans in detected_answers; expected MRQA answer spans")
    return [(int(s), int(e)) for s, e in spans]


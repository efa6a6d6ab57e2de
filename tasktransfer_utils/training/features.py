"""Tokenisation per task class (Vu et al. 2020, §2-3), shared by fine-tuning and the task embeddings.

- CR: ``text_a`` (+ ``text_b`` for pairs) -> input_ids / attention_mask / token_type_ids / labels
  (int class index, or float for regression); truncation longest-first to ``max_seq_length``.
- QA: question (cut to ``max_query_length`` word pieces) + context in doc-stride windows of
  ``max_seq_length``; consecutive windows start ``doc_stride`` context word pieces apart, as in the
  authors' code (transformers v2 ``squad_convert_examples_to_features``). Training windows carry
  ``start_positions`` / ``end_positions`` (the [CLS] index when the answer is absent or not wholly inside
  the window); evaluation windows carry ``example_id`` and ``offset_mapping`` (None outside the context).
- SL: words -> word pieces; the tag goes on the first word piece of each word, -100 elsewhere. Evaluation
  features also carry ``word_index`` (the word a first piece starts, -1 elsewhere) so metrics are scored
  per word against the original tags.

No padding here: batches are padded dynamically by :func:`collator_for_class`.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from .settings import FineTuneSettings, class_name

IGNORE_INDEX = -100
# Columns the models take; everything else (example_id, offset_mapping, word_index) is bookkeeping.
MODEL_INPUT_COLUMNS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)
REQUIRED_COLUMNS = {
    "CR": ("text_a", "text_b", "label"),
    "QA": ("id", "question", "context", "answers"),
    "SL": ("tokens", "tags"),
}


def _spec_of(task_data_or_spec: Any) -> Any:
    return getattr(task_data_or_spec, "spec", task_data_or_spec)


def _describe(task_data_or_spec: Any) -> tuple[str, str, bool]:
    """(task name, class, is_regression) from a TaskData, a TaskSpec or a bare class name."""
    spec = _spec_of(task_data_or_spec)
    if isinstance(spec, str) or hasattr(spec, "value"):
        return str(getattr(spec, "value", spec)), class_name(spec), False
    return spec.name, class_name(spec.task_class), bool(getattr(spec, "is_regression", False))


def tokenize_for_class(
    task_data_or_spec: Any,
    dataset: Dataset,
    tokenizer: Any,
    settings: FineTuneSettings,
    label_names: tuple[str, ...] | list[str] | None = None,
    for_training: bool = True,
) -> Dataset:
    """Tokenise one split of a task (schema of ``loaders``) into model features; see the module docstring.

    ``task_data_or_spec``: a TaskData, a TaskSpec or a class name ("CR"/"QA"/"SL"). ``label_names``
    defaults to ``task_data.label_names``. With ``for_training`` labels are required (ValueError naming
    the task, column and row when missing); without it labels are kept when present.
    Returns a Dataset with one row per example (CR, SL) or per window (QA).
    """
    name, cls, is_regression = _describe(task_data_or_spec)
    if label_names is None:
        label_names = getattr(task_data_or_spec, "label_names", None)
    missing = [c for c in REQUIRED_COLUMNS[cls] if c not in dataset.column_names]
    label_cols = {"CR": ("label",), "QA": ("answers",), "SL": ("tags",)}[cls]
    input_missing = [c for c in missing if c not in label_cols and not (cls == "CR" and c == "text_b")]
    if input_missing:
        raise ValueError(
            f"{name}: dataset lacks column(s) {input_missing} required for class {cls} "
            f"(expected {REQUIRED_COLUMNS[cls]}, got {dataset.column_names})"
        )
    has_labels = all(c in dataset.column_names for c in label_cols)
    if for_training and not has_labels:
        raise ValueError(
            f"{name}: target labels missing: column {label_cols[0]!r} is absent (columns: {dataset.column_names}); "
            "fine-tuning needs labelled data"
        )
    fingerprint = _fingerprint(dataset, tokenizer, settings, label_names, for_training, cls, is_regression)
    if cls == "CR":
        fn = _cr_function(name, dataset, tokenizer, settings, label_names, is_regression, has_labels)
    elif cls == "QA":
        fn = _qa_function(name, tokenizer, settings, for_training)
    else:
        fn = _sl_function(name, tokenizer, settings, label_names, has_labels, for_training)
    return dataset.map(fn, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       new_fingerprint=fingerprint)


def _fingerprint(dataset, tokenizer, settings, label_names, for_training, cls, is_regression) -> str:
    """A cheap identity for the tokenised split (datasets would otherwise pickle the tokenizer to hash it,
    about a second per call)."""
    from datasets.fingerprint import Hasher

    key = ("features-v1", getattr(dataset, "_fingerprint", None), type(tokenizer).__name__,
           getattr(tokenizer, "name_or_path", ""), len(tokenizer), settings.to_dict(),
           None if label_names is None else tuple(label_names), bool(for_training), cls, bool(is_regression))
    return Hasher.hash(key)


def _cr_function(name, dataset, tokenizer, settings, label_names, is_regression, has_labels):
    if has_labels and not is_regression and label_names is None:
        raise ValueError(f"{name}: label_names is None for a classification task; pass the class names")
    n_classes = None if is_regression or label_names is None else len(label_names)
    has_b = "text_b" in dataset.column_names

    def fn(batch, indices):
        a = batch["text_a"]
        b = batch["text_b"] if has_b else None
        if b is not None:
            nones = [x is None for x in b]
            if all(nones):
                b = None
            elif any(nones):
                row = indices[nones.index(True)]
                raise ValueError(f"{name}: text_b is None in row {row} but set in other rows of the same split")
        enc = tokenizer(a, b, truncation=True, max_length=settings.max_seq_length)
        if has_labels:
            labels = []
            for row, y in zip(indices, batch["label"]):
                if y is None:
                    raise ValueError(f"{name}: target labels missing: label is None in row {row}")
                if is_regression:
                    labels.append(float(y))
                else:
                    if int(y) != y or (n_classes is not None and not 0 <= int(y) < n_classes):
                        raise ValueError(
                            f"{name}: label {y!r} in row {row} is not a class index in [0, {n_classes})"
                        )
                    labels.append(int(y))
            enc["labels"] = labels
        return enc

    return fn


def _truncate_question(question: str, tokenizer, max_query_length: int) -> tuple[str, int]:
    """Cut a question to its first ``max_query_length`` word pieces; returns (text, word-piece count)."""
    question = question.lstrip()
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    n = len(enc["input_ids"])
    if n <= max_query_length:
        return question, n
    end = enc["offset_mapping"][max_query_length - 1][1]
    return question[:end], max_query_length


def _qa_function(name, tokenizer, settings, for_training):
    L = settings.max_seq_length
    n_special = tokenizer.num_special_tokens_to_add(pair=True)

    def fn(batch, indices):
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": []}
        if for_training:
            out["start_positions"], out["end_positions"] = [], []
        else:
            out["example_id"], out["offset_mapping"] = [], []
        for k, row in enumerate(indices):
            question, q_len = _truncate_question(batch["question"][k], tokenizer, settings.max_query_length)
            budget = L - q_len - n_special  # context word pieces per window
            if budget < 1:
                raise ValueError(
                    f"{name}: max_seq_length={L} leaves no room for context after a {q_len}-piece question"
                )
            # overlap such that consecutive windows start doc_stride pieces apart (authors' semantics)
            overlap = max(0, min(budget - settings.doc_stride, budget - 1))
            enc = tokenizer(
                question,
                batch["context"][k],
                truncation="only_second",
                max_length=L,
                stride=overlap,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            answers = batch["answers"][k] if "answers" in batch else None
            for w in range(len(enc["input_ids"])):
                ids = enc["input_ids"][w]
                seq = enc.sequence_ids(w)
                offsets = enc["offset_mapping"][w]
                out["input_ids"].append(ids)
                out["attention_mask"].append(enc["attention_mask"][w])
                out["token_type_ids"].append(enc["token_type_ids"][w] if "token_type_ids" in enc else [0] * len(ids))
                if for_training:
                    s, e = _answer_positions(name, row, answers, ids, seq, offsets, tokenizer)
                    out["start_positions"].append(s)
                    out["end_positions"].append(e)
                else:
                    out["example_id"].append(batch["id"][k])
                    out["offset_mapping"].append(
                        [list(o) if seq[i] == 1 else None for i, o in enumerate(offsets)]
                    )
        return out

    return fn


def _answer_positions(name, row, answers, ids, seq, offsets, tokenizer) -> tuple[int, int]:
    """Token start/end of the first gold answer inside one window; the [CLS] index if absent."""
    if answers is None:
        raise ValueError(f"{name}: target labels missing: 'answers' is None in row {row}")
    cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
    if len(answers["answer_start"]) == 0:
        return cls_index, cls_index
    start_char = int(answers["answer_start"][0])
    end_char = start_char + len(answers["text"][0])
    ctx = [i for i, s in enumerate(seq) if s == 1]
    if not ctx:
        return cls_index, cls_index
    first, last = ctx[0], ctx[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index
    ts = first
    while ts <= last and offsets[ts][1] <= start_char:
        ts += 1
    te = last
    while te >= first and offsets[te][0] >= end_char:
        te -= 1
    if ts > te:  # answer falls in whitespace between pieces: cannot be located
        return cls_index, cls_index
    return ts, te


def _sl_function(name, tokenizer, settings, label_names, has_labels, for_training):
    if has_labels and label_names is None:
        raise ValueError(f"{name}: label_names is None for a sequence-labeling task; pass the tag set")
    tag_to_id = {t: i for i, t in enumerate(label_names)} if label_names is not None else {}

    def fn(batch, indices):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=settings.max_seq_length)
        all_labels, all_words = [], []
        for k, row in enumerate(indices):
            tags = batch["tags"][k] if has_labels else None
            if has_labels:
                if tags is None or len(tags) != len(batch["tokens"][k]):
                    raise ValueError(
                        f"{name}: target labels missing or misaligned in row {row}: "
                        f"{0 if tags is None else len(tags)} tags for {len(batch['tokens'][k])} tokens"
                    )
            labels, words, prev = [], [], None
            for w in enc.word_ids(k):
                if w is None or w == prev:
                    labels.append(IGNORE_INDEX)
                    words.append(-1)
                else:
                    words.append(w)
                    if has_labels:
                        tag = tags[w]
                        if tag not in tag_to_id:
                            if for_training:
                                raise ValueError(
                                    f"{name}: tag {tag!r} in row {row}, word {w} is not in the tag set "
                                    f"({len(tag_to_id)} tags: {list(tag_to_id)[:10]}...)"
                                )
                            labels.append(IGNORE_INDEX)
                        else:
                            labels.append(tag_to_id[tag])
                    else:
                        labels.append(IGNORE_INDEX)
                prev = w
            all_labels.append(labels)
            all_words.append(words)
        if has_labels:
            enc["labels"] = all_labels
        if not for_training:
            enc["word_index"] = all_words
        return enc

    return fn


def model_inputs(features: Dataset) -> Dataset:
    """The features without bookkeeping columns (example_id, offset_mapping, word_index)."""
    drop = [c for c in features.column_names if c not in MODEL_INPUT_COLUMNS]
    return features.remove_columns(drop) if drop else features


def collator_for_class(task_class: Any, tokenizer: Any, pad_to_length: int | None = None):
    """Data collator for a class: dynamic padding to the longest sequence of each batch (default), or to
    a fixed ``pad_to_length`` as the authors' code did (every batch padded to the class's max length).
    SL pads ``labels`` with -100."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    padding = "max_length" if pad_to_length else True
    if class_name(task_class) == "SL":
        return DataCollatorForTokenClassification(
            tokenizer, padding=padding, max_length=pad_to_length, label_pad_token_id=IGNORE_INDEX
        )
    return DataCollatorWithPadding(tokenizer, padding=padding, max_length=pad_to_length)

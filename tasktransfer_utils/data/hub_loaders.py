"""Hub path of the loaders: ``datasets.load_dataset`` with the real dataset ids, then a per-dataset column
mapping into :class:`~tasktransfer_utils.loaders.RawExample` records that go through the same validation and
Dataset building as local files (:func:`~tasktransfer_utils.loaders.finalize_splits`).

Each mapper takes (spec, hub split Dataset, where-prefix, options, report) and returns raw examples. Class
labels served as ``ClassLabel`` integers are turned into their names, so the shared validation maps names
to the task's label indices and rejects any name outside the label set.

The ids and configs are the hub's canonical ones; they cannot be checked from an offline machine. Two of them
(``universal_dependencies``, ``qangaroo``) are script datasets, which recent ``datasets`` releases no longer
run: set ``HubSource.revision = "refs/convert/parquet"`` (the hub's parquet conversion) if loading fails.
"""

from __future__ import annotations

from typing import Callable, Iterable

import datasets

from .raw_examples import DataFormatError, MissingDataError, RawExample, boolq_example, mrqa_char_spans, mrqa_example
from .tasks import TaskSpec


def _classlabel_names(feature) -> list[str] | None:
    """Names of a ClassLabel feature (or of the ClassLabel inside a list feature), else None."""
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def _need_columns(ds, columns: Iterable[str | None], where: str) -> None:
    missing = [c for c in columns if c is not None and c not in ds.column_names]
    if missing:
        raise DataFormatError(f"{where}: missing column(s) {', '.join(map(repr, missing))}; "
                              f"found {', '.join(ds.column_names)}")


def map_columns(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """CR datasets whose rows hold the two texts and the label in named columns (GLUE, SNLI, SciTail, ...)."""
    a, b, lab = opts["text_a"], opts.get("text_b"), opts["label"]
    _need_columns(ds, (a, b, lab), where)
    names = _classlabel_names(ds.features[lab])
    rename = dict(opts.get("label_map", ()))
    drop = opts.get("drop_label", None)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        label = row[lab]
        if drop is not None and label == drop:
            dropped += 1
            continue
        if names is not None and not spec.is_regression:
            if not isinstance(label, int) or not 0 <= label < len(names):
                raise DataFormatError(f"{where} row {i}: label {label!r}; expected an index into {names}")
            label = names[label]
        if isinstance(label, str):
            label = rename.get(label, label)
        out.append(RawExample(f"{where} row {i}", {"text_a": row[a], "text_b": row[b] if b else None,
                                                   "label": label}))
    if dropped:
        report.setdefault("dropped", {})[where] = f"{dropped} rows with label {drop!r}"
    return out


def map_squad(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """SQuAD v1.1 / v2.0 on the hub: id, title, context, question, answers{text, answer_start}."""
    _need_columns(ds, ("id", "context", "question", "answers"), where)
    out = []
    for i, row in enumerate(ds):
        ans = row["answers"]
        out.append(RawExample(f"{where} row {i} (id {row['id']})",
                              {"id": row["id"], "question": row["question"], "context": row["context"],
                               "answers": {"text": list(ans["text"]), "answer_start": list(ans["answer_start"])}},
                              row["context"]))
    return out


def map_mrqa(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """MRQA 2019 on the hub (one row per question, all subsets in one table; ``subset`` filters)."""
    _need_columns(ds, ("subset", "context", "qid", "question", "detected_answers"), where)
    subset = opts.get("subset")
    out = []
    for i, row in enumerate(ds):
        if subset is not None and row["subset"] != subset:
            continue
        w = f"{where} row {i} (qid {row['qid']})"
        out.append(mrqa_example(w, row["qid"], row["question"], row["context"],
                                mrqa_char_spans(row["detected_answers"], w)))
    if not out:
        raise DataFormatError(f"{where}: no rows with subset {subset!r}")
    return out


def map_boolq(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """google/boolq: question, answer (bool), passage -> extractive 'yes. no. ' framing (see BoolQ notes)."""
    _need_columns(ds, ("question", "answer", "passage"), where)
    split = where.rsplit(" ", 1)[-1]
    return [boolq_example(f"{where} row {i}", f"boolq-{split}-{i}", row["question"], row["passage"], row["answer"])
            for i, row in enumerate(ds)]


def _locate(context: str, answers: Iterable[str], ignore_case: bool = False) -> tuple[list[str], list[int]]:
    """First occurrence of each distinct answer string in the context (answers not found are skipped)."""
    texts, starts = [], []
    hay = context.lower() if ignore_case else context
    for ans in dict.fromkeys(a.strip() for a in answers if a and a.strip()):
        pos = hay.find(ans.lower() if ignore_case else ans)
        if pos >= 0:
            texts.append(context[pos:pos + len(ans)])
            starts.append(pos)
    return texts, starts


def map_drop(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """ucinlp/drop: passage, question, query_id, answers_spans{spans, types}; span answers located in the
    passage; questions without a passage span (numbers, dates) dropped and counted."""
    _need_columns(ds, ("query_id", "passage", "question", "answers_spans"), where)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        texts, starts = _locate(row["passage"], row["answers_spans"]["spans"])
        if not texts:
            dropped += 1
            continue
        out.append(RawExample(f"{where} row {i}", {"id": row["query_id"], "question": row["question"],
                                                   "context": row["passage"],
                                                   "answers": {"text": texts, "answer_start": starts}},
                              row["passage"]))
    report.setdefault("dropped", {})[where] = f"{dropped} questions without an answer span in the passage"
    return out


def map_duorc(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """ibm/duorc: plot, question_id, question, answers, no_answer; no_answer -> unanswerable (empty answers);
    answers located in the plot; answerable questions without a span in the plot dropped and counted."""
    _need_columns(ds, ("plot", "question_id", "question", "answers", "no_answer"), where)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        if row["no_answer"]:
            texts, starts = [], []
        else:
            texts, starts = _locate(row["plot"], row["answers"])
            if not texts:
                dropped += 1
                continue
        out.append(RawExample(f"{where} row {i}", {"id": row["question_id"], "question": row["question"],
                                                   "context": row["plot"],
                                                   "answers": {"text": texts, "answer_start": starts}}, row["plot"]))
    report.setdefault("dropped", {})[where] = f"{dropped} answerable questions without an answer span in the plot"
    return out


def map_wikihop(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """qangaroo/wikihop: id, query, supports, candidates, answer; context = supports joined by blank lines,
    question = query with '_' as spaces, answer = its first case-insensitive occurrence."""
    _need_columns(ds, ("id", "query", "supports", "answer"), where)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        context = "\n\n".join(row["supports"])
        texts, starts = _locate(context, [row["answer"]], ignore_case=True)
        if not texts:
            dropped += 1
            continue
        out.append(RawExample(f"{where} row {i}", {"id": row["id"], "question": row["query"].replace("_", " "),
                                                   "context": context,
                                                   "answers": {"text": texts[:1], "answer_start": starts[:1]}},
                              context))
    report.setdefault("dropped", {})[where] = f"{dropped} questions whose answer is not in the supports"
    return out


def map_tagging(spec: TaskSpec, ds, where: str, opts: dict, report: dict) -> list[RawExample]:
    """Token tagging datasets (CoNLL-2000/2002/2003 ``*_tags`` ClassLabel lists, UD ``xpos`` strings).
    Positions whose tag is None or '_' (UD multiword tokens) are skipped."""
    tok_col, tag_col = opts["tokens"], opts["tags"]
    _need_columns(ds, (tok_col, tag_col), where)
    names = _classlabel_names(ds.features[tag_col])
    out = []
    for i, row in enumerate(ds):
        tokens, tags = row[tok_col], row[tag_col]
        if len(tokens) != len(tags):
            raise DataFormatError(f"{where} row {i}: {len(tokens)} tokens but {len(tags)} tags")
        if names is not None:
            bad = [t for t in tags if not 0 <= t < len(names)]
            if bad:
                raise DataFormatError(f"{where} row {i}: tag index {bad[0]} outside 0..{len(names) - 1}")
            tags = [names[t] for t in tags]
        keep = [(w, t) for w, t in zip(tokens, tags) if t not in (None, "_")]
        if not keep:
            continue
        out.append(RawExample(f"{where} row {i}", {"tokens": [w for w, _ in keep], "tags": [t for _, t in keep]}))
    return out


HUB_MAPPERS: dict[str, Callable[..., list[RawExample]]] = {
    "columns": map_columns,
    "squad": map_squad,
    "mrqa": map_mrqa,
    "boolq": map_boolq,
    "drop": map_drop,
    "duorc": map_duorc,
    "wikihop": map_wikihop,
    "tagging": map_tagging,
}


def read_hub_raw(spec: TaskSpec) -> tuple[dict[str, list[RawExample]], dict]:
    """Load ``spec.hub`` with ``datasets.load_dataset`` and map each split to raw examples.
    Returns (raw examples per split, provenance: dataset id, config, revision, split mapping, drops)."""
    hub = spec.hub
    if hub is None:
        raise MissingDataError(f"Task {spec.name} has no Hugging Face hub dataset ({spec.notes or 'none'}); "
                               + ("load it from local files (source='local')." if spec.local else
                                  "it cannot be loaded."))
    loaded = datasets.load_dataset(hub.dataset_id, hub.config, revision=hub.revision)
    mapper = HUB_MAPPERS[hub.mapper]
    opts = hub.option_dict()
    report: dict = {}
    raw: dict[str, list[RawExample]] = {}
    for ours, theirs in hub.splits:
        if theirs not in loaded:
            raise MissingDataError(f"hub dataset {hub.dataset_id}/{hub.config}: no split {theirs!r} "
                                   f"(has {', '.join(loaded)}); expected it for the {ours!r} split of {spec.name}")
        where = f"hub {hub.dataset_id}" + (f"/{hub.config}" if hub.config else "") + f" split {theirs}"
        raw.setdefault(ours, []).extend(mapper(spec, loaded[theirs], where, opts, report))
    prov = {"dataset_id": hub.dataset_id, "config": hub.config, "revision": hub.revision,
            "splits": dict(hub.splits), "mapper": hub.mapper, **report}
    return raw, prov

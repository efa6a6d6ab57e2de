"""Task metrics (Vu et al. 2020, §3 and Table 1), all in [0, 1] units (SQuAD's official script reports x100).

CR: accuracy, binary F1 of class 1, Matthews correlation (scikit-learn); Pearson and Spearman
correlation (SciPy). QA: exact match and token F1 with the official SQuAD evaluation scripts' rules
(normalisation: lower case, drop punctuation, drop the articles a/an/the, collapse white space; the best
score over gold answers counts), v2.0 for a task with unanswerable questions (an unanswerable question has
the single gold answer "" and scores 1 only for an empty prediction), v1.1 otherwise (every question has a
gold answer; an empty prediction scores 0). These are re-implemented here because the ``evaluate`` library fetches
its metric scripts from the Hugging Face hub, which is not reachable offline. SL: span F1 of seqeval
(CoNLL conlleval rules, BIO tags) or per-word accuracy for tagging tasks.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

CR_METRICS = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman")
QA_METRICS = ("exact_match", "f1")
SL_METRICS = ("seqeval_f1", "token_accuracy")


def _check_names(names: Sequence[str], allowed: Sequence[str], where: str) -> None:
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"{where}: unknown metric(s) {bad}; expected some of {allowed}")


def classification_metrics(names: Sequence[str], predictions, labels) -> dict[str, float]:
    """CR metrics from predicted class indices or regression values (shape [n]) and gold labels ([n])."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    _check_names(names, CR_METRICS, "classification_metrics")
    y_pred, y_true = np.asarray(predictions), np.asarray(labels)
    if y_pred.shape != y_true.shape or y_pred.ndim != 1:
        raise ValueError(f"classification_metrics: predictions {y_pred.shape} and labels {y_true.shape} must be equal 1-D")
    if len(y_true) == 0:
        raise ValueError("classification_metrics: no examples to score")
    out: dict[str, float] = {}
    for n in names:
        if n == "accuracy":
            out[n] = float(accuracy_score(y_true, y_pred))
        elif n == "f1":
            out[n] = float(f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0))
        elif n == "matthews_corrcoef":
            out[n] = float(matthews_corrcoef(y_true, y_pred))
        elif n in ("pearson", "spearman"):
            if np.std(y_pred) == 0 or np.std(y_true) == 0:
                out[n] = 0.0  # undefined for a constant series; scored as no correlation
            else:
                fn = pearsonr if n == "pearson" else spearmanr
                out[n] = float(fn(y_true.astype(np.float64), y_pred.astype(np.float64))[0])
    return out


# ----- SQuAD v2.0 (official evaluate-v2.0.py rules) -----
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (official SQuAD script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_score(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score_tokens(gold: str, pred: str) -> float:
    """Token-overlap F1 of two answers; when either is empty, 1 iff both are empty."""
    g, p = _tokens(gold), _tokens(pred)
    if len(g) == 0 or len(p) == 0:
        return float(g == p)
    common = collections.Counter(g) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_v2_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 over ``references`` (id -> gold answer texts; empty = unanswerable) given
    ``predictions`` (id -> answer text, "" = no answer). Gold answers that normalise to "" are dropped,
    as in the official script. A missing prediction is an error."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"squad_v2_scores: no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
    if not references:
        raise ValueError("squad_v2_scores: no questions to score")
    em, f1 = [], []
    for qid, golds in references.items():
        golds = [a for a in golds if normalize_answer(a)] or [""]
        pred = predictions[qid]
        em.append(max(exact_score(a, pred) for a in golds))
        f1.append(max(f1_score_tokens(a, pred) for a in golds))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def squad_v1_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 with the SQuAD v1.1 script's rules (evaluate-v1.1.py): every question has gold
    answers, all of which count (even one that normalises to ""), and the F1 of an answer with no token in
    common with the gold is 0, empty prediction included. A missing prediction or a question without a
    gold answer is an error."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"squad_v1_scores: no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
    if not references:
        raise ValueError("squad_v1_scores: no questions to score")
    unanswerable = [qid for qid, golds in references.items() if not golds]
    if unanswerable:
        raise ValueError(f"squad_v1_scores: question {unanswerable[0]!r} has no gold answer; SQuAD v1.1 rules "
                         "expect answerable questions only (a task with unanswerable questions sets "
                         "version_2_with_negative)")
    em, f1 = [], []
    for qid, golds in references.items():
        pred = predictions[qid]
        em.append(max(exact_score(a, pred) for a in golds))
        f1s = []
        for gold in golds:
            g, p = normalize_answer(gold).split(), normalize_answer(pred).split()
            same = sum((collections.Counter(g) & collections.Counter(p)).values())
            precision, recall = (same / len(p), same / len(g)) if same else (0.0, 0.0)
            f1s.append(2 * precision * recall / (precision + recall) if same else 0.0)
        f1.append(max(f1s))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def qa_metrics(names: Sequence[str], predictions, references, *, version_2_with_negative: bool) -> dict[str, float]:
    """EM / F1 by the rules of the task's SQuAD version (``TaskSpec.version_2_with_negative``): v2.0
    (:func:`squad_v2_scores`) or v1.1 (:func:`squad_v1_scores`)."""
    _check_names(names, QA_METRICS, "qa_metrics")
    scores = (squad_v2_scores if version_2_with_negative else squad_v1_scores)(predictions, references)
    return {n: scores[n] for n in names}


def sequence_labeling_metrics(names: Sequence[str], y_true: Sequence[Sequence[str]], y_pred) -> dict[str, float]:
    """SL metrics over sentences of word-level tags: seqeval span F1 (default mode, conlleval rules)
    and/or per-word accuracy."""
    from seqeval.metrics import f1_score

    _check_names(names, SL_METRICS, "sequence_labeling_metrics")
    if len(y_true) != len(y_pred) or any(len(t) != len(p) for t, p in zip(y_true, y_pred)):
        raise ValueError("sequence_labeling_metrics: y_true and y_pred must have the same sentences and lengths")
    out: dict[str, float] = {}
    for n in names:
        if n == "seqeval_f1":
            out[n] = float(f1_score([list(t) for t in y_true], [list(p) for p in y_pred], zero_division=0))
        else:
            n_words = sum(len(t) for t in y_true)
            if n_words == 0:
                raise ValueError("sequence_labeling_metrics: no words to score")
            out[n] = sum(a == b for t, p in zip(y_true, y_pred) for a, b in zip(t, p)) / n_words
    return out


def task_score(metrics: Mapping[str, float], names: Sequence[str]) -> float:
    """The single score of a run: the mean of the task's metrics (e.g. MRPC: (accuracy + F1) / 2)."""
    missing = [n for n in names if n not in metrics]
    if missing:
        raise KeyError(f"task_score: metrics {missing} absent from {sorted(metrics)}")
    return float(np.mean([metrics[n] for n in names]))


#: metrics that are a mean over evaluation examples of a per-example value in [0, 1], by task class
PER_EXAMPLE_METRICS = {"CR": ("accuracy",), "QA": ("exact_match", "f1"), "SL": ()}


def score_is_per_example_mean(names: Sequence[str], task_class: str) -> bool:
    """True when :func:`task_score` over ``names`` is a mean of per-example values in [0, 1] over the
    evaluation examples (accuracy; SQuAD's EM and F1, averaged per question), so its standard error over
    n examples is at most sqrt(p (1 − p) / n). Not for binary F1, correlations, seqeval's corpus-level F1
    or per-word accuracy (averaged over words, not examples)."""
    allowed = PER_EXAMPLE_METRICS.get(str(getattr(task_class, "value", task_class)), ())
    return bool(names) and all(n in allowed for n in names)

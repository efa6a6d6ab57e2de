"""Offsets-based answer extraction over doc-stride windows (as transformers ``examples/pytorch/question-answering``
``utils_qa.postprocess_qa_predictions`` and the BERT SQuAD code the authors used).

For each question, every window's ``n_best_size`` highest start and end logits are paired; a pair is kept
when both tokens lie in the context (offset not None), end >= start and the span has at most
``max_answer_length`` word pieces. The answer is the context text between the start token's first and the
end token's last character. With ``version_2_with_negative`` (SQuAD-2 style), the null score of a window is
start_logit[CLS] + end_logit[CLS]; the smallest null score over the question's windows is compared with the
best non-null span score, and "" (no answer) is returned when null > best + ``null_score_diff_threshold``.
Unlike the original BERT code, a span is not restricted to the window where its start token has the most
context (the transformers examples omit that rule too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def postprocess_qa_predictions(
    examples: Sequence[Mapping],
    features: Sequence[Mapping],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, str]:
    """Answer text per question id.

    examples: rows with ``id`` and ``context``. features: one per window with ``example_id`` and
    ``offset_mapping`` ([start_char, end_char] per token, None outside the context). start_logits /
    end_logits: one 1-D array per window (length >= the window's tokens; padding beyond is ignored).
    """
    if not (len(features) == len(start_logits) == len(end_logits)):
        raise ValueError(
            f"postprocess_qa_predictions: {len(features)} features but {len(start_logits)} start and "
            f"{len(end_logits)} end logit rows"
        )
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(features):
        by_example[f["example_id"]].append(i)
    known = {ex["id"] for ex in examples}
    stray = [k for k in by_example if k not in known]
    if stray:
        raise ValueError(f"postprocess_qa_predictions: windows refer to unknown example ids {stray[:3]}")

    answers: dict[str, str] = {}
    for ex in examples:
        context = ex["context"]
        best_text, best_score = "", -np.inf
        min_null = np.inf
        for i in by_example.get(ex["id"], []):
            offsets = features[i]["offset_mapping"]
            n_tok = len(offsets)
            s_log = np.asarray(start_logits[i], dtype=np.float64)[:n_tok]
            e_log = np.asarray(end_logits[i], dtype=np.float64)[:n_tok]
            null = s_log[0] + e_log[0]
            min_null = min(min_null, null)
            starts = np.argsort(s_log)[::-1][:n_best_size]
            ends = np.argsort(e_log)[::-1][:n_best_size]
            for s in starts:
                if offsets[s] is None:
                    continue
                for e in ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = s_log[s] + e_log[e]
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[s][0] : offsets[e][1]]
        if version_2_with_negative and (best_score == -np.inf or min_null > best_score + null_score_diff_threshold):
            answers[ex["id"]] = ""
        else:
            answers[ex["id"]] = best_text
    return answers

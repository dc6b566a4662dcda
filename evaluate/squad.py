"""SQuAD v1.1 / v2.0 evaluation and QA logit post-processing.

The scoring follows the algorithm of the official evaluation scripts
(answer normalization, token F1, max over gold answers, no-answer
threshold and best-threshold search of v2.0). ``examples`` use the
HuggingFace datasets format: {"id", "answers": {"text", "answer_start"}},
plus "context" for post-processing.

A question without a prediction scores 0 and still counts in the totals.
"""
from __future__ import annotations

import collections
import re
import string

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str, empty_matches_empty: bool = True) -> float:
    """Token-level F1 of normalized answers.

    With ``empty_matches_empty`` (SQuAD v2.0 rule) an empty prediction or
    gold answer scores 1 only when both are empty; without it (v1.1 rule)
    any empty side scores 0.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if empty_matches_empty and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: dict) -> list[str]:
    """Gold texts that are non-empty after normalization; [""] for an unanswerable question."""
    texts = [t for t in example["answers"]["text"] if normalize_answer(t)]
    return texts or [""]


def _has_answer(example: dict) -> bool:
    return len(example["answers"]["text"]) > 0


def squad_v1_metrics(predictions: dict[str, str], examples: list[dict]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, as the official v1.1 script."""
    if not examples:
        raise ValueError("no examples to evaluate")
    exact = f1 = 0.0
    for example in examples:
        qid = example["id"]
        if qid not in predictions:
            continue
        golds = list(example["answers"]["text"]) or [""]
        pred = predictions[qid]
        exact += max(exact_match_score(pred, g) for g in golds)
        f1 += max(f1_score(pred, g, empty_matches_empty=False) for g in golds)
    total = len(examples)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def _raw_scores(predictions, examples) -> tuple[dict[str, float], dict[str, float]]:
    exact, f1 = {}, {}
    for example in examples:
        qid = example["id"]
        if qid not in predictions:
            exact[qid] = f1[qid] = 0.0
            continue
        golds = gold_answers(example)
        pred = predictions[qid]
        exact[qid] = max(exact_match_score(pred, g) for g in golds)
        f1[qid] = max(f1_score(pred, g) for g in golds)
    return exact, f1


def apply_no_ans_threshold(scores: dict[str, float], no_answer_probs: dict[str, float],
                           qid_to_has_ans: dict[str, bool], threshold: float) -> dict[str, float]:
    """Questions whose no-answer probability exceeds ``threshold`` are answered with ""."""
    new_scores = {}
    for qid, score in scores.items():
        if no_answer_probs[qid] > threshold:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = score
    return new_scores


def find_best_thresh(predictions: dict[str, str], scores: dict[str, float],
                     no_answer_probs: dict[str, float],
                     qid_to_has_ans: dict[str, bool]) -> tuple[float, float]:
    """(best score in percent, its threshold) over all no-answer thresholds.

    Starts from "abstain everywhere" and lowers the bar one question at a
    time, in order of increasing no-answer probability.
    """
    cur_score = best_score = sum(1 for has_ans in qid_to_has_ans.values() if not has_ans)
    best_thresh = 0.0
    for qid in sorted(no_answer_probs, key=lambda k: no_answer_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            cur_score += scores[qid]
        elif predictions.get(qid) != "":  # a missing prediction counts as wrong
            cur_score -= 1
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = no_answer_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def _eval_dict(exact: dict[str, float], f1: dict[str, float], qids: list[str]) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


def squad_v2_metrics(predictions: dict[str, str], examples: list[dict],
                     no_answer_probs: dict[str, float] | None = None,
                     threshold: float = 1.0) -> dict[str, float]:
    """Metrics of the official v2.0 script, in percent.

    HasAns_*/NoAns_* appear only when such questions exist; best_* only
    when ``no_answer_probs`` is given.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    qid_to_has_ans = {ex["id"]: _has_answer(ex) for ex in examples}
    exact_raw, f1_raw = _raw_scores(predictions, examples)
    probs = no_answer_probs if no_answer_probs is not None else {}
    probs = {qid: float(probs.get(qid, 0.0)) for qid in qid_to_has_ans}
    exact = apply_no_ans_threshold(exact_raw, probs, qid_to_has_ans, threshold)
    f1 = apply_no_ans_threshold(f1_raw, probs, qid_to_has_ans, threshold)

    result = _eval_dict(exact, f1, list(qid_to_has_ans))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in qid_to_has_ans.items() if has == wanted]
        if qids:
            result.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if no_answer_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = find_best_thresh(
            predictions, exact_raw, probs, qid_to_has_ans)
        result["best_f1"], result["best_f1_thresh"] = find_best_thresh(
            predictions, f1_raw, probs, qid_to_has_ans)
    return result


def _valid_token_mask(offset_mapping, length: int) -> np.ndarray:
    """True where a token has a (start, end) context offset; logits past the offsets are padding."""
    mask = np.zeros(length, dtype=bool)
    for i, offset in enumerate(offset_mapping[:length]):
        mask[i] = offset is not None and len(offset) == 2
    return mask


def _best_span(start: np.ndarray, end: np.ndarray, valid: np.ndarray,
               n_best_size: int, max_answer_length: int) -> tuple[float, int, int] | None:
    """(score, start, end) of the best valid span among the top-n start and end tokens."""
    starts = np.argsort(start, kind="stable")[::-1][:n_best_size]
    ends = np.argsort(end, kind="stable")[::-1][:n_best_size]
    s, e = starts[:, None], ends[None, :]
    ok = valid[s] & valid[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    if not ok.any():
        return None
    scores = np.where(ok, start[s] + end[e], -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[i, j]), int(starts[i]), int(ends[j])


def postprocess_qa_predictions(examples: list[dict], features: list[dict], start_logits, end_logits,
                               n_best_size: int = 20, max_answer_length: int = 30,
                               version_2_with_negative: bool = False,
                               null_score_diff_threshold: float = 0.0
                               ) -> tuple[dict[str, str], dict[str, float]]:
    """Turn per-feature start/end logits into answer texts.

    Each feature has "example_id" and "offset_mapping" (per token a
    (start, end) character span of the example's "context", or None
    outside the context). Returns (predictions, null_score_diffs), where
    a diff is (min null score over the example's features) minus the best
    span score; with ``version_2_with_negative`` the answer is "" when the
    diff exceeds ``null_score_diff_threshold``. An example without any
    valid span gets "" and a diff of +inf.
    """
    if len(features) != len(start_logits) or len(features) != len(end_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} start and "
                         f"{len(end_logits)} end logit rows")
    features_by_example = collections.defaultdict(list)
    for index, feature in enumerate(features):
        features_by_example[feature["example_id"]].append(index)

    predictions, null_score_diffs = {}, {}
    for example in examples:
        qid = example["id"]
        best = None  # (score, feature index, start token, end token)
        null_score = None
        for index in features_by_example.get(qid, []):
            start = np.asarray(start_logits[index], dtype=np.float64)
            end = np.asarray(end_logits[index], dtype=np.float64)
            feature_null = float(start[0] + end[0])
            null_score = feature_null if null_score is None else min(null_score, feature_null)
            valid = _valid_token_mask(features[index]["offset_mapping"], min(len(start), len(end)))
            span = _best_span(start, end, valid, n_best_size, max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = (span[0], index, span[1], span[2])

        if best is None:
            predictions[qid], null_score_diffs[qid] = "", float("inf")
            continue
        score, index, start_token, end_token = best
        offsets = features[index]["offset_mapping"]
        text = example["context"][offsets[start_token][0]:offsets[end_token][1]]
        diff = null_score - score
        null_score_diffs[qid] = diff
        if version_2_with_negative and diff > null_score_diff_threshold:
            text = ""
        predictions[qid] = text
    return predictions, null_score_diffs

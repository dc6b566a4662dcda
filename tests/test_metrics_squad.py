import math
from pathlib import Path

import numpy as np
import pytest

import evaluate
from evaluate.squad import (exact_match_score, f1_score, find_best_thresh, gold_answers, normalize_answer,
                            postprocess_qa_predictions, squad_v1_metrics, squad_v2_metrics)

REPO_ROOT = Path(__file__).resolve().parents[1]


def example(qid, *answers, context=""):
    return {"id": qid, "context": context,
            "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}


def test_local_package_shadows_pypi_evaluate():
    assert Path(evaluate.__file__).resolve().is_relative_to(REPO_ROOT)
    assert evaluate.squad_v2_metrics is squad_v2_metrics


@pytest.mark.parametrize("text, expected", [
    ("The  Cat, sat!", "cat sat"),
    ("An apple a day", "apple day"),
    ("theatre another", "theatre another"),  # articles only as whole words
    ("  Hello\tWorld\n ", "hello world"),
    ("U.S.-based", "usbased"),
    ("the", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1():
    assert exact_match_score("The Broncos!", "broncos") == 1.0
    assert exact_match_score("Broncos team", "broncos") == 0.0
    # pred tokens: cat sat on mat (4); gold: cat on mat (3); P=3/4, R=1
    assert f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7, abs=1e-12)
    assert f1_score("dog", "cat") == 0.0
    # repeated tokens only count as often as they occur in both
    assert f1_score("a a b", "a b b") == pytest.approx(2 / 3, abs=1e-12)


def test_f1_empty_answers():
    assert f1_score("", "") == 1.0
    assert f1_score("the", "") == 1.0  # both empty after normalization
    assert f1_score("", "cat") == 0.0
    assert f1_score("cat", "") == 0.0
    assert f1_score("", "", empty_matches_empty=False) == 0.0


def test_gold_answers():
    assert gold_answers(example("q", "Paris", "the")) == ["Paris"]
    assert gold_answers(example("q")) == [""]


def test_squad_v1_metrics():
    examples = [
        example("q1", "Denver Broncos", "the Broncos"),
        example("q2", "1990"),
        example("q3", "blue"),
    ]
    preds = {"q1": "broncos", "q2": "in 1990"}  # q3 missing: scores 0
    result = squad_v1_metrics(preds, examples)
    assert result["exact_match"] == pytest.approx(100 / 3, abs=1e-9)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3, abs=1e-9)
    assert set(result) == {"exact_match", "f1"}


def v2_examples():
    return [
        example("a", "Paris"),
        example("b", "blue whale", "the blue whale"),
        example("c"),
        example("d"),
    ]


V2_PREDS = {"a": "Paris", "b": "whale", "c": "", "d": "London"}
V2_PROBS = {"a": 0.1, "b": 0.25, "c": 0.9, "d": 0.3}


def test_squad_v2_without_probs():
    result = squad_v2_metrics(V2_PREDS, v2_examples())
    # raw exact: a=1 b=0 c=1 d=0; raw f1: a=1 b=2/3 c=1 d=0
    assert result == pytest.approx({
        "exact": 50.0, "f1": 100 * (8 / 3) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (5 / 3) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    }, abs=1e-9)


def test_squad_v2_threshold_and_best_thresh():
    result = squad_v2_metrics(V2_PREDS, v2_examples(), V2_PROBS, threshold=0.2)
    # b, c and d abstain: a=1, b=0, c=1, d=1
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(75.0)
    assert result["HasAns_exact"] == pytest.approx(50.0)
    assert result["HasAns_f1"] == pytest.approx(50.0)
    assert result["NoAns_exact"] == pytest.approx(100.0)
    # best search on raw scores, order a(.1) b(.25) d(.3) c(.9), start at 2 no-answers:
    # exact: 2 -> 3 -> 3 -> 2 -> 2, best 3 at 0.1
    # f1:    2 -> 3 -> 3.667 -> 2.667 -> 2.667, best 3.667 at 0.25
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == pytest.approx(0.1)
    assert result["best_f1"] == pytest.approx(100 * (11 / 3) / 4)
    assert result["best_f1_thresh"] == pytest.approx(0.25)


def test_squad_v2_default_threshold_keeps_answers():
    result = squad_v2_metrics(V2_PREDS, v2_examples(), V2_PROBS)
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (8 / 3) / 4)
    assert "best_f1" in result


def test_squad_v2_only_answerable_has_no_noans_keys():
    result = squad_v2_metrics({"a": "paris"}, [example("a", "Paris")])
    assert result == {"exact": 100.0, "f1": 100.0, "total": 1,
                      "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1}


def test_find_best_thresh_abstain_everywhere_wins():
    has_ans = {"x": True, "y": False}
    score, thresh = find_best_thresh({"x": "wrong", "y": "junk"}, {"x": 0.0, "y": 0.0},
                                     {"x": 0.2, "y": 0.4}, has_ans)
    assert (score, thresh) == (50.0, 0.0)


# Context words and their character spans:
# The(0,3) quick(4,9) brown(10,15) fox(16,19) jumps(20,25) over(26,30) the(31,34) lazy(35,39) dog(40,43)
CONTEXT = "The quick brown fox jumps over the lazy dog"
WORD_SPANS = [(0, 3), (4, 9), (10, 15), (16, 19), (20, 25), (26, 30), (31, 34), (35, 39), (40, 43)]


def feature(example_id, words):
    """[CLS] question [SEP] <context words> [SEP]; the context starts at token 3."""
    return {"example_id": example_id,
            "offset_mapping": [None, None, None] + [WORD_SPANS[w] for w in words] + [None]}


def logits(length, **peaks):
    out = np.full(length, -5.0)
    for token, value in peaks.items():
        out[int(token[1:])] = value
    return out


def test_postprocess_simple_span_skips_non_context():
    ex = [example("q", "brown fox", context=CONTEXT)]
    feats = [feature("q", range(9))]
    start = [logits(13, t1=20, t5=5)]  # token 1 is the question: never an answer
    end = [logits(13, t1=20, t6=5, t12=30)]
    preds, diffs = postprocess_qa_predictions(ex, feats, start, end)
    assert preds == {"q": "brown fox"}
    assert diffs["q"] == pytest.approx(-5 - 5 - 10)


def test_postprocess_end_before_start_is_skipped():
    ex = [example("q", context=CONTEXT)]
    feats = [feature("q", range(9))]
    start = [logits(13, t6=9, t5=7)]
    end = [logits(13, t5=9, t6=8)]
    preds, _ = postprocess_qa_predictions(ex, feats, start, end)
    assert preds["q"] == "fox"  # (6,6)=17 beats (5,5)=16; (6,5) is invalid
    preds, diffs = postprocess_qa_predictions(ex, feats, start, end, n_best_size=1)
    assert preds["q"] == "" and diffs["q"] == math.inf


def test_postprocess_max_answer_length():
    ex = [example("q", context=CONTEXT)]
    feats = [feature("q", range(9))]
    start = [logits(13, t3=10, t9=4)]
    end = [logits(13, t11=10, t10=4)]
    run = lambda n: postprocess_qa_predictions(ex, feats, start, end, max_answer_length=n)[0]["q"]
    assert run(30) == CONTEXT
    assert run(3) == "the lazy dog"
    assert run(2) == "the lazy"


def test_postprocess_overlapping_features():
    # Feature A covers words 0-5, feature B (doc stride) words 3-8.
    ex = [example("q", "lazy dog", context=CONTEXT)]
    feats = [feature("q", range(0, 6)), feature("q", range(3, 9))]
    start_a = logits(10, t0=1, t4=3)           # "quick ..." weakly
    end_a = logits(10, t0=0, t5=3)
    start_b = logits(10, t0=3, t7=6)           # token 7 = word 7 "lazy"
    end_b = logits(10, t0=0, t8=6)             # token 8 = word 8 "dog"
    preds, diffs = postprocess_qa_predictions(ex, feats, np.stack([start_a, start_b]),
                                              np.stack([end_a, end_b]))
    assert preds == {"q": "lazy dog"}
    assert diffs["q"] == pytest.approx(1 - 12)  # min null over features (1) minus best span (12)


def test_postprocess_ignores_padded_logits():
    ex = [example("q", context=CONTEXT)]
    feats = [feature("q", [0, 1])]  # 6 offsets; logits padded to 8
    start = [logits(8, t4=2, t7=50)]
    end = [logits(8, t4=2, t7=50)]
    assert postprocess_qa_predictions(ex, feats, start, end)[0]["q"] == "quick"


def test_postprocess_v2_null_wins():
    ex = [example("q", context=CONTEXT), example("r", context=CONTEXT)]
    feats = [feature("q", range(9)), feature("r", range(9))]
    start = np.stack([logits(13, t0=6, t5=5), logits(13, t0=-4, t5=5)])
    end = np.stack([logits(13, t0=6, t6=5), logits(13, t0=-4, t6=5)])
    preds, diffs = postprocess_qa_predictions(ex, feats, start, end, version_2_with_negative=True)
    assert preds == {"q": "", "r": "brown fox"}
    assert diffs == pytest.approx({"q": 2.0, "r": -18.0})
    preds, _ = postprocess_qa_predictions(ex, feats, start, end, version_2_with_negative=True,
                                          null_score_diff_threshold=3.0)
    assert preds["q"] == "brown fox"
    preds, _ = postprocess_qa_predictions(ex, feats, start, end)  # v1: never empty
    assert preds["q"] == "brown fox"


def test_postprocess_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        postprocess_qa_predictions([example("q", context=CONTEXT)], [feature("q", [0])],
                                   np.zeros((2, 5)), np.zeros((2, 5)))


def test_postprocess_feeds_v2_metrics():
    ex = [example("q", context=CONTEXT), example("r", "brown fox", context=CONTEXT)]
    feats = [feature("q", range(9)), feature("r", range(9))]
    start = np.stack([logits(13, t0=6, t5=5), logits(13, t0=-4, t5=5)])
    end = np.stack([logits(13, t0=6, t6=5), logits(13, t0=-4, t6=5)])
    preds, diffs = postprocess_qa_predictions(ex, feats, start, end, version_2_with_negative=True)
    result = squad_v2_metrics(preds, ex, diffs, threshold=0.0)
    assert result["exact"] == 100.0 and result["f1"] == 100.0
    assert result["best_exact"] == 100.0

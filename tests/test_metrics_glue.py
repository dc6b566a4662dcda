import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import evaluate
from evaluate.glue import (GLUE_METRICS, PRIMARY_METRIC, accuracy, compute_glue_metrics, f1_binary,
                           matthews_corrcoef, pearson, primary_metric, spearman)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_local_package_shadows_pypi_evaluate():
    assert Path(evaluate.__file__).resolve().is_relative_to(REPO_ROOT)
    assert evaluate.compute_glue_metrics is compute_glue_metrics


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    assert isinstance(accuracy(np.array([1]), np.array([1])), float)


def test_f1_binary():
    # tp=2, fp=1, fn=2 -> 2*2 / (2*2 + 1 + 2)
    assert f1_binary([1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0, 1]) == pytest.approx(4 / 7, abs=1e-12)
    assert f1_binary([0, 0], [1, 0]) == 0.0


def test_matthews_binary_by_hand():
    # tp=3, tn=3, fp=1, fn=1 -> (9 - 1) / sqrt(4 * 4 * 4 * 4) = 0.5
    preds = [1, 1, 1, 0, 0, 0, 1, 0]
    labels = [1, 1, 0, 0, 0, 1, 1, 0]
    assert matthews_corrcoef(preds, labels) == pytest.approx(0.5, abs=1e-12)
    assert matthews_corrcoef([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0, abs=1e-12)


def test_matthews_multiclass_by_hand():
    # confusion: t0->p0 x2, t1->p2, t2->p2; t=[2,1,1], p=[2,0,2], c=3, s=4
    # (3*4 - 6) / sqrt((16 - 8) * (16 - 6)) = 6 / sqrt(80)
    assert matthews_corrcoef([0, 2, 2, 0], [0, 1, 2, 0]) == pytest.approx(6 / math.sqrt(80), abs=1e-12)


def test_matthews_undefined_is_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
    assert matthews_corrcoef([0, 0], [0, 0]) == 0.0


def test_pearson_by_hand_and_scipy():
    x, y = [1, 2, 3, 4], [2, 4, 5, 9]
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(130), abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_spearman_with_ties():
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_tables_cover_the_same_tasks():
    assert set(GLUE_METRICS) == set(PRIMARY_METRIC)
    for task, metric in PRIMARY_METRIC.items():
        assert metric in GLUE_METRICS[task]
    assert primary_metric("STS-B") == "spearmanr"
    assert primary_metric("cola") == "matthews_correlation"


def test_compute_glue_metrics_classification_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 1.0], [2.0, 1.0]])
    labels = [1, 0, 0, 0]
    result = compute_glue_metrics("mrpc", logits, labels)
    # preds [1, 0, 1, 0]: tp=1, fp=1, fn=0
    assert result == {"accuracy": 0.75, "f1": pytest.approx(2 / 3, abs=1e-12)}
    assert compute_glue_metrics("SST-2", logits, labels) == {"accuracy": 0.75}


def test_compute_glue_metrics_mnli_three_classes():
    logits = np.array([[1, 0, 0], [0, 0, 5], [0, 4, 1]], dtype=np.float32)
    assert compute_glue_metrics("mnli", logits, [0, 1, 1]) == {"accuracy": pytest.approx(2 / 3)}


def test_compute_glue_metrics_cola():
    logits = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0], [0, 1], [1, 0]])
    labels = [1, 1, 0, 0, 0, 1, 1, 0]
    result = compute_glue_metrics("cola", logits, labels)
    assert result == {"matthews_correlation": pytest.approx(0.5, abs=1e-12)}


def test_compute_glue_metrics_stsb_squeezes():
    preds = np.array([[1.0], [2.0], [3.0], [4.0]])
    result = compute_glue_metrics("stsb", preds, [2, 4, 5, 9])
    assert set(result) == {"pearson", "spearmanr"}
    assert result["pearson"] == pytest.approx(11 / math.sqrt(130), abs=1e-12)
    assert result["spearmanr"] == pytest.approx(1.0, abs=1e-12)
    assert all(type(v) is float for v in result.values())


def test_compute_glue_metrics_errors():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        compute_glue_metrics("wnli2", np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        compute_glue_metrics("rte", np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        compute_glue_metrics("stsb", np.zeros(3), [0.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        compute_glue_metrics("stsb", np.zeros((3, 2)), [0.0, 1.0, 2.0])

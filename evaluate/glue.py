"""GLUE metrics in plain numpy/scipy.

Primary metric per task (the single number used to compare models):
matthews_correlation for CoLA, spearmanr for STS-B, accuracy for every
other task (including MRPC and QQP, whose F1 is reported alongside).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

GLUE_METRICS: dict[str, list[str]] = {
    "cola": ["matthews_correlation"],
    "sst2": ["accuracy"],
    "mrpc": ["accuracy", "f1"],
    "qqp": ["accuracy", "f1"],
    "stsb": ["pearson", "spearmanr"],
    "mnli": ["accuracy"],
    "qnli": ["accuracy"],
    "rte": ["accuracy"],
}

PRIMARY_METRIC: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "accuracy",
    "qqp": "accuracy",
    "stsb": "spearmanr",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
}


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.size} predictions vs {b.size} labels")
    if a.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return a, b


def accuracy(preds, labels) -> float:
    preds, labels = _pair(preds, labels)
    return float(np.mean(preds == labels))


def f1_binary(preds, labels) -> float:
    """F1 of the positive class 1; 0.0 when there is no true positive."""
    preds, labels = _pair(preds, labels)
    tp = np.sum((preds == 1) & (labels == 1))
    fp = np.sum((preds == 1) & (labels != 1))
    fn = np.sum((preds != 1) & (labels == 1))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + fp + fn))


def matthews_corrcoef(preds, labels) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0.0 when undefined."""
    preds, labels = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    n = labels.size
    true_idx, pred_idx = inverse[:n], inverse[n:]
    conf = np.zeros((classes.size, classes.size), dtype=np.float64)
    np.add.at(conf, (true_idx, pred_idx), 1)
    t_k, p_k = conf.sum(axis=1), conf.sum(axis=0)
    correct, total = np.trace(conf), conf.sum()
    cov_tp = correct * total - t_k @ p_k
    cov_pp = total ** 2 - p_k @ p_k
    cov_tt = total ** 2 - t_k @ t_k
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def pearson(x, y) -> float:
    """Pearson correlation; 0.0 when either input is constant."""
    x, y = _pair(x, y)
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    if denom == 0:
        return 0.0
    # Clip guards against values like 1.0000000000000002 from rounding.
    return float(np.clip((x @ y) / denom, -1.0, 1.0))


def spearman(x, y) -> float:
    """Spearman rank correlation, tied values get their average rank."""
    x, y = _pair(x, y)
    return pearson(rankdata(x, method="average"), rankdata(y, method="average"))


def _task_key(task_name: str) -> str:
    key = task_name.lower().replace("-", "")
    if key not in GLUE_METRICS:
        raise ValueError(f"unknown GLUE task '{task_name}'; known tasks: {', '.join(GLUE_METRICS)}")
    return key


def primary_metric(task_name: str) -> str:
    return PRIMARY_METRIC[_task_key(task_name)]


def compute_glue_metrics(task_name: str, predictions, labels) -> dict[str, float]:
    """Metrics of one GLUE task.

    predictions: logits [N, C] (argmax is taken) or class ids [N]; for stsb,
    scores [N] or [N, 1].
    """
    key = _task_key(task_name)
    preds = np.asarray(predictions)
    labels = np.asarray(labels).ravel()
    if key == "stsb":
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim != 1:
            raise ValueError(f"stsb predictions must have shape [N] or [N, 1], got {preds.shape}")
    elif preds.ndim == 2:
        preds = preds.argmax(axis=-1)
    elif preds.ndim != 1:
        raise ValueError(f"{key} predictions must be logits [N, C] or class ids [N], got {preds.shape}")
    if preds.shape[0] != labels.shape[0]:
        raise ValueError(f"length mismatch: {preds.shape[0]} predictions vs {labels.shape[0]} labels")

    metric_fns = {
        "accuracy": accuracy,
        "f1": f1_binary,
        "matthews_correlation": matthews_corrcoef,
        "pearson": pearson,
        "spearmanr": spearman,
    }
    return {name: metric_fns[name](preds, labels) for name in GLUE_METRICS[key]}

"""Local metrics package (GLUE and SQuAD); shadows the PyPI ``evaluate`` package on purpose."""
from .glue import (GLUE_METRICS, PRIMARY_METRIC, accuracy, compute_glue_metrics, f1_binary, matthews_corrcoef, pearson,
                   primary_metric, spearman)
from .squad import (exact_match_score, f1_score, normalize_answer, postprocess_qa_predictions, squad_v1_metrics,
                    squad_v2_metrics)

__all__ = [
    "GLUE_METRICS", "PRIMARY_METRIC", "accuracy", "compute_glue_metrics", "f1_binary",
    "matthews_corrcoef", "pearson", "primary_metric", "spearman",
    "exact_match_score", "f1_score", "normalize_answer", "postprocess_qa_predictions",
    "squad_v1_metrics", "squad_v2_metrics",
]

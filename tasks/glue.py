"""GLUE classification and regression (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte): the sample, the dev
evaluation with the official metrics, the task's defaults."""
from __future__ import annotations

import logging

from transformers import AutoModelForSequenceClassification

from dataset.errors import DataError
from dataset.features import average_length, check_max_length, make_batches, sample_indices, tokenize_rows
from dataset.glue import GLUE_TASKS, get_task, load_glue_split
from evaluate.glue import PRIMARY_METRIC, compute_glue_metrics
from evaluate.predict import predict_logits
from tasks.base import DataRequest, Task, TaskData
from tasks.registry import register

log = logging.getLogger(__name__)


def check_label_count(task_name: str, num_labels: int, model_num_labels: int) -> None:
    if num_labels != model_num_labels:
        raise DataError(
            f"the checkpoint has {model_num_labels} output label(s) but task {task_name} needs "
            f"{num_labels}. Pick the --task_name the checkpoint was fine-tuned on, or fine-tune it "
            f"for {task_name} first (python -m scripts.finetune).")


def prepare_glue(task_name: str, data_dir: str | None, tokenizer, config, num_samples: int, seed: int,
                 max_length: int, batch_size: int, dist=None) -> TaskData:
    task = get_task(task_name)
    check_label_count(task.name, task.num_labels, config.num_labels)
    train_rows, train_info = load_glue_split(task.name, "train", data_dir, config.label2id)
    dev_rows, dev_info = load_glue_split(task.name, "dev", data_dir, config.label2id)
    for split, info in (("train", train_info), ("dev", dev_info)):
        if info["skipped_rows"]:
            log.warning("%s: skipped %d rows with missing fields in %s", task.name, info["skipped_rows"], info["source"])
    if num_samples > len(train_rows):
        log.warning("--num_samples %d is larger than the training set (%d rows): using all of it",
                    num_samples, len(train_rows))
    picked = sample_indices(len(train_rows), num_samples, seed)
    pad_id = tokenizer.pad_token_id or 0
    sample = tokenize_rows([train_rows[i] for i in picked], tokenizer, max_length)
    # length-sorted batches carry little padding: about half the work of random ones
    sample_batches, _ = make_batches(sample, batch_size, pad_id, sort_by_length=True)
    gradient_batches, _ = make_batches(sample, batch_size, pad_id, sort_by_length=False)
    dev = tokenize_rows(dev_rows, tokenizer, max_length)
    check_max_length(max_length, tokenizer, config, max(len(f["input_ids"]) for f in sample + dev))
    dev_batches, dev_order = make_batches(dev, 128, pad_id, sort_by_length=True)
    labels = [r["label"] for r in dev_rows]
    seq_len = average_length(dev)
    log.info("%s: %d training rows, %d sampled; %d dev rows; average dev length %.3f tokens",
             task.name, len(train_rows), len(sample), len(dev_rows), seq_len)

    info = {"train": train_info, "dev": dev_info, "num_samples_used": len(sample), "warnings": []}
    if task.name == "stsb":
        _check_stsb_labels(train_rows, dev_rows, info)

    def predict(model, arch, head_mask=None, neuron_mask=None):
        logits = predict_logits(model, arch, dev_batches, dev_order, head_mask, neuron_mask, dist)
        return (logits.squeeze(-1) if task.is_regression else logits.argmax(-1)).numpy()

    def evaluate(model, arch, head_mask=None, neuron_mask=None) -> dict:
        preds = predict(model, arch, head_mask, neuron_mask)
        if task.is_regression and float(preds.max() - preds.min()) == 0:
            _warn(info, f"{task.name}: the model predicts the same score ({float(preds[0]):.4g}) for every dev "
                        f"row, so Pearson and Spearman are undefined; they are reported as 0.0")
        return compute_glue_metrics(task.name, preds, labels)

    return TaskData(task.name, "classification", sample_batches, evaluate, PRIMARY_METRIC[task.name],
                    seq_len, "classifier", info, gradient_batches, dev_batches, predict, labels,
                    eval_batch_count=len(dev_batches))


def _warn(info: dict, message: str) -> None:
    """A warning in the log and, once, in results.json (data.warnings)."""
    if message not in info["warnings"]:
        log.warning(message)
        info["warnings"].append(message)


def _check_stsb_labels(train_rows: list[dict], dev_rows: list[dict], info: dict) -> None:
    for split, rows in (("train", train_rows), ("dev", dev_rows)):
        outside = [r["label"] for r in rows if not 0 <= r["label"] <= 5]
        if outside:
            info[split]["labels_outside_0_5"] = len(outside)
            _warn(info, f"stsb: {len(outside)} {split} label(s) outside the STS-B range [0, 5] (e.g. {outside[0]:g});"
                        f" the scores are computed as given, but check that this is STS-B data")


class Glue(Task):
    names = tuple(GLUE_TASKS)
    head = "classification"
    auto_class = AutoModelForSequenceClassification
    max_seq_length = 128
    num_samples = 2048

    def problem_type(self, task_name: str) -> str | None:
        return "regression" if get_task(task_name).is_regression else "single_label_classification"

    def prepare(self, request: DataRequest, tokenizer, config, dist=None) -> TaskData:
        return prepare_glue(request.task_name, request.data_dir, tokenizer, config, request.num_samples,
                            request.seed, request.max_seq_length, request.batch_size, dist)


GLUE = register(Glue())

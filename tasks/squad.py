"""SQuAD v1.1 / v2.0 as the pruning pipeline sees a task (a `TaskData`)."""
from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForQuestionAnswering

from arch.hooks import apply_masks
from dataset.errors import DataError
from dataset.features import check_max_length, check_min_length
from dataset.squad import (MODEL_KEYS, check_task, load_squad_split, make_qa_batches, prepare_eval_features,
                           sample_train_features)
from evaluate.squad import postprocess_qa_predictions, squad_v1_metrics, squad_v2_metrics
from tasks.base import DataRequest, Task, TaskData
from tasks.registry import register
from utils.device import to_device
from utils.offload import input_device

log = logging.getLogger(__name__)

N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
NULL_SCORE_DIFF_THRESHOLD = 0.0
EVAL_BATCH_SIZE = 64
# The reference implementation (WoosukKwon/retraining-free-pruning, main.py) hard-codes 170 tokens
# for the MACs of both SQuAD versions; here the length is measured on the dev features instead.
REFERENCE_SQUAD_SEQ_LEN = 170
PRIMARY_METRIC = "f1"


def average_feature_length(features: list[dict]) -> float:
    """Mean number of non-padding tokens per feature (question + context window + special tokens).

    This is the sequence length of the MAC count for SQuAD: the measured average over the dev
    features, i.e. over the windows of 384 tokens (stride 128) that the model actually runs on,
    a long context counting once per window. It follows the GLUE convention of the paper's code
    (average dev length per task). The reference code instead uses a fixed 170 tokens for both
    SQuAD versions (REFERENCE_SQUAD_SEQ_LEN), which is about this average for BERT's uncased
    WordPiece vocabulary on the SQuAD dev sets. Only MAC *ratios* enter the search, and they
    depend on the length only through the attention-score term (quadratic in it), so the two
    choices give slightly different head/neuron trade-offs, never a different budget rule.
    """
    if not features:
        raise DataError("no SQuAD dev features to measure the sequence length on.")
    return float(np.mean([sum(f["attention_mask"]) if "attention_mask" in f else len(f["input_ids"])
                          for f in features]))


def predict_qa_logits(model, arch, batches: list[dict], order: list[int], lengths: list[int],
                      head_mask=None, neuron_mask=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits per feature, in feature order, trimmed to each feature's own length.
    With arch None (an architecture the pruning table lacks) no masks can be applied."""
    device = input_device(model)
    starts: list = [None] * len(order)
    ends: list = [None] * len(order)
    row = 0
    was_training = model.training
    model.eval()
    try:
        masking = nullcontext() if arch is None else apply_masks(arch, head_mask, neuron_mask)
        with torch.inference_mode(), masking:
            for batch in tqdm(batches, desc="evaluate", leave=False):
                out = model(**to_device({k: batch[k] for k in MODEL_KEYS if k in batch}, device))
                s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
                for r in range(len(s)):
                    i = order[row]
                    starts[i], ends[i] = s[r, :lengths[i]], e[r, :lengths[i]]
                    row += 1
    finally:
        model.train(was_training)
    return starts, ends


def squad_metrics(task_name: str, examples: list[dict], features: list[dict], start_logits, end_logits
                  ) -> dict:
    """Post-process (n-best 20, answers up to 30 tokens) and score with the official algorithms.

    squad: {"exact_match", "f1"}. squad_v2: {"exact", "f1", "total", HasAns_*, NoAns_*, best_*}, where
    an answer is "" when its null score diff (null score minus best span score) exceeds 0, and the
    diffs serve as the no-answer probabilities of the best-threshold search.
    """
    v2 = check_task(task_name) == "squad_v2"
    predictions, null_diffs = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, n_best_size=N_BEST_SIZE,
        max_answer_length=MAX_ANSWER_LENGTH, version_2_with_negative=v2,
        null_score_diff_threshold=NULL_SCORE_DIFF_THRESHOLD)
    if not v2:
        return squad_v1_metrics(predictions, examples)
    # threshold = the post-processing threshold: re-applying it leaves the predictions unchanged
    return squad_v2_metrics(predictions, examples, no_answer_probs=null_diffs,
                            threshold=NULL_SCORE_DIFF_THRESHOLD)


def _check_lengths(max_length: int, doc_stride: int, tokenizer, config) -> None:
    check_min_length(max_length, tokenizer, pair=True)
    if not 0 <= doc_stride < max_length:
        raise DataError(f"--doc_stride {doc_stride} must be at least 0 and below --max_seq_length {max_length}.")
    check_max_length(max_length, tokenizer, config)


def prepare_squad(task_name: str, data_dir: str | None, tokenizer, config, num_samples: int, seed: int,
                  max_length: int = 384, doc_stride: int = 128, batch_size: int = 32, *,
                  train_file: str | None = None, dev_file: str | None = None,
                  eval_batch_size: int = EVAL_BATCH_SIZE) -> TaskData:
    """SQuAD (`squad`, v1.1) or SQuAD 2.0 (`squad_v2`) as a TaskData.

    Data: `train_file`/`dev_file` when given, else the official JSON files in `data_dir`
    (train-v1.1.json/dev-v1.1.json or train-v2.0.json/dev-v2.0.json), else the HuggingFace hub.
    The sample is `num_samples` training features (windows) drawn with `seed` without replacement,
    in dynamically padded batches with start/end positions, so `model(**batch).loss` is the QA loss.
    `evaluate(model, arch, head_mask, neuron_mask)` scores the dev set; the primary metric is "f1".
    seq_len (for MACs) is the measured average dev feature length (see average_feature_length).
    Mask tuning fits all tokens (loss_tokens='all'): the QA head reads every token.
    """
    task = check_task(task_name)
    _check_lengths(max_length, doc_stride, tokenizer, config)
    if getattr(config, "num_labels", 2) != 2:
        raise DataError(f"the checkpoint has {config.num_labels} output labels, but an extractive QA head "
                        f"has 2 (start and end logits); pass a checkpoint fine-tuned for SQuAD "
                        f"(python -m scripts.finetune_qa).")
    train_examples, train_info = load_squad_split(task, "train", data_dir, train_file)
    dev_examples, dev_info = load_squad_split(task, "dev", data_dir, dev_file)

    sample, total_train = sample_train_features(train_examples, tokenizer, num_samples, seed, max_length, doc_stride)
    if num_samples > total_train:
        log.warning("--num_samples %d is larger than the training set (%d features): using all of it",
                    num_samples, total_train)
    pad_id = tokenizer.pad_token_id or 0
    sample_batches, _ = make_qa_batches(sample, batch_size, pad_id)

    dev_features = prepare_eval_features(dev_examples, tokenizer, max_length, doc_stride)
    dev_batches, dev_order = make_qa_batches(dev_features, eval_batch_size, pad_id, sort_by_length=True)
    lengths = [len(f["input_ids"]) for f in dev_features]
    seq_len = average_feature_length(dev_features)
    post_features = [{"example_id": f["example_id"], "offset_mapping": f["offset_mapping"]} for f in dev_features]
    del dev_features
    log.info("%s: %d training questions -> %d features, %d sampled; %d dev questions -> %d features; "
             "MAC sequence length = average dev feature length %.3f tokens (max %d, stride %d; the reference "
             "code uses a fixed %d)", task, len(train_examples), total_train, len(sample), len(dev_examples),
             len(post_features), seq_len, max_length, doc_stride, REFERENCE_SQUAD_SEQ_LEN)

    def evaluate(model, arch, head_mask=None, neuron_mask=None) -> dict:
        starts, ends = predict_qa_logits(model, arch, dev_batches, dev_order, lengths, head_mask, neuron_mask)
        return squad_metrics(task, dev_examples, post_features, starts, ends)

    info = {"train": train_info, "dev": dev_info, "num_samples_used": len(sample),
            "train_features": total_train, "dev_features": len(post_features),
            "max_seq_length": max_length, "doc_stride": doc_stride,
            "seq_len_for_macs": {"value": seq_len, "convention": "average non-padding tokens per dev feature",
                                 "reference_fixed_value": REFERENCE_SQUAD_SEQ_LEN}}
    return TaskData(task, "qa", sample_batches, evaluate, PRIMARY_METRIC, seq_len, "all", info,
                    dev_batches=dev_batches)


class Squad(Task):
    names = ("squad", "squad_v2")
    head = "qa"
    auto_class = AutoModelForQuestionAnswering
    max_seq_length = 384
    num_samples = 2048

    def prepare(self, request: DataRequest, tokenizer, config, dist=None) -> TaskData:
        # the evaluation is not split over processes: every process scores the whole dev set
        return prepare_squad(request.task_name, request.data_dir, tokenizer, config, request.num_samples,
                             request.seed, request.max_seq_length, request.doc_stride, request.batch_size)


SQUAD = register(Squad())

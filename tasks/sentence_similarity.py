"""Sentence-embedding similarity on STS-B (`--task_name stsb_embedding`): a sentence-embedding model (e.g.
all-mpnet-base-v2, all-MiniLM-L6-v2) used as deployed, with no task head. Each sentence of a pair is encoded on its
own, pooled as the model's own sentence-transformers config says (mean over tokens by default), and the pair's
score is the cosine of the two embeddings; the metric is Spearman (and Pearson) against the gold scores on the dev
split, as the sentence-embedding literature reports STS-B.

The importance scores need a loss: `gold` is the model's own STS training loss (cosine regression on the gold
scores, sentence-transformers' CosineSimilarityLoss); `teacher` needs no labels (each pruned embedding must pick
out its own unpruned one among the batch's, evaluate/similarity.py). The layer-wise refit works as for every
encoder; as pooling reads every token, the last layer reconstructs all tokens, not one classifier token. There is
no task head: the model is loaded without its pooler (which the embeddings never read), so `lsq`'s head step has
nothing to refit and does nothing.
"""
from __future__ import annotations

import json
import logging
import os

import torch
from transformers import AutoModel

from dataset.errors import DataError
from dataset.features import average_length, check_max_length, check_min_length, collate, sample_indices
from dataset.glue import load_glue_split
from evaluate.glue import compute_glue_metrics
from evaluate.similarity import LOSSES, POOLINGS, predict_cosines
from tasks.base import DataRequest, Task, TaskData
from tasks.registry import register

log = logging.getLogger(__name__)

POOLING_FILE = os.path.join("1_Pooling", "config.json")   # sentence-transformers' pooling module
EVAL_PAIRS_PER_BATCH = 64


class EncoderWithoutPooler:
    """AutoModel built without the pooler (dense + tanh over the first token) that sentence embeddings never read:
    kept, it would be timed as part of the model and refitted by `lsq`'s head step for nothing."""

    @staticmethod
    def from_pretrained(path, **kwargs):
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError as e:          # a family whose model has no pooler option (DistilBERT)
            if "add_pooling_layer" not in str(e):
                raise
            return AutoModel.from_pretrained(path, **kwargs)


def model_pooling(config) -> tuple[str, str]:
    """(pooling, where it was read): the sentence-transformers pooling config beside the checkpoint, else mean."""
    folder = getattr(config, "_name_or_path", "") or ""
    path = os.path.join(folder, POOLING_FILE)
    if not os.path.isfile(path):
        return "mean", f"no {POOLING_FILE} in the checkpoint folder: mean over tokens"
    with open(path) as f:
        modes = {k for k, v in json.load(f).items() if k.startswith("pooling_mode") and v is True}
    found = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    if len(modes) != 1 or next(iter(modes)) not in found:
        raise DataError(f"{path} asks for pooling {sorted(modes) or 'none'}; stsb_embedding supports one of "
                        f"{', '.join(POOLINGS)} (pooling_mode_mean_tokens or pooling_mode_cls_token): use a model "
                        f"with one of those")
    return found[next(iter(modes))], path


def pair_batches(rows: list[dict], tokenizer, max_length: int, pairs_per_batch: int, sort_by_length: bool
                 ) -> tuple[list[dict], list[int], list[dict]]:
    """Batches whose rows are the pairs' sentences in turn (a0, b0, a1, b1, ...), each tokenized alone, with the
    pairs' gold scores as labels. Returns (batches, order: the pair index of each batch pair, the features)."""
    texts = [t for r in rows for t in r["texts"][:2]]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} | {"labels": 0} for i in range(len(texts))]
    order = list(range(len(rows)))
    if sort_by_length:
        order.sort(key=lambda p: -max(len(features[2 * p]["input_ids"]), len(features[2 * p + 1]["input_ids"])))
    batches = []
    for s in range(0, len(order), pairs_per_batch):
        pairs = order[s:s + pairs_per_batch]
        batch = collate([features[2 * p + j] for p in pairs for j in (0, 1)], tokenizer.pad_token_id or 0)
        batch["labels"] = torch.tensor([float(rows[p]["label"]) for p in pairs])
        batches.append(batch)
    return batches, order, features


class SentenceSimilarity(Task):
    names = ("stsb_embedding",)
    head = "embedding"
    auto_class = EncoderWithoutPooler
    max_seq_length = 128
    num_samples = 2048              # pairs
    similarity_loss = "gold"        # default --similarity_loss
    reads = ("similarity_loss",)

    def prepare(self, request: DataRequest, tokenizer, config, dist=None) -> TaskData:
        loss_name = request.similarity_loss or self.similarity_loss
        pooling, pooling_source = model_pooling(config)
        check_min_length(request.max_seq_length, tokenizer, pair=False)
        train_rows, train_info = load_glue_split("stsb", "train", request.data_dir)
        dev_rows, dev_info = load_glue_split("stsb", "dev", request.data_dir)
        if request.num_samples > len(train_rows):
            log.warning("--num_samples %d is larger than the training set (%d pairs): using all of it",
                        request.num_samples, len(train_rows))
        sample = [train_rows[i] for i in sample_indices(len(train_rows), request.num_samples, request.seed)]
        sample_batches, _, sample_features = pair_batches(sample, tokenizer, request.max_seq_length,
                                                          request.batch_size, sort_by_length=True)
        gradient_batches, _, _ = pair_batches(sample, tokenizer, request.max_seq_length, request.batch_size,
                                              sort_by_length=False)
        dev_batches, dev_order, dev_features = pair_batches(dev_rows, tokenizer, request.max_seq_length,
                                                            EVAL_PAIRS_PER_BATCH, sort_by_length=True)
        check_max_length(request.max_seq_length, tokenizer, config,
                         max(len(f["input_ids"]) for f in sample_features + dev_features))
        labels = [r["label"] for r in dev_rows]
        seq_len = average_length(dev_features)      # tokens per sentence: one forward pass each
        log.info("stsb_embedding: %d training pairs, %d sampled; %d dev pairs; %s pooling (%s); loss %s; average "
                 "dev sentence %.3f tokens", len(train_rows), len(sample), len(dev_rows), pooling, pooling_source,
                 loss_name, seq_len)
        loss = LOSSES[loss_name]

        def predict(model, arch, head_mask=None, neuron_mask=None):
            return predict_cosines(model, arch, dev_batches, dev_order, pooling, head_mask, neuron_mask,
                                   dist).numpy()

        def evaluate(model, arch, head_mask=None, neuron_mask=None) -> dict:
            return compute_glue_metrics("stsb", predict(model, arch, head_mask, neuron_mask), labels)

        info = {"train": train_info, "dev": dev_info, "num_samples_used": len(sample), "pooling": pooling,
                "pooling_source": pooling_source, "similarity_loss": loss_name,
                "score": "cosine of the two sentences' pooled embeddings", "warnings": []}
        return TaskData("stsb_embedding", self.head, sample_batches, evaluate, "spearmanr", seq_len,
                        "all" if pooling == "mean" else "first", info, gradient_batches, dev_batches, predict,
                        labels, loss_fn=lambda model, batch: loss(model, batch, pooling),
                        eval_batch_count=len(dev_batches))


SENTENCE_SIMILARITY = register(SentenceSimilarity())

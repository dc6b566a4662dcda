"""Sentence embeddings and their cosine similarity, for sentence-embedding models (tasks/sentence_similarity.py).

A batch holds the two sentences of each pair as consecutive rows (a0, b0, a1, b1, ...), each encoded on its own
as the model was trained to be used; the pair's score is the cosine of the two pooled embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from arch.hooks import apply_masks
from utils.device import to_device
from utils.offload import input_device

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[rows, tokens, hidden] -> [rows, hidden]: the mean over real tokens, or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise ValueError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def embed(model, batch: dict, pooling: str) -> torch.Tensor:
    """Pooled embeddings of a batch's rows (labels, if any, are not model inputs)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model(**inputs).last_hidden_state
    return pool(hidden, inputs["attention_mask"], pooling)


def pair_cosines(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of rows 2i and 2i+1."""
    return F.cosine_similarity(embeddings[0::2].float(), embeddings[1::2].float(), dim=-1)


def cosine_regression_loss(model, batch: dict, pooling: str) -> torch.Tensor:
    """The model's own STS training loss (sentence-transformers' CosineSimilarityLoss): squared error between the
    pair's cosine and its gold score scaled to [0, 1] (batch['labels'], 0-5)."""
    cos = pair_cosines(embed(model, batch, pooling))
    return F.mse_loss(cos, batch["labels"].to(cos) / 5.0)


TEACHER_SCALE = 20.0   # sentence-transformers' MultipleNegativesRankingLoss scale (1 / temperature)


def teacher_agreement_loss(model, batch: dict, pooling: str) -> torch.Tensor:
    """No labels: each sentence's embedding must pick its own unpruned embedding out of the batch's (cross-entropy
    over scaled cosines). The gradients are taken at the unpruned model, whose embeddings are the detached ones, so
    no second forward pass is needed; a loss minimised exactly at the teacher (a squared distance) would have zero
    gradient there and no importance to give."""
    student = F.normalize(embed(model, batch, pooling).float(), dim=-1)
    logits = TEACHER_SCALE * student @ student.detach().t()
    return F.cross_entropy(logits, torch.arange(len(student), device=logits.device))


LOSSES = {"gold": cosine_regression_loss, "teacher": teacher_agreement_loss}


def predict_cosines(model, arch, batches: list[dict], order: list[int], pooling: str, head_mask=None,
                    neuron_mask=None, dist=None) -> torch.Tensor:
    """Per pair, the cosine of its sentences' embeddings, in the original pair order; masks applied when given.
    order[i] is the pair index of the i-th pair across the batches."""
    device = input_device(model)
    out = []
    with torch.inference_mode(), apply_masks(arch, head_mask, neuron_mask):
        for batch in tqdm(dist.shard(batches) if dist else batches, desc="evaluate", leave=False):
            out.append(pair_cosines(embed(model, to_device(batch, device), pooling)).cpu())
    cosines = torch.cat(dist.gather_in_order(out) if dist else out)
    restored = torch.empty_like(cosines)
    restored[torch.tensor(order)] = cosines
    return restored

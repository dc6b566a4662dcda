"""Causal-LM metrics: token-weighted perplexity and greedy generations (speed: evaluate/speed.py).

``perplexity`` computes ``exp(sum of next-token NLL / number of predicted tokens)`` over all batches (token-
weighted, not a mean of per-batch means), the standard WikiText-2 protocol when the batches are consecutive
non-overlapping windows (``dataset.lm_text.evaluation_sequences``). The NLL is computed here from the logits in
float32 (the model's own ``loss`` is a per-batch mean, so it is not used), one sequence at a time so that only one
``[seq_len, vocab]`` log-softmax is alive at once.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint


def model_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go (the CPU for a model whose first weights accelerate offloaded: its hooks move them on)."""
    for p in model.parameters():
        return torch.device("cpu") if p.device.type == "meta" else p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _context(context: Callable[[], contextlib.AbstractContextManager] | None):
    return context() if context is not None else contextlib.nullcontext()


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """(sum of next-token NLL, predicted-token count) for logits [B, T, V] and labels [B, T] (HF shift: t predicts t+1).

    Positions whose label is -100 or whose attention mask is 0 are excluded.
    """
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        target = labels[b, 1:]
        keep = target != -100
        if attention_mask is not None:
            keep = keep & attention_mask[b, 1:].bool()
        if not bool(keep.any()):
            continue
        logp = F.log_softmax(logits[b, :-1][keep].float(), dim=-1)
        total += float(-logp.gather(1, target[keep].unsqueeze(1)).sum())
        count += int(keep.sum())
    return total, count


def lm_loss(model: torch.nn.Module, batch: dict, chunk_tokens: int = 1024) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch (the model's own loss, HF shift, labels -100 ignored) without
    holding the [tokens, vocab] logits: the output layer and the loss run on chunks of tokens whose logits are
    recomputed in the backward pass. At SmolLM2's 49k vocabulary a batch of 8 x 256 tokens would otherwise keep
    three 400 MB tensors (logits, log-probabilities, their gradient) alive."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                              use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    labels = batch["labels"][:, 1:].reshape(-1)
    count = (labels != -100).sum()

    def chunk_loss(h, y):
        return F.cross_entropy(head(h).float(), y, ignore_index=-100, reduction="sum")

    total = sum(torch.utils.checkpoint.checkpoint(chunk_loss, hidden[i:i + chunk_tokens],
                                                  labels[i:i + chunk_tokens], use_reentrant=False)
                for i in range(0, labels.numel(), chunk_tokens))
    return total / count.clamp(min=1)


def perplexity(model: torch.nn.Module, batches: Iterable[dict], context: Callable | None = None, dist=None) -> dict:
    """Token-weighted perplexity of ``model`` over ``batches`` of {input_ids, attention_mask?, labels?}.

    context: optional zero-argument factory of a context manager entered once around the whole evaluation, e.g.
    ``lambda: apply_masks(model, head_mask, ffn_mask)``. Runs under ``torch.inference_mode`` in eval mode (the
    previous train/eval mode is restored), on the model's device.
    dist (utils/distributed.Dist): each process runs its share of the batches; the per-batch sums are gathered
    and added in batch order, so the result is the same as one process's.
    Returns {"perplexity", "nll" (mean per predicted token), "tokens", "sequences", "seconds"}.
    """
    device = model_device(model)
    per_batch = []
    t0 = time.perf_counter()
    with eval_mode(model), torch.inference_mode(), _context(context):
        for batch in dist.shard(list(batches)) if dist else batches:
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = mask.to(device) if mask is not None else None
            labels = batch.get("labels")
            labels = labels.to(device) if labels is not None else ids
            out = model(input_ids=ids, attention_mask=mask, use_cache=False)
            per_batch.append((*sequence_nll(out.logits, labels, mask), ids.shape[0]))
    total, count, seqs = 0.0, 0, 0
    for s, c, n in dist.gather_in_order(per_batch) if dist else per_batch:
        total += s
        count += c
        seqs += n
    if count == 0:
        raise ValueError("no predicted tokens in the batches (each window needs at least 2 tokens)")
    nll = total / count
    return {"perplexity": math.exp(nll) if nll < 700 else float("inf"), "nll": nll, "tokens": count,
            "sequences": seqs, "seconds": time.perf_counter() - t0}


def _prompt_ids(tokenizer, prompt: str, chat: bool) -> torch.Tensor:
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    return ids


def greedy_generations(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32,
                       context: Callable | None = None, chat: bool = False) -> list[str]:
    """Greedy continuations (do_sample=False, use_cache=True), one prompt at a time (no padding); new text only.

    chat=True wraps each prompt in the tokenizer's chat template (useful for an instruct model).
    """
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outs = []
    with eval_mode(model), torch.inference_mode(), _context(context):
        for prompt in prompts:
            ids = _prompt_ids(tokenizer, prompt, chat).to(device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, use_cache=True, pad_token_id=pad, temperature=None, top_p=None,
                                 top_k=None)
            outs.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return outs

"""Speed of a model: end-to-end speedup of a pruned model over its original, a decoder's prefill latency
and greedy decode throughput."""
from __future__ import annotations

import statistics
import time

import torch

from evaluate.perplexity import eval_mode, model_device
from utils.timing import random_inputs, time_models


def measure_speedup(original, pruned, batch_size: int, seq_len: int, device="cpu", warmup: int = 2,
                    repeats: int = 10) -> dict:
    """End-to-end speedup of `pruned` over `original` (median of alternating calls)."""
    inputs = random_inputs(original.config, batch_size, seq_len, device)
    t = time_models({"original": original, "pruned": pruned}, inputs, device, warmup, repeats)
    return {"batch_size": batch_size, "seq_len": seq_len, "device": str(device),
            "threads": torch.get_num_threads(), "repeats": repeats,
            "original_s": t["original"]["median_s"], "pruned_s": t["pruned"]["median_s"],
            "speedup": t["original"]["median_s"] / t["pruned"]["median_s"], "timings": t}


def decode_speed(model, tokenizer=None, prompt_len: int = 64, new_tokens: int = 32, device=None,
                 warmup: int = 1, batch: int = 1) -> float:
    """Decode throughput in new tokens/s (batch x steps / seconds), greedy with the KV cache, prefill excluded.

    The prompt is ``prompt_len`` synthetic token ids (deterministic; ``tokenizer`` is accepted for symmetry and
    unused); every step feeds the argmax token back with ``past_key_values``, so no EOS stops it early.
    """
    device = torch.device(device) if device is not None else model_device(model)
    ids = random_inputs(model.config, batch, prompt_len, device)["input_ids"]

    def run(steps: int) -> float:
        out = model(input_ids=ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - t0

    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            run(min(4, new_tokens))
        seconds = run(new_tokens)
    return batch * new_tokens / seconds


def prefill_latency(model, batch: int = 1, seq_len: int = 256, repeats: int = 3, warmup: int = 1,
                    device=None) -> float:
    """Median seconds of one forward pass (no cache) on a [batch, seq_len] prompt of synthetic ids."""
    device = torch.device(device) if device is not None else model_device(model)
    ids = random_inputs(model.config, batch, seq_len, device)["input_ids"]
    times = []
    with eval_mode(model), torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)

"""Wall-clock timing of calls and models, and random inputs to time them on (torch only)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from tqdm import tqdm


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time in seconds of fn() (inference mode; CUDA synchronised around each call)."""
    device = torch.device(device)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_models(models: dict, inputs: dict, device="cpu", warmup: int = 2, repeats: int = 10) -> dict:
    """Time models alternately, one call each per round (so load changes on a shared machine hit
    them alike). Per model: median, min and quartiles of `repeats` calls, in seconds."""
    device = torch.device(device)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(**inputs)
        sync(device)
        for _ in tqdm(range(repeats), desc=f"timing {' vs '.join(models)}", unit="round", leave=False):
            for name, model in models.items():
                start = time.perf_counter()
                model(**inputs)
                sync(device)
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        out[name] = {"median_s": statistics.median(t), "min_s": min(t), "q1_s": q[0], "q3_s": q[2], "n": len(t)}
    return out


def time_shapes(models: dict, config, batch_sizes, seq_lens, warmup: int = 3, repeats: int = 10) -> list[dict]:
    """time_models on CPU at every (batch size, sequence length), on random inputs of `config`'s vocabulary:
    one row {"batch_size", "seq_len", "timings"} per shape, sequence length outermost."""
    return [{"batch_size": batch_size, "seq_len": seq_len,
             "timings": time_models(models, random_inputs(config, batch_size, seq_len), "cpu", warmup, repeats)}
            for seq_len in seq_lens for batch_size in batch_sizes]


def relative_medians(timings: dict, reference: str) -> dict:
    """Each model's median time over `reference`'s (timings: time_models' result)."""
    return {name: t["median_s"] / timings[reference]["median_s"] for name, t in timings.items()}


def random_inputs(config, batch_size: int, seq_len: int, device="cpu", seed: int = 0, names=None,
                  pad_first_row: bool = False) -> dict:
    """The project's one maker of random model inputs (timing, latency tables, export checks, decode speed).

    Token ids skip the special and unused ids at the start of real vocabularies; no padding unless
    pad_first_row, which masks the second half of row 0. `names` picks the inputs a model takes (input_ids,
    attention_mask, token_type_ids); default: ids and attention mask.
    """
    gen = torch.Generator().manual_seed(seed)
    low = 1000 if config.vocab_size > 2000 else 5
    ids = torch.randint(low, config.vocab_size, (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    if pad_first_row:
        mask[0, max(1, seq_len // 2):] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: batch[n].to(device) for n in (names or ("input_ids", "attention_mask"))}

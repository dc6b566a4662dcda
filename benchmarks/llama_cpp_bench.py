"""Timing and perplexity of GGUF files in llama.cpp (llama-cpp-python), shared by the llama.cpp benchmarks.

Speeds are taken in pairs: a candidate and the reference are loaded together (only those two) and timed alternately,
each repetition once each, so a change of load or clock during the run hits both alike; the ratio between them is the
robust figure. (With nine F16 models loaded in one process, the ones loaded last generated tokens about 35 % slower
than when loaded in a pair, whatever their shapes: benchmarks/llama_cpp_widths.py's first run; hence pairs.)
Per model and repetition:
- prompt: one batch of the prompt's tokens from an empty KV cache (llama.cpp's prompt processing);
- generation: `gen_tokens` greedy tokens after that prompt, one llama_decode each.
The first repetition warms up (page cache, thread pool) and is not counted; medians of the rest are reported.
"""
from __future__ import annotations

import math
import statistics
import time

import numpy as np


def open_gguf(path: str, n_ctx: int, threads: int, logits_all: bool = False):
    import llama_cpp  # optional extra built from source (scripts/setup.sh)
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                           n_threads_batch=threads, logits_all=logits_all, verbose=False)


def perplexity(path: str, windows, threads: int) -> float:
    """Token-weighted perplexity over consecutive windows (a [n, seq] integer array), each from an empty cache."""
    llm = open_gguf(path, windows.shape[1], threads, logits_all=True)
    nll, count = 0.0, 0
    for row in windows.tolist():
        llm.reset()           # eval then drops the KV cache from position 0
        llm.eval(row)
        logits = np.asarray(llm.scores[:len(row) - 1], dtype=np.float64)
        m = logits.max(1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(logits - m).sum(1))
        nll += float((logz - logits[np.arange(len(row) - 1), row[1:]]).sum())
        count += len(row) - 1
    del llm
    return math.exp(nll / count)


def _one_run(llm, prompt: list[int], gen_tokens: int) -> tuple[float, float]:
    n_vocab = llm.n_vocab()
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    for _ in range(gen_tokens):
        nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))
        llm.eval([nxt])
    return t1 - t0, time.perf_counter() - t1


def alternated_speeds(paths: dict, prompt: list[int], gen_tokens: int, threads: int, repetitions: int,
                      progress=None) -> dict:
    """{label: {"prompt_tokens_per_s", "generation_tokens_per_s", "prompt_s", "generation_s"}} for every GGUF in
    `paths` ({label: file}), all loaded at once and timed in turn, `repetitions` rounds after one warm-up."""
    models = {label: open_gguf(path, len(prompt) + gen_tokens + 8, threads) for label, path in paths.items()}
    times = {label: ([], []) for label in models}
    try:
        for rep in range(repetitions + 1):
            for label, llm in models.items():
                p, g = _one_run(llm, prompt, gen_tokens)
                if rep:
                    times[label][0].append(p)
                    times[label][1].append(g)
            if progress:
                progress(rep)
    finally:
        for llm in models.values():
            llm.close()
        models.clear()
    return {label: {"prompt_tokens_per_s": len(prompt) / statistics.median(p),
                    "generation_tokens_per_s": gen_tokens / statistics.median(g),
                    "prompt_s": [round(x, 5) for x in p], "generation_s": [round(x, 5) for x in g]}
            for label, (p, g) in times.items()}


def paired_speeds(reference: tuple[str, str], candidate: tuple[str, str], prompt: list[int], gen_tokens: int,
                  threads: int, repetitions: int, progress=None) -> dict:
    """The reference and one candidate ((label, file) each) timed alternately, only those two loaded: both rows of
    alternated_speeds plus the candidate's prompt and generation speedups (ratio of the medians)."""
    (ref, ref_path), (cand, cand_path) = reference, candidate
    out = alternated_speeds({ref: ref_path, cand: cand_path}, prompt, gen_tokens, threads, repetitions, progress)
    return {"reference": out[ref], "candidate": out[cand],
            "prompt_speedup": out[cand]["prompt_tokens_per_s"] / out[ref]["prompt_tokens_per_s"],
            "generation_speedup": out[cand]["generation_tokens_per_s"] / out[ref]["generation_tokens_per_s"]}

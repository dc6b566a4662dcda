"""Dense vs pruned SmolLM2 in llama.cpp: file size, perplexity, prompt and generation tokens/s, bytes per token.

    python -m benchmarks.llama_cpp_table --model dense=checkpoints/smollm2-135m \\
        --model 0.8=outputs/smollm2-0.8/pruned_model --model 0.5=outputs/smollm2-0.5/pruned_model \\
        [--quant f16 q4_k_m] [--threads 2] [--repetitions 5] [--eval_sequences 40]

Every --model (LABEL=FOLDER: a save_pruned folder or an unpruned checkpoint) is exported to GGUF F16
(export/gguf.py, architecture deci) and quantized by llama.cpp's quantizer to each other --quant type. For each
GGUF, in llama.cpp (llama-cpp-python 0.3.36, --threads threads):
- file size and weight bytes read per generated token (every tensor but the token embedding, counted from the
  GGUF tensor sizes: generation is memory-bound, so dense bytes / pruned bytes is the limit of its speedup);
- perplexity on data/lm/eval.txt (and, beside it, PyTorch's fp32 perplexity of the same windows): the same consecutive non-overlapping windows of --seq_len tokens as the
  project's causal_lm task (dataset.lm_text.evaluation_sequences, the model folder's tokenizer), each window
  evaluated from an empty KV cache, token-weighted NLL over every predicted token (the project's protocol);
- prompt tokens/s: one batch of --prompt_tokens tokens (the first evaluation window's) from an empty cache,
  median of --repetitions runs after one warm-up;
- generation tokens/s: --gen_tokens greedy tokens after that prompt, one at a time, median of --repetitions.
Writes benchmarks/results/llama_cpp_table.json (with the load average before and after: numbers taken on a busy
machine are not idle-machine numbers) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
from transformers import AutoTokenizer

from dataset.lm_text import evaluation_sequences, lm_batches
from evaluate.perplexity import perplexity as _ppl
from export.gguf import export_gguf, quantize_gguf
from scripts.export_gguf import load_model

log = logging.getLogger("llama_cpp_table")
RESULTS = os.path.join("benchmarks", "results", "llama_cpp_table.json")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="LABEL=FOLDER (repeat; the first is the reference)")
    p.add_argument("--quant", nargs="+", default=["f16", "q4_k_m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--eval_text", default=os.path.join("data", "lm", "eval.txt"))
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--eval_sequences", type=int, default=None, help="first N windows only (default: all)")
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--gen_tokens", type=int, default=64)
    p.add_argument("--work_dir", default=os.path.join("outputs", "llama_cpp_table"))
    p.add_argument("--output", default=RESULTS)
    return p


def _open(path, n_ctx, threads, logits_all):
    import llama_cpp  # optional extra built from source (scripts/setup.sh)
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                           n_threads_batch=threads, logits_all=logits_all, verbose=False)


def perplexity(path, windows, threads) -> float:
    llm = _open(path, windows.shape[1], threads, logits_all=True)
    nll, count = 0.0, 0
    for row in windows.tolist():
        llm.reset()           # eval then drops the KV cache from position 0
        llm.eval(row)
        logits = np.asarray(llm.scores[:len(row) - 1], dtype=np.float64)
        m = logits.max(1, keepdims=True)
        logz = (m[:, 0] + np.log(np.exp(logits - m).sum(1)))
        nll += float((logz - logits[np.arange(len(row) - 1), row[1:]]).sum())
        count += len(row) - 1
    return math.exp(nll / count)


def speed(path, prompt, gen_tokens, threads, repetitions) -> dict:
    llm = _open(path, len(prompt) + gen_tokens + 8, threads, logits_all=False)
    n_vocab = llm.n_vocab()
    prompt_s, gen_s = [], []
    for rep in range(repetitions + 1):            # the first run warms up and is not counted
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for _ in range(gen_tokens):
            nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))
            llm.eval([nxt])
        t2 = time.perf_counter()
        if rep:
            prompt_s.append(t1 - t0)
            gen_s.append(t2 - t1)
    return {"prompt_tokens_per_s": len(prompt) / statistics.median(prompt_s),
            "generation_tokens_per_s": gen_tokens / statistics.median(gen_s),
            "prompt_s": prompt_s, "generation_s": gen_s}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


    def torch_perplexity(model, windows, batch_size):
        return _ppl(model.float(), lm_batches(windows, batch_size))

    with open(args.eval_text, encoding="utf-8") as f:
        text = f.read()
    load_before = os.getloadavg()
    rows = []
    for spec in args.model:
        label, folder = spec.split("=", 1)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        windows = evaluation_sequences(text, tokenizer, args.seq_len, args.eval_sequences)
        prompt = windows[0, :args.prompt_tokens].tolist()
        out_dir = os.path.join(args.work_dir, label)
        model = load_model(folder)
        torch_ppl = torch_perplexity(model, windows.to(torch.long)[:], 8)["perplexity"]
        f16 = export_gguf(model, out_dir, folder, dtype="f16")
        del model
        for quant in args.quant:
            info = f16 if quant == "f16" else quantize_gguf(f16["path"], os.path.join(out_dir, f"model-{quant}.gguf"),
                                                            quant)
            row = {"model": label, "folder": folder, "quant": quant, "file_bytes": info["bytes"],
                   "pytorch_perplexity_fp32": torch_ppl,
                   "weight_bytes_per_token": info["weight_bytes_per_token"],
                   "perplexity": perplexity(info["path"], windows, args.threads),
                   **speed(info["path"], prompt, args.gen_tokens, args.threads, args.repetitions)}
            log.info("%s %s: %s", label, quant, {k: v for k, v in row.items() if not k.endswith("_s")})
            rows.append(row)
    ref = {r["quant"]: r for r in rows if r["model"] == rows[0]["model"]}
    for r in rows:
        base = ref[r["quant"]]
        r["bytes_ratio_limit"] = base["weight_bytes_per_token"] / r["weight_bytes_per_token"]
        r["generation_speedup"] = r["generation_tokens_per_s"] / base["generation_tokens_per_s"]
        r["speedup_over_limit"] = r["generation_speedup"] / r["bytes_ratio_limit"]
        r["prompt_speedup"] = r["prompt_tokens_per_s"] / base["prompt_tokens_per_s"]
    result = {"rows": rows, "threads": args.threads, "repetitions": args.repetitions,
              "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens, "seq_len": args.seq_len,
              "eval_windows": int(windows.shape[0]), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "cpu_count": os.cpu_count(), "machine": platform.platform(),
              "llama_cpp_python": _version()}
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print("| model | type | file MB | bytes/token MB | perplexity (PyTorch fp32) | prompt tok/s | gen tok/s | gen speedup | "
          "bytes ratio (limit) | speedup / limit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['quant']} | {r['file_bytes'] / 1e6:.1f} | {r['weight_bytes_per_token'] / 1e6:.1f} | "
              f"{r['perplexity']:.2f} ({r['pytorch_perplexity_fp32']:.2f}) | {r['prompt_tokens_per_s']:.0f} | {r['generation_tokens_per_s']:.1f} | "
              f"{r['generation_speedup']:.2f}x | {r['bytes_ratio_limit']:.2f}x | {r['speedup_over_limit']:.2f} |")
    print(f"load average before {load_before}, after {result['load_average_after']}")
    return 0


def _version():
    try:
        import llama_cpp  # optional extra built from source (scripts/setup.sh)
        return llama_cpp.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())

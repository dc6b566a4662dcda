"""Peak-memory growth of the mask-gradient pass per sequence, split into per-layer and outside-layer parts.

Runs one gradient batch in a fresh process (the peak RSS is a high-water mark) for 1 and 4 sequences of 256
tokens, with all layers and with half of them; the growth per sequence with all layers minus that with half,
over the layers removed, is the per-layer part, and the rest (logits, loss) the outside-layer part. Memory is
not disturbed by other jobs the way timings are. benchmarks/scale_plan.py takes the two numbers.

    python -m benchmarks.gradient_memory --ckpt_dir checkpoints/smollm2-135m
    python -m benchmarks.gradient_memory --compare_batch 8   # peak RSS of one batch: all activations kept vs
                                                             # recomputed blocks + chunked loss (the causal_lm default)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from arch import bind
from evaluate.perplexity import lm_loss
from prune.fisher import collect_mask_grads
from utils.checkpoint import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(ckpt: str, sequences: int, layers: int, seq_len: int) -> float:
    """In this process: peak RSS growth (MB) of one gradient batch."""

    torch.set_num_threads(1)
    model = load_model(ckpt, "causal_lm")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    ids = torch.randint(3, model.config.vocab_size, (sequences, seq_len), generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    collect_mask_grads(model, bind(model), [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def one_pass(ckpt: str, sequences: int, seq_len: int, lean: bool) -> dict:
    """In this process: the peak RSS (MB) of one gradient batch of the whole model, plain or lean."""

    torch.set_num_threads(1)
    model = load_model(ckpt, "causal_lm")
    ids = torch.randint(0, model.config.vocab_size, (sequences, seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    kwargs = dict(loss_fn=lm_loss, checkpoint_layers=True) if lean else {}
    heads, neurons = collect_mask_grads(model, bind(model), [batch], **kwargs)
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "head_grads": heads.flatten().tolist(), "neuron_grads": neurons.flatten().tolist()}


def compare(ckpt: str, sequences: int, seq_len: int) -> dict:
    runs = {}
    for mode in ("plain", "lean"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.gradient_memory", "--ckpt_dir", ckpt, "--seq_len", str(seq_len), "--pass_mode",
                              mode, "--compare_batch", str(sequences)], check=True, capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    diff = max(abs(a - b) for key in ("head_grads", "neuron_grads")
               for a, b in zip(runs["plain"][key], runs["lean"][key]))
    return {"batch": f"{sequences} x {seq_len}", "peak_rss_mb": {m: r["peak_rss_mb"] for m, r in runs.items()},
            "max_abs_gradient_difference": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "checkpoints", "smollm2-135m"))
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--one", nargs=2, type=int, metavar=("SEQUENCES", "LAYERS"), help=argparse.SUPPRESS)
    p.add_argument("--compare_batch", type=int, metavar="SEQUENCES",
                   help="instead: one batch of this many sequences, plain against lean, each in a fresh process")
    p.add_argument("--pass_mode", choices=["plain", "lean"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.compare_batch and args.pass_mode:
        print(json.dumps(one_pass(args.ckpt_dir, args.compare_batch, args.seq_len, args.pass_mode == "lean")))
        return
    if args.compare_batch:
        print(json.dumps(compare(args.ckpt_dir, args.compare_batch, args.seq_len), indent=2))
        return
    if args.one:
        print(json.dumps(one(args.ckpt_dir, *args.one, args.seq_len)))
        return
    with open(os.path.join(args.ckpt_dir, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    growth = {}
    for n_layers in (layers, layers // 2):
        for seqs in (1, 4):
            out = subprocess.run([sys.executable, "-m", "benchmarks.gradient_memory", "--ckpt_dir", args.ckpt_dir, "--seq_len", str(args.seq_len),
                                  "--one", str(seqs), str(n_layers)], check=True, capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            growth[(n_layers, seqs)] = json.loads(out.stdout.strip().splitlines()[-1])
    per_seq = {n: (growth[(n, 4)] - growth[(n, 1)]) / 3 for n in (layers, layers // 2)}
    layer_mb = (per_seq[layers] - per_seq[layers // 2]) / (layers - layers // 2)
    print(json.dumps({"growth_mb": {f"{n} layers x {s} sequences": round(v, 1) for (n, s), v in growth.items()},
                      "layer_mb": round(layer_mb, 2), "vocab_mb": round(per_seq[layers] - layers * layer_mb, 1),
                      "seq_len": args.seq_len}, indent=2))


if __name__ == "__main__":
    main()

"""Ablation of mask-tuning variants on the fixed benchmark, one idea at a time (issue: beat the reference).

Loads the benchmark checkpoint once per seed, collects the mask gradients once, then for every
constraint and variant runs search -> (rearrangement) -> tuning and scores the dev set. Variants are
PruneOptions overrides (benchmarks/variants.py).

    python -m benchmarks.method_ablation --seeds 0 --constraints 0.5 0.6 --variants kwon lsq lsq_norearr
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "..", "shared", "benchmark")

import torch

from arch import bind
from benchmarks.variants import RETIRED, VARIANTS, run_variant  # noqa: E402
from prune.weight_updates import swapped_weights
from tasks.glue import prepare_glue
from utils.checkpoint import load_model, load_tokenizer


def table(rows: list[dict]) -> str:
    """Markdown: one line per variant, mean accuracy over seeds per constraint (seeds in parentheses)."""
    constraints = sorted({r["constraint"] for r in rows})
    lines = ["| variant | " + " | ".join(f"{c:g}" for c in constraints) + " |",
             "|---|" + "---|" * len(constraints)]
    for name in [v for v in [*VARIANTS, *RETIRED] if any(r["variant"] == v for r in rows)]:
        cells = []
        for c in constraints:
            acc = [r["accuracy"] for r in rows if r["variant"] == name and r["constraint"] == c]
            cells.append(f"{sum(acc) / len(acc):.4f} ({len(acc)})" if acc else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--constraints", nargs="+", type=float, default=[0.5])
    p.add_argument("--variants", nargs="+", default=["kwon", "lsq"], choices=sorted(VARIANTS))
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--output", default=os.path.join(ROOT, "outputs", "method_ablation.json"))
    p.add_argument("--table", action="store_true", help="only print the table of --output")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.load(open(args.output))))
        return 0



    rows = json.load(open(args.output)) if os.path.isfile(args.output) else []
    done = {(r["seed"], r["constraint"], r["variant"]) for r in rows}
    ckpt = os.path.join(BENCH, "minilm-movie-sst2")
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = load_model(ckpt, "classification")
        arch = bind(model)
        task = prepare_glue("sst2", os.path.join(BENCH, "movie-sst2"), load_tokenizer(ckpt, None), model.config,
                            args.num_samples, seed, 64, 32)
        grads = {}
        for c in args.constraints:
            for name in args.variants:
                if (seed, c, name) in done:
                    continue
                result, seconds = run_variant(model, arch, task, grads, c, name, seed)
                with swapped_weights(arch, result.weight_updates):
                    metric = task.evaluate(model, arch, *result.final)
                row = {"seed": seed, "constraint": c, "variant": name, "accuracy": metric["accuracy"],
                       "mac_ratio": result.mac_ratio, "seconds": round(seconds, 1),
                       "failed_layers": [e for e in result.tuning_events if e["status"] != "ok"]}
                print(json.dumps(row), flush=True)
                rows.append(row)
                with open(args.output, "w") as f:
                    json.dump(rows, f, indent=1)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

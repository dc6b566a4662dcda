"""Cost per output column of one Linear at the widths a pruned MiniLM-L6 keeps against the nearest multiples of 16
and 32 (is an odd FFN width slower per neuron at small batches?). The up projection Linear(384, n) and the down
projection Linear(n, 384) on 32 and 128 tokens, 2 threads, median of 5 blocks of 400 calls:

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.linear_widths
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.record import ROOT, machine_metadata, write_json

WIDTHS = (592, 600, 604, 607, 608, 616, 624, 640, 657, 664, 672, 719, 720, 736, 807, 808, 832)
HIDDEN = 384


def median_call_us(call, calls: int = 400, blocks: int = 5, warmup: int = 20) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls)
    return sorted(times)[blocks // 2] * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "linear_widths.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for tokens in (32, 128):
            x = torch.randn(tokens, HIDDEN)
            for n in WIDTHS:
                up_w, up_b = torch.randn(n, HIDDEN), torch.randn(n)
                down_w, h = torch.randn(HIDDEN, n), torch.randn(tokens, n)
                up = median_call_us(lambda: torch.nn.functional.linear(x, up_w, up_b))
                down = median_call_us(lambda: torch.nn.functional.linear(h, down_w))
                rows.append({"tokens": tokens, "width": n, "up_us": up, "down_us": down,
                             "up_ns_per_column": 1e3 * up / n, "down_ns_per_column": 1e3 * down / n})
                print(f"{tokens} tokens, width {n}: up {up:.1f} us ({1e3 * up / n:.1f} ns/column), "
                      f"down {down:.1f} us ({1e3 * down / n:.1f} ns/column)", flush=True)
    write_json(args.output, {"hidden": HIDDEN, "threads": args.threads, "rows": rows,
                             "machine": machine_metadata(args.threads)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

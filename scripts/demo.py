"""The README's main job on the embedded real default, from nothing to a printed table.

1. build the movie-review sentiment data (vaderSentiment 3.3.2, SST-2 layout) into data/movie-sst2;
2. fine-tune the packaged all-MiniLM-L6-v2 on it (cached): by default the quick recipe, 150 steps of batch
   32 (0.56 epoch, about 2.5 minutes on 2 idle cores) into checkpoints/minilm-movie-sst2-quick, so the first
   run shows its table within five minutes; --full fine-tunes the 3-epoch recipe (804 steps) into
   checkpoints/minilm-movie-sst2, the checkpoint of the sweeps;
3. prune it with main.py at --constraint (default 0.5), saving the smaller model;
4. print dev accuracy before/after, MAC ratio, seconds per stage, latency before/after.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time

from scripts.finetune import finetune as finetune_checkpoint
from scripts.make_movie_sst2 import build_movie_sst2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATA_DIR = os.path.join(ROOT, "data", "movie-sst2")
CKPT_DIR = os.path.join(ROOT, "checkpoints", "minilm-movie-sst2")
QUICK_CKPT_DIR = os.path.join(ROOT, "checkpoints", "minilm-movie-sst2-quick")
QUICK_STEPS = 150


def _step(name: str, timings: dict, fn):
    start = time.perf_counter()
    value = fn()
    timings[name] = round(time.perf_counter() - start, 1)
    return value


def recipe_name(full: bool, max_steps: int | None) -> str:
    """The fine-tuning recipe in words, for the table."""
    if max_steps is None:
        return "full (3 epochs)" if full else "quick"
    return f"quick ({max_steps} steps of batch 32)" if not full and max_steps == QUICK_STEPS else \
        f"{'full, ' if full else ''}{max_steps} steps of batch 32"


def format_table(results: dict, finetune: dict, timings: dict, run_dir: str, recipe: str | None = None,
                 ckpt_dir: str | None = None) -> str:
    name = results["primary_metric"]
    before, after = results["metric_before"][name], results["metric_after"][name]
    lines = [
        "",
        f"{'dev ' + name + ' before':<34}{before:.4f}",
        f"{'dev ' + name + ' after':<34}{after:.4f}   ({100 * (after - before):+.2f} points)",
        f"{'MAC ratio (heads + FFN)':<34}{results['mac_ratio']:.4f}   (constraint {results['constraint']})",
    ]
    for stage, seconds in results["seconds"].items():
        lines.append(f"{'seconds: ' + stage:<34}{seconds:.1f}")
    speed = results.get("pruned_model", {}).get("speed")
    if speed:
        lines.append(f"{'latency before (ms/batch)':<34}{1000 * speed['original_s']:.1f}   "
                     f"(batch {speed['batch_size']} x {speed['seq_len']} tokens, {speed['device']}, "
                     f"{speed.get('threads')} threads)")
        lines.append(f"{'latency after (ms/batch)':<34}{1000 * speed['pruned_s']:.1f}   (speedup {speed['speedup']:.2f}x)")
    if recipe:
        lines.append(f"{'fine-tune recipe':<34}{recipe}")
    if ckpt_dir:
        lines.append(f"{'checkpoint':<34}{ckpt_dir}")
    lines.append(f"{'fine-tune dev accuracy':<34}{finetune['dev_metrics'].get('accuracy', float('nan')):.4f}"
                 f"   ({'cached' if finetune.get('cached') else str(finetune.get('seconds')) + ' s'})")
    for step, seconds in timings.items():
        lines.append(f"{'wall s: ' + step:<34}{seconds:.1f}")
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--constraint", default="0.5")
    p.add_argument("--max_steps", type=int, default=None,
                   help=f"fine-tuning steps (default {QUICK_STEPS}: the quick recipe; --full: 3 epochs)")
    p.add_argument("--full", action="store_true", help="fine-tune the full 3-epoch recipe (804 steps)")
    p.add_argument("--data_dir", default=DATA_DIR)
    p.add_argument("--ckpt_dir", default=None, help="default: checkpoints/minilm-movie-sst2-quick "
                   "(checkpoints/minilm-movie-sst2 with --full)")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more main.py flags")
    args = p.parse_args(argv)
    if args.max_steps is None and not args.full:
        args.max_steps = QUICK_STEPS
    args.ckpt_dir = args.ckpt_dir or (CKPT_DIR if args.full else QUICK_CKPT_DIR)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


    timings = {}
    _step("data", timings, lambda: build_movie_sst2(args.data_dir))
    tuned = _step("fine-tune", timings, lambda: finetune_checkpoint("sst2", args.ckpt_dir, data_dir=args.data_dir,
                                                         max_steps=args.max_steps))
    run_dir = args.output_dir or os.path.join(ROOT, "outputs", "demo", f"constraint_{args.constraint}")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--task_name", "sst2", "--ckpt_dir", args.ckpt_dir,
           "--data_dir", args.data_dir, "--constraint", args.constraint, "--max_seq_length", "64",
           "--output_dir", run_dir, "--overwrite", "--save_pruned", *args.extra]
    code = _step("prune", timings, lambda: subprocess.call(cmd, cwd=ROOT))
    if code != 0:
        print(f"main.py failed with exit status {code}; see {run_dir}/log.txt", file=sys.stderr)
        return code
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    print(format_table(results, tuned, timings, run_dir, recipe_name(args.full, args.max_steps), args.ckpt_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

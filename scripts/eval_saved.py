"""Zero-shot accuracy of a saved causal LM folder (a plain HF checkpoint or a pruned folder saved by main.py
--save_pruned) through lm-evaluation-harness; the same numbers main.py --eval_tasks writes for a run.

    python -m scripts.eval_saved FOLDER --eval_tasks data/zero_shot [--eval_limit N] [--batch_size 8]
        [--output scores.json] [--device cpu]

--eval_tasks: task names (arc_easy,piqa: online), a folder of task YAML files (offline: build
data/zero_shot with ``python -m scripts.make_zero_shot_tasks``) or YAML files, comma-separated.
Prints one line per task (acc, acc_norm, items, chance) and the average; --output writes the full result
(with the per-item correctness, for paired comparisons) as JSON. Exit status 2 on a user error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluate.zero_shot import ZeroShotError, without_items, zero_shot_scores
from export.hf_folder import PRUNING_FILE
from export.hf_load import load_pruned
from utils.errors import UserError

log = logging.getLogger("eval_saved")


def load_causal_lm(folder: str, device: str = "cpu"):
    """(model, tokenizer) of a pruned folder (its pruning record) or of a plain HF causal-LM checkpoint."""
    if not os.path.isdir(folder):
        raise ZeroShotError(f"{folder} is not a folder: pass a saved checkpoint (config.json, weights, tokenizer).")
    if os.path.isfile(os.path.join(folder, PRUNING_FILE)):
        model = load_pruned(folder, device=device)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--eval_tasks", required=True, help="task names, folders of task YAML files or YAML files")
    p.add_argument("--eval_limit", type=int, default=None, help="at most this many items per task (default: all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=None, help="write the scores (with per-item correctness) to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        model, tokenizer = load_causal_lm(args.folder, args.device)
        scores = zero_shot_scores(model, tokenizer, args.eval_tasks, args.eval_limit, args.batch_size)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores["folder"] = args.folder
    scores["seconds_total"] = round(time.perf_counter() - start, 3)
    for name, row in without_items(scores)["tasks"].items():
        def fmt(key):
            return "n/a" if row.get(key) is None else f"{row[key]:.4f}"
        print(f"{name}: acc {fmt('acc')} +- {fmt('acc_stderr')}  acc_norm {fmt('acc_norm')}  items {row.get('items')}  "
              f"chance {fmt('chance')}")
    if scores["average"]:
        print("average: " + "  ".join(f"{k} {v:.4f}" for k, v in scores["average"].items()))
    print(f"seconds: scoring {scores['seconds']}, total {scores['seconds_total']}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(scores, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

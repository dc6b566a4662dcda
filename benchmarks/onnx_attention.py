"""Which attention the portable ONNX graph should be written with (issue 33): the same model exported with
transformers' SDPA attention (its decomposition guards every score tensor with IsNaN + Where) and with the eager one
(plain MatMul, Mul, Add, Softmax), both run in ONNX Runtime (CPU, no intra-op spinning), the original and the pruned
model, the four sessions timed alternately (one call each per round) at every batch x tokens shape:

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.onnx_attention
    # -> benchmarks/results/onnx_attention.json: per shape, each graph's median and eager/sdpa time ratios

Defaults: MiniLM (a BERT, whose default attention is SDPA) and the masks of the sts_embedding run
minilm-lsq-0.5-s0 (see benchmarks/speed_limit.py for how that folder is made). MPNet has only the eager attention,
so its graph does not change.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

from benchmarks.record import ROOT, LoadSampler, machine_metadata, write_json
from benchmarks.sts_embedding import model_dirs
from benchmarks.sts_models import original_and_pruned
from export.onnx import exported_sessions, max_abs_difference, packages_problem
from utils.timing import random_inputs, time_shapes

OUTPUT = os.path.join(ROOT, "benchmarks", "results", "onnx_attention.json")
FORMS = ("sdpa", "eager")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=sorted(model_dirs()))
    p.add_argument("--masks_of", default="minilm-lsq-0.5-s0", help="an outputs/sts_embedding run folder")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output", default=OUTPUT)
    return p


def sessions(models: dict, folder: str) -> tuple[dict, dict]:
    """ONNX Runtime sessions {f"{model}-{form}"} of every model exported with every attention form, and the
    attention each export really used (a family without SDPA exports its own)."""
    out, used = {}, {}
    for name, model in models.items():
        for form in FORMS:
            graphs, reports = exported_sessions({f"{name}-{form}": model}, folder, threads=torch.get_num_threads(),
                                                attention=form)
            out |= graphs
            used |= {graph: report["attention"] for graph, report in reports.items()}
    return out, used


def ratios(timings: dict, models) -> dict:
    """eager/sdpa time ratio of each model's median (below 1: the eager graph is faster)."""
    return {name: timings[f"{name}-eager"]["median_s"] / timings[f"{name}-sdpa"]["median_s"] for name in models}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if problem := packages_problem("this benchmark"):
        print(problem, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    loaded = original_and_pruned(args.model, [args.masks_of])
    original, models = loaded["original"], {"original": loaded["original"], "pruned": loaded[args.masks_of]}
    report = {"model": args.model, "masks_of": args.masks_of, "command": "python -m benchmarks.onnx_attention " +
              " ".join(argv if argv is not None else sys.argv[1:]), "machine": machine_metadata(args.threads),
              "repeats": args.repeats, "results": []}
    with tempfile.TemporaryDirectory() as folder, LoadSampler() as load:
        graphs, report["attention_used"] = sessions(models, folder)
        check = [random_inputs(original.config, 2, 32, "cpu", seed=2)]
        report["max_abs_output_diff_vs_eager_pytorch"] = {
            name: max_abs_difference(models[name.rsplit("-", 1)[0]], session, check) for name, session in graphs.items()}
        for row in time_shapes(graphs, original.config, args.batch_sizes, args.seq_lens, args.warmup, args.repeats):
            row["eager_over_sdpa"] = ratios(row["timings"], models)
            report["results"].append(row)
            print(f"batch {row['batch_size']:3d} seq {row['seq_len']:4d}: eager/sdpa time " + ", ".join(
                f"{name} {r:.3f}" for name, r in row["eager_over_sdpa"].items()), file=sys.stderr)
    report["load"] = load.summary()
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Would zero-padding the pruned FFN widths to a multiple of N make the model faster (issue 33)? A layer that keeps
607 channels computes the same function with 608 or 640 channels whose output-projection columns are zero, and
Linear kernels run aligned widths faster per column (benchmarks/linear_widths.py), so padding would trade a few
per cent more MACs for aligned widths, without the accuracy cost of --width_multiple. This times the pruned model
and its zero-padded copies alternately (one call each per round), in eager PyTorch and in ONNX Runtime (the portable
graph, no intra-op spinning):

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.ffn_padding
    # -> benchmarks/results/ffn_padding.json: per backend and shape, each copy's median time / the unpadded one's

Defaults: MiniLM and the masks of the sts_embedding run minilm-lsq-0.5-s0 (benchmarks/speed_limit.py's help says how
that folder is made); multiples 8 and 32.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from arch import bind
from benchmarks.record import ROOT, LoadSampler, machine_metadata, write_json
from benchmarks.sts_embedding import model_dirs
from benchmarks.sts_models import original_and_pruned
from export.onnx import exported_sessions, packages_problem
from prune.physical import new_linear
from utils.timing import random_inputs, relative_medians, time_shapes

OUTPUT = os.path.join(ROOT, "benchmarks", "results", "ffn_padding.json")


def _padded_linear(linear: nn.Linear, rows: int = 0, cols: int = 0) -> nn.Linear:
    """`linear` with `rows` zero output rows (zero bias) and `cols` zero input columns appended."""
    bias = None if linear.bias is None else F.pad(linear.bias.detach(), (0, rows))
    return new_linear(F.pad(linear.weight.detach(), (0, cols, 0, rows)), bias)


def pad_ffn_widths(model: nn.Module, multiple: int) -> tuple[nn.Module, list[int]]:
    """A copy of a physically pruned `model` whose FFN widths are rounded up to `multiple` with zero channels (the
    same function: the padded channels' output-projection columns are zero); returns it and the new widths.
    Families with one Linear per FFN input (not Phi-3's fused gate_up)."""
    padded = copy.deepcopy(model)
    arch = bind(padded)
    if arch.num_ffn_inputs != len(arch.facts.ffn_inputs):
        raise ValueError("pad_ffn_widths pads one Linear per FFN input; this family fuses them (gate_up)")
    widths = []
    for i in range(arch.num_layers):
        width = arch.ffn_out(i).in_features
        extra = (-width) % multiple if width else 0
        for path in arch.facts.ffn_inputs:
            arch.set_module(i, path, _padded_linear(arch.module(i, path), rows=extra))
        arch.set_module(i, arch.facts.ffn_out, _padded_linear(arch.ffn_out(i), cols=extra))
        widths.append(width + extra)
    return padded.eval(), widths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=sorted(model_dirs()))
    p.add_argument("--masks_of", default="minilm-lsq-0.5-s0", help="an outputs/sts_embedding run folder")
    p.add_argument("--multiples", type=int, nargs="+", default=[8, 32])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=41)
    p.add_argument("--output", default=OUTPUT)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if problem := packages_problem("this benchmark"):
        print(problem, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    pruned = original_and_pruned(args.model, [args.masks_of])[args.masks_of]
    models, widths = {"unpadded": pruned}, {"unpadded": [bind(pruned).ffn_out(i).in_features
                                                         for i in range(bind(pruned).num_layers)]}
    for multiple in args.multiples:
        models[f"pad{multiple}"], widths[f"pad{multiple}"] = pad_ffn_widths(pruned, multiple)
    check = random_inputs(pruned.config, 2, 32, seed=1)
    with torch.inference_mode():
        ref = pruned(**check)[0]
        diffs = {name: float((model(**check)[0] - ref).abs().max()) for name, model in models.items()}
    report = {"model": args.model, "masks_of": args.masks_of, "ffn_widths": widths, "max_abs_diff": diffs,
              "command": "python -m benchmarks.ffn_padding " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_metadata(args.threads), "repeats": args.repeats, "results": []}
    with tempfile.TemporaryDirectory() as folder, LoadSampler() as load:
        backends = {"eager": models, "onnx": exported_sessions(models, folder, threads=args.threads)[0]}
        for backend, timed in backends.items():
            for row in time_shapes(timed, pruned.config, args.batch_sizes, args.seq_lens, 3, args.repeats):
                row = {"backend": backend, **row, "time_over_unpadded": relative_medians(row["timings"], "unpadded")}
                report["results"].append(row)
                print(f"{backend:5s} batch {row['batch_size']:3d} seq {row['seq_len']:4d}: " + ", ".join(
                    f"{name} {r:.3f}" for name, r in row["time_over_unpadded"].items()), file=sys.stderr)
    report["load"] = load.summary()
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

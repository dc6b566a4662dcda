"""Several pruned versions of one sentence-embedding model timed side by side in ONNX Runtime (the portable graph,
CPU, no intra-op spinning): the original and each run folder's pruned model, one call each per round, so that two
pruned models are compared within one process instead of across two runs whose originals already differ by a few
per cent:

    python -m benchmarks.pruned_side_by_side --mask_dirs RUN_A RUN_B --output side_by_side.json

Per shape: each model's median seconds and its speed-up over the original (benchmarks/latency_search_onnx.sh).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

import torch

from arch import bind
from benchmarks.record import LoadSampler, machine_metadata, write_json
from benchmarks.sts_embedding import model_dirs
from export.onnx import OrtModel, export_onnx, missing_packages
from prune.masks import load_masks
from prune.physical import physically_prune
from tasks.sentence_similarity import EncoderWithoutPooler
from utils.checkpoint import load_model
from utils.timing import random_inputs, time_models


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=sorted(model_dirs()))
    p.add_argument("--mask_dirs", nargs="+", required=True, help="run folders with head_mask.pt / neuron_mask.pt")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    missing = [d for d in args.mask_dirs if not os.path.isfile(os.path.join(d, "head_mask.pt"))]
    if missing_packages() or missing:
        print(f"error: needs {', '.join(missing_packages()) or 'onnxruntime'} and masks in {missing}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    original = load_model(model_dirs()[args.model], "embedding", EncoderWithoutPooler).eval()
    models = {"original": original}
    for folder in args.mask_dirs:
        pruned = copy.deepcopy(original)
        physically_prune(pruned, bind(pruned), *load_masks(folder))
        models[os.path.basename(os.path.normpath(folder))] = pruned.eval()
    report = {"model": args.model, "mask_dirs": args.mask_dirs, "machine": machine_metadata(args.threads),
              "command": "python -m benchmarks.pruned_side_by_side " +
                         " ".join(argv if argv is not None else sys.argv[1:]), "repeats": args.repeats, "results": []}
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        sessions = {}
        for name, model in models.items():
            export_onnx(model, os.path.join(tmp, f"{name}.onnx"))
            sessions[name] = OrtModel(os.path.join(tmp, f"{name}.onnx"), threads=args.threads, spin=False)
        for seq_len in args.seq_lens:
            for batch_size in args.batch_sizes:
                t = time_models(sessions, random_inputs(original.config, batch_size, seq_len), "cpu", 3, args.repeats)
                speedup = {name: t["original"]["median_s"] / t[name]["median_s"] for name in sessions}
                report["results"].append({"batch_size": batch_size, "seq_len": seq_len, "timings": t,
                                          "speedup": speedup})
                print(f"batch {batch_size:3d} seq {seq_len:4d}: " + ", ".join(
                    f"{name} {s:.2f}x" for name, s in speedup.items() if name != "original"), file=sys.stderr,
                    flush=True)
    report["load"] = load.summary()
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

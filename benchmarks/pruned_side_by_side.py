"""Several pruned versions of one sentence-embedding model timed side by side in ONNX Runtime (the portable graph,
CPU, no intra-op spinning; --backend eager: in PyTorch): the original and each run folder's pruned model, one call each per round, so that two
pruned models are compared within one process instead of across two runs whose originals already differ by a few
per cent:

    python -m benchmarks.pruned_side_by_side --mask_dirs RUN_A RUN_B --output side_by_side.json

Per shape: each model's median seconds and its speed-up over the original (benchmarks/latency_search_onnx.sh).
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from benchmarks.record import LoadSampler, machine_metadata, write_json
from benchmarks.sts_embedding import model_dirs
from benchmarks.sts_models import original_and_pruned
from export.onnx import exported_sessions, packages_problem
from utils.timing import relative_medians, time_shapes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=sorted(model_dirs()))
    p.add_argument("--backend", default="onnx", choices=["onnx", "eager"])
    p.add_argument("--mask_dirs", nargs="+", required=True, help="run folders with head_mask.pt / neuron_mask.pt")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    if args.backend == "onnx" and (problem := packages_problem("this benchmark")):
        print(problem, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    models = original_and_pruned(args.model, args.mask_dirs)
    original = models["original"]
    report = {"model": args.model, "backend": args.backend, "mask_dirs": args.mask_dirs,
              "machine": machine_metadata(args.threads), "command": "python -m benchmarks.pruned_side_by_side " +
                         " ".join(argv if argv is not None else sys.argv[1:]), "repeats": args.repeats, "results": []}
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        sessions = exported_sessions(models, tmp, threads=args.threads)[0] if args.backend == "onnx" else models
        for row in time_shapes(sessions, original.config, args.batch_sizes, args.seq_lens, 3, args.repeats):
            row["speedup"] = {name: 1 / r for name, r in relative_medians(row["timings"], "original").items()}
            report["results"].append(row)
            print(f"batch {row['batch_size']:3d} seq {row['seq_len']:4d}: " + ", ".join(
                f"{name} {s:.2f}x" for name, s in row["speedup"].items() if name != "original"), file=sys.stderr)
    report["load"] = load.summary()
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

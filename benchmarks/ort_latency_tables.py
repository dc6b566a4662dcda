"""Does the latency-constrained search help a model served in ONNX Runtime at batch 1 (issue 33)? This measures the
latency tables of `main.py --metric latency` in ONNX Runtime instead of PyTorch: each pruned one-block model
(prune.latency_tables.measure_luts) is exported as the portable graph and timed in ONNX Runtime (CPU), less the time
of the same model without its block; the tables then go to main.py as --mha_lut / --ffn_lut:

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.ort_latency_tables \\
        --ckpt_dir MINILM --batch_size 1 --seq_len 32 --output_dir benchmarks/results/latency_search/luts-onnx-b1-s32

It exports once per table entry (--ffn_step 64: some forty exports, a minute or two for MiniLM). What came of it is in
docs/results.md ("Latency tables measured in ONNX Runtime").
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from transformers import AutoConfig

from benchmarks.record import machine_metadata, write_json
from export.onnx import ONNX_FILE, OrtModel, export_onnx, packages_problem
from prune.latency import fit_piecewise_linear
from prune.latency_tables import measure_luts
from utils.timing import time_call


def ort_timer(folder: str, threads: int, warmup: int, repeats: int):
    """time_model for measure_luts: export the model into `folder`, time its ONNX Runtime session (median s)."""
    def time_model(model, inputs: dict) -> float:
        path = os.path.join(folder, ONNX_FILE)
        export_onnx(model, path)
        session = OrtModel(path, "cpu", threads)
        return time_call(lambda: session(**inputs), "cpu", warmup, repeats)
    return time_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", required=True, help="checkpoint whose config gives the sizes")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ffn_step", type=int, default=64)
    p.add_argument("--mha_step", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--output_dir", required=True)
    args = p.parse_args(argv)
    if problem := packages_problem("this benchmark"):
        print(problem, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    config = AutoConfig.from_pretrained(args.ckpt_dir)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ort-luts-") as folder:
        mha, ffn = measure_luts(config, args.batch_size, args.seq_len, mha_step=args.mha_step, ffn_step=args.ffn_step,
                                warmup=args.warmup, repeats=args.repeats,
                                time_model=ort_timer(folder, args.threads, args.warmup, args.repeats))
    os.makedirs(args.output_dir, exist_ok=True)
    torch.save(mha, os.path.join(args.output_dir, "mha_lut.pt"))
    torch.save(ffn, os.path.join(args.output_dir, "ffn_lut.pt"))
    write_json(os.path.join(args.output_dir, "lut_info.json"), {
        "ckpt_dir": args.ckpt_dir, "backend": "onnx", "batch_size": args.batch_size, "seq_len": args.seq_len,
        "threads": args.threads, "ffn_step": args.ffn_step, "mha_step": args.mha_step, "repeats": args.repeats,
        "seconds": round(time.perf_counter() - start, 1), "mha_lut_s": mha.tolist(), "ffn_lut_s": ffn.tolist(),
        "fit": {name: dict(zip(("threshold", "slope", "const"), fit_piecewise_linear(t)))
                for name, t in (("mha", mha), ("ffn", ffn))}, "machine": machine_metadata(args.threads)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the latency lookup tables for `main.py --metric latency` (the paper's generate_lut).

    python -m scripts.measure_latency --ckpt_dir CKPT --device cpu --batch_size 32 --seq_len 128 \
        --output_dir luts/minilm-cpu-b32-s128

writes mha_lut.pt (seconds of one attention block for 0..H heads), ffn_lut.pt (one FFN block for
0..F neurons, timed every --ffn_step neurons and linearly interpolated) and lut_info.json (the
settings and the piecewise-linear fit of each table). Pass the two .pt files to main.py as
--mha_lut and --ffn_lut. Only the checkpoint's config.json is read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoConfig

from arch import UnsupportedModelError, facts_for
from prune.latency import fit_piecewise_linear
from prune.latency_tables import measure_luts
from run.folder import OutputError, claimed_outputs


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", required=True, help="checkpoint folder (or hub id) whose config gives the sizes")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch_size", "--bs", dest="batch_size", type=_positive, default=32)
    p.add_argument("--seq_len", type=_positive, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--ffn_step", type=_positive, default=16, help="time every N neurons and interpolate")
    p.add_argument("--mha_step", type=_positive, default=1, help="time every N heads and interpolate")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=_positive, default=10, help="timed calls per entry; the median is kept")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--output_dir", default=".", help="folder for the tables (default: current folder)")
    p.add_argument("--mha_lut", default=None, help="output path of the attention table (default OUTPUT_DIR/mha_lut.pt)")
    p.add_argument("--ffn_lut", default=None, help="output path of the FFN table (default OUTPUT_DIR/ffn_lut.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace tables (and lut_info.json) that exist")
    return p


def _save(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)


    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} but no CUDA GPU is available", file=sys.stderr)
        return 2
    try:
        config = AutoConfig.from_pretrained(args.ckpt_dir)
        facts = facts_for(config.model_type)
    except (OSError, ValueError, UnsupportedModelError) as e:
        print(f"error: cannot read the model config of '{args.ckpt_dir}': {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    hidden = getattr(config, facts.hidden_attr)
    ffn = getattr(config, facts.ffn_attr)
    dtype = getattr(torch, args.dtype)
    mha_path = args.mha_lut or os.path.join(args.output_dir, "mha_lut.pt")
    ffn_path = args.ffn_lut or os.path.join(args.output_dir, "ffn_lut.pt")
    info_path = os.path.join(os.path.dirname(os.path.abspath(mha_path)), "lut_info.json")
    try:      # two measurements into one folder would mix their tables; existing ones only with --overwrite
        with claimed_outputs([mha_path, ffn_path, info_path], f"--mha_lut '{mha_path}'", args.overwrite,
                             "tables of an earlier measurement; or choose another --output_dir"):
            return _measure(args, config, facts, hidden, ffn, dtype, mha_path, ffn_path, info_path)
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _measure(args, config, facts, hidden, ffn, dtype, mha_path, ffn_path, info_path) -> int:

    common = dict(batch_size=args.batch_size, seq_len=args.seq_len, device=args.device, dtype=dtype,
                  warmup=args.warmup, repeats=args.repeats)

    def progress(what, n, s):
        print(f"{what} {n:5d}: {s * 1e3:9.3f} ms", file=sys.stderr, flush=True)

    start = time.perf_counter()
    mha, ffn_lut = measure_luts(config, mha_step=args.mha_step, ffn_step=args.ffn_step, progress=progress, **common)
    _save(mha, mha_path)
    _save(ffn_lut, ffn_path)

    info = {
        "ckpt_dir": args.ckpt_dir, "model_type": config.model_type, "hidden_size": hidden,
        "head_units": mha.numel() - 1, "ffn_dim": ffn,
        "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "ffn_step": args.ffn_step, "mha_step": args.mha_step, "warmup": args.warmup, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "seconds": round(time.perf_counter() - start, 1),
        "mha_lut": os.path.abspath(mha_path), "ffn_lut": os.path.abspath(ffn_path),
        "full_layer_seconds": float(mha[-1] + ffn_lut[-1]),
        "fit": {name: dict(zip(("threshold", "slope", "const"), fit_piecewise_linear(t)))
                for name, t in (("mha", mha), ("ffn", ffn_lut))},
    }
    with open(info_path + ".tmp", "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(info_path + ".tmp", info_path)
    print(json.dumps({k: info[k] for k in ("mha_lut", "ffn_lut", "full_layer_seconds", "fit", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

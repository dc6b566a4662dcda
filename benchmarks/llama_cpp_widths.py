"""Which FFN widths llama.cpp runs fast: the shape effect alone, on one real model sliced to chosen widths.

    python -m benchmarks.llama_cpp_widths [--ckpt_dir checkpoints/smollm2-135m] [--quant f16 q8_0 q4_k_m]
        [--threads 2] [--repetitions 5] [--prompt_tokens 512] [--gen_tokens 128]

Every variant keeps all attention heads and, in layer i, the first w_i FFN channels of the dense checkpoint (the
function is damaged; only the shapes matter here). Uniform widths (every layer the same: 1536 = dense, 1229 = no
multiple, 1232 = 16 x 77, 1248 = 32 x 39, 1280 = 256 x 5) and uneven ones (per-layer widths drawn once around 1229,
then rounded to multiples of 16, 32 and 256, which keep the total within a few channels) are exported to GGUF F16
(export/gguf.py), quantized by llama.cpp to each --quant, and timed alternately in llama.cpp
(benchmarks/llama_cpp_bench.py: each variant in a pair with the dense one): prompt processing of --prompt_tokens tokens and --gen_tokens generated tokens,
median of --repetitions. Per variant the JSON also records the file size, the weight bytes a generated token reads
and the type llama.cpp gave each ffn_down tensor (a row of ffn_down is w_i values long).

One cell per quantization type (benchmarks/results/llama_cpp_widths/<quant>.json, skipped when done), with the
machine metadata and the load during the cell (benchmarks/record.py); --output gathers the cells.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics

import numpy as np
import torch

from arch import bind
from benchmarks.llama_cpp_bench import paired_speeds
from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell, write_json
from export.gguf import export_gguf, quantize_gguf, weight_bytes_per_token
from prune.physical import physically_pruned_copy
from utils.checkpoint import load_model

log = logging.getLogger("llama_cpp_widths")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIFORM = (1536, 1229, 1232, 1248, 1280)
UNEVEN_MULTIPLES = (1, 16, 32, 256)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "checkpoints", "smollm2-135m"))
    p.add_argument("--quant", nargs="+", default=["f16", "q8_0", "q4_k_m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--prompt_tokens", type=int, default=512)
    p.add_argument("--gen_tokens", type=int, default=128)
    p.add_argument("--work_dir", default=os.path.join(ROOT, "outputs", "llama_cpp_widths"))
    p.add_argument("--cell_dir", default=os.path.join(ROOT, "benchmarks", "results", "llama_cpp_widths"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "llama_cpp_widths.json"))
    return p


def variants(layers: int, ffn: int) -> dict:
    """{label: per-layer widths}."""
    out = {f"uniform_{w}": [w] * layers for w in UNIFORM if w <= ffn}
    rng = np.random.RandomState(0)
    free = np.clip(np.round(rng.normal(1229, 150, layers)), 256, ffn).astype(int)
    for m in UNEVEN_MULTIPLES:
        widths = [int(min(ffn, max(m, m * round(w / m)))) for w in free]
        out[f"uneven_{'free' if m == 1 else m}"] = widths
    return out


def ffn_down_types(path: str) -> list[str]:
    import gguf  # optional extra, present whenever a GGUF was written
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    return [types[n] for n in sorted((n for n in types if n.endswith("ffn_down.weight")),
                                     key=lambda n: int(n.split(".")[1]))]


def export_variants(ckpt_dir: str, work_dir: str, quants: list[str]) -> dict:
    """Export every variant once (skipped when its files exist); {label: {"widths", quant: summary}}."""
    model = load_model(ckpt_dir, "causal_lm")
    arch = bind(model)
    layers, units, ffn = arch.num_layers, arch.num_head_units, arch.ffn_dim
    out = {}
    for label, widths in variants(layers, ffn).items():
        folder = os.path.join(work_dir, label)
        files = {q: os.path.join(folder, f"model-{q}.gguf") for q in quants}
        entry = {"widths": widths}
        if not all(os.path.isfile(f) for f in files.values()):
            neuron_mask = torch.zeros(layers, ffn)
            for i, w in enumerate(widths):
                neuron_mask[i, :w] = 1
            pruned, _ = physically_pruned_copy(model, torch.ones(layers, units), neuron_mask, None)
            f16 = export_gguf(pruned, folder, tokenizer_dir=ckpt_dir, dtype="f16")["path"]
            del pruned
            for q in quants:
                if q != "f16" and not os.path.isfile(files[q]):
                    quantize_gguf(f16, files[q], q)
        for q in quants:
            entry[q] = {"path": files[q], "file_bytes": os.path.getsize(files[q]),
                        "weight_bytes_per_token": weight_bytes_per_token(files[q]),
                        "ffn_down_types": sorted(set(ffn_down_types(files[q])))}
        out[label] = entry
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files = export_variants(args.ckpt_dir, args.work_dir, args.quant)
    prompt = np.random.RandomState(1).randint(1000, 40000, size=args.prompt_tokens).tolist()
    cells = {}
    for q in args.quant:
        path = os.path.join(args.cell_dir, f"{q}.json")
        if cell_done(path):
            log.info("%s: done earlier (%s), skipped", q, path)
            cells[q] = read_cell(path)
            continue
        meta = machine_metadata(args.threads)
        reference = "uniform_1536"
        with LoadSampler() as load:
            pairs = {label: paired_speeds((reference, files[reference][q]["path"]), (label, e[q]["path"]), prompt,
                                          args.gen_tokens, args.threads, args.repetitions,
                                          progress=lambda r, label=label: log.info("%s %s: round %d/%d", q, label, r,
                                                                                   args.repetitions))
                     for label, e in files.items() if label != reference}
        ref_speed = {k: statistics.median(p["reference"][k] for p in pairs.values())
                     for k in ("prompt_tokens_per_s", "generation_tokens_per_s")}
        rows = {}
        for label, e in files.items():
            speed = ({**ref_speed, "prompt_speedup": 1.0, "generation_speedup": 1.0} if label == reference else
                     {**pairs[label]["candidate"], "prompt_speedup": pairs[label]["prompt_speedup"],
                      "generation_speedup": pairs[label]["generation_speedup"],
                      "reference_in_pair": pairs[label]["reference"]})
            rows[label] = {"widths": e["widths"], "total_channels": int(sum(e["widths"])),
                           **{k: v for k, v in e[q].items() if k != "path"}, **speed}
        cells[q] = {"quant": q, "rows": rows, "reference": reference, "machine": meta, "load": load.summary(),
                    "settings": {"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                                 "repetitions": args.repetitions, "threads": args.threads,
                                 "timing": "each variant alternated with the reference, two models loaded"}}
        write_cell(path, cells[q])
        log.info("%s: load %s", q, cells[q]["load"])
    write_json(args.output, {"cells": cells})
    print(table(cells))
    return 0


def table(cells: dict) -> str:
    lines = ["| variant | quant | ffn_down type | file MB | prompt tok/s | gen tok/s | prompt vs dense (paired) | "
             "gen vs dense | channels kept |", "|---|---|---|---|---|---|---|---|---|"]
    for q, cell in cells.items():
        dense = cell["rows"][cell["reference"]]
        for label, r in cell["rows"].items():
            lines.append(f"| {label} | {q} | {'/'.join(r['ffn_down_types'])} | {r['file_bytes'] / 1e6:.1f} | "
                         f"{r['prompt_tokens_per_s']:.0f} | {r['generation_tokens_per_s']:.1f} | "
                         f"{r['prompt_speedup']:.2f}x | {r['generation_speedup']:.2f}x | "
                         f"{r['total_channels'] / dense['total_channels']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

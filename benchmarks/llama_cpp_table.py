"""Dense vs pruned decoders in llama.cpp: file size, perplexity, prompt and generation tokens/s, bytes per token.

    python -m benchmarks.llama_cpp_table --model dense=checkpoints/smollm2-135m \\
        --model 0.8=outputs/llm_cells/models/ours-0.8 --model 0.5=outputs/llm_cells/models/ours-0.5 \\
        [--llama_graph dense] [--quant f16 q8_0 q4_k_m] [--threads 2] [--repetitions 5]
        [--sizes 128x64 512x128] [--eval_sequences 32]

Every --model (LABEL=FOLDER: a save_pruned folder or an unpruned checkpoint; the first is the reference) is
exported to GGUF F16 (export/gguf.py, architecture deci) and quantized by llama.cpp's quantizer to each other
--quant type; --llama_graph LABEL also exports that model through llama.cpp's plain `llama` graph (same weights) as
LABEL@llama, to see what the per-layer `deci` graph costs. Then, in llama.cpp (llama-cpp-python, --threads):
- file size and the weight bytes a generated token reads (every tensor but the token embedding, from the GGUF
  tensor sizes: generation is memory-bound, so dense bytes / pruned bytes is the limit of its speedup);
- perplexity on the first --eval_sequences consecutive windows of --seq_len tokens of --eval_text (the project's
  causal_lm protocol: each window from an empty cache, token-weighted NLL), beside PyTorch's fp32 perplexity of
  the same windows;
- prompt and generation tokens/s for each PROMPTxGEN of --sizes: each model in a pair with the reference of its
  type (only those two loaded), timed in turn, --repetitions rounds after a warm-up, medians; speedups are the
  ratios within each pair (benchmarks/llama_cpp_bench.py), the reference's tokens/s the median over its pairs.
Goals checked per row (against the reference of the same type): prompt and generation speedups >= 0.9 x the
bytes limit and >= 1; file <= reference file x the weight-bytes ratio at F16 + 2 %; llama.cpp F16 perplexity within
1 % of PyTorch's.

Cells (one JSON each under --cell_dir, skipped when done, with the machine metadata and the load during the cell):
pytorch-LABEL (PyTorch perplexity), ppl-LABEL-QUANT (llama.cpp perplexity), speed-QUANT-PROMPTxGEN-LABEL (that
model alternated with the reference). --output gathers them into one JSON and prints the Markdown table.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics

import torch
from transformers import AutoTokenizer

from benchmarks.llama_cpp_bench import paired_speeds, perplexity
from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell, write_json
from dataset.lm_text import evaluation_sequences, lm_batches
from evaluate.perplexity import perplexity as torch_perplexity
from export.gguf import export_gguf, ffn_width_misfits, quantize_gguf, weight_bytes_per_token
from export.hf_load import load_causal_lm

log = logging.getLogger("llama_cpp_table")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "llama_cpp_table.json")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="LABEL=FOLDER (repeat; the first is the reference)")
    p.add_argument("--llama_graph", action="append", default=[], help="LABEL: also export it as llama.cpp 'llama'")
    p.add_argument("--quant", nargs="+", default=["f16", "q8_0", "q4_k_m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--sizes", nargs="*", default=["128x64", "512x128"],
                   help="PROMPTxGENERATED tokens (none: only the untimed cells, exports and perplexities)")
    p.add_argument("--eval_text", default=os.path.join(ROOT, "data", "lm", "eval.txt"))
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--eval_sequences", type=int, default=32, help="first N windows (0: all)")
    p.add_argument("--ppl_quants", nargs="*", default=None,
                   help="types whose llama.cpp perplexity is measured for every model (default: all --quant; "
                        "the reference gets every type)")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "outputs", "llama_cpp_table"))
    p.add_argument("--cell_dir", default=os.path.join(ROOT, "benchmarks", "results", "llama_cpp_table"))
    p.add_argument("--output", default=RESULTS)
    return p


def _size(spec: str) -> tuple[int, int]:
    prompt, gen = spec.lower().split("x")
    return int(prompt), int(gen)


def _cell(args, name: str, compute) -> dict:
    """A finished cell from disk, or computed now, recorded with the machine and the load, and written."""
    path = os.path.join(args.cell_dir, name + ".json")
    if cell_done(path):
        log.info("%s: done earlier, skipped", name)
        return read_cell(path)
    meta = machine_metadata(args.threads)
    with LoadSampler() as load:
        data = compute()
    data.update(machine=meta, load=load.summary())
    write_cell(path, data)
    log.info("%s: %s (load %s)", name, {k: v for k, v in data.items() if not k.endswith("_s") and k != "machine"},
             data["load"])
    return data


def export_all(args, models: dict) -> dict:
    """{label: {quant: file}} with every GGUF written once (skipped when it exists)."""
    files = {}
    for label, (folder, architecture) in models.items():
        out_dir = os.path.join(args.work_dir, label.replace("@", "_"))
        f16 = os.path.join(out_dir, "model-f16.gguf")
        if not os.path.isfile(f16):
            model = load_causal_lm(folder)
            export_gguf(model, out_dir, folder, dtype="f16", architecture=architecture)
            del model
        files[label] = {}
        for quant in args.quant:
            path = f16 if quant == "f16" else os.path.join(out_dir, f"model-{quant}.gguf")
            if not os.path.isfile(path):
                quantize_gguf(f16, path, quant)
            files[label][quant] = path
    return files


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models = {}
    for spec in args.model:
        label, folder = spec.split("=", 1)
        models[label] = (folder, "deci")
        if label in args.llama_graph:
            models[label + "@llama"] = (folder, "llama")
    reference = next(iter(models))
    files = export_all(args, models)
    with open(args.eval_text, encoding="utf-8") as f:
        text = f.read()
    first_folder = models[reference][0]
    windows = evaluation_sequences(text, AutoTokenizer.from_pretrained(first_folder), args.seq_len,
                                   args.eval_sequences or None)

    rows = []
    for label, (folder, _) in models.items():
        torch_ppl = _cell(args, f"pytorch-{label}", lambda: {
            "perplexity": torch_perplexity(load_causal_lm(folder).float(), lm_batches(windows.to(torch.long), 8))[
                "perplexity"]})["perplexity"]
        for quant in args.quant:
            path = files[label][quant]
            if args.ppl_quants is None or quant in args.ppl_quants or label == reference:
                ppl = _cell(args, f"ppl-{label}-{quant}",
                            lambda: {"perplexity": perplexity(path, windows, args.threads)})
            else:
                ppl = {"perplexity": None}
            rows.append({"model": label, "folder": folder, "quant": quant, "file_bytes": os.path.getsize(path),
                         "weight_bytes_per_token": weight_bytes_per_token(path),
                         "ffn_width_misfits": len(ffn_width_misfits(files[label]["f16"], quant).get("layers", {})),
                         "perplexity": ppl["perplexity"], "pytorch_perplexity_fp32": torch_ppl, "speed": {}})
    for quant in args.quant:
        for size in args.sizes:
            p, g = _size(size)
            prompt = windows.reshape(-1)[:p].tolist()
            pairs = {}
            for label in models:
                if label == reference:
                    continue
                pairs[label] = _cell(args, f"speed-{quant}-{size}-{label}", lambda label=label: paired_speeds(
                    (reference, files[reference][quant]), (label, files[label][quant]), prompt, g, args.threads,
                    args.repetitions, progress=lambda r: log.info("speed %s %s %s: round %d/%d", quant, size, label,
                                                                  r, args.repetitions)))
            for row in rows:
                if row["quant"] != quant:
                    continue
                if row["model"] == reference:      # its speed: the median over the pairs it was timed in
                    row["speed"][size] = {k: statistics.median(c["reference"][k] for c in pairs.values())
                                          for k in ("prompt_tokens_per_s", "generation_tokens_per_s")}
                    row["speed"][size].update(pairs=len(pairs))
                else:
                    c = pairs[row["model"]]
                    row["speed"][size] = {**c["candidate"], "paired_prompt_speedup": c["prompt_speedup"],
                                          "paired_generation_speedup": c["generation_speedup"],
                                          "reference_in_pair": c["reference"], "load": c["load"]}
    add_ratios(rows, reference)
    write_json(args.output, {"rows": rows, "reference": reference, "sizes": args.sizes, "threads": args.threads,
                             "repetitions": args.repetitions, "seq_len": args.seq_len,
                             "eval_windows": int(windows.shape[0]), "machine": machine_metadata(args.threads)})
    print(table(rows, args.sizes))
    return 0


def add_ratios(rows: list[dict], reference: str) -> None:
    """Per row, against the reference model of the same type: speedups, the bytes limit and the goals."""
    ref = {r["quant"]: r for r in rows if r["model"] == reference}
    f16 = {r["model"]: r for r in rows if r["quant"] == "f16"}
    for r in rows:
        base = ref[r["quant"]]
        r["bytes_ratio_limit"] = base["weight_bytes_per_token"] / r["weight_bytes_per_token"]
        if r["model"] in f16 and reference in f16:
            weight_ratio = f16[r["model"]]["file_bytes"] / f16[reference]["file_bytes"]
            r["size_goal_bytes"] = base["file_bytes"] * (weight_ratio + 0.02)
            r["size_goal_met"] = r["file_bytes"] <= r["size_goal_bytes"]
        r["perplexity_vs_pytorch"] = (r["perplexity"] / r["pytorch_perplexity_fp32"] - 1
                                      if r["perplexity"] is not None else None)
        for size, s in r["speed"].items():
            b = base["speed"][size]
            # the ratio measured within the candidate's own pair where there is one (the robust figure)
            s["prompt_speedup"] = s.get("paired_prompt_speedup",
                                        s["prompt_tokens_per_s"] / b["prompt_tokens_per_s"])
            s["generation_speedup"] = s.get("paired_generation_speedup",
                                            s["generation_tokens_per_s"] / b["generation_tokens_per_s"])
            s["generation_over_limit"] = s["generation_speedup"] / r["bytes_ratio_limit"]
            s["prompt_over_limit"] = s["prompt_speedup"] / r["bytes_ratio_limit"]
            need = max(1.0, 0.9 * r["bytes_ratio_limit"]) if r["model"] != reference else 1.0
            s["speed_goal_met"] = s["prompt_speedup"] >= need - 1e-9 and s["generation_speedup"] >= need - 1e-9


def table(rows: list[dict], sizes: list[str]) -> str:
    head = "| model | type | file MB | bytes/token MB | limit | ppl llama.cpp (PyTorch) | " + " | ".join(
        f"{s}: prompt tok/s | gen tok/s" for s in sizes) + " |"
    lines = [head, "|" + "---|" * (6 + 2 * len(sizes))]
    for r in rows:
        speeds = []
        for size in sizes:
            s = r["speed"].get(size)
            speeds.append(f"{s['prompt_tokens_per_s']:.0f} ({s['prompt_speedup']:.2f}x) | "
                          f"{s['generation_tokens_per_s']:.1f} ({s['generation_speedup']:.2f}x)" if s else " | ")
        lines.append(f"| {r['model']} | {r['quant']} | {r['file_bytes'] / 1e6:.1f} | "
                     f"{r['weight_bytes_per_token'] / 1e6:.1f} | {r['bytes_ratio_limit']:.2f}x | "
                     + (f"{r['perplexity']:.2f}" if r["perplexity"] is not None else "–")
                     + f" ({r['pytorch_perplexity_fp32']:.2f}) | " + " | ".join(speeds) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Write a GGUF (llama.cpp architecture deci) of a pruned decoder folder or an unpruned checkpoint, optionally
quantized with llama.cpp's quantizer.

    python -m scripts.export_gguf --model_dir outputs/.../pruned_model --output_dir gguf/ [--dtype f16]
        [--quantize q8_0 q4_k_m] [--tokenizer_dir DIR]

--model_dir is either a folder written by save_pruned (it holds pruning.json; loaded with load_pruned) or a plain
HF checkpoint of a Llama / Mistral / Qwen2 causal LM (the dense model, so dense and pruned run in one engine).
Writes <output_dir>/model-<dtype>.gguf and, per --quantize, model-<type>.gguf; prints a JSON summary (file sizes,
per-layer head/kv-head/FFN counts, phantom heads/channels, weight bytes read per generated token).
Files already in --output_dir are not replaced without --overwrite; two exports into one folder are serialised
by a lock; each file is written under a temporary name and renamed into place, so an interrupted export leaves
the earlier files or none (a rerun removes what a killed one left and says so).
Exit status 0: written; 2: a bad folder, option or missing package (one error line); 130/143: Ctrl-C/SIGTERM.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys

from export.gguf import GGUFExportError, check_exportable, check_quant_types, export_gguf, gguf_file_name, quantize_gguf
from export.hf_load import load_causal_lm
from run.folder import claimed_outputs
from run.script_guard import check_model_folder, check_output_folder, guarded_main
from run.safety import writing
from utils.checkpoint import load_config

log = logging.getLogger("export_gguf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a save_pruned folder or an unpruned HF checkpoint folder")
    p.add_argument("--output_dir", required=True, help="a folder for the .gguf files (not --model_dir)")
    p.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    p.add_argument("--quantize", nargs="*", default=[], help="llama.cpp types, e.g. q8_0 q4_k_m")
    p.add_argument("--tokenizer_dir", default=None, help="where tokenizer.json is (default: --model_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace .gguf files already in --output_dir")
    return p


def _export(args) -> int:
    kinds = check_quant_types(args.quantize, args.dtype)
    check_model_folder(args.model_dir, "--model_dir")
    tokenizer_dir = args.tokenizer_dir or args.model_dir
    try:
        check_exportable(load_config(args.model_dir), tokenizer_dir)
    except GGUFExportError as e:
        raise GGUFExportError(f"--model_dir '{args.model_dir}': {e}") from None
    check_output_folder(args.output_dir, "--output_dir", {"--model_dir": args.model_dir})
    outputs = [os.path.join(args.output_dir, name) for name in
               [gguf_file_name(args.dtype)] + [f"model-{q}.gguf" for q in kinds]]
    with claimed_outputs(outputs, f"--output_dir '{args.output_dir}'", args.overwrite,
                         "written by an earlier export"):
        leftovers = sorted(glob.glob(os.path.join(args.output_dir, "model-*.gguf.partial")))
        for path in leftovers:
            log.warning("removing %s, left by an export that was interrupted", path)
            os.remove(path)
        with writing("the GGUF files", args.output_dir, [o + ".partial" for o in outputs]):
            model = load_causal_lm(args.model_dir)
            summary = export_gguf(model, args.output_dir, tokenizer_dir, dtype=args.dtype)
            summary["quantized"] = [quantize_gguf(summary["path"], path, q) for q, path in zip(kinds, outputs[1:])]
    print(json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return guarded_main(lambda: _export(args), "the GGUF export")


if __name__ == "__main__":
    sys.exit(main())

"""Write a GGUF (llama.cpp architecture deci) of a pruned decoder folder or an unpruned checkpoint, optionally
quantized with llama.cpp's quantizer.

    python -m scripts.export_gguf --model_dir outputs/.../pruned_model --output_dir gguf/ [--dtype f16]
        [--quantize q8_0 q4_k_m] [--tokenizer_dir DIR]

--model_dir is either a folder written by save_pruned (it holds pruning.json; loaded with load_pruned) or a plain
HF checkpoint of a Llama / Mistral / Qwen2 causal LM (the dense model, so dense and pruned run in one engine).
Writes <output_dir>/model-<dtype>.gguf and, per --quantize, model-<type>.gguf; prints a JSON summary (file sizes,
per-layer head/kv-head/FFN counts, phantom heads/channels, weight bytes read per generated token).
Exit status 0: written; 2: a bad folder, option or missing package.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from transformers import AutoModelForCausalLM

from export.gguf import export_gguf, quantize_gguf
from export.hf_load import load_pruned
from utils.errors import UserError

log = logging.getLogger("export_gguf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a save_pruned folder or an unpruned HF checkpoint folder")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    p.add_argument("--quantize", nargs="*", default=[], help="llama.cpp types, e.g. q8_0 q4_k_m")
    p.add_argument("--tokenizer_dir", default=None, help="where tokenizer.json is (default: --model_dir)")
    return p


def load_model(folder: str):
    """A pruned folder (pruning.json) through load_pruned, else the checkpoint with from_pretrained."""
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserError(f"--model_dir '{folder}' is not a model folder (no config.json)")
    if os.path.isfile(os.path.join(folder, "pruning.json")):
        return load_pruned(folder)
    return AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = load_model(args.model_dir)
        summary = export_gguf(model, args.output_dir, args.tokenizer_dir or args.model_dir, dtype=args.dtype)
        summary["quantized"] = [quantize_gguf(summary["path"], os.path.join(args.output_dir, f"model-{q}.gguf"), q)
                                for q in args.quantize]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

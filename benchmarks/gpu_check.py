"""The GPU check (issue 33), for a session lent a CUDA machine: one prepared run that fits 8 minutes on one GPU with
only torch, transformers, accelerate and onnxruntime there (no registry), writing one JSON:

  parity        pruned-vs-masked outputs of a BERT-base-size encoder and a Llama decoder, float32 and bfloat16
  bert_base     main.py on a random-initialised BERT-base (12 x 12 heads x 3,072 neurons) at 0.5 of the MACs with
                2,048 synthetic SST-2 rows: seconds per stage (the paper: under 3 minutes on one GPU)
  shared        the shared benchmark (../shared/benchmark) at 0.5 with per-stage seconds, when it is there
  latency       latency tables measured on the device (scripts/measure_latency), a --metric latency search at 0.5,
                and the pruned model against the unpruned one in benchmarks/latency (batch 1/32 x 128)
  llama_cuda    a tiny Llama through main.py on the device, and with --device_map auto and a small --max_memory

    bash benchmarks/gpu_check.sh                 # on the GPU machine: outputs/gpu_check/gpu_check.json
    bash benchmarks/gpu_check.sh --dry-run       # the same steps on the CPU with tiny sizes (a few minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "benchmark")
SIZES = {   # hidden, layers, heads, ffn, samples, latency batch x tokens
    "gpu": {"hidden": 768, "layers": 12, "heads": 12, "ffn": 3072, "samples": 2048, "batch": 32, "tokens": 128},
    "dry": {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "samples": 64, "batch": 8, "tokens": 64},
}


def _words(n: int = 2000) -> list[str]:
    rng = random.Random(0)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(n)]


def make_checkpoint(folder: str, size: dict, words: list[str]) -> str:
    """A random BERT of the given size with a word-level tokenizer, saved as a sequence classifier."""
    from transformers import AutoModelForSequenceClassification, BertConfig, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                        num_attention_heads=size["heads"], intermediate_size=size["ffn"], num_labels=2)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def make_sst2(folder: str, words: list[str], train: int, dev: int) -> str:
    rng = random.Random(1)
    os.makedirs(os.path.join(folder, "SST-2"), exist_ok=True)
    for name, n in (("train.tsv", train), ("dev.tsv", dev)):
        rows = [" ".join(rng.choices(words, k=rng.randint(4, 40))) + f"\t{rng.randint(0, 1)}" for _ in range(n)]
        with open(os.path.join(folder, "SST-2", name), "w") as f:
            f.write("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def parity(device: str, size: dict) -> dict:
    """max |pruned - masked| / max |masked| for an encoder and a decoder, per dtype."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, LlamaConfig
    from arch import bind
    from arch.hooks import apply_masks
    from prune.physical import physically_pruned_copy
    configs = {
        "bert": (AutoModelForSequenceClassification, BertConfig(
            vocab_size=1000, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"], intermediate_size=size["ffn"])),
        "llama": (AutoModelForCausalLM, LlamaConfig(
            vocab_size=1000, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"], num_key_value_heads=size["heads"] // 2,
            intermediate_size=size["ffn"])),
    }
    out = {}
    for family, (auto, config) in configs.items():
        torch.manual_seed(0)
        base = auto.from_config(config).eval()
        arch = bind(base)
        gen = torch.Generator().manual_seed(1)
        head = (torch.rand(arch.num_layers, arch.num_head_units, generator=gen) > 0.4).float()
        neuron = (torch.rand(arch.num_layers, arch.ffn_dim, generator=gen) > 0.5).float()
        head[0], neuron[-1] = 0, 0                   # a layer with no heads, a layer with no neurons
        ids = torch.randint(5, 1000, (4, 64), generator=gen)
        for dtype in (torch.float32, torch.bfloat16):
            model = base.to(device=device, dtype=dtype)
            pruned, _ = physically_pruned_copy(model, head, neuron)
            with torch.inference_mode():
                with apply_masks(bind(model), head.to(device), neuron.to(device)):
                    want = model(input_ids=ids.to(device)).logits.float()
                got = pruned(input_ids=ids.to(device)).logits.float()
                full = model(input_ids=ids.to(device)).logits.float()
            out[f"{family}_{str(dtype).split('.')[-1]}"] = {
                "max_abs_diff": float((got - want).abs().max()), "max_abs_logit": float(want.abs().max()),
                "masks_change_the_output_by": float((full - want).abs().max()),
                "relative": float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))}
            del pruned
    return out


def run_main(name: str, argv: list[str], out_dir: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *argv, "--output_dir", out_dir,
                           "--overwrite"], capture_output=True, text=True, cwd=ROOT)
    step = {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1), "stderr_tail": proc.stderr[-1200:]}
    path = os.path.join(out_dir, "results.json")
    if proc.returncode == 0 and os.path.isfile(path):
        with open(path) as f:
            r = json.load(f)
        step |= {k: r.get(k) for k in ("seconds", "mac_ratio", "metric_before", "metric_after", "budget_ratio")}
    print(f"{name}: rc {proc.returncode} in {step['wall_s']} s", flush=True)
    return step


def run_module(name: str, argv: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT)
    print(f"{name}: rc {proc.returncode}", flush=True)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1), "stderr_tail": proc.stderr[-1200:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="CPU, tiny sizes")
    p.add_argument("--out", default=os.path.join(ROOT, "outputs", "gpu_check"))
    p.add_argument("--steps", nargs="+", default=["parity", "bert_base", "shared", "latency", "llama_cuda"])
    args = p.parse_args(argv)
    size = SIZES["dry" if args.dry_run else "gpu"]
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    report = {"dry_run": args.dry_run, "device": device, "size": size, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "steps": {}}
    words = _words()
    ckpt, data = os.path.join(args.out, "bert"), os.path.join(args.out, "glue")
    common = ["--task_name", "sst2", "--data_dir", data, "--constraint", "0.5", "--device", device]

    def record(name, fn):
        start = time.perf_counter()
        try:
            report["steps"][name] = fn()
        except Exception as e:     # one failed step must not lose the others' numbers
            report["steps"][name] = {"error": f"{type(e).__name__}: {e}"}
        report["steps"][name]["step_s"] = round(time.perf_counter() - start, 1)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(report, f, indent=1)

    if "parity" in args.steps:
        record("parity", lambda: parity(device, size))
    if {"bert_base", "latency"} & set(args.steps):
        make_checkpoint(ckpt, size, words)
        make_sst2(data, words, size["samples"], 256)
    if "bert_base" in args.steps:
        record("bert_base", lambda: run_main("bert_base", ["--ckpt_dir", ckpt, *common, "--num_samples",
                                                           str(size["samples"])], os.path.join(args.out, "bert_run")))
    if "shared" in args.steps:
        def shared():
            if not os.path.isdir(SHARED):
                return {"skipped": f"{SHARED} is not on this machine"}
            return run_main("shared", ["--task_name", "sst2", "--ckpt_dir", os.path.join(SHARED, "minilm-movie-sst2"),
                                       "--data_dir", os.path.join(SHARED, "movie-sst2"), "--constraint", "0.5",
                                       "--device", device, "--num_samples", str(size["samples"])],
                            os.path.join(args.out, "shared_run"))
        record("shared", shared)
    if "latency" in args.steps:
        def latency():
            luts = os.path.join(args.out, "luts")
            step = {"tables": run_module("measure_latency", [
                "scripts.measure_latency", "--ckpt_dir", ckpt, "--device", device, "--batch_size", str(size["batch"]),
                "--seq_len", str(size["tokens"]), "--ffn_step", str(size["ffn"] // 16), "--output_dir", luts,
                "--overwrite"])}
            step["search"] = run_main("latency_search", ["--ckpt_dir", ckpt, *common, "--metric", "latency",
                                                         "--mha_lut", os.path.join(luts, "mha_lut.pt"),
                                                         "--ffn_lut", os.path.join(luts, "ffn_lut.pt"),
                                                         "--num_samples", str(size["samples"])],
                                      os.path.join(args.out, "latency_run"))
            table = os.path.join(args.out, "latency_table.json")
            step["timing"] = run_module("latency_table", [
                "benchmarks.latency", "--ckpt_dir", ckpt, "--mask_dir", os.path.join(args.out, "latency_run"),
                "--device", device, "--batch_sizes", "1", str(size["batch"]), "--seq_lens", str(size["tokens"]),
                "--output", table])
            if os.path.isfile(table):
                with open(table) as f:
                    step["timing"]["results"] = [{k: r.get(k) for k in (
                        "batch_size", "seq_len", "original_s", "pruned_s", "speedup", "ideal_mac_speedup",
                        "ideal_physical_speedup", "fraction_of_physical_ideal", "ideal_floor_speedup",
                        "fraction_of_floor_ideal")} for r in json.load(f)["results"]]
            return step
        record("latency", latency)
    if "llama_cuda" in args.steps:
        def llama():
            step = run_module("llama", ["benchmarks.gpu_check_llama", args.out, device])
            path = os.path.join(args.out, "llama_check.json")
            if os.path.isfile(path):
                with open(path) as f:
                    step["runs"] = json.load(f)
            return step
        record("llama_cuda", llama)
    print(json.dumps({name: {k: v for k, v in s.items() if k in ("rc", "error", "skipped", "step_s")}
                      for name, s in report["steps"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

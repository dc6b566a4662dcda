"""Pruning time and peak memory of prune.pipeline.prune, stage by stage.

    python -m benchmarks.pruning_time --output bench_pruning.json                       # both models, kwon + lsq
    python -m benchmarks.pruning_time --models bert-base --methods kwon lsq --num_samples 256 --output b.json

Models (weights do not change the amount of work, so random initialisation is enough):
  bert-base  BERT-base: 12 layers x 12 heads, hidden 768, FFN 3072, vocab 30522, 2 labels, random init;
  minilm     the embedded default's size: 6 layers x 12 heads, hidden 384, FFN 1536 -- the real
             checkpoint checkpoints/minilm-movie-sst2 when it is there (--minilm_ckpt), else random init.

Data: `--num_samples` random token sequences of exactly `--seq_len` tokens ([CLS] ... [SEP], no
padding) with random binary labels, in batches of `--batch_size` (main.py's default, 32). The MAC
count uses seq_len tokens per sequence.

Every (model, method) runs in a fresh Python subprocess, so that its peak resident memory
(getrusage ru_maxrss) is its own. Seconds per stage are the pipeline's own timers (gradients,
search, rearrange, mask_tuning); the benchmark also records the peak RSS reached by the end of each
stage (a running maximum, so the stage that raises it is the one that needed the memory), the RSS
after building the model and the data (the baseline the pruning adds to), and the machine's load
average before and after and the process's CPU seconds per stage (about threads x wall seconds when
the cores were free; much less means other work had them), since timings on a shared machine depend
on the load.

The JSON (`--output`, rewritten after every configuration so a long run keeps what is done) holds
one entry per configuration under "runs".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig

import prune.pipeline as pipeline
from arch import bind
from prune.masks import kept_per_layer
from utils.checkpoint import load_model
from utils.device import current_rss_mb, peak_gpu_mb, peak_rss_mb, resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_MINILM_CKPT = os.path.join(ROOT, "checkpoints", "minilm-movie-sst2")
MODEL_SHAPES = {
    "bert-base": dict(num_hidden_layers=12, num_attention_heads=12, hidden_size=768, intermediate_size=3072),
    "minilm": dict(num_hidden_layers=6, num_attention_heads=12, hidden_size=384, intermediate_size=1536),
}
STAGES = ("gradients", "search", "rearrange", "mask_tuning")


# ----------------------------------------------------------------------------------------------
# worker: one configuration, in its own process
# ----------------------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """User + system CPU time of this process: against wall time it shows how much of the machine it got."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_model(name: str, minilm_ckpt: str | None):
    """Returns (model, description)."""

    if name == "minilm" and minilm_ckpt and os.path.isfile(os.path.join(minilm_ckpt, "config.json")):
        return load_model(minilm_ckpt, "classification"), f"checkpoint {minilm_ckpt}"
    config = BertConfig(vocab_size=30522, num_labels=2, max_position_embeddings=512, **MODEL_SHAPES[name])
    model = AutoModelForSequenceClassification.from_config(config).eval()
    return model, "random init " + ", ".join(f"{k}={v}" for k, v in MODEL_SHAPES[name].items())


def random_batches(vocab_size: int, num_samples: int, seq_len: int, batch_size: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        ids = torch.randint(1000, vocab_size, (n, seq_len), generator=gen)
        ids[:, 0], ids[:, -1] = 101, 102          # [CLS] ... [SEP] (BERT vocabulary)
        batches.append({"input_ids": ids,
                        "token_type_ids": torch.zeros(n, seq_len, dtype=torch.long),
                        "attention_mask": torch.ones(n, seq_len, dtype=torch.long),
                        "labels": torch.randint(0, 2, (n,), generator=gen)})
    return batches


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def worker(spec: dict) -> dict:
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    device = resolve_device(spec["device"])
    memory = {"rss_after_imports": current_rss_mb()}

    start = time.perf_counter()
    model, description = build_model(spec["model"], spec["minilm_ckpt"])
    model.to(device)
    arch = bind(model)
    build_seconds = time.perf_counter() - start
    memory["rss_after_model"] = current_rss_mb()
    batches = random_batches(model.config.vocab_size, spec["num_samples"], spec["seq_len"], spec["batch_size"],
                             spec["seed"])
    memory["rss_after_data"] = current_rss_mb()
    memory["peak_rss_before_prune"] = round(peak_rss_mb(), 1)

    stage_memory = {}

    stage_cpu = {}

    class MeasuringTimer(pipeline._Timer):
        """The pipeline's stage timer, plus the peak RSS reached by the end of the stage and the CPU time."""

        def __enter__(self):
            self.cpu_start = cpu_seconds()
            return super().__enter__()

        def __exit__(self, *exc):
            super().__exit__(*exc)
            stage_cpu[self.name] = round(cpu_seconds() - self.cpu_start, 3)
            stage_memory[self.name] = {"peak_rss_so_far": round(peak_rss_mb(), 1), "rss_at_end": current_rss_mb()}
            if device.type == "cuda":
                stage_memory[self.name]["peak_gpu_so_far"] = round(peak_gpu_mb(device), 1)

    options = pipeline.PruneOptions(spec["constraint"], method=spec["method"], seed=spec["seed"],
                                    **({"teacher": spec["teacher"]} if spec["teacher"] else {}))
    original_timer = pipeline._Timer
    pipeline._Timer = MeasuringTimer
    try:
        start = time.perf_counter()
        result = pipeline.prune(model, arch, batches, spec["seq_len"], options, "first")
        total = time.perf_counter() - start
    finally:
        pipeline._Timer = original_timer
    head_mask, neuron_mask = result.final
    memory["peak_rss"] = round(peak_rss_mb(), 1)
    memory["peak_gpu"] = None if device.type != "cuda" else round(peak_gpu_mb(device), 1)
    memory["stages"] = stage_memory
    return {
        "model": spec["model"],
        "model_description": description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "method": spec["method"],
        "teacher": options.teacher,
        "ridge": options.ridge if hasattr(options, "ridge") else None,
        "constraint": spec["constraint"],
        "num_samples": spec["num_samples"],
        "seq_len": spec["seq_len"],
        "batch_size": spec["batch_size"],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": {**result.seconds, "pruning_total": round(total, 3), "build_model": round(build_seconds, 3)},
        "cpu_seconds": stage_cpu,          # per stage; about threads x seconds when the cores were free
        "memory_mb": memory,
        "mac_ratio": result.mac_ratio,
        "heads_kept_per_layer": kept_per_layer(head_mask),
        "neurons_kept_per_layer": kept_per_layer(neuron_mask),
    }


# ----------------------------------------------------------------------------------------------
# driver: one subprocess per configuration
# ----------------------------------------------------------------------------------------------

def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_in_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "benchmarks.pruning_time", "--_worker", json.dumps(spec), "--_result", result_path]
        load_before = load_average()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.isfile(result_path):
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            return {**spec, "error": f"worker exited with status {proc.returncode}", "output_tail": tail,
                    "wall_seconds": round(wall, 1)}
        with open(result_path) as f:
            result = json.load(f)
    result["subprocess_wall_seconds"] = round(wall, 1)
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    return result


def write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:<10} {r['method']:<5} ERROR: {r['error']}"
    s, m = r["seconds"], r["memory_mb"]
    stages = "  ".join(f"{k} {s.get(k, 0):8.1f}" for k in STAGES)
    return (f"{r['model']:<10} {r['method']:<5} n={r['num_samples']:<5} len={r['seq_len']:<4} {stages}  "
            f"total {s['pruning_total']:8.1f} s  peak RSS {m['peak_rss']:8.1f} MB "
            f"(before pruning {m['peak_rss_before_prune']:.1f} MB)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["bert-base", "minilm"], choices=sorted(MODEL_SHAPES))
    p.add_argument("--methods", "--method", nargs="+", default=["kwon", "lsq"], choices=["kwon", "lsq"])
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--teacher", default=None, choices=["schedule", "full"],
                   help="default: what main.py uses for the method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--minilm_ckpt", default=DEFAULT_MINILM_CKPT,
                   help="the real checkpoint for --models minilm, used when it exists")
    p.add_argument("--output", default=None, help="JSON file to write (required)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args._worker:                               # inside the subprocess
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = worker(json.loads(args._worker))
        write_json(args._result, result)
        return 0
    if not args.output:
        raise SystemExit("--output JSON file is required")
    if not 0 < args.constraint < 1:
        raise SystemExit("--constraint must be in (0, 1)")
    report = {
        "benchmark": "pruning_time",
        "argv": sys.argv[1:],
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "torch_threads_default": torch.get_num_threads(),
                    "git_commit": git_commit()},
        "runs": [],
    }
    failed = 0
    for model in args.models:
        for method in args.methods:
            spec = {"model": model, "method": method, "constraint": args.constraint,
                    "num_samples": args.num_samples, "seq_len": args.seq_len, "batch_size": args.batch_size,
                    "teacher": args.teacher, "seed": args.seed, "device": args.device, "threads": args.threads,
                    "minilm_ckpt": args.minilm_ckpt}
            print(f"running {model} / {method} ({args.num_samples} samples x {args.seq_len} tokens) ...", flush=True)
            result = run_in_subprocess(spec)
            failed += "error" in result
            report["runs"].append(result)
            write_json(args.output, report)
            print(format_row(result), flush=True)
            if "error" in result:
                print(result["output_tail"], file=sys.stderr)
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

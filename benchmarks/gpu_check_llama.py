"""The decoder part of the GPU check (benchmarks/gpu_check.py): a tiny random Llama with a byte-level BPE tokenizer
through main.py on the device, then (on CUDA) with --device_map auto and a small --max_memory (offload and layer
streaming), and with two nccl processes when there are two GPUs. Writes OUT/llama_check.json.

    python -m benchmarks.gpu_check_llama OUT DEVICE
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    out, device = (argv or sys.argv[1:])[:2]
    from transformers import AutoModelForCausalLM
    from tests.test_main_lm import _text
    from tests.tiny import byte_level_bpe_tokenizer, tiny_decoder_config
    report = {}
    tok = byte_level_bpe_tokenizer(_text(0, 80).splitlines())
    llama = os.path.join(out, "llama")
    config = tiny_decoder_config("llama", vocab_size=len(tok) + 3)
    config.intermediate_size = 256
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(llama)
    tok.save_pretrained(llama)
    for name, seed, n in (("calib.txt", 0, 80), ("eval.txt", 1, 40)):
        with open(os.path.join(out, name), "w") as f:
            f.write(_text(seed, n))
    lm = ["--task_name", "causal_lm", "--ckpt_dir", llama, "--calib_file", os.path.join(out, "calib.txt"),
          "--eval_file", os.path.join(out, "eval.txt"), "--constraint", "0.6", "--num_samples", "8",
          "--max_seq_length", "32", "--batch_size", "4", "--speed_batch_size", "2", "--speed_seq_len", "16",
          "--calib_mix", "none"]
    runs = {"llama_device": [sys.executable, "main.py", *lm, "--device", device, "--save_pruned"]}
    if device.startswith("cuda"):
        runs["llama_device_map"] = [sys.executable, "main.py", *lm, "--device", device, "--device_map", "auto",
                                    "--max_memory", "0=200KB,cpu=2GB"]
        if torch.cuda.device_count() >= 2:
            runs["llama_nccl"] = ["torchrun", "--standalone", "--nproc_per_node", "2", "main.py", *lm]
    for name, argv in runs.items():
        run_dir = os.path.join(out, name)
        start = time.perf_counter()
        proc = subprocess.run([*argv, "--output_dir", run_dir, "--overwrite"], capture_output=True, text=True, cwd=ROOT)
        report[name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
                        "stderr_tail": proc.stderr[-1500:]}
        path = os.path.join(run_dir, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                r = json.load(f)
            report[name]["perplexity"] = [r["metric_before"], r["metric_after"]]
        print(name, proc.returncode, flush=True)
    with open(os.path.join(out, "llama_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0 if all(r["rc"] == 0 for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

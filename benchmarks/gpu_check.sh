#!/usr/bin/env bash
# The GPU check, for a session that is lent a CUDA machine (the device tool): the CUDA paths that the CPU tests
# cannot reach, on tiny random models built from configs (the device image has torch, transformers, accelerate and
# onnxruntime, and no package registry). Each step writes its JSON / log under ${OUT:-outputs/gpu_check}.
#   1. main.py on a tiny Llama and a tiny BERT with --device cuda (masks, refit, save, reload, timing on the GPU);
#   2. the same Llama with --device_map auto over the GPU with a small --max_memory (offload and layer streaming);
#   3. two nccl processes when the machine has two GPUs (skipped with one);
#   4. the whole test suite's device-independent part, as a smoke test of the image (-x, quiet).
# Usage: bash benchmarks/gpu_check.sh   (about 3-5 minutes; keep the device tool's timeout above that)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
python - "$OUT" <<'EOF'
import json, os, subprocess, sys, time
import torch
out = sys.argv[1]
sys.path.insert(0, os.getcwd())
from tests.tiny import byte_level_bpe_tokenizer, tiny_config, tiny_decoder_config
from tests.test_main_lm import _text
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

report = {"cuda": torch.cuda.is_available(), "devices": torch.cuda.device_count(),
          "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "steps": {}}
tok = byte_level_bpe_tokenizer(_text(0, 80).splitlines())
llama = os.path.join(out, "llama")
config = tiny_decoder_config("llama", vocab_size=len(tok) + 3)
config.intermediate_size = 256
torch.manual_seed(0)
AutoModelForCausalLM.from_config(config).save_pretrained(llama)
tok.save_pretrained(llama)
for name, seed, n in (("calib.txt", 0, 80), ("eval.txt", 1, 40)):
    open(os.path.join(out, name), "w").write(_text(seed, n))


def step(name, argv, env=None):
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    report["steps"][name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
                             "stderr_tail": proc.stderr[-1500:]}
    print(name, proc.returncode, flush=True)


lm = ["--task_name", "causal_lm", "--ckpt_dir", llama, "--calib_file", os.path.join(out, "calib.txt"),
      "--eval_file", os.path.join(out, "eval.txt"), "--constraint", "0.6", "--num_samples", "8",
      "--max_seq_length", "32", "--batch_size", "4", "--speed_batch_size", "2", "--speed_seq_len", "16"]
step("llama_cuda", [sys.executable, "main.py", *lm, "--device", "cuda", "--output_dir", f"{out}/llama_cuda",
                    "--save_pruned", "--overwrite"])
step("llama_device_map", [sys.executable, "main.py", *lm, "--device", "cuda", "--device_map", "auto",
                          "--max_memory", "0=200KB,cpu=2GB", "--output_dir", f"{out}/llama_map", "--overwrite"])
if torch.cuda.device_count() >= 2:
    step("llama_nccl", ["torchrun", "--standalone", "--nproc_per_node", "2", "main.py", *lm,
                        "--output_dir", f"{out}/llama_nccl", "--overwrite"])
for run in ("llama_cuda", "llama_map", "llama_nccl"):
    path = os.path.join(out, run, "results.json")
    if os.path.isfile(path):
        r = json.load(open(path))
        report["steps"].setdefault(run, {})["perplexity"] = [r["metric_before"], r["metric_after"]]
json.dump(report, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in report.items() if k != "steps"}))
EOF
python -m pytest -x -q tests/test_stages.py tests/test_physical.py tests/test_reconstruct.py 2>&1 | tail -3 | tee "$OUT/pytest_tail.txt"

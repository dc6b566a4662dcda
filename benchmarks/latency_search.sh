#!/bin/bash
# Does the latency-constrained search help a MiniLM served at batch 1 x 32 tokens? (issue 33)
#     bash benchmarks/latency_search.sh onnx     # ONNX Runtime (the portable graph)
#     bash benchmarks/latency_search.sh eager    # PyTorch
#     bash benchmarks/latency_search.sh eager fit   # the same tables, priced by their piecewise-linear fit (--lut_fit)
# 1. latency tables measured on that backend (benchmarks/ort_latency_tables.py; scripts/measure_latency.py);
# 2. the budget: what those tables estimate for the MAC-pruned lsq 0.5 model (outputs/sts_embedding/minilm-lsq-0.5-s0,
#    see benchmarks/speed_limit.py), so that both models are equally fast by the tables;
# 3. main.py --metric latency at that budget (lsq, seed 0, STS-B similarity);
# 4. both pruned models timed in ONNX Runtime beside the original, alternately in one process
#    (benchmarks/pruned_side_by_side.py --backend BACKEND, batch 1 and 8 x 32/64/128 tokens).
# Run it under ../shared/tools/quiet; JSONs land in benchmarks/results/latency_search/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
backend=${1:-onnx}
case "$backend" in onnx|eager) ;; *) echo "error: backend '$backend': give onnx or eager" >&2; exit 2;; esac
fit=${2:-}
case "$fit" in ""|fit) ;; *) echo "error: second argument '$fit': give fit or nothing" >&2; exit 2;; esac
tag=$backend${fit:+-fit}
ckpt=$(python -c 'from benchmarks.sts_embedding import model_dirs; print(model_dirs()["minilm"])')
results=benchmarks/results/latency_search
luts=$results/luts-$backend-b1-s32
mac_run=outputs/sts_embedding/minilm-lsq-0.5-s0
[ -f "$mac_run/head_mask.pt" ] || { echo "error: no masks in $mac_run (benchmarks/speed_limit.py's help)" >&2; exit 1; }
mkdir -p "$results" outputs/latency_search
if [ -f "$luts/mha_lut.pt" ] && [ -f "$luts/ffn_lut.pt" ]; then
  echo "tables: $luts (measured earlier; delete it to measure again)"
elif [ "$backend" = onnx ]; then
  python -m benchmarks.ort_latency_tables --ckpt_dir "$ckpt" --batch_size 1 --seq_len 32 --output_dir "$luts" \
    2> "$luts.log"
else
  python -m scripts.measure_latency --ckpt_dir "$ckpt" --batch_size 1 --seq_len 32 --threads 2 --ffn_step 64 \
    --repeats 30 --output_dir "$luts" --overwrite > "$luts.log" 2>&1
fi
budget=$(python -c "
import torch
from prune.latency import estimate_latency, fitted_lut, full_latency
mha, ffn = torch.load('$luts/mha_lut.pt'), torch.load('$luts/ffn_lut.pt')
if '$fit':
    mha, ffn = fitted_lut(mha), fitted_lut(ffn)
head, neuron = torch.load('$mac_run/head_mask.pt'), torch.load('$mac_run/neuron_mask.pt')
print(round(estimate_latency(mha, ffn, head, neuron) / full_latency(mha, ffn, head.shape[0]), 4))")
echo "latency budget (the MAC-pruned model's, by the tables): $budget"
run=outputs/latency_search/minilm-lsq-latency-$tag-b1-s32
python main.py --task_name stsb_embedding --ckpt_dir "$ckpt" --data_dir ../shared/data/glue --constraint "$budget" \
  --metric latency --mha_lut "$luts/mha_lut.pt" --ffn_lut "$luts/ffn_lut.pt" ${fit:+--lut_fit} --method lsq --seed 0 \
  --output_dir "$run" --overwrite > "$run.log" 2>&1 || { echo "error: pruning failed; see $run.log" >&2; exit 1; }
cp "$run/results.json" "$results/prune-latency-$tag.json"
side=$results/side_by_side-$tag
python -m benchmarks.pruned_side_by_side --backend "$backend" --mask_dirs "$run" "$mac_run" --output "$side.json" \
  2> "$side.log" || { echo "error: timing failed; see $side.log" >&2; exit 1; }
python - "$side.json" "$mac_run" "$run" <<'PY'
import json, os, sys
side_json, mac_run, run = sys.argv[1:]
side = json.load(open(side_json))
for folder in (run, mac_run):
    name = os.path.basename(folder)
    r = json.load(open(f"{folder}/results.json"))
    speed = ", ".join(f"{row['batch_size']}x{row['seq_len']} {row['speedup'][name]:.2f}" for row in side["results"])
    print(f"{name}: Spearman {100 * r['metric_after']['spearmanr']:.2f}, MAC ratio {r['mac_ratio']:.3f}, heads "
          f"{r['heads_kept_per_layer']}, neurons {r['neurons_kept_per_layer']}, {side['backend']} speed-up {speed}")
PY

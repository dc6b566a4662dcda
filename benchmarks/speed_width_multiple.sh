#!/bin/bash
# Does rounding each layer's FFN width to a multiple help the small-batch speed? MiniLM-L6 on STS-B (sentence
# embeddings), lsq at 0.5 of the MACs, seed 0, pruned with --width_multiple 1 (any count) and 32, then each pruned
# model timed by benchmarks/latency.py (eager and ONNX Runtime, batch 1 and 8 x 32/64/128 tokens, beside the
# unpruned model, T_fixed and T_floor). Run it under ../shared/tools/quiet; JSONs land in
# benchmarks/results/speed_width_multiple/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ckpt=$(python -c 'from benchmarks.sts_embedding import model_dirs; print(model_dirs()["minilm"])')
results=benchmarks/results/speed_width_multiple
mkdir -p "$results" outputs/width_multiple
for multiple in 1 32; do
  run=outputs/width_multiple/minilm-lsq-0.5-s0-w$multiple
  if [ ! -f "$run/head_mask.pt" ]; then
    python main.py --task_name stsb_embedding --ckpt_dir "$ckpt" --data_dir ../shared/data/glue --constraint 0.5 \
      --method lsq --seed 0 --width_multiple "$multiple" --output_dir "$run" --overwrite > "$run.log" 2>&1 ||
      { echo "error: pruning with --width_multiple $multiple failed; see $run.log" >&2; exit 1; }
  fi
  cp "$run/results.json" "$results/prune-w$multiple.json"
  python -m benchmarks.latency --ckpt_dir "$ckpt" --mask_dir "$run" --head embedding --backend eager onnx \
    --batch_sizes 1 8 --seq_lens 32 64 128 --threads 2 --repeats 15 --output "$results/latency-w$multiple.json" \
    2> "$run-latency.log" || { echo "error: timing failed; see $run-latency.log" >&2; exit 1; }
done
python - "$results" <<'PY'
import json, sys
for m in (1, 32):
    prune = json.load(open(f"{sys.argv[1]}/prune-w{m}.json"))
    lat = json.load(open(f"{sys.argv[1]}/latency-w{m}.json"))
    print(f"--width_multiple {m}: Spearman {prune['metric_after']}, neurons {lat['pruned']['neurons_per_layer']}")
    fmt = lambda x: "undefined" if x is None else f"{x:.2f}"
    for r in lat["results"]:
        print(f"  {r['backend']:5s} {r['batch_size']} x {r['seq_len']}: speedup {r['speedup']:.2f}, of the floor ideal "
              f"{fmt(r['fraction_of_floor_ideal'])}, of the physical ideal {fmt(r['fraction_of_physical_ideal'])}")
PY

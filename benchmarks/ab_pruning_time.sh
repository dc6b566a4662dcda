#!/bin/bash
# Pruning seconds per stage of two commits, one after the other in one run (run it under ../shared/tools/quiet):
#   bash benchmarks/ab_pruning_time.sh OLD_COMMIT NEW_COMMIT [main.py arguments]
# Default arguments: MPNet lsq at 0.5 on 512 STS-B pairs (python -m scripts.make_mpnet first). Each commit runs from
# its own git worktree under $TMPDIR; prints each run's `seconds` and metric from results.json.
set -euo pipefail
old=$1 new=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--task_name stsb_embedding --ckpt_dir "$root/checkpoints/all-mpnet-base-v2" --data_dir "$root/../shared/data/glue"
        --constraint 0.5 --method lsq --seed 0 --num_samples 512)
fi
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" 2>/dev/null; git -C "$root" worktree remove --force "$work/new" 2>/dev/null; rm -rf "$work"' EXIT
for which in old new; do
  commit=${!which}
  git -C "$root" worktree add -f --detach "$work/$which" "$commit" >/dev/null 2>&1
  (cd "$work/$which" && python main.py "${args[@]}" --output_dir "$work/out_$which" --overwrite > "$work/$which.log" 2>&1)
  python -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], r['seconds'], r['metric_after'])" \
    "$work/out_$which/results.json" "$which" "$commit"
done

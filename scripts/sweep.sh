#!/usr/bin/env bash
# Sweep main.py over tasks x variants x constraints x seeds, then collect the results.
#
#   bash scripts/sweep.sh                                   # the embedded default, kwon and lsq, 6 constraints
#   METHODS=lsq CONSTRAINTS="0.5 0.6" SEEDS="0 1 2" bash scripts/sweep.sh
#   ABLATION=1 bash scripts/sweep.sh                        # kwon / lsq / magnitude and random baselines
#   ABLATION=1 VARIANTS="search rearrange kwon" bash scripts/sweep.sh   # search-only and +rearrange as own runs
#   CKPT=ckpts/bert-{task} DATA_DIR=glue TASKS="sst2 mrpc" EXTRA="--device cuda" OUT=outputs/glue bash scripts/sweep.sh
#
# Settings (environment variables):
#   CKPT         checkpoint folder (default checkpoints/minilm-movie-sst2, built like scripts/demo.py
#                does when it is missing); "{task}" is replaced by the task name
#   DATA_DIR     GLUE/SQuAD data folder (default data/movie-sst2 for the default checkpoint, else none:
#                the hub); "{task}" is replaced as well
#   TASKS        space-separated task names (TASK is accepted too; default sst2)
#   METHODS      space-separated variants (default "kwon lsq"); any of the variants below
#   ABLATION=1   run "kwon lsq magnitude random" instead of METHODS (VARIANTS overrides the list).
#                Variants (VARIANTS or METHODS may name any of them):
#                  search     --method kwon --no_rearrange --no_mask_tuning   (Fisher search only)
#                  rearrange  --method kwon --no_mask_tuning                  (+ mask rearrangement)
#                  kwon       --method kwon --eval_stages                 (+ mask tuning: the paper)
#                  lsq        --method lsq                                (least-squares refit)
#                  magnitude  --method kwon --importance magnitude        (baseline importance)
#                  random     --method kwon --importance random           (baseline importance)
#                kwon always runs with --eval_stages (two more dev evaluations): its results.json also
#                scores the search-only and the rearranged masks of the same run, so scripts/collect.py
#                fills the ablation table's "search only" and "+ rearrangement" columns from it (marked *)
#                wherever no search / rearrange run exists; the default sweep already gives
#                search / +rearrange / kwon / lsq. search and rearrange stay available as runs of their
#                own (collect.py prefers them when present). A kwon run finished before --eval_stages was
#                added here has no stage scores: it is skipped, not re-run (use another OUT).
#   CONSTRAINTS  default "0.4 0.5 0.6 0.7 0.8 0.9";  SEEDS  default "0"
#   MAX_SEQ_LENGTH  default 64 for the default checkpoint, else main.py's default
#   EXTRA        more main.py flags, split on spaces (e.g. "--save_pruned --num_samples 1024")
#   OUT          sweep root (default outputs/sweep); runs go to OUT/<model>/<task>/<variant>/c<constraint>/seed_<seed>
#   FIG_DIR      where scripts/collect.py writes the figures (default figures)
#   PYTHON       interpreter (default python);  MAIN  the command that prunes (default "$PYTHON main.py";
#                e.g. MAIN="nice -n 10 python main.py", or a stub in the tests)
#   DRY_RUN=1    print the commands only;  VERBOSE=1  show main.py's output (always kept in <run>/sweep.log)
#
# Resumable: a run folder that already holds results.json is skipped (main.py writes it last,
# atomically), so re-running the same command finishes an interrupted sweep. Changing EXTRA does not
# invalidate finished runs: use another OUT for a different setting. A failed run does not stop the
# sweep; the exit status is 1 if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
MAIN=${MAIN:-"$PYTHON main.py"}
DEFAULT_CKPT=checkpoints/minilm-movie-sst2
DEFAULT_DATA=data/movie-sst2
CKPT=${CKPT:-$DEFAULT_CKPT}
if [[ "$CKPT" == "$DEFAULT_CKPT" ]]; then
  DATA_DIR=${DATA_DIR-$DEFAULT_DATA}
  MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH-64}
else
  DATA_DIR=${DATA_DIR-}
  MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH-}
fi
TASKS=${TASKS:-${TASK:-sst2}}
METHODS=${METHODS:-"kwon lsq"}
ABLATION=${ABLATION:-0}
ALL_VARIANTS="search rearrange kwon lsq magnitude random"
ABLATION_VARIANTS="kwon lsq magnitude random"
if [[ "$ABLATION" != 0 && -n "$ABLATION" ]]; then
  VARIANTS=${VARIANTS:-$ABLATION_VARIANTS}
else
  VARIANTS=${VARIANTS:-$METHODS}
fi
CONSTRAINTS=${CONSTRAINTS:-"0.4 0.5 0.6 0.7 0.8 0.9"}
SEEDS=${SEEDS:-0}
EXTRA=${EXTRA:-}
OUT=${OUT:-outputs/sweep}
FIG_DIR=${FIG_DIR:-figures}
DRY_RUN=${DRY_RUN:-0}
VERBOSE=${VERBOSE:-0}

read -ra MAIN_CMD <<< "$MAIN"
read -ra EXTRA_ARGS <<< "$EXTRA"

# Names registered in prune/registry.py: a new mask-tuning method runs as "--method NAME", a new
# importance as "--method kwon --importance NAME", without editing this script.
REGISTERED=$("$PYTHON" -c "from prune.registry import choices; print(' '.join(choices('method'))); print(' '.join(choices('importance')))" 2>/dev/null || printf 'kwon lsq\nfisher magnitude random\n')
REGISTERED_METHODS=$(sed -n 1p <<< "$REGISTERED")
REGISTERED_IMPORTANCE=$(sed -n 2p <<< "$REGISTERED")

variant_flags() {
  case "$1" in
    search)    echo "--method kwon --no_rearrange --no_mask_tuning" ; return ;;
    rearrange) echo "--method kwon --no_mask_tuning" ; return ;;
    kwon)      echo "--method kwon --eval_stages" ; return ;;
  esac
  if [[ " $REGISTERED_METHODS " == *" $1 "* ]]; then echo "--method $1"; return; fi
  if [[ "$1" != fisher && " $REGISTERED_IMPORTANCE " == *" $1 "* ]]; then echo "--method kwon --importance $1"; return; fi
  return 1
}

for v in $VARIANTS; do
  if ! variant_flags "$v" > /dev/null; then
    echo "error: unknown variant '$v' (use: search rearrange kwon $REGISTERED_METHODS ${REGISTERED_IMPORTANCE/fisher/})" >&2
    exit 2
  fi
done

# The embedded default: build the data and the fine-tuned checkpoint (cached) as scripts/demo.py does.
if [[ "$CKPT" == "$DEFAULT_CKPT" && ! -f "$CKPT/config.json" && "$DRY_RUN" == 0 ]]; then
  echo "building the embedded default ($DEFAULT_DATA, $DEFAULT_CKPT): this fine-tunes MiniLM once"
  "$PYTHON" - "$DEFAULT_DATA" "$DEFAULT_CKPT" <<'EOF' || { echo "error: could not build the default checkpoint" >&2; exit 2; }
import logging, os, sys
sys.path.insert(0, "scripts"); sys.path.insert(0, ".")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from make_movie_sst2 import build_movie_sst2
from finetune import finetune
build_movie_sst2(sys.argv[1])
finetune("sst2", sys.argv[2], data_dir=sys.argv[1])
EOF
fi

total=0
for task in $TASKS; do for v in $VARIANTS; do for c in $CONSTRAINTS; do for s in $SEEDS; do
  total=$((total + 1))
done; done; done; done

n=0; ran=0; skipped=0; failed=()
trap 'echo "interrupted: finished runs are kept; run the same command again to resume" >&2; exit 130' INT TERM
for task in $TASKS; do
  ckpt=${CKPT//\{task\}/$task}
  data=${DATA_DIR//\{task\}/$task}
  model=$(basename "${ckpt%/}")
  for v in $VARIANTS; do
    read -ra FLAGS <<< "$(variant_flags "$v")"
    for c in $CONSTRAINTS; do
      for s in $SEEDS; do
        n=$((n + 1))
        dir="$OUT/$model/$task/$v/c$c/seed_$s"
        tag="[$n/$total] $task $v c=$c seed=$s"
        if [[ -f "$dir/results.json" ]]; then
          echo "$tag: finished already, skipped ($dir)"
          skipped=$((skipped + 1))
          continue
        fi
        cmd=("${MAIN_CMD[@]}" --task_name "$task" --ckpt_dir "$ckpt")
        [[ -n "$data" ]] && cmd+=(--data_dir "$data")
        [[ -n "$MAX_SEQ_LENGTH" ]] && cmd+=(--max_seq_length "$MAX_SEQ_LENGTH")
        cmd+=(--constraint "$c" --seed "$s" --output_dir "$dir" "${FLAGS[@]}" "${EXTRA_ARGS[@]}")
        if [[ "$DRY_RUN" != 0 ]]; then
          echo "$tag: ${cmd[*]}"
          continue
        fi
        mkdir -p "$dir"
        echo "$tag: running -> $dir"
        start=$SECONDS
        if [[ "$VERBOSE" != 0 ]]; then
          "${cmd[@]}" 2>&1 | tee "$dir/sweep.log"
          code=${PIPESTATUS[0]}
        else
          "${cmd[@]}" > "$dir/sweep.log" 2>&1
          code=$?
        fi
        if [[ $code -eq 130 ]]; then
          echo "interrupted: finished runs are kept; run the same command again to resume" >&2
          exit 130
        fi
        if [[ $code -ne 0 || ! -f "$dir/results.json" ]]; then
          echo "$tag: FAILED (exit status $code, $((SECONDS - start)) s); last lines of $dir/sweep.log:" >&2
          tail -n 5 "$dir/sweep.log" | sed 's/\r/\n/g' | tail -n 5 >&2
          failed+=("$dir")
        else
          echo "$tag: done in $((SECONDS - start)) s"
          ran=$((ran + 1))
        fi
      done
    done
  done
done
trap - INT TERM

[[ "$DRY_RUN" != 0 ]] && exit 0
echo "sweep: $ran run, $skipped skipped (finished already), ${#failed[@]} failed, of $total"
if [[ -d "$OUT" ]]; then
  "$PYTHON" -m scripts.collect "$OUT" --out "$FIG_DIR" || echo "warning: scripts/collect.py failed" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed runs (see sweep.log in each):" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
exit 0

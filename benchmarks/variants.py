"""The pruning variants the accuracy benchmarks compare (PruneOptions overrides), and one cell of such a run.

All but lsq_lastmha_all and lsq_nohead are also main.py flags (--ridge, --teacher_exponent, --gradient_batches,
--teacher, --no_rearrange, --no_mask_tuning, --width_multiple).
"""
from __future__ import annotations

import time
from dataclasses import replace

from prune.fisher import collect_mask_grads
from prune.pipeline import PruneOptions, prune

VARIANTS = {
    "search_only": dict(mask_tuning=False, rearrange=False),
    "rearrange_only": dict(mask_tuning=False),
    "kwon": dict(method="kwon"),
    "lsq": dict(method="lsq"),
    "lsq_nohead": dict(method="lsq", head_refit=False),
    "kwon_randbatch": dict(method="kwon", grad_batches="random"),
    "lsq_randbatch": dict(method="lsq", grad_batches="random"),
    "lsq_lastmha_all": dict(method="lsq", last_mha_all_tokens=True),
    "lsq_teacher0.75": dict(method="lsq", teacher_exponent=0.75),
    "lsq_teacher0.75_lastmha_all": dict(method="lsq", teacher_exponent=0.75, last_mha_all_tokens=True),
    "lsq_norearr": dict(method="lsq", rearrange=False),
    "lsq_full_teacher": dict(method="lsq", teacher="full"),
    "lsq_ridge0.3": dict(method="lsq", ridge=0.3),
    "lsq_ridge1": dict(method="lsq", ridge=1.0),
    "lsq_ridge3": dict(method="lsq", ridge=3.0),
    "lsq_ridge0.01": dict(method="lsq", ridge=0.01),
    "lsq_width32": dict(method="lsq", width_multiple=32),    # every layer's FFN width a multiple of 32 (batch-1 speed)
}
# Tried and dropped (they did not win; results kept in benchmarks/results/method_ablation.json, code at
# commit a0e4db6): "obs" = units within each layer chosen by Optimal Brain Surgeon on the refit's Hessian;
# "lsq_regrad" = gradients recomputed at the teacher's mask (one step of iterative pruning).
RETIRED = ["obs", "lsq_regrad"]


def run_variant(model, arch, task, grads: dict, constraint: float, name: str, seed: int):
    """Prune with variant `name` at `constraint` on gradients shared across cells (grads: batch order ->
    (head grads, neuron grads), filled on first use). Returns (PruneResult, seconds without gradients);
    the model is left as it was: the variant's weight updates are in the result."""

    overrides = dict(VARIANTS[name])
    order = overrides.pop("grad_batches", "length")
    if order not in grads:   # length-sorted batches (the pipeline's) or random ones (the reference's)
        grads[order] = collect_mask_grads(model, arch, task.gradient_batches if order == "random" else task.sample_batches)
    options = replace(PruneOptions(constraint, seed=seed), **overrides)
    start = time.perf_counter()
    result = prune(model, arch, task.sample_batches, task.seq_len, options, arch.classifier_token, grads=grads[order])
    return result, time.perf_counter() - start

"""Mask tuning: layer-wise least squares that rescales the surviving heads and neurons so that each
layer reconstructs the output of a less-pruned teacher (paper section 4.3).

For layer l the student runs on its own (already tuned) inputs and the teacher on its own; the
targets are the teacher's residual sums (prune/targets.py), so the scales also absorb the drift of the
student's residual stream. The last layer fits the tokens the task's loss reads ("first" for an encoder's
classifier, "last" for a decoder's, "all" for QA and language modelling).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from arch import BoundArch
from arch.hooks import apply_masks, capture_inputs
from prune.layer_io import LayerBatch, capture_layer, run_layer
from prune.targets import layer_tokens, select_tokens, teacher_targets
from utils.offload import Placement

log = logging.getLogger(__name__)

SCALE_LIMIT = 10.0   # the paper's guard: a layer whose scales leave [-10, 10] stays unscaled


@dataclass
class TuningReport:
    events: list[dict] = field(default_factory=list)

    def add(self, layer: int, part: str, status: str, **info) -> None:
        self.events.append({"layer": layer, "part": part, "status": status, **info})


def solve_damped(ata: torch.Tensor, atb: torch.Tensor) -> tuple[np.ndarray | None, str]:
    """The paper's solver objective: the change d from scale 1 minimising
    ||ATA d - (ATB - ATA 1)||^2 + ||d||^2 (LSMR with damp=1 on the normal equations).

    Solved exactly in closed form, (ATA^2 + I) d = ATA (ATB - ATA 1), which is where LSMR converges;
    the reference's iteration limit could stop it short on wide FFN layers, and this is much faster.
    """
    a = ata.double().cpu().numpy()
    b = atb.double().cpu().numpy() - a.sum(axis=1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None, "the least-squares system has NaN or inf entries"
    if a.shape[0] == 1:
        if a[0, 0] == 0:
            return None, "the only unit left has no output on the sample"
        return 1.0 + b / a[0, 0], "ok"
    try:
        with np.errstate(all="ignore"):   # overflow shows up as a non-finite solution, checked below
            delta = np.linalg.solve(a @ a + np.eye(a.shape[0]), a @ b)
    except np.linalg.LinAlgError as e:
        return None, f"the least-squares system is singular ({e})"
    if not np.isfinite(delta).all():
        return None, "the least-squares system is ill-conditioned (its solution overflows)"
    return 1.0 + delta, "ok"


def _mha_system(arch, l, head_mask, neuron_mask, inputs, targets, kept):
    """Normal equations for one scale per kept head unit (plus the paper's free constant column)."""
    attn_out = arch.attn_out(l)
    d = arch.unit_width
    w_heads = attn_out.weight.t().reshape(arch.num_head_units, d, -1)[kept]   # [k, d, hidden]
    n = len(kept) + 1
    ata = torch.zeros(n, n, dtype=torch.float64, device=w_heads.device)
    atb = torch.zeros(n, dtype=torch.float64, device=w_heads.device)
    with apply_masks(arch, head_mask, neuron_mask), capture_inputs({"ctx": attn_out}, stop_at="ctx") as seen:
        for lb, target in zip(inputs, targets):
            capture_layer(arch, l, lb)
            ctx = select_tokens(seen["ctx"].pop(), lb, "all")                          # [N, U*d]
            per_head = ctx.view(ctx.shape[0], arch.num_head_units, d)[:, kept].transpose(0, 1)
            cols = torch.bmm(per_head, w_heads).flatten(1)                       # [k, N*hidden]
            cols = torch.cat([cols, torch.ones_like(cols[:1])]).double()
            rhs = target.aim(select_tokens(lb.hidden, lb, "all")).flatten().double()
            ata += cols @ cols.t()
            atb += cols @ rhs
    return ata, atb


def _ffn_system(arch, l, head_mask, neuron_mask, inputs, targets, kept, tokens):
    ffn_residual, ffn_out = arch.ffn_residual(l), arch.ffn_out(l)
    w = ffn_out.weight.t()[kept]                                                 # [k, hidden]
    gram_a = torch.zeros(len(kept), len(kept), dtype=torch.float64, device=w.device)
    atb = torch.zeros(len(kept), dtype=torch.float64, device=w.device)
    with apply_masks(arch, head_mask, neuron_mask), \
            capture_inputs({"h": ffn_residual, "a": ffn_out}, stop_at="a") as seen:
        for lb, target in zip(inputs, targets):
            capture_layer(arch, l, lb)
            h, a = select_tokens(seen["h"].pop(), lb, tokens), select_tokens(seen["a"].pop(), lb, tokens)
            a = a[:, kept]                                                       # [N, k]
            rhs = target.aim(h)                                                  # [N, hidden]
            gram_a += (a.t() @ a).double()
            atb += (a * (rhs @ w.t())).sum(dim=0).double()
    # the column of neuron j is a_j (x) w_j, so A^T A = (W W^T) * (a^T a), elementwise
    return (w @ w.t()).double() * gram_a, atb


def _apply_scales(mask_row, kept, scales, report, l, part) -> None:
    lo, hi = float(scales.min()), float(scales.max())
    if not np.isfinite(scales).all() or hi > SCALE_LIMIT or lo < -SCALE_LIMIT:
        log.warning("mask tuning, layer %d %s: scales %.2f..%.2f outside [-%g, %g]; layer left unscaled",
                    l, part, lo, hi, SCALE_LIMIT, SCALE_LIMIT)
        report.add(l, part, "guard", min_scale=lo, max_scale=hi)
        return
    mask_row[kept] *= torch.as_tensor(scales, dtype=mask_row.dtype, device=mask_row.device)
    report.add(l, part, "ok", min_scale=lo, max_scale=hi, units=len(kept))


def tune_masks(arch: BoundArch, teacher_head, teacher_neuron, student_head, student_neuron,
               layer_inputs: list[LayerBatch], last_layer_tokens: str = "first",
               skip_first_layer_heads: bool = True, reduce=None, placement=None):
    """Rescaled copies of the student masks and a report of what happened in every layer.

    last_layer_tokens: the tokens the last FFN is fitted on (the ones the task's loss reads);
    reduce(tensor): sums the normal equations over data-parallel processes (None: one process);
    placement (utils/offload.Placement): streams one layer at a time onto the device (None: the model stays put).
    """
    reduce = reduce or (lambda t: t)
    stream = placement or Placement(None)
    head, neuron = student_head.clone().float(), student_neuron.clone().float()
    report = TuningReport()
    teacher_in = student_in = stream.inputs(layer_inputs)
    with torch.inference_mode():
        for l in tqdm(range(arch.num_layers), desc="mask tuning", leave=False):
            with stream.layer(arch, l):
                tokens = layer_tokens(arch, l, last_layer_tokens)
                targets = teacher_targets(arch, l, teacher_head, teacher_neuron, teacher_in, tokens)
                kept_heads = (head[l] != 0).nonzero().flatten()
                if len(kept_heads) == 0:
                    report.add(l, "heads", "empty")
                elif l == 0 and skip_first_layer_heads:
                    report.add(l, "heads", "skipped")
                else:
                    ata, atb = map(reduce, _mha_system(arch, l, head, neuron, student_in, targets.mha, kept_heads))
                    scales, why = solve_damped(ata, atb)
                    if scales is None:
                        log.warning("mask tuning, layer %d heads: %s; layer left unscaled", l, why)
                        report.add(l, "heads", "failed", reason=why)
                    else:
                        _apply_scales(head[l], kept_heads, scales[:-1], report, l, "heads")
                kept_neurons = (neuron[l] != 0).nonzero().flatten()
                if len(kept_neurons) == 0:
                    report.add(l, "neurons", "empty")
                else:
                    ata, atb = map(reduce, _ffn_system(arch, l, head, neuron, student_in, targets.ffn, kept_neurons,
                                                       tokens))
                    scales, why = solve_damped(ata, atb)
                    if scales is None:
                        log.warning("mask tuning, layer %d neurons: %s; layer left unscaled", l, why)
                        report.add(l, "neurons", "failed", reason=why)
                    else:
                        _apply_scales(neuron[l], kept_neurons, scales, report, l, "neurons")
                with apply_masks(arch, head, neuron):
                    student_in = run_layer(arch, l, student_in)
                teacher_in = targets.outputs
    return head, neuron, report

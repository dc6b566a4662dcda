"""Mask-tuning methods: what a layer-wise pass does to the searched (and rearranged) masks.

    kwon  the paper's mask tuning: one least-squares scale per kept head unit and neuron
    lsq   refit the kept columns of each block's output projections (and a bias) by ridge least squares,
          then the task head's first Linear against the unpruned model's
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from arch import BoundArch
from prune.activations import input_statistics
from prune.head_refit import head_targets, refit_head
from prune.layer_io import first_layer_inputs
from prune.mask_tuning import tune_masks
from prune.options import RIDGE
from prune.reconstruct import reconstruct_weights
from prune.weight_updates import swapped_weights
from prune.registry import register
from utils.distributed import Dist


@dataclass(frozen=True)
class TuningInputs:
    model: object
    arch: BoundArch
    teacher: tuple                 # (head mask, neuron mask) each layer reconstructs
    student: tuple                 # the masks to tune
    sample_batches: list
    last_layer_tokens: str         # the tokens the task's loss reads: first | last | all
    ridge: float = RIDGE
    last_mha_all_tokens: bool = False
    dist: Dist = Dist()            # the processes that share the sample (each sums its share; sums all-reduced)
    placement: object = None       # utils/offload.Placement: stream one layer at a time onto the device
    head_refit: bool = True        # lsq: also refit the task head's first Linear (prune/head_refit.py)


@dataclass
class TuningOutcome:
    masks: tuple                                     # (head mask, neuron mask), possibly rescaled
    weight_updates: dict = field(default_factory=dict)   # (layer, role) -> (weight, bias)
    events: list = field(default_factory=list)       # what happened in every layer


@register("method", "kwon")
def kwon(inputs: TuningInputs) -> TuningOutcome:
    layer_inputs = first_layer_inputs(inputs.model, inputs.arch, inputs.dist.shard(inputs.sample_batches))
    head, neuron, report = tune_masks(inputs.arch, *inputs.teacher, *inputs.student, layer_inputs,
                                      inputs.last_layer_tokens, reduce=inputs.dist.all_reduce_sum,
                                      placement=inputs.placement)
    return TuningOutcome((head, neuron), {}, report.events)


@register("method", "lsq")
def lsq(inputs: TuningInputs) -> TuningOutcome:
    model, arch = inputs.model, inputs.arch
    batches = inputs.dist.shard(inputs.sample_batches)
    targets = head_targets(model, arch, batches) if inputs.head_refit else None
    layer_inputs = first_layer_inputs(model, arch, batches)
    updates, report = reconstruct_weights(arch, *inputs.teacher, *inputs.student, layer_inputs,
                                          inputs.last_layer_tokens, inputs.ridge, inputs.last_mha_all_tokens,
                                          reduce=inputs.dist.all_reduce_sum, placement=inputs.placement)
    if targets is not None:
        with swapped_weights(arch, updates):
            head = refit_head(model, arch, batches, inputs.student, targets, inputs.ridge,
                              reduce=inputs.dist.all_reduce_sum)
        updates.update(head)
        report.add("head", targets[0], "ok" if head else "failed")
    return TuningOutcome(inputs.student, updates, report.events)


@register("method", "bias")
def bias(inputs: TuningInputs) -> TuningOutcome:
    """FLAP's bias compensation, no refit: every pruned input column of the two output projections is replaced
    by its mean over the calibration tokens of the dense model, b += W[:, pruned] @ mean[pruned]."""

    arch, (head, neuron) = inputs.arch, inputs.student
    stats = input_statistics(inputs.model, arch, inputs.sample_batches)
    updates, events = {}, []
    for l in range(arch.num_layers):
        pruned_units = (head[l] == 0).nonzero().flatten()
        for role, pruned, mean in (("attn_out", arch.unit_columns(pruned_units), stats.attn_mean[l]),
                                   ("ffn_out", (neuron[l] == 0).nonzero().flatten().cpu(), stats.ffn_mean[l])):
            linear = getattr(arch, role)(l)
            weight = linear.weight.detach()
            old = linear.bias.detach() if linear.bias is not None else torch.zeros_like(weight[:, 0])
            shift = weight[:, pruned.to(weight.device)].float() @ mean[pruned].to(weight.device)
            updates[(l, role)] = (weight.clone(), (old.float() + shift).to(weight.dtype))
            events.append({"layer": l, "part": role, "status": "ok", "pruned_columns": len(pruned)})
    return TuningOutcome(inputs.student, updates, events)

"""Importance of every head unit and FFN neuron: the paper's Fisher, and baselines for ablations."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.fisher import fisher_importance
from prune.registry import register
from utils.arch import BoundArch


@dataclass(frozen=True)
class ImportanceInputs:
    arch: BoundArch
    head_grads: torch.Tensor      # [batches, layers, head units]: gradients of the loss w.r.t. the masks
    neuron_grads: torch.Tensor    # [batches, layers, ffn]
    seed: int
    batches: list                 # the calibration sample, for scores that need activations


@register("importance", "fisher")
def fisher(inputs: ImportanceInputs):
    return fisher_importance(inputs.head_grads), fisher_importance(inputs.neuron_grads)


@register("importance", "random")
def random(inputs: ImportanceInputs):
    gen = torch.Generator().manual_seed(inputs.seed)
    return (torch.rand(inputs.head_grads.shape[1:], generator=gen),
            torch.rand(inputs.neuron_grads.shape[1:], generator=gen))


@register("importance", "magnitude")
def magnitude(inputs: ImportanceInputs):
    """Norm of each unit's columns of the output projection (not comparable across layers)."""
    arch = inputs.arch
    heads = torch.stack([arch.attn_out(i).weight.detach().float().cpu()
                         .view(arch.hidden_size, arch.num_head_units, arch.unit_width).norm(dim=(0, 2))
                         for i in range(arch.num_layers)])
    neurons = torch.stack([arch.ffn_out(i).weight.detach().float().cpu().norm(dim=0)
                           for i in range(arch.num_layers)])
    return heads, neurons

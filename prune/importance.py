"""Importance of every head unit and FFN neuron: the paper's Fisher, and baselines for ablations."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from arch import BoundArch
from prune.activations import InputStats, input_statistics
from prune.fisher import fisher_importance
from prune.registry import register


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


def _per_unit(columns: torch.Tensor, arch: BoundArch) -> torch.Tensor:
    """[layers, U * width] -> [layers, U]: sum over each head unit's columns."""
    return columns.view(arch.num_layers, arch.num_head_units, arch.unit_width).sum(-1)


def _weights(arch: BoundArch, role: str) -> torch.Tensor:
    return torch.stack([getattr(arch, role)(i).weight.detach().float().cpu() for i in range(arch.num_layers)])


@register("importance", "wanda_sp")
def wanda_sp(inputs: ImportanceInputs):
    """Wanda-sp (An et al. 2024, as in FLAP's code): mean over output rows of |W_ij| * ||x_j||, summed per head."""
    arch = inputs.arch
    stats = input_statistics(arch.model, arch, inputs.batches)
    heads = (_weights(arch, "attn_out").abs() * stats.attn_sq.sqrt()[:, None, :]).mean(1)
    neurons = (_weights(arch, "ffn_out").abs() * stats.ffn_sq.sqrt()[:, None, :]).mean(1)
    return _per_unit(heads, arch), neurons


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True).clamp_min(1e-12)


@register("importance", "flap")
def flap(inputs: ImportanceInputs):
    """FLAP's fluctuation metric (WIFV, An et al. 2024): variance of input column j over the calibration tokens
    times ||W_:,j||^2 (squared for heads, summed per head), standardized within each layer and kind so that
    one global threshold can compare layers; a head unit scores the mean of its standardized columns."""
    arch = inputs.arch
    stats = input_statistics(arch.model, arch, inputs.batches)
    attn = (InputStats.variance(stats.attn_mean, stats.attn_sq) * _weights(arch, "attn_out").pow(2).sum(1)).pow(2)
    ffn = InputStats.variance(stats.ffn_mean, stats.ffn_sq) * _weights(arch, "ffn_out").pow(2).sum(1)
    heads = _standardize(attn).view(arch.num_layers, arch.num_head_units, arch.unit_width).mean(-1)
    return heads, _standardize(ffn)

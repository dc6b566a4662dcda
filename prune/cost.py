"""Costs of one head unit and one FFN neuron: MACs at a sequence length (as in the paper), or parameters.

A head unit is a key/value head with its `heads_per_unit` query heads (one head without GQA); a
neuron is one row of each of the `ffn_inputs` FFN input Linears and one column of the output Linear.
With one query head per unit and one FFN input this is the paper's count: 4 s h d + 2 s^2 d per head
and 2 s h per neuron. Attention scores are counted over the full s x s matrix, causal or not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.query_heads import query_head_mac_cost, query_head_param_cost


@dataclass(frozen=True)
class UnitCost:
    per_head: float
    per_neuron: float

    def of_counts(self, num_heads: int | float, num_neurons: int | float) -> float:
        return num_heads * self.per_head + num_neurons * self.per_neuron

    def of_masks(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        return self.of_counts(int((head_mask != 0).sum()), int((neuron_mask != 0).sum()))

    def full(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        """The unpruned model's cost, for masks of these shapes."""
        return self.of_counts(head_mask.numel(), neuron_mask.numel())

    def ratio(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        """The masks' cost as a fraction of the unpruned model's."""
        return self.of_masks(head_mask, neuron_mask) / self.of_counts(head_mask.numel(), neuron_mask.numel())


def MacCost(seq_len: float, hidden_size: int, head_dim: int, heads_per_unit: int = 1,
            ffn_inputs: int = 1) -> UnitCost:
    s, h, d, g = seq_len, hidden_size, head_dim, heads_per_unit
    qkv = (g + 2) * s * h * d                 # in this order so that g = 1 rounds as the paper's count
    scores_and_context = 2 * s * s * g * d
    out_proj = s * g * d * h
    return UnitCost(qkv + scores_and_context + out_proj, (ffn_inputs + 1) * s * h)


def ParamCost(hidden_size: int, head_dim: int, heads_per_unit: int = 1, ffn_inputs: int = 1) -> UnitCost:
    """Weights only (biases are a rounding error next to them)."""
    h, d, g = hidden_size, head_dim, heads_per_unit
    return UnitCost(2 * h * g * d + 2 * h * d, (ffn_inputs + 1) * h)


def mac_cost_of(arch, seq_len: float):
    """UnitCost, or QueryHeadCost when the arch prunes query heads within KV groups."""
    if arch.query_heads:
        return query_head_mac_cost(seq_len, arch.hidden_size, arch.head_dim, arch.heads_per_group,
                                   arch.num_ffn_inputs)
    return MacCost(seq_len, arch.hidden_size, arch.head_dim, arch.heads_per_unit, arch.num_ffn_inputs)


def param_cost_of(arch):
    if arch.query_heads:
        return query_head_param_cost(arch.hidden_size, arch.head_dim, arch.heads_per_group, arch.num_ffn_inputs)
    return ParamCost(arch.hidden_size, arch.head_dim, arch.heads_per_unit, arch.num_ffn_inputs)

"""MACs of heads and FFN neurons at a sequence length, counted as in the paper."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MacCost:
    """MACs of one attention head and one FFN neuron for a sequence of `seq_len` tokens."""
    seq_len: float
    hidden_size: int
    head_dim: int

    @property
    def per_head(self) -> float:
        qkv = 3 * self.seq_len * self.hidden_size * self.head_dim
        scores_and_context = 2 * self.seq_len * self.seq_len * self.head_dim
        out_proj = self.seq_len * self.head_dim * self.hidden_size
        return qkv + scores_and_context + out_proj

    @property
    def per_neuron(self) -> float:
        return 2 * self.seq_len * self.hidden_size

    def of_counts(self, num_heads: int | float, num_neurons: int | float) -> float:
        return num_heads * self.per_head + num_neurons * self.per_neuron

    def of_masks(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        return self.of_counts(int((head_mask != 0).sum()), int((neuron_mask != 0).sum()))

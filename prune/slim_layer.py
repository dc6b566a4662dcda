"""A layer temporarily replaced by its physically pruned copy.

A masked layer computes every head and neuron and zeroes the pruned ones' output; the layer-wise stages run the
student's layer many times over the whole sample, so there they use the pruned copy, which does only the kept
units' work (at half the MACs, about half the time) and computes the same function (prune/physical.py).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from arch import BoundArch
from arch.pruned_modeling import NoHeadsAttention
from prune.physical import prune_layer


@contextmanager
def slim_layer(arch: BoundArch, i: int, head_row: torch.Tensor, neuron_row: torch.Tensor):
    """Layer i is a pruned copy (by these mask rows) while the context is open; the original comes back after.
    Inside, arch's accessors (attn_out, ffn_out, ...) address the copy's smaller modules."""
    layers = arch.layers()
    original = layers[i]
    layers[i] = copy.deepcopy(original)
    try:
        prune_layer(arch, i, head_row, neuron_row)
        yield
    finally:
        layers[i] = original


class ReplayedAttention(NoHeadsAttention):
    """Stands in for an attention module and answers each call with the next of the given contexts (the output
    projection's inputs of an earlier pass), through the projection where the module holds it: the attention's
    own work is not repeated. Call order must follow the contexts' order."""

    _pruned_no_heads = False

    def __init__(self, original, out_proj, n_outputs, contexts):
        super().__init__(original, out_proj, n_outputs)
        self._contexts = iter(contexts)

    def context(self, hidden):
        return next(self._contexts)


@contextmanager
def replayed_attention(arch: BoundArch, i: int, contexts: list[torch.Tensor]):
    """Layer i's attention module replays `contexts` (ReplayedAttention) while the context is open."""
    original = arch.attention(i)
    arch.set_module(i, arch.facts.attention,
                    ReplayedAttention(original, arch.attn_out_in_attention(), arch.facts.attention_outputs, contexts))
    try:
        yield
    finally:
        arch.set_module(i, arch.facts.attention, original)

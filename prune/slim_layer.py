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

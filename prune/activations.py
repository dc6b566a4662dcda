"""Statistics of what enters each block's output projections over the calibration sample (dense model).

The activation-aware baselines (Wanda-sp, FLAP) score units from these, and FLAP's bias compensation
replaces a pruned channel by its mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from arch import BoundArch
from utils.device import to_device
from utils.offload import input_device


@dataclass
class InputStats:
    """Per layer, over every real token: mean and mean square of each input column."""
    attn_mean: torch.Tensor    # [layers, head units * unit width]
    attn_sq: torch.Tensor
    ffn_mean: torch.Tensor     # [layers, ffn]
    ffn_sq: torch.Tensor

    @staticmethod
    def variance(mean, sq):
        return (sq - mean.pow(2)).clamp_min(0)


def input_statistics(model, arch: BoundArch, batches: list[dict]) -> InputStats:
    device = input_device(model)
    sums = {role: [torch.zeros(2, getattr(arch, role)(i).in_features, dtype=torch.float64, device=device)
                   for i in range(arch.num_layers)] for role in ("attn_out", "ffn_out")}
    tokens = [0]
    mask_box = {}

    def hook(i, role):
        def add(module, args):
            x = args[0][mask_box["mask"]].double()
            sums[role][i][0] += x.sum(0)
            sums[role][i][1] += x.pow(2).sum(0)
        return add

    handles = [getattr(arch, role)(i).register_forward_pre_hook(hook(i, role))
               for i in range(arch.num_layers) for role in sums]
    try:
        with torch.inference_mode():
            for batch in batches:
                batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
                mask_box["mask"] = batch["attention_mask"].bool()
                tokens[0] += int(mask_box["mask"].sum())
                model(**batch, **arch.forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    n = max(tokens[0], 1)
    stack = {role: torch.stack(v).float().cpu() / n for role, v in sums.items()}
    return InputStats(stack["attn_out"][:, 0], stack["attn_out"][:, 1], stack["ffn_out"][:, 0], stack["ffn_out"][:, 1])

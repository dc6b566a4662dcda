"""Mask rearrangement within each layer with the block-diagonal Fisher (paper section 4.2).

Inside one layer the loss of pruning a set Z is approximated by the sum over batches of
(sum_{i in Z} g_i)^2, which rewards pruning units whose gradients cancel. The greedy keeps the
number of pruned units per layer and swaps units into and out of the pruned set.
"""
from __future__ import annotations

import torch


def greedy_rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """mask [units] (0 = pruned), grads [batches, units]; returns a mask with the same count."""
    num_pruned = int((mask == 0).sum())
    if num_pruned == 0 or num_pruned == mask.numel():
        return mask.clone()
    vectors = grads.t().double()                       # [units, batches]
    sq_norm = vectors.pow(2).sum(dim=1)
    order = sq_norm.argsort().tolist()                 # least important first
    pruned = order[:num_pruned]
    total = vectors[pruned].sum(dim=0)
    for candidate in order[num_pruned:]:
        pruned.append(candidate)
        total = total + vectors[candidate]
        members = vectors[pruned]
        # ||total - g_j||^2 for every member j: drop the one whose removal leaves the smallest sum
        leftover = (total.unsqueeze(0) - members).pow(2).sum(dim=1)
        drop = int(leftover.argmin())
        total = total - vectors[pruned[drop]]
        del pruned[drop]
    new_mask = torch.ones_like(mask)
    new_mask[pruned] = 0
    return new_mask


def rearrange_masks(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """mask [layers, units], grads [batches, layers, units] -> rearranged mask (new tensor)."""
    mask_cpu, grads_cpu = mask.cpu(), grads.cpu()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # thousands of tiny ops: extra threads only add waiting (10 s vs 0.4 s when loaded)
    try:
        out = torch.stack([greedy_rearrange(mask_cpu[i], grads_cpu[:, i, :]) for i in range(mask.shape[0])])
    finally:
        torch.set_num_threads(threads)
    return out.to(mask.device)

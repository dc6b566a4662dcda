"""Masks that keep the most Fisher importance under a cost budget (paper section 4.1)."""
from __future__ import annotations

import torch

from prune.cost import MacCost


def _mask_from_indices(shape, indices: torch.Tensor, device) -> torch.Tensor:
    mask = torch.zeros(shape[0] * shape[1], device=device)
    mask[indices] = 1.0
    return mask.view(shape)


def search_mac(head_importance: torch.Tensor, neuron_importance: torch.Tensor, cost: MacCost,
               constraint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks with MACs <= constraint x the full model's heads+FFN MACs.

    Every head costs the same and every neuron costs the same, so for each head count k the best
    choice is the k most important heads plus as many of the most important neurons as the rest
    of the budget pays for; trying every k is exact.
    """
    if not 0 < constraint <= 1:
        raise ValueError(f"constraint must be in (0, 1], got {constraint}")
    num_heads, num_neurons = head_importance.numel(), neuron_importance.numel()
    budget = constraint * cost.of_counts(num_heads, num_neurons)
    head_sorted, head_order = head_importance.flatten().sort(descending=True)
    neuron_sorted, neuron_order = neuron_importance.flatten().sort(descending=True)
    head_cum = torch.cat([head_sorted.new_zeros(1), head_sorted.cumsum(0)])
    neuron_cum = torch.cat([neuron_sorted.new_zeros(1), neuron_sorted.cumsum(0)])

    best = (-1.0, 0, 0)
    for k in range(num_heads + 1):
        left = budget - k * cost.per_head
        if left < 0:
            break
        m = min(int(left // cost.per_neuron), num_neurons)
        # guard against float rounding putting us a hair over budget
        while m > 0 and cost.of_counts(k, m) > budget:
            m -= 1
        total = float(head_cum[k] + neuron_cum[m])
        if total > best[0]:
            best = (total, k, m)
    _, k, m = best
    device = head_importance.device
    return (_mask_from_indices(head_importance.shape, head_order[:k], device),
            _mask_from_indices(neuron_importance.shape, neuron_order[:m], device))


def teacher_constraint(target: float, exponent: float = 0.5) -> float:
    """The teacher mask's budget: target ** exponent (the paper: sqrt, the first step of its 2-step schedule)."""
    return target ** exponent

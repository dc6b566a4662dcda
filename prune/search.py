"""Masks that keep the most importance under a MAC / parameter budget: the searches of the registry
"search" (global: the paper's section 4.1; uniform: Wanda-sp's per-layer allocation; threshold: FLAP's).
The latency metric's own search is in prune/latency.py."""
from __future__ import annotations

import torch

from prune.cost import MacCost, UnitCost
from prune.registry import register


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


@register("search", "global")
def global_search(head_importance, neuron_importance, cost: UnitCost, constraint: float):
    """The paper's: the masks keeping the most total importance under the budget (exact for equal unit costs)."""
    return search_mac(head_importance, neuron_importance, cost, constraint)


@register("search", "uniform")
def uniform_search(head_importance, neuron_importance, cost: UnitCost, constraint: float):
    """Every layer keeps the same number of head units and the same number of neurons, its most important ones
    (the per-layer allocation of Wanda-sp and magnitude-sp). With few head units per layer one common fraction
    would waste the budget, so for every head count the neuron count is the largest that fits, and the pair
    keeping the most importance wins."""
    layers, units = head_importance.shape
    ffn = neuron_importance.shape[1]
    budget = constraint * cost.of_counts(layers * units, layers * ffn)
    head_value = head_importance.sort(dim=1, descending=True).values.cumsum(1).sum(0)
    neuron_value = neuron_importance.sort(dim=1, descending=True).values.cumsum(1).sum(0)
    best = (-float("inf"), 0, 0)
    for k in range(units + 1):
        m = min(ffn, int((budget - cost.of_counts(layers * k, 0)) // (layers * cost.per_neuron)))
        while m > 0 and cost.of_counts(layers * k, layers * m) > budget:
            m -= 1
        if m < 0:
            break
        value = (float(head_value[k - 1]) if k else 0.0) + (float(neuron_value[m - 1]) if m else 0.0)
        if value > best[0]:
            best = (value, k, m)
    return _top_per_layer(head_importance, best[1]), _top_per_layer(neuron_importance, best[2])


def _top_per_layer(importance: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.zeros_like(importance, dtype=torch.float32)
    if count:
        mask.scatter_(1, importance.topk(count, dim=1).indices, 1.0)
    return mask


@register("search", "threshold")
def threshold_search(head_importance, neuron_importance, cost: UnitCost, constraint: float):
    """FLAP's global allocation: all units ranked by (standardized) score, kept from the top while the budget lasts."""
    scores = torch.cat([head_importance.flatten(), neuron_importance.flatten()]).float()
    unit_cost = torch.cat([torch.full((head_importance.numel(),), float(cost.per_head)),
                           torch.full((neuron_importance.numel(),), float(cost.per_neuron))]).double()
    budget = constraint * cost.of_counts(head_importance.numel(), neuron_importance.numel())
    order = scores.argsort(descending=True)
    kept = order[unit_cost[order].cumsum(0) <= budget * (1 + 1e-12)]
    keep = torch.zeros(scores.numel())
    keep[kept] = 1.0
    heads = keep[:head_importance.numel()].view_as(head_importance)
    return heads.to(head_importance.device), keep[head_importance.numel():].view_as(neuron_importance).to(
        neuron_importance.device)

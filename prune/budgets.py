"""Budget metrics: what a constraint is a fraction of, and the search that meets it.

A budget is built from the bound model and the task's sequence length; it searches masks under
`constraint` x the full model's cost and reports the ratio a pair of masks reaches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.cost import UnitCost, mac_cost_of, param_cost_of
from prune.latency import check_lut, estimate_latency, full_latency, search_latency
from prune import registry
from prune.registry import register
from prune.search import search_mac
from utils.arch import BoundArch


@dataclass(frozen=True)
class BudgetInputs:
    arch: BoundArch
    seq_len: float                       # tokens per example, for MACs
    mha_lut: torch.Tensor | None = None  # latency tables (prune/latency.py), for the latency metric
    ffn_lut: torch.Tensor | None = None
    search: str = "global"               # registry "search": how masks are chosen under a MAC/params budget


class CountBudget:
    """Every head unit costs the same and every neuron costs the same (MACs, parameters)."""

    def __init__(self, cost: UnitCost, search: str = "global"):
        self.cost = cost
        self._search = registry.get("search", search)

    def search(self, head_importance, neuron_importance, constraint: float):
        return self._search(head_importance, neuron_importance, self.cost, constraint)

    def ratio(self, head_mask, neuron_mask) -> float:
        return self.cost.of_masks(head_mask, neuron_mask) / self.cost.of_counts(head_mask.numel(), neuron_mask.numel())


class LatencyBudget:
    def __init__(self, mha_lut, ffn_lut, num_layers: int):
        self.mha_lut, self.ffn_lut, self.num_layers = mha_lut, ffn_lut, num_layers

    def search(self, head_importance, neuron_importance, constraint: float):
        return search_latency(head_importance, neuron_importance, self.mha_lut, self.ffn_lut, constraint)

    def ratio(self, head_mask, neuron_mask) -> float:
        return (estimate_latency(self.mha_lut, self.ffn_lut, head_mask, neuron_mask)
                / full_latency(self.mha_lut, self.ffn_lut, self.num_layers))


@register("metric", "mac")
def mac(inputs: BudgetInputs) -> CountBudget:
    return CountBudget(mac_cost_of(inputs.arch, inputs.seq_len), inputs.search)


@register("metric", "params")
def params(inputs: BudgetInputs) -> CountBudget:
    return CountBudget(param_cost_of(inputs.arch), inputs.search)


@register("metric", "latency")
def latency(inputs: BudgetInputs) -> LatencyBudget:
    if inputs.search != "global":
        raise ValueError(f"the latency metric has its own search; search '{inputs.search}' needs mac or params")
    if inputs.mha_lut is None or inputs.ffn_lut is None:
        raise ValueError("the latency metric needs both latency tables (attention and FFN)")
    arch = inputs.arch
    return LatencyBudget(check_lut(inputs.mha_lut, arch.num_head_units, "mha_lut", "attention head units"),
                         check_lut(inputs.ffn_lut, arch.ffn_dim, "ffn_lut", "FFN neurons"), arch.num_layers)


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

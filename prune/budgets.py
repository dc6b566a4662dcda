"""Budget metrics: what a constraint is a fraction of (MACs, parameters, latency), and its search.

A budget is built from the bound model and the task's sequence length; it searches masks under
`constraint` x the full model's cost and reports the ratio a pair of masks reaches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from arch import BoundArch
from prune import registry
from prune.cost import UnitCost, mac_cost_of, param_cost_of
from prune.latency import estimate_latency, fitted_lut, full_latency, search_latency
from prune.latency_tables import check_lut
from prune.query_heads import QueryHeadCost, search_query_heads
from prune.registry import register


@dataclass(frozen=True)
class BudgetInputs:
    arch: BoundArch
    seq_len: float                       # tokens per example, for MACs
    mha_lut: torch.Tensor | None = None  # latency tables (prune/latency.py), for the latency metric
    ffn_lut: torch.Tensor | None = None
    search: str = "global"               # registry "search": how masks are chosen under a MAC/params budget
    lut_fit: bool = False                # the latency metric prices counts by the tables' piecewise-linear fit


class CountBudget:
    """Every head unit costs the same and every neuron costs the same (MACs, parameters); with query heads within
    KV groups as units (QueryHeadCost) a kept group also costs its key/value rows, and the search is
    prune/query_heads.py's."""

    def __init__(self, cost: UnitCost | QueryHeadCost, search: str = "global"):
        self.cost = cost
        if isinstance(cost, QueryHeadCost):
            if search != "global":
                raise ValueError(f"query heads within KV groups are searched by prune/query_heads.py; search "
                                 f"'{search}' takes whole groups (attention unit 'group')")
            self._search = search_query_heads
        else:
            self._search = registry.get("search", search)

    def search(self, head_importance, neuron_importance, constraint: float, head_grads=None):
        """head_grads: per-batch head-mask gradients, by which the query-head search values each layer's heads
        (prune/query_heads.block_fisher_options); only with query heads as units."""
        if head_grads is None:
            return self._search(head_importance, neuron_importance, self.cost, constraint)
        if not isinstance(self.cost, QueryHeadCost):
            raise ValueError("head_grads are taken by the query-head search only")
        return self._search(head_importance, neuron_importance, self.cost, constraint, head_grads=head_grads)

    def ratio(self, head_mask, neuron_mask) -> float:
        return self.cost.ratio(head_mask, neuron_mask)


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
    if inputs.arch.query_heads:
        raise ValueError("the latency metric's tables count whole KV groups; query heads within groups need "
                         "mac or params")
    if inputs.mha_lut is None or inputs.ffn_lut is None:
        raise ValueError("the latency metric needs both latency tables (attention and FFN)")
    arch = inputs.arch
    tables = (check_lut(inputs.mha_lut, arch.num_head_units, "mha_lut", "attention head units"),
              check_lut(inputs.ffn_lut, arch.ffn_dim, "ffn_lut", "FFN neurons"))
    if inputs.lut_fit:
        tables = tuple(fitted_lut(t) for t in tables)
    return LatencyBudget(*tables, arch.num_layers)

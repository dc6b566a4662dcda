"""Query heads within key/value groups as a second attention unit (issue 32): the cost and the search.

With grouped-query attention a head unit is a whole KV group with its query heads, so a model with one KV head per
layer (Gemma 3 270M) can only keep or drop a layer's whole attention. Here a layer keeps g of its G groups and the
same number q of query heads in each kept group (so it stays a valid GQA layer for transformers and GGUF runtimes),
each group its own best q. A query head costs its query rows, its output-projection columns and its attention
products; a kept group adds its key and value rows whatever q is.

`search_query_heads` picks, for every layer, g and q (and which groups and heads), and the neurons, keeping the
most importance under the budget: a dynamic programme over the layers on the numbers of groups and heads kept
(the costs are linear in both), then the most important neurons the rest of the budget pays for. It is exact, and
keeping whole groups (q = all) is one of its choices, so it never keeps less importance than the whole-group search
at the same budget. Masks are [layers, query heads], 1 for a kept head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class QueryHeadCost:
    per_query_head: float    # query rows + output columns + attention products of one query head
    per_kv_group: float      # key and value rows of one kept group
    per_neuron: float
    heads_per_group: int

    def of_counts(self, groups: float, heads: float, neurons: float) -> float:
        return groups * self.per_kv_group + heads * self.per_query_head + neurons * self.per_neuron

    def full(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        heads = head_mask.numel()
        return self.of_counts(heads // self.heads_per_group, heads, neuron_mask.numel())

    def of_masks(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        kept = head_mask.detach().cpu() != 0
        groups = kept.view(kept.shape[0], -1, self.heads_per_group).any(-1).sum()
        return self.of_counts(int(groups), int(kept.sum()), int((neuron_mask != 0).sum()))

    def ratio(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        return self.of_masks(head_mask, neuron_mask) / self.full(head_mask, neuron_mask)


def query_head_mac_cost(seq_len: float, hidden_size: int, head_dim: int, heads_per_group: int,
                        ffn_inputs: int = 1) -> QueryHeadCost:
    """MACs as prune/cost.MacCost counts them, split by unit kind (their sum over a group is MacCost's per_head)."""
    s, h, d = seq_len, hidden_size, head_dim
    return QueryHeadCost(per_query_head=2 * s * h * d + 2 * s * s * d, per_kv_group=2 * s * h * d,
                         per_neuron=(ffn_inputs + 1) * s * h, heads_per_group=heads_per_group)


def query_head_param_cost(hidden_size: int, head_dim: int, heads_per_group: int, ffn_inputs: int = 1) -> QueryHeadCost:
    h, d = hidden_size, head_dim
    return QueryHeadCost(per_query_head=2 * h * d, per_kv_group=2 * h * d, per_neuron=(ffn_inputs + 1) * h,
                         heads_per_group=heads_per_group)


def heads_per_kept_group(kept_per_group, layer: int) -> int:
    """The one number of query heads every kept group of a layer keeps (0: none kept), from the per-group counts;
    ValueError when they differ (no GQA layer computes that)."""
    counts = sorted({int(c) for c in kept_per_group} - {0})
    if len(counts) > 1:
        raise ValueError(f"layer {layer}: its kept KV groups keep {counts} query heads; every kept group of a layer "
                         f"must keep the same number (prune/query_heads.py's search does)")
    return counts[0] if counts else 0


def layer_widths(head_mask: torch.Tensor, heads_per_group: int) -> list[tuple[int, int]]:
    """Per layer (groups kept, query heads per kept group); ValueError as heads_per_kept_group."""
    rows = (head_mask.detach().cpu() != 0).view(head_mask.shape[0], -1, heads_per_group)
    return [(int(row.any(-1).sum()), heads_per_kept_group(row.sum(-1).tolist(), l)) for l, row in enumerate(rows)]


def _layer_options(importance: np.ndarray, heads_per_group: int):
    """For one layer: value[g, q] of keeping the best g groups with their best q heads each (g, q from 0), and the
    per-group order that realises it."""
    per_group = -np.sort(-importance.reshape(-1, heads_per_group), axis=1)       # [G, q0], descending
    top_q = np.concatenate([np.zeros((per_group.shape[0], 1)), per_group.cumsum(1)], axis=1)   # [G, q0 + 1]
    value = np.zeros((per_group.shape[0] + 1, heads_per_group + 1))
    for q in range(1, heads_per_group + 1):
        value[1:, q] = np.sort(top_q[:, q])[::-1].cumsum()
    return value


def search_query_heads(head_importance: torch.Tensor, neuron_importance: torch.Tensor, cost: QueryHeadCost,
                       constraint: float, whole_groups_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks [L, query heads] and [L, F] keeping the most importance with cost <= constraint x the full cost.
    whole_groups_only: offer only q = all (the whole-group search in these units, for comparison)."""
    if not 0 < constraint <= 1:
        raise ValueError(f"constraint must be in (0, 1], got {constraint}")
    q0 = cost.heads_per_group
    imp = head_importance.detach().double().cpu().numpy()
    layers, heads = imp.shape
    groups = heads // q0
    budget = constraint * cost.full(head_importance, neuron_importance)
    qs = [q0] if whole_groups_only else list(range(1, q0 + 1))
    # best[a, b]: most head importance with a groups and b query heads kept over the layers so far
    best = np.full((layers * groups + 1, layers * heads + 1), -np.inf)
    best[0, 0] = 0.0
    choices = []
    for l in range(layers):
        value = _layer_options(imp[l], q0)
        new = best.copy()                                   # g = 0: nothing kept in this layer
        pick = np.zeros(best.shape, dtype=np.int32)
        for g in range(1, groups + 1):
            for q in qs:
                shifted = np.full(best.shape, -np.inf)
                shifted[g:, g * q:] = best[:best.shape[0] - g, :best.shape[1] - g * q] + value[g, q]
                better = shifted > new
                new[better], pick[better] = shifted[better], g * (q0 + 1) + q
        best = new
        choices.append(pick)
    neuron_sorted, neuron_order = neuron_importance.flatten().double().cpu().sort(descending=True)
    neuron_cum = np.concatenate([[0.0], neuron_sorted.cumsum(0).numpy()])
    a_idx, b_idx = np.nonzero(np.isfinite(best))
    left = budget - (a_idx * cost.per_kv_group + b_idx * cost.per_query_head)
    m = np.clip(np.floor(left / cost.per_neuron), -1, neuron_cum.size - 1).astype(np.int64)
    m = np.where(left < 0, -1, m)
    for i in np.nonzero(m >= 0)[0]:          # float rounding must not put a choice a hair over the budget
        while m[i] > 0 and cost.of_counts(a_idx[i], b_idx[i], m[i]) > budget:
            m[i] -= 1
    feasible = m >= 0
    total = np.where(feasible, best[a_idx, b_idx] + neuron_cum[np.maximum(m, 0)], -np.inf)
    i = int(np.argmax(total))
    a, b, neurons = int(a_idx[i]), int(b_idx[i]), int(m[i])
    head_mask = torch.zeros(layers, heads)
    for l in reversed(range(layers)):
        code = int(choices[l][a, b])
        g, q = divmod(code, q0 + 1)
        if g:
            per_group = imp[l].reshape(groups, q0)
            top = -np.sort(-per_group, axis=1)[:, :q].sum(1)
            for grp in np.argsort(-top, kind="stable")[:g]:
                kept = np.argsort(-per_group[grp], kind="stable")[:q]
                head_mask[l, grp * q0 + kept] = 1.0
        a, b = a - g, b - g * q
    neuron_mask = torch.zeros(neuron_importance.numel())
    neuron_mask[neuron_order[:neurons]] = 1.0
    return (head_mask.to(head_importance.device),
            neuron_mask.view_as(neuron_importance).to(neuron_importance.device))

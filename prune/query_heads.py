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

How a layer's heads are valued. By default, by their own (diagonal) Fisher importances: dropping a whole group then
costs the sum of its heads' squared gradients, where the whole-group unit's Fisher is the square of their sum.
Given the per-batch gradients (`head_grads`; PruneOptions.query_head_fisher = "block"), each layer's choice (g, q)
is valued instead by the layer's block-diagonal Fisher (the loss estimate the paper's rearrangement minimises:
the squared sum of the dropped heads' gradients per batch), its heads the best of every valid choice on that
estimate (a local search where there are too many: `block_fisher_options`), so that dropping whole groups costs
exactly what it costs as whole-group units. Measured on SmolLM2-135M and Gemma 3 270M, the block valuation gave
higher perplexity than the diagonal one at 0.65 and 0.5 of the MACs (docs/results.md), so it is not the default.
"""
from __future__ import annotations

import itertools
import math
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


def _diagonal_choice(importance: np.ndarray, heads_per_group: int, g: int, q: int) -> np.ndarray:
    """Kept heads (bool [heads]) of one layer: its best g groups by their best q heads' importance, q heads each."""
    per_group = importance.reshape(-1, heads_per_group)
    top = -np.sort(-per_group, axis=1)[:, :q].sum(1)
    kept = np.zeros(per_group.shape, dtype=bool)
    for grp in np.argsort(-top, kind="stable")[:g]:
        kept[grp, np.argsort(-per_group[grp], kind="stable")[:q]] = True
    return kept.flatten()


def _dropped_loss(vectors: np.ndarray, kept: np.ndarray) -> float:
    dropped = vectors[~kept].sum(0)
    return float(dropped @ dropped)


def _improve(vectors: np.ndarray, kept: np.ndarray, heads_per_group: int, max_steps: int = 200) -> np.ndarray:
    """Local search on the layer's block-diagonal loss, keeping g groups of q heads: swap a kept head for a dropped
    head of its group, or a kept group for a dropped one (which keeps its q heads of largest squared gradient);
    take the best improving move until none improves."""
    q0 = heads_per_group
    diag = (vectors ** 2).sum(1).reshape(-1, q0)
    total = vectors.sum(0)
    for _ in range(max_steps):
        rows = kept.reshape(-1, q0)
        dropped_sum = total - vectors[kept].sum(0)
        moves = []                                       # (change of the kept sum [B], new kept)
        for grp in np.nonzero(rows.any(1))[0]:
            for a in np.nonzero(rows[grp])[0]:
                for b in np.nonzero(~rows[grp])[0]:
                    new = kept.copy()
                    new[grp * q0 + a], new[grp * q0 + b] = False, True
                    moves.append((vectors[grp * q0 + b] - vectors[grp * q0 + a], new))
        q = int(rows.sum(1).max()) if rows.any() else 0
        for out in np.nonzero(rows.any(1))[0]:
            for into in np.nonzero(~rows.any(1))[0]:
                new = kept.copy()
                new[out * q0:(out + 1) * q0] = False
                new[into * q0 + np.argsort(-diag[into], kind="stable")[:q]] = True
                moves.append((vectors[new & ~kept].sum(0) - vectors[kept & ~new].sum(0), new))
        if not moves:
            return kept
        deltas = np.stack([m[0] for m in moves])
        losses = ((dropped_sum[None] - deltas) ** 2).sum(1)
        best = int(np.argmin(losses))
        if losses[best] >= float(dropped_sum @ dropped_sum) * (1 - 1e-12):
            return kept
        kept = moves[best][1]
    return kept


EXACT_LIMIT = 20_000      # valid kept sets of one (g, q) enumerated outright up to this many; local search above


def _every_choice(groups: int, heads_per_group: int, g: int, q: int) -> np.ndarray:
    """Every kept set (bool [n, heads]) with g groups keeping q heads each."""
    subsets = [list(c) for c in itertools.combinations(range(heads_per_group), q)]
    rows = []
    for kept_groups in itertools.combinations(range(groups), g):
        for picks in itertools.product(subsets, repeat=g):
            row = np.zeros(groups * heads_per_group, dtype=bool)
            for grp, pick in zip(kept_groups, picks):
                row[[grp * heads_per_group + h for h in pick]] = True
            rows.append(row)
    return np.stack(rows)


def _best_choice(vectors: np.ndarray, diag: np.ndarray, heads_per_group: int, g: int, q: int) -> np.ndarray:
    groups = vectors.shape[0] // heads_per_group
    count = math.comb(groups, g) * math.comb(heads_per_group, q) ** g
    if count > EXACT_LIMIT:
        return _improve(vectors, _diagonal_choice(diag, heads_per_group, g, q), heads_per_group)
    choices = _every_choice(groups, heads_per_group, g, q)
    dropped = (~choices).astype(vectors.dtype) @ vectors                        # [n, batches]
    return choices[int(np.argmin((dropped ** 2).sum(1)))]


def block_fisher_options(grads: np.ndarray, heads_per_group: int) -> tuple[np.ndarray, dict]:
    """One layer's choices valued by its block-diagonal Fisher. grads [batches, heads]. Returns value[g, q] = the
    loss estimate of dropping every head minus that of dropping the heads the choice drops (0 for g = 0), and
    {(g, q): kept heads (bool [heads])}: the best of every valid kept set where there are at most EXACT_LIMIT of them
    (SmolLM2: 27 at most, Gemma 3 270M: 6), else what `_improve` reaches from the diagonal choice."""
    vectors = grads.T                                      # [heads, batches]
    q0 = heads_per_group
    groups = vectors.shape[0] // q0
    diag = (vectors ** 2).sum(1)
    everything = _dropped_loss(vectors, np.zeros(vectors.shape[0], dtype=bool))
    value, kept = np.zeros((groups + 1, q0 + 1)), {}
    for g in range(1, groups + 1):
        for q in range(1, q0 + 1):
            choice = _best_choice(vectors, diag, q0, g, q)
            value[g, q], kept[(g, q)] = everything - _dropped_loss(vectors, choice), choice
    return value, kept


def search_query_heads(head_importance: torch.Tensor, neuron_importance: torch.Tensor, cost: QueryHeadCost,
                       constraint: float, whole_groups_only: bool = False,
                       head_grads: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks [L, query heads] and [L, F] keeping the most importance with cost <= constraint x the full cost.
    whole_groups_only: offer only q = all (the whole-group search in these units, for comparison).
    head_grads [batches, L, query heads]: value each layer's heads by its block-diagonal Fisher
    (block_fisher_options) instead of head_importance."""
    if not 0 < constraint <= 1:
        raise ValueError(f"constraint must be in (0, 1], got {constraint}")
    q0 = cost.heads_per_group
    imp = head_importance.detach().double().cpu().numpy()
    layers, heads = imp.shape
    groups = heads // q0
    if head_grads is not None:
        grads = head_grads.detach().double().cpu().numpy()
        options = [block_fisher_options(grads[:, l], q0) for l in range(layers)]
    else:
        options = [(_layer_options(imp[l], q0), None) for l in range(layers)]
    budget = constraint * cost.full(head_importance, neuron_importance)
    qs = [q0] if whole_groups_only else list(range(1, q0 + 1))
    # best[a, b]: most head importance with a groups and b query heads kept over the layers so far
    best = np.full((layers * groups + 1, layers * heads + 1), -np.inf)
    best[0, 0] = 0.0
    choices = []
    for l in range(layers):
        value = options[l][0]
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
            chosen = options[l][1]
            kept = chosen[(g, q)] if chosen is not None else _diagonal_choice(imp[l], q0, g, q)
            head_mask[l, torch.from_numpy(np.nonzero(kept)[0])] = 1.0
        a, b = a - g, b - g * q
    neuron_mask = torch.zeros(neuron_importance.numel())
    neuron_mask[neuron_order[:neurons]] = 1.0
    return (head_mask.to(head_importance.device),
            neuron_mask.view_as(neuron_importance).to(neuron_importance.device))

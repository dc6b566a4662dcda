"""The two-kind attention search (query heads within KV groups, prune/query_heads.py): within budget, valid GQA
layers, exact on a brute-forced instance, and never below the whole-group search."""
import itertools

import pytest
import torch

from prune.cost import MacCost
from prune.query_heads import layer_widths, query_head_mac_cost, search_query_heads
from prune.search import search_mac

SEQ, HIDDEN, HEAD_DIM = 16, 32, 8


def _value(head_mask, neuron_mask, heads, neurons):
    return float((head_mask * heads).sum() + (neuron_mask * neurons).sum())


def _problem(seed, layers=4, groups=3, q0=3, ffn=20):
    gen = torch.Generator().manual_seed(seed)
    heads = torch.rand(layers, groups * q0, generator=gen) ** 3      # skewed, as real importances are
    neurons = torch.rand(layers, ffn, generator=gen) ** 3 * 0.05
    return heads, neurons, query_head_mac_cost(SEQ, HIDDEN, HEAD_DIM, q0, ffn_inputs=2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("constraint", [0.3, 0.5, 0.65, 0.8])
def test_within_budget_valid_and_never_below_whole_groups(seed, constraint):
    heads, neurons, cost = _problem(seed)
    hm, nm = search_query_heads(heads, neurons, cost, constraint)
    assert cost.of_masks(hm, nm) <= constraint * cost.full(hm, nm) * (1 + 1e-12)
    layer_widths(hm, cost.heads_per_group)                          # raises if a layer's groups differ
    group_importance = heads.view(4, 3, 3).sum(-1)
    whole = MacCost(SEQ, HIDDEN, HEAD_DIM, heads_per_unit=3, ffn_inputs=2)
    gm, wm = search_mac(group_importance, neurons, whole, constraint)
    whole_value = float((gm * group_importance).sum() + (wm * neurons).sum())
    assert _value(hm, nm, heads, neurons) >= whole_value - 1e-9
    assert cost.of_counts(3 * 4, 9 * 4, 20 * 4) == pytest.approx(whole.of_counts(3 * 4, 20 * 4))
    hg, ng = search_query_heads(heads, neurons, cost, constraint, whole_groups_only=True)
    assert _value(hg, ng, heads, neurons) == pytest.approx(whole_value)
    assert all(q in (0, 3) for _, q in layer_widths(hg, 3))


def test_exact_against_every_valid_choice_of_a_small_model():
    heads, neurons, cost = _problem(11, layers=2, groups=2, q0=2, ffn=3)
    per_layer = []
    for l in range(2):                  # every valid layer: a set of groups, q heads in each, any of them
        options = [torch.zeros(4)]
        for groups in ([0], [1], [0, 1]):
            for q in (1, 2):
                for picks in itertools.product(itertools.combinations(range(2), q), repeat=len(groups)):
                    row = torch.zeros(4)
                    for g, pick in zip(groups, picks):
                        row[[2 * g + p for p in pick]] = 1
                    options.append(row)
        per_layer.append(options)
    for constraint in (0.25, 0.4, 0.55, 0.7, 0.9):
        budget = constraint * cost.full(heads, neurons)
        best = -1.0
        for rows in itertools.product(*per_layer):
            hm = torch.stack(rows)
            for bits in itertools.product((0, 1), repeat=6):
                nm = torch.tensor(bits, dtype=torch.float32).view(2, 3)
                if cost.of_masks(hm, nm) <= budget:
                    best = max(best, _value(hm, nm, heads, neurons))
        hm, nm = search_query_heads(heads, neurons, cost, constraint)
        assert _value(hm, nm, heads, neurons) == pytest.approx(best), constraint


def test_uneven_query_heads_across_groups_are_refused():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="layer 0: kept groups keep \\[1, 2\\] query heads"):
        layer_widths(mask, 2)
    assert layer_widths(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), 2) == [(2, 1)]

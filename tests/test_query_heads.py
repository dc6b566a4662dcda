"""The two-kind attention search (query heads within KV groups, prune/query_heads.py): within budget, valid GQA
layers, exact on a brute-forced instance, and never below the whole-group search."""
import itertools

import pytest
import torch

from prune.cost import MacCost
from prune import query_heads
from prune.query_heads import (EXACT_LIMIT, _diagonal_choice, block_fisher_options, layer_widths, query_head_mac_cost,
                               search_query_heads)
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


def _grads(seed, batches=6, layers=4, groups=3, q0=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batches, layers, groups * q0, generator=gen) * torch.rand(1, layers, groups * q0, generator=gen)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("constraint", [0.3, 0.5, 0.8])
def test_block_fisher_search_is_within_budget_and_drops_a_lone_group_at_its_group_fisher(seed, constraint):
    """One KV group per layer (Gemma 3 270M's layout): valued by the block-diagonal Fisher, keeping or dropping a
    whole group is worth exactly the whole-group unit's Fisher (the square of the summed head gradients)."""
    grads = _grads(seed, groups=1, q0=4)
    heads, neurons, cost = _problem(seed, groups=1, q0=4)
    hm, nm = search_query_heads(heads, neurons, cost, constraint, head_grads=grads)
    assert cost.of_masks(hm, nm) <= constraint * cost.full(hm, nm) * (1 + 1e-12)
    layer_widths(hm, 4)
    group_fisher = grads.sum(-1, keepdim=True).pow(2).sum(0)          # [layers, 1]
    whole = MacCost(SEQ, HIDDEN, HEAD_DIM, heads_per_unit=4, ffn_inputs=2)
    gm, wm = search_mac(group_fisher, neurons, whole, constraint)
    hg, ng = search_query_heads(heads, neurons, cost, constraint, whole_groups_only=True, head_grads=grads)
    assert torch.equal(hg.view(4, 1, 4).any(-1).float(), gm) and torch.equal(ng, wm)


def test_block_fisher_drops_heads_whose_gradients_cancel():
    x = torch.tensor([3.0, -2.0, 1.0, 4.0])
    grads = torch.stack([x, -x, 0.3 * x.flip(0), torch.tensor([0.2, 0.1, -0.3, 0.2])], dim=1)   # [batches, heads]
    value, kept = block_fisher_options(grads.double().numpy(), 4)
    assert kept[(1, 2)].tolist() == [False, False, True, True]           # the diagonal would keep heads 0 and 1
    assert value[1, 4] == pytest.approx(float(grads.sum(1).pow(2).sum()))
    assert value[1, 2] == pytest.approx(value[1, 4])                       # dropping 0 and 1 together costs nothing


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("exact_limit", [EXACT_LIMIT, 0])       # 0: the local search everywhere
def test_block_fisher_choices_are_valid_and_no_worse_than_the_diagonal_ones(seed, exact_limit, monkeypatch):
    monkeypatch.setattr(query_heads, "EXACT_LIMIT", exact_limit)
    grads = _grads(seed, layers=1)[:, 0].double().numpy()
    value, kept = block_fisher_options(grads, 3)
    everything = float((grads.sum(1) ** 2).sum())
    diag = (grads ** 2).sum(0)
    for (g, q), row in kept.items():
        assert (row.reshape(3, 3).sum(1) == q).sum() == g and set(row.reshape(3, 3).sum(1).tolist()) <= {0, q}
        start = _diagonal_choice(diag, 3, g, q)
        dropped = grads[:, ~start].sum(1)
        assert value[g, q] >= everything - float(dropped @ dropped) - 1e-9


def test_uneven_query_heads_across_groups_are_refused():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="layer 0: its kept KV groups keep \\[1, 2\\] query heads"):
        layer_widths(mask, 2)
    assert layer_widths(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), 2) == [(2, 1)]


# ------------------------------------------------------------------- wired through arch, physical, save and load
from arch import bind  # noqa: E402
from arch.hooks import apply_masks  # noqa: E402
from export.hf_folder import save_pruned  # noqa: E402
from export.hf_load import load_pruned  # noqa: E402
from prune.cost import mac_cost_of  # noqa: E402
from prune.physical import physically_pruned_copy  # noqa: E402
from tests.tiny import lm_batch, query_masks, tiny_decoder  # noqa: E402

L, H, F = 3, 4, 37        # 4 query heads in 2 KV groups of 2


def _logits(model, batch, head=None, neuron=None, unit="query"):
    with torch.no_grad(), apply_masks(bind(model, unit), head, neuron):
        return model(input_ids=batch["input_ids"], use_cache=False).logits


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2", "phi3"])
def test_query_head_pruned_decoder_equals_masked_reloads_and_generates(family, tmp_path):
    model = tiny_decoder(family)
    batch = lm_batch(model)
    head, neuron = query_masks()
    expected = _logits(model, batch, head, neuron)
    pruned, shapes = physically_pruned_copy(model, head, neuron)
    assert shapes["attention_unit"] == "query" and shapes["heads_per_layer"] == [2, 0, 2]
    arch = bind(pruned, "query")
    assert [arch.query_width(i) for i in range(L)] == [16, 0, 16] and [arch.kv_width(i) for i in range(L)] == [16, 0, 8]
    attn = [b.self_attn for b in pruned.model.layers]
    assert attn[0].num_key_value_groups == 1 and attn[2].num_key_value_groups == 2
    assert torch.allclose(_logits(pruned, batch), expected, atol=1e-4)
    save_pruned(pruned, None, str(tmp_path / "m"), shapes)
    reloaded = load_pruned(str(tmp_path / "m"))
    assert torch.allclose(_logits(reloaded, batch), expected, atol=1e-4)
    out = reloaded.generate(batch["input_ids"][:1, :4], max_new_tokens=5, do_sample=False)
    assert torch.equal(out, pruned.generate(batch["input_ids"][:1, :4], max_new_tokens=5, do_sample=False))


def test_query_head_masks_that_break_a_gqa_layer_are_refused():
    model = tiny_decoder("llama")
    head, neuron = query_masks()
    head[0, 0] = 1.0           # group 0 would keep 2 heads, group 1 one
    with pytest.raises(ValueError, match="layer 0: its kept KV groups keep \\[1, 2\\] query heads"):
        physically_pruned_copy(model, head, neuron)


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_mac_count_with_query_head_units_matches_the_linear_shapes(family):
    model = tiny_decoder(family)
    head, neuron = query_masks()
    cost = mac_cost_of(bind(model, "query"), 20)
    pruned, _ = physically_pruned_copy(model, head, neuron)
    total = 0.0
    for block in pruned.model.layers:
        linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        total += 20 * sum(x.in_features * x.out_features for x in linears)
        total += 2 * 20 * 20 * block.self_attn.o_proj.in_features     # scores and context over the kept query heads
    assert cost.of_masks(head, neuron) == pytest.approx(total)


def test_an_unknown_query_head_valuation_is_refused():
    from prune.options import PruneOptions
    with pytest.raises(ValueError, match="query_head_fisher must be one of"):
        PruneOptions(0.5, query_head_fisher="blocks")

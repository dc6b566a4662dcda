"""--width_multiple: per-layer FFN counts are multiples of N, the budget holds, the kept importance is optimal."""
import itertools

import pytest
import torch

from prune.budgets import CountBudget
from prune.cost import MacCost, ParamCost
from prune.widths import WidthMultipleError, apply_width_multiple, multiple_widths


def _random_case(seed):
    gen = torch.Generator().manual_seed(seed)
    layers = int(torch.randint(1, 6, (1,), generator=gen))
    units = int(torch.randint(1, 5, (1,), generator=gen))
    ffn = int(torch.randint(1, 70, (1,), generator=gen))
    head_imp = torch.rand(layers, units, generator=gen) ** 3
    neuron_imp = torch.rand(layers, ffn, generator=gen) ** 3
    cost = [MacCost(16, 32, 8, 2, 2), ParamCost(32, 8, 1, 2)][seed % 2]
    constraint = float(torch.rand(1, generator=gen)) * 0.9 + 0.1
    return head_imp, neuron_imp, cost, constraint


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("multiple", [1, 2, 3, 8, 32])
def test_counts_are_multiples_and_the_budget_holds(seed, multiple):
    head_imp, neuron_imp, cost, constraint = _random_case(seed)
    budget = CountBudget(cost, "global")
    head, neuron = budget.search(head_imp, neuron_imp, constraint)
    for uniform in (False, True):
        out = multiple_widths(neuron_imp, head, cost, constraint, multiple, uniform=uniform)
        counts = (out != 0).sum(1)
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        assert all(int(c) % multiple == 0 for c in counts)
        total = cost.of_counts(head_imp.numel(), neuron_imp.numel())
        assert cost.of_masks(head, out) <= constraint * total * (1 + 1e-12)
        if uniform:
            assert len(set(counts.tolist())) == 1
        # each layer keeps its most important channels
        for i in range(out.shape[0]):
            kept, dropped = neuron_imp[i][out[i] != 0], neuron_imp[i][out[i] == 0]
            if kept.numel() and dropped.numel():
                assert kept.min() >= dropped.max()
    if multiple == 1:      # N = 1 keeps what the global search keeps (same importance)
        same = multiple_widths(neuron_imp, head, cost, constraint, 1)
        assert torch.isclose((same * neuron_imp).sum(), (neuron * neuron_imp).sum())


@pytest.mark.parametrize("seed", range(25))
def test_kept_importance_is_the_best_over_all_multiples(seed):
    """Brute force over every per-layer count that is a multiple of N and fits the budget."""
    gen = torch.Generator().manual_seed(100 + seed)
    layers, ffn, multiple = 3, 9, int(torch.randint(1, 4, (1,), generator=gen))
    neuron_imp = torch.rand(layers, ffn, generator=gen) ** 2
    head = torch.ones(layers, 2)
    cost = MacCost(8, 16, 4, 1, 2)
    floor = cost.of_counts(head.numel(), 0) / cost.of_counts(head.numel(), neuron_imp.numel())
    constraint = floor + float(torch.rand(1, generator=gen)) * (1 - floor)
    out = multiple_widths(neuron_imp, head, cost, constraint, multiple)
    budget = constraint * cost.of_counts(head.numel(), neuron_imp.numel())
    ranked = neuron_imp.sort(dim=1, descending=True).values.cumsum(1)
    best = 0.0
    for counts in itertools.product(range(0, ffn + 1, multiple), repeat=layers):
        if cost.of_counts(head.numel(), sum(counts)) <= budget:
            best = max(best, sum(float(ranked[i, c - 1]) if c else 0.0 for i, c in enumerate(counts)))
    assert float((out * neuron_imp).sum()) == pytest.approx(best, rel=1e-5, abs=1e-6)


def test_default_is_the_search_result_itself():
    head_imp, neuron_imp, cost, constraint = _random_case(3)
    masks = CountBudget(cost).search(head_imp, neuron_imp, constraint)
    assert apply_width_multiple(CountBudget(cost), neuron_imp, masks, constraint, 1, "global") is masks


def test_bad_inputs_are_user_errors():
    head_imp, neuron_imp, cost, constraint = _random_case(4)
    head = torch.ones_like(head_imp)
    with pytest.raises(WidthMultipleError, match="positive integer"):
        multiple_widths(neuron_imp, head, cost, 0.5, 0)
    with pytest.raises(WidthMultipleError, match="head units alone"):
        multiple_widths(neuron_imp, head, cost, 0.01, 4)

    class Latency:
        pass
    with pytest.raises(WidthMultipleError, match="mac or params"):
        apply_width_multiple(Latency(), neuron_imp, (head, head), 0.5, 4, "global")


def test_pipeline_keeps_multiples_through_rearrangement_and_tuning():
    from prune.pipeline import PruneOptions, prune
    from tests.tiny import lm_batch, tiny_decoder
    from arch import bind
    model = tiny_decoder("llama", layers=3)
    arch = bind(model)
    batches = [lm_batch(model, seed=s) for s in range(2)]
    result = prune(model, arch, batches, 9, PruneOptions(constraint=0.6, width_multiple=4, method="kwon"))
    for stage in ("search", "rearrange", "final"):
        counts = (result.masks[stage][1] != 0).sum(1)
        assert all(int(c) % 4 == 0 for c in counts), (stage, counts)
    assert result.budget_ratio <= 0.6 + 1e-9


@pytest.mark.parametrize("requested,default,ffn,metric,search,expected", [
    (None, 32, 1536, "mac", "global", 32),      # the decoder default applies
    (None, 32, 1536, "params", "uniform", 32),
    (None, 1, 1536, "mac", "global", 1),        # encoders: free widths
    (None, 32, 255, "mac", "global", 1),        # fewer than 8 blocks of 32
    (None, 32, 256, "mac", "global", 32),
    (None, 32, 1536, "latency", "global", 1),   # the latency tables price every width
    (None, 32, 1536, "mac", "threshold", 1),
    (256, 32, 1536, "mac", "global", 256),      # the user's value always wins
    (1, 32, 1536, "mac", "global", 1),
    (7, 1, 37, "mac", "global", 7),
])
def test_resolve_width_multiple(requested, default, ffn, metric, search, expected):
    from prune.widths import resolve_width_multiple
    multiple, why = resolve_width_multiple(requested, default, ffn, metric, search)
    assert multiple == expected
    if requested is not None:
        assert why == "--width_multiple"
    elif default != 1 and expected == 1:
        assert "does not apply" in why and f"default {default}" in why
    else:
        assert why == "the task's default"

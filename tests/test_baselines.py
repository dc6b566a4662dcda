"""The baselines side by side with the paper's method: Wanda-sp and FLAP scores, uniform and threshold
searches, FLAP's bias compensation."""
import pytest
import torch

from prune import registry
from prune.cost import MacCost
from prune.importance import ImportanceInputs
from prune.masks import full_masks
from prune.methods import TuningInputs
from prune.weight_updates import swapped_weights
from tests.tiny import lm_batch, tiny_decoder
from arch import bind
from arch.hooks import apply_masks

COST = MacCost(seq_len=20, hidden_size=32, head_dim=8)


def test_uniform_search_keeps_the_same_count_in_every_layer():
    gen = torch.Generator().manual_seed(0)
    h, n = torch.rand(3, 4, generator=gen), torch.rand(3, 37, generator=gen)
    head, neuron = registry.get("search", "uniform")(h, n, COST, 0.5)
    assert len(set((head != 0).sum(1).tolist())) == 1 and len(set((neuron != 0).sum(1).tolist())) == 1
    assert COST.of_masks(head, neuron) <= 0.5 * COST.of_counts(12, 111) + 1e-6
    top = n[0].topk(int((neuron[0] != 0).sum())).indices
    assert set(top.tolist()) == set((neuron[0] != 0).nonzero().flatten().tolist())


def test_threshold_search_keeps_a_prefix_of_the_global_ranking():
    gen = torch.Generator().manual_seed(1)
    h, n = torch.randn(3, 4, generator=gen), torch.randn(3, 37, generator=gen)
    head, neuron = registry.get("search", "threshold")(h, n, COST, 0.4)
    assert COST.of_masks(head, neuron) <= 0.4 * COST.of_counts(12, 111) + 1e-6
    kept = torch.cat([h.flatten()[head.flatten() != 0], n.flatten()[neuron.flatten() != 0]])
    dropped = torch.cat([h.flatten()[head.flatten() == 0], n.flatten()[neuron.flatten() == 0]])
    assert kept.numel() > 0 and dropped.numel() > 0
    assert kept.min() >= dropped.max()                  # a prefix of the ranking: no dropped unit outranks a kept one


@pytest.mark.parametrize("name", ["wanda_sp", "flap"])
def test_activation_scores_have_one_value_per_unit(name):
    model = tiny_decoder("llama")
    arch = bind(model)
    batches = [lm_batch(model, seed=s) for s in range(2)]
    heads, neurons = registry.get("importance", name)(
        ImportanceInputs(arch, torch.zeros(1, 3, 2), torch.zeros(1, 3, 37), 0, batches))
    assert heads.shape == (3, 2) and neurons.shape == (3, 37)
    assert torch.isfinite(heads).all() and torch.isfinite(neurons).all() and neurons.std() > 0


def test_flap_bias_compensation_moves_the_output_towards_the_dense_model():
    model = tiny_decoder("llama")
    arch = bind(model)
    batches = [lm_batch(model, seed=s, length=16) for s in range(3)]
    head, neuron = full_masks(3, 2, 37)
    head[:, 1] = 0
    neuron[:, ::2] = 0
    outcome = registry.get("method", "bias")(TuningInputs(model, arch, full_masks(3, 2, 37), (head, neuron),
                                                          batches, "all"))
    assert arch.attn_out(0).bias is None                       # the model itself is left untouched

    def hidden(with_bias):
        inputs = {k: v for k, v in batches[0].items() if k != "labels"}
        with torch.no_grad(), swapped_weights(arch, outcome.weight_updates if with_bias else None), \
                apply_masks(arch, head, neuron):
            return model.model(**inputs, use_cache=False).last_hidden_state
    with torch.no_grad():
        dense = model.model(**{k: v for k, v in batches[0].items() if k != "labels"}, use_cache=False).last_hidden_state
    assert (hidden(True) - dense).pow(2).mean() < (hidden(False) - dense).pow(2).mean()

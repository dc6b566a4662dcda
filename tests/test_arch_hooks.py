import pathlib
import re

import pytest
import torch

from prune.masks import full_masks
from tests.tiny import FAMILIES, random_batch, tiny_model
from arch import UnsupportedModelError, bind, facts_for, supported_model_types
from arch.hooks import apply_masks


@pytest.mark.parametrize("family", FAMILIES)
def test_bind_reads_shapes(family):
    arch = bind(tiny_model(family))
    assert (arch.num_layers, arch.num_heads, arch.head_dim, arch.ffn_dim) == (3, 4, 8, 37)
    assert arch.attn_out(1).in_features == 32 and arch.ffn_out(2).in_features == 37
    assert [m.out_features for m in arch.qkv(0)] == [32, 32, 32]


def test_unsupported_model_lists_supported_types():
    with pytest.raises(UnsupportedModelError) as err:
        facts_for("gpt2")
    assert "gpt2" in str(err.value) and "bert" in str(err.value) and "distilbert" in str(err.value)


def test_prune_package_never_names_a_family():
    names = [n for n in supported_model_types()] + ["Bert", "Roberta", "DistilBert"]
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    offenders = [str(p) for p in pathlib.Path("prune").glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_mask_is_identity(family):
    model = tiny_model(family)
    arch = bind(model)
    batch = random_batch(model, with_labels=False)
    with torch.inference_mode():
        plain = model(**batch).logits
        with apply_masks(arch, *full_masks(3, 4, 37)):
            masked = model(**batch).logits
    assert torch.equal(plain, masked)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_and_neuron_scales_match_weight_scaling(family):
    """Scaling head h by s is the same as scaling its columns of the output projection by s."""
    model = tiny_model(family)
    arch = bind(model)
    batch = random_batch(model, with_labels=False)
    head_mask, neuron_mask = full_masks(3, 4, 37)
    head_mask[1, 2], head_mask[0, 0], neuron_mask[2, 5], neuron_mask[0, 36] = 0.3, 0.0, -1.7, 0.0
    with torch.inference_mode():
        original = model.base_model(**batch).last_hidden_state
        with apply_masks(arch, head_mask, neuron_mask):
            masked = model.base_model(**batch).last_hidden_state
        arch.attn_out(1).weight[:, 16:24] *= 0.3
        arch.attn_out(0).weight[:, 0:8] = 0
        arch.ffn_out(2).weight[:, 5] *= -1.7
        arch.ffn_out(0).weight[:, 36] = 0
        direct = model.base_model(**batch).last_hidden_state
    assert torch.allclose(masked, direct, atol=1e-5)
    assert (masked - original).abs().max() > 1e-2


def test_mask_gradients_flow_through_hooks():
    model = tiny_model("bert")
    arch = bind(model)
    head_mask, neuron_mask = full_masks(3, 4, 37)
    head_mask.requires_grad_(True)
    neuron_mask.requires_grad_(True)
    with apply_masks(arch, head_mask, neuron_mask):
        model(**random_batch(model)).loss.backward()
    assert head_mask.grad.abs().sum() > 0 and neuron_mask.grad.abs().sum() > 0

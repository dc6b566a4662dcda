"""Llama-family decoders (GQA, gated MLP, pre-RMSNorm): masks, physical pruning, reload, generate, MACs."""
import copy

import pytest
import torch

from prune.cost import mac_cost_of
from prune.fisher import collect_mask_grads
from prune.layer_io import first_layer_inputs
from prune.masks import full_masks
from prune.physical import physically_prune, physically_pruned_copy
from prune.reconstruct import reconstruct_weights
from prune.weight_updates import swapped_weights
from tests.tiny import DECODER_FAMILIES, lm_batch, tiny_decoder
from arch import bind
from arch.hooks import apply_masks
from export.hf_load import load_pruned
from export.hf_folder import save_pruned

L, U, F = 3, 2, 37


def _masks(seed=2):
    """Layer 0 keeps no head unit (a whole KV group and its query heads go), layer 1 no channel, uneven widths."""
    gen = torch.Generator().manual_seed(seed)
    head = torch.rand(L, U, generator=gen) * 1.5 + 0.3
    neuron = torch.randn(L, F, generator=gen) * 3
    head[0] = 0
    head[2, 1] = 0
    neuron[1] = 0
    neuron[0, ::3] = 0
    neuron[2, 5:30] = 0
    return head, neuron


def _logits(model, batch, head=None, neuron=None):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad(), apply_masks(bind(model), head, neuron):
        return model(**inputs, use_cache=False).logits


def test_bind_reads_grouped_query_attention():
    arch = bind(tiny_decoder("llama"))
    assert (arch.num_heads, arch.num_kv_heads, arch.heads_per_unit, arch.num_head_units) == (4, 2, 2, 2)
    assert (arch.head_dim, arch.unit_width, arch.ffn_dim, arch.num_ffn_inputs) == (8, 16, 37, 2)
    assert arch.unit_columns([1]).tolist() == list(range(16, 32))
    assert arch.unit_kv_rows([1]).tolist() == list(range(8, 16))


def test_head_unit_mask_removes_the_kv_group_and_its_query_heads():
    """Masking unit 1 equals zeroing o_proj's columns of query heads 2 and 3 (the ones reading KV head 1)."""
    model = tiny_decoder("llama")
    batch = lm_batch(model)
    head, neuron = full_masks(L, U, F)
    head[1, 1] = 0
    masked = _logits(model, batch, head, neuron)
    with torch.no_grad():
        bind(model).attn_out(1).weight[:, 16:32] = 0
    assert torch.allclose(masked, _logits(model, batch), atol=1e-5)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
@pytest.mark.parametrize("tied", [False, True])
def test_pruned_decoder_equals_masked_and_reloads(family, tied, tmp_path):
    model = tiny_decoder(family, tied=tied)
    batch = lm_batch(model)
    head, neuron = _masks()
    expected = _logits(model, batch, head, neuron)
    pruned, shapes = physically_pruned_copy(model, head, neuron)
    assert torch.allclose(_logits(pruned, batch), expected, atol=1e-4)
    assert shapes["heads_per_layer"] == [0, 2, 1] and shapes["neurons_per_layer"][1] == 0
    arch = bind(pruned)
    assert [arch.query_width(i) for i in range(L)] == [0, 32, 16] and [arch.kv_width(i) for i in range(L)] == [0, 16, 8]
    assert sum(m.out_features for m in dict.fromkeys(arch.qkv(2))) == 32     # fused or not: 16 + 8 + 8 rows
    save_pruned(pruned, None, str(tmp_path / "m"), shapes)
    reloaded = load_pruned(str(tmp_path / "m"))
    assert torch.allclose(_logits(reloaded, batch), expected, atol=1e-4)
    assert reloaded.config.tie_word_embeddings == tied
    out = reloaded.generate(batch["input_ids"][:1, :4], max_new_tokens=5, do_sample=False)
    reference = pruned.generate(batch["input_ids"][:1, :4], max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 9) and torch.equal(out, reference)


def test_lsq_adds_a_bias_that_survives_pruning_and_reload(tmp_path):
    """Llama's o_proj/down_proj have no bias; the refit gives them one, and the saved model keeps it."""
    model = tiny_decoder("llama")
    arch = bind(model)
    batches = [lm_batch(model, seed=s) for s in range(3)]
    head, neuron = full_masks(L, U, F)
    head[1, 0] = 0
    neuron[:, :12] = 0
    inputs = first_layer_inputs(model, arch, batches)
    updates, report = reconstruct_weights(arch, *full_masks(L, U, F), head, neuron, inputs, "all", 0.1)
    assert (1, "attn_out") in updates and updates[(1, "attn_out")][1] is not None
    assert arch.attn_out(1).bias is None                     # the model itself is left as it was
    with swapped_weights(arch, updates):
        expected = _logits(model, batches[0], head, neuron)
    assert arch.attn_out(1).bias is None
    pruned, shapes = physically_pruned_copy(model, head, neuron, updates)
    assert [1, "attn_out"] in shapes["biased"]
    assert torch.allclose(_logits(pruned, batches[0]), expected, atol=1e-4)
    save_pruned(pruned, None, str(tmp_path / "m"), shapes)
    assert torch.allclose(_logits(load_pruned(str(tmp_path / "m")), batches[0]), expected, atol=1e-4)


def test_refit_brings_the_pruned_decoder_closer_to_the_teacher():
    model = tiny_decoder("llama")
    arch = bind(model)
    batches = [lm_batch(model, seed=s, length=12) for s in range(4)]
    head, neuron = full_masks(L, U, F)
    head[:, 1] = 0
    neuron[:, ::2] = 0
    dense = _logits(model, batches[0])
    plain = _logits(model, batches[0], head, neuron)
    updates, _ = reconstruct_weights(arch, *full_masks(L, U, F), head, neuron,
                                     first_layer_inputs(model, arch, batches), "all", 0.1)
    with swapped_weights(arch, updates):
        refit = _logits(model, batches[0], head, neuron)
    assert (refit - dense).pow(2).mean() < 0.7 * (plain - dense).pow(2).mean()


def _linear_macs(model, seq_len):
    """MACs of the attention and MLP Linears and the attention products, from the modules' shapes alone."""
    arch = bind(model)
    total = 0.0
    for i in range(arch.num_layers):
        linears = [m for m in arch.layer(i).modules() if isinstance(m, torch.nn.Linear)]
        total += seq_len * sum(m.in_features * m.out_features for m in linears)
        total += 2 * seq_len * seq_len * arch.attn_out(i).in_features   # scores and context over the kept queries
    return total


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_mac_count_of_a_pruned_decoder_matches_its_linear_shapes(family):
    model = tiny_decoder(family)
    head, neuron = _masks()
    cost = mac_cost_of(bind(model), 20)
    pruned, _ = physically_pruned_copy(model, head, neuron)
    assert cost.of_masks(head, neuron) == pytest.approx(_linear_macs(pruned, 20))
    assert cost.of_counts(L * U, L * F) == pytest.approx(_linear_macs(model, 20))


def test_decoder_gradients_exist_for_every_unit():
    model = tiny_decoder("llama")
    arch = bind(model)
    head_grads, neuron_grads = collect_mask_grads(model, arch, [lm_batch(model, seed=s) for s in range(2)])
    assert head_grads.shape == (2, L, U) and neuron_grads.shape == (2, L, F)
    assert (head_grads.abs().sum(0) > 0).all() and (neuron_grads.abs().sum(0) > 0).float().mean() > 0.9


def test_physically_prune_in_place_matches_masked_with_padding():
    model = tiny_decoder("mistral")
    batch = lm_batch(model)
    batch["attention_mask"][0, 6:] = 0
    head, neuron = _masks(seed=5)
    expected = _logits(model, batch, head, neuron)
    physically_prune(model, bind(model), head, neuron)
    got = _logits(model, batch)
    keep = batch["attention_mask"].bool()
    assert torch.allclose(got[keep], expected[keep], atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_pruned_decoder_loads_with_one_huggingface_call(family, tmp_path):
    from transformers import AutoModelForCausalLM
    model = tiny_decoder(family, tied=family == "qwen2")
    arch = bind(model)
    batches = [lm_batch(model, seed=s) for s in range(2)]
    head, neuron = _masks()
    updates, _ = reconstruct_weights(arch, *full_masks(L, U, F), head, neuron, first_layer_inputs(model, arch, batches),
                                     "all", 0.1)
    with swapped_weights(arch, updates):
        expected = _logits(model, batches[0], head, neuron)
    pruned, shapes = physically_pruned_copy(model, head, neuron, updates)
    folder = tmp_path / f"native-{family}"
    save_pruned(pruned, None, str(folder), shapes)
    native = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()
    assert torch.allclose(_logits(native, batches[0]), expected, atol=1e-4)
    ids = batches[0]["input_ids"][:1, :4]
    assert torch.equal(native.generate(ids, max_new_tokens=4, do_sample=False),
                       pruned.generate(ids, max_new_tokens=4, do_sample=False))


def test_phi3_fused_projections_lose_each_blocks_rows():
    """qkv_proj keeps the kept query rows, then key rows, then value rows; gate_up_proj the kept gate rows, then up
    rows; the pruned attention reads its own head count from a view of the config, the rest from the shared one."""
    model = tiny_decoder("phi3")
    head, neuron = _masks()
    pruned, _ = physically_pruned_copy(model, head, neuron)
    qkv, pruned_qkv = model.model.layers[2].self_attn.qkv_proj.weight, pruned.model.layers[2].self_attn.qkv_proj.weight
    # unit 0 of layer 2: query heads 0-1 (rows 0-15), KV head 0 (key rows 32-39, value rows 48-55)
    rows = [*range(16), *range(32, 40), *range(48, 56)]
    assert torch.equal(pruned_qkv, qkv[rows])
    kept = torch.nonzero(neuron[2]).flatten()
    gate_up = model.model.layers[2].mlp.gate_up_proj.weight
    assert torch.equal(pruned.model.layers[2].mlp.gate_up_proj.weight, gate_up[torch.cat([kept, kept + F])])
    attn = pruned.model.layers[2].self_attn
    assert (attn.config.num_attention_heads, attn.num_key_value_heads, pruned.config.num_attention_heads) == (2, 1, 4)
    pruned.config._attn_implementation = "eager"
    assert attn.config._attn_implementation == "eager"
    assert not hasattr(pruned.model.layers[1].self_attn.config, "_overrides")    # an unpruned layer: the shared config
    clone = copy.deepcopy(pruned)
    view = clone.model.layers[2].self_attn.config
    assert view.num_attention_heads == 2 and view._base is clone.config

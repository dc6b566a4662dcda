"""Physical pruning gives the masked model's outputs, and survives save -> load_pruned."""
import json
import os

import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification,
                          RobertaConfig, RobertaForSequenceClassification)

from prune.physical import NoHeadsAttention, count_parameters, kept_indices, physically_prune
from arch import bind
from arch.hooks import apply_masks
from export.hf_load import load_pruned
from export.hf_folder import PrunedModelError, save_pruned
from tests.tiny import with_strong_position_bias

L, H, F = 3, 4, 37


def _bert():
    return BertForSequenceClassification(BertConfig(hidden_size=32, num_attention_heads=H, intermediate_size=F,
                                                    num_hidden_layers=L, num_labels=2, vocab_size=100))


def _roberta():
    return RobertaForSequenceClassification(RobertaConfig(hidden_size=32, num_attention_heads=H, intermediate_size=F,
                                                          num_hidden_layers=L, num_labels=2, vocab_size=100))


def _distilbert():
    return DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_heads=H, hidden_dim=F, n_layers=L,
                                                                num_labels=2, vocab_size=100))


def _mpnet():
    config = MPNetConfig(hidden_size=32, num_attention_heads=H, intermediate_size=F, num_hidden_layers=L,
                         num_labels=2, vocab_size=100)
    return with_strong_position_bias(MPNetForSequenceClassification(config))


FAMILIES = {"bert": _bert, "roberta": _roberta, "distilbert": _distilbert, "mpnet": _mpnet}


def _model(family):
    torch.manual_seed(0)
    return FAMILIES[family]().eval()


def _inputs():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0                   # padding, so the attention mask matters
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _masks():
    """Layer 0: no heads. Layer 1: no neurons. Uneven widths and non-binary (some negative) scales."""
    gen = torch.Generator().manual_seed(2)
    head = torch.rand(L, H, generator=gen) * 1.5 + 0.3
    neuron = torch.randn(L, F, generator=gen) * 3
    head[0] = 0
    head[1, [0, 2]] = 0
    head[2, 3] = 0
    neuron[1] = 0
    neuron[0, ::3] = 0
    neuron[2, 5:30] = 0
    return head, neuron


def _masked_logits(model, head, neuron, inputs):
    with torch.no_grad(), apply_masks(bind(model), head, neuron):
        return model(**inputs).logits


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pruned_equals_masked(family):
    model, inputs = _model(family), _inputs()
    head, neuron = _masks()
    expected = _masked_logits(model, head, neuron, inputs)
    arch = bind(model)
    shapes = physically_prune(model, arch, head, neuron)
    assert torch.allclose(_logits(model, inputs), expected, atol=1e-5)
    assert shapes["heads_per_layer"] == [0, 2, 3]
    assert shapes["neurons_per_layer"] == [F - len(range(0, F, 3)), 0, F - 25]
    assert shapes["kept_heads"][1] == [1, 3]
    assert [arch.head_units_in_layer(i) for i in range(L)] == [0, 2, 3]
    assert [arch.neurons_in_layer(i) for i in range(L)] == shapes["neurons_per_layer"]
    q, k, v = arch.qkv(2)
    assert q.out_features == k.out_features == v.out_features == 3 * arch.head_dim
    assert any(isinstance(m, NoHeadsAttention) for m in arch.layer(0).modules())
    assert model.config.heads_per_layer == [0, 2, 3]
    assert model.config.ffn_dims_per_layer == shapes["neurons_per_layer"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_count_attributes_follow(family):
    model = _model(family)
    arch = bind(model)
    head, neuron = _masks()
    physically_prune(model, arch, head, neuron)
    for i, heads in enumerate([0, 2, 3]):
        for m in arch.layer(i).modules():
            for attr in ("num_attention_heads", "n_heads"):
                if isinstance(getattr(m, attr, None), int):
                    assert getattr(m, attr) == heads
            if isinstance(getattr(m, "all_head_size", None), int):
                assert m.all_head_size == heads * arch.head_dim


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_layer_with_nothing_left_is_bias_and_residual(family):
    """A layer with neither heads nor neurons still runs: both blocks reduce to bias + residual."""
    model, inputs = _model(family), _inputs()
    head, neuron = torch.ones(L, H), torch.ones(L, F)
    head[1] = 0
    neuron[1] = 0
    head[2, 1] = -0.5
    expected = _masked_logits(model, head, neuron, inputs)
    physically_prune(model, bind(model), head, neuron)
    assert torch.allclose(_logits(model, inputs), expected, atol=1e-5)


def test_all_ones_masks_change_nothing():
    model, inputs = _model("bert"), _inputs()
    before = _logits(model, inputs)
    params = count_parameters(model)
    physically_prune(model, bind(model), torch.ones(L, H), torch.ones(L, F))
    assert torch.allclose(_logits(model, inputs), before, atol=1e-6)
    assert count_parameters(model) == params


def test_parameters_shrink_as_expected():
    model = _model("bert")
    arch = bind(model)
    hidden, d = arch.hidden_size, arch.head_dim
    before = count_parameters(model)
    head, neuron = _masks()
    physically_prune(model, arch, head, neuron)
    removed_heads = int((head == 0).sum())
    removed_neurons = int((neuron == 0).sum())
    per_head = 3 * (hidden * d + d) + d * hidden      # q, k, v rows with biases; out-projection columns
    per_neuron = hidden + 1 + hidden                  # ffn_in row with bias; ffn_out column
    assert before - count_parameters(model) == removed_heads * per_head + removed_neurons * per_neuron


def test_bad_masks_are_rejected():
    model = _model("bert")
    arch = bind(model)
    with pytest.raises(ValueError, match="expected"):
        physically_prune(model, arch, torch.ones(L, H + 1), torch.ones(L, F))
    head, neuron = _masks()
    physically_prune(model, arch, head, neuron)
    with pytest.raises(ValueError, match="already pruned"):
        physically_prune(model, arch, head, neuron)


def test_kept_indices():
    assert kept_indices(torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.0, 0.0]])) == [[1, 2], []]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_and_load_pruned(family, tmp_path):
    model, inputs = _model(family), _inputs()
    head, neuron = _masks()
    expected = _masked_logits(model, head, neuron, inputs)
    shapes = physically_prune(model, bind(model), head, neuron)
    path = tmp_path / "pruned"
    info = save_pruned(model, None, str(path), shapes)
    assert sorted(os.listdir(tmp_path)) == ["pruned"]          # no temporary folder left behind
    assert {"config.json", "model.safetensors", "pruning.json"} <= set(os.listdir(path))
    saved = json.loads((path / "pruning.json").read_text())
    assert saved["heads_per_layer"] == [0, 2, 3] and saved["kept_heads"] == shapes["kept_heads"]
    assert saved["parameters"] == info["parameters"] == count_parameters(model)
    config = json.loads((path / "config.json").read_text())
    assert config["heads_per_layer"] == [0, 2, 3]

    loaded = load_pruned(str(path))
    assert not loaded.training
    assert torch.allclose(_logits(loaded, inputs), expected, atol=1e-5)
    assert count_parameters(loaded) == count_parameters(model)
    assert loaded.config.ffn_dims_per_layer == shapes["neurons_per_layer"]

    # saving again over the same folder replaces it atomically
    save_pruned(loaded, None, str(path), shapes)
    assert sorted(os.listdir(tmp_path)) == ["pruned"]
    assert torch.allclose(_logits(load_pruned(str(path)), inputs), expected, atol=1e-5)


def test_load_pruned_rejects_plain_checkpoint(tmp_path):
    model = _model("bert")
    model.save_pretrained(tmp_path)
    with pytest.raises(PrunedModelError, match="pruning.json"):
        load_pruned(str(tmp_path))


def test_load_pruned_rejects_wrong_weights(tmp_path):
    model = _model("bert")
    head, neuron = _masks()
    shapes = physically_prune(model, bind(model), head, neuron)
    save_pruned(model, None, str(tmp_path / "p"), shapes)
    info = json.loads((tmp_path / "p" / "pruning.json").read_text())
    info["kept_heads"][2] = [0]
    info["heads_per_layer"][2] = 1
    (tmp_path / "p" / "pruning.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match="size mismatch|do not match"):
        load_pruned(str(tmp_path / "p"))


BENCH_CKPT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "benchmark", "minilm-movie-sst2")


@pytest.mark.skipif(not os.path.isfile(os.path.join(BENCH_CKPT, "tokenizer.json")), reason="no local tokenizer")
def test_tokenizer_files_are_saved(tmp_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(BENCH_CKPT)
    model = _model("bert")
    shapes = physically_prune(model, bind(model), *_masks())
    save_pruned(model, tokenizer, str(tmp_path / "p"), shapes)
    assert os.path.isfile(tmp_path / "p" / "tokenizer.json")
    assert AutoTokenizer.from_pretrained(str(tmp_path / "p"))("a film")["input_ids"]


def test_pruned_copy_with_weight_updates():
    """Refitted output projections (full size, zero on pruned columns) are installed before pruning."""
    from prune.physical import physically_pruned_copy
    model, inputs = _model("bert"), _inputs()
    arch = bind(model)
    head, neuron = _masks()
    head, neuron = (head != 0).float(), (neuron != 0).float()
    gen = torch.Generator().manual_seed(7)
    updates = {}
    for i, role in ((1, "attn_out"), (2, "ffn_out")):
        lin = getattr(arch, role)(i)
        updates[(i, role)] = (torch.randn(lin.weight.shape, generator=gen), torch.randn(lin.bias.shape, generator=gen))
    before = _logits(model, inputs)
    pruned, shapes = physically_pruned_copy(model, head, neuron, updates)
    assert torch.equal(_logits(model, inputs), before)            # the original is untouched
    import copy
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for (i, role), (w, b) in updates.items():
            getattr(bind(updated), role)(i).weight.copy_(w)
            getattr(bind(updated), role)(i).bias.copy_(b)
    expected = _masked_logits(updated, head, neuron, inputs)
    assert torch.allclose(_logits(pruned, inputs), expected, atol=1e-5)
    assert shapes["heads_per_layer"] == [0, 2, 3]

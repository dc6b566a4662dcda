"""Uniform pruned decoders saved as plain checkpoints of their family: AutoModelForCausalLM, no remote code."""
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from export.stock import save_stock, stock_config
from prune.layer_io import first_layer_inputs
from prune.masks import full_masks
from prune.physical import physically_pruned_copy
from prune.reconstruct import reconstruct_weights
from prune.weight_updates import swapped_weights
from tests.tiny import DECODER_FAMILIES, lm_batch, tiny_decoder
from arch import bind
from arch.hooks import apply_masks

L, U, F = 3, 2, 37


def _uniform_masks():
    head, neuron = full_masks(L, U, F)
    head[0, 1] = head[1, 0] = head[2, 1] = 0          # one head unit per layer, not the same one
    gen = torch.Generator().manual_seed(0)
    for i in range(L):
        neuron[i, torch.randperm(F, generator=gen)[:16]] = 0    # 21 channels per layer
    return head, neuron


def _masked_logits(model, batch, head, neuron, updates=None):
    arch = bind(model)
    with torch.no_grad(), swapped_weights(arch, updates or {}), apply_masks(arch, head, neuron):
        return model(input_ids=batch["input_ids"], use_cache=False).logits


@pytest.mark.parametrize("family", DECODER_FAMILIES)
@pytest.mark.parametrize("lsq", [False, True])
def test_uniform_pruned_decoder_reloads_without_remote_code(family, lsq, tmp_path):
    model = tiny_decoder(family)
    arch = bind(model)
    batches = [lm_batch(model, seed=s) for s in range(3)]
    head, neuron = _uniform_masks()
    updates = None
    if lsq:
        inputs = first_layer_inputs(model, arch, batches)
        updates, _ = reconstruct_weights(arch, *full_masks(L, U, F), head, neuron, inputs, "all", 0.1)
    expected = _masked_logits(model, batches[0], head, neuron, updates)
    pruned, shapes = physically_pruned_copy(model, head, neuron, updates)
    info = save_stock(pruned, None, str(tmp_path / "m"))
    if lsq and family in ("qwen3", "gemma3") and any(role == "ffn_out" for _, role in shapes["biased"]):
        assert info is None           # Qwen3 and Gemma 3 have no MLP bias flag
        return
    if lsq and family == "phi3":
        assert shapes["biased"] and info is None      # Phi-3 has no bias flags
        return
    assert info is not None
    with open(tmp_path / "m" / "config.json") as f:
        config = json.load(f)
    assert "auto_map" not in config and "pruned_shapes" not in config
    assert not os.path.exists(tmp_path / "m" / "modeling_pruned.py")
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (2, 1, 21)
    if lsq and family in ("mistral", "qwen2"):
        assert config["model_type"] == "llama" and config["attention_bias"]    # no bias flags of their own
    elif not lsq:
        assert config["model_type"] == {"gemma3": "gemma3_text"}.get(family, family)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert type(reloaded).__module__.startswith("transformers.models.")
    with torch.no_grad():
        got = reloaded(input_ids=batches[0]["input_ids"]).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_uneven_or_empty_widths_have_no_stock_form():
    model = tiny_decoder("llama")
    head, neuron = _uniform_masks()
    neuron[2, :] = 0
    neuron[2, :5] = 1
    assert stock_config(physically_pruned_copy(model, head, neuron)[0]) is None
    head, neuron = full_masks(L, U, F)
    head[:, :] = 0                                        # no attention anywhere
    assert stock_config(physically_pruned_copy(model, head, neuron)[0]) is None


def test_unpruned_model_is_its_own_stock_form():
    model = tiny_decoder("qwen2")
    config = stock_config(model)
    assert (config.model_type, config.num_attention_heads, config.intermediate_size) == ("qwen2", 4, 37)


def test_main_saves_a_uniform_search_as_a_stock_checkpoint(tmp_path):
    """The save path: --search uniform gives the same widths in every layer, so --save_pruned writes the family's
    own config (no modeling file); it reloads without remote code, and load_pruned reads it too."""
    import main
    from export.hf_load import load_pruned
    from tests.test_main_lm import _text
    from tests.tiny import save_tiny_checkpoint, tiny_decoder_config
    ckpt = save_tiny_checkpoint(tmp_path / "llama", AutoModelForCausalLM,
                                lambda vocab: tiny_decoder_config("llama", vocab_size=vocab))
    (tmp_path / "calib.txt").write_text(_text(0, 80))
    (tmp_path / "eval.txt").write_text(_text(1, 40))
    out = tmp_path / "run"
    assert main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", str(tmp_path / "calib.txt"),
                      "--eval_file", str(tmp_path / "eval.txt"), "--constraint", "0.5", "--num_samples", "8",
                      "--max_seq_length", "32", "--batch_size", "4", "--search", "uniform", "--output_dir", str(out),
                      "--save_pruned", "--speed_batch_size", "1", "--speed_seq_len", "16"]) == 0
    folder = out / "pruned_model"
    results = json.loads((out / "results.json").read_text())
    info = json.loads((folder / "pruning.json").read_text())
    assert len(set(results["heads_kept_per_layer"])) == 1 and len(set(results["neurons_kept_per_layer"])) == 1
    assert info["stock"]["architecture"] == "LlamaForCausalLM"
    assert not (folder / "modeling_pruned.py").exists()
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in config and "pruned_shapes" not in config
    assert config["intermediate_size"] == results["neurons_kept_per_layer"][0]
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(5, plain.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, load_pruned(str(folder))(input_ids=ids).logits)
    assert results["pruned_model"]["metric"]["perplexity"] == pytest.approx(
        results["metric_after"]["perplexity"], rel=1e-4)

"""GGUF export (llama.cpp architecture deci) of tiny pruned and unpruned Llama/Qwen2 decoders, run in llama.cpp.

The tiny models use a byte-level BPE tokenizer trained here on a few sentences (GPT-2 style, what SmolLM2,
Llama 3 and Qwen2 use), so the tokenizer path of the export is exercised and llama.cpp accepts the file.

Tolerances (max |logit difference| over every position, relative to the largest |logit| of the sequence):
- F32 weights with an F32 KV cache: llama.cpp and PyTorch compute the same float32 function in a different
  summation order; float32 rounding (2^-24 ~ 6e-8 per operation) accumulated over sums of 8-64 terms and three
  layers: measured 1.6e-7 to 2.9e-7 on these cases, so 1e-5 (30x) separates rounding from any layout error (a
  wrong row order, bias or phantom block moves logits by 1e-1 or more);
- F16 weights (llama.cpp's default F16 KV cache): every weight, the K/V cache and (in llama.cpp's CPU matrix
  products) the activations are rounded to 11 significant bits, a relative error of up to 2^-11 ~ 4.9e-4 each;
  measured 2.6e-4 to 4.5e-4, so 5e-3 (about ten roundings' worth) is the bound.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch

from export.gguf import GGUFExportError, export_gguf, ffn_width_misfits, quantize_gguf, weight_bytes_per_token
from prune.layer_io import first_layer_inputs
from prune.masks import full_masks
from prune.physical import physically_pruned_copy
from prune.reconstruct import reconstruct_weights
from tests.tiny import byte_level_bpe_tokenizer, query_masks, tiny_decoder
from arch import bind

gguf = pytest.importorskip("gguf")

L, U, F = 3, 2, 37
TEXTS = ["The capital of France is Paris.", "Pruning removes heads and channels from a transformer.",
         "llama.cpp runs GGUF files on a laptop CPU, quantized to four bits.", "Hello world! 12345 67890",
         "Small language models like SmolLM2 fit in a few hundred megabytes."] * 4
TOL = {"f32": 1e-5, "f16": 5e-3}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    fast = byte_level_bpe_tokenizer(TEXTS)
    folder = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(folder)
    return str(folder)


def _vocab(tokenizer_dir):
    from transformers import AutoTokenizer
    return len(AutoTokenizer.from_pretrained(tokenizer_dir)) + 3      # 3 padding rows, as real vocabularies have


def _model(family, tokenizer_dir, **kw):
    model = tiny_decoder(family, vocab_size=_vocab(tokenizer_dir), **kw)
    model.config.max_position_embeddings = 64
    return model


_CACHE = {}


def _pruned(model, no_heads_layer=1, no_channels_layer=2, lsq=True):
    """Uneven widths, a layer without head units and one without channels; lsq output biases on every layer."""
    key = (model.config.model_type, no_heads_layer, no_channels_layer, lsq)
    if key not in _CACHE:
        _CACHE[key] = _prune(model, no_heads_layer, no_channels_layer, lsq)
    return _CACHE[key]


def _prune(model, no_heads_layer, no_channels_layer, lsq):
    arch = bind(model)
    head, neuron = full_masks(L, U, F)
    head[no_heads_layer] = 0
    head[(no_heads_layer + 1) % L, 1] = 0
    neuron[no_channels_layer] = 0
    neuron[(no_channels_layer + 1) % L, ::3] = 0
    neuron[(no_channels_layer + 2) % L, 5:30] = 0
    updates = None
    if lsq:
        gen = torch.Generator().manual_seed(0)
        batches = [{"input_ids": torch.randint(0, model.config.vocab_size, (3, 12), generator=gen)}
                   for _ in range(3)]
        for b in batches:
            b["attention_mask"] = torch.ones_like(b["input_ids"])
            b["labels"] = b["input_ids"].clone()
        inputs = first_layer_inputs(model, arch, batches)
        updates, _ = reconstruct_weights(arch, *full_masks(L, U, F), head, neuron, inputs, "all", 0.1)
    pruned, shapes = physically_pruned_copy(model, head, neuron, updates)
    if lsq:     # the refit leaves some projections (e.g. of a layer without heads) bias-free: give every one a bias
        gen = torch.Generator().manual_seed(1)
        for block in pruned.model.layers:
            for linear in (block.self_attn.o_proj, block.mlp.down_proj):
                if linear.bias is None:
                    linear.bias = torch.nn.Parameter(torch.randn(linear.out_features, generator=gen) * 0.3)
    return pruned, shapes


def _torch_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double().numpy()


def _torch_greedy(model, ids, steps):
    out = list(ids)
    for _ in range(steps):
        out.append(int(_torch_logits(model, out)[-1].argmax()))
    return out[len(ids):]


IDS = [5, 70, 33, 101, 250, 7, 19, 64, 200, 3, 150, 42]


def test_metadata_and_tensors_read_back(tokenizer_dir, tmp_path):
    pruned, _ = _pruned(_model("llama", tokenizer_dir))
    info = export_gguf(pruned, str(tmp_path), tokenizer_dir, dtype="f32")
    reader = gguf.GGUFReader(info["path"])
    fields = {f.name: f for f in reader.fields.values()}
    assert fields["general.architecture"].contents() == "deci"
    # layer 1 keeps no head unit, but its lsq attention-output bias needs a phantom head (deci drops wo_b in a
    # layer without heads); layer 2 keeps no channel but has heads: one phantom channel (else deci skips the block)
    assert info["phantom"] == [[1, "head"], [2, "ffn"]]
    assert info["n_head"] == [4, 0, 2] and info["n_ff"] == [24, 12, 0]
    assert fields["deci.attention.head_count"].contents() == [4, 1, 2]
    assert fields["deci.attention.head_count_kv"].contents() == [2, 1, 1]
    assert fields["deci.feed_forward_length"].contents() == [24, 12, 1]
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert "im_start" in fields["tokenizer.chat_template"].contents()
    names = {t.name for t in reader.tensors}
    assert "blk.1.attn_output.bias" in names and "blk.2.ffn_down.bias" in names and "output.weight" in names
    tensors = {t.name: t for t in reader.tensors}
    assert not tensors["blk.1.attn_v.weight"].data.any() and not tensors["blk.2.ffn_down.weight"].data.any()
    no_bias, _ = _pruned(_model("llama", tokenizer_dir), lsq=False)
    plain = export_gguf(no_bias, str(tmp_path / "plain"), tokenizer_dir, dtype="f32")
    assert plain["phantom"] == [[2, "ffn"]]
    names = {t.name for t in gguf.GGUFReader(plain["path"]).tensors}
    assert "blk.1.attn_q.weight" not in names and "blk.1.attn_norm.weight" not in names
    assert 0 < weight_bytes_per_token(info["path"]) < info["bytes"]


def test_unsupported_inputs_are_user_errors(tokenizer_dir, tmp_path):
    with pytest.raises(GGUFExportError, match="qwen3"):
        export_gguf(tiny_decoder("qwen3"), str(tmp_path), tokenizer_dir)
    with pytest.raises(GGUFExportError, match="dtype"):
        export_gguf(_model("llama", tokenizer_dir), str(tmp_path), tokenizer_dir, dtype="q4")
    with pytest.raises(GGUFExportError, match="tokenizer"):
        export_gguf(_model("llama", tokenizer_dir), str(tmp_path), str(tmp_path))


@pytest.mark.parametrize("family,case", [("llama", "pruned"), ("qwen2", "pruned"), ("llama", "no_heads_layer0"),
                                         ("llama", "dense"), ("qwen2", "tied_dense")])
def test_numpy_reading_of_deci_matches_pytorch(family, case, tokenizer_dir, tmp_path):
    """The exported F32 file run by tests/deci_reference.py (deci.cpp's graph in NumPy): no llama.cpp needed."""
    from tests.deci_reference import deci_logits
    model = _model(family, tokenizer_dir, tied=case == "tied_dense")
    if case == "pruned":
        model, _ = _pruned(model)
    elif case == "no_heads_layer0":
        model, _ = _pruned(model, no_heads_layer=0, no_channels_layer=1)
    elif case == "query_heads":       # one query head per kept group in layer 0, none in layer 1, a whole group in 2
        model, _ = physically_pruned_copy(model, *query_masks())
    info = export_gguf(model, str(tmp_path), tokenizer_dir, dtype="f32")
    expected, got = _torch_logits(model, IDS), deci_logits(info["path"], IDS)
    assert np.abs(got - expected).max() / np.abs(expected).max() < TOL["f32"]


# ------------------------------------------------------------------------------------------ in llama.cpp
def _llama(path, f32_cache):
    llama_cpp = pytest.importorskip("llama_cpp")
    kw = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if f32_cache else {}
    return llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True, verbose=False,
                           seed=0, **kw)


def _cpp_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


def _cpp_greedy(llm, ids, steps):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(steps):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


CASES = [("llama", "pruned"), ("qwen2", "pruned"), ("llama", "no_heads_layer0"), ("llama", "dense"),
         ("qwen2", "dense"), ("llama", "tied_dense"), ("llama", "query_heads")]


@pytest.mark.parametrize("family,case", CASES)
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_llama_cpp_matches_pytorch(family, case, dtype, tokenizer_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    model = _model(family, tokenizer_dir, tied=case == "tied_dense")
    if case == "pruned":
        model, _ = _pruned(model)
    elif case == "no_heads_layer0":
        model, _ = _pruned(model, no_heads_layer=0, no_channels_layer=1)
    elif case == "query_heads":       # one query head per kept group in layer 0, none in layer 1, a whole group in 2
        model, _ = physically_pruned_copy(model, *query_masks())
    info = export_gguf(model, str(tmp_path), tokenizer_dir, dtype=dtype)
    llm = _llama(info["path"], f32_cache=dtype == "f32")
    expected, got = _torch_logits(model, IDS), _cpp_logits(llm, IDS)
    assert got.shape == expected.shape
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < TOL[dtype], f"relative max logit error {err:.2e}"
    steps = 6
    want, have = _torch_greedy(model, IDS, steps), _cpp_greedy(llm, IDS, steps)
    if dtype == "f32":
        assert have == want
    else:     # F16 may flip a near-tie; up to the first differing step the sequences must agree, and it must be one
        for k, (a, b) in enumerate(zip(want, have)):
            if a != b:
                top = np.sort(_torch_logits(model, IDS + want[:k])[-1])[-2:]
                assert top[1] - top[0] < 2 * TOL[dtype] * np.abs(expected).max(), (k, want, have)
                break


def test_llama_cpp_reads_the_carried_tokenizer(tokenizer_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    info = export_gguf(_model("llama", tokenizer_dir), str(tmp_path), tokenizer_dir, dtype="f16")
    llm = _llama(info["path"], f32_cache=False)
    text = "The capital of France is Paris. Hello world!"
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == hf.encode(text, add_special_tokens=False)
    assert llm.token_bos() == hf.bos_token_id and llm.token_eos() == hf.eos_token_id
    assert "im_start" in llm.metadata["tokenizer.chat_template"]


def test_quantize_pruned_model(tokenizer_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    pruned, _ = _pruned(_model("llama", tokenizer_dir))
    info = export_gguf(pruned, str(tmp_path), tokenizer_dir, dtype="f16")
    q = quantize_gguf(info["path"], str(tmp_path / "q8.gguf"), "q8_0")
    assert os.path.getsize(q["path"]) > 0 and q["weight_bytes_per_token"] <= info["weight_bytes_per_token"]
    llm = _llama(q["path"], f32_cache=False)
    got = _cpp_logits(llm, IDS)
    assert np.isfinite(got).all()


# ------------------------------------------------------------------ the llama graph, and widths that misfit
def test_llama_graph_for_a_uniform_unbiased_model(tokenizer_dir, tmp_path):
    """architecture='llama' writes scalar sizes under llama.* keys; llama.cpp computes the same logits."""
    model = _model("llama", tokenizer_dir)
    info = export_gguf(model, str(tmp_path), tokenizer_dir, dtype="f32", architecture="llama")
    fields = {f.name: f for f in gguf.GGUFReader(info["path"]).fields.values()}
    assert fields["general.architecture"].contents() == "llama" and info["architecture"] == "llama"
    assert fields["llama.attention.head_count"].contents() == 4
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["llama.feed_forward_length"].contents() == F
    if importlib.util.find_spec("llama_cpp"):
        got = _cpp_logits(_llama(info["path"], f32_cache=True), IDS)
        expected = _torch_logits(model, IDS)
        assert np.abs(got - expected).max() / np.abs(expected).max() < TOL["f32"]


def test_llama_graph_refuses_uneven_widths_and_biases(tokenizer_dir, tmp_path):
    uneven, _ = _pruned(_model("llama", tokenizer_dir), lsq=False)
    with pytest.raises(GGUFExportError, match="same head and FFN counts in every layer"):
        export_gguf(uneven, str(tmp_path), tokenizer_dir, architecture="llama")
    biased = _model("llama", tokenizer_dir)
    for block in biased.model.layers:
        block.mlp.down_proj.bias = torch.nn.Parameter(torch.zeros(block.mlp.down_proj.out_features))
    with pytest.raises(GGUFExportError, match="output biases"):
        export_gguf(biased, str(tmp_path), tokenizer_dir, architecture="llama")
    with pytest.raises(GGUFExportError, match="architecture 'qwen9'"):
        export_gguf(_model("llama", tokenizer_dir), str(tmp_path), tokenizer_dir, architecture="qwen9")
    assert not os.listdir(tmp_path) or not any(n.endswith(".gguf") for n in os.listdir(tmp_path))


def test_ffn_width_misfits_names_the_layers_and_the_fallback(tokenizer_dir, tmp_path):
    """A row of ffn_down is as long as the layer's FFN width: K-quants need multiples of 256, Q8_0 of 32."""
    model = tiny_decoder("llama", vocab_size=_vocab(tokenizer_dir), layers=3)
    model.config.max_position_embeddings = 64
    head, neuron = full_masks(L, U, F)
    neuron[0, 32:] = 0                      # 32 channels: fits Q8_0, not Q4_K
    neuron[1, 20:] = 0                      # 20: fits neither (llama.cpp writes F16)
    neuron[2, 32:] = 0
    pruned, _ = physically_pruned_copy(model, head, neuron)
    path = export_gguf(pruned, str(tmp_path), tokenizer_dir, dtype="f16")["path"]
    q8 = ffn_width_misfits(path, "q8_0")
    assert q8["layers"] == {1: 20} and q8["block"] == 32 and q8["f16_layers"] == [1]
    k4 = ffn_width_misfits(path, "q4_k_m")
    assert k4["layers"] == {0: 32, 1: 20, 2: 32} and k4["block"] == 256 and k4["f16_layers"] == [1]
    assert "Q5_0" in k4["fallback"]
    assert ffn_width_misfits(path, "f16") == {}

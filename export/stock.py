"""Stock checkpoints: a pruned decoder whose widths are the same in every layer, saved as a plain checkpoint of
its own family that `AutoModelForCausalLM.from_pretrained(path)` loads without remote code (and so vLLM,
TensorRT-LLM, llama.cpp's converter and every tool that reads a Llama config).

The config gets the smaller `num_attention_heads`, `num_key_value_heads` and `intermediate_size`, and `head_dim`
written out (the head size does not shrink with the head count). Biases that the `lsq` refit gave the output
projections (o_proj, down_proj) go through the family's own flags where it has them:
- Llama: `attention_bias` (biases on q, k, v and o: the q/k/v ones are written as zeros unless the model has
  them) and `mlp_bias` (gate, up, down: gate/up written as zeros);
- Qwen3 and Gemma 3: `attention_bias` likewise; they have no MLP bias flag;
- Phi-3 has no bias flags at all: a Phi-3 model with an output bias has no stock form;
- Mistral and Qwen2 have no such flags (Qwen2's q/k/v biases are fixed on, o's off): with an output bias the
  checkpoint is written as a `LlamaForCausalLM` instead, whose block computes the same function (Qwen2's q/k/v
  biases carried through `attention_bias`). Mistral's sliding window is lost in that conversion, so a Mistral
  model with a window shorter than its context is not converted (returns None).
When a model cannot be expressed (layers differ, a layer without heads or channels, a Qwen3 down_proj bias), the
functions return None with the reason logged, and the caller saves the pruned-folder format as before.
"""
from __future__ import annotations

import copy
import logging

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from arch import bind

log = logging.getLogger(__name__)

STOCK_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3")
ATTENTION_BIAS_ONLY = ("qwen3", "gemma3_text")     # one attention_bias flag (q, k, v, o), no MLP bias flag
NO_BIAS_FLAGS = ("phi3",)


def _widths(arch) -> list[tuple[int, int, int]]:
    return [(arch.query_width(i) // arch.head_dim, arch.kv_width(i) // arch.head_dim, arch.neurons_in_layer(i))
            for i in range(arch.num_layers)]


def stock_config(model):
    """The stock config of a pruned decoder with the same widths in every layer, or None (reason logged)."""
    config = model.config
    if config.model_type not in STOCK_MODEL_TYPES:
        log.info("stock config: model type %s is not a decoder family this knows", config.model_type)
        return None
    arch = bind(model)
    widths = _widths(arch)
    if len(set(widths)) != 1:
        log.info("stock config: the layers' (heads, kv heads, channels) differ: %s", sorted(set(widths)))
        return None
    heads, kv, ffn = widths[0]
    if not heads or not kv or not ffn:
        log.info("stock config: every layer keeps %d heads and %d channels; a stock config needs both > 0", heads, ffn)
        return None
    layers = range(arch.num_layers)
    o_bias = any(arch.attn_out(i).bias is not None for i in layers)
    down_bias = any(arch.ffn_out(i).bias is not None for i in layers)
    qkv_bias = any(arch.qkv(i)[0].bias is not None for i in layers)
    family = config.model_type
    if family in NO_BIAS_FLAGS and (o_bias or down_bias):
        log.info("stock config: %s has no bias flags for the output-projection biases", family)
        return None
    new = copy.deepcopy(config)
    for key in ("pruned_shapes", "heads_per_layer", "ffn_dims_per_layer", "auto_map"):
        if hasattr(new, key):
            delattr(new, key)
    if (o_bias or down_bias) and family in ("mistral", "qwen2"):
        window = getattr(config, "sliding_window", None)
        if family == "mistral" and window and window < config.max_position_embeddings:
            log.info("stock config: Mistral with a sliding window (%d) and output biases has no stock form", window)
            return None
        if family == "qwen2" and getattr(config, "use_sliding_window", False):
            log.info("stock config: Qwen2 with use_sliding_window and output biases has no stock form")
            return None
        new = LlamaConfig(**{k: v for k, v in new.to_dict().items()
                             if k not in ("model_type", "architectures", "transformers_version", "sliding_window",
                                          "use_sliding_window", "max_window_layers", "layer_types")})
        family = "llama"
    if family in ATTENTION_BIAS_ONLY and down_bias:
        log.info("stock config: %s has no MLP bias flag for the down_proj bias", family)
        return None
    new.num_attention_heads, new.num_key_value_heads, new.intermediate_size = heads, kv, ffn
    new.head_dim = arch.head_dim
    if family == "llama" or family in ATTENTION_BIAS_ONLY:
        new.attention_bias = bool(o_bias or (qkv_bias and family == "llama"))
    if family == "llama":
        new.mlp_bias = bool(down_bias)
    new.architectures = [AutoModelForCausalLM._model_mapping[type(new)].__name__]
    return new


@torch.no_grad()
def stock_model(model):
    """A plain library model (e.g. LlamaForCausalLM) computing what the pruned `model` computes, or None."""
    config = stock_config(model)
    if config is None:
        return None
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        stock = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v for k, v in model.state_dict().items()}
    target = stock.state_dict()
    for name, ref in target.items():     # biases the stock config adds and the model lacks: zeros
        if name not in state and name.endswith(".bias"):
            state[name] = torch.zeros(ref.shape, dtype=dtype)
    extra = set(state) - set(target)
    if extra:
        log.info("stock config: weights with no place in the stock model: %s", sorted(extra)[:5])
        return None
    stock.load_state_dict(state, strict=False, assign=True)
    stock.tie_weights()
    missing = [n for n, p in stock.named_parameters() if p.device.type == "meta"]
    missing += [n for n, b in stock.named_buffers() if b.device.type == "meta"]
    if missing:
        stock = _materialize(stock, missing, config)
    return stock.eval()


def _materialize(stock, names, config):
    """Buffers such as rotary inverse frequencies are computed, not saved: rebuild them on the CPU."""
    fresh = AutoModelForCausalLM.from_config(config, dtype=next(p.dtype for p in stock.parameters()))
    fresh.load_state_dict({k: v for k, v in stock.state_dict().items() if v.device.type != "meta"}, strict=False)
    fresh.tie_weights()
    return fresh


def save_stock(model, tokenizer, folder: str) -> dict | None:
    """Save the pruned `model` as a stock checkpoint into `folder` (save_pretrained layout, no modeling file);
    returns {"architecture", "num_attention_heads", "num_key_value_heads", "intermediate_size", "attention_bias",
    "mlp_bias"} or None (nothing written) when it has no stock form."""
    stock = stock_model(model)
    if stock is None:
        return None
    stock.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    c = stock.config
    return {"architecture": c.architectures[0], "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads, "intermediate_size": c.intermediate_size,
            "head_dim": c.head_dim, "attention_bias": bool(getattr(c, "attention_bias", False)),
            "mlp_bias": bool(getattr(c, "mlp_bias", False))}

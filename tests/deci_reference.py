"""A NumPy reading of llama.cpp's `deci` graph (src/models/deci.cpp, llama-cpp-python 0.3.36), run on a GGUF file.

Independent of llama.cpp's build: it lets the tests check the exporter's layout (query/key row order for the
"normal" rotary embedding, per-layer arrays, phantom heads/channels, biases) on machines without llama_cpp. Its
semantics follow deci.cpp as read there, including its holes: a layer with 0 heads passes its input on (no
attention, no wo_b), a layer with 0 FFN channels leaves the layer's input unchanged (its attention included).
"""
from __future__ import annotations

import numpy as np


def _field(reader, name):
    return reader.fields[name].contents()


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def deci_logits(path: str, ids: list[int]) -> np.ndarray:
    import gguf
    reader = gguf.GGUFReader(path)
    assert _field(reader, "general.architecture") == "deci"
    t = {x.name: np.asarray(x.data, dtype=np.float64) for x in reader.tensors}
    n_layer = _field(reader, "deci.block_count")
    heads, kvs, ffs = (_field(reader, f"deci.{k}") for k in
                       ("attention.head_count", "attention.head_count_kv", "feed_forward_length"))
    d = _field(reader, "deci.attention.key_length")
    eps = _field(reader, "deci.attention.layer_norm_rms_epsilon")
    base = _field(reader, "deci.rope.freq_base")
    factors = t.get("rope_freqs.weight", np.ones(d // 2))
    n = len(ids)
    pos = np.arange(n)[:, None]
    angle = pos * (base ** (-np.arange(0, d, 2) / d) / factors)[None, :]     # [n, d/2]
    cos, sin = np.cos(angle), np.sin(angle)

    def rope(x):                       # x [n, heads, d]: rotate consecutive pairs
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
        return out

    x = t["token_embd.weight"][ids]
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h, kv, ff = heads[i], kvs[i], ffs[i]
        inp = x
        if h == 0:
            cur = x
        else:
            cur = _rms(x, t[p + "attn_norm.weight"], eps)
            q = cur @ t[p + "attn_q.weight"].T + t.get(p + "attn_q.bias", 0)
            k = cur @ t[p + "attn_k.weight"].T + t.get(p + "attn_k.bias", 0)
            v = cur @ t[p + "attn_v.weight"].T + t.get(p + "attn_v.bias", 0)
            q, k, v = rope(q.reshape(n, h, d)), rope(k.reshape(n, kv, d)), v.reshape(n, kv, d)
            ctx = np.empty((n, h, d))
            for j in range(h):
                s = q[:, j] @ k[:, j // (h // kv)].T / np.sqrt(d) + causal
                w = np.exp(s - s.max(1, keepdims=True))
                ctx[:, j] = (w / w.sum(1, keepdims=True)) @ v[:, j // (h // kv)]
            cur = ctx.reshape(n, h * d) @ t[p + "attn_output.weight"].T + t.get(p + "attn_output.bias", 0)
        if ff == 0:
            continue
        ffn_inp = cur + inp if h > 0 else cur
        y = _rms(ffn_inp, t[p + "ffn_norm.weight"], eps)
        g = y @ t[p + "ffn_gate.weight"].T
        y = (g / (1 + np.exp(-g)) * (y @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
        x = y + t.get(p + "ffn_down.bias", 0) + ffn_inp
    out = t.get("output.weight", t["token_embd.weight"])
    return _rms(x, t["output_norm.weight"], eps) @ out.T

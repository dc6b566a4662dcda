"""Weight updates of the output projections: addressing them, installing them and saving them.

An update is {(layer, 'attn_out'|'ffn_out') or (HEAD, module name): (weight, bias)} with full-size weights
(pruned columns zero), as prune/reconstruct.py and prune/head_refit.py produce them.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from arch import BoundArch

HEAD = "head"   # the layer field of a weight-update key (HEAD, module name): a task head's Linear (head_refit.py)


def linear_for(arch: BoundArch, l, role: str):
    """The Linear a weight-update key (layer, 'attn_out'|'ffn_out') or (HEAD, module name) addresses."""
    if l == HEAD:
        return arch.model.get_submodule(role)
    return arch.attn_out(l) if role == "attn_out" else arch.ffn_out(l)


def install(arch: BoundArch, weights: dict) -> dict:
    """Copy {(layer, role): (weight, bias)} into the model; return what was there before.

    A bias of None removes the Linear's bias; a bias for a Linear without one adds it."""
    previous = {}
    with torch.no_grad():
        for (l, role), (w, b) in weights.items():
            linear = linear_for(arch, l, role)
            old_bias = linear.bias.detach().clone() if linear.bias is not None else None
            previous[(l, role)] = (linear.weight.detach().clone(), old_bias)
            linear.weight.copy_(w)
            set_bias(linear, b)
    return previous


def set_bias(linear: torch.nn.Linear, bias: torch.Tensor | None) -> None:
    if bias is None:
        linear.register_parameter("bias", None)
    elif linear.bias is None:
        linear.bias = torch.nn.Parameter(bias.detach().clone().to(linear.weight), requires_grad=False)
    else:
        with torch.no_grad():
            linear.bias.copy_(bias)


@contextmanager
def swapped_weights(arch: BoundArch, updates: dict | None):
    """Temporarily install reconstructed weights."""
    saved = install(arch, updates or {})
    try:
        yield
    finally:
        install(arch, saved)


def save_weight_updates(path: str, updates: dict) -> None:
    """{'<layer>.<role>': {'weight', 'bias'}} on CPU, written atomically."""
    flat = {f"{l}.{role}": {"weight": w.detach().cpu(), "bias": b.detach().cpu()} for (l, role), (w, b) in updates.items()}
    torch.save(flat, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_weight_updates(path: str) -> dict:
    flat = torch.load(path)
    return {(_layer_key(k.split(".")[0]), k.split(".", 1)[1]): (v["weight"], v["bias"]) for k, v in flat.items()}


def _layer_key(text: str):
    return text if text == HEAD else int(text)

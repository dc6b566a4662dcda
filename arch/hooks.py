"""Forward hooks that apply head/neuron masks and capture module inputs.

A head's output enters the model only through the attention output projection, and an FFN
neuron's only through the FFN output projection. Scaling the slice of those projections' inputs
that belongs to a head (or neuron) is therefore exactly a head (neuron) mask, whatever attention
kernel the model uses.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from arch import BoundArch


def _scale_input_hook(scale: torch.Tensor, group: int):
    def hook(module, args):
        x = args[0]
        factor = scale.repeat_interleave(group) if group > 1 else scale
        return (x * factor.to(dtype=x.dtype, device=x.device),) + tuple(args[1:])
    return hook


@contextmanager
def apply_masks(arch: BoundArch, head_mask: torch.Tensor | None, neuron_mask: torch.Tensor | None):
    """Mask head units [layers, head units] and neurons [layers, ffn] while the context is open.

    The masks may require grad: the hooks are differentiable with respect to them.
    """
    handles = []
    try:
        for i in range(arch.num_layers):
            if head_mask is not None:
                handles.append(arch.attn_out(i).register_forward_pre_hook(
                    _scale_input_hook(head_mask[i], arch.unit_width)))
            if neuron_mask is not None:
                handles.append(arch.ffn_out(i).register_forward_pre_hook(
                    _scale_input_hook(neuron_mask[i], 1)))
        yield
    finally:
        for h in handles:
            h.remove()


class StopForward(Exception):
    """Raised by a capture hook once everything wanted from a call is recorded: the rest of the call is skipped."""


@contextmanager
def capture_inputs(modules: dict[str, torch.nn.Module], stop_at: str | None = None,
                   outputs: dict[str, torch.nn.Module] | None = None):
    """Record the first positional input of each named module on every call, and the output of each module in
    `outputs`. stop_at: the name whose input is the last thing needed; the call ends there with StopForward
    (catch it: prune/layer_io.capture_layer), so the work after that module is not done.

    Yields a dict name -> list of tensors (one per call, detached).
    """
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in {**modules, **(outputs or {})}}
    handles = []
    try:
        for name, module in modules.items():
            def hook(mod, args, _name=name):
                seen[_name].append(args[0].detach())
                if _name == stop_at:
                    raise StopForward
            handles.append(module.register_forward_pre_hook(hook))
        for name, module in (outputs or {}).items():
            def out_hook(mod, args, output, _name=name):
                seen[_name].append(output.detach())
            handles.append(module.register_forward_hook(out_hook))
        yield seen
    finally:
        for h in handles:
            h.remove()


def layer_call_inputs(model: torch.nn.Module, arch: BoundArch, batch: dict) -> tuple[tuple, dict]:
    """Run the model up to its first encoder layer and return that layer's (args, kwargs).

    The layer's signature changes between transformers releases, so calls are replayed exactly
    as the model made them, with only the hidden states swapped.
    """
    captured = {}

    def hook(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs
        raise StopForward

    handle = arch.layer(0).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**batch, **arch.forward_kwargs)
    except StopForward:
        pass
    finally:
        handle.remove()
    if "args" not in captured:
        raise RuntimeError("the model never called its first encoder layer")
    return captured["args"], captured["kwargs"]


def call_layer(layer: torch.nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """Call an encoder layer with new hidden states and the recorded other inputs."""
    if args:
        out = layer(hidden, *args[1:], **kwargs)
    else:
        out = layer(**{**kwargs, "hidden_states": hidden})
    return out[0] if isinstance(out, (tuple, list)) else out

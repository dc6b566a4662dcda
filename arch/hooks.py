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


def norm_gain(norm: torch.nn.Module, width: int, like: torch.Tensor) -> torch.Tensor:
    """An RMS norm's per-channel gain g (float32), read off its output for a unit-RMS input."""
    return norm(torch.ones(1, width, dtype=like.dtype, device=like.device))[0].float()


def norm_token_scale(x: torch.Tensor, out: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """c per token [..., 1] with out = x * c * g: the RMS norm's 1 / rms(x), fitted from its input and output."""
    xg = x.float() * gain
    return (out.float() * xg).sum(-1, keepdim=True) / (xg * xg).sum(-1, keepdim=True).clamp_min(
        torch.finfo(torch.float32).tiny)


@contextmanager
def frozen_norm_scales(arch: BoundArch):
    """While open, the norms between output projections and residual adds (Gemma 3's post-norms) pass gradients
    as if their 1 / rms factor were a constant: same outputs, and a mask gradient that sees a unit's contribution.

    An RMS norm is blind to the scale of its input, so a mask that scales a block's whole output (a layer's only
    KV group, as in Gemma 3 270M) has a zero gradient however much removing it costs; with the factor held, its
    gradient is that of a block whose output is added directly, as in Llama.
    """
    handles = []

    def hook(module, args, out, gain):
        x = args[0]
        with torch.no_grad():
            slope = (norm_token_scale(x, out, gain) * gain).to(out.dtype)
        return out.detach() + (x - x.detach()) * slope

    try:
        for i in range(arch.num_layers):
            for role in ("attn_out", "ffn_out"):
                norm = arch.out_norm(i, role)
                if norm is not None:
                    with torch.no_grad():
                        gain = norm_gain(norm, arch.hidden_size, arch.attn_out(i).weight)
                    handles.append(norm.register_forward_hook(
                        lambda m, a, o, _g=gain: hook(m, a, o, _g)))
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


class _CallRecorder(torch.nn.Module):
    """Stands in for a block during `layer_calls`: records the call (without its hidden states), runs the real
    first block only to learn what the blocks return besides hidden states, and hands its input on otherwise.
    Attribute reads fall through to the real block (a model may read e.g. its attention type).

    first: this pass's first-block input and, where they depend on the batch, the first block's other outputs;
    form: shared by the passes of one sweep; holds "rest" once the first block's other outputs are known to be
    nothing (all None, or no tuple at all), so the later passes skip the first block too."""

    def __init__(self, layer, index: int, sink: list, first: dict, form: dict, last: bool):
        super().__init__()
        self.layer = layer
        self.index, self.sink, self.first, self.form, self.last = index, sink, first, form, last

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)

    def forward(self, *args, **kwargs):
        if args:
            hidden, call = args[0], ((None,) + tuple(args[1:]), kwargs)
        else:
            hidden, call = kwargs["hidden_states"], ((), {**kwargs, "hidden_states": None})
        self.sink.append(call)
        if self.index == 0:
            self.first["hidden"] = hidden
        if self.last:
            raise StopForward
        if self.index == 0 and "rest" not in self.form:
            out = self.layer(*args, **kwargs)
            rest = tuple(out[1:]) if isinstance(out, (tuple, list)) else None
            if rest is None or all(r is None for r in rest):
                self.form["rest"] = rest
            else:
                self.first["rest"] = rest
            return out
        rest = self.first["rest"] if "rest" in self.first else self.form["rest"]
        return hidden if rest is None else (hidden, *rest)


def _shared(calls: list[tuple]) -> list[tuple]:
    """The same call object for blocks whose other inputs are the same objects (most models give every block the
    same mask and position embeddings; Gemma 3 two kinds), so that they are stored and moved once."""
    out = []
    for args, kwargs in calls:
        key = (tuple(map(id, args)), tuple((k, id(v)) for k, v in kwargs.items()))
        same = next((c for c, k in out if k == key), None)
        out.append(((args, kwargs) if same is None else same, key))
    return [c for c, _ in out]


def layer_calls(model: torch.nn.Module, arch: BoundArch, batch: dict,
                form: dict | None = None) -> tuple[torch.Tensor, list[tuple[tuple, dict]]]:
    """Run the model through its blocks; return the first block's hidden states and each block's call
    (args, kwargs), hidden states left out.

    Blocks may be called with different inputs (Gemma 3's sliding-window and global layers get their own masks and
    rotary tables), and the block signature changes between transformers releases, so each block's call is
    replayed exactly as the model made it, with only the hidden states swapped (`call_layer`). Only the first
    block does work here, and only until its return form is known; the others pass their input on, and the pass
    ends at the last one. form: one dict kept over the passes of a sweep (None: this pass alone), so that the first
    block runs once per sweep where its other outputs are nothing.
    """
    layers = arch.layers()
    originals, sink, first = list(layers), [], {}
    form = {} if form is None else form
    try:
        for i, layer in enumerate(originals):
            layers[i] = _CallRecorder(layer, i, sink, first, form, last=i == len(originals) - 1)
        model(**batch, **arch.forward_kwargs)
    except StopForward:
        pass
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    if len(sink) != len(originals):
        raise RuntimeError(f"the model called {len(sink)} of its {len(originals)} blocks")
    return first["hidden"], _shared(sink)


def call_layer(layer: torch.nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """Call an encoder layer with new hidden states and the recorded other inputs."""
    if args:
        out = layer(hidden, *args[1:], **kwargs)
    else:
        out = layer(**{**kwargs, "hidden_states": hidden})
    return out[0] if isinstance(out, (tuple, list)) else out

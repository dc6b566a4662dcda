"""Resize a freshly built HuggingFace model to the shapes of a physically pruned one.

This file is copied verbatim into every saved pruned folder as modeling_pruned.py (with a class
that subclasses the library's own model appended by export/hf_native.py), so it must not import
this repository: only torch. `config.pruned_shapes` (see utils/hf_native.record_shapes) says
which Linear modules have which size, which attention blocks lost all their heads, which
integer attributes (head counts, widths) changed, which attention blocks read their own head count from a view of
the config (Phi-3), and which attention blocks read only their kept heads' slices of an input the model computes
for all heads (MPNet's position bias).
"""
import logging
import warnings

import torch
import torch.nn as nn


class NoHeadsAttention(nn.Module):
    """Stands in for an attention block all of whose head units were pruned (prune/physical.py puts it there).

    It adopts the original block's children, so state-dict names stay, and returns an empty
    context, or the output projection of it (its bias) when the block holds that projection,
    as a bare tensor (n_outputs None) or a tuple of n_outputs whose other entries are None.
    """

    _pruned_no_heads = True

    def __init__(self, original, out_proj, n_outputs):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, value in vars(original).items():
            if not name.startswith("_") and isinstance(value, (bool, int, float, str)) and not hasattr(self, name):
                setattr(self, name, value)
        self._out_proj_path = out_proj
        self._n_outputs = n_outputs

    def context(self, hidden):
        """What the output projection reads: nothing, as no head is left."""
        return hidden.new_zeros(*hidden.shape[:-1], 0)

    def forward(self, *args, **kwargs):
        out = self.context(args[0] if args else kwargs["hidden_states"])
        if self._out_proj_path:
            out = self.get_submodule(self._out_proj_path)(out)
        if self._n_outputs is None:
            return out
        return (out,) + (None,) * (self._n_outputs - 1)

    def extra_repr(self) -> str:
        return "heads=0" + (f", out_proj={self._out_proj_path}" if self._out_proj_path else "")


class LayerConfig:
    """One block's view of the shared model config: its own values for a few attributes (`overrides`), every
    other attribute read from, and written to, the shared config (so a later change there, such as the attention
    implementation, still reaches the block). Phi-3's attention splits its fused qkv output at
    config.num_attention_heads * head_dim, so a pruned layer needs its own count there."""

    def __init__(self, base, overrides):
        self.__dict__.update(_base=base, _overrides=dict(overrides))

    def __getattr__(self, name):
        # special names are this object's own (copy, pickle), and before __init__ nothing is read through
        if name.startswith("__") or "_base" not in self.__dict__:
            raise AttributeError(name)
        overrides = self.__dict__["_overrides"]
        return overrides[name] if name in overrides else getattr(self.__dict__["_base"], name)

    def __setattr__(self, name, value):
        if name in self._overrides:
            self._overrides[name] = value
        else:
            setattr(self._base, name, value)

    def __repr__(self):
        return f"LayerConfig({self._overrides})"


def view_config(module, overrides):
    """Give `module` (which holds the shared config as `module.config`) a LayerConfig with `overrides`."""
    base = module.config._base if isinstance(module.config, LayerConfig) else module.config
    module.config = LayerConfig(base, overrides)


def config_view(module):
    """The overrides of a LayerConfig that `view_config` gave `module`, or None."""
    config = getattr(module, "config", None)
    return dict(config._overrides) if isinstance(config, LayerConfig) else None


def _slice_head_inputs_hook(module, args, kwargs):
    args = list(args)
    for name, position in module._pruned_head_inputs:
        if kwargs.get(name) is not None:
            kwargs[name] = _kept_slices(kwargs[name], module._pruned_heads)
        elif len(args) > position and args[position] is not None:
            args[position] = _kept_slices(args[position], module._pruned_heads)
    return tuple(args), kwargs


def _kept_slices(per_head, heads):
    return per_head.index_select(1, torch.tensor(heads, dtype=torch.long, device=per_head.device))


def slice_head_inputs(module, inputs, heads):
    """Make an attention module whose heads were pruned read only its kept heads' slices (dim 1) of the
    per-head arguments `inputs` ([name, position] pairs) that the model computes for all heads (MPNet's shared
    position bias). `heads`: the kept heads' original indices, ascending. A plain attribute, not a buffer: a
    model built on the meta device (from_pretrained) would leave a buffer uninitialised."""
    first = not hasattr(module, "_pruned_heads")
    module._pruned_head_inputs = [tuple(pair) for pair in inputs]
    module._pruned_heads = [int(h) for h in heads]
    if first:
        module.register_forward_pre_hook(_slice_head_inputs_hook, with_kwargs=True)


def head_input_slices(module):
    """What `slice_head_inputs` installed on `module`, as {"inputs", "heads"}, or None."""
    if not hasattr(module, "_pruned_heads"):
        return None
    return {"inputs": [list(pair) for pair in module._pruned_head_inputs], "heads": list(module._pruned_heads)}


class _NotSupportedFilter(logging.Filter):
    """Drops transformers' pipeline message "The model 'NAME' is not supported for TASK. Supported models
    are [...]" for the pruned subclasses (their library base class is supported, and they work)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def filter(self, record):
        message = record.getMessage() if record.args else str(record.msg)
        return not any(message.startswith(f"The model '{n}' is not supported for") for n in self.names)


def quiet_pipeline_check(class_name: str) -> None:
    logger = logging.getLogger("transformers.pipelines.base")
    found = [f for f in logger.filters if type(f).__name__ == "_NotSupportedFilter"]
    if not found:
        found = [_NotSupportedFilter()]
        logger.addFilter(found[0])
    found[0].names.add(class_name)


def _replace(model, path, module):
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def apply_pruned_shapes(model, shapes):
    """Swap in the recorded no-heads blocks and Linear sizes, set the recorded attributes, drop the modules the
    model was saved without (its forward skips a None pooler), give blocks their recorded config views and install
    the recorded per-head input slices."""
    for path in shapes.get("removed", []):
        _replace(model, path, None)
    for path, spec in shapes.get("no_heads", {}).items():
        block = model.get_submodule(path)
        stand_in = NoHeadsAttention(block, spec["out_proj"], spec["n_outputs"])
        stand_in.train(block.training)
        _replace(model, path, stand_in)
    for path, (n_in, n_out, bias) in shapes.get("linears", {}).items():
        old = model.get_submodule(path)
        with warnings.catch_warnings():  # "Initializing zero-element tensors is a no-op"
            warnings.simplefilter("ignore", UserWarning)
            new = nn.Linear(n_in, n_out, bias=bias, device=old.weight.device, dtype=old.weight.dtype)
        new.train(old.training)
        _replace(model, path, new)
    for path, attrs in shapes.get("attrs", {}).items():
        module = model.get_submodule(path)
        for name, value in attrs.items():
            setattr(module, name, value)
    for path, overrides in shapes.get("config_views", {}).items():
        view_config(model.get_submodule(path), overrides)
    for path, spec in shapes.get("head_inputs", {}).items():
        slice_head_inputs(model.get_submodule(path), spec["inputs"], spec["heads"])
    return model

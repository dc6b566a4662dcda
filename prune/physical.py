"""Physical pruning: turn head/neuron masks into a smaller model with the same outputs.

A head's output reaches the rest of the model only through its columns of the attention output
projection, and a neuron's only through its column of the FFN output projection (utils/hooks.py
masks exactly there). So a mask value m != 1 is folded into those columns (W[:, cols] *= m), and a
unit with m == 0 is removed: its rows of query/key/value (weights and biases) or of the FFN input
projection, and its columns of the output projection. The output projections keep their biases.

A layer left with no heads runs no attention at all: the block holding query/key/value is replaced
by `NoHeadsAttention`, which keeps the (now empty) projections so that parameter names stay the
same and returns what the attention would: an empty context (or, when the output projection lives
inside that block, the projection of an empty context, i.e. its bias). A layer left with no
neurons needs nothing special: Linear(hidden, 0) -> activation -> Linear(0, hidden) gives the bias.

Only `BoundArch` is used here; no model family is named. `model.config` keeps the original
(unpruned) sizes, which are what the head size and the rebuilding in `utils/pruned_io.py` derive
from, and gains `heads_per_layer` / `ffn_dims_per_layer` with the real per-layer sizes.
"""
from __future__ import annotations

import logging
import warnings

import torch
import torch.nn as nn

from utils.arch import BoundArch

log = logging.getLogger(__name__)

# Attributes an attention module may hold that count its heads or their total width.
HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
HEAD_WIDTH_ATTRS = ("all_head_size", "inner_dim", "all_head_dim")


def kept_indices(mask: torch.Tensor) -> list[list[int]]:
    """Per row of a [layers, units] mask, the indices of its nonzero entries (ascending)."""
    return [torch.nonzero(row != 0).flatten().tolist() for row in mask.detach().cpu()]


def count_parameters(model: nn.Module) -> int:
    """Parameters, counting shared tensors once."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen and p.numel() > 0:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
    return total


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out_features, in_features = weight.shape
    with warnings.catch_warnings():  # "Initializing zero-element tensors is a no-op"
        warnings.simplefilter("ignore", UserWarning)
        linear = torch.nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias is not None,
                                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.train(False)
    return linear


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    rows = rows.to(linear.weight.device)
    weight = linear.weight.detach().index_select(0, rows)
    bias = linear.bias.detach().index_select(0, rows) if linear.bias is not None else None
    return _new_linear(weight, bias)


def _keep_columns(linear: nn.Linear, cols: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    """Columns `cols` of the weight, each multiplied by `scale` (one value per kept column)."""
    cols = cols.to(linear.weight.device)
    weight = linear.weight.detach()
    kept = weight.index_select(1, cols).float() * scale.to(weight.device, torch.float32)
    bias = linear.bias.detach() if linear.bias is not None else None
    return _new_linear(kept.to(weight.dtype), bias)


def _head_columns(heads: list[int], head_dim: int) -> torch.Tensor:
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return (torch.tensor(heads, dtype=torch.long)[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _common_parent(paths: list[str]) -> str:
    parts = [p.split(".")[:-1] for p in paths]
    common = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return ".".join(common)


class NoHeadsAttention(nn.Module):
    """Stands in for a self-attention block all of whose heads were pruned.

    It adopts the original block's children (the emptied query/key/value projections, dropout,
    and the output projection when the block holds it), so the state dict keeps its names, and
    returns the output structure the original block returned (`n_outputs` None: a bare tensor;
    otherwise a tuple whose first entry is the output and the rest None).
    """

    _pruned_no_heads = True   # how utils/hf_native.py finds these blocks without importing prune/

    def __init__(self, original: nn.Module, out_proj: str | None, n_outputs: int | None):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, value in vars(original).items():
            if not name.startswith("_") and isinstance(value, (bool, int, float, str)) and not hasattr(self, name):
                setattr(self, name, value)
        self._out_proj_path = out_proj
        self._n_outputs = n_outputs

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = hidden.new_zeros(*hidden.shape[:-1], 0)
        if self._out_proj_path:
            out = self.get_submodule(self._out_proj_path)(out)
        if self._n_outputs is None:
            return out
        return (out,) + (None,) * (self._n_outputs - 1)

    def extra_repr(self) -> str:
        return "heads=0" + (f", out_proj={self._out_proj_path}" if self._out_proj_path else "")


def _output_structure(module: nn.Module, hidden_size: int, device, dtype) -> int | None:
    """Call the unpruned attention block once on a dummy input to learn what it returns."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 2, hidden_size, device=device, dtype=dtype))
    except Exception as e:  # pragma: no cover - depends on the family's signature
        log.warning("could not probe the attention block's outputs (%s); assuming (output, weights)", e)
        return 2
    if isinstance(out, torch.Tensor):
        return None
    return len(out)


def _set_head_attrs(modules: list[nn.Module], heads: int, head_dim: int) -> None:
    for module in modules:
        for attr in HEAD_COUNT_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(module, attr, heads)
        for attr in HEAD_WIDTH_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(module, attr, heads * head_dim)


def _attention_modules(layer: nn.Module, parent_path: str) -> list[nn.Module]:
    """The qkv block, its ancestors inside the layer and its descendants."""
    found = []
    if parent_path:
        parts = parent_path.split(".")
        for n in range(1, len(parts) + 1):
            found.append(layer.get_submodule(".".join(parts[:n])))
        found.extend(m for m in found[-1].modules() if m is not found[-1])
    return found


def _check_unpruned(arch: BoundArch, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    expected_h = (arch.num_layers, arch.num_heads)
    expected_n = (arch.num_layers, arch.ffn_dim)
    if tuple(head_mask.shape) != expected_h or tuple(neuron_mask.shape) != expected_n:
        raise ValueError(f"masks of shape {tuple(head_mask.shape)} / {tuple(neuron_mask.shape)} do not fit the "
                         f"model: expected {expected_h} heads and {expected_n} neurons")
    for i in range(arch.num_layers):
        if arch.heads_in_layer(i) != arch.num_heads or arch.neurons_in_layer(i) != arch.ffn_dim:
            raise ValueError(f"layer {i} is already pruned ({arch.heads_in_layer(i)} heads, "
                             f"{arch.neurons_in_layer(i)} neurons); physically_prune needs the unpruned model")
        if not torch.isfinite(head_mask[i]).all() or not torch.isfinite(neuron_mask[i]).all():
            raise ValueError(f"the masks of layer {i} hold non-finite values")


@torch.no_grad()
def physically_prune(model: nn.Module, arch: BoundArch, head_mask: torch.Tensor,
                     neuron_mask: torch.Tensor) -> dict:
    """Remove masked-out heads and neurons from `model` in place, folding mask scales into weights.

    head_mask [layers, heads] and neuron_mask [layers, ffn] are float tensors: 0 removes a unit,
    any other value is the unit's scale. Afterwards the model computes what the masked model
    computed (utils.hooks.apply_masks), up to float rounding. Returns the per-layer shapes:
    {"num_layers", "num_heads", "head_dim", "ffn_dim", "hidden_size", "heads_per_layer",
    "neurons_per_layer", "kept_heads", "kept_neurons"} (kept_* are original indices per layer).
    """
    head_mask = head_mask.detach().float().cpu()
    neuron_mask = neuron_mask.detach().float().cpu()
    _check_unpruned(arch, head_mask, neuron_mask)
    facts, d = arch.facts, arch.head_dim
    qkv_parent = _common_parent([facts.query, facts.key, facts.value])
    kept_heads, kept_neurons = kept_indices(head_mask), kept_indices(neuron_mask)

    for i in range(arch.num_layers):
        layer = arch.layer(i)
        heads = kept_heads[i]
        cols = _head_columns(heads, d)
        col_scale = head_mask[i, heads].repeat_interleave(d) if heads else torch.zeros(0)
        probe = None
        if not heads:
            if not qkv_parent:
                raise NotImplementedError(
                    f"layer {i} keeps no heads, but query/key/value are direct children of the layer, so "
                    f"there is no attention block to replace; keep at least one head per layer")
            block = layer.get_submodule(qkv_parent)
            weight = arch.qkv(i)[0].weight
            probe = _output_structure(block, arch.hidden_size, weight.device, weight.dtype)
        for role, linear in zip(("query", "key", "value"), arch.qkv(i)):
            arch.set_linear(i, role, _keep_rows(linear, cols))
        arch.set_linear(i, "attn_out", _keep_columns(arch.attn_out(i), cols, col_scale))
        _set_head_attrs(_attention_modules(layer, qkv_parent), len(heads), d)
        if not heads:
            prefix = qkv_parent + "."
            out_proj = facts.attn_out[len(prefix):] if facts.attn_out.startswith(prefix) else None
            block = layer.get_submodule(qkv_parent)
            replacement = NoHeadsAttention(block, out_proj, probe)
            replacement.train(block.training)
            parent_path, _, name = qkv_parent.rpartition(".")
            setattr(layer.get_submodule(parent_path) if parent_path else layer, name, replacement)

        neurons = kept_neurons[i]
        rows = torch.tensor(neurons, dtype=torch.long)
        arch.set_linear(i, "ffn_in", _keep_rows(arch.ffn_in(i), rows))
        arch.set_linear(i, "ffn_out", _keep_columns(arch.ffn_out(i), rows, neuron_mask[i, neurons]))

    shapes = {
        "num_layers": arch.num_layers,
        "num_heads": arch.num_heads,
        "head_dim": d,
        "ffn_dim": arch.ffn_dim,
        "hidden_size": arch.hidden_size,
        "heads_per_layer": [len(h) for h in kept_heads],
        "neurons_per_layer": [len(n) for n in kept_neurons],
        "kept_heads": kept_heads,
        "kept_neurons": kept_neurons,
    }
    model.config.heads_per_layer = shapes["heads_per_layer"]
    model.config.ffn_dims_per_layer = shapes["neurons_per_layer"]
    return shapes


def masks_from_shapes(shapes: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks that select the kept heads/neurons recorded by `physically_prune`."""
    head_mask = torch.zeros(shapes["num_layers"], shapes["num_heads"])
    neuron_mask = torch.zeros(shapes["num_layers"], shapes["ffn_dim"])
    for i, (heads, neurons) in enumerate(zip(shapes["kept_heads"], shapes["kept_neurons"])):
        head_mask[i, list(heads)] = 1.0
        neuron_mask[i, list(neurons)] = 1.0
    return head_mask, neuron_mask


@torch.no_grad()
def install_weight_updates(arch: BoundArch, updates: dict | None) -> None:
    """Copy full-size replacement weights {(layer, 'attn_out'|'ffn_out'): (weight, bias)} into the model
    (what prune/reconstruct.py's weight refit produces), before physically pruning."""
    for (layer, role), (weight, bias) in (updates or {}).items():
        linear = getattr(arch, role)(layer)
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)


def physically_pruned_copy(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor,
                           weight_updates: dict | None = None) -> tuple[nn.Module, dict]:
    """A pruned deep copy of `model` (left untouched); returns (pruned model, shapes)."""
    import copy

    from utils.arch import bind

    pruned = copy.deepcopy(model)
    arch = bind(pruned)
    install_weight_updates(arch, weight_updates)
    shapes = physically_prune(pruned, arch, head_mask, neuron_mask)
    return pruned, shapes

"""Physical pruning: turn head-unit/neuron masks into a smaller model with the same outputs.

A head unit's output reaches the rest of the model only through its columns of the attention
output projection, and a neuron's only through its column of the FFN output projection (arch/hooks.py
masks exactly there). So a mask value m != 1 is folded into those columns (W[:, cols] *= m), and a
unit with m == 0 is removed: its rows of query/key/value (weights and biases) or of every FFN input
projection, and its columns of the output projection. The output projections keep their biases.

A layer left with no head units runs no attention at all: the family's attention module is replaced
by `NoHeadsAttention`, which keeps the (now empty) projections so that parameter names stay the same
and returns what the attention would: an empty context (or, when the output projection lives inside
that module, the projection of an empty context, i.e. its bias). A layer left with no neurons needs
nothing special: Linear(hidden, 0) -> activation -> Linear(0, hidden) gives the bias.

Fused Linears (Phi-3's qkv_proj, gate_up_proj) lose the rows of each of their blocks (BoundArch.attention_rows,
ffn_rows). An attention module that reads its query head count from the shared config gets a view of the config
holding its own count (the family's `config_head_count`; arch/pruned_modeling.LayerConfig).

Where the model computes a per-head input once for all layers (the family's `head_inputs`, e.g. a shared
relative position bias), a pruned attention module is made to read only its kept heads' slices of it.

Only `BoundArch` is used here; no model family is named. `model.config` keeps the original
(unpruned) sizes, which are what the head size and the rebuilding in `export/hf_folder.py` derive
from, and gains `heads_per_layer` / `ffn_dims_per_layer` with the real per-layer sizes (head units).
"""
from __future__ import annotations

import copy
import logging
import warnings

import torch
import torch.nn as nn

from arch import BoundArch, bind
from arch.pruned_modeling import NoHeadsAttention, slice_head_inputs, view_config  # as in the saved folder's modeling file
from prune.query_heads import heads_per_kept_group
from prune.weight_updates import linear_for, set_bias

log = logging.getLogger(__name__)


def count_parameters(model) -> int:
    """Parameters, counting shared tensors once."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen and p.numel() > 0:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
    return total


def kept_indices(mask: torch.Tensor) -> list[list[int]]:
    """Per row of a [layers, units] mask, the indices of its nonzero entries (ascending)."""
    return [torch.nonzero(row != 0).flatten().tolist() for row in mask.detach().cpu()]


def new_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An eval-mode Linear holding copies of `weight` [out, in] and `bias` (None: no bias); zero sizes allowed."""
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
    return new_linear(weight, bias)


def _keep_columns(linear: nn.Linear, cols: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    """Columns `cols` of the weight, each multiplied by `scale` (one value per kept column)."""
    cols = cols.to(linear.weight.device)
    weight = linear.weight.detach()
    kept = weight.index_select(1, cols).float() * scale.to(weight.device, torch.float32)
    bias = linear.bias.detach() if linear.bias is not None else None
    return new_linear(kept.to(weight.dtype), bias)


def _check_unpruned(arch: BoundArch, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    expected_h = (arch.num_layers, arch.num_head_units)
    expected_n = (arch.num_layers, arch.ffn_dim)
    if tuple(head_mask.shape) != expected_h or tuple(neuron_mask.shape) != expected_n:
        raise ValueError(f"masks of shape {tuple(head_mask.shape)} / {tuple(neuron_mask.shape)} do not fit the "
                         f"model: expected {expected_h} head units and {expected_n} neurons")
    for i in range(arch.num_layers):
        if arch.head_units_in_layer(i) != arch.num_head_units or arch.neurons_in_layer(i) != arch.ffn_dim:
            raise ValueError(f"layer {i} is already pruned ({arch.head_units_in_layer(i)} head units, "
                             f"{arch.neurons_in_layer(i)} neurons); physically_prune needs the unpruned model")
        if not torch.isfinite(head_mask[i]).all() or not torch.isfinite(neuron_mask[i]).all():
            raise ValueError(f"the masks of layer {i} hold non-finite values")


def _prune_attention(arch: BoundArch, i: int, units: list[int], scales: torch.Tensor) -> None:
    facts = arch.facts
    cols, kv_rows = arch.unit_columns(units), arch.unit_kv_rows(units)
    per_group = (heads_per_kept_group(torch.bincount(torch.tensor(units) // arch.heads_per_group).tolist(), i)
                 if arch.query_heads and units else None)
    _keep_rows_of(arch, i, arch.attention_rows(i, cols, kv_rows))
    col_scale = scales.repeat_interleave(arch.unit_width) if units else torch.zeros(0)
    arch.set_module(i, facts.attn_out, _keep_columns(arch.attn_out(i), cols, col_scale))
    attention = arch.attention(i)
    for attr in facts.head_count_attrs:
        setattr(attention, attr, len(units) * arch.heads_per_unit)
    for attr in facts.head_width_attrs:
        setattr(attention, attr, len(units) * arch.unit_width)
    for attr in facts.kv_count_attrs:
        setattr(attention, attr, kv_rows.numel() // arch.head_dim)
    kept_heads = len(units) * arch.heads_per_unit
    if units and facts.config_head_count and kept_heads != arch.num_heads:
        view_config(attention, {facts.config_head_count: kept_heads})
    if per_group is not None and facts.kv_group_attr:
        setattr(attention, facts.kv_group_attr, per_group)
    if units and facts.head_inputs and len(units) < arch.num_head_units:
        heads = [u * arch.heads_per_unit + j for u in units for j in range(arch.heads_per_unit)]
        slice_head_inputs(attention, facts.head_inputs, heads)
    if not units:
        block = arch.attention(i)
        replacement = NoHeadsAttention(block, arch.attn_out_in_attention(), facts.attention_outputs)
        replacement.train(block.training)
        arch.set_module(i, facts.attention, replacement)


def _keep_rows_of(arch: BoundArch, i: int, rows_by_path: dict) -> None:
    for path, rows in rows_by_path.items():
        arch.set_module(i, path, _keep_rows(arch.module(i, path), rows))


def _prune_ffn(arch: BoundArch, i: int, neurons: list[int], scales: torch.Tensor) -> None:
    rows = torch.tensor(neurons, dtype=torch.long)
    _keep_rows_of(arch, i, arch.ffn_rows(i, rows))
    arch.set_module(i, arch.facts.ffn_out, _keep_columns(arch.ffn_out(i), rows, scales))


@torch.no_grad()
def prune_layer(arch: BoundArch, i: int, head_row: torch.Tensor, neuron_row: torch.Tensor) -> None:
    """Physically prune layer i in place by its mask rows: a zero removes a unit, any other value is folded in."""
    head_row, neuron_row = head_row.detach().float().cpu(), neuron_row.detach().float().cpu()
    heads, neurons = kept_indices(head_row[None])[0], kept_indices(neuron_row[None])[0]
    _prune_attention(arch, i, heads, head_row[heads])
    _prune_ffn(arch, i, neurons, neuron_row[neurons])


@torch.no_grad()
def physically_prune(model: nn.Module, arch: BoundArch, head_mask: torch.Tensor,
                     neuron_mask: torch.Tensor) -> dict:
    """Remove masked-out head units and neurons from `model` in place, folding mask scales into weights.

    head_mask [layers, head units] and neuron_mask [layers, ffn] are float tensors: 0 removes a unit,
    any other value is the unit's scale. Afterwards the model computes what the masked model
    computed (arch.hooks.apply_masks), up to float rounding. Returns the per-layer shapes:
    {"num_layers", "num_heads" (head units), "heads_per_unit", "attention_unit", "head_dim", "ffn_dim", "hidden_size",
    "heads_per_layer", "neurons_per_layer", "kept_heads", "kept_neurons", "biased"} (kept_* are original
    indices per layer; biased lists [layer, role] of output projections that carry a bias the unpruned
    family's config does not give them).
    """
    head_mask = head_mask.detach().float().cpu()
    neuron_mask = neuron_mask.detach().float().cpu()
    _check_unpruned(arch, head_mask, neuron_mask)
    kept_heads, kept_neurons = kept_indices(head_mask), kept_indices(neuron_mask)
    biased = added_biases(arch)
    for i in range(arch.num_layers):
        prune_layer(arch, i, head_mask[i], neuron_mask[i])
    shapes = {
        "num_layers": arch.num_layers,
        "num_heads": arch.num_head_units,
        "heads_per_unit": arch.heads_per_unit,
        "attention_unit": arch.attention_unit,
        "head_dim": arch.head_dim,
        "ffn_dim": arch.ffn_dim,
        "hidden_size": arch.hidden_size,
        "heads_per_layer": [len(h) for h in kept_heads],
        "neurons_per_layer": [len(n) for n in kept_neurons],
        "kept_heads": kept_heads,
        "kept_neurons": kept_neurons,
        "biased": biased,
    }
    model.config.heads_per_layer = shapes["heads_per_layer"]
    model.config.ffn_dims_per_layer = shapes["neurons_per_layer"]
    return shapes


OUTPUT_ROLES = ("attn_out", "ffn_out")


def added_biases(arch: BoundArch) -> list[list]:
    """[layer, role] of output projections holding a bias where a freshly built model has none."""
    fresh = _fresh_bias_flags(arch)
    return [[i, role] for i in range(arch.num_layers) for role in OUTPUT_ROLES
            if getattr(arch, role)(i).bias is not None and not fresh[role]]


def _fresh_bias_flags(arch: BoundArch) -> dict:
    """Whether the family's config gives each output projection a bias (read off a one-layer build)."""
    config = copy.deepcopy(arch.model.config)
    setattr(config, arch.facts.num_layers_attr, 1)
    with torch.device("meta"):
        tiny = type(arch.model)(config)
    probe = BoundArch(tiny, arch.facts)
    return {role: getattr(probe, role)(0).bias is not None for role in OUTPUT_ROLES}


def add_biases(arch: BoundArch, biased: list) -> None:
    """Give the listed output projections a (zero) bias, as `physically_prune` recorded them."""
    for layer, role in biased:
        linear = getattr(arch, role)(int(layer))
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, device=linear.weight.device,
                                                   dtype=linear.weight.dtype), requires_grad=False)


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
    """Copy full-size replacement weights {(layer, 'attn_out'|'ffn_out') or (HEAD, name): (weight, bias)} into the model
    (what prune/reconstruct.py's weight refit produces), before physically pruning."""
    for (layer, role), (weight, bias) in (updates or {}).items():
        linear = linear_for(arch, layer, role)
        linear.weight.copy_(weight)
        if bias is not None:
            set_bias(linear, bias)


def physically_pruned_copy(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor,
                           weight_updates: dict | None = None) -> tuple[nn.Module, dict]:
    """A pruned deep copy of `model` (left untouched); returns (pruned model, shapes)."""


    pruned = copy.deepcopy(model)
    arch = bind(pruned)
    if head_mask.shape[-1] != arch.num_head_units:      # one mask entry per query head: query-head units
        arch = bind(pruned, "query")
    install_weight_updates(arch, weight_updates)
    shapes = physically_prune(pruned, arch, head_mask, neuron_mask)
    return pruned, shapes

"""What a model family is, as the pruning algorithm sees it.

A family declares (one `Family` per file in this package) where its blocks live and which Linear
modules play which role inside a block. `bind(model)` resolves those facts against one model and
returns a `BoundArch`; everything in `prune/` talks to that, never to a model name or a path.

Pruning units, in the words the algorithm uses:
- a *head unit* is one key/value head with the query heads that read it (a GQA group; without
  GQA, one attention head): rows of query, key and value, and columns of the attention output;
- a *neuron* is one FFN channel: one row of every FFN input Linear (up, and gate where there is
  one) and one column of the FFN output Linear.
A Linear may hold several roles as consecutive row blocks (Phi-3's fused `qkv_proj`, `gate_up_proj`): the family
names the same path for each of them, in row order (query, key, value; gate, up), and `stacked_rows` turns each
role's rows into the fused Linear's.
A head unit's and a neuron's contribution enter the block only through the input of the attention
output Linear and of the FFN output Linear, which is where `arch/hooks.py` masks them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from utils.errors import UserError


class UnsupportedModelError(UserError):
    pass


@dataclass(frozen=True)
class Family:
    layers: str                    # path from the base model to the ModuleList of blocks
    attention: str                 # the attention module inside a block (holds q, k, v); replaced
                                   # by a stand-in when a block keeps no head units
    attention_outputs: int | None  # what that module returns: a tuple of n entries, None a tensor
    query: str                     # paths inside one block; one path named for several roles is a fused Linear
    key: str                       # whose row blocks follow the role order (query, key, value)
    value: str
    attn_out: str
    ffn_inputs: tuple[str, ...]    # the Linears whose rows are the FFN channels (gate first, then up; a path
                                   # named twice holds gate and up as two row blocks)
    ffn_out: str
    ffn_residual: str              # the module whose first input is what the FFN output is added to
    num_heads_attr: str            # config attribute names
    hidden_attr: str
    ffn_attr: str
    num_layers_attr: str
    num_kv_heads_attr: str | None = None   # None: no grouped-query attention
    head_dim_attr: str | None = None       # None: hidden // heads
    head_count_attrs: tuple = ()           # attributes of the attention module that count its query heads
    head_width_attrs: tuple = ()           # ... and that hold their total width (kept in step when pruning)
    classifier_token: str = "first"        # which token a sequence-classification head reads: first | last
    forward_kwargs: tuple = ()             # extra model(...) arguments for pruning passes, e.g. no KV cache
    attn_out_norm: str | None = None       # a norm applied to the attention output projection's output before the
    ffn_out_norm: str | None = None        # residual add, and the FFN's (Gemma 3's post-norms); RMS-type, no bias
    kv_group_attr: str | None = None       # attribute of the attention module holding query heads per KV head (set
                                           # per layer when query heads within groups are pruned)
    kv_count_attrs: tuple = ()             # attributes of the attention module that count its key/value heads
    config_head_count: str | None = None   # config attribute the attention module reads for its own query head
                                           # count (Phi-3 splits its fused qkv output there): a pruned layer's
                                           # attention gets a view of the config with its count (LayerConfig)
    ffn_add_norm: str | None = None        # the norm of the FFN's residual sum (a post-LN encoder's): the block's
                                           # output is norm(FFN output + residual) (BoundArch.ffn_block_output)
    head_inputs: tuple = ()                # (name, position) of arguments of the attention module that hold one
                                           # slice per query head on dim 1, computed once by the model for all
                                           # heads (MPNet's position_bias): sliced to a pruned layer's kept heads


ATTENTION_UNITS = ("group", "query")


class BoundArch:
    """A family's facts resolved against one model instance (unpruned sizes come from its config).

    attention_unit: "group" (a head unit is a KV group with its query heads) or "query" (a head unit is one query
    head; a layer keeps the same number of query heads in every kept group: prune/query_heads.py)."""

    def __init__(self, model: nn.Module, facts: Family, attention_unit: str = "group"):
        self.model = model
        self.facts = facts
        config = model.config
        self.hidden_size = getattr(config, facts.hidden_attr)
        self.num_heads = getattr(config, facts.num_heads_attr)
        kv = getattr(config, facts.num_kv_heads_attr, None) if facts.num_kv_heads_attr else None
        self.num_kv_heads = kv or self.num_heads
        head_dim = getattr(config, facts.head_dim_attr, None) if facts.head_dim_attr else None
        self.head_dim = head_dim or self.hidden_size // self.num_heads
        self.ffn_dim = getattr(config, facts.ffn_attr)
        self.num_layers = getattr(config, facts.num_layers_attr)
        self.heads_per_group = self.num_heads // self.num_kv_heads
        if attention_unit not in ATTENTION_UNITS:
            raise ValueError(f"attention_unit must be one of {ATTENTION_UNITS}, not {attention_unit!r}")
        if attention_unit == "query" and self.heads_per_group > 1 and not facts.kv_group_attr:
            raise UnsupportedModelError(f"{type(model).__name__}: this family cannot prune query heads within KV "
                                        f"groups (its Family has no kv_group_attr); use whole groups")
        self.attention_unit = attention_unit
        self.query_heads = attention_unit == "query"
        self.heads_per_unit = 1 if self.query_heads else self.heads_per_group
        self.num_head_units = self.num_heads if self.query_heads else self.num_kv_heads
        self.unit_width = self.heads_per_unit * self.head_dim   # attention-output columns of one head unit
        self.num_ffn_inputs = len(facts.ffn_inputs)      # rows per neuron, fused blocks counted
        self.classifier_token = facts.classifier_token
        self.forward_kwargs = dict(facts.forward_kwargs)
        self._layers = model.base_model.get_submodule(facts.layers)

    def layers(self) -> nn.ModuleList:
        return self._layers

    def layer(self, i: int) -> nn.Module:
        return self._layers[i]

    def _module(self, i: int, path: str) -> nn.Module:
        return self._layers[i].get_submodule(path)

    def qkv(self, i: int) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        """The Linears holding the query, key and value rows (the same one thrice where they are fused)."""
        f = self.facts
        return self._module(i, f.query), self._module(i, f.key), self._module(i, f.value)

    def module(self, i: int, path: str) -> nn.Module:
        return self._module(i, path)

    def query_width(self, i: int) -> int:
        return self.attn_out(i).in_features

    def kv_width(self, i: int) -> int:
        """Rows of one of key / value in block i (now: pruned or not)."""
        f = self.facts
        key = self._module(i, f.key)
        rows = key.out_features - (self.query_width(i) if f.query == f.key else 0)
        return rows // (2 if f.value == f.key else 1)

    def attention_rows(self, i: int, query_rows, kv_rows) -> dict[str, torch.Tensor]:
        """{path: rows of that Linear} holding the given query rows and key/value rows of block i."""
        f = self.facts
        q, kv = self.query_width(i), self.kv_width(i)
        return stacked_rows([(f.query, query_rows, q), (f.key, kv_rows, kv), (f.value, kv_rows, kv)])

    def ffn_rows(self, i: int, neurons) -> dict[str, torch.Tensor]:
        """{path: rows of that Linear} holding the given FFN channels of block i (each fused block's copy)."""
        width = self.neurons_in_layer(i)
        return stacked_rows([(path, neurons, width) for path in self.facts.ffn_inputs])

    def attn_out(self, i: int) -> nn.Linear:
        return self._module(i, self.facts.attn_out)

    def ffn_inputs(self, i: int) -> list[nn.Linear]:
        return [self._module(i, p) for p in self.facts.ffn_inputs]

    def ffn_in(self, i: int) -> nn.Linear:
        """The first FFN input Linear (its input is the FFN block's input)."""
        return self.ffn_inputs(i)[0]

    def ffn_out(self, i: int) -> nn.Linear:
        return self._module(i, self.facts.ffn_out)

    def ffn_residual(self, i: int) -> nn.Module:
        return self._module(i, self.facts.ffn_residual)

    def out_norm(self, i: int, role: str) -> nn.Module | None:
        """The norm between output projection `role` ('attn_out' | 'ffn_out') and the residual add, or None."""
        path = self.facts.attn_out_norm if role == "attn_out" else self.facts.ffn_out_norm
        return self._module(i, path) if path else None

    def ffn_block_output(self, i: int, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Block i's output from its FFN output projection's output y and the FFN's residual (ffn_residual's input):
        norm(y + r) in a post-LN encoder, r + norm(y) behind a post-norm (Gemma 3), else r + y. The families'
        blocks end so today; a caller checks it against a real call before relying on it."""
        if self.facts.ffn_add_norm:
            return self._module(i, self.facts.ffn_add_norm)(y + residual)
        norm = self.out_norm(i, "ffn_out")
        return residual + (norm(y) if norm is not None else y)

    def attn_out_in_attention(self) -> str | None:
        """The output projection's path inside the attention module; None where it lives outside (BERT)."""
        prefix = self.facts.attention + "."
        return self.facts.attn_out[len(prefix):] if self.facts.attn_out.startswith(prefix) else None

    def attention(self, i: int) -> nn.Module:
        return self._module(i, self.facts.attention)

    def set_module(self, i: int, path: str, new: nn.Module) -> None:
        parent_path, _, name = path.rpartition(".")
        parent = self._layers[i].get_submodule(parent_path) if parent_path else self._layers[i]
        setattr(parent, name, new)

    def head_units_in_layer(self, i: int) -> int:
        return self.attn_out(i).in_features // self.unit_width

    def neurons_in_layer(self, i: int) -> int:
        return self.ffn_out(i).in_features

    def unit_columns(self, units) -> torch.Tensor:
        """Attention-output columns (= query rows) of the given head units, ascending."""
        return _blocks(units, self.unit_width)

    def unit_kv_rows(self, units) -> torch.Tensor:
        """Key/value rows of the given head units (of the groups they belong to, once each)."""
        units = torch.as_tensor(units, dtype=torch.long).flatten().cpu()
        if self.query_heads:
            units = torch.unique(units // self.heads_per_group)
        return _blocks(units, self.head_dim)


def stacked_rows(roles: list[tuple[str, object, int]]) -> dict[str, torch.Tensor]:
    """roles: (path, rows within the role, the role's row count) in row order. Roles sharing a path are consecutive
    row blocks of one Linear: each one's rows are offset by the widths of the blocks before it."""
    out, offsets = {}, {}
    for path, rows, width in roles:
        rows = torch.as_tensor(rows, dtype=torch.long).flatten().cpu()
        offset = offsets.get(path, 0)
        out[path] = torch.cat([out.get(path, torch.zeros(0, dtype=torch.long)), rows + offset])
        offsets[path] = offset + width
    return out


def _blocks(units, width: int) -> torch.Tensor:
    units = torch.as_tensor(units, dtype=torch.long).flatten().cpu()
    if units.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    return (units[:, None] * width + torch.arange(width)).flatten()

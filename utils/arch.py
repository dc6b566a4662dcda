"""The one table of architecture facts.

Each supported model family is a row saying where the encoder layers live and which Linear modules
play which role inside a layer. Everything in `prune/` talks to a `BoundArch`, never to a model name.
Only post-LayerNorm encoders are listed: the least-squares stage assumes that a block's residual
input is the input of its first Linear (attention) or of the FFN's first Linear (feed-forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class ArchFacts:
    layers: str          # path from the base model to the ModuleList of encoder layers
    query: str           # paths inside one layer
    key: str
    value: str
    attn_out: str
    ffn_in: str
    ffn_out: str
    num_heads_attr: str  # config attribute names
    hidden_attr: str
    ffn_attr: str
    num_layers_attr: str


_BERT_LIKE = ArchFacts(
    layers="encoder.layer",
    query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    num_heads_attr="num_attention_heads", hidden_attr="hidden_size",
    ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
)

_DISTILBERT = ArchFacts(
    layers="transformer.layer",
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
    attn_out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2",
    num_heads_attr="n_heads", hidden_attr="dim", ffn_attr="hidden_dim", num_layers_attr="n_layers",
)

ARCH_TABLE: dict[str, ArchFacts] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": _DISTILBERT,
}


class UnsupportedModelError(ValueError):
    pass


def facts_for(model_type: str) -> ArchFacts:
    if model_type not in ARCH_TABLE:
        raise UnsupportedModelError(
            f"model_type '{model_type}' is not supported. Supported model types: "
            f"{', '.join(sorted(ARCH_TABLE))}. A new post-LayerNorm encoder family is one row "
            f"in utils/arch.py:ARCH_TABLE."
        )
    return ARCH_TABLE[model_type]


class BoundArch:
    """Architecture facts resolved against one model instance."""

    def __init__(self, model: nn.Module, facts: ArchFacts):
        self.model = model
        self.facts = facts
        config = model.config
        self.hidden_size = getattr(config, facts.hidden_attr)
        self.num_heads = getattr(config, facts.num_heads_attr)
        self.head_dim = self.hidden_size // self.num_heads
        self.ffn_dim = getattr(config, facts.ffn_attr)
        self.num_layers = getattr(config, facts.num_layers_attr)
        self._layers = model.base_model.get_submodule(facts.layers)

    def layers(self) -> nn.ModuleList:
        return self._layers

    def layer(self, i: int) -> nn.Module:
        return self._layers[i]

    def _linear(self, i: int, path: str) -> nn.Linear:
        return self._layers[i].get_submodule(path)

    def qkv(self, i: int) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        f = self.facts
        return self._linear(i, f.query), self._linear(i, f.key), self._linear(i, f.value)

    def attn_out(self, i: int) -> nn.Linear:
        return self._linear(i, self.facts.attn_out)

    def ffn_in(self, i: int) -> nn.Linear:
        return self._linear(i, self.facts.ffn_in)

    def ffn_out(self, i: int) -> nn.Linear:
        return self._linear(i, self.facts.ffn_out)

    def set_linear(self, i: int, role: str, new: nn.Linear) -> None:
        """Replace the Linear playing `role` ('query', 'attn_out', 'ffn_in', ...) in layer i."""
        path = getattr(self.facts, role)
        parent_path, _, name = path.rpartition(".")
        parent = self._layers[i].get_submodule(parent_path) if parent_path else self._layers[i]
        setattr(parent, name, new)

    def heads_in_layer(self, i: int) -> int:
        return self.attn_out(i).in_features // self.head_dim

    def neurons_in_layer(self, i: int) -> int:
        return self.ffn_out(i).in_features


def bind(model: nn.Module) -> BoundArch:
    return BoundArch(model, facts_for(model.config.model_type))


def supported_model_types() -> list[str]:
    return sorted(ARCH_TABLE)

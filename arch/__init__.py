"""Model families as facts: one file per family in this package, registered by model_type
(arch/registry.py), plus the hooks that apply masks (hooks.py) and the modeling file a saved pruned
folder carries (pruned_modeling.py).

Adding a family is one new file that builds a `Family` and calls `register(...)` for its model
types, plus its name in the import line below.
"""
from __future__ import annotations

import torch.nn as nn

from arch import bert, distilbert, gemma3, llama, mpnet, phi3  # noqa: F401  (each registers its model types)
from arch.base import ATTENTION_UNITS, BoundArch, Family, UnsupportedModelError
from arch.registry import ARCH_TABLE, register


def facts_for(model_type: str) -> Family:
    if model_type not in ARCH_TABLE:
        raise UnsupportedModelError(
            f"model_type '{model_type}' is not supported. Supported model types: "
            f"{', '.join(sorted(ARCH_TABLE))}. A new family is one file in arch/ that registers it in ARCH_TABLE (see arch/llama.py).")
    return ARCH_TABLE[model_type]


def bind(model: nn.Module, attention_unit: str = "group") -> BoundArch:
    return BoundArch(model, facts_for(model.config.model_type), attention_unit)


def supported_model_types() -> list[str]:
    return sorted(ARCH_TABLE)

__all__ = ["ARCH_TABLE", "ATTENTION_UNITS", "BoundArch", "Family", "UnsupportedModelError", "bind", "facts_for", "register",
           "supported_model_types"]

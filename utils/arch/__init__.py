"""The architecture table: one file per model family in this package, registered by model_type.

Adding a family is one new file that builds a `Family` and calls `register(...)` for its model
types, plus one import line below.
"""
from __future__ import annotations

import torch.nn as nn

from utils.arch.base import BoundArch, Family, UnsupportedModelError

ARCH_TABLE: dict[str, Family] = {}


def register(model_types: list[str], facts: Family) -> Family:
    for name in model_types:
        ARCH_TABLE[name] = facts
    return facts


def facts_for(model_type: str) -> Family:
    if model_type not in ARCH_TABLE:
        raise UnsupportedModelError(
            f"model_type '{model_type}' is not supported. Supported model types: "
            f"{', '.join(sorted(ARCH_TABLE))}. A new family is one file in utils/arch/ that registers it in ARCH_TABLE (see utils/arch/llama.py).")
    return ARCH_TABLE[model_type]


def bind(model: nn.Module) -> BoundArch:
    return BoundArch(model, facts_for(model.config.model_type))


def supported_model_types() -> list[str]:
    return sorted(ARCH_TABLE)


from utils.arch import bert, distilbert, llama  # noqa: E402,F401  (each registers its model types)

__all__ = ["ARCH_TABLE", "BoundArch", "Family", "UnsupportedModelError", "bind", "facts_for", "register",
           "supported_model_types"]

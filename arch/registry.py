"""The architecture table: model_type -> Family (the facts of one family). A leaf: it imports nothing of
the project; each family file registers its model types, and arch/__init__.py imports the family files."""
from __future__ import annotations

ARCH_TABLE: dict = {}


def register(model_types: list[str], facts):
    for name in model_types:
        ARCH_TABLE[name] = facts
    return facts

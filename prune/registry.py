"""Registries of the pluggable parts: importance scores, budget metrics, searches and mask-tuning methods.

    @register("importance", "fisher")
    def fisher(inputs: ImportanceInputs) -> (head_importance [L, U], neuron_importance [L, F])

Adding one is a function and this decorator; main.py's choices, the sweep and the collector read
the names from here. Modules that register the built-in parts are imported by `load_builtins`.
"""
from __future__ import annotations

from typing import Callable

KINDS = ("importance", "metric", "search", "method")
_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable[[Callable], Callable]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry '{kind}': one of {', '.join(KINDS)}")

    def add(fn: Callable) -> Callable:
        _REGISTRY[kind][name] = fn
        return fn
    return add


def get(kind: str, name: str) -> Callable:
    load_builtins()
    if name not in _REGISTRY[kind]:
        raise ValueError(f"unknown {kind} '{name}': one of {', '.join(choices(kind))}")
    return _REGISTRY[kind][name]


def choices(kind: str) -> list[str]:
    load_builtins()
    return list(_REGISTRY[kind])


def load_builtins() -> None:
    import prune.budgets  # noqa: F401
    import prune.importance  # noqa: F401
    import prune.methods  # noqa: F401

"""Registries of the pluggable parts: importance scores, budget metrics, searches and mask-tuning methods.

    @register("importance", "fisher")
    def fisher(inputs: ImportanceInputs) -> (head_importance [L, U], neuron_importance [L, F])

Adding one is a function and this decorator; main.py's choices, the sweep and the collector read
the names from here. A leaf: it imports nothing of the project; the package's __init__ imports the
modules that register the built-in parts.
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
    if name not in _REGISTRY[kind]:
        raise ValueError(f"unknown {kind} '{name}': one of {', '.join(choices(kind))}")
    return _REGISTRY[kind][name]


def choices(kind: str) -> list[str]:
    return list(_REGISTRY[kind])


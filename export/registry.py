"""The table of export formats that `--export` reads. A leaf: it imports nothing of the project.

    register(Exporter("onnx", write=..., missing_packages=..., help="..."))

A format is one file in export/ that registers itself here, plus its import in export/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _nothing_missing() -> list[str]:
    return []


def _takes_any(config, tokenizer) -> None:
    return None


@dataclass(frozen=True)
class Exporter:
    name: str
    write: Callable            # write(pruned_model, folder, task_data) -> dict for results.json (a "path" in it
                               # is inside `folder`, which is placed with the saved model)
    missing_packages: Callable[[], list[str]] = _nothing_missing   # optional packages it needs that are absent
    check: Callable = _takes_any   # check(model_config, tokenizer): raises a UserError, before any work, for a
                                   # checkpoint the format cannot take
    help: str = ""


_EXPORTERS: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    _EXPORTERS[exporter.name] = exporter
    return exporter


def get(name: str) -> Exporter:
    if name not in _EXPORTERS:
        raise KeyError(f"unknown export format '{name}': one of {', '.join(_EXPORTERS)}")
    return _EXPORTERS[name]


def names() -> list[str]:
    return list(_EXPORTERS)

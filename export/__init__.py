"""Saved-model formats in one place: the HF-native folder (hf_folder.py saves, hf_load.py loads, hf_native.py
makes it load with transformers' own calls) and the extra formats of `--export`, one file each, registered in
export/registry.py: ONNX (onnx.py, with the optional fusion of onnx_fuse.py), GGUF for llama.cpp (gguf.py);
stock.py saves a decoder with the same widths in every layer as a plain checkpoint of its family."""
from export import gguf, onnx  # noqa: F401  (each registers its format)

"""Fuse an exported graph into ONNX Runtime's transformer kernels (Attention, SkipLayerNormalization, BiasGelu).

torch's dynamo exporter writes each layer's attention (the fused export asks for transformers' SDPA attention:
export/onnx.FUSED_ATTENTION) as the twenty-odd primitive ops of scaled_dot_product_attention (Reshape/Transpose
of Q, K, V, shape arithmetic for K's transpose, the
mask's Where, a NaN guard after the Softmax). onnxscript's ORT fusions rewrite them into one
com.microsoft Attention node per layer, whose num_heads comes from that layer's own Q/K/V widths, so
the uneven head counts of a pruned model are kept; a layer without heads has no attention to fuse, and a layer
with one head is fused only into a MultiHeadAttention with separate Q/K/V projections, and an attention that does
not match the patterns (MPNet's, which adds its position bias itself) is left unfused (both logged as warnings).
ONNX Runtime's own load-time fusions (ORT_ENABLE_ALL) and onnxruntime.transformers.optimizer do not
match the dynamo pattern: they fuse the LayerNorms and Gelus but leave attention unfused.
The fused graph runs in ONNX Runtime only (com.microsoft ops); the unfused export is the portable one.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

MIN_FUSED_HEADS = 2   # a layer with fewer heads (but some) is fused only into MultiHeadAttention, not Attention


def fuse_for_ort(path: str, external_data: bool = False) -> dict[str, int]:
    """Rewrite the ONNX file at `path` in place with the ORT fusions; returns how often each fusion applied."""
    import onnx_ir as ir  # optional extra (--fuse)
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(path)
    if external_data:   # the weights file is rewritten below, so it must not be read lazily from
        ir.external_data.load_to_model(model)
    model, counts = optimize_for_ort(model)
    unfused = sum(node.op_type == "MultiHeadAttention" and _num_heads(node) == 1 for node in model.graph)
    if unfused:   # onnxscript fuses an encoder's one-head layer only this far (separate Q/K/V MatMuls and reshapes)
        log.warning("%s: %d attention layer(s) with a single head stay MultiHeadAttention with separate projections "
                    "(some 35 ops each instead of one Attention node): they run slower per head than the fused "
                    "layers; prune to two or more heads per layer (or none) where that matters", path, unfused)
    left = sum(node.op_type == "Softmax" for node in model.graph)
    if left:      # e.g. MPNet, whose attention adds its relative position bias to the scores itself
        log.warning("%s: %d attention layer(s) not fused (their Softmax is still in the graph: this family's attention "
                    "does not match onnxscript's fusion patterns); they run as in the portable graph", path, left)
    ir.save(model, path, external_data=os.path.basename(path) + ".data" if external_data else None)
    applied = {name: n for name, n in counts.items() if n}
    log.info("fused %s: %s", path, applied)
    return applied


def _num_heads(node) -> int | None:
    attr = node.attributes.get("num_heads")
    return None if attr is None else attr.value

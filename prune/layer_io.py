"""Layer-by-layer replay of a model's blocks on cached inputs.

The input of the first block and every block's other call inputs (masks, position embeddings) are recorded once
per batch; afterwards each block runs on the cached outputs of the previous one, so a layer-wise stage costs one
pass over the blocks per sweep instead of one full model pass per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from arch import BoundArch
from arch.hooks import StopForward, call_layer, layer_calls
from utils.device import to_device
from tqdm import tqdm


@dataclass
class LayerBatch:
    hidden: torch.Tensor       # [batch, tokens, hidden]: input of the current layer
    calls: list                # per block, its call (args, kwargs) as the model made it, hidden states left out
    token_mask: torch.Tensor   # [batch, tokens] bool: real (non-padding) tokens


def first_layer_inputs(model, arch: BoundArch, batches: list[dict]) -> list[LayerBatch]:
    device = next(model.parameters()).device
    out, form = [], {}
    with torch.inference_mode():
        for batch in tqdm(batches, desc="first-layer inputs", unit="batch", leave=False):
            batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            hidden, calls = layer_calls(model, arch, batch, form)
            out.append(LayerBatch(hidden, calls, batch["attention_mask"].bool()))
    return out


def run_layer(arch: BoundArch, index: int, inputs: list[LayerBatch]) -> list[LayerBatch]:
    """Outputs of layer `index` for every cached batch, as inputs of the next layer."""
    layer = arch.layer(index)
    return [replace(lb, hidden=call_layer(layer, lb.hidden, *lb.calls[index])) for lb in inputs]


def capture_layer(arch: BoundArch, index: int, lb: LayerBatch) -> None:
    """Run layer `index` on one batch only for what capture hooks record; a hook may end the call early
    (arch/hooks.capture_inputs(stop_at=...)), so the layer's work after the last module read is skipped."""
    try:
        call_layer(arch.layer(index), lb.hidden, *lb.calls[index])
    except StopForward:
        pass

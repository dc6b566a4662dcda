"""Running a (masked) model over evaluation batches."""
from __future__ import annotations

import torch
from tqdm import tqdm

from arch.hooks import apply_masks
from utils.device import to_device
from utils.offload import input_device


def predict_logits(model, arch, batches: list[dict], order: list[int], head_mask=None, neuron_mask=None,
                   dist=None) -> torch.Tensor:
    """Logits in the original row order; masks applied with hooks when given.
    dist (utils/distributed.Dist): each process runs its share of the batches; every one gets all logits."""
    device = input_device(model)
    outputs = []
    with torch.inference_mode(), apply_masks(arch, head_mask, neuron_mask):
        for batch in tqdm(dist.shard(batches) if dist else batches, desc="evaluate", leave=False):
            batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            outputs.append(model(**batch).logits.float().cpu())
    logits = torch.cat(dist.gather_in_order(outputs) if dist else outputs)
    restored = torch.empty_like(logits)
    restored[torch.tensor(order)] = logits
    return restored

"""Head masks [layers, heads] and neuron masks [layers, ffn]: creation, summaries, files."""
from __future__ import annotations

import os

import torch


def full_masks(num_layers: int, num_heads: int, ffn_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.ones(num_layers, num_heads, device=device),
            torch.ones(num_layers, ffn_dim, device=device))


def kept_per_layer(mask: torch.Tensor) -> list[int]:
    return [int(n) for n in (mask != 0).sum(dim=1).tolist()]


def save_masks(folder: str, head_mask: torch.Tensor, neuron_mask: torch.Tensor, prefix: str = "") -> None:
    """The original tool's format: head_mask.pt and neuron_mask.pt, float tensors on CPU."""
    for name, mask in ((f"{prefix}head_mask.pt", head_mask), (f"{prefix}neuron_mask.pt", neuron_mask)):
        tmp = os.path.join(folder, name + ".tmp")
        torch.save(mask.detach().cpu(), tmp)
        os.replace(tmp, os.path.join(folder, name))


def load_masks(folder: str, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.load(os.path.join(folder, f"{prefix}head_mask.pt")),
            torch.load(os.path.join(folder, f"{prefix}neuron_mask.pt")))

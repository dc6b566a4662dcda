"""Gradients of the task loss with respect to the head and neuron masks (paper section 4.1)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm import tqdm

from dataset.features import to_device
from prune.masks import full_masks
from utils.arch import BoundArch
from utils.hooks import apply_masks


class NonFiniteGradientError(RuntimeError):
    pass


@contextmanager
def _frozen_parameters(model):
    """Only mask gradients are needed: skipping weight gradients saves about a third of the work."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def collect_mask_grads(model, arch: BoundArch, batches: list[dict], loss_fn=None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient per batch: returns head grads [batches, L, H] and neuron grads [batches, L, F].

    loss_fn(model, batch) -> scalar loss; default: the model's own loss from batch['labels'].
    """
    device = next(model.parameters()).device
    head_mask, neuron_mask = full_masks(arch.num_layers, arch.num_heads, arch.ffn_dim, device)
    head_mask.requires_grad_(True)
    neuron_mask.requires_grad_(True)
    loss_fn = loss_fn or (lambda m, b: m(**b).loss)
    head_grads, neuron_grads = [], []
    was_training = model.training
    model.eval()
    try:
        with _frozen_parameters(model), apply_masks(arch, head_mask, neuron_mask):
            for batch in tqdm(batches, desc="mask gradients", leave=False):
                loss = loss_fn(model, to_device(batch, device))
                gh, gn = torch.autograd.grad(loss, (head_mask, neuron_mask))
                head_grads.append(gh.detach())
                neuron_grads.append(gn.detach())
    finally:
        model.train(was_training)
    head_grads, neuron_grads = torch.stack(head_grads), torch.stack(neuron_grads)
    bad = int((~torch.isfinite(head_grads)).sum() + (~torch.isfinite(neuron_grads)).sum())
    if bad:
        raise NonFiniteGradientError(
            f"{bad} mask gradients are NaN or inf: the model's loss is not finite on the sample. "
            f"Check that the checkpoint evaluates sensibly on this task (labels, num_labels) "
            f"and that the data has no empty or corrupt rows.")
    return head_grads, neuron_grads


def fisher_importance(grads: torch.Tensor) -> torch.Tensor:
    """Diagonal empirical Fisher: sum over batches of squared gradients."""
    return grads.pow(2).sum(dim=0)

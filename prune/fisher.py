"""Gradients of the task loss with respect to the head and neuron masks (paper section 4.1)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from arch import BoundArch
from arch.hooks import apply_masks, frozen_norm_scales
from prune.masks import full_masks
from utils.device import to_device
from utils.errors import UserError
from utils.offload import input_device


class NonFiniteGradientError(UserError, RuntimeError):
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


@contextmanager
def checkpointed_layers(arch: BoundArch):
    """Keep only each block's input for the backward pass and recompute the block's activations there.

    Exact (the recomputation runs the same operations, mask hooks included), about a third more work, and
    the activations held at once shrink from all blocks' to one block's: what makes a decoder's gradient
    pass fit in memory. Works in eval mode, unlike the library's gradient checkpointing.
    """
    originals = []
    try:
        for layer in arch.layers():
            forward = layer.forward
            originals.append((layer, layer.__dict__.get("forward")))   # an instance's own (e.g. accelerate's hook)
            layer.forward = lambda *args, _f=forward, **kwargs: checkpoint(_f, *args, use_reentrant=False, **kwargs)
        yield
    finally:
        for layer, own in originals:
            if own is None:
                del layer.forward
            else:
                layer.forward = own


def collect_mask_grads(model, arch: BoundArch, batches: list[dict], loss_fn=None, checkpoint_layers: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient per batch: returns head-unit grads [batches, L, U] and neuron grads [batches, L, F].

    loss_fn(model, batch) -> scalar loss; default: the model's own loss from batch['labels'].
    checkpoint_layers: recompute each block in the backward pass (checkpointed_layers): same gradients,
    a fraction of the memory. Norms after output projections pass gradients with their scale held
    (arch/hooks.frozen_norm_scales).
    """
    device = input_device(model)
    head_mask, neuron_mask = full_masks(arch.num_layers, arch.num_head_units, arch.ffn_dim, device)
    head_mask.requires_grad_(True)
    neuron_mask.requires_grad_(True)
    loss_fn = loss_fn or (lambda m, b: m(**b, **arch.forward_kwargs).loss)
    head_grads, neuron_grads = [], []
    was_training = model.training
    model.eval()
    try:
        with _frozen_parameters(model), apply_masks(arch, head_mask, neuron_mask), frozen_norm_scales(arch), \
                (checkpointed_layers(arch) if checkpoint_layers else nullcontext()):
            for batch in tqdm(batches, desc="mask gradients", leave=False):
                loss = loss_fn(model, to_device(batch, device))
                gh, gn = torch.autograd.grad(loss, (head_mask, neuron_mask))
                head_grads.append(gh.detach())
                neuron_grads.append(gn.detach())
    finally:
        model.train(was_training)
    head_grads, neuron_grads = torch.stack(head_grads), torch.stack(neuron_grads)
    bad_batches = (~torch.isfinite(head_grads)).flatten(1).any(1) | (~torch.isfinite(neuron_grads)).flatten(1).any(1)
    if bool(bad_batches.any()):
        raise NonFiniteGradientError(_non_finite_message(model, bad_batches, len(batches)))
    return head_grads, neuron_grads


def _non_finite_message(model, bad_batches: torch.Tensor, total: int) -> str:
    first = int(bad_batches.nonzero()[0])
    weights = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    cause = (f"the model has NaN/inf weights ({weights[:3]}): the checkpoint is corrupt or its fine-tuning "
             f"diverged; re-save it from a good copy" if weights else
             "the loss overflows: check that the checkpoint evaluates sensibly on this task (right "
             "--task_name, labels, num_labels), that its weights are not huge (a diverged fine-tuning), "
             "and that the data has no corrupt rows")
    return (f"the mask gradients are NaN or inf in {int(bad_batches.sum())} of {total} sample batches "
            f"(first: batch {first}), so no importance can be computed; {cause}.")


def fisher_importance(grads: torch.Tensor) -> torch.Tensor:
    """Diagonal empirical Fisher: sum over batches of squared gradients."""
    return grads.pow(2).sum(dim=0)

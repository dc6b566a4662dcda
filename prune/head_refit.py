"""Refit the task head's first Linear so the pruned model's head sees what the unpruned model's head saw.

The layer-wise refit makes every block reconstruct its teacher, but at aggressive budgets the last blocks
keep few or no units and cannot; what reaches the task head (a classifier's pooler or dense layer, a QA
span head) is then shifted, and a tanh pooler can saturate into one constant prediction. One more ridge
least-squares solve fixes the head's first Linear: its inputs on the pruned model against its outputs
(pre-activations) on the unpruned one, over the sample's rows (the pooled token of a classifier, every
real token of a QA head). Which Linear that is, is found by running the model, not by a family table:
the first Linear outside the blocks that runs after the last block. A language-model head (the output
embeddings) is never refitted: it is a vocabulary-sized system and usually tied to the input embeddings.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from arch import BoundArch
from arch.hooks import apply_masks
from prune.reconstruct import Normal
from prune.weight_updates import HEAD
from utils.device import to_device
from tqdm import tqdm

log = logging.getLogger(__name__)


def find_head_linear(model: nn.Module, arch: BoundArch, batch: dict) -> str | None:
    """Name of the first Linear outside the blocks that runs after the last block (None: there is none)."""
    inside = {id(m) for m in arch.layers().modules()}
    after_last, order, handles = [False], [], []
    handles.append(arch.layer(arch.num_layers - 1).register_forward_hook(
        lambda *_: after_last.__setitem__(0, True)))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in inside:
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, _name=name: order.append(_name) if after_last[0] else None))
    try:
        with torch.inference_mode():
            model(**_inputs(model, _first_row(batch)), **arch.forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    return order[0] if order else None


def _first_row(batch: dict) -> dict:
    """One example of the batch: which Linear runs does not depend on how many rows there are."""
    return {k: v[:1] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in batch.items()}


def _inputs(model, batch: dict) -> dict:
    return to_device({k: v for k, v in batch.items() if k != "labels"}, next(model.parameters()).device)


def _head_rows(model, arch, linear, batches, masks, desc: str = "head refit") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input rows, output rows) of `linear` per batch; 3-D inputs keep only real tokens."""
    rows, seen = [], {}
    handle = linear.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], y=out))
    try:
        with torch.inference_mode(), apply_masks(arch, *masks):
            for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
                inputs = _inputs(model, batch)
                model(**inputs, **arch.forward_kwargs)
                x, y = seen.pop("x"), seen.pop("y")
                if x.dim() == 3:
                    keep = inputs["attention_mask"].bool() if "attention_mask" in inputs else \
                        torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                    x, y = x[keep], y[keep]
                rows.append((x.float(), y.float()))
    finally:
        handle.remove()
    return rows


def head_targets(model, arch: BoundArch, batches: list[dict]) -> tuple[str, list[torch.Tensor]] | None:
    """The head Linear's name and its unpruned outputs per batch; None when there is no head to refit."""
    if model.get_output_embeddings() is not None or not batches:   # a language model: nothing to run for
        return None
    name = find_head_linear(model, arch, batches[0])
    if name is None or model.get_submodule(name).bias is None:
        return None
    linear = model.get_submodule(name)
    return name, [y for _, y in _head_rows(model, arch, linear, batches, (None, None), "head refit: unpruned outputs")]


def refit_head(model, arch: BoundArch, batches: list[dict], masks: tuple, targets: tuple, ridge: float,
               reduce=None) -> dict:
    """{(HEAD, name): (weight, bias)} for the head Linear refitted on the masked model (whatever weight
    updates are installed in it now); {} when the solve fails. reduce(tensor): sums the normal equations
    over data-parallel processes that each ran their share of the batches (None: one process)."""
    name, outputs = targets
    linear = model.get_submodule(name)
    normal = Normal(linear.in_features, linear.out_features, linear.weight.device)
    for (x, _), y in zip(_head_rows(model, arch, linear, batches, masks, "head refit: pruned inputs"), outputs):
        normal.add(x, y)
    if reduce is not None:
        normal.all_reduce(reduce)
    fit = normal.solve(linear.weight, ridge)
    if fit is None:
        log.warning("head refit of %s: the system is not finite or singular; left as it was", name)
        return {}
    return {(HEAD, name): (fit[0].to(linear.weight.dtype), fit[1].to(linear.weight.dtype))}

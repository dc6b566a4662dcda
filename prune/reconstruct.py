"""Layer-wise weight reconstruction: a stronger mask tuning.

Instead of one scale per surviving head or neuron (the paper), refit the whole output projection
of each block -- the attention output Linear over the kept head units' columns and the FFN output
Linear over the kept neurons' columns, with a bias (added where the Linear has none: the bias
compensation a pre-norm decoder block lacks) -- by ridge regression so that the student's residual sum
reconstructs the teacher's. Same layer loop, same targets, more freedom: a kept
unit can absorb the work of the pruned ones, not only rescale itself. Closed form, one small
linear solve per block (at most hidden x kept-columns), so it is also faster than iterating.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import torch
from tqdm import tqdm

from arch import BoundArch
from arch.hooks import apply_masks, capture_inputs
from prune.layer_io import LayerBatch, run_layer
from prune.mask_tuning import TuningReport, _select, _teacher_targets, layer_tokens
from prune.options import RIDGE
from utils.offload import Placement

log = logging.getLogger(__name__)

HEAD = "head"   # the layer field of a weight-update key (HEAD, module name): a task head's Linear (head_refit.py)


class Normal:
    """Running sums for least squares with an intercept: X^T X, X^T Y, sum X, sum Y, count."""

    def __init__(self, in_dim: int, out_dim: int, device):
        self.xtx = torch.zeros(in_dim, in_dim, dtype=torch.float64, device=device)
        self.xty = torch.zeros(in_dim, out_dim, dtype=torch.float64, device=device)
        self.sx = torch.zeros(in_dim, dtype=torch.float64, device=device)
        self.sy = torch.zeros(out_dim, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.xtx += (x.t() @ x).double()
        self.xty += (x.t() @ y).double()
        self.sx += x.sum(0).double()
        self.sy += y.sum(0).double()
        self.n += x.shape[0]

    def all_reduce(self, reduce) -> None:
        """Sum the running sums over the processes that each saw a share of the sample."""
        for t in (self.xtx, self.xty, self.sx, self.sy):
            reduce(t)
        n = reduce(torch.tensor([float(self.n)], dtype=torch.float64, device=self.sx.device))
        self.n = int(n.item())

    def solve(self, w0: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Ridge towards the current weights w0 [out, in]; returns (weight [out, in], bias [out])."""
        if self.n == 0:
            return None
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xtx - self.n * torch.outer(mx, mx)
        cxy = self.xty - self.n * torch.outer(mx, my)
        if not (torch.isfinite(cxx).all() and torch.isfinite(cxy).all()):
            return None
        lam = ridge * float(cxx.diagonal().mean().clamp_min(1e-12))
        eye = torch.eye(cxx.shape[0], dtype=cxx.dtype, device=cxx.device)
        try:
            w_t = torch.linalg.solve(cxx + lam * eye, cxy + lam * w0.t().double())
        except RuntimeError:
            return None
        bias = my - mx @ w_t
        return w_t.t(), bias


def _fit_block(arch, l, linear, columns, head_mask, neuron_mask, inputs, targets, residual_of, tokens, ridge,
               reduce=None):
    """Refit `linear` on its kept input columns. residual_of(h, lb) gives the block's residual;
    reduce(tensor) sums a tensor over the processes (None: one process)."""
    normal = Normal(len(columns), linear.out_features, linear.weight.device)
    names = {"x": linear, "h": arch.ffn_residual(l)}
    with apply_masks(arch, head_mask, neuron_mask), capture_inputs(names) as seen:
        for lb, target in zip(inputs, targets):
            run_layer(arch, l, [lb])
            x, h = seen["x"].pop(), seen["h"].pop()
            residual = residual_of(h, lb)
            normal.add(_select(x, lb, tokens)[:, columns].float(),
                       (target - _select(residual, lb, tokens)).float())
    if reduce is not None:
        normal.all_reduce(reduce)
    return normal.solve(linear.weight[:, columns], ridge)


def reconstruct_weights(arch: BoundArch, teacher_head, teacher_neuron, head_mask, neuron_mask,
                        layer_inputs: list[LayerBatch], last_layer_tokens: str = "first", ridge: float = RIDGE,
                        last_mha_all_tokens: bool = False, reduce=None, placement=None):
    """Returns {(layer, 'attn_out'|'ffn_out'): (weight, bias)} full-size replacements and a report.

    The masks stay as given (binary); pruned columns of the new weights are zero.
    last_layer_tokens: the tokens the last layer is fitted on (the ones the task's loss reads);
    last_mha_all_tokens: fit the last layer's attention on all tokens anyway.
    reduce(tensor): sums the normal equations over data-parallel processes (None: one process);
    placement (utils/offload.Placement): streams one layer at a time onto the device (None: the model stays put).
    """
    stream = placement or Placement(None)
    updates, report = {}, TuningReport()
    teacher_in = student_in = stream.inputs(layer_inputs)
    originals = {}
    try:
        with torch.inference_mode():
            for l in tqdm(range(arch.num_layers), desc="reconstruction", leave=False):
                with stream.layer(arch, l):
                    tokens = layer_tokens(arch, l, last_layer_tokens)
                    mha_tokens = "all" if last_mha_all_tokens else tokens
                    targets = _teacher_targets(arch, l, teacher_head, teacher_neuron, teacher_in, tokens,
                                               mha_tokens=mha_tokens, with_bias=True)
                    blocks = (
                        ("attn_out", arch.unit_columns((head_mask[l] != 0).nonzero().flatten()).to(head_mask.device),
                         targets.mha, lambda h, lb: lb.hidden, mha_tokens),
                        ("ffn_out", (neuron_mask[l] != 0).nonzero().flatten(), targets.ffn, lambda h, lb: h, tokens),
                    )
                    for role, columns, block_targets, residual_of, rows_cls_only in blocks:
                        if len(columns) == 0:
                            report.add(l, role, "empty")
                            continue
                        linear = linear_for(arch, l, role)
                        fit = _fit_block(arch, l, linear, columns, head_mask, neuron_mask, student_in,
                                         block_targets, residual_of, rows_cls_only, ridge, reduce)
                        if fit is None:
                            log.warning("reconstruction, layer %d %s: the system is not finite or singular; "
                                        "weights left as they were", l, role)
                            report.add(l, role, "failed")
                            continue
                        weight = torch.zeros_like(linear.weight)
                        weight[:, columns.to(weight.device)] = fit[0].to(weight.dtype)
                        updates[(l, role)] = (stream.home(weight), stream.home(fit[1].to(weight.dtype)))
                        previous = _install(arch, {(l, role): updates[(l, role)]})
                        originals.update({k: tuple(map(stream.home, v)) for k, v in previous.items()})
                        report.add(l, role, "ok", columns=len(columns))
                    with apply_masks(arch, head_mask, neuron_mask):
                        student_in = run_layer(arch, l, student_in)
                    teacher_in = targets.outputs
    finally:
        _install(arch, originals)
    return updates, report


def linear_for(arch: BoundArch, l, role: str):
    """The Linear a weight-update key (layer, 'attn_out'|'ffn_out') or (HEAD, module name) addresses."""
    if l == HEAD:
        return arch.model.get_submodule(role)
    return arch.attn_out(l) if role == "attn_out" else arch.ffn_out(l)


def _install(arch: BoundArch, weights: dict) -> dict:
    """Copy {(layer, role): (weight, bias)} into the model; return what was there before.

    A bias of None removes the Linear's bias; a bias for a Linear without one adds it."""
    previous = {}
    with torch.no_grad():
        for (l, role), (w, b) in weights.items():
            linear = linear_for(arch, l, role)
            old_bias = linear.bias.detach().clone() if linear.bias is not None else None
            previous[(l, role)] = (linear.weight.detach().clone(), old_bias)
            linear.weight.copy_(w)
            set_bias(linear, b)
    return previous


def set_bias(linear: torch.nn.Linear, bias: torch.Tensor | None) -> None:
    if bias is None:
        linear.register_parameter("bias", None)
    elif linear.bias is None:
        linear.bias = torch.nn.Parameter(bias.detach().clone().to(linear.weight), requires_grad=False)
    else:
        with torch.no_grad():
            linear.bias.copy_(bias)


@contextmanager
def swapped_weights(arch: BoundArch, updates: dict | None):
    """Temporarily install reconstructed weights."""
    saved = _install(arch, updates or {})
    try:
        yield
    finally:
        _install(arch, saved)


def save_weight_updates(path: str, updates: dict) -> None:
    """{'<layer>.<role>': {'weight', 'bias'}} on CPU, written atomically."""
    flat = {f"{l}.{role}": {"weight": w.detach().cpu(), "bias": b.detach().cpu()} for (l, role), (w, b) in updates.items()}
    torch.save(flat, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_weight_updates(path: str) -> dict:
    flat = torch.load(path)
    return {(_layer_key(k.split(".")[0]), k.split(".", 1)[1]): (v["weight"], v["bias"]) for k, v in flat.items()}


def _layer_key(text: str):
    return text if text == HEAD else int(text)

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
from contextlib import nullcontext
from dataclasses import replace

import torch
from tqdm import tqdm

from arch import BoundArch
from arch.hooks import capture_inputs
from prune.layer_io import LayerBatch, capture_layer, run_layer
from prune.mask_tuning import TuningReport
from prune.targets import layer_tokens, select_tokens, teacher_targets
from prune.options import RIDGE
from prune.slim_layer import replayed_attention, slim_layer
from prune.weight_updates import install, linear_for
from utils.offload import Placement

log = logging.getLogger(__name__)


def gram(x: torch.Tensor) -> torch.Tensor:
    """x^T x, computing only the blocks on and above the diagonal (a third fewer multiplications for wide x:
    the refit's largest cost after the layer passes) and mirroring the rest."""
    n = x.shape[1]
    parts = max(1, min(3, n // 256))
    if parts == 1:
        return x.t() @ x
    edges = [n * i // parts for i in range(parts + 1)]
    out = x.new_empty(n, n)
    for i in range(parts):
        rows = slice(edges[i], edges[i + 1])
        for j in range(i, parts):
            cols = slice(edges[j], edges[j + 1])
            block = x[:, rows].t() @ x[:, cols]
            out[rows, cols] = block
            if j > i:
                out[cols, rows] = block.t()
    return out


FLUSH_EVERY = 8   # batches summed in float32 before the running sums (float64) take them


class Normal:
    """Running sums for least squares with an intercept: X^T X, X^T Y, sum X, sum Y, count.

    Each batch's products are summed in float32 over up to FLUSH_EVERY batches and only then added to the float64
    sums: the float64 conversion and addition of an [in, in] matrix per batch was a fifth of the refit's solve
    work, and a float32 sum of a few batches loses nothing the float64 total keeps."""

    def __init__(self, in_dim: int, out_dim: int, device):
        self.xtx = torch.zeros(in_dim, in_dim, dtype=torch.float64, device=device)
        self.xty = torch.zeros(in_dim, out_dim, dtype=torch.float64, device=device)
        self.sx = torch.zeros(in_dim, dtype=torch.float64, device=device)
        self.sy = torch.zeros(out_dim, dtype=torch.float64, device=device)
        self.n = 0
        self._pending: list[torch.Tensor] | None = None
        self._batches = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _at_least_float32(x), _at_least_float32(y)
        parts = [gram(x), x.t() @ y, x.sum(0), y.sum(0)]
        if self._pending is None:
            self._pending = parts
        else:
            for total, part in zip(self._pending, parts):
                total += part
        self.n += x.shape[0]
        self._batches += 1
        if self._batches >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._pending is not None:
            for total, part in zip((self.xtx, self.xty, self.sx, self.sy), self._pending):
                total += part.double()
        self._pending, self._batches = None, 0

    def all_reduce(self, reduce) -> None:
        """Sum the running sums over the processes that each saw a share of the sample."""
        self._flush()
        for t in (self.xtx, self.xty, self.sx, self.sy):
            reduce(t)
        n = reduce(torch.tensor([float(self.n)], dtype=torch.float64, device=self.sx.device))
        self.n = int(n.item())

    def solve(self, w0: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Ridge towards the current weights w0 [out, in]; returns (weight [out, in], bias [out])."""
        self._flush()
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


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _fit_block(arch, l, linear, scale, w0, inputs, targets, residual_module, tokens, ridge, reduce=None, keep=None):
    """Refit `linear` of the slim layer l (its inputs are the kept columns, its weight holds their mask values)
    in the masked model's terms: inputs times `scale` (the kept columns' mask values), ridge toward `w0` (the
    unpruned weight's kept columns). residual_module: the module whose input is the block's residual (None: the
    layer's input); reduce(tensor) sums a tensor over the processes (None: one process); keep: a list that
    receives each batch's (input of `linear`, residual), all tokens.
    Each call stops at `linear`: nothing after it is needed."""
    normal = Normal(linear.in_features, linear.out_features, linear.weight.device)
    names = {"x": linear} | ({"h": residual_module} if residual_module is not None else {})
    scale = scale.to(linear.weight.device, torch.float32)
    with capture_inputs(names, stop_at="x") as seen:
        for lb, target in zip(inputs, targets):
            capture_layer(arch, l, lb)
            x = seen["x"].pop()
            residual = seen["h"].pop() if residual_module is not None else lb.hidden
            normal.add(select_tokens(x, lb, tokens).float() * scale, target.aim(select_tokens(residual, lb, tokens)).float())
            if keep is not None:
                keep.append((x, residual))
    if reduce is not None:
        normal.all_reduce(reduce)
    return normal.solve(w0, ridge)


def reconstruct_weights(arch: BoundArch, teacher_head, teacher_neuron, head_mask, neuron_mask,
                        layer_inputs: list[LayerBatch], last_layer_tokens: str = "first", ridge: float = RIDGE,
                        last_mha_all_tokens: bool = False, reduce=None, placement=None):
    """Returns {(layer, 'attn_out'|'ffn_out'): (weight, bias)} full-size replacements and a report.

    The masks stay as given (a kept unit's mask value still multiplies its input); pruned columns of the new weights
    are zero. The model is left as it was: the student's layer runs as a pruned copy (prune/slim_layer.py).
    last_layer_tokens: the tokens the last layer is fitted on (the ones the task's loss reads);
    last_mha_all_tokens: fit the last layer's attention on all tokens anyway.
    reduce(tensor): sums the normal equations over data-parallel processes (None: one process);
    placement (utils/offload.Placement): streams one layer at a time onto the device (None: the model stays put).
    """
    stream = placement or Placement(None)
    updates, report = {}, TuningReport()
    teacher_in = student_in = stream.inputs(layer_inputs)
    with torch.inference_mode():
        for l in tqdm(range(arch.num_layers), desc="reconstruction", leave=False):
            with stream.layer(arch, l):
                tokens = layer_tokens(arch, l, last_layer_tokens)
                mha_tokens = "all" if last_mha_all_tokens else tokens
                targets = teacher_targets(arch, l, teacher_head, teacher_neuron, teacher_in, tokens,
                                           mha_tokens=mha_tokens, with_bias=True)
                heads = (head_mask[l] != 0).nonzero().flatten().cpu()
                neurons = (neuron_mask[l] != 0).nonzero().flatten().cpu()
                blocks = (
                    ("attn_out", arch.unit_columns(heads), head_mask[l].cpu()[heads].repeat_interleave(arch.unit_width),
                     targets.mha, False, mha_tokens),
                    ("ffn_out", neurons, neuron_mask[l].cpu()[neurons], targets.ffn, True, tokens),
                )
                full = {role: linear_for(arch, l, role) for role, *_ in blocks}
                last = l == arch.num_layers - 1
                contexts = []   # the attention fit's inputs: the FFN fit's pass replays them, not the attention
                ffn_io = []     # the FFN fit's inputs and residuals: the layer's outputs without running it again
                with slim_layer(arch, l, head_mask[l], neuron_mask[l]):
                    for role, columns, scale, block_targets, ffn_residual, fit_tokens in blocks:
                        if len(columns) == 0:
                            report.add(l, role, "empty")
                            continue
                        linear, columns = linear_for(arch, l, role), columns.to(full[role].weight.device)
                        keep = contexts if role == "attn_out" else None if last else ffn_io
                        replay = role == "ffn_out" and _replay_matches(arch, l, student_in, contexts)
                        with replayed_attention(arch, l, [x for x, _ in contexts]) if replay else nullcontext():
                            fit = _fit_block(arch, l, linear, scale, full[role].weight[:, columns], student_in,
                                             block_targets, arch.ffn_residual(l) if ffn_residual else None,
                                             fit_tokens, ridge, reduce, keep=keep)
                        block_targets.clear()   # read by this fit only: free them before the next pass
                        if fit is None:
                            log.warning("reconstruction, layer %d %s: the system is not finite or singular; "
                                        "weights left as they were", l, role)
                            report.add(l, role, "failed")
                            continue
                        weight, bias = fit[0].to(linear.weight.dtype), fit[1].to(linear.weight.dtype)
                        install(arch, {(l, role): (weight * scale.to(weight), bias)})   # the slim layer folds masks
                        full_weight = torch.zeros_like(full[role].weight)
                        full_weight[:, columns] = weight
                        updates[(l, role)] = (stream.home(full_weight), stream.home(bias))
                        report.add(l, role, "ok", columns=len(columns))
                    contexts.clear()    # the FFN fit replayed them; the layer's outputs need only ffn_io
                    if not last:        # the last layer's outputs feed nothing
                        student_in = _layer_outputs(arch, l, student_in, ffn_io)
                    ffn_io.clear()
                teacher_in = targets.outputs
    return updates, report


def _layer_outputs(arch: BoundArch, l: int, inputs: list[LayerBatch], ffn_io: list) -> list[LayerBatch]:
    """The student's layer-l outputs: from the FFN fit's captured inputs and residuals through the block's end
    (BoundArch.ffn_block_output, with the refitted weights) where that matches a real call of the layer on one
    batch (the smallest), else by running the layer on every batch. Saves the student's third pass of each layer."""
    if len(ffn_io) != len(inputs):
        return run_layer(arch, l, inputs)
    check = _smallest(inputs)
    real = run_layer(arch, l, [inputs[check]])[0]
    linear = arch.ffn_out(l)
    x, residual = ffn_io[check]
    if not _close(arch.ffn_block_output(l, linear(x), residual), real.hidden):
        log.info("layer %d: its output is not the family's FFN block end (BoundArch.ffn_block_output); running the "
                 "layer instead", l)
        return run_layer(arch, l, inputs)
    return [replace(lb, hidden=arch.ffn_block_output(l, linear(x), r)) if b != check else real
            for b, (lb, (x, r)) in enumerate(zip(inputs, ffn_io))]


def _replay_matches(arch: BoundArch, l: int, inputs: list[LayerBatch], contexts: list) -> bool:
    """Whether replaying the attention fit's contexts (prune/slim_layer.replayed_attention) gives the FFN output
    projection the inputs a real call gives, tried on the smallest batch."""
    if len(contexts) != len(inputs) or not inputs:
        return False
    check = _smallest(inputs)
    seen_by = []
    for replay in (False, True):
        with replayed_attention(arch, l, [contexts[check][0]]) if replay else nullcontext(), \
                capture_inputs({"x": arch.ffn_out(l)}, stop_at="x") as seen:
            capture_layer(arch, l, inputs[check])
        seen_by.append(seen["x"].pop())
    if _close(seen_by[1], seen_by[0]):
        return True
    log.info("layer %d: replaying the attention's outputs does not give its real FFN inputs; running it", l)
    return False


def _smallest(inputs: list[LayerBatch]) -> int:
    return min(range(len(inputs)), key=lambda b: inputs[b].hidden.numel())


def _close(computed: torch.Tensor, real: torch.Tensor) -> bool:
    tolerance = 1e-3 if real.dtype == torch.float32 else 2e-2
    scale = float(real.float().abs().max().clamp_min(1e-6))
    return computed.shape == real.shape and float((computed.float() - real.float()).abs().max()) <= tolerance * scale

"""What the layer-wise fits (mask tuning, the `lsq` refit) aim at: the teacher's residual sums.

For layer l the teacher runs on its own inputs. A block's target is its residual sum, projection output +
residual (before the LayerNorm of a post-LN encoder, at the residual add of a pre-norm decoder), so that the
student's projection output y, added to the student's own residual r, rebuilds it: y should be T - r.

Where the family puts a norm between the projection and the residual add (Gemma 3's post-norms:
`Family.attn_out_norm` / `ffn_out_norm`), the aim is the teacher's own projection output y_T, whatever the
student's residual. Carrying the residual's drift back through the norm (y_T + (r_T - r) / (c g), c the norm's
1 / rms, g its gain) is exact only for small moves, and on Gemma 3 270M it asked for large ones (channels of small
gain, tokens of large rms): perplexity 339 at 0.65 of the MACs against 64 aiming at y_T (32 x 128 calibration
tokens; 86 without any refit).

`tokens` says which positions are fitted: every real token ("all"), the first or the last real one (what the task's
loss reads, for the last layer).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from arch import BoundArch
from arch.hooks import apply_masks, capture_inputs
from prune.layer_io import LayerBatch, run_layer
from prune.slim_layer import slim_layer

TOKENS = ("all", "first", "last")


def select_tokens(x: torch.Tensor, lb: LayerBatch, tokens: str) -> torch.Tensor:
    """Rows of x [batch, tokens, dim] used in the fit: every real token, the first or the last real one."""
    if tokens == "first":
        return x[:, 0, :]
    if tokens == "last":
        last = lb.token_mask.long().sum(dim=1).clamp_min(1) - 1
        return x[torch.arange(x.shape[0], device=x.device), last]
    return x[lb.token_mask]


def layer_tokens(arch: BoundArch, l: int, last_layer_tokens: str) -> str:
    return last_layer_tokens if l == arch.num_layers - 1 else "all"


@dataclass
class BlockTarget:
    """One batch's target of one block on the selected tokens: aim(r) is what the projection should output when
    the student's residual is r."""
    base: torch.Tensor               # [N, hidden]: the teacher's residual sum T, or its projection output y_T
    through_norm: bool = False       # True: behind an output norm, the aim is y_T whatever r is

    def aim(self, residual: torch.Tensor) -> torch.Tensor:
        return self.base if self.through_norm else self.base - residual


@dataclass
class Targets:
    mha: list[BlockTarget]       # per batch, the attention block's target (projection bias left out unless asked)
    ffn: list[BlockTarget]       # per batch, the FFN block's
    outputs: list[LayerBatch]    # teacher layer outputs = teacher inputs of the next layer


def _block_target(y: torch.Tensor, linear: torch.nn.Linear, with_bias: bool, residual: torch.Tensor,
                  through_norm: bool, lb: LayerBatch, tokens: str) -> BlockTarget:
    """y: the teacher projection's output (with its bias); residual: the teacher's residual of the block."""
    kept = select_tokens(y if with_bias or linear.bias is None else y - linear.bias, lb, tokens)
    if through_norm:
        return BlockTarget(kept, through_norm=True)
    return BlockTarget(kept + select_tokens(residual, lb, tokens))


def teacher_targets(arch: BoundArch, l: int, head_mask, neuron_mask, inputs: list[LayerBatch], ffn_tokens: str,
                    mha_tokens: str = "all", with_bias: bool = False) -> Targets:
    """The teacher's targets for layer l under its masks. with_bias: keep the projections' biases in the targets
    (for fits with a free bias)."""
    behind_norm = {role: arch.out_norm(l, role) is not None for role in ("attn_out", "ffn_out")}
    mha, ffn, outputs = [], [], []
    with _teacher_layer(arch, l, head_mask, neuron_mask):
        attn_out, ffn_out = arch.attn_out(l), arch.ffn_out(l)
        with capture_inputs({"h": arch.ffn_residual(l)}, outputs={"mha": attn_out, "ffn": ffn_out}) as seen:
            for lb in inputs:
                out = run_layer(arch, l, [lb])[0]
                mha.append(_block_target(seen["mha"].pop(), attn_out, with_bias, lb.hidden, behind_norm["attn_out"],
                                         lb, mha_tokens))
                ffn.append(_block_target(seen["ffn"].pop(), ffn_out, with_bias, seen["h"].pop(),
                                         behind_norm["ffn_out"], lb, ffn_tokens))
                outputs.append(out)
    return Targets(mha, ffn, outputs)


def _teacher_layer(arch: BoundArch, l: int, head_mask, neuron_mask):
    """The teacher's layer l: a physically pruned copy when its masks drop units (the paper's schedule teacher
    keeps about sqrt of the budget, so the copy does that much less work for the same function), else the layer
    itself with its masks applied."""
    if bool((head_mask[l] != 0).all()) and bool((neuron_mask[l] != 0).all()):
        return apply_masks(arch, head_mask, neuron_mask)
    return slim_layer(arch, l, head_mask[l], neuron_mask[l])

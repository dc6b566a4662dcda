"""Hardware-friendly FFN widths: every layer keeps a multiple of N channels (0 allowed), under the same budget.

Quantized kernels work on blocks of a row: the K-quants of GGUF engines (Q4_K_M ...) on 256 values, Q8_0/Q4_0 on 32,
and GPU GEMMs are fastest on multiples of 64/128. A row of the FFN output projection is as long as the layer's
channel count, so a width such as 1,336 leaves that projection in a fallback type.

`multiple_widths` takes the search's masks and re-chooses the FFN channels: with the kept head units fixed, the
neurons the budget pays for are spent in blocks of N, each layer's k-th block being its channels ranked
kN..(k+1)N-1 by importance. Within a layer the blocks' values fall (channels are ranked), and every block costs
the same, so taking the most valuable blocks over all layers is the exact optimum of "most importance kept
with per-layer counts that are multiples of N" (the greedy on a concave separable objective). With the uniform
search, every layer keeps the same count: the largest multiple of N that fits.
"""
from __future__ import annotations

import torch

from utils.errors import UserError


class WidthMultipleError(UserError):
    """--width_multiple given a value or a budget metric it cannot work with."""


def _rank_blocks(importance: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, channel order by importance (desc) and the value of each whole block of `multiple` channels."""
    layers, ffn = importance.shape
    order = importance.float().argsort(dim=1, descending=True, stable=True)
    ranked = importance.float().gather(1, order)
    blocks = ffn // multiple
    values = ranked[:, :blocks * multiple].reshape(layers, blocks, multiple).sum(-1) if blocks else \
        ranked.new_zeros(layers, 0)
    return order, values


def multiple_widths(neuron_importance: torch.Tensor, head_mask: torch.Tensor, cost, constraint: float,
                    multiple: int, uniform: bool = False) -> torch.Tensor:
    """A binary neuron mask [layers, ffn] whose per-layer counts are multiples of `multiple` and whose cost with
    `head_mask` stays within constraint x the full cost (cost: prune.cost.UnitCost or prune.query_heads.QueryHeadCost).

    multiple=1 returns the most important neurons the budget pays for (global, or the same count per layer
    with uniform=True). Raises WidthMultipleError when multiple < 1 or the head units alone exceed the budget."""
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise WidthMultipleError(f"width_multiple must be a positive integer, got {multiple!r}")
    layers, ffn = neuron_importance.shape
    budget = constraint * cost.full(head_mask, neuron_importance)
    head_cost = cost.of_masks(head_mask, neuron_importance.new_zeros(0))
    left = budget - head_cost
    if left < -1e-9 * abs(budget):
        raise WidthMultipleError(f"the kept head units alone cost more than the budget ({constraint}); "
                                 f"raise the constraint")
    neurons = max(0, int(left // cost.per_neuron)) if cost.per_neuron > 0 else layers * ffn
    while neurons > 0 and head_cost + neurons * cost.per_neuron > budget:     # float rounding
        neurons -= 1
    order, values = _rank_blocks(neuron_importance, multiple)
    counts = torch.zeros(layers, dtype=torch.long)
    if uniform:
        per_layer = min(ffn // multiple, neurons // (layers * multiple)) * multiple
        counts[:] = per_layer
    elif values.numel():
        take = min(neurons // multiple, values.numel())
        # ties broken towards earlier layers and earlier blocks: a stable sort of the flattened values
        best = values.flatten().argsort(descending=True, stable=True)[:take]
        counts = torch.bincount(best // values.shape[1], minlength=layers) * multiple
    mask = torch.zeros(layers, ffn, dtype=torch.float32)
    ranks = torch.arange(ffn).expand(layers, ffn)
    mask.scatter_(1, order, (ranks < counts[:, None]).float())
    return mask.to(neuron_importance.device)


MIN_BLOCKS = 8   # a default multiple applies only when each layer's FFN holds at least this many blocks of it
COUNT_METRICS = ("mac", "params")


def check_width_multiple(multiple: int, ffn_dim: int, counts_units: bool, search: str) -> None:
    """Refuse a width multiple that cannot work with this model and budget (instead of ignoring it).
    counts_units: the budget prices each unit (the mac and params metrics; latency tables price every width)."""
    if multiple == 1:
        return
    if not counts_units:
        raise WidthMultipleError(f"--width_multiple {multiple} needs a count metric (--metric mac or params); the "
                                 f"latency tables price every width themselves: drop --width_multiple or use --metric mac")
    if search == "threshold":
        raise WidthMultipleError(f"--width_multiple {multiple} works with --search global or uniform, not threshold: "
                                 f"drop --width_multiple or pick another --search")
    if multiple > ffn_dim:
        raise WidthMultipleError(f"--width_multiple {multiple} is larger than the model's FFN ({ffn_dim} channels per "
                                 f"layer): every layer would lose its whole FFN. Pass a multiple of at most "
                                 f"{ffn_dim}, e.g. 32, or 256 for Q4_K_M GGUF files, or 1 for any width")


def resolve_width_multiple(requested: int | None, default: int, ffn_dim: int, metric: str, search: str
                           ) -> tuple[int, str]:
    """The width multiple a run uses, and why: `requested` (the user's --width_multiple) as given; None takes the
    task's `default` where it can work (a count metric, a search other than threshold, and at least MIN_BLOCKS
    blocks of it per layer, so that rounding to it costs little); otherwise 1 (any count)."""
    if requested is not None:
        check_width_multiple(requested, ffn_dim, metric in COUNT_METRICS, search)
        return requested, "--width_multiple"
    if default == 1:
        return 1, "the task's default"
    if metric not in COUNT_METRICS:
        return 1, f"the task's default {default} does not apply to --metric {metric} (its tables price every width)"
    if search == "threshold":
        return 1, f"the task's default {default} does not apply to --search threshold"
    if ffn_dim < MIN_BLOCKS * default:
        return 1, (f"the task's default {default} does not apply: the FFN has {ffn_dim} channels, fewer than "
                   f"{MIN_BLOCKS} blocks of {default}")
    return default, "the task's default"


def apply_width_multiple(budget, neuron_importance: torch.Tensor, masks: tuple, constraint: float,
                         multiple: int, search: str) -> tuple:
    """The pipeline's hook: the search's (head mask, neuron mask) with the neurons re-chosen by multiple_widths.
    `budget` is the run's prune.budgets budget; only count budgets (mac, params) have a per-unit cost."""
    if multiple == 1:
        return masks
    cost = getattr(budget, "cost", None)
    check_width_multiple(multiple, neuron_importance.shape[-1], cost is not None, search)
    head_mask, _ = masks
    return head_mask, multiple_widths(neuron_importance, head_mask, cost, constraint, multiple,
                                      uniform=search == "uniform")

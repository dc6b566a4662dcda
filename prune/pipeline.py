"""The paper's stages composed: gradients -> importance -> search -> rearrangement -> mask tuning.

Importance, budget metric and mask-tuning method are looked up by name in prune/registry.py.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import torch

from arch import BoundArch
from prune import registry
from prune.budgets import BudgetInputs
from prune.cost import mac_cost_of, param_cost_of
from prune.fisher import collect_mask_grads
from prune.importance import ImportanceInputs
from prune.masks import full_masks, kept_per_layer
from prune.methods import TuningInputs
from prune.options import PruneOptions
from prune.rearrange import rearrange_masks
from prune.search import teacher_constraint
from prune.widths import apply_width_multiple
from utils.distributed import Dist
from utils.offload import Placement

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    masks: dict = field(default_factory=dict)     # stage name -> (head_mask, neuron_mask)
    seconds: dict = field(default_factory=dict)   # stage name -> seconds
    mac_ratio: float = 0.0
    param_ratio: float = 0.0                      # of the head-unit and FFN weights
    budget_ratio: float = 0.0                     # by the run's metric (latency: estimated by the tables)
    tuning_events: list = field(default_factory=list)
    weight_updates: dict = field(default_factory=dict)   # (layer, role) -> (weight, bias), lsq only

    @property
    def final(self):
        return self.masks["final"]


class _Timer:
    def __init__(self, seconds: dict, name: str):
        self.seconds, self.name = seconds, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds[self.name] = round(time.perf_counter() - self.start, 3)


def prune(model, arch: BoundArch, sample_batches: list[dict], seq_len: float, options: PruneOptions,
          last_layer_tokens: str = "first", loss_fn=None, grads: tuple | None = None,
          gradient_batches: list[dict] | None = None, dist: Dist = Dist(), placement=None) -> PruneResult:
    """sample_batches feed the layer-wise tuning; gradient_batches (default: the same) the Fisher and the
    rearrangement, whose per-batch gradients depend on how the sample is batched.
    seq_len: tokens per example for MAC counts; last_layer_tokens: the tokens the task's loss reads.
    grads: (head_grads, neuron_grads) from an earlier collect_mask_grads on the same model and sample,
    to compare options without recomputing them.
    dist: the processes that share the gradient and tuning passes (utils/distributed.py; default: this one);
    placement (utils/offload.Placement): the model spread over devices for the gradient pass and streamed one
    layer at a time through mask tuning (default: it stays where it is)."""
    placement = placement or Placement(None)
    result = PruneResult()
    gradient_batches = gradient_batches or sample_batches
    budget = registry.get("metric", options.metric)(BudgetInputs(arch, seq_len, options.mha_lut, options.ffn_lut,
                                                                       options.search, options.lut_fit))
    with _Timer(result.seconds, "gradients"):
        with placement.whole_model(model, "gradients") if grads is None else contextlib.nullcontext():
            head_grads, neuron_grads = grads or _mask_grads(model, arch, gradient_batches, loss_fn, dist,
                                                                   options.checkpoint_layers)
    with _Timer(result.seconds, "search"):
        score = registry.get("importance", options.importance)
        head_imp, neuron_imp = score(ImportanceInputs(arch, head_grads, neuron_grads, options.seed, gradient_batches))
        # query heads as units: optionally valued by each layer's block-diagonal Fisher inside the search (the
        # rearrangement below would break the equal q per kept group): prune/query_heads.py
        by_block = arch.query_heads and options.query_head_fisher == "block" and options.importance == "fisher"
        block = {"head_grads": head_grads} if by_block else {}
        if options.teacher == "full":
            teacher = full_masks(arch.num_layers, arch.num_head_units, arch.ffn_dim, head_imp.device)
        else:
            teacher = budget.search(head_imp, neuron_imp, teacher_constraint(options.constraint, options.teacher_exponent),
                                    **block)
        student = budget.search(head_imp, neuron_imp, options.constraint, **block)
        student = apply_width_multiple(budget, neuron_imp, student, options.constraint, options.width_multiple,
                                       options.search)
    result.masks["teacher"] = teacher
    result.masks["search"] = student
    log.info("search: head units kept per layer %s, neurons kept per layer %s",
             kept_per_layer(student[0]), kept_per_layer(student[1]))
    if options.rearrange:
        with _Timer(result.seconds, "rearrange"):
            heads = student[0] if arch.query_heads else rearrange_masks(student[0], head_grads)
            student = (heads, rearrange_masks(student[1], neuron_grads))
        result.masks["rearrange"] = student
    if options.mask_tuning:
        with _Timer(result.seconds, "mask_tuning"):
            outcome = registry.get("method", options.method)(TuningInputs(
                model, arch, teacher, student, sample_batches, last_layer_tokens, options.ridge,
                options.last_mha_all_tokens, dist, placement, head_refit=options.head_refit))
        student, result.weight_updates, result.tuning_events = outcome.masks, outcome.weight_updates, outcome.events
    result.masks["final"] = student
    result.mac_ratio = mac_cost_of(arch, seq_len).ratio(*student)
    result.param_ratio = param_cost_of(arch).ratio(*student)
    result.budget_ratio = budget.ratio(*student)
    return result


def _mask_grads(model, arch, batches, loss_fn, dist: Dist, checkpoint_layers: bool = False):
    """Each process takes its share of the batches; the per-batch gradients come back in batch order."""
    heads, neurons = collect_mask_grads(model, arch, dist.shard(batches), loss_fn, checkpoint_layers)
    if not dist.active:
        return heads, neurons
    per_batch = dist.gather_in_order(list(zip(heads, neurons)))
    return (torch.stack([h for h, _ in per_batch]).to(heads.device),
            torch.stack([n for _, n in per_batch]).to(neurons.device))

"""The paper's stages composed: gradients -> search -> rearrangement -> mask tuning."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from prune.cost import MacCost
from prune.fisher import collect_mask_grads, fisher_importance
from prune.latency import estimate_latency, full_latency, search_latency
from prune.layer_io import first_layer_inputs
from prune.masks import full_masks, kept_per_layer
from prune.reconstruct import reconstruct_weights
from prune.rearrange import rearrange_masks
from prune.rescale import tune_masks
from prune.search import search_mac, teacher_constraint
from utils.arch import BoundArch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneOptions:
    constraint: float
    rearrange: bool = True
    rescale: bool = True
    importance: str = "fisher"      # fisher | magnitude | random
    seed: int = 0
    metric: str = "mac"                      # mac | latency
    mha_lut: torch.Tensor | None = None      # latency tables (prune/latency.py), for metric latency
    ffn_lut: torch.Tensor | None = None
    method: str = "kwon"            # kwon: one scale per unit (the paper) | lsq: refit output projections
    teacher: str = "schedule"       # schedule: the paper's sqrt(c) teacher mask | full: the unpruned model
    ridge: float = 0.1
    last_mha_tokens: str = "cls"    # lsq: the last layer's attention refit on the first token or all tokens
    teacher_exponent: float = 0.5   # schedule teacher at constraint ** exponent (the paper: sqrt)


@dataclass
class PruneResult:
    masks: dict = field(default_factory=dict)     # stage name -> (head_mask, neuron_mask)
    seconds: dict = field(default_factory=dict)   # stage name -> seconds
    mac_ratio: float = 0.0
    tuning_events: list = field(default_factory=list)
    latency_ratio: float | None = None            # metric latency: estimated by the tables
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


def importance_scores(kind: str, head_grads, neuron_grads, arch: BoundArch, seed: int):
    """Per-unit importance: the paper's Fisher, or a simple baseline for ablations."""
    if kind == "fisher":
        return fisher_importance(head_grads), fisher_importance(neuron_grads)
    if kind == "random":
        gen = torch.Generator().manual_seed(seed)
        return (torch.rand(head_grads.shape[1:], generator=gen),
                torch.rand(neuron_grads.shape[1:], generator=gen))
    if kind == "magnitude":
        heads = torch.stack([arch.attn_out(i).weight.detach().float().cpu()
                             .view(arch.hidden_size, arch.num_heads, arch.head_dim).norm(dim=(0, 2))
                             for i in range(arch.num_layers)])
        neurons = torch.stack([arch.ffn_out(i).weight.detach().float().cpu().norm(dim=0)
                               for i in range(arch.num_layers)])
        return heads, neurons
    raise ValueError(f"unknown importance '{kind}': use fisher, magnitude or random")


def prune(model, arch: BoundArch, sample_batches: list[dict], cost: MacCost, options: PruneOptions,
          last_ffn_cls_only: bool = True, loss_fn=None, grads: tuple | None = None,
          gradient_batches: list[dict] | None = None) -> PruneResult:
    """sample_batches feed the layer-wise tuning; gradient_batches (default: the same) the Fisher and the
    rearrangement, whose per-batch gradients depend on how the sample is batched.
    grads: (head_grads, neuron_grads) from an earlier collect_mask_grads on the same model and sample,
    to compare options without recomputing them."""
    result = PruneResult()
    gradient_batches = gradient_batches or sample_batches
    with _Timer(result.seconds, "gradients"):
        head_grads, neuron_grads = grads or collect_mask_grads(model, arch, gradient_batches, loss_fn)
    with _Timer(result.seconds, "search"):
        head_imp, neuron_imp = importance_scores(options.importance, head_grads, neuron_grads, arch, options.seed)

        def search(constraint):
            if options.metric == "latency":
                return search_latency(head_imp, neuron_imp, options.mha_lut, options.ffn_lut, constraint)
            return search_mac(head_imp, neuron_imp, cost, constraint)
        if options.teacher == "full":
            teacher = full_masks(arch.num_layers, arch.num_heads, arch.ffn_dim, head_imp.device)
        else:
            teacher = search(teacher_constraint(options.constraint, options.teacher_exponent))
        student = search(options.constraint)
    result.masks["teacher"] = teacher
    result.masks["search"] = student
    log.info("search: heads kept per layer %s, neurons kept per layer %s",
             kept_per_layer(student[0]), kept_per_layer(student[1]))
    if options.rearrange:
        with _Timer(result.seconds, "rearrange"):
            student = (rearrange_masks(student[0], head_grads), rearrange_masks(student[1], neuron_grads))
        result.masks["rearrange"] = student
    if options.rescale and options.method == "lsq":
        with _Timer(result.seconds, "mask_tuning"):
            inputs = first_layer_inputs(model, arch, sample_batches)
            result.weight_updates, report = reconstruct_weights(
                arch, *teacher, *student, inputs, last_ffn_cls_only, options.ridge,
                last_mha_cls_only=options.last_mha_tokens == "cls")
        result.tuning_events = report.events
    elif options.rescale:
        with _Timer(result.seconds, "mask_tuning"):
            inputs = first_layer_inputs(model, arch, sample_batches)
            head, neuron, report = tune_masks(arch, *teacher, *student, inputs, last_ffn_cls_only)
        student = (head, neuron)
        result.tuning_events = report.events
    result.masks["final"] = student
    result.mac_ratio = cost.of_masks(*student) / cost.of_counts(arch.num_layers * arch.num_heads,
                                                                arch.num_layers * arch.ffn_dim)
    if options.metric == "latency":
        result.latency_ratio = (estimate_latency(options.mha_lut, options.ffn_lut, *student)
                                / full_latency(options.mha_lut, options.ffn_lut, arch.num_layers))
    return result

"""Mask-tuning methods: what a layer-wise pass does to the searched (and rearranged) masks.

    kwon  the paper's mask tuning: one least-squares scale per kept head unit and neuron
    lsq   refit the kept columns of each block's output projections (and a bias) by ridge least squares
"""
from __future__ import annotations

from dataclasses import dataclass, field

from prune.layer_io import first_layer_inputs
from prune.mask_tuning import tune_masks
from prune.reconstruct import RIDGE, reconstruct_weights
from prune.registry import register
from utils.arch import BoundArch


@dataclass(frozen=True)
class TuningInputs:
    model: object
    arch: BoundArch
    teacher: tuple                 # (head mask, neuron mask) each layer reconstructs
    student: tuple                 # the masks to tune
    sample_batches: list
    last_layer_tokens: str         # the tokens the task's loss reads: first | last | all
    ridge: float = RIDGE
    last_mha_all_tokens: bool = False


@dataclass
class TuningOutcome:
    masks: tuple                                     # (head mask, neuron mask), possibly rescaled
    weight_updates: dict = field(default_factory=dict)   # (layer, role) -> (weight, bias)
    events: list = field(default_factory=list)       # what happened in every layer


@register("method", "kwon")
def kwon(inputs: TuningInputs) -> TuningOutcome:
    layer_inputs = first_layer_inputs(inputs.model, inputs.arch, inputs.sample_batches)
    head, neuron, report = tune_masks(inputs.arch, *inputs.teacher, *inputs.student, layer_inputs,
                                      inputs.last_layer_tokens)
    return TuningOutcome((head, neuron), {}, report.events)


@register("method", "lsq")
def lsq(inputs: TuningInputs) -> TuningOutcome:
    layer_inputs = first_layer_inputs(inputs.model, inputs.arch, inputs.sample_batches)
    updates, report = reconstruct_weights(inputs.arch, *inputs.teacher, *inputs.student, layer_inputs,
                                          inputs.last_layer_tokens, inputs.ridge, inputs.last_mha_all_tokens)
    return TuningOutcome(inputs.student, updates, report.events)

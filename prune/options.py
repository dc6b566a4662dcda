"""The options of one pruning (every default defined here once), and the name of a run's variant.

main.py's flags take their defaults from `PruneOptions`; results.json records the fields that differ from
them, and `variant_name` turns those differences into the name the collector groups runs by, so two runs
that differ in any option never share a name.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

RIDGE = 0.1   # the default ridge strength of lsq (prune/reconstruct.py uses it as its default too)
QUERY_HEAD_FISHER = ("diagonal", "block")
# run-level choices that change the result but are not PruneOptions fields: name -> default
RUN_FIELDS = {"gradient_batches": "sorted"}
# what is not part of a variant: the budget and seed are the sweep's axes, the tables are data, the rest is
# bookkeeping that gives the same result
NOT_A_VARIANT = ("constraint", "seed", "mha_lut", "ffn_lut", "checkpoint_layers")


@dataclass(frozen=True)
class PruneOptions:
    """Every default of a run is defined here once; main.py's flags take theirs from these."""
    constraint: float
    rearrange: bool = True
    mask_tuning: bool = True
    method: str = "lsq"             # how masks are tuned (registry "method"): lsq | kwon (the paper)
    importance: str = "fisher"      # registry "importance": fisher | magnitude | random | ...
    metric: str = "mac"             # registry "metric": mac | params | latency
    search: str = "global"          # registry "search" (mac, params): global (the paper's) | uniform | threshold
    seed: int = 0
    mha_lut: torch.Tensor | None = None      # latency tables (prune/latency_tables.py), for metric latency
    ffn_lut: torch.Tensor | None = None
    teacher: str = "schedule"       # schedule: the paper's less-pruned teacher mask | full: the unpruned model
    teacher_exponent: float = 0.5   # the schedule's teacher keeps constraint ** exponent (the paper: sqrt)
    ridge: float = RIDGE            # lsq: ridge towards the current weights, relative to the mean input energy
    last_mha_all_tokens: bool = False   # lsq: fit the last layer's attention on all tokens, not only the loss's
    head_refit: bool = True             # lsq: refit the task head's first Linear to the unpruned model's
    checkpoint_layers: bool = False     # gradients: recompute blocks in the backward pass (less memory, same result)
    attention_unit: str = "group"       # group: a KV group with its query heads | query: query heads within groups
                                        # (arch/base.ATTENTION_UNITS; prune/query_heads.py)
    query_head_fisher: str = "diagonal"  # query units: diagonal (per-head Fisher) | block (each layer's heads by its
                                         # block-diagonal Fisher; measured worse: docs/results.md, issue 32)
    lut_fit: bool = False               # metric latency: price unit counts by the tables' piecewise-linear fit
                                        # (prune.latency.fitted_lut), not the measured entries
    width_multiple: int | None = 1      # every layer keeps a multiple of this many FFN channels (prune/widths.py);
                                        # main.py passes None for 'the task's default' (prune.widths.resolve_width_multiple)


    def __post_init__(self):
        if self.query_head_fisher not in QUERY_HEAD_FISHER:
            raise ValueError(f"query_head_fisher must be one of {QUERY_HEAD_FISHER}, not {self.query_head_fisher!r}")


def option_defaults() -> dict:
    """Every option's default, PruneOptions' fields and the run-level ones."""
    defaults = PruneOptions(constraint=0.5)
    return {**{f.name: getattr(defaults, f.name) for f in fields(PruneOptions) if f.name not in NOT_A_VARIANT},
            **RUN_FIELDS}


def differences(options: PruneOptions, **run_fields) -> dict:
    """The options of a run that differ from the defaults (JSON-ready)."""
    values = {**{f.name: getattr(options, f.name) for f in fields(PruneOptions)}, **run_fields}
    return {k: v for k, v in values.items() if k in option_defaults() and v != option_defaults()[k]}


def variant_name(chosen: dict) -> str:
    """The name of a run's variant from its options (a flat dict; missing keys take the defaults).

    The method (or the stage where a run stopped: search, rearrange), then one suffix per other option
    that differs from its default, e.g. lsq-norearrange, magnitude (kwon with magnitude importance),
    lsq-ridge0.3, lsq-search_uniform, lsq-nohead.
    """
    defaults = option_defaults()
    o = {**defaults, **{k: v for k, v in chosen.items() if v is not None}}
    if "rescale" in chosen and "mask_tuning" not in chosen:      # the flag's old name, in older args.json
        o["mask_tuning"] = chosen["rescale"]
    tuning, rearrange, method = bool(o["mask_tuning"]), bool(o["rearrange"]), o["method"]
    name = (method if rearrange else f"{method}-norearrange") if tuning else ("rearrange" if rearrange else "search")
    if o["importance"] != defaults["importance"]:
        name = o["importance"] if name == "kwon" else f"{name}-{o['importance']}"
    named = {"method", "mask_tuning", "rearrange", "importance"}
    suffixes = {
        "teacher": lambda v: f"teacher_{v}" if tuning else None,
        "ridge": lambda v: f"ridge{float(v):g}" if tuning and method == "lsq" else None,
        "teacher_exponent": lambda v: f"teacher_exp{float(v):g}" if tuning else None,
        "gradient_batches": lambda v: f"{v}_batches",
        "metric": lambda v: f"{v}",
        "search": lambda v: f"search_{v}",
        "head_refit": lambda v: ("nohead" if not v else "head") if tuning and method == "lsq" else None,
        "last_mha_all_tokens": lambda v: "lastmha_all" if v and tuning and method == "lsq" else None,
        "width_multiple": lambda v: f"width{int(v)}",
        "lut_fit": lambda v: "lut_fit" if v else None,
    }
    for key in defaults:
        if key in named or o[key] == defaults[key]:
            continue
        suffix = suffixes[key](o[key]) if key in suffixes else f"{key}{o[key]}"
        if suffix:
            name += f"-{suffix}"
    return name

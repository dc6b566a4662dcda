"""Latency lookup tables: measured on the family's own block, read from files, checked against a model.

A lookup table (LUT) is a 1-D float tensor of seconds indexed by a unit count: mha_lut[k] is the
latency of one block's attention with k head units (k = 0..U), ffn_lut[n] that of its FFN with n
neurons (n = 0..F). `measure_luts` times a one-block model built from the checkpoint's config,
physically pruned to each count as a pruned model runs it, on random input of the given batch size
and sequence length.
"""
from __future__ import annotations

import copy
import warnings

import torch
from transformers import AutoModel

from arch import bind, facts_for
from arch.hooks import call_layer, layer_calls
from prune.physical import physically_prune
from utils.errors import UserError
from utils.paths import file_problem
from utils.timing import random_inputs, time_call


class LutError(UserError):
    """A lookup table that does not fit the model."""


def _counts(total: int, step: int) -> list[int]:
    counts = list(range(0, total + 1, max(1, step)))
    if counts[-1] != total:
        counts.append(total)
    if step > 1 and 1 not in counts and total >= 1:
        counts.insert(1, 1)     # the jump from 0 to 1 unit is not linear; measure it
    return counts


def _interpolate(counts: list[int], values: list[float], total: int) -> torch.Tensor:
    x = torch.tensor(counts, dtype=torch.float64)
    y = torch.tensor(values, dtype=torch.float64)
    grid = torch.arange(total + 1, dtype=torch.float64)
    idx = torch.searchsorted(x, grid, right=True).clamp(1, len(counts) - 1)
    x0, x1, y0, y1 = x[idx - 1], x[idx], y[idx - 1], y[idx]
    return y0 + (y1 - y0) * (grid - x0) / (x1 - x0)


def one_layer_model(config, device="cpu", dtype=torch.float32):
    """A randomly initialised one-block model of the family and sizes of `config` (timing needs no weights)."""
    config = copy.deepcopy(config)
    setattr(config, facts_for(config.model_type).num_layers_attr, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_config(config)
    return model.to(device=device, dtype=dtype).eval()


def measure_luts(config, batch_size: int, seq_len: int, device="cpu", dtype=torch.float32, mha_step: int = 1,
                 ffn_step: int = 16, warmup: int = 3, repeats: int = 10, progress=None, time_model=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Latency tables of one block of the model described by `config`, timed on the family's own modules.

    The block is physically pruned to k head units and no neurons (attention time) or to no head units
    and n neurons (FFN time), exactly as a pruned model runs it, and called with the inputs the model
    gives its first block. With T(k, n) the block's time, mha_lut[k] = T(k, 0) - T(0, 0) / 2 and
    ffn_lut[n] = T(0, n) - T(0, 0) / 2, so that mha_lut[k] + ffn_lut[n] estimates T(k, n).
    time_model(model, inputs) -> seconds times a whole model in another runtime instead (ONNX Runtime:
    benchmarks/ort_latency_tables.py); T(k, n) is then the one-block model's time less the time of the same
    model with no block (embeddings and what follows the blocks).
    Returns (mha_lut [units + 1], ffn_lut [ffn + 1]) in seconds.
    """
    device = torch.device(device)
    base = one_layer_model(config, device, dtype)
    arch = bind(base)
    inputs = random_inputs(base.config, batch_size, seq_len, device)
    with torch.inference_mode():
        hidden, calls = layer_calls(base, arch, inputs)
    args, kwargs = calls[0]
    without_blocks = time_model(_without_blocks(base), inputs) if time_model else 0.0

    def block_time(units: int, neurons: int) -> float:
        model = copy.deepcopy(base)
        head_mask = torch.zeros(1, arch.num_head_units)
        neuron_mask = torch.zeros(1, arch.ffn_dim)
        head_mask[0, :units], neuron_mask[0, :neurons] = 1, 1
        pruned_arch = bind(model)
        physically_prune(model, pruned_arch, head_mask, neuron_mask)
        if time_model:
            return time_model(model, inputs) - without_blocks
        layer = pruned_arch.layer(0)
        return time_call(lambda: call_layer(layer, hidden, args, kwargs), device, warmup, repeats)

    empty = block_time(0, 0)
    tables = []
    for kind, total, step in (("head units", arch.num_head_units, mha_step), ("neurons", arch.ffn_dim, ffn_step)):
        counts, values = _counts(total, step), []
        for n in counts:
            t = block_time(n, 0) if kind == "head units" else block_time(0, n)
            values.append(max(t - empty / 2, 1e-9))
            if progress:
                progress(kind, n, values[-1])
        tables.append(_interpolate(counts, values, total))
    return tables[0], tables[1]


def _without_blocks(model):
    """A copy of the one-block `model` whose block list is empty (what a model runs besides its blocks)."""
    empty = copy.deepcopy(model)
    path, _, name = facts_for(empty.config.model_type).layers.rpartition(".")
    base = empty.base_model
    setattr(base.get_submodule(path) if path else base, name, torch.nn.ModuleList())
    return empty.eval()


def as_lut(table, flag: str = "lut") -> torch.Tensor:
    """A LUT as a 1-D float64 CPU tensor (accepts lists and tensors)."""
    lut = torch.as_tensor(table, dtype=torch.float64).detach().cpu().flatten()
    if lut.numel() == 0 or not torch.isfinite(lut).all() or (lut < 0).any():
        raise LutError(f"{flag}: a latency table must be a non-empty list of finite, non-negative seconds")
    return lut


def check_lut(lut, units: int, flag: str, what: str) -> torch.Tensor:
    """Validate that a LUT has one entry per count 0..units; `flag` names the option it came from."""
    lut = as_lut(lut, flag)
    if lut.numel() != units + 1:
        hint = ""
        if lut.numel() == units:
            hint = (" It has one entry per count 1..N, like the original tool's tables; this tool indexes "
                    "by count 0..N (entry 0 = a block with no units).")
        raise LutError(f"{flag} has {lut.numel()} entries but the model has {units} {what} per layer, so it "
                       f"needs {units + 1} (counts 0..{units}).{hint} Measure it for this model with "
                       f"python -m scripts.measure_latency.")
    return lut


def load_lut(path: str, units: int, flag: str, what: str) -> torch.Tensor:
    """torch.load a LUT file and validate it (see check_lut)."""
    problem = file_problem(path)
    if problem:
        raise LutError(f"{flag} '{path}' {problem}; pass the table file created by python -m scripts.measure_latency")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LutError(f"{flag} '{path}' is not a saved latency table: {str(e).splitlines()[0][:200]}") from None
    if not (isinstance(table, torch.Tensor) and table.dim() == 1 and table.is_floating_point()):
        kind = f"a {table.dim()}-D {table.dtype} tensor" if isinstance(table, torch.Tensor) else type(table).__name__
        raise LutError(f"{flag} '{path}' holds {kind}, not a 1-D float tensor of seconds; create it with "
                       f"python -m scripts.measure_latency")
    lut = check_lut(table, units, flag, what)
    if float(lut.max()) == 0 or float(lut.max()) == float(lut.min()):
        raise LutError(f"{flag} '{path}' is {'all zero' if float(lut.max()) == 0 else 'flat'} ({lut[0]:.3g} s "
                       f"for every count), so no pruning changes the latency; measure it again with "
                       f"python -m scripts.measure_latency on the target device.")
    return lut

"""Latency lookup tables, their piecewise-linear fit, and the latency-constrained search
(paper section 4.1 and appendix A).

A lookup table (LUT) is a 1-D float tensor of seconds indexed by a unit count: mha_lut[k] is the
latency of one block's attention with k head units (k = 0..U), ffn_lut[n] that of its FFN with n
neurons (n = 0..F). The estimated latency of a pruned model is the sum over its layers of
mha_lut[head units in layer] + ffn_lut[neurons in layer].

The tables are measured on the family's own block (`measure_luts`): a one-block model built from the
checkpoint's config, physically pruned to each count as a pruned model runs it, on random input of
the given batch size and sequence length.
"""
from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError


class LutError(UserError):
    """A lookup table that does not fit the model."""


# ----------------------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time in seconds of fn() (inference mode; CUDA synchronised around each call)."""
    device = torch.device(device)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_inputs(config, batch_size: int, seq_len: int, device="cpu", seed: int = 0) -> dict:
    """Random token ids with no padding, for timing a model end to end."""
    gen = torch.Generator().manual_seed(seed)
    low = 1000 if config.vocab_size > 2000 else 5     # skip special and unused tokens of real vocabularies
    ids = torch.randint(low, config.vocab_size, (batch_size, seq_len), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def time_models(models: dict, inputs: dict, device="cpu", warmup: int = 2, repeats: int = 10) -> dict:
    """Time models alternately, one call each per round (so load changes on a shared machine hit
    them alike). Per model: median, min and quartiles of `repeats` calls, in seconds."""
    from tqdm import tqdm
    device = torch.device(device)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(**inputs)
        _sync(device)
        for _ in tqdm(range(repeats), desc=f"timing {' vs '.join(models)}", unit="round", leave=False):
            for name, model in models.items():
                start = time.perf_counter()
                model(**inputs)
                _sync(device)
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        out[name] = {"median_s": statistics.median(t), "min_s": min(t), "q1_s": q[0], "q3_s": q[2], "n": len(t)}
    return out


def measure_speedup(original, pruned, batch_size: int, seq_len: int, device="cpu", warmup: int = 2,
                    repeats: int = 10) -> dict:
    """End-to-end speedup of `pruned` over `original` (median of alternating calls)."""
    inputs = random_inputs(original.config, batch_size, seq_len, device)
    t = time_models({"original": original, "pruned": pruned}, inputs, device, warmup, repeats)
    return {"batch_size": batch_size, "seq_len": seq_len, "device": str(device),
            "threads": torch.get_num_threads(), "repeats": repeats,
            "original_s": t["original"]["median_s"], "pruned_s": t["pruned"]["median_s"],
            "speedup": t["original"]["median_s"] / t["pruned"]["median_s"], "timings": t}


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
    import copy

    from transformers import AutoModel

    from utils.arch import facts_for
    config = copy.deepcopy(config)
    setattr(config, facts_for(config.model_type).num_layers_attr, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_config(config)
    return model.to(device=device, dtype=dtype).eval()


def measure_luts(config, batch_size: int, seq_len: int, device="cpu", dtype=torch.float32, mha_step: int = 1,
                 ffn_step: int = 16, warmup: int = 3, repeats: int = 10, progress=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Latency tables of one block of the model described by `config`, timed on the family's own modules.

    The block is physically pruned to k head units and no neurons (attention time) or to no head units
    and n neurons (FFN time), exactly as a pruned model runs it, and called with the inputs the model
    gives its first block. With T(k, n) the block's time, mha_lut[k] = T(k, 0) - T(0, 0) / 2 and
    ffn_lut[n] = T(0, n) - T(0, 0) / 2, so that mha_lut[k] + ffn_lut[n] estimates T(k, n).
    Returns (mha_lut [units + 1], ffn_lut [ffn + 1]) in seconds.
    """
    import copy

    from prune.physical import physically_prune
    from utils.arch import bind
    from utils.hooks import call_layer, layer_call_inputs

    device = torch.device(device)
    base = one_layer_model(config, device, dtype)
    arch = bind(base)
    with torch.inference_mode():
        args, kwargs = layer_call_inputs(base, arch, random_inputs(base.config, batch_size, seq_len, device))
    hidden = args[0] if args else kwargs["hidden_states"]

    def block_time(units: int, neurons: int) -> float:
        model = copy.deepcopy(base)
        head_mask = torch.zeros(1, arch.num_head_units)
        neuron_mask = torch.zeros(1, arch.ffn_dim)
        head_mask[0, :units], neuron_mask[0, :neurons] = 1, 1
        pruned_arch = bind(model)
        physically_prune(model, pruned_arch, head_mask, neuron_mask)
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


# ----------------------------------------------------------------------------- tables

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
                       f"scripts/measure_latency.py.")
    return lut


def load_lut(path: str, units: int, flag: str, what: str) -> torch.Tensor:
    """torch.load a LUT file and validate it (see check_lut)."""
    from utils.paths import file_problem
    problem = file_problem(path)
    if problem:
        raise LutError(f"{flag} '{path}' {problem}; pass the table file created by scripts/measure_latency.py")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LutError(f"{flag} '{path}' is not a saved latency table: {str(e).splitlines()[0][:200]}") from None
    if not (isinstance(table, torch.Tensor) and table.dim() == 1 and table.is_floating_point()):
        kind = f"a {table.dim()}-D {table.dtype} tensor" if isinstance(table, torch.Tensor) else type(table).__name__
        raise LutError(f"{flag} '{path}' holds {kind}, not a 1-D float tensor of seconds; create it with "
                       f"scripts/measure_latency.py")
    lut = check_lut(table, units, flag, what)
    if float(lut.max()) == 0 or float(lut.max()) == float(lut.min()):
        raise LutError(f"{flag} '{path}' is {'all zero' if float(lut.max()) == 0 else 'flat'} ({lut[0]:.3g} s "
                       f"for every count), so no pruning changes the latency; measure it again with "
                       f"scripts/measure_latency.py on the target device.")
    return lut


def estimate_latency(mha_lut, ffn_lut, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
    """Sum over layers of mha_lut[heads kept] + ffn_lut[neurons kept]."""
    mha_lut, ffn_lut = as_lut(mha_lut, "mha_lut"), as_lut(ffn_lut, "ffn_lut")
    heads = (head_mask != 0).sum(dim=1).cpu()
    neurons = (neuron_mask != 0).sum(dim=1).cpu()
    return float(mha_lut[heads].sum() + ffn_lut[neurons].sum())


def full_latency(mha_lut, ffn_lut, num_layers: int) -> float:
    mha_lut, ffn_lut = as_lut(mha_lut, "mha_lut"), as_lut(ffn_lut, "ffn_lut")
    return float(num_layers * (mha_lut[-1] + ffn_lut[-1]))


# ----------------------------------------------------------------------------- fit

def fit_piecewise_linear(lut, include_zero: bool = False) -> tuple[int, float, float]:
    """Least-squares fit of f(n) = const for n <= threshold, const + slope * (n - threshold) above.

    The paper's latency model: a block is bound by fixed overheads until it has `threshold` units,
    and grows linearly after. Fitted over counts 1..N (entry 0, a block that runs no units, is a
    different code path; include_zero=True fits it too). For each candidate threshold the
    continuous two-piece line is solved in closed form (slope clamped at >= 0); the threshold with
    the smallest squared error wins. Returns (threshold, slope, const) with threshold a count.
    """
    lut = as_lut(lut)
    start = 0 if include_zero else 1
    n = torch.arange(lut.numel(), dtype=torch.float64)[start:]
    y = lut[start:]
    if y.numel() == 0:
        return 0, 0.0, float(lut[0])
    thresholds = n                                        # candidate t: every count
    z = (n[None, :] - thresholds[:, None]).clamp(min=0)   # [T, N] hinge features
    m = float(y.numel())
    sz, szz = z.sum(1), (z * z).sum(1)
    sy, szy = y.sum(), (z * y).sum(1)
    det = m * szz - sz * sz
    slope = torch.where(det > 1e-12, (m * szy - sz * sy) / det.clamp(min=1e-12), torch.zeros_like(det))
    slope = slope.clamp(min=0)
    const = (sy - slope * sz) / m
    err = ((const[:, None] + slope[:, None] * z - y[None, :]) ** 2).sum(1)
    best = int(torch.argmin(err))
    return int(thresholds[best]), float(slope[best]), float(const[best])


def piecewise_linear(n, threshold: int, slope: float, const: float):
    """Evaluate the fitted latency model at count(s) n."""
    n = torch.as_tensor(n, dtype=torch.float64)
    return const + slope * (n - threshold).clamp(min=0)


# ----------------------------------------------------------------------------- search

def _mask(shape, layer_counts: list[int], order: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(shape)
    for i, k in enumerate(layer_counts):
        mask[i, order[i, :k]] = 1.0
    return mask


def _bins(cost: torch.Tensor, unit: float) -> torch.Tensor:
    return torch.ceil(cost / unit * (1 + 1e-12)).long()


def _best_per_bin(bins: torch.Tensor, value: torch.Tensor, resolution: int) -> torch.Tensor:
    """Indices of the options worth keeping: per cost bin (within budget) the one of highest value."""
    keep = {}
    for k, (b, v) in enumerate(zip(bins.tolist(), value.tolist())):
        if b <= resolution and (b not in keep or v > keep[b][1]):
            keep[b] = (k, v)
    return torch.tensor(sorted(k for k, _ in keep.values()), dtype=torch.long)


def _dp(groups: list[tuple[torch.Tensor, torch.Tensor]], budget: float, resolution: int) -> list[int]:
    """Multiple-choice knapsack: one option per group, costs rounded up to budget/resolution bins
    (so the chosen options' true cost never exceeds the budget), maximising total value."""
    unit = budget / resolution
    best = torch.zeros(resolution + 1, dtype=torch.float64)     # best value with cost <= b
    history, kept = [], []
    for cost, value in groups:
        bins = _bins(cost, unit)
        options = _best_per_bin(bins, value, resolution)          # options sharing a bin: keep the best
        new = torch.full_like(best, -math.inf)
        for k in options.tolist():
            c = int(bins[k])
            view = new[c:]
            torch.maximum(view, best[:resolution + 1 - c] + float(value[k]), out=view)
        history.append(best)
        kept.append((options, bins[options], value[options]))
        best = new
    if best[resolution] == -math.inf:
        return []
    picks, b = [], resolution
    for prev, (options, bins, values) in zip(reversed(history), reversed(kept)):
        src = b - bins
        cand = torch.where(src >= 0, prev[src.clamp(min=0)] + values, torch.full_like(values, -math.inf))
        j = int(torch.argmax(cand))
        picks.append(int(options[j]))
        b = int(src[j])
    return picks[::-1]


def search_latency(head_importance: torch.Tensor, neuron_importance: torch.Tensor, mha_lut, ffn_lut,
                   constraint: float, method: str = "best", resolution: int = 10000
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks [L, H] and [L, F] whose estimated latency is <= constraint x the full model's.

    Inside a layer, units are kept in order of importance (the paper's local ranking), so a layer's
    choice is a count, costing lut[count] and worth the sum of its top-`count` importances.
    method "dp" picks the counts of all layers jointly by dynamic programming over the layers (a
    knapsack with costs rounded up to budget/resolution, so the budget always holds; near-optimal).
    method "paper" is the authors' procedure: fit the piecewise-linear model, give every layer its
    `threshold` most important units (free below the threshold), then rank the rest globally at
    `slope` seconds per unit and try every head count. Either result is checked against the
    tables: trimmed (least important unit first) while over the budget, then topped up with the
    most important next units that still fit. method "best" (default) runs both and returns the
    one keeping more importance. The estimate always uses the tables, never the fit.
    """
    if not 0 < constraint <= 1:
        raise ValueError(f"constraint must be in (0, 1], got {constraint}")
    num_layers, num_heads = head_importance.shape
    ffn_dim = neuron_importance.shape[1]
    mha_lut = check_lut(mha_lut, num_heads, "--mha_lut", "attention heads")
    ffn_lut = check_lut(ffn_lut, ffn_dim, "--ffn_lut", "FFN neurons")
    device = head_importance.device
    head_importance = head_importance.detach().double().cpu()
    neuron_importance = neuron_importance.detach().double().cpu()
    budget = constraint * full_latency(mha_lut, ffn_lut, num_layers)
    floor = num_layers * float(mha_lut[0] + ffn_lut[0])
    if floor > budget:
        raise ValueError(f"latency constraint {constraint} is below what even an empty model costs by the "
                         f"tables ({floor / full_latency(mha_lut, ffn_lut, num_layers):.3f} of the full model)")
    head_sorted, head_order = head_importance.sort(dim=1, descending=True)
    neuron_sorted, neuron_order = neuron_importance.sort(dim=1, descending=True)
    zero = torch.zeros(num_layers, 1, dtype=torch.float64)
    head_value = torch.cat([zero, head_sorted.cumsum(1)], 1)       # [L, H+1] value of keeping the top k
    neuron_value = torch.cat([zero, neuron_sorted.cumsum(1)], 1)

    if method == "best":
        candidates = [search_latency(head_importance, neuron_importance, mha_lut, ffn_lut, constraint, m, resolution)
                      for m in ("dp", "paper")]
        return max(candidates, key=lambda hn: float((hn[0] * head_importance).sum() + (hn[1] * neuron_importance).sum()))
    if method == "dp":
        groups = [(mha_lut, head_value[i]) for i in range(num_layers)]
        groups += [(ffn_lut, neuron_value[i]) for i in range(num_layers)]
        picks = _dp(groups, budget, resolution)
        if not picks:  # the rounding ate the slack: only the empty model fits
            picks = [0] * (2 * num_layers)
        head_counts, neuron_counts = picks[:num_layers], picks[num_layers:]
    elif method == "paper":
        head_counts, neuron_counts = _paper_counts(head_sorted, neuron_sorted, mha_lut, ffn_lut, budget)
    else:
        raise ValueError(f"unknown search method '{method}': use best, dp or paper")

    head_counts, neuron_counts = _trim_to_budget(head_counts, neuron_counts, head_sorted, neuron_sorted,
                                                 mha_lut, ffn_lut, budget)
    head_counts, neuron_counts = _fill_budget(head_counts, neuron_counts, head_sorted, neuron_sorted,
                                              mha_lut, ffn_lut, budget)
    return (_mask(head_importance.shape, head_counts, head_order).to(device),
            _mask(neuron_importance.shape, neuron_counts, neuron_order).to(device))


def _paper_counts(head_sorted, neuron_sorted, mha_lut, ffn_lut, budget):
    num_layers, num_heads = head_sorted.shape
    ffn_dim = neuron_sorted.shape[1]
    h_t, h_slope, h_c = fit_piecewise_linear(mha_lut)
    f_t, f_slope, f_c = fit_piecewise_linear(ffn_lut)
    h_t, f_t = max(1, min(h_t, num_heads)), max(1, min(f_t, ffn_dim))
    left = budget - num_layers * (h_c + f_c)
    base_h, base_f = [h_t] * num_layers, [f_t] * num_layers
    if left <= 0:
        return base_h, base_f
    rest_h = head_sorted[:, h_t:].reshape(-1)
    rest_f = neuron_sorted[:, f_t:].reshape(-1)
    layer_h = torch.arange(num_layers).repeat_interleave(num_heads - h_t)
    layer_f = torch.arange(num_layers).repeat_interleave(ffn_dim - f_t)
    h_val, h_idx = rest_h.sort(descending=True)
    f_val, f_idx = rest_f.sort(descending=True)
    h_cum = torch.cat([torch.zeros(1, dtype=torch.float64), h_val.cumsum(0)])
    f_cum = torch.cat([torch.zeros(1, dtype=torch.float64), f_val.cumsum(0)])
    best = (-math.inf, 0, 0)
    for m in range(rest_h.numel() + 1):
        spend = left - h_slope * m
        if spend < 0:
            break
        n = rest_f.numel() if f_slope <= 0 else min(rest_f.numel(), int(spend / f_slope))
        total = float(h_cum[m] + f_cum[n])
        if total > best[0]:
            best = (total, m, n)
    _, m, n = best
    # within a layer the remaining units are sorted, so the globally chosen ones are a prefix per layer
    head_counts = [b + int((layer_h[h_idx[:m]] == i).sum()) for i, b in enumerate(base_h)]
    neuron_counts = [b + int((layer_f[f_idx[:n]] == i).sum()) for i, b in enumerate(base_f)]
    return head_counts, neuron_counts


def _trim_to_budget(head_counts, neuron_counts, head_sorted, neuron_sorted, mha_lut, ffn_lut, budget):
    """Drop the least important kept unit (a layer's last) until the tables say the budget holds."""
    head_counts, neuron_counts = list(head_counts), list(neuron_counts)

    def total():
        return float(sum(mha_lut[k] for k in head_counts) + sum(ffn_lut[n] for n in neuron_counts))

    while total() > budget:
        candidates = [(float(head_sorted[i, k - 1]), 0, i) for i, k in enumerate(head_counts) if k > 0]
        candidates += [(float(neuron_sorted[i, n - 1]), 1, i) for i, n in enumerate(neuron_counts) if n > 0]
        if not candidates:
            break
        _, kind, i = min(candidates)
        if kind == 0:
            head_counts[i] -= 1
        else:
            neuron_counts[i] -= 1
    return head_counts, neuron_counts


def _fill_budget(head_counts, neuron_counts, head_sorted, neuron_sorted, mha_lut, ffn_lut, budget):
    """Spend what is left of the budget: move one layer at a time to a larger count (any larger
    count the tables say still fits), the move adding the most importance first."""
    counts = [list(head_counts), list(neuron_counts)]
    luts = (mha_lut, ffn_lut)
    zero = torch.zeros(1, dtype=torch.float64)
    values = [torch.cat([zero.expand(len(c), 1), s.double().cumsum(1)], 1)
              for c, s in zip(counts, (head_sorted, neuron_sorted))]
    total = float(sum(mha_lut[k] for k in counts[0]) + sum(ffn_lut[n] for n in counts[1]))
    while True:
        best = None
        for kind in (0, 1):
            lut = luts[kind]
            for i, k in enumerate(counts[kind]):
                new_total = total - float(lut[k]) + lut[k + 1:]
                gain = values[kind][i, k + 1:] - values[kind][i, k]
                gain = torch.where(new_total <= budget, gain, torch.full_like(gain, -math.inf))
                if gain.numel() == 0:
                    continue
                j = int(torch.argmax(gain))
                if gain[j] > 0 and (best is None or float(gain[j]) > best[0]):
                    best = (float(gain[j]), kind, i, k + 1 + j, float(new_total[j]))
        if best is None:
            return counts[0], counts[1]
        _, kind, i, k, total = best
        counts[kind][i] = k

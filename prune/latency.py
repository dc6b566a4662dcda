"""The latency estimate of a pruned model, the tables' piecewise-linear fit, and the latency-constrained
search (paper section 4.1 and appendix A). The tables themselves (measured, read, checked) are in
prune/latency_tables.py.

The estimated latency of a pruned model is the sum over its layers of mha_lut[head units in layer] +
ffn_lut[neurons in layer].
"""
from __future__ import annotations

import math

import torch

from prune.latency_tables import as_lut, check_lut


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


def fitted_lut(lut) -> torch.Tensor:
    """The table replaced by its piecewise-linear fit (entry 0, a block that runs no units, kept as measured): a
    smooth, non-decreasing table for tables measured in sub-millisecond steps, whose dips the search would
    otherwise spend its budget on (docs/results.md, latency tables at batch 1)."""
    lut = as_lut(lut)
    fitted = piecewise_linear(torch.arange(lut.numel()), *fit_piecewise_linear(lut))
    fitted[0] = lut[0]
    return fitted


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

"""Which units of a layer to keep, chosen by the reconstruction error they leave (Optimal Brain Surgeon).

For a Linear y = W x + b fitted by ridge least squares on inputs with covariance C, the fit's loss is
the same quadratic in every output row, with Hessian H = C + lam I. Removing a group G of input
columns (one head's slice, or one FFN neuron) from the optimum W raises the loss by
    trace(W_G (Hinv_GG)^-1 W_G^T)
and the best update of the other columns is W -= W_G (Hinv_GG)^-1 Hinv_G:. Greedy elimination with
these exact updates keeps the units that the others cannot stand in for (as in ZipLM, Kurtic et al. 2023),
where the Fisher ranking and the paper's rearrangement judge each unit without the refit.
"""
from __future__ import annotations

import torch


def _group_scores(w: torch.Tensor, hinv: torch.Tensor, alive: list[int], size: int) -> torch.Tensor:
    idx = torch.tensor(alive, device=w.device)
    cols = (idx.unsqueeze(1) * size + torch.arange(size, device=w.device)).flatten()
    if size == 1:
        return w[:, cols].pow(2).sum(0) / hinv[cols, cols].clamp_min(1e-30)
    blocks = hinv[cols][:, cols].view(len(alive), size, len(alive), size)
    diag = blocks[torch.arange(len(alive)), :, torch.arange(len(alive)), :]      # [G, size, size]
    wg = w[:, cols].view(w.shape[0], len(alive), size).transpose(0, 1)           # [G, out, size]
    solved = torch.linalg.solve(diag, wg.transpose(1, 2))                         # [G, size, out]
    return (wg.transpose(1, 2) * solved).sum(dim=(1, 2))


def _remove(w: torch.Tensor, hinv: torch.Tensor, cols: torch.Tensor) -> None:
    """In place: the optimal update of w and hinv after forcing the columns `cols` to zero."""
    inner = torch.linalg.inv(hinv[cols][:, cols])
    rows = hinv[cols, :]                                    # [k, n]
    w -= (w[:, cols] @ inner) @ rows
    hinv -= hinv[:, cols] @ inner @ rows
    w[:, cols] = 0
    hinv[cols, :] = 0
    hinv[:, cols] = 0


def obs_keep(w: torch.Tensor, hessian: torch.Tensor, group_size: int, keep: int, steps: int = 64) -> list[int]:
    """Indices of the `keep` groups (of `group_size` consecutive columns) to keep.

    w [out, n]: the ridge optimum over all n columns; hessian [n, n]: C + lam I (positive definite).
    Groups are removed lowest score first; when many must go, a few at a time (at most `steps` rounds),
    each round an exact joint update.
    """
    n_groups = w.shape[1] // group_size
    if keep >= n_groups:
        return list(range(n_groups))
    w = w.double().clone()
    hinv = torch.linalg.inv(hessian.double())
    alive = list(range(n_groups))
    chunk = -(-(n_groups - keep) // steps) if group_size == 1 else 1
    while len(alive) > keep:
        scores = _group_scores(w, hinv, alive, group_size)
        drop = {alive[i] for i in scores.argsort()[:min(chunk, len(alive) - keep)].tolist()}
        cols = torch.tensor([g * group_size + j for g in sorted(drop) for j in range(group_size)], device=w.device)
        _remove(w, hinv, cols)
        alive = [g for g in alive if g not in drop]
    return alive

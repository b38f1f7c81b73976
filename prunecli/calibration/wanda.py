"""Wanda (Sun et al. 2023): score |W_ij|·‖X_j‖₂, the lowest pruned within each output row."""

from __future__ import annotations

import torch

from prunecli.errors import BadInput
from prunecli.pruning.allocation import prune_count


def wanda_scores(weight: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """|W_ij|·‖X_j‖₂ in float64, from the column sums of squares ‖X_j‖₂² (``ColumnNorms``)."""
    if weight.ndim != 2 or squares.shape != (weight.shape[1],):
        raise BadInput(
            f"Wanda needs a 2-D weight and one norm per input: got weight "
            f"{tuple(weight.shape)} and norms {tuple(squares.shape)}"
        )
    norms = squares.to(device=weight.device, dtype=torch.float64).sqrt()
    return weight.detach().to(torch.float64, copy=True).abs_().mul_(norms)


def prune_rows(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the same number k = round(sparsity·columns) of lowest scores per row.

    Each output row is one comparison group, as in the paper's code, which prunes
    ``int(columns·sparsity)``; here k is the engine's exact count (round half to even,
    :func:`prunecli.pruning.allocation.prune_count`) over the row, so the layer prunes
    rows·k weights — round(sparsity·numel) whenever sparsity·columns is a whole number.
    Ties are broken by position: the earliest column goes first (a stable sort).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise BadInput(f"sparsity must be within [0, 1], got {sparsity}")
    rows, columns = scores.shape
    k = prune_count(sparsity, columns)
    keep = torch.ones(rows, columns, dtype=torch.bool, device=scores.device)
    if k:
        lowest = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, lowest, False)
    return keep


#: rows are scored and sorted this many values at a time: a whole layer's float64 scores, its
#: float64 copy and the sort's values and int64 indices would be 4 × 8 bytes per weight
CHUNK = 1 << 20


def wanda_mask(weight: torch.Tensor, squares: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda's keep-mask for one Linear weight (out × in) at ``sparsity`` per output row,
    scored a few rows at a time (each row is its own comparison group, so the mask is the
    same as scoring the whole layer at once)."""
    if weight.ndim != 2:
        return prune_rows(wanda_scores(weight, squares), sparsity)  # says what is wrong
    rows, columns = weight.shape
    keep = torch.empty(rows, columns, dtype=torch.bool, device=weight.device)
    step = max(1, CHUNK // max(columns, 1))
    for start in range(0, rows, step):
        chunk = wanda_scores(weight[start : start + step], squares)
        keep[start : start + step] = prune_rows(chunk, sparsity)
    return keep

"""Scores per unit of a group, how many units each group keeps, and which.

A unit's score is the sum of its weights' scores over every slice it owns (any per-weight
criterion: ``|w|`` gives the unit's L1 norm), or, from calibration activations, the consumer's
input norms times its weight columns' norms (Wanda's ‖X_j‖₂·‖W_:,j‖₂ summed over the unit's
columns). Higher means keep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from prunecli.errors import BadInput
from prunecli.structure.groups import Group, Slice, count_params, slices_by_tensor


def unit_scores(scores: Mapping[str, torch.Tensor], group: Group) -> torch.Tensor:
    """Per unit of ``group``, the sum of ``scores`` (per-weight, of the tensors' shapes) over
    the unit's entries in every slice (tensors without scores — BatchNorm statistics,
    unscored layers — add nothing)."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for piece in group.slices:
        if piece.tensor in scores:
            total += _per_unit(scores[piece.tensor].detach().to(torch.float64), piece)
    return total


def activation_scores(
    input_norms: torch.Tensor, consumer_weight: torch.Tensor, piece: Slice
) -> torch.Tensor:
    """Per unit: Σ over the unit's input columns d of ‖X_d‖₂ · ‖W[:, d]‖₂, where ``piece`` is
    the consumer weight's slice (its ``dim`` is the input dimension) and ``input_norms`` the
    L2 norms of the consumer's input features over the calibration tokens."""
    weight = consumer_weight.to(torch.float64)
    other = [d for d in range(weight.dim()) if d != piece.dim]
    column = weight.pow(2).sum(dim=other).sqrt()
    return (input_norms.to(torch.float64) * column).reshape(-1, piece.block).sum(dim=1)


def _per_unit(tensor: torch.Tensor, piece: Slice) -> torch.Tensor:
    other = [d for d in range(tensor.dim()) if d != piece.dim]
    along = tensor.sum(dim=other) if other else tensor
    return along.reshape(-1, piece.block).sum(dim=1)


def keep_highest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` highest-scored units, as sorted indices; ties keep the lower index."""
    order = torch.sort(-scores, stable=True).indices
    return torch.sort(order[:keep]).values


def uniform_keep(
    groups: Sequence[Group],
    shapes: Mapping[str, tuple[int, ...]],
    names: Sequence[str],
    sparsity: float,
    round_to: int | None = None,
) -> tuple[int, float]:
    """The one number of units every group keeps (they are all of one size) so that the
    fraction of ``names``' parameters removed is closest to ``sparsity`` (ties: fewer removed),
    and that fraction. With ``round_to`` K the count is a multiple of K (or all units). Never
    all units of a group: a sparsity that would need it is refused, with the most there is."""
    size, kind = groups[0].size, groups[0].kind
    step = round_to or 1
    if step > size:
        raise BadInput(
            f"--round-to {step} is more than the {size} {_units(kind)} of each block",
            f"pass --round-to {size} or less",
        )
    least = max(step, max(g.min_keep for g in groups))
    least = -(-least // step) * step
    table = slices_by_tensor(groups)
    total = count_params(shapes, table, {}, names)
    per_unit = total - count_params(shapes, table, {g.name: size - 1 for g in groups}, names)
    candidates = [k for k in range(least, size + 1, step)] + [size]

    def removed(k: int) -> float:
        return (size - k) * per_unit / total

    most = math.floor(removed(min(candidates)) * 1e4) / 1e4
    if sparsity > removed(min(candidates)) + 1e-12:
        raise BadInput(
            f"--sparsity {sparsity:g} would remove every {kind} of a block: removing "
            f"{_units(kind)} takes at most {most:.4f} of the blocks' linear-layer parameters "
            f"(keeping {min(candidates)} of {size} per block)",
            f"pass --sparsity {most:.4f} or less",
        )
    keep = min(candidates, key=lambda k: (round(abs(removed(k) - sparsity), 12), -k))
    return keep, removed(keep)


def _units(kind: str) -> str:
    return {"head": "attention heads (key/value groups)", "neuron": "FFN neurons"}.get(
        kind, f"{kind}s"
    )

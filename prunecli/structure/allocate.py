"""How many units each group keeps, and which: structured allocation.

``--sparsity`` is the fraction of prunable parameters removed (DESIGN §3), counted exactly: a
unit of a group takes its slices out of every tensor it cuts, so a conv between two pruned groups
loses rows and columns both. The target is reached to within one step of one group:

- ``global``: one ranking of every unit by its score per parameter (the group's summed per-weight
  score divided by the parameters the unit holds), the lowest removed first;
- ``layer``: every group removes the same fraction of its units;
- ``erk``: fractions shaped like ERK's densities (a group whose producers hold many parameters
  per channel keeps a smaller share; kept fraction ∝ √(Σ dims / Π dims)).

``round_to`` K keeps every count a multiple of K; a group keeps at least ``max(min_keep, K)``
units (a layer never loses its last channel), and a sparsity that would need more is refused
with the most that can be removed.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from prunecli.errors import BadInput
from prunecli.structure.groups import Group, count_params, slices_by_tensor
from prunecli.structure.units import keep_highest
from prunecli.structure.units import unit_scores as group_unit_scores

SCOPES = ("global", "layer", "erk")


@dataclass
class Allocation:
    kept: dict[str, torch.Tensor]  # group name → sorted unit indices that stay
    counts: dict[str, int]
    total: int  # prunable parameters before
    target: int  # prunable parameters to remove
    removed: int  # prunable parameters removed


def unit_scores(
    groups: Sequence[Group], scores: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each group's per-unit score: the per-weight ``scores`` summed over the unit's slices."""
    return {group.name: group_unit_scores(scores, group) for group in groups}


def _unit_params(group: Group, shapes: Mapping[str, tuple[int, ...]], names: set[str]) -> int:
    return sum(math.prod(shapes[p.tensor]) // group.size for p in group.slices if p.tensor in names)


def _floor(group: Group, round_to: int) -> int:
    return max(group.min_keep, round_to)


def _next_count(count: int, group: Group, round_to: int) -> int | None:
    """The next smaller allowed count below ``count``, or None at the floor."""
    step = (count - 1) // round_to * round_to if round_to > 1 else count - 1
    return step if step >= _floor(group, round_to) else None


def _rounded(group: Group, keep: float, round_to: int) -> int:
    count = max(_floor(group, round_to), min(group.size, round(keep)))
    if round_to > 1 and count < group.size:
        count = max(_floor(group, round_to), round(count / round_to) * round_to)
    return min(count, group.size)


def allocate(
    groups: Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    prunable: Sequence[str],
    sparsity: float,
    scope: str = "global",
    round_to: int | None = None,
) -> Allocation:
    """Kept units per group for ``sparsity`` of the ``prunable`` parameters removed."""
    if scope not in SCOPES:
        raise BadInput(
            f"--scope {scope} does not apply to structured pruning",
            f"choose one of: {', '.join(SCOPES)}",
        )
    k = round_to or 1
    for group in groups:
        if group.size < _floor(group, k):
            group.min_keep = group.size  # too narrow to round: it stays whole
    table = slices_by_tensor(groups)
    names = list(prunable)
    total = count_params(shapes, table, {}, names)
    target = round(sparsity * total)
    floors = {g.name: min(g.size, _floor(g, k)) for g in groups}
    most = total - count_params(shapes, table, floors, names)
    if target > most:
        unit = "units" if not groups else groups[0].kind + "s"
        raise BadInput(
            f"--sparsity {sparsity:g} would remove whole layers: keeping at least "
            f"{max(k, 1)} of the {unit} in each group, at most {most / max(total, 1):.1%} of the "
            "prunable parameters can be removed",
            "choose a lower --sparsity (or a smaller --round-to)",
        )
    if scope == "global":
        counts = _global(groups, scores, shapes, set(names), table, target, k)
    else:
        counts = _by_fraction(groups, shapes, table, names, target, k, scope)
    removed = total - count_params(shapes, table, counts, names)
    kept = {g.name: keep_highest(scores[g.name], counts[g.name]) for g in groups}
    return Allocation(kept, counts, total, target, removed)


def _global(groups, scores, shapes, names, table, target, k) -> dict[str, int]:  # noqa: ANN001
    counts = {g.name: g.size for g in groups}
    by_name = {g.name: g for g in groups}
    ascending = {g.name: torch.sort(scores[g.name], stable=True).values for g in groups}
    cost = {g.name: max(_unit_params(g, shapes, names), 1) for g in groups}
    tensors = {g.name: sorted({p.tensor for p in g.slices if p.tensor in names}) for g in groups}
    current = {name: count_params(shapes, table, counts, [name]) for name in names}

    def chunk(group: Group) -> tuple[float, str, int] | None:
        count = counts[group.name]
        nxt = _next_count(count, group, k)
        if nxt is None:
            return None
        removed_units = ascending[group.name][group.size - count : group.size - nxt]
        return (float(removed_units.mean()) / cost[group.name], group.name, nxt)

    heap = [c for g in groups if (c := chunk(g)) is not None]
    heapq.heapify(heap)
    removed, previous = 0, (0, dict(counts))
    while removed < target and heap:
        _, name, nxt = heapq.heappop(heap)
        previous = (removed, dict(counts))
        counts[name] = nxt
        for tensor in tensors[name]:
            after = count_params(shapes, table, counts, [tensor])
            removed += current[tensor] - after
            current[tensor] = after
        following = chunk(by_name[name])
        if following is not None:
            heapq.heappush(heap, following)
    if removed - target > target - previous[0]:
        return previous[1]  # the step before was closer to the target
    return counts


def _by_fraction(groups, shapes, table, names, target, k, scope) -> dict[str, int]:  # noqa: ANN001
    """Per-group kept fractions of one shape, scaled by bisection to meet the target."""
    weights = {g.name: _erk_weight(g, shapes) if scope == "erk" else 1.0 for g in groups}
    total = count_params(shapes, table, {}, names)

    def counts_for(scale: float) -> dict[str, int]:
        return {g.name: _rounded(g, min(1.0, scale * weights[g.name]) * g.size, k) for g in groups}

    lo, hi = 0.0, max(1.0 / min(weights.values(), default=1.0), 1.0)
    best = counts_for(hi)
    best_gap = abs(total - count_params(shapes, table, best, names) - target)
    for _ in range(60):
        mid = (lo + hi) / 2
        counts = counts_for(mid)
        removed = total - count_params(shapes, table, counts, names)
        if abs(removed - target) < best_gap:
            best, best_gap = counts, abs(removed - target)
        if removed > target:
            lo = mid
        else:
            hi = mid
    return best


def _erk_weight(group: Group, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """√(Σ dims / Π dims) of the group's producer weights (ERK's density, per channel)."""
    raws = [
        sum(shapes[p.tensor]) / math.prod(shapes[p.tensor])
        for p in group.slices
        if p.dim == 0 and len(shapes[p.tensor]) >= 2
    ]
    return math.sqrt(sum(raws) / len(raws)) if raws else 1.0

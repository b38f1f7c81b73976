"""How many weights each layer keeps: one global budget, the same density per layer, or ERK.

Every scope meets the budget exactly: the total kept is ``N - round(S * N)``. ``row`` is
chosen per row instead (structure/nm.py: ``round(S * row)`` zeros in each row), so its total
may differ from ``round(S * N)`` by the rounding of each row. Per-layer budgets
are rounded by largest remainder (ties to the earlier layer) so they sum to that total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from prunecli.errors import BadInput

SCOPES = ("global", "layer", "erk", "row")


def prune_count(sparsity: float, total: int) -> int:
    """The exact number of zeros for ``sparsity`` over ``total`` weights (round half to even)."""
    return round(sparsity * total)


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel densities (RigL's solver): density_l = eps * sum(shape)/prod(shape).

    Layers whose density would exceed 1 are made dense and eps is solved again over the rest.
    """
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    # an empty tensor keeps nothing (and must not divide by zero)
    raw = {name: sum(shape) / sizes[name] if sizes[name] else 0.0 for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[name] for name in dense)
        divisor = sum(raw[name] * sizes[name] for name in raw if name not in dense)
        eps = budget / divisor if divisor > 0 else 0.0
        too_dense = {name for name in raw if name not in dense and eps * raw[name] > 1.0}
        if not too_dense:
            break
        dense |= too_dense
    return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def round_to_total(
    targets: Mapping[str, float], caps: Mapping[str, int], total: int
) -> dict[str, int]:
    """Integers near ``targets`` within [0, cap] summing to ``total`` (largest remainder)."""
    counts = {name: min(caps[name], max(0, math.floor(value))) for name, value in targets.items()}
    short = total - sum(counts.values())
    order = sorted(targets, key=lambda name: -(targets[name] - math.floor(targets[name])))
    while short > 0:
        progressed = False
        for name in order:
            if short > 0 and counts[name] < caps[name]:
                counts[name] += 1
                short -= 1
                progressed = True
        if not progressed:
            break
    return counts


def keep_counts(
    scope: str, shapes: Mapping[str, Sequence[int]], sparsity: float
) -> dict[str, int] | None:
    """Weights to keep per layer for ``scope``; ``None`` for global (one threshold decides)."""
    if scope not in SCOPES:
        raise BadInput(f"unknown scope {scope!r}", f"choose one of: {', '.join(SCOPES)}")
    if scope in ("global", "row"):  # row: chosen per row by the selection (structure/nm.py)
        return None
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    total_keep = sum(sizes.values()) - prune_count(sparsity, sum(sizes.values()))
    if scope == "layer":
        densities = {name: 1.0 - sparsity for name in shapes}
    else:
        densities = erk_densities(shapes, 1.0 - sparsity)
    targets = {name: densities[name] * sizes[name] for name in shapes}
    return round_to_total(targets, sizes, total_keep)

"""Pruning schedules: the density reached after each of K rounds."""

from __future__ import annotations

from prunecli.errors import BadInput

SCHEDULES = ("exponential", "linear")


def round_densities(density: float, iterations: int, kind: str = "exponential") -> list[float]:
    """Densities after rounds 1..K: ``d^(k/K)`` (exponential, SynFlow's) or linear in k.

    The last entry is always exactly ``density``.
    """
    if iterations < 1:
        raise BadInput(f"--iterations must be at least 1, got {iterations}")
    if kind not in SCHEDULES:
        raise BadInput(f"unknown schedule {kind!r}", f"choose one of: {', '.join(SCHEDULES)}")
    if kind == "exponential":
        steps = [density ** (k / iterations) for k in range(1, iterations)]
    else:
        steps = [1.0 - (1.0 - density) * k / iterations for k in range(1, iterations)]
    return [*steps, density]

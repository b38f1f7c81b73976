"""N:M patterns: in every group of M consecutive weights along a row keep at most N.

A weight is viewed as ``(out_features, -1)`` (a Conv's row is its flattened ``in·kh·kw``), and
its rows are cut into groups of M consecutive entries. ``N`` counts the weights KEPT (2:4 keeps
2 of every 4; Wanda's code counts the pruned ones). The selection keeps the N highest scores of
each group among its live weights; weights that are already zero stay zero, so a group may end
with fewer than N. Ties break as the engine's exact-count selection breaks them
(pruning/select.py): among equal scores the earliest position is pruned first.

The same per-group selection serves ``--scope row``: each row of each tensor is one group that
prunes ``round(S · row)`` of its weights (the engine's ``round(S × N)`` per row).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prunecli.errors import BadInput

#: the largest M: wider groups are no hardware pattern, and --scope row covers whole rows
MAX_M = 64
_CHUNK = 1 << 22  # entries sorted at once: keeps the index buffers at a few tens of MB


@dataclass(frozen=True)
class Pattern:
    n: int  # weights kept per group
    m: int  # group size

    @property
    def sparsity(self) -> float:
        return (self.m - self.n) / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def parse_pattern(text: str) -> Pattern:
    """``"2:4"`` → Pattern(2, 4); N must be 1..M−1 and M at most :data:`MAX_M`."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if match is None:
        raise BadInput(f"--pattern {text!r} is not N:M", "write e.g. 2:4 (keep 2 of every 4)")
    n, m = int(match.group(1)), int(match.group(2))
    if m < 2 or m > MAX_M:
        raise BadInput(f"--pattern {text}: M must be 2 to {MAX_M}, got {m}", "e.g. 2:4 or 4:8")
    if n == m:
        raise BadInput(f"--pattern {text} keeps every weight: nothing would be pruned")
    if not 1 <= n < m:
        raise BadInput(
            f"--pattern {text}: N (the weights kept per group of M) must be 1 to {m - 1}",
            "e.g. 2:4 keeps 2 of every 4",
        )
    return Pattern(n, m)


def row_size(shape: Sequence[int]) -> int:
    """Entries per row of a weight viewed as ``(out_features, -1)``."""
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[1:])


def check_shapes(shapes: Mapping[str, Sequence[int]], pattern: Pattern) -> None:
    """Refuse a tensor whose rows do not split into groups of M, naming it."""
    for name, shape in shapes.items():
        size = row_size(shape)
        if size % pattern.m:
            raise BadInput(
                f"--pattern {pattern}: {name!r} has rows of {size} inputs, not a multiple of "
                f"{pattern.m}",
                "leave it out with --exclude, or pick an M that divides it",
            )


def prune_in_groups(
    score: torch.Tensor, alive: torch.Tensor, size: int, prune: int
) -> torch.Tensor:
    """Keep-mask: in each run of ``size`` consecutive entries (flat order) prune the ``prune``
    lowest-scoring live ones, earliest first among equal scores; dead entries stay dead (and
    count towards ``prune``). Live scores must be finite."""
    numel = score.numel()
    keep = torch.zeros(numel, dtype=torch.bool, device=score.device)
    if numel == 0 or size == 0:
        return keep.reshape(score.shape)
    dtype = torch.float64 if score.dtype == torch.float64 else torch.float32
    flat_score, flat_alive = score.detach().reshape(-1), alive.reshape(-1)
    step = max(1, _CHUNK // size) * size
    ranks = torch.arange(size, device=score.device)
    with torch.no_grad():
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            live = flat_alive[start:stop].reshape(-1, size)
            values = flat_score[start:stop].to(dtype).reshape(-1, size)
            values = values.masked_fill(~live, -math.inf)  # the dead sort first
            order = torch.sort(values, dim=1, stable=True).indices
            cut = (~live).sum(dim=1, keepdim=True).clamp(min=prune)
            kept = torch.empty_like(live)
            kept.scatter_(1, order, ranks >= cut)
            keep[start:stop] = (kept & live).reshape(-1)
    return keep.reshape(score.shape)


def nm_keep(
    score: torch.Tensor, alive: torch.Tensor, pattern: Pattern, prune: int | None = None
) -> torch.Tensor:
    """The N:M keep-mask of one tensor (``prune``: per group, default M − N)."""
    prune = pattern.m - pattern.n if prune is None else prune
    return prune_in_groups(score, alive, pattern.m, prune)


def row_keep(score: torch.Tensor, alive: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Each row keeps ``row − round(S · row)`` of its weights (``--scope row``)."""
    size = row_size(tuple(score.shape))
    return prune_in_groups(score, alive, size, round(sparsity * size))


def round_prune(pattern: Pattern, sparsity: float, last: bool) -> int:
    """Per group, how many a round at ``sparsity`` prunes: M − N in the last round; before it
    ``round(S · M)`` (an iterative schedule tightens every group step by step)."""
    if last:
        return pattern.m - pattern.n
    return min(pattern.m - pattern.n, round(sparsity * pattern.m))


def keep_keys(keys: np.ndarray, pattern: Pattern) -> np.ndarray:
    """The N:M keep-mask of a chunk of streaming keys (unsigned, ordered as the scores; 0 =
    already zero), whole groups in flat order: the same choice as :func:`nm_keep`."""
    groups = keys.reshape(-1, pattern.m)
    order = np.argsort(groups, axis=1, kind="stable")
    kept = np.empty(groups.shape, dtype=np.bool_)
    ranks = np.arange(pattern.m) >= pattern.m - pattern.n
    np.put_along_axis(kept, order, np.broadcast_to(ranks, groups.shape), axis=1)
    kept &= groups != 0
    return kept.reshape(-1)


@dataclass(frozen=True)
class Compliance:
    name: str
    groups: int  # groups of M in the tensor (0 when not checkable)
    broken: int  # groups holding more than N non-zeros
    checkable: bool  # False: its rows are not a multiple of M

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "groups": self.groups,
            "broken": self.broken,
            "checkable": self.checkable,
        }


def compliance(name: str, tensor: torch.Tensor, pattern: Pattern) -> Compliance:
    """How many of the tensor's groups of M hold more than N non-zeros (−0.0 is a zero)."""
    if row_size(tuple(tensor.shape)) % pattern.m:
        return Compliance(name, 0, 0, False)
    counts = (tensor.reshape(-1, pattern.m) != 0).sum(dim=1)
    return Compliance(name, counts.numel(), int((counts > pattern.n).sum()), True)


def count_broken(nonzero: np.ndarray, pattern: Pattern) -> int:
    """Groups of a flat chunk of non-zero flags (whole groups) holding more than N."""
    return int(np.count_nonzero(nonzero.reshape(-1, pattern.m).sum(axis=1) > pattern.n))

"""Exact-count mask selection: prune the ``n`` lowest-scoring live weights across many tensors.

The selection is a radix select over order-preserving integer keys of the scores, so it never
concatenates or sorts all scores: memory stays at one tensor's temporaries however large the model.
Ties at the threshold are broken by position (tensor order, then flat index): the earliest go first,
so the same inputs always give the same masks. Weights that are already zero stay pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

_DIGIT_BITS = 16
_CHUNK = 1 << 22  # elements per temporary: keeps key/index buffers at a few tens of MB


class LazyScores(Mapping[str, torch.Tensor]):
    """Scores computed on access (e.g. ``|w|``), so large models never hold a second copy."""

    def __init__(self, names: Sequence[str], compute: Callable[[str], torch.Tensor]) -> None:
        self._names = list(names)
        self._compute = compute

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._compute(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True)
class _Threshold:
    key: int  # the key of the n-th smallest live score
    ties_to_prune: int  # how many live scores equal to ``key`` are pruned (earliest first)


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Signed integers that sort exactly as the float scores do (IEEE bit trick)."""
    if scores.dtype == torch.float64:
        bits = scores.contiguous().view(torch.int64)
        keys = bits ^ ((bits >> 63) & 0x7FFF_FFFF_FFFF_FFFF)
    else:
        bits = scores.to(torch.float32).contiguous().view(torch.int32)
        keys = bits ^ ((bits >> 31) & 0x7FFF_FFFF)
    # -0.0 maps to -1 (no other float does): make it equal +0.0 so the two tie, as floats do
    return keys.masked_fill_(keys == -1, 0)


def _key_bits(scores: Mapping[str, torch.Tensor]) -> int:
    return 64 if any(scores[name].dtype == torch.float64 for name in scores) else 32


def _live_keys(score: torch.Tensor, alive: torch.Tensor, bits: int) -> Iterator[torch.Tensor]:
    """Yield the keys of live entries chunk by chunk (flat order)."""
    flat_score = score.reshape(-1)
    flat_alive = alive.reshape(-1)
    for start in range(0, flat_score.numel(), _CHUNK):
        chunk = flat_score[start : start + _CHUNK]
        if bits == 64:
            chunk = chunk.to(torch.float64)
        keys = order_keys(chunk)
        live = flat_alive[start : start + _CHUNK]
        yield keys if bool(live.all()) else keys[live]  # indexing copies: skip it when it can


def _find_threshold(
    scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], n: int
) -> _Threshold:
    """Radix select: the key of the ``n``-th smallest live score (1-based), 16 bits at a time."""
    bits = _key_bits(scores)
    high: int | None = None  # signed value of the wanted key's bits above the current digit
    rank = n  # rank of the wanted key among the live keys that share ``high``
    for shift in range(bits - _DIGIT_BITS, -1, -_DIGIT_BITS):
        counts = torch.zeros(1 << _DIGIT_BITS, dtype=torch.int64)
        for name in scores:
            for keys in _live_keys(scores[name], alive[name], bits):
                if high is None:  # top digit: signed, offset into [0, 2^16)
                    digits = (keys >> shift) + (1 << (_DIGIT_BITS - 1))
                else:
                    keys = keys[(keys >> (shift + _DIGIT_BITS)) == high]
                    digits = (keys >> shift) & ((1 << _DIGIT_BITS) - 1)
                counts += torch.bincount(digits.reshape(-1), minlength=1 << _DIGIT_BITS)
        cumulative = torch.cumsum(counts, 0)
        digit = int(torch.searchsorted(cumulative, rank))
        rank -= int(cumulative[digit - 1]) if digit > 0 else 0
        if high is None:
            high = digit - (1 << (_DIGIT_BITS - 1))
        else:
            high = (high << _DIGIT_BITS) | digit
    assert high is not None
    return _Threshold(key=high, ties_to_prune=rank)


def prune_lowest(
    scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], n: int
) -> dict[str, torch.Tensor]:
    """Keep-masks after pruning the ``n`` lowest-scoring live entries over all of ``scores``.

    ``alive`` holds the current masks (True = kept); dead entries stay dead whatever their score.
    Scores must be finite. ``n`` is clipped to the number of live entries.
    """
    live_total = sum(int(alive[name].sum()) for name in scores)
    n = max(0, min(n, live_total))
    if n == 0:
        return {name: alive[name].clone() for name in scores}
    threshold = _find_threshold(scores, alive, n)
    bits = _key_bits(scores)
    ties_left = threshold.ties_to_prune
    masks: dict[str, torch.Tensor] = {}
    for name in scores:
        score, live = scores[name], alive[name]
        flat = score.reshape(-1).to(torch.float64) if bits == 64 else score.reshape(-1)
        keys = order_keys(flat)
        keep = live.reshape(-1) & (keys >= threshold.key)
        if ties_left > 0:
            tie_positions = torch.nonzero(keep & (keys == threshold.key)).reshape(-1)
            take = tie_positions[:ties_left]
            keep[take] = False
            ties_left -= take.numel()
        masks[name] = keep.reshape(score.shape)
    return masks

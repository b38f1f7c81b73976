"""Exact-count mask selection: prune the ``n`` lowest-scoring live weights across many tensors.

The selection never concatenates or sorts all scores. It samples the live scores, takes a band
of values around the wanted rank from the sample, and in one pass over the tensors counts the
scores below the band, marks those above it as kept and gathers those inside it; the exact
threshold is then found within the band. A band that misses (the sample misled) falls back to a
radix select over order-preserving integer keys, so the result never depends on the sample.
Besides the masks it returns, memory holds at most one byte per weight more (the live masks of
partly pruned tensors, as ``alive`` may be computed on access), the gathered live entries of
mostly pruned tensors, a sample and a band — never a copy of all scores.
Ties at the threshold are broken by position (tensor order, then flat index): the earliest go first,
so the same inputs always give the same masks. Weights that are already zero stay pruned.
"""

from __future__ import annotations

import math
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

    Two passes over the scores: count the live entries of each tensor (gathering them when few
    are left, as in late rounds of an iterative schedule) and sample their scores at random;
    then split the live scores at a band [low, high] around the wanted rank, taken from the
    sample — below (pruned), above (kept), inside (gathered) — and settle the band exactly.
    If the sample misled, the band misses the rank and a radix select finds it: the result
    never depends on the sample.
    """
    with torch.no_grad():  # scores may come straight from autograd
        return _prune_lowest(scores, alive, n)


def _prune_lowest(
    scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], n: int
) -> dict[str, torch.Tensor]:
    names = list(scores)
    dtype = _compare_dtype(scores)
    live, sample = _survey(scores, alive, names, dtype)
    live_total = sum(entry.count for entry in live.values())
    n = max(0, min(n, live_total))
    if n == 0:
        return {name: alive[name].clone() for name in names}
    if n == live_total:
        return {name: _dead(entry) for name, entry in live.items()}
    split = _split_at_band(scores, live, _pivots(sample, n, live_total), n, dtype)
    if split is not None:
        return _settle_band(split, live)
    found = _find_threshold(scores, alive, n)
    cut = _Cut(_key_value(found.key, _key_bits(scores)), found.ties_to_prune)
    return _write_masks(scores, live, cut, dtype)


_SAMPLE = 1 << 16  # sampled scores when every entry is live (fewer as entries die)
_BAND_LIMIT = 1 << 22  # most band entries gathered before giving up on the sample
_GATHER = 0.25  # gather a tensor's live entries when at most this fraction is live


@dataclass(frozen=True)
class _Cut:
    value: float  # the n-th smallest live score
    ties_to_prune: int  # how many live scores equal to ``value`` are pruned (earliest first)


@dataclass
class _Live:
    """The live entries of one tensor: their count, and either their flat mask (kept when some
    but not all are live: ``alive`` may be computed on access) or, when few, their positions
    and scores."""

    count: int
    shape: torch.Size
    device: torch.device
    mask: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # flat indices, ascending
    values: torch.Tensor | None = None  # their scores, in the comparison dtype


@dataclass
class _Split:
    """Live scores split at a band: flat keep-masks of those above it, and the band's entries
    (flat positions, ascending within each tensor, tensors in order) with the cut inside it."""

    keep: dict[str, torch.Tensor]
    band: list[tuple[str, torch.Tensor]]
    cut: _Cut
    band_values: list[torch.Tensor] | None  # None: every band score equals the cut's value


def _dead(entry: _Live) -> torch.Tensor:
    return torch.zeros(entry.shape, dtype=torch.bool, device=entry.device)


def _compare_dtype(scores: Mapping[str, torch.Tensor]) -> torch.dtype:
    """One floating type that holds every score exactly (as order_keys: fp16/bf16 → fp32)."""
    return torch.float64 if _key_bits(scores) == 64 else torch.float32


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)


def _survey(
    scores: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    names: list[str],
    dtype: torch.dtype,
) -> tuple[dict[str, _Live], torch.Tensor]:
    """Live entries per tensor, and the sorted scores of a random sample of them.

    Random positions (from a fixed seed), one in ``total / _SAMPLE`` of every tensor's entries:
    a strided sample can fall in step with a layout, e.g. always the same entry of 3x3 kernels.
    """
    rate = _SAMPLE / max(1, sum(scores[name].numel() for name in names))
    generator = torch.Generator().manual_seed(0)
    live: dict[str, _Live] = {}
    picked = []
    for name in names:
        full = alive[name]  # may be computed on access: once per call
        mask = _flat(full)
        entry = _Live(int(mask.count_nonzero()), full.shape, mask.device)
        live[name] = entry
        size = mask.numel()
        if not entry.count:
            continue
        if entry.count <= _GATHER * size:
            entry.positions = torch.nonzero(mask).reshape(-1)
            entry.values = _flat(scores[name])[entry.positions].to(dtype)
            draws = min(entry.count, math.ceil(entry.count * rate))
            where = torch.randint(entry.count, (draws,), generator=generator)
            picked.append(entry.values[where.to(entry.values.device)])
        else:
            entry.mask = mask if entry.count < size else None
            draws = min(size, math.ceil(size * rate))
            where = torch.randint(size, (draws,), generator=generator).to(mask.device)
            where = where[mask[where]]
            picked.append(_flat(scores[name])[where].to(dtype))
    sample = torch.cat(picked).cpu() if picked else torch.empty(0, dtype=dtype)
    return live, torch.sort(sample).values


def _pivots(sample: torch.Tensor, n: int, live_total: int) -> tuple[float, float]:
    """A band [low, high] of score values holding the ``n``-th smallest live score, most likely."""
    m = sample.numel()
    q = n / live_total
    margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 16.0  # sample ranks: several standard errors
    low_rank, high_rank = math.floor(q * m - margin), math.ceil(q * m + margin)
    low = float(sample[low_rank]) if low_rank >= 0 else -math.inf
    high = float(sample[high_rank]) if high_rank < m else math.inf
    return low, high


def _split_tensor(
    values: torch.Tensor, mask: torch.Tensor | None, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(above high, inside [low, high], how many below low) among the live ``values``."""
    above = values > high
    under = values < low
    if mask is not None:
        above &= mask
        under &= mask
    inside = above | under  # each live entry is in exactly one of the three
    if mask is None:
        inside.logical_not_()
    else:
        inside ^= mask
    return above, inside, int(under.count_nonzero())


def _split_at_band(
    scores: Mapping[str, torch.Tensor],
    live: Mapping[str, _Live],
    band: tuple[float, float],
    n: int,
    dtype: torch.dtype,
) -> _Split | None:
    """The live scores split at ``band``, or None when it misses the ``n``-th smallest or holds
    too many scores."""
    low, high = band
    equal = low == high  # a band of equal scores (e.g. many zeros): positions are enough
    below = 0
    keep: dict[str, torch.Tensor] = {}
    positions: list[tuple[str, torch.Tensor]] = []
    values: list[torch.Tensor] = []
    band_size = 0
    for name, entry in live.items():
        if not entry.count:
            continue
        if entry.values is not None and entry.positions is not None:
            above, inside, under = _split_tensor(entry.values, None, low, high)
            flat = torch.zeros(math.prod(entry.shape), dtype=torch.bool, device=entry.device)
            keep[name] = flat.index_fill_(0, entry.positions[above], True)
            where = entry.positions[inside]
            chunks = [(where, entry.values[inside])] if not equal else [(where, None)]
        else:
            score = _flat(scores[name])
            parts, chunks, under = [], [], 0
            for start in range(0, score.numel(), _CHUNK):
                mask = None if entry.mask is None else entry.mask[start : start + _CHUNK]
                chunk = score[start : start + _CHUNK].to(dtype)
                above, inside, count = _split_tensor(chunk, mask, low, high)
                parts.append(above)
                under += count
                where = torch.nonzero(inside).reshape(-1)
                chunks.append((where + start, None if equal else chunk[where]))
            keep[name] = parts[0] if len(parts) == 1 else torch.cat(parts)
        below += under
        for where, chunk_values in chunks:
            band_size += where.numel()
            if not equal and band_size > _BAND_LIMIT:
                return None
            positions.append((name, where))
            if chunk_values is not None:
                values.append(chunk_values)
    rank = n - below  # 1-based rank of the wanted score within the band
    if not 1 <= rank <= band_size:
        return None
    if equal:
        return _Split(keep, positions, _Cut(low, rank), None)
    band_values = torch.cat(values)
    value = float(torch.kthvalue(band_values.cpu(), rank).values)
    cut = _Cut(value, rank - int((band_values < value).count_nonzero()))
    return _Split(keep, positions, cut, values)


def _settle_band(split: _Split, live: Mapping[str, _Live]) -> dict[str, torch.Tensor]:
    """Keep the band's entries above the cut, and those equal to it after the first
    ``ties_to_prune`` (in tensor, then position order)."""
    ties_left = split.cut.ties_to_prune
    value = split.cut.value
    for index, (name, where) in enumerate(split.band):
        if split.band_values is None:
            ties = where
        else:
            chunk = split.band_values[index]
            split.keep[name].index_fill_(0, where[chunk > value], True)
            ties = where[chunk == value]
        take = min(ties_left, ties.numel())
        split.keep[name].index_fill_(0, ties[take:], True)
        ties_left -= take
    return {
        name: split.keep[name].reshape(entry.shape) if entry.count else _dead(entry)
        for name, entry in live.items()
    }


def _key_value(key: int, bits: int) -> float:
    """The float whose order key is ``key`` (inverse of order_keys)."""
    if bits == 64:
        raw = key if key >= 0 else key ^ 0x7FFF_FFFF_FFFF_FFFF
        return float(torch.tensor(raw, dtype=torch.int64).view(torch.float64))
    raw = key if key >= 0 else key ^ 0x7FFF_FFFF
    return float(torch.tensor(raw, dtype=torch.int32).view(torch.float32))


def _write_masks(
    scores: Mapping[str, torch.Tensor], live: Mapping[str, _Live], cut: _Cut, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Keep live scores above the cut's value; of those equal to it, prune the first ones."""
    masks: dict[str, torch.Tensor] = {}
    value, ties_left = cut.value, cut.ties_to_prune
    for name, entry in live.items():
        if not entry.count:
            masks[name] = _dead(entry)
            continue
        if entry.positions is not None and entry.values is not None:
            keep = torch.zeros(math.prod(entry.shape), dtype=torch.bool, device=entry.device)
            keep.index_fill_(0, entry.positions[entry.values >= value], True)
            ties = entry.positions[entry.values == value] if ties_left > 0 else None
        else:
            score = _flat(scores[name]).to(dtype)
            keep = score >= value
            if entry.mask is not None:
                keep &= entry.mask
            ties = torch.nonzero(keep & (score == value)).reshape(-1) if ties_left > 0 else None
        if ties is not None:
            take = ties[:ties_left]  # ascending flat positions: the earliest go first
            keep.index_fill_(0, take, False)
            ties_left -= take.numel()
        masks[name] = keep.reshape(entry.shape)
    return masks

"""Exact-count selection over tensors read chunk by chunk from disk (weights-only criteria).

Each prunable entry gets an unsigned integer *key* that sorts as its score does, 0 meaning a
zero weight (dead: it stays pruned). For magnitude the key is the weight's bit pattern with the
sign bit cleared — IEEE-like formats order |x| as they order those bits — so nothing is
converted when every prunable tensor has the same dtype; mixed dtypes compare as float32 bits
(float64 when one of them is float64), as the in-memory path does. For random the key is the
float32 score's bits plus one where the weight is alive, the scores drawn tensor by tensor
exactly as ``criteria/random.py`` draws them.

A *pool* is the set of tensors that share one threshold: all prunable tensors for
``--scope global``, one tensor each for ``layer`` and ``erk``. Its threshold is the ``rank``-th
smallest key, ``rank`` being the number of zeros wanted (dead keys, 0, are the smallest). It is
found without holding the keys: a sample gives a band of keys likely to hold the rank; one pass
counts the keys below the band and histograms those inside it (at most 2^16 buckets); each
further pass narrows the band to one bucket until a bucket is one key wide. A band that misses
(the sample misled) is widened to every key, so the result never depends on the sample. Ties at
the threshold are pruned earliest first (tensor order, then flat index), as ``pruning/select.py``
breaks them — the two paths give identical masks. With ``--pattern N:M`` a pool has no threshold:
each chunk (whole groups of M) keeps the N highest keys of every group (structure/nm.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from prunecli.io import safetensors as st
from prunecli.io.checkpoint import Shard
from prunecli.structure.nm import Pattern

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_ABS = {1: 0x7F, 2: 0x7FFF, 4: 0x7FFF_FFFF, 8: 0x7FFF_FFFF_FFFF_FFFF}
# the smallest key of a non-finite value, per dtype (e4m3fn has no infinity: 0x7F is NaN)
_NONFINITE = {
    "F8_E4M3": 0x7F,
    "F8_E5M2": 0x7C,
    "F16": 0x7C00,
    "BF16": 0x7F80,
    "F32": 0x7F80_0000,
    "F64": 0x7FF0_0000_0000_0000,
}
FLOATS = tuple(_NONFINITE)
_DIGIT_BITS = 16
SAMPLE = 1 << 16  # sampled keys per pool
_BLOCK = 64  # contiguous elements per sampled block


@dataclass(frozen=True)
class Item:
    """One prunable tensor of a checkpoint, where its bytes are."""

    name: str
    shard: Shard
    entry: st.TensorEntry
    index: int  # position among the prunable tensors (random draws one stream per tensor)

    @property
    def dtype(self) -> str:
        return self.entry.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.entry.shape)

    @property
    def itemsize(self) -> int:
        return st.DTYPES[self.entry.dtype].itemsize

    @property
    def offset(self) -> int:
        return self.shard.header.data_start + self.entry.begin


def _fp8_table(dtype: str, bits: int) -> np.ndarray:
    """Float bits of |x| for all 256 patterns of an fp8 dtype."""
    import torch

    values = torch.arange(256, dtype=torch.uint8).view(st.DTYPES[dtype]).float().abs()
    if bits == 64:
        return values.double().numpy().view(np.uint64)
    return values.numpy().view(np.uint32)


class KeySpace:
    """How raw weight bytes become keys for one set of prunable dtypes."""

    def __init__(self, dtypes: set[str], random: bool = False) -> None:
        self.random = random
        if random:
            self.bits = 32
            self.native = False
        elif len(dtypes) == 1:
            self.native = True
            self.bits = st.DTYPES[next(iter(dtypes))].itemsize * 8
        else:
            self.native = False
            self.bits = 64 if "F64" in dtypes else 32
        self.dtype = _UINT[self.bits // 8]
        self.max_key = (1 << (self.bits - 1)) - 1 if not random else (1 << 32) - 1
        self._tables: dict[str, np.ndarray] = {}

    def weight_keys(self, raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
        """Keys of |w| in this space (magnitude); ``raw`` holds the weights' bytes."""
        size = st.DTYPES[dtype].itemsize
        if self.native or (size * 8 == self.bits and dtype in ("F32", "F64")):
            words = raw.view(_UINT[size])
            return np.bitwise_and(words, _ABS[size], out=out if out is not None else None)
        if dtype.startswith("F8"):
            if dtype not in self._tables:
                self._tables[dtype] = _fp8_table(dtype, self.bits)
            return self._tables[dtype][raw]
        if dtype == "BF16" and self.bits == 32:
            keys = np.bitwise_and(raw.view(np.uint16), 0x7FFF).astype(np.uint32)
            return np.left_shift(keys, 16, out=keys)
        if dtype == "BF16":
            as32 = np.left_shift(raw.view(np.uint16).astype(np.uint32), 16)
            values = as32.view(np.float32)
        else:
            values = raw.view({"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype])
        wide = np.float64 if self.bits == 64 else np.float32
        return np.abs(values.astype(wide)).view(self.dtype)

    def keys(
        self, raw: np.ndarray, dtype: str, scores: np.ndarray | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Keys of a chunk; ``out`` (same width as the keys) may receive them."""
        if not self.random:
            return self.weight_keys(raw, dtype, out)
        size = st.DTYPES[dtype].itemsize
        alive = np.bitwise_and(raw.view(_UINT[size]), _ABS[size]) != 0
        keys = scores.view(np.uint32) + np.uint32(1)
        keys *= alive
        return keys

    def finite(self, raw: np.ndarray, dtype: str, keys: np.ndarray) -> bool:
        if keys.size == 0:
            return True
        if self.random or self.native:
            size = st.DTYPES[dtype].itemsize
            own = keys if not self.random else np.bitwise_and(raw.view(_UINT[size]), _ABS[size])
            return int(own.max()) < _NONFINITE[dtype]
        return int(keys.max()) < _NONFINITE["F64" if self.bits == 64 else "F32"]


@dataclass
class Pool:
    """Tensors sharing one threshold, and how far the search for it has come."""

    members: list[Item]
    rank: int  # the number of zeros wanted: the rank-th smallest key is the threshold
    lo: int = 0
    hi: int = 0
    below: int = 0  # keys < lo seen by the current pass
    zeros: int = 0  # dead entries (counted by the first pass)
    hist: np.ndarray | None = None
    threshold: int | None = None  # keys >= threshold are kept...
    ties: int = 0  # ...but the first ``ties`` keys equal to it (in order) are pruned
    pattern: Pattern | None = None  # N:M within each group instead of a threshold
    _scanned: int = field(default=0, repr=False)

    @property
    def size(self) -> int:
        return sum(item.numel for item in self.members)

    @property
    def shift(self) -> int:
        return max(0, (self.hi - self.lo).bit_length() - _DIGIT_BITS)

    @property
    def buckets(self) -> int:
        return ((self.hi - self.lo) >> self.shift) + 1

    @property
    def zeros_after(self) -> int:
        return max(self.zeros, self.rank)

    def start_pass(self) -> None:
        self.below = 0
        self.hist = np.zeros(self.buckets, dtype=np.int64)

    def settle(self, max_key: int) -> None:
        """After a pass: narrow the band to the bucket holding the rank, or widen it on a miss."""
        assert self.hist is not None
        if self.rank <= self.zeros:  # nothing left to prune: keep every live weight
            self.threshold, self.ties, self.hist = 1, 0, None
            return
        cumulative = np.cumsum(self.hist)
        need = self.rank - self.below
        if not 1 <= need <= int(cumulative[-1]):
            self.lo, self.hi = 0, max_key  # the sample misled: search every key
            return
        bucket = int(np.searchsorted(cumulative, need))
        self.below += int(cumulative[bucket - 1]) if bucket else 0
        shift = self.shift
        self.lo += bucket << shift
        self.hi = min(self.hi, self.lo + (1 << shift) - 1)
        if shift == 0:
            self.threshold, self.ties = self.lo, self.rank - self.below
            self.hist = None


def scan_chunk(pool: Pool, keys: np.ndarray, flags: np.ndarray) -> tuple[int, np.ndarray]:
    """(keys below the band, histogram of the band's keys) for one chunk; ``keys`` is consumed
    and ``flags`` (bool, same size) is scratch space."""
    width = pool.hi - pool.lo
    below = int(np.count_nonzero(np.less(keys, pool.lo, out=flags))) if pool.lo else 0
    offset = np.subtract(keys, keys.dtype.type(pool.lo), out=keys)  # below lo wraps above
    inside = offset[np.less_equal(offset, width, out=flags)]
    if pool.shift:
        inside >>= pool.shift
    if inside.dtype.itemsize == 8:  # bincount takes no uint64; band offsets are small by now
        inside = inside.astype(np.int64)
    return below, np.bincount(inside, minlength=pool.buckets)


def sample_band(pool: Pool, sample: np.ndarray, max_key: int) -> None:
    """A band of keys that most likely holds the rank-th smallest, from sorted sampled keys."""
    m, total = sample.size, pool.size
    if m == 0 or total == 0 or pool.rank == 0:
        pool.lo, pool.hi = 0, 0 if pool.rank == 0 else max_key
        return
    q = pool.rank / total
    margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 16.0
    low, high = math.floor(q * m - margin), math.ceil(q * m + margin)
    pool.lo = int(sample[low]) if low >= 0 else 0
    pool.hi = int(sample[high]) if high < m else max_key


def sample_positions(item: Item, rate: float, seed: int) -> Iterator[tuple[int, int]]:
    """(first element, count) of the blocks sampled from ``item``: random, fixed by ``seed``."""
    wanted = min(item.numel, math.ceil(item.numel * rate))
    blocks = max(1, wanted // _BLOCK)
    rng = np.random.default_rng([seed, item.index])
    if item.numel <= _BLOCK * blocks:
        yield 0, item.numel
        return
    for start in np.sort(rng.integers(0, item.numel - _BLOCK, size=blocks)):
        yield int(start), _BLOCK


def chunks(numel: int, per_chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, per_chunk):
        yield start, min(per_chunk, numel - start)

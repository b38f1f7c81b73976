"""The passes of streaming pruning: chunks read by a thread pool, keys, thresholds, output bytes.

NumPy releases the GIL in its kernels and ``pread`` does too, so a small pool of threads keeps
both cores busy; results are consumed in order, a bounded number ahead, so memory holds a few
chunks per worker and never a whole tensor of scores.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.errors import BadInput
from prunecli.io.inputs import read_into
from prunecli.streaming.select import (
    SAMPLE,
    Item,
    KeySpace,
    Pool,
    chunks,
    sample_band,
    sample_positions,
    scan_chunk,
)
from prunecli.structure.nm import Pattern, keep_keys

CHUNK_BYTES = 8 << 20
ByteProgress = Callable[[int], None]  # called with the bytes just processed


@dataclass
class Reader:
    """Open file descriptors of a checkpoint's shards, and the worker pool."""

    pool: ThreadPoolExecutor
    handles: dict[Path, int]
    spare: list = field(default_factory=list)  # chunk buffers to reuse (list ops are atomic)

    def read(self, item_path: Path, offset: int, nbytes: int) -> np.ndarray:
        buffer = self._buffer(nbytes)
        read_into(self.handles[item_path], offset, memoryview(buffer))
        return buffer

    def _buffer(self, nbytes: int) -> np.ndarray:
        spare = self.spare if nbytes == CHUNK_BYTES else None
        if spare:
            return spare.pop()
        return np.empty(nbytes, dtype=np.uint8)

    def recycle(self, buffer: np.ndarray) -> None:
        """Give back a chunk buffer once its bytes are written, for a later read to reuse."""
        if buffer.nbytes == CHUNK_BYTES and len(self.spare) < 4 * (self.pool._max_workers + 2):  # noqa: SLF001
            self.spare.append(buffer)

    def ordered(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*task)`` for every task, run ahead on the pool, yielded in order."""
        depth = 2 * (self.pool._max_workers + 1)  # noqa: SLF001 - the pool's own size
        pending: deque[Future] = deque()
        for task in tasks:
            pending.append(self.pool.submit(fn, *task))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def open_reader(paths: Iterable[Path], workers: int | None = None) -> Iterator[Reader]:
    handles: dict[Path, int] = {}
    count = workers or min(4, os.cpu_count() or 1)
    try:
        for path in paths:
            if path not in handles:
                handles[path] = os.open(path, os.O_RDONLY)
        with ThreadPoolExecutor(max_workers=count) as pool:
            yield Reader(pool, handles)
    finally:
        for handle in handles.values():
            os.close(handle)


class Scores:
    """Random scores of one tensor, drawn in order chunk by chunk (the same stream as in memory)."""

    def __init__(self, seed: int, item: Item) -> None:
        import torch

        from prunecli.pruning.seeding import stream_seed

        self._torch = torch
        self._generator = torch.Generator().manual_seed(stream_seed(seed, 0, item.index))

    def next(self, count: int) -> np.ndarray:
        torch = self._torch
        return torch.rand(count, generator=self._generator, dtype=torch.float32).numpy()


def per_chunk(item: Item, group: int = 1) -> int:
    """Entries per chunk: a multiple of 8 (whole bitmask bytes) and of ``group`` (N:M)."""
    step = math.lcm(8, group)
    return max(step, CHUNK_BYTES // item.itemsize // step * step)


def item_tasks(item: Item, space: KeySpace, seed: int, group: int = 1) -> Iterator[tuple]:
    scores = Scores(seed, item) if space.random else None
    for start, count in chunks(item.numel, per_chunk(item, group)):
        yield item, start, count, scores.next(count) if scores else None


def _keys(
    reader: Reader, space: KeySpace, item: Item, start: int, count: int, scores: Any
) -> tuple[np.ndarray, np.ndarray]:
    raw = reader.read(item.shard.path, item.offset + start * item.itemsize, count * item.itemsize)
    keys = space.keys(raw, item.dtype, scores, _scratch("keys", count, space.dtype))
    if not space.finite(raw, item.dtype, keys):
        raise BadInput(
            f"tensor {item.name!r} contains NaN or inf values; prunecli cannot rank them"
        )
    return raw, keys


def find_thresholds(
    reader: Reader,
    space: KeySpace,
    pools: list[Pool],
    seed: int,
    progress: ByteProgress | None = None,
) -> None:
    """Settle every pool's threshold: a sampled band, then passes until each is exact."""
    for pool in pools:
        if space.random:
            pool.lo, pool.hi = 0, 0 if pool.rank == 0 else space.max_key
        else:
            sample_band(pool, _sample(reader, space, pool), space.max_key)
    first = True
    while True:
        todo = [pool for pool in pools if pool.threshold is None]
        if not todo:
            return
        _scan(reader, space, todo, seed, first, progress if first else None)
        first = False


def count_pattern(
    reader: Reader,
    space: KeySpace,
    pools: list[Pool],
    seed: int,
    progress: ByteProgress | None = None,
) -> None:
    """N:M pools (one tensor each): one pass counts the zeros before (``zeros``) and after
    (``rank``) the pattern, for the metadata and warnings written before the tensors."""
    for pool in pools:
        assert pool.pattern is not None
        pattern = pool.pattern

        def work(
            item: Item, start: int, count: int, scores: Any, pattern: Pattern = pattern
        ) -> tuple[int, int, int]:
            raw, keys = _keys(reader, space, item, start, count, scores)
            kept = int(np.count_nonzero(keep_keys(keys, pattern)))
            dead = count - int(np.count_nonzero(keys))
            reader.recycle(raw)
            return count, kept, dead

        pool.zeros = pool.rank = 0
        for item in pool.members:
            tasks = item_tasks(item, space, seed, pattern.m)
            for count, kept, dead in reader.ordered(work, tasks):
                pool.zeros += dead
                pool.rank += count - kept
                if progress:
                    progress(count * item.itemsize)


def _sample(reader: Reader, space: KeySpace, pool: Pool) -> np.ndarray:
    rate = SAMPLE / max(1, pool.size)
    picked = []
    for item in pool.members:
        for start, count in sample_positions(item, rate, item.index):
            picked.append(_keys(reader, space, item, start, count, None)[1].copy())
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=space.dtype)


def _scan(
    reader: Reader,
    space: KeySpace,
    pools: list[Pool],
    seed: int,
    first: bool,
    progress: ByteProgress | None,
) -> None:
    owner = {id(item): pool for pool in pools for item in pool.members}

    def work(item: Item, start: int, count: int, scores: Any) -> tuple[Item, int, int, Any, int]:
        raw, keys = _keys(reader, space, item, start, count, scores)
        live = int(np.count_nonzero(keys)) if first else count
        below, hist = scan_chunk(owner[id(item)], keys, _scratch("flags", count, np.bool_))
        reader.recycle(raw)
        return item, count, below, hist, live

    for pool in pools:
        pool.start_pass()
        if first:
            pool.zeros = 0
    tasks = (
        task for pool in pools for item in pool.members for task in item_tasks(item, space, seed)
    )
    for item, count, below, hist, live in reader.ordered(work, tasks):
        pool = owner[id(item)]
        pool.below += below
        pool.hist += hist
        pool.zeros += count - live if first else 0
        if progress:
            progress(count * item.itemsize)
    for pool in pools:
        pool.settle(space.max_key)


@dataclass
class Pruned:
    """One output chunk of a prunable tensor: its bytes, how many entries it keeps, and where
    its entries equal to the threshold are (when ties may still be pruned)."""

    data: np.ndarray | None  # None once a worker has written it through the sink
    kept: int
    ties: np.ndarray | None
    start: int = 0  # byte offset within the tensor
    nbytes: int = 0


#: writes bytes at a byte offset within the current tensor (``pwrite``: workers share it)
Sink = Callable[[int, np.ndarray], None]


def prune_chunks(
    reader: Reader, space: KeySpace, item: Item, pool: Pool, seed: int, sink: Sink | None = None
) -> Iterator[Pruned]:
    """The pruned bytes of ``item`` chunk by chunk, ties at the threshold pruned earliest first.

    With a ``sink``, workers write the chunks that hold no tie still to prune themselves, in
    parallel and in any order (``pwrite``); the others are settled and written here, in order.
    """
    pattern = pool.pattern
    threshold = space.dtype(pool.threshold) if pattern is None else None

    def work(item: Item, start: int, count: int, scores: Any) -> Pruned:
        raw, keys = _keys(reader, space, item, start, count, scores)
        if pattern is not None:
            keep = keep_keys(keys, pattern)
        else:
            keep = np.greater_equal(keys, threshold, out=_scratch("keep", keys.size, np.bool_))
        kept = int(np.count_nonzero(keep))
        words = raw.view(_word(item.itemsize))
        np.multiply(words, keep, out=words)  # in place: raw is this chunk's own buffer
        ties = np.flatnonzero(keys == threshold) if pool.ties > 0 else None
        offset = start * item.itemsize
        if sink is not None and ties is None:  # pool.ties only falls: no tie here is pruned
            sink(offset, raw)
            reader.recycle(raw)
            return Pruned(None, kept, None, offset, raw.nbytes)
        return Pruned(raw, kept, ties, offset, raw.nbytes)

    group = pattern.m if pattern is not None else 1
    for chunk in reader.ordered(work, item_tasks(item, space, seed, group)):
        if chunk.ties is not None and pool.ties > 0:
            take = chunk.ties[: pool.ties]
            chunk.data.view(_word(item.itemsize))[take] = 0
            chunk.kept -= take.size
            pool.ties -= take.size
        if sink is not None and chunk.data is not None:
            sink(chunk.start, chunk.data)
            reader.recycle(chunk.data)
            chunk.data = None
        yield chunk


def copy_chunks(
    reader: Reader,
    path: Path,
    offset: int,
    nbytes: int,
    itemsize: int,
    floating: bool,
    sink: Sink | None = None,
) -> Iterator[tuple[np.ndarray | None, int, int]]:
    """A tensor's bytes as they are (written by the workers through ``sink`` when given):
    ``(bytes or None, their size, non-zero entries)`` per chunk."""
    word = _word(itemsize)

    def work(start: int, size: int) -> tuple[np.ndarray | None, int, int]:
        raw = reader.read(path, offset + start, size)
        words = raw.view(word)
        if floating:  # -0.0 is a zero
            mask = _sign_clear(itemsize)
            count = int(
                np.count_nonzero(
                    np.bitwise_and(words, mask, out=_scratch("copy", words.size, word))
                )
            )
        else:
            count = int(np.count_nonzero(words))
        if sink is None:
            return raw, size, count
        sink(start, raw)
        reader.recycle(raw)
        return None, size, count

    step = CHUNK_BYTES // itemsize * itemsize
    yield from reader.ordered(work, chunks(nbytes, step))


_local = threading.local()


def _scratch(name: str, size: int, dtype: type) -> np.ndarray:
    """A per-thread temporary reused across chunks: fresh pages cost more than the arithmetic."""
    buffer = getattr(_local, name, None)
    nbytes = size * np.dtype(dtype).itemsize
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(max(nbytes, CHUNK_BYTES), dtype=np.uint8)
        setattr(_local, name, buffer)
    return buffer[:nbytes].view(dtype)


def _word(itemsize: int) -> type:
    return {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]


def _sign_clear(itemsize: int) -> int:
    return (1 << (8 * itemsize - 1)) - 1

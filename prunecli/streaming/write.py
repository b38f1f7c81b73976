"""Writing one pruned shard: dense with ``pwrite`` by the workers, or bitmask in order.

A dense shard's offsets all follow from its header, so each worker writes the chunks it
computed where they belong; only chunks holding ties still to prune are settled in order first.
A bitmask shard needs each tensor's kept count in its header: one counting pass, then the
bitmask and values written in order through ``io.safetensors.StreamWriter``.
"""

from __future__ import annotations

import errno
import json
import math
import os
from typing import Any

import numpy as np

from prunecli.io import bitmask
from prunecli.io import safetensors as st
from prunecli.io.checkpoint import Shard
from prunecli.streaming.passes import ByteProgress, Reader, copy_chunks, prune_chunks
from prunecli.streaming.plan import StreamPlan
from prunecli.streaming.select import FLOATS


def write_shard(
    reader: Reader,
    plan: StreamPlan,
    seed: int,
    shard: Shard,
    metadata: dict[str, str],
    stream: Any,
    format: str,
    progress: ByteProgress | None,
) -> dict[str, Any]:
    entries = shard.header.entries
    prunable = [name for name in entries if name in plan.items]
    kept_counts: dict[str, int] = {}
    if format == "bitmask":
        kept_counts = _count_kept(reader, plan, seed, prunable)
    encoded = {
        name
        for name, kept in kept_counts.items()
        if bitmask.bitmask_bytes(plan.items[name].numel) + kept * plan.items[name].itemsize
        < plan.items[name].numel * plan.items[name].itemsize
    }
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    encoded_specs: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        if name in encoded:
            nnz = kept_counts[name]
            encoded_specs[name] = {"shape": list(entry.shape), "dtype": entry.dtype, "nnz": nnz}
            numel = math.prod(entry.shape)
            specs[name + bitmask.BITMASK] = ("U8", (bitmask.bitmask_bytes(numel),))
            specs[name + bitmask.VALUES] = (entry.dtype, (nnz,))
        else:
            specs[name] = (entry.dtype, entry.shape)
    if format == "bitmask":
        metadata = {
            **metadata,
            bitmask.META_FORMAT: bitmask.FORMAT,
            bitmask.META_VERSION: bitmask.VERSION,
            bitmask.META_TENSORS: json.dumps(encoded_specs),
        }
    if format != "bitmask":  # every offset is known: workers write their own chunks
        return _write_dense(reader, plan, seed, shard, specs, metadata, stream, progress)
    writer = st.StreamWriter(stream, specs, metadata)
    kept: dict[str, int] = {}
    nonzero = 0
    for name, entry in entries.items():
        if name in plan.items:
            kept[name] = _write_pruned(reader, plan, seed, name, writer, name in encoded, progress)
            nonzero += kept[name]
        else:
            for data, size, count in copy_tensor(reader, shard, entry):
                writer.write(memoryview(data))
                reader.recycle(data)
                nonzero += count
                if progress:
                    progress(size)
    written = writer.close()
    params = sum(math.prod(entry.shape) for entry in entries.values())
    return {
        "written": written,
        "data_bytes": written - writer.header_bytes,
        "kept": kept,
        "nonzero": nonzero,
        "params": params,
        "encoded": [name for name in entries if name in encoded],
        "stored": list(specs),
    }


def copy_tensor(reader: Reader, shard: Shard, entry: st.TensorEntry, sink: Any = None) -> Any:
    itemsize = st.DTYPES[entry.dtype].itemsize
    begin = shard.header.data_start + entry.begin
    size = entry.end - entry.begin
    return copy_chunks(reader, shard.path, begin, size, itemsize, entry.dtype in FLOATS, sink)


def _write_dense(
    reader: Reader,
    plan: StreamPlan,
    seed: int,
    shard: Shard,
    specs: dict[str, tuple[str, tuple[int, ...]]],
    metadata: dict[str, str],
    stream: Any,
    progress: ByteProgress | None,
) -> dict[str, Any]:
    """A dense shard written with ``pwrite`` at known offsets, by the workers in parallel."""
    header = st.encode_layout(specs, metadata)
    handle = stream.fileno()
    data = sum(entry.end - entry.begin for entry in shard.header.entries.values())
    _reserve(handle, len(header) + data)
    _pwrite(handle, memoryview(header), 0)
    position = len(header)
    kept: dict[str, int] = {}
    nonzero = 0
    for name, entry in shard.header.entries.items():
        base = position

        def sink(offset: int, data: np.ndarray, base: int = base) -> None:
            _pwrite(handle, memoryview(data), base + offset)

        if name in plan.items:
            item, pool = plan.items[name], plan.pool_of[name]
            chunks = prune_chunks(reader, plan.space, item, pool, seed, sink)
            kept[name] = 0
            for chunk in chunks:
                kept[name] += chunk.kept
                if progress:
                    progress(chunk.nbytes)
            nonzero += kept[name]
        else:
            for _, size, count in copy_tensor(reader, shard, entry, sink):
                nonzero += count
                if progress:
                    progress(size)
        position += entry.end - entry.begin
    params = sum(math.prod(entry.shape) for entry in shard.header.entries.values())
    return {
        "written": position,
        "data_bytes": position - len(header),
        "kept": kept,
        "nonzero": nonzero,
        "params": params,
        "encoded": [],
        "stored": list(specs),
    }


def _reserve(handle: int, size: int) -> None:
    """Allocate the file's blocks up front: ext4 then writes it several times faster than when
    each write allocates, and a full disk shows before any work rather than midway."""
    try:
        os.posix_fallocate(handle, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _pwrite(handle: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < data.nbytes:
        done += os.pwrite(handle, data[done:], offset + done)


def _count_kept(reader: Reader, plan: StreamPlan, seed: int, names: list[str]) -> dict[str, int]:
    """Kept entries per tensor (a counting pass): a bitmask header needs them up front."""
    ties = {id(pool): pool.ties for pool in plan.pools}
    counts = {
        name: sum(
            chunk.kept
            for chunk in prune_chunks(
                reader, plan.space, plan.items[name], plan.pool_of[name], seed
            )
        )
        for name in names
    }
    for pool in plan.pools:  # the write pass prunes the same ties again, in the same order
        pool.ties = ties[id(pool)]
    return counts


def _write_pruned(
    reader: Reader,
    plan: StreamPlan,
    seed: int,
    name: str,
    writer: st.StreamWriter,
    encode: bool,
    progress: ByteProgress | None,
) -> int:
    item, pool = plan.items[name], plan.pool_of[name]
    kept = 0
    values: list[bytes] = []
    for chunk in prune_chunks(reader, plan.space, item, pool, seed):
        kept += chunk.kept
        if encode:
            words = chunk.data.view(f"<u{item.itemsize}")
            live = words != 0
            writer.write(memoryview(np.packbits(live, bitorder="little")))
            values.append(words[live].tobytes())
        else:
            writer.write(memoryview(chunk.data))
        if progress:
            progress(chunk.data.nbytes)
        reader.recycle(chunk.data)
    for part in values:
        writer.write(part)
    return kept

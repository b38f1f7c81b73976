"""The block runner's input and output: tensors read by name from a folder's shards, and an
output folder laid out like the input, written tensor by tensor as the blocks finish.

Every output shard has the input shard's layout (same tensors, same order, same dtypes and
shapes, or the smaller shapes structured pruning gives, known before it starts), so each tensor's
offset is known before any block runs: a block's tensors are written
where they belong the moment it is pruned, and the rest are copied through unchanged at the end.
The folder is assembled in a temporary beside the target (``io.checkpoint.atomic_folder``).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import Unsupported
from prunecli.io import bitmask
from prunecli.io import safetensors as st
from prunecli.io.checkpoint import INDEX, Checkpoint, Shard
from prunecli.io.inputs import read_into
from prunecli.models.loaded import LoadedModel, model_metadata
from prunecli.streaming.output import finish_folder
from prunecli.streaming.passes import open_reader
from prunecli.streaming.write import copy_tensor


def check_dense(checkpoint: Checkpoint) -> None:
    for shard in checkpoint.shards:
        if bitmask.is_bitmask(shard.header.metadata, str(shard.path)):
            raise Unsupported(
                f"{shard.path} is bitmask-encoded; the block runner reads dense shards",
                "write it dense first (--format dense)",
            )


class ShardTensors:
    """Tensors of a checkpoint read by name, each with ``pread`` into its own buffer."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._where: dict[str, tuple[Shard, st.TensorEntry]] = {
            name: (shard, entry) for name, shard, entry in checkpoint.entries()
        }

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, (_, entry) in self._where.items()}

    def dtype(self, name: str) -> torch.dtype:
        return st.DTYPES[self._where[name][1].dtype]

    def read(self, name: str) -> torch.Tensor:
        shard, entry = self._where[name]
        raw = torch.empty(entry.end - entry.begin, dtype=torch.uint8)
        if raw.numel():
            fd = os.open(shard.path, os.O_RDONLY)
            try:
                offset = shard.header.data_start + entry.begin
                read_into(fd, offset, memoryview(raw.numpy()), str(shard.path))
            finally:
                os.close(fd)
        return st.typed(raw, entry)


class FolderWriter:
    """Output shards in ``staging`` with the input's layout; ``write`` puts one tensor in place
    (cast to its stored dtype, -0.0 written as +0.0), ``finish`` copies every tensor not
    written, then the index and the companion files.

    Each header is written first with room reserved for ``prunecli.sparsity.achieved``, which
    ``finish`` fills in from the zeros counted in the pruned tensors (``extra["prunable"]``) as
    they were written: the header keeps its length, its JSON is followed by spaces (allowed by
    the format)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        staging: Path,
        extra: dict[str, Any],
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        """``shapes``: new shapes of some tensors (structured pruning shrinks them; each must then
        be written, not copied); ``config``: written as the output's config.json."""
        self.checkpoint, self.staging, self.config = checkpoint, staging, config
        self._at: dict[str, tuple[int, st.TensorEntry, int]] = {}
        self._handles: dict[Path, int] = {}
        self._sizes: dict[Path, int] = {}
        self._headers: dict[Path, tuple[dict[str, Any], dict[str, str], int]] = {}
        self._prunable = set(extra.get("prunable") or ())
        self._zeros = self._counted = 0
        shapes = shapes or {}
        for shard in checkpoint.shards:
            model = LoadedModel(
                {}, dict(shard.header.metadata), checkpoint.source, "safetensors", 0
            )
            specs = {
                name: (e.dtype, tuple(shapes.get(name, e.shape)))
                for name, e in shard.header.entries.items()
            }
            metadata = model_metadata(model, {**extra, "sparsity.achieved": ""})
            header = st.encode_layout(specs, metadata)
            entries = _entries(header)
            header = _with_room(header, _ACHIEVED_ROOM)
            self._headers[shard.path] = (specs, metadata, len(header))
            file = staging / shard.path.name
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            self._handles[shard.path] = fd
            _pwrite(fd, memoryview(header), 0)
            data = sum(e.end - e.begin for e in entries.values())
            os.ftruncate(fd, len(header) + data)
            self._sizes[shard.path] = len(header) + data
            for name, entry in entries.items():
                self._at[name] = (fd, entry, len(header))
        self.written: set[str] = set()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        fd, entry, base = self._at[name]
        stored = tensor.detach().to("cpu", st.DTYPES[entry.dtype])
        if stored.is_floating_point():
            stored = torch.where(stored == 0, torch.zeros_like(stored), stored)
        if tuple(stored.shape) != tuple(entry.shape):
            raise ValueError(f"{name} is {tuple(stored.shape)}, its file says {entry.shape}")
        _pwrite(fd, st.tensor_bytes(stored), base + entry.begin)
        if name in self._prunable and name not in self.written:
            self._zeros += int((stored == 0).sum())
            self._counted += stored.numel()
        self.written.add(name)

    @property
    def achieved(self) -> float:
        """The fraction of zeros in the pruned tensors written so far."""
        return self._zeros / self._counted if self._counted else 0.0

    def finish(self) -> int:
        """Copies the tensors not written (embeddings, head) as they are; returns the bytes of
        the folder."""
        shards = self.checkpoint.shards
        with open_reader([shard.path for shard in shards]) as reader:
            for shard in shards:
                fd = self._handles[shard.path]
                for name, entry in shard.header.entries.items():
                    if name in self.written:
                        continue
                    _, out, base = self._at[name]
                    if out.shape != entry.shape:
                        raise ValueError(f"{name} was to be written as {out.shape}, and was not")

                    def sink(
                        offset: int, data: Any, at: int = base + out.begin, fd: int = fd
                    ) -> None:
                        _pwrite(fd, memoryview(data), at + offset)

                    for _ in copy_tensor(reader, shard, entry, sink):
                        pass
                specs, metadata, length = self._headers[shard.path]
                metadata = {**metadata, "prunecli.sparsity.achieved": repr(self.achieved)}
                header = _with_room(st.encode_layout(specs, metadata), 0, length)
                _pwrite(fd, memoryview(header), 0)
        self.close()
        done = [
            (
                shard,
                {
                    "stored": list(shard.header.entries),
                    "data_bytes": sum(
                        self._at[name][1].end - self._at[name][1].begin
                        for name in shard.header.entries
                    ),
                },
            )
            for shard in shards
        ]
        written = finish_folder(self.checkpoint, self.staging, done)
        index = self.staging / INDEX
        if index.exists() and "total_parameters" in (self.checkpoint.index_metadata or {}):
            document = json.loads(index.read_text())  # the smaller shapes' count, not the input's
            counts = (math.prod(entry.shape) for _, entry, _ in self._at.values())
            document["metadata"]["total_parameters"] = sum(counts)
            written -= index.stat().st_size
            index.write_text(json.dumps(document, indent=2) + "\n")
            written += index.stat().st_size
        if self.config is not None:
            config = self.staging / "config.json"
            written -= config.stat().st_size if config.exists() else 0
            config.write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            written += config.stat().st_size
        return written

    def close(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()


_ACHIEVED_ROOM = 32  # bytes kept for repr(float) in a header, a multiple of 8


def _with_room(header: bytes, room: int, length: int | None = None) -> bytes:
    """``header`` (8-byte size + JSON) padded with spaces by ``room`` bytes, or to ``length``."""
    body = header[8:]
    size = len(body) + room if length is None else length - 8
    if size < len(body):
        raise ValueError("the header outgrew the room kept for it")
    return struct.pack("<Q", size) + body + b" " * (size - len(body))


def _entries(header: bytes) -> dict[str, st.TensorEntry]:
    """The entries (offsets in the data section) of a header :func:`st.encode_layout` made."""
    layout = json.loads(header[8:])
    layout.pop("__metadata__", None)
    return {
        name: st.TensorEntry(v["dtype"], tuple(v["shape"]), *v["data_offsets"])
        for name, v in layout.items()
    }


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], offset + done)

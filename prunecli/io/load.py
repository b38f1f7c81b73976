"""Whole safetensors files in memory, dense or bitmask-encoded, read without a memory map."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from prunecli.io import bitmask
from prunecli.io.inputs import open_input, read_into
from prunecli.io.safetensors import Header, read_header, typed


def read_tensors(
    header: Header, read: Callable[[str], torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """The model's tensors in file order, decoding a bitmask file tensor by tensor."""
    if bitmask.is_bitmask(header.metadata, source):
        return bitmask.decode(header, read, source)
    return {name: read(name) for name in header.entries}


def load_file(path: Path) -> tuple[dict[str, torch.Tensor], Header]:
    """Every tensor of a validated safetensors file (dense or bitmask), in file order.

    Read with plain ``pread`` calls into tensors allocated from the validated header, never
    memory-mapped: a file truncated while it is read then gives a short read and a message,
    where a mapping would kill the process with SIGBUS. The header returned describes the file
    as stored (its metadata included).
    """
    source = str(path)
    with open_input(path) as handle:
        header = read_header(handle, source)

        def read(name: str) -> torch.Tensor:
            entry = header.entries[name]
            raw = torch.empty(entry.end - entry.begin, dtype=torch.uint8)
            if raw.numel():
                offset = header.data_start + entry.begin
                read_into(handle.fileno(), offset, memoryview(raw.numpy()), source)
            return typed(raw, entry)

        tensors = read_tensors(header, read, source)
    return tensors, header

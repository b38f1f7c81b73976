"""Safetensors from a stream (standard input): read in bounded steps, header first.

A pipe has no size to check a header against, and reading it whole first would let
``yes | prunecli inspect -`` grow without bound. So nothing is read or allocated before what
precedes it is valid: 8 bytes, the header they announce (at most 100 MB), then exactly the data
the header describes, in chunks, so memory grows only as fast as data arrives.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from prunecli.errors import BadInput
from prunecli.io import safetensors as st
from prunecli.io.load import read_tensors


def read_stream(stream: BinaryIO, source: str) -> tuple[dict[str, torch.Tensor], st.Header, int]:
    """Every tensor of a safetensors document read from ``stream`` (e.g. standard input).

    Nothing is read or allocated before the part before it is valid: 8 bytes, then a header of
    at most 100 MB, then exactly the data the header describes, each tensor's bytes read in
    chunks, so memory grows only as fast as data arrives. Bytes after the data are refused.
    Returns the tensors, the header and the bytes read.
    """
    head = _read_upto(stream, 8)
    if not head:
        raise BadInput(f"{source} is empty")
    if len(head) < 8:
        raise BadInput(f"{source} is not a safetensors file: only {len(head)} bytes")
    length = st.header_length(head, source)
    document = _read_upto(stream, length)
    if len(document) < length:
        raise BadInput(
            f"{source} is truncated or not a safetensors file: its header length field "
            f"claims {length} bytes but only {len(document)} follow"
        )
    entries, metadata = st.parse_document(document, source)
    data_size = max((entry.end for entry in entries.values()), default=0)
    st.check_layout(entries, data_size, source)
    header = st.Header(entries=entries, metadata=metadata, data_start=8 + length)
    data: dict[str, torch.Tensor] = {}
    for name, entry in sorted(entries.items(), key=lambda item: item[1].begin):
        data[name] = st.typed(_read_tensor_bytes(stream, entry, source), entry)
    if _read_upto(stream, 1):
        raise BadInput(f"{source}: bytes follow the last tensor; they belong to none")
    tensors = read_tensors(header, data.pop, source)
    return tensors, header, 8 + length + data_size


_STREAM_CHUNK = 16 << 20


def _read_upto(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end), in chunks: nothing is allocated ahead."""
    parts, left = [], size
    while left:
        part = stream.read(min(left, _STREAM_CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_tensor_bytes(stream: BinaryIO, entry: st.TensorEntry, source: str) -> torch.Tensor:
    """The bytes of one tensor; chunks are kept until the whole tensor has arrived, then copied
    into one buffer (whose pages are touched only as they are filled)."""
    nbytes = entry.end - entry.begin
    parts, got = [], 0
    while got < nbytes:
        part = stream.read(min(nbytes - got, _STREAM_CHUNK))
        if not part:
            raise BadInput(
                f"{source} is truncated: it ended {nbytes - got} bytes before the end of "
                "the data its header describes"
            )
        parts.append(part)
        got += len(part)
    raw = torch.empty(nbytes, dtype=torch.uint8)
    view, position = raw.numpy(), 0
    parts.reverse()
    while parts:
        part = parts.pop()  # each chunk is freed once copied
        view[position : position + len(part)] = np.frombuffer(part, dtype=np.uint8)
        position += len(part)
    return raw

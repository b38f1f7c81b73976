"""Safetensors: a validating reader and a tensor-by-tensor writer.

The header is checked before the safetensors library sees the file, so a truncated or foreign file
gets a message that says what is wrong; every read goes through ``io/load.load_file`` (or, for
standard input, ``io/stdin.read_stream``), which decode compressed (bitmask) files transparently
(prunecli/io/bitmask.py). The writer emits
the documented format directly (8-byte little-endian header length, JSON header padded to 8 bytes,
raw little-endian data), one tensor at a time, so writing never builds a second copy of the model
in memory.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from prunecli.errors import BadInput
from prunecli.io.inputs import open_input

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
MAX_DIMS = 64  # far more than any model uses; torch itself stops at 64
MAX_DIM = 1 << 48  # no real dimension comes near; keeps any buffer sized by one impossible


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data section
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, TensorEntry]  # in file order
    metadata: dict[str, str]
    data_start: int


def parse_header(prefix: bytes, file_size: int, source: str) -> Header:
    """Validate and parse a safetensors header; ``prefix`` holds at least the header bytes."""
    if file_size == 0:
        raise BadInput(f"{source} is empty")
    if file_size < 8:
        raise BadInput(f"{source} is not a safetensors file: only {file_size} bytes")
    length = header_length(prefix[:8], source, file_size - 8)
    entries, metadata = parse_document(prefix[8 : 8 + length], source)
    data_size = file_size - 8 - length
    check_layout(entries, data_size, source)
    for name, entry in entries.items():
        if entry.end > data_size:
            raise BadInput(
                f"{source} is truncated: tensor {name!r} needs {entry.end} data bytes "
                f"but the file holds {data_size}"
            )
    return Header(entries=entries, metadata=metadata, data_start=8 + length)


def header_length(head: bytes, source: str, available: int | None = None) -> int:
    """The header length field, checked against the limit and (when known) the bytes after it."""
    (length,) = struct.unpack("<Q", head)
    if available is not None and length > available:
        raise BadInput(
            f"{source} is truncated or not a safetensors file: its header length field "
            f"claims {length} bytes but only {available} follow"
        )
    if length > _MAX_HEADER:
        raise BadInput(
            f"{source} is not a safetensors file: its header length field claims {length} "
            "bytes, over the 100 MB limit"
        )
    return length


def parse_document(raw: bytes, source: str) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The entries and metadata of a header's JSON, every entry checked on its own."""
    from prunecli.io.jsonfile import NotJSON, parse_json

    try:
        document = parse_json(raw, f"{source}: its header")
    except NotJSON:
        raise BadInput(f"{source} is not a safetensors file: its header is not JSON") from None
    if not isinstance(document, dict):
        raise BadInput(f"{source} is not a safetensors file: its header is not a JSON object")
    metadata = document.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadInput(f"{source}: __metadata__ must map strings to strings")
    entries = {name: _entry(name, info, source) for name, info in document.items()}
    return entries, dict(metadata)


def check_layout(entries: dict[str, TensorEntry], data_size: int, source: str) -> None:
    """Tensors must tile the data section: no overlap, no gap (as the safetensors spec says)."""
    position, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            where = f"after tensor {previous!r}" if previous else "at the start of the data"
            raise BadInput(f"{source}: tensor {name!r} overlaps or leaves a gap {where}")
        position, previous = entry.end, name
    if position < data_size:
        raise BadInput(
            f"{source}: {data_size - position} bytes after the last tensor belong to none"
        )


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(shape: object, where: str) -> tuple[int, ...]:
    """A list of dimensions torch can hold: integers, none negative or past ``MAX_DIM``.

    Checked with Python integers before anything is allocated: a tensor with no elements still
    has its dimensions, and code that sizes a buffer by one of them must not meet 2**70."""
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
        raise BadInput(f"{where} has no valid shape (a list of integers)")
    if any(d < 0 for d in shape):
        raise BadInput(f"{where} has a negative dimension in its shape {shape}")
    if len(shape) > MAX_DIMS or any(d > MAX_DIM for d in shape):
        raise BadInput(
            f"{where} has an impossible shape {_short(shape)}: at most {MAX_DIMS} "
            f"dimensions of at most {MAX_DIM} each"
        )
    return tuple(shape)


def _short(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "..."


def _entry(name: str, info: object, source: str) -> TensorEntry:
    malformed = BadInput(f"{source}: malformed header entry for tensor {name!r}")
    if not isinstance(info, dict):
        raise malformed
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
        raise malformed
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
        raise malformed
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise BadInput(f"{source}: tensor {name!r} has unknown dtype {_short_text(dtype)}")
    shape, (begin, end) = check_shape(shape, f"{source}: tensor {name!r}"), offsets
    if begin < 0 or end < begin:
        raise BadInput(
            f"{source}: tensor {name!r} has invalid data_offsets [{begin}, {end}]: "
            "they must satisfy 0 <= begin <= end"
        )
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise BadInput(
            f"{source}: tensor {name!r} of shape {_short(list(shape))} {dtype} needs {nbytes} "
            f"bytes but its offsets span {end - begin}"
        )
    return TensorEntry(dtype, shape, begin, end)


def _short_text(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_header_file(path: Path) -> Header:
    """Parse the header of a safetensors file without reading its data."""
    with open_input(path) as handle:
        return read_header(handle, str(path))


def read_header(handle: BinaryIO, source: str) -> Header:
    """The header of the open file ``handle``, reading no more than the header's bytes."""
    size = os.fstat(handle.fileno()).st_size
    head = _read_all(handle, min(size, 8), source)
    if len(head) == 8 and struct.unpack("<Q", head)[0] <= min(size - 8, _MAX_HEADER):
        head += _read_all(handle, struct.unpack("<Q", head)[0], source)
    return parse_header(head, size, source)


def _read_all(handle: BinaryIO, size: int, source: str) -> bytes:
    try:
        data = handle.read(size)
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) < size:
        raise BadInput(f"{source} was truncated while it was being read")
    return data


def typed(raw: torch.Tensor, entry: TensorEntry) -> torch.Tensor:
    """The tensor of ``entry`` from its raw little-endian bytes (no copy)."""
    return raw.view(DTYPES[entry.dtype]).reshape(entry.shape)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of ``tensor`` without copying when it is contiguous on CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return memoryview(flat.view(torch.uint8).numpy())


def encode_header(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPE_NAMES:
            raise BadInput(
                f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store"
            )
        specs[name] = (DTYPE_NAMES[tensor.dtype], tuple(tensor.shape))
    return encode_layout(specs, metadata)


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * DTYPES[dtype].itemsize


def encode_layout(
    specs: Mapping[str, tuple[str, tuple[int, ...]]], metadata: Mapping[str, str]
) -> bytes:
    """The header of a file holding tensors of ``(dtype name, shape)``, in order, back to back."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (dtype, shape) in specs.items():
        nbytes = nbytes_of(dtype, shape)
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


class StreamWriter:
    """Writes a safetensors file whose tensors arrive in pieces, in order (e.g. chunk by chunk).

    The header is written first from dtypes and shapes alone; each tensor's bytes must then add
    up to its size exactly, so a bug cannot leave a file whose header lies about its data.
    """

    def __init__(
        self,
        stream: BinaryIO,
        specs: Mapping[str, tuple[str, tuple[int, ...]]],
        metadata: Mapping[str, str],
    ) -> None:
        self._stream = stream
        self._pending = [(name, nbytes_of(*spec)) for name, spec in specs.items()][::-1]
        header = encode_layout(specs, metadata)
        stream.write(header)
        self.header_bytes = self.written = len(header)
        self._left = 0
        self._advance()

    def _advance(self) -> None:
        while self._left == 0 and self._pending:
            self.current, self._left = self._pending.pop()

    def write(self, data: memoryview | bytes) -> None:
        """The next bytes of the current tensor (moving on to the next one when it is full)."""
        size = memoryview(data).nbytes
        if size > self._left:
            raise ValueError(f"more bytes than tensor {self.current!r} holds")
        self._stream.write(data)
        self.written += size
        self._left -= size
        self._advance()

    def close(self) -> int:
        if self._left or self._pending:
            raise ValueError("the file ended before its last tensor was complete")
        return self.written


def write(
    stream: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> int:
    """Write ``tensors`` (in order) with ``metadata`` to ``stream``; returns the bytes written."""
    header = encode_header(tensors, metadata)
    stream.write(header)
    written = len(header)
    for tensor in tensors.values():
        data = tensor_bytes(tensor)
        stream.write(data)
        written += data.nbytes
    return written

"""Safetensors: a validating reader and a tensor-by-tensor writer.

The header is checked before the safetensors library sees the file, so a truncated or foreign file
gets a message that says what is wrong; every read goes through ``load_file`` or ``load_bytes``,
which decode compressed (bitmask) files transparently (prunecli/io/bitmask.py). The writer emits
the documented format directly (8-byte little-endian header length, JSON header padded to 8 bytes,
raw little-endian data), one tensor at a time, so writing never builds a second copy of the model
in memory.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from prunecli.errors import BadInput

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
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > file_size - 8:
        raise BadInput(
            f"{source} is truncated or not a safetensors file: its header length field "
            f"claims {length} bytes but only {file_size - 8} follow"
        )
    if length > _MAX_HEADER:
        raise BadInput(f"{source}: header of {length} bytes exceeds the 100 MB limit")
    try:
        raw = json.loads(prefix[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput(f"{source} is not a safetensors file: its header is not JSON") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{source} is not a safetensors file: its header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadInput(f"{source}: __metadata__ must map strings to strings")
    entries = {name: _entry(name, info, source) for name, info in raw.items()}
    data_size = file_size - 8 - length
    _check_layout(entries, data_size, source)
    for name, entry in entries.items():
        if entry.end > data_size:
            raise BadInput(
                f"{source} is truncated: tensor {name!r} needs {entry.end} data bytes "
                f"but the file holds {data_size}"
            )
    return Header(entries=entries, metadata=dict(metadata), data_start=8 + length)


def _check_layout(entries: dict[str, TensorEntry], data_size: int, source: str) -> None:
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


def _entry(name: str, info: object, source: str) -> TensorEntry:
    malformed = BadInput(f"{source}: malformed header entry for tensor {name!r}")
    if not isinstance(info, dict):
        raise malformed
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
        raise malformed
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
        raise malformed
    shape, (begin, end) = tuple(shape), offsets
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise BadInput(f"{source}: tensor {name!r} has unknown dtype {dtype!r}")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if begin < 0 or end - begin != nbytes or any(d < 0 for d in shape):
        raise BadInput(
            f"{source}: tensor {name!r} of shape {list(shape)} {dtype} needs {nbytes} bytes "
            f"but its offsets span {end - begin}"
        )
    return TensorEntry(dtype, shape, begin, end)


def read_header_file(path: Path) -> Header:
    """Parse the header of a safetensors file without reading its data."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            if length <= min(size - 8, _MAX_HEADER):
                head += handle.read(length)
    return parse_header(head, size, str(path))


def read_tensors(
    header: Header, read: Callable[[str], torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """The model's tensors in file order, decoding a bitmask file tensor by tensor."""
    from prunecli.io import bitmask

    if bitmask.is_bitmask(header.metadata, source):
        return bitmask.decode(header, read, source)
    return {name: read(name) for name in header.entries}


def load_file(path: Path) -> tuple[dict[str, torch.Tensor], Header]:
    """Every tensor of a validated safetensors file (dense or bitmask), in file order.

    The header returned describes the file as stored (its metadata included).
    """
    header = read_header_file(path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = read_tensors(header, handle.get_tensor, str(path))
    except SafetensorError as exc:
        raise BadInput(f"{path} is not a valid safetensors file: {exc}") from None
    return tensors, header


def load_bytes(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], Header]:
    """Every tensor of a safetensors document held in memory (e.g. read from stdin)."""
    header = parse_header(data, len(data), source)
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        loaded = load(data)
    except SafetensorError as exc:
        raise BadInput(f"{source} is not a valid safetensors document: {exc}") from None
    return read_tensors(header, loaded.pop, source), header


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

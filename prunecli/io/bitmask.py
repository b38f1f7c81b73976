"""Compressed safetensors (``--format bitmask``): a packed bitmask and the non-zero values per tensor.

The file stays an ordinary safetensors file; an encoded tensor ``NAME`` is replaced, in place, by
``NAME.__bitmask__`` (uint8: bit ``k % 8`` of byte ``k // 8`` is set when flat element ``k`` is not
zero, i.e. ``numpy.packbits(..., bitorder="little")`` over the whole flattened tensor) and
``NAME.__values__`` (the non-zero elements in flat order, original dtype, copied bit for bit, NaN
included). ``-0.0`` is a zero: it is dropped and reads back as ``+0.0`` — pruning writes ``+0.0``,
and models pruned elsewhere as ``weight * mask`` hold ``-0.0`` for half their zeros, which must
not cost a value each. The metadata names the format, its version and each encoded tensor's
shape, dtype and count. docs/formats.md documents the layout for readers outside prunecli.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np
import torch

from prunecli.errors import BadInput
from prunecli.io import safetensors as st
from prunecli.io.jsonfile import parse_json

META_FORMAT = "prunecli.format"
META_VERSION = "prunecli.format_version"
META_TENSORS = "prunecli.bitmask.tensors"
METADATA_KEYS = (META_FORMAT, META_VERSION, META_TENSORS)
FORMAT = "bitmask"
VERSION = "1"
BITMASK = ".__bitmask__"
VALUES = ".__values__"

# integer views of the same width: values are moved as bits, so NaN payloads survive
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bitmask_bytes(numel: int) -> int:
    """Bytes of the packed bitmask of a tensor with ``numel`` elements (one bit each, no padding)."""
    return (numel + 7) // 8


def nonzero_mask(tensor: torch.Tensor) -> torch.Tensor:
    """Flat bool mask of the elements the format stores: those that are not zero (NaN is not)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return flat.float() != 0  # no comparison on fp8 itself; exact in float32
    if flat.is_floating_point():
        return flat != 0
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.view(_BITS_VIEW[flat.element_size()]) != 0  # unsigned types lack comparisons


def encoded_size(tensor: torch.Tensor) -> int:
    nnz = int(nonzero_mask(tensor).count_nonzero())
    return bitmask_bytes(tensor.numel()) + nnz * tensor.element_size()


def choose_encoded(tensors: Mapping[str, torch.Tensor], candidates: Iterable[str]) -> list[str]:
    """The candidates (in file order) whose encoded form is smaller than their dense form."""
    wanted = set(candidates)
    return [
        name
        for name, tensor in tensors.items()
        if name in wanted and encoded_size(tensor) < tensor.numel() * tensor.element_size()
    ]


def encode_tensor(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(packed bitmask, non-zero values)`` of ``tensor``."""
    mask = nonzero_mask(tensor)
    packed = np.packbits(mask.numpy(), bitorder="little")
    values = tensor.detach().to("cpu").contiguous().reshape(-1)[mask]
    return torch.from_numpy(packed), values


def decode_tensor(mask: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense tensor: ``values`` placed where the flat bool ``mask`` is set, zero bytes elsewhere."""
    dtype = values.dtype
    raw = values.view(torch.uint8) if dtype == torch.bool else values
    width = _BITS_VIEW[raw.element_size()]
    dense = torch.zeros(mask.numel(), dtype=width)
    dense[mask] = raw.view(width)  # copied as integers: bit for bit, NaN payloads included
    dense = dense.view(raw.dtype)
    return (dense.view(torch.bool) if dtype == torch.bool else dense).reshape(shape)


# --- writing -----------------------------------------------------------------------------------


def _reserved(name: str) -> bool:
    return name.endswith(BITMASK) or name.endswith(VALUES)


def write(
    stream: BinaryIO,
    tensors: Mapping[str, torch.Tensor],
    encoded: Iterable[str],
    metadata: Mapping[str, str],
) -> int:
    """Write ``tensors`` with those named in ``encoded`` as bitmask + values; returns bytes written.

    The header is laid out from sizes alone (meta tensors stand in for the encoded parts), then each
    tensor is encoded just before it is written, so at most one tensor's encoding is held at once.
    """
    encode = set(encoded)
    clash = next((name for name in tensors if _reserved(name)), None)
    if clash is not None:
        raise BadInput(
            f"tensor {clash!r} ends in a name the bitmask format reserves",
            "write it with --format dense",
        )
    layout: dict[str, torch.Tensor] = {}
    specs: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name not in encode:
            layout[name] = tensor
            continue
        nnz = int(nonzero_mask(tensor).count_nonzero())
        specs[name] = {
            "shape": list(tensor.shape),
            "dtype": st.DTYPE_NAMES[tensor.dtype],
            "nnz": nnz,
        }
        layout[name + BITMASK] = torch.empty(
            bitmask_bytes(tensor.numel()), dtype=torch.uint8, device="meta"
        )
        layout[name + VALUES] = torch.empty(nnz, dtype=tensor.dtype, device="meta")
    full = {**metadata, META_FORMAT: FORMAT, META_VERSION: VERSION, META_TENSORS: json.dumps(specs)}
    header = st.encode_header(layout, full)
    stream.write(header)
    written = len(header)
    for name, tensor in tensors.items():
        for part in encode_tensor(tensor) if name in specs else (tensor,):
            data = st.tensor_bytes(part)
            stream.write(data)
            written += data.nbytes
    return written


# --- reading -----------------------------------------------------------------------------------


def is_bitmask(metadata: Mapping[str, str], source: str) -> bool:
    """True for a bitmask file this version reads; BadInput for a format or version it does not."""
    layout = metadata.get(META_FORMAT)
    if layout is None or layout == "dense":
        return False
    if layout != FORMAT:
        raise BadInput(
            f"{source}: unknown {META_FORMAT} {layout!r}",
            "this prunecli reads dense and bitmask files; a newer prunecli may read it",
        )
    version = metadata.get(META_VERSION)
    if version != VERSION:
        raise BadInput(
            f"{source}: bitmask format version {version!r} is not supported "
            f"(this prunecli reads version {VERSION})",
            "a newer prunecli may read it",
        )
    return True


def decode(
    header: st.Header, read: Callable[[str], torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """The dense tensors of a bitmask file in file order; ``read`` fetches one stored tensor."""
    specs = _specs(header, source)
    tensors: dict[str, torch.Tensor] = {}
    for stored in header.entries:
        name = _base(stored)
        if name is None:
            tensors[stored] = read(stored)
        elif name not in tensors:
            spec = specs[name]
            values = read(name + VALUES)
            mask = _unpack(name, read(name + BITMASK), values.numel(), spec["numel"], source)
            tensors[name] = decode_tensor(mask, values, spec["shape"])
    return tensors


def tensor_names(header: st.Header, source: str) -> list[str]:
    """The names of the tensors a file holds once decoded, in file order: an encoded tensor's
    name where its bitmask and values are stored (a dense file: its entries as they are)."""
    if not is_bitmask(header.metadata, source):
        return list(header.entries)
    names = {(_base(stored) or stored): None for stored in header.entries}
    return list(names)


def _base(stored: str) -> str | None:
    for suffix in (BITMASK, VALUES):
        if stored.endswith(suffix):
            return stored[: -len(suffix)]
    return None


def _specs(header: st.Header, source: str) -> dict[str, dict[str, Any]]:
    """The encoded tensors of the metadata, checked against the header before any data is read."""
    if META_TENSORS not in header.metadata:
        raise BadInput(f"{source}: metadata {META_TENSORS} is missing")
    raw = parse_json(header.metadata[META_TENSORS], f"{source}: metadata {META_TENSORS}")
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: metadata {META_TENSORS} must be a JSON object")
    specs = {name: _spec(name, info, header, source) for name, info in raw.items()}
    for stored in header.entries:
        name = _base(stored)
        if name is not None and name not in specs:
            raise BadInput(
                f"{source}: tensor {stored!r} belongs to {name!r}, "
                f"which metadata {META_TENSORS} does not list"
            )
    return specs


def _spec(name: str, info: object, header: st.Header, source: str) -> dict[str, Any]:
    where = f"{source}: encoded tensor {name!r}"
    if not isinstance(info, dict):
        raise BadInput(f"{where} has malformed metadata")
    shape, dtype, nnz = info.get("shape"), info.get("dtype"), info.get("nnz")
    if not isinstance(shape, list) or not all(st.is_int(d) and d >= 0 for d in shape):
        raise BadInput(f"{where} has no valid shape in its metadata")
    shape = list(st.check_shape(shape, where))  # no dimension torch cannot hold (e.g. 2**70)
    if not isinstance(dtype, str) or dtype not in st.DTYPES:
        raise BadInput(f"{where} has unknown dtype {dtype!r} in its metadata")
    if not st.is_int(nnz) or nnz < 0:
        raise BadInput(f"{where} has no valid nnz in its metadata")
    if name in header.entries:
        raise BadInput(f"{where} is also stored dense")
    for suffix in (BITMASK, VALUES):
        if name + suffix not in header.entries:
            raise BadInput(f"{where} has no companion tensor {name + suffix!r}")
    numel = math.prod(shape)
    bitmask, values = header.entries[name + BITMASK], header.entries[name + VALUES]
    if bitmask.dtype != "U8" or len(bitmask.shape) != 1:
        raise BadInput(f"{where}: its bitmask must be a 1-D U8 tensor")
    length, needed = bitmask.shape[0], bitmask_bytes(numel)
    if length < needed:
        raise BadInput(
            f"{where}: its bitmask is too short: {length} bytes, "
            f"but shape {shape} needs {needed} ({numel} bits)"
        )
    if length > needed:
        raise BadInput(f"{where}: its bitmask has {length} bytes, but shape {shape} needs {needed}")
    if values.dtype != dtype or len(values.shape) != 1:
        raise BadInput(f"{where}: its values must be a 1-D {dtype} tensor")
    if values.shape[0] != nnz:
        raise BadInput(
            f"{where}: inconsistent counts: metadata says {nnz} values, "
            f"{values.shape[0]} are stored"
        )
    return {"shape": tuple(shape), "numel": numel}


def _unpack(name: str, bitmask: torch.Tensor, stored: int, numel: int, source: str) -> torch.Tensor:
    """The flat bool mask, once its bits are known to match the ``stored`` values."""
    bits = np.unpackbits(bitmask.numpy(), bitorder="little")
    if bits[numel:].any():
        raise BadInput(f"{source}: encoded tensor {name!r}: its bitmask sets bits past the end")
    count = int(np.count_nonzero(bits))
    if count != stored:
        raise BadInput(
            f"{source}: encoded tensor {name!r}: inconsistent counts: its bitmask sets "
            f"{count} bits but {stored} values are stored"
        )
    return torch.from_numpy(bits[:numel].view(np.bool_))

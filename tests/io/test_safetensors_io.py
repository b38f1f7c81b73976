"""The dense safetensors writer against the safetensors library, and the header validator."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prunecli.errors import BadInput
from prunecli.io import load as prunecli_load
from prunecli.io import safetensors as st
from prunecli.io.stdin import read_stream


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    f32 = torch.randn(3, 5, generator=generator)
    f32[0, 0] = float("nan")
    f32[0, 1] = -0.0
    f32[0, 2] = float("-inf")
    return {
        "f32": f32,
        "f16": torch.randn(4, 2, generator=generator).to(torch.float16),
        "bf16": torch.randn(2, 3, 2, generator=generator).to(torch.bfloat16),
        "f64": torch.randn(7, generator=generator, dtype=torch.float64),
        "i64": torch.tensor([[-(2**63), 2**63 - 1], [0, -1]], dtype=torch.int64),
        "bool": torch.tensor([True, False, False, True, True]),
        "u8": torch.arange(256, dtype=torch.uint8).reshape(16, 16),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "empty_i64": torch.zeros(2, 0, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
    }


def raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes()


def write_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    buffer = io.BytesIO()
    written = st.write(buffer, tensors, metadata)
    path.write_bytes(buffer.getvalue())
    assert written == len(buffer.getvalue())
    return written


def test_written_file_reads_back_bit_identically(tmp_path: Path) -> None:
    tensors = sample_tensors()
    metadata = {"format": "pt", "prunecli.arch": "mlp", "note": "ünïcode ✓", "empty": ""}
    path = tmp_path / "out.safetensors"
    write_file(path, tensors, metadata)
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        got = loaded[name]
        assert got.dtype == tensor.dtype, name
        assert got.shape == tensor.shape, name
        assert raw_bytes(got) == raw_bytes(tensor), name  # bitwise: NaN, -0.0 and inf included
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == metadata


def test_header_layout_is_aligned_and_in_order(tmp_path: Path) -> None:
    tensors = sample_tensors()
    for metadata in [{}, {"k": "v"}, {"k": "v" * 13}]:
        buffer = io.BytesIO()
        st.write(buffer, tensors, metadata)
        data = buffer.getvalue()
        (length,) = struct.unpack("<Q", data[:8])
        assert length % 8 == 0 and (8 + length) % 8 == 0
        header = json.loads(data[8 : 8 + length])
        assert header.pop("__metadata__", {}) == metadata
        assert list(header) == list(tensors)  # file order is the input order
        offset = 0
        for name, tensor in tensors.items():
            entry = header[name]
            assert entry["shape"] == list(tensor.shape)
            assert entry["data_offsets"] == [offset, offset + len(raw_bytes(tensor))]
            offset = entry["data_offsets"][1]
        assert len(data) == 8 + length + offset


def test_bytes_match_the_reference_writer_tensor_by_tensor(tmp_path: Path) -> None:
    """The safetensors library's own file, read by our parser, holds the same data bytes."""
    tensors = {k: v.contiguous() for k, v in sample_tensors().items()}
    reference = tmp_path / "ref.safetensors"
    save_file(tensors, str(reference), metadata={"a": "b"})
    loaded, header = prunecli_load.load_file(reference)
    assert header.metadata == {"a": "b"}
    for name, tensor in tensors.items():
        assert raw_bytes(loaded[name]) == raw_bytes(tensor), name


def test_prunecli_reader_round_trip(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "out.safetensors"
    write_file(path, tensors, {"m": "1"})
    for loaded, header in [
        prunecli_load.load_file(path),
        read_stream(io.BytesIO(path.read_bytes()), "stdin")[:2],
    ]:
        assert list(loaded) == list(tensors)
        assert header.metadata == {"m": "1"}
        for name, tensor in tensors.items():
            assert raw_bytes(loaded[name]) == raw_bytes(tensor), name


def test_unstorable_dtype_is_refused() -> None:
    with pytest.raises(BadInput, match="cannot store"):
        st.write(io.BytesIO(), {"c": torch.zeros(2, dtype=torch.complex64)}, {})


# --- parse_header rejects malformed files --------------------------------------------------------


def document(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if length is None else length) + encoded + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


def parse(data: bytes) -> st.Header:
    return st.parse_header(data, len(data), "model.safetensors")


def test_parse_header_accepts_a_good_document() -> None:
    header = parse(document({"w": GOOD_ENTRY, "__metadata__": {"x": "y"}}, b"\0" * 24))
    assert header.entries["w"] == st.TensorEntry("F32", (2, 3), 0, 24)
    assert header.metadata == {"x": "y"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\x01\x00\x00", "only 3 bytes"),
        (document({"w": GOOD_ENTRY}, b"\0" * 23), "truncated"),  # data cut short
        (document({"w": GOOD_ENTRY})[:20], "truncated"),  # header cut short
        (document({"w": GOOD_ENTRY}, b"\0" * 24, length=2**63), "truncated"),  # length too big
        (document({"w": GOOD_ENTRY}, b"\0" * 24, length=2**64 - 1), "truncated"),
        (struct.pack("<Q", 8) + b"not json", "not JSON"),
        (struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", "not JSON"),
        (document([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
        (document({"w": {**GOOD_ENTRY, "dtype": "F31"}}, b"\0" * 24), "unknown dtype 'F31'"),
        (document({"w": {**GOOD_ENTRY, "data_offsets": [0, 20]}}, b"\0" * 24), "needs 24 bytes"),
        (document({"w": {**GOOD_ENTRY, "shape": [3, 3]}}, b"\0" * 24), "needs 36 bytes"),
        (document({"w": {**GOOD_ENTRY, "data_offsets": [-4, 20]}}, b"\0" * 24), "offsets"),
        (document({"w": {**GOOD_ENTRY, "shape": [-2, -3]}}, b"\0" * 24), "negative dimension"),
        (document({"w": {"dtype": "F32", "shape": [2, 3]}}, b"\0" * 24), "malformed"),
        (document({"w": "F32"}, b"\0" * 24), "malformed"),
        (document({"w": GOOD_ENTRY, "__metadata__": {"x": 1}}, b"\0" * 24), "strings"),
        (document({"w": GOOD_ENTRY, "__metadata__": ["x"]}, b"\0" * 24), "strings"),
    ],
)
def test_parse_header_rejects(data: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse(data)


def test_header_over_the_limit_is_refused() -> None:
    # only the prefix is passed: the file size says the header bytes would be there
    prefix = struct.pack("<Q", 100_000_008) + b" " * 8
    with pytest.raises(BadInput, match="100 MB"):
        st.parse_header(prefix, 8 + 100_000_008, "big.safetensors")


def test_parse_header_rejects_non_string_dtype() -> None:
    with pytest.raises(BadInput):
        parse(document({"w": {**GOOD_ENTRY, "dtype": ["F32"]}}, b"\0" * 24))


def test_load_file_rejects_truncated_file_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    write_file(path, {"w": torch.ones(10, 10)}, {})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(BadInput, match="truncated"):
        prunecli_load.load_file(path)
    path.write_bytes(b"\x10\x00")
    with pytest.raises(BadInput, match="only 2 bytes"):
        prunecli_load.load_file(path)


@pytest.mark.parametrize(
    "offsets", [([0, 24], [0, 24]), ([0, 24], [32, 56])], ids=["overlap", "gap"]
)
def test_load_file_rejects_inconsistent_layout(tmp_path: Path, offsets: tuple) -> None:
    """Offsets each consistent with their shape but not tiling the data: BadInput, not a crash."""
    header = {
        "a": {**GOOD_ENTRY, "data_offsets": offsets[0]},
        "b": {**GOOD_ENTRY, "data_offsets": offsets[1]},
    }
    path = tmp_path / "bad.safetensors"
    path.write_bytes(document(header, b"\0" * offsets[1][1]))
    with pytest.raises(BadInput, match="overlaps or leaves a gap|belong to none"):
        prunecli_load.load_file(path)

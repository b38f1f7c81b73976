"""Compressed safetensors (`--format bitmask`): lossless, readable by NumPy alone, read by every
command, strict about bad files, and small (docs/formats.md)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from conftest import (
    files_in,
    metadata_of,
    pipe_prune_into_inspect,
    report_of,
    write_weights,
    write_zoo,
)
from safetensors.numpy import load_file as numpy_load_file
from safetensors.torch import load_file

from prunecli.io import bitmask
from prunecli.io import load as prunecli_load
from prunecli.io import safetensors as st
from prunecli.io.stdin import read_stream
from prunecli.jobs.writing import write_model
from prunecli.models.loaded import load_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
LENET5 = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits_of(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits, so equality means bit for bit (-0.0 ≠ +0.0, NaN == same NaN)."""
    flat = tensor.contiguous().reshape(-1)
    flat = flat.view(torch.uint8) if flat.dtype == torch.bool else flat
    return flat.view(_BITS[flat.element_size()])


def assert_bit_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)  # same names, same order
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(bits_of(got[name]), bits_of(tensor)), name


def sparse(shape: tuple[int, ...], dtype: torch.dtype, density: float, seed: int) -> torch.Tensor:
    """Pruned as prunecli prunes: zeros are +0.0."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    keep = torch.rand(shape, generator=generator) < density
    return values.masked_fill(~keep, 0).to(dtype)


def signless(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the format promises back: every bit, except that -0.0 is a zero and reads as +0.0."""
    return {name: t.masked_fill(t == 0, 0) for name, t in tensors.items()}


def awkward(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Conv and linear weights with many zeros, plus the edge cases of the format."""
    special = sparse((5, 7), dtype, 0.3, 3)
    special.view(-1)[:6] = torch.tensor(
        [-0.0, float("nan"), float("inf"), -float("inf"), 0.0, -1.5]
    ).to(dtype)
    return {
        "conv.weight": sparse((16, 3, 3, 3), dtype, 0.1, 1),  # 432 elements: whole bytes
        "conv.bias": sparse((16,), dtype, 0.5, 4),
        "fc.weight": sparse((10, 13), dtype, 0.2, 2),  # 130 elements: a padded last byte
        "special.weight": special,  # -0.0 and NaN are stored as values
        "dense.weight": sparse((3, 3), dtype, 1.0, 5),
        "empty.weight": torch.zeros((0, 3), dtype=dtype),
        "scalar": torch.tensor(2.5, dtype=dtype),
        "zero_scalar": torch.tensor(0.0, dtype=dtype),
        "all_zero.weight": torch.zeros((4, 4), dtype=dtype),
        "step": torch.tensor([7], dtype=torch.int64),
    }


def write_bitmask(path: Path, tensors: dict[str, torch.Tensor], encoded: list[str]) -> Path:
    with path.open("wb") as stream:
        written = bitmask.write(stream, tensors, encoded, {"format": "pt"})
    assert written == path.stat().st_size
    return path


# --- the format ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_round_trip_is_bit_for_bit(tmp_path: Path, dtype: torch.dtype) -> None:
    tensors = awkward(dtype)
    encoded = [name for name in tensors if name != "conv.bias"]  # every edge case encoded
    path = write_bitmask(tmp_path / "m.safetensors", tensors, encoded)
    expected = signless(tensors)
    assert_bit_identical(prunecli_load.load_file(path)[0], expected)
    assert_bit_identical(read_stream(io.BytesIO(path.read_bytes()), "standard input")[0], expected)
    special = prunecli_load.load_file(path)[0]["special.weight"].reshape(-1)[:6].float()
    assert special[0].item() == 0.0 and not special[0].signbit()  # -0.0 came back as +0.0
    assert special[1].isnan()  # NaN is a value, not a zero
    assert special.tolist()[2:] == [float("inf"), -float("inf"), 0.0, -1.5]


def test_every_other_bit_survives(tmp_path: Path) -> None:
    """Without -0.0, the round trip is bit for bit: NaN payloads included."""
    weight = sparse((8, 8), torch.float32, 0.3, 0)
    weight.view(-1)[:2].view(torch.int32)[:] = torch.tensor([0x7FC00001, -0x3FFFFF])  # two NaNs
    path = write_bitmask(tmp_path / "m.safetensors", {"w": weight}, ["w"])
    assert_bit_identical(prunecli_load.load_file(path)[0], {"w": weight})


def test_round_trip_of_other_dtypes(tmp_path: Path) -> None:
    tensors = {
        "i8": torch.tensor([[0, -3, 0], [127, 0, -128]], dtype=torch.int8),
        "i64": torch.tensor([[0, 2**40], [0, -1]], dtype=torch.int64),
        "u16": torch.tensor([[0, 3, 0, 65535]], dtype=torch.uint16),
        "flags": torch.tensor([[True, False, False, True]]),
        "f8": torch.tensor([[0.0, 1.5, 0.0, -2.0]]).to(torch.float8_e4m3fn),
    }
    path = write_bitmask(tmp_path / "m.safetensors", tensors, list(tensors))
    assert_bit_identical(prunecli_load.load_file(path)[0], tensors)


def test_any_safetensors_reader_opens_it(tmp_path: Path) -> None:
    tensors = awkward(torch.float32)
    path = write_bitmask(tmp_path / "m.safetensors", tensors, ["conv.weight", "fc.weight"])
    raw = load_file(path)  # the safetensors library, knowing nothing of the format
    assert list(raw)[:4] == [
        "conv.weight.__bitmask__",
        "conv.weight.__values__",
        "conv.bias",
        "fc.weight.__bitmask__",
    ]
    assert raw["conv.weight.__bitmask__"].dtype == torch.uint8
    assert raw["conv.weight.__bitmask__"].shape == (432 // 8,)
    assert raw["fc.weight.__bitmask__"].shape == (math.ceil(130 / 8),)
    nonzero = tensors["conv.weight"].reshape(-1)
    assert torch.equal(raw["conv.weight.__values__"], nonzero[nonzero != 0])
    assert torch.equal(raw["conv.bias"], tensors["conv.bias"])  # not encoded: stored as it is
    metadata = metadata_of(path)
    assert metadata["prunecli.format"] == "bitmask"
    assert metadata["prunecli.format_version"] == "1"
    specs = json.loads(metadata["prunecli.bitmask.tensors"])
    assert specs == {
        "conv.weight": {"shape": [16, 3, 3, 3], "dtype": "F32", "nnz": len(nonzero.nonzero())},
        "fc.weight": {
            "shape": [10, 13],
            "dtype": "F32",
            "nnz": int(tensors["fc.weight"].count_nonzero()),
        },
    }


def test_bits_are_little_endian_over_the_flattened_tensor(tmp_path: Path) -> None:
    """Worked by hand: elements 0, 3, 9 of a 2×5 tensor set bits 0 and 3 of byte 0, bit 1 of byte 1."""
    weight = torch.zeros(2, 5)
    weight.view(-1)[[0, 3, 9]] = torch.tensor([1.0, 2.0, 3.0])
    path = write_bitmask(tmp_path / "m.safetensors", {"w": weight}, ["w"])
    raw = load_file(path)
    assert raw["w.__bitmask__"].tolist() == [0b0000_1001, 0b0000_0010]
    assert raw["w.__values__"].tolist() == [1.0, 2.0, 3.0]


def test_only_tensors_that_shrink_are_chosen() -> None:
    tensors = {
        "a.weight": sparse((64, 64), torch.float32, 0.1, 0),
        "b.weight": sparse((64, 64), torch.float32, 1.0, 0),  # no zeros: dense is smaller
        "c.weight": sparse((64, 64), torch.float32, 0.1, 0),  # sparse but not a candidate
    }
    assert bitmask.choose_encoded(tensors, ["b.weight", "a.weight"]) == ["a.weight"]
    # fp32 breaks even at 31/32 of the elements kept: 4096/8 + 3968×4 == 4096×4
    almost = torch.ones(4096)
    almost[:128] = 0
    assert bitmask.choose_encoded({"x": almost}, ["x"]) == []
    almost[128] = 0
    assert bitmask.choose_encoded({"x": almost}, ["x"]) == ["x"]


# --- NumPy alone, from the docs ------------------------------------------------------------


def docs_decoder():
    """``read_bitmask_safetensors`` exactly as docs/formats.md prints it."""
    text = DOCS.read_text()
    section = text[text.index("## Compressed safetensors") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/formats.md lost its NumPy decoder"
    imports = set(re.findall(r"^(?:import|from) (\w+)", code.group(1), re.M))
    assert imports == {"json", "struct", "numpy"}  # NumPy alone
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), str(DOCS), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["read_bitmask_safetensors"]


def assert_numpy_matches(decoded: dict[str, np.ndarray], dense: dict[str, torch.Tensor]) -> None:
    assert list(decoded) == list(dense)
    for name, tensor in dense.items():
        assert decoded[name].shape == tuple(tensor.shape), name
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert decoded[name].tobytes() == raw, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_numpy_decoder_of_the_docs_reproduces_the_tensors(tmp_path: Path, dtype) -> None:
    tensors = awkward(dtype)
    path = write_bitmask(tmp_path / "m.safetensors", tensors, list(tensors))
    assert_numpy_matches(docs_decoder()(str(path)), signless(tensors))


def test_numpy_decoder_reads_a_pruned_model(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "lenet.safetensors", "lenet5")
    for layout in ("dense", "bitmask"):
        args = ("prune", source, "-m", "magnitude", "-s", "0.9", "--format", layout)
        assert cli(*args, "-o", f"{layout}.safetensors", "-q").exit_code == 0
    decoded = docs_decoder()(str(workdir / "bitmask.safetensors"))
    dense = numpy_load_file(str(workdir / "dense.safetensors"))
    assert list(decoded) == list(st.read_header_file(workdir / "dense.safetensors").entries)
    for name, array in dense.items():
        assert decoded[name].dtype == array.dtype and decoded[name].tobytes() == array.tobytes()


# --- every command reads it ------------------------------------------------------------------


@pytest.fixture
def lenet(cli, workdir: Path) -> tuple[Path, Path]:
    """lenet5 pruned to 80% by magnitude, written dense and bitmask."""
    source = write_zoo(workdir / "lenet.safetensors", "lenet5")
    pair = workdir / "dense.safetensors", workdir / "packed.safetensors"
    for path, layout in zip(pair, ("dense", "bitmask"), strict=True):
        args = ("prune", source, "-m", "magnitude", "-s", "0.8", "--format", layout, "-o", path)
        result = cli(*args, "--json")
        assert result.exit_code == 0, result.stderr
        output = report_of(result)["output"]
        assert output["layout"] == layout
        assert output["file_bytes"] == path.stat().st_size
    return pair


def test_prune_report_lists_the_encoded_tensors(cli, lenet: tuple[Path, Path]) -> None:
    dense, packed = lenet
    args = ("prune", dense, "-m", "magnitude", "-s", "0.8", "--format", "bitmask")
    result = cli(*args, "-o", "x.safetensors", "--json")
    output = report_of(result)["output"]
    assert output["format"] == "safetensors"
    assert output["layout"] == "bitmask"
    specs = json.loads(metadata_of(packed)["prunecli.bitmask.tensors"])
    assert output["encoded"] == list(specs)
    # encoded: the prunable layers where ceil(n/8) bytes of bits + 4 bytes per kept weight < 4n
    layers = report_of(result)["layers"]
    smaller = [
        x["name"] for x in layers if -(-x["params"] // 8) + 4 * x["nonzero"] < 4 * x["params"]
    ]
    assert output["encoded"] == smaller
    assert set(smaller) <= set(LENET5) and smaller
    assert packed.stat().st_size < 0.35 * dense.stat().st_size
    args = ("prune", dense, "-m", "magnitude", "-s", "0.8", "--format", "bitmask")
    human = cli(*args, "-o", "y.safetensors")
    assert re.search(r"wrote y\.safetensors \(.+, bitmask\)", human.stdout), human.stdout


def test_inspect_reads_it(cli, lenet: tuple[Path, Path]) -> None:
    dense, packed = (report_of(cli("inspect", path, "--json")) for path in lenet)
    for key in ("layers", "totals", "topology"):
        assert packed[key] == dense[key]
    assert packed["model"]["file_bytes"] == lenet[1].stat().st_size
    assert packed["model"]["arch"] == "lenet5"
    assert packed["totals"]["sparsity"] == pytest.approx(0.8, abs=1e-5)


def test_prune_reads_it_and_writes_dense_by_default(cli, lenet: tuple[Path, Path]) -> None:
    for path, out in zip(lenet, ("from-dense.safetensors", "from-packed.safetensors"), strict=True):
        assert cli("prune", path, "-m", "magnitude", "-s", "0.9", "-o", out, "-q").exit_code == 0
    from_dense = load_file("from-dense.safetensors")
    assert_bit_identical(load_file("from-packed.safetensors"), from_dense)
    assert sum(int((from_dense[n] == 0).sum()) for n in LENET5) == round(
        0.9 * sum(from_dense[n].numel() for n in LENET5)
    )
    metadata = metadata_of(Path("from-packed.safetensors"))
    assert not any(key in metadata for key in bitmask.METADATA_KEYS)  # a dense file again


def test_score_reads_it(cli, lenet: tuple[Path, Path]) -> None:
    for path, out in zip(lenet, ("s-dense.safetensors", "s-packed.safetensors"), strict=True):
        assert cli("score", path, "-m", "magnitude", "-o", out, "-q").exit_code == 0
    assert_bit_identical(load_file("s-packed.safetensors"), load_file("s-dense.safetensors"))


def test_load_model_decodes_it(lenet: tuple[Path, Path]) -> None:
    dense, packed = (load_model(str(path)) for path in lenet)
    assert_bit_identical(packed.tensors, dense.tensors)
    assert packed.module is not None  # the zoo architecture was rebuilt around decoded tensors
    state = packed.module.state_dict()
    assert all(torch.equal(state[name], dense.tensors[name]) for name in LENET5)


def test_write_model_bitmask_without_a_prunable_list(lenet: tuple[Path, Path]) -> None:
    """As `export --to safetensors --format bitmask` calls it: the input's prunable list is used."""
    model = load_model(str(lenet[0]))
    again = Path("again.safetensors")
    assert write_model(model, str(again), {}, format="bitmask") == again.stat().st_size
    assert metadata_of(again) == metadata_of(lenet[1])  # same encoded tensors, same metadata
    assert_bit_identical(prunecli_load.load_file(again)[0], prunecli_load.load_file(lenet[0])[0])


def test_stdin_in_process(cli, lenet: tuple[Path, Path]) -> None:
    result = cli("inspect", "-", "--json", input=lenet[1].read_bytes())
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["totals"] == report_of(cli("inspect", lenet[0], "--json"))["totals"]


def test_pipe_prune_bitmask_into_inspect(workdir: Path) -> None:
    """`prunecli prune m.safetensors ... --format bitmask -o - | prunecli inspect - --json`."""
    source = write_zoo(workdir / "m.safetensors", "lenet5")
    report = pipe_prune_into_inspect(
        source, "--method", "magnitude", "--sparsity", "0.9", "--format", "bitmask"
    )
    assert report["model"]["path"] == "-"
    assert report["model"]["arch"] == "lenet5"
    total = report["totals"]["prunable_params"]
    assert report["totals"]["prunable_nonzero"] == total - round(0.9 * total)
    assert report["model"]["file_bytes"] < 0.25 * source.stat().st_size
    assert files_in(workdir) == {"m.safetensors"}


# --- bad input -------------------------------------------------------------------------------


def refused(cli, folder: Path, args: tuple[object, ...], *fragments: str) -> Result:
    """Exit 2, one line naming what is wrong, nothing on stdout, the folder untouched."""
    before = files_in(folder)
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("prunecli: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert files_in(folder) == before
    return result


def rewrite(source: Path, target: Path, change) -> Path:
    """Copy a bitmask file with its stored tensors and metadata changed by ``change``."""
    tensors = load_file(source)
    metadata = metadata_of(source)
    change(tensors, metadata)
    with target.open("wb") as stream:
        st.write(stream, tensors, metadata)
    return target


def _drop_value(tensors: dict, metadata: dict) -> None:
    tensors["conv2.weight.__values__"] = tensors["conv2.weight.__values__"][:-1]
    specs = json.loads(metadata["prunecli.bitmask.tensors"])
    specs["conv2.weight"]["nnz"] -= 1
    metadata["prunecli.bitmask.tensors"] = json.dumps(specs)


def _extra_bit(tensors: dict, metadata: dict) -> None:
    packed = tensors["conv2.weight.__bitmask__"]
    byte = int((packed != 0xFF).nonzero()[0])
    free = next(bit for bit in range(8) if not packed[byte] >> bit & 1)
    packed[byte] |= 1 << free


def _short_bitmask(tensors: dict, metadata: dict) -> None:
    tensors["conv2.weight.__bitmask__"] = tensors["conv2.weight.__bitmask__"][:-1]


def _nnz_lies(tensors: dict, metadata: dict) -> None:
    specs = json.loads(metadata["prunecli.bitmask.tensors"])
    specs["conv2.weight"]["nnz"] += 1
    metadata["prunecli.bitmask.tensors"] = json.dumps(specs)


def _version(tensors: dict, metadata: dict) -> None:
    metadata["prunecli.format_version"] = "2"


def _missing_values(tensors: dict, metadata: dict) -> None:
    del tensors["conv2.weight.__values__"]


def _missing_bitmask(tensors: dict, metadata: dict) -> None:
    del tensors["conv2.weight.__bitmask__"]


def _orphan(tensors: dict, metadata: dict) -> None:
    specs = json.loads(metadata["prunecli.bitmask.tensors"])
    del specs["conv2.weight"]
    metadata["prunecli.bitmask.tensors"] = json.dumps(specs)


def _wrong_dtype(tensors: dict, metadata: dict) -> None:
    tensors["conv2.weight.__values__"] = tensors["conv2.weight.__values__"].half()


BAD = [
    ("counts", _drop_value, ("conv2.weight", "inconsistent counts", "bits but")),
    ("extra-bit", _extra_bit, ("conv2.weight", "inconsistent counts", "bits but")),
    ("nnz", _nnz_lies, ("conv2.weight", "inconsistent counts", "metadata says")),
    ("short", _short_bitmask, ("conv2.weight", "bitmask is too short")),
    ("version", _version, ("version '2' is not supported",)),
    (
        "no-values",
        _missing_values,
        ("conv2.weight", "no companion tensor 'conv2.weight.__values__'"),
    ),
    ("no-bitmask", _missing_bitmask, ("conv2.weight", "companion", "__bitmask__")),
    ("orphan", _orphan, ("conv2.weight.__bitmask__", "does not list")),
    ("dtype", _wrong_dtype, ("conv2.weight", "F32")),
]


@pytest.mark.parametrize(("case", "change", "says"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_bitmask_file(cli, lenet: tuple[Path, Path], case: str, change, says) -> None:
    folder = lenet[1].parent
    bad = rewrite(lenet[1], folder / f"{case}.safetensors", change)
    refused(cli, folder, ("inspect", bad), str(bad), *says)
    args = ("prune", bad, "-m", "magnitude", "-s", "0.9", "-o", "out.safetensors")
    refused(cli, folder, args, *says)
    refused(cli, folder, ("score", bad, "-m", "magnitude", "-o", "s.safetensors"), *says)
    result = cli("inspect", "-", input=bad.read_bytes())
    assert result.exit_code == 2 and "standard input" in result.stderr
    assert all(fragment in result.stderr for fragment in says)


def test_unknown_format_option(cli, lenet: tuple[Path, Path]) -> None:
    args = (
        "prune",
        lenet[0],
        "-m",
        "magnitude",
        "-s",
        "0.9",
        "--format",
        "zip",
        "-o",
        "z.safetensors",
    )
    refused(cli, lenet[0].parent, args, "unknown --format 'zip'", "dense, bitmask")


def test_reserved_names_cannot_be_written(cli, workdir: Path) -> None:
    tensors = {"fc.weight": torch.randn(8, 8), "fc.weight.__values__": torch.randn(8, 8)}
    source = write_weights(workdir / "odd.safetensors", tensors)
    args = ("prune", source, "-m", "magnitude", "-s", "0.5", "--format", "bitmask")
    refused(cli, workdir, (*args, "-o", "o.safetensors"), "fc.weight.__values__", "reserves")


# --- the size target of issue 5 --------------------------------------------------------------


def test_vgg16_at_90_percent_is_at_most_a_quarter(cli, workdir: Path) -> None:
    assert cli("init", "vgg16", "-o", "vgg16.safetensors", "-q").exit_code == 0
    for layout in ("dense", "bitmask"):
        args = ("prune", "vgg16.safetensors", "-m", "magnitude", "-s", "0.9", "--format", layout)
        assert cli(*args, "-o", f"{layout}.safetensors", "-q").exit_code == 0
    ratio = Path("bitmask.safetensors").stat().st_size / Path("dense.safetensors").stat().st_size
    assert ratio <= 0.25  # 0.1324 when written: 1 bit + 10% of 32 bits per weight, ≈ 0.1325
    decoded, dense = (
        prunecli_load.load_file(Path(f"{x}.safetensors"))[0] for x in ("bitmask", "dense")
    )
    assert_bit_identical(decoded, dense)

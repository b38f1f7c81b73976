"""Hostile inputs to the readers (issue 12, items 10, 11, 13, 14, 15): every one exits 2 with
one line, reads no more than it must, allocates nothing the input does not hold, and leaves the
folder as it was. Each test builds its hostile input itself."""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MLP, assert_refused, run_refused, write_weights, write_zoo
from safetensors.torch import load_file, save_file

import prunecli.io.checkpoint as checkpoint
from prunecli.errors import BadInput
from prunecli.io import load as prunecli_load
from prunecli.io.jsonfile import MAX_DEPTH, parse_json

REPO = Path(__file__).resolve().parents[2]
PRUNE = ("prune", "model.safetensors", "--method", "magnitude", "--sparsity", "0.5")
DEEP = "[" * 5000 + "]" * 5000
LONG = "9" * 5000


@pytest.fixture
def folder(mlp_file: Path) -> Path:
    return mlp_file.parent


def raw_file(path: Path, header: object, data: bytes = b"") -> Path:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def run_prunecli(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRUNECLI_DEBUG": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "prunecli", *args], cwd=cwd, env=env, timeout=120, **kwargs
    )


# --- item 10: one JSON reader, with a depth and a digits limit, used everywhere -------------


def test_json_reader_limits() -> None:
    assert parse_json('{"a": "[[[[[[[[", "b": [1, [2]]}', "x") == {"a": "[[[[[[[[", "b": [1, [2]]}
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x") is not None
    assert parse_json(json.dumps({"s": LONG}), "x") == {"s": LONG}  # digits in a string are text
    for text, fragment in [
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nests"),
        ("[" * 200_000, "nests"),
        (f"[{LONG}]", "digits"),
        ('{"a": 1, "a": 2}', "twice"),
        ("[NaN]", "NaN"),
        ("[-Infinity]", "Infinity"),
        ("[1,", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
    ]:
        with pytest.raises(BadInput, match=fragment):
            parse_json(text, "x")


def _deep_metadata_file(folder: Path, key: str, value: str) -> None:
    metadata = {"prunecli.arch": "mlp", "prunecli.arch_kwargs": json.dumps(SMALL_MLP), key: value}
    write_weights(folder / "meta.safetensors", load_file(folder / "model.safetensors"), metadata)


@pytest.mark.parametrize("value", [DEEP, f"[{LONG}]"])
@pytest.mark.parametrize("key", ["prunecli.arch_kwargs", "prunecli.input_shape"])
def test_hostile_json_in_metadata(cli, folder: Path, key: str, value: str) -> None:
    _deep_metadata_file(folder, key, value)
    run_refused(cli, folder, ("inspect", "meta.safetensors"), 2, "meta.safetensors", key)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (DEEP.encode(), "nests"),
        (
            ('{"w": {"dtype": "F32", "shape": [' + LONG + '], "data_offsets": [0, 4]}}').encode(),
            "digits",
        ),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {}}', "twice"),
        (b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', "NaN"),
    ],
)
def test_hostile_json_in_the_header(cli, folder: Path, document: bytes, fragment: str) -> None:
    raw_file(folder / "bad.safetensors", document, bytes(4))
    run_refused(cli, folder, ("inspect", "bad.safetensors"), 2, "bad.safetensors", fragment)


def test_hostile_json_on_the_command_line(cli, folder: Path) -> None:
    for kwargs, fragment in [(DEEP, "nests"), (f'{{"widths": [{LONG}]}}', "digits")]:
        args = (*PRUNE, "--arch", "mlp", "--arch-kwargs", kwargs)
        run_refused(cli, folder, args, 2, "--arch-kwargs", fragment)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
@pytest.mark.parametrize("document", [DEEP, f'{{"a": {LONG}}}'])
def test_hostile_json_in_a_folder(cli, workdir: Path, name: str, document: str) -> None:
    model = workdir / "m"
    model.mkdir()
    write_zoo(model / "model.safetensors", "mlp", SMALL_MLP)
    (model / name).write_text(document)
    run_refused(cli, workdir, ("inspect", "m"), 2, name, "not acceptable JSON")


def test_hostile_json_in_bitmask_metadata(cli, folder: Path) -> None:
    assert cli(*PRUNE, "--format", "bitmask", "-o", "bm.safetensors").exit_code == 0
    tensors = load_file(folder / "bm.safetensors")
    write_weights(
        folder / "deep.safetensors",
        tensors,
        {
            "prunecli.format": "bitmask",
            "prunecli.format_version": "1",
            "prunecli.bitmask.tensors": DEEP,
        },
    )
    run_refused(
        cli, folder, ("inspect", "deep.safetensors"), 2, "prunecli.bitmask.tensors", "nests"
    )


# --- item 11 (file parts): sizes checked before allocating; --input-shape names both shapes ---


def _bitmask_file(path: Path, shape: list[int]) -> Path:
    specs = {"w": {"shape": shape, "dtype": "F32", "nnz": 0}}
    metadata = {
        "prunecli.format": "bitmask",
        "prunecli.format_version": "1",
        "prunecli.bitmask.tensors": json.dumps(specs),
    }
    empty = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    values = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    return raw_file(
        path, {"__metadata__": metadata, "w.__bitmask__": empty, "w.__values__": values}
    )


def test_impossible_shapes_are_refused_before_allocating(cli, folder: Path) -> None:
    _bitmask_file(folder / "bm70.safetensors", [0, 2**70])
    run_refused(cli, folder, ("inspect", "bm70.safetensors"), 2, "'w'", "impossible shape")
    raw_file(
        folder / "d70.safetensors",
        {"w": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}},
    )
    run_refused(cli, folder, ("inspect", "d70.safetensors"), 2, "'w'", "impossible shape")
    many = {"w": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}}
    raw_file(folder / "dims.safetensors", many, bytes(4))
    run_refused(cli, folder, ("inspect", "dims.safetensors"), 2, "impossible shape")


def test_huge_claimed_tensor_is_refused_from_the_header(cli, folder: Path) -> None:
    """A 16 GiB tensor claimed by a file of a few bytes: refused before any data is read."""
    huge = {"w": {"dtype": "F32", "shape": [2**32], "data_offsets": [0, 2**34]}}
    raw_file(folder / "huge.safetensors", huge, bytes(8))
    run_refused(cli, folder, ("inspect", "huge.safetensors"), 2, "truncated")


@pytest.mark.parametrize(
    "command",
    [
        ("inspect", "m16.safetensors"),
        ("score", "m16.safetensors", "-m", "synflow", "-o", "s.safetensors"),
        ("prune", "m16.safetensors", "-m", "synflow", "-s", "0.5", "-o", "p.safetensors"),
        ("prune", "m16.safetensors", "-m", "npb", "-s", "0.5", "-o", "p.safetensors"),
        ("export", "m16.safetensors", "-o", "m16.onnx"),
    ],
)
def test_input_shape_that_does_not_fit(cli, workdir: Path, command: tuple[str, ...]) -> None:
    write_zoo(workdir / "m16.safetensors", "mlp", {"widths": [16, 8, 4]})
    args = (*command, "--input-shape", "16,16")
    run_refused(cli, workdir, args, 2, "--input-shape 16,16", "which expects [16]")


# --- item 13: a bitmask folder is read by every command ------------------------------------


@pytest.fixture
def bitmask_folders(workdir: Path) -> Path:
    """``dense/`` (one file), ``sharded/`` (two shards and an index), each pruned to bitmask
    folders ``dense.bm/`` and ``sharded.bm/`` by prunecli itself."""
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    tensors = load_file(workdir / "m.safetensors")
    (workdir / "dense").mkdir()
    save_file(tensors, str(workdir / "dense" / "model.safetensors"))
    (workdir / "sharded").mkdir()
    names = list(tensors)
    weight_map = {}
    for part, chunk in enumerate((names[:3], names[3:]), 1):
        file = f"model-0000{part}-of-00002.safetensors"
        save_file({n: tensors[n] for n in chunk}, str(workdir / "sharded" / file))
        weight_map.update(dict.fromkeys(chunk, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (workdir / "sharded" / checkpoint.INDEX).write_text(json.dumps(index))
    return workdir


@pytest.mark.parametrize("kind", ["dense", "sharded"])
def test_every_command_reads_a_bitmask_folder(cli, bitmask_folders: Path, kind: str) -> None:
    work = bitmask_folders
    arch = ("--arch", "mlp", "--arch-kwargs", json.dumps(SMALL_MLP))
    result = cli("prune", kind, "-m", "magnitude", "-s", "0.5", "--format", "bitmask", "-o", "bm")
    assert result.exit_code == 0, result.stderr
    stored = [n for f in (work / "bm").glob("*.safetensors") for n in load_file(f)]
    assert any(n.endswith(".__bitmask__") for n in stored)  # really a bitmask folder
    pruned = {}
    for file in (work / kind).glob("*.safetensors"):
        pruned.update(load_file(file))
    before = {name: (work / "bm" / name).read_bytes() for name in os.listdir(work / "bm")}

    inspected = cli("inspect", "bm", "--json")
    assert inspected.exit_code == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert sum(s["tensors"] for s in report["model"]["shards"]) == len(pruned)
    assert cli("score", "bm", "-m", "magnitude", "-o", "s.safetensors").exit_code == 0
    again = cli("prune", "bm", "-m", "magnitude", "-s", "0.8", "-o", "again")
    assert again.exit_code == 0, again.stderr
    assert (
        cli(
            "prune", "bm", "-m", "random", "-s", "0.8", "--format", "bitmask", "-o", "again.bm"
        ).exit_code
        == 0
    )
    graph = cli("prune", "bm", "-m", "snip", "-s", "0.7", "--data", "digits", *arch, "-o", "snip")
    assert graph.exit_code == 2 and "--data digits" in graph.stderr  # read, then data refused
    exported = cli("export", "bm", "-o", "e.safetensors")
    assert exported.exit_code == 0, exported.stderr
    decoded = load_file(work / "e.safetensors")
    assert cli("export", "bm", *arch, "-o", "e.onnx", "--no-verify").exit_code in (0, 3)
    np.savez(work / "d.npz", x=np.zeros((8, 12), np.float32), y=np.zeros(8, np.int64))
    retrained = cli("retrain", "bm", "--data", "d.npz", "--epochs", "1", *arch, "-o", "r")
    assert retrained.exit_code == 0, retrained.stderr

    again_tensors = {}
    for file in (work / "again").glob("*.safetensors"):
        again_tensors.update(load_file(file))
    assert set(again_tensors) == set(decoded) == set(pruned)
    for name, tensor in decoded.items():  # what the folder holds, decoded bit for bit
        bm_zero = tensor == 0
        assert bool((again_tensors[name][bm_zero] == 0).all())  # pruning never revives a zero
    assert {name: (work / "bm" / name).read_bytes() for name in os.listdir(work / "bm")} == before


# --- item 14: no memory map, so a truncated input is a message, never SIGBUS ------------------


def test_in_memory_loader_does_not_memory_map(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmap

    import safetensors

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader memory-mapped the file")

    monkeypatch.setattr(mmap, "mmap", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    tensors, _ = prunecli_load.load_file(folder / "model.safetensors")
    expected = load_file(folder / "model.safetensors")
    assert all(torch.equal(tensors[name], expected[name]) for name in expected)


def test_input_truncated_while_it_is_read(
    cli, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process cuts the file after its header was read: a message, exit 2."""
    path = folder / "model.safetensors"
    data = path.read_bytes()
    real = os.preadv

    def truncate_then_read(fd: int, buffers: list, offset: int) -> int:
        os.truncate(path, len(data) // 2)
        return real(fd, buffers, offset)

    monkeypatch.setattr(checkpoint.os, "preadv", truncate_then_read)
    result = cli("inspect", "model.safetensors")
    assert_refused(result, 2, "model.safetensors was truncated while it was being read")


def test_truncated_while_read_in_a_real_process(folder: Path) -> None:
    """The real thing: a 64 MiB file shrinks while `inspect` reads it. Whatever the timing,
    prunecli exits 0 (it read first) or 2 with a message; never a signal."""
    big = {"w": torch.ones(4096, 4096)}
    save_file(big, str(folder / "big.safetensors"))
    size = (folder / "big.safetensors").stat().st_size
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRUNECLI_DEBUG": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "prunecli", "inspect", "big.safetensors", "--include", "w"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while process.poll() is None and not _has_open(process.pid, folder / "big.safetensors"):
        pass
    os.truncate(folder / "big.safetensors", size // 3)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 2), (process.returncode, stderr)
    assert b"Traceback" not in stderr


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(
            os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path.resolve())
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


# --- item 15: stdin read in bounded steps, header first --------------------------------------


def test_endless_stdin_is_refused_at_once(folder: Path) -> None:
    """`yes | prunecli inspect -`: the first 8 bytes decide; the pipe is never drained."""
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        done = run_prunecli("inspect", "-", cwd=folder, stdin=yes.stdout, capture_output=True)
    finally:
        yes.kill()
        yes.wait()
    assert done.returncode == 2, done.stderr
    assert b"standard input" in done.stderr and b"100 MB" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_stdin_claiming_more_than_it_sends_allocates_nothing(folder: Path) -> None:
    """A header claiming 64 GiB on stdin, 8 bytes of data, under a 6 GiB address-space limit."""
    claim = {"w": {"dtype": "F32", "shape": [2**34], "data_offsets": [0, 2**36]}}
    raw_file(folder / "claim.bin", claim, bytes(8))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    with open(folder / "claim.bin", "rb") as stdin:
        done = run_prunecli(
            "inspect", "-", cwd=folder, stdin=stdin, capture_output=True, preexec_fn=limit
        )
    assert done.returncode == 2, done.stderr
    assert b"standard input is truncated" in done.stderr


def test_stdin_is_read_like_a_file(cli, folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    assert cli("inspect", "-", input=data).exit_code == 0
    assert_refused(cli("inspect", "-", input=data + b"x"), 2, "belong to none")
    assert_refused(cli("inspect", "-", input=data[:-3]), 2, "standard input is truncated")
    assert_refused(cli("inspect", "-", input=data[:5]), 2, "only 5 bytes")
    assert_refused(cli("inspect", "-", input=b"y" * 4096), 2, "100 MB")


# --- messages that name the real reason ----------------------------------------------------


def test_paths_that_cannot_be_read(cli, folder: Path) -> None:
    os.symlink("loop-b.safetensors", folder / "loop-a.safetensors")
    os.symlink("loop-a.safetensors", folder / "loop-b.safetensors")
    os.symlink("gone.safetensors", folder / "dangling.safetensors")
    os.mkfifo(folder / "fifo.safetensors")
    for args, fragments in [
        (("inspect", "loop-a.safetensors"), ("loop of symbolic links",)),
        (("inspect", "dangling.safetensors"), ("symbolic link to gone.safetensors",)),
        (("inspect", "fifo.safetensors"), ("not a regular file", "FIFO")),
        (("inspect", "/dev/zero"), ("not a regular file", "character device")),
        (("inspect", "model.safetensors/x.safetensors"), ("is a file, not a folder",)),
        (("inspect", "x" * 300 + ".safetensors"), ("too long",)),
        (
            (*PRUNE, "-o", "y" * 300 + ".safetensors"),
            ("file name is", "more than the 255"),
        ),
    ]:
        result = cli(*args)
        assert "is empty" not in result.stderr
        assert_refused(result, 2, *fragments)


def test_data_paths_that_cannot_be_read(cli, folder: Path) -> None:
    os.mkfifo(folder / "fifo.npz")
    os.symlink("gone.npz", folder / "dangling.npz")
    base = ("prune", "model.safetensors", "-m", "snip", "-s", "0.5", "--arch", "mlp")
    for data, fragment in [("fifo.npz", "FIFO"), ("dangling.npz", "symbolic link to gone.npz")]:
        args = (*base, "--arch-kwargs", json.dumps(SMALL_MLP), "--data", data)
        run_refused(cli, folder, args, 2, f"--data {data}", fragment)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            {"dtype": "F32", "shape": [16], "data_offsets": [-64, 0]},
            "invalid data_offsets [-64, 0]",
        ),
        ({"dtype": "F32", "shape": [16], "data_offsets": [64, 0]}, "invalid data_offsets"),
        ({"dtype": "F32", "shape": [-4, -4], "data_offsets": [0, 64]}, "negative dimension"),
        ({"dtype": "F32", "shape": [16.0], "data_offsets": [0, 64]}, "malformed"),
        ({"dtype": "F32", "shape": [True, 16], "data_offsets": [0, 64]}, "malformed"),
        ({"dtype": "F32" * 100, "shape": [16], "data_offsets": [0, 64]}, "unknown dtype"),
        ({"dtype": ["F32"], "shape": [16], "data_offsets": [0, 64]}, "unknown dtype"),
    ],
)
def test_header_entries_say_what_is_wrong(cli, folder: Path, entry: dict, fragment: str) -> None:
    raw_file(folder / "bad.safetensors", {"w": entry}, bytes(64))
    result = run_refused(cli, folder, ("inspect", "bad.safetensors"), 2, fragment)
    assert "offsets span 64" not in result.stderr


def test_header_layouts(cli, folder: Path) -> None:
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    later = {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}
    raw_file(folder / "overlap.safetensors", {"a": entry, "b": later}, bytes(12))
    run_refused(cli, folder, ("inspect", "overlap.safetensors"), 2, "overlaps")
    (folder / "length.safetensors").write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    run_refused(cli, folder, ("inspect", "length.safetensors"), 2, "header length field")
    raw_file(folder / "list.safetensors", [entry])
    run_refused(cli, folder, ("inspect", "list.safetensors"), 2, "not a JSON object")
    raw_file(folder / "meta.safetensors", {"__metadata__": {"k": ["v"]}, "a": entry}, bytes(8))
    run_refused(cli, folder, ("inspect", "meta.safetensors"), 2, "strings to strings")


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors"])
def test_index_names_a_shard_outside_the_folder(cli, workdir: Path, shard: str) -> None:
    write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)
    (workdir / "m").mkdir()
    (workdir / "m" / "sub").mkdir()
    shutil.copy(workdir / "model.safetensors", workdir / "m" / "sub" / "model.safetensors")
    names = list(load_file(workdir / "model.safetensors"))
    index = {"weight_map": dict.fromkeys(names, shard)}
    (workdir / "m" / checkpoint.INDEX).write_text(json.dumps(index))
    run_refused(cli, workdir, ("inspect", "m"), 2, "outside the folder")


# --- --data .npz: no pickles, no bombs -------------------------------------------------------


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def test_npz_with_objects_is_never_unpickled(cli, folder: Path) -> None:
    marker = folder / "pwned"
    objects = np.empty(1, dtype=object)
    objects[0] = _Marker(str(marker))
    np.savez(folder / "evil.npz", x=objects, y=np.zeros(1, np.int64))
    assert pickle.dumps(_Marker("x"))  # the archive really holds a pickle
    args = ("prune", "model.safetensors", "-m", "snip", "-s", "0.5", "--data", "evil.npz")
    run_refused(cli, folder, args, 2, "evil.npz", "Python objects")
    assert not marker.exists()


def _npy(shape: tuple[int, ...], data: bytes = b"", descr: str = "<f4") -> bytes:
    import io

    stream = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue() + data


def test_npz_declaring_more_than_it_holds(cli, folder: Path) -> None:
    """458 bytes that declare a 4 TB array: refused from the array's own header."""
    with zipfile.ZipFile(folder / "bomb.npz", "w") as archive:
        archive.writestr("x.npy", _npy((10**12,)))
        archive.writestr("y.npy", _npy((1,), bytes(8), "<i8"))
    args = ("prune", "model.safetensors", "-m", "snip", "-s", "0.5", "--data", "bomb.npz")
    run_refused(cli, folder, args, 2, "bomb.npz", "'x'", "needs 4000000000000 bytes")


def test_npz_expanding_past_memory(cli, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed archive that expands beyond memory (memory made small for the test)."""
    import prunecli.io.npz as npz

    x = np.zeros((4096, 12), np.float32)
    np.savez_compressed(folder / "big.npz", x=x, y=np.zeros(4096, np.int64))
    assert (folder / "big.npz").stat().st_size < 10_000
    monkeypatch.setattr(npz, "_memory_bytes", lambda: 100_000)
    args = ("prune", "model.safetensors", "-m", "snip", "-s", "0.5", "--data", "big.npz")
    run_refused(cli, folder, args, 2, "big.npz", "more than this machine's memory")

"""Bad input: exit 2 (or 3), one short message on stderr, no traceback, and no file left behind."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MLP, assert_refused, files_in, run_refused, write_weights, write_zoo
from safetensors.torch import load_file

import prunecli.io.safetensors as st

PRUNE = ("prune", "model.safetensors", "--method", "magnitude", "--sparsity", "0.5")


@pytest.fixture
def folder(mlp_file: Path) -> Path:
    """The working folder holding model.safetensors, the small MLP."""
    return mlp_file.parent


# --- unreadable model files ----------------------------------------------------------------


def write_header(path: Path, header: object, data: bytes = b"", claim: int | None = None) -> Path:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    length = len(encoded) if claim is None else claim
    path.write_bytes(struct.pack("<Q", length) + encoded + data)
    return path


def make_bad_files(folder: Path) -> None:
    full = (folder / "model.safetensors").read_bytes()
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "half.safetensors").write_bytes(full[: len(full) // 2])
    (folder / "tiny.safetensors").write_bytes(b"\x01\x02")
    (folder / "text.safetensors").write_text("this is not a model, just some text\n")
    (folder / "dir.safetensors").mkdir()
    write_header(folder / "claims.safetensors", {}, claim=10_000)
    (folder / "notjson.safetensors").write_bytes(struct.pack("<Q", 8) + b"\xff\xfe{{{{{{")
    write_header(folder / "list.safetensors", [1, 2, 3])
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    write_header(folder / "short.safetensors", {"a.weight": entry}, bytes(8))
    bad_dtype = {"dtype": "F4", "shape": [2, 2], "data_offsets": [0, 16]}
    write_header(folder / "dtype.safetensors", {"a.weight": bad_dtype}, bytes(16))
    wrong_size = {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}
    write_header(folder / "offsets.safetensors", {"a.weight": wrong_size}, bytes(16))
    write_header(folder / "meta.safetensors", {"__metadata__": {"k": 1}})
    write_header(folder / "overlap.safetensors", {"a.weight": entry, "b.weight": entry}, bytes(16))


BAD_FILES = [
    ("missing.safetensors", "does not exist"),
    ("dir.safetensors", "is a folder"),
    ("empty.safetensors", "is empty"),
    ("half.safetensors", "truncated"),
    ("tiny.safetensors", "not a safetensors file"),
    ("text.safetensors", "not a safetensors file"),
    ("claims.safetensors", "claims 10000 bytes"),
    ("notjson.safetensors", "not JSON"),
    ("list.safetensors", "not a JSON object"),
    ("short.safetensors", "truncated"),
    ("dtype.safetensors", "unknown dtype"),
    ("offsets.safetensors", "a.weight"),
    ("meta.safetensors", "__metadata__"),
    ("overlap.safetensors", "overlap.safetensors"),
]


@pytest.mark.parametrize(("name", "says"), BAD_FILES, ids=[n for n, _ in BAD_FILES])
def test_unreadable_model(cli, folder: Path, name: str, says: str) -> None:
    make_bad_files(folder)
    run_refused(cli, folder, ("inspect", name), 2, name, says)
    run_refused(cli, folder, ("prune", name, "-m", "magnitude", "-s", "0.5"), 2, name, says)
    run_refused(cli, folder, ("score", name, "-m", "magnitude", "-o", "s.safetensors"), 2, says)


def test_bad_stdin(cli, folder: Path) -> None:
    assert_refused(cli("inspect", "-", input=b""), 2, "standard input is empty")
    assert_refused(
        cli("prune", "-", "-m", "random", "-s", "0.5", input=b"garbage!!"), 2, "standard input"
    )
    assert files_in(folder) == {"model.safetensors"}


# --- impossible options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment", "command"),
    [
        (("inspect", "model.safetensors", "--bogus"), "No such option: --bogus", "inspect"),
        (("inspect", "model.safetensors", "--max-collapsed", "-1"), "--max-collapsed", "inspect"),
        ((*PRUNE, "--iterations", "abc"), "'--iterations'", "prune"),
        (("prune",), "Missing argument", "prune"),
        ((*PRUNE[:3], "-s", "0.5", "--no-such-option"), "--no-such-option", "prune"),
        (("inspect",), "Missing argument 'model'", "inspect"),
        (("bogus",), "No such command 'bogus'", ""),
    ],
)
def test_usage_errors_are_two_lines(
    cli, folder: Path, args: tuple[str, ...], fragment: str, command: str
) -> None:
    # Click's own checks (unknown option, wrong type, missing argument) in the project's format
    result = run_refused(cli, folder, args, 2, fragment)
    hint = f"prunecli {command} --help" if command else "prunecli --help"
    assert result.stderr.splitlines()[1] == f"  hint: see '{hint}'"


def test_sparsity_or_pattern_is_required(cli, folder: Path) -> None:
    # --sparsity is optional for Click since --pattern N:M may set it instead
    args = ("prune", "model.safetensors", "-m", "magnitude")
    result = run_refused(cli, folder, args, 2, "--sparsity is required")
    assert "--pattern" in result.stderr


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "abc", "nan", "inf", "100%", "", "-5%"])
def test_bad_sparsity(cli, folder: Path, value: str) -> None:
    args = ("prune", "model.safetensors", "-m", "magnitude", "--sparsity", value)
    run_refused(cli, folder, args, 2, "--sparsity")


def test_bad_min_sparsity(cli, folder: Path) -> None:
    run_refused(
        cli, folder, ("inspect", "model.safetensors", "--min-sparsity", "abc"), 2, "--min-sparsity"
    )
    run_refused(
        cli, folder, ("inspect", "model.safetensors", "--min-sparsity", "1.2"), 2, "--min-sparsity"
    )


def test_unknown_method_suggests(cli, folder: Path) -> None:
    args = ("prune", "model.safetensors", "--method", "magnitud", "-s", "0.5")
    run_refused(cli, folder, args, 2, "unknown method 'magnitud'", "did you mean 'magnitude'")
    run_refused(
        cli, folder, ("score", "model.safetensors", "-m", "randon"), 2, "did you mean 'random'"
    )


def test_unknown_scope_and_schedule(cli, folder: Path) -> None:
    run_refused(cli, folder, (*PRUNE, "--scope", "glob"), 2, "unknown scope 'glob'", "global")
    run_refused(cli, folder, (*PRUNE, "--schedule", "cubic"), 2, "unknown schedule", "exponential")


def test_unknown_arch_suggests(cli, folder: Path) -> None:
    run_refused(cli, folder, (*PRUNE, "--arch", "vg16"), 2, "unknown architecture 'vg16'", "vgg16")
    run_refused(
        cli, folder, ("init", "resnet18x", "-o", "r.safetensors"), 2, "did you mean 'resnet18'"
    )
    run_refused(
        cli, folder, ("inspect", "model.safetensors", "--arch", "mpl"), 2, "did you mean 'mlp'"
    )
    run_refused(cli, folder, ("init", "vgg99"), 2, "unknown architecture")


def test_arch_that_does_not_fit(cli, folder: Path) -> None:
    run_refused(
        cli, folder, (*PRUNE, "--arch", "lenet300"), 2,
        "does not fit lenet300", "'fc1.weight'", "[16, 12]", "[300, 784]",
    )  # fmt: skip
    kwargs = json.dumps({"widths": [12, 17, 8, 4]})
    run_refused(
        cli, folder, ("inspect", "model.safetensors", "--arch", "mlp", "--arch-kwargs", kwargs), 2,
        "'fc1.weight'", "[16, 12]", "[17, 12]",
    )  # fmt: skip


def test_bad_arch_kwargs(cli, folder: Path) -> None:
    run_refused(
        cli, folder, (*PRUNE, "--arch", "mlp", "--arch-kwargs", "{bad"), 2, "not valid JSON"
    )
    run_refused(cli, folder, (*PRUNE, "--arch", "mlp", "--arch-kwargs", "[1, 2]"), 2, "JSON object")
    run_refused(cli, folder, (*PRUNE, "--arch", "mlp", "--arch-kwargs", '{"depth": 3}'), 2, "depth")
    run_refused(cli, folder, ("init", "mlp", "--arch-kwargs", '{"widths": [0, 3]}'), 2, "widths")


def test_bad_arch_import_path(cli, folder: Path, fresh_module_name) -> None:
    run_refused(
        cli, folder, (*PRUNE, "--arch", "no_such_pkg.mod:make"), 2, "cannot import", "no_such_pkg"
    )
    name = fresh_module_name("notnet", "def make():\n    return 42\nVALUE = 3\n")
    run_refused(cli, folder, (*PRUNE, "--arch", f"{name}:missing"), 2, "cannot import")
    run_refused(cli, folder, (*PRUNE, "--arch", f"{name}:VALUE"), 2, "not callable")
    run_refused(cli, folder, (*PRUNE, "--arch", f"{name}:make"), 2, "not a torch.nn.Module")


def test_iterations_zero(cli, folder: Path) -> None:
    run_refused(cli, folder, (*PRUNE, "--iterations", "0"), 2, "--iterations")


def test_method_and_scores_together(cli, folder: Path) -> None:
    assert (
        cli("score", "model.safetensors", "-m", "magnitude", "-o", "s.safetensors", "-q").exit_code
        == 0
    )
    run_refused(cli, folder, (*PRUNE, "--scores", "s.safetensors"), 2, "--method", "--scores")
    run_refused(cli, folder, ("prune", "model.safetensors", "-s", "0.5"), 2, "--method", "--scores")
    args = (
        "prune",
        "model.safetensors",
        "--scores",
        "s.safetensors",
        "-s",
        "0.5",
        "--iterations",
        "3",
    )
    run_refused(cli, folder, args, 2, "--iterations")
    run_refused(cli, folder, ("score", "model.safetensors"), 2, "--method is required")


def test_bad_scores_file(cli, folder: Path) -> None:
    run_refused(
        cli,
        folder,
        ("prune", "model.safetensors", "--scores", "nope.safetensors", "-s", "0.5"),
        2,
        "nope.safetensors",
    )
    write_weights(folder / "wrong.safetensors", {"fc1.weight": torch.rand(3, 3)})
    args = ("prune", "model.safetensors", "--scores", "wrong.safetensors", "-s", "0.5")
    run_refused(cli, folder, args, 2, "fc1.weight")
    write_weights(folder / "partial.safetensors", {"fc1.weight": torch.rand(16, 12)})
    args = ("prune", "model.safetensors", "--scores", "partial.safetensors", "-s", "0.5")
    run_refused(cli, folder, args, 2, "no score", "'fc2.weight'")
    (folder / "text.safetensors").write_text("not scores\n")
    args = ("prune", "model.safetensors", "--scores", "text.safetensors", "-s", "0.5")
    run_refused(cli, folder, args, 2, "text.safetensors", "not a safetensors file")
    nan = torch.rand(16, 12)
    nan[0, 0] = float("nan")
    write_weights(
        folder / "nan.safetensors",
        {"fc1.weight": nan, "fc2.weight": torch.rand(8, 16), "fc3.weight": torch.rand(4, 8)},
    )
    args = ("prune", "model.safetensors", "--scores", "nan.safetensors", "-s", "0.5")
    run_refused(cli, folder, args, 2, "fc1.weight", "finite")


# --- models that cannot be pruned ------------------------------------------------------------


def test_no_prunable_tensor(cli, folder: Path) -> None:
    write_weights(
        folder / "flat.safetensors", {"a.bias": torch.randn(4), "norm.weight": torch.ones(4)}
    )
    run_refused(
        cli,
        folder,
        ("prune", "flat.safetensors", "-m", "magnitude", "-s", "0.5"),
        3,
        "no prunable tensor",
    )
    run_refused(cli, folder, ("inspect", "flat.safetensors"), 3, "no prunable tensor")
    run_refused(cli, folder, (*PRUNE, "--include", "fc1.bias"), 2, "--include", "fc1.bias")
    run_refused(cli, folder, (*PRUNE, "--exclude", "*"), 3, "no prunable tensor")
    run_refused(cli, folder, (*PRUNE, "--include", "re:["), 2, "regular expression")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight(cli, folder: Path, bad: float) -> None:
    weight = torch.randn(6, 4)
    weight[2, 1] = bad
    write_weights(
        folder / "bad.safetensors", {"ok.weight": torch.randn(3, 6), "hidden.weight": weight}
    )
    for method in ("magnitude", "random"):
        args = ("prune", "bad.safetensors", "-m", method, "-s", "0.5", "-o", "-")
        run_refused(cli, folder, args, 2, "'hidden.weight'", "NaN or inf")
    run_refused(cli, folder, ("score", "bad.safetensors", "-m", "magnitude"), 2, "'hidden.weight'")


# --- where the output goes -----------------------------------------------------------------


def test_output_is_the_input(cli, folder: Path) -> None:
    for target in ("model.safetensors", "./model.safetensors", str(folder / "model.safetensors")):
        for force in ((), ("--force",)):
            run_refused(cli, folder, (*PRUNE, "-o", target, *force), 2, "is the input file")
    os.symlink(folder / "model.safetensors", folder / "link.safetensors")
    run_refused(cli, folder, (*PRUNE, "-o", "link.safetensors", "--force"), 2, "is the input file")
    assert (
        cli("score", "model.safetensors", "-m", "magnitude", "-o", "s.safetensors", "-q").exit_code
        == 0
    )
    args = (
        "prune",
        "model.safetensors",
        "--scores",
        "s.safetensors",
        "-s",
        "0.5",
        "-o",
        "s.safetensors",
        "--force",
    )
    run_refused(cli, folder, args, 2, "is the input file")


def test_output_folder_missing(cli, folder: Path) -> None:
    run_refused(
        cli, folder, (*PRUNE, "-o", "nowhere/out.safetensors"), 2, "nowhere", "does not exist"
    )
    run_refused(cli, folder, ("init", "mlp", "-o", "nowhere/m.safetensors"), 2, "does not exist")


def test_output_is_a_folder(cli, folder: Path) -> None:
    (folder / "sub").mkdir()
    run_refused(cli, folder, (*PRUNE, "-o", "sub"), 2, "is a folder")
    run_refused(cli, folder, (*PRUNE, "-o", "sub", "--force"), 2, "is a folder")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_output_folder_not_writable(cli, folder: Path) -> None:
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run_refused(cli, folder, (*PRUNE, "-o", "locked/out.safetensors"), 2, "not writable")
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_output_folder_refusing_files_even_to_root(cli, folder: Path) -> None:
    """sysfs takes no new files, whoever asks: os.access alone would let root through."""
    run_refused(cli, folder, (*PRUNE, "-o", "/sys/out.safetensors"), 2, "/sys", "not writable")
    args = ("inspect", "model.safetensors", "--report", "/sys/r.json")
    run_refused(cli, folder, args, 2, "not writable")


def test_existing_output_needs_force(cli, folder: Path) -> None:
    (folder / "model.pruned.safetensors").write_bytes(b"keep me")
    run_refused(cli, folder, PRUNE, 2, "already exists", "--force")
    (folder / "scores.safetensors").write_bytes(b"keep me too")
    run_refused(
        cli,
        folder,
        ("score", "model.safetensors", "-m", "magnitude", "-o", "scores.safetensors"),
        2,
        "--force",
    )
    run_refused(cli, folder, ("init", "mlp", "-o", "scores.safetensors"), 2, "already exists")
    result = cli(*PRUNE, "--force", "-q")
    assert result.exit_code == 0, result.stderr
    assert (folder / "model.pruned.safetensors").read_bytes() != b"keep me"
    assert files_in(folder) == {
        "model.safetensors",
        "model.pruned.safetensors",
        "scores.safetensors",
    }


def test_bad_report_path_writes_nothing(cli, folder: Path) -> None:
    out = ("-o", "out.safetensors")
    run_refused(cli, folder, (*PRUNE, *out, "--report", "r.txt"), 2, "--report r.txt", ".json")
    run_refused(cli, folder, (*PRUNE, *out, "--report", "nowhere/r.json"), 2, "does not exist")
    run_refused(cli, folder, (*PRUNE, *out, "--report", "out.json", "-o", "out.json"), 2)
    (folder / "old.json").write_text("{}")
    run_refused(cli, folder, (*PRUNE, *out, "--report", "old.json"), 2, "already exists")
    run_refused(
        cli,
        folder,
        ("inspect", "model.safetensors", "--report", "r.csv"),
        2,
        "unknown report format",
    )
    score = ("score", "model.safetensors", "-m", "magnitude", "-o", "s.safetensors")
    run_refused(cli, folder, (*score, "--report", "nowhere/r.md"), 2, "does not exist")


def test_failed_write_leaves_no_temporary(
    cli, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash half-way through writing (e.g. disk full) removes the partial file."""

    def half_then_fail(stream, tensors, metadata) -> int:
        stream.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "write", half_then_fail)
    result = run_refused(
        cli, folder, (*PRUNE, "-o", "out.safetensors"), 2, "out.safetensors", "No space left"
    )
    assert "nothing was written" in result.stderr


# --- .pt2 inputs -----------------------------------------------------------------------------


class Boom:
    """A pickle that would create a file if anything unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_pt2(cli, folder: Path) -> None:
    (folder / "junk.pt2").write_bytes(b"not a zip archive at all")
    run_refused(cli, folder, ("inspect", "junk.pt2"), 2, "junk.pt2", ".pt2")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    torch.export.save(torch.export.export(net, (torch.randn(1, 3),)), str(folder / "good.pt2"))
    data = (folder / "good.pt2").read_bytes()
    (folder / "cut.pt2").write_bytes(data[: len(data) // 2])
    run_refused(
        cli,
        folder,
        ("prune", "cut.pt2", "-m", "magnitude", "-s", "0.5", "-o", "o.pt2"),
        2,
        "cut.pt2",
    )
    run_refused(
        cli,
        folder,
        ("prune", "good.pt2", "--arch", "mlp", "-m", "magnitude", "-s", "0.5"),
        2,
        "drop --arch",
    )
    run_refused(
        cli,
        folder,
        ("prune", "model.safetensors", "-m", "magnitude", "-s", "0.5", "-o", "o.pt2"),
        3,
        ".pt2",
    )
    run_refused(cli, folder, ("inspect", "missing.pt2"), 2, "does not exist")


def test_pt2_with_pickled_objects_is_not_unpickled(cli, folder: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    torch.export.save(torch.export.export(net, (torch.randn(1, 3),)), str(folder / "good.pt2"))
    sentinel = folder.parent / f"{folder.name}-UNPICKLED"
    payload = folder / "payload.pt"
    torch.save({"x": Boom(str(sentinel))}, str(payload))
    with (
        zipfile.ZipFile(folder / "good.pt2") as source,
        zipfile.ZipFile(folder / "evil.pt2", "w") as evil,
    ):
        for info in source.infolist():
            evil.writestr(info, source.read(info))
        root = source.infolist()[0].filename.split("/")[0]
        evil.writestr(f"{root}/data/constants/evil.pt", payload.read_bytes())
    payload.unlink()
    (folder / "good.pt2").unlink()
    run_refused(cli, folder, ("inspect", "evil.pt2"), 2, "evil.pt2", "unpickle")
    run_refused(
        cli, folder, ("prune", "evil.pt2", "-m", "magnitude", "-s", "0.5", "-o", "x.safetensors"), 2
    )
    assert not sentinel.exists()


def test_arch_kwargs_for_wrong_zoo(cli, workdir: Path) -> None:
    write_zoo(workdir / "lenet.safetensors", "lenet300")
    before = files_in(workdir)
    args = ("prune", "lenet.safetensors", "-m", "magnitude", "-s", "0.5", "--arch", "mlp")
    result = cli(*args, "--arch-kwargs", json.dumps(SMALL_MLP))
    assert_refused(result, 2, "does not fit mlp", "'fc1.weight'", "[300, 784]", "[16, 12]")
    assert files_in(workdir) == before


def test_debug_shows_traceback(cli, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNECLI_DEBUG", "1")
    result = cli("inspect", "missing.safetensors")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "does not exist" in result.stderr


# --- malformed prunecli metadata (the file names a zoo architecture, so it is trusted) --------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prunecli.input_shape", "garbage"),
        ("prunecli.input_shape", "5"),
        ("prunecli.num_classes", "ten"),
        ("prunecli.arch_kwargs", "{oops"),
    ],
)
def test_malformed_metadata(cli, folder: Path, key: str, value: str) -> None:
    metadata = {"prunecli.arch": "mlp", "prunecli.arch_kwargs": json.dumps(SMALL_MLP), key: value}
    write_weights(folder / "meta.safetensors", load_file(folder / "model.safetensors"), metadata)
    run_refused(cli, folder, ("inspect", "meta.safetensors"), 2, "meta.safetensors", key)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_refuses_binary_to_terminal(folder: Path) -> None:
    """`-o -` with stdout on a terminal: refused before any work (run for real, with a pty)."""
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prunecli", *PRUNE, "-o", "-"],
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=folder,
            timeout=60,
            env={**os.environ, "PRUNECLI_DEBUG": ""},
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert b"refusing to write a binary model to the terminal" in done.stderr
    assert b"Traceback" not in done.stderr
    assert files_in(folder) == {"model.safetensors"}

"""Outputs that could lose data (issue 12, "Data loss" 4–9 and the output-side promises).

Every case builds its hostile layout in tmp_path and checks the exit code, the one- or two-line
message, that every input is byte-identical afterwards and that no file (hidden temporaries
included) was left behind. Signals and standard output need a real process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MLP, assert_refused, files_in, metadata_of, write_weights, write_zoo

import prunecli.io.atomic as atomic
import prunecli.io.safetensors as st
from prunecli.io.checkpoint import INDEX
from prunecli.streaming import output as stream_output

ROOT = Path(__file__).resolve().parents[2]
MAGNITUDE = ("-m", "magnitude", "-s", "0.5")


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too) with a hash of each regular file's bytes."""
    state = {}
    for name in sorted(files_in(folder)):
        path = folder / name
        if path.is_symlink():
            state[name] = "link:" + os.readlink(path)
        elif path.is_file():
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[name] = "folder" if path.is_dir() else "other"
    return state


def refused_here(cli, folder: Path, args: tuple[object, ...], *fragments: str, code: int = 2):
    """``prunecli ARGS`` is refused and leaves ``folder`` exactly as it was."""
    before = snapshot(folder)
    result = cli(*args)
    assert_refused(result, code, *fragments)
    assert snapshot(folder) == before
    return result


def model_folder(path: Path, seed: int = 0) -> Path:
    """A Hugging Face-like folder: model.safetensors, config.json, tokenizer.json."""
    path.mkdir(parents=True)
    write_zoo(path / "model.safetensors", "mlp", SMALL_MLP, seed)
    (path / "config.json").write_text('{"hidden": 16}')
    (path / "tokenizer.json").write_text('{"vocab": {}}')
    return path


def sharded_folder(path: Path) -> Path:
    path.mkdir()
    tensors = {"a.weight": torch.randn(8, 8), "b.weight": torch.randn(4, 8)}
    write_weights(path / "model-1.safetensors", {"a.weight": tensors["a.weight"]})
    write_weights(path / "model-2.safetensors", {"b.weight": tensors["b.weight"]})
    index = {
        "metadata": {},
        "weight_map": {"a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors"},
    }
    (path / INDEX).write_text(json.dumps(index))
    (path / "config.json").write_text("{}")
    return path


def hidden(folder: Path) -> list[str]:
    return [name for name in files_in(folder) if "/." in "/" + name]


# --- 4, 9: an output that is, holds or lies inside the input ---------------------------------


def test_output_holding_or_inside_the_input_folder(cli, workdir: Path) -> None:
    model_folder(workdir / "D" / "in")
    (workdir / "D" / "other.txt").write_text("not prunecli's")
    prune = ("prune", "D/in", *MAGNITUDE)
    for force in ((), ("--force",)):
        refused_here(cli, workdir, (*prune, "-o", "D", *force), "output D holds the input D/in")
        refused_here(cli, workdir, (*prune, "-o", "D/in", *force), "is the input folder")
        refused_here(cli, workdir, (*prune, "-o", "D/in/", *force), "is the input folder")
        refused_here(cli, workdir, (*prune, "-o", "D/in/sub", *force), "lies inside the input")
        refused_here(cli, workdir, (*prune, "-o", ".", *force), "holds the input")
        refused_here(cli, workdir, (*prune, "-o", "D/in/config.json", *force), "config.json")
    os.symlink("D/in", workdir / "alias")  # the same folder under another name
    refused_here(cli, workdir, (*prune, "-o", "alias", "--force"), "is the input folder")


def test_output_holding_an_input_file(cli, workdir: Path) -> None:
    (workdir / "sub").mkdir()
    write_zoo(workdir / "sub" / "m.safetensors", "mlp", SMALL_MLP)
    args = ("prune", "sub/m.safetensors", *MAGNITUDE, "--force")
    refused_here(cli, workdir, (*args, "-o", "sub"), "holds the input sub/m.safetensors")
    refused_here(cli, workdir, (*args, "-o", str(workdir)), "holds the input")


def test_current_folder_is_never_an_output(cli, workdir: Path, monkeypatch) -> None:
    """``-o .`` (or a folder above it) would be renamed away under the user's shell."""
    model_folder(workdir / "in")
    (workdir / "here").mkdir()
    monkeypatch.chdir(workdir / "here")
    refused_here(
        cli, workdir, ("prune", "../in", *MAGNITUDE, "-o", ".", "--force"), "current folder"
    )
    refused_here(
        cli, workdir, ("prune", "../in", *MAGNITUDE, "-o", "..", "--force"), "holds the input"
    )


def test_default_output_is_beside_the_resolved_folder(cli, workdir: Path, monkeypatch) -> None:
    model = model_folder(workdir / "model")
    (model / "sub").mkdir()
    monkeypatch.chdir(model)
    assert cli("prune", ".", *MAGNITUDE, "-q").exit_code == 0
    assert sorted(files_in(workdir / "model.pruned")) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    monkeypatch.chdir(model / "sub")
    result = cli("prune", "..", *MAGNITUDE, "-q")
    assert_refused(result, 2, "model.pruned already exists")  # the same place, not ./...pruned
    assert cli("prune", "..", *MAGNITUDE, "-q", "--force").exit_code == 0
    assert files_in(model / "sub") == set() and not hidden(workdir)


def test_force_replaces_only_a_folder_prunecli_wrote(cli, workdir: Path) -> None:
    model_folder(workdir / "in")
    prune = ("prune", "in", *MAGNITUDE, "-o", "out", "-q")
    assert cli(*prune).exit_code == 0
    refused_here(cli, workdir, prune, "out already exists", "--force")
    assert cli(*prune, "-s", "0.7", "--force").exit_code == 0  # its own output: replaced
    assert metadata_of(workdir / "out" / "model.safetensors")["prunecli.sparsity.target"] == "0.7"
    for extra in ("notes.txt", "keep.bin"):  # anything else in it: never replaced
        (workdir / "out" / extra).write_text("mine")
        refused_here(cli, workdir, (*prune, "--force"), "prunecli did not write")
        (workdir / "out" / extra).unlink()
    (workdir / "out" / "deeper").mkdir()
    refused_here(cli, workdir, (*prune, "--force"), "prunecli did not write")
    shutil.rmtree(workdir / "out")
    (workdir / "out").mkdir()  # someone's folder holding only a config.json of their own
    (workdir / "out" / "config.json").write_text("{}")
    refused_here(cli, workdir, (*prune, "--force"), "prunecli did not write")
    (workdir / "out" / "config.json").unlink()  # an empty folder loses nothing
    assert cli(*prune, "--force").exit_code == 0
    assert not hidden(workdir)


# --- 5, 6: no write replaces anything read ---------------------------------------------------


def test_report_never_replaces_an_input(cli, workdir: Path) -> None:
    folder = sharded_folder(workdir / "ckpt")
    refused_here(
        cli, workdir, ("inspect", "ckpt", "--report", f"ckpt/{INDEX}"), INDEX, "part of the input"
    )
    args = ("prune", "ckpt", *MAGNITUDE, "--report", "ckpt/config.json", "--force")
    refused_here(cli, workdir, args, "ckpt/config.json, part of the input folder")
    # a shard linked from elsewhere is protected where it really lives
    shutil.move(folder / "config.json", workdir / "real-config.json")
    os.symlink(workdir / "real-config.json", folder / "config.json")
    args = ("inspect", "ckpt", "--report", "real-config.json", "--force")
    refused_here(cli, workdir, args, "ckpt/config.json, part of the input folder")


def test_report_and_output_hard_links_and_each_other(cli, workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    os.link(workdir / "m.safetensors", workdir / "hard.json")
    refused_here(
        cli,
        workdir,
        ("inspect", "m.safetensors", "--report", "hard.json", "--force"),
        "is the input file",
    )
    args = ("prune", "m.safetensors", *MAGNITUDE, "-o", "x.json", "--report", "./x.json")
    refused_here(cli, workdir, args, "--report x.json is the same path as output x.json")


def test_inspect_report_needs_force_like_every_output(cli, workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    (workdir / "r.json").write_text("my notes")
    refused_here(
        cli, workdir, ("inspect", "m.safetensors", "--report", "r.json"), "r.json already exists"
    )
    assert cli("inspect", "m.safetensors", "--report", "r.json", "--force", "-q").exit_code == 0
    assert json.loads((workdir / "r.json").read_text())["command"] == "inspect"


def test_data_rewind_and_scores_are_inputs_too(cli, workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    write_zoo(workdir / "init.safetensors", "mlp", SMALL_MLP, seed=1)
    x = torch.randn(40, 12)
    write_weights(workdir / "d.safetensors", {"x": x, "y": (x[:, 0] > 0).long()})
    (workdir / "images").mkdir()
    data = ("--data", "d.safetensors")
    for args in (
        ("score", "m.safetensors", "-m", "snip", *data, "-o", "d.safetensors", "--force"),
        ("prune", "m.safetensors", "-m", "snip", "-s", "0.5", *data, "-o", "d.safetensors"),
        ("retrain", "m.safetensors", *data, "--steps", "1", "-o", "d.safetensors", "--force"),
    ):
        refused_here(cli, workdir, args, "output d.safetensors is the input file given to --data")
    args = ("retrain", "m.safetensors", *data, "--steps", "1", "--rewind-to", "init.safetensors")
    refused_here(cli, workdir, (*args, "-o", "init.safetensors", "--force"), "given to --rewind-to")
    args = (
        "retrain",
        "m.safetensors",
        "--data",
        "images",
        "--steps",
        "1",
        "-o",
        "images/m.safetensors",
    )
    refused_here(cli, workdir, args, "lies inside the input folder images given to --data")


# --- 8: a path that appears while prunecli writes is not replaced ------------------------------


def test_file_appearing_during_the_write_is_kept(cli, workdir: Path, monkeypatch) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    real = st.write

    def racing(stream, tensors, metadata):  # the other run lands first
        (workdir / "out.safetensors").write_bytes(b"the other run's output")
        return real(stream, tensors, metadata)

    monkeypatch.setattr(st, "write", racing)
    result = cli("prune", "m.safetensors", *MAGNITUDE, "-o", "out.safetensors")
    assert_refused(result, 2, "out.safetensors appeared while prunecli was writing it", "--force")
    assert (workdir / "out.safetensors").read_bytes() == b"the other run's output"
    assert not hidden(workdir)
    assert (
        cli("prune", "m.safetensors", *MAGNITUDE, "-o", "out.safetensors", "--force").exit_code == 0
    )
    assert metadata_of(workdir / "out.safetensors")["prunecli.method"] == "magnitude"


@pytest.mark.parametrize("appears", ["empty folder", "folder", "file"])
def test_folder_appearing_during_the_write_is_kept(
    cli, workdir: Path, monkeypatch, appears: str
) -> None:
    model_folder(workdir / "in")
    real = shutil.copy2

    def racing(source, target, **kwargs):
        out = workdir / "out"
        if not os.path.lexists(out):
            if appears == "file":
                out.write_text("theirs")
            else:
                out.mkdir()
                if appears == "folder":
                    (out / "theirs.txt").write_text("theirs")
        return real(source, target, **kwargs)

    monkeypatch.setattr(stream_output.shutil, "copy2", racing)
    result = cli("prune", "in", *MAGNITUDE, "-o", "out")
    assert_refused(result, 2, "out appeared while prunecli was writing it")
    assert not hidden(workdir)
    if appears == "folder":
        assert (workdir / "out" / "theirs.txt").read_text() == "theirs"


def test_no_replace_without_renameat2(tmp_path: Path, monkeypatch) -> None:
    """Where renameat2 is missing, a file is hard-linked into place, which fails just the same."""

    def missing(source, target):
        raise NotImplementedError

    monkeypatch.setattr(atomic, "_renameat2_noreplace", missing)
    for kind in ("file", "folder"):
        source, target = tmp_path / f"new-{kind}", tmp_path / f"there-{kind}"
        source.write_text("new") if kind == "file" else source.mkdir()
        target.write_text("old")
        with pytest.raises(atomic.BadInput, match="appeared while"):
            atomic.rename_new(source, target, str(target), replace=False)
        assert target.read_text() == "old" and source.exists()
        target.unlink()
        atomic.rename_new(source, target, str(target), replace=False)
        assert target.exists() and not source.exists()


# --- smaller promises: what -o may name --------------------------------------------------------


def test_special_targets(cli, workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    prune = ("prune", "m.safetensors", *MAGNITUDE)
    for force in ((), ("--force",)):
        refused_here(cli, workdir, (*prune, "-o", "/dev/null", *force), "not a regular file")
    os.mkfifo(workdir / "fifo")
    refused_here(cli, workdir, (*prune, "-o", "fifo", "--force"), "not a regular file")
    (workdir / "mine.safetensors").write_bytes(b"mine")
    os.symlink("mine.safetensors", workdir / "link.safetensors")
    for target in ("link.safetensors", "/dev/stdout"):  # never swap a link for a file
        refused_here(cli, workdir, (*prune, "-o", target, "--force"), "is a link to")
    os.symlink("nowhere", workdir / "dangling.safetensors")
    refused_here(cli, workdir, (*prune, "-o", "dangling.safetensors"), "already exists", "--force")
    refused_here(cli, workdir, (*prune, "-o", "newdir/"), "is a folder path", "newdir.safetensors")
    refused_here(cli, workdir, (*prune, "-o", "a" * 300 + ".safetensors"), "file name is 312 bytes")
    refused_here(
        cli, workdir, ("inspect", "m.safetensors", "--report", "r" * 300 + ".json"), "--report"
    )
    # a name that fits: its temporary (".NAME.XXXXXXXX.tmp") is cut to fit too
    assert cli(*prune, "-o", "a" * 240 + ".safetensors", "-q").exit_code == 0
    assert cli(*prune, "-o", "dangling.safetensors", "-q", "--force").exit_code == 0
    assert not hidden(workdir) and (workdir / "dangling.safetensors").is_file()
    assert os.readlink("/dev/stdout") == "/proc/self/fd/1"


def test_folder_output_with_a_trailing_slash(cli, workdir: Path) -> None:
    model_folder(workdir / "in")
    assert cli("prune", "in", *MAGNITUDE, "-o", "newdir/", "-q").exit_code == 0
    assert (workdir / "newdir" / "model.safetensors").is_file() and not hidden(workdir)


def test_companions_linked_out_of_the_folder_are_not_copied(cli, workdir: Path) -> None:
    folder = model_folder(workdir / "in")
    (workdir / "secret.txt").write_text("a private key")
    os.symlink(workdir / "secret.txt", folder / "vocab.txt")
    os.symlink("tokenizer.json", folder / "tokenizer_config.json")  # inside: copied
    assert cli("prune", "in", *MAGNITUDE, "-o", "out", "-q").exit_code == 0
    out = workdir / "out"
    assert sorted(files_in(out)) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not any(p.is_symlink() for p in out.iterdir())


def test_hugging_face_cache_snapshot_companions_are_copied(cli, workdir: Path) -> None:
    """The hub cache keeps every file as a link into ../../blobs: those travel."""
    repo = workdir / "models--x"
    (repo / "blobs").mkdir(parents=True)
    snapshot_folder = repo / "snapshots" / "abc"
    snapshot_folder.mkdir(parents=True)
    write_zoo(repo / "blobs" / "w", "mlp", SMALL_MLP)
    (repo / "blobs" / "c").write_text("{}")
    os.symlink("../../blobs/w", snapshot_folder / "model.safetensors")
    os.symlink("../../blobs/c", snapshot_folder / "config.json")
    assert cli("prune", snapshot_folder, *MAGNITUDE, "-o", "out", "-q").exit_code == 0
    assert sorted(files_in(workdir / "out")) == ["config.json", "model.safetensors"]


# --- 7 and standard output: real processes -------------------------------------------------------

SLOW_WRITE = """
import sys, time
import prunecli.io.safetensors as st
import prunecli.streaming.output as so
import prunecli.jobs.export as ex
def slow(*args, **kwargs):
    sys.stderr.write("writing\\n"); sys.stderr.flush(); time.sleep(60)
st.write = slow; so.shutil.copy2 = slow; ex.publish = slow
sys.argv = ["prunecli", *sys.argv[1:]]
from prunecli.cli.app import main
main()
"""


def run_prunecli(*args: object, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PRUNECLI_DEBUG", None)
    # a shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that: give the child Python's own Ctrl-C whatever ran the tests
    then = kwargs.pop("preexec_fn", None)

    def restore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()

    return subprocess.Popen(
        [sys.executable, *map(str, args)], env=env, preexec_fn=restore, **kwargs
    )


@pytest.mark.parametrize(
    ("how", "signum", "code"),
    [
        ("file", signal.SIGTERM, 143),
        ("file", signal.SIGHUP, 129),
        ("file", signal.SIGINT, 130),
        ("folder", signal.SIGTERM, 143),
        ("export", signal.SIGTERM, 143),
    ],
)
def test_signal_during_the_write_leaves_nothing(
    workdir: Path, how: str, signum: int, code: int
) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    model_folder(workdir / "in")
    args = {
        "file": ("prune", "m.safetensors", *MAGNITUDE, "-o", "out.safetensors"),
        "folder": ("prune", "in", *MAGNITUDE, "-o", "out"),
        "export": ("export", "m.safetensors", "--to", "safetensors", "-o", "out.safetensors"),
    }[how]
    before = snapshot(workdir)
    process = run_prunecli("-c", SLOW_WRITE, *args, stderr=subprocess.PIPE, cwd=workdir)
    assert process.stderr.readline() == b"writing\n"  # the temporary is there now
    assert hidden(workdir)
    process.send_signal(signum)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == code, stderr
    assert stderr.startswith("prunecli: error: ") and "nothing was written" in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert snapshot(workdir) == before


def big_model(path: Path) -> Path:
    """1 MiB of weights and 3000 tensors: the model and its --all report outgrow a pipe."""
    tensors = {"fc.weight": torch.randn(512, 512)}
    tensors.update({f"layer{i}.weight": torch.ones(2, 2) for i in range(3000)})
    return write_weights(path, tensors)


@pytest.mark.parametrize("args", [("-o", "-"), ("--json",)])
def test_full_stdout(workdir: Path, args: tuple[str, ...]) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    before = snapshot(workdir)
    command = ("prune", "m.safetensors", *MAGNITUDE, *args)
    with open("/dev/full", "wb") as full:
        process = run_prunecli("-m", "prunecli", *command, stdout=full, stderr=subprocess.PIPE)
        stderr = process.communicate(timeout=120)[1].decode()
    assert process.returncode == 2, stderr
    assert stderr.startswith("prunecli: error: could not write standard output: No space left")
    assert len(stderr.strip().splitlines()) == 1, stderr
    if args == ("-o", "-"):
        assert snapshot(workdir) == before


def test_closed_stdout(workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    before = snapshot(workdir)
    for args in (
        ("prune", "m.safetensors", *MAGNITUDE, "-o", "-"),
        ("inspect", "m.safetensors", "--json"),
    ):
        process = run_prunecli(
            "-m", "prunecli", *args, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1)
        )
        stderr = process.communicate(timeout=120)[1].decode()
        assert process.returncode == 2, stderr
        assert stderr == "prunecli: error: could not write standard output: it is closed\n"
    assert snapshot(workdir) == before


@pytest.mark.parametrize(
    "args",
    [("prune", "big.safetensors", *MAGNITUDE, "-o", "-"), ("inspect", "big.safetensors", "--all")],
)
def test_broken_pipe_exits_141_quietly(workdir: Path, args: tuple[str, ...]) -> None:
    big_model(workdir / "big.safetensors")
    process = run_prunecli("-m", "prunecli", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the reader goes away before anything is written (a pipe buffer here may hold the whole
    # report, which is written in one piece, so reading a byte first would race)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert stderr == "", stderr  # no "Exception ignored ... BrokenPipeError"

"""Where outputs go: checks made before any work, and atomic writes (DESIGN §1 "never lose data")."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from prunecli.errors import BadInput

STDIO = "-"


def default_output(model: str, suffix: str = ".pruned.safetensors") -> str:
    """``model.safetensors`` -> ``model.pruned.safetensors`` beside it (``model.onnx`` ->
    ``model.pruned.onnx``: ONNX in, ONNX out); stdin input -> stdout."""
    if model == STDIO:
        return STDIO
    path = Path(model)
    if path.is_dir():  # a pruned folder goes beside it; scores of a folder are one file
        tail = ".pruned" if suffix == ".pruned.safetensors" else suffix
        return str(path.with_name(path.name + tail))
    if path.suffix == ".onnx" and suffix == ".pruned.safetensors":
        suffix = ".pruned.onnx"
    return str(path.with_name(path.stem + suffix))


def check_output(output: str, inputs: list[str], force: bool) -> None:
    """Refuse an output that would overwrite an input, land nowhere, or replace a file silently."""
    if output == STDIO:
        if sys.stdout.isatty():
            raise BadInput(
                "refusing to write a binary model to the terminal", "pipe or redirect it"
            )
        return
    target = Path(output)
    for source in inputs:
        if source != STDIO and _same_file(target, Path(source)):
            raise BadInput(f"output {output} is the input file", "choose another path with -o")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_create_in(folder):
        raise BadInput(f"output folder {folder} is not writable")
    if target.is_dir():
        raise BadInput(f"output {output} is a folder", "pass a file path with -o")
    if target.exists() and not force:
        raise BadInput(f"{output} already exists", "pass --force to replace it")


def _can_create_in(folder: Path) -> bool:
    """os.access says yes to root and misses read-only mounts: create the kind of file we will."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".prunecli-probe.", suffix=".tmp"):
            return True
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


@contextmanager
def atomic_output(output: str) -> Iterator[BinaryIO]:
    """A binary stream for ``output``: a temporary file renamed into place only on success."""
    if output == STDIO:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(output)
    try:
        handle = tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:  # the folder changed since check_output, or was never checked
        raise BadInput(f"cannot write {output}: {exc.strerror}") from None
    try:
        with handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_umask())
        os.replace(handle.name, target)
    except OSError as exc:  # disk full, quota, I/O error: the machine's problem, not a bug
        Path(handle.name).unlink(missing_ok=True)
        raise BadInput(
            f"could not write {output}: {exc.strerror or exc}; nothing was written"
        ) from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""``.pt2`` programs from ``torch.export``: graph and weights in one file, loaded without unpickling."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from prunecli.errors import BadInput

if TYPE_CHECKING:
    import torch


def _refuse_pickles(path: Path) -> None:
    """``torch.export.load`` falls back to full unpickling when a payload is not plain tensors;
    prunecli never unpickles (DESIGN §2), so every pickled payload is checked first."""
    import torch

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BadInput(f"{path} is not a torch.export program (.pt2): not a zip archive") from None
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".pt"):
                continue
            try:
                torch.load(io.BytesIO(archive.read(info)), weights_only=True)
            except Exception:
                raise BadInput(
                    f"{path}: {info.filename} holds objects other than tensors; "
                    "prunecli does not unpickle them"
                ) from None


def load_program(path: Path) -> torch.export.ExportedProgram:
    import torch

    _refuse_pickles(path)
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # the loader raises many types on a damaged archive
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path} could not be loaded as a .pt2 program: {first_line}") from None


def save_program(program: torch.export.ExportedProgram, stream: io.BufferedIOBase) -> None:
    import torch

    # the buffered file under a tempfile wrapper: torch.export logs a warning for the wrapper
    torch.export.save(program, getattr(stream, "file", stream))

"""Reading a ``.npz`` archive safely: each array's header checked before NumPy allocates it."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from prunecli.errors import BadInput


def read_npz(path: Path, spec: str) -> dict[str, np.ndarray]:
    import zipfile

    try:
        _check_npz(path, spec)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"--data {spec} is not a readable .npz file: {exc}") from None


def _check_npz(path: Path, spec: str) -> None:
    """Every array's size from its own header, checked before NumPy allocates it: each must
    match the bytes its zip entry holds, and all together must fit in memory. A few hundred
    bytes can otherwise declare terabytes, or a compressed entry expand a thousandfold."""
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                total += info.file_size
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                reader = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    version, np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = reader(member, max_header_size=10_000)
                header = member.tell()
            name = info.filename[: -len(".npy")]
            if dtype.hasobject:
                raise BadInput(
                    f"--data {spec} is not a readable .npz file: array {name!r} holds Python "
                    "objects; prunecli does not unpickle them",
                    "save numeric arrays (e.g. x.astype('float32'))",
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if header + nbytes != info.file_size:
                raise BadInput(
                    f"--data {spec} is not a readable .npz file: array {name!r} of shape "
                    f"{list(shape)} needs {nbytes} bytes, but its entry holds "
                    f"{max(info.file_size - header, 0)}"
                )
            total += nbytes
    memory = _memory_bytes()
    if memory is not None and total > memory:
        raise BadInput(
            f"--data {spec} expands to {total / 2**30:.1f} GiB, more than this machine's "
            f"memory ({memory / 2**30:.1f} GiB)"
        )


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None

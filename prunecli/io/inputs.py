"""Input paths: the one place that says why a path cannot be read, for every kind of failure.

``Path.exists()`` and ``is_file()`` answer False for a symlink loop, a path too long, a folder
without permission and a missing file alike, and a FIFO or ``/dev/zero`` passes ``exists()``
only to be read as an empty or endless file. ``check_input`` asks the OS once and names the
actual reason; ``open_input`` also opens the file, catching what only ``open`` can tell.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from prunecli.errors import BadInput

_SPECIAL = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_input(
    path: Path | str, source: str | None = None, folder: bool = False
) -> os.stat_result:
    """The stat of an existing regular file (or folder, when ``folder``), else BadInput."""
    name = source or str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise os_error(exc, name, path) from None
    if stat.S_ISDIR(info.st_mode):
        if not folder:
            raise BadInput(f"{name} is a folder", "pass a file")
        return info
    if not stat.S_ISREG(info.st_mode):
        kind = _SPECIAL.get(stat.S_IFMT(info.st_mode), "a special file")
        raise BadInput(f"{name} is not a regular file: it is {kind}", "pass a file on disk")
    return info


def open_input(path: Path | str, source: str | None = None) -> BinaryIO:
    """``path`` opened for binary reading, once ``check_input`` says it is a regular file.

    Checked before opening: opening a FIFO would block until a writer appears."""
    name = source or str(path)
    check_input(path, name)
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise os_error(exc, name, path) from None


def os_error(exc: OSError, name: str, path: Path | str | None = None) -> BadInput:
    """The BadInput that says in words why the OS refused ``name``."""
    code = exc.errno
    if code == errno.ENOENT:
        if path is not None and os.path.islink(path):
            return BadInput(
                f"{name} is a symbolic link to {os.readlink(path)}, which does not exist"
            )
        return BadInput(f"{name} does not exist")
    if code == errno.ELOOP:
        return BadInput(f"{name} cannot be resolved: it is a loop of symbolic links")
    if code == errno.ENAMETOOLONG:
        short = name if len(name) <= 60 else f"{name[:28]}…{name[-28:]}"
        return BadInput(f"{short}: the path or a name in it is too long for the file system")
    if code == errno.ENOTDIR:
        return BadInput(f"{name} does not exist: a part of its path is a file, not a folder")
    if code in (errno.EACCES, errno.EPERM):
        return BadInput(f"cannot read {name}: permission denied")
    if code == errno.EISDIR:
        return BadInput(f"{name} is a folder", "pass a file")
    return BadInput(f"cannot read {name}: {exc.strerror or exc}")


def path_refusal(exc: BaseException) -> BadInput | None:
    """The BadInput for an OSError that says a path is impossible, wherever it was raised
    (``Path.is_dir()`` and friends raise these rather than answer False), else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        return os_error(exc, str(exc.filename) if exc.filename is not None else "a path")
    return None


def read_into(handle: int, offset: int, buffer: memoryview, source: str | None = None) -> None:
    """Fill ``buffer`` from the file descriptor ``handle`` at ``offset`` (threads may share it).

    Every model read goes through here rather than a memory map: a file truncated meanwhile
    gives a short read and this message, where a mapping would kill the process with SIGBUS."""
    done, size = 0, buffer.nbytes
    while done < size:
        try:
            got = os.preadv(handle, [buffer[done:]], offset + done)
        except OSError as exc:
            raise BadInput(f"cannot read {source or 'a model file'}: {exc.strerror}") from None
        if got == 0:
            raise BadInput(f"{source or 'a model file'} was truncated while it was being read")
        done += got

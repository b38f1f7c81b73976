"""Atomic writes: temporaries renamed into place without replacing what appeared, and stdout."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from prunecli.errors import BadInput
from prunecli.io.paths import STDIO, may_replace

_TEMP_NAME_BYTES = 200  # of the output's name kept in a temporary's name: NAME_MAX is 255


def temp_prefix(target: Path) -> str:
    """``.NAME.`` for a temporary beside ``target``, the name cut so the whole fits NAME_MAX."""
    return "." + os.fsdecode(os.fsencode(target.name)[:_TEMP_NAME_BYTES]) + "."


def rename_new(source: Path, target: Path, output: str, replace: bool) -> None:
    """Move ``source`` to ``target``; unless ``replace``, never over a path that exists now.

    Linux's renameat2(RENAME_NOREPLACE) does it atomically for files and folders; where it is
    missing, a file is hard-linked (which fails on an existing name) and a folder renamed after
    a last look."""
    if replace:
        os.replace(source, target)
        return
    try:
        _renameat2_noreplace(source, target)
        return
    except FileExistsError:
        pass
    except (NotImplementedError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in _NO_RENAMEAT2:
            raise
        try:
            if source.is_dir():
                if os.path.lexists(target):
                    raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
                os.rename(source, target)
            else:
                os.link(source, target, follow_symlinks=False)
                os.unlink(source)
            return
        except FileExistsError:
            pass
    raise BadInput(
        f"{output} appeared while prunecli was writing it; nothing was replaced",
        "pass --force to replace it",
    )


_NO_RENAMEAT2 = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM)


def _renameat2_noreplace(source: Path, target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        raise NotImplementedError
    at_fdcwd, rename_noreplace = -100, 1
    if call(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


@contextmanager
def atomic_output(output: str) -> Iterator[BinaryIO]:
    """A binary stream for ``output``: a temporary file renamed into place only on success."""
    if output == STDIO:
        with stdout_errors():
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        return
    target = Path(output)
    try:
        handle = tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=temp_prefix(target), suffix=".tmp", delete=False
        )
    except OSError as exc:  # the folder changed since check_outputs, or was never checked
        raise BadInput(f"cannot write {output}: {exc.strerror}") from None
    try:
        with handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~umask())
        rename_new(Path(handle.name), target, output, may_replace(target))
    except OSError as exc:  # disk full, quota, I/O error: the machine's problem, not a bug
        Path(handle.name).unlink(missing_ok=True)
        raise BadInput(
            f"could not write {output}: {exc.strerror or exc}; nothing was written"
        ) from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# the ways writing to stdout fails that are the reader's or the machine's doing
STDOUT_ERRORS = (errno.ENOSPC, errno.EBADF, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EINVAL)


@contextmanager
def stdout_errors() -> Iterator[None]:
    """Writing to standard output: a closed or full stdout is the caller's doing (exit 2, like a
    file output); a broken pipe goes up as it is (cli/errors.py)."""
    if sys.stdout is None:  # fd 1 was closed when Python started
        raise BadInput("could not write standard output: it is closed")
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.errno not in STDOUT_ERRORS:
            raise
        silence_stdout()
        raise BadInput(f"could not write standard output: {exc.strerror}") from None


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so Python's flush at exit does not fail a second time (the
    documented idiom for a broken pipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""Keep the process's heap near what is live while blocks come and go.

glibc's malloc raises its mmap threshold each time a large mmapped chunk is freed (up to
32 MiB), after which tensors of a block's size come from the heap instead, where freed ones
stay, fragmented, after the block is gone: the runner's peak then grows with the blocks seen,
not with one block. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns
the dynamic raise off) gives every large tensor its own mapping, returned to the system when
freed; ``malloc_trim(0)`` after each block hands back what the small ones left. Elsewhere than
glibc (macOS, musl) both are skipped: their allocators do not keep freed large blocks this way.
"""

from __future__ import annotations

import ctypes
import os

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 16  # 64 KiB: measured best of 64 KiB, 1 MiB, 4 MiB (docs/calibrated.md)

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        _libc = None
        if os.name == "posix" and os.uname().sysname == "Linux":
            try:
                libc = ctypes.CDLL(None)  # the process's own symbols: its C library
                if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                    libc.gnu_get_libc_version  # noqa: B018 - glibc, not musl
                    _libc = libc
            except (OSError, AttributeError):
                _libc = None
    return _libc or None


def bound_heap() -> bool:
    """Give large allocations their own mappings from now on, for the whole process (a
    program calling the runner gets this too); True where this is glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_freed() -> None:
    """Hand the heap's free pages back to the system (after a block is put away)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)

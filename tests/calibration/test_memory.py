"""calibration/memory.py: after ``bound_heap`` a tensor-sized allocation gets its own mapping
(glibc's ``mallinfo2`` counts it in ``hblkhd``), where before it came from the heap."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import ctypes
from prunecli.calibration.memory import bound_heap, release_freed

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
size = 100_000  # under glibc's default 128 KiB threshold: from the heap
mapped = libc.mallinfo2().hblkhd
a = libc.malloc(size)
print(libc.mallinfo2().hblkhd - mapped)
print(bound_heap())
mapped = libc.mallinfo2().hblkhd
b = libc.malloc(size)
print(libc.mallinfo2().hblkhd - mapped)
libc.free(ctypes.c_void_p(a)); libc.free(ctypes.c_void_p(b))
release_freed()
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_large_allocations_get_their_own_mapping_once_bounded() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    before, bounded, after = run.stdout.split()
    assert (int(before), bounded) == (0, "True")
    assert int(after) >= 100_000

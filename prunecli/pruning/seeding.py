"""Seeds derived from ``--seed``: stable across runs, processes and Python versions."""

from __future__ import annotations

import hashlib


def stream_seed(*parts: int) -> int:
    """A 63-bit seed for the random stream identified by ``parts`` (e.g. seed, round, tensor)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF

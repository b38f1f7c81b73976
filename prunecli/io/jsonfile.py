"""The one JSON reader of prunecli: every JSON it parses (headers, metadata, config, index,
``--arch-kwargs``) goes through ``parse_json`` or ``read_json_file``.

Python's ``json`` recurses once per nesting level and converts integers of any length, so a
hostile document can raise RecursionError (deep nesting) or ValueError (an integer past
Python's 4300-digit limit) from deep inside the parser. This module bounds both before or while
parsing and turns every failure into ``BadInput`` naming the source. It also refuses what the
JSON standard does not allow but Python accepts (``NaN``, ``Infinity``) and duplicate keys,
whose meaning differs between readers (Python keeps the last, others the first), so what
prunecli validates is what every other reader of the file sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.errors import BadInput

MAX_DEPTH = 64  # real documents nest a handful of levels; Python's parser breaks near 1000
MAX_BYTES = 100_000_000  # the safetensors header limit; config and index files are far smaller
MAX_DIGITS = 1000  # longer integers are never sizes or counts (and Python refuses > 4300)

# a JSON string literal (escapes included), removed before counting brackets
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_SCAN_CHUNK = 1 << 22
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_DIGITS + 1))


class NotJSON(BadInput):
    """The text is not JSON at all (a syntax or encoding error), as opposed to JSON refused for
    its size, depth, numbers or duplicate keys: a caller may say what the file then is not."""


class _Refused(Exception):
    """Raised by the parser hooks; carries the reason, turned into BadInput by parse_json."""


def parse_json(document: str | bytes, source: str, max_bytes: int = MAX_BYTES) -> Any:
    """The value of ``document``, or BadInput saying why ``source`` is not acceptable JSON."""
    raw = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    if len(raw) > max_bytes:
        raise BadInput(f"{source} is {len(raw)} bytes of JSON, more than the {max_bytes} allowed")
    try:
        text = raw.decode("utf-8") if isinstance(document, bytes) else document
    except UnicodeDecodeError:
        raise NotJSON(f"{source} is not valid JSON: it is not UTF-8 text") from None
    stripped = _STRING.sub(b'""', raw)
    depth = nesting_depth(stripped)
    if depth > MAX_DEPTH:
        raise BadInput(
            f"{source} is not acceptable JSON: it nests {depth} levels deep "
            f"(at most {MAX_DEPTH} are read)"
        )
    if _LONG_NUMBER.search(stripped):
        raise BadInput(
            f"{source} is not acceptable JSON: it holds a number of more than {MAX_DIGITS} digits"
        )
    try:
        return json.loads(text, object_pairs_hook=_unique, parse_constant=_constant)
    except _Refused as exc:
        raise BadInput(f"{source} is not acceptable JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise NotJSON(f"{source} is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # the bounds above should make these unreachable
        raise BadInput(f"{source} is not acceptable JSON: {exc}") from None


def read_json_file(path: Path, source: str | None = None, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON value in the file ``path``, read with at most ``max_bytes`` held in memory."""
    from prunecli.io.inputs import open_input, os_error

    name = source or str(path)
    with open_input(path, name) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise os_error(exc, name, path) from None
    return parse_json(data, name, max_bytes)


def nesting_depth(stripped: bytes) -> int:
    """The deepest bracket nesting of a JSON text whose strings were removed (linear time)."""
    brackets = np.frombuffer(stripped.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    deepest = depth = 0
    for start in range(0, brackets.size, _SCAN_CHUNK):  # chunks: the running sum stays small
        chunk = brackets[start : start + _SCAN_CHUNK]
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1).astype(np.int64)
        levels = np.cumsum(steps) + depth
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
    return deepest


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused(f"key {duplicate!r} appears twice in one object")
    return result


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")

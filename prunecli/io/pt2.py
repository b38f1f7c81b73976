"""``.pt2`` programs from ``torch.export``: graph and weights in one file, loaded without unpickling.

``torch.export.load`` trusts its input: it unpickles payloads its configs mark ``use_pickle``,
``opaque_obj_*``/``custom_obj_*`` constants and non-tensor example inputs; it loads AOTInductor
shared libraries; it evaluates every ``expr_str`` with sympy (``eval``) and ``exec``s the
``guards_code`` and the Python it generates from graph names. prunecli therefore reads the
archive with torch's own record reader first and admits only what it can prove inert: every
record is one torch reads as raw tensor bytes or as checked JSON, the expressions are arithmetic
over symbols, and names are identifiers. Only then does torch load the very same bytes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunecli.errors import BadInput
from prunecli.io.jsonfile import parse_json

if TYPE_CHECKING:
    import torch

_NOT_TENSORS = "holds objects other than tensors; prunecli does not unpickle them"
# records every torch.export archive has, read as short strings
_PLAIN = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
}
_MODEL = re.compile(r"^models/([A-Za-z0-9_]+)\.json$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")  # Float('1.5')
_PART = re.compile(r"^[A-Za-z0-9_]+$")
_SYMBOL = re.compile(r"^[a-z]+[0-9_]*[0-9]+$")  # s77, u0, zuf1, r0_2: torch's symbol names
# what torch's printer writes into expr_str (sympy classes and torch's sympy functions)
_SYMPY_NAMES = frozenset(
    "Symbol Integer Float Rational Max Min Eq Ne Gt Ge Lt Le And Or Not Xor Abs floor ceiling "
    "sqrt oo zoo nan int_oo true false True False None Mul Add Pow Piecewise ITE Mod FloorDiv "
    "ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
    "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity StrictGreaterThan "
    "StrictLessThan GreaterThan LessThan Equality Unequality BooleanTrue BooleanFalse "
    "IntInfinity NegativeIntInfinity Infinity NegativeInfinity".split()
)
_ASSUMPTIONS = frozenset(
    "positive negative nonnegative nonpositive integer real finite infinite zero nonzero even odd "
    "rational evaluate precision".split()
)
_TENSOR_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_OPERATORS = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.operator, ast.unaryop,
    ast.boolop, ast.cmpop, ast.Load,
)  # fmt: skip


def _refuse(path: Path, what: str) -> BadInput:
    return BadInput(f"{path}: {what}")


def _safe_expression(text: str, guard: bool) -> bool:
    """``text`` is arithmetic over symbols: torch evaluates it (sympify → eval, or exec for a
    guard). A whitelist of syntax: no attribute but a tensor's size methods, no string but a
    name, no call but sympy's functions (guards: ``L['x'].size()[0]`` and the like)."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, _OPERATORS):
            continue
        if isinstance(node, ast.Constant):
            value = node.value
            text = str(value)
            if isinstance(value, str) and not (_IDENTIFIER.match(text) or _NUMBER.match(text)):
                return False
            if "__" in text:
                return False
            if not isinstance(value, (int, float, str, bool)) and value is not None:
                return False
        elif isinstance(node, ast.Name):
            allowed = {"L"} if guard else _SYMPY_NAMES
            if node.id not in allowed and not (_SYMBOL.match(node.id) and not guard):
                return False
        elif isinstance(node, ast.Call):
            func = node.func
            if guard:
                if not (isinstance(func, ast.Attribute) and func.attr in _TENSOR_METHODS):
                    return False
            elif not (isinstance(func, ast.Name) and func.id in _SYMPY_NAMES):
                return False
            if any(k.arg not in _ASSUMPTIONS for k in node.keywords):
                return False
        elif isinstance(node, ast.keyword):
            continue  # checked with its call
        elif isinstance(node, ast.Attribute):
            if not guard or node.attr not in _TENSOR_METHODS:
                return False
        elif isinstance(node, ast.Subscript):
            if not guard:
                return False
        else:
            return False
    return True


def _dotted(name: object, empty: bool = False) -> bool:
    """A module path like ``fc.weight`` or ``0.weight``: torch writes these into the Python it
    generates (attribute access, ``getattr(self, "0")``), so no quote, bracket or space."""
    if not isinstance(name, str):
        return False
    if name == "":
        return empty
    return all(_PART.match(part) for part in name.split("."))


def _check_graph(program: Any, path: Path, record: str) -> None:
    """Walk a ``models/*.json`` program. torch generates Python from its names (placeholders,
    attributes, keyword arguments) and evaluates its expressions, so each must be inert.
    Iterative: a deeply nested document must not exhaust the recursion limit."""
    stack: list[tuple[str, Any]] = [("", program)]
    while stack:
        key, value = stack.pop()
        bad = None
        if isinstance(value, dict):
            names = key.endswith("_values") or key == "range_constraints"
            bad = next((k for k in value if names and not _dotted(k)), None)
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)
        elif isinstance(value, str):
            if key in ("name", "as_name", "forward_arg_names", "fqn") or key.endswith("_name"):
                bad = None if _dotted(value, empty=True) else value
            elif key in ("expr_str", "guards_code"):
                bad = None if _safe_expression(value, key == "guards_code") else value
        if bad is not None:
            shown = bad if len(bad) <= 60 else bad[:57] + "..."
            raise _refuse(path, f"{record} holds code, not a program: {key} {shown!r}")


def _payloads(reader: Any, path: Path, record: str, constants: bool) -> dict[str, Any]:
    """A weights/constants config: every payload raw tensor bytes, never a pickle."""
    config = _json(reader, path, record)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(path, f"{record} is not a payload config")
    names: dict[str, Any] = {}
    prefix = "tensor_" if constants else "weight_"
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise BadInput(f"{path}: {fqn!r} {_NOT_TENSORS}")
        file = meta.get("path_name")
        if not isinstance(file, str) or not re.fullmatch(prefix + r"[0-9]+", file):
            raise BadInput(f"{path}: {fqn!r} ({file}) {_NOT_TENSORS}")
        if not _dotted(fqn):
            raise _refuse(path, f"{record} names a tensor {fqn[:60]!r}, not a module path")
        names[file] = fqn
    return names


def _json(reader: Any, path: Path, record: str) -> Any:
    return parse_json(reader.read_bytes(record), f"{path}: {record}")


def _check_tensors_only(reader: Any, path: Path, record: str) -> None:
    """Example inputs (and legacy state dicts): torch retries with full unpickling when the
    restricted loader refuses, so the restricted loader must accept them here."""
    import torch

    try:
        with quiet_torch():
            torch.load(io.BytesIO(reader.read_bytes(record)), weights_only=True)
    except Exception:  # noqa: BLE001 - any refusal of the restricted unpickler
        raise BadInput(f"{path}: {record} {_NOT_TENSORS}") from None


def _check_zip(data: bytes, path: Path) -> None:
    """torch.export.load falls back to Python's zipfile and the pre-2.8 layout (which unpickles)
    when its reader fails; a name twice could be read differently by the two readers."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BadInput(f"{path} is not a torch.export program (.pt2): not a zip archive") from None
    if "version" in names:
        raise BadInput(
            f"{path} is in the pre-2.8 torch.export layout, which prunecli does not read",
            "re-save it with torch.export.save",
        )
    if len(set(names)) != len(names):
        raise BadInput(f"{path} is not a torch.export program (.pt2): a member is stored twice")


def check_archive(data: bytes, path: Path) -> None:
    """Admit ``data`` only if torch.export.load would do nothing with it but read tensors and
    the checked program JSON (see the module docstring)."""
    from torch.export.pt2_archive import PT2ArchiveReader

    try:
        with quiet_torch():
            reader = PT2ArchiveReader(io.BytesIO(data))
            records = list(reader.get_file_names())
    except Exception:  # noqa: BLE001 - torch's reader raises RuntimeError/AssertionError
        raise BadInput(f"{path} is not a torch.export program (.pt2)") from None
    _check_zip(data, path)
    models = [m.group(1) for m in map(_MODEL.match, records) if m]
    if not models:
        raise BadInput(f"{path} is not a torch.export program (.pt2): it holds no program")
    payloads: dict[str, str] = {}
    known = set(_PLAIN) | {f"models/{m}.json" for m in models}
    for model in models:
        weights = f"data/weights/{model}_weights_config.json"
        consts = f"data/constants/{model}_constants_config.json"
        inputs = f"data/sample_inputs/{model}.pt"
        for legacy in (f"data/weights/{model}.pt", f"data/constants/{model}.pt"):
            if legacy in records:  # read by torch.load with the unpickling fallback
                _check_tensors_only(reader, path, legacy)
                known.add(legacy)
        for config, constants in ((weights, False), (consts, True)):
            if config in records:
                directory = config.rsplit("/", 1)[0] + "/"
                files = _payloads(reader, path, config, constants)
                payloads.update({directory + f: fqn for f, fqn in files.items()})
                known.add(config)
        if inputs in records:
            _check_tensors_only(reader, path, inputs)
            known.add(inputs)
        _check_graph(_json(reader, path, f"models/{model}.json"), path, f"models/{model}.json")
    for record in records:
        if record in known or record in payloads or record.startswith("extra/"):
            continue
        if record.startswith("data/aotinductor/"):
            raise BadInput(
                f"{path} holds compiled native code (AOTInductor); prunecli does not load it"
            )
        if record.startswith(("data/constants/", "data/weights/")):
            raise BadInput(f"{path}: {record} {_NOT_TENSORS}")
        raise BadInput(f"{path}: {record} is not part of a torch.export program")


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch's loaders log warnings and whole tracebacks (``log.warning(..., exc_info=True)``)
    on a damaged archive, transformers logs about configs; prunecli reports one line instead,
    so none of their log lines or warnings reaches stderr while they load."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def load_program(path: Path) -> torch.export.ExportedProgram:
    import torch

    try:
        data = path.read_bytes()  # one read: the bytes checked are the bytes torch loads
    except OSError as exc:
        raise BadInput(f"{path} could not be read: {exc.strerror or exc}") from None
    check_archive(data, path)
    try:
        with quiet_torch():
            return torch.export.load(io.BytesIO(data))
    except Exception as exc:  # the loader raises many types on a damaged archive
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path} could not be loaded as a .pt2 program: {first_line}") from None


def save_program(program: torch.export.ExportedProgram, stream: io.BufferedIOBase) -> None:
    import torch

    # the buffered file under a tempfile wrapper: torch.export logs a warning for the wrapper
    torch.export.save(program, getattr(stream, "file", stream))

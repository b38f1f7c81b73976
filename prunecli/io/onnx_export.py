"""A ``torch.nn.Module`` to an ONNX file with ``torch.onnx.export(..., dynamo=True)``.

The exporter is noisy (progress on stdout, logged warnings, tracebacks of version-converter
fallbacks): all of it is held back, since stdout may carry data. Its failures become one line: an
operator without an ONNX translation is named, with ``--to pt2`` as the way out (torch.export
keeps every operator).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.io.onnx import first_line

_NOISY_PREFIXES = ("torch", "onnxscript", "onnx_ir", "onnx")
_OP_PATTERNS = (
    re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)"),
    re.compile(r"target=torch\.ops\.([\w.]+)\.(\w+)"),
)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's prints (stdout and stderr), warnings and logs for the duration."""
    # every logger of theirs, parents included: torch sets levels on its children itself
    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith(_NOISY_PREFIXES)]
    loggers = [logging.getLogger(name) for name in {*names, *_NOISY_PREFIXES}]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),  # graph dumps of failed traces
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int | None,
    axes: dict[int, str],
) -> int:
    """Write ``module`` traced on ``example`` to ``path`` with the input's ``axes`` (index →
    name) symbolic; returns the opset written."""
    dynamic_shapes = ({i: torch.export.Dim(name) for i, name in axes.items()},) if axes else None
    with quiet_exporter():
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
        except Exception as exc:
            error = export_error(exc, bool(axes))
            if data_dependent(exc):
                error.shape_independent = True  # type: ignore[attr-defined]
            raise error from exc  # the cause shows with PRUNECLI_DEBUG=1
        fixed = [name for i, name in axes.items() if not axis_is_free(program.model_proto, i)]
        if fixed:
            raise Unsupported(f"the exporter fixed the {fixed[0]} dimension")
        written = next(
            (o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx")),
            None,
        )
        if opset is not None and written != opset:
            raise Unsupported(
                f"the exporter could not write opset {opset} (its version converter failed; "
                f"it produced opset {written})",
                f"use --opset {written} or newer, or leave --opset out",
            )
        if program.model_proto.ByteSize() > 2**31 - 1:
            raise Unsupported(
                "the ONNX model is over 2 GB, which needs external data; prunecli writes one file",
                "export with --to pt2 or --to safetensors",
            )
        program.save(str(path), external_data=False)
    return int(written or 0)


def export_error(exc: Exception, dynamic: bool) -> Exception:
    """The exporter's failure as one actionable line."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    for pattern in _OP_PATTERNS:
        found = pattern.search(text)
        if found:
            op = f"{found.group(1)}.{found.group(2)}"
            return shape_independent(
                Unsupported(
                    f"cannot export to ONNX: operator {op} has no ONNX translation",
                    "export with --to pt2 (torch.export keeps every operator), "
                    "or replace the operator in the module",
                )
            )
    if dynamic and re.search(r"Constraints violated|specializ|Dim\(", text):
        return Unsupported(f"torch.export fixed a dynamic dimension: {first_line(exc)}")
    cause = exc.__cause__ or exc
    if isinstance(exc, ValueError | TypeError) and "opset" in text.lower():
        return BadInput(f"cannot export with this --opset: {first_line(exc)}")
    if type(exc).__name__ == "TorchExportError":  # step 1, torch.export: pt2 fails the same way
        return Unsupported(
            f"torch.export cannot trace the model: {type(cause).__name__}: {first_line(cause)}",
            "the forward must be traceable (no data-dependent Python control flow)",
        )
    return Unsupported(
        f"cannot export to ONNX: {type(cause).__name__}: {first_line(cause)}",
        "export with --to pt2, or run with PRUNECLI_DEBUG=1 for the exporter's full message",
    )


def shape_independent(error: Unsupported) -> Unsupported:
    """Mark ``error`` as one no choice of dynamic axes avoids: export does not retry it with
    fixed axes (jobs/export_shapes.py)."""
    error.shape_independent = True  # type: ignore[attr-defined]
    return error


def data_dependent(exc: BaseException) -> bool:
    """Whether the trace failed on data-dependent control flow (torch's
    GuardOnDataDependentSymNode anywhere in the chain of causes): fixed sizes fail the same."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes, never a cycle
        if seen is None:
            return False
        if type(seen).__name__ == "GuardOnDataDependentSymNode":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def axis_is_free(proto: Any, axis: int) -> bool:
    """Whether the first input's dimension ``axis`` is symbolic in the exported graph."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
    return len(dims) > axis and dims[axis].HasField("dim_param")

"""`export`: a deployable artifact (ONNX, safetensors, torch.export), verified before it lands.

Every artifact is written into a private staging folder, checked, and only then copied into
place atomically, so a failed check leaves no file. The writers are jobs/export_formats.py, the
checks (parity and zeros, docs/export.md) jobs/export_checks.py.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunecli.errors import BadInput, Unsupported
from prunecli.io.atomic import atomic_output
from prunecli.io.paths import STDIO, named_path
from prunecli.jobs.export_checks import (
    Parity,
    measure_parity,
    parity_check,
    zero_check,
    zeros_check,
)
from prunecli.jobs.export_formats import WRITERS, Artifact, ExportSettings
from prunecli.jobs.report import Report, build_report
from prunecli.models.loaded import LoadedModel

TARGETS = ("onnx", "safetensors", "pt2")
SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors", ".pt2": "pt2"}


def target_of(to: str | None, output: str | None) -> str:
    """``--to``, or the output's suffix; they must agree."""
    implied = SUFFIXES.get(Path(output).suffix) if output and output != STDIO else None
    if to is None:
        if implied is None:
            raise BadInput("pass --to onnx, safetensors or pt2", "or an -o path with that suffix")
        return implied
    if to not in TARGETS:
        raise BadInput(f"unknown --to {to!r}", f"choose one of: {', '.join(TARGETS)}")
    if implied is not None and implied != to:
        raise BadInput(f"--to {to} does not match the output {output}", f"name it *.{to}")
    return to


def default_export_output(model: str, settings: ExportSettings) -> str:
    if model == STDIO:
        return STDIO
    suffix = {"onnx": ".onnx", "pt2": ".pt2"}.get(settings.to, f".{settings.format}.safetensors")
    path = named_path(model)
    return str(path.with_name(path.stem + suffix))


def export_to_file(
    model: LoadedModel, names: list[str], settings: ExportSettings, output: str
) -> Report:
    """Write ``model`` as ``settings.to`` to ``output`` if every check passes; the report says."""
    if model.format == "onnx":
        raise Unsupported(
            "export needs a PyTorch model; an ONNX model is pruned and written back as ONNX",
            "prunecli prune model.onnx --method magnitude --sparsity 0.9",
        )
    started = time.perf_counter()
    shape = settings.input_shape or (model.arch.input_shape if model.arch else None)
    # no topology: an export changes no weight, and `inspect` shows it
    report = build_report("export", model, names, topology=False)
    with staging(output) as folder:
        artifact = WRITERS[settings.to](model, settings, folder, shape)
        zeros = zero_check(model, names, artifact.tensors)
        report.checks += [*artifact.checks, zeros_check(zeros)]
        parity = None
        if settings.verify and artifact.run is not None:
            parity = measure_parity(model, artifact, settings)
            report.checks.append(parity_check(parity))
        written = all(check.passed for check in report.checks)
        if written:
            publish(artifact.path, output)
            report.output = {
                "path": output,
                "format": settings.to,
                "file_bytes": artifact.path.stat().st_size,
            }
        report.export = export_section(settings, shape, model, artifact, parity, zeros)
        report.export.update(path=output, written=written)
        if artifact.fallback:
            report.warnings.append(artifact.fallback)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def staging(output: str) -> Iterator[Path]:
    """A private folder beside ``output`` (the system's for stdout), removed afterwards."""
    parent = None if output == STDIO else str(Path(output).parent)
    folder = Path(tempfile.mkdtemp(prefix=".prunecli-export.", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(staged: Path, output: str) -> None:
    with atomic_output(output) as stream, staged.open("rb") as source:
        shutil.copyfileobj(source, stream, 1 << 20)


def export_section(
    settings: ExportSettings,
    shape: tuple[int, ...] | None,
    model: LoadedModel,
    artifact: Artifact,
    parity: Parity | None,
    zeros: Mapping[str, Any],
) -> dict[str, Any]:
    """The report's ``export`` section (docs/export.md)."""
    size = artifact.path.stat().st_size
    storage = "sparse-initializers" if settings.sparse_initializers else "dense"
    return {
        "format": settings.to,
        "path": None,  # path and written: set by the caller once the checks are in
        "written": False,
        "storage": settings.format if settings.to == "safetensors" else storage,
        "opset": artifact.opset,
        "input_shape": list(shape) if shape else None,
        "dynamic_batch": "batch" in artifact.axes.values(),
        "dynamic_axes": artifact.dynamic_axes,
        "token_ids": bool(artifact.spec and artifact.spec.tokens),
        "source_bytes": model.file_bytes,
        "dense_bytes": artifact.dense_bytes,
        "file_bytes": size,
        "compression_ratio": size / artifact.dense_bytes if artifact.dense_bytes else None,
        "parity": parity.to_json() if parity else None,
        "sparsity": dict(zeros),
        "sparse_initializers": artifact.sparse,
        "notes": artifact.notes,
    }

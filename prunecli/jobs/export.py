"""`export`: a deployable artifact (ONNX, safetensors, torch.export), verified before it lands.

Every artifact is written into a private staging folder, checked, and only then copied into
place atomically, so a failed check leaves no file. The checks (docs/export.md):

- **parity**: the artifact and the source module run on the same seeded random inputs;
  ``max |artifact − module| / max(1, max |module|)`` over every output element must be at most
  ``atol`` (an absolute tolerance for outputs up to 1 in size, relative above that);
- **zeros**: every zero of a prunable weight is still a zero in the artifact (BatchNorm folding
  scales a convolution's output channels, which keeps zeros).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.io import onnx as onnx_io
from prunecli.io import safetensors as st
from prunecli.io.atomic import atomic_output
from prunecli.io.paths import STDIO, named_path
from prunecli.jobs.report import Check, Report, build_report
from prunecli.jobs.writing import write_model
from prunecli.models.loaded import LoadedModel, load_model, model_metadata

TARGETS = ("onnx", "safetensors", "pt2")
SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors", ".pt2": "pt2"}
_BATCHNORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
#: runs an artifact on input batches, returning the outputs of each batch in order
Runner = Callable[[list[torch.Tensor]], list[Sequence[Any]]]


@dataclass
class ExportSettings:
    to: str
    input_shape: tuple[int, ...] | None = None
    opset: int | None = None
    dynamic_batch: bool = False
    sparse_initializers: bool = False
    format: str = "dense"  # safetensors layout: dense or bitmask
    atol: float = 1e-4
    verify: bool = True
    seed: int = 0
    samples: int = 4  # parity batches: batch 1 each, or sizes 1..samples with a dynamic batch


@dataclass
class Parity:
    max_abs_diff: float
    reference_max: float  # max |reference output|
    atol: float
    samples: int
    seed: int

    @property
    def output_scale(self) -> float:
        return max(1.0, self.reference_max)

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.output_scale

    @property
    def passed(self) -> bool:
        return self.relative <= self.atol

    def to_json(self) -> dict[str, Any]:
        finite = math.isfinite(self.max_abs_diff)
        return {
            "max_abs_diff": self.max_abs_diff if finite else None,
            "reference_max": self.reference_max,
            "output_scale": self.output_scale,
            "relative": self.relative if finite else None,
            "atol": self.atol,
            "passed": self.passed,
            "samples": self.samples,
            "seed": self.seed,
        }


@dataclass
class Artifact:
    """What a format writer staged: the file, the size of its dense form, the tensors it holds."""

    path: Path
    dense_bytes: int
    tensors: Mapping[str, Any]  # name -> torch tensor or NumPy array, as stored
    run: Runner | None = None  # None: nothing to run (a safetensors copy is compared bit for bit)
    checks: list[Check] = field(default_factory=list)
    opset: int | None = None
    notes: list[str] = field(default_factory=list)
    sparse: dict[str, int] | None = None


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
            parity = measure_parity(model, artifact.run, shape, settings)
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


# --- the three writers ------------------------------------------------------------------------


def write_onnx(
    model: LoadedModel, settings: ExportSettings, folder: Path, shape: tuple[int, ...] | None
) -> Artifact:
    from prunecli.io.onnx_export import export_onnx
    from prunecli.io.onnx_sparse import sparsify_initializers

    onnx_io.require("onnx", "onnxscript", "onnxruntime")
    module = model.require_graph("export --to onnx")
    dense = folder / "dense.onnx"
    example = example_input(module, need_shape(shape), settings)
    opset = export_onnx(module, example, dense, settings.opset, settings.dynamic_batch)
    proto = onnx_io.load_proto(dense)
    onnx_io.set_metadata(
        proto, {k: v for k, v in model_metadata(model, {}).items() if k != "format"}
    )
    with dense.open("wb") as stream:
        onnx_io.write_proto(proto, stream)
    notes = batchnorm_notes(module, proto)
    path, sparse = dense, None
    if settings.sparse_initializers:
        summary = sparsify_initializers(proto.graph)
        path = folder / "sparse.onnx"
        with path.open("wb") as stream:
            onnx_io.write_proto(proto, stream)
        sparse = {"converted": len(summary.converted), "candidates": summary.candidates}
        notes.append(
            "onnxruntime densifies sparse initializers when it loads the model: "
            "the file is smaller, a running session's memory is not"
        )
    onnx_io.check_file(path, full=not settings.sparse_initializers)
    return Artifact(
        path=path,
        dense_bytes=dense.stat().st_size,
        tensors=onnx_io.initializer_arrays(proto, list(model.tensors)),
        run=lambda xs: onnx_io.run_onnx(path, [x.numpy() for x in xs]),  # one session
        opset=opset,
        notes=notes,
        sparse=sparse,
    )


def write_pt2(
    model: LoadedModel, settings: ExportSettings, folder: Path, shape: tuple[int, ...] | None
) -> Artifact:
    from prunecli.io.pt2 import load_program, save_program

    module = model.require_graph("export --to pt2")
    example = example_input(module, need_shape(shape), settings)
    program = export_program(module, example, settings.dynamic_batch)
    path = folder / "model.pt2"
    with path.open("wb") as stream:
        save_program(program, stream)
    reloaded = load_program(path)  # the way every reader loads it, pickles refused
    runnable = reloaded.module()
    return Artifact(
        path=path,
        dense_bytes=path.stat().st_size,
        tensors=reloaded.state_dict,
        run=lambda xs: [run_module(runnable, x) for x in xs],
    )


def write_safetensors(
    model: LoadedModel, settings: ExportSettings, folder: Path, shape: tuple[int, ...] | None
) -> Artifact:
    """A copy (dense or bitmask), verified by reading it back bit for bit: no run needed."""
    path = folder / "model.safetensors"
    # one file, whatever the input (a folder's shards too): -o names a file
    write_model(dataclasses.replace(model, checkpoint=None), str(path), {}, settings.format)
    reloaded = load_model(str(path)).tensors  # bitmask files read back transparently
    differ = [
        name
        for name, tensor in model.tensors.items()
        if name not in reloaded or not torch.equal(reloaded[name], tensor)
    ]
    check = Check(
        name="round-trip",
        threshold=0,
        value=len(differ),
        passed=not differ and len(reloaded) == len(model.tensors),
        message=(
            f"{len(reloaded)} tensors read back bit for bit"
            if not differ
            else f"{len(differ)} tensors differ after reading back, e.g. {differ[0]!r}"
        ),
    )
    return Artifact(
        path=path,
        dense_bytes=dense_safetensors_bytes(model),
        tensors=reloaded,
        checks=[check],
    )


WRITERS: dict[str, Callable[..., Artifact]] = {
    "onnx": write_onnx,
    "pt2": write_pt2,
    "safetensors": write_safetensors,
}


def dense_safetensors_bytes(model: LoadedModel) -> int:
    """The size of ``model`` as a dense safetensors file, without writing it."""
    header = st.encode_header(model.tensors, model_metadata(model, {}))
    return len(header) + sum(t.numel() * t.element_size() for t in model.tensors.values())


def export_program(
    module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool
) -> torch.export.ExportedProgram:
    """``torch.export.export`` on ``example``, its failures as one line."""
    from prunecli.io.onnx_export import dynamic_shapes, quiet_exporter

    with quiet_exporter():
        try:
            return torch.export.export(
                module, (example,), dynamic_shapes=dynamic_shapes(dynamic_batch)
            )
        except Exception as exc:
            detail = f"{type(exc).__name__}: {onnx_io.first_line(exc)}"
            if dynamic_batch:
                raise Unsupported(
                    f"torch.export cannot trace the model with a dynamic batch: {detail}",
                    "drop --dynamic-batch",
                ) from exc
            raise Unsupported(
                f"torch.export cannot trace the model: {detail}",
                "the forward must be traceable (no data-dependent Python control flow)",
            ) from exc


# --- inputs and checks ------------------------------------------------------------------------


def need_shape(shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if shape is None:
        raise Unsupported(
            "export needs the model's input shape", "pass --input-shape, e.g. --input-shape 3,32,32"
        )
    return shape


def input_dtype(module: torch.nn.Module) -> torch.dtype:
    floating = (p.dtype for p in module.parameters() if p.is_floating_point())
    return next(floating, torch.float32)


def example_input(
    module: torch.nn.Module, shape: tuple[int, ...], settings: ExportSettings
) -> torch.Tensor:
    # a dynamic batch is traced at 2: torch.export specialises sizes 0 and 1
    batch = 2 if settings.dynamic_batch else 1
    generator = torch.Generator().manual_seed(settings.seed + 1)
    return torch.randn((batch, *shape), generator=generator).to(input_dtype(module))


def parity_inputs(
    module: torch.nn.Module, shape: tuple[int, ...], settings: ExportSettings
) -> list[torch.Tensor]:
    """Seeded standard-normal batches: batch 1 each, or 1..samples with a dynamic batch."""
    generator = torch.Generator().manual_seed(settings.seed)
    sizes = range(1, settings.samples + 1) if settings.dynamic_batch else [1] * settings.samples
    dtype = input_dtype(module)
    return [torch.randn((n, *shape), generator=generator).to(dtype) for n in sizes]


def run_module(module: Callable[[torch.Tensor], Any], x: torch.Tensor) -> list[Any]:
    with torch.no_grad():
        return flat_outputs(module(x))


def flat_outputs(value: Any) -> list[Any]:
    """A module's outputs as a flat list (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, dict):
        return [x for item in value.values() for x in flat_outputs(item)]
    if isinstance(value, list | tuple):
        return [x for item in value for x in flat_outputs(item)]
    return [value]


def measure_parity(
    model: LoadedModel, run: Runner, shape: tuple[int, ...] | None, settings: ExportSettings
) -> Parity:
    """max |artifact − module| and the output scale over seeded random inputs."""
    module = model.require_graph("export verification")
    inputs = parity_inputs(module, need_shape(shape), settings)
    worst, largest = 0.0, 0.0
    for x, outputs in zip(inputs, run(inputs), strict=True):
        expected = [torch.as_tensor(y).double() for y in run_module(module, x)]
        got = [torch.as_tensor(np.asarray(y)).double() for y in outputs]
        if len(got) != len(expected) or any(
            a.shape != b.shape for a, b in zip(got, expected, strict=False)
        ):
            worst = math.inf
            continue
        for a, b in zip(got, expected, strict=True):
            if a.numel():
                diff = float((a - b).abs().max())
                worst = max(worst, diff if math.isfinite(diff) else math.inf)
                largest = max(largest, float(b.abs().max()))
    return Parity(worst, largest, settings.atol, len(inputs), settings.seed)


def zero_mask(value: Any) -> np.ndarray:
    """Where ``value`` (a torch tensor or NumPy array, any dtype) is zero."""
    if isinstance(value, torch.Tensor):
        return (value.detach() == 0).cpu().numpy()
    return np.asarray(value) == 0


def zero_check(
    model: LoadedModel, names: Sequence[str], exported: Mapping[str, Any]
) -> dict[str, Any]:
    """Zeros of the prunable weights in the source and in the artifact (same-named tensors)."""
    source_zeros = exported_zeros = compared = 0
    lost: list[str] = []
    unmatched: list[str] = []
    for name in names:
        source = zero_mask(model.tensors[name])
        target = zero_mask(exported[name]) if name in exported else None
        if target is None or target.size != source.size:
            unmatched.append(name)
            continue
        compared += source.size
        source_zeros += int(source.sum())
        exported_zeros += int(target.sum())
        if target.shape == source.shape:
            kept = not np.any(source & ~target)
        else:  # the exporter stored it transposed or reshaped: compare counts
            kept = int(target.sum()) >= int(source.sum())
        if not kept:
            lost.append(name)
    return {
        "weights": compared,
        "source_zeros": source_zeros,
        "exported_zeros": exported_zeros,
        "source_sparsity": source_zeros / compared if compared else 0.0,
        "exported_sparsity": exported_zeros / compared if compared else 0.0,
        "zeros_preserved": not lost,
        "lost_in": lost,
        "unmatched": unmatched,
    }


def zeros_check(zeros: Mapping[str, Any]) -> Check:
    lost = zeros["lost_in"]
    message = (
        f"{zeros['source_zeros']:,} zeros in the prunable weights, "
        f"{zeros['exported_zeros']:,} in the artifact"
        if not lost
        else f"zeros became non-zero in {len(lost)} tensors, e.g. {lost[0]!r}"
    )
    return Check("zeros", 0, len(lost), not lost, message)


def parity_check(parity: Parity) -> Check:
    figure = "inf" if not math.isfinite(parity.max_abs_diff) else f"{parity.relative:.3g}"
    message = (
        f"max |diff| {parity.max_abs_diff:.3g} / output scale {parity.output_scale:.3g} = "
        f"{figure} {'<=' if parity.passed else '>'} atol {parity.atol:g} "
        f"({parity.samples} random inputs, seed {parity.seed})"
    )
    if not parity.passed:
        message += "; nothing was written"
    value = parity.relative if math.isfinite(parity.relative) else None  # JSON has no inf
    return Check("parity", parity.atol, value, parity.passed, message)


def batchnorm_notes(module: torch.nn.Module, proto: Any) -> list[str]:
    has_bn = any(isinstance(m, _BATCHNORMS) for m in module.modules())
    in_graph = any(node.op_type == "BatchNormalization" for node in proto.graph.node)
    if has_bn and not in_graph:
        return [
            "the exporter folded BatchNorm into the convolutions; zeros survive "
            "(folding scales each output channel)"
        ]
    return []


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
        "dynamic_batch": settings.dynamic_batch,
        "source_bytes": model.file_bytes,
        "dense_bytes": artifact.dense_bytes,
        "file_bytes": size,
        "compression_ratio": size / artifact.dense_bytes if artifact.dense_bytes else None,
        "parity": parity.to_json() if parity else None,
        "sparsity": dict(zeros),
        "sparse_initializers": artifact.sparse,
        "notes": artifact.notes,
    }

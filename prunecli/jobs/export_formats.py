"""The three writers of `export` (ONNX, torch.export ``.pt2``, safetensors), what they share,
and how an artifact is run: each stages one file in a folder and returns an :class:`Artifact`
for the checks (jobs/export_checks.py) and the job (jobs/export.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import Unsupported
from prunecli.io import onnx as onnx_io
from prunecli.io import safetensors as st
from prunecli.jobs.export_shapes import (
    Axes,
    InputSpec,
    dynamic_shapes,
    example_input,
    input_spec,
    onnx_axes,
    program_axes,
    trace_dynamic,
)
from prunecli.jobs.report import Check
from prunecli.jobs.writing import write_model
from prunecli.models.loaded import LoadedModel, load_model, model_metadata

_BATCHNORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
#: runs an artifact on input batches, returning the outputs of each batch in order
Runner = Callable[[list[torch.Tensor]], list[Sequence[Any]]]


@dataclass
class ExportSettings:
    """What `export` was asked for: the writers here and the checks read it."""

    to: str
    input_shape: tuple[int, ...] | None = None
    opset: int | None = None
    # None: the batch is free unless the model fixes it (then fixed, with a warning);
    # True: free or refused (exit 3); False: fixed. A token model's sequence is free when it can be.
    dynamic_batch: bool | None = None
    sparse_initializers: bool = False
    format: str = "dense"  # safetensors layout: dense or bitmask
    atol: float = 1e-4
    verify: bool = True
    seed: int = 0
    samples: int = 4  # parity batches: batch 1 each, or sizes 1..samples with a free batch


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
    spec: InputSpec | None = None  # the input it was traced with (None: nothing to run)
    axes: Axes = field(default_factory=dict)  # the input's free axes, as traced
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)  # read back
    fallback: str | None = None  # why a wanted axis is fixed


# --- the three writers ------------------------------------------------------------------------


def write_onnx(
    model: LoadedModel, settings: ExportSettings, folder: Path, shape: tuple[int, ...] | None
) -> Artifact:
    from prunecli.io.onnx_export import export_onnx
    from prunecli.io.onnx_sparse import sparsify_initializers

    onnx_io.require("onnx", "onnxscript", "onnxruntime")
    module = export_graph(model, "onnx")
    dense = folder / "dense.onnx"
    spec = input_spec(module, need_shape(shape))
    traced = trace_dynamic(
        lambda axes: export_onnx(
            module, example_input(spec, axes, settings.seed), dense, settings.opset, axes
        ),
        spec,
        settings.dynamic_batch,
    )
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
        opset=traced.result,
        notes=notes,
        sparse=sparse,
        spec=spec,
        axes=traced.axes,
        dynamic_axes=onnx_axes(proto),
        fallback=traced.fallback,
    )


def write_pt2(
    model: LoadedModel, settings: ExportSettings, folder: Path, shape: tuple[int, ...] | None
) -> Artifact:
    from prunecli.io.pt2 import load_program, save_program

    module = export_graph(model, "pt2")
    spec = input_spec(module, need_shape(shape))
    traced = trace_dynamic(
        lambda axes: export_program(module, example_input(spec, axes, settings.seed), axes),
        spec,
        settings.dynamic_batch,
    )
    path = folder / "model.pt2"
    with path.open("wb") as stream:
        save_program(traced.result, stream)
    reloaded = load_program(path)  # the way every reader loads it, pickles refused
    runnable = reloaded.module()
    return Artifact(
        path=path,
        dense_bytes=path.stat().st_size,
        tensors=reloaded.state_dict,
        run=lambda xs: [run_module(runnable, x) for x in xs],
        spec=spec,
        axes=traced.axes,
        dynamic_axes=program_axes(reloaded, traced.axes),
        fallback=traced.fallback,
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


def export_graph(model: LoadedModel, to: str) -> torch.nn.Module:
    """The module to trace; a Hugging Face folder's is refused (after its own checks, such as
    remote code): prunecli runs it with hooks (ids from floats, last-position logits) that an
    exported graph would carry, so Hugging Face graphs wait for an export of their own."""
    module = model.require_graph(f"export --to {to}")
    if model.hf_config is not None:
        raise Unsupported(
            f"export --to {to} of a Hugging Face folder is not supported yet",
            "export it with --to safetensors, or use the model's own exporter (optimum)",
        )
    return module


def dense_safetensors_bytes(model: LoadedModel) -> int:
    """The size of ``model`` as a dense safetensors file, without writing it."""
    header = st.encode_header(model.tensors, model_metadata(model, {}))
    return len(header) + sum(t.numel() * t.element_size() for t in model.tensors.values())


def export_program(
    module: torch.nn.Module, example: torch.Tensor, axes: Axes
) -> torch.export.ExportedProgram:
    """``torch.export.export`` on ``example`` with ``axes`` free, its failures as one line."""
    from prunecli.io.onnx_export import data_dependent, quiet_exporter, shape_independent

    with quiet_exporter():
        try:
            return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(axes))
        except Exception as exc:
            detail = f"{type(exc).__name__}: {onnx_io.first_line(exc)}"
            error = Unsupported(
                f"torch.export cannot trace the model: {detail}",
                "the forward must be traceable (no data-dependent Python control flow)",
            )
            raise (shape_independent(error) if data_dependent(exc) else error) from exc


# --- inputs and running ----------------------------------------------------------------------


def need_shape(shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if shape is None:
        raise Unsupported(
            "export needs the model's input shape", "pass --input-shape, e.g. --input-shape 3,32,32"
        )
    return shape


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


def batchnorm_notes(module: torch.nn.Module, proto: Any) -> list[str]:
    has_bn = any(isinstance(m, _BATCHNORMS) for m in module.modules())
    in_graph = any(node.op_type == "BatchNormalization" for node in proto.graph.node)
    if has_bn and not in_graph:
        return [
            "the exporter folded BatchNorm into the convolutions; zeros survive "
            "(folding scales each output channel)"
        ]
    return []

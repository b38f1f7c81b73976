"""Writing a pruned model: the metadata of DESIGN §5 and the writer chosen by the output's suffix.

Safetensors outputs come in two layouts (``format``): ``dense`` (the default) and ``bitmask``
(prunecli/io/bitmask.py), which encodes the prunable tensors whose encoding is smaller.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.io import bitmask
from prunecli.io import safetensors as st
from prunecli.io.atomic import atomic_output
from prunecli.io.jsonfile import parse_json
from prunecli.io.paths import STDIO
from prunecli.models.loaded import LoadedModel, model_metadata
from prunecli.pruning.prunable import default_prunable

FORMATS = ("dense", "bitmask")


def check_format(format: str, output: str) -> None:
    """Refuse an unknown ``--format``, or a layout the output's file type cannot hold."""
    if format not in FORMATS:
        raise BadInput(f"unknown --format {format!r}", f"choose one of: {', '.join(FORMATS)}")
    if format != "dense" and output != STDIO and Path(output).suffix == ".pt2":
        raise BadInput(
            f"--format {format} writes safetensors, not .pt2", "write .safetensors with -o"
        )


def write_model(
    model: LoadedModel,
    output: str,
    extra: Mapping[str, Any],
    format: str = "dense",
) -> int:
    """Write ``model`` to ``output`` atomically; returns the bytes written.

    ``.pt2`` outputs need a ``.pt2`` input; ``format`` is ``dense`` or ``bitmask`` (the tensors of
    :func:`encoded_tensors` stored as bitmask + values).
    """
    check_format(format, output)
    if model.format == "onnx" or (output != STDIO and Path(output).suffix == ".onnx"):
        return _write_onnx(model, output, extra, format)
    if output != STDIO and Path(output).suffix == ".pt2":
        return _write_pt2(model, output)
    if model.checkpoint is not None and model.checkpoint.folder is not None:
        return _write_folder(model, output, extra, format)
    metadata = model_metadata(model, extra)
    if format == "bitmask":
        names = encoded_tensors(model, extra)
        with atomic_output(output) as stream:
            return bitmask.write(stream, model.tensors, names, metadata)
    with atomic_output(output) as stream:
        return st.write(stream, model.tensors, metadata)


def _write_folder(model: LoadedModel, output: str, extra: Mapping[str, Any], format: str) -> int:
    """A folder like the input's: the same shards, each with its own tensors (stream_output)."""
    from prunecli.streaming.output import write_output

    def write_shard(shard: Any, metadata: dict[str, str], stream: Any) -> dict[str, Any]:
        tensors = {name: model.tensors[name] for name in shard.names}
        if format == "bitmask":
            names = [name for name in encoded_tensors(model, extra) if name in tensors]
            return {"written": bitmask.write(stream, tensors, names, metadata)}
        return {"written": st.write(stream, tensors, metadata)}

    return write_output(model.checkpoint, model, output, dict(extra), write_shard)["written"]


def encoded_tensors(model: LoadedModel, extra: Mapping[str, Any]) -> list[str]:
    """The tensors a bitmask output encodes: the prunable ones whose encoding is smaller.

    Prunable means ``extra["prunable"]`` when given (as ``prune`` does), else the
    ``prunecli.prunable`` list a pruned input carries, else the default selection (DESIGN §2).
    """
    candidates = extra.get("prunable")
    if candidates is None:
        try:
            candidates = parse_json(model.metadata.get("prunecli.prunable", "null"), "metadata")
        except BadInput:  # a hint only: the default selection applies
            candidates = None
    if not isinstance(candidates, list):
        candidates = default_prunable(model)
    names = [name for name in candidates if isinstance(name, str)]
    return bitmask.choose_encoded(model.tensors, names)


def write_tensors(
    tensors: Mapping[str, torch.Tensor], output: str, metadata: Mapping[str, str]
) -> int:
    with atomic_output(output) as stream:
        return st.write(stream, tensors, metadata)


def _write_pt2(model: LoadedModel, output: str) -> int:
    from prunecli.io.pt2 import save_program

    if model.program is None:
        raise Unsupported("writing .pt2 needs a .pt2 input here", "write .safetensors instead")
    for name, tensor in model.program.state_dict.items():
        if name in model.tensors and tensor is not model.tensors[name]:
            tensor.data.copy_(model.tensors[name])
    with atomic_output(output) as stream:
        save_program(model.program, stream)
    return Path(output).stat().st_size if output != STDIO else -1


def _write_onnx(model: LoadedModel, output: str, extra: Mapping[str, Any], format: str) -> int:
    """An ONNX input is written back as ONNX, its initializers replaced by the tensors."""
    from prunecli.io.onnx import write_onnx

    if model.format != "onnx":
        raise Unsupported(
            "an .onnx output needs an ONNX input here", "use `prunecli export --to onnx`"
        )
    if output != STDIO and Path(output).suffix != ".onnx":
        raise Unsupported("an ONNX input is written back as ONNX", "name the output *.onnx")
    if format != "dense":
        raise BadInput(f"--format {format} is a safetensors layout; an ONNX output is ONNX")
    metadata = {k: v for k, v in model_metadata(model, extra).items() if k != "format"}
    with atomic_output(output) as stream:
        return write_onnx(model.onnx, model.tensors, metadata, stream)


def output_summary(
    model: LoadedModel, output: str, written: int, format: str, extra: dict[str, object]
) -> dict[str, object]:
    """The report's ``output``: path, file type and size; the layout of a safetensors file."""
    if output != "-" and output.endswith(".pt2"):
        return {"path": output, "format": "pt2", "file_bytes": written}
    if model.format == "onnx":  # ONNX in, ONNX out
        return {"path": output, "format": "onnx", "file_bytes": written}
    folder = model.checkpoint is not None and model.checkpoint.folder is not None
    summary: dict[str, object] = {
        "path": output,
        "format": "safetensors-folder" if folder else "safetensors",
        "file_bytes": written,
        "layout": format,
    }
    if format == "bitmask":
        summary["encoded"] = encoded_tensors(model, extra)
    return summary

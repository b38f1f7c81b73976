"""Writing a pruned model: the metadata of DESIGN §5 and the writer chosen by the output's suffix."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import prunecli
from prunecli.core.model import (
    META_ARCH,
    META_ARCH_KWARGS,
    META_INPUT_SHAPE,
    META_NUM_CLASSES,
    LoadedModel,
)
from prunecli.errors import Unsupported
from prunecli.io import safetensors as st
from prunecli.io.paths import STDIO, atomic_output


def model_metadata(model: LoadedModel, extra: Mapping[str, Any]) -> dict[str, str]:
    """The input's metadata, updated with the architecture and ``extra`` (prefixed ``prunecli.``)."""
    metadata = dict(model.metadata)
    metadata["format"] = "pt"
    metadata["prunecli.version"] = prunecli.__version__
    arch = model.arch
    if arch is not None and model.format != "pt2":
        metadata[META_ARCH] = arch.name
        metadata[META_ARCH_KWARGS] = json.dumps(arch.kwargs, sort_keys=True)
        if arch.input_shape:
            metadata[META_INPUT_SHAPE] = json.dumps(list(arch.input_shape))
        if arch.num_classes:
            metadata[META_NUM_CLASSES] = str(arch.num_classes)
    for key, value in extra.items():
        metadata[f"prunecli.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def write_model(model: LoadedModel, output: str, extra: Mapping[str, Any]) -> int:
    """Write ``model`` to ``output`` atomically; ``.pt2`` outputs need a ``.pt2`` input."""
    if output != STDIO and Path(output).suffix == ".pt2":
        return _write_pt2(model, output)
    metadata = model_metadata(model, extra)
    with atomic_output(output) as stream:
        return st.write(stream, model.tensors, metadata)


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

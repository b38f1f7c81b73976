"""An ONNX model run by onnxruntime, wrapped as a ``torch.nn.Module``: `eval` measures the
deployed artifact itself (accuracy, similarity to a reference, latency) with the same code, and
so by the same protocols, as a PyTorch model. CPU only (``CPUExecutionProvider``), one graph
input, the first graph output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunecli.errors import BadInput, Unsupported
from prunecli.io.onnx import first_line, graph_values, require

PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeModule(nn.Module):
    """``module(x)`` = the ONNX graph's first output on ``x`` (cast to the input's type)."""

    def __init__(self, path: str | Path, proto: Any) -> None:
        super().__init__()
        require("onnxruntime")
        import onnxruntime

        values = graph_values(proto)
        if len(values["inputs"]) != 1:
            raise Unsupported(
                f"eval runs an ONNX model of one input; {path} takes "
                f"{len(values['inputs'])} ({', '.join(v['name'] for v in values['inputs'])})"
            )
        (graph_input,) = values["inputs"]
        self.path, self.name = str(path), graph_input["name"]
        self.dtype = np.dtype(graph_input["dtype"]) if graph_input["dtype"] != "bfloat16" else None
        if self.dtype is None or self.dtype.kind not in "fiu":
            raise Unsupported(f"eval feeds numbers; {path}'s input is {graph_input['dtype']}")
        dims = graph_input["shape"][1:]
        self.input_shape = tuple(dims) if all(type(d) is int and d > 0 for d in dims) else None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings on stderr
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(self.path, options, providers=[PROVIDER])
        except Exception as exc:  # noqa: BLE001 - whatever onnxruntime refuses, one line
            raise Unsupported(f"onnxruntime cannot load {path}: {first_line(exc)}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(self.dtype, copy=False)
        try:
            (out, *_) = self.session.run(None, {self.name: array})
        except Exception as exc:  # noqa: BLE001 - a shape or type the graph does not take
            raise BadInput(
                f"onnxruntime cannot run {self.path} on a batch of shape {list(array.shape)}: "
                f"{first_line(exc)}",
                "the data must fit the graph's input (prunecli inspect shows it)",
            ) from None
        return torch.from_numpy(np.ascontiguousarray(out))

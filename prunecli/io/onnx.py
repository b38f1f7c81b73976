"""ONNX files: a validating reader, initializers as tensors, a writer, and runs in onnxruntime.

Reading refuses external data that lives outside the model's folder (an absolute ``location``,
``..``, or a link that resolves elsewhere) before any byte of it is read, and turns every parse or
checker failure into one line. Sparse initializers are read densified; the writer keeps them
sparse. ``onnx`` and ``onnxruntime`` are an optional extra, imported here, with an install hint.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.io.inputs import check_input

if TYPE_CHECKING:
    import onnx

INSTALL_HINT = "install the onnx extra: pip install 'prunecli[onnx]'"
#: operators whose weight inputs are prunable: (op type, input positions that may hold a weight)
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "MatMul": (0, 1),
    "Gemm": (0, 1),  # input 2 is the bias, never pruned
    "Conv": (1,),
    "ConvTranspose": (1,),
}
_TORCH_DTYPES = {
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.int8),
    np.dtype(np.int16),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.uint8),
    np.dtype(np.bool_),
}
_PROTOBUF_LIMIT = 2**31 - 1


def require(*modules: str) -> None:
    """Import ``modules`` or say which extra to install (exit 3)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise Unsupported(
                f"ONNX support needs the optional package {name!r}", INSTALL_HINT
            ) from None


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "… were found:" says nothing on its own
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(exc).__name__


@dataclass
class OnnxFile:
    """An ONNX model read from disk: the proto plus its initializers as tensors."""

    proto: onnx.ModelProto
    tensors: dict[str, torch.Tensor]  # initializers torch can hold, sparse ones densified
    metadata: dict[str, str]
    weights: list[str]  # floating initializers of 2+ dimensions feeding MatMul/Gemm/Conv
    sparse: list[str] = field(default_factory=list)  # names stored as sparse_initializer


def read_onnx(path: Path) -> OnnxFile:
    """Read and check ``path``; external data must live inside the model's folder."""
    require("onnx")
    import onnx

    check_input(path)
    if path.stat().st_size == 0:
        raise BadInput(f"{path} is empty")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInput(
            f"{path} is not an ONNX model (corrupt or truncated): {first_line(exc)}"
        ) from None
    if has_external_data(proto):
        check_external_data(proto, path.parent)
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise BadInput(
                f"{path}: its external data could not be read: {first_line(exc)}"
            ) from None
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # ValidationError, or protobuf's limits
        raise BadInput(f"{path} is not a valid ONNX model: {first_line(exc)}") from None
    tensors, sparse = initializer_tensors(proto, str(path))
    return OnnxFile(
        proto=proto,
        tensors=tensors,
        metadata={prop.key: prop.value for prop in proto.metadata_props},
        weights=weight_initializers(proto.graph, tensors),
        sparse=sparse,
    )


def graph_values(proto: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """The graph's inputs and outputs: name, element type and shape, a symbolic dimension by
    its name (``["batch", 3, 32, 32]``), an unknown one as null."""
    import onnx

    initializers = {init.name for init in proto.graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [
            d.dim_param
            if d.HasField("dim_param")
            else d.dim_value
            if d.HasField("dim_value")
            else None
            for d in tensor.shape.dim
        ]
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except Exception:  # noqa: BLE001 - no NumPy type (bfloat16, float8, strings)
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        return {"name": value.name, "dtype": dtype, "shape": dims}

    return {
        "inputs": [describe(v) for v in proto.graph.input if v.name not in initializers],
        "outputs": [describe(v) for v in proto.graph.output],
    }


def all_tensor_protos(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of ``graph``: initializers, sparse parts, attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from all_tensor_protos(attribute.g)
            for subgraph in attribute.graphs:
                yield from all_tensor_protos(subgraph)


def has_external_data(proto: onnx.ModelProto) -> bool:
    import onnx

    return any(
        tensor.data_location == onnx.TensorProto.EXTERNAL
        for tensor in all_tensor_protos(proto.graph)
    )


def check_external_data(proto: onnx.ModelProto, folder: Path) -> None:
    """Refuse (exit 2) any external-data location outside ``folder``: path traversal."""
    import onnx

    root = folder.resolve()
    for tensor in all_tensor_protos(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        relative = Path(location)
        outside = not location or relative.is_absolute() or ".." in relative.parts
        if outside or not (folder / relative).resolve().is_relative_to(root):
            raise BadInput(
                f"refusing tensor {tensor.name!r}: its external data location {location!r} "
                f"is outside the model's folder {folder}",
                "external data must be a file beside the model (path traversal is not followed)",
            )


def initializer_tensors(
    proto: onnx.ModelProto, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Initializers whose dtype torch holds, in file order (dense first, then sparse)."""
    from onnx import numpy_helper

    from prunecli.io.onnx_sparse import densify

    tensors: dict[str, torch.Tensor] = {}
    sparse: list[str] = []
    try:
        for init in proto.graph.initializer:
            add_array(tensors, init.name, numpy_helper.to_array(init))
        for init in proto.graph.sparse_initializer:
            if add_array(tensors, init.values.name, densify(init)):
                sparse.append(init.values.name)
    except BadInput:
        raise
    except Exception as exc:  # data shorter than the dims say, unknown dtype
        raise BadInput(f"{source}: an initializer cannot be read: {first_line(exc)}") from None
    return tensors, sparse


def add_array(tensors: dict[str, torch.Tensor], name: str, array: np.ndarray) -> bool:
    if array.dtype not in _TORCH_DTYPES:
        return False  # e.g. bfloat16 or strings: kept in the file as they are, never pruned
    tensors[name] = torch.from_numpy(np.array(array, copy=True))
    return True


def weight_initializers(graph: onnx.GraphProto, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Floating initializers of 2+ dimensions that are weight inputs of MatMul/Gemm/Conv."""
    used: set[str] = set()
    for node in graph.node:
        for position in (
            WEIGHT_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        ):
            if position < len(node.input):
                used.add(node.input[position])
    return [
        name
        for name, tensor in tensors.items()
        if name in used and tensor.is_floating_point() and tensor.dim() >= 2
    ]


def write_onnx(
    proto: onnx.ModelProto,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    stream: BinaryIO,
) -> int:
    """Write ``proto`` with its initializers replaced by ``tensors`` (sparse ones stay sparse)."""
    from onnx import numpy_helper

    from prunecli.io.onnx_sparse import sparse_tensor

    graph = proto.graph
    for index, init in enumerate(graph.initializer):
        if init.name in tensors:
            graph.initializer[index].CopyFrom(
                numpy_helper.from_array(tensors[init.name].numpy(), init.name)
            )
    for index, init in enumerate(graph.sparse_initializer):
        name = init.values.name
        if name in tensors:
            graph.sparse_initializer[index].CopyFrom(sparse_tensor(name, tensors[name].numpy()))
    set_metadata(proto, metadata)
    return write_proto(proto, stream)


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def write_proto(proto: onnx.ModelProto, stream: BinaryIO) -> int:
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise Unsupported(
            "the ONNX model is over 2 GB, which needs external data; prunecli writes one file",
            "prune the PyTorch model and export the parts separately",
        )
    data = proto.SerializeToString()
    stream.write(data)
    return len(data)


def load_proto(path: Path) -> onnx.ModelProto:
    """A file prunecli just wrote (no validation beyond protobuf's)."""
    import onnx

    return onnx.load(str(path))


def check_file(path: Path, full: bool) -> None:
    """``onnx.checker`` on ``path``; ``full`` adds shape inference, which sparse initializers fail
    (onnx infers a sparse type where a dense operator expects a tensor)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:
        raise Unsupported(
            f"the exported ONNX model fails onnx.checker: {first_line(exc)}"
        ) from None


def run_onnx(path: Path, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Run ``path`` in onnxruntime (CPU) once per input; the outputs of each run."""
    require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        return [list(session.run(None, {name: x})) for x in inputs]
    except Exception as exc:
        raise Unsupported(f"onnxruntime cannot run the exported model: {first_line(exc)}") from None


def initializer_arrays(proto: onnx.ModelProto, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The initializers in ``names`` as dense arrays (sparse ones densified)."""
    from onnx import numpy_helper

    from prunecli.io.onnx_sparse import densify

    wanted = set(names)
    arrays: dict[str, Any] = {
        init.name: numpy_helper.to_array(init)
        for init in proto.graph.initializer
        if init.name in wanted
    }
    for init in proto.graph.sparse_initializer:
        if init.values.name in wanted:
            arrays[init.values.name] = densify(init)
    return arrays

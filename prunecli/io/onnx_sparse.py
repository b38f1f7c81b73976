"""ONNX sparse initializers: pruned initializers stored as ``sparse_initializer`` entries.

Layout (docs/export.md): ``values`` holds the non-zero elements in row-major order, in the
initializer's dtype, under the initializer's name; ``indices`` holds their **linear** row-major
positions as int64, shape ``[NNZ]`` (the ONNX checker accepts int64 indices only; linear indices
cost 8 bytes per non-zero, coordinates ``[NNZ, rank]`` would cost 8 × rank). A tensor is stored
sparse only when that is smaller: NNZ × (8 + itemsize) < elements × itemsize, i.e. above about
33% zeros for fp32. onnxruntime densifies sparse initializers when it loads the model, so the
file shrinks but the memory of a running session does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

INDEX_BYTES = 8  # int64


@dataclass(frozen=True)
class SparseSummary:
    converted: list[str]  # initializers now stored sparse
    candidates: int  # floating initializers considered


def sparse_is_smaller(array: np.ndarray) -> bool:
    nonzero = int(np.count_nonzero(array))
    return nonzero * (INDEX_BYTES + array.itemsize) < array.size * array.itemsize


def sparse_tensor(name: str, array: np.ndarray) -> onnx.SparseTensorProto:
    """``array`` as a SparseTensorProto with linear int64 indices."""
    from onnx import helper, numpy_helper

    flat = np.ascontiguousarray(array).reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)
    values = numpy_helper.from_array(flat[indices], name)
    return helper.make_sparse_tensor(
        values, numpy_helper.from_array(indices, f"{name}.indices"), list(array.shape)
    )


def densify(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A dense array from linear ``[NNZ]`` or coordinate ``[NNZ, rank]`` indices."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values).reshape(-1)
    shape = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(shape, dtype=values.dtype)
    if values.size == 0:
        return dense
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def copy_of(init: onnx.TensorProto) -> onnx.TensorProto:
    # a detached copy: elements removed from a repeated field must not be reused in place
    copied = type(init)()
    copied.CopyFrom(init)
    return copied


def sparsify_initializers(graph: onnx.GraphProto) -> SparseSummary:
    """Move every floating initializer whose sparse form is smaller to ``sparse_initializer``."""
    from onnx import numpy_helper

    kept, converted, candidates = [], [], 0
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f" and array.ndim >= 1:
            candidates += 1
            if sparse_is_smaller(array):
                graph.sparse_initializer.append(sparse_tensor(init.name, array))
                converted.append(init.name)
                continue
        kept.append(copy_of(init))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return SparseSummary(converted, candidates)

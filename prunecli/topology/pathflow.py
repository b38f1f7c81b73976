"""Forward passes of path networks (topology/pathnet.py) that stay within float64's range and get
cheaper as the network gets sparser. Used by SynFlow; nothing here is specific to it.

A pass runs under :class:`FlowTrace`, a torch function mode that sees every operation whose
inputs descend from the all-ones input (the *flow*), whatever the model's code looks like: zoo
modules, user modules, the flat graphs of ``.pt2`` programs.

Rescaling. Path products of deep networks leave float64's range (a 200-layer MLP of width 64
reaches 1e120 at initialisation; trained BatchNorm scales make it worse). Activations are
therefore divided by a power of two at *cut points*: operations that every input→output path
goes through exactly once. In a chain that is every layer; in a ResNet it is each block's output
after the addition, never a layer inside a residual branch, which the skip path bypasses.
Dividing at a cut divides every path product, and so every gradient-times-weight, by the same
factor. Powers of two are exact in binary floating point, so a rescaled pass gives bit for bit
the unscaled results times one global power of two wherever the unscaled pass is finite.
Cut points come from one recording pass (:func:`record_plan`): the operations form a DAG in
execution order, which is topological, and an operation is on every path exactly when no edge
of that DAG jumps over it.

Sparse layers. Late rounds of an iterative schedule keep a few percent of the weights or less,
yet a dense convolution costs the same at any sparsity. A Conv2d or Linear weight can be
evaluated from its live entries instead (:class:`SparseLayer`): im2col columns times the live
entries, the transposed product for the input gradient, and the weight gradients at the live
entries only — work in proportion to the live entries. It computes the same sums as the dense
operation, in another order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_SOURCE = -1  # the node of the all-ones input
_MAX_EXPONENT = 1000  # float64 powers of two stay normal within ±1022
_CHUNK = 1 << 16  # elements of a sparse layer's temporaries: small enough to stay in cache
_CONV2D = (torch.conv2d, torch.ops.aten.conv2d.default)
_LINEAR = (F.linear, torch.ops.aten.linear.default)
_CONV2D_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV2D_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


@dataclass(frozen=True)
class _Op:
    func: Callable[..., Any]
    parents: frozenset[int]  # producing ops of its flow inputs (_SOURCE: the input)
    scalable: bool  # one new floating tensor out: it can be replaced by a rescaled copy
    sparse_weight: int | None = None  # id of a weight this op could evaluate sparsely


@dataclass(frozen=True)
class FlowPlan:
    """The operations of one forward pass, those to rescale, and the weights that can be
    evaluated sparsely (used by exactly one Conv2d/Linear operation of a supported form)."""

    funcs: tuple[Callable[..., Any], ...]
    cuts: frozenset[int]
    sparse_capable: frozenset[int]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def power_of_two_scale(x: torch.Tensor) -> torch.Tensor:
    """A float64 power of two bringing max(x) into [0.5, 1); 1 for an all-zero tensor.

    Built from the exponent bits, so it is exact; no host synchronisation. Flows are
    non-negative; for other values any power of two keeps the result exact, only less tidy."""
    _, exponent = torch.frexp(x.detach().amax().to(torch.float64))
    exponent = exponent.to(torch.int64).clamp(-_MAX_EXPONENT, _MAX_EXPONENT)
    return ((1023 - exponent) << 52).view(torch.float64)


class FlowTrace(TorchFunctionMode):
    """Follows one forward pass: each operation with an input descending from ``source``.

    With a ``plan``, the outputs of its cut operations are divided by a power of two, and the
    Conv2d/Linear operations whose weights are in ``sparse`` run on their live entries. If the
    pass does not follow the plan (its operations depend on values), it stops rescaling and
    sets ``diverged``.
    """

    def __init__(
        self,
        source: torch.Tensor,
        plan: FlowPlan | None = None,
        sparse: Mapping[int, SparseLayer] | None = None,
    ) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.plan = plan
        self.sparse = sparse or {}
        self.diverged = False
        self._producer: dict[int, int] = {id(source): _SOURCE}
        self._keep: list[torch.Tensor] = [source]  # ids stay unique while the pass runs

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        inputs = list(_tensors((args, kwargs)))
        parents = frozenset(self._producer[id(t)] for t in inputs if id(t) in self._producer)
        layer_args = _layer_args(func, args, kwargs) if parents else None
        weight = layer_args["weight"] if layer_args else None
        if weight is not None and id(weight) in self.sparse:
            out = self.sparse[id(weight)].apply(layer_args)
        else:
            out = func(*args, **kwargs)
        if not parents:
            return out
        outputs = list(_tensors(out))
        if out is None and args and isinstance(args[0], torch.Tensor):
            outputs = [args[0]]  # e.g. __setitem__: a new version of its first argument
        scalable = (
            isinstance(out, torch.Tensor)
            and out.is_floating_point()
            and out.numel() > 0
            and not any(out is t for t in inputs)  # in place: other references see the result
        )
        index = len(self.ops)
        capable = id(weight) if layer_args and _sparse_supported(layer_args) else None
        self.ops.append(_Op(func, parents, scalable, capable))
        if self.plan is not None and not self.diverged:
            if index >= len(self.plan.funcs) or self.plan.funcs[index] != func:
                self.diverged = True
            elif index in self.plan.cuts and scalable:
                out = out * power_of_two_scale(out)
                outputs = [out]
        for tensor in outputs:
            self._producer[id(tensor)] = index
            self._keep.append(tensor)
        return out

    def plan_for(self, output: Any, rescale: bool = True) -> FlowPlan:
        """The plan of the pass that produced ``output``: its cut points (none when not
        ``rescale``) and its sparse-capable weights."""
        sink_parents = frozenset(
            self._producer[id(t)] for t in _tensors(output) if id(t) in self._producer
        )
        cuts = cut_points(self.ops, sink_parents) if rescale else frozenset()
        uses: dict[int, int] = {}
        for op in self.ops:
            if op.sparse_weight is not None:
                uses[op.sparse_weight] = uses.get(op.sparse_weight, 0) + 1
        capable = frozenset(weight for weight, count in uses.items() if count == 1)
        return FlowPlan(tuple(op.func for op in self.ops), cuts, capable)


def cut_points(ops: list[_Op], sink_parents: frozenset[int]) -> frozenset[int]:
    """Scalable operations on every source→sink path of the DAG ``ops`` (in topological order).

    On the sub-DAG of operations that reach the sink, a node is on every path exactly when no
    edge (u, w) has u before it and w after it.
    """
    parents = [op.parents for op in ops] + [sink_parents]
    sink = len(ops)
    on_path: set[int] = set()
    stack = [sink]
    while stack:
        node = stack.pop()
        if node == _SOURCE or node in on_path:
            continue
        on_path.add(node)
        stack.extend(parents[node])
    furthest_consumer: dict[int, int] = {}
    for node in on_path:
        for parent in parents[node]:
            furthest_consumer[parent] = max(furthest_consumer.get(parent, node), node)
    cuts = set()
    reach = furthest_consumer.get(_SOURCE, sink)  # furthest node an earlier edge leads to
    for node in sorted(on_path - {sink}):
        if reach <= node and ops[node].scalable:
            cuts.add(node)
        reach = max(reach, furthest_consumer.get(node, node))
    return frozenset(cuts)


def record_plan(module: torch.nn.Module, ones: torch.Tensor, rescale: bool = True) -> FlowPlan:
    """One pass without gradients to learn the graph: cut points and sparse-capable weights."""
    trace = FlowTrace(ones)
    with torch.no_grad(), trace:
        output = module(ones)
    return trace.plan_for(output, rescale)


# --------------------------------------------------------------------------- sparse layers


def _layer_args(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """The named arguments of a Conv2d or Linear operation, or None for any other operation."""
    if func in _CONV2D:
        named = dict(_CONV2D_DEFAULTS)
        named.update(zip(_CONV2D_ARGS, args, strict=False))
        named.update(kwargs)
        named["kind"] = "conv2d"
        return named
    if func in _LINEAR:
        named = {"bias": None, **dict(zip(("input", "weight", "bias"), args, strict=False))}
        named.update(kwargs)
        named["kind"] = "linear"
        return named
    return None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[-1]))


def _sparse_supported(named: dict[str, Any]) -> bool:
    x, weight = named.get("input"), named.get("weight")
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return False
    if named["kind"] == "linear":
        return weight.dim() == 2
    padding = named["padding"]
    return (
        named["groups"] == 1
        and not isinstance(padding, str)
        and weight.dim() == 4
        and x.dim() == 4
        and x.shape[0] == 1
    )


class SparseLayer:
    """A Conv2d or Linear weight of a path network, evaluated from its live entries.

    :meth:`load` takes the model's weight (pruned entries exactly zero) and keeps |θ| at the
    live entries; the backward pass leaves ∂R/∂θ·|θ| of those entries in :attr:`scores`.
    Biases are zero in a path network and are left out.
    """

    def __init__(self, shape: torch.Size, device: str | torch.device) -> None:
        self.shape = shape
        self.columns = math.prod(shape[1:])  # a row of the weight as a matrix
        self.device = device
        self.positions = torch.empty(0, dtype=torch.int64)
        self.host_positions = self.positions  # on the weight's own device
        self.scores: torch.Tensor | None = None

    def load(
        self, weight: torch.Tensor, only_zeroed: bool = False, positions: torch.Tensor | None = None
    ) -> None:
        """Take the live entries of ``weight``: at ``positions`` when given (ascending flat
        indices, as pruning/live.py tracks them). ``only_zeroed``: since the last load, entries
        have only been set to zero, so the live ones are among those of the last load."""
        flat = weight.reshape(-1)
        if positions is not None:
            pass
        elif only_zeroed and self.host_positions.device == flat.device:
            positions = self.host_positions[flat[self.host_positions] != 0]
        else:
            positions = torch.nonzero(flat).reshape(-1)
        self.host_positions = positions
        self.values = flat[positions].to(device=self.device, dtype=torch.float64).abs()
        self.positions = positions.to(self.device)
        self.rows = self.positions // self.columns
        self.cols = self.positions % self.columns
        self.scores = None

    def apply(self, named: dict[str, Any]) -> torch.Tensor:
        return _SparseProduct.apply(named["input"], self, named)

    def _chunks(self, width: int) -> Iterator[slice]:
        step = max(1, _CHUNK // max(1, width))
        for start in range(0, self.values.numel(), step):
            yield slice(start, start + step)

    def multiply(self, columns: torch.Tensor) -> torch.Tensor:
        """W @ columns for columns [C, P]: [O, P]."""
        out = columns.new_zeros(self.shape[0], columns.shape[1])
        for part in self._chunks(columns.shape[1]):
            rows = columns[self.cols[part]].mul_(self.values[part, None])
            out.index_add_(0, self.rows[part], rows)
        return out

    def multiply_transposed(self, grad: torch.Tensor) -> torch.Tensor:
        """Wᵀ @ grad for grad [O, P]: [C, P]."""
        out = grad.new_zeros(self.columns, grad.shape[1])
        for part in self._chunks(grad.shape[1]):
            rows = grad[self.rows[part]].mul_(self.values[part, None])
            out.index_add_(0, self.cols[part], rows)
        return out

    def record_scores(self, grad: torch.Tensor, columns: torch.Tensor) -> None:
        """|θ|·∂R/∂θ at the live entries: ∂R/∂θ_oc = Σ_p grad[o, p]·columns[c, p]."""
        scores = self.values.clone()
        for part in self._chunks(grad.shape[1]):
            products = grad[self.rows[part]].mul_(columns[self.cols[part]])
            scores[part] *= products.sum(1)
        self.scores = scores


class _SparseProduct(torch.autograd.Function):
    """A Conv2d/Linear of a path network (batch 1) from a :class:`SparseLayer`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: SparseLayer, named: dict[str, Any]):  # noqa: ANN001, ANN205
        if named["kind"] == "conv2d":
            kernel = layer.shape[2:]
            geometry = {
                "kernel_size": tuple(kernel),
                "dilation": _pair(named["dilation"]),
                "padding": _pair(named["padding"]),
                "stride": _pair(named["stride"]),
            }
            columns = F.unfold(x, **geometry)[0]
            out_size = [
                (size + 2 * pad - dil * (k - 1) - 1) // step + 1
                for size, k, pad, dil, step in zip(
                    x.shape[2:],
                    kernel,
                    geometry["padding"],
                    geometry["dilation"],
                    geometry["stride"],
                    strict=True,
                )
            ]
            out = layer.multiply(columns).reshape(1, layer.shape[0], *out_size)
        else:
            geometry = {}
            columns = x.reshape(-1, layer.columns).T
            out = layer.multiply(columns).T.reshape(*x.shape[:-1], layer.shape[0])
        ctx.layer, ctx.geometry, ctx.input_shape = layer, geometry, x.shape
        ctx.save_for_backward(columns)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (columns,) = ctx.saved_tensors
        layer: SparseLayer = ctx.layer
        if ctx.geometry:
            grad_rows = grad.reshape(layer.shape[0], -1)
        else:
            grad_rows = grad.reshape(-1, layer.shape[0]).T
        layer.record_scores(grad_rows, columns)
        grad_columns = layer.multiply_transposed(grad_rows)
        if ctx.geometry:
            grad_x = F.fold(grad_columns[None], ctx.input_shape[2:], **ctx.geometry)
        else:
            grad_x = grad_columns.T.reshape(ctx.input_shape)
        return grad_x, None, None

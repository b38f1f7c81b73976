"""Channel groups of a module, found from its torch.fx graph (DepGraph's coupling, by union-find).

Every value in the graph that has a channel dimension carries a *space*: the output channels of
the Conv or Linear that produced it. Operations that keep channels where they are (BatchNorm,
activations, pooling, dropout, a depthwise conv) pass the space on and add their own per-channel
entries to it; an element-wise sum or product of two values joins their spaces (a residual
addition ties the channels of both branches); a flatten turns each channel into a block of
height × width features of the Linear that reads it. A space reached by anything else — the
model's output, a concatenation, a reshape that moves channels, LayerNorm or GroupNorm (which mix
the channels they normalise), a grouped conv — is frozen: its channels stay.

Each space left is a :class:`Group`: unit ``i`` is its producers' output row ``i`` (weights,
biases, BatchNorm entries) and every consumer's input column ``i``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from prunecli.structure.groups import Group, Slice
from prunecli.structure.trace_ops import (
    BN,
    CONV,
    JOIN,
    JOIN_METHODS,
    PASS_FUNCTIONS,
    PASS_METHODS,
    PASS_MODULES,
    SHAPE_ONLY_METHODS,
    trace_graph,
)


@dataclass
class _Space:
    size: int
    slices: list[Slice] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    frozen: bool = False
    parent: int = -1  # union-find: -1 at a root


@dataclass(frozen=True)
class _Val:
    space: int  # index into the spaces
    dim: int  # where the channels are
    block: int = 1  # features per channel (after a flatten)


class _Tracer:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.spaces: list[_Space] = []
        self.values: dict[fx.Node, _Val | None] = {}

    # union-find ---------------------------------------------------------------------------
    def root(self, index: int) -> int:
        while self.spaces[index].parent >= 0:
            index = self.spaces[index].parent
        return index

    def new(self, size: int) -> int:
        self.spaces.append(_Space(size))
        return len(self.spaces) - 1

    def join(self, a: int, b: int) -> int:
        a, b = self.root(a), self.root(b)
        if a == b:
            return a
        sa, sb = self.spaces[a], self.spaces[b]
        if sa.size != sb.size:
            sa.frozen = sb.frozen = True
            return a
        sb.parent = a
        sa.slices += sb.slices
        sa.producers += sb.producers
        sa.consumers += sb.consumers
        sa.frozen = sa.frozen or sb.frozen
        return a

    def space(self, val: _Val) -> _Space:
        return self.spaces[self.root(val.space)]

    def freeze(self, value: Any) -> None:
        """Freeze the spaces of every node inside ``value`` (args, tuples, dicts)."""
        for node in _nodes(value):
            val = self.values.get(node)
            if val is not None:
                self.space(val).frozen = True

    # the walk -------------------------------------------------------------------------------
    def run(self, graph: fx.Graph) -> None:
        for node in graph.nodes:
            self.values[node] = self.visit(node)

    def visit(self, node: fx.Node) -> _Val | None:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            self.freeze(node.args)
            return None
        if node.op == "call_module":
            return self.call_module(node, self.module.get_submodule(str(node.target)))
        if node.op == "call_method" and node.target in SHAPE_ONLY_METHODS:
            return None
        if node.op == "call_function" and node.target is getattr:
            return None  # x.shape, x.dtype: no data flows
        return self.call_function(node)

    def first(self, node: fx.Node) -> _Val | None:
        arg = node.args[0] if node.args else None
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def call_module(self, node: fx.Node, m: nn.Module) -> _Val | None:
        name = str(node.target)
        val = self.first(node)
        if isinstance(m, CONV) and m.groups == 1:
            self.consume(val, node, 1, name)
            return self.produce(m, name, node, 1)
        if isinstance(m, CONV) and m.groups == m.in_channels == m.out_channels and val:
            if val.dim != 1 or val.block != 1:
                self.freeze(node.args)
                return None
            self.attach(val, m, name, ("weight", "bias"))
            return val
        if isinstance(m, nn.Linear):
            self.consume(val, node, -1, name)
            return self.produce(m, name, node, -1)
        if isinstance(m, BN) and val is not None and val.dim == 1 and val.block == 1:
            self.attach(val, m, name, ("weight", "bias", "running_mean", "running_var"))
            return val
        if isinstance(m, nn.PReLU) and m.num_parameters > 1 and val and val.dim == 1:
            self.attach(val, m, name, ("weight",))
            return val
        if isinstance(m, PASS_MODULES) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return self.passed(node, val)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, val)
        self.freeze(node.args)
        self.freeze(node.kwargs)
        return None

    def call_function(self, node: fx.Node) -> _Val | None:
        target = node.target
        method = node.op == "call_method"
        if (not method and target in PASS_FUNCTIONS) or (method and target in PASS_METHODS):
            self.freeze(node.args[1:])
            return self.passed(node, self.first(node))
        if (not method and target in JOIN) or (method and target in JOIN_METHODS):
            return self.joined(node)
        if (
            not method and target in (torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze)
        ) or (method and target in ("flatten", "view", "reshape", "unsqueeze", "squeeze")):
            return self.flatten(node, self.first(node))
        if not method and target is operator.getitem and _only_new_axes(node.args[1]):
            return self.flatten(node, self.first(node))  # x[:, :, None, None]
        if (not method and target is torch.mean) or (method and target == "mean"):
            return self.reduced(node)
        self.freeze(node.args)
        self.freeze(node.kwargs)
        return None

    # what each kind of operation does to spaces ---------------------------------------------
    def consume(self, val: _Val | None, node: fx.Node, dim: int, name: str) -> None:
        if val is None:
            return
        ndim = len(_shape(node.args[0]))
        if val.dim != (dim % ndim):
            self.space(val).frozen = True
            return
        space = self.space(val)
        space.slices.append(Slice(f"{name}.weight" if name else "weight", 1, val.block))
        space.consumers.append(name)

    def produce(self, m: nn.Module, name: str, node: fx.Node, dim: int) -> _Val:
        out_features = m.weight.shape[0]
        index = self.new(out_features)
        space = self.spaces[index]
        space.producers.append(name)
        for attr in ("weight", "bias"):
            if getattr(m, attr, None) is not None:
                space.slices.append(Slice(_join_name(name, attr), 0))
        return _Val(index, dim % len(_shape(node)))

    def attach(self, val: _Val, m: nn.Module, name: str, attrs: tuple[str, ...]) -> None:
        space = self.space(val)
        for attr in attrs:
            if getattr(m, attr, None) is not None:
                space.slices.append(Slice(_join_name(name, attr), 0))

    def passed(self, node: fx.Node, val: _Val | None) -> _Val | None:
        if val is None:
            return None
        if _keeps_dim(node, val):
            return self._normal(node, val)
        self.space(val).frozen = True
        return None

    def joined(self, node: fx.Node) -> _Val | None:
        tensors = [a for a in node.args if isinstance(a, fx.Node) and _is_tensor(a)]
        vals = [self.values.get(a) for a in tensors]
        if not tensors:
            return None
        out_ndim = len(_shape(node))
        present = [v for v in vals if v is not None]
        absent = [a for a, v in zip(tensors, vals, strict=True) if v is None]
        if not present:
            return None
        dims = {self._dim(v, out_ndim, a) for v, a in zip(vals, tensors, strict=True) if v}
        blocks = {v.block for v in present}
        # a value without channels joins only if it is the same for every channel (a scalar)
        broadcast_ok = all(_numel(a) == 1 for a in absent)
        if len(dims) != 1 or len(blocks) != 1 or not broadcast_ok:
            self.freeze(node.args)
            return None
        root = present[0].space
        for v in present[1:]:
            root = self.join(root, v.space)
        dim = dims.pop()
        return _Val(root, dim, present[0].block)

    def flatten(self, node: fx.Node, val: _Val | None) -> _Val | None:
        if val is None:
            return None
        before, after = _shape(node.args[0]), _shape(node)
        dim = val.dim % len(before)
        if before == after:
            return val
        # size-1 dimensions added or dropped (unsqueeze, x[:, :, None], view(N, C, 1, 1)): the
        # channels keep their place among the other dimensions
        kept = [d for d, size in enumerate(before) if size != 1]
        if (
            dim in kept
            and val.block == 1
            and [before[d] for d in kept] == [s for s in after if s != 1]
        ):
            rank = kept.index(dim)
            return _Val(val.space, [d for d, size in enumerate(after) if size != 1][rank])
        # (N, C, *rest) → (N, C·prod(rest)) with the channels first: each is a block of features
        if (
            dim == 1
            and len(after) == 2
            and after[0] == before[0]
            and after[1] == math.prod(before[1:])
        ):
            return _Val(val.space, 1, val.block * math.prod(before[2:]))
        self.space(val).frozen = True
        return None

    def reduced(self, node: fx.Node) -> _Val | None:
        """A mean over dimensions other than the channels' keeps them (global average pooling)."""
        val = self.first(node)
        if val is None:
            return None
        before, after = _shape(node.args[0]), _shape(node)
        dim = val.dim % len(before)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if (
            isinstance(dims, (tuple, list))
            and all(isinstance(d, int) for d in dims)
            and val.block == 1
        ):
            reduced = {d % len(before) for d in dims}
            if dim not in reduced:
                new_dim = dim if keepdim else dim - sum(1 for d in reduced if d < dim)
                if after[new_dim] == before[dim]:
                    return _Val(val.space, new_dim)
        self.space(val).frozen = True
        return None

    def _normal(self, node: fx.Node, val: _Val) -> _Val:
        return _Val(val.space, val.dim % len(_shape(node)), val.block)

    def _dim(self, val: _Val, out_ndim: int, node: fx.Node) -> int:
        ndim = len(_shape(node))
        return (val.dim % ndim) + (out_ndim - ndim)


def _only_new_axes(index: Any) -> bool:
    """An index that only adds axes: ``[:, :, None, None]``."""
    full = slice(None, None, None)
    parts = index if isinstance(index, tuple) else (index,)
    return all(part is None or part == full for part in parts) and None in parts


def _keeps_dim(node: fx.Node, val: _Val) -> bool:
    before, after = _shape(node.args[0]), _shape(node)
    dim = val.dim % len(before)
    return len(before) == len(after) and before[dim] == after[dim]


def _join_name(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def _nodes(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def _meta(node: Any) -> Any:
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def _is_tensor(node: fx.Node) -> bool:
    meta = _meta(node)
    return meta is not None and hasattr(meta, "shape")


def _shape(node: Any) -> tuple[int, ...]:
    meta = _meta(node)
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _numel(node: fx.Node) -> int:
    return math.prod(_shape(node))


def find_groups(module: nn.Module, example: torch.Tensor, label: str = "the model") -> list[Group]:
    """The channel groups of ``module`` (a conv net or MLP) in graph order."""
    traced = trace_graph(module, example, label)
    tracer = _Tracer(module)
    tracer.run(traced.graph)
    order = {name: i for i, (name, _) in enumerate(module.named_modules())}
    groups = []
    for index, space in enumerate(tracer.spaces):
        if space.parent >= 0 or space.frozen or space.size < 2 or not space.consumers:
            continue
        producers = sorted(dict.fromkeys(space.producers), key=lambda p: order.get(p, -1))
        convs = any(isinstance(module.get_submodule(p), CONV) for p in producers)
        kind = "channel" if convs else "neuron"
        label_text = (
            producers[0] if len(producers) == 1 else f"{producers[0]} + {len(producers) - 1} tied"
        )
        groups.append(
            Group(
                name=producers[0] or f"space{index}",
                kind=kind,
                size=space.size,
                slices=list(dict.fromkeys(space.slices)),
                consumers=list(dict.fromkeys(space.consumers)),
                producers=producers,
                label=label_text,
            )
        )
    return groups

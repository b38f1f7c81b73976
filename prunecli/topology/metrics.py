"""Topology of a masked network (DESIGN §4): effective paths, weights and nodes, collapsed layers.

Computed on a :class:`PathNetwork` (biases zero, BatchNorm the identity, average pooling as sum
pooling) whose Linear/Conv weights are their 0/1 masks, on an all-ones input. To count the paths
of the graph exactly the copy is made fully linear: max pooling becomes sum pooling too (every
cell of a window is an edge to its output) and elementwise activations become the identity (ReLU
already is on counts; sigmoid or softplus would turn a zero count into a positive one).

With a the forward count (paths from the input) and b = ∂P/∂a the backward count (paths to the
output) of every layer output:

- effective paths P = the sum of the output (a float64 forward pass);
- a weight is effective when it is kept and ∂P/∂w > 0 (at least one path runs through it);
- an output channel (neuron) is effective when a path runs through it: Σ_positions a·b > 0, which
  for a neuron is a > 0 and b > 0;
- a layer is collapsed when it is entirely pruned, or where the flow of paths stops although it
  keeps weights: its input is reached from the network input but its output is not, or its output
  leads to the network output but nothing flows back through it to its input. Layers merely cut
  off by a collapse elsewhere have no effective weight either, but are not counted as collapsed:
  one fully pruned layer is one collapsed layer.

The last three need only whether a count is positive. They come from one forward and one backward
pass in which every layer output, and the gradient arriving at it, is reduced to 1 where positive:
no value can overflow or underflow however deep the network, so float32 is exact for it (and far
faster than float64 on CPUs). The count itself is exact in float64 up to 2^53 and rounded above.
Past float64's range (a dense 200-layer MLP of width 64 has 10^361 paths) it is taken on an input
of 2^-1000, which keeps every count a normal float up to about 10^616 in any graph; past that,
with every layer output divided by its maximum and the log10 of the divisors carried aside, which
is exact when every path crosses every layer once (checked; a chain such as a deep MLP). Otherwise
the count is reported as unknown (None), and the rest stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.models.loaded import LoadedModel
from prunecli.topology.pathnet import PathNetwork


@dataclass(frozen=True)
class LayerTopology:
    name: str
    weights: int  # all weights of the layer, kept or not
    effective_weights: int
    nodes: int  # output neurons or channels
    effective_nodes: int
    collapsed: bool

    @property
    def effective_sparsity(self) -> float:
        return 1.0 - self.effective_weights / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class Topology:
    log10_paths: float | None  # -inf when no path; None when too many to count (see module doc)
    layers: list[LayerTopology]

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def effective_weights(self) -> int:
        return sum(layer.effective_weights for layer in self.layers)

    @property
    def effective_sparsity(self) -> float:
        return 1.0 - self.effective_weights / self.weights if self.weights else 0.0

    @property
    def nodes(self) -> int:
        return sum(layer.nodes for layer in self.layers)

    @property
    def effective_nodes(self) -> int:
        return sum(layer.effective_nodes for layer in self.layers)

    @property
    def collapsed_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.collapsed]

    def layer(self, name: str) -> LayerTopology | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, LayerTopology]:
        return {layer.name: layer for layer in self.layers}


def model_topology(
    model: LoadedModel, names: Sequence[str], input_shape: tuple[int, ...] | None = None
) -> Topology | None:
    """The topology of ``model``'s prunable layers ``names``; None when the graph is unknown."""
    shape = input_shape or (model.arch.input_shape if model.arch else None)
    if model.module is None or shape is None or not names:
        return None
    return compute_topology(model.module, names, shape)


def compute_topology(
    module: nn.Module, names: Sequence[str], input_shape: tuple[int, ...], device: str = "cpu"
) -> Topology:
    network = PathNetwork(module, batchnorm="identity", device=device)
    # every Linear/Conv layer is part of the graph, reported or not: its weights become masks
    layers = _layer_weights(network.module, names)
    with torch.no_grad():
        for name in layers:
            network.parameter(name).ne_(0)  # the 0/1 mask, in place
    sites = _linearise(network, layers)
    for tensor in network.module.parameters():
        tensor.requires_grad_(False)
    log10_paths = _log10_paths(network, sites, input_shape)
    # reachability needs no range: float32 is exact for it, and far faster than float64 on CPU
    network.module.float()
    reach = _reachability(network.module, sites, names, input_shape)
    return Topology(log10_paths, [_layer(name, reach) for name in names])


# --- counting paths ----------------------------------------------------------------------------


def _log10_paths(
    network: PathNetwork, sites: dict[str, _Site], input_shape: tuple[int, ...]
) -> float | None:
    """log10 of the path count: float64 forward passes, the later ones only on overflow."""
    with torch.no_grad():
        total = float(_output_sum(network.module(network.ones(input_shape))))
        if math.isfinite(total):
            return math.log10(total) if total > 0 else -math.inf
        # every count is an integer multiple of 2^-1000, a normal float: exact up to 2^2024
        total = float(_output_sum(network.module(network.ones(input_shape) * 2.0**-1000)))
        if math.isfinite(total):
            return math.log10(total) + 1000 * math.log10(2)
    return _log10_paths_rescaled(network, sites, input_shape)


def _log10_paths_rescaled(
    network: PathNetwork, sites: dict[str, _Site], input_shape: tuple[int, ...]
) -> float | None:
    """Each layer's output divided by its maximum, the log10 of the divisors carried aside. The
    count is their product times the output when every path crosses every layer once (a chain),
    which holds when the paths through each layer (Σ output·gradient) are all the paths."""
    outputs: list[torch.Tensor] = []
    divisors: list[float] = []

    def rescale(_m: nn.Module, _i: tuple[Any, ...], y: Any) -> Any:
        top = float(y.detach().max()) if isinstance(y, torch.Tensor) and y.numel() else 0.0
        if not 0 < top < math.inf:
            return None
        divisors.append(math.log10(top))
        y = y / top
        y.retain_grad()
        outputs.append(y)
        return y

    handles = [site.module.register_forward_hook(rescale) for site in sites.values()]
    try:
        total = _output_sum(network.module(network.ones(input_shape).requires_grad_(True)))
        if not 0 < float(total.detach()) < math.inf or len(outputs) != len(sites) or not outputs:
            return None
        total.backward()
    finally:
        for handle in handles:
            handle.remove()
    paths = float(total.detach())
    through = [float((y.detach() * y.grad).sum()) if y.grad is not None else 0.0 for y in outputs]
    if any(abs(flow - paths) > 1e-9 * paths for flow in through):
        return None  # a skip connection bypasses some layer: the scales differ between paths
    return math.log10(paths) + sum(divisors)


# --- which weights, nodes and layers carry paths -----------------------------------------------


@dataclass
class _Site:
    """Where a prunable layer is called: its module and the channel dimension of its output."""

    module: nn.Module
    channel_dim: int


class _Indicator(torch.autograd.Function):
    """1 where a count is positive, forward and backward: reachability without any range."""

    @staticmethod
    def forward(ctx: Any, counts: torch.Tensor) -> torch.Tensor:
        return (counts > 0).to(counts.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return (grad > 0).to(grad.dtype)


@dataclass
class _Trace:
    """What the reachability pass saw of one layer (the calls of a shared layer are merged)."""

    channel_dim: int
    calls: int = 0
    channels: int = 0
    input_reached: bool = False  # some input cell has a path from the network input
    passes_forward: bool = False  # some output cell has one
    output_leads: bool = False  # some output cell has a path to the network output
    passes_backward: bool = False  # some input cell has one through this layer
    alive: torch.Tensor | None = None  # per channel: a path runs through it

    def saw_input(self, x: torch.Tensor) -> torch.Tensor:
        # a tensor of its own, so its gradient is this layer's share alone (not a shortcut's)
        x = x * 1.0
        self.input_reached |= bool((x > 0).any())
        if x.requires_grad:
            x.register_hook(self._saw_input_grad)
        return x

    def _saw_input_grad(self, grad: torch.Tensor) -> None:
        self.passes_backward |= bool((grad > 0).any())

    def saw_output(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = _Indicator.apply(y)
        dim = self.channel_dim % y.dim()
        self.channels = y.shape[dim]
        self.passes_forward |= bool((y > 0).any())
        if y.requires_grad:
            held = y.detach()
            y.register_hook(lambda grad: self._saw_output_grad(held, grad, dim))
        return y

    def _saw_output_grad(self, y: torch.Tensor, grad: torch.Tensor, dim: int) -> None:
        self.output_leads |= bool((grad > 0).any())
        through = y * grad
        others = [d for d in range(through.dim()) if d != dim]
        alive = through.sum(dim=others) > 0 if others else through > 0
        self.alive = alive if self.alive is None else self.alive | alive


@dataclass
class _Reach:
    weights: dict[str, torch.Tensor]  # the 0/1 masks
    grads: dict[str, torch.Tensor | None]
    traces: dict[str, _Trace]


def _reachability(
    module: nn.Module, sites: dict[str, _Site], names: Sequence[str], input_shape: tuple[int, ...]
) -> _Reach:
    """One forward and one backward pass in which every layer output, and the gradient arriving
    at it, is reduced to 1 where positive; a weight then has a positive gradient exactly when a
    path runs through it, and no value can overflow or underflow however deep the network."""
    weights = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    for name in names:
        weights[name].requires_grad_(True)
        weights[name].grad = None
    traces = {name: _Trace(site.channel_dim) for name, site in sites.items()}
    handles = []
    for name, site in sites.items():
        trace = traces[name]

        def before(_m: nn.Module, inputs: tuple[Any, ...], trace: _Trace = trace) -> Any:
            return (trace.saw_input(inputs[0]), *inputs[1:])

        def after(_m: nn.Module, _i: tuple[Any, ...], y: Any, trace: _Trace = trace) -> Any:
            return trace.saw_output(y) if isinstance(y, torch.Tensor) else None

        handles.append(site.module.register_forward_pre_hook(before))
        handles.append(site.module.register_forward_hook(after))
    like = weights[names[0]]
    try:
        x = torch.ones((1, *input_shape), dtype=like.dtype, device=like.device, requires_grad=True)
        output = _output_sum(module(x))
        if output.requires_grad:
            output.backward()
    finally:
        for handle in handles:
            handle.remove()
    grads = {name: weights[name].grad for name in names}
    return _Reach({name: weights[name].detach() for name in names}, grads, traces)


def _output_sum(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output:
        return _output_sum(output[0])
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returns {type(output).__name__}, not a tensor")
    return output.sum()


def _layer(name: str, reach: _Reach) -> LayerTopology:
    mask, grad = reach.weights[name], reach.grads.get(name)
    trace = reach.traces.get(name)
    traced = trace is not None and trace.calls > 0
    reachable = grad is not None and not traced and bool((grad > 0).any())
    kept = int(torch.count_nonzero(mask))
    # a kept weight (1) with a positive gradient: grad ⊙ mask is non-zero exactly there
    effective = grad.mul_(mask) if grad is not None else torch.zeros_like(mask)
    count = int(torch.count_nonzero(effective))
    if traced:
        nodes = trace.channels
        alive = int(trace.alive.sum()) if trace.alive is not None else 0
        collapsed = (trace.input_reached and not trace.passes_forward) or (
            trace.output_leads and not trace.passes_backward
        )
    else:  # a weight used outside a Linear/Conv call: output channels along its first dimension
        nodes = mask.shape[0] if mask.dim() else 1
        alive = int(effective.reshape(nodes, -1).any(dim=1).sum())
        collapsed = count == 0 and reachable
    return LayerTopology(name, mask.numel(), count, nodes, alive, collapsed or kept == 0)


# --- making the copy linear --------------------------------------------------------------------

_LAYER_TYPES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)  # fmt: skip
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Threshold, nn.Softshrink, nn.Hardshrink,
    nn.Tanhshrink, nn.Softmax, nn.LogSoftmax, nn.Softmin,
)  # fmt: skip
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# the same in flat graphs (.pt2 programs, fx): operator names
_ELEMENTWISE_OPS = {
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "mish", "sigmoid", "tanh", "hardtanh",
    "hardtanh_", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "elu", "elu_", "selu", "celu",
    "softplus", "softsign", "hardswish", "hardsigmoid", "logsigmoid", "log_sigmoid", "threshold",
    "softshrink", "hardshrink", "tanhshrink", "softmax", "_softmax", "log_softmax",
    "_log_softmax", "softmin", "dropout",
}  # fmt: skip
_LAYER_OPS = {
    "linear", "conv1d", "conv2d", "conv3d", "convolution", "_convolution",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
}  # fmt: skip


def _layer_weights(root: nn.Module, names: Sequence[str]) -> list[str]:
    """The named weights and those of every other Linear/Conv layer (left out of the report,
    they are still edges of the graph: their paths count by their masks, not their values)."""
    found = set(names)
    found |= {
        f"{n}.weight" if n else "weight"
        for n, m in root.named_modules()
        if isinstance(m, _LAYER_TYPES)
    }
    if isinstance(root, torch.fx.GraphModule):
        for node in root.graph.nodes:
            weight = node.args[1] if node.op == "call_function" and len(node.args) > 1 else None
            if _op_name(node.target) in _LAYER_OPS and getattr(weight, "op", "") == "get_attr":
                found.add(weight.target)
    tensors = {**dict(root.named_buffers()), **dict(root.named_parameters())}
    return [name for name in sorted(found) if name in tensors]


def _linearise(network: PathNetwork, names: Sequence[str]) -> dict[str, _Site]:
    """Make the copy linear in place; returns where each of the layers ``names`` is called."""
    root = network.module
    for submodule in root.modules():
        if hasattr(submodule, "inplace"):
            submodule.inplace = False  # hooks read outputs that an in-place op would overwrite
    sites = _rewrite_graph(root, names) if isinstance(root, torch.fx.GraphModule) else {}
    for submodule in root.modules():
        if isinstance(submodule, _ELEMENTWISE):
            submodule.register_forward_hook(lambda _m, inputs, _y: inputs[0])
        elif isinstance(submodule, _MAX_POOLS + _ADAPTIVE_MAX_POOLS):
            submodule.register_forward_hook(_max_pool_as_sum)
    for name in names:
        prefix, _, attr = name.rpartition(".")
        try:
            layer = root.get_submodule(prefix)
        except AttributeError:
            continue
        own = getattr(layer, attr, None) is network.parameter(name)
        if name not in sites and own and isinstance(layer, _LAYER_TYPES):
            sites[name] = _Site(layer, -1 if isinstance(layer, nn.Linear) else 1)
    return sites


class _LayerCall(nn.Module):
    """A prunable layer's operator in a flat graph, made a module call so that hooks see it."""

    def __init__(self, op: Callable[..., Any]) -> None:
        super().__init__()
        self.op = op

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.op(*args, **kwargs)


def _op_name(target: Any) -> str:
    return getattr(target, "_opname", None) or getattr(target, "__name__", "")


def _rewrite_graph(module: torch.fx.GraphModule, names: Sequence[str]) -> dict[str, _Site]:
    graph = module.graph
    weights = {node: node.target for node in graph.nodes if node.op == "get_attr"}
    weights = {node: target for node, target in weights.items() if target in set(names)}
    sites: dict[str, _Site] = {}
    for node in list(graph.nodes):
        op = _op_name(node.target) if node.op == "call_function" else ""
        if op in _ELEMENTWISE_OPS and node.args:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif op in _POOL_OPS:
            node.target = _POOL_OPS[op]
        elif op in _LAYER_OPS and len(node.args) > 1 and node.args[1] in weights:
            name = weights[node.args[1]]
            if name in sites:
                continue  # a weight used twice: its other calls stay plain
            call = _LayerCall(node.target)
            module.add_submodule(f"_topology_layer{len(sites)}", call)
            with graph.inserting_before(node):
                replaced = graph.call_module(
                    f"_topology_layer{len(sites)}", node.args, dict(node.kwargs)
                )
            node.replace_all_uses_with(replaced)
            graph.erase_node(node)
            sites[name] = _Site(call, -1 if op == "linear" else 1)
    graph.lint()
    module.recompile()
    return sites


# --- sum pooling -------------------------------------------------------------------------------


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    return value * n if len(value) == 1 else value


def sum_pool(
    x: torch.Tensor, kernel: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The sum over each pooling window (zeros outside the input)."""
    n = x.dim() - 2
    k, s = _ntuple(kernel, n), _ntuple(stride or kernel, n)
    p, d = _ntuple(padding, n), _ntuple(dilation, n)
    if any(step != 1 for step in d):
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return conv(x, x.new_ones((x.shape[1], 1, *k)), None, s, p, d, x.shape[1])
    if n == 1:
        flat = sum_pool(x.unsqueeze(-1), (k[0], 1), (s[0], 1), (p[0], 0), 1, ceil_mode)
        return flat.squeeze(-1)
    pool = F.avg_pool2d if n == 2 else F.avg_pool3d
    return pool(x, k, s, p, ceil_mode, True, 1)


def adaptive_sum_pool(x: torch.Tensor, output_size: Any) -> torch.Tensor:
    """The sum over each adaptive pooling window (windows may differ in size)."""
    n = x.dim() - 2
    sizes = [x.shape[2 + i] if o is None else o for i, o in enumerate(_ntuple(output_size, n))]
    pooled = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[n - 1](x, sizes)
    for i, (cells, out) in enumerate(zip(x.shape[2:], sizes, strict=True)):
        window = [-((-(j + 1) * cells) // out) - (j * cells) // out for j in range(out)]
        shape = [1] * pooled.dim()
        shape[2 + i] = out
        pooled = pooled * torch.tensor(window, dtype=x.dtype, device=x.device).view(shape)
    return pooled


def _with_indices(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return y, torch.zeros_like(y, dtype=torch.long)


def _max_pool_as_sum(module: nn.Module, inputs: tuple[Any, ...], _y: Any) -> Any:
    x = inputs[0]
    if isinstance(module, _ADAPTIVE_MAX_POOLS):
        y = adaptive_sum_pool(x, module.output_size)
    else:
        y = sum_pool(
            x, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
        )
    return _with_indices(y) if module.return_indices else y


def _avg_op(
    x: torch.Tensor, kernel: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False,
    *_: Any,
) -> torch.Tensor:  # fmt: skip
    return sum_pool(x, kernel, stride, padding, 1, ceil_mode)


def _max_indices_op(x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return _with_indices(sum_pool(x, *args))


def _adaptive_indices_op(x: torch.Tensor, size: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return _with_indices(adaptive_sum_pool(x, size))


_POOL_OPS: dict[str, Callable[..., Any]] = {
    **{f"max_pool{n}d": sum_pool for n in (1, 2, 3)},
    **{f"avg_pool{n}d": _avg_op for n in (1, 2, 3)},
    **{f"adaptive_avg_pool{n}d": adaptive_sum_pool for n in (1, 2, 3)},
    **{f"adaptive_max_pool{n}d": _adaptive_indices_op for n in (1, 2, 3)},
    "_adaptive_avg_pool2d": adaptive_sum_pool,
    "max_pool2d_with_indices": _max_indices_op,
    "max_pool3d_with_indices": _max_indices_op,
    "mean": torch.sum,  # global average pooling written as x.mean(dims)
}

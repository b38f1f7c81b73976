"""The linear copy of a network that topology is counted on (topology/metrics.py).

On a :class:`PathNetwork` whose Linear/Conv weights are their 0/1 masks, every elementwise
activation becomes the identity (ReLU already is on counts; sigmoid or softplus would turn a zero
count into a positive one) and max pooling becomes sum pooling (every cell of a window is an edge
to its output), in modules and in flat graphs (``.pt2`` programs, fx) alike; and the prunable
layers' calls are found, so that hooks can see them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.topology.pathnet import PathNetwork


@dataclass
class Site:
    """Where a prunable layer is called: its module and the channel dimension of its output."""

    module: nn.Module
    channel_dim: int


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


def layer_weights(root: nn.Module, names: Sequence[str]) -> list[str]:
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


def linearise(network: PathNetwork, names: Sequence[str]) -> dict[str, Site]:
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
            sites[name] = Site(layer, -1 if isinstance(layer, nn.Linear) else 1)
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


def _rewrite_graph(module: torch.fx.GraphModule, names: Sequence[str]) -> dict[str, Site]:
    graph = module.graph
    weights = {node: node.target for node in graph.nodes if node.op == "get_attr"}
    weights = {node: target for node, target in weights.items() if target in set(names)}
    sites: dict[str, Site] = {}
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
            sites[name] = Site(call, -1 if op == "linear" else 1)
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

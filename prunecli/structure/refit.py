"""Reconstruction of a shrunk module: refit each layer that lost inputs, in graph order.

For every Conv2d (ungrouped) or Linear that reads a pruned group, the calibration batches run
through the dense model (recording that layer's output) and through the shrunk one (recording
its input, which carries the refits of the layers before it), and
:class:`~prunecli.structure.reconstruct.Refit` solves for its kept input weights and bias.
Layers are refit in the order the graph reaches them, so each sees its predecessors' refits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from prunecli.structure.groups import Group
from prunecli.structure.reconstruct import DEFAULT_DAMP, Refit, conv_rows, conv_targets

ROWS_PER_WIDTH = 8  # calibration rows kept per batch, per input feature (a conv's patch rows)


def refittable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def refit_layers(
    dense: nn.Module,
    shrunk: nn.Module,
    groups: Sequence[Group],
    kept: dict[str, torch.Tensor],
    batches: Callable[[], Iterable[torch.Tensor]],
    damp: float = DEFAULT_DAMP,
) -> list[str]:
    """Refit, in place in ``shrunk``, the layers whose inputs lost units; their names."""
    order = {name: i for i, (name, _) in enumerate(shrunk.named_modules())}
    cut = {c for g in groups if len(kept[g.name]) < g.size for c in g.consumers}
    names = sorted((c for c in cut if refittable(shrunk.get_submodule(c))), key=order.__getitem__)
    rows = {p: kept[g.name] for g in groups for p in g.producers}  # the outputs each keeps
    for name in names:
        layers = (dense.get_submodule(name), shrunk.get_submodule(name))
        _refit_one(*layers, rows.get(name), dense, shrunk, batches, damp)
    return names


def _refit_one(
    dense_layer: nn.Module,
    layer: nn.Module,
    outputs: torch.Tensor | None,
    dense: nn.Module,
    shrunk: nn.Module,
    batches: Callable[[], Iterable[torch.Tensor]],
    damp: float,
) -> None:
    conv = isinstance(layer, nn.Conv2d)
    width = layer.weight[0].numel()
    stats = Refit(width, layer.weight.shape[0], bias=layer.bias is not None)
    seen: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    grab_in = layer.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
    grab_out = dense_layer.register_forward_hook(lambda _m, _a, out: seen.__setitem__("y", out))
    try:
        with torch.no_grad():
            for x in batches():
                dense(x)
                shrunk(x)
                inputs = conv_rows(seen["x"], layer) if conv else seen["x"].reshape(-1, width)
                targets = (
                    conv_targets(seen["y"]) if conv else seen["y"].reshape(inputs.shape[0], -1)
                )
                if outputs is not None:  # the dense layer's outputs this layer still has
                    targets = targets[:, outputs]
                if inputs.shape[0] > ROWS_PER_WIDTH * width:  # a few rows per unknown suffice
                    pick = torch.randperm(inputs.shape[0], generator=generator)[
                        : ROWS_PER_WIDTH * width
                    ]
                    inputs, targets = inputs[pick], targets[pick]
                stats.add(inputs, targets)
    finally:
        grab_in.remove()
        grab_out.remove()
    weight, bias = stats.solve(damp)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))

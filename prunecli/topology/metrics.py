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

The linear copy is made by topology/linearise.py, the reachability pass is topology/reach.py;
this module counts the paths and turns both into one row per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from prunecli.models.loaded import LoadedModel
from prunecli.topology.linearise import Site, layer_weights, linearise
from prunecli.topology.pathnet import PathNetwork
from prunecli.topology.reach import Reach, output_sum, reachability


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
    layers = layer_weights(network.module, names)
    with torch.no_grad():
        for name in layers:
            network.parameter(name).ne_(0)  # the 0/1 mask, in place
    sites = linearise(network, layers)
    for tensor in network.module.parameters():
        tensor.requires_grad_(False)
    log10_paths = _log10_paths(network, sites, input_shape)
    # reachability needs no range: float32 is exact for it, and far faster than float64 on CPU
    network.module.float()
    reach = reachability(network.module, sites, names, input_shape)
    return Topology(log10_paths, [_layer(name, reach) for name in names])


# --- counting paths ----------------------------------------------------------------------------


def _log10_paths(
    network: PathNetwork, sites: dict[str, Site], input_shape: tuple[int, ...]
) -> float | None:
    """log10 of the path count: float64 forward passes, the later ones only on overflow."""
    with torch.no_grad():
        total = float(output_sum(network.module(network.ones(input_shape))))
        if math.isfinite(total):
            return math.log10(total) if total > 0 else -math.inf
        # every count is an integer multiple of 2^-1000, a normal float: exact up to 2^2024
        total = float(output_sum(network.module(network.ones(input_shape) * 2.0**-1000)))
        if math.isfinite(total):
            return math.log10(total) + 1000 * math.log10(2)
    return _log10_paths_rescaled(network, sites, input_shape)


def _log10_paths_rescaled(
    network: PathNetwork, sites: dict[str, Site], input_shape: tuple[int, ...]
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
        total = output_sum(network.module(network.ones(input_shape).requires_grad_(True)))
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


# --- one row per layer ---------------------------------------------------------------------------


def _layer(name: str, reach: Reach) -> LayerTopology:
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

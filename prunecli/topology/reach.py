"""Which weights, nodes and layers carry paths (topology/metrics.py): one forward and one
backward pass through the linear copy in which every layer output, and the gradient arriving at
it, is reduced to 1 where positive, so no value can overflow or underflow however deep the
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunecli.topology.linearise import Site


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
class Reach:
    weights: dict[str, torch.Tensor]  # the 0/1 masks
    grads: dict[str, torch.Tensor | None]
    traces: dict[str, _Trace]


def reachability(
    module: nn.Module, sites: dict[str, Site], names: Sequence[str], input_shape: tuple[int, ...]
) -> Reach:
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
        output = output_sum(module(x))
        if output.requires_grad:
            output.backward()
    finally:
        for handle in handles:
            handle.remove()
    grads = {name: weights[name].grad for name in names}
    return Reach({name: weights[name].detach() for name in names}, grads, traces)


def output_sum(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output:
        return output_sum(output[0])
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returns {type(output).__name__}, not a tensor")
    return output.sum()

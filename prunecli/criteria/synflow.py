"""SynFlow (Tanaka et al. 2020): |θ ⊙ ∂R/∂θ| with R the path norm, data-free (DESIGN §3).

R = 1ᵀ f(1): the sum of the output of the path network (topology/pathnet.py: float64, eval mode,
prunable weights |θ|·mask, biases zero, BatchNorm as |γ|/√(var+ε)) on an all-ones input of
batch 1. The score of a weight is the sum, over every input→output path through it, of the
product of the weights along the path.

The forward pass runs under topology/pathflow.py: activations are divided by powers of two at the
points every path crosses (so deep networks stay finite and the ranking is exactly that of an
unscaled float64 run), and layers with few live weights left (pruning/live.py) are evaluated from those alone.
Scores therefore equal the path sums up to one power of two shared by every weight; only their
order matters. The score tensors of sparsely evaluated layers are reused by the next call of
the same instance (copy them to keep them across rounds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from prunecli.criteria.registry import register
from prunecli.errors import Unsupported
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.live import SPARSE_FRACTION
from prunecli.topology.pathflow import FlowPlan, FlowTrace, SparseLayer, record_plan
from prunecli.topology.pathnet import PathNetwork


def _path_norm(output: Any) -> torch.Tensor:
    parts = [t.sum() for t in _floating(output)]
    if not parts:
        raise Unsupported("synflow needs a model whose output is a floating tensor")
    return torch.stack(parts).sum()


def _floating(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _floating(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _floating(item)]
    return []


@dataclass
class _Run:
    """What the rounds of one pruning run share: the path network, built once, and its plan."""

    key: tuple[Any, ...]
    network: PathNetwork
    plan: FlowPlan | None  # None: the operations vary between passes; plain dense passes
    layers: dict[str, SparseLayer] = field(default_factory=dict)
    # score tensors of sparse layers, rewritten at their live entries each round: filling
    # a fresh tensor of zeros every round would cost as much as the sparse pass itself
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    written: dict[str, torch.Tensor] = field(default_factory=dict)  # positions last written


@register
class SynFlow(Criterion):
    name = "synflow"
    summary = (
        "|θ ⊙ ∂R/∂θ|, R the path norm on an all-ones input; iterative, data-free "
        "(Tanaka et al. 2020)"
    )
    needs = ("graph", "input_shape")
    default_iterations = 100

    def __init__(self, rescale: bool = True) -> None:
        self.rescale = rescale
        self._run: _Run | None = None

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        run = self._run_for(ctx)
        ones, output, sparse = self._forward(ctx, run)
        path_norm = _path_norm(output)
        if not bool(torch.isfinite(path_norm)):
            raise Unsupported(
                "synflow: the path norm of this model is not finite in float64",
                "the model may hold inf/nan buffers, or its graph has no point every path "
                "crosses to rescale at",
            )
        dense = [name for name in ctx.names if name not in sparse]
        weights = [run.network.parameter(name) for name in dense]
        grads = torch.autograd.grad(path_norm, [ones, *weights], allow_unused=True)[1:]
        scores = {}
        with torch.no_grad():
            for name, weight, grad in zip(dense, weights, grads, strict=True):
                scores[name] = torch.zeros_like(weight) if grad is None else grad.mul_(weight)
            for name, layer in sparse.items():
                scores[name] = self._sparse_scores(run, name, layer)
        return {name: scores[name].to(ctx.tensor(name).device) for name in ctx.names}

    @staticmethod
    def _sparse_scores(run: _Run, name: str, layer: SparseLayer) -> torch.Tensor:
        buffer = run.buffers.get(name)
        if buffer is None:
            buffer = run.buffers[name] = torch.zeros(
                layer.shape, dtype=torch.float64, device=layer.device
            )
        flat = buffer.view(-1)
        if name in run.written:
            flat.index_fill_(0, run.written[name], 0.0)
        if layer.scores is not None:  # None: the layer is on no input→output path
            flat.index_copy_(0, layer.positions, layer.scores)
            run.written[name] = layer.positions
        return buffer

    def _forward(
        self, ctx: ScoreContext, run: _Run
    ) -> tuple[torch.Tensor, Any, dict[str, SparseLayer]]:
        """(the all-ones input, the output, the layers evaluated sparsely) of one pass."""
        shape = self._input_shape(ctx)
        for _ in range(2):
            sparse = self._load_weights(ctx, run)
            ones = run.network.ones(shape).requires_grad_(True)
            by_weight = {id(run.network.parameter(name)): layer for name, layer in sparse.items()}
            trace = FlowTrace(ones, run.plan, by_weight)
            with trace:
                output = run.network.module(ones)
            if not trace.diverged:
                return ones, output, sparse
            # the operations depend on values: plan again from this pass's order
            run.plan = trace.plan_for(output, self.rescale)
        run.plan = None  # the order changes every time: plain dense passes, no rescaling
        self._load_weights(ctx, run)
        ones = run.network.ones(shape).requires_grad_(True)
        return ones, run.network.module(ones), {}

    def _load_weights(self, ctx: ScoreContext, run: _Run) -> dict[str, SparseLayer]:
        """Set the path network's weights to |θ|·mask; returns the layers that go sparse."""
        sparse = {}
        with torch.no_grad():
            for name in ctx.names:
                weight, param = ctx.tensor(name), run.network.parameter(name)
                capable = run.plan is not None and id(param) in run.plan.sparse_capable
                # within a run pruning only zeroes weights: a layer sparse last round is
                # still sparse, and its live entries are among last round's
                was_sparse = name in run.layers
                positions = ctx.live_positions(name)
                if ctx.live is None:  # scoring alone: count the live entries here
                    few = (
                        was_sparse
                        or int(weight.count_nonzero()) <= SPARSE_FRACTION * weight.numel()
                    )
                else:  # the pruning loop tracks mostly pruned tensors by their live positions
                    few = positions is not None
                if capable and few:
                    layer = run.layers.setdefault(name, SparseLayer(param.shape, ctx.device))
                    layer.load(weight, only_zeroed=was_sparse, positions=positions)
                    sparse[name] = layer
                else:
                    param.copy_(weight).abs_()  # pruned weights are exactly zero
        return sparse

    def _run_for(self, ctx: ScoreContext) -> _Run:
        module = ctx.model.require_graph(self.name)
        key = (module, ctx.device, tuple(ctx.names))
        # a new run (round 0) starts afresh: the model may have changed in any way since
        if self._run is not None and self._run.key == key and ctx.round > 0:
            return self._run
        network = PathNetwork(module, batchnorm="scale", device=ctx.device)
        for param in network.module.parameters():
            param.requires_grad_(False)
        for name in ctx.names:
            network.parameter(name).requires_grad_(True)
        plan = record_plan(network.module, network.ones(self._input_shape(ctx)), self.rescale)
        self._run = _Run(key, network, plan)
        return self._run

    @staticmethod
    def _input_shape(ctx: ScoreContext) -> tuple[int, ...]:
        shape = ctx.input_shape or (ctx.model.arch.input_shape if ctx.model.arch else None)
        if shape is None:
            raise Unsupported(
                "--method synflow needs the model's input shape",
                "pass --input-shape, e.g. --input-shape 3,32,32",
            )
        return shape

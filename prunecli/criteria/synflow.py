"""SynFlow (Tanaka et al. 2020): |θ ⊙ ∂R/∂θ| with R the path norm, data-free (DESIGN §3).

R = 1ᵀ f(1): the sum of the output of the path network (core/pathnet.py: float64, eval mode,
prunable weights |θ|·mask, biases zero, BatchNorm as |γ|/√(var+ε)) on an all-ones input of
batch 1. The score of a weight is the sum of the products of the weights along every
input→output path through it.

Rescaling. Path products of deep networks leave float64's range (a 200-layer MLP of width 64
reaches 1e120 at initialisation, trained BatchNorm scales make it worse), so activations are
divided by a power of two at *cut points*: operations that every input→output path goes through
exactly once (in a chain, every layer; in a ResNet, the block outputs after each addition, but
never a layer inside a residual branch, which the skip path bypasses). Dividing at a cut divides
every path product, hence every score, by the same factor. Powers of two are exact in binary
floating point, so a rescaled run gives bit for bit the unscaled scores times one global power
of two wherever the unscaled run is finite, and the same masks.

Cut points are found once per pruning run from a traced forward pass: every torch operation
whose inputs descend from the input is a node of a DAG, in execution (topological) order; an
operation is on every path exactly when no edge of the DAG jumps over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from prunecli.core.pathnet import PathNetwork
from prunecli.criteria import register
from prunecli.criteria.base import Criterion, ScoreContext
from prunecli.errors import Unsupported

_SOURCE = -1  # the node of the all-ones input
_MAX_EXPONENT = 1000  # float64 powers of two stay normal within ±1022


@dataclass(frozen=True)
class _Op:
    func: Callable[..., Any]
    parents: frozenset[int]  # producing ops of its flow inputs (_SOURCE: the input)
    scalable: bool  # one new floating tensor out: it can be replaced by a rescaled copy


@dataclass(frozen=True)
class RescalePlan:
    """The operations of one forward pass and which of them to rescale (the cut points)."""

    funcs: tuple[Callable[..., Any], ...]
    cuts: frozenset[int]


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
    """A float64 power of two bringing max|x| into [0.5, 1); 1 for an all-zero tensor.

    Built from the exponent bits, so it is exact; no host synchronisation."""
    _, exponent = torch.frexp(x.detach().abs().amax().to(torch.float64))
    exponent = exponent.to(torch.int64).clamp(-_MAX_EXPONENT, _MAX_EXPONENT)
    return ((1023 - exponent) << 52).view(torch.float64)


class FlowTrace(TorchFunctionMode):
    """Follows one forward pass: each operation with an input descending from ``source``.

    With a ``plan``, the outputs of its cut operations are divided by a power of two. If the
    pass does not follow the plan (the network's operations depend on values), it stops
    rescaling and sets ``diverged``.
    """

    def __init__(self, source: torch.Tensor, plan: RescalePlan | None = None) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.plan = plan
        self.diverged = False
        self._producer: dict[int, int] = {id(source): _SOURCE}
        self._keep: list[torch.Tensor] = [source]  # ids stay unique while the pass runs

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        inputs = list(_tensors((args, kwargs)))
        parents = frozenset(self._producer[id(t)] for t in inputs if id(t) in self._producer)
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
        self.ops.append(_Op(func, parents, scalable))
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

    def plan_for(self, output: Any) -> RescalePlan:
        """The plan that rescales every cut point of the pass that produced ``output``."""
        sink_parents = frozenset(
            self._producer[id(t)] for t in _tensors(output) if id(t) in self._producer
        )
        funcs = tuple(op.func for op in self.ops)
        return RescalePlan(funcs, cut_points(self.ops, sink_parents))


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


def _path_norm(output: Any) -> torch.Tensor:
    parts = [t.sum() for t in _tensors(output) if t.is_floating_point()]
    if not parts:
        raise Unsupported("synflow needs a model whose output is a floating tensor")
    return torch.stack(parts).sum()


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
        # one path network per pruning run, reused by every round: (key, network, plan)
        self._cache: tuple[tuple[Any, ...], PathNetwork, RescalePlan | None] | None = None

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        network, plan = self._network(ctx)
        weights = [network.parameter(name) for name in ctx.names]
        with torch.no_grad():
            for name, weight in zip(ctx.names, weights, strict=True):
                weight.copy_(ctx.tensor(name)).abs_()  # |θ|·mask: pruned weights are zero
        path_norm = _path_norm(self._forward(network, plan, self._input_shape(ctx)))
        if not bool(torch.isfinite(path_norm)):
            raise Unsupported(
                "synflow: the path norm of this model is not finite in float64",
                "the model may hold inf/nan buffers, or its graph has no point every path "
                "crosses to rescale at",
            )
        grads = torch.autograd.grad(path_norm, weights, allow_unused=True)
        scores = {}
        for name, weight, grad in zip(ctx.names, weights, grads, strict=True):
            score = torch.zeros_like(weight) if grad is None else grad.mul_(weight.detach())
            scores[name] = score.to(ctx.tensor(name).device)
        return scores

    def _forward(
        self, network: PathNetwork, plan: RescalePlan | None, input_shape: tuple[int, ...]
    ) -> Any:
        ones = network.ones(input_shape)
        if plan is None:
            return network.module(ones)
        trace = FlowTrace(ones, plan)
        with trace:
            output = network.module(ones)
        if not trace.diverged:
            return output
        # the operations depend on values: plan from this pass's order and run again, and
        # give up rescaling if that order does not hold either
        plan = self._replan(trace.plan_for(output))
        trace = FlowTrace(ones, plan)
        with trace:
            output = network.module(ones)
        if not trace.diverged:
            return output
        self._replan(None)
        return network.module(ones)

    def _network(self, ctx: ScoreContext) -> tuple[PathNetwork, RescalePlan | None]:
        module = ctx.model.require_graph(self.name)
        key = (module, ctx.device, tuple(ctx.names))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        network = PathNetwork(module, batchnorm="scale", device=ctx.device)
        for param in network.module.parameters():
            param.requires_grad_(False)
        for name in ctx.names:
            network.parameter(name).requires_grad_(True)
        plan = None
        if self.rescale:
            ones = network.ones(self._input_shape(ctx))
            trace = FlowTrace(ones)
            with torch.no_grad(), trace:
                output = network.module(ones)
            plan = trace.plan_for(output)
        self._cache = (key, network, plan)
        return network, plan

    def _replan(self, plan: RescalePlan | None) -> RescalePlan | None:
        assert self._cache is not None
        self._cache = (self._cache[0], self._cache[1], plan)
        return plan

    @staticmethod
    def _input_shape(ctx: ScoreContext) -> tuple[int, ...]:
        shape = ctx.input_shape or (ctx.model.arch.input_shape if ctx.model.arch else None)
        if shape is None:
            raise Unsupported(
                "--method synflow needs the model's input shape",
                "pass --input-shape, e.g. --input-shape 3,32,32",
            )
        return shape

"""The operations the channel tracer (structure/trace.py) knows, and the traced graph it walks.

Modules and functions in the PASS tables keep a value's channels where they are; the JOIN
operations combine two values element-wise; anything else freezes the channels it touches.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from prunecli.errors import Unsupported

PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
PASS_FUNCTIONS = {
    torch.relu, torch.sigmoid, torch.tanh, torch.nn.functional.relu, torch.nn.functional.gelu,
    torch.nn.functional.silu, torch.nn.functional.leaky_relu, torch.nn.functional.relu6,
    torch.nn.functional.elu, torch.nn.functional.hardswish, torch.nn.functional.sigmoid,
    torch.nn.functional.tanh, torch.nn.functional.dropout, torch.nn.functional.max_pool2d,
    torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d, torch.nn.functional.max_pool1d,
    torch.nn.functional.avg_pool1d, torch.nn.functional.adaptive_avg_pool1d,
}  # fmt: skip
PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach", "float", "relu_"}
JOIN = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.mul,
    operator.imul,
    torch.add,
    torch.mul,
    torch.sub,
}
JOIN_METHODS = {"add", "add_", "mul", "mul_", "sub"}
SHAPE_ONLY_METHODS = {"size", "dim"}
BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def trace_graph(
    module: nn.Module, example: torch.Tensor, label: str = "the model"
) -> fx.GraphModule:
    """``module``'s fx graph with every value's shape for ``example`` (batch of at least 2)."""
    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - torch.fx's reasons are many and all mean the same
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unsupported(
            f"torch.fx cannot trace {label} ({type(module).__name__}): {first}",
            "structured pruning needs a graph without data-dependent control flow",
        ) from None
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(example)
    except Exception as exc:  # noqa: BLE001 - the module's own forward failed on the example
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unsupported(
            f"{label} ({type(module).__name__}) does not run on an input of shape "
            f"{list(example.shape)}: {first}",
            "give the model's input shape with --input-shape",
        ) from None
    finally:
        module.train(training)
    return traced

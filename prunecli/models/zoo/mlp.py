"""Fully connected networks: a configurable MLP and LeNet-300-100 (LeCun et al. 1998)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from prunecli.models.zoo.registry import ZooModel, register_arch


def positive_int(name: str, value: object) -> int:
    """Validate a size given in arch kwargs (they come from JSON, so types are not guaranteed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def width_list(name: str, value: object, length: int) -> list[int]:
    """A list of ``length`` positive integers from arch kwargs (JSON), or ValueError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {value!r}")
    if len(value) != length:
        raise ValueError(f"{name} must list {length} widths, got {len(value)}")
    return [positive_int(f"every entry of {name}", w) for w in value]


def _mlp_module(widths: Sequence[int]) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    pairs = list(zip(widths[:-1], widths[1:], strict=False))
    for i, (fan_in, fan_out) in enumerate(pairs, start=1):
        layers[f"fc{i}"] = nn.Linear(fan_in, fan_out)
        if i < len(pairs):
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)


@register_arch("mlp", "fully connected ReLU network, widths=[in, hidden..., classes]")
def mlp(widths: Sequence[int] = (784, 300, 100, 10)) -> ZooModel:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"widths must be a list of integers, got {widths!r}")
    if len(widths) < 2:
        raise ValueError(f"widths needs at least an input and an output size, got {list(widths)}")
    sizes = [positive_int("every width", w) for w in widths]
    return ZooModel(_mlp_module(sizes), (sizes[0],), sizes[-1])


@register_arch("lenet300", "LeNet-300-100 MLP for MNIST 28x28 (LeCun et al. 1998)")
def lenet300() -> ZooModel:
    return ZooModel(_mlp_module([784, 300, 100, 10]), (1, 28, 28), 10)

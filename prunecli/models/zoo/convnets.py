"""Conv-2/4/6 of the lottery-ticket paper (Frankle & Carbin 2019, fig. 2) for CIFAR-10."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prunecli.models.zoo.mlp import positive_int
from prunecli.models.zoo.registry import ZooModel, register_arch


def _convnet(stages: list[int], num_classes: int) -> ZooModel:
    num_classes = positive_int("num_classes", num_classes)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, side, n = 3, 32, 0
    for stage, width in enumerate(stages, start=1):
        for _ in range(2):
            n += 1
            layers[f"conv{n}"] = nn.Conv2d(channels, width, 3, padding=1)
            layers[f"relu{n}"] = nn.ReLU()
            channels = width
        layers[f"pool{stage}"] = nn.MaxPool2d(2)
        side //= 2
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(channels * side * side, 256)
    layers["relu_fc1"] = nn.ReLU()
    layers["fc2"] = nn.Linear(256, 256)
    layers["relu_fc2"] = nn.ReLU()
    layers["fc3"] = nn.Linear(256, num_classes)
    return ZooModel(nn.Sequential(layers), (3, 32, 32), num_classes)


@register_arch("conv2", "Conv-2 for CIFAR-10 (Frankle & Carbin 2019, lottery ticket)")
def conv2(num_classes: int = 10) -> ZooModel:
    return _convnet([64], num_classes)


@register_arch("conv4", "Conv-4 for CIFAR-10 (Frankle & Carbin 2019, lottery ticket)")
def conv4(num_classes: int = 10) -> ZooModel:
    return _convnet([64, 128], num_classes)


@register_arch("conv6", "Conv-6 for CIFAR-10 (Frankle & Carbin 2019, lottery ticket)")
def conv6(num_classes: int = 10) -> ZooModel:
    return _convnet([64, 128, 256], num_classes)

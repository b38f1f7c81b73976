"""CIFAR VGG-11/16/19 with BatchNorm (Simonyan & Zisserman 2015; CIFAR form as in SynFlow)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunecli.models.zoo.mlp import positive_int, width_list
from prunecli.models.zoo.registry import ZooModel, register_arch

_M = "M"  # max-pool marker in a plan
_PLANS: dict[int, list[int | str]] = {
    11: [64, _M, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512, _M],
    16: [64, 64, _M, 128, 128, _M, 256, 256, 256, _M, 512, 512, 512, _M, 512, 512, 512, _M],
    19: [
        64, 64, _M, 128, 128, _M, 256, 256, 256, 256, _M,
        512, 512, 512, 512, _M, 512, 512, 512, 512, _M,
    ],
}  # fmt: skip


class VGG(nn.Module):
    def __init__(self, plan: list[int | str], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in plan:
            if isinstance(spec, str):
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, spec, 3, padding=1, bias=False),
                    nn.BatchNorm2d(spec),
                    nn.ReLU(),
                ]
                channels = spec
        self.features = nn.Sequential(*layers)
        # a no-op at 32x32 (the map is already 1x1); keeps other input sizes working
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _vgg(depth: int, num_classes: int, widths: Sequence[int] | None = None) -> ZooModel:
    """``widths``: every conv's output channels in order (a structurally pruned VGG)."""
    num_classes = positive_int("num_classes", num_classes)
    plan = list(_PLANS[depth])
    if widths is not None:
        convs = [i for i, spec in enumerate(plan) if not isinstance(spec, str)]
        sizes = width_list("widths", widths, len(convs))
        for i, width in zip(convs, sizes, strict=True):
            plan[i] = width
    return ZooModel(VGG(plan, num_classes), (3, 32, 32), num_classes)


@register_arch("vgg11", "VGG-11 with BatchNorm, CIFAR 32x32 (Simonyan & Zisserman 2015)")
def vgg11(num_classes: int = 10, widths: Sequence[int] | None = None) -> ZooModel:
    return _vgg(11, num_classes, widths)


@register_arch("vgg16", "VGG-16 with BatchNorm, CIFAR 32x32 (Simonyan & Zisserman 2015)")
def vgg16(num_classes: int = 10, widths: Sequence[int] | None = None) -> ZooModel:
    return _vgg(16, num_classes, widths)


@register_arch("vgg19", "VGG-19 with BatchNorm, CIFAR 32x32 (Simonyan & Zisserman 2015)")
def vgg19(num_classes: int = 10, widths: Sequence[int] | None = None) -> ZooModel:
    return _vgg(19, num_classes, widths)

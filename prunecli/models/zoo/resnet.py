"""CIFAR ResNet-20/32/56 (He et al. 2016, sec. 4.2) and ResNet-18 (kuangliu/pytorch-cifar)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunecli.models.zoo.mlp import positive_int, width_list
from prunecli.models.zoo.registry import ZooModel, register_arch


class BasicBlock(nn.Module):
    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, mid: int | None = None
    ) -> None:
        super().__init__()
        mid = mid or planes  # the inner width (smaller after structured pruning)
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # projection shortcut (option B): a prunable conv, unlike option A's zero padding
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self, widths: list[int], blocks: list[int], num_classes: int, mids: list[int] | None = None
    ) -> None:
        super().__init__()
        inner = iter(mids or [])
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(in_planes, planes, stride, next(inner, None)))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


def _resnet(
    widths: list[int],
    blocks: list[int],
    num_classes: int,
    stage_widths: Sequence[int] | None = None,
    mids: Sequence[int] | None = None,
) -> ZooModel:
    """``stage_widths`` (each stage's channels, tied by its residual additions) and ``mids``
    (each block's inner width) describe a structurally pruned ResNet."""
    num_classes = positive_int("num_classes", num_classes)
    if stage_widths is not None:
        widths = width_list("widths", stage_widths, len(widths))
    inner = width_list("mids", mids, sum(blocks)) if mids is not None else None
    return ZooModel(ResNet(widths, blocks, num_classes, inner), (3, 32, 32), num_classes)


def _cifar_resnet(
    depth: int, num_classes: int, widths: Sequence[int] | None, mids: Sequence[int] | None
) -> ZooModel:
    n = (depth - 2) // 6
    return _resnet([16, 32, 64], [n, n, n], num_classes, widths, mids)


@register_arch("resnet20", "ResNet-20 for CIFAR (He et al. 2016), projection shortcuts")
def resnet20(
    num_classes: int = 10, widths: Sequence[int] | None = None, mids: Sequence[int] | None = None
) -> ZooModel:
    return _cifar_resnet(20, num_classes, widths, mids)


@register_arch("resnet32", "ResNet-32 for CIFAR (He et al. 2016), projection shortcuts")
def resnet32(
    num_classes: int = 10, widths: Sequence[int] | None = None, mids: Sequence[int] | None = None
) -> ZooModel:
    return _cifar_resnet(32, num_classes, widths, mids)


@register_arch("resnet56", "ResNet-56 for CIFAR (He et al. 2016), projection shortcuts")
def resnet56(
    num_classes: int = 10, widths: Sequence[int] | None = None, mids: Sequence[int] | None = None
) -> ZooModel:
    return _cifar_resnet(56, num_classes, widths, mids)


@register_arch("resnet18", "ResNet-18 for CIFAR 32x32 (He et al. 2016; kuangliu/pytorch-cifar)")
def resnet18(
    num_classes: int = 10, widths: Sequence[int] | None = None, mids: Sequence[int] | None = None
) -> ZooModel:
    return _resnet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, widths, mids)

"""The zoo arguments that describe a structurally pruned zoo model (``prunecli.arch_kwargs``).

VGG takes every conv's width (``widths``), the CIFAR ResNets each stage's width (``widths``,
tied by the residual additions) and each block's inner width (``mids``), the MLP its layer
widths. Other zoo models are rebuilt from the shapes stored in the file (models/resize.py).
"""

from __future__ import annotations

from typing import Any

from torch import nn

_VGG = ("vgg11", "vgg16", "vgg19")
_RESNET = ("resnet18", "resnet20", "resnet32", "resnet56")


def zoo_widths(name: str, kwargs: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """``kwargs`` with the widths of ``module`` (built from zoo ``name``) when the zoo takes them."""
    if name in _VGG:
        convs = [m.out_channels for m in module.features if isinstance(m, nn.Conv2d)]
        return {**kwargs, "widths": convs}
    if name in _RESNET:
        stages = list(module.layers)
        widths = [stage[0].conv2.out_channels for stage in stages]
        mids = [block.conv1.out_channels for stage in stages for block in stage]
        return {**kwargs, "widths": widths, "mids": mids}
    if name == "mlp":
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        return {**kwargs, "widths": [linears[0].in_features] + [m.out_features for m in linears]}
    return kwargs

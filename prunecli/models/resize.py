"""Rebuilding the smaller layers of a structurally pruned model from the shapes it stores.

A model written by ``prune --granularity channel`` carries ``prunecli.structure`` in its
metadata and tensors narrower than its architecture builds. :func:`resize_to` gives each
Conv, Linear, BatchNorm and PReLU layer of the freshly built module the stored shapes (only
ever smaller, only those layer types), and :func:`fix_sizes` makes the layers' size
attributes follow their tensors (the shrinking code uses it too).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prunecli.errors import BadInput

META_STRUCTURE = "prunecli.structure"

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RESIZABLE = (*_CONV, nn.Linear, *_BN, nn.PReLU)


def fix_sizes(layer: nn.Module) -> None:
    """``in_channels``/``out_channels``, ``in_features``/``out_features``, ``num_features``
    and ``num_parameters`` from the layer's tensors (a depthwise conv stays depthwise)."""
    if isinstance(layer, _CONV):
        out_channels, per_group = layer.weight.shape[:2]
        if layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels:
            layer.groups = out_channels
        layer.out_channels = out_channels
        layer.in_channels = per_group * layer.groups
    elif isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    elif isinstance(layer, _BN):
        reference = layer.running_mean if layer.running_mean is not None else layer.weight
        if reference is not None:
            layer.num_features = reference.shape[0]
    elif isinstance(layer, nn.PReLU):
        layer.num_parameters = layer.weight.shape[0]


def resize_to(module: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Give ``module``'s layers the (smaller) shapes of ``tensors``, as empty tensors on the
    module's device, to be filled by ``load_state_dict(assign=True)``."""
    for prefix, layer in module.named_modules():
        own = {**layer._parameters, **layer._buffers}
        changed = False
        for attr, current in own.items():
            name = f"{prefix}.{attr}" if prefix else attr
            stored = tensors.get(name)
            if current is None or stored is None or tuple(stored.shape) == tuple(current.shape):
                continue
            if not isinstance(layer, _RESIZABLE):
                raise BadInput(
                    f"{source}: tensor {name!r} has shape {list(stored.shape)} but the "
                    f"architecture's {type(layer).__name__} has {list(current.shape)}; only "
                    "Conv, Linear, BatchNorm and PReLU layers are rebuilt smaller"
                )
            if stored.dim() != current.dim() or any(
                not 1 <= s <= c for s, c in zip(stored.shape, current.shape, strict=True)
            ):
                raise BadInput(
                    f"{source}: tensor {name!r} has shape {list(stored.shape)}; a smaller layer "
                    f"keeps 1 to {list(current.shape)} entries along each dimension"
                )
            empty = torch.empty(stored.shape, dtype=current.dtype, device=current.device)
            if attr in layer._parameters:
                layer._parameters[attr] = nn.Parameter(empty, requires_grad=current.requires_grad)
            else:
                layer._buffers[attr] = empty
            changed = True
        if changed:
            fix_sizes(layer)

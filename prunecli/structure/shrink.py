"""Shrinking a module: the kept slices become its new, smaller layers.

The tensors are cut by :func:`~prunecli.structure.groups.shrink_tensors`; each layer that holds
one gets it back (a parameter stays a parameter) and its size attributes follow
(``Conv2d.in_channels``/``out_channels``, ``Linear.in_features``/``out_features``,
``BatchNorm.num_features``), so the module prints, copies and exports as the smaller model it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prunecli.models.resize import fix_sizes
from prunecli.structure.groups import Group, shrink_tensors


def shrink_module(
    module: nn.Module, groups: list[Group], kept: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Cut ``module`` in place to the ``kept`` units; its new state dict."""
    state = module.state_dict()
    new = shrink_tensors(state, groups, kept)
    for name, tensor in new.items():
        if tensor is state[name]:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if attr in owner._parameters:
            old = owner._parameters[attr]
            owner._parameters[attr] = nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            owner._buffers[attr] = tensor
    for layer in module.modules():
        fix_sizes(layer)
    return module.state_dict()

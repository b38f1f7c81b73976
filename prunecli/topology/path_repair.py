"""Repair of a mask's budget: kept weights that lie on no input→output path give their place to
the live entries that add the most paths (NPB's final pass, criteria/npb.py).

Measured on a :class:`PathNetwork` whose weights are the masks, by ∂(paths)/∂(mask entry): the
network is linear in each single entry, so that is the paths through a kept entry, or the paths
switching a pruned one on would add.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from prunecli.topology.pathnet import PathNetwork


def path_gradients(
    network: PathNetwork, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """∂(paths)/∂(mask entry) for every entry: the paths through it (kept) or that switching it
    on would add (pruned) — the network is linear in each single entry."""
    network.set_weights(dict(masks))
    params = {name: network.parameter(name) for name in masks}
    for param in params.values():
        param.grad = None
        param.requires_grad_(True)
    with torch.enable_grad():
        network.module(network.ones(input_shape)).sum().backward()
    grads = {name: param.grad.detach().to("cpu") for name, param in params.items()}
    for param in params.values():
        param.grad = None
        param.requires_grad_(False)
    return grads


def refill_ineffective(
    network: PathNetwork,
    masks: dict[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    caps: Mapping[str, np.ndarray],
    input_shape: tuple[int, ...],
) -> None:
    """Move the budget of kept weights on no input→output path to the live entries (within each
    kernel's cap) that add the most paths.

    Dropping ineffective weights changes no path count; the gains are then measured on the
    cleaned network, where a positive gain means both channels are effective, so every entry
    switched on is effective and stays so (adding entries only adds paths).
    """
    ineffective = {
        name: mask & ~(gain > 0)
        for (name, mask), gain in zip(
            masks.items(), path_gradients(network, masks, input_shape).values(), strict=True
        )
    }
    cleaned = {name: masks[name] & ~ineffective[name] for name in masks}
    gains = path_gradients(network, cleaned, input_shape)
    for name, mask in masks.items():
        dropped = torch.nonzero(ineffective[name].reshape(-1)).reshape(-1)
        if dropped.numel() == 0:
            continue
        n_kernels = mask.shape[0] * mask.shape[1]
        gain = gains[name].reshape(n_kernels, -1)
        free = (alive[name] & ~mask).reshape(n_kernels, -1) & (gain > 0)
        # room left under the cap even if every dropped entry had to be restored
        room = torch.as_tensor(caps[name].reshape(-1)) - mask.reshape(n_kernels, -1).sum(1)
        keys = torch.where(free, gain, torch.zeros((), dtype=gain.dtype))
        order = keys.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order))
        candidates = torch.nonzero((free & (rank < room.reshape(-1, 1))).reshape(-1)).reshape(-1)
        best = keys.reshape(-1)[candidates].argsort(descending=True, stable=True)
        moved = min(dropped.numel(), candidates.numel())
        flat = mask.reshape(-1).clone()
        flat[dropped[:moved]] = False
        flat[candidates[best[:moved]]] = True
        masks[name] = flat.reshape(mask.shape)

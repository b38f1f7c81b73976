"""Groups of coupled structures: the tensor slices that must be removed together.

A :class:`Group` is a set of ``size`` interchangeable units (a conv's output channels, an FFN's
neurons, an attention layer's heads or key/value groups). Unit ``i`` owns, in every tensor the
group touches, the entries ``[i * block, (i + 1) * block)`` along one dimension (a
:class:`Slice`): a conv's weight rows (dim 0) and bias, the BatchNorm entries after it, the
next conv's input columns (dim 1), a Linear's input features after a flatten (``block`` = the
map's height × width), a head's ``head_dim`` rows. Removing a unit removes all of them at once,
which keeps the model's arithmetic consistent: the equivalence tests hold the shrunk model equal
to the original one with the removed units' outputs forced to zero.

``kept`` maps a group's name to the sorted unit indices that stay; :func:`shrink_tensors`
applies it to a state dict and :func:`count_params` counts what a choice leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from prunecli.errors import BadInput


@dataclass(frozen=True)
class Slice:
    """Unit ``i`` of a group owns ``tensor[..., i*block:(i+1)*block, ...]`` along ``dim``."""

    tensor: str
    dim: int
    block: int = 1


@dataclass
class Group:
    """``size`` units removed together with their slices; ``consumers`` are the layers that read
    the units (the ones a reconstruction refits); ``min_keep`` units always stay."""

    name: str
    kind: str  # "channel", "neuron" or "head"
    size: int
    slices: list[Slice] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    min_keep: int = 1
    label: str = ""  # what the report calls it (e.g. "layers.0.conv1 + bn1, 16 channels")

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Every slice fits its tensor exactly: ``size * block`` entries along ``dim``."""
        for piece in self.slices:
            shape = shapes.get(piece.tensor)
            if shape is None:
                raise BadInput(f"group {self.name}: no tensor {piece.tensor!r}")
            if piece.dim >= len(shape) or shape[piece.dim] != self.size * piece.block:
                raise BadInput(
                    f"group {self.name}: {piece.tensor} has shape {list(shape)}, not "
                    f"{self.size} × {piece.block} along dim {piece.dim}"
                )


def unit_index(kept: torch.Tensor, block: int) -> torch.Tensor:
    """The entries along a dimension that ``kept`` units of width ``block`` own."""
    if block == 1:
        return kept
    offsets = torch.arange(block, dtype=torch.long)
    return (kept[:, None] * block + offsets[None, :]).reshape(-1)


def slices_by_tensor(groups: Iterable[Group]) -> dict[str, list[tuple[Group, Slice]]]:
    """For each tensor, the groups (and their slices) that cut it."""
    table: dict[str, list[tuple[Group, Slice]]] = {}
    for group in groups:
        for piece in group.slices:
            table.setdefault(piece.tensor, []).append((group, piece))
    return table


def shrink_tensors(
    tensors: Mapping[str, torch.Tensor], groups: list[Group], kept: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A new state dict: every tensor a group cuts keeps only its kept units' entries (file
    order kept, untouched tensors shared, not copied)."""
    table = slices_by_tensor(groups)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        for group, piece in table.get(name, ()):
            index = kept.get(group.name)
            if index is None or len(index) == group.size:
                continue
            tensor = tensor.index_select(piece.dim, unit_index(index, piece.block))
        out[name] = tensor.contiguous() if name in table else tensor
    return out


def count_params(
    shapes: Mapping[str, tuple[int, ...]],
    table: Mapping[str, list[tuple[Group, Slice]]],
    counts: Mapping[str, int],
    names: Iterable[str],
) -> int:
    """Parameters of ``names`` left when each group keeps ``counts[group]`` units."""
    total = 0
    for name in names:
        shape = list(shapes[name])
        for group, piece in table.get(name, ()):
            shape[piece.dim] = counts.get(group.name, group.size) * piece.block
        total += math.prod(shape)
    return total


def zero_removed(
    tensors: Mapping[str, torch.Tensor], groups: list[Group], kept: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Copies of the cut tensors with the removed units' entries set to zero (the masks a
    structured choice amounts to, for a report or a weight-granularity comparison)."""
    table = slices_by_tensor(groups)
    out = {}
    for name, pieces in table.items():
        tensor = tensors[name].clone()
        for group, piece in pieces:
            index = kept.get(group.name)
            if index is None or len(index) == group.size:
                continue
            keep = torch.zeros(group.size, dtype=torch.bool)
            keep[index] = True
            drop = unit_index(torch.nonzero(~keep).reshape(-1), piece.block)
            tensor.index_fill_(piece.dim, drop, 0.0)
        out[name] = tensor
    return out

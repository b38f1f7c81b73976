"""The live (non-zero) entries of the prunable tensors, tracked across the rounds of one run.

An iterative schedule prunes the same tensors a hundred times, and most of them end up nearly
empty. Recomputing ``weight != 0`` over every entry each round, selecting among all entries and
writing full-size masks back costs more than scoring the few live ones. So between rounds a run
remembers, per tensor, either its keep-mask or — once at most :data:`SPARSE_FRACTION` of it is
live — the ascending flat positions of its live entries; selection then works on the scores
gathered at those positions (same order, so ties break the same way) and pruning zeroes just
the positions it drops. Only the pruning loop writes the tensors, so the record stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch

from prunecli.pruning.select import LazyScores

#: a tensor is tracked by the positions of its live entries once at most this fraction is live
SPARSE_FRACTION = 1 / 16


class LiveSet:
    """Per prunable tensor: unknown (``tensor != 0`` on access), a keep-mask, or positions."""

    def __init__(self, tensors: MutableMapping[str, torch.Tensor], names: list[str]) -> None:
        self.tensors = tensors
        self.names = names
        self.masks: dict[str, torch.Tensor] = {}
        self.positions: dict[str, torch.Tensor] = {}

    def alive(self, name: str) -> torch.Tensor:
        """The full keep-mask of ``name`` (True = live)."""
        if name in self.masks:
            return self.masks[name]
        tensor = self.tensors[name]
        if name in self.positions:
            mask = torch.zeros(tensor.numel(), dtype=torch.bool, device=tensor.device)
            return mask.index_fill_(0, self.positions[name], True).reshape(tensor.shape)
        return tensor != 0

    def zeros(self, name: str) -> int:
        tensor = self.tensors[name]
        if name in self.positions:
            return tensor.numel() - self.positions[name].numel()
        live = self.masks.get(name, tensor)
        return int(tensor.numel() - live.count_nonzero())

    def selection(self, scores: Mapping[str, torch.Tensor]) -> tuple[LazyScores, LazyScores]:
        """What to select among, computed on access: per tensor its scores and live mask, or
        — for a tensor tracked by positions — its scores at those positions, all live."""
        gathered: dict[str, torch.Tensor] = {}

        def chosen(name: str) -> torch.Tensor:
            if name not in self.positions:
                return scores[name]  # may itself be computed on access (|w|)
            if name not in gathered:
                gathered[name] = scores[name].reshape(-1)[self.positions[name]]
            return gathered[name]

        def alive(name: str) -> torch.Tensor:
            if name not in self.positions:
                return self.alive(name)
            count = self.positions[name].numel()
            return torch.ones(count, dtype=torch.bool, device=self.positions[name].device)

        return LazyScores(self.names, chosen), LazyScores(self.names, alive)

    def apply(self, keep: Mapping[str, torch.Tensor], track: bool) -> None:
        """Zero what ``keep`` (from :meth:`selection`'s shapes) drops; ``track``: remember the
        result for another round."""
        with torch.no_grad():  # weights may be leaf Parameters (e.g. of a .pt2 program)
            for name, kept in keep.items():
                tensor = self.tensors[name]
                if name in self.positions:
                    positions = self.positions[name]
                    tensor.view(-1).index_fill_(0, positions[~kept], 0)
                    self.positions[name] = positions[kept]
                    continue
                tensor.masked_fill_(~kept, 0)
                self.masks.pop(name, None)
                if not track:
                    continue
                few = int(kept.count_nonzero()) <= SPARSE_FRACTION * kept.numel()
                if few and tensor.is_contiguous():  # positions index the tensor's storage
                    self.positions[name] = torch.nonzero(kept.reshape(-1)).reshape(-1)
                else:
                    self.masks[name] = kept

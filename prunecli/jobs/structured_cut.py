"""Cutting a transformer block's neurons or heads: score the units, keep the best, shrink the
tensors and, with calibration data, refit the layer that reads them (docs/structured.md).

:class:`BlockCutter` is both the block runner's pruner (calibration/runner.py: ``observe`` sees
each linear layer's dense inputs, ``prune_block`` cuts the block in place, the runner then runs
the smaller block so the next one sees its outputs) and, without data, a plain function of a
block's tensors (:meth:`BlockCutter.cut`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunecli.calibration.blocks import Block
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.structure.groups import Group, shrink_tensors, unit_index
from prunecli.structure.reconstruct import DEFAULT_DAMP, InputGram
from prunecli.structure.units import activation_scores, keep_highest, unit_scores


class InputNorms:
    """Σ x² of each input feature of a layer over the calibration rows (Wanda's ‖X_d‖₂²)."""

    def __init__(self, features: int) -> None:
        self.squares: torch.Tensor | None = None  # on the inputs' device
        self.features = features

    def add(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        squares = x.pow(2).sum(dim=0)
        self.squares = squares if self.squares is None else self.squares + squares

    def norms(self) -> torch.Tensor:
        """‖X_d‖₂ of each input feature d (on the CPU)."""
        if self.squares is None:
            return torch.zeros(self.features, dtype=torch.float64)
        return self.squares.cpu().sqrt()


class BlockCutter:
    """Cuts block ``i`` to ``keep`` units of ``groups[i]``. Scores: ``criterion``'s per-weight
    scores summed per unit, or with ``activations`` (wanda) the consumer's input norms times
    its weight columns' norms. ``reconstruct``: refit each consumer on its kept inputs."""

    def __init__(
        self,
        groups: list[Group],
        keep: int,
        criterion: Criterion | None,
        seed: int,
        activations: bool = False,
        reconstruct: bool = False,
        damp: float = DEFAULT_DAMP,
    ) -> None:
        self.groups, self.keep, self.criterion = groups, keep, criterion
        self.activations, self.reconstruct, self.damp = activations, reconstruct, damp
        self.consumers = {name for group in groups for name in group.consumers}
        self.seen: dict[str, InputGram | InputNorms] = {}
        self.kept: dict[str, torch.Tensor] = {}
        self.refit: list[str] = []
        self._tensors: dict[str, torch.Tensor] = {}
        names = [piece.tensor for group in groups for piece in group.slices]
        model = LoadedModel(self._tensors, {}, "", "safetensors", None)
        self._context = ScoreContext(model=model, names=names, seed=seed)

    @property
    def observes(self) -> bool:
        return self.activations or self.reconstruct

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        if not self.observes or name not in self.consumers:
            return
        if name not in self.seen:
            features = inputs.shape[-1]
            bias = getattr(module, "bias", None) is not None
            self.seen[name] = (
                InputGram(features, bias) if self.reconstruct else InputNorms(features)
            )
        self.seen[name].add(inputs)

    def prune_block(self, block: Block) -> None:
        """Cut the runner's block in place: its parameters become the smaller tensors."""
        params = dict(block.module.named_parameters())
        wanted = self.wanted(self.groups[block.index])
        # cut on the CPU (the indices are there), then back on the block's device
        tensors = {
            f"{block.name}.{n}": p.detach().cpu()
            for n, p in params.items()
            if f"{block.name}.{n}" in wanted
        }
        new = self.cut(block.index, tensors)
        owners = dict(block.module.named_modules())
        for name, tensor in new.items():
            sub = name.removeprefix(f"{block.name}.")
            owner_name, _, leaf = sub.rpartition(".")
            owner = owners[owner_name]
            device = owner._parameters[leaf].device
            owner._parameters[leaf] = torch.nn.Parameter(tensor.to(device), requires_grad=False)
            _resize(owner)

    def wanted(self, group: Group) -> set[str]:
        """The tensors :meth:`cut` reads: the group's, and its consumers' biases."""
        names = {piece.tensor for piece in group.slices}
        return names | {f"{consumer}.bias" for consumer in group.consumers}

    def cut(self, index: int, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Block ``index``'s tensors that change (``tensors`` holds at least the group's), smaller."""
        group = self.groups[index]
        scores = self._scores(group, tensors)
        kept = keep_highest(scores, self.keep)
        self.kept[group.name] = kept
        cut = {piece.tensor: tensors[piece.tensor] for piece in group.slices}
        for consumer in group.consumers if self.reconstruct else ():
            if f"{consumer}.bias" in tensors:
                cut[f"{consumer}.bias"] = tensors[f"{consumer}.bias"]
        new = shrink_tensors(cut, [group], {group.name: kept})
        if self.reconstruct and self.keep < group.size:  # nothing removed: nothing to refit
            for piece in group.slices:
                consumer = piece.tensor.removesuffix(".weight")
                if consumer in group.consumers:
                    self._refit(consumer, piece.dim, unit_index(kept, piece.block), tensors, new)
        for consumer in group.consumers:
            self.seen.pop(consumer, None)
        return new

    def _scores(self, group: Group, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.activations:
            total = torch.zeros(group.size, dtype=torch.float64)
            for piece in group.slices:
                consumer = piece.tensor.removesuffix(".weight")
                if consumer in group.consumers:
                    norms = self.seen[consumer].norms()
                    total += activation_scores(norms, tensors[piece.tensor], piece)
            return total
        assert self.criterion is not None
        self._tensors.clear()
        self._tensors.update({piece.tensor: tensors[piece.tensor] for piece in group.slices})
        scores = self.criterion.score(self._context)
        per_weight = {piece.tensor: scores[piece.tensor] for piece in group.slices}
        return unit_scores(per_weight, group)

    def _refit(
        self,
        consumer: str,
        dim: int,
        columns: torch.Tensor,
        dense: Mapping[str, torch.Tensor],
        new: dict[str, torch.Tensor],
    ) -> None:
        """Refit ``consumer``'s weight (its input dimension ``dim``: 1 for an out × in Linear,
        0 for an in × out Conv1D) and bias on its kept input ``columns``."""
        gram = self.seen[consumer]
        assert isinstance(gram, InputGram)
        weight = dense[f"{consumer}.weight"]
        matrix = weight if dim == 1 else weight.T
        bias = dense.get(f"{consumer}.bias")
        fitted, fitted_bias = gram.refit(matrix, bias, columns, self.damp)
        new[f"{consumer}.weight"] = (fitted if dim == 1 else fitted.T).contiguous()
        if fitted_bias is not None:
            new[f"{consumer}.bias"] = fitted_bias
        self.refit.append(consumer)


def _resize(module: torch.nn.Module) -> None:
    """A layer's recorded sizes after its weight shrank (GPT-2's Conv1D shapes its output by
    ``nf``; nn.Linear's ``in_features`` / ``out_features`` are for show)."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        return
    if isinstance(module, torch.nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif type(module).__name__ == "Conv1D":
        module.nf = weight.shape[1]

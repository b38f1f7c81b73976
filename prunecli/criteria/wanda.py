"""Wanda (Sun et al. 2023): |W_ij|·‖X_j‖₂ from calibration text, the lowest pruned within each
output row (or each group of M under ``--pattern N:M``). It runs block by block on a Hugging
Face folder (jobs/calibrated.py); :class:`WandaPruner` is what the block runner calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from prunecli.calibration.blocks import Block, weight_matrix
from prunecli.calibration.owl import DEFAULT_LAMBDA, DEFAULT_M
from prunecli.calibration.stats import ColumnNorms
from prunecli.calibration.wanda import wanda_mask, wanda_scores
from prunecli.criteria.registry import register
from prunecli.errors import Unsupported
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.structure.nm import Pattern, nm_keep

#: the options of every calibrated method: windows drawn from --data (calibration/data.py),
#: and OWL's λ and M, taken with --scope owl (calibration/owl.py)
CALIBRATION_OPTIONS = {
    "samples": 128,
    "seq_len": None,
    "owl_lambda": DEFAULT_LAMBDA,
    "owl_m": DEFAULT_M,
}


def block_by_block(name: str) -> Unsupported:
    """What a calibrated method says when asked for per-weight scores of a loaded model."""
    return Unsupported(
        f"{name} runs block by block on a Hugging Face folder with --data text; "
        "it has no per-weight scores of a loaded model",
        f"use `prunecli prune ./folder/ --method {name} --sparsity 0.5 --data corpus.txt`",
    )


@register
class Wanda(Criterion):
    name = "wanda"
    summary = "|W|·‖X‖ per output row from calibration text (Sun et al. 2023); HF folders"
    needs = ("weights", "calibration")
    default_scope = "row"
    options = dict(CALIBRATION_OPTIONS)
    option_types = {"seq_len": int}

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        raise block_by_block(self.name)


class LayerInputs:
    """One input statistic per linear layer of the block being run, made on first sight."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.stats: dict[str, object] = {}

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = self.kind(weight_matrix(module).shape[1], name)
        stats.add(inputs)

    def take(self, name: str) -> object:
        """The statistic of ``name``, forgotten here (one block's statistics are held at once)."""
        if name not in self.stats:
            raise Unsupported(f"{name} never ran on the calibration data, so it cannot be pruned")
        return self.stats.pop(name)


def block_sparsity(sparsity: float | Sequence[float], index: int) -> float:
    """The sparsity of block ``index``: one for every block, or one per block (OWL)."""
    return float(sparsity) if isinstance(sparsity, (int, float)) else float(sparsity[index])


class WandaPruner(LayerInputs):
    """Column norms per linear layer; then each layer keeps, per output row, its highest
    |W|·‖X‖ (``sparsity``: one for every block or one per block), or the N highest of every M
    (``pattern``). Pruned weights become +0.0 in place."""

    def __init__(self, sparsity: float | Sequence[float], pattern: Pattern | None = None) -> None:
        super().__init__(ColumnNorms)
        self.sparsity, self.pattern = sparsity, pattern

    def prune_block(self, block: Block) -> None:
        for name, weight in block.weights.items():
            squares = self.take(name).squares
            if self.pattern is not None:
                keep = nm_keep(wanda_scores(weight, squares), weight != 0, self.pattern)
            else:
                keep = wanda_mask(weight, squares, block_sparsity(self.sparsity, block.index))
            weight.masked_fill_(~keep, 0.0)

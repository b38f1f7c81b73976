"""SparseGPT (Frantar & Alistarh 2023): each linear layer pruned from its inputs' Hessian, the
kept weights updated to compensate (calibration/sparsegpt.py). It runs block by block on a
Hugging Face folder (jobs/calibrated.py); :class:`SparseGPTPruner` is what the runner calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from prunecli.calibration.blocks import Block
from prunecli.calibration.sparsegpt import sparsegpt_prune
from prunecli.calibration.stats import Hessian
from prunecli.criteria.registry import register
from prunecli.criteria.wanda import (
    CALIBRATION_OPTIONS,
    LayerInputs,
    block_by_block,
    block_sparsity,
)
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.structure.nm import Pattern

DEFAULT_DAMPENING = 0.01
BLOCKSIZE = 128  # columns per mask choice, as the reference


@register
class SparseGPT(Criterion):
    name = "sparsegpt"
    summary = (
        "OBS-style pruning with weight updates from calibration text (Frantar 2023); HF folders"
    )
    needs = ("weights", "calibration")
    default_scope = "layer"
    options = {**CALIBRATION_OPTIONS, "dampening": DEFAULT_DAMPENING}
    option_types = {"seq_len": int}

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        raise block_by_block(self.name)


class SparseGPTPruner(LayerInputs):
    """A Hessian per linear layer; then each layer pruned to ``sparsity`` (exact count per
    layer; one for every block or one per block) or ``pattern`` with the remaining weights
    updated, copied back in place."""

    def __init__(
        self,
        sparsity: float | Sequence[float],
        pattern: Pattern | None = None,
        dampening: float = DEFAULT_DAMPENING,
    ) -> None:
        super().__init__(Hessian)
        self.sparsity, self.pattern, self.dampening = sparsity, pattern, dampening

    def prune_block(self, block: Block) -> None:
        for name, weight in block.weights.items():
            hessian = self.take(name).matrix()
            pruned, _ = sparsegpt_prune(
                weight,
                hessian,
                sparsity=None if self.pattern else block_sparsity(self.sparsity, block.index),
                pattern=(self.pattern.n, self.pattern.m) if self.pattern else None,
                blocksize=BLOCKSIZE,
                dampening=self.dampening,
                layer=name,
            )
            weight.copy_(pruned)

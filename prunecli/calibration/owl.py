"""OWL (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): one sparsity per block, lower
where the block holds more outliers of Wanda's scores, with the mean over the blocks equal to
the target.

The reference code (luuyin/OWL ``prune_wanda_outlier``; llm-compressor's
``sparsity_profile="owl"`` computes the same) does, for a target S, λ (``Lamda``) and M
(``Hyper_m``):

1. a first pass over the DENSE model, block by block: each linear layer's Wanda scores
   |W_ij|·‖X_j‖₂ from the block's inputs, the scores of all the block's linear layers taken
   together (concatenated), and the block's outlier ratio D_i = the fraction of those scores
   above M × their mean (strictly greater);
2. D normalised to [0, 1] by its min and max, scaled by 2λ, shifted so its mean is 1 − S:
   density_i = 2λ·(D_i − min D)/(max D − min D) − mean(that) + (1 − S);
3. block i pruned at sparsity 1 − density_i (so sparsity_i = S − 2λ·(n_i − mean n) with n the
   normalised ratios: the mean of the sparsities is S, each within 2λ of it).

Two differences: when every block has the same outlier ratio (or there is one block) the
reference divides 0 by 0; here every block then gets S. The reference's column statistic is
the mean of ‖X_j‖² per sample, here its sum: one factor per layer that cancels in the ratio to
the mean (of the block's concatenated scores, it is the same factor for all its layers, since
every layer sees the same calibration tokens).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import torch

from prunecli.calibration.blocks import Block, OnlyLayers, Progress, weight_matrix
from prunecli.calibration.stats import ColumnNorms
from prunecli.calibration.wanda import wanda_scores
from prunecli.errors import BadInput, Unsupported

if TYPE_CHECKING:
    from prunecli.calibration.runner import BlockModel

#: the reference's published setting for LLaMA at 70% (llama7b_wanda_owll.sh): λ 0.08, M 5
DEFAULT_LAMBDA = 0.08
DEFAULT_M = 5.0


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> list[float]:
    """Each block's sparsity from its outlier ratio (module docstring, steps 2 and 3)."""
    low, high = min(ratios), max(ratios)
    if high == low:
        return [target] * len(ratios)
    scaled = [(r - low) / (high - low) * 2.0 * lam for r in ratios]
    mean = math.fsum(scaled) / len(scaled)
    return [1.0 - (s - mean + (1.0 - target)) for s in scaled]


def check_sparsities(sparsities: Sequence[float], names: Sequence[str], lam: float) -> None:
    """Every block's sparsity within [0, 1); else BadInput naming the block and the bound."""
    for name, sparsity in zip(names, sparsities, strict=True):
        if not 0.0 <= sparsity < 1.0:
            raise BadInput(
                f"--scope owl with --owl-lambda {lam:g} gives block {name} sparsity "
                f"{sparsity:.4g}, outside [0, 1)",
                "lower --owl-lambda (each block's sparsity is within 2λ of the target)",
            )


class OutlierSurvey:
    """What the first pass hands each block: column norms per linear layer, then the block's
    outlier ratio of Wanda scores. One layer's scores are held at a time (the mean first, then
    the count, each score computed again)."""

    def __init__(self, m: float) -> None:
        self.m = m
        self.norms: dict[str, ColumnNorms] = {}
        self.ratios: list[float] = []

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        norms = self.norms.get(name)
        if norms is None:
            norms = self.norms[name] = ColumnNorms(weight_matrix(module).shape[1], name)
        norms.add(inputs)

    def survey(self, block: Block) -> None:
        weights = block.weights
        for name in weights:
            if name not in self.norms:
                raise Unsupported(
                    f"{name} never ran on the calibration data, so it cannot be pruned"
                )
        squares = {name: self.norms.pop(name).squares for name in weights}
        total, count = 0.0, 0
        for name, weight in weights.items():
            scores = wanda_scores(weight, squares[name])
            total, count = total + float(scores.sum()), count + scores.numel()
        threshold = self.m * (total / count) if count else 0.0
        above = sum(
            int((wanda_scores(w, squares[n]) > threshold).sum()) for n, w in weights.items()
        )
        self.ratios.append(above / count if count else 0.0)


def owl_plan(
    opened: BlockModel,
    input_ids: torch.Tensor,
    target: float,
    lam: float,
    m: float,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: Progress | None = None,
    weights: Collection[str] | None = None,
) -> tuple[list[float], list[float]]:
    """The first pass over the dense folder (nothing written): (outlier ratio, sparsity) per
    block, each sparsity checked within [0, 1). ``weights``: the pruned weights' names (the
    outliers are counted among them; all the blocks' linear layers if None)."""
    from prunecli.calibration.runner import survey_blocks  # the runner's imports, when run

    survey = OutlierSurvey(m)
    extra = {} if batch_size is None else {"batch_size": batch_size}
    chosen = survey if weights is None else OnlyLayers(survey, weights)
    survey_blocks(opened, input_ids, chosen, device=device, progress=progress, **extra)
    sparsities = owl_sparsities(survey.ratios, target, lam)
    names = [opened.blocks.name(i) for i in range(len(opened.blocks))]
    check_sparsities(sparsities, names, lam)
    return survey.ratios, sparsities

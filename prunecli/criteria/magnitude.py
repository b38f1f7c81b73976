"""Magnitude: keep the largest |θ|. Global magnitude is the lottery-ticket pruning step."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunecli.criteria.registry import register
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.select import LazyScores


@register
class Magnitude(Criterion):
    name = "magnitude"
    summary = "|θ|: keep the largest weights (Han et al. 2015; the lottery-ticket pruning step)"
    needs = ("weights",)

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        # computed on access: a 100M-parameter model never holds a second copy of its weights
        return LazyScores(ctx.names, lambda name: ctx.tensor(name).abs())

"""Random: uniform scores. With ``--scope erk`` this is ERK-random (Evci et al. 2020)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunecli.criteria.registry import register
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.seeding import stream_seed
from prunecli.pruning.select import LazyScores


@register
class Random(Criterion):
    name = "random"
    summary = "uniform random scores; with --scope erk this is ERK-random"
    needs = ("weights",)

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        index = {name: i for i, name in enumerate(ctx.names)}

        def draw(name: str) -> torch.Tensor:
            # one generator per (seed, round, tensor): the same scores on every access and every run
            generator = torch.Generator().manual_seed(stream_seed(ctx.seed, ctx.round, index[name]))
            return torch.rand(ctx.tensor(name).shape, generator=generator, dtype=torch.float32)

        return LazyScores(ctx.names, draw)

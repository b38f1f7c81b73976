"""SNIP (Lee et al. 2019): connection sensitivity |θ ⊙ ∂L/∂θ| on labelled batches.

The gradient is accumulated over ``--batches`` batches (the sum of their mean cross-entropies),
then multiplied by the weights, as in the reference codes. The copy runs in eval mode, as the
original SNIP code prunes with ``is_train=False``. Scoring the masked model gives already-pruned
weights a score of 0; with ``--iterations K`` every round rescores the masked model on the next
batches of the stream: iterative SNIP (de Jorge et al. 2021).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunecli.criteria.labelled import scoring_copy
from prunecli.criteria.registry import register
from prunecli.data.labelled import DEFAULT_BATCH_SIZE, DEFAULT_BATCHES, batch_options
from prunecli.pruning.criterion import Criterion, ScoreContext


@register
class Snip(Criterion):
    name = "snip"
    summary = "|θ ⊙ ∂L/∂θ| on labelled batches: connection sensitivity (Lee et al. 2019)"
    needs = ("graph", "data")
    options = {"batches": DEFAULT_BATCHES, "batch_size": DEFAULT_BATCH_SIZE}

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        count, batch_size = batch_options(ctx.options)
        net = scoring_copy(ctx, self.name, batch_statistics=False)
        total = net.summed_gradients(
            ctx.data.batches(batch_size, count, ctx.seed, start=ctx.round * count)
        )
        return {
            name: (weight.detach() * grad).abs().cpu()
            for name, weight, grad in zip(ctx.names, net.weights, total, strict=True)
        }

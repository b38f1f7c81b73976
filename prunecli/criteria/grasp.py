"""GraSP (Wang et al. 2020): keep the weights whose removal least reduces the gradient flow.

g = ∇L summed over the batches (no graph); Hg by back-propagating gᵀ∇L, batch by batch, with
logits divided by T (``temperature``, default 200). The score is θ ⊙ Hg and the lowest are
pruned, which is the paper's removal of the largest −θ ⊙ Hg; scores are signed. As in the
reference, batches are class-balanced and BatchNorm uses the batch's statistics (the reference
scores a freshly built network in train mode); dropout is off. On a masked model the pruned
weights are held at zero, so their entries of g are zero (no gradient flows through them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from prunecli.criteria.labelled import scoring_copy
from prunecli.criteria.registry import register
from prunecli.data.labelled import DEFAULT_BATCH_SIZE, DEFAULT_BATCHES, batch_options
from prunecli.errors import BadInput
from prunecli.pruning.criterion import Criterion, ScoreContext

DEFAULT_TEMPERATURE = 200.0


@register
class Grasp(Criterion):
    name = "grasp"
    summary = "θ ⊙ Hg: preserve gradient flow, logits / T = 200 (Wang et al. 2020)"
    needs = ("graph", "data")
    options = {
        "batches": DEFAULT_BATCHES,
        "batch_size": DEFAULT_BATCH_SIZE,
        "temperature": DEFAULT_TEMPERATURE,
    }

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        count, batch_size = batch_options(ctx.options)
        temperature = temperature_option(ctx.options)
        net = scoring_copy(ctx, self.name, batch_statistics=True)
        batches = list(
            ctx.data.batches(batch_size, count, ctx.seed, balanced=True, start=ctx.round * count)
        )
        g = net.summed_gradients(batches, temperature)
        for grad, weight in zip(g, net.weights, strict=True):
            grad.mul_(weight.detach() != 0)
        hg = [torch.zeros_like(w) for w in net.weights]
        for x, y in batches:
            grads = net.gradients(net.loss(x, y, temperature), create_graph=True)
            g_dot_grad = sum((fixed * grad).sum() for fixed, grad in zip(g, grads, strict=True))
            for accumulated, product in zip(hg, net.gradients(g_dot_grad), strict=True):
                accumulated += product
        return {
            name: (weight.detach() * product).cpu()
            for name, weight, product in zip(ctx.names, net.weights, hg, strict=True)
        }


def temperature_option(options: Mapping[str, object]) -> float:
    value = options.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise BadInput(f"--temperature must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise BadInput(f"--temperature must be finite, got {value!r}")
    return float(value)

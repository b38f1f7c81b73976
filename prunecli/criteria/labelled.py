"""What the criteria that score on labelled batches share (snip, grasp): a scoring copy of the
module whose prunable weights take gradients, and the cross-entropy of a batch on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.data.labelled import (
    Dataset,
    check_label_range,
    explain_forward_errors,
    logits_width,
    set_mode,
)
from prunecli.errors import BadInput, Unsupported
from prunecli.models.loaded import copy_module
from prunecli.pruning.criterion import ScoreContext

_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@dataclass
class ScoringCopy:
    """A private copy of the model: scoring never touches the loaded model's weights or state."""

    module: nn.Module
    weights: list[torch.Tensor]  # the copy's prunable weights, in ``ctx.names`` order
    data: Dataset
    input_shape: tuple[int, ...] | None
    device: str
    dtype: torch.dtype
    _labels_checked: bool = field(default=False, repr=False)

    def loss(self, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy of the batch, on logits divided by ``temperature``."""
        x, y = x.to(self.device, self.dtype), y.to(self.device)
        with explain_forward_errors(self.data, self.input_shape, len(y)):
            logits = self.module(x)
        if not self._labels_checked:
            check_label_range(self.data, logits_width(logits))
            self._labels_checked = True
        return F.cross_entropy(logits / temperature, y)

    def gradients(self, value: torch.Tensor, create_graph: bool = False) -> list[torch.Tensor]:
        """d value / d weight for every prunable weight (zeros where it does not depend on it)."""
        if not value.requires_grad:
            return [torch.zeros_like(w) for w in self.weights]
        grads = torch.autograd.grad(
            value, self.weights, create_graph=create_graph, allow_unused=True
        )
        return [
            torch.zeros_like(w) if g is None else g
            for g, w in zip(grads, self.weights, strict=True)
        ]

    def summed_gradients(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """Σ over ``batches`` of ∇L (no graph kept): SNIP's sensitivity, GraSP's g."""
        total = [torch.zeros_like(w) for w in self.weights]
        for x, y in batches:
            for accumulated, grad in zip(
                total, self.gradients(self.loss(x, y, temperature)), strict=True
            ):
                accumulated += grad
        return total


def scoring_copy(ctx: ScoreContext, method: str, batch_statistics: bool) -> ScoringCopy:
    """A copy of ctx's module on ctx's device, in float32 at least, with dropout off.

    ``batch_statistics`` puts the copy in train mode, so BatchNorm normalises with the batch's
    own statistics (its running statistics are updated on the copy only); otherwise eval mode.
    """
    module = ctx.model.require_graph(method)
    if ctx.data is None:
        raise BadInput(f"--method {method} needs labelled data: pass --data")
    net = copy_module(module)
    dtype = _scoring_dtype(net)
    net.to(device=ctx.device, dtype=dtype)
    set_mode(net, batch_statistics)
    for submodule in net.modules():
        if isinstance(submodule, _DROPOUT):
            set_mode(submodule, False)  # scores must not depend on random dropout masks
    params = dict(net.named_parameters())
    for param in params.values():
        param.requires_grad_(False)
    weights = []
    for name in ctx.names:
        if name not in params:
            raise Unsupported(f"{method} scores parameters, and {name!r} is not a parameter")
        weights.append(params[name].requires_grad_(True))
    shape = ctx.input_shape
    return ScoringCopy(net, weights, ctx.data, shape, ctx.device, dtype)


def _scoring_dtype(module: nn.Module) -> torch.dtype:
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype if param.dtype == torch.float64 else torch.float32
    return torch.float32

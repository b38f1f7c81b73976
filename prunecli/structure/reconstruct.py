"""Reconstruction after removal: refit a layer on its kept inputs by ridge least squares.

When structures are removed, the layers that read them (the next conv, an FFN's ``down_proj``,
attention's ``o_proj``) lose inputs. :class:`Refit` finds the weights W' (out × kept) and bias b'
that make the layer, fed the *pruned* model's inputs X' (only the kept features), reproduce the
*dense* layer's outputs Y on calibration data::

    min ‖X' W'ᵀ + 1 b'ᵀ − Y‖² + λ ‖W'‖²,   λ = damp · mean(diag(X'ᵀX'))

(FLAP, SlimGPT and ZipLM refit this way). Only the Gram matrix of the augmented inputs
[X', 1] and their product with Y are kept, so any number of calibration rows costs
(kept + 1)² + (kept + 1) · out numbers. A convolution is the same problem on its unfolded
input patches (:func:`conv_rows`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunecli.errors import BadInput

DEFAULT_DAMP = 1e-2


class Refit:
    """Accumulates [X', 1]ᵀ[X', 1] and [X', 1]ᵀ Y over calibration rows, then solves."""

    def __init__(self, kept_inputs: int, outputs: int, bias: bool = True) -> None:
        width = kept_inputs + (1 if bias else 0)
        self.bias = bias
        self.gram = torch.zeros(width, width, dtype=torch.float64)
        self.cross = torch.zeros(width, outputs, dtype=torch.float64)
        self.rows = 0

    def add(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """``inputs`` (rows × kept) from the pruned model, ``targets`` (rows × out) the dense
        layer's outputs for the same rows."""
        x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
        y = targets.reshape(-1, targets.shape[-1]).to(torch.float32)
        if self.bias:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float32)], dim=1)
        # float32 products (fast), summed in float64 across batches
        self.gram += (x.T @ x).to(torch.float64)
        self.cross += (x.T @ y).to(torch.float64)
        self.rows += x.shape[0]

    def solve(self, damp: float = DEFAULT_DAMP) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W' (out × kept) and b' (out), or ``None`` for b' without a bias."""
        if self.rows == 0:
            raise BadInput("reconstruction saw no calibration rows")
        if not damp >= 0:
            raise BadInput(f"the reconstruction's damping must be ≥ 0, not {damp}")
        gram = self.gram.clone()
        width = gram.shape[0] - (1 if self.bias else 0)
        diag = torch.diagonal(gram)[:width]
        ridge = damp * float(diag.mean()) if width else 0.0
        ridge = ridge if ridge > 0 else 1e-8
        idx = torch.arange(width)
        gram[idx, idx] += ridge
        if self.bias:  # the bias column is not shrunk, only kept from being singular
            gram[width, width] += 1e-8 * max(1.0, float(gram[width, width]))
        solution = torch.linalg.lstsq(gram, self.cross).solution  # (width [+1]) × out
        if not torch.isfinite(solution).all():
            raise BadInput("reconstruction failed: the calibration inputs give no finite solution")
        weight = solution[:width].T.contiguous()
        bias = solution[width].contiguous() if self.bias else None
        return weight, bias


def conv_rows(inputs: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """A 2-D convolution's input as rows of patches (N·L × C·kh·kw), in the order of its weight
    ``reshape(out, -1)``: each row times the flat weight is one output value (before bias)."""
    patches = F.unfold(
        inputs,
        conv.kernel_size,
        dilation=conv.dilation,
        padding=conv.padding,
        stride=conv.stride,
    )  # N × (C·kh·kw) × L
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def conv_targets(outputs: torch.Tensor) -> torch.Tensor:
    """A conv's outputs (N × out × H × W) as rows (N·H·W × out), matching :func:`conv_rows`."""
    return outputs.flatten(2).transpose(1, 2).reshape(-1, outputs.shape[1])


class InputGram:
    """[X, 1]ᵀ[X, 1] of a layer's dense inputs X (rows × features) over calibration rows: its
    inputs' column norms (``norms``) and, once units are chosen, the layer's refit
    (:meth:`refit`) without a second pass over the data."""

    def __init__(self, features: int, bias: bool = True) -> None:
        self.width = features + (1 if bias else 0)
        self.bias = bias
        self._sum: torch.Tensor | None = None  # on the inputs' device (a GPU sums there)
        self.rows = 0

    def add(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        if self.bias:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
        if self._sum is None:
            self._sum = x.new_zeros(self.width, self.width)
        self._sum.addmm_(x.T, x)
        self.rows += x.shape[0]

    @property
    def gram(self) -> torch.Tensor:
        """[X, 1]ᵀ[X, 1] so far, on the CPU."""
        if self._sum is None:
            return torch.zeros(self.width, self.width, dtype=torch.float64)
        return self._sum.cpu()

    def norms(self) -> torch.Tensor:
        """‖X_d‖₂ of each input feature d (on the CPU)."""
        width = self.width - (1 if self.bias else 0)
        return torch.diagonal(self.gram)[:width].clamp(min=0).sqrt()

    def refit(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        kept: torch.Tensor,
        damp: float = DEFAULT_DAMP,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer ``weight`` (out × in, dense) and ``bias`` refit on its ``kept`` input
        features, for a pruned model whose inputs to this layer are the dense ones' kept
        columns, X' = X[:, kept] (units removed in the layer's own block, whose inputs the
        pruning leaves as they were): the targets Y = X Wᵀ + b are the dense layer's outputs,
        so X'ᵀY = G[kept, :] [W, b]ᵀ comes from the Gram matrix alone. A layer without a bias
        is refit without one."""
        gram = self.gram
        width = self.width - (1 if self.bias else 0)
        rows = kept.to("cpu", torch.long)
        dense = weight.to("cpu", torch.float64).T  # in × out
        if self.bias:
            rows = torch.cat([rows, torch.tensor([width])])
            extra = bias if bias is not None else torch.zeros(weight.shape[0])
            dense = torch.cat([dense, extra.to("cpu", torch.float64)[None, :]], dim=0)
        fit = Refit(len(kept), weight.shape[0], bias=self.bias)
        fit.gram = gram[rows][:, rows].clone()
        fit.cross = gram[rows] @ dense
        fit.rows = self.rows
        new_weight, new_bias = fit.solve(damp)
        device, dtype = weight.device, weight.dtype
        return new_weight.to(device, dtype), None if new_bias is None else new_bias.to(
            device, dtype
        )

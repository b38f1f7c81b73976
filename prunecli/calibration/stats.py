"""Input statistics of one Linear layer over the calibration tokens: Wanda's column norms and
SparseGPT's Hessian.

Both take batches of the layer's inputs shaped ``(..., in_features)`` in any floating dtype
(bf16/fp16 are upcast, exactly) and keep float64 sums, so the result does not depend on how
the tokens were split into batches beyond float64 rounding. Non-finite inputs are refused with
:class:`NonFiniteInput`, which names the layer; the block runner re-words it to name the block.
"""

from __future__ import annotations

import math

import torch

from prunecli.errors import BadInput

_ROWS = 1 << 14  # tokens per float64 temporary: bounds the upcast copy of a long batch


class NonFiniteInput(BadInput):
    """Calibration inputs of a layer hold NaN or inf (exit 2); ``layer`` names the layer."""

    def __init__(self, layer: str | None) -> None:
        where = f" of {layer}" if layer else ""
        super().__init__(
            f"the calibration inputs{where} hold NaN or inf",
            "check the model's weights and the calibration data, or compute in float32",
        )
        self.layer = layer


def _tokens(inputs: torch.Tensor, in_features: int, layer: str | None) -> torch.Tensor:
    """``inputs`` as a 2-D (tokens, in_features) view, checked: right width, floating, finite."""
    where = f" of {layer}" if layer else ""
    if inputs.ndim < 1 or inputs.shape[-1] != in_features:
        raise BadInput(
            f"calibration inputs{where} have shape {tuple(inputs.shape)}; "
            f"expected (..., {in_features})"
        )
    if not inputs.is_floating_point():
        raise BadInput(f"calibration inputs{where} are {inputs.dtype}, not floating point")
    if not bool(torch.isfinite(inputs).all()):
        raise NonFiniteInput(layer)
    return inputs.reshape(-1, in_features)


class ColumnNorms:
    """‖X_j‖₂² per input feature j, summed over every calibration token (Wanda's statistic).

    Wanda's reference keeps the running mean of the squared norms per sample in float32; the
    mean only rescales every score of a layer by one factor, so it is dropped, and the sum is
    kept in float64 so that the scores are exact to float64 rounding.
    """

    def __init__(self, in_features: int, layer: str | None = None) -> None:
        self.in_features = in_features
        self.layer = layer
        self.squares = torch.zeros(in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a batch of inputs shaped ``(..., in_features)``."""
        with torch.no_grad():
            tokens = _tokens(inputs, self.in_features, self.layer)
            for start in range(0, tokens.shape[0], _ROWS):
                chunk = tokens[start : start + _ROWS].to(torch.float64)
                self.squares += chunk.square().sum(0).to(self.squares.device)
            self.tokens += tokens.shape[0]

    def norms(self) -> torch.Tensor:
        """‖X_j‖₂ per input feature (float64)."""
        return self.squares.sqrt()


class Hessian:
    """H = (2/n)·Σ XXᵀ over every calibration token, n counting samples (SparseGPT's statistic).

    The reference (IST-DASLab ``sparsegpt.py``, ``add_batch``) counts as samples the leading
    dimension of a 3-D batch ``(batch, seq, features)`` — the sequences — and a 2-D batch
    ``(tokens, features)`` as one sample, and keeps H ← H·n/(n+b) + (2/(n+b))·XXᵀ in float32.
    Here the batch's samples are the product of all dimensions but the last two (1 for a 2-D
    batch), the raw sum Σ XXᵀ is kept in float64 and H is formed on request: the same value in
    exact arithmetic, without rounding the running matrix at every batch. The solver does not
    depend on H's scale (dampening is relative to mean(diag H)), so n only matters for
    reading H itself.
    """

    def __init__(self, in_features: int, layer: str | None = None) -> None:
        self.in_features = in_features
        self.layer = layer
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.samples = 0
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a batch of inputs shaped ``(..., in_features)``."""
        with torch.no_grad():
            tokens = _tokens(inputs, self.in_features, self.layer)
            for start in range(0, tokens.shape[0], _ROWS):
                chunk = tokens[start : start + _ROWS].to(torch.float64)
                self.sum.addmm_(chunk.T.to(self.sum.device), chunk.to(self.sum.device))
            self.samples += math.prod(inputs.shape[:-2]) if inputs.ndim >= 3 else 1
            self.tokens += tokens.shape[0]

    def matrix(self) -> torch.Tensor:
        """H = 2·Σ XXᵀ / n (float64); zeros before any batch."""
        return self.sum * (2.0 / self.samples) if self.samples else self.sum.clone()

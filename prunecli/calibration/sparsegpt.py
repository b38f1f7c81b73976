"""SparseGPT (Frantar & Alistarh 2023): prune one Linear layer and update its remaining weights
so that its output on the calibration inputs changes least (an OBS-style solver).

The mathematics is the reference's (IST-DASLab ``sparsegpt.py``, ``fasterprune``): dead inputs
(H_jj = 0) get H_jj = 1 and a zeroed weight column; ``dampening·mean(diag H)`` is added to the
diagonal; U = the upper Cholesky factor of H⁻¹; the columns are visited left to right in blocks
of ``blocksize``; pruning column i's weight w_i (q_i = 0) spreads err = (w_i − q_i)/U_ii over the
later columns j as W_j −= err·U_ij. Three things differ:

- Exact count. Unstructured masks are chosen per block from w²/U_jj², one comparison across the
  block's rows and columns as in the reference, but the block prunes exactly
  round(S·rows·end) − round(S·rows·start) weights (cumulative rounding over the column blocks,
  so the layer prunes exactly round(S·numel)); the reference prunes every score ≤ the
  ``int(S·numel)``-th smallest — one more than that per block, and more at ties. Ties are
  broken by position (row-major), as everywhere in the engine.
- Precision. H is float64 (dead inputs and dampening applied there); the factorisation and the
  column updates are float32 as in the reference, the factorisation redone in float64 when
  float32 finds H not positive definite. U comes from one Cholesky factorisation and one
  triangular inverse (by halves, in matrix products) instead of the reference's three
  factorisation-sized steps.
- Speed. The reference applies each column's update to the rest of its 128-column block (a
  rank-1 update, memory-bound). Here a block is split into sub-blocks of ``sub_block`` columns:
  the rank-1 updates stay inside the sub-block, and one matrix product carries the sub-block's
  errors to the rest of the block — the same sums, in another order. The weights are held
  transposed (one contiguous row per column), so no update copies.

N:M (``pattern=(n, m)``, n counting the KEPT weights): at every column i with i % m == 0 each row
prunes the m − n lowest w²/U_jj² among columns i … i+m−1, from the weights as updated so far
(for m ≤ 8 one comparison per pair of columns, counted by a matrix product; beyond, one
``kthvalue`` per group on integer keys; no per-row Python work either way).
"""

from __future__ import annotations

import functools
import itertools

import torch

from prunecli.errors import BadInput
from prunecli.pruning.allocation import prune_count

SUB_BLOCK = 16


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float | None = None,
    pattern: tuple[int, int] | None = None,
    blocksize: int = 128,
    dampening: float = 0.01,
    layer: str | None = None,
    sub_block: int = SUB_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated weight in ``weight``'s dtype, keep-mask) for one Linear weight.

    ``weight`` is (out × in), ``hessian`` (in × in) as :class:`~prunecli.calibration.stats.Hessian`
    gives it. Give ``sparsity`` (unstructured, exact count per layer) or ``pattern`` (N:M; a
    ``sparsity`` given with it must equal (m − n)/m). Pruned weights are +0.0; so are the
    columns of dead inputs, whether the mask keeps them or not.
    """
    where = f" of {layer}" if layer else ""
    _check(weight, hessian, sparsity, pattern, blocksize, dampening, where)
    with torch.no_grad():
        weights = weight.detach().to(torch.float32).T.contiguous()  # (in, out): column i = row i
        factor, dead = _inverse_factor(hessian, dampening, where, weights.device)
        weights[dead] = 0.0
        if pattern is not None:
            blocksize = max(pattern[1], blocksize // pattern[1] * pattern[1])
            sub_block = max(pattern[1], sub_block // pattern[1] * pattern[1])
        keep = _solve(weights, factor, sparsity, pattern, blocksize, sub_block)
        pruned = weights.T.to(weight.dtype)
        pruned.masked_fill_(pruned == 0, 0.0)  # +0.0, never -0.0 (also after rounding to bf16)
        return pruned.contiguous(), keep.T.contiguous()


def _check(weight, hessian, sparsity, pattern, blocksize, dampening, where) -> None:
    if weight.ndim != 2 or hessian.shape != (weight.shape[1], weight.shape[1]):
        raise BadInput(
            f"SparseGPT{where} needs a 2-D weight and a square Hessian over its inputs: "
            f"got weight {tuple(weight.shape)} and Hessian {tuple(hessian.shape)}"
        )
    if not weight.is_floating_point() or not _all_finite(weight):
        raise BadInput(f"the weight{where} is not floating point or holds NaN or inf")
    if not _all_finite(hessian):
        raise BadInput(f"the Hessian{where} holds NaN or inf")
    if blocksize < 1 or dampening < 0:
        raise BadInput(f"blocksize must be >= 1 and dampening >= 0, got {blocksize}, {dampening}")
    if pattern is None:
        if sparsity is None or not 0.0 <= sparsity <= 1.0:
            raise BadInput(f"sparsity must be within [0, 1], got {sparsity}")
        return
    n, m = pattern
    if not 0 < n < m:
        raise BadInput(f"pattern {n}:{m} must keep 0 < N < M weights per group of M")
    if weight.shape[1] % m:
        raise BadInput(
            f"pattern {n}:{m}: the input size{where}, {weight.shape[1]}, is not a multiple of {m}"
        )
    if sparsity is not None and abs(sparsity - (m - n) / m) > 1e-9:
        raise BadInput(f"pattern {n}:{m} prunes {(m - n) / m:g}, not sparsity {sparsity:g}")


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf: one sum, and the element-wise test only when the sum is not finite."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _inverse_factor(
    hessian: torch.Tensor, dampening: float, where: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(U = upper Cholesky factor of (H + damping)⁻¹ as float32, dead-input mask)."""
    hessian = hessian.detach().to(device)
    diagonal = hessian.diagonal().to(torch.float64, copy=True)  # H itself is never changed
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += dampening * diagonal.mean()
    # float32 as the reference (float64 costs 2-3x the whole solve on wide layers); float64 only
    # when float32 cannot factorise what float64 can. J·H·J (J reverses the order) is a new
    # tensor, cast before the flip (flipping float64 costs 6x more), its diagonal from float64
    for dtype in (torch.float32, torch.float64):
        h = hessian.to(dtype).flip(0, 1)
        h.diagonal().copy_(diagonal.flip(0))
        upper = _upper_inverse_factor(h)
        if upper is None:
            continue
        upper = upper.to(torch.float32)
        if bool((upper.diagonal() > 0).all()):
            return upper, dead
        # a dampening so large that (H + damping)⁻¹ underflows float32: w²/[H⁻¹]²_jj divides by 0
        raise BadInput(
            f"--dampening {dampening:g} makes the inverse Hessian{where} underflow float32 "
            f"(its mean diagonal is {diagonal.mean().item():g} after dampening)",
            "lower --dampening",
        )
    raise BadInput(
        f"the Hessian{where} is not positive definite",
        "raise --dampening or give more calibration samples",
    )


def _upper_inverse_factor(h: torch.Tensor) -> torch.Tensor | None:
    """U upper with H⁻¹ = UᵀU from ``h`` = JHJ (J reverses the order), or None if H is not
    positive definite in ``h``'s dtype.

    If JHJ = LLᵀ, then U = J·L⁻¹·J: the reference's cholesky → cholesky_inverse →
    cholesky(upper), with one factorisation fewer.
    """
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        return None
    inverse = torch.zeros_like(lower)
    _lower_inverse(lower, inverse)
    upper = inverse.flip(0, 1)
    # NaN or inf anywhere reaches the sum (a finite sum that overflows only costs a float64 retry)
    return upper if bool(torch.isfinite(upper.sum())) else None


def _lower_inverse(lower: torch.Tensor, out: torch.Tensor, base: int = 128) -> None:
    """``out`` (zeros on entry) = lower⁻¹, by halves: [[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0],
    [−C⁻¹BA⁻¹, C⁻¹]]. Two matrix products per level run 2-3x faster than one triangular solve
    against the identity (which spends n³ operations where n³/3 suffice)."""
    size = lower.shape[0]
    if size <= base:
        eye = torch.eye(size, dtype=lower.dtype, device=lower.device)
        out.copy_(torch.linalg.solve_triangular(lower, eye, upper=False))
        return
    half = size // 2
    _lower_inverse(lower[:half, :half], out[:half, :half], base)
    _lower_inverse(lower[half:, half:], out[half:, half:], base)
    out[half:, :half].addmm_(out[half:, half:], lower[half:, :half] @ out[:half, :half], alpha=-1)


def _solve(weights, factor, sparsity, pattern, blocksize, sub_block) -> torch.Tensor:
    """Prune ``weights`` (in × out, transposed) in place; returns the transposed keep-mask."""
    columns, rows = weights.shape
    keep = torch.ones(columns, rows, dtype=torch.bool, device=weights.device)
    diagonal = factor.diagonal()
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        block, block_factor = weights[start:end], factor[start:end, start:end]
        block_diagonal, block_keep = diagonal[start:end, None], keep[start:end]
        if pattern is None:
            count = prune_count(sparsity, rows * end) - prune_count(sparsity, rows * start)
            block_keep.copy_(_lowest_per_block(block, block_diagonal, count))
        # 1/U_ii where pruned, 0 where kept: err = w·scale
        scale = (~block_keep) / block_diagonal
        if pattern is not None:  # per block, not per group: every small op costs ~10 µs
            per_column = (block_diagonal.square(), block_diagonal.reciprocal(), scale.new_zeros(()))
        errors = torch.empty_like(block)
        # every column's views at once: one call instead of several slicings per column
        block_rows, scale_rows, error_rows = block.unbind(0), scale.unbind(0), errors.unbind(0)
        factor_rows = block_factor.unbind(0)
        for low in range(0, end - start, sub_block):
            high = min(low + sub_block, end - start)
            for i in range(low, high):
                if pattern is not None and i % pattern[1] == 0:
                    _choose_group(block, per_column, block_keep, scale, i, pattern)
                torch.mul(block_rows[i], scale_rows[i], out=error_rows[i])
                if i + 1 < high:
                    block[i + 1 : high].addr_(factor_rows[i][i + 1 : high], error_rows[i], alpha=-1)
            if high < end - start:
                rest = block_factor[low:high, high:].T
                block[high:].addmm_(rest, errors[low:high], alpha=-1)
        block.masked_fill_(~block_keep, 0.0)
        if end < columns:
            weights[end:].addmm_(factor[start:end, end:].T, errors, alpha=-1)
    return keep


def _lowest_per_block(block, block_diagonal, count: int) -> torch.Tensor:
    """Transposed keep-mask of the block pruning its ``count`` lowest w²/U_jj², ties row-major.

    The engine's rule (:func:`prunecli.pruning.select.prune_lowest`) on one small tensor, by
    ``kthvalue``: that function's sampling costs more than the whole block's solve here.
    """
    flat = (block.square() / block_diagonal.square()).T.reshape(-1)  # row-major order
    if count <= 0:
        return torch.ones_like(block, dtype=torch.bool)
    if count >= flat.numel():
        return torch.zeros_like(block, dtype=torch.bool)
    value = torch.kthvalue(flat, count).values
    keep = flat > value
    ties = torch.nonzero(flat == value).reshape(-1)  # ascending positions: earliest pruned first
    below = flat.numel() - int(keep.count_nonzero()) - ties.numel()
    keep[ties[count - below :]] = True
    return keep.reshape(block.shape[1], block.shape[0]).T


def _choose_group(block, per_column, block_keep, scale, i: int, pattern) -> None:
    """Each row prunes the m − n lowest w²/U_jj² of columns i … i+m−1 (ties: earliest first);
    ``per_column`` holds the block's U_jj², 1/U_jj and a zero."""
    n, m = pattern
    squares, inverse, zero = per_column
    group = block[i : i + m].square().div_(squares[i : i + m])
    if m <= _PAIRWISE_UP_TO:
        # a weight is kept when fewer than n of its group beat it: one comparison per pair of
        # columns (a beats b when larger, the later one at a tie), counted by one product
        first, second, signs, offsets = _pairs(m, group.device)
        beats = torch.gt(group.index_select(0, first), group.index_select(0, second))
        beaten = torch.addmm(offsets, signs, beats.to(group.dtype))
        torch.lt(beaten, n, out=block_keep[i : i + m])
    else:
        # one k-th smallest along the group on distinct integer keys: a saliency is >= +0.0,
        # so its float32 bits order as integers; key = bits·m + column breaks ties by column
        key = torch.add(_columns(m, group.device), group.view(torch.int32).to(torch.int64), alpha=m)
        threshold = torch.kthvalue(key, m - n, dim=0, keepdim=True).values
        torch.gt(key, threshold, out=block_keep[i : i + m])
    torch.where(block_keep[i : i + m], zero, inverse[i : i + m], out=scale[i : i + m])


_PAIRWISE_UP_TO = 8  # m(m−1)/2 comparisons per row beat a k-th value along m up to here


@functools.cache
def _pairs(m: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For the pairs a < b of a group of m: (a's, b's, signs, offsets) such that
    offsets + signs @ [w_a > w_b] counts, for each column, the columns that beat it."""
    pairs = list(itertools.combinations(range(m), 2))
    signs = torch.zeros(m, len(pairs), device=device)
    offsets = torch.zeros(m, 1, device=device)
    for k, (a, b) in enumerate(pairs):
        signs[b, k] += 1.0  # a beats b where w_a > w_b
        signs[a, k] -= 1.0  # b beats a elsewhere: 1 − [w_a > w_b]
        offsets[a] += 1.0
    first = torch.tensor([a for a, _ in pairs], device=device)
    second = torch.tensor([b for _, b in pairs], device=device)
    return first, second, signs, offsets


@functools.cache
def _columns(m: int, device: torch.device) -> torch.Tensor:
    """[k, 1] = k: a column's position within its group."""
    return torch.arange(m, device=device).unsqueeze(-1)

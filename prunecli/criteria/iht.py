"""IHT, iterative hard thresholding ("A Recovery Guarantee for Sparse Neural Networks",
Fridovich-Keil & Pilanci; reference voilalab/MLP-IHT).

The weights live on a support of k entries (k = the weights the target keeps; first the top-k
of MODEL by |θ|), trained by the job's optimizer with the rest masked. Every
``--project-every`` steps one normalised IHT step on the step's batch may move the support:
w ← H_k(w − μ∇L), with H_k the top-k by magnitude (the shared exact selection), the full
gradient (so pruned weights can return) and μ = ‖g_S‖² / g_Sᵀ H g_S from the current support S
(curvature by a finite difference of gradients), halved until the batch loss does not rise
(backtracking); then ``--iht-steps`` gradient steps restricted to the new support, normalised
and backtracked the same way. Weights that were zero in MODEL stay zero. With ``--scope layer``
or ``erk`` the top-k is taken per layer with that scope's counts (one global top-k lets the
layer with the largest initial scale take the budget and disconnect the others at high
sparsity).

Why not threshold after each optimizer step: Adam moves every weight by about the learning rate
whatever its gradient, so thresholded weights would all come back at the same size and the
support would churn at random; plain gradient steps off the support keep IHT's meaning. The guarantee is for two-layer ReLU
networks with a scalar output; applying it to every layer of a deeper net is an extension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunecli.criteria.registry import register
from prunecli.criteria.training import MethodResult, TrainingJob, TrainingMethod
from prunecli.errors import BadInput
from prunecli.pruning.allocation import keep_counts
from prunecli.training.hooks import TrainHook, TrainState

Masks = dict[str, torch.Tensor]
_BACKTRACKS = 5  # halvings of μ before the step is skipped
_ARMIJO = 1e-4  # sufficient decrease: loss(w − μg) ≤ loss(w) − c·μ·‖g‖²


def top_k_support(job: TrainingJob, allowed: Masks, module: torch.nn.Module) -> Masks:
    """Keep-masks of the ``N − round(S·N)`` largest |w| among ``allowed`` entries: over all
    layers at once (``--scope global``), or per layer with the counts of ``--scope layer|erk``."""
    scores = {name: module.get_parameter(name).detach().abs() for name in job.names}
    shapes = {name: tuple(allowed[name].shape) for name in job.names}
    counts = keep_counts(job.scope, shapes, job.sparsity)
    if counts is None:
        live = sum(int(allowed[name].sum()) for name in job.names)
        n = job.target_zeros - (job.total - live)
        return job.prune_lowest(scores, allowed, max(n, 0))
    support = {}
    for name in job.names:  # a layer with fewer live weights than its budget keeps them all
        n = max(int(allowed[name].sum()) - counts[name], 0)
        support.update(job.prune_lowest({name: scores[name]}, {name: allowed[name]}, n))
    return support


class IhtHook(TrainHook):
    """Holds the weights on a k-sparse support; every ``every`` steps an NIHT step moves it."""

    key = "iht"

    def __init__(self, job: TrainingJob, allowed: Masks, every: int, extra: int) -> None:
        self.job, self.allowed, self.every, self.extra = job, allowed, every, extra
        self.support: Masks = {}
        self.projections = self.changes = self.refined = 0

    def on_start(self, state: TrainState) -> None:
        self.support = top_k_support(self.job, self.allowed, state.module)
        self._use(state, self.support)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every or state.step == state.total_steps:
            return
        self.projections += 1
        support = self.niht_step(state)
        if support is None:
            return
        self.changes += 1
        self.support = support
        self._use(state, support)
        for _ in range(self.extra):
            self.refined += self._refine(state, support)

    def niht_step(self, state: TrainState) -> Masks | None:
        """w ← H_k(w − μ∇L) on the step's batch, μ normalised on the current support and
        halved until the batch loss does not rise; None when the support stays as it is."""
        x, y = state.batch
        names = list(self.support)
        params = [state.params[name] for name in names]
        loss, grads = _loss_and_grads(state.module, x, y, params)
        grads = [
            g * self.allowed[n].to(g.device, g.dtype) for g, n in zip(grads, names, strict=True)
        ]
        on_support = [
            g * self.support[n].to(g.device, g.dtype) for g, n in zip(grads, names, strict=True)
        ]
        norm2 = sum(float((g * g).sum()) for g in on_support)
        if norm2 == 0.0:
            return None
        step = _normalised_step(state, x, y, params, on_support, norm2)
        originals = [p.detach().clone() for p in params]
        with torch.no_grad():
            for _ in range(_BACKTRACKS):
                for p, w, g in zip(params, originals, grads, strict=True):
                    p.copy_(w - step * g)
                support = top_k_support(self.job, self.allowed, state.module)
                for p, name in zip(params, names, strict=True):
                    p.mul_(support[name].to(p.device, p.dtype))
                if float(F.cross_entropy(state.module(x), y)) <= loss:
                    if any(not torch.equal(support[n], self.support[n]) for n in names):
                        return support
                    break
                step /= 2
            for p, w in zip(params, originals, strict=True):
                p.copy_(w)
        return None

    def _use(self, state: TrainState, support: Masks) -> None:
        """Train on ``support`` from now on (the loop zeroes the rest and its optimizer state)."""
        for name, keep in support.items():
            state.masks[name] = keep.to(state.masks[name].device)

    def _refine(self, state: TrainState, support: Masks) -> int:
        """One normalised gradient step on the support, backtracked; 1 if taken, else 0."""
        x, y = state.batch
        params = [state.params[name] for name in support]
        loss, grads = _loss_and_grads(state.module, x, y, params)
        grads = [g * support[n].to(g.device, g.dtype) for g, n in zip(grads, support, strict=True)]
        norm2 = sum(float((g * g).sum()) for g in grads)
        if norm2 == 0.0:
            return 0
        step = _normalised_step(state, x, y, params, grads, norm2)
        originals = [p.detach().clone() for p in params]
        with torch.no_grad():
            for _ in range(_BACKTRACKS):
                for p, w, g in zip(params, originals, grads, strict=True):
                    p.copy_(w - step * g)
                trial = float(F.cross_entropy(state.module(x), y))
                if trial <= loss - _ARMIJO * step * norm2:
                    return 1
                step /= 2
            for p, w in zip(params, originals, strict=True):
                p.copy_(w)
        return 0

    def summary(self) -> dict[str, int]:
        return {
            "projections": self.projections,
            "support_changes": self.changes,
            "refine_steps": self.refined,
        }


def _loss_and_grads(module, x, y, params) -> tuple[float, list[torch.Tensor]]:
    loss = F.cross_entropy(module(x), y)
    return float(loss.detach()), list(torch.autograd.grad(loss, params))


def _normalised_step(state: TrainState, x, y, params, grads, norm2: float) -> float:
    """‖g‖² / gᵀHg with Hg ≈ (∇L(w + εg) − ∇L(w)) / ε; the learning rate where the curvature
    along g is not positive."""
    eps = 1e-3 / norm2**0.5
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g, alpha=eps)
    try:
        _, shifted = _loss_and_grads(state.module, x, y, params)
    finally:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g, alpha=eps)
    curvature = sum(float((g * s).sum()) for g, s in zip(grads, shifted, strict=True)) - norm2
    curvature /= eps
    if not curvature > 0:
        return state.settings.lr
    return norm2 / curvature


@register
class Iht(TrainingMethod):
    name = "iht"
    summary = (
        "iterative hard thresholding: train, project onto the top-k |θ| (Fridovich-Keil & Pilanci)"
    )
    options = {"project_every": 10, "iht_steps": 2}
    scopes = ("global", "layer", "erk")

    def run(self, job: TrainingJob) -> MethodResult:
        every, extra = job.option("project_every"), job.option("iht_steps")
        if every < 1:
            raise BadInput(f"--project-every must be at least 1, got {every}")
        if extra < 0:
            raise BadInput(f"--iht-steps must be 0 or more, got {extra}")
        allowed = job.masks()
        if job.sparsity_of(allowed) > job.sparsity:
            raise BadInput(
                f"the model is already {job.sparsity_of(allowed):.4%} sparse, above --sparsity "
                f"{job.sparsity}",
                "give a higher --sparsity",
            )
        hook = IhtHook(job, allowed, every, extra)
        result = job.train(allowed, hooks=[hook])
        masks = hook.support
        row = job.round_row(1, masks, result)
        row.extra = hook.summary()
        return MethodResult(masks, [row], result)

"""Dissipating gradients (Haroon 2022; abstract only, no reference code), and K-starts with it.

During the first ``--dissipate-epochs`` epochs, at the end of each, the live weights that stayed
near their initial value, |w_t − w_0| ≤ γ·|w_0| (``--gamma``), are pruned, never beyond the
target: when more qualify than the target still needs, those that moved least relative to
|w_0| go first. If the window ends short of the target, the rest is pruned by smallest |w_t|
(the report says how many). Training then goes on with the mask fixed.

``kstarts+dissipating`` (the paper's combination): K-starts at an intermediate sparsity
(``--start-sparsity``, default 1 − √(1 − S), half of the target's compression), then dissipating
gradients from the fittest start's warmed-up weights (w_0 = those weights) up to the target.

Defaults (not published; chosen on MNIST-1D): γ = 0.5 and a 2-epoch window.
"""

from __future__ import annotations

import math

import torch

from prunecli.criteria.kstarts import check_not_sparser, fittest_start, steps_of
from prunecli.criteria.registry import register
from prunecli.criteria.training import MethodResult, TrainingJob, TrainingMethod
from prunecli.errors import BadInput
from prunecli.pruning.allocation import prune_count
from prunecli.training.hooks import TrainHook, TrainState

Masks = dict[str, torch.Tensor]


def relative_moves(start: Masks, now: Masks) -> Masks:
    """|w_t − w_0| / |w_0| (float64; w_0 = 0 gives inf, never "stayed")."""
    return {
        name: (now[name].detach().double().cpu() - start[name].double()).abs()
        / start[name].double().abs()
        for name in start
    }


class DissipatingHook(TrainHook):
    """Prunes the weights that stay within γ|w_0| at the end of each window epoch."""

    key = "dissipating"

    def __init__(self, job: TrainingJob, gamma: float, window: int) -> None:
        self.job, self.gamma, self.window = job, gamma, window
        self.initial = {n: job.module.get_parameter(n).detach().cpu().clone() for n in job.names}
        self.by_gamma = self.by_magnitude = 0
        self.done = False

    def on_epoch_end(self, state: TrainState) -> None:
        if self.done:
            return
        self.step(state)
        if state.epoch >= self.window or state.step == state.total_steps:
            self.fill(state)

    def needed(self, masks: Masks) -> int:
        live = sum(int(masks[name].sum()) for name in self.job.names)
        return self.job.target_zeros - (self.job.total - live)

    def step(self, state: TrainState) -> None:
        masks = {name: state.masks[name].cpu() for name in self.job.names}
        needed = self.needed(masks)
        now = {name: state.params[name] for name in self.job.names}
        moves = relative_moves(self.initial, now)
        stayed = {name: masks[name] & (moves[name] <= self.gamma) for name in masks}
        count = min(sum(int(stayed[name].sum()) for name in stayed), needed)
        if count <= 0:
            return
        kept = self.job.prune_lowest(moves, stayed, count)
        self._replace(state, {name: masks[name] & ~(stayed[name] & ~kept[name]) for name in masks})
        self.by_gamma += count

    def fill(self, state: TrainState) -> None:
        """Up to the target by smallest |w_t| when the window ends short of it."""
        masks = {name: state.masks[name].cpu() for name in self.job.names}
        needed = self.needed(masks)
        if needed > 0:
            scores = {name: state.params[name].detach().abs().cpu() for name in self.job.names}
            self._replace(state, self.job.prune_lowest(scores, masks, needed))
            self.by_magnitude += needed
        self.done = True

    def _replace(self, state: TrainState, masks: Masks) -> None:
        for name, keep in masks.items():
            state.masks[name] = keep.to(state.masks[name].device)

    def summary(self) -> dict[str, int]:
        return {"pruned_by_gamma": self.by_gamma, "pruned_by_magnitude": self.by_magnitude}


def check_dissipating(job: TrainingJob) -> tuple[float, int]:
    gamma, window = job.option("gamma"), job.option("dissipate_epochs")
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise BadInput(f"--gamma must be 0 or more, got {gamma}")
    if window < 1:
        raise BadInput(f"--dissipate-epochs must be at least 1, got {window}")
    return gamma, window


def dissipate(job: TrainingJob, masks: Masks, steps: int, index: int) -> MethodResult:
    """Train ``steps`` steps from the module's weights, pruning by dissipation up to the target."""
    gamma, window = check_dissipating(job)
    hook = DissipatingHook(job, gamma, window)
    result = job.train(masks, hooks=[hook], settings=job.with_settings(steps=steps, epochs=None))
    final = job.masks()
    if not hook.done:  # cannot happen: the last step ends an epoch; kept as a guard
        raise BadInput("dissipating: training ended before the window closed")
    row = job.round_row(index, final, result)
    row.extra = hook.summary()
    warnings = []
    if hook.by_magnitude:
        warnings.append(
            f"dissipating: only {hook.by_gamma} weights stayed within --gamma {gamma} of their "
            f"start in the first {window} epochs; {hook.by_magnitude} more were pruned by "
            "smallest |w|"
        )
    return MethodResult(final, [row], result, warnings)


@register
class Dissipating(TrainingMethod):
    name = "dissipating"
    summary = (
        "prune weights that stay within --gamma of their init in the first epochs (Haroon 2022)"
    )
    options = {"gamma": 0.5, "dissipate_epochs": 2}

    def run(self, job: TrainingJob) -> MethodResult:
        check_dissipating(job)
        check_not_sparser(job)
        return dissipate(job, job.masks(), steps_of(job), 1)


@register
class KStartsDissipating(TrainingMethod):
    name = "kstarts+dissipating"
    summary = "K-starts to an intermediate sparsity, then dissipating gradients to the target"
    options = {
        "starts": 4,
        "warmup_epochs": 1,
        "fitness": "both",
        "gamma": 0.5,
        "dissipate_epochs": 2,
        "start_sparsity": None,
    }

    def run(self, job: TrainingJob) -> MethodResult:
        check_dissipating(job)
        check_not_sparser(job)
        first = job.option("start_sparsity")
        if first is None:
            first = 1 - math.sqrt(1 - job.sparsity)
        current = job.sparsity_of(job.masks())
        if not current <= first <= job.sparsity:
            raise BadInput(
                f"--start-sparsity {first} must lie between MODEL's sparsity ({current:.4%}) "
                f"and --sparsity {job.sparsity}"
            )
        start, rows, warmup = fittest_start(job, prune_count(first, job.total))
        job.label = "dissipating"
        result = dissipate(job, start.masks, steps_of(job) - warmup, len(rows) + 1)
        result.rounds[-1].steps += warmup
        result.rounds = [*rows, *result.rounds]
        return result

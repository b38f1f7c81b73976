"""K-starts (Haroon 2022; abstract only, no reference code): K random masks, keep the fittest.

``--starts K`` random masks at the target sparsity (drawn among MODEL's live weights, exact
count, from one generator seeded by ``--seed``) each train from MODEL's weights for
``--warmup-epochs``; the fittest by ``--fitness`` continues training, so it trains for
``--epochs``/``--steps`` in all (warm-up included; the optimizer state restarts after it).

Fitness, computed on the kept weights after the warm-up (the paper publishes no formula):
``magnitude`` = Σ|w|; ``gradient`` = Σ over warm-up steps of Σ|∂L/∂w|; ``both`` = the sum of the
two, each divided by its mean over the K candidates (so neither unit dominates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunecli.criteria.registry import register
from prunecli.criteria.training import MethodResult, Round, TrainingJob, TrainingMethod
from prunecli.errors import BadInput
from prunecli.training.evaluation import split_data
from prunecli.training.hooks import TrainHook, TrainState

Masks = dict[str, torch.Tensor]
FITNESS = ("magnitude", "gradient", "both")


class GradientSum(TrainHook):
    """Σ over steps of |∂L/∂w| of the kept entries (gradients are already masked)."""

    key = "gradient_sum"

    def __init__(self) -> None:
        self.total = 0.0

    def after_backward(self, state: TrainState) -> None:
        for name in state.masks:
            grad = state.params[name].grad
            if grad is not None:
                self.total += float(grad.abs().sum())


@dataclass
class Start:
    masks: Masks
    weights: dict[str, torch.Tensor]
    magnitude: float
    gradient: float
    row: Round


def random_masks(job: TrainingJob, live: Masks, zeros: int, generator: torch.Generator) -> Masks:
    """Keep-masks with ``zeros`` prunable weights zero, the new ones uniformly at random."""
    scores = {name: torch.rand(live[name].shape, generator=generator) for name in job.names}
    already = job.total - sum(int(live[name].sum()) for name in job.names)
    return job.prune_lowest(scores, live, zeros - already)


def steps_of(job: TrainingJob, epochs: int | None = None) -> int:
    """Steps in ``epochs`` epochs of the job's data (default: the job's whole training)."""
    train_set, _ = split_data(job.data, job.settings.val_fraction, job.seed)
    per_epoch = max(len(train_set) // min(job.settings.batch_size, len(train_set)), 1)
    if epochs is None:
        return job.settings.steps or job.settings.epochs * per_epoch
    return epochs * per_epoch


def check_starts(job: TrainingJob) -> tuple[int, int, str]:
    """(K, warm-up steps, fitness) from the options; BadInput when they cannot work."""
    starts, warmup, fitness = (job.option(n) for n in ("starts", "warmup_epochs", "fitness"))
    if starts < 1:
        raise BadInput(f"--starts must be at least 1, got {starts}")
    if warmup < 1:
        raise BadInput(f"--warmup-epochs must be at least 1, got {warmup}")
    if fitness not in FITNESS:
        raise BadInput(f"unknown --fitness {fitness!r}", f"choose one of: {', '.join(FITNESS)}")
    steps, total = steps_of(job, warmup), steps_of(job)
    if steps >= total:
        raise BadInput(
            f"--warmup-epochs {warmup} ({steps} steps) leaves no training after the warm-up "
            f"({total} steps in all)",
            "train longer (--epochs/--steps) or lower --warmup-epochs",
        )
    return starts, steps, fitness


def fittest_start(job: TrainingJob, zeros: int) -> tuple[Start, list[Round], int]:
    """Warm up K random masks with ``zeros`` zeros from MODEL's weights; the fittest (its weights
    are loaded into the module), a row per candidate, and the warm-up steps."""
    starts, steps, fitness = check_starts(job)
    module, live = job.module, job.masks()
    initial = {name: t.detach().clone() for name, t in module.state_dict().items()}
    generator = torch.Generator().manual_seed(job.seed)
    warmup = job.with_settings(steps=steps, epochs=None)
    candidates = []
    for k in range(1, starts + 1):
        masks = random_masks(job, live, zeros, generator)
        module.load_state_dict(initial)
        job.label = f"start {k}/{starts}"
        hook = GradientSum()
        result = job.train(masks, hooks=[hook], settings=warmup)
        magnitude = sum(float(module.get_parameter(n).detach().abs().sum()) for n in job.names)
        row = job.round_row(k, masks, result)
        row.extra = {"magnitude": magnitude, "gradient": hook.total}
        state = {name: t.detach().clone() for name, t in module.state_dict().items()}
        candidates.append(Start(masks, state, magnitude, hook.total, row))
    best = max(range(starts), key=lambda i: (fitness_of(candidates, i, fitness), -i))
    for i, start in enumerate(candidates):
        start.row.extra.update(fitness=fitness_of(candidates, i, fitness), chosen=i == best)
    module.load_state_dict(candidates[best].weights)
    return candidates[best], [c.row for c in candidates], steps


def fitness_of(candidates: list[Start], i: int, fitness: str) -> float:
    if fitness == "magnitude":
        return candidates[i].magnitude
    if fitness == "gradient":
        return candidates[i].gradient
    mean_m = sum(c.magnitude for c in candidates) / len(candidates) or 1.0
    mean_g = sum(c.gradient for c in candidates) / len(candidates) or 1.0
    return candidates[i].magnitude / mean_m + candidates[i].gradient / mean_g


def check_not_sparser(job: TrainingJob) -> None:
    start = job.sparsity_of(job.masks())
    if start > job.sparsity:
        raise BadInput(
            f"the model is already {start:.4%} sparse, above --sparsity {job.sparsity}",
            "give a higher --sparsity",
        )


@register
class KStarts(TrainingMethod):
    name = "kstarts"
    summary = (
        "K random masks warmed up, the fittest (|w|, Σ|grad| or both) trained on (Haroon 2022)"
    )
    options = {"starts": 4, "warmup_epochs": 1, "fitness": "both"}

    def run(self, job: TrainingJob) -> MethodResult:
        check_not_sparser(job)
        start, rows, warmup = fittest_start(job, job.target_zeros)
        job.label = "fittest"
        rest = job.with_settings(steps=steps_of(job) - warmup, epochs=None)
        result = job.train(start.masks, settings=rest)
        final = job.round_row(len(rows) + 1, start.masks, result)
        final.steps += warmup
        return MethodResult(start.masks, [*rows, final], result)

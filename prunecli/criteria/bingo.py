"""BINGO (Panangat 2025): significance of each weight from the accuracy change when it is zeroed.

During training, every ``--bingo-every`` steps and on the step's batch: the batch accuracy is
measured, then for each prunable tensor a random ``--bingo-fraction`` of its live entries is
zeroed, the accuracy measured again and the tensor restored; each zeroed entry's significance
moves towards |Δaccuracy| as a running mean over the times it was probed. Which entries are
probed comes from a seeded permutation per tensor walked in slices, so every live entry is probed
as often as any other (±1). Probes are no-grad forward passes in eval mode.

At the end the ``round(S·N)`` least significant live weights are pruned in one shot (ties, common
because an accuracy change is a multiple of 1/batch, go to the smaller |w|); the pruned network is
evaluated but not retrained (``prunecli retrain`` does that).
"""

from __future__ import annotations

import torch

from prunecli.criteria.registry import register
from prunecli.criteria.training import MethodResult, Round, TrainingJob, TrainingMethod
from prunecli.data.labelled import set_mode
from prunecli.errors import BadInput
from prunecli.training.evaluation import evaluate, split_data
from prunecli.training.hooks import TrainHook, TrainState

Masks = dict[str, torch.Tensor]


class _Walk:
    """A seeded permutation of a tensor's live entries, handed out in slices."""

    def __init__(self, live: torch.Tensor, fraction: float, generator: torch.Generator) -> None:
        flat = live.reshape(-1).nonzero().reshape(-1)
        self.order = flat[torch.randperm(flat.numel(), generator=generator)]
        self.size = max(1, round(fraction * flat.numel())) if flat.numel() else 0
        self.start = 0

    def next(self) -> torch.Tensor:
        """The next ``size`` entries of the permutation, wrapping round at its end."""
        if self.size == 0:
            return self.order
        positions = (self.start + torch.arange(self.size)) % self.order.numel()
        self.start = (self.start + self.size) % self.order.numel()
        return self.order[positions]


class BingoHook(TrainHook):
    """Accumulates per-weight significance by zeroing random slices of each tensor."""

    key = "bingo"

    def __init__(self, masks: Masks, fraction: float, every: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.walks = {name: _Walk(keep.cpu(), fraction, generator) for name, keep in masks.items()}
        self.significance = {n: torch.zeros(k.shape, dtype=torch.float64) for n, k in masks.items()}
        self.counts = {n: torch.zeros(k.shape, dtype=torch.int64) for n, k in masks.items()}
        self.every = every
        self.probes = 0

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every:
            return
        x, y = state.batch
        set_mode(state.module, False)
        try:
            with torch.no_grad():
                base = _accuracy(state.module, x, y)
                for name, walk in self.walks.items():
                    self._probe(state, name, walk.next(), x, y, base)
        finally:
            set_mode(state.module, True)
        self.probes += 1

    def _probe(self, state: TrainState, name: str, index: torch.Tensor, x, y, base: float) -> None:
        flat = state.params[name].data.view(-1)
        on_device = index.to(flat.device)
        saved = flat[on_device].clone()
        flat[on_device] = 0.0
        change = abs(_accuracy(state.module, x, y) - base)
        flat[on_device] = saved
        sig, count = self.significance[name].view(-1), self.counts[name].view(-1)
        count[index] += 1
        sig[index] += (change - sig[index]) / count[index]

    def summary(self) -> dict[str, int]:
        return {"probes": self.probes}


def _accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((module(x).argmax(1) == y).double().mean())


def bingo_scores(significance: Masks, weights: Masks) -> Masks:
    """Significance with ties broken by |w|: the added 1e-12·|w|/max|w| is far below the
    smallest gap between two running means of multiples of 1/batch over realistic probe counts."""
    scores = {}
    for name, sig in significance.items():
        magnitude = weights[name].detach().abs().to(torch.float64).cpu()
        top = float(magnitude.max()) if magnitude.numel() else 0.0
        scores[name] = sig + 1e-12 * magnitude / (top or 1.0)
    return scores


@register
class Bingo(TrainingMethod):
    name = "bingo"
    summary = "significance from the accuracy change when random 1% are zeroed; one-shot prune (Panangat 2025)"
    options = {"bingo_fraction": 0.01, "bingo_every": 1}

    def run(self, job: TrainingJob) -> MethodResult:
        fraction, every = job.option("bingo_fraction"), job.option("bingo_every")
        if not 0 < fraction <= 1:
            raise BadInput(f"--bingo-fraction must be in (0, 1], got {fraction}")
        if every < 1:
            raise BadInput(f"--bingo-every must be at least 1, got {every}")
        masks = job.masks()
        start = job.sparsity_of(masks)
        if start > job.sparsity:
            raise BadInput(
                f"the model is already {start:.4%} sparse, above --sparsity {job.sparsity}",
                "give a higher --sparsity",
            )
        hook = BingoHook(masks, fraction, every, job.seed)
        result = job.train(masks, hooks=[hook])
        trained = job.round_row(0, masks, result)
        weights = {name: job.module.get_parameter(name) for name in job.names}
        scores = bingo_scores(hook.significance, weights)
        n = job.target_zeros - (job.total - sum(int(masks[name].sum()) for name in job.names))
        pruned = job.prune_lowest(scores, masks, n)
        return MethodResult(pruned, [trained, self._evaluated(job, pruned)], result)

    def _evaluated(self, job: TrainingJob, masks: Masks) -> Round:
        """The pruned network's test figures (weights zeroed here; the job does it again)."""
        with torch.no_grad():
            for name in job.names:
                param = job.module.get_parameter(name)
                param.mul_(masks[name].to(param.device, param.dtype))
        _, test = split_data(job.data, job.settings.val_fraction, job.seed)
        if test is None:
            return Round(1, job.sparsity_of(masks), None)
        device = str(next(job.module.parameters()).device)
        loss, accuracy = evaluate(job.module, test.x, test.y, 1000, device)
        return Round(1, job.sparsity_of(masks), accuracy, loss)

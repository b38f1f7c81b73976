"""IMP, lottery tickets (Frankle & Carbin 2019; reference facebookresearch/open_lth).

Train → prune ``rate`` of the surviving weights by global magnitude → rewind the survivors to
``--rewind-to`` (the initial weights) or to the weights after ``--rewind-step K`` steps of the
first training → train again … until ``--sparsity``; the last round lands exactly on
``round(S · N)`` zeros. The output layer is pruned at half the round's rate (the original
code; ``last_layer="half"``), at the same rate (``same``), or never (``dense``, as OpenLTH).
With ``--scope layer`` the other layers are pruned by magnitude each within itself, to one
common sparsity (Frankle & Carbin's fully connected networks; the MNIST-1D notebook), instead
of under one global threshold.

Round 0 is the dense (input) network: trained first, unless ``--rewind-to`` names weights other
than MODEL's, in which case MODEL is taken as already trained and only evaluated. The output is
the trained network of the last round (``--keep-best``: of the round with the best test
accuracy); its ticket is ``prunecli retrain OUT --rewind-to INIT`` away.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from prunecli.criteria.registry import register
from prunecli.criteria.training import MethodResult, Round, TrainingJob, TrainingMethod
from prunecli.errors import BadInput
from prunecli.pruning.allocation import prune_count, round_to_total
from prunecli.training.evaluation import evaluate, split_data
from prunecli.training.hooks import TrainHook, TrainState
from prunecli.training.transfer import load_weights, output_layer, read_rewind_point

LAST_LAYER = ("half", "same", "dense")
Masks = dict[str, torch.Tensor]


def layer_shares(alive: Mapping[str, int], sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """``n`` new zeros spread over layers (``alive`` live weights of ``sizes``) so that they end
    at one common sparsity, as near as whole weights allow: a layer already sparser than that
    level gets none and the level is solved again over the rest (water-filling); the shares are
    rounded by largest remainder, so they sum to ``n``."""
    open_ = [name for name in alive if sizes[name]]
    while True:
        zeros = {name: sizes[name] - alive[name] for name in open_}
        level = (sum(zeros.values()) + n) / sum(sizes[name] for name in open_)
        over = [name for name in open_ if zeros[name] > level * sizes[name]]
        if not over:
            break
        open_ = [name for name in open_ if name not in over]
    targets = {name: 0.0 for name in alive}
    targets.update({name: level * sizes[name] - zeros[name] for name in open_})
    return round_to_total(targets, dict(alive), n)


def round_sparsities(start: float, target: float, rate: float) -> list[float]:
    """1 − (1 − start)(1 − rate)^k for k = 1, 2, … up to the first that reaches ``target``,
    which is replaced by ``target`` itself."""
    rounds = math.ceil(math.log((1 - target) / (1 - start)) / math.log(1 - rate) - 1e-9)
    rounds = max(rounds, 1)
    return [1 - (1 - start) * (1 - rate) ** k for k in range(1, rounds)] + [target]


class _Snapshot(TrainHook):
    """Keeps the weights after ``step`` steps (late rewinding)."""

    def __init__(self, step: int) -> None:
        self.step, self.weights = step, None

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            self.weights = _clone(state.module.state_dict())


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


@dataclass
class _Best:
    accuracy: float
    index: int
    weights: dict[str, torch.Tensor]
    masks: Masks


@register
class Imp(TrainingMethod):
    name = "imp"
    summary = "lottery ticket: train, prune --rate of survivors by |θ|, rewind, repeat (Frankle & Carbin 2019)"
    options = {
        "rate": 0.2,
        "rewind_to": None,
        "rewind_step": None,
        "keep_best": False,
        "last_layer": "half",
    }
    scopes = ("global", "layer")

    def run(self, job: TrainingJob) -> MethodResult:
        rate, last_layer = self._check(job)
        module = job.module
        masks = job.masks()
        start = job.sparsity_of(masks)
        if start >= job.sparsity:
            raise BadInput(
                f"the model is already {start:.4%} sparse, not below --sparsity {job.sparsity}",
                "imp prunes further from MODEL; give a higher --sparsity",
            )
        head = output_layer(module, job.names, job.data.x[:2].to(next(module.parameters()).device))
        rewind_point, trained = self._rewind_point(job)
        rounds: list[Round] = []
        settings = job.settings
        if trained:
            rounds.append(self._evaluated(job, masks))
            result = None
        else:
            job.label = "round 0"
            snapshot = _Snapshot(job.option("rewind_step") or 0)
            result = job.train(masks, hooks=[snapshot] if job.option("rewind_step") else [])
            rounds.append(job.round_row(0, masks, result))
            if job.option("rewind_step"):
                rewind_point = snapshot.weights
                settings = job.with_settings(steps=result.steps - snapshot.step, epochs=None)
        best = None
        sparsities = round_sparsities(start, job.sparsity, rate)
        for index, sparsity in enumerate(sparsities, start=1):
            masks = self._prune(job, masks, sparsity, head, last_layer)
            load_weights(module, rewind_point, masks)
            job.label = f"round {index}/{len(sparsities)}"
            result = job.train(masks, settings=settings)
            rounds.append(job.round_row(index, masks, result))
            accuracy = result.test_accuracy
            if job.option("keep_best") and accuracy is not None:
                if best is None or accuracy > best.accuracy:
                    best = _Best(accuracy, index, _clone(module.state_dict()), dict(masks))
        warnings = []
        if best is not None and best.index != len(sparsities):
            warnings.append(
                f"--keep-best: round {best.index} (sparsity {rounds[best.index].sparsity:.4%}, "
                f"test accuracy {best.accuracy:.2%}) is kept, not the last round"
            )
            return MethodResult(best.masks, rounds, result, warnings, best.weights)
        return MethodResult(masks, rounds, result, warnings)

    def _check(self, job: TrainingJob) -> tuple[float, str]:
        rate = job.option("rate")
        if not 0 < rate < 1:
            raise BadInput(f"--rate must be in (0, 1), got {rate}")
        last_layer = job.option("last_layer")
        if last_layer not in LAST_LAYER:
            raise BadInput(
                f"unknown --last-layer {last_layer!r}", f"choose one of: {', '.join(LAST_LAYER)}"
            )
        step = job.option("rewind_step")
        if step is not None and job.option("rewind_to") is not None:
            raise BadInput("pass --rewind-to or --rewind-step, not both")
        if step is not None and step < 0:
            raise BadInput(f"--rewind-step must be 0 or more, got {step}")
        total = job.settings.steps or job.settings.epochs * max(
            len(job.data) // job.settings.batch_size, 1
        )
        if step is not None and step >= total:
            raise BadInput(
                f"--rewind-step {step} is not before the end of training ({total} steps)"
            )
        return rate, last_layer

    def _rewind_point(self, job: TrainingJob) -> tuple[dict[str, torch.Tensor], bool]:
        """(weights to rewind to, whether MODEL is already trained)."""
        current = _clone(job.module.state_dict())
        path = job.option("rewind_to")
        if path is None:
            return current, False
        given = read_rewind_point(Path(path), job.model)
        same = all(torch.equal(given[name], current[name].cpu()) for name in current)
        return given, not same

    def _evaluated(self, job: TrainingJob, masks: Masks) -> Round:
        _, test = split_data(job.data, job.settings.val_fraction, job.seed)
        if test is None:
            return Round(0, job.sparsity_of(masks), None)
        loss, accuracy = evaluate(
            job.module, test.x, test.y, 1000, str(next(job.module.parameters()).device)
        )
        return Round(0, job.sparsity_of(masks), accuracy, loss)

    def _prune(
        self, job: TrainingJob, masks: Masks, sparsity: float, head: str | None, last_layer: str
    ) -> Masks:
        """Masks with ``round(sparsity · N)`` zeros, the newest chosen by |θ| of the trained net."""
        scores = {name: job.module.get_parameter(name).detach().abs() for name in job.names}
        alive = {name: int(masks[name].sum()) for name in job.names}
        n = prune_count(sparsity, job.total) - (job.total - sum(alive.values()))
        if head is None or last_layer == "same":
            return self._select(job, scores, masks, n)
        body = {name: masks[name] for name in job.names if name != head}
        head_n = 0
        if last_layer == "half":
            head_n = round(alive[head] * n / sum(alive.values()) / 2)
        overflow = n - sum(alive[name] for name in body)  # more than the body holds
        if overflow > 0 and last_layer == "dense":
            head_n = alive[head] + 1  # refused below
        head_n = max(head_n, overflow)
        if head_n > alive[head]:
            raise BadInput(
                f"--sparsity {job.sparsity} needs more zeros than the layers other than "
                f"{head} hold",
                "use --last-layer same, or a lower --sparsity",
            )
        kept = self._select(job, scores, body, n - head_n)
        kept.update(job.prune_lowest(scores, {head: masks[head]}, head_n))
        return {name: kept[name] for name in job.names}

    @staticmethod
    def _select(job: TrainingJob, scores: Masks, masks: Masks, n: int) -> Masks:
        """Prune the ``n`` smallest of ``masks``' layers: under one threshold (global), or each
        layer its share towards one common sparsity (layer)."""
        if job.scope != "layer":
            return job.prune_lowest(scores, masks, n)
        alive = {name: int(mask.sum()) for name, mask in masks.items()}
        sizes = {name: mask.numel() for name, mask in masks.items()}
        kept = {}
        for name, share in layer_shares(alive, sizes, n).items():
            kept.update(job.prune_lowest(scores, {name: masks[name]}, share))
        return kept

"""The pruning loop: score → allocate → select → zero, once or along a schedule."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from prunecli.errors import BadInput
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.allocation import keep_counts, prune_count
from prunecli.pruning.criterion import Criterion, Inputs, ScoreContext
from prunecli.pruning.live import LiveSet
from prunecli.pruning.prunable import all_finite
from prunecli.pruning.schedule import round_densities
from prunecli.pruning.select import LazyScores, prune_lowest
from prunecli.structure.nm import (
    Pattern,
    check_shapes,
    nm_keep,
    round_prune,
    row_keep,
    row_size,
)

#: called after each round with (round index from 1, number of rounds)
Progress = Callable[[int, int], None]


@dataclass
class PruneResult:
    method: str
    names: list[str]
    target_sparsity: float
    achieved_sparsity: float
    scope: str
    iterations: int
    schedule: str
    seed: int
    seconds: float
    pattern: Pattern | None = None
    warnings: list[str] = field(default_factory=list)


def parse_sparsity(text: str | float, option: str = "--sparsity") -> float:
    """``0.9`` or ``90%`` → 0.9; anything outside [0, 1) (or not finite) is refused."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a number", "write e.g. 0.9 or 90%") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise BadInput(
            f"{option} {text} is outside [0, 1)", "it is the fraction of weights that are zero"
        )
    return value


class FixedScores(Criterion):
    """Scores read from a file (``prune --scores``): one round, no rescoring."""

    name = "scores"
    summary = "precomputed scores from `prunecli score`"

    def __init__(self, scores: Mapping[str, torch.Tensor]) -> None:
        self._scores = scores

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        check_scores(self._scores, ctx, "--scores")
        return {name: self._scores[name] for name in ctx.names}


def check_scores(
    scores: Mapping[str, torch.Tensor], ctx: ScoreContext, method: str, finite: bool = True
) -> None:
    """Every prunable tensor has a floating score of its own shape, finite (``finite``)."""
    for name in ctx.names:
        if name not in scores:
            raise BadInput(f"{method}: no score for prunable tensor {name!r}")
        score, weight = scores[name], ctx.tensor(name)
        if tuple(score.shape) != tuple(weight.shape):
            raise BadInput(
                f"{method}: score for {name!r} has shape {list(score.shape)}, "
                f"the weight has {list(weight.shape)}"
            )
        if not score.is_floating_point() or (finite and not all_finite(score)):
            raise BadInput(f"{method}: score for {name!r} is not a finite floating tensor")


def prune_model(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    sparsity: float,
    scope: str = "global",
    iterations: int | None = None,
    schedule: str = "exponential",
    seed: int = 0,
    inputs: Inputs | None = None,
    progress: Progress | None = None,
    pattern: Pattern | None = None,
) -> PruneResult:
    """Zero ``round(sparsity · N)`` of the prunable weights ``names`` of ``model`` in place
    (with ``pattern``: M − N of every group of M; ``--scope row``: ``round(S · row)`` per row)."""
    started = time.perf_counter()
    if pattern is not None:  # before any scoring: a layer the groups cannot tile is refused
        check_shapes({name: tuple(model.tensors[name].shape) for name in names}, pattern)
    rounds = iterations or criterion.default_iterations
    densities = round_densities(1.0 - sparsity, rounds, schedule)
    total = sum(model.tensors[name].numel() for name in names)
    zeros_before = count_zeros(model, names)
    zeros = zeros_before  # kept up to date analytically for the global scope (no recount)
    # the last round uses ``sparsity`` itself: 1 - (1 - S) can differ from S by an ulp, which
    # flips round(S * N) at .5 (e.g. S = 0.1, N = 15)
    round_sparsities = [1.0 - density for density in densities[:-1]] + [sparsity]
    live = LiveSet(model.tensors, names)
    for index, round_sparsity in enumerate(round_sparsities):
        ctx = ScoreContext(
            model,
            names,
            seed=seed,
            round=index,
            inputs=inputs or Inputs(),
            sparsity=round_sparsity,
            scope=scope,
            live=live,
        )
        scores = criterion.score(ctx)
        last = index == len(round_sparsities) - 1
        if pattern is not None or scope == "row":
            _apply_groups(live, scores, criterion.name, pattern, round_sparsity, last)
            if progress:
                progress(index + 1, rounds)
            continue
        if not isinstance(scores, LazyScores):
            check_scores(scores, ctx, criterion.name, finite=False)
            # file order breaks ties, whatever order a criterion returns; extras are ignored
            scores = {name: scores[name] for name in names}
        chosen, alive = live.selection(scores)
        if not isinstance(scores, LazyScores):  # a lazy score is a criterion's own |w|
            _check_finite(chosen, alive, criterion.name)
        zeros = _apply(live, chosen, alive, scope, round_sparsity, zeros, last)
        if progress:
            progress(index + 1, rounds)
    zeros = count_zeros(model, names)  # recounted once: the report states what the tensors hold
    result = PruneResult(
        method=criterion.name,
        names=names,
        target_sparsity=sparsity,
        achieved_sparsity=zeros / total if total else 0.0,  # every prunable tensor may be empty
        scope=scope,
        iterations=rounds,
        schedule=schedule,
        seed=seed,
        seconds=time.perf_counter() - started,
        pattern=pattern,
    )
    if zeros_before > prune_count(sparsity, total):
        result.warnings.append(
            f"the model already had {zeros_before / total:.4%} zeros among its prunable weights, "
            f"more than the {sparsity:.4%} asked for; pruning never revives a zero"
        )
    elif zeros > _expected_zeros(model, names, scope, sparsity, total):
        # per-layer scopes: a layer already sparser than its budget keeps its zeros
        result.warnings.append(
            f"{zeros / total:.4%} of the prunable weights are zero, more than the {sparsity:.4%} "
            f"asked for: some {'groups' if pattern else 'layers'} already had more zeros than "
            f"their {f'--pattern {pattern}' if pattern else f'--scope {scope}'} budget, "
            "and pruning never revives a zero"
        )
    return result


def _apply(
    live: LiveSet,
    chosen: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    scope: str,
    sparsity: float,
    zeros: int,
    last: bool,
) -> int:
    """Prune to ``sparsity`` given the current number of ``zeros``; returns the new number."""
    shapes = {name: tuple(live.tensors[name].shape) for name in live.names}
    counts = keep_counts(scope, shapes, sparsity)
    if counts is None:
        target = prune_count(sparsity, sum(math.prod(shape) for shape in shapes.values()))
        live.apply(prune_lowest(chosen, alive, target - zeros), track=not last)
        return max(zeros, target)  # prune_lowest prunes exactly target - zeros live weights
    for name in live.names:
        n_prune = math.prod(shapes[name]) - counts[name] - live.zeros(name)
        keep = prune_lowest({name: chosen[name]}, {name: alive[name]}, n_prune)
        live.apply(keep, track=not last)
    return sum(live.zeros(name) for name in live.names)


def _expected_zeros(
    model: LoadedModel, names: list[str], scope: str, sparsity: float, total: int
) -> int:
    """The zeros a run makes on dense tensors: ``round(S · N)``, or per row for ``row``."""
    if scope != "row":
        return prune_count(sparsity, total)
    shapes = [tuple(model.tensors[name].shape) for name in names]
    return sum(
        (math.prod(shape) // size) * prune_count(sparsity, size)
        for shape in shapes
        if (size := row_size(shape))
    )


def _apply_groups(
    live: LiveSet,
    scores: Mapping[str, torch.Tensor],
    method: str,
    pattern: Pattern | None,
    sparsity: float,
    last: bool,
) -> None:
    """Prune within each group (structure/nm.py): groups of M for ``pattern``, else each row.
    Full-shape scores and masks, tensor by tensor; nothing is tracked between rounds."""
    lazy = isinstance(scores, LazyScores)
    for name in live.names:
        score, alive = scores[name], live.alive(name)
        if not lazy:
            if tuple(score.shape) != tuple(alive.shape):
                raise BadInput(f"{method}: score for {name!r} does not match its weight's shape")
            _check_finite({name: score}, {name: alive}, method)
        if pattern is not None:
            keep = nm_keep(score, alive, pattern, round_prune(pattern, sparsity, last))
        else:
            keep = row_keep(score, alive, sparsity)
        live.apply({name: keep}, track=False)


def _check_finite(
    scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], method: str
) -> None:
    """Scores must be finite where they are compared: at live weights (a pruned weight's score
    is never read)."""
    for name, score in scores.items():
        if not all_finite(score) and bool((~torch.isfinite(score) & alive[name]).any()):
            raise BadInput(f"{method}: score for {name!r} is not finite at a live weight")


def count_zeros(model: LoadedModel, names: Iterable[str]) -> int:
    """Zeros among the tensors ``names`` of ``model``, counted."""
    return sum(
        int(model.tensors[name].numel() - model.tensors[name].count_nonzero()) for name in names
    )

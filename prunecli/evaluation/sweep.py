"""The runs of `prunecli sweep`: prune a fresh copy of one model per (method, sparsity, seed),
optionally retrain it with the mask fixed, and evaluate it on the same data (docs/evaluation.md).

A one-shot criterion (one round, scores that do not depend on the sparsity) is scored once per
(method, seed); every sparsity's mask is selected from those scores, as ``prune --scores`` would
select it. An iterative criterion (synflow's 100 rounds) or one that picks its mask for the
sparsity (npb) is pruned afresh for every sparsity, as ``prune`` runs it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prunecli.data.labelled import Dataset
from prunecli.evaluation.metrics import classifier_quality
from prunecli.models.loaded import LoadedModel, copy_module
from prunecli.pruning.criterion import Criterion, Inputs, ScoreContext
from prunecli.pruning.loop import FixedScores, check_scores, prune_model
from prunecli.structure.nm import Pattern
from prunecli.training.loop import train
from prunecli.training.settings import TrainingDiverged, TrainSettings

SCHEMA = "prunecli.sweep/1"
METRIC = "accuracy"


#: what a run prunes to: a sparsity, or an N:M pattern (``2:4``: its sparsity, within groups)
Level = float | Pattern


def level_parts(level: Level) -> tuple[float, Pattern | None]:
    """(the sparsity, the pattern or None) of a level."""
    return (level.sparsity, level) if isinstance(level, Pattern) else (level, None)


def level_key(level: Level) -> tuple[float, str | None]:
    """How runs and summary rows name a level: ``(0.5, None)``, ``(0.5, "2:4")``."""
    sparsity, pattern = level_parts(level)
    return sparsity, None if pattern is None else str(pattern)


def run_key(run: Mapping[str, Any]) -> tuple[float, str | None]:
    return run["sparsity"], run.get("pattern")


@dataclass(frozen=True)
class Task:
    """One unit of work: ``method`` at ``seed`` for each of ``sparsities`` (the levels: one
    scoring for a one-shot criterion, else one per level)."""

    method: str
    seed: int
    sparsities: tuple[Level, ...]


@dataclass(frozen=True)
class SweepSettings:
    """How every run is made; ``retrain`` is None without ``--retrain-steps``."""

    scope: str = "global"
    retrain: TrainSettings | None = None
    eval_batch_size: int | None = None


def reuses_scores(criterion: type[Criterion]) -> bool:
    """Whether one scoring serves every sparsity: one round, and scores, not a chosen mask."""
    return criterion.default_iterations == 1 and not criterion.chooses_mask


def plan_tasks(
    criteria: Mapping[str, type[Criterion]], sparsities: Sequence[Level], seeds: Sequence[int]
) -> list[Task]:
    """The tasks of a sweep, methods × seeds (× sparsities for the methods that cannot reuse)."""
    tasks = []
    for method, criterion in criteria.items():
        for seed in seeds:
            if reuses_scores(criterion):
                tasks.append(Task(method, seed, tuple(sparsities)))
            else:
                tasks.extend(Task(method, seed, (sparsity,)) for sparsity in sparsities)
    return tasks


def fresh_copy(model: LoadedModel) -> LoadedModel:
    """A private copy of ``model`` whose tensors are its copied module's (pruning it in place
    leaves ``model`` untouched)."""
    module = copy_module(model.require_graph("sweep"))
    state = module.state_dict()
    tensors = {
        name: state[name] if name in state else tensor.detach().clone()
        for name, tensor in model.tensors.items()
    }
    return dataclasses.replace(model, module=module, tensors=tensors)


def run_task(
    model: LoadedModel,
    names: list[str],
    criterion: type[Criterion],
    inputs: Inputs,
    data: Dataset,
    task: Task,
    settings: SweepSettings,
    done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """The runs of ``task`` on fresh copies of ``model``: one dict per sparsity."""
    scorer: Criterion = criterion()
    scoring = 0.0
    if reuses_scores(criterion) and len(task.sparsities) > 1:
        started = time.perf_counter()
        copy = fresh_copy(model)
        ctx = ScoreContext(copy, names, seed=task.seed, inputs=inputs)
        scores = scorer.score(ctx)
        check_scores(scores, ctx, criterion.name)
        scorer = FixedScores({name: scores[name].detach().clone() for name in names})
        scoring = time.perf_counter() - started
    runs = []
    for level in task.sparsities:
        started = time.perf_counter()
        copy = fresh_copy(model)
        sparsity, pattern = level_parts(level)
        result = prune_model(
            copy,
            names,
            scorer,
            sparsity,
            settings.scope,
            seed=task.seed,
            inputs=inputs,
            pattern=pattern,
        )
        steps, diverged = 0, False
        if settings.retrain is not None:
            masks = {name: copy.tensors[name] != 0 for name in names}
            retrain = dataclasses.replace(settings.retrain, seed=task.seed)
            try:
                steps = train(copy.module, masks, data, retrain).steps
            except TrainingDiverged as exc:  # the module holds the last good weights again
                steps, diverged = exc.result.steps, True
        figures = {
            entry["metric"]: entry["value"]
            for entry in classifier_quality(copy.module, data, settings.eval_batch_size)
        }
        run = {
            "method": task.method,
            "sparsity": sparsity,
            "pattern": level_key(level)[1],
            "seed": task.seed,
            "achieved_sparsity": result.achieved_sparsity,
            "retrain_steps": steps,
            "accuracy": figures["accuracy"],
            "loss": finite_or_none(figures["cross_entropy"]),
            "diverged": diverged,
            # the one scoring is shared: each run carries its part of it
            "seconds": time.perf_counter() - started + scoring / len(task.sparsities),
        }
        runs.append(run)
        if done is not None:
            done(run)
    return runs


def summarize(
    runs: Sequence[dict[str, Any]],
    methods: Sequence[str],
    sparsities: Sequence[Level],
    metric: str = METRIC,
) -> list[dict[str, Any]]:
    """Per (method, level), in the order asked: mean, population std, min and max of the
    ``metric`` (accuracy; perplexity for a language model) over the seeds."""
    rows = []
    for method in methods:
        for level in sparsities:
            key = level_key(level)
            values = [
                run[metric] for run in runs if run["method"] == method and run_key(run) == key
            ]
            if not values:
                continue
            rows.append(
                {
                    "method": method,
                    "sparsity": key[0],
                    "pattern": key[1],
                    "mean": statistics.fmean(values),
                    "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                    "seeds": len(values),
                }
            )
    return rows


def order_runs(
    runs: Sequence[dict[str, Any]],
    methods: Sequence[str],
    sparsities: Sequence[Level],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    """Runs in the order asked (method, level, seed), whatever order they finished in."""
    order = [(m, level_key(level), seed) for m in methods for level in sparsities for seed in seeds]
    rank = {key: i for i, key in enumerate(order)}
    return sorted(runs, key=lambda run: rank[(run["method"], run_key(run), run["seed"])])


def series(summary: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, float]]]:
    """The summary as plots.sparsity_curve's series: (sparsity, mean, min, max) per method; the
    N:M patterns' rows are left out (a 2:4 run would sit on the 0.5 of an unstructured one)."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in summary:
        if row.get("pattern"):
            continue
        out.setdefault(row["method"], []).append(
            (row["sparsity"], row["mean"], row["min"], row["max"])
        )
    return out


def dense_quality(model: LoadedModel, data: Dataset, batch_size: int | None) -> dict[str, float]:
    """Accuracy and loss of the unpruned model: the line every curve starts from."""
    figures = {
        entry["metric"]: entry["value"]
        for entry in classifier_quality(fresh_copy(model).module, data, batch_size)
    }
    return {"accuracy": figures["accuracy"], "loss": figures["cross_entropy"]}


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a diverged loss is written as null."""
    return value if math.isfinite(value) else None

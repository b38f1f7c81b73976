"""`sweep`: methods × sparsities × seeds from one model, each pruned from a fresh copy,
optionally retrained with the mask fixed, and evaluated on the same data (docs/evaluation.md).

Everything that can be refused is checked before any run; ``jobs`` > 1 runs the tasks in
spawned processes, each loading the model and data once and computing on one thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch

from prunecli.data.labelled import Dataset
from prunecli.errors import BadInput, Unsupported
from prunecli.evaluation.sweep import (
    METRIC,
    SCHEMA,
    Level,
    SweepSettings,
    Task,
    dense_quality,
    order_runs,
    plan_tasks,
    reuses_scores,
    run_task,
    summarize,
)
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.criterion import Criterion, Inputs
from prunecli.pruning.loop import parse_sparsity
from prunecli.structure.nm import Pattern
from prunecli.training.settings import TrainSettings


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as asked, its lists already parsed (:func:`parse_methods`, …)."""

    model: str
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...]
    data: str | Dataset  # what --data names, or (the Python API) the data itself
    patterns: tuple[Pattern, ...] = ()  # N:M levels beside the sparsities
    retrain: TrainSettings | None = None
    scope: str = "global"
    eval_batch_size: int | None = None
    arch: str | None = None
    arch_kwargs: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    input_shape: str | None = None
    trust_remote_code: bool = False
    jobs: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> tuple[Level, ...]:
        return (*self.sparsities, *self.patterns)


@dataclass
class Opened:
    """What every run shares: the loaded model, its prunable names, the data, each method's
    criterion and inputs."""

    model: LoadedModel
    names: list[str]
    data: Dataset
    criteria: dict[str, type[Criterion]]
    inputs: dict[str, Inputs]

    def run(
        self,
        task: Task,
        settings: SweepSettings,
        done: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """``task``'s runs on fresh copies of the shared model."""
        criterion, inputs = self.criteria[task.method], self.inputs[task.method]
        return run_task(self.model, self.names, criterion, inputs, self.data, task, settings, done)


def _items(text: str, option: str) -> list[str]:
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise BadInput(f"{option} {text!r} has an empty entry", "write e.g. a,b,c")
    return list(dict.fromkeys(items))  # repeated entries once, in the order given


def parse_methods(text: str) -> dict[str, type[Criterion]]:
    """``magnitude,snip`` → their criteria; an unknown, training or calibration method is
    refused by name."""
    from prunecli.criteria import get_criterion

    criteria = {}
    for name in _items(text, "--methods"):
        criterion = get_criterion(name)  # unknown: BadInput with "did you mean"
        if criterion.trains():
            raise Unsupported(
                f"--methods {name} trains the model; sweep compares per-weight criteria",
                f"use `prunecli prune --method {name} --data ... --steps N` for it",
            )
        criteria[name] = criterion
    return criteria


def check_scope(criteria: dict[str, type[Criterion]], scope: str) -> None:
    """The methods and ``--scope`` of a classifier's sweep, as `prune` checks them."""
    from prunecli.jobs.settings import PruneSettings
    from prunecli.jobs.validate import check_grouped
    from prunecli.pruning.allocation import SCOPES

    for name, criterion in criteria.items():
        if "calibration" in criterion.needs:
            raise Unsupported(
                f"--methods {name} prunes a Hugging Face folder block by block; this sweep "
                "is of a classifier",
                "sweep a causal language model's folder with it: prunecli sweep ./folder/ "
                f"--methods magnitude,{name} --data heldout.txt",
            )
    if scope == "owl":
        raise BadInput(
            "--scope owl allocates by the outliers of calibration activations, for wanda and "
            "sparsegpt on a Hugging Face folder; this sweep is of a classifier",
            f"choose one of: {', '.join(SCOPES)}",
        )
    if scope not in SCOPES:
        raise BadInput(f"unknown scope {scope!r}", f"choose one of: {', '.join(SCOPES)}")
    for criterion in criteria.values():
        check_grouped(criterion, PruneSettings(0.5, scope))


def parse_sparsities(text: str) -> tuple[tuple[float, ...], tuple[Pattern, ...]]:
    """``0.5,0.9,95%,2:4`` → (ascending sparsities, each in [0, 1); the N:M patterns, in the
    order given)."""
    from prunecli.structure.nm import parse_pattern

    items = _items(text, "--sparsities")
    patterns = tuple(dict.fromkeys(parse_pattern(item) for item in items if ":" in item))
    values = [parse_sparsity(item, "--sparsities") for item in items if ":" not in item]
    return tuple(sorted(set(values))), patterns


def check_levels(
    criteria: dict[str, type[Criterion]],
    scope: str,
    patterns: tuple[Pattern, ...],
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """Each N:M pattern as `prune --pattern` checks it, for every method (and, given the
    prunable ``shapes``, against every layer), before any run."""
    from prunecli.jobs.validate import check_grouped, prune_settings
    from prunecli.structure.nm import check_shapes

    for pattern in patterns:
        for name, criterion in criteria.items():
            settings = prune_settings(
                name, False, None, scope, "exponential", None, 0, str(pattern)
            )
            check_grouped(criterion, settings)
        if shapes is not None:
            check_shapes(shapes, pattern)


def parse_seeds(text: str) -> tuple[int, ...]:
    seeds = []
    for item in _items(text, "--seeds"):
        try:
            seeds.append(int(item))
        except ValueError:
            raise BadInput(f"--seeds {item!r} is not an integer", "write e.g. 0,1,2") from None
    return tuple(dict.fromkeys(seeds))  # 0,00: one seed, not two identical runs


def open_sweep(
    request: SweepRequest,
    criteria: dict[str, type[Criterion]] | None = None,
    loaded: tuple[LoadedModel, list[str]] | None = None,
) -> Opened:
    """Load the model and data and resolve every method's inputs (refusing what cannot run).
    ``criteria``: the methods' classes when already known (a worker gets them pickled by
    reference, so it imports those criteria only, not every built-in one); ``loaded``: the
    model and its prunable names when already open (the Python API's module)."""
    from prunecli.data.labelled import check_fits
    from prunecli.data.sources import load_data
    from prunecli.jobs.session import open_model, resolve_inputs

    if criteria is None:
        criteria = parse_methods(",".join(request.methods))
    model, names = loaded or open_model(
        request.model,
        request.arch,
        request.arch_kwargs,
        request.include,
        request.exclude,
        trust_remote_code=request.trust_remote_code,
    )
    module = model.require_graph("sweep")
    shapes = {name: tuple(model.tensors[name].shape) for name in names}
    check_levels(criteria, request.scope, request.patterns, shapes)
    if model.hf_config is not None:
        raise Unsupported(
            "sweep evaluates classifiers (accuracy on labelled data); this is a transformers model",
            "prune and `prunecli eval` it with --data text instead",
        )
    data = request.data if isinstance(request.data, Dataset) else load_data(request.data)
    shape = model.arch.input_shape if model.arch else None
    batch = request.retrain.batch_size if request.retrain else request.eval_batch_size
    check_fits(data, module, shape, batch)
    inputs = {
        name: resolve_inputs(
            criterion, model, request.input_shape, data, options=request.options, training=True
        )
        for name, criterion in criteria.items()
    }
    return Opened(model, names, data, criteria, inputs)


def run_sweep(
    request: SweepRequest, opened: Opened, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Every run of the sweep, in order, with its summary: the ``prunecli.sweep/1`` document."""
    started = time.perf_counter()
    settings = SweepSettings(request.scope, request.retrain, request.eval_batch_size)
    tasks = plan_tasks(opened.criteria, request.levels, request.seeds)
    total = len(request.methods) * len(request.levels) * len(request.seeds)
    runs: list[dict[str, Any]] = []

    def done(run: dict[str, Any]) -> None:
        runs.append(run)
        if progress:
            progress(len(runs), total)

    if progress:
        progress(0, total)
    if request.jobs > 1:
        _in_processes(request, opened.criteria, tasks, done)
    else:
        for task in tasks:
            opened.run(task, settings, done)
    runs = order_runs(runs, request.methods, request.levels, request.seeds)
    return {
        "schema": SCHEMA,
        "model": request.model,
        "data": opened.data.name,
        "metric": METRIC,
        "settings": _settings(request, opened),
        "dense": dense_quality(opened.model, opened.data, request.eval_batch_size),
        "runs": runs,
        "summary": summarize(runs, request.methods, request.levels),
        "seconds": time.perf_counter() - started,
    }


def _settings(request: SweepRequest, opened: Opened) -> dict[str, Any]:
    retrain = request.retrain
    return {
        "methods": list(request.methods),
        "sparsities": list(request.sparsities),
        "patterns": [str(pattern) for pattern in request.patterns],
        "seeds": list(request.seeds),
        "scope": request.scope,
        "retrain_steps": retrain.steps if retrain else 0,
        # each run retrains with its own seed
        "retrain": {k: v for k, v in retrain.to_json().items() if k != "seed"} if retrain else None,
        "scored_once": [name for name, c in opened.criteria.items() if reuses_scores(c)],
        "prunable": opened.names,
        "evaluation": "top-1 accuracy and mean cross-entropy on the test split of the data "
        "(all of it when it has none), eval mode, as `prunecli eval` computes them",
    }


def check_sweep_outputs(
    reads: list[tuple[str, str | None]], output: str | None, plot: str | None, force: bool
) -> None:
    """Refuse, before any work, a plot that cannot be drawn and outputs that would overwrite
    what the sweep reads or, without ``force``, what exists."""
    from prunecli.evaluation.plots import check_plot_path, require_matplotlib
    from prunecli.io.paths import Target, check_outputs

    targets = [Target(output)] if output is not None else []
    if plot is not None:
        check_plot_path(plot)
        require_matplotlib()
        targets.append(Target(plot, "--plot"))
    check_outputs(reads, targets, force)


def write_sweep(document: dict[str, Any], output: str | None, plot: str | None) -> None:
    """The document as JSON (atomically; ``-`` is stdout) and its picture: the metric against
    sparsity, one line per method."""
    from prunecli.io.atomic import atomic_output

    if output is not None:
        with atomic_output(output) as stream:
            stream.write((json.dumps(document, indent=2) + "\n").encode())
    if plot is not None:
        from prunecli.evaluation.plots import sparsity_curve
        from prunecli.evaluation.sweep import series

        metric = document["metric"]
        label = "test accuracy" if metric == "accuracy" else metric
        dense = document["dense"][metric]
        sparsity_curve(series(document["summary"]), plot, metric=label, dense=dense)


# --- parallel runs -----------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(request: SweepRequest, criteria: dict[str, type[Criterion]]) -> None:
    torch.set_num_threads(1)
    _worker["opened"] = open_sweep(request, criteria)
    _worker["settings"] = SweepSettings(request.scope, request.retrain, request.eval_batch_size)


def _run_in_worker(task: Task) -> list[dict[str, Any]]:
    opened: Opened = _worker["opened"]
    return opened.run(task, _worker["settings"])


def _in_processes(
    request: SweepRequest,
    criteria: dict[str, type[Criterion]],
    tasks: list[Task],
    done: Callable[[dict[str, Any]], None],
) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = min(request.jobs, len(tasks))
    pool = ProcessPoolExecutor(
        workers, context, initializer=_start_worker, initargs=(request, criteria)
    )
    try:
        futures = [pool.submit(_run_in_worker, task) for task in tasks]
        for future in as_completed(futures):
            for run in future.result():
                done(run)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

"""Whole jobs behind `prune` and `score`: one call each from the CLI, usable from Python too."""

from __future__ import annotations

from pathlib import Path

import torch

from prunecli.criteria.training import TrainingMethod
from prunecli.io.inputs import check_input
from prunecli.io.load import load_file
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.report import Report, build_report
from prunecli.jobs.settings import PruneSettings, TrainingRun
from prunecli.jobs.train import train_prune_to_file
from prunecli.jobs.writing import check_format, output_summary, write_model, write_tensors
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.criterion import Criterion, Inputs, ScoreContext
from prunecli.pruning.loop import FixedScores, Progress, check_scores, prune_model
from prunecli.version import __version__


def load_scores(path: Path) -> FixedScores:
    check_input(path, f"--scores {path}")
    return FixedScores(load_file(path)[0])


def prune_to_file(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    settings: PruneSettings,
    output: str,
    progress: Progress | None = None,
    format: str = "dense",
    training: TrainingRun | None = None,
) -> Report:
    """Prune ``model`` in place, write it to ``output`` (``format``: dense or bitmask), report."""
    check_format(format, output)
    if isinstance(criterion, TrainingMethod):
        return train_prune_to_file(model, names, criterion, settings, training, output, format)
    report, metadata = prune_loaded(model, names, criterion, settings, progress)
    written = write_model(model, output, metadata, format)
    report.output = output_summary(model, output, written, format, metadata)
    return report


def prune_loaded(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    settings: PruneSettings,
    progress: Progress | None = None,
) -> tuple[Report, dict[str, object]]:
    """Prune ``model`` in place, writing nothing: its report, and the metadata a file of it
    carries (``prunecli.prune`` on a live module stops here)."""
    before = input_cost(model, settings.inputs.input_shape)
    result = prune_model(
        model,
        names,
        criterion,
        settings.sparsity,
        settings.scope,
        settings.iterations,
        settings.schedule,
        settings.seed,
        settings.inputs,
        progress,
        settings.pattern,
    )
    pruning = {
        "method": result.method,
        "target_sparsity": result.target_sparsity,
        "achieved_sparsity": result.achieved_sparsity,
        "scope": result.scope,
        "iterations": result.iterations,
        "schedule": result.schedule,
        "seed": result.seed,
    }
    metadata = {
        "method": result.method,
        "sparsity.target": repr(result.target_sparsity),
        "sparsity.achieved": repr(result.achieved_sparsity),
        "scope": result.scope,
        "iterations": str(result.iterations),
        "schedule": result.schedule,
        "seed": str(result.seed),
        "prunable": names,
        **original_metadata(model, before),
    }
    if result.pattern is not None:
        pruning["pattern"] = str(result.pattern)
        metadata["pattern"] = str(result.pattern)
    report = build_report("prune", model, names, input_shape=settings.inputs.input_shape)
    add_cost(report, model, settings.inputs.input_shape, before)
    report.pruning = pruning
    report.seconds = result.seconds
    report.warnings = result.warnings
    return report, metadata


def score_weights(
    model: LoadedModel, names: list[str], criterion: Criterion, seed: int, inputs: Inputs
) -> dict[str, torch.Tensor]:
    """One score per prunable weight of ``model`` (higher = keep), as contiguous CPU tensors."""
    ctx = ScoreContext(model, names, seed=seed, inputs=inputs)
    scores = criterion.score(ctx)
    check_scores(scores, ctx, criterion.name)
    return {name: scores[name].detach().to("cpu").contiguous() for name in names}


def score_report(model: LoadedModel, names: list[str], inputs: Inputs) -> Report:
    """The report of a `score` run on ``model`` (its prunable ``names``), nothing written."""
    return build_report("score", model, names, input_shape=inputs.input_shape)


def score_to_file(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    seed: int,
    inputs: Inputs,
    output: str,
    scores: dict[str, torch.Tensor],
) -> Report:
    """Write ``scores`` (what :func:`score_weights` computed for ``model``) to ``output``,
    with the method and seed in its metadata; the report."""
    metadata = {
        "format": "pt",
        "prunecli.version": __version__,
        "prunecli.kind": "scores",
        "prunecli.method": criterion.name,
        "prunecli.seed": str(seed),
    }
    written = write_tensors(scores, output, metadata)
    report = score_report(model, names, inputs)
    report.output = {
        "path": output,
        "format": "safetensors",
        "file_bytes": written,
        "kind": "scores",
        "method": criterion.name,
    }
    return report


PLAN_SCHEMA = "prunecli.plan/1"


def plan_document(
    model: LoadedModel, names: list[str], method: str, settings: PruneSettings, streaming: bool
) -> dict[str, object]:
    """What ``prune --dry-run`` shows: which tensors would be pruned and which stay dense."""
    chosen = set(names)

    def entry(name: str) -> dict[str, object]:
        tensor = model.tensors[name]
        return {
            "name": name,
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "params": tensor.numel(),
        }

    return {
        "schema": PLAN_SCHEMA,
        "command": "prune",
        "dry_run": True,
        "model": model.source,
        "method": method,
        "sparsity": settings.sparsity,
        "scope": settings.scope,
        "pattern": str(settings.pattern) if settings.pattern else None,
        "streaming": streaming,
        "prunable": [entry(name) for name in names],
        "dense": [entry(name) for name in model.tensors if name not in chosen],
        "totals": {
            "prunable_params": sum(model.tensors[name].numel() for name in names),
            "all_params": sum(tensor.numel() for tensor in model.tensors.values()),
        },
    }

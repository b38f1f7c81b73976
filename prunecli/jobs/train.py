"""Whole jobs that train: `retrain`, and `prune` with a training method (imp, iht, …)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunecli.criteria.training import MethodResult, TrainingJob, TrainingMethod
from prunecli.data.labelled import Dataset
from prunecli.errors import BadInput
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.report import Report, build_report
from prunecli.jobs.settings import PruneSettings, TrainingRun
from prunecli.jobs.writing import output_summary, write_model
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.allocation import prune_count
from prunecli.pruning.loop import count_zeros
from prunecli.training import distributed
from prunecli.training.hooks import TrainHook
from prunecli.training.loop import train
from prunecli.training.settings import TrainingDiverged, TrainProgress, TrainResult, TrainSettings


def sync_tensors(model: LoadedModel) -> None:
    """Make ``model.tensors`` the module's (CPU) tensors again, in file order."""
    module = model.module
    module.to("cpu")
    state = module.state_dict()
    model.tensors = {name: state[name].detach() for name in state}


def check_trained_finite(model: LoadedModel) -> None:
    for name, tensor in model.tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BadInput(
                f"training left non-finite values in {name!r}; nothing was written",
                "lower --lr",
            )


# --- prune with a training method --------------------------------------------------------


def train_prune_to_file(
    model: LoadedModel,
    names: list[str],
    method: TrainingMethod,
    settings: PruneSettings,
    training: TrainingRun | None,
    output: str,
    format: str = "dense",
) -> Report:
    """Run ``method`` as a whole procedure on ``model``, write the result and its report."""
    if training is None:
        raise BadInput(f"--method {method.name} trains: give --epochs or --steps")
    if settings.scope not in method.scopes:
        raise BadInput(
            f"--method {method.name} does not support --scope {settings.scope}",
            f"it supports: {', '.join(method.scopes)}",
        )
    started = time.perf_counter()
    before = input_cost(model, settings.inputs.input_shape)
    job = TrainingJob(
        model,
        names,
        settings.sparsity,
        training.settings,
        settings.inputs,
        method.resolve_options(training.options),
        settings.scope,
        training.progress,
    )
    try:
        result = method.run(job)
    except TrainingDiverged as exc:
        raise TrainingDiverged(
            f"{exc.message}; nothing was written", exc.hint, exc.result
        ) from None
    _finish(model, names, result)
    total = sum(model.tensors[name].numel() for name in names)
    zeros = count_zeros(model, names)
    rounds = [row.to_json() for row in result.rounds]
    pruning = {
        "method": method.name,
        "target_sparsity": settings.sparsity,
        "achieved_sparsity": zeros / total if total else 0.0,
        "scope": settings.scope,
        "iterations": len(result.rounds),
        "schedule": "training",
        "seed": training.settings.seed,
        "options": job.method_options,
        "rounds": rounds,
    }
    trained = training_summary(training.settings, result.training)
    metadata = {
        "method": method.name,
        "sparsity.target": repr(settings.sparsity),
        "sparsity.achieved": repr(pruning["achieved_sparsity"]),
        "scope": settings.scope,
        "iterations": str(len(result.rounds)),
        "schedule": "training",
        "seed": str(training.settings.seed),
        "prunable": names,
        "rounds": rounds,
        "training": trained,
        **original_metadata(model, before),
    }
    written = write_model(model, output, metadata, format)
    report = build_report("prune", model, names, input_shape=settings.inputs.input_shape)
    add_cost(report, model, settings.inputs.input_shape, before)
    report.pruning = pruning
    report.training = trained
    report.output = output_summary(model, output, written, format, metadata)
    report.seconds = time.perf_counter() - started
    report.warnings = list(result.warnings)
    if zeros != prune_count(settings.sparsity, total) and not result.warnings:
        report.warnings.append(
            f"{zeros / total:.4%} of the prunable weights are zero, not the "
            f"{settings.sparsity:.4%} asked for"
        )
    return report


def _finish(model: LoadedModel, names: list[str], result: MethodResult) -> None:
    module = model.module
    if result.weights is not None:
        module.load_state_dict(dict(result.weights), strict=True)
    with torch.no_grad():
        for name in names:
            param = module.get_parameter(name)
            param.mul_(result.masks[name].to(param.device))
    sync_tensors(model)
    check_trained_finite(model)


def training_summary(settings: TrainSettings, result: TrainResult | None) -> dict[str, Any]:
    """The report's and the metadata's ``training``: settings, history, final test figures."""
    summary: dict[str, Any] = {"settings": settings.to_json()}
    if result is not None:
        summary.update(result.to_json())
    return summary


# --- retrain -----------------------------------------------------------------------------


@dataclass
class RetrainRequest:
    settings: TrainSettings
    data: Dataset
    rewind_to: Path | None = None
    num_classes: int | None = None
    hooks: tuple[TrainHook, ...] = ()
    progress: TrainProgress | None = None


def retrain_to_file(
    model: LoadedModel,
    names: list[str],
    request: RetrainRequest,
    output: str,
    format: str = "dense",
) -> Report | None:
    """Train ``model`` with the mask of its prunable weights held fixed; write it and report.

    On a diverged loss the last good weights (of the last completed epoch) are written and the
    :class:`TrainingDiverged` error is raised again, saying so; a NaN model is never written.
    Under torchrun only rank 0 writes; the other ranks return None.
    """
    from prunecli.training.transfer import replace_head, rewind

    started = time.perf_counter()
    masks = {name: model.tensors[name] != 0 for name in names}
    if request.rewind_to is not None:
        rewind(model, request.rewind_to, masks)
    head = None
    if request.num_classes is not None:
        head = replace_head(model, request.num_classes, request.data, request.settings.seed)
        masks.pop(head, None)  # the new head is dense and trains freely … unless prunable:
        if head in names:
            masks[head] = torch.ones_like(model.module.get_parameter(head), dtype=torch.bool)
    try:
        result = train(
            model.module, masks, request.data, request.settings, request.hooks, request.progress
        )
    except TrainingDiverged as exc:
        sync_tensors(model)
        check_trained_finite(model)
        _write_retrained(model, names, request, exc.result, output, format, head)
        raise TrainingDiverged(
            f"{exc.message}; wrote them to {output}", exc.hint, exc.result
        ) from None
    if not distributed.is_main():
        return None  # under torchrun, rank 0 writes and reports
    sync_tensors(model)
    check_trained_finite(model)
    written = _write_retrained(model, names, request, result, output, format, head)
    report = build_report("retrain", model, names)
    report.training = training_summary(request.settings, result)
    if head is not None:
        report.training["new_head"] = head
    report.output = output_summary(model, output, written, format, {"prunable": names})
    report.seconds = time.perf_counter() - started
    return report


def _write_retrained(
    model: LoadedModel,
    names: list[str],
    request: RetrainRequest,
    result: TrainResult,
    output: str,
    format: str,
    head: str | None,
) -> int:
    summary = training_summary(request.settings, result)
    metadata: dict[str, Any] = {"prunable": names, "training": summary}
    if head is not None:
        metadata["new_head"] = head
    return write_model(model, output, metadata, format)


def masks_of(tensors: Mapping[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
    return {name: tensors[name] != 0 for name in names}

"""`prune --granularity channel|neuron` on a module: groups from its graph, scores, allocation,
shrinking, reconstruction, and the smaller model written with its new widths (docs/structured.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from prunecli.errors import Unsupported
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.prune import plan_document, score_weights
from prunecli.jobs.report import Report, build_report
from prunecli.jobs.settings import PruneSettings
from prunecli.jobs.writing import output_summary, write_model
from prunecli.models.loaded import LoadedModel, copy_module
from prunecli.pruning.criterion import Criterion
from prunecli.pruning.loop import Progress
from prunecli.structure.allocate import allocate, unit_scores
from prunecli.structure.groups import Group
from prunecli.structure.refit import refit_layers
from prunecli.structure.shrink import shrink_module
from prunecli.structure.trace import find_groups
from prunecli.structure.widths import zoo_widths

CALIBRATION_SAMPLES = 256  # reconstruction rows for a labelled data set (its first batches)
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class StructuredRun:
    granularity: str  # channel or neuron
    round_to: int | None = None
    reconstruct: bool = False


def model_groups(
    model: LoadedModel, names: list[str], granularity: str, input_shape: tuple[int, ...] | None
) -> list[Group]:
    """The groups ``prune --granularity`` may remove: traced from the module, those whose
    producers' weights are all prunable (``--include``/``--exclude`` choose), of the kind asked."""
    module = model.require_graph(f"--granularity {granularity}")
    if model.format == "pt2":
        raise Unsupported(
            f"--granularity {granularity} rebuilds layers of a torch.nn module; a .pt2 program's "
            "graph fixes its shapes",
            "prune the safetensors model with --arch, then export the smaller model to .pt2",
        )
    if input_shape is None:
        raise Unsupported(
            f"--granularity {granularity} traces the model on an input; its shape is unknown",
            "pass --input-shape, e.g. --input-shape 3,32,32",
        )
    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    dtype = next((t.dtype for t in model.tensors.values() if t.is_floating_point()), None)
    groups = find_groups(module, example.to(dtype or torch.float32), model.source)
    chosen = set(names)
    groups = [
        g
        for g in groups
        if all(f"{p}.weight" in chosen for p in g.producers)
        and (granularity == "channel" or g.kind == "neuron")
    ]
    if not groups:
        raise Unsupported(
            f"{model.source} has no {granularity} group to remove: every layer's outputs reach "
            "the model's output, a concatenation, a reshape or a normalisation over channels, "
            "or are outside the prunable layers",
            "see docs/structured.md for what the tracer follows",
        )
    return groups


def plan_structured(
    model: LoadedModel, names: list[str], method: str, settings: PruneSettings, run: StructuredRun
) -> dict[str, Any]:
    """``prune --granularity … --dry-run``: the plan, with the groups found."""
    plan = plan_document(model, names, method, settings, False)
    groups = model_groups(model, names, run.granularity, settings.inputs.input_shape)
    plan["granularity"] = run.granularity
    plan["round_to"] = run.round_to
    plan["reconstruct"] = run.reconstruct
    plan["groups"] = [
        {"name": g.name, "kind": g.kind, "size": g.size, "label": g.label, "tensors": len(g.slices)}
        for g in groups
    ]
    return plan


def prune_structured_to_file(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    settings: PruneSettings,
    run: StructuredRun,
    output: str,
    progress: Progress | None = None,
) -> Report:
    """Remove whole channels/neurons of ``model`` (in place), write the smaller model, report."""
    start = time.perf_counter()
    shape = settings.inputs.input_shape
    before = input_cost(model, shape)
    groups = model_groups(model, names, run.granularity, shape)
    scores = score_weights(model, names, criterion, settings.seed, settings.inputs)
    shapes = {name: tuple(t.shape) for name, t in model.tensors.items()}
    allocation = allocate(
        groups,
        unit_scores(groups, scores),
        shapes,
        names,
        settings.sparsity,
        settings.scope,
        run.round_to,
    )
    module = model.module
    dense = copy_module(module) if run.reconstruct else None
    state = shrink_module(module, groups, allocation.kept)
    refit: list[str] = []
    if dense is not None:
        refit = refit_layers(dense, module, groups, allocation.kept, _calibration(settings))
        state = module.state_dict()
    _check_forward(module, shape, model.source)
    model.tensors = {name: state[name] for name in model.tensors}
    if model.arch is not None:
        model.arch.kwargs = zoo_widths(model.arch.name, model.arch.kwargs, module)
    if progress is not None:
        progress(1, 1)
    structure = {
        "granularity": run.granularity,
        "round_to": run.round_to,
        "groups": [
            {
                "name": g.name,
                "kind": g.kind,
                "label": g.label,
                "before": g.size,
                "after": allocation.counts[g.name],
            }
            for g in groups
        ],
        "reconstructed": refit,
        "target_params": allocation.target,
        "removed_params": allocation.removed,
    }
    achieved = allocation.removed / allocation.total if allocation.total else 0.0
    metadata = {
        "method": criterion.name,
        "granularity": run.granularity,
        "sparsity.target": repr(settings.sparsity),
        "sparsity.achieved": repr(achieved),
        "scope": settings.scope,
        "seed": str(settings.seed),
        "prunable": names,
        "structure": {g["name"]: [g["before"], g["after"]] for g in structure["groups"]},
        **original_metadata(model, before),
    }
    if run.round_to:
        metadata["round_to"] = str(run.round_to)
    written = write_model(model, output, metadata, "dense")
    report = build_report("prune", model, names, input_shape=shape)
    add_cost(report, model, shape, before)
    report.pruning = {
        "method": criterion.name,
        "target_sparsity": settings.sparsity,
        "achieved_sparsity": achieved,
        "scope": settings.scope,
        "iterations": 1,
        "schedule": settings.schedule,
        "seed": settings.seed,
        "granularity": run.granularity,
    }
    report.structure = structure
    odd = [g for g in groups if g.kind == "channel" and allocation.counts[g.name] % 8]
    if run.round_to is None and odd:
        report.warnings.append(
            f"{len(odd)} of {len(groups)} groups keep a channel count that is not a multiple "
            "of 8, which CPU convolution kernels (oneDNN, onnxruntime) run slowly: "
            "--round-to 8 keeps the speed-up (docs/structured.md#measured)"
        )
    report.seconds = time.perf_counter() - start
    report.output = output_summary(model, output, written, "dense", metadata)
    return report


def _calibration(settings: PruneSettings) -> Any:  # noqa: ANN401
    data = settings.inputs.data
    count = max(1, min(CALIBRATION_SAMPLES, len(data)) // CALIBRATION_BATCH)

    def batches() -> Any:  # noqa: ANN401
        return (x for x, _ in data.batches(CALIBRATION_BATCH, count, settings.seed))

    return batches


def _check_forward(module: torch.nn.Module, shape: tuple[int, ...], source: str) -> None:
    """The smaller module still runs: a forward that fixes a width in code fails here."""
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    try:
        with torch.no_grad():
            module(torch.zeros((1, *shape), dtype=dtype))
    except Exception as exc:  # noqa: BLE001 - the user's forward, whatever it raises
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unsupported(
            f"{source}: the smaller model does not run ({first}); its forward may fix a width in code",
            "prune with --granularity weight, or --exclude the layers involved",
        ) from None

"""Whole jobs behind `prune` and `score`: one call each from the CLI, usable from Python too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import prunecli
from prunecli.core.model import LoadedModel
from prunecli.core.pruning import FixedScores, Progress, check_scores, prune_model
from prunecli.core.report import Report, build_report
from prunecli.core.writing import write_model, write_tensors
from prunecli.criteria import Criterion, ScoreContext
from prunecli.criteria.base import Inputs
from prunecli.errors import BadInput
from prunecli.io import safetensors as st


@dataclass
class PruneSettings:
    sparsity: float
    scope: str = "global"
    iterations: int | None = None
    schedule: str = "exponential"
    seed: int = 0
    inputs: Inputs = field(default_factory=Inputs)


def load_scores(path: Path) -> FixedScores:
    if not path.is_file():
        raise BadInput(f"--scores {path} does not exist")
    return FixedScores(st.load_file(path)[0])


def prune_to_file(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    settings: PruneSettings,
    output: str,
    progress: Progress | None = None,
) -> Report:
    """Prune ``model`` in place, write it to ``output`` and return the report."""
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
    }
    written = write_model(model, output, metadata)
    report = build_report("prune", model, names, input_shape=settings.inputs.input_shape)
    report.pruning = pruning
    report.output = {
        "path": output,
        "format": "pt2" if output.endswith(".pt2") else "safetensors",
        "file_bytes": written,
    }
    report.seconds = result.seconds
    report.warnings = result.warnings
    return report


def score_to_file(
    model: LoadedModel,
    names: list[str],
    criterion: Criterion,
    seed: int,
    inputs: Inputs,
    output: str,
) -> Report:
    """Score the prunable weights of ``model`` once and write the scores to ``output``."""
    ctx = ScoreContext(model, names, seed=seed, inputs=inputs)
    scores = criterion.score(ctx)
    check_scores(scores, ctx, criterion.name)
    tensors = {name: scores[name].detach().to("cpu").contiguous() for name in names}
    metadata = {
        "format": "pt",
        "prunecli.version": prunecli.__version__,
        "prunecli.kind": "scores",
        "prunecli.method": criterion.name,
        "prunecli.seed": str(seed),
    }
    written = write_tensors(tensors, output, metadata)
    report = build_report("score", model, names, input_shape=inputs.input_shape)
    report.output = {
        "path": output,
        "format": "safetensors",
        "file_bytes": written,
        "kind": "scores",
        "method": criterion.name,
    }
    return report

"""`prunecli prune`: compute masks with a criterion and write the pruned model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output, check_report


@handle_errors
def prune_command(
    model: opt.ModelArg,
    sparsity: Annotated[
        str,
        typer.Option(
            "--sparsity",
            "-s",
            help="Fraction of prunable weights set to zero: 0.9 or 90%.",
            show_default=False,
        ),
    ],
    method: opt.Method = None,
    scores_file: Annotated[
        Path | None,
        typer.Option(
            "--scores", help="Prune from precomputed scores (`prunecli score`).", show_default=False
        ),
    ] = None,
    scope: opt.Scope = "global",
    iterations: opt.Iterations = None,
    schedule: opt.Schedule = "exponential",
    seed: opt.Seed = 0,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    output: opt.Output = None,
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
) -> None:
    """Prune MODEL to --sparsity with --method (or --scores) and write the sparse model.

    The output defaults to MODEL's name with .pruned.safetensors; -o - writes it to stdout
    (the report then goes to stderr).

    Examples:

      prunecli prune model.safetensors --method magnitude --sparsity 0.9

      prunecli prune model.safetensors --method random --sparsity 90% --scope erk --seed 3 -o out.safetensors

      prunecli prune model.safetensors --scores scores.safetensors --sparsity 0.5 --scope layer
    """
    from prunecli.core.allocation import SCOPES
    from prunecli.core.pruning import FixedScores, check_scores, parse_sparsity, prune_model
    from prunecli.core.report import build_report
    from prunecli.core.schedule import SCHEDULES
    from prunecli.core.session import open_model
    from prunecli.core.writing import write_model
    from prunecli.criteria import ScoreContext, get_criterion
    from prunecli.errors import BadInput, Unsupported
    from prunecli.io import safetensors as st
    from prunecli.io.paths import check_output, default_output

    if (method is None) == (scores_file is None):
        raise BadInput("pass exactly one of --method or --scores")
    target = parse_sparsity(sparsity)
    if scope not in SCOPES:
        raise BadInput(f"unknown scope {scope!r}", f"choose one of: {', '.join(SCOPES)}")
    if schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {schedule!r}", f"choose one of: {', '.join(SCHEDULES)}")
    if iterations is not None and iterations < 1:
        raise BadInput(f"--iterations must be at least 1, got {iterations}")
    if scores_file is not None and iterations not in (None, 1):
        raise BadInput("--scores are fixed: they cannot be rescored over --iterations")
    criterion_class = get_criterion(method) if method else None
    output = output or default_output(model)
    if output.endswith(".pt2") and not model.endswith(".pt2"):
        raise Unsupported("a .pt2 output needs a .pt2 input", "write .safetensors instead")
    inputs = [model, str(scores_file) if scores_file else "-"]
    check_output(output, inputs, force)
    check_report(report_file, [*inputs, output], force)

    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    loaded, names = open_model(model, arch, arch_kwargs, include, exclude)
    if criterion_class is not None:
        if criterion_class.needs_graph():
            loaded.require_graph(criterion_class.name)
        criterion = criterion_class()
    else:
        if not scores_file.is_file():
            raise BadInput(f"--scores {scores_file} does not exist")
        scores = st.load_file(scores_file)[0]
        # checked here: a file lacking a prunable tensor's score is bad input, not a crash mid-prune
        check_scores(scores, ScoreContext(loaded, names, seed=seed), f"--scores {scores_file}")
        criterion = FixedScores(scores)
    rounds = iterations or criterion.default_iterations
    with out.progress(f"pruning ({criterion.name})", rounds) as tick:
        result = prune_model(
            loaded, names, criterion, target, scope, iterations, schedule, seed, progress=tick
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
    written = write_model(loaded, output, metadata)
    report = build_report("prune", loaded, names)
    report.pruning = pruning
    report.output = {
        "path": output,
        "format": "safetensors" if not output.endswith(".pt2") else "pt2",
        "file_bytes": written,
    }
    report.seconds = result.seconds
    report.warnings = result.warnings
    out.report(report, report_file)

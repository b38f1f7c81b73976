"""`prunecli score`: write per-weight importance scores, to prune from later with --scores."""

from __future__ import annotations

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output, check_report


@handle_errors
def score_command(
    model: opt.ModelArg,
    method: opt.Method = None,
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
    """Score every prunable weight of MODEL with --method (higher = keep).

    Writes a safetensors file with the prunable tensors' names and shapes (default
    MODEL.scores.safetensors), which `prunecli prune --scores` reads.

    Examples:

      prunecli score model.safetensors --method magnitude -o scores.safetensors

      prunecli prune model.safetensors --scores scores.safetensors --sparsity 0.5
    """
    import prunecli
    from prunecli.core.pruning import check_scores
    from prunecli.core.report import build_report
    from prunecli.core.session import open_model
    from prunecli.core.writing import write_tensors
    from prunecli.criteria import ScoreContext, get_criterion
    from prunecli.errors import BadInput
    from prunecli.io.paths import check_output, default_output

    if method is None:
        raise BadInput("--method is required", "run `prunecli methods` for the list")
    criterion_class = get_criterion(method)
    output = output or default_output(model, ".scores.safetensors")
    check_output(output, [model], force)
    check_report(report_file, [model, output], force)

    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    loaded, names = open_model(model, arch, arch_kwargs, include, exclude)
    if criterion_class.needs_graph():
        loaded.require_graph(method)
    ctx = ScoreContext(loaded, names, seed=seed)
    scores = criterion_class().score(ctx)
    check_scores(scores, ctx, method)
    tensors = {name: scores[name].detach().contiguous() for name in names}
    metadata = {
        "format": "pt",
        "prunecli.version": prunecli.__version__,
        "prunecli.kind": "scores",
        "prunecli.method": method,
        "prunecli.seed": str(seed),
    }
    written = write_tensors(tensors, output, metadata)
    report = build_report("score", loaded, names)
    report.pruning = None
    report.output = {
        "path": output,
        "format": "safetensors",
        "file_bytes": written,
        "kind": "scores",
        "method": method,
    }
    out.report(report, report_file)

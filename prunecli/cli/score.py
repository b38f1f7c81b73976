"""`prunecli score`: write per-weight importance scores, to prune from later with --scores."""

from __future__ import annotations

from prunecli.cli import method_options as mo
from prunecli.cli import options as opt
from prunecli.cli.blocks import check_group
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output
from prunecli.cli.report_files import check_report


@handle_errors
def score_command(
    model: opt.ModelArg,
    method: opt.Method = None,
    seed: opt.PruningSeed = 0,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    input_shape: opt.InputShape = None,
    output: opt.Output = None,
    force: opt.Force = False,
    report_file: opt.ReportFile = None,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    group: opt.Group = None,
    data: opt.Data = None,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "cpu",
    batches: mo.Batches = None,
    temperature: mo.Temperature = None,
    alpha: mo.Alpha = None,
    beta: mo.Beta = None,
    max_p: mo.MaxP = None,
) -> None:
    """Score every prunable weight of MODEL with --method (higher = keep).

    Writes a safetensors file with the prunable tensors' names and shapes (default
    MODEL.scores.safetensors), which `prunecli prune --scores` reads.

    Examples:

      prunecli score model.safetensors --method magnitude -o scores.safetensors

      prunecli prune model.safetensors --scores scores.safetensors --sparsity 0.5
    """
    from prunecli.criteria import get_criterion
    from prunecli.errors import BadInput
    from prunecli.io.paths import default_output
    from prunecli.jobs.prune import score_to_file, score_weights
    from prunecli.jobs.session import check_request, open_model, resolve_inputs
    from prunecli.jobs.validate import check_options, check_score_output, read_paths

    if method is None:
        raise BadInput("--method is required", "run `prunecli methods` for the list")
    options = mo.given_options(locals())
    criterion_class = get_criterion(method)
    check_request(criterion_class, data)
    check_options(criterion_class, options)
    output = output or default_output(model, ".scores.safetensors")
    check_score_output(output, force, read_paths(model, data), check_report(report_file))

    out = Output(json_mode, quiet, data_to_stderr=output == "-", group=check_group(group))
    loaded, names = open_model(
        model, arch, arch_kwargs, include, exclude, trust_remote_code=trust_remote_code
    )
    run_inputs = resolve_inputs(criterion_class, loaded, input_shape, data, device, options)
    criterion = criterion_class()
    scores = score_weights(loaded, names, criterion, seed, run_inputs)
    report = score_to_file(loaded, names, criterion, seed, run_inputs, output, scores)
    out.report(report, report_file)

"""`prunecli export`: a deployable artifact (ONNX, safetensors, pt2), verified before it lands."""

from __future__ import annotations

from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output
from prunecli.cli.report_files import check_report
from prunecli.jobs.validate import read_paths


@handle_errors
def export_command(
    model: opt.ModelArg,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="onnx, safetensors or pt2 (default: from the -o suffix).",
            show_default=False,
        ),
    ] = None,
    output: opt.Output = None,
    format: opt.Format = "dense",
    sparse_initializers: Annotated[
        bool,
        typer.Option(
            "--sparse-initializers",
            help="onnx: store pruned initializers as ONNX sparse_initializer (smaller file).",
        ),
    ] = False,
    opset: Annotated[
        int | None,
        typer.Option(
            "--opset", help="onnx: opset version (default: the exporter's).", show_default=False
        ),
    ] = None,
    input_shape: opt.InputShape = None,
    dynamic_batch: Annotated[
        bool | None,
        typer.Option(
            "--dynamic-batch/--static-batch",
            help="onnx, pt2: the batch dimension is free by default, and fixed at 1 (with a "
            "warning) for a model that fixes it; --dynamic-batch refuses that, --static-batch "
            "fixes it.",
            show_default=False,
        ),
    ] = None,
    atol: Annotated[
        float,
        typer.Option(
            "--atol",
            help="Parity tolerance: max|diff| / max(1, max|output|) must not exceed it.",
        ),
    ] = 1e-4,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the parity run (onnx, pt2).")
    ] = False,
    seed: opt.Seed = 0,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
) -> None:
    """Export MODEL to ONNX, safetensors or a torch.export program, verified before it lands.

    ONNX is written by torch.onnx.export (dynamo), checked with onnx.checker and run in
    onnxruntime on --seed'ed random inputs against the PyTorch module; pt2 is reloaded with
    torch.export.load and run the same way; safetensors is read back bit for bit. When a check
    fails the command exits 1 and writes nothing. Needs the architecture for onnx and pt2.

    Examples:

      prunecli export model.pruned.safetensors --to onnx -o model.onnx

      prunecli export model.pruned.safetensors --to onnx --sparse-initializers -o model.onnx

      prunecli export model.pruned.safetensors --to safetensors --format bitmask -o model.bitmask.safetensors

      prunecli export model.pruned.safetensors --to pt2 -o model.pt2

      prunecli prune m.safetensors -m magnitude -s 0.9 -o - | prunecli export - --to onnx -o m.onnx
    """
    import math

    from prunecli.errors import BadInput, CheckFailed
    from prunecli.io.paths import Target, check_outputs
    from prunecli.jobs.export import default_export_output, export_to_file, target_of
    from prunecli.jobs.export_formats import ExportSettings
    from prunecli.jobs.session import check_input_shape, open_model, parse_input_shape
    from prunecli.jobs.writing import check_format

    target = target_of(to, output)
    if not (math.isfinite(atol) and atol >= 0):
        raise BadInput(f"--atol {atol} must be a finite number >= 0")
    if sparse_initializers and target != "onnx":
        raise BadInput("--sparse-initializers applies to --to onnx only")
    if opset is not None and target != "onnx":
        raise BadInput("--opset applies to --to onnx only")
    if format != "dense" and target != "safetensors":
        raise BadInput(f"--format {format} applies to --to safetensors only")
    if dynamic_batch is not None and target == "safetensors":
        flag = "--dynamic-batch" if dynamic_batch else "--static-batch"
        raise BadInput(f"{flag} applies to --to onnx and pt2 only")
    settings = ExportSettings(
        to=target,
        input_shape=parse_input_shape(input_shape),
        opset=opset,
        dynamic_batch=dynamic_batch,
        sparse_initializers=sparse_initializers,
        format=format,
        atol=atol,
        verify=not no_verify,
        seed=seed,
    )
    output = output or default_export_output(model, settings)
    if target == "safetensors":
        check_format(format, output)
    check_outputs(read_paths(model), [Target(output), *check_report(report_file)], force)

    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    loaded, names = open_model(model, arch, arch_kwargs, trust_remote_code=trust_remote_code)
    check_input_shape(loaded, settings.input_shape, input_shape)
    report = export_to_file(loaded, names, settings, output)
    out.report(report, report_file)
    if json_mode:  # the human report shows its warnings; a JSON one is for a program
        for warning in report.warnings:
            out.warn(warning)
    failed = [check for check in report.checks if not check.passed]
    if failed:
        raise CheckFailed(f"{failed[0].name} check failed: {failed[0].message}")

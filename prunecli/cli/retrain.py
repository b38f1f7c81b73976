"""`prunecli retrain`: train a (pruned) model with its mask held fixed."""

from __future__ import annotations

from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli import train_options as to
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output
from prunecli.cli.report_files import check_report
from prunecli.jobs.validate import read_paths

NEQ = "Neurons at equilibrium (NEq)"


@handle_errors
def retrain_command(
    model: opt.ModelArg,
    data: opt.Data = None,
    eval_data: opt.EvalData = None,
    batch_size: opt.BatchSize = None,
    epochs: to.Epochs = None,
    steps: to.Steps = None,
    lr: to.Lr = to.DEFAULT_LR,
    optimizer: to.Optimizer = to.DEFAULT_OPTIMIZER,
    momentum: to.Momentum = 0.9,
    weight_decay: to.WeightDecay = 0.0,
    lr_schedule: to.LrSchedule = "constant",
    val_fraction: to.ValFraction = None,
    rewind_to: to.RewindTo = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            "--num-classes",
            max=opt.MAX_CLASSES,
            help="Replace the classifier head (the last Linear layer) with a fresh one of N "
            "outputs, for transfer to another task.",
            show_default=False,
            rich_help_panel=opt.TRAINING,
        ),
    ] = None,
    neq: Annotated[
        bool,
        typer.Option(
            "--neq", help="Neurons at equilibrium (NEq) get no update.", rich_help_panel=NEQ
        ),
    ] = False,
    neq_eps: Annotated[
        float,
        typer.Option(
            "--neq-eps", help="NEq: velocity below which a neuron is frozen.", rich_help_panel=NEQ
        ),
    ] = 1e-3,
    neq_mu: Annotated[
        float, typer.Option("--neq-mu", help="NEq: velocity momentum.", rich_help_panel=NEQ)
    ] = 0.5,
    seed: opt.Seed = 0,
    device: opt.Device = "cpu",
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    output: opt.Output = None,
    format: opt.Format = "dense",
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
) -> None:
    """Train MODEL on --data; every pruned (zero) prunable weight stays exactly zero.

    Give --epochs or --steps. The test split of the data (or --val-fraction of it) is evaluated
    after every epoch; the history goes into the report and the output's metadata. The output
    defaults to MODEL's name with .retrained.safetensors.

    Examples:

      prunecli retrain ticket.safetensors --data mnist1d --epochs 20 -o trained.safetensors

      prunecli retrain dense-init.safetensors --data mnist1d --steps 1500 --lr 0.02 --optimizer adam -o dense.safetensors

      prunecli retrain pruned.safetensors --rewind-to init.safetensors --data mnist1d --steps 1500

      prunecli retrain trained.safetensors --data other.npz --num-classes 5 -o transferred.safetensors

      prunecli retrain model.safetensors --data mnist1d --epochs 30 --neq --neq-eps 1e-3

      prunecli retrain pruned.safetensors --data digits --epochs 5 --eval digits
    """
    from prunecli.data.labelled import check_fits
    from prunecli.data.sources import load_data
    from prunecli.errors import BadInput
    from prunecli.io.paths import Target, check_outputs, default_output
    from prunecli.jobs.quality import add_quality, eval_reads, measure_before
    from prunecli.jobs.session import open_model
    from prunecli.jobs.train import RetrainRequest, retrain_to_file
    from prunecli.jobs.writing import check_format

    if data is None:
        raise BadInput("retrain needs labelled data: pass --data", "e.g. --data mnist1d")
    settings = opt.gather(to.TrainOptions, locals()).settings()
    if num_classes is not None and num_classes < 1:
        raise BadInput(f"--num-classes must be at least 1, got {num_classes}")
    hooks = _neq_hooks(neq, neq_eps, neq_mu)
    output = output or default_output(model, ".retrained.safetensors")
    if output.endswith((".pt2", ".onnx")):
        raise BadInput("retrain writes safetensors", "name the output *.safetensors")
    check_format(format, output)
    if eval_data is not None and num_classes is not None:
        raise BadInput(
            "--eval compares the model before and after; --num-classes gives it another head",
            f"run `prunecli eval OUTPUT --data {eval_data}` after the retrain",
        )
    targets = [Target(output), *check_report(report_file)]
    check_outputs(
        read_paths(model, data, rewind_to=rewind_to) + eval_reads(eval_data), targets, force
    )

    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    loaded, names = open_model(
        model, arch, arch_kwargs, include, exclude, trust_remote_code=trust_remote_code
    )
    module = loaded.require_graph("retrain")
    baseline = measure_before(loaded, eval_data, "retrain", device, trust_remote_code)
    dataset = load_data(data)
    shape = loaded.arch.input_shape if loaded.arch else None
    check_fits(dataset, module, shape, settings.batch_size, check_labels=num_classes is None)
    if num_classes is not None and dataset.num_classes > num_classes:
        raise BadInput(
            f"--data {data} has {dataset.num_classes} classes, more than --num-classes {num_classes}"
        )
    total = settings.steps or settings.epochs * max(len(dataset) // settings.batch_size, 1)
    with out.progress("training", total) as tick:
        request = RetrainRequest(settings, dataset, rewind_to, num_classes, hooks, tick)
        report = retrain_to_file(loaded, names, request, output, format)
    if report is not None:  # None on the other ranks under torchrun
        add_quality(report, loaded, baseline)
        out.report(report, report_file)


def _neq_hooks(neq: bool, eps: float, mu: float) -> tuple:
    if not neq:
        return ()
    from prunecli.training.neq import NeqHook

    return (NeqHook(eps, mu),)

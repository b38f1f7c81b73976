"""`prunecli prune`: compute masks with a criterion and write the pruned model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.blocks import Group, check_group
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output, read_paths, render_plan
from prunecli.cli.report_files import check_report


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
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    output: opt.Output = None,
    format: opt.Format = "dense",
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
    group: Group = None,
    input_shape: opt.InputShape = None,
    data: opt.Data = None,
    batches: opt.Batches = None,
    batch_size: opt.BatchSize = None,
    alpha: opt.Alpha = None,
    beta: opt.Beta = None,
    max_p: opt.MaxP = None,
    temperature: opt.Temperature = None,
    device: opt.Device = "cpu",
    epochs: opt.Epochs = None,
    steps: opt.Steps = None,
    lr: opt.Lr = opt.DEFAULT_LR,
    optimizer: opt.Optimizer = opt.DEFAULT_OPTIMIZER,
    momentum: opt.Momentum = 0.9,
    weight_decay: opt.WeightDecay = 0.0,
    lr_schedule: opt.LrSchedule = "constant",
    val_fraction: opt.ValFraction = None,
    rewind_to: opt.RewindTo = None,
    rewind_step: opt.RewindStep = None,
    rate: opt.Rate = None,
    keep_best: opt.KeepBest = False,
    last_layer: opt.LastLayer = None,
    dry_run: opt.DryRun = False,
    progress: opt.ShowProgress = False,
    project_every: opt.ProjectEvery = None,
    iht_steps: opt.IhtSteps = None,
    bingo_fraction: opt.BingoFraction = None,
    bingo_every: opt.BingoEvery = None,
    starts: opt.Starts = None,
    warmup_epochs: opt.WarmupEpochs = None,
    fitness: opt.Fitness = None,
    gamma: opt.Gamma = None,
    dissipate_epochs: opt.DissipateEpochs = None,
    start_sparsity: opt.StartSparsity = None,
) -> None:
    """Prune MODEL to --sparsity with --method (or --scores) and write the sparse model.

    The output defaults to MODEL's name with .pruned.safetensors; -o - writes it to stdout
    (the report then goes to stderr). --format bitmask stores the pruned weights as a packed
    bitmask and their non-zero values (docs/formats.md), so the file shrinks with sparsity.

    Examples:

      prunecli prune model.safetensors --method magnitude --sparsity 0.9

      prunecli prune model.safetensors --method random --sparsity 90% --scope erk --seed 3 -o out.safetensors

      prunecli prune model.safetensors --scores scores.safetensors --sparsity 0.5 --scope layer

      prunecli prune model.safetensors --method magnitude --sparsity 0.9 --format bitmask

      prunecli prune init.safetensors --method iht --sparsity 0.9 --project-every 10 --data mnist1d --steps 1500

      prunecli prune init.safetensors --method kstarts+dissipating --sparsity 0.9 --starts 4 --gamma 0.5 --data mnist1d --epochs 40

      prunecli prune dense.safetensors --method imp --sparsity 0.92 --rate 0.2 --rewind-to init.safetensors --data mnist1d --steps 1500 --lr 0.02

      prunecli prune ./llama-like/ --method magnitude --sparsity 0.5 -o ./llama-like-50/ --dry-run
    """
    from prunecli.criteria import get_criterion
    from prunecli.errors import BadInput, Unsupported
    from prunecli.io.checkpoint import check_folder_output, is_folder
    from prunecli.io.paths import Target, check_outputs, default_output
    from prunecli.jobs.prune import (
        PruneSettings,
        TrainingRun,
        load_scores,
        plan_document,
        prune_to_file,
    )
    from prunecli.jobs.session import check_request, open_model, resolve_inputs
    from prunecli.jobs.stream import streamable
    from prunecli.jobs.writing import check_format
    from prunecli.pruning.allocation import SCOPES
    from prunecli.pruning.loop import parse_sparsity
    from prunecli.pruning.schedule import SCHEDULES

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
    training = None
    trains = criterion_class is not None and criterion_class.trains()
    training_only = {
        "--epochs": epochs,
        "--steps": steps,
        "--rewind-to": rewind_to,
        "--rewind-step": rewind_step,
        "--rate": rate,
        "--keep-best": keep_best or None,
        "--last-layer": last_layer,
        "--project-every": project_every,
        "--iht-steps": iht_steps,
        "--bingo-fraction": bingo_fraction,
        "--bingo-every": bingo_every,
        "--starts": starts,
        "--warmup-epochs": warmup_epochs,
        "--fitness": fitness,
        "--gamma": gamma,
        "--dissipate-epochs": dissipate_epochs,
        "--start-sparsity": start_sparsity,
    }
    given = [flag for flag, value in training_only.items() if value is not None]
    if given and not trains:
        raise BadInput(
            f"{given[0]} is an option of a training method: training methods are imp, iht, "
            "bingo, kstarts and dissipating",
            "to train a pruned model use `prunecli retrain`",
        )
    if trains and iterations is not None:
        raise BadInput(f"--method {method} sets its own rounds; drop --iterations")
    if criterion_class is not None:
        check_request(criterion_class, data, training=True)
    if trains:
        settings = opt.train_settings(
            epochs,
            steps,
            batch_size,
            lr,
            optimizer,
            momentum,
            weight_decay,
            lr_schedule,
            seed,
            device,
            val_fraction,
        )
        training = TrainingRun(settings)
    output = output or default_output(model)
    if output.endswith(".pt2") and not model.endswith(".pt2"):
        raise Unsupported("a .pt2 output needs a .pt2 input", "write .safetensors instead")
    check_format(format, output)
    folder = is_folder(model)
    if folder and not dry_run:
        check_folder_output(output, model)
    targets = [] if dry_run else [Target(output, folder=folder)]
    targets += check_report(report_file, curve=training is not None)
    reads = read_paths(model, data, scores=scores_file, rewind_to=rewind_to)
    check_outputs(reads, targets, force)

    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    out.group = check_group(group)
    plain = scores_file is None and iterations in (None, 1) and device == "cpu"
    checkpoint = streamable(model, method, arch, output, plain)
    if checkpoint is not None and method is not None:
        _stream(
            checkpoint,
            method,
            PruneSettings(target, scope, 1, schedule, seed),
            output,
            format,
            include,
            exclude,
            dry_run,
            progress,
            out,
            report_file,
        )
        return
    loaded, names = open_model(
        model, arch, arch_kwargs, include, exclude, trust_remote_code=trust_remote_code
    )
    if dry_run:
        plan = plan_document(loaded, names, method or "scores", PruneSettings(target, scope), False)
        out.document(plan, lambda console: render_plan(console, plan))
        return
    criterion = criterion_class() if criterion_class else load_scores(scores_file)
    options = opt.method_options(
        batches=batches,
        batch_size=batch_size,
        alpha=alpha,
        beta=beta,
        max_p=max_p,
        temperature=temperature,
        rewind_to=str(rewind_to) if rewind_to else None,
        rewind_step=rewind_step,
        rate=rate,
        keep_best=keep_best or None,
        last_layer=last_layer,
        project_every=project_every,
        iht_steps=iht_steps,
        bingo_fraction=bingo_fraction,
        bingo_every=bingo_every,
        starts=starts,
        warmup_epochs=warmup_epochs,
        fitness=fitness,
        gamma=gamma,
        dissipate_epochs=dissipate_epochs,
        start_sparsity=start_sparsity,
    )
    run_inputs = resolve_inputs(
        type(criterion), loaded, input_shape, data, device, options, training=True
    )
    settings = PruneSettings(target, scope, iterations, schedule, seed, run_inputs)
    rounds = iterations or criterion.default_iterations
    with out.progress(f"pruning ({criterion.name})", rounds) as tick:
        if training is not None:
            training.options, training.progress = options, tick
        report = prune_to_file(loaded, names, criterion, settings, output, tick, format, training)
    out.report(report, report_file)


def _stream(
    checkpoint,
    method,
    settings,
    output,
    format,
    include,
    exclude,
    dry_run,
    progress,
    out,
    report_file,
) -> None:  # noqa: ANN001 - a private step of prune_command
    """Prune a checkpoint chunk by chunk (magnitude, random): memory bounded by a few chunks."""
    from prunecli.jobs.prune import plan_document
    from prunecli.jobs.stream import lazy_model, stream_prune_to_file
    from prunecli.pruning.prunable import select_prunable

    lazy = lazy_model(checkpoint)
    names = select_prunable(lazy, include or (), exclude or ())
    if dry_run:
        plan = plan_document(lazy, names, method, settings, True)
        out.document(plan, lambda console: render_plan(console, plan))
        return
    prunable = sum(lazy.tensors[name].numel() * lazy.tensors[name].element_size() for name in names)
    total = prunable + sum(t.numel() * t.element_size() for t in lazy.tensors.values())
    done = 0
    with out.progress(f"pruning ({method})", total, force=progress) as tick:

        def advance(nbytes: int) -> None:
            nonlocal done
            done += nbytes
            tick(done, max(total, done))

        report = stream_prune_to_file(checkpoint, names, method, settings, output, format, advance)
    out.report(report, report_file)

"""`prunecli sweep`: methods × sparsities × seeds from one model, on equal terms."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prunecli.cli import options as opt
from prunecli.cli import train_options as to
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output

SWEEP = "Sweep"


@handle_errors
def sweep_command(
    model: opt.ModelArg,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated methods to compare, e.g. magnitude,random,snip,synflow.",
            rich_help_panel=SWEEP,
        ),
    ],
    sparsities: Annotated[
        str,
        typer.Option(
            "--sparsities",
            help="Comma-separated sparsities in [0, 1) (or percentages) and N:M patterns, "
            "e.g. 0.5,0.9,0.98 or 0.5,0.7,2:4.",
            rich_help_panel=SWEEP,
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labelled data (.npz/.safetensors with x,y; image folder; module:callable; "
            "mnist1d; digits); for a transformers folder, the text perplexity is measured on.",
            show_default=False,
            rich_help_panel=opt.DATA,
        ),
    ] = None,
    seeds: Annotated[
        str,
        typer.Option(
            "--seeds",
            help="Comma-separated seeds; each (method, sparsity) runs once per seed "
            "(pruning and retraining seed).",
            rich_help_panel=SWEEP,
        ),
    ] = "0",
    retrain_steps: Annotated[
        int,
        typer.Option(
            "--retrain-steps",
            min=0,
            max=opt.MAX_STEPS,
            help="Retrain every pruned model this many steps with its mask fixed (0: none).",
            rich_help_panel=SWEEP,
        ),
    ] = 0,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            max=256,
            help="Run in N processes (one thread each); the figures are the same as with 1.",
            rich_help_panel=SWEEP,
        ),
    ] = 1,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            help="Draw the metric (accuracy, perplexity) against sparsity, one line per method: "
            ".png, .svg or .pdf.",
            show_default=False,
            rich_help_panel=opt.OUTPUT,
        ),
    ] = None,
    scope: opt.Scope = "global",
    calibration: Annotated[
        str | None,
        typer.Option(
            "--calibration",
            help="A transformers folder: the text wanda and sparsegpt calibrate on "
            "(default: --data).",
            show_default=False,
            rich_help_panel=opt.DATA,
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            help="A transformers folder: calibration windows for wanda and sparsegpt "
            "(default 128).",
            show_default=False,
            rich_help_panel=opt.DATA,
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            help="A transformers folder: tokens per calibration and evaluation window "
            "(default min(2048, the model's positions)).",
            show_default=False,
            rich_help_panel=opt.DATA,
        ),
    ] = None,
    device: opt.Device = "cpu",
    lr: to.Lr = to.DEFAULT_LR,
    optimizer: to.Optimizer = to.DEFAULT_OPTIMIZER,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=opt.MAX_BATCH_SIZE,
            help="Examples per batch (default 128 for scoring, 100 for retraining); a "
            "transformers folder: windows per evaluation pass (default 1).",
            show_default=False,
            rich_help_panel=opt.DATA,
        ),
    ] = None,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    input_shape: opt.InputShape = None,
    output: opt.Output = None,
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Compare pruning methods: prune MODEL with each of --methods to each of --sparsities
    (once per seed of --seeds), optionally retrain with the mask fixed, evaluate on --data.

    Every run starts from the same MODEL. A one-shot method is scored once per seed and every
    sparsity's mask is selected from those scores; an iterative one (synflow) is pruned afresh
    per sparsity. The figures are those of `prunecli prune` + `retrain` + `eval` run with the
    same arguments. The table shows the test accuracy, mean ± std over the seeds; -o writes
    every run as JSON (prunecli.sweep/1).

    MODEL a causal LM's Hugging Face folder: magnitude, random, wanda and sparsegpt compared
    by perplexity on the text --data, each run as `prunecli prune` writes it (wanda and
    sparsegpt calibrated on --calibration, default --data) and `prunecli eval` measures it.

    Examples:

      prunecli sweep model.safetensors --methods magnitude,random,snip,synflow --sparsities 0.5,0.8,0.9,0.95,0.98 --data digits --retrain-steps 500 --seeds 0,1 -o sweep.json --plot sweep.png

      prunecli sweep init.safetensors --methods synflow,random --sparsities 0.9,0.99 --data mnist1d --jobs 4

      prunecli sweep ./llama/ --methods magnitude,wanda,sparsegpt --sparsities 0.5,0.7 --data heldout.txt --calibration train.txt
    """
    from prunecli.cli.prune_calibrated import refuse_flags
    from prunecli.errors import BadInput
    from prunecli.jobs.session import check_device
    from prunecli.jobs.sweep import (
        SweepRequest,
        check_scope,
        check_sweep_outputs,
        open_sweep,
        parse_methods,
        parse_seeds,
        parse_sparsities,
        run_sweep,
    )
    from prunecli.jobs.sweep_lm import (
        LMSweepRequest,
        check_lm_sweep,
        is_language_model_folder,
        run_lm_sweep,
    )
    from prunecli.jobs.validate import read_paths

    criteria = parse_methods(methods)
    levels, patterns = parse_sparsities(sparsities)
    seed_list = parse_seeds(seeds)
    runs = len(criteria) * (len(levels) + len(patterns)) * len(seed_list)
    grid: dict[str, Any] = {  # what both kinds of sweep take
        "model": model,
        "methods": tuple(criteria),
        "sparsities": levels,
        "patterns": patterns,
        "seeds": seed_list,
        "scope": scope,
        "include": tuple(include or ()),
        "exclude": tuple(exclude or ()),
        "trust_remote_code": trust_remote_code,
    }
    if is_language_model_folder(model):
        refuse_flags(
            {"--retrain-steps": retrain_steps, "--jobs": jobs > 1, "--arch": arch,
             "--arch-kwargs": arch_kwargs, "--input-shape": input_shape},
            f"{model} is a transformers folder, pruned and measured by perplexity one run at "
            "a time",
        )  # fmt: skip
        if data is None:
            raise BadInput("sweep measures perplexity on text: pass --data", "e.g. heldout.txt")
        request = LMSweepRequest(
            **grid,
            data=data,
            calibration=calibration,
            samples=samples,
            seq_len=seq_len,
            batch_size=batch_size,
            device=check_device(device),
        )
        reads = read_paths(model, data, calibration=calibration)
        check_sweep_outputs(reads, output, plot, force)
        check_lm_sweep(request, criteria)
        out = Output(json_mode, quiet, data_to_stderr=output == "-")
        with out.progress("sweep", runs) as tick:
            document = run_lm_sweep(request, criteria, tick)
        _finish(out, document, output, plot)
        return
    refuse_flags(
        {"--calibration": calibration, "--samples": samples, "--seq-len": seq_len,
         "--device": device != "cpu"},
        f"{model} is a classifier, swept on the CPU by accuracy",
    )  # fmt: skip
    check_scope(criteria, scope)
    if data is None:
        raise BadInput("sweep evaluates on labelled data: pass --data", "e.g. --data digits")
    retrain = None
    if retrain_steps > 0:
        retrain = opt.gather(
            to.TrainOptions,
            {
                **dict.fromkeys(("epochs", "val_fraction"), None),
                "steps": retrain_steps,
                "batch_size": batch_size,
                "lr": lr,
                "optimizer": optimizer,
                "momentum": 0.9,
                "weight_decay": 0.0,
                "lr_schedule": "constant",
                "seed": 0,
                "device": "cpu",
            },
        ).settings()
    check_sweep_outputs(read_paths(model, data), output, plot, force)
    request = SweepRequest(
        **grid,
        data=data,
        retrain=retrain,
        arch=arch,
        arch_kwargs=arch_kwargs,
        input_shape=input_shape,
        jobs=jobs,
    )
    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    opened = open_sweep(request)
    with out.progress("sweep", runs) as tick:
        document = run_sweep(request, opened, tick)
    _finish(out, document, output, plot)


def _finish(out: Output, document: dict[str, Any], output: str | None, plot: str | None) -> None:
    """Write the document and the plot, then show the table (or the JSON)."""
    from prunecli.jobs.sweep import write_sweep

    write_sweep(document, output, plot)
    out.document(document, lambda console: render_sweep(console, document))


def render_sweep(console: Console, document: dict[str, Any]) -> None:
    """Rows: methods; columns: sparsities; cells: the metric's mean ± std over the seeds
    (accuracy in %, perplexity as it is)."""
    settings = document["settings"]
    seeds = len(settings["seeds"])
    steps = settings["retrain_steps"]
    accuracy = document["metric"] == "accuracy"
    dense = document["dense"][document["metric"]]
    what = "test accuracy (%)" if accuracy else "perplexity"
    retrained = f"after {steps} retraining steps" if steps else "no retraining"
    console.print(
        f"{document['model']} on {document['data']}: {what}, mean ± std over {seeds} "
        f"seed{'s' if seeds != 1 else ''}, {retrained} "
        f"(dense: {f'{dense:.2%}' if accuracy else f'{dense:.2f}'})",
        markup=False,
        highlight=False,
    )
    table = Table(show_edge=False)
    width = max(map(len, settings["methods"]))
    table.add_column("method", no_wrap=True, min_width=width)
    patterns = settings.get("patterns", [])
    levels = [(s, None) for s in settings["sparsities"]] + [(0.0, p) for p in patterns]
    for sparsity, pattern in levels:
        table.add_column(pattern or f"{sparsity:.4g}", justify="right")
    cells = {
        (row["method"], row.get("pattern") or row["sparsity"]): row for row in document["summary"]
    }
    for method in settings["methods"]:
        row = [method]
        for sparsity, pattern in levels:
            found = cells.get((method, pattern or sparsity))
            row.append("" if found is None else _cell(found, accuracy))
        table.add_row(*row)
    console.print(table)


def _cell(found: dict[str, Any], accuracy: bool) -> str:
    if accuracy:
        return f"{found['mean'] * 100:.1f} ± {found['std'] * 100:.1f}"
    return f"{found['mean']:.2f} ± {found['std']:.2f}"

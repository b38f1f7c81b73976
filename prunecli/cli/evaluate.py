"""`prunecli eval`: accuracy, perplexity, similarity to a reference and latency of a model."""

from __future__ import annotations

from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output
from prunecli.cli.report_files import check_report

EVAL = "Evaluation"


@handle_errors
def eval_command(
    model: opt.ModelArg,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labelled data for a classifier (digits, mnist1d, x/y .npz, …); text (.txt, "
            ".jsonl) or token ids (.npz, .safetensors) for a transformer.",
            show_default=False,
            rich_help_panel=EVAL,
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="accuracy, perplexity or similarity (default: what fits the model).",
            show_default=False,
            rich_help_panel=EVAL,
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="The dense model to compare with: mean cosine of outputs, top-1 agreement.",
            show_default=False,
            rich_help_panel=EVAL,
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            help="Tokens per window (default min(2048, the model's positions); latency: 128).",
            show_default=False,
            rich_help_panel=EVAL,
        ),
    ] = None,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency", help="Time forward passes: median and spread.", rich_help_panel=EVAL
        ),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=opt.MAX_BATCH_SIZE,
            help="Samples per forward pass (default 1000 samples, 1 window; latency: 1).",
            show_default=False,
            rich_help_panel=EVAL,
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option("--repeats", help="Timed passes of --latency.", rich_help_panel=EVAL),
    ] = 20,
    device: opt.Device = "cpu",
    input_shape: opt.InputShape = None,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
    force: opt.Force = False,
) -> None:
    """Evaluate MODEL: accuracy of a classifier, perplexity of a causal language model,
    similarity to a --reference model, measured --latency; with parameters and MACs.

    The metric follows the model (--metric picks one): a classifier's top-1 accuracy and mean
    cross-entropy on the test split of --data (all of it when there is none); a causal LM's
    perplexity over non-overlapping windows of --seq-len tokens of --data (the Wanda and
    SparseGPT protocol); with --reference, the mean cosine between the two models' outputs and
    their top-1 agreement. Every figure states its protocol (docs/evaluation.md).

    Examples:

      prunecli eval mlp-digits.pruned.safetensors --data digits

      prunecli eval ./llama-50/ --data heldout.txt --seq-len 512

      prunecli eval ./bert-50/ --reference ./bert/ --data sentences.txt

      prunecli eval vgg16-slim.safetensors --latency --batch-size 32
    """
    from prunecli.io.paths import check_outputs
    from prunecli.jobs.evaluate import (
        EvalRequest,
        check_request,
        evaluate_model,
        require_runnable,
    )
    from prunecli.jobs.session import check_device, open_model, parse_input_shape
    from prunecli.jobs.validate import read_paths

    request = EvalRequest(
        data=data,
        metric=metric,
        reference=reference,
        latency=latency,
        batch_size=batch_size,
        repeats=repeats,
        seq_len=seq_len,
        device=device,
        input_shape=parse_input_shape(input_shape),
        trust_remote_code=trust_remote_code,
    )
    check_request(request)
    check_device(device)
    check_outputs(read_paths(model, data, reference=reference), check_report(report_file), force)
    out = Output(json_mode, quiet)
    loaded, names = open_model(
        model, arch, arch_kwargs, check_weights=False, trust_remote_code=trust_remote_code
    )
    require_runnable(loaded, "eval")
    dense = None
    if reference is not None:
        dense, _ = open_model(
            reference, arch, arch_kwargs, check_weights=False, trust_remote_code=trust_remote_code
        )
        require_runnable(dense, "eval --reference")
    with out.progress("evaluating", 0) as tick:
        request.progress = tick
        report = evaluate_model(loaded, names, request, dense)
    out.report(report, report_file)

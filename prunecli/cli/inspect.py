"""`prunecli inspect`: per-layer and total sparsity and topology, with CI gates."""

from __future__ import annotations

from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.blocks import check_group
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output
from prunecli.cli.report_files import check_report
from prunecli.jobs.validate import read_paths


@handle_errors
def inspect_command(
    model: opt.ModelArg,
    min_sparsity: Annotated[
        str | None,
        typer.Option(
            "--min-sparsity",
            help="Exit 1 if prunable sparsity is below this (0.9 or 90%).",
            show_default=False,
        ),
    ] = None,
    max_collapsed: Annotated[
        int | None,
        typer.Option(
            "--max-collapsed",
            min=0,
            help="Exit 1 if more than N layers collapsed (needs the architecture).",
            show_default=False,
        ),
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            "--pattern",
            help="Exit 1 if a group of M weights of a prunable layer holds more than N "
            "non-zeros (N:M, e.g. 2:4).",
            show_default=False,
        ),
    ] = None,
    max_macs: Annotated[
        str | None,
        typer.Option(
            "--max-macs",
            help="Exit 1 if one forward pass takes more than N multiply-accumulates "
            "(e.g. 300M, 1.5G; needs the architecture).",
            show_default=False,
        ),
    ] = None,
    max_params: Annotated[
        str | None,
        typer.Option(
            "--max-params",
            help="Exit 1 if the model stores more than N values (e.g. 1.2M).",
            show_default=False,
        ),
    ] = None,
    all_tensors: Annotated[
        bool,
        typer.Option(
            "--all",
            help="List every tensor, not only prunable ones, one row each (--group tensor).",
        ),
    ] = False,
    group: opt.Group = None,
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    input_shape: opt.InputShape = None,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    report_file: opt.ReportFile = None,
    force: opt.Force = False,
) -> None:
    """Show per-layer and total sparsity and topology of MODEL; gate CI pipelines on them.

    Topology (effective paths, effective sparsity, effective nodes, collapsed layers) is shown
    whenever the architecture is known: from the file's metadata, --arch, or a .pt2 program.

    Parameters and MACs (multiply-accumulates of one forward pass on one sample, counted from
    the graph; a Hugging Face model on 128 tokens, or --input-shape L) are shown with their ratio
    to the original when `prune` recorded it.

    Rows follow the model's order. A model of many repeated blocks (a transformer) gets one row
    per block and a summary by tensor type; --group tensor or --all lists every tensor.

    Examples:

      prunecli inspect model.safetensors

      prunecli inspect model.safetensors --json

      prunecli inspect model.safetensors --min-sparsity 0.9

      prunecli inspect vgg16.pruned.safetensors --max-collapsed 0

      prunecli inspect ./llama-24/ --pattern 2:4

      prunecli inspect vgg16-slim.safetensors --max-macs 150M

      prunecli inspect ./llama-like/ --json

      prunecli inspect ./bert-like/ --group tensor
    """
    from prunecli.io.paths import check_outputs
    from prunecli.jobs.cost import add_cost
    from prunecli.jobs.gates import parse_count
    from prunecli.jobs.report import build_report
    from prunecli.jobs.session import check_input_shape, open_model, parse_input_shape
    from prunecli.jobs.stream import lazy_model, stream_inspect, streamable, tensor_reader
    from prunecli.pruning.prunable import select_prunable
    from prunecli.structure.nm import parse_pattern

    check_outputs(read_paths(model), check_report(report_file), force)
    if pattern is not None:
        parse_pattern(pattern)  # refused before anything is read
    limits = {"max-macs": max_macs, "max-params": max_params}
    for flag, text in limits.items():
        if text is not None:
            parse_count(text, f"--{flag}")
    shape = parse_input_shape(input_shape)
    out = Output(json_mode, quiet, group=check_group(group, all_tensors))
    checkpoint = None if max_collapsed is not None else streamable(model, None, arch, None)
    if checkpoint is not None:  # headers first; every tensor counted chunk by chunk
        lazy = lazy_model(checkpoint)
        names = select_prunable(lazy, include or (), exclude or ())
        report = stream_inspect(checkpoint, list(lazy.tensors) if all_tensors else names)
        if pattern is not None:
            report.checks.append(_pattern_check(report, pattern, names, tensor_reader(checkpoint)))
        add_cost(report, lazy, shape, trust_remote_code=trust_remote_code)
        _gate(report, min_sparsity, None, out, report_file, limits)
        return
    loaded, names = open_model(
        model,
        arch,
        arch_kwargs,
        include,
        exclude,
        check_weights=False,
        trust_remote_code=trust_remote_code,
    )
    check_input_shape(loaded, shape, input_shape)
    if max_collapsed is not None:
        loaded.require_graph("--max-collapsed")
    prunable = names
    if all_tensors:
        names = list(loaded.tensors)
    report = build_report("inspect", loaded, names, prunable, shape)
    if pattern is not None:
        report.checks.append(_pattern_check(report, pattern, prunable, loaded.tensors.__getitem__))
    add_cost(report, loaded, shape, trust_remote_code=trust_remote_code)
    _gate(report, min_sparsity, max_collapsed, out, report_file, limits)


def _pattern_check(report, text, prunable, tensor):  # noqa: ANN001, ANN202
    """The pattern gate over the prunable layers only (``--all`` lists more rows)."""
    from dataclasses import replace

    from prunecli.jobs.gates import pattern_check

    chosen = set(prunable)
    layers = [layer for layer in report.layers if layer.name in chosen]
    view = replace(report, layers=layers)
    check = pattern_check(view, text, tensor)
    report.pattern = view.pattern
    return check


def _gate(report, min_sparsity, max_collapsed, out, report_file, limits) -> None:  # noqa: ANN001
    """Add the asked-for checks, print the report, and fail when a check did not pass."""
    from prunecli.errors import CheckFailed
    from prunecli.jobs.gates import (
        max_collapsed_check,
        max_macs_check,
        max_params_check,
        min_sparsity_check,
    )

    if min_sparsity is not None:
        report.checks.append(min_sparsity_check(report, min_sparsity))
    if max_collapsed is not None:
        report.checks.append(max_collapsed_check(report, max_collapsed))
    if limits["max-params"] is not None:
        report.checks.append(max_params_check(report, limits["max-params"]))
    if limits["max-macs"] is not None:
        report.checks.append(max_macs_check(report, limits["max-macs"]))
    out.report(report, report_file)
    failed = [check for check in report.checks if not check.passed]
    if failed:
        raise CheckFailed(failed[0].message)

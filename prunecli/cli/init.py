"""`prunecli init`: a freshly initialised model of a known architecture, for pruning at init."""

from __future__ import annotations

from typing import Annotated

import typer

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output


@handle_errors
def init_command(
    arch: Annotated[
        str,
        typer.Argument(
            help="A zoo name (mlp, lenet300, lenet5, conv2/4/6, vgg11/16/19, resnet20/32/56, resnet18) or pkg.module:factory.",
            show_default=False,
        ),
    ],
    arch_kwargs: opt.ArchKwargs = None,
    seed: opt.Seed = 0,
    output: opt.Output = None,
    force: opt.Force = False,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Write a freshly initialised ARCH as safetensors, its architecture in the metadata.

    The output defaults to ARCH.safetensors. The same --seed gives the same weights, so the
    file can serve as the rewind point of a lottery ticket (`prune --method imp --rewind-to`).

    Examples:

      prunecli init vgg16 -o vgg16-init.safetensors

      prunecli init mlp --arch-kwargs '{"widths":[40,100,100,10]}' -o mlp.safetensors
    """
    import torch

    from prunecli.errors import BadInput
    from prunecli.io.paths import Target, check_outputs
    from prunecli.jobs.report import build_report
    from prunecli.jobs.writing import write_model
    from prunecli.models.loaded import Architecture, LoadedModel, build_module, parse_arch_kwargs
    from prunecli.pruning.prunable import default_prunable

    if not -(2**63) <= seed < 2**64:  # torch.manual_seed's range; beyond it torch fails late
        raise BadInput(f"--seed {seed} is out of range", "use a 64-bit integer")
    output = output or f"{arch.replace(':', '_').replace('.', '_')}.safetensors"
    check_outputs([], [Target(output)], force)
    out = Output(json_mode, quiet, data_to_stderr=output == "-")
    architecture = Architecture(arch, parse_arch_kwargs(arch_kwargs))
    torch.manual_seed(seed)
    module = build_module(architecture)
    tensors = dict(module.state_dict())
    model = LoadedModel(tensors, {}, arch, "safetensors", None, module, architecture)
    written = write_model(model, output, {"seed": str(seed), "init": "true"})
    model.source, model.file_bytes = output, written
    report = build_report("init", model, default_prunable(model))
    report.output = {"path": output, "format": "safetensors", "file_bytes": written}
    out.report(report)

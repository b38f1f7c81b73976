"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model file (.safetensors, .pt2, .onnx), a folder (sharded or Hugging Face), "
        "or - for stdin.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
ReportFile = Annotated[
    Path | None,
    typer.Option(
        "--report", help="Also save the report: .json, .md, .svg or .html.", show_default=False
    ),
]
Arch = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Architecture: a zoo name (see `prunecli init --help`) or pkg.module:factory.",
        show_default=False,
    ),
]
ArchKwargs = Annotated[
    str | None,
    typer.Option(
        "--arch-kwargs",
        help="JSON keyword arguments for --arch, e.g. '{\"widths\":[40,100,10]}'.",
        show_default=False,
    ),
]
Include = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Prune only tensors matching this glob (re: for a regex). Repeatable.",
        show_default=False,
    ),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Never prune tensors matching this glob (re: for a regex). Repeatable.",
        show_default=False,
    ),
]
Output = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Output path, or - for stdout.", show_default=False),
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="Safetensors layout: dense, or bitmask (packed bitmask + non-zero values, smaller "
        "when sparse; every prunecli command reads it).",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Show which tensors would be pruned; write nothing."),
]
ShowProgress = Annotated[
    bool,
    typer.Option(
        "--progress",
        help="Show a progress bar over bytes on stderr even when it is not a terminal.",
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]
Method = Annotated[
    str | None,
    typer.Option(
        "--method", "-m", help="Pruning criterion (see `prunecli methods`).", show_default=False
    ),
]
Scope = Annotated[str, typer.Option("--scope", help="Allocation: global, layer or erk.")]
Iterations = Annotated[
    int | None,
    typer.Option(
        "--iterations",
        help="Prune in K rounds, rescoring each round (default: the method's).",
        show_default=False,
    ),
]
Schedule = Annotated[
    str, typer.Option("--schedule", help="Density schedule over rounds: exponential or linear.")
]
InputShape = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Model input without the batch, e.g. 3,32,32 (default: from the zoo, metadata or .pt2).",
        show_default=False,
    ),
]
Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Labelled data: .npz/.safetensors with x,y; image folder; module:callable; mnist1d; digits.",
        show_default=False,
    ),
]
Batches = Annotated[
    int | None,
    typer.Option(
        "--batches",
        help="Labelled batches a data criterion scores on (default 1).",
        show_default=False,
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option("--batch-size", help="Examples per batch (default 128).", show_default=False),
]
Temperature = Annotated[
    float | None,
    typer.Option(
        "--temperature", help="grasp: logits are divided by T (default 200).", show_default=False
    ),
]
Device = Annotated[str, typer.Option("--device", help="Where tensors are computed: cpu or cuda.")]
Alpha = Annotated[
    float | None,
    typer.Option(
        "--alpha",
        help="npb: weight of active nodes against paths (default 0.01).",
        show_default=False,
    ),
]
Beta = Annotated[
    float | None,
    typer.Option(
        "--beta", help="npb: weight of distinct kernel connections (default 1).", show_default=False
    ),
]
MaxP = Annotated[
    int | None,
    typer.Option(
        "--max-p",
        help="npb: most entries kept per kernel (default: kernel area).",
        show_default=False,
    ),
]


def method_options(**values: object) -> dict[str, object]:
    """The method options given on the command line (unset ones are left to the method)."""
    return {name: value for name, value in values.items() if value is not None}

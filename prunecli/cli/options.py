"""Options shared by several commands, declared once, each in its help panel.

The training options are in ``cli/train_options.py``, the options of one method family in
``cli/method_options.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from prunecli.cli.blocks import AUTO_ROWS

T = TypeVar("T")

# Upper bounds of the counts (docs/commands.md, "Limits"): each far above any real run (the
# benchmarks use at most 100 rounds, 40 epochs, 1,500 steps), low enough that a typo such as
# --epochs 1000000000 is refused at once (exit 2, naming the limit) instead of running for ever.
MAX_ITERATIONS = 10_000
MAX_EPOCHS = 100_000
MAX_STEPS = 100_000_000
MAX_BATCHES = 100_000
MAX_BATCH_SIZE = 10_000_000
MAX_STARTS = 1_000
MAX_IHT_STEPS = 1_000
MAX_CLASSES = 1_000_000

# The help panels (`--help` groups the options under these titles, in the order first used)
WHAT = "What and how much"
ALLOCATION = "Allocation and schedule"
MODEL = "Model"
OUTPUT = "Output"
DATA = "Data and device"
TRAINING = "Training"

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model file (.safetensors, .pt2, .onnx), a folder (sharded or Hugging Face), "
        "or - for stdin.",
        show_default=False,
    ),
]

# --- what and how much -------------------------------------------------------------------
Sparsity = Annotated[
    str | None,
    typer.Option(
        "--sparsity",
        "-s",
        help="Fraction of prunable weights set to zero: 0.9 or 90%.",
        show_default=False,
        rich_help_panel=WHAT,
    ),
]
Pattern = Annotated[
    str | None,
    typer.Option(
        "--pattern",
        help="N:M sparsity, e.g. 2:4: keep N of every M consecutive weights of each row "
        "(sets --sparsity to (M-N)/M).",
        show_default=False,
        rich_help_panel=WHAT,
    ),
]
Granularity = Annotated[
    str,
    typer.Option(
        "--granularity",
        help="What is removed: single weights (weight), or whole conv channels / Linear "
        "neurons (channel), FFN neurons (neuron) or attention heads (head), rebuilding "
        "smaller layers (docs/structured.md).",
        rich_help_panel=WHAT,
    ),
]
RoundTo = Annotated[
    int | None,
    typer.Option(
        "--round-to",
        help="Structured pruning: keep each layer's channel/neuron count a multiple of K.",
        show_default=False,
        rich_help_panel=ALLOCATION,
    ),
]
Reconstruct = Annotated[
    bool | None,
    typer.Option(
        "--reconstruct/--no-reconstruct",
        help="Structured pruning: refit the layers that read removed structures by ridge "
        "least squares on --data (default: on when --data is given).",
        show_default=False,
        rich_help_panel=ALLOCATION,
    ),
]
Method = Annotated[
    str | None,
    typer.Option(
        "--method",
        "-m",
        help="Pruning criterion (see `prunecli methods`).",
        show_default=False,
        rich_help_panel=WHAT,
    ),
]
Scores = Annotated[
    Path | None,
    typer.Option(
        "--scores",
        help="Prune from precomputed scores (`prunecli score`).",
        show_default=False,
        rich_help_panel=WHAT,
    ),
]
SEED_HELP = "Seed for every random choice."
Seed = Annotated[int, typer.Option("--seed", help=SEED_HELP)]  # in the command's own options
PruningSeed = Annotated[int, typer.Option("--seed", help=SEED_HELP, rich_help_panel=WHAT)]
# --- allocation and schedule -------------------------------------------------------------
Scope = Annotated[
    str,
    typer.Option(
        "--scope",
        help="Allocation: global, layer, erk, row, or owl (wanda/sparsegpt: per-block sparsity).",
        rich_help_panel=ALLOCATION,
    ),
]
Iterations = Annotated[
    int | None,
    typer.Option(
        "--iterations",
        max=MAX_ITERATIONS,
        help="Prune in K rounds, rescoring each round (default: the method's).",
        show_default=False,
        rich_help_panel=ALLOCATION,
    ),
]
Schedule = Annotated[
    str,
    typer.Option(
        "--schedule",
        help="Density schedule over rounds: exponential or linear.",
        rich_help_panel=ALLOCATION,
    ),
]

# --- the model ---------------------------------------------------------------------------
Arch = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Architecture: a zoo name (see `prunecli init --help`) or pkg.module:factory.",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
ArchKwargs = Annotated[
    str | None,
    typer.Option(
        "--arch-kwargs",
        help="JSON keyword arguments for --arch, e.g. '{\"widths\":[40,100,10]}'.",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Run the Python code a Hugging Face folder names in its config.json (auto_map) to "
        "build the model. Only for folders you trust: that code runs with your rights.",
        rich_help_panel=MODEL,
    ),
]
Include = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Prune only tensors matching this glob (re: for a regex). Repeatable.",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Never prune tensors matching this glob (re: for a regex). Repeatable.",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]

InputShape = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Model input without the batch, e.g. 3,32,32 (default: from the zoo, metadata or .pt2).",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]

# --- output ------------------------------------------------------------------------------
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Output path, or - for stdout.",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="Safetensors layout: dense, or bitmask (packed bitmask + non-zero values, smaller "
        "when sparse; every prunecli command reads it).",
        rich_help_panel=OUTPUT,
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace an existing output (a file, or a folder prunecli wrote).",
        rich_help_panel=OUTPUT,
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Show which tensors would be pruned; write nothing.",
        rich_help_panel=OUTPUT,
    ),
]
ReportFile = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also save the report: .json, .md, .svg or .html.",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout.", rich_help_panel=OUTPUT),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print nothing but errors.", rich_help_panel=OUTPUT),
]
ShowProgress = Annotated[
    bool,
    typer.Option(
        "--progress",
        help="Show a progress bar over bytes on stderr even when it is not a terminal.",
        rich_help_panel=OUTPUT,
    ),
]
Group = Annotated[
    str | None,
    typer.Option(
        "--group",
        help="Layer rows: block (one per repeated block, plus a summary by type), tensor (one "
        f"per tensor) or auto (block above {AUTO_ROWS} tensors). --json lists every tensor.",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]

# --- data and device ---------------------------------------------------------------------
Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Labelled data: .npz/.safetensors with x,y; image folder; module:callable; mnist1d; digits.",
        show_default=False,
        rich_help_panel=DATA,
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        max=MAX_BATCH_SIZE,
        help="Examples per batch (default 128 for scoring, 100 for training).",
        show_default=False,
        rich_help_panel=DATA,
    ),
]
EvalData = Annotated[
    str | None,
    typer.Option(
        "--eval",
        help="Measure the metric `prunecli eval` would (accuracy, perplexity) on this data, "
        "on the input model and on the result: before, after and the difference.",
        show_default=False,
        rich_help_panel=DATA,
    ),
]
Device = Annotated[
    str,
    typer.Option("--device", help="Where tensors are computed: cpu or cuda.", rich_help_panel=DATA),
]
# calibrated methods (wanda, sparsegpt): windows of the --data text (prunecli/calibration/data.py)
Samples = Annotated[
    int | None,
    typer.Option(
        "--samples",
        help="Calibration windows drawn from --data (wanda, sparsegpt; default 128).",
        show_default=False,
        rich_help_panel=DATA,
    ),
]
SeqLen = Annotated[
    int | None,
    typer.Option(
        "--seq-len",
        help="Tokens per calibration window (default min(2048, the model's positions)).",
        show_default=False,
        rich_help_panel=DATA,
    ),
]


def gather(record: type[T], values: Mapping[str, Any]) -> T:
    """``record`` (a dataclass) from a command's parameters of the same names."""
    return record(**{field.name: values[field.name] for field in fields(record)})

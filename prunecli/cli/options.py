"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Run the Python code a Hugging Face folder names in its config.json (auto_map) to "
        "build the model. Only for folders you trust: that code runs with your rights.",
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
Force = Annotated[
    bool,
    typer.Option(
        "--force", help="Replace an existing output (a file, or a folder prunecli wrote)."
    ),
]
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
        max=MAX_ITERATIONS,
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
        max=MAX_BATCHES,
        help="Labelled batches a data criterion scores on (default 1).",
        show_default=False,
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        max=MAX_BATCH_SIZE,
        help="Examples per batch (default 128 for scoring, 100 for training).",
        show_default=False,
    ),
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


# --- training (retrain, and the training methods of prune) ---------------------------------
Epochs = Annotated[
    int | None,
    typer.Option(
        "--epochs", max=MAX_EPOCHS, help="Train for N passes over the data.", show_default=False
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps",
        max=MAX_STEPS,
        help="Train for N optimizer steps (instead of --epochs).",
        show_default=False,
    ),
]
Lr = Annotated[float, typer.Option("--lr", help="Learning rate.")]
Optimizer = Annotated[str, typer.Option("--optimizer", help="sgd, adam or adamw.")]
Momentum = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
WeightDecay = Annotated[
    float, typer.Option("--weight-decay", help="Weight decay (L2; decoupled for adamw).")
]
LrSchedule = Annotated[
    str, typer.Option("--lr-schedule", help="constant or cosine (to 0 at the end).")
]
ValFraction = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Hold out this fraction of the samples for evaluation (default: the data's test "
        "split; none when it has none).",
        show_default=False,
    ),
]
RewindTo = Annotated[
    Path | None,
    typer.Option(
        "--rewind-to",
        help="Reset the surviving weights to those of this file (e.g. the init) first.",
        show_default=False,
    ),
]
RewindStep = Annotated[
    int | None,
    typer.Option(
        "--rewind-step",
        max=MAX_STEPS,
        help="imp: rewind to the weights after K training steps (late rewinding).",
        show_default=False,
    ),
]
Rate = Annotated[
    float | None,
    typer.Option(
        "--rate",
        help="imp: fraction of the surviving weights pruned per round (default 0.2).",
        show_default=False,
    ),
]
KeepBest = Annotated[
    bool, typer.Option("--keep-best", help="imp: keep the round with the best test accuracy.")
]
LastLayer = Annotated[
    str | None,
    typer.Option(
        "--last-layer",
        help="imp: the output layer is pruned at half rate (half, the default), at the same "
        "rate (same), or left dense (dense).",
        show_default=False,
    ),
]

DEFAULT_LR = 1e-3
DEFAULT_OPTIMIZER = "adam"
DEFAULT_TRAIN_BATCH = 100


def train_settings(
    epochs: int | None,
    steps: int | None,
    batch_size: int | None,
    lr: float,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    lr_schedule: str,
    seed: int,
    device: str,
    val_fraction: float | None,
):  # -> prunecli.training.settings.TrainSettings (imported lazily: torch)
    """The training settings from the shared options, checked (BadInput when impossible)."""
    from prunecli.jobs.session import check_device
    from prunecli.training.settings import TrainSettings

    settings = TrainSettings(
        epochs=epochs,
        steps=steps,
        batch_size=batch_size or DEFAULT_TRAIN_BATCH,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        seed=seed,
        device=check_device(device),
        val_fraction=val_fraction,
    )
    settings.check()
    return settings


def method_options(**values: object) -> dict[str, object]:
    """The method options given on the command line (unset ones are left to the method)."""
    return {name: value for name, value in values.items() if value is not None}


# --- iht, bingo, kstarts, dissipating (prune --method …) -----------------------------------
ProjectEvery = Annotated[
    int | None,
    typer.Option(
        "--project-every",
        help="iht: project onto the top-k |θ| every N steps (default 10).",
        show_default=False,
    ),
]
IhtSteps = Annotated[
    int | None,
    typer.Option(
        "--iht-steps",
        max=MAX_IHT_STEPS,
        help="iht: extra backtracked gradient steps on a changed support (default 2).",
        show_default=False,
    ),
]
BingoFraction = Annotated[
    float | None,
    typer.Option(
        "--bingo-fraction",
        help="bingo: fraction of a tensor's live weights zeroed per probe (default 0.01).",
        show_default=False,
    ),
]
BingoEvery = Annotated[
    int | None,
    typer.Option(
        "--bingo-every", help="bingo: probe every N training steps (default 1).", show_default=False
    ),
]
Starts = Annotated[
    int | None,
    typer.Option(
        "--starts",
        max=MAX_STARTS,
        help="kstarts: number K of random masks tried (default 4).",
        show_default=False,
    ),
]
WarmupEpochs = Annotated[
    int | None,
    typer.Option(
        "--warmup-epochs",
        max=MAX_EPOCHS,
        help="kstarts: epochs each random mask trains before the fittest is chosen (default 1).",
        show_default=False,
    ),
]
Fitness = Annotated[
    str | None,
    typer.Option(
        "--fitness",
        help="kstarts: magnitude, gradient or both (default both).",
        show_default=False,
    ),
]
Gamma = Annotated[
    float | None,
    typer.Option(
        "--gamma",
        help="dissipating: prune weights with |w − w0| ≤ γ|w0| (default 0.5).",
        show_default=False,
    ),
]
DissipateEpochs = Annotated[
    int | None,
    typer.Option(
        "--dissipate-epochs",
        max=MAX_EPOCHS,
        help="dissipating: the first N epochs in which weights are pruned (default 2).",
        show_default=False,
    ),
]
StartSparsity = Annotated[
    float | None,
    typer.Option(
        "--start-sparsity",
        help="kstarts+dissipating: sparsity of the K random masks (default 1 − √(1 − S)).",
        show_default=False,
    ),
]

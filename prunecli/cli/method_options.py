"""The options of one method family, each in its family's help panel. The one table that checks
them is jobs/validate.py: a method takes the options its criterion class declares
(``Criterion.options``); any other method option is refused before anything is loaded (exit 2)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from prunecli.cli.options import MAX_BATCHES, MAX_EPOCHS, MAX_IHT_STEPS, MAX_STARTS, MAX_STEPS
from prunecli.cli.train_options import rewind_to
from prunecli.jobs.validate import method_option_names

SNIP_GRASP = "SNIP / GraSP"
NPB = "NPB (node-path balancing)"
IMP = "Lottery tickets (imp)"
TRAINED = "IHT / BiNGO / k-starts / dissipating"
SPARSEGPT = "SparseGPT"
OWL = "OWL (--scope owl: wanda, sparsegpt)"

# --- snip, grasp ---------------------------------------------------------------------------
Batches = Annotated[
    int | None,
    typer.Option(
        "--batches",
        max=MAX_BATCHES,
        help="Labelled batches a data criterion scores on (default 1).",
        show_default=False,
        rich_help_panel=SNIP_GRASP,
    ),
]
Temperature = Annotated[
    float | None,
    typer.Option(
        "--temperature",
        help="grasp: logits are divided by T (default 200).",
        show_default=False,
        rich_help_panel=SNIP_GRASP,
    ),
]

# --- sparsegpt -----------------------------------------------------------------------------
Dampening = Annotated[
    float | None,
    typer.Option(
        "--dampening",
        help="sparsegpt: added to the Hessian's diagonal, times its mean (default 0.01).",
        show_default=False,
        rich_help_panel=SPARSEGPT,
    ),
]

# --- wanda, sparsegpt with --scope owl ------------------------------------------------------
OwlLambda = Annotated[
    float | None,
    typer.Option(
        "--owl-lambda",
        help="Each block's sparsity within 2λ of the target (default 0.08).",
        show_default=False,
        rich_help_panel=OWL,
    ),
]
OwlM = Annotated[
    float | None,
    typer.Option(
        "--owl-m",
        help="A score is an outlier above M × the block's mean score (default 5).",
        show_default=False,
        rich_help_panel=OWL,
    ),
]

# --- npb -----------------------------------------------------------------------------------
Alpha = Annotated[
    float | None,
    typer.Option(
        "--alpha",
        help="npb: weight of active nodes against paths (default 0.01).",
        show_default=False,
        rich_help_panel=NPB,
    ),
]
Beta = Annotated[
    float | None,
    typer.Option(
        "--beta",
        help="npb: weight of distinct kernel connections (default 1).",
        show_default=False,
        rich_help_panel=NPB,
    ),
]
MaxP = Annotated[
    int | None,
    typer.Option(
        "--max-p",
        help="npb: most entries kept per kernel (default: kernel area).",
        show_default=False,
        rich_help_panel=NPB,
    ),
]

# --- imp -----------------------------------------------------------------------------------
RewindTo = rewind_to(IMP)
RewindStep = Annotated[
    int | None,
    typer.Option(
        "--rewind-step",
        max=MAX_STEPS,
        help="imp: rewind to the weights after K training steps (late rewinding).",
        show_default=False,
        rich_help_panel=IMP,
    ),
]
Rate = Annotated[
    float | None,
    typer.Option(
        "--rate",
        help="imp: fraction of the surviving weights pruned per round (default 0.2).",
        show_default=False,
        rich_help_panel=IMP,
    ),
]
KeepBest = Annotated[
    bool,
    typer.Option(
        "--keep-best",
        help="imp: keep the round with the best test accuracy.",
        rich_help_panel=IMP,
    ),
]
LastLayer = Annotated[
    str | None,
    typer.Option(
        "--last-layer",
        help="imp: the output layer is pruned at half rate (half, the default), at the same "
        "rate (same), or left dense (dense).",
        show_default=False,
        rich_help_panel=IMP,
    ),
]

# --- iht, bingo, kstarts, dissipating ------------------------------------------------------
ProjectEvery = Annotated[
    int | None,
    typer.Option(
        "--project-every",
        help="iht: project onto the top-k |θ| every N steps (default 10).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
IhtSteps = Annotated[
    int | None,
    typer.Option(
        "--iht-steps",
        max=MAX_IHT_STEPS,
        help="iht: extra backtracked gradient steps on a changed support (default 2).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
BingoFraction = Annotated[
    float | None,
    typer.Option(
        "--bingo-fraction",
        help="bingo: fraction of a tensor's live weights zeroed per probe (default 0.01).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
BingoEvery = Annotated[
    int | None,
    typer.Option(
        "--bingo-every",
        help="bingo: probe every N training steps (default 1).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
Starts = Annotated[
    int | None,
    typer.Option(
        "--starts",
        max=MAX_STARTS,
        help="kstarts: number K of random masks tried (default 4).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
WarmupEpochs = Annotated[
    int | None,
    typer.Option(
        "--warmup-epochs",
        max=MAX_EPOCHS,
        help="kstarts: epochs each random mask trains before the fittest is chosen (default 1).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
Fitness = Annotated[
    str | None,
    typer.Option(
        "--fitness",
        help="kstarts: magnitude, gradient or both (default both).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
Gamma = Annotated[
    float | None,
    typer.Option(
        "--gamma",
        help="dissipating: prune weights with |w − w0| ≤ γ|w0| (default 0.5).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
DissipateEpochs = Annotated[
    int | None,
    typer.Option(
        "--dissipate-epochs",
        max=MAX_EPOCHS,
        help="dissipating: the first N epochs in which weights are pruned (default 2).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]
StartSparsity = Annotated[
    float | None,
    typer.Option(
        "--start-sparsity",
        help="kstarts+dissipating: sparsity of the K random masks (default 1 − √(1 − S)).",
        show_default=False,
        rich_help_panel=TRAINED,
    ),
]


def given_options(values: Mapping[str, object]) -> dict[str, object]:
    """The method options a command was given (unset ones are left to the method); a path as
    its text."""
    return {
        name: str(value) if isinstance(value, Path) else value
        for name in method_option_names()
        if (value := values.get(name)) is not None and value is not False
    }

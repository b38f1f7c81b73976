"""The training options of `retrain`, and of `prune` with a training method (imp, iht, …)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prunecli.cli.options import MAX_EPOCHS, MAX_STEPS, TRAINING

if TYPE_CHECKING:
    from prunecli.training.settings import TrainSettings

DEFAULT_LR = 1e-3
DEFAULT_OPTIMIZER = "adam"
DEFAULT_TRAIN_BATCH = 100

Epochs = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        max=MAX_EPOCHS,
        help="Train for N passes over the data.",
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps",
        max=MAX_STEPS,
        help="Train for N optimizer steps (instead of --epochs).",
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]
Lr = Annotated[float, typer.Option("--lr", help="Learning rate.", rich_help_panel=TRAINING)]
Optimizer = Annotated[
    str, typer.Option("--optimizer", help="sgd, adam or adamw.", rich_help_panel=TRAINING)
]
Momentum = Annotated[
    float, typer.Option("--momentum", help="SGD momentum.", rich_help_panel=TRAINING)
]
WeightDecay = Annotated[
    float,
    typer.Option(
        "--weight-decay",
        help="Weight decay (L2; decoupled for adamw).",
        rich_help_panel=TRAINING,
    ),
]
LrSchedule = Annotated[
    str,
    typer.Option(
        "--lr-schedule",
        help="constant or cosine (to 0 at the end).",
        rich_help_panel=TRAINING,
    ),
]
ValFraction = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Hold out this fraction of the samples for evaluation (default: the data's test "
        "split; none when it has none).",
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]


def rewind_to(panel: str) -> Any:
    """``--rewind-to`` in the help panel ``panel``: Training in `retrain`, imp's in `prune`."""
    return Annotated[
        Path | None,
        typer.Option(
            "--rewind-to",
            help="Reset the surviving weights to those of this file (e.g. the init) first.",
            show_default=False,
            rich_help_panel=panel,
        ),
    ]


RewindTo = rewind_to(TRAINING)


@dataclass(frozen=True)
class TrainOptions:
    """The training options as given on the command line."""

    epochs: int | None
    steps: int | None
    batch_size: int | None
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    lr_schedule: str
    val_fraction: float | None
    seed: int
    device: str

    def settings(self) -> TrainSettings:
        """The training settings, checked (BadInput when impossible)."""
        from prunecli.jobs.session import check_device
        from prunecli.training.settings import TrainSettings

        settings = TrainSettings(
            epochs=self.epochs,
            steps=self.steps,
            batch_size=self.batch_size or DEFAULT_TRAIN_BATCH,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule,
            seed=self.seed,
            device=check_device(self.device),
            val_fraction=self.val_fraction,
        )
        settings.check()
        return settings

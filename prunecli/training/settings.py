"""What training takes and gives back: :class:`TrainSettings` (checked before anything is
loaded), the progress callback, :class:`TrainResult` with one :class:`EpochRecord` per epoch, and
:class:`TrainingDiverged`. The loop itself is training/loop.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prunecli.errors import BadInput

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")

#: called after every step with (steps done, total steps, {"loss": ..., "accuracy": ...})
TrainProgress = Callable[[int, int, dict[str, float]], None]


class TrainingDiverged(BadInput):
    """The loss became NaN or infinite: the module holds the last good weights again (exit 2)."""

    def __init__(self, message: str, hint: str | None, result: TrainResult) -> None:
        super().__init__(message, hint)
        self.result = result


@dataclass
class TrainSettings:
    """How to train. Exactly one of ``epochs`` and ``steps``; an epoch is ``N // batch_size``
    steps (the last partial batch is dropped, as :meth:`Dataset.batches` does)."""

    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    seed: int = 0
    device: str = "cpu"
    val_fraction: float | None = None  # held out of x, y when the data has no test split
    eval_every: int = 1  # epochs between test evaluations (the last one is always evaluated)

    def check(self) -> None:
        """BadInput for settings that cannot train (before anything is loaded)."""
        if (self.epochs is None) == (self.steps is None):
            raise BadInput("pass exactly one of --epochs or --steps")
        for flag, value in (("--epochs", self.epochs), ("--steps", self.steps)):
            if value is not None and value < 1:
                raise BadInput(f"{flag} must be at least 1, got {value}")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BadInput(f"--lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(
                f"unknown --optimizer {self.optimizer!r}", f"choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise BadInput(
                f"unknown --lr-schedule {self.lr_schedule!r}",
                f"choose one of: {', '.join(LR_SCHEDULES)}",
            )
        if not 0 <= self.momentum < 1:
            raise BadInput(f"--momentum must be in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise BadInput(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise BadInput(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.eval_every < 1:
            raise BadInput(f"eval_every must be at least 1, got {self.eval_every}")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EpochRecord:
    """One row of the history: the epoch's mean training loss/accuracy and the test figures."""

    epoch: int  # 1-based; a final partial epoch (``--steps``) gets its own row
    step: int  # steps done at the end of this epoch
    train_loss: float
    train_accuracy: float
    test_loss: float | None = None
    test_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what hooks add (NEq: frozen fraction)

    def to_json(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**row, **self.extra}


@dataclass
class TrainResult:
    history: list[EpochRecord]
    steps: int
    seconds: float
    test_loss: float | None  # of the final weights (None when there is no test split)
    test_accuracy: float | None
    stopped: str | None = None  # why training ended early (a hook's ``stop``), if it did
    summaries: dict[str, Any] = field(default_factory=dict)  # hook key → its summary()

    @property
    def best_test_accuracy(self) -> float | None:
        """The best of the test evaluations (the history's and the final weights')."""
        seen = [r.test_accuracy for r in self.history if r.test_accuracy is not None]
        if self.test_accuracy is not None:
            seen.append(self.test_accuracy)
        return max(seen, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summaries,
            "steps": self.steps,
            "seconds": self.seconds,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "stopped": self.stopped,
            "history": [record.to_json() for record in self.history],
        }

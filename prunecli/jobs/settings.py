"""What a prune job is asked to do: the settings every path (in memory, streamed, training) shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prunecli.pruning.criterion import Inputs
from prunecli.training.settings import TrainProgress, TrainSettings

if TYPE_CHECKING:
    from prunecli.structure.nm import Pattern


@dataclass
class PruneSettings:
    sparsity: float
    scope: str = "global"
    iterations: int | None = None
    schedule: str = "exponential"
    seed: int = 0
    inputs: Inputs = field(default_factory=Inputs)
    pattern: Pattern | None = None  # --pattern N:M: M − N of every group of M (structure/nm.py)


@dataclass
class TrainingRun:
    """What ``prune`` adds for a training method: how to train, and the method's options."""

    settings: TrainSettings
    options: dict[str, object] = field(default_factory=dict)
    progress: TrainProgress | None = None

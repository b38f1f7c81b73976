"""How methods act during training (training/loop.py): a :class:`TrainHook` sees and may change
the :class:`TrainState`. The loop calls the hooks in a fixed order each step (backward →
``after_backward`` → optimizer step → masking → ``on_step_end``) and ``on_epoch_end`` after each
epoch's evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunecli.data.labelled import Dataset
from prunecli.training.settings import TrainSettings


@dataclass
class TrainState:
    """What hooks see and may change. Replacing or shrinking ``masks`` is allowed at any hook;
    the loop zeroes the newly masked weights (and their optimizer state) right after."""

    module: nn.Module
    masks: dict[str, torch.Tensor]
    params: dict[str, nn.Parameter]
    optimizer: torch.optim.Optimizer
    settings: TrainSettings
    data: Dataset  # the training split
    total_steps: int
    steps_per_epoch: int
    step: int = 0  # steps done
    epoch: int = 0  # 1-based epoch in progress
    batch: tuple[torch.Tensor, torch.Tensor] | None = None  # on the device
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    record: dict[str, Any] = field(default_factory=dict)  # extras for this epoch's history row
    stop: bool = False
    stop_reason: str | None = None
    network: nn.Module | None = None  # what the loop calls: the module, or its DDP wrapper
    # float copies of the masks: multiplying by a bool tensor is ~90x slower on CPU
    _factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def factor(self, name: str) -> tuple[torch.Tensor, bool]:
        """The mask of ``name`` as a float multiplier, and whether it changed since last asked
        (a hook assigned a new mask tensor; hooks replace masks rather than edit them)."""
        keep = self.masks[name]
        cached = self._factors.get(name)
        if cached is not None and cached[0] is keep:
            return cached[1], False
        factor = keep.to(device=self.params[name].device, dtype=self.params[name].dtype)
        self._factors[name] = (keep, factor)
        return factor, True


class TrainHook:
    """Base class for what a method does during training; every method is a no-op by default."""

    def on_start(self, state: TrainState) -> None:
        """Before the first step (the optimizer exists; masks are applied)."""

    def after_backward(self, state: TrainState) -> None:
        """Gradients are available (pruned entries already zero); the step has not happened."""

    def on_step_end(self, state: TrainState) -> None:
        """After the optimizer step and the masking; ``state.step`` counts this step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After an epoch and its evaluation (``state.record`` goes into its history row)."""

    def summary(self) -> dict[str, Any] | None:
        """What the hook reports once training ends (``TrainResult.summaries[hook.key]``)."""
        return None

    key: str = "hook"

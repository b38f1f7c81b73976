"""Test data and test figures for training: the held-out split and the loss and accuracy of a
module on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.data.labelled import Dataset, set_mode
from prunecli.errors import BadInput


def split_data(
    data: Dataset, val_fraction: float | None, seed: int
) -> tuple[Dataset, Dataset | None]:
    """(training set, test set): the data's own test split, else a seeded ``val_fraction`` of
    the samples held out, else no test set."""
    if data.x_test is not None and val_fraction is None:
        return Dataset(data.x, data.y, name=data.name), Dataset(
            data.x_test, data.y_test, name=data.name
        )
    if val_fraction is None:
        return data, None
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    held = round(len(data) * val_fraction)
    if held < 1 or held >= len(data):
        raise BadInput(
            f"--val-fraction {val_fraction} of {len(data)} samples leaves an empty split"
        )
    test_rows, train_rows = order[:held], order[held:]
    train = Dataset(data.x[train_rows], data.y[train_rows], name=data.name)
    return train, Dataset(data.x[test_rows], data.y[test_rows], name=data.name)


def evaluate(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, device: str = "cpu"
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``module`` on ``x``, ``y`` in eval mode."""
    was_training = module.training
    set_mode(module, False)
    total_loss, correct = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                xb = x[start : start + batch_size].to(device)
                yb = y[start : start + batch_size].to(device)
                logits = module(xb)
                total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
    finally:
        set_mode(module, was_training)
    return total_loss / max(len(y), 1), correct / max(len(y), 1)

"""A :class:`TrainingJob` over an in-memory module, for the training-method tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunecli.criteria.training import TrainingJob, TrainingMethod
from prunecli.data.labelled import Dataset
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.criterion import Inputs
from prunecli.training.settings import TrainSettings


def make_job(
    module: nn.Module,
    data: Dataset,
    sparsity: float,
    method: type[TrainingMethod],
    settings: TrainSettings,
    **options: Any,
) -> TrainingJob:
    tensors = {name: t.detach() for name, t in module.state_dict().items()}
    model = LoadedModel(tensors, {}, "mem", "safetensors", None, module)
    names = [name for name, _ in module.named_parameters() if name.endswith("weight")]
    inputs = Inputs(data=data)
    return TrainingJob(model, names, sparsity, settings, inputs, method.resolve_options(options))


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}

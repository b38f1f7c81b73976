"""A model the caller already holds (an ``nn.Module`` or a dict of tensors) as a LoadedModel.

The Python API (prunecli/api.py) prunes these in place: the LoadedModel's tensors are the
module's own (its ``state_dict`` shares their storage), so zeroing one zeroes the weight.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch

from prunecli.models.loaded import LoadedModel


def from_module(module: torch.nn.Module) -> LoadedModel:
    """``module`` as a LoadedModel of format ``module``. A transformers model keeps its config,
    so what is prunable is what it is for the same model saved as a folder (heads stay dense)."""
    state = module.state_dict()
    tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    model = LoadedModel(tensors, {}, f"<{type(module).__name__}>", "module", None, module)
    transformers = sys.modules.get("transformers")  # imported by the caller if it built one
    if transformers is not None and isinstance(module, transformers.PreTrainedModel):
        model.hf_config = module.config.to_dict()
    return model


def from_tensors(tensors: Mapping[str, torch.Tensor]) -> LoadedModel:
    """Named tensors as a weights-only LoadedModel of format ``tensors``, as a safetensors file
    of them would load (the same tensors are prunable)."""
    return LoadedModel(dict(tensors), {}, "<tensors>", "tensors", None)

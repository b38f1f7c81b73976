"""A model the caller already holds (an ``nn.Module`` or a dict of tensors) as a LoadedModel.

The Python API (prunecli/api/) prunes these in place: the LoadedModel's tensors are the
module's own (its ``state_dict`` shares their storage), so zeroing one zeroes the weight.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch

from prunecli.models.loaded import Architecture, LoadedModel


def from_module(module: torch.nn.Module) -> LoadedModel:
    """``module`` as a LoadedModel of format ``module``, its architecture named by its class as
    ``--arch`` names a factory (``pkg.module:Class``; the bare name of a class defined in a
    script or a function, which cannot be imported), its input shape its ``input_shape``
    attribute when it has one. A transformers model keeps its config, so what is prunable is
    what it is for the same model saved as a folder (heads stay dense)."""
    state = module.state_dict()
    tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    cls = type(module)
    model = LoadedModel(tensors, {}, f"<{cls.__name__}>", "module", None, module)
    shape = getattr(module, "input_shape", None)
    valid = isinstance(shape, tuple | list) and all(isinstance(d, int) and d > 0 for d in shape)
    importable = cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__
    name = f"{cls.__module__}:{cls.__qualname__}" if importable else cls.__qualname__
    model.arch = Architecture(name, input_shape=tuple(shape) if valid else None)
    transformers = sys.modules.get("transformers")  # imported by the caller if it built one
    if transformers is not None and isinstance(module, transformers.PreTrainedModel):
        model.hf_config = module.config.to_dict()
    return model


def from_tensors(tensors: Mapping[str, torch.Tensor]) -> LoadedModel:
    """Named tensors as a weights-only LoadedModel of format ``tensors``, as a safetensors file
    of them would load (the same tensors are prunable)."""
    return LoadedModel(dict(tensors), {}, "<tensors>", "tensors", None)

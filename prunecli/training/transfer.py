"""Rewinding to earlier weights and replacing the classifier head (sparse transfer)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from prunecli.data.labelled import Dataset
from prunecli.errors import BadInput, Unsupported
from prunecli.io.inputs import check_input
from prunecli.io.load import load_file
from prunecli.models.loaded import Architecture, LoadedModel, build_module


def read_rewind_point(path: Path, model: LoadedModel) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, checked to match ``model`` name for name and shape for shape."""
    check_input(path, f"--rewind-to {path}")
    tensors = load_file(path)[0]
    for name, tensor in model.tensors.items():
        if name not in tensors:
            raise BadInput(
                f"--rewind-to {path} does not match {model.source}: it has no tensor {name!r}",
                "rewind to the initial weights of this very model (e.g. the `prunecli init` file)",
            )
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            raise BadInput(
                f"--rewind-to {path} does not match {model.source}: {name!r} has shape "
                f"{list(tensors[name].shape)} there and {list(tensor.shape)} here"
            )
    extra = [name for name in tensors if name not in model.tensors]
    if extra:
        raise BadInput(
            f"--rewind-to {path} does not match {model.source}: it has tensor {extra[0]!r}, "
            "which the model lacks"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BadInput(f"--rewind-to {path}: {name!r} holds NaN or infinite values")
    return tensors


def load_weights(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> None:
    """Copy ``tensors`` into ``module``, masked: surviving weights take the given values, pruned
    ones stay zero."""
    state = module.state_dict()
    with torch.no_grad():
        for name, target in state.items():
            value = tensors[name].to(device=target.device, dtype=target.dtype)
            if name in masks:
                value = value * masks[name].to(target.device)
            target.copy_(value)


def rewind(model: LoadedModel, path: Path, masks: Mapping[str, torch.Tensor]) -> None:
    """Reset every tensor of ``model`` to those of ``path``, keeping the pruned weights zero."""
    load_weights(model.module, read_rewind_point(path, model), masks)


def layers_in_call_order(
    module: nn.Module, sample: torch.Tensor, keep: Callable[[str, nn.Module], bool]
) -> list[str]:
    """Names of the submodules ``keep`` accepts, in the order one forward pass calls them."""
    called: list[str] = []
    handles = [
        layer.register_forward_hook(lambda *_, name=name: called.append(name))
        for name, layer in module.named_modules()
        if keep(name, layer)
    ]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(sample)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return list(dict.fromkeys(called))


def output_layer(module: nn.Module, names: Sequence[str], sample: torch.Tensor) -> str | None:
    """The prunable weight (of ``names``) whose layer the forward pass calls last."""
    owners = {name.rpartition(".")[0]: name for name in names if name.endswith(".weight")}
    order = layers_in_call_order(module, sample, lambda name, _: name in owners)
    return owners[order[-1]] if order else None


def replace_head(model: LoadedModel, num_classes: int, data: Dataset, seed: int) -> str:
    """Replace the last Linear layer (by call order) with a fresh, seeded one of ``num_classes``
    outputs; record the change in the architecture. Returns the new head's weight name."""
    if num_classes < 1:
        raise BadInput(f"--num-classes must be at least 1, got {num_classes}")
    module = model.require_graph("--num-classes")
    device = next(module.parameters()).device
    order = layers_in_call_order(
        module, data.x[:2].to(device), lambda _, layer: isinstance(layer, nn.Linear)
    )
    if not order:
        raise Unsupported("--num-classes replaces the last Linear layer, and the model has none")
    name = order[-1]
    old = module.get_submodule(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=device, dtype=old.weight.dtype)
    module.set_submodule(name, new)
    model.arch = _architecture_with_classes(model, num_classes)
    state = module.state_dict()
    model.tensors = {key: state[key].detach() for key in state}
    return f"{name}.weight"


def _architecture_with_classes(model: LoadedModel, num_classes: int) -> Architecture:
    """The architecture's arguments with the new class count, checked by building it."""
    arch = model.arch
    if arch is None or model.format != "safetensors":
        raise Unsupported("--num-classes needs a safetensors model with a known architecture")
    kwargs = copy.deepcopy(arch.kwargs)
    if arch.name == "mlp":
        widths = list(kwargs.get("widths", (784, 300, 100, 10)))
        kwargs["widths"] = [*widths[:-1], num_classes]
    else:
        kwargs["num_classes"] = num_classes
    changed = Architecture(arch.name, kwargs)
    try:
        built = build_module(changed).state_dict()
    except (BadInput, TypeError, ValueError):
        built = None
    expected = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
    if built is None or {k: tuple(v.shape) for k, v in built.items()} != expected:
        raise Unsupported(
            f"--num-classes: {arch.name} takes no class count that prunecli can record",
            "use an architecture with a num_classes argument (or mlp widths)",
        )
    changed.input_shape = arch.input_shape or changed.input_shape
    return changed

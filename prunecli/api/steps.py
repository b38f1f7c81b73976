"""The steps every function of the Python API shares: a model argument (module, tensors or
path) as a LoadedModel, ``data=`` and ``input_shape=`` as the CLI's options, the device, and the
module's train/eval modes kept."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from prunecli.errors import BadInput

if TYPE_CHECKING:
    from typing import TypeAlias

    from prunecli.data.labelled import Dataset
    from prunecli.models.loaded import LoadedModel

    #: what the API's functions take: a module, its tensors, or a model path
    ModelLike: TypeAlias = torch.nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike[str]
    #: labelled data: what ``--data`` names, a Dataset, or (x, y) / (x, y, x_test, y_test)
    DataLike: TypeAlias = str | os.PathLike[str] | Dataset | tuple[Any, ...] | list[Any]


def is_path(model: object) -> bool:
    return isinstance(model, str | os.PathLike)


def no_stdout(output: str | os.PathLike) -> str:
    if os.fspath(output) == "-":
        raise BadInput("output='-' would write to standard output", "give a file or folder path")
    return os.fspath(output)


def patterns(include: object, exclude: object) -> tuple[tuple[str, ...], ...]:
    """``include=`` and ``exclude=`` as tuples of glob patterns: None is none, a string one."""
    both = []
    for keyword, value in (("include", include), ("exclude", exclude)):
        items = () if value is None else (value,) if isinstance(value, str) else value
        items = tuple(items) if isinstance(items, Iterable) else (items,)
        for item in items:
            if not isinstance(item, str):
                raise BadInput(f"{keyword}= takes glob patterns, got {item!r}", "e.g. ['fc*']")
        both.append(items)
    return tuple(both)


def open_model_like(
    model: ModelLike,
    inplace: bool,
    arch: str | None,
    arch_kwargs: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
    trust_remote_code: bool,
    check: bool = True,
) -> tuple[LoadedModel, list[str]]:
    """The LoadedModel of ``model`` and its prunable tensor names (finite, when ``check``)."""
    from prunecli.jobs.session import open_model
    from prunecli.models.loaded import copy_module
    from prunecli.models.wrap import from_module, from_tensors
    from prunecli.pruning.prunable import check_finite, select_prunable

    if is_path(model):
        source = os.fspath(model)
        return open_model(
            source, arch, arch_kwargs, include, exclude, check, trust_remote_code=trust_remote_code
        )
    if arch is not None or arch_kwargs is not None:
        raise BadInput("arch= builds a model around a file's weights; a module has its own")
    if isinstance(model, torch.nn.Module):
        loaded = from_module(model if inplace else copy_module(model))
    elif isinstance(model, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        tensors = {k: v if inplace else v.detach().clone() for k, v in model.items()}
        loaded = from_tensors(tensors)
    else:
        raise BadInput(
            f"a {type(model).__name__} is not a model",
            "give a torch.nn.Module, a dict of tensors, or a model path "
            "(.safetensors, .pt2, .onnx or a folder)",
        )
    names = select_prunable(loaded, include, exclude)
    if check:
        check_finite(loaded, names)
    return loaded, names


def data_arg(data: DataLike | None) -> str | Dataset | None:
    """What ``--data`` names (a string), or a Dataset built from tensors/arrays."""
    from prunecli.data.labelled import Dataset, from_arrays

    if data is None or isinstance(data, str | Dataset):
        return data
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    if isinstance(data, tuple | list) and len(data) in (2, 4):
        return from_arrays(*data, name="data")
    raise BadInput(
        f"data= takes a path or built-in name, a Dataset, or (x, y); got {type(data).__name__}"
    )


def shape_text(shape: Sequence[int] | str | None) -> str | None:
    """``(3, 32, 32)`` → ``"3,32,32"``, the CLI's ``--input-shape`` (its checks, its messages)."""
    if shape is None or isinstance(shape, str):
        return shape
    if isinstance(shape, int):
        return str(shape)
    return ",".join(str(dim) for dim in shape)


def device_of(device: str | None, loaded: LoadedModel) -> str:
    """``device``, else where the module's weights are (cpu unless they are on a GPU)."""
    if device is not None:
        return device
    parameter = next(iter(loaded.module.parameters()), None) if loaded.module else None
    return str(parameter.device) if parameter is not None else "cpu"


@contextlib.contextmanager
def modes_kept(module: torch.nn.Module | None) -> Iterator[None]:
    """Every submodule's train/eval mode as it was: the checks and criteria switch modes."""
    modes = [(sub, sub.training) for sub in module.modules()] if module is not None else []
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training

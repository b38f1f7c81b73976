"""Steps every command shares: load a model and decide what is prunable."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.models.loaded import LoadedModel, load_model
from prunecli.pruning.criterion import Criterion, Inputs
from prunecli.pruning.prunable import check_finite, select_prunable

if TYPE_CHECKING:
    from prunecli.data.labelled import Dataset


def open_model(
    source: str,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    check_weights: bool = True,
    trust_remote_code: bool = False,
) -> tuple[LoadedModel, list[str]]:
    """The loaded model and its prunable tensor names (finite, unless ``check_weights`` is off)."""
    model = load_model(source, arch, arch_kwargs, trust_remote_code)
    names = select_prunable(model, include or (), exclude or ())
    if check_weights:
        check_finite(model, names)
    return model, names


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``3,32,32`` → (3, 32, 32): the model's input without the batch dimension."""
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(dim < 1 for dim in shape):
        raise BadInput(
            f"--input-shape {text!r} is not a shape",
            "write positive integers separated by commas, without the batch, e.g. 3,32,32",
        )
    return shape


def check_input_shape(model: LoadedModel, shape: tuple[int, ...] | None, text: str | None) -> None:
    """Refuse an ``--input-shape`` the model cannot take, naming both shapes, before a method
    (synflow, npb, topology, export) runs its own forward pass and fails deep inside it."""
    module = model.module
    if text is None or shape is None or module is None or model.hf_config is not None:
        return
    from prunecli.data.labelled import set_mode

    parameter = next(iter(module.parameters()), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    device = parameter.device if parameter is not None else "cpu"
    expected = model.arch.input_shape if model.arch else None
    if expected is not None and tuple(expected) == tuple(shape):
        return  # the shape the model was built or exported with: nothing to try
    was_training = module.training
    set_mode(module, training=False)
    try:
        error = None
        # float samples, else token ids: a model that takes indices (an embedding first) fits
        # a shape as well; only a shape that fits neither is refused
        for kind in (dtype or torch.float32, torch.long):
            try:
                with torch.no_grad():
                    module(torch.zeros((1, *shape), dtype=kind, device=device))
                return
            except Exception as exc:  # noqa: BLE001 - shape errors come as many types
                error = error or exc
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        expects = f", which expects {list(expected)}" if expected else ""
        raise BadInput(
            f"--input-shape {text} does not fit the model{expects} ({detail[:200]})",
            "give the shape of one sample without the batch, e.g. 3,32,32",
        ) from None
    finally:
        set_mode(module, was_training)


def check_request(
    criterion: type[Criterion],
    data: str | Dataset | None,
    training: bool = False,
    api: bool = False,
) -> None:
    """Refuse what cannot work before anything is loaded (e.g. a data method without --data).

    ``training``: the command can run training methods (`prune`; not `score`). ``api``: the
    Python API's ``prunecli.prune``, which runs the one-shot methods only (the CLI trains)."""
    if api and criterion.trains():
        raise Unsupported(
            f"--method {criterion.name} trains the model; the Python API runs the one-shot methods",
            f"use `prunecli prune MODEL --method {criterion.name} --data ... --steps N`",
        )
    if "data" in criterion.needs and data is None:
        raise BadInput(
            f"--method {criterion.name} needs labelled data: pass --data",
            "a .npz/.safetensors file with x and y, an image folder, module:callable, "
            "mnist1d or digits",
        )
    if "calibration" in criterion.needs:
        if not training:
            raise Unsupported(
                f"--method {criterion.name} runs block by block on a Hugging Face folder",
                f"use `prunecli prune ./folder/ --method {criterion.name} --data corpus.txt`",
            )
        if data is None:
            raise BadInput(
                f"--method {criterion.name} needs calibration text: pass --data",
                "a .txt or .jsonl file (tokenized by the folder's tokenizer), or token ids "
                "in .npz/.safetensors",
            )
    if criterion.trains() and not training:
        raise Unsupported(
            f"--method {criterion.name} trains the model and has no per-weight score",
            f"use `prunecli prune --method {criterion.name}`",
        )


def resolve_inputs(
    criterion: type[Criterion],
    model: LoadedModel,
    input_shape: str | None = None,
    data: str | Dataset | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    training: bool = False,
) -> Inputs:
    """What ``criterion`` needs from this run, or a clear error saying what to supply.

    ``data``: what ``--data`` names, or a data set already loaded (the Python API's)."""
    check_request(criterion, data, training)
    if criterion.needs_graph():
        model.require_graph(criterion.name)
    if model.hf_config is not None:
        from prunecli.models.hf import check_criterion

        check_criterion(model.hf_config, criterion.name, criterion.needs)
    shape = parse_input_shape(input_shape)
    check_input_shape(model, shape, input_shape)
    shape = shape or (model.arch.input_shape if model.arch else None)
    if "input_shape" in criterion.needs and shape is None:
        raise Unsupported(
            f"--method {criterion.name} needs the model's input shape",
            "pass --input-shape, e.g. --input-shape 3,32,32",
        )
    dataset = None
    if "data" in criterion.needs:
        from prunecli.data.labelled import batch_options, check_fits
        from prunecli.data.sources import load_data

        _, batch_size = batch_options(options or {})
        dataset = load_data(data) if isinstance(data, str) else data
        if model.module is not None:  # one batch through the model: shapes and labels fit
            check_fits(dataset, model.module, shape, batch_size)
    return Inputs(shape, dataset, check_device(device), dict(options or {}))


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` where that device is there; else BadInput."""
    found = re.fullmatch(r"cpu|cuda(?::([0-9]+))?", device)
    if found is None:
        raise BadInput(f"--device {device!r} is not known", "use cpu or cuda (cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {device} was asked for, but no CUDA device is available")
    if found.group(1) is not None and int(found.group(1)) >= torch.cuda.device_count():
        raise BadInput(
            f"--device {device} was asked for, but there are {torch.cuda.device_count()} "
            "CUDA devices (cuda:0 …)"
        )
    return device

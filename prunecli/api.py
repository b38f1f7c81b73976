"""The Python API: prune, score and inspect a live ``torch.nn.Module`` or a saved model.

Each function runs the job its CLI command runs and returns the report the CLI renders
(docs/python.md). A module or a dict of tensors is wrapped in a LoadedModel whose tensors *are*
its weights, so the engine zeroes them in place; a path is loaded as the CLI loads it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prunecli.errors import BadInput
from prunecli.jobs.validate import (
    check_grouped,
    check_int,
    check_method_options,
    check_prune_output,
    check_score_output,
    prune_settings,
    read_paths,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from prunecli.data.labelled import Dataset
    from prunecli.jobs.report import Report
    from prunecli.models.loaded import LoadedModel
    from prunecli.pruning.criterion import Criterion

    #: what ``prune``, ``score`` and ``inspect`` take: a module, its tensors, or a model path
    ModelLike: TypeAlias = torch.nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike[str]
    #: labelled data: what ``--data`` names, a Dataset, or (x, y) / (x, y, x_test, y_test)
    DataLike: TypeAlias = str | os.PathLike[str] | Dataset | tuple[Any, ...] | list[Any]
    #: what ``prune`` returns beside the report when the pruned model is not yours already
    Pruned: TypeAlias = torch.nn.Module | dict[str, torch.Tensor]


def prune(
    model: ModelLike,
    method: str | None = None,
    sparsity: float | str | None = None,
    *,
    scores: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
    scope: str = "global",
    pattern: str | None = None,
    iterations: int | None = None,
    schedule: str = "exponential",
    seed: int = 0,
    include: Sequence[str] | str | None = (),
    exclude: Sequence[str] | str | None = (),
    data: DataLike | None = None,
    input_shape: Sequence[int] | str | None = None,
    device: str | None = None,
    inplace: bool = True,
    output: str | os.PathLike | None = None,
    format: str = "dense",
    force: bool = False,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Report | tuple[Pruned, Report]:
    """Zero ``round(sparsity · N)`` of the N prunable weights of ``model`` with ``method``
    (or fixed ``scores``), as `prunecli prune` does.

    A module (or dict of tensors) is pruned in place and the report returned; with
    ``inplace=False`` a pruned copy is returned with the report, ``(copy, report)``. A path is
    loaded as the CLI loads it: with ``output`` the pruned model is written there and the report
    returned, else ``(module or tensors, report)``. ``options`` are the method's (``alpha=0.2``,
    ``batches=4``, …); errors are the CLI's (:class:`prunecli.errors.PrunecliError`).
    ``pattern="2:4"`` keeps 2 of every 4 consecutive weights of each row (``sparsity`` may
    then be left out)."""
    from prunecli.criteria import get_criterion
    from prunecli.jobs.prune import prune_loaded, prune_to_file
    from prunecli.jobs.session import check_request, resolve_inputs

    include, exclude = _patterns(include, exclude)
    settings = prune_settings(
        method, scores is not None, sparsity, scope, schedule, iterations, seed, pattern
    )
    criterion_class = get_criterion(method) if method is not None else None
    check_method_options(criterion_class, options)
    if criterion_class is not None:
        check_grouped(criterion_class, settings)
    dataset = _data(data)
    if criterion_class is not None:
        check_request(criterion_class, dataset, api=True)
    score_path = None if scores is None or isinstance(scores, Mapping) else os.fspath(scores)
    if isinstance(scores, Mapping):
        _check_scores(scores)
    output = _prune_output(model, output, format, force, data, score_path)
    loaded, names = _open(model, inplace, arch, arch_kwargs, include, exclude, trust_remote_code)
    criterion = criterion_class() if criterion_class is not None else _fixed(scores)
    with _modes_kept(loaded.module):
        settings.inputs = resolve_inputs(
            type(criterion),
            loaded,
            _shape_text(input_shape),
            dataset,
            _device(device, loaded),
            options,
        )
        if output is not None:
            return prune_to_file(loaded, names, criterion, settings, output, progress, format)
        report, _ = prune_loaded(loaded, names, criterion, settings, progress)
    if _is_path(model) or not inplace:
        return (loaded.module if loaded.module is not None else loaded.tensors), report
    return report


def score(
    model: ModelLike,
    method: str | None = None,
    *,
    seed: int = 0,
    include: Sequence[str] | str | None = (),
    exclude: Sequence[str] | str | None = (),
    data: DataLike | None = None,
    input_shape: Sequence[int] | str | None = None,
    device: str | None = None,
    output: str | os.PathLike | None = None,
    force: bool = False,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> tuple[dict[str, torch.Tensor], Report]:
    """One score per prunable weight (higher = keep) and the report, as `prunecli score`.

    The scores are CPU tensors keyed by tensor name (a module's ``state_dict`` names); with
    ``output`` they are also written there, for ``prune(..., scores=path)`` or the CLI's
    ``--scores``. ``model`` is never changed."""
    from prunecli.criteria import get_criterion
    from prunecli.jobs.prune import score_report, score_to_file, score_weights
    from prunecli.jobs.session import check_request, resolve_inputs

    include, exclude = _patterns(include, exclude)
    if method is None:
        raise BadInput("--method is required", "run `prunecli methods` for the list")
    check_int("seed", seed)
    criterion_class = get_criterion(method)
    dataset = _data(data)
    check_request(criterion_class, dataset)  # the CLI's order: the data, then the options
    check_method_options(criterion_class, options)
    if output is not None:
        output = _no_stdout(output)
        source = os.fspath(model) if _is_path(model) else None
        check_score_output(output, force, read_paths(source, data))
    loaded, names = _open(model, True, arch, arch_kwargs, include, exclude, trust_remote_code)
    criterion = criterion_class()
    with _modes_kept(loaded.module):
        inputs = resolve_inputs(
            criterion_class,
            loaded,
            _shape_text(input_shape),
            dataset,
            _device(device, loaded),
            options,
        )
        tensors = score_weights(loaded, names, criterion, seed, inputs)
        if output is not None:
            report = score_to_file(loaded, names, criterion, seed, inputs, output, tensors)
        else:
            report = score_report(loaded, names, inputs)
    return tensors, report


def inspect(
    model: ModelLike,
    *,
    all_tensors: bool = False,
    include: Sequence[str] | str | None = (),
    exclude: Sequence[str] | str | None = (),
    input_shape: Sequence[int] | str | None = None,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    trust_remote_code: bool = False,
    min_sparsity: float | str | None = None,
    max_collapsed: int | None = None,
) -> Report:
    """Per-layer and total sparsity, and the topology when the graph and input shape are known,
    as `prunecli inspect`; ``all_tensors`` lists every tensor (``--all``). The gates
    ``min_sparsity`` and ``max_collapsed`` add a check to ``report.checks`` (never raise)."""
    from prunecli.jobs.cost import add_cost
    from prunecli.jobs.gates import max_collapsed_check, min_sparsity_check
    from prunecli.jobs.report import build_report
    from prunecli.jobs.session import check_input_shape, parse_input_shape

    include, exclude = _patterns(include, exclude)
    text = _shape_text(input_shape)
    shape = parse_input_shape(text)  # first, as the CLI does, streamed or not
    counted = (shape, trust_remote_code)  # the MACs are counted as the CLI counts them
    report = _streamed_inspect(model, arch, all_tensors, (include, exclude), max_collapsed, counted)
    if report is None:
        loaded, names = _open(
            model, True, arch, arch_kwargs, include, exclude, trust_remote_code, check=False
        )
        with _modes_kept(loaded.module):
            check_input_shape(loaded, shape, text)
            if max_collapsed is not None:
                loaded.require_graph("--max-collapsed")
            shown = list(loaded.tensors) if all_tensors else names
            report = build_report("inspect", loaded, shown, names, shape)
            add_cost(report, loaded, shape, trust_remote_code=trust_remote_code)
    if min_sparsity is not None:
        report.checks.append(min_sparsity_check(report, str(min_sparsity)))
    if max_collapsed is not None:
        report.checks.append(max_collapsed_check(report, max_collapsed))
    return report


def _streamed_inspect(
    model: ModelLike,
    arch: str | None,
    all_tensors: bool,
    patterns: tuple[Sequence[str], Sequence[str]],
    max_collapsed: int | None,
    counted: tuple[tuple[int, ...] | None, bool],
) -> Report | None:
    """A folder or large file counted chunk by chunk, as `prunecli inspect` does (None: not)."""
    from prunecli.jobs.cost import add_cost
    from prunecli.jobs.stream import lazy_model, stream_inspect, streamable
    from prunecli.pruning.prunable import select_prunable

    if max_collapsed is not None or not _is_path(model):
        return None
    checkpoint = streamable(os.fspath(model), None, arch, None)
    if checkpoint is None:
        return None
    lazy = lazy_model(checkpoint)
    names = select_prunable(lazy, *patterns)
    report = stream_inspect(checkpoint, list(lazy.tensors) if all_tensors else names)
    add_cost(report, lazy, counted[0], trust_remote_code=counted[1])
    return report


def show(report: Report, json: bool = False, group: str | None = None) -> None:
    """Print ``report`` on stdout as the CLI does: the Rich table, or its JSON (``json``); the
    table's rows as ``--group`` picks them (``"auto"``, ``"block"`` or ``"tensor"``)."""
    from prunecli.cli.blocks import check_group
    from prunecli.cli.output import Output

    Output(json_mode=json, group=check_group(group)).report(report)


# --- the steps shared by prune, score and inspect -------------------------------------------


def _is_path(model: object) -> bool:
    return isinstance(model, str | os.PathLike)


def _no_stdout(output: str | os.PathLike) -> str:
    if os.fspath(output) == "-":
        raise BadInput("output='-' would write to standard output", "give a file or folder path")
    return os.fspath(output)


def _prune_output(
    model: ModelLike,
    output: str | os.PathLike | None,
    format: str,
    force: bool,
    data: object,
    scores: str | None,
) -> str | None:
    """Refuse an output that could lose data, before anything is loaded (as the CLI does)."""
    if output is None:
        if format != "dense":
            raise BadInput(f"format={format!r} is the layout of a file: give output= as well")
        return None
    output = _no_stdout(output)
    source = os.fspath(model) if _is_path(model) else None
    check_prune_output(source, output, format, force, read_paths(source, data, scores=scores))
    return output


def _patterns(include: object, exclude: object) -> tuple[tuple[str, ...], ...]:
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


def _check_scores(scores: Mapping[Any, Any]) -> None:
    """``scores=`` as a dict: tensors by name, as a dict model is."""
    for name, tensor in scores.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise BadInput(
                f"scores= takes tensors by name; {name!r} is a {type(tensor).__name__}",
                "give a dict of torch.Tensor keyed by tensor name, or a scores file",
            )


def _open(
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

    if _is_path(model):
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


def _fixed(scores: Mapping[str, torch.Tensor] | str | os.PathLike | None) -> Criterion:
    from prunecli.jobs.prune import load_scores
    from prunecli.pruning.loop import FixedScores

    if isinstance(scores, Mapping):
        return FixedScores(scores)
    return load_scores(Path(os.fspath(scores)))


def _data(data: DataLike | None) -> str | Dataset | None:
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


def _shape_text(shape: Sequence[int] | str | None) -> str | None:
    """``(3, 32, 32)`` → ``"3,32,32"``, the CLI's ``--input-shape`` (its checks, its messages)."""
    if shape is None or isinstance(shape, str):
        return shape
    if isinstance(shape, int):
        return str(shape)
    return ",".join(str(dim) for dim in shape)


def _device(device: str | None, loaded: LoadedModel) -> str:
    """``device``, else where the module's weights are (cpu unless they are on a GPU)."""
    if device is not None:
        return device
    parameter = next(iter(loaded.module.parameters()), None) if loaded.module else None
    return str(parameter.device) if parameter is not None else "cpu"


@contextlib.contextmanager
def _modes_kept(module: torch.nn.Module | None) -> Iterator[None]:
    """Every submodule's train/eval mode as it was: the checks and criteria switch modes."""
    modes = [(sub, sub.training) for sub in module.modules()] if module is not None else []
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training

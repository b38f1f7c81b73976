"""``prune``, ``score``, ``inspect`` and ``show``: the commands on a live ``torch.nn.Module``, a
dict of tensors or a saved model.

Each function runs the job its CLI command runs and returns the report the CLI renders
(docs/python.md). A module or a dict of tensors is wrapped in a LoadedModel whose tensors *are*
its weights, so the engine zeroes them in place; a path is loaded as the CLI loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prunecli.api.steps import (
    data_arg,
    device_of,
    is_path,
    modes_kept,
    no_stdout,
    open_model_like,
    patterns,
    shape_text,
)
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

    from prunecli.api.steps import DataLike, ModelLike
    from prunecli.jobs.report import Report
    from prunecli.pruning.criterion import Criterion

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

    include, exclude = patterns(include, exclude)
    settings = prune_settings(
        method, scores is not None, sparsity, scope, schedule, iterations, seed, pattern
    )
    criterion_class = get_criterion(method) if method is not None else None
    check_method_options(criterion_class, options)
    if criterion_class is not None:
        check_grouped(criterion_class, settings)
    dataset = data_arg(data)
    if criterion_class is not None:
        check_request(criterion_class, dataset, api=True)
    score_path = None if scores is None or isinstance(scores, Mapping) else os.fspath(scores)
    if isinstance(scores, Mapping):
        _check_scores(scores)
    output = _prune_output(model, output, format, force, data, score_path)
    loaded, names = open_model_like(
        model, inplace, arch, arch_kwargs, include, exclude, trust_remote_code
    )
    criterion = criterion_class() if criterion_class is not None else _fixed(scores)
    with modes_kept(loaded.module):
        settings.inputs = resolve_inputs(
            type(criterion),
            loaded,
            shape_text(input_shape),
            dataset,
            device_of(device, loaded),
            options,
        )
        if output is not None:
            return prune_to_file(loaded, names, criterion, settings, output, progress, format)
        report, _ = prune_loaded(loaded, names, criterion, settings, progress)
    if is_path(model) or not inplace:
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

    include, exclude = patterns(include, exclude)
    if method is None:
        raise BadInput("--method is required", "run `prunecli methods` for the list")
    check_int("seed", seed)
    criterion_class = get_criterion(method)
    dataset = data_arg(data)
    check_request(criterion_class, dataset)  # the CLI's order: the data, then the options
    check_method_options(criterion_class, options)
    if output is not None:
        output = no_stdout(output)
        source = os.fspath(model) if is_path(model) else None
        check_score_output(output, force, read_paths(source, data))
    loaded, names = open_model_like(
        model, True, arch, arch_kwargs, include, exclude, trust_remote_code
    )
    criterion = criterion_class()
    with modes_kept(loaded.module):
        inputs = resolve_inputs(
            criterion_class,
            loaded,
            shape_text(input_shape),
            dataset,
            device_of(device, loaded),
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

    include, exclude = patterns(include, exclude)
    text = shape_text(input_shape)
    shape = parse_input_shape(text)  # first, as the CLI does, streamed or not
    counted = (shape, trust_remote_code)  # the MACs are counted as the CLI counts them
    report = _streamed_inspect(model, arch, all_tensors, (include, exclude), max_collapsed, counted)
    if report is None:
        loaded, names = open_model_like(
            model, True, arch, arch_kwargs, include, exclude, trust_remote_code, check=False
        )
        with modes_kept(loaded.module):
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

    if max_collapsed is not None or not is_path(model):
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


# --- the steps of prune alone ----------------------------------------------------------


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
    output = no_stdout(output)
    source = os.fspath(model) if is_path(model) else None
    check_prune_output(source, output, format, force, read_paths(source, data, scores=scores))
    return output


def _check_scores(scores: Mapping[Any, Any]) -> None:
    """``scores=`` as a dict: tensors by name, as a dict model is."""
    for name, tensor in scores.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise BadInput(
                f"scores= takes tensors by name; {name!r} is a {type(tensor).__name__}",
                "give a dict of torch.Tensor keyed by tensor name, or a scores file",
            )


def _fixed(scores: Mapping[str, torch.Tensor] | str | os.PathLike | None) -> Criterion:
    from prunecli.jobs.prune import load_scores
    from prunecli.pruning.loop import FixedScores

    if isinstance(scores, Mapping):
        return FixedScores(scores)
    return load_scores(Path(os.fspath(scores)))

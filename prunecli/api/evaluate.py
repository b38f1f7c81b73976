"""``evaluate`` and ``sweep``: the commands `eval` and `sweep` on a live ``torch.nn.Module`` or a
saved model (docs/python.md, docs/evaluation.md).

``evaluate`` returns the Report `prunecli eval` renders (its figures in ``report.quality``);
``sweep`` returns the ``prunecli.sweep/1`` document. Neither changes the model: a module's
weights, train/eval modes and device are as they were.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
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

if TYPE_CHECKING:
    from prunecli.api.steps import DataLike, ModelLike
    from prunecli.jobs.report import Report
    from prunecli.models.loaded import LoadedModel


def evaluate(
    model: ModelLike,
    data: DataLike | torch.Tensor | None = None,
    *,
    metric: str | None = None,
    reference: ModelLike | None = None,
    latency: bool = False,
    batch_size: int | None = None,
    repeats: int = 20,
    seq_len: int | None = None,
    device: str | None = None,
    input_shape: Sequence[int] | str | None = None,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    trust_remote_code: bool = False,
) -> Report:
    """The figures of `prunecli eval`: a classifier's accuracy and mean cross-entropy on
    ``data``'s test split (all of it when it has none), a causal LM's perplexity over windows of
    ``seq_len`` tokens, with ``reference`` the mean cosine of the two models' outputs and their
    top-1 agreement, with ``latency`` the timed forward passes; in ``report.quality``, keyed by
    metric, each with its protocol.

    ``data`` is what ``--data`` names, a Dataset, ``(x, y)`` or ``(x, y, x_test, y_test)``, or
    for a transformer a tensor of token ids. ``device`` defaults to where the model's weights
    are; the model is left on its device, in its modes."""
    from prunecli.jobs.evaluate import (
        EvalRequest,
        check_request,
        evaluate_model,
        require_runnable,
    )
    from prunecli.jobs.session import check_device, parse_input_shape

    tokens = isinstance(data, torch.Tensor)
    request = EvalRequest(
        data=data if tokens else data_arg(data),
        metric=metric,
        reference=None if reference is None else "reference",
        latency=latency,
        batch_size=_positive("batch_size", batch_size),
        repeats=_positive("repeats", repeats) or 0,
        seq_len=_positive("seq_len", seq_len),
        input_shape=parse_input_shape(shape_text(input_shape)),
        trust_remote_code=trust_remote_code,
    )
    check_request(request)
    opened = (arch, arch_kwargs, (), (), trust_remote_code)
    loaded, names = open_model_like(model, True, *opened, check=False)
    require_runnable(loaded, "eval")
    dense = None
    if reference is not None:
        dense, _ = open_model_like(reference, True, *opened, check=False)
        require_runnable(dense, "eval reference=")
    request.reference = dense.source if dense is not None else None
    request.device = check_device(device_of(device, loaded))
    with _left_as_they_were(loaded, dense):
        return evaluate_model(loaded, names, request, dense)


def sweep(
    model: ModelLike,
    methods: Sequence[str] | str,
    sparsities: Sequence[float | str] | str,
    data: DataLike,
    *,
    seeds: Sequence[int] | str = (0,),
    retrain_steps: int = 0,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int | None = None,
    scope: str = "global",
    jobs: int = 1,
    output: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    force: bool = False,
    include: Sequence[str] | str | None = (),
    exclude: Sequence[str] | str | None = (),
    input_shape: Sequence[int] | str | None = None,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    calibration: str | os.PathLike | None = None,
    samples: int | None = None,
    seq_len: int | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`prunecli sweep`: ``model`` pruned with each method to each sparsity (once per seed),
    each from a fresh copy, retrained ``retrain_steps`` with the mask fixed, evaluated on
    ``data``'s test split; the ``prunecli.sweep/1`` document (every run, the summary over
    seeds). ``output`` also writes it as JSON, ``plot`` draws it (.png, .svg, .pdf). ``jobs`` > 1
    runs in processes that load ``model`` themselves, so it takes a path; the model itself is
    never changed. A classifier's sweep runs on the CPU.

    A causal LM's folder (a path) is swept by perplexity on the text ``data``, each run as
    `prunecli prune` writes it (wanda and sparsegpt calibrated on ``calibration``, default
    ``data``, with ``samples`` windows of ``seq_len`` tokens), on ``device``."""
    from prunecli.jobs.session import check_device
    from prunecli.jobs.sweep import (
        check_sweep_outputs,
        parse_methods,
        parse_seeds,
        parse_sparsities,
        write_sweep,
    )
    from prunecli.jobs.sweep_lm import (
        LMSweepRequest,
        check_lm_sweep,
        is_language_model_folder,
        run_lm_sweep,
    )
    from prunecli.jobs.validate import read_paths

    criteria = parse_methods(_listed(methods))
    levels, nm = parse_sparsities(_listed(sparsities))
    seed_list = parse_seeds(_listed(seeds))
    output = None if output is None else no_stdout(output)
    plot = None if plot is None else os.fspath(plot)
    include, exclude = patterns(include, exclude)
    if is_path(model) and is_language_model_folder(os.fspath(model)):
        _refuse_given(
            {"retrain_steps": retrain_steps, "jobs": jobs != 1, "arch": arch,
             "arch_kwargs": arch_kwargs, "input_shape": input_shape},
            f"{os.fspath(model)} is a transformers folder, pruned and measured by perplexity "
            "one run at a time",
        )  # fmt: skip
        if not isinstance(data, str | os.PathLike):
            raise BadInput("a causal LM is swept on text: data= takes the path of a .txt or .jsonl")
        request = LMSweepRequest(
            model=os.fspath(model),
            methods=tuple(criteria),
            sparsities=levels,
            patterns=nm,
            seeds=seed_list,
            data=os.fspath(data),
            calibration=None if calibration is None else os.fspath(calibration),
            samples=samples,
            seq_len=seq_len,
            batch_size=_positive("batch_size", batch_size),
            scope=scope,
            include=include,
            exclude=exclude,
            device=check_device(device),
            trust_remote_code=trust_remote_code,
        )
        reads = read_paths(request.model, request.data, calibration=request.calibration)
        check_sweep_outputs(reads, output, plot, force)
        check_lm_sweep(request, criteria)
        runs = None if progress is None else (lambda done, total, info=None: progress(done, total))
        document = run_lm_sweep(request, criteria, runs)
    else:
        _refuse_given(
            {"calibration": calibration, "samples": samples, "seq_len": seq_len,
             "device": device != "cpu"},
            "this sweep is of a classifier, by accuracy on the CPU",
        )  # fmt: skip
        retrain = (retrain_steps, lr, optimizer, _positive("batch_size", batch_size))
        checked = (output, plot, force)
        document = _sweep_classifier(
            model, criteria, (levels, nm), seed_list, data, retrain, scope, jobs, checked,
            (include, exclude, input_shape, arch, arch_kwargs), progress,
        )  # fmt: skip
    write_sweep(document, output, plot)
    return document


def _sweep_classifier(
    model: ModelLike,
    criteria: dict[str, Any],
    levels: tuple[tuple[float, ...], tuple[Any, ...]],
    seed_list: tuple[int, ...],
    data: DataLike,
    retraining: tuple[int, float, str, int | None],
    scope: str,
    jobs: int,
    outputs: tuple[str | None, str | None, bool],
    selection: tuple[Any, ...],
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """The runs of a classifier's sweep (the document), everything checked before the first."""
    from prunecli.jobs.sweep import (
        SweepRequest,
        check_scope,
        check_sweep_outputs,
        open_sweep,
        run_sweep,
    )
    from prunecli.jobs.validate import read_paths
    from prunecli.training.settings import TrainSettings

    check_scope(criteria, scope)
    dataset = data_arg(data)
    if dataset is None:
        raise BadInput("sweep evaluates on labelled data: pass data=", "e.g. data='digits'")
    steps, lr, optimizer, batch = retraining
    retrain = None
    if steps:
        retrain = TrainSettings(steps=steps, batch_size=batch or 100, lr=lr, optimizer=optimizer)
        retrain.check()
    if not isinstance(jobs, int) or jobs < 1:
        raise BadInput(f"jobs= must be a whole number of processes, 1 or more (got {jobs!r})")
    if jobs > 1 and not is_path(model):
        raise BadInput(
            f"jobs={jobs} runs processes that load the model from its file; this is a "
            f"{type(model).__name__}",
            "pass the model's path, or jobs=1",
        )
    source = os.fspath(model) if is_path(model) else None
    check_sweep_outputs(read_paths(source, dataset), *outputs)
    include, exclude, input_shape, arch, arch_kwargs = selection
    loaded = open_model_like(model, True, arch, arch_kwargs, include, exclude, False)
    _on_the_cpu(loaded[0])
    request = SweepRequest(
        model=loaded[0].source,
        methods=tuple(criteria),
        sparsities=levels[0],
        patterns=levels[1],
        seeds=seed_list,
        data=dataset,
        retrain=retrain,
        scope=scope,
        arch=arch,
        arch_kwargs=arch_kwargs,
        include=include,
        exclude=exclude,
        input_shape=shape_text(input_shape),
        jobs=jobs,
    )
    with modes_kept(loaded[0].module):
        return run_sweep(request, open_sweep(request, criteria, loaded), progress)


def _refuse_given(values: dict[str, Any], why: str) -> None:
    """BadInput naming the first keyword of ``values`` given (not None, 0 or False)."""
    for name, value in values.items():
        if value not in (None, 0, False):
            raise BadInput(f"{why}; {name}= does not apply", f"drop {name}=")


def _listed(value: Sequence[Any] | str) -> str:
    """A list argument as the CLI's comma-separated text (its checks, its messages)."""
    if isinstance(value, str):
        return value
    return ",".join(str(item) for item in value)


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise BadInput(f"{name}= must be a whole number, 1 or more (got {value!r})")
    return value


def _on_the_cpu(loaded: LoadedModel) -> None:
    for tensor in loaded.tensors.values():
        if tensor.device.type != "cpu":
            raise BadInput(
                f"sweep runs on the CPU; this model's weights are on {tensor.device}",
                "pass model.cpu() or the saved file",
            )


@contextlib.contextmanager
def _left_as_they_were(*models: LoadedModel | None) -> Iterator[None]:
    """Each module's modes and device as they were (the evaluation moves it to the device)."""
    modules = [m.module for m in models if m is not None and m.module is not None]
    devices = [next((p.device for p in m.parameters()), None) for m in modules]
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(modes_kept(module))
        try:
            yield
        finally:
            for module, device in zip(modules, devices, strict=True):
                if device is not None:
                    module.to(device)

"""What `prunecli prune` does with its options: check them all, then run the job (in memory, or
streamed chunk by chunk for magnitude and random on a large checkpoint) and report."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunecli.cli.blocks import check_group
from prunecli.cli.method_options import given_options
from prunecli.cli.options import gather
from prunecli.cli.output import Output, render_plan
from prunecli.cli.report_files import check_report
from prunecli.cli.train_options import TrainOptions

if TYPE_CHECKING:
    from prunecli.jobs.settings import PruneSettings
    from prunecli.pruning.criterion import Criterion


@dataclass(frozen=True)
class PruneRequest:
    """`prunecli prune`'s options as given; :func:`run_prune` checks them."""

    model: str
    sparsity: str | None
    method: str | None
    pattern: str | None
    granularity: str
    round_to: int | None
    reconstruct: bool | None
    scores_file: Path | None
    seed: int
    include: list[str] | None
    exclude: list[str] | None
    scope: str
    iterations: int | None
    schedule: str
    arch: str | None
    arch_kwargs: str | None
    trust_remote_code: bool
    input_shape: str | None
    output: str | None
    format: str
    force: bool
    dry_run: bool
    report_file: Path | None
    group: str | None
    json_mode: bool
    quiet: bool
    progress: bool
    data: str | None
    eval_data: str | None  # --eval: quality before and after (jobs/quality.py)
    device: str
    training: TrainOptions
    options: dict[str, object]  # the method options given (checked against the method's)

    @classmethod
    def gather(cls, values: dict[str, Any]) -> PruneRequest:
        """The request from the command's parameters (the fields' names)."""
        own = {f.name: values[f.name] for f in fields(cls) if f.name not in ("training", "options")}
        return cls(**own, training=gather(TrainOptions, values), options=given_options(values))


def run_prune(r: PruneRequest) -> None:
    """Check the request before loading anything, then prune and report."""
    from prunecli.jobs.settings import TrainingRun
    from prunecli.jobs.stream import streamable

    criterion_class, settings = _check(r)
    _check_eval(r)
    if r.granularity != "weight":
        from prunecli.cli.prune_structured import run_structured

        run_structured(r, criterion_class, settings, check_output)
        return
    training = None
    if criterion_class is not None and criterion_class.trains():
        training = TrainingRun(r.training.settings())
    calibrated = criterion_class is not None and "calibration" in criterion_class.needs
    if calibrated:
        from prunecli.cli.prune_calibrated import check_calibrated, run_calibrated

        plan = check_calibrated(r, settings)  # the folder and its blocks before the output
    output = check_output(r, training is not None)
    out = Output(r.json_mode, r.quiet, data_to_stderr=output == "-", group=check_group(r.group))
    if calibrated:
        run_calibrated(r, plan, out, output)
        return
    plain = r.scores_file is None and r.iterations in (None, 1) and r.device == "cpu"
    plain = plain and r.scope != "row" and r.eval_data is None  # these run in memory
    checkpoint = streamable(r.model, r.method, r.arch, output, plain)
    if checkpoint is not None and r.method is not None:
        _stream(checkpoint, r, replace(settings, iterations=1), output, out)
        return
    _in_memory(r, criterion_class, settings, training, output, out)


def _check(r: PruneRequest) -> tuple[type[Criterion] | None, PruneSettings]:
    """What can be refused from the options alone; the criterion class and the settings."""
    from prunecli.criteria import get_criterion
    from prunecli.errors import BadInput
    from prunecli.jobs.session import check_request
    from prunecli.jobs.validate import check_grouped, check_options, prune_settings

    fixed = r.scores_file is not None
    settings = prune_settings(
        r.method, fixed, r.sparsity, r.scope, r.schedule, r.iterations, r.seed, r.pattern
    )
    criterion_class = get_criterion(r.method) if r.method else None
    training = {
        "epochs": r.training.epochs,
        "steps": r.training.steps,
        "val_fraction": r.training.val_fraction,
    }
    options = dict(r.options)
    if r.granularity != "weight" and r.data and Path(r.model).is_dir():
        # a folder's structured run calibrates (reconstruction) whatever scores its units
        options.pop("samples", None)
        options.pop("seq_len", None)
    check_options(criterion_class, {**options, **training})
    if criterion_class is not None and criterion_class.trains() and r.iterations is not None:
        raise BadInput(f"--method {r.method} sets its own rounds; drop --iterations")
    if criterion_class is not None:
        check_grouped(criterion_class, settings)
        check_request(criterion_class, r.data, training=True)
    return criterion_class, settings


def _check_eval(r: PruneRequest) -> None:
    """Refuse ``--eval`` where the run changes nothing to measure."""
    from prunecli.errors import BadInput

    if r.eval_data is None:
        return
    if r.dry_run:
        raise BadInput("--dry-run changes nothing to evaluate; drop --eval")


def check_output(r: PruneRequest, trains: bool) -> str:
    """The output path (default: beside MODEL), checked with every file the run reads and
    writes before anything is loaded."""
    from prunecli.io.paths import default_output
    from prunecli.jobs.quality import eval_reads
    from prunecli.jobs.validate import check_prune_output, read_paths

    output = r.output or default_output(r.model)
    reports = check_report(r.report_file, curve=trains)
    rewind_to = r.options.get("rewind_to")
    reads = read_paths(r.model, r.data, scores=r.scores_file, rewind_to=rewind_to)
    reads += eval_reads(r.eval_data)
    check_prune_output(r.model, output, r.format, r.force, reads, r.dry_run, reports)
    return output


def _in_memory(r: PruneRequest, criterion_class, settings, training, output, out) -> None:  # noqa: ANN001
    """Load the model, score (or train) and write it."""
    from prunecli.jobs.prune import load_scores, plan_document, prune_to_file
    from prunecli.jobs.quality import add_quality, measure_before
    from prunecli.jobs.session import open_model, resolve_inputs

    loaded, names = open_model(
        r.model, r.arch, r.arch_kwargs, r.include, r.exclude, trust_remote_code=r.trust_remote_code
    )
    baseline = measure_before(loaded, r.eval_data, "prune", r.device, r.trust_remote_code)
    if r.dry_run:
        plan = plan_document(loaded, names, r.method or "scores", settings, False)
        out.document(plan, lambda console: render_plan(console, plan))
        return
    criterion = criterion_class() if criterion_class else load_scores(r.scores_file)
    settings.inputs = resolve_inputs(
        type(criterion), loaded, r.input_shape, r.data, r.device, r.options, training=True
    )
    rounds = r.iterations or criterion.default_iterations
    with out.progress(f"pruning ({criterion.name})", rounds) as tick:
        if training is not None:
            training.options, training.progress = dict(r.options), tick
        report = prune_to_file(loaded, names, criterion, settings, output, tick, r.format, training)
    add_quality(report, loaded, baseline)
    out.report(report, r.report_file)


def _stream(checkpoint, r: PruneRequest, settings, output: str, out: Output) -> None:  # noqa: ANN001
    """Prune a checkpoint chunk by chunk (magnitude, random): memory bounded by a few chunks."""
    from prunecli.jobs.prune import plan_document
    from prunecli.jobs.stream import lazy_model, stream_prune_to_file
    from prunecli.pruning.prunable import select_prunable

    lazy = lazy_model(checkpoint)
    names = select_prunable(lazy, r.include or (), r.exclude or ())
    if r.dry_run:
        plan = plan_document(lazy, names, r.method, settings, True)
        out.document(plan, lambda console: render_plan(console, plan))
        return
    prunable = sum(lazy.tensors[name].numel() * lazy.tensors[name].element_size() for name in names)
    total = prunable + sum(t.numel() * t.element_size() for t in lazy.tensors.values())
    done = 0
    with out.progress(f"pruning ({r.method})", total, force=r.progress) as tick:

        def advance(nbytes: int) -> None:
            nonlocal done
            done += nbytes
            tick(done, max(total, done))

        report = stream_prune_to_file(
            checkpoint, names, r.method, settings, output, r.format, advance
        )
    out.report(report, r.report_file)

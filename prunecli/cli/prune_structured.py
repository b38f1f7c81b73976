"""`prunecli prune --granularity channel|neuron|head`: remove whole structures and write the
smaller model (docs/structured.md). A Hugging Face folder goes to the transformer path
(cli/prune_structured_hf.py); any other model with a graph to the traced path (jobs/structured.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunecli.errors import BadInput, Unsupported

if TYPE_CHECKING:
    from prunecli.jobs.settings import PruneSettings
    from prunecli.pruning.criterion import Criterion

GRANULARITIES = ("weight", "channel", "neuron", "head")


def check_structured(r: Any, criterion_class: type[Criterion] | None) -> bool:
    """Refuse what structured pruning does not take, from the options alone; whether to
    reconstruct."""
    if r.granularity not in GRANULARITIES:
        raise BadInput(
            f"unknown --granularity {r.granularity!r}",
            f"choose one of: {', '.join(GRANULARITIES)}",
        )
    if r.round_to is not None and r.round_to < 1:
        raise BadInput(f"--round-to must be a positive integer, not {r.round_to}")
    if criterion_class is None:
        raise BadInput(
            f"--granularity {r.granularity} needs --method (a score criterion); "
            "--scores holds per-weight scores of the original shapes",
            "e.g. --method magnitude",
        )
    if criterion_class.trains():
        raise Unsupported(
            f"--method {r.method} trains with per-weight masks; --granularity {r.granularity} "
            "takes a one-shot score criterion",
            "prune with --method magnitude|taylor|snip|… --granularity "
            f"{r.granularity}, then `prunecli retrain` the smaller model",
        )
    if r.pattern is not None:
        raise BadInput(
            f"--pattern N:M applies to single weights; drop it with --granularity {r.granularity}"
        )
    if r.iterations not in (None, 1):
        raise BadInput(f"--granularity {r.granularity} prunes in one step; drop --iterations")
    if r.scope == "row":
        raise BadInput("--scope row chooses single weights per row; use global, layer or erk")
    if r.format != "dense":
        raise BadInput(
            f"--granularity {r.granularity} writes a smaller dense model; drop --format {r.format}"
        )
    if r.reconstruct and not r.data:
        raise BadInput(
            "--reconstruct refits layers on calibration data; give --data",
            "or drop --reconstruct",
        )
    return bool(r.data) if r.reconstruct is None else r.reconstruct


def run_structured(
    r: Any,
    criterion_class: type[Criterion] | None,
    settings: PruneSettings,
    check_output: Callable[[Any, bool], str],
) -> None:
    """Check, then prune a folder (transformer path) or a module (traced path) and report;
    ``check_output`` checks every path the run reads and writes (cli/prune_run.py)."""
    from prunecli.cli.blocks import check_group
    from prunecli.cli.output import Output

    reconstruct = check_structured(r, criterion_class)
    if r.model != "-" and Path(r.model).is_dir() and r.arch is None:
        from prunecli.cli.prune_structured_hf import run_structured_hf

        run_structured_hf(r, criterion_class, settings, reconstruct, check_output)
        return
    if r.granularity == "head":
        raise Unsupported(
            f"--granularity head removes attention heads; {r.model} is not a Hugging Face "
            "folder with attention layers",
            "use --granularity channel for conv nets and MLPs",
        )
    output = check_output(r, False)
    out = Output(r.json_mode, r.quiet, data_to_stderr=output == "-", group=check_group(r.group))
    _traced(r, criterion_class, settings, reconstruct, output, out)


def _traced(
    r: Any, criterion_class: Any, settings: Any, reconstruct: bool, output: str, out: Any
) -> None:  # noqa: ANN401
    from prunecli.cli.output import render_plan
    from prunecli.jobs.quality import add_quality, measure_before
    from prunecli.jobs.session import open_model, resolve_inputs
    from prunecli.jobs.structured import StructuredRun, plan_structured, prune_structured_to_file

    loaded, names = open_model(r.model, r.arch, r.arch_kwargs, r.include, r.exclude)
    baseline = measure_before(loaded, r.eval_data, "prune", r.device)
    criterion = criterion_class()
    settings.inputs = resolve_inputs(
        criterion_class, loaded, r.input_shape, r.data, r.device, r.options, training=True
    )
    run = StructuredRun(r.granularity, r.round_to, reconstruct)
    if r.dry_run:
        plan = plan_structured(loaded, names, criterion.name, settings, run)
        out.document(plan, lambda console: render_plan(console, plan))
        return
    with out.progress(f"pruning {r.granularity}s ({criterion.name})", 1) as tick:
        report = prune_structured_to_file(loaded, names, criterion, settings, run, output, tick)
    add_quality(report, loaded, baseline)
    out.report(report, r.report_file)

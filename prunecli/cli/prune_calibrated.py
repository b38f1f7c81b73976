"""`prunecli prune --method wanda|sparsegpt`: the request checked for a calibrated run, then
the folder pruned block by block (jobs/calibrated.py) with a progress bar per block, or, with
--dry-run, the plan shown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunecli.cli.output import Output, render_plan

if TYPE_CHECKING:
    from rich.console import Console

    from prunecli.jobs.calibrated import CalibratedPlan
    from prunecli.jobs.settings import PruneSettings


def run_calibrated(r: Any, plan: CalibratedPlan, out: Output, output: str) -> None:
    """``r``: the PruneRequest (cli/prune_run.py). Prune with the checked ``plan`` into ``output`` (already checked) and report."""
    from prunecli.jobs.calibrated import calibrated_plan_document, calibrated_prune_to_file
    from prunecli.jobs.quality import add_saved_quality, measure_saved

    if r.dry_run:
        document = calibrated_plan_document(plan, r.data or "")
        out.document(document, lambda console: render_calibrated_plan(console, document))
        return
    baseline = measure_saved(r.model, r.eval_data, "prune", r.device, r.trust_remote_code)
    with out.progress(f"pruning ({r.method})", plan.blocks, force=r.progress) as tick:
        report = calibrated_prune_to_file(
            plan,
            r.data or "",
            output,
            r.device,
            lambda done, total, name: tick(done, total, {"label": name}),
            r.trust_remote_code,
        )
    add_saved_quality(report, output, baseline)
    out.report(report, r.report_file)


def refuse_flags(flags: dict[str, object], what: str) -> None:
    """BadInput for the first of ``flags`` given: ``what`` says why it does not apply."""
    from prunecli.errors import BadInput

    for flag, value in flags.items():
        if value:
            raise BadInput(f"{what}; {flag} does not apply", f"drop {flag}")


def check_calibrated(r: Any, settings: PruneSettings) -> CalibratedPlan:
    """Refuse what a calibrated run does not take, before anything is read; the plan."""
    from prunecli.errors import BadInput
    from prunecli.jobs.calibrated import plan_calibrated
    from prunecli.jobs.session import check_device

    check_device(r.device)
    refused = {"--arch": r.arch, "--arch-kwargs": r.arch_kwargs, "--input-shape": r.input_shape}
    refuse_flags(
        refused,
        f"--method {r.method} prunes every linear layer inside the blocks of a Hugging Face folder",
    )
    if r.format != "dense":
        raise BadInput(f"--method {r.method} writes a dense folder; drop --format {r.format}")
    return plan_calibrated(
        r.model,
        r.method or "",
        settings,
        r.options,
        r.trust_remote_code,
        r.include or (),
        r.exclude or (),
    )


def render_calibrated_plan(console: Console, plan: dict[str, Any]) -> None:
    """``prune --method wanda|sparsegpt --dry-run``: every dry run's table, then the windows."""
    render_plan(console, plan)
    c = plan["calibration"]
    line = (
        f"calibration: {c['samples']} windows of {c['seq_len']} tokens from {c['data']} "
        f"(seed {c['seed']}), through {c['blocks']} blocks of {c['block_list']}"
    )
    if "dampening" in c:
        line += f"; dampening {c['dampening']:g}"
    if plan["pattern"]:
        line += f"; pattern {plan['pattern']}"
    console.print(line)
